//! Following: one tick copies what is new and, once the writer has moved
//! on, switches to the file after the current one (the rules are in the
//! parent module's comment); the waiter sleeps between ticks.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, SFlag};

use super::{copy_range, open_log, read_at, Failure, FileId, Output, CHECK};
use crate::logs::numbered;

/// The wait after a tick that found new bytes.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait, reached by doubling while nothing happens.
const LONGEST_WAIT: Duration = Duration::from_millis(250);
/// At most this much is copied per tick, so a writer faster than stdout
/// cannot keep the loop from noticing a signal.
const STEP_MAX: u64 = 8 * 1024 * 1024;

/// The file being followed.
pub(super) struct Current {
    pub(super) file: File,
    /// The name it was opened by (for messages).
    pub(super) path: PathBuf,
    pub(super) id: FileId,
    /// Bytes before this have been copied.
    pub(super) pos: u64,
    /// The last [`CHECK`] (or fewer) bytes before `pos`.
    pub(super) seen: Vec<u8>,
    /// Where it was last seen: 0 under the log's name, k as `NAME.k`.
    pub(super) index: u32,
}

impl Current {
    pub(super) fn start(file: File, path: PathBuf, meta: &Metadata, index: u32) -> Current {
        Current {
            file,
            path,
            id: FileId::of(meta),
            pos: 0,
            seen: Vec::new(),
            index,
        }
    }

    fn remember(&mut self, chunk: &[u8]) {
        if chunk.len() >= CHECK {
            self.seen.clear();
            self.seen.extend_from_slice(&chunk[chunk.len() - CHECK..]);
        } else {
            self.seen.extend_from_slice(chunk);
            let excess = self.seen.len().saturating_sub(CHECK);
            self.seen.drain(..excess);
        }
    }

    fn read_error(&self, e: io::Error) -> Failure {
        Failure::Read(self.path.clone(), e)
    }
}

/// What one tick did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing new.
    Idle,
    /// Copied new bytes.
    Copied,
    /// Switched files, or more is waiting: look again at once.
    Busy,
}

/// Follows a log by name across rotation, truncation and recreation.
pub(super) struct Follower {
    pub(super) name: PathBuf,
    pub(super) cur: Current,
    pub(super) scan: u32,
    pub(super) buf: Vec<u8>,
}

impl Follower {
    /// `NAME` for 0, `NAME.k` otherwise.
    fn name_at(&self, k: u32) -> PathBuf {
        match k {
            0 => self.name.clone(),
            k => numbered(&self.name, k),
        }
    }

    fn id_at(&self, k: u32) -> Option<FileId> {
        fs::metadata(self.name_at(k)).ok().map(|m| FileId::of(&m))
    }

    /// One look: copy what is new, and switch to the next file once the
    /// writer has moved on to it.
    pub(super) fn step<W: Write>(&mut self, out: &mut Output<W>) -> Result<Step, Failure> {
        let (copied, more) = self.drain(out, STEP_MAX)?;
        if more {
            return Ok(Step::Busy);
        }
        if let Some(next) = self.successor()? {
            // The writer has moved on, so all it wrote to the old file is
            // there now: read it to the end before the next one.
            while self.drain(out, STEP_MAX)?.1 {}
            out.end_line()?;
            self.cur = next;
            return Ok(Step::Busy);
        }
        Ok(if copied { Step::Copied } else { Step::Idle })
    }

    /// Copies new bytes of the current file, at most `limit`; whether any
    /// were copied and whether the limit stopped it.
    fn drain<W: Write>(
        &mut self,
        out: &mut Output<W>,
        limit: u64,
    ) -> Result<(bool, bool), Failure> {
        let size = self
            .cur
            .file
            .metadata()
            .map_err(|e| self.cur.read_error(e))?
            .len();
        if self.truncated(size)? {
            self.after_truncation(out)?;
        }
        let stop_at = self.cur.pos.saturating_add(limit);
        let mut copied = false;
        while self.cur.pos < stop_at {
            let room = usize::try_from(stop_at - self.cur.pos)
                .map_or(self.buf.len(), |n| n.min(self.buf.len()));
            let n = read_at(&self.cur.file, &mut self.buf[..room], self.cur.pos)
                .map_err(|e| self.cur.read_error(e))?;
            if n == 0 {
                return Ok((copied, false));
            }
            out.put(&self.buf[..n])?;
            self.cur.remember(&self.buf[..n]);
            self.cur.pos += n as u64;
            copied = true;
        }
        Ok((copied, true))
    }

    /// The file is shorter than what was read, or the bytes just before the
    /// read position changed: it was truncated (and maybe written again).
    fn truncated(&self, size: u64) -> Result<bool, Failure> {
        let cur = &self.cur;
        if size < cur.pos {
            return Ok(true);
        }
        if cur.seen.is_empty() {
            return Ok(false);
        }
        let mut now = [0u8; CHECK];
        let now = &mut now[..cur.seen.len()];
        match cur.file.read_exact_at(now, cur.pos - now.len() as u64) {
            Ok(()) => Ok(now != &cur.seen[..]),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
            Err(e) => Err(cur.read_error(e)),
        }
    }

    /// After `copytruncate`: the rest of what was there is in the copy,
    /// `NAME.1` by logrotate's naming, if that starts with what we read.
    /// Then the file is read again from its start.
    fn after_truncation<W: Write>(&mut self, out: &mut Output<W>) -> Result<(), Failure> {
        let cur = &self.cur;
        if cur.index == 0 && !cur.seen.is_empty() {
            let copy_path = numbered(&self.name, 1);
            if let Ok((copy, meta)) = open_log(&copy_path) {
                let mut then = [0u8; CHECK];
                let then = &mut then[..cur.seen.len()];
                let same = FileId::of(&meta) != cur.id
                    && meta.len() >= cur.pos
                    && copy
                        .read_exact_at(then, cur.pos - then.len() as u64)
                        .is_ok_and(|()| then == &cur.seen[..]);
                if same {
                    copy_range(&copy, &copy_path, cur.pos, meta.len(), &mut self.buf, out)?;
                }
            }
        }
        out.end_line()?;
        out.flush()?;
        crate::say!(
            "supervisor: {} was truncated; reading it from its start",
            self.cur.path.display()
        );
        self.cur.pos = 0;
        self.cur.seen.clear();
        Ok(())
    }

    /// Opens `path` if it exists.
    fn open_if_there(&self, path: &Path) -> Result<Option<(File, Metadata)>, Failure> {
        match open_log(path) {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Failure::Read(path.into(), e)),
        }
    }

    /// The file to read next, once the current one is finished (see the
    /// module's comment for the rules).
    fn successor(&mut self) -> Result<Option<Current>, Failure> {
        let id = self.cur.id;
        if self.id_at(0) == Some(id) {
            self.cur.index = 0;
            return Ok(None);
        }
        if let Some(k) = (1..=self.scan).find(|&k| self.id_at(k) == Some(id)) {
            self.cur.index = k;
            let next = self.name_at(k - 1);
            let Some((file, meta)) = self.open_if_there(&next)? else {
                // Mid-rotation, or the new file is not created yet.
                return Ok(None);
            };
            // A rotation between looking and opening would make that a
            // later file than the one after ours: look again next tick.
            if self.id_at(k) != Some(id) || FileId::of(&meta) == id {
                return Ok(None);
            }
            if k == 1 && meta.len() == 0 {
                // The writer may still be appending to ours.
                return Ok(None);
            }
            return Ok(Some(Current::start(file, next, &meta, k - 1)));
        }
        if self.cur.index > 0 {
            if let Some(next) = self.oldest_not_older()? {
                return Ok(Some(next));
            }
        }
        let Some((file, meta)) = self.open_if_there(&self.name)? else {
            return Ok(None);
        };
        if FileId::of(&meta) == id || meta.len() == 0 {
            return Ok(None);
        }
        Ok(Some(Current::start(file, self.name.clone(), &meta, 0)))
    }

    /// The current file had been rotated and is now gone: rotation deleted
    /// it (we fell `max_files` behind), so every older file went first. The
    /// oldest rotated file modified no earlier than it comes next.
    fn oldest_not_older(&self) -> Result<Option<Current>, Failure> {
        let Ok(ours) = self.cur.file.metadata().and_then(|m| m.modified()) else {
            return Ok(None);
        };
        for k in (1..=self.scan).rev() {
            let path = self.name_at(k);
            let Ok(m) = fs::metadata(&path) else {
                continue;
            };
            if FileId::of(&m) == self.cur.id || m.modified().map_or(true, |t| t < ours) {
                continue;
            }
            if let Some((file, meta)) = self.open_if_there(&path)? {
                if FileId::of(&meta) == FileId::of(&m) {
                    return Ok(Some(Current::start(file, path, &meta, k)));
                }
            }
        }
        Ok(None)
    }
}

/// Follows until SIGINT, SIGTERM or a reader of stdout that went away.
pub(super) fn follow_until_stopped<W: Write>(
    mut follower: Follower,
    out: &mut Output<W>,
    waiter: &mut Waiter<'_>,
) -> Result<(), Failure> {
    let mut idle_wait = FIRST_WAIT;
    loop {
        let step = follower.step(out)?;
        out.flush()?;
        let timeout = match step {
            Step::Busy => {
                idle_wait = FIRST_WAIT;
                Duration::ZERO
            }
            Step::Copied => {
                idle_wait = FIRST_WAIT;
                FIRST_WAIT
            }
            Step::Idle => {
                let t = idle_wait;
                idle_wait = (idle_wait * 2).min(LONGEST_WAIT);
                t
            }
        };
        if waiter.wait(timeout) {
            return Ok(());
        }
    }
}

/// Sleeps between ticks, waking early for SIGINT/SIGTERM (a self-pipe
/// written by signal-hook's handler) and, where it can be seen without
/// writing, for a reader of stdout that went away.
pub(super) struct Waiter<'a> {
    /// Readable after a signal: only wakes the wait.
    pub(super) signals: UnixStream,
    /// Set by the same signals: says to stop.
    pub(super) stopped: Arc<AtomicBool>,
    /// Stdout, when it is a pipe written through a write-only descriptor:
    /// there POLLIN never reports data (nothing can be read through it);
    /// Linux reports POLLERR and macOS end-of-file once the last reader
    /// closed. On a terminal or a socket POLLIN would report input we never
    /// read, so those are not watched: a write finds out instead.
    pub(super) stdout: Option<BorrowedFd<'a>>,
}

impl<'a> Waiter<'a> {
    pub(super) fn new(stdout: BorrowedFd<'a>) -> io::Result<Waiter<'a>> {
        let (signals, wake) = UnixStream::pair()?;
        signals.set_nonblocking(true)?;
        let stopped = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // The flag first: the pipe's byte may wake the wait at once.
            signal_hook::flag::register(sig, stopped.clone())?;
            signal_hook::low_level::pipe::register(sig, wake.try_clone()?)?;
        }
        let fifo = fstat(stdout.as_raw_fd()).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO
        });
        let write_only = fcntl(stdout.as_raw_fd(), FcntlArg::F_GETFL)
            .is_ok_and(|fl| OFlag::from_bits_truncate(fl) & OFlag::O_ACCMODE == OFlag::O_WRONLY);
        Ok(Waiter {
            signals,
            stopped,
            stdout: (fifo && write_only).then_some(stdout),
        })
    }

    /// Waits up to `timeout`; whether to stop.
    pub(super) fn wait(&mut self, timeout: Duration) -> bool {
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = self.stdout {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) => {}
            Err(Errno::EINTR) => return self.stopped.load(Ordering::Relaxed),
            Err(_) => {
                // Cannot happen with valid descriptors; never spin.
                std::thread::sleep(timeout);
                return false;
            }
        }
        let stdout = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        drop(fds);
        if stdout.contains(PollFlags::POLLNVAL) {
            // This system cannot poll it that way: rely on writes.
            self.stdout = None;
        } else if !stdout.is_empty() {
            return true;
        }
        self.stopped.load(Ordering::Relaxed)
    }
}
