//! Log files: the child's stdout/stderr in `child.log`, the supervisor's own
//! events in `supervisor.log`.
//!
//! Data flows one way: one reader thread polls every child pipe
//! ([`reader`]), reads large chunks, frames them into `TS out[PID]: payload`
//! lines ([`framer`]) and hands each chunk's lines to a [`LogSink`] as one
//! batch; `tracing` reaches its own sink through [`SinkWriter`]. A sink owns
//! a [`RotatingFile`], which rotates by size (`NAME` -> `NAME.1` -> ...) at
//! line boundaries. Files are opened with O_APPEND so logrotate's
//! `copytruncate` leaves no NUL hole.
//!
//! Files are reached only through the log folder held open since start
//! ([`crate::fsafe::Dir`]): open, rotation, reopen and deletion are
//! `openat`/`renameat`/`unlinkat` in that folder, never through a path, so
//! a folder renamed away and replaced by a link (by whoever could) is never
//! written through; the lines keep going to the folder we hold, and the
//! supervisor says so. A removed folder is re-created only after the
//! folders above it pass the same checks as at start.
//!
//! A sink never fails its caller: while the file cannot be written (disk full,
//! directory gone) batches are dropped and counted, stderr hears about it at
//! most once a minute, and the count is written into the file once it works
//! again. A full disk (ENOSPC, EDQUOT) first makes room: the log's oldest
//! rotated files are deleted, one at a time, until the write goes through,
//! and with none left the file is rotated early so that it can be next:
//! `max_bytes` x `max_files` is a ceiling, not a promise of space. The
//! child's log narrates all this into `supervisor.log` (what was deleted,
//! when lines started being dropped, how many lines and bytes were lost
//! once space is back), so the warning does not live only on stderr. A slow disk blocks only the reader thread, which back-pressures the
//! children through their pipes; memory stays bounded whatever they write.
//!
//! [`tail`] is the other side: `supervisor logs` reading these files, and
//! following them across rotation.

mod framer;
mod reader;
pub(crate) mod tail;

pub(crate) use reader::{Handed, LogCounts, Readers};

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::OFlag;

use crate::fsafe::Dir;

/// Longest payload written as one line; longer lines are split into pieces.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// A failing file is tried again at most this often.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Complaints about a failing file reach stderr at most this often.
const COMPLAIN_EVERY: Duration = Duration::from_secs(60);
/// The reason recorded for lines dropped on a full disk.
const DISK_FULL: &str = "the disk was full";

/// The folder's mode when (re-)created.
const DIR_MODE: u32 = 0o750;

/// Who may read the log files: 0600, or 0640 with a group (`log.group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Perms {
    pub mode: u32,
    /// The group the files are given (`fchown`), when one may read them.
    pub group: Option<u32>,
}

impl Perms {
    /// Only the supervisor's user.
    pub(crate) const PRIVATE: Perms = Perms {
        mode: 0o600,
        group: None,
    };

    /// `log.group`'s gid, if any.
    pub(crate) fn readable_by(group: Option<u32>) -> Perms {
        match group {
            Some(gid) => Perms {
                mode: 0o640,
                group: Some(gid),
            },
            None => Perms::PRIVATE,
        }
    }

    /// Give an open log file our mode and group, whatever it had (an older
    /// file, a umask).
    fn apply(self, file: &File) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let meta = file.metadata()?;
        if let Some(gid) = self.group.filter(|g| *g != meta.gid()) {
            nix::unistd::fchown(
                std::os::fd::AsRawFd::as_raw_fd(file),
                None,
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        }
        if meta.mode() & 0o7777 != self.mode {
            file.set_permissions(std::fs::Permissions::from_mode(self.mode))?;
        }
        Ok(())
    }
}

/// Which pipe a child line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The tag written in each line: `out` or `err`.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        }
    }
}

/// An append-only file that rotates by size.
///
/// A file is filled with whole lines up to `max_bytes` and rotated before
/// the first line that would not fit; batches are split only at line
/// boundaries, so no file ever exceeds `max_bytes` unless a single line is
/// longer than that (it is then written alone into a fresh file).
///
/// After any error from [`RotatingFile::write_batch`] the value may hold a
/// descriptor of an already rotated file: drop it and open a new one.
pub(crate) struct RotatingFile {
    dir: Arc<Dir>,
    name: OsString,
    perms: Perms,
    max_bytes: u64,
    max_files: u32,
    file: File,
    /// Bytes in the file as far as we know; refreshed with fstat before
    /// rotating, since `copytruncate` may have emptied the file meanwhile.
    size: u64,
    /// Rotated files deleted to make room on a full disk (and their
    /// sizes), not yet told.
    freed: Vec<(PathBuf, u64)>,
}

impl RotatingFile {
    /// Opens (creating with `perms`) `name` in the held folder `dir` for
    /// appending. Refuses a symbolic link.
    pub(crate) fn open_in(
        dir: Arc<Dir>,
        name: OsString,
        perms: Perms,
        max_bytes: u64,
        max_files: u32,
    ) -> io::Result<Self> {
        let file = open_append(&dir, &name, perms)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            dir,
            name,
            perms,
            max_bytes,
            max_files,
            file,
            size,
            freed: Vec::new(),
        })
    }

    /// `path` in its folder, opened (and created, 0750) as the sinks do.
    #[cfg(test)]
    fn open(path: PathBuf, max_bytes: u64, max_files: u32) -> io::Result<Self> {
        let (folder, name) = split(&path);
        let dir = Dir::open("log dir", &folder, DIR_MODE)?;
        RotatingFile::open_in(Arc::new(dir), name, Perms::PRIVATE, max_bytes, max_files)
    }

    /// The open file no longer has a name (deleted, or its folder removed).
    pub(crate) fn is_deleted(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    /// Bytes in the current file, as last counted.
    #[cfg(test)]
    fn size(&self) -> u64 {
        self.size
    }

    /// Appends `buf`, which holds whole lines. The current file takes as
    /// many whole lines as still fit; the rest goes into a fresh file after
    /// rotating. Each piece lands with one write(2).
    pub(crate) fn write_batch(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            let len = rest.len() as u64;
            if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
                // `copytruncate` may have emptied the file meanwhile.
                self.size = self.file.metadata()?.len();
            }
            let room = self.max_bytes.saturating_sub(self.size);
            let cut = if len <= room {
                rest.len()
            } else {
                let fit = usize::try_from(room).unwrap_or(usize::MAX).min(rest.len());
                match memchr::memrchr(b'\n', &rest[..fit]) {
                    Some(nl) => nl + 1,
                    // An over-long line goes alone into an empty file.
                    None if self.size == 0 => {
                        memchr::memchr(b'\n', rest).map_or(rest.len(), |nl| nl + 1)
                    }
                    None => {
                        self.rotate()?;
                        continue;
                    }
                }
            };
            self.write_making_room(&rest[..cut])?;
            rest = &rest[cut..];
        }
        Ok(())
    }

    /// Writes `parts` (whole lines, `len` bytes in all) with `writev`, so
    /// nobody copies them into one buffer first, when they fit before the
    /// size limit; otherwise (a rotation due, or a full disk met halfway)
    /// what is left goes through [`RotatingFile::write_batch`], which cuts
    /// at line ends and makes room. Rare enough to copy there.
    /// `parts` is used up (advanced past what was written).
    pub(crate) fn write_parts(&mut self, parts: &mut [IoSlice<'_>], len: usize) -> io::Result<()> {
        if let [one] = parts {
            return self.write_batch(one);
        }
        let len64 = len as u64;
        if self.size > 0 && self.size.saturating_add(len64) > self.max_bytes {
            // `copytruncate` may have emptied the file meanwhile.
            self.size = self.file.metadata()?.len();
        }
        let mut bufs = parts;
        let mut written = 0;
        if self.size.saturating_add(len64) <= self.max_bytes {
            while written < len {
                match self.file.write_vectored(bufs) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.size += n as u64;
                        written += n;
                        IoSlice::advance_slices(&mut bufs, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if is_disk_full(&e) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        if written >= len {
            return Ok(());
        }
        let mut rest = Vec::with_capacity(len - written);
        for b in bufs.iter() {
            rest.extend_from_slice(b);
        }
        self.write_batch(&rest)
    }

    /// Writes all of `buf`; on a full disk deletes this log's oldest
    /// rotated file and goes on with what is left of `buf` (no torn line),
    /// as long as there is one to delete. With none left, a non-empty
    /// file is rotated early (it becomes `NAME.1`, the next to go) and the
    /// error returned: the caller drops and counts the rest.
    fn write_making_room(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.file.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.size += n as u64;
                    buf = &buf[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_disk_full(&e) => match self.delete_oldest()? {
                    Some(gone) => self.freed.push(gone),
                    None => {
                        if self.size > 0 && self.max_files > 0 {
                            self.rotate()?;
                        }
                        return Err(e);
                    }
                },
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes the highest-numbered rotated file there is; its path and
    /// size, or None when there is none.
    fn delete_oldest(&self) -> io::Result<Option<(PathBuf, u64)>> {
        for i in (1..=self.max_files).rev() {
            let name = numbered_name(&self.name, i);
            let Ok(meta) = self.dir.stat_at(&name) else {
                continue;
            };
            match self.dir.unlink(&name) {
                Ok(()) => {
                    let size = u64::try_from(meta.st_size).unwrap_or(0);
                    return Ok(Some((self.dir.path().join(&name), size)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The rotated files deleted to make room since last asked.
    fn take_freed(&mut self) -> Vec<(PathBuf, u64)> {
        std::mem::take(&mut self.freed)
    }

    /// Whether the file ends without a newline. Reads the last byte through
    /// a second, read-only descriptor; only called after a failure.
    fn ends_mid_line(&self) -> bool {
        let mut last = [0u8; 1];
        self.size > 0
            && self
                .dir
                .open_file(&self.name, OFlag::O_RDONLY, 0)
                .and_then(|f| f.read_at(&mut last, self.size - 1))
                .is_ok_and(|n| n == 1 && last[0] != b'\n')
    }

    /// Closes and reopens by name in the held folder: after logrotate moved
    /// the file away this creates a new one. On error the old descriptor is
    /// kept.
    pub(crate) fn reopen(&mut self) -> io::Result<()> {
        let file = open_append(&self.dir, &self.name, self.perms)?;
        self.size = file.metadata()?.len();
        self.file = file;
        Ok(())
    }

    /// `NAME.(max_files)` is removed, `NAME.i` becomes `NAME.(i+1)`, `NAME`
    /// becomes `NAME.1`, and a fresh `NAME` is opened.
    fn rotate(&mut self) -> io::Result<()> {
        let dir = &self.dir;
        let name = &self.name;
        if self.max_files == 0 {
            ignore_not_found(dir.unlink(name))?;
        } else {
            ignore_not_found(dir.unlink(&numbered_name(name, self.max_files)))?;
            for i in (1..self.max_files).rev() {
                let from = numbered_name(name, i);
                ignore_not_found(dir.rename(&from, &numbered_name(name, i + 1)))?;
            }
            ignore_not_found(dir.rename(name, &numbered_name(name, 1)))?;
        }
        self.reopen()
    }
}

/// Open `name` in `dir` for appending, creating it with `perms`; never
/// through a link. Created 0600 and only then given `log.group` and its
/// mode: never readable, even for a moment, by the group it was created
/// with.
fn open_append(dir: &Dir, name: &OsStr, perms: Perms) -> io::Result<File> {
    let file = dir.open_file(
        name,
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT,
        perms.mode & 0o600,
    )?;
    perms.apply(&file)?;
    Ok(file)
}

/// `NAME.n`
fn numbered_name(name: &OsStr, n: u32) -> OsString {
    let mut name = name.to_owned();
    name.push(format!(".{n}"));
    name
}

/// `NAME.n` beside `path`.
pub(crate) fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A log path's folder and file name.
fn split(path: &Path) -> (PathBuf, OsString) {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(OsStr::to_owned).unwrap_or_default();
    (folder, name)
}

/// No space left on the file system, or the user's quota used up.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

fn ignore_not_found(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A log file shared by writers on several threads; never fails its callers.
pub(crate) struct LogSink {
    path: PathBuf,
    folder: PathBuf,
    name: OsString,
    perms: Perms,
    max_bytes: u64,
    max_files: u32,
    inner: Mutex<Inner>,
    /// Set by [`LogSink::reopen`] when a writer held the lock; the next
    /// `write_batch` reopens before writing.
    reopen_pending: AtomicBool,
    /// Tell `tracing` (the supervisor's own log) about drops and room
    /// made. Never for the sink `tracing` itself writes into.
    narrate: bool,
}

struct Inner {
    /// The log folder held open; None while it cannot be opened.
    dir: Option<Arc<Dir>>,
    /// Whether we said that the folder's path no longer leads to it.
    said_moved: bool,
    /// None while the file cannot be opened.
    file: Option<RotatingFile>,
    /// Lines dropped since the file last worked.
    dropped: u64,
    /// Their bytes.
    dropped_bytes: u64,
    /// Why the first of them was dropped: the disk was full, or the error.
    dropped_why: Option<String>,
    /// Rotated files deleted to make room and their bytes, not yet said
    /// (said at most once a minute), and the last one's path.
    freed: (u64, u64),
    freed_last: Option<PathBuf>,
    freed_said: Option<Instant>,
    /// Why the file could not be opened last time.
    open_error: Option<String>,
    last_open_attempt: Option<Instant>,
    last_complaint: Option<Instant>,
    /// When the open file was last checked for having been deleted.
    last_link_check: Option<Instant>,
}

impl LogSink {
    /// Opens `path`; if that fails, starts dropping lines and tries again on
    /// later writes (at most once a second) or on `reopen`.
    pub(crate) fn new(path: PathBuf, perms: Perms, max_bytes: u64, max_files: u32) -> Arc<LogSink> {
        Self::build(path, perms, max_bytes, max_files, false)
    }

    /// [`LogSink::new`] for a log other than the one `tracing` writes into:
    /// drops, their count and the files deleted to make room are also said
    /// in the supervisor's own log.
    pub(crate) fn narrated(
        path: PathBuf,
        perms: Perms,
        max_bytes: u64,
        max_files: u32,
    ) -> Arc<LogSink> {
        Self::build(path, perms, max_bytes, max_files, true)
    }

    fn build(
        path: PathBuf,
        perms: Perms,
        max_bytes: u64,
        max_files: u32,
        narrate: bool,
    ) -> Arc<LogSink> {
        let (folder, name) = split(&path);
        let sink = LogSink {
            path,
            folder,
            name,
            perms,
            max_bytes,
            max_files,
            inner: Mutex::new(Inner {
                dir: None,
                said_moved: false,
                file: None,
                dropped: 0,
                dropped_bytes: 0,
                dropped_why: None,
                freed: (0, 0),
                freed_last: None,
                freed_said: None,
                open_error: None,
                last_open_attempt: None,
                last_link_check: None,
                last_complaint: None,
            }),
            reopen_pending: AtomicBool::new(false),
            narrate,
        };
        {
            let mut inner = sink.lock();
            sink.open_locked(&mut inner);
        }
        Arc::new(sink)
    }

    /// Appends `buf` (whole lines, `lines` of them), or drops and counts
    /// them while the file cannot be written. A batch that failed halfway
    /// counts as wholly dropped.
    pub(crate) fn write_batch(&self, buf: &[u8], lines: u64) {
        self.write_parts(&mut [IoSlice::new(buf)], buf.len(), lines);
    }

    /// [`LogSink::write_batch`] of lines in pieces (`len` bytes in all),
    /// written with `writev` rather than copied together first. `parts`
    /// is used up.
    pub(crate) fn write_parts(&self, parts: &mut [IoSlice<'_>], len: usize, lines: u64) {
        if len == 0 {
            return;
        }
        let mut said = Vec::new();
        self.write_locked(parts, len, lines, &mut said);
        // Outside the lock: the supervisor's log is another sink.
        for line in said {
            tracing::warn!("{line}");
        }
    }

    fn write_locked(
        &self,
        parts: &mut [IoSlice<'_>],
        len: usize,
        lines: u64,
        said: &mut Vec<String>,
    ) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if self.reopen_pending.swap(false, Ordering::AcqRel)
            || (inner.file.is_none()
                && inner
                    .last_open_attempt
                    .is_none_or(|t| t.elapsed() >= RETRY_EVERY))
        {
            self.open_locked(inner);
        }
        // A log deleted under us (its folder removed) would swallow every
        // line until the next rotation: check now and then, and reopen,
        // which recreates the folder (after checking the folders above).
        // A folder moved or replaced under its path is said once.
        if inner.file.is_some()
            && inner
                .last_link_check
                .is_none_or(|t| t.elapsed() >= RETRY_EVERY)
        {
            inner.last_link_check = Some(Instant::now());
            if inner.file.as_ref().is_some_and(RotatingFile::is_deleted) {
                self.open_locked(inner);
            }
            self.notice_moved(inner);
        }
        let Some(file) = inner.file.as_mut() else {
            inner.dropped += lines;
            inner.dropped_bytes += len as u64;
            if inner.dropped_why.is_none() {
                inner.dropped_why = inner.open_error.clone();
            }
            return;
        };
        let mut result = Ok(());
        let was_dropped = (inner.dropped, inner.dropped_bytes);
        if inner.dropped > 0 {
            // A write that failed halfway (disk full) may have left a torn
            // line: the notice starts on a line of its own.
            let why = match inner.dropped_why.as_deref() {
                Some(why) => format!("; {why}"),
                None => String::new(),
            };
            let notice = format!(
                "{}{} supervisor: {} lines dropped while {} could not be written \
                 ({} bytes{why})\n",
                if file.ends_mid_line() { "\n" } else { "" },
                humantime::format_rfc3339_millis(SystemTime::now()),
                inner.dropped,
                self.path.display(),
                inner.dropped_bytes,
            );
            result = file.write_batch(notice.as_bytes());
        }
        if result.is_ok() {
            result = file.write_parts(parts, len);
        }
        for (path, bytes) in file.take_freed() {
            inner.freed.0 += 1;
            inner.freed.1 += bytes;
            inner.freed_last = Some(path);
        }
        if self.narrate
            && inner.freed.0 > 0
            && inner
                .freed_said
                .is_none_or(|t| t.elapsed() >= COMPLAIN_EVERY)
        {
            let (files, bytes) = std::mem::take(&mut inner.freed);
            let last = inner.freed_last.take().unwrap_or_default();
            said.push(format!(
                "{}: the disk is full; deleted {files} rotated log file(s) ({bytes} bytes; \
                 the last {}) to make room: log.max_bytes x log.max_files is more than the \
                 disk holds",
                self.path.display(),
                last.display()
            ));
            inner.freed_said = Some(Instant::now());
        }
        match result {
            Ok(()) if was_dropped.0 > 0 => {
                if self.narrate {
                    let (n, bytes) = was_dropped;
                    let why = match inner.dropped_why.as_deref() {
                        Some(DISK_FULL) => "while the disk was full".to_owned(),
                        Some(why) => format!("while it could not be written ({why})"),
                        None => "while it could not be written".to_owned(),
                    };
                    said.push(format!(
                        "{}: dropped {n} lines ({bytes} bytes) {why}; logging again",
                        self.path.display()
                    ));
                }
                inner.dropped = 0;
                inner.dropped_bytes = 0;
                inner.dropped_why = None;
            }
            Ok(()) => {}
            Err(e) => {
                // The descriptor may point at a rotated file now: start over.
                inner.file = None;
                inner.last_open_attempt = Some(Instant::now());
                inner.dropped += lines;
                inner.dropped_bytes += len as u64;
                if inner.dropped_why.is_none() {
                    inner.dropped_why = Some(if is_disk_full(&e) {
                        DISK_FULL.to_owned()
                    } else {
                        e.to_string()
                    });
                }
                if self.complain(inner, &e) && self.narrate {
                    said.push(format!(
                        "cannot write {}: {e}; dropping its lines (counted) until it works again",
                        self.path.display()
                    ));
                }
            }
        }
    }

    /// Reopens the file by path (SIGHUP). Never blocks behind a writer: if
    /// one holds the file, the next `write_batch` reopens instead.
    pub(crate) fn reopen(&self) {
        match self.inner.try_lock() {
            Ok(mut inner) => self.open_locked(&mut inner),
            Err(TryLockError::Poisoned(p)) => self.open_locked(&mut p.into_inner()),
            Err(TryLockError::WouldBlock) => self.reopen_pending.store(true, Ordering::Release),
        }
    }

    /// Lines dropped since the file last worked.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-done that
        // matters more than keeping the logs going.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// (Re)open the file in the held folder; a folder that was removed is
    /// checked (all the way up), re-created and opened again first. A
    /// folder that is still there but no longer at its path (renamed away,
    /// a link put in its place) stays the one written to.
    fn open_locked(&self, inner: &mut Inner) {
        inner.file = None; // close the old descriptor first
        inner.last_open_attempt = Some(Instant::now());
        if inner.dir.as_ref().is_none_or(|d| d.is_removed()) {
            inner.dir = None;
            match Dir::open("log dir", &self.folder, DIR_MODE) {
                Ok(d) => {
                    inner.dir = Some(Arc::new(d));
                    inner.said_moved = false;
                }
                Err(e) => {
                    let e = io::Error::from(e);
                    inner.open_error = Some(format!("cannot open its folder: {e}"));
                    self.complain(inner, &e);
                    return;
                }
            }
        }
        let Some(dir) = inner.dir.clone() else {
            return;
        };
        match RotatingFile::open_in(
            dir,
            self.name.clone(),
            self.perms,
            self.max_bytes,
            self.max_files,
        ) {
            Ok(f) => {
                inner.file = Some(f);
                inner.open_error = None;
            }
            Err(e) => {
                inner.open_error = Some(if is_disk_full(&e) {
                    DISK_FULL.to_owned()
                } else {
                    format!("cannot open it: {e}")
                });
                self.complain(inner, &e);
            }
        }
        self.notice_moved(inner);
    }

    /// Say once (on stderr and in the file itself) that the folder's path
    /// no longer leads to the folder we hold, and that we keep writing
    /// there, never through the path.
    fn notice_moved(&self, inner: &mut Inner) {
        let Some(dir) = inner.dir.as_ref() else {
            return;
        };
        if inner.said_moved || dir.is_at_path() || dir.is_removed() {
            return;
        }
        inner.said_moved = true;
        let what = format!(
            "supervisor: log dir {} no longer leads to the folder opened at start \
             (moved, or replaced by a link or another folder); {} keeps going to that \
             folder, never through the path; to log at the path again, restart the supervisor",
            self.folder.display(),
            self.name.to_string_lossy()
        );
        let _ = writeln!(io::stderr().lock(), "{what}");
        if let Some(file) = inner.file.as_mut() {
            let line = format!(
                "{} {what}\n",
                humantime::format_rfc3339_millis(SystemTime::now())
            );
            let _ = file.write_batch(line.as_bytes());
        }
    }

    /// Says so on stderr, at most once a minute; whether it did.
    fn complain(&self, inner: &mut Inner, err: &io::Error) -> bool {
        if inner
            .last_complaint
            .is_some_and(|t| t.elapsed() < COMPLAIN_EVERY)
        {
            return false;
        }
        inner.last_complaint = Some(Instant::now());
        // Not through tracing: that may be this very sink.
        let _ = writeln!(
            io::stderr().lock(),
            "supervisor: cannot write {}: {}; dropping lines until it works again",
            self.path.display(),
            err
        );
        true
    }
}

/// Lets `tracing_subscriber::fmt` write into a [`LogSink`], so the
/// supervisor's own log shares rotation, reopen and drop accounting.
/// Each event becomes one batch.
#[derive(Clone)]
pub(crate) struct SinkWriter(pub Arc<LogSink>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SinkWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> EventWriter<'a> {
        EventWriter {
            sink: &self.0,
            buf: Vec::new(),
        }
    }
}

/// Collects one event's bytes; complete lines go to the sink as soon as
/// they are seen, a partial rest when dropped (with `\n` added).
pub(crate) struct EventWriter<'a> {
    sink: &'a LogSink,
    buf: Vec<u8>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(last_nl) = memchr::memrchr(b'\n', data) else {
            self.buf.extend_from_slice(data);
            return Ok(data.len());
        };
        let (lines, tail) = data.split_at(last_nl + 1);
        let count = memchr::memchr_iter(b'\n', lines).count() as u64;
        if self.buf.is_empty() {
            self.sink.write_batch(lines, count);
        } else {
            self.buf.extend_from_slice(lines);
            self.sink.write_batch(&self.buf, count);
            self.buf.clear();
        }
        self.buf.extend_from_slice(tail);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.buf.push(b'\n');
            self.sink.write_batch(&self.buf, 1);
        }
    }
}

/// `log.to = "stdout"`: the supervisor's own lines on its stderr, each
/// starting with `supervisor: ` (continuation lines of a long message too),
/// so they stand apart from the child's lines beside them in the container
/// engine's log. One event is one `write` of whole lines, which a pipe
/// keeps whole up to `PIPE_BUF`.
#[derive(Clone, Copy)]
pub(crate) struct PrefixedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for PrefixedStderr {
    type Writer = PrefixedLines;

    fn make_writer(&'a self) -> PrefixedLines {
        PrefixedLines(Vec::new())
    }
}

/// `LEVEL message` with no time (the engine stamps each line) and no
/// padding, for [`PrefixedStderr`].
pub(crate) struct Bare;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Bare
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "{} ", event.metadata().level())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// One event's bytes, written prefixed when dropped.
pub(crate) struct PrefixedLines(Vec<u8>);

impl Write for PrefixedLines {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PrefixedLines {
    fn drop(&mut self) {
        let out = prefixed(&self.0);
        if !out.is_empty() {
            // Nowhere to tell a failure to write our own lines.
            let _ = io::stderr().lock().write_all(&out);
        }
    }
}

/// Every line of `text` with `supervisor: ` before it and `\n` after it.
pub(crate) fn prefixed(text: &[u8]) -> Vec<u8> {
    const PREFIX: &[u8] = b"supervisor: ";
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(text.len() + PREFIX.len() + 1);
    for line in text.split(|&b| b == b'\n') {
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests;
