//! `supervisor logs`: the last lines of `child.log` (or `supervisor.log`)
//! and, with `-f`, everything written after them, across rotation: what
//! `tail -n N -F` does, without the person having to know the path.
//!
//! The last lines are found by reading backwards from the end in blocks, so
//! a 10 MiB log or a megabyte-long line costs one block of memory. When the
//! current file has fewer lines than asked for, the rotated files
//! (`NAME.1`, `NAME.2`, ...) give the earlier ones. Bytes are copied as they
//! are: invalid UTF-8 passes through untouched.
//!
//! Following polls the file: 100 ms after new bytes, backing off to 250 ms
//! while nothing happens. Polling is portable, needs no crate, and costs a
//! few `fstat`/`stat` calls per tick; inotify and kqueue would differ per OS
//! and save nothing a person watching would notice. Each tick copies what
//! was appended to the file being read, then asks whether the writer has
//! moved on to another file:
//!
//! - The name still points at the file being read: keep reading it. A size
//!   below the read position, or changed bytes just before it, mean the file
//!   was truncated (`copytruncate`): what had not been read yet is taken
//!   from the copy (`NAME.1`) when that starts with what was read, then
//!   reading starts again at 0.
//! - The file is now `NAME.k` (our size rotation, logrotate): the file after
//!   it is `NAME.(k-1)`, or `NAME` for k = 1. The old file is finished once
//!   that one has been written to (logrotate's `create` makes an empty file
//!   before the SIGHUP, and until the supervisor reopens it keeps appending
//!   to the old one) or has itself been rotated on. The old file is read to
//!   its end after that is seen, then the next one from its start: every
//!   line once, in order.
//! - The file has no rotated name (deleted, or renamed with a date): `NAME`
//!   is next, by the same rule. If it had been rotated and rotation then
//!   deleted it while it was still being read (we fell `max_files` behind),
//!   the oldest rotated file not older than it is next.
//!
//! Files are only ever opened read-only, so renames, deletions and
//! truncation work as if nobody were reading; the only file kept open after
//! it lost its name is the one still being read. SIGINT and SIGTERM end `-f`
//! with exit 0 (signal-hook sets a flag that every block written checks, and
//! wakes the wait through a self-pipe), and so does a reader of stdout that
//! went away: at the next write, or at once when stdout is a pipe (see
//! [`Waiter`]).

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, SFlag};

use super::numbered;
use crate::config::Config;
use crate::exit::{self, Fatal, Outcome};

/// Bytes read at a time, backwards when looking for lines and forwards when
/// copying.
const BLOCK: usize = 64 * 1024;
/// The wait after a tick that found new bytes.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait, reached by doubling while nothing happens.
const LONGEST_WAIT: Duration = Duration::from_millis(250);
/// At most this much is copied per tick, so a writer faster than stdout
/// cannot keep the loop from noticing a signal.
const STEP_MAX: u64 = 8 * 1024 * 1024;
/// Bytes remembered before the read position, to notice a file truncated
/// and written again past that position between two ticks.
const CHECK: usize = 64;
/// Rotated names looked at, at least: our own `max_files`, or a logrotate
/// `rotate` count up to this.
const MIN_SCAN: u32 = 20;

/// `supervisor logs [-f] [-n N] [--supervisor]`.
pub(crate) fn run(cfg: &Config, lines: u64, follow: bool, supervisor: bool) -> Outcome {
    let name = if supervisor {
        cfg.supervisor_log_path()
    } else {
        cfg.child_log_path()
    };
    let scan = cfg.log.max_files.saturating_add(1).max(MIN_SCAN);
    let stdout = io::stdout();
    // Before anything is printed: a SIGTERM that arrives once output has
    // started must end the command with 0.
    let waiter = match follow {
        true => Some(Waiter::new(stdout.as_fd()).map_err(|e| {
            Fatal::failure(format!(
                "cannot handle signals: {e}; not following {}",
                name.display()
            ))
        })?),
        false => None,
    };
    let mut out = Output::new(stdout.lock());
    out.stop = waiter.as_ref().map(|w| w.stopped.clone());
    let result = show(&name, lines, scan, &mut out).and_then(|follower| match waiter {
        Some(mut waiter) => follow_until_stopped(follower, &mut out, &mut waiter),
        None => Ok(()),
    });
    match result {
        Ok(()) | Err(Failure::Stopped) => Ok(exit::OK),
        // `supervisor logs | head -1`: the reader has what it wanted.
        Err(Failure::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(Failure::Write(e)) => Err(Fatal::failure(format!(
            "cannot write to stdout: {}",
            reason(&e)
        ))),
        Err(Failure::Read(path, e)) if e.kind() == io::ErrorKind::NotFound => {
            Err(Fatal::with_code(
                exit::UNKNOWN,
                format!(
                    "cannot read {}: no such file; has the supervisor run with this config?",
                    path.display()
                ),
            ))
        }
        Err(Failure::Read(path, e)) => Err(Fatal::with_code(
            exit::UNKNOWN,
            format!("cannot read {}: {}", path.display(), reason(&e)),
        )),
    }
}

/// Why printing stopped short: a log that cannot be read (exit 4), a
/// stdout that cannot be written (a reader gone away is exit 0), or SIGINT
/// or SIGTERM with `-f` (exit 0).
#[derive(Debug)]
enum Failure {
    Read(PathBuf, io::Error),
    Write(io::Error),
    Stopped,
}

/// "permission denied", rather than "Permission denied (os error 13)".
fn reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let desc = Errno::from_raw(n).desc();
            let mut chars = desc.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => e.to_string(),
            }
        }
        None => e.to_string(),
    }
}

/// Stdout, remembering the last byte written, so that bytes from another
/// file never continue a line that a torn write left open.
struct Output<W: Write> {
    w: W,
    last: Option<u8>,
    /// Set by SIGINT/SIGTERM with `-f`: with the handlers installed those
    /// no longer kill us, so a long first print checks it block by block.
    stop: Option<Arc<AtomicBool>>,
}

impl<W: Write> Output<W> {
    fn new(w: W) -> Self {
        Output {
            w,
            last: None,
            stop: None,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Err(Failure::Stopped);
        }
        if let Some(&last) = bytes.last() {
            self.w.write_all(bytes).map_err(Failure::Write)?;
            self.last = Some(last);
        }
        Ok(())
    }

    /// Ends a line left open, before bytes from another file.
    fn end_line(&mut self) -> Result<(), Failure> {
        match self.last {
            Some(b) if b != b'\n' => self.put(b"\n"),
            _ => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<(), Failure> {
        self.w.flush().map_err(Failure::Write)
    }
}

/// Which file a descriptor or a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// Opens a log for reading. O_NONBLOCK keeps a FIFO planted under the name
/// from blocking the open; anything but a regular file is refused.
fn open_log(path: &Path) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

/// `pread`, again after EINTR.
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, pos) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Where the last `want` lines of `file[..end]` begin, and how many lines
/// that is: fewer than `want` when the file has fewer, and then from 0. A
/// last line without its newline counts. Reads backwards, `buf` at a time;
/// a file that shrank meanwhile is an `UnexpectedEof` error.
fn last_lines_start(file: &File, end: u64, want: u64, buf: &mut [u8]) -> io::Result<(u64, u64)> {
    if want == 0 || end == 0 {
        return Ok((end, 0));
    }
    let mut found = 0;
    let mut hi = end;
    let mut at_end = true;
    while hi > 0 {
        let lo = hi.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo)?;
        let mut search: &[u8] = chunk;
        if at_end {
            at_end = false;
            // The newline that ends the last line does not start another.
            if let Some(rest) = search.strip_suffix(b"\n") {
                search = rest;
            }
        }
        for i in memchr::memrchr_iter(b'\n', search) {
            found += 1;
            if found == want {
                return Ok((lo + i as u64 + 1, want));
            }
        }
        hi = lo;
    }
    Ok((0, found + 1))
}

/// Copies `file[from..to]` to `out`; stops early if the file got shorter.
fn copy_range<W: Write>(
    file: &File,
    path: &Path,
    mut from: u64,
    to: u64,
    buf: &mut [u8],
    out: &mut Output<W>,
) -> Result<(), Failure> {
    while from < to {
        let room = usize::try_from(to - from).map_or(buf.len(), |n| n.min(buf.len()));
        let n = read_at(file, &mut buf[..room], from).map_err(|e| Failure::Read(path.into(), e))?;
        if n == 0 {
            break;
        }
        out.put(&buf[..n])?;
        from += n as u64;
    }
    Ok(())
}

/// The file being followed.
struct Current {
    file: File,
    /// The name it was opened by (for messages).
    path: PathBuf,
    id: FileId,
    /// Bytes before this have been copied.
    pos: u64,
    /// The last [`CHECK`] (or fewer) bytes before `pos`.
    seen: Vec<u8>,
    /// Where it was last seen: 0 under the log's name, k as `NAME.k`.
    index: u32,
}

impl Current {
    fn start(file: File, path: PathBuf, meta: &Metadata, index: u32) -> Current {
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

/// A rotated file to print lines from, before the newest.
struct Piece {
    file: File,
    path: PathBuf,
    start: u64,
    end: u64,
}

/// Prints the last `want` lines and returns the newest file positioned at
/// the end of what was printed, ready to follow.
fn show<W: Write>(
    name: &Path,
    want: u64,
    scan: u32,
    out: &mut Output<W>,
) -> Result<Follower, Failure> {
    let mut buf = vec![0u8; BLOCK];
    let mut tries = 0;
    let (cur, start, older) = loop {
        match plan(name, want, &mut buf) {
            // A file shrank while we looked (copytruncate): look again.
            Err(Failure::Read(_, e)) if e.kind() == io::ErrorKind::UnexpectedEof && tries < 3 => {
                tries += 1
            }
            other => break other?,
        }
    };
    for p in older.iter().rev() {
        out.end_line()?;
        copy_range(&p.file, &p.path, p.start, p.end, &mut buf, out)?;
    }
    out.end_line()?;
    copy_range(&cur.file, &cur.path, start, cur.pos, &mut buf, out)?;
    out.flush()?;
    Ok(Follower {
        name: name.to_path_buf(),
        cur,
        scan,
        buf,
    })
}

/// Opens the newest file and finds where its last `want` lines start; the
/// rotated files give what it lacks, newest first.
fn plan(name: &Path, want: u64, buf: &mut [u8]) -> Result<(Current, u64, Vec<Piece>), Failure> {
    let (file, meta, path, index) = match open_log(name) {
        Ok((f, m)) => (f, m, name.to_path_buf(), 0),
        // Between a rotation's rename and the new file's creation the
        // previous file is the newest.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let prev = numbered(name, 1);
            match open_log(&prev) {
                Ok((f, m)) => (f, m, prev, 1),
                Err(_) => return Err(Failure::Read(name.into(), e)),
            }
        }
        Err(e) => return Err(Failure::Read(name.into(), e)),
    };
    let end = meta.len();
    let (start, got) =
        last_lines_start(&file, end, want, buf).map_err(|e| Failure::Read(path.clone(), e))?;
    let mut need = want - got;
    let mut ids = vec![FileId::of(&meta)];
    let mut older = Vec::new();
    let mut k = index;
    while need > 0 && k < u32::MAX {
        k += 1;
        let p = numbered(name, k);
        match open_log(&p) {
            Ok((f, m)) => {
                // The file we started from, if a rotation moved it meanwhile.
                if ids.contains(&FileId::of(&m)) {
                    continue;
                }
                ids.push(FileId::of(&m));
                let (s, got) = last_lines_start(&f, m.len(), need, buf)
                    .map_err(|e| Failure::Read(p.clone(), e))?;
                need -= got;
                older.push(Piece {
                    file: f,
                    path: p,
                    start: s,
                    end: m.len(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => {
                crate::say!(
                    "supervisor: warning: cannot read {}: {}; earlier lines are not shown",
                    p.display(),
                    reason(&e)
                );
                break;
            }
        }
    }
    let keep = end.min(CHECK as u64);
    let mut seen = vec![0u8; keep as usize];
    file.read_exact_at(&mut seen, end - keep)
        .map_err(|e| Failure::Read(path.clone(), e))?;
    let cur = Current {
        file,
        path,
        id: FileId::of(&meta),
        pos: end,
        seen,
        index,
    };
    Ok((cur, start, older))
}

/// What one tick did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing new.
    Idle,
    /// Copied new bytes.
    Copied,
    /// Switched files, or more is waiting: look again at once.
    Busy,
}

/// Follows a log by name across rotation, truncation and recreation.
struct Follower {
    name: PathBuf,
    cur: Current,
    scan: u32,
    buf: Vec<u8>,
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
    fn step<W: Write>(&mut self, out: &mut Output<W>) -> Result<Step, Failure> {
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
fn follow_until_stopped<W: Write>(
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
struct Waiter<'a> {
    /// Readable after a signal: only wakes the wait.
    signals: UnixStream,
    /// Set by the same signals: says to stop.
    stopped: Arc<AtomicBool>,
    /// Stdout, when it is a pipe written through a write-only descriptor:
    /// there POLLIN never reports data (nothing can be read through it);
    /// Linux reports POLLERR and macOS end-of-file once the last reader
    /// closed. On a terminal or a socket POLLIN would report input we never
    /// read, so those are not watched: a write finds out instead.
    stdout: Option<BorrowedFd<'a>>,
}

impl<'a> Waiter<'a> {
    fn new(stdout: BorrowedFd<'a>) -> io::Result<Waiter<'a>> {
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
    fn wait(&mut self, timeout: Duration) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::time::SystemTime;

    /// The last `n` lines of `data` the plain way.
    fn reference(data: &[u8], n: u64) -> Vec<u8> {
        let mut starts: Vec<usize> = vec![0];
        for (i, &b) in data.iter().enumerate() {
            if b == b'\n' && i + 1 < data.len() {
                starts.push(i + 1);
            }
        }
        if data.is_empty() || n == 0 {
            return Vec::new();
        }
        let lines = starts.len() as u64;
        let from = if n >= lines {
            0
        } else {
            starts[(lines - n) as usize]
        };
        data[from..].to_vec()
    }

    fn temp_file(data: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, data).unwrap();
        let f = File::open(&p).unwrap();
        (dir, f)
    }

    #[test]
    fn last_lines_match_the_plain_way_for_every_block_size() {
        let long = [b'x'; 300];
        let cases: &[&[u8]] = &[
            b"",
            b"a",
            b"a\n",
            b"\n",
            b"\n\n\n",
            b"a\nb",
            b"a\nb\n",
            b"a\n\nb\n\n",
            b"one\ntwo\nthree\nfour\nfive\n",
            b"bad \xff\xfe\n\xc3\x28 torn",
            &long,
        ];
        for data in cases {
            let (_dir, f) = temp_file(data);
            for want in [0, 1, 2, 3, 5, 100] {
                for block in [1, 2, 3, 7, BLOCK] {
                    let mut buf = vec![0u8; block];
                    let (start, got) =
                        last_lines_start(&f, data.len() as u64, want, &mut buf).unwrap();
                    let expect = reference(data, want);
                    assert_eq!(
                        &data[start as usize..],
                        &expect[..],
                        "{data:?} want {want} block {block}"
                    );
                    let lines = memchr::memchr_iter(b'\n', &expect).count() as u64
                        + u64::from(expect.last().is_some_and(|&b| b != b'\n'));
                    assert_eq!(got, lines, "{data:?} want {want} block {block}");
                }
            }
        }
    }

    #[test]
    fn a_megabyte_line_costs_one_block() {
        let mut data = b"first\nsecond\n".to_vec();
        data.extend(std::iter::repeat_n(b'a', 1_000_000));
        let (_dir, f) = temp_file(&data);
        let mut buf = vec![0u8; BLOCK];
        assert_eq!(
            last_lines_start(&f, data.len() as u64, 1, &mut buf).unwrap(),
            (13, 1)
        );
        assert_eq!(
            last_lines_start(&f, data.len() as u64, 2, &mut buf).unwrap(),
            (6, 2)
        );
    }

    #[test]
    fn a_shrunk_file_is_unexpected_eof() {
        let (_dir, f) = temp_file(b"a\nb\n");
        let mut buf = vec![0u8; BLOCK];
        let e = last_lines_start(&f, 10, 1, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A log folder: `NAME` and its rotations, written the way the
    /// supervisor and logrotate do.
    struct Logs {
        dir: tempfile::TempDir,
    }

    impl Logs {
        fn new() -> Logs {
            Logs {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn name(&self) -> PathBuf {
            self.dir.path().join("child.log")
        }
        fn at(&self, k: u32) -> PathBuf {
            match k {
                0 => self.name(),
                k => numbered(&self.name(), k),
            }
        }
        fn write(&self, k: u32, data: &[u8]) {
            fs::write(self.at(k), data).unwrap();
        }
        fn append(&self, k: u32, data: &[u8]) {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(self.at(k))
                .unwrap()
                .write_all(data)
                .unwrap();
        }
        /// Our size rotation: `NAME.k` -> `NAME.(k+1)`, ..., `NAME` -> `NAME.1`.
        fn rotate(&self, max: u32) {
            let _ = fs::remove_file(self.at(max));
            for k in (0..max).rev() {
                let _ = fs::rename(self.at(k), self.at(k + 1));
            }
        }
        fn show(&self, want: u64) -> (Vec<u8>, Follower) {
            let mut out = Output::new(Vec::new());
            let f = show(&self.name(), want, MIN_SCAN, &mut out).unwrap();
            (out.w, f)
        }
    }

    /// Runs ticks until one is idle; what they printed.
    fn ticks(f: &mut Follower) -> Vec<u8> {
        let mut out = Output::new(Vec::new());
        for _ in 0..100 {
            if f.step(&mut out).unwrap() == Step::Idle {
                return out.w;
            }
        }
        panic!("never idle");
    }

    #[test]
    fn last_lines_span_the_rotated_files() {
        let logs = Logs::new();
        logs.write(2, b"1\n2\n");
        logs.write(1, b"3\n4\n");
        logs.write(0, b"5\n6\n");
        let table: &[(u64, &[u8])] = &[
            (0, b""),
            (1, b"6\n"),
            (2, b"5\n6\n"),
            (3, b"4\n5\n6\n"),
            (5, b"2\n3\n4\n5\n6\n"),
            (50, b"1\n2\n3\n4\n5\n6\n"),
        ];
        for &(want, expect) in table {
            assert_eq!(logs.show(want).0, expect, "-n {want}");
        }
        // Right after a rotation the current file is empty.
        logs.rotate(5);
        logs.write(0, b"");
        assert_eq!(logs.show(3).0, b"4\n5\n6\n");
        // Mid-rotation (renamed, not yet recreated) the previous one is newest.
        fs::remove_file(logs.at(0)).unwrap();
        assert_eq!(logs.show(2).0, b"5\n6\n");
    }

    #[test]
    fn the_same_file_under_two_names_is_printed_once_and_a_torn_line_is_ended() {
        let logs = Logs::new();
        logs.write(0, b"new\n");
        // A rotation between opening NAME and NAME.1 shows NAME as NAME.1.
        fs::hard_link(logs.at(0), logs.at(1)).unwrap();
        logs.write(2, b"old torn");
        assert_eq!(logs.show(10).0, b"old torn\nnew\n");
    }

    #[test]
    fn a_missing_log_is_not_found_and_a_folder_is_refused() {
        let logs = Logs::new();
        let mut out = Output::new(Vec::new());
        match show(&logs.name(), 5, MIN_SCAN, &mut out) {
            Err(Failure::Read(p, e)) => {
                assert_eq!(p, logs.name());
                assert_eq!(e.kind(), io::ErrorKind::NotFound);
            }
            _ => panic!("want NotFound"),
        }
        fs::create_dir(logs.name()).unwrap();
        match show(&logs.name(), 5, MIN_SCAN, &mut out) {
            Err(Failure::Read(_, e)) => assert_eq!(e.to_string(), "not a regular file"),
            _ => panic!("want a refusal"),
        }
    }

    #[test]
    fn follows_appends_and_size_rotation_one_or_several_at_a_time() {
        let logs = Logs::new();
        logs.write(0, b"a\n");
        let (shown, mut f) = logs.show(5);
        assert_eq!(shown, b"a\n");
        assert_eq!(ticks(&mut f), b"");
        logs.append(0, b"b\n");
        assert_eq!(ticks(&mut f), b"b\n");
        // Unread lines in the old file, then one rotation.
        logs.append(0, b"c\n");
        logs.rotate(5);
        logs.write(0, b"d\n");
        assert_eq!(ticks(&mut f), b"c\nd\n");
        // Three rotations between two ticks.
        logs.append(0, b"e\n");
        for line in [b"f\n", b"g\n", b"h\n"] {
            logs.rotate(5);
            logs.write(0, line);
        }
        assert_eq!(ticks(&mut f), b"e\nf\ng\nh\n");
    }

    #[test]
    fn logrotate_create_waits_for_the_writer_to_move() {
        let logs = Logs::new();
        logs.write(0, b"a\n");
        let (_, mut f) = logs.show(0);
        let mut writer = OpenOptions::new().append(true).open(logs.at(0)).unwrap();
        // logrotate: rename, create an empty file, then SIGHUP later.
        fs::rename(logs.at(0), logs.at(1)).unwrap();
        logs.write(0, b"");
        writer.write_all(b"b\n").unwrap();
        assert_eq!(ticks(&mut f), b"b\n");
        writer.write_all(b"c\n").unwrap();
        assert_eq!(ticks(&mut f), b"c\n");
        // The supervisor reopened: old lines first, every one once.
        writer.write_all(b"d\n").unwrap();
        logs.append(0, b"e\n");
        assert_eq!(ticks(&mut f), b"d\ne\n");
        logs.append(0, b"f\n");
        assert_eq!(ticks(&mut f), b"f\n");
    }

    #[test]
    fn deleted_or_renamed_with_a_date_and_recreated() {
        for how in ["delete", "dateext"] {
            let logs = Logs::new();
            logs.write(0, b"a\n");
            let (_, mut f) = logs.show(1);
            let mut writer = OpenOptions::new().append(true).open(logs.at(0)).unwrap();
            match how {
                "delete" => fs::remove_file(logs.at(0)).unwrap(),
                _ => fs::rename(logs.at(0), logs.dir.path().join("child.log-20260226")).unwrap(),
            }
            writer.write_all(b"b\n").unwrap();
            assert_eq!(ticks(&mut f), b"b\n", "{how}");
            logs.write(0, b"");
            writer.write_all(b"c\n").unwrap();
            assert_eq!(ticks(&mut f), b"c\n", "{how}");
            logs.append(0, b"d\n");
            assert_eq!(ticks(&mut f), b"d\n", "{how}");
        }
    }

    #[test]
    fn copytruncate_takes_the_unread_rest_from_the_copy() {
        let logs = Logs::new();
        logs.write(0, b"line 1\n");
        let (_, mut f) = logs.show(1);
        // Written, copied and truncated between two ticks.
        logs.append(0, b"line 2\n");
        fs::copy(logs.at(0), logs.at(1)).unwrap();
        OpenOptions::new()
            .write(true)
            .open(logs.at(0))
            .unwrap()
            .set_len(0)
            .unwrap();
        logs.append(0, b"line 3\n");
        assert_eq!(ticks(&mut f), b"line 2\nline 3\n");
        // Truncated and written past the old position before a tick: the
        // bytes before the position changed.
        logs.append(0, b"line 4\n");
        assert_eq!(ticks(&mut f), b"line 4\n");
        fs::remove_file(logs.at(1)).unwrap();
        fs::write(logs.at(0), b"LINE 5 is longer than all before it\n").unwrap();
        assert_eq!(ticks(&mut f), b"LINE 5 is longer than all before it\n");
    }

    #[test]
    fn a_rotated_file_deleted_while_read_continues_with_the_oldest_newer_one() {
        let logs = Logs::new();
        logs.write(0, b"a\n");
        let (_, mut f) = logs.show(1);
        // Renamed away with an empty successor: still ours, seen as NAME.1.
        logs.rotate(5);
        logs.write(0, b"");
        assert_eq!(ticks(&mut f), b"");
        assert_eq!(f.cur.index, 1);
        // Then many rotations delete it; what is left is newer.
        let t = SystemTime::now();
        let older = t - Duration::from_secs(60);
        let newer = t + Duration::from_secs(60);
        fs::remove_file(logs.at(1)).unwrap();
        fs::remove_file(logs.at(0)).unwrap();
        logs.write(3, b"old\n");
        logs.write(2, b"x\n");
        logs.write(1, b"y\n");
        logs.write(0, b"z\n");
        for (k, when) in [(3, older), (2, newer), (1, newer), (0, newer)] {
            File::options()
                .write(true)
                .open(logs.at(k))
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        assert_eq!(ticks(&mut f), b"x\ny\nz\n");
    }

    #[test]
    fn a_signal_stops_a_long_first_print_between_blocks() {
        let logs = Logs::new();
        logs.write(0, b"a\nb\n");
        let mut out = Output::new(Vec::new());
        out.stop = Some(Arc::new(AtomicBool::new(true)));
        assert!(matches!(
            show(&logs.name(), 5, MIN_SCAN, &mut out),
            Err(Failure::Stopped)
        ));
        assert_eq!(out.w, b"");
    }

    #[test]
    fn reasons_read_like_words() {
        let table = [
            (libc::ENOENT, "no such file or directory"),
            (libc::EACCES, "permission denied"),
        ];
        for (errno, want) in table {
            assert_eq!(reason(&io::Error::from_raw_os_error(errno)), want);
        }
        assert_eq!(
            reason(&io::Error::other("not a regular file")),
            "not a regular file"
        );
    }
}
