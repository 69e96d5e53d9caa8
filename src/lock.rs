//! The instance lock, and the checks on the folders it lives in.
//!
//! One exclusive `flock` on `<state_dir>/supervisor.pid`, held for the life
//! of the process. The lock belongs to the open file description, so the fd
//! is close-on-exec: a child must never inherit it and keep the lock alive
//! after the supervisor died. The file is never truncated or written before
//! the lock is held, and never unlinked (a waiter could lock the unlinked
//! inode); after locking we re-check that the locked inode is still the one
//! at the path.
//!
//! The state folder is held open with the lock ([`Dir`]): the pid
//! file and `state.json` are reached relative to it, never through its
//! path, so a folder swapped for a link is never written through.
//!
//! The other side lives here too: [`find_supervisor`], how every other
//! command finds the lock holder without ever taking the lock.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;

use crate::fsafe::Dir;
use crate::sys;

pub(crate) use crate::fsafe::{check_dir, create_dir};

/// Another supervisor holds the lock.
#[derive(Debug)]
pub(crate) struct Held {
    /// The holder's pid, when it has written it already.
    pub(crate) pid: Option<i32>,
}

/// The held instance lock.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    file: File,
    path: PathBuf,
    /// The state folder, held open; the pid file is `name` in it.
    dir: Arc<Dir>,
    name: OsString,
}

/// The state folder's mode when created.
const STATE_DIR_MODE: u32 = 0o700;

/// The state folder of a pid file path, checked all the way up (created
/// if missing) and held open; and the pid file's name in it.
fn open_state_dir(path: &Path) -> io::Result<(Dir, OsString)> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(OsStr::to_owned)
        .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let dir = Dir::open("state dir", folder, STATE_DIR_MODE)?;
    Ok((dir, name))
}

/// Open the pid file without changing it: no truncation, no write.
fn open_pid_file(dir: &Dir, name: &OsStr) -> io::Result<File> {
    dir.open_file(name, OFlag::O_RDWR | OFlag::O_CREAT, 0o600)
}

/// Read the pid a holder wrote; `None` for an empty, partial or garbage file.
pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    let mut text = String::new();
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    Read::by_ref(&mut f)
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    parse_pid(&text)
}

pub(crate) fn parse_pid(text: &str) -> Option<i32> {
    let t = text.strip_suffix('\n')?;
    t.parse::<i32>()
        .ok()
        .filter(|p| *p > 1 && !t.starts_with('+'))
}

/// The holder's pid, for the loser's one line. The holder writes it right
/// after locking; a loser that lost by microseconds may look before that, so
/// ask the lock table where there is one, else re-read briefly. Reads only.
fn holder_pid(file: &File, path: &Path) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_millis(250);
    loop {
        if let Some(pid) = read_pid(path) {
            return Some(pid);
        }
        if let Some(Some(pid)) = sys::flock_holder(file.as_raw_fd()) {
            return Some(pid);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl InstanceLock {
    /// Try to become the one supervisor for this state dir. Never blocks.
    /// The state folder is checked (all the way up), created if missing,
    /// and held open from here on.
    pub(crate) fn acquire(path: &Path) -> io::Result<Result<InstanceLock, Held>> {
        let (dir, name) = open_state_dir(path)?;
        InstanceLock::acquire_in(Arc::new(dir), name, path)
    }

    fn acquire_in(
        dir: Arc<Dir>,
        name: OsString,
        path: &Path,
    ) -> io::Result<Result<InstanceLock, Held>> {
        for _ in 0..8 {
            let file = open_pid_file(&dir, &name)?;
            // std's try_lock is flock(LOCK_EX | LOCK_NB) on Linux and macOS.
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    return Ok(Err(Held {
                        pid: holder_pid(&file, path),
                    }));
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
            // Someone may have replaced the file between our open and our
            // lock: then we hold a lock nobody else will ever look at.
            let ours = file.metadata()?;
            match dir.stat_at(&name) {
                Ok(now) if crate::fsafe::same(&now, &ours) => {
                    return Ok(Ok(InstanceLock {
                        file,
                        path: path.to_owned(),
                        dir,
                        name,
                    }));
                }
                _ => continue,
            }
        }
        Err(io::Error::other(
            "the pid file keeps being replaced while we lock it",
        ))
    }

    /// Record our pid; only ever called while holding the lock.
    pub(crate) fn write_pid(&mut self) -> io::Result<()> {
        let text = format!("{}\n", std::process::id());
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())?;
        // Tools read the pid file with any permissions they like; keep ours.
        self.file
            .set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    /// The lock handed over across `reload`: the same open file, so the same
    /// lock, never released or taken again in between. The state folder is
    /// opened again by path after checking it all the way up (a folder
    /// that no longer holds the handed file is noticed at the next state
    /// write, as any lost lock).
    pub(crate) fn from_handed(file: File, path: PathBuf) -> io::Result<InstanceLock> {
        let (dir, name) = open_state_dir(&path)?;
        Ok(InstanceLock {
            file,
            path,
            dir: Arc::new(dir),
            name,
        })
    }

    /// The state folder, held open.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The descriptor that holds the lock (handed over across `reload`).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// On a clean exit: leave the pid file empty (the file itself stays;
    /// unlinking a lock file races). A log rotator that reads it later
    /// then signals nobody, instead of whoever reused our pid: newsyslog's
    /// SIGHUP would kill an unrelated process.
    pub(crate) fn clear_pid(&mut self) -> io::Result<()> {
        self.file.set_len(0)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A tmp cleaner (or a person) may delete the state dir while we run;
    /// then the next supervisor would lock a fresh file and think itself
    /// alone. Called on every state change: if our locked inode is no
    /// longer in the folder at the path, recreate the folder (checked all
    /// the way up first) and lock a new pid file. A folder that is still
    /// there but no longer at its path (renamed away, a link or another
    /// folder put in its place) is an error: the lock is lost, and nothing
    /// is written through the path. `Ok(true)` when the lock had to be
    /// re-established.
    pub(crate) fn ensure_linked(&mut self) -> io::Result<bool> {
        let ours = self.file.metadata()?;
        let at_path = self.dir.is_at_path();
        if at_path
            && self
                .dir
                .stat_at(&self.name)
                .is_ok_and(|now| crate::fsafe::same(&now, &ours))
        {
            return Ok(false);
        }
        let dir = if at_path {
            self.dir.clone()
        } else if self.dir.is_removed() {
            Arc::new(open_state_dir(&self.path)?.0)
        } else {
            return Err(io::Error::other(format!(
                "state dir {} no longer leads to the folder opened at start (moved, or \
                 replaced by a link or another folder)",
                self.dir.path().display()
            )));
        };
        match InstanceLock::acquire_in(dir, self.name.clone(), &self.path)? {
            Ok(fresh) => {
                // The old descriptor (and its lock on the lost inode) closes here.
                self.file = fresh.file;
                self.dir = fresh.dir;
                self.write_pid()?;
                Ok(true)
            }
            Err(held) => Err(io::Error::other(format!(
                "another supervisor ({}) locked {} after it was removed",
                held.pid
                    .map_or("pid unknown".into(), |p| format!("pid {p}")),
                self.path.display()
            ))),
        }
    }
}

/// The pid of the supervisor that holds the lock on `pid_path`, if any,
/// proven without taking the lock (that could make a supervisor starting at
/// that instant lose the race). Where the platform has a lock table (Linux:
/// `/proc/locks`) it names the holder. Elsewhere the pid file's pid must be
/// alive and be the process `state.json` recorded (pid *and* start time);
/// only without a record of that pid does "runs this same program" do. A
/// recorded start time that differs means the pid was reused: never ours.
pub(crate) fn find_supervisor(pid_path: &Path, state_path: &Path) -> Option<i32> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(pid_path)
        .ok()?;
    if let Some(answer) = sys::flock_holder(file.as_raw_fd()) {
        return answer.filter(|pid| sys::is_alive(*pid));
    }
    let pid = read_pid(pid_path)?;
    if !sys::is_alive(pid) {
        return None;
    }
    let recorded = crate::state::read(state_path)
        .ok()
        .flatten()
        .and_then(|r| r.supervisor)
        .filter(|s| s.pid == pid);
    match recorded.and_then(|s| s.start_time) {
        Some(t) => (sys::process_start_time(pid) == Some(t)).then_some(pid),
        None => sys::runs_same_executable(pid).then_some(pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_parsing() {
        let table = [
            ("4242\n", Some(4242)),
            ("4242", None), // still being written
            ("", None),
            ("\n", None),
            ("1\n", None),
            ("0\n", None),
            ("-5\n", None),
            ("+5\n", None),
            ("12ab\n", None),
            ("99999999999999\n", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_pid(text), want, "{text:?}");
        }
    }

    #[test]
    fn second_lock_is_refused_and_reads_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.pid");
        let mut first = InstanceLock::acquire(&path).unwrap().unwrap();
        let me = std::process::id() as i32;
        // Before the pid is written, only a lock table (Linux) can name us.
        let second = InstanceLock::acquire(&path).unwrap();
        assert!(matches!(second, Err(Held { pid }) if pid.is_none_or(|p| p == me)));
        first.write_pid().unwrap();
        let third = InstanceLock::acquire(&path).unwrap();
        assert!(matches!(third, Err(Held { pid: Some(p) }) if p == me));
        drop(first);
        assert!(InstanceLock::acquire(&path).unwrap().is_ok());
    }

    #[test]
    fn a_removed_state_dir_is_recreated_and_relocked() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        create_dir("state dir", &state, 0o700).unwrap();
        let path = state.join("supervisor.pid");
        let mut lock = InstanceLock::acquire(&path).unwrap().unwrap();
        lock.write_pid().unwrap();
        assert!(!lock.ensure_linked().unwrap());
        fs::remove_dir_all(&state).unwrap();
        assert!(lock.ensure_linked().unwrap());
        assert!(InstanceLock::acquire(&path).unwrap().is_err(), "still ours");
        assert_eq!(read_pid(&path), Some(std::process::id() as i32));
    }

    #[test]
    fn folders_others_can_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("state");
        assert!(!check_dir("state dir", &d).unwrap());
        create_dir("state dir", &d, 0o700).unwrap();
        assert!(check_dir("state dir", &d).unwrap());
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_dir("state dir", &d).is_err());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        let e = check_dir("state dir", &link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
