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
//!
//! The rooms: `last` finds and prints the last lines, `follow` the rest;
//! this file runs the command and holds what both use (the output, the
//! files' identity, reading).

mod follow;
mod last;
#[cfg(test)]
mod tests;

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::errno::Errno;

use crate::config::Config;
use crate::exit::{self, Fatal, Outcome};
use follow::{follow_until_stopped, Waiter};
use last::show;

/// Bytes read at a time, backwards when looking for lines and forwards when
/// copying.
const BLOCK: usize = 64 * 1024;
/// Bytes remembered before the read position, to notice a file truncated
/// and written again past that position between two ticks.
const CHECK: usize = 64;
/// Rotated names looked at, at least: our own `max_files`, or a logrotate
/// `rotate` count up to this.
const MIN_SCAN: u32 = 20;

/// `supervisor logs [-f] [-n N] [--supervisor]`.
pub(crate) fn run(cfg: &Config, lines: u64, follow: bool, supervisor: bool) -> Outcome {
    if cfg.log.to == crate::config::LogTo::Stdout {
        return Err(Fatal::with_code(
            exit::UNKNOWN,
            "no log files: log.to = \"stdout\" sends the child's lines to the supervisor's \
             stdout and stderr, and its own to its stderr: read them where it runs \
             (podman logs, kubectl logs, journalctl, the terminal)",
        ));
    }
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
    // A person at a terminal gets the child's bytes with control
    // characters escaped (no escape sequence of the child's retitles,
    // clears or rewrites their screen); a pipe or file gets them as they
    // are.
    let escape = io::IsTerminal::is_terminal(&stdout);
    let mut out = Output::new(stdout.lock());
    out.escape = escape;
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
    /// Escape control characters (stdout is a terminal).
    escape: bool,
    /// The last byte written was a 0xC2 that may start a C1 control
    /// (U+0080..U+009F) whose second byte comes in the next block.
    held_c2: bool,
}

impl<W: Write> Output<W> {
    fn new(w: W) -> Self {
        Output {
            w,
            last: None,
            stop: None,
            escape: false,
            held_c2: false,
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
            if self.escape {
                let shown = escape_controls(bytes, &mut self.held_c2);
                self.w.write_all(&shown).map_err(Failure::Write)?;
            } else {
                self.w.write_all(bytes).map_err(Failure::Write)?;
            }
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
        if std::mem::take(&mut self.held_c2) {
            self.w.write_all(&[0xc2]).map_err(Failure::Write)?;
        }
        self.w.flush().map_err(Failure::Write)
    }
}

/// `bytes` for a terminal: every control character but newline and tab
/// (C0, DEL, and C1 as UTF-8, U+0080..U+009F) written as `\xNN` (a C1
/// as its code point, `\u{9b}`), so it is seen, not obeyed. `held_c2`
/// carries a 0xC2 that ended the previous block (the first byte of what
/// may be a C1 control); it is written once the next byte tells.
fn escape_controls(bytes: &[u8], held_c2: &mut bool) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut prev_c2 = std::mem::take(held_c2);
    for (i, &b) in bytes.iter().enumerate() {
        if prev_c2 {
            prev_c2 = false;
            if (0x80..=0x9f).contains(&b) {
                let _ = write!(out, "\\u{{{b:x}}}");
                continue;
            }
            out.push(0xc2);
        }
        match b {
            b'\n' | b'\t' => out.push(b),
            0..=0x1f | 0x7f => {
                let _ = write!(out, "\\x{b:02x}");
            }
            0xc2 if i + 1 == bytes.len() => *held_c2 = true,
            0xc2 => prev_c2 = true,
            _ => out.push(b),
        }
    }
    out
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
