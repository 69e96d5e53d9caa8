//! The instance lock, and the checks on the folders it lives in.
//!
//! One exclusive `flock` on the state folder itself (open
//! `O_DIRECTORY|O_NOFOLLOW`), held for the life of the process: an
//! operator's cleanup that removes `supervisor.pid` takes nothing away.
//! The pid file is information (written again when removed) and is
//! flocked too, for supervisors from before the folder lock. A lock
//! belongs to the open file description, so the fds are close-on-exec: a
//! child must never inherit them and keep the lock alive after the
//! supervisor died. The pid file is never truncated or written before the
//! lock is held; after locking we re-check that the locked folder is still
//! the one at the path.
//!
//! The other side lives here too: [`find`], how every other command finds
//! the lock holder without ever taking the lock, and proves it is the
//! supervisor `state.json` records before anything signals it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::state::Record;
use crate::sys;

pub(crate) use crate::fsafe::{check_dir, create_dir};

/// Another supervisor holds the lock.
#[derive(Debug)]
pub(crate) struct Held {
    /// The holder's pid, when it has written it already.
    pub(crate) pid: Option<i32>,
}

/// The held instance lock: an exclusive `flock` on the state folder itself,
/// open `O_DIRECTORY|O_NOFOLLOW`. Nothing an operator's cleanup does to the
/// files in it (`rm supervisor.pid`, a tmp cleaner ageing files) takes the
/// lock away: every other command and copy still finds it held. The pid
/// file is information for people and log rotators, put back when removed;
/// it is flocked too, so that a supervisor from before the folder lock
/// (which locks only the pid file) sees this one.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    /// The state folder, open and locked: the lock itself.
    dir: File,
    dir_path: PathBuf,
    /// `supervisor.pid`, opened through `dir`.
    pid_file: File,
    path: PathBuf,
}

/// The state folder, open for reading: never through a symbolic link.
fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Open the pid file in the held folder without changing it: no
/// truncation, no write; never through a link.
fn open_pid_file_at(dir: &File, name: &std::ffi::OsStr) -> io::Result<File> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    use std::os::fd::FromRawFd;
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Whether the open file `f` is still the one at `path` (not removed, not
/// replaced).
fn still_at(f: &File, path: &Path) -> io::Result<bool> {
    let ours = f.metadata()?;
    Ok(fs::symlink_metadata(path)
        .is_ok_and(|now| now.ino() == ours.ino() && now.dev() == ours.dev()))
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
    /// Try to become the one supervisor for the state folder that holds
    /// `path` (the pid file). Never blocks.
    pub(crate) fn acquire(path: &Path) -> io::Result<Result<InstanceLock, Held>> {
        let dir_path = path.parent().unwrap_or(Path::new("/")).to_owned();
        let name = path.file_name().unwrap_or_default();
        for _ in 0..8 {
            let dir = open_dir(&dir_path)?;
            // std's try_lock is flock(LOCK_EX | LOCK_NB) on Linux and macOS;
            // a folder opened for reading can be flocked on both.
            match dir.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    return Ok(Err(Held {
                        pid: holder_pid(&dir, path),
                    }));
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
            // Someone may have replaced the folder between our open and our
            // lock: then we hold a lock nobody else will ever look at.
            if !still_at(&dir, &dir_path)? {
                let _ = dir.unlock();
                continue;
            }
            let pid_file = open_pid_file_at(&dir, name)?;
            match pid_file.try_lock() {
                Ok(()) => {}
                // A supervisor from before the folder lock runs here.
                Err(fs::TryLockError::WouldBlock) => {
                    // Released now, not when the last copy of the
                    // descriptor closes: a thread of ours forking at this
                    // moment holds one until its child execs.
                    let _ = dir.unlock();
                    return Ok(Err(Held {
                        pid: holder_pid(&pid_file, path),
                    }));
                }
                Err(fs::TryLockError::Error(e)) => {
                    let _ = dir.unlock();
                    return Err(e);
                }
            }
            return Ok(Ok(InstanceLock {
                dir,
                dir_path,
                pid_file,
                path: path.to_owned(),
            }));
        }
        Err(io::Error::other(
            "the state folder keeps being replaced while we lock it",
        ))
    }

    /// Record our pid; only ever called while holding the lock.
    pub(crate) fn write_pid(&mut self) -> io::Result<()> {
        let text = format!("{}\n", std::process::id());
        self.pid_file.set_len(0)?;
        self.pid_file.seek(SeekFrom::Start(0))?;
        self.pid_file.write_all(text.as_bytes())?;
        // Tools read the pid file with any permissions they like; keep ours.
        self.pid_file
            .set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    /// The lock handed over across `reload`: the same open folder, so the
    /// same lock, never released or taken again in between. An image from
    /// before the folder lock hands over its locked pid file instead: that
    /// stays ours, and the folder is locked beside it.
    pub(crate) fn from_handed(file: File, path: PathBuf) -> io::Result<InstanceLock> {
        let dir_path = path.parent().unwrap_or(Path::new("/")).to_owned();
        let name = path.file_name().unwrap_or_default().to_owned();
        if file.metadata()?.is_dir() {
            let pid_file = open_pid_file_at(&file, &name)?;
            // The old image's descriptor closed at the exec, and its lock
            // with it; best effort (only older supervisors look at it).
            let _ = pid_file.try_lock();
            return Ok(InstanceLock {
                dir: file,
                dir_path,
                pid_file,
                path,
            });
        }
        let dir = open_dir(&dir_path)?;
        match dir.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::other(format!(
                    "another process holds the lock on {}",
                    dir_path.display()
                )))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(InstanceLock {
            dir,
            dir_path,
            pid_file: file,
            path,
        })
    }

    /// The state folder, held open (and locked): `state.json` is written
    /// relative to it, never through the folder's path.
    pub(crate) fn dir_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.dir)
    }

    /// The descriptor that holds the lock (handed over across `reload`).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.dir.as_raw_fd()
    }

    /// On a clean exit: leave the pid file empty (the file itself stays;
    /// unlinking a lock file races). A log rotator that reads it later
    /// then signals nobody, instead of whoever reused our pid: newsyslog's
    /// SIGHUP would kill an unrelated process.
    pub(crate) fn clear_pid(&mut self) -> io::Result<()> {
        self.pid_file.set_len(0)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Called on every state change. The lock is on the folder, so removing
    /// the pid file takes nothing away; it is written again (log rotators
    /// read it). A tmp cleaner (or a person) may delete the whole state
    /// folder: then the next supervisor would lock a fresh one and think
    /// itself alone, so recreate the folder and lock it again. `Ok(true)`
    /// when something had to be put back.
    pub(crate) fn ensure_linked(&mut self) -> io::Result<bool> {
        if !still_at(&self.dir, &self.dir_path)? {
            create_dir("state dir", &self.dir_path, 0o700)
                .map_err(|e| io::Error::other(e.to_string()))?;
            return match InstanceLock::acquire(&self.path)? {
                Ok(fresh) => {
                    // The old descriptors (and their locks on the lost
                    // folder) close here.
                    *self = fresh;
                    self.write_pid()?;
                    Ok(true)
                }
                Err(held) => Err(io::Error::other(format!(
                    "another supervisor ({}) locked {} after it was removed",
                    held.pid
                        .map_or("pid unknown".into(), |p| format!("pid {p}")),
                    self.dir_path.display()
                ))),
            };
        }
        if still_at(&self.pid_file, &self.path)? {
            return Ok(false);
        }
        let name = self.path.file_name().unwrap_or_default().to_owned();
        let fresh = open_pid_file_at(&self.dir, &name)?;
        let _ = fresh.try_lock();
        self.pid_file = fresh;
        self.write_pid()?;
        Ok(true)
    }
}

/// A lock given up is released at once (`flock(LOCK_UN)` on the open
/// file description), not when the last copy of its descriptor closes: a
/// thread forking at that moment holds a copy until its child execs
/// (the descriptors are close-on-exec), and the lock would outlive us by
/// that long. A `reload` executes the new image without dropping it.
impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = self.dir.unlock();
        let _ = self.pid_file.unlock();
    }
}

/// What the other commands find in a state folder.
#[derive(Debug)]
pub(crate) enum Finding {
    /// Nobody holds the lock.
    NotRunning,
    /// The lock holder is proven to be the supervisor `record` names;
    /// `holder` is what to signal it and wait on it through.
    Running {
        pid: i32,
        record: Box<Record>,
        holder: Holder,
    },
    /// Someone holds the lock (or we cannot tell), but it is not proven
    /// to be a supervisor: never signalled.
    Unknown {
        why: String,
        /// The holder has the locked folder open, but after the wait no
        /// record names it yet: most likely a supervisor in its first
        /// moments (or one that cannot write `state.json`). What `status`
        /// shows as `starting`; still never signalled.
        starting: Option<i32>,
    },
}

/// How long a lock holder whose record does not name it yet (a supervisor
/// a moment after taking the lock, or a moment after a `reload` to another
/// path) is waited for.
const PROOF_WAIT: Duration = Duration::from_secs(2);

/// What proving a lock holder asks of the system.
pub(crate) trait Facts {
    fn is_alive(&self, pid: i32) -> bool;
    /// Whether `pid` has the file (dev, ino) open.
    fn holds(&self, pid: i32, object: (u64, u64)) -> io::Result<bool>;
    fn start_time(&self, pid: i32) -> Option<u64>;
    fn boot_id(&self) -> Option<String>;
    fn executable(&self, pid: i32) -> Option<PathBuf>;
}

struct System;

impl Facts for System {
    fn is_alive(&self, pid: i32) -> bool {
        sys::is_alive(pid)
    }
    fn holds(&self, pid: i32, object: (u64, u64)) -> io::Result<bool> {
        sys::holds_file(pid, object.0, object.1)
    }
    fn start_time(&self, pid: i32) -> Option<u64> {
        sys::process_start_time(pid)
    }
    fn boot_id(&self) -> Option<String> {
        sys::boot_id()
    }
    fn executable(&self, pid: i32) -> Option<PathBuf> {
        sys::executable(pid)
    }
}

/// Why a lock holder is not (yet) proven to be the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Doubt {
    /// It has exited.
    Gone,
    /// Its open files cannot be listed.
    Cannot(String),
    /// It does not have the lock object open.
    NotOpen,
    /// `state.json` names no supervisor, or another pid.
    NotRecorded(Option<i32>),
    /// `state.json` names it, with another start time: the pid was reused.
    StartTime,
    /// `state.json` is from another boot.
    Boot,
    /// It runs another executable than the one recorded.
    Executable {
        runs: Option<String>,
        recorded: String,
    },
}

impl Doubt {
    /// Worth waiting for: the holder may be about to record itself, or
    /// be exiting (its descriptors closed a moment before the lock table
    /// forgets it).
    fn may_pass(&self) -> bool {
        matches!(
            self,
            Doubt::Gone | Doubt::NotOpen | Doubt::NotRecorded(_) | Doubt::Executable { .. }
        )
    }
}

impl std::fmt::Display for Doubt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Doubt::Gone => write!(
                f,
                "it has exited; the lock was passed on to a process that cannot be named"
            ),
            Doubt::Cannot(e) => write!(f, "its open files cannot be listed ({e})"),
            Doubt::NotOpen => write!(
                f,
                "it does not have the locked folder open (the lock was taken by a process \
                 that has exited, and the pid reused?)"
            ),
            Doubt::NotRecorded(None) => write!(f, "state.json names no supervisor"),
            Doubt::NotRecorded(Some(p)) => write!(f, "state.json names supervisor {p} instead"),
            Doubt::StartTime => write!(
                f,
                "its start time is not the one state.json records (the pid was reused?)"
            ),
            Doubt::Boot => write!(f, "state.json was written before the last reboot"),
            Doubt::Executable { runs, recorded } => write!(
                f,
                "it runs {}, not {recorded} as state.json records",
                runs.as_deref()
                    .unwrap_or("an executable that cannot be read")
            ),
        }
    }
}

/// The rule: `pid` holds the lock object (dev, ino) as the supervisor
/// `rec` names if it has that object open and its pid, start time (and
/// boot) and executable are the ones recorded.
pub(crate) fn prove(
    pid: i32,
    object: (u64, u64),
    rec: Option<&Record>,
    facts: &impl Facts,
) -> Result<(), Doubt> {
    if !facts.is_alive(pid) {
        return Err(Doubt::Gone);
    }
    match facts.holds(pid, object) {
        Ok(true) => {}
        Ok(false) => return Err(Doubt::NotOpen),
        // Exited between the two looks.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Doubt::Gone),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Doubt::Cannot("permission denied".into()))
        }
        Err(e) => return Err(Doubt::Cannot(e.to_string())),
    }
    let named = rec.and_then(|r| r.supervisor.as_ref());
    let s = named
        .filter(|s| s.pid == pid)
        .ok_or(Doubt::NotRecorded(named.map(|s| s.pid)))?;
    if let (Some(then), Some(now)) = (s.boot_id.as_deref(), facts.boot_id()) {
        if then != now {
            return Err(Doubt::Boot);
        }
    }
    let started = facts.start_time(pid);
    // Unreadable because it exited between the looks: a supervisor
    // stopping, not a reused pid.
    if started.is_none() && !facts.is_alive(pid) {
        return Err(Doubt::Gone);
    }
    if s.start_time.is_none() || started != s.start_time {
        return Err(Doubt::StartTime);
    }
    if let Some(recorded) = &s.executable {
        let runs = facts.executable(pid);
        if !runs
            .as_deref()
            .is_some_and(|r| sys::same_file_path(r, Path::new(recorded)))
        {
            return Err(Doubt::Executable {
                runs: runs.map(|r| r.display().to_string()),
                recorded: recorded.clone(),
            });
        }
    }
    Ok(())
}

/// Whether `pid` is still the process that started at `start` (as
/// recorded and proven): alive (a zombie is not) and with that start time.
/// A pid reused by another process has another start time; an unreadable
/// one (it exited between the looks) is not the same. Without a recorded
/// start time (never after a proof) only whether it is alive.
pub(crate) fn same_process(pid: i32, start: Option<u64>, facts: &impl Facts) -> bool {
    if !facts.is_alive(pid) {
        return false;
    }
    match start {
        Some(start) => facts.start_time(pid) == Some(start) && facts.is_alive(pid),
        None => true,
    }
}

/// The proven supervisor, as the control commands signal it and wait for
/// it: a handle opened before the proof (a pidfd on Linux, see
/// [`sys::ProcessHandle`]) and the start time it was proven with. Neither
/// a signal nor a wait can be mistaken about a pid reused after the proof:
/// through the pidfd, a signal to a process that has exited fails with
/// ESRCH and its exit is seen as such; without one (macOS; a kernel before
/// 5.3 or one that refuses pidfds) the start time is checked again right
/// before `kill(2)` and at every look of a wait, which leaves only the
/// microseconds between that check and the `kill`.
#[derive(Debug)]
pub(crate) struct Holder {
    handle: sys::ProcessHandle,
    start_time: Option<u64>,
}

impl Holder {
    pub(crate) fn new(handle: sys::ProcessHandle, start_time: Option<u64>) -> Holder {
        Holder { handle, start_time }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.handle.pid()
    }

    /// Whether signals and waits go through a pidfd.
    #[cfg(test)]
    pub(crate) fn has_pidfd(&self) -> bool {
        self.handle.has_pidfd()
    }

    /// `sig` to the proven supervisor; ESRCH when it has exited (its pid
    /// may name another process by now: that one is never signalled).
    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) -> nix::Result<()> {
        if let Some(sent) = self.handle.signal(sig) {
            return sent;
        }
        if !self.is_same(&System) {
            return Err(nix::errno::Errno::ESRCH);
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
    }

    fn is_same(&self, facts: &impl Facts) -> bool {
        same_process(self.pid(), self.start_time, facts)
    }

    /// Whether the proven supervisor has exited, waiting up to `wait` for
    /// it to (the wait loops' pace): through the pidfd, or by its pid and
    /// start time. A pid reused after it exited is not taken for it.
    pub(crate) fn exited_within(&self, wait: Duration) -> bool {
        if let Some(exited) = self.handle.exited(wait) {
            return exited;
        }
        if !self.is_same(&System) {
            return true;
        }
        std::thread::sleep(wait);
        false
    }
}

/// The device and inode of an open file.
fn ident(f: &File) -> io::Result<(u64, u64)> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Who holds the lock on the state folder at `state_dir`, proven without
/// taking the lock (that could make a supervisor starting at that instant
/// lose the race). Where the platform has a lock table (Linux:
/// `/proc/locks`) it names the holder; elsewhere the pid file (or the
/// record) names a candidate, which must have the folder open. The
/// holder is then proven to be the supervisor `state.json` records
/// ([`prove`]); a holder that is not is `Unknown`, never signalled. A
/// folder we may not read is `Unknown` too: it may well hold a running
/// supervisor.
pub(crate) fn find(pid_path: &Path, state_path: &Path) -> Finding {
    find_with(pid_path, state_path, &System)
}

fn find_with(pid_path: &Path, state_path: &Path, facts: &impl Facts) -> Finding {
    let dir_path = pid_path.parent().unwrap_or(Path::new("/"));
    let unknown = |why: String| Finding::Unknown {
        why,
        starting: None,
    };
    let dir = match open_dir(dir_path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Finding::NotRunning,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return unknown(format!(
                "cannot read the state folder {}: permission denied (run as its owner)",
                dir_path.display()
            ))
        }
        Err(e) => {
            return unknown(format!(
                "cannot open the state folder {}: {e}",
                dir_path.display()
            ))
        }
    };
    let pid_file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(pid_path);
    // The lock objects, folder first; the pid file for a supervisor from
    // before the folder lock.
    let mut objects = vec![&dir];
    if let Ok(f) = &pid_file {
        objects.push(f);
    }
    let deadline = Instant::now() + PROOF_WAIT;
    loop {
        // From the lock table: the holder of the first locked object.
        let mut named: Option<(i32, &File)> = None;
        let mut table = true;
        for f in &objects {
            match sys::flock_holder(f.as_raw_fd()) {
                Some(Some(pid)) => {
                    named = Some((pid, f));
                    break;
                }
                Some(None) => {}
                None => {
                    table = false;
                    break;
                }
            }
        }
        if table && named.is_none() {
            return Finding::NotRunning;
        }
        // An unreadable record proves nothing: with a holder, it is unknown;
        // without a lock table it names no candidate.
        let rec = match crate::state::read(state_path) {
            Ok(r) => r,
            Err(e) if table => return unknown(e),
            Err(_) => None,
        };
        let verdict = if table {
            let Some((pid, f)) = named else {
                return Finding::NotRunning;
            };
            let object = match ident(f) {
                Ok(o) => o,
                Err(e) => return unknown(e.to_string()),
            };
            // Held before the proof: what is signalled later is the
            // process proven now, never one that got its pid since.
            match sys::ProcessHandle::open(pid) {
                Ok(handle) => (pid, prove(pid, object, rec.as_ref(), facts), Some(handle)),
                Err(_) => (pid, Err(Doubt::Gone), None),
            }
        } else {
            // No lock table: a candidate that has neither object open
            // holds no lock of ours.
            let candidate = read_pid(pid_path).or_else(|| {
                rec.as_ref()
                    .and_then(|r| r.supervisor.as_ref())
                    .map(|s| s.pid)
            });
            let Some(pid) = candidate.filter(|p| facts.is_alive(*p)) else {
                return Finding::NotRunning;
            };
            // Held before the proof (as above).
            let Ok(handle) = sys::ProcessHandle::open(pid) else {
                return Finding::NotRunning;
            };
            let mut verdict = Err(Doubt::NotOpen);
            for f in &objects {
                let Ok(object) = ident(f) else { continue };
                verdict = prove(pid, object, rec.as_ref(), facts);
                if verdict != Err(Doubt::NotOpen) {
                    break;
                }
            }
            if verdict == Err(Doubt::NotOpen) {
                return Finding::NotRunning;
            }
            (pid, verdict, Some(handle))
        };
        match verdict {
            (pid, Ok(()), handle) => {
                let Some(record) = rec else {
                    return unknown("state.json is gone".into());
                };
                let start = record.supervisor.as_ref().and_then(|s| s.start_time);
                let handle = handle.unwrap_or_else(|| sys::ProcessHandle::plain(pid));
                return Finding::Running {
                    pid,
                    record: Box::new(record),
                    holder: Holder::new(handle, start),
                };
            }
            (_, Err(d), _) if d.may_pass() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            (pid, Err(d), _) => {
                let what = sys::process_command(pid)
                    .filter(|c| !c.is_empty())
                    .map_or(String::new(), |c| format!(" ({c})"));
                // Not recorded yet, and running this very binary: a
                // supervisor in its first moments (a decoy holding the
                // folder runs something else).
                let starting = (matches!(d, Doubt::NotRecorded(_))
                    && facts.executable(pid).is_some_and(|theirs| {
                        std::env::current_exe()
                            .is_ok_and(|ours| sys::same_file_path(&theirs, &ours))
                    }))
                .then_some(pid);
                return Finding::Unknown {
                    why: format!(
                        "the lock on {} is held by pid {pid}{what}, which is not proven to be \
                         the supervisor: {d}",
                        dir_path.display()
                    ),
                    starting,
                };
            }
        }
    }
}

/// Whether the supervisor that wrote `record` runs another service than
/// the config at `ours` (listening on `address`, when the config could be
/// read): then the words that say so, naming both configs. The same file
/// reached through another path, or a copy for the same address, is the
/// same service; a record from before configs were recorded names none.
pub(crate) fn other_service(
    record: &Record,
    ours: &Path,
    address: Option<&str>,
    state_dir: &Path,
) -> Option<String> {
    let theirs = record.supervisor.as_ref()?.config.as_deref()?;
    if sys::same_file_path(Path::new(theirs), ours) {
        return None;
    }
    let their_address = record.listen.as_ref().map(|l| l.address.as_str());
    if address.is_some() && address == their_address {
        return None;
    }
    Some(format!(
        "the state folder {} belongs to the service of {theirs}{}, not to {}{}: two services \
         cannot share a state folder; give each config its own supervisor.state_dir",
        state_dir.display(),
        their_address.map_or(String::new(), |a| format!(" (on {a})")),
        ours.display(),
        address.map_or(String::new(), |a| format!(" (on {a})")),
    ))
}

/// The pid of the proven supervisor holding the lock, if any (see [`find`]).
pub(crate) fn find_supervisor(pid_path: &Path, state_path: &Path) -> Option<i32> {
    match find(pid_path, state_path) {
        Finding::Running { pid, .. } => Some(pid),
        _ => None,
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
    fn removing_the_pid_file_leaves_the_lock_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.pid");
        let mut lock = InstanceLock::acquire(&path).unwrap().unwrap();
        lock.write_pid().unwrap();
        fs::remove_file(&path).unwrap();
        assert!(InstanceLock::acquire(&path).unwrap().is_err(), "still ours");
        assert!(
            lock.ensure_linked().unwrap(),
            "the pid file is written again"
        );
        assert_eq!(read_pid(&path), Some(std::process::id() as i32));
        assert!(!lock.ensure_linked().unwrap());
        drop(lock);
        assert!(InstanceLock::acquire(&path).unwrap().is_ok());
    }

    #[test]
    fn a_pid_file_locked_by_an_older_supervisor_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.pid");
        let old = File::create(&path).unwrap();
        old.try_lock().unwrap();
        assert!(InstanceLock::acquire(&path).unwrap().is_err());
        // Its reload hands the locked pid file to a new image, which
        // locks the folder beside it.
        let handed = InstanceLock::from_handed(old, path.clone()).unwrap();
        assert!(InstanceLock::acquire(&path).unwrap().is_err());
        let dir_fd = OpenOptions::new().read(true).open(dir.path()).unwrap();
        assert!(dir_fd.try_lock().is_err(), "the folder is locked");
        drop(handed);
        assert!(InstanceLock::acquire(&path).unwrap().is_ok());
    }

    /// A made-up process table for [`prove`]: (pid, start time, open
    /// object, executable).
    type Proc = (i32, u64, Option<(u64, u64)>, &'static str);
    /// The table, whether open files cannot be listed, and whether the
    /// processes exit as their start time is asked for (1) or have (2).
    struct Fake(Vec<Proc>, bool, std::cell::Cell<u8>);

    impl Facts for Fake {
        fn is_alive(&self, pid: i32) -> bool {
            self.2.get() != 2 && self.0.iter().any(|p| p.0 == pid)
        }
        fn holds(&self, pid: i32, object: (u64, u64)) -> io::Result<bool> {
            if self.1 {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            Ok(self.0.iter().any(|p| p.0 == pid && p.2 == Some(object)))
        }
        fn start_time(&self, pid: i32) -> Option<u64> {
            if self.2.get() != 0 {
                self.2.set(2);
                return None;
            }
            self.0.iter().find(|p| p.0 == pid).map(|p| p.1)
        }
        fn boot_id(&self) -> Option<String> {
            Some("b1".into())
        }
        fn executable(&self, pid: i32) -> Option<PathBuf> {
            self.0
                .iter()
                .find(|p| p.0 == pid)
                .map(|p| p.2.map_or("/x", |_| p.3).into())
        }
    }

    fn fake(table: Vec<Proc>, denied: bool) -> Fake {
        Fake(table, denied, std::cell::Cell::new(0))
    }

    #[test]
    fn a_holder_is_proven_by_its_open_folder_and_its_record() {
        const DIR: (u64, u64) = (1, 77);
        let record = |pid: i32, start: Option<u64>, boot: &str| crate::state::Record {
            supervisor: Some(crate::state::SupervisorInfo {
                pid,
                started_at: String::new(),
                start_time: start,
                boot_id: Some(boot.into()),
                executable: Some("/usr/bin/env".into()),
                ..Default::default()
            }),
            ..crate::state::Record::not_running()
        };
        let sup = (40, 500, Some(DIR), "/usr/bin/env");
        type Case = (Fake, Option<Record>, Result<(), Doubt>);
        let table: Vec<Case> = vec![
            (
                fake(vec![sup], false),
                Some(record(40, Some(500), "b1")),
                Ok(()),
            ),
            (
                fake(vec![], false),
                Some(record(40, Some(500), "b1")),
                Err(Doubt::Gone),
            ),
            // A decoy holding the lock: the folder open, no record of it.
            (
                fake(vec![(40, 500, Some(DIR), "/usr/bin/flock")], false),
                Some(record(41, Some(9), "b1")),
                Err(Doubt::NotRecorded(Some(41))),
            ),
            (fake(vec![sup], false), None, Err(Doubt::NotRecorded(None))),
            // The pid the lock table names was reused: nothing open.
            (
                fake(vec![(40, 900, None, "/bin/sleep")], false),
                Some(record(40, Some(500), "b1")),
                Err(Doubt::NotOpen),
            ),
            // ... or it has the folder open, but started later.
            (
                fake(vec![(40, 900, Some(DIR), "/usr/bin/env")], false),
                Some(record(40, Some(500), "b1")),
                Err(Doubt::StartTime),
            ),
            (
                fake(vec![sup], false),
                Some(record(40, None, "b1")),
                Err(Doubt::StartTime),
            ),
            (
                fake(vec![sup], false),
                Some(record(40, Some(500), "b0")),
                Err(Doubt::Boot),
            ),
            (
                fake(vec![(40, 500, Some(DIR), "/bin/sh")], false),
                Some(record(40, Some(500), "b1")),
                Err(Doubt::Executable {
                    runs: Some("/bin/sh".into()),
                    recorded: "/usr/bin/env".into(),
                }),
            ),
            (
                fake(vec![sup], true),
                Some(record(40, Some(500), "b1")),
                Err(Doubt::Cannot("permission denied".into())),
            ),
        ];
        // Exits between the looks: its start time cannot be read.
        let exiting = fake(vec![sup], false);
        exiting.2.set(1);
        let rec = record(40, Some(500), "b1");
        assert_eq!(prove(40, DIR, Some(&rec), &exiting), Err(Doubt::Gone));
        for (i, (facts, rec, want)) in table.into_iter().enumerate() {
            assert_eq!(prove(40, DIR, rec.as_ref(), &facts), want, "case {i}");
        }
    }

    /// Issue 20's leftover D, the rule: the wait loops of `stop`,
    /// `restart` and `reload` (without a pidfd) take a pid for the proven
    /// supervisor only while its start time is the proven one.
    #[test]
    fn a_reused_pid_is_not_the_same_process() {
        let t = |table: Vec<Proc>| fake(table, false);
        let table: Vec<(Fake, Option<u64>, bool)> = vec![
            (t(vec![(40, 500, None, "/x")]), Some(500), true),
            // Exited, and its pid given to another process: what
            // `is_alive(pid)` alone took for the supervisor.
            (t(vec![(40, 900, None, "/bin/sleep")]), Some(500), false),
            (t(vec![]), Some(500), false),
            // No start time recorded (not after a proof): alive is all.
            (t(vec![(40, 900, None, "/x")]), None, true),
        ];
        for (i, (facts, start, want)) in table.into_iter().enumerate() {
            assert!(facts.is_alive(40) || !want);
            assert_eq!(same_process(40, start, &facts), want, "case {i}");
        }
        // Exits as its start time is read: not the same.
        let exiting = t(vec![(40, 500, None, "/x")]);
        exiting.2.set(1);
        assert!(!same_process(40, Some(500), &exiting));
    }

    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn sleeper() -> Reap {
        Reap(
            std::process::Command::new("sleep")
                .arg("600")
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Issue 20's leftover C and D, through a real process: the holder
    /// signals the process it was opened on (through a pidfd on Linux)
    /// and sees its exit; once it has exited, signals fail with ESRCH.
    #[test]
    fn a_holder_signals_the_process_it_was_opened_on_and_sees_it_exit() {
        use nix::sys::signal::Signal;
        let mut child = sleeper();
        let pid = child.0.id() as i32;
        let start = sys::process_start_time(pid);
        assert!(start.is_some());
        for plain in [false, true] {
            let handle = if plain {
                sys::ProcessHandle::plain(pid)
            } else {
                sys::ProcessHandle::open(pid).unwrap()
            };
            let holder = Holder::new(handle, start);
            if !plain && cfg!(target_os = "linux") {
                assert!(holder.has_pidfd(), "Linux 5.3+ gives a pidfd");
            }
            assert!(!holder.exited_within(Duration::ZERO));
            // A harmless signal goes through.
            holder.signal(Signal::SIGCONT).unwrap();
        }
        let holder = Holder::new(sys::ProcessHandle::open(pid).unwrap(), start);
        let plain = Holder::new(sys::ProcessHandle::plain(pid), start);
        holder.signal(Signal::SIGTERM).unwrap();
        // Seen as soon as it exits (a zombie until reaped counts).
        assert!(holder.exited_within(Duration::from_secs(20)));
        assert!(plain.exited_within(Duration::ZERO));
        child.0.wait().unwrap();
        assert_eq!(
            holder.signal(Signal::SIGTERM),
            Err(nix::errno::Errno::ESRCH)
        );
        assert_eq!(plain.signal(Signal::SIGTERM), Err(nix::errno::Errno::ESRCH));
        // Gone before the handle is opened: NotFound (the proof's "gone").
        let e = sys::ProcessHandle::open(pid).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    /// Issue 20's leftovers C and D with the pid really reused: the holder
    /// opened on process A (before the proof); A exits and its pid is
    /// given to B (`ns_last_pid`, as root, Linux). The holder never
    /// signals B (ESRCH) and sees A's exit at once, while `is_alive(pid)`
    /// — what the wait loops checked before — says the pid is alive and
    /// `kill(pid)` — what they signalled with — would have reached B.
    #[test]
    fn a_pid_reused_after_the_holder_was_opened_is_never_signalled_nor_waited_for() {
        use nix::sys::signal::Signal;
        let ns_last_pid = Path::new("/proc/sys/kernel/ns_last_pid");
        if !cfg!(target_os = "linux") || fs::metadata(ns_last_pid).is_err() {
            eprintln!("skipped: needs /proc/sys/kernel/ns_last_pid (Linux) to reuse a pid");
            return;
        }
        let mut a = sleeper();
        let dead = a.0.id() as i32;
        let start = sys::process_start_time(dead);
        let holder = Holder::new(sys::ProcessHandle::open(dead).unwrap(), start);
        let plain = Holder::new(sys::ProcessHandle::plain(dead), start);
        // Start times count clock ticks (10 ms): B must start in a later
        // tick than A for the start time to tell them apart (a supervisor
        // that ran longer than a tick always does).
        let deadline = Instant::now() + Duration::from_secs(20);
        while start
            .and_then(sys::process_age)
            .is_none_or(|age| age < Duration::from_millis(30))
        {
            assert!(Instant::now() < deadline, "the clock does not move");
            std::thread::sleep(Duration::from_millis(5));
        }
        a.0.kill().unwrap();
        a.0.wait().unwrap();
        let mut reused = None;
        for _ in 0..50 {
            if fs::write(ns_last_pid, format!("{}", dead - 1)).is_err() {
                break;
            }
            let b = sleeper();
            if b.0.id() as i32 == dead {
                reused = Some(b);
                break;
            }
        }
        let Some(b) = reused else {
            eprintln!(
                "skipped: cannot make pid {dead} be reused (writing ns_last_pid needs root, \
                 and a machine quiet enough)"
            );
            return;
        };
        assert!(sys::is_alive(dead), "the pid names B now");
        assert!(holder.exited_within(Duration::ZERO), "A's exit is seen");
        assert!(plain.exited_within(Duration::ZERO), "by its start time too");
        assert_eq!(
            holder.signal(Signal::SIGKILL),
            Err(nix::errno::Errno::ESRCH)
        );
        assert_eq!(plain.signal(Signal::SIGKILL), Err(nix::errno::Errno::ESRCH));
        assert!(sys::is_alive(dead), "B was not signalled");
        let b_start = sys::process_start_time(dead);
        assert!(b_start.is_some() && b_start != start);
        drop(b);
    }

    #[test]
    fn another_config_is_another_service() {
        let rec = |config: Option<&str>| crate::state::Record {
            supervisor: Some(crate::state::SupervisorInfo {
                pid: 40,
                started_at: String::new(),
                config: config.map(str::to_owned),
                ..Default::default()
            }),
            listen: Some(crate::state::ListenInfo {
                address: "127.0.0.1:8420".into(),
                bound: true,
                name: None,
                inherited: false,
                socket_id: None,
            }),
            ..crate::state::Record::not_running()
        };
        let dir = Path::new("/srv/run");
        let a = Path::new("/etc/a.toml");
        assert!(other_service(&rec(Some("/etc/a.toml")), a, Some("127.0.0.1:8421"), dir).is_none());
        assert!(
            other_service(&rec(None), a, Some("127.0.0.1:8421"), dir).is_none(),
            "older"
        );
        // Another file for the same address: a copy of the same service.
        let b = Path::new("/etc/b.toml");
        assert!(other_service(&rec(Some("/etc/a.toml")), b, Some("127.0.0.1:8420"), dir).is_none());
        for address in [Some("127.0.0.1:8421"), None] {
            let why = other_service(&rec(Some("/etc/a.toml")), b, address, dir).unwrap();
            assert!(
                why.contains("/etc/a.toml") && why.contains("/etc/b.toml"),
                "{why}"
            );
        }
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
