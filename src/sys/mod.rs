//! The only place with `#[cfg(target_os = ...)]`.
//!
//! Everything here is a small fact about processes, descriptors or sockets
//! that Linux and macOS answer differently. Linux reads `/proc`; macOS asks
//! the kernel through `sysctl` and libproc (never an external command: these
//! run on the supervisor's only event-loop thread). Callers see one portable
//! function each, and a `None` (or an empty list) where the platform cannot
//! tell. The byte layouts both kernels hand back are parsed by pure code
//! (`procnet`, `darwin`) that is compiled and tested on every platform.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as imp;

#[cfg(any(target_os = "macos", test))]
mod darwin;
mod limits;
#[cfg(any(target_os = "linux", test))]
mod procnet;
pub(crate) use limits::{
    may_raise_hard_limits, nice, nofile_ceiling, raise_nofile, rlimit, set_nice_after_fork,
    set_rlimit_after_fork, set_umask_after_fork, started_nofile, umask, NofileCeiling, NofileFit,
    RawRlimit, Rlimit,
};

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
compile_error!("supervisor runs on Linux and macOS only");

/// Whether this system has launchd (`launchctl`): only macOS. The launchd
/// job code compiles everywhere, so `--dry-run` works and is tested on Linux.
pub(crate) const HAS_LAUNCHD: bool = cfg!(target_os = "macos");

// ------------------------------------------------------------ processes

/// When a process started, as an opaque number that only ever grows on one
/// boot and is immune to wall-clock steps: clock ticks since boot on Linux
/// (`/proc/PID/stat` field 22), Mach absolute time on macOS
/// (`ri_proc_start_abstime`, which does not advance while the Mac sleeps).
/// Together with the pid it names one process for good: pids are reused,
/// start times are not. Compare values only within one boot (`boot_id`).
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    imp::process_start_time(pid)
}

/// How long ago a process started whose [`process_start_time`] is
/// `start`, by that same clock: immune to wall-clock steps, so `status`
/// shows a true uptime after the clock was set back. None when the clock
/// cannot be read or `start` is ahead of it.
pub(crate) fn process_age(start: u64) -> Option<std::time::Duration> {
    imp::process_age(start)
}

/// Now on the machine-wide monotonic clock (`CLOCK_MONOTONIC`, on Linux
/// and macOS alike), in nanoseconds: one process's reading can be compared
/// with another's on the same machine (how `restart` tells the answer to
/// its own request from older ones). 0 if the clock cannot be read.
pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec()).unwrap_or(0))
    })
}

/// The command line of a process, for people (`port_holder.command`): on
/// one line (an argument may hold newlines, e.g. `python3 -c`), and cut at
/// 400 characters.
pub(crate) fn process_command(pid: i32) -> Option<String> {
    imp::process_command(pid).map(|c| crate::text::one_line(&c, 400))
}

/// Whether `pid` is a live process: zombies count as dead, since they hold
/// no descriptors and run no code.
pub(crate) fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    !imp::is_zombie(pid)
}

/// Whether any live (non-zombie) process is still in process group `pgid`.
/// A group of zombies answers `kill(-pgid, 0)` (with EPERM on macOS) but is
/// not alive.
pub(crate) fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: signal 0 sends nothing.
    let r = unsafe { libc::kill(-pgid, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    imp::group_has_live_member(pgid)
}

/// The live (non-zombie) members of process group `pgid`.
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    imp::group_members(pgid)
}

/// Names this boot of the machine, so nothing recorded before a reboot is
/// mistaken for a process of now: Linux's `kernel.random.boot_id`, macOS's
/// `kern.bootsessionuuid` (set once at boot; unlike `kern.boottime`, which
/// XNU shifts on every clock adjustment).
pub(crate) fn boot_id() -> Option<String> {
    imp::boot_id()
}

/// The executable `pid` runs, as the kernel names it (resolved; on Linux
/// a binary replaced under it still reads as its path). `None` when it
/// cannot be read (gone, or another user's process).
pub(crate) fn executable(pid: i32) -> Option<PathBuf> {
    imp::executable(pid)
}

/// Whether two paths name the same file, through symbolic links.
pub(crate) fn same_file_path(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a == b || resolve(a) == resolve(b)
}

/// How much memory `pid` holds in RAM now (resident set size), in bytes.
pub(crate) fn resident_bytes(pid: i32) -> Option<u64> {
    imp::resident_bytes(pid)
}

/// The listening sockets launchd passes to a job through its `Sockets`
/// entry named `name` (`launch_activate_socket`); none elsewhere, or when
/// the job has no such entry.
pub(crate) fn launchd_sockets(name: &str) -> io::Result<Vec<RawFd>> {
    imp::launchd_sockets(name)
}

/// A process the control commands prove and then signal and wait on,
/// opened *before* the proof: on Linux a pidfd (`pidfd_open`, 5.3), which
/// names that very process, so a signal sent through it after the proof
/// can never reach another process that got its pid meanwhile (it fails
/// with ESRCH), and its exit is seen even if the pid is reused at once.
/// Elsewhere (macOS has no pidfd; an older kernel, or a seccomp filter
/// that refuses it) a plain pid: the caller checks its start time
/// instead (`lock::Holder`).
#[derive(Debug)]
pub(crate) struct ProcessHandle {
    pid: i32,
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl ProcessHandle {
    /// A handle on `pid`; NotFound when it has exited.
    pub(crate) fn open(pid: i32) -> io::Result<ProcessHandle> {
        Ok(ProcessHandle {
            pid,
            pidfd: imp::pidfd_open(pid)?,
        })
    }

    /// A handle that is the pid alone (no pidfd).
    pub(crate) fn plain(pid: i32) -> ProcessHandle {
        ProcessHandle { pid, pidfd: None }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether it names the process by a pidfd.
    #[cfg(test)]
    pub(crate) fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// `sig` through the pidfd: ESRCH once the process has exited, whoever
    /// has its pid now. `None` without a pidfd (or a kernel that refuses
    /// to signal through one): then it is the caller's to use `kill`.
    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) -> Option<nix::Result<()>> {
        use std::os::fd::AsFd;
        let fd = self.pidfd.as_ref()?;
        match imp::pidfd_send_signal(fd.as_fd(), sig as libc::c_int) {
            Err(nix::errno::Errno::ENOSYS) => None,
            r => Some(r),
        }
    }

    /// Whether the process has exited (a zombie counts), waiting up to
    /// `wait` for it to. `None` without a pidfd: the caller must tell by
    /// the pid and its start time.
    pub(crate) fn exited(&self, wait: std::time::Duration) -> Option<bool> {
        use std::os::fd::AsFd;
        imp::pidfd_exited(self.pidfd.as_ref()?.as_fd(), wait)
    }
}

/// Make this process a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`):
/// orphaned descendants are re-parented to us instead of init, so they can
/// be recognized and reaped. `false` where there is no such thing (macOS)
/// or the kernel refused.
pub(crate) fn set_child_subreaper() -> bool {
    imp::set_child_subreaper()
}

// ---------------------------------------------------------- descriptors

/// Who holds an flock on the open file `fd`: `Some(Some(pid))`, `Some(None)`
/// for nobody, `None` where the platform cannot tell (only Linux can, from
/// `/proc/locks`). Used by `status` to prove a supervisor alive without ever
/// taking the lock itself.
pub(crate) fn flock_holder(fd: RawFd) -> Option<Option<i32>> {
    imp::flock_holder(fd)
}

/// Whether process `pid` has the file (`dev`, `ino`) open on one of its
/// descriptors (Linux: `/proc/PID/fd`; macOS: `PROC_PIDLISTFDS` and each
/// vnode's `vinfo_stat`). An error when its descriptors cannot be listed
/// (another user's process, when not root: permission denied). What proves
/// that a lock holder is the process it claims to be: it has the very
/// lock object open.
pub(crate) fn holds_file(pid: i32, dev: u64, ino: u64) -> io::Result<bool> {
    imp::holds_file(pid, dev, ino)
}

/// Mark every descriptor from `from` up close-on-exec, so whatever our own
/// parent leaked (launchd and shells have been seen to leave 10 and 251 open)
/// never reaches the child. Runs once at start-up, in the parent. It lists
/// the descriptors actually open (`/proc/self/fd`, libproc), so one above a
/// lowered soft `RLIMIT_NOFILE` is found too.
pub(crate) fn cloexec_from(from: RawFd) {
    imp::cloexec_from(from)
}

/// After fork, before exec: the same, without allocating. Best effort; the
/// start-up pass in the parent already did the work (Linux:
/// `close_range(CLOSE_RANGE_CLOEXEC)`; macOS: an `fcntl` loop up to the
/// larger of the descriptor table size and the highest descriptor the
/// start-up pass saw).
///
/// # Safety
/// Only async-signal-safe calls; meant for a `pre_exec` closure.
pub(crate) unsafe fn cloexec_from_after_fork(from: RawFd) {
    imp::cloexec_from_after_fork(from)
}

/// After fork, before exec: ask the kernel to send `sig` to the child when
/// the supervisor dies (Linux), so no child outlives a SIGKILLed supervisor.
/// Returns false if the supervisor (`parent`) already died before the
/// request took effect. macOS has no equivalent: there the next supervisor
/// finds the orphan through `state.json` and stops it before binding.
///
/// # Safety
/// Only async-signal-safe calls; meant for a `pre_exec` closure.
pub(crate) unsafe fn die_with_parent(sig: libc::c_int, parent: libc::pid_t) -> bool {
    imp::die_with_parent(sig, parent)
}

/// After fork, before exec: every signal's disposition back to the default
/// and an empty signal mask, as a fresh process has (ignored signals and
/// the mask survive exec).
///
/// # Safety
/// Only async-signal-safe calls; meant for a `pre_exec` closure.
pub(crate) unsafe fn reset_signals_after_fork() {
    for sig in 1..imp::NSIG {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            imp::default_signal_after_fork(sig);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
}

/// Duplicate `fd` onto `target`, close-on-exec, replacing whatever `target`
/// held.
pub(crate) fn dup_to(fd: RawFd, target: RawFd) -> io::Result<()> {
    imp::dup_to(fd, target)
}

/// Flush a file's data before it is renamed into place (`state.json`).
/// Linux: `fdatasync`. macOS: plain `fsync`, deliberately not std's
/// `sync_data`, which is `F_FULLFSYNC` there: a full flush of the drive's
/// cache that can take tens of milliseconds and would block the event loop
/// on every state change. The record is advice for `status`; after a power
/// loss nothing it names is alive anyway (the boot id changes).
pub(crate) fn sync_file(f: &std::fs::File) -> io::Result<()> {
    imp::sync_file(f)
}

/// Own descriptor `raw`, which was handed to this process alone (by the
/// service manager, or by the image before a `reload`): `None` if it is
/// not open. Made close-on-exec: what we take, the child never inherits.
pub(crate) fn adopt_fd(raw: RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if raw < 0 || unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return None;
    }
    let _ = set_cloexec(raw, true);
    // SAFETY: open, and handed to us alone: nothing else in this process
    // owns it (the caller takes each number once).
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
}

/// Set or clear close-on-exec on `fd` (what `reload` hands to its new
/// image must survive the exec; everything else must not).
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Ask for a larger pipe buffer (Linux: 1 MiB instead of 64 KiB), so a
/// chatty child blocks less often on its stdout while the log reader
/// catches up: fewer context switches per megabyte. Best effort.
pub(crate) fn grow_pipe(fd: RawFd) {
    imp::grow_pipe(fd)
}

// --------------------------------------------------------------- sockets

/// What names one socket for as long as it exists, the same in every
/// process holding it: the inode on Linux (`/proc/PID/fd/N ->
/// socket:[INODE]`), the kernel's hashed socket address on macOS
/// (`socket_fdinfo.psi.soi_so`). `None` if `fd` is not a socket. Record it
/// for our listening socket to find every process that still holds it.
pub(crate) fn socket_id(fd: BorrowedFd<'_>) -> Option<u64> {
    imp::socket_id(fd.as_raw_fd())
}

/// Where `socket_holders` looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every process we may inspect: at start-up, to find what a killed
    /// earlier supervisor left holding its socket.
    All,
    /// This process and its descendants, by parent links (Linux:
    /// `/proc/PID/task/*/children`, cheap when there are none; macOS:
    /// `proc_listchildpids`). An orphan counts only where it came back to
    /// us: on Linux with `set_child_subreaper`; on macOS, which has no
    /// subreaper, orphans go to launchd and only `All` finds them.
    DescendantsOf(i32),
    /// That one process: whether it holds the socket (the manager that
    /// passed it to us).
    Only(i32),
}

/// The processes, other than this one, that hold socket `id` open, in no
/// particular order. Processes we may not inspect (another user's, when
/// not root) are not seen.
pub(crate) fn socket_holders(id: u64, scope: Scope) -> Vec<i32> {
    imp::socket_holders(id, scope)
}

/// The socket, as `socket_id` names it, that the server side of our TCP
/// connection from `client` to `server` got from `accept`: who holds it is
/// who answers. `None` until it is accepted, and always on macOS (where
/// nobody can be told apart this way).
pub(crate) fn accepted_socket(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    imp::accepted_socket(server, client)
}

/// Whether two socket addresses name the same end: equal, or the same
/// IPv4 address and port written once plainly and once v4-mapped
/// (`::ffff:a.b.c.d`), as one side may see a connection that a dual-stack
/// listener took.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let plain = |s: SocketAddr| match s {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => s,
        },
        v4 => v4,
    };
    plain(a) == plain(b)
}

/// A TCP socket listening on some port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpListen {
    pub addr: SocketAddr,
    /// An IPv6 wildcard that takes IPv4 too. macOS tells; Linux's tables
    /// do not show IPV6_V6ONLY, so there every `[::]` counts as one.
    pub dual_stack: bool,
    /// As `socket_id` names it.
    pub socket: u64,
    /// This process holds it (the socket we listen on, or one we are
    /// replacing).
    pub ours: bool,
}

/// Every socket listening on TCP `port`, on any address. Linux reads
/// `/proc/net/tcp{,6}` (all of the network namespace); macOS walks the
/// descriptors of every process it may inspect, which when not root means
/// our own user's: XNU itself refuses a bind beside another user's
/// overlapping listener (the uid check in in_pcbbind), so those are the
/// only ones that matter.
pub(crate) fn tcp_listeners(port: u16) -> io::Result<Vec<TcpListen>> {
    imp::tcp_listeners(port)
}

/// The process listening on (or bound to) a local TCP port, when it can be
/// found out: `(pid, command line)`.
pub(crate) fn port_holder(addr: SocketAddr) -> Option<(i32, String)> {
    let pid = imp::port_holder_pid(addr)?;
    Some((pid, process_command(pid).unwrap_or_default()))
}

/// The system's cap on a listening socket's backlog (Linux
/// `net.core.somaxconn`, macOS `kern.ipc.somaxconn`): a larger
/// `listen.backlog` is silently cut to it.
pub(crate) fn somaxconn() -> Option<u32> {
    imp::somaxconn()
}

// ---------------------------------------------------------------- timers

/// A kernel timer that fires every `every`, the first time `every` from
/// now, and makes a descriptor readable (Linux: a timerfd; macOS: a kqueue
/// holding one `EVFILT_TIMER`). The loop waits on it through tokio's
/// reactor, so a period costs one wake-up; tokio's own timer wheel parks
/// twice for a deadline more than 64 ms away (to the coarse slot, then for
/// the rest).
#[derive(Debug)]
pub(crate) struct Ticker(imp::Ticker);

impl Ticker {
    pub(crate) fn new(every: std::time::Duration) -> io::Result<Ticker> {
        imp::Ticker::new(every).map(Ticker)
    }

    /// Takes the expirations that made it readable: how many periods ended
    /// since the last call (0: none, a wake-up for nothing).
    pub(crate) fn take(&self) -> io::Result<u64> {
        self.0.take()
    }
}

impl AsRawFd for Ticker {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

// --------------------------------------------------------- notify socket

/// The bound notify socket and what goes with it.
#[derive(Debug)]
pub(crate) struct NotifyBinding {
    pub sock: std::os::unix::net::UnixDatagram,
    /// What the child gets as `$NOTIFY_SOCKET`.
    pub env_value: String,
    /// Files, then folders, to remove when the socket is closed.
    pub cleanup: Vec<PathBuf>,
}

/// Bind the datagram socket children send notify messages to.
///
/// A socket *file* on both systems, so only those the file lets in can
/// send (an abstract Linux name has no permissions: any local user could
/// address it and flood it): `<state_dir>/notify.sock` when that fits
/// `sun_path` (108 bytes on Linux, 104 on macOS) and the child runs as us
/// (the state folder is 0700); otherwise
/// `/tmp/supervisor-<uid>-<hash>/notify.sock`, a folder of ours checked on
/// every start, 0700, or 0711 when the child runs as another user; then
/// the socket file belongs to that user, mode 0600: sending needs write
/// permission on it, so only that user and root can send. On Linux the
/// kernel also tells who sent each datagram (SCM_CREDENTIALS: pid and uid
/// as of sending), and the driver hears only the child's user, ours and
/// root, from the child's process group. XNU passes no credentials with
/// datagrams (only SCM_RIGHTS), and LOCAL_PEERPID needs a connected peer:
/// on macOS the file's permissions are the only gate. During a handover
/// the new child gets a socket of its own beside this one
/// ([`notify_sibling`]), so there the socket says whose a datagram is.
pub(crate) fn notify_bind(state_dir: &Path, child_uid: Option<u32>) -> io::Result<NotifyBinding> {
    imp::notify_bind(state_dir, child_uid)
}

/// Where the notify socket file goes.
/// Pure, so it is tested everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NotifyPlace {
    /// The socket file.
    path: PathBuf,
    /// A private folder to create (or check) first, and its mode.
    private_dir: Option<(PathBuf, u32)>,
}

/// `<state_dir>/notify.sock` when it fits `sun_path` and the child runs as
/// us; otherwise `<tmp>/supervisor-<uid>-<hash of the state dir>/`, short
/// and one per state dir: mode 0700, or 0711 when a child of another uid
/// must pass through it to the socket file.
fn notify_place(state_dir: &Path, tmp: &Path, me: u32, child_uid: Option<u32>) -> NotifyPlace {
    use std::os::unix::ffi::OsStrExt;
    let foreign = child_uid.is_some_and(|uid| uid != me);
    let in_state_dir = state_dir.join(NOTIFY_NAMES[0]);
    // Both names must fit: a handover's new child gets the other one.
    if !foreign && fits_sun_path(&state_dir.join(NOTIFY_NAMES[1])) {
        return NotifyPlace {
            path: in_state_dir,
            private_dir: None,
        };
    }
    let hash = fnv1a(state_dir.as_os_str().as_bytes());
    let dir = tmp.join(format!("supervisor-{me}-{hash:016x}"));
    NotifyPlace {
        path: dir.join(NOTIFY_NAMES[0]),
        private_dir: Some((dir, if foreign { 0o711 } else { 0o700 })),
    }
}

/// The notify socket's file names: the serving child's, and the one a
/// handover's new child gets beside it (then the other way round after
/// the next handover). One socket per child, so a datagram's socket says
/// whose it is where the kernel does not say who sent it (macOS).
const NOTIFY_NAMES: [&str; 2] = ["notify.sock", "notify.2.sock"];

/// The name a second child's socket takes beside the one at `serving`.
fn sibling_name(serving: &Path) -> &'static str {
    match serving.file_name() {
        Some(n) if n == NOTIFY_NAMES[1] => NOTIFY_NAMES[0],
        _ => NOTIFY_NAMES[1],
    }
}

/// Create `dir` (0700) or take the one there, but only if it is a real
/// folder owned by `me`; then set `mode`. The folder lives in a shared,
/// sticky temp dir under a predictable name, so someone else may have made
/// it first; once it is ours, the sticky bit keeps anyone else from
/// renaming or replacing it.
fn make_private_dir(dir: &Path, me: u32, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", dir.display()),
            ))
        }
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() || meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a folder of ours (a {} owned by uid {}); refusing to put the notify socket there",
                dir.display(),
                file_kind(&meta),
                meta.uid()
            ),
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// What `meta` (from `symlink_metadata`) is, in a word for people.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    if meta.file_type().is_symlink() {
        "symbolic link"
    } else if meta.is_dir() {
        "folder"
    } else {
        "file"
    }
}

/// Whether `path` fits a `sockaddr_un` (with its terminating NUL).
fn fits_sun_path(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; only its field's size is used.
    let room = std::mem::size_of_val(&unsafe { std::mem::zeroed::<libc::sockaddr_un>() }.sun_path);
    path.as_os_str().as_bytes().len() < room
}

/// 64-bit FNV-1a: a short, stable name for a folder (std's hasher may
/// change between Rust releases; this never does).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Bind the notify socket file where [`notify_place`] says (see
/// [`notify_bind`]), replacing one a killed supervisor left.
fn bind_notify_file(state_dir: &Path, child_uid: Option<u32>) -> io::Result<NotifyBinding> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let place = notify_place(state_dir, Path::new("/tmp"), me, child_uid);
    let mut path = place.path;
    let mut cleanup = Vec::new();
    if let Some((dir, mode)) = &place.private_dir {
        let dir = match make_private_dir(dir, me, *mode) {
            Ok(()) => dir.clone(),
            // Someone else made the predictable name first (a folder of
            // theirs, a link, a file): a name nobody can guess instead, so
            // a local user cannot keep the notify socket from starting.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                let fresh = nix::unistd::mkdtemp(&dir.with_extension("XXXXXX")).map_err(|m| {
                    io::Error::other(format!(
                        "{e}; and no private folder could be made instead: {m}"
                    ))
                })?;
                std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(*mode))?;
                fresh
            }
            Err(e) => return Err(e),
        };
        path = dir.join(NOTIFY_NAMES[0]);
        cleanup.push(dir);
    }
    // A second child's socket a killed supervisor left (the next
    // handover would replace it; nobody needs it meanwhile).
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_file(dir.join(sibling_name(&path)));
    }
    let mut binding = bind_socket_file(&path, child_uid, me)?;
    binding.cleanup.extend(cleanup);
    Ok(binding)
}

/// Bind a handover's second notify socket beside the serving child's
/// (`serving`: its file), in the same folder, with the same owner and
/// mode. Its cleanup is its own file only: the folder stays the serving
/// socket's to remove.
pub(crate) fn notify_sibling(serving: &Path, child_uid: Option<u32>) -> io::Result<NotifyBinding> {
    // SAFETY: geteuid cannot fail.
    notify_sibling_as(serving, child_uid, unsafe { libc::geteuid() })
}

/// [`notify_sibling`] for a supervisor running as `me`. The folder is
/// reached by its path again (`bind(2)` takes no folder descriptor), long
/// after it was made or checked: it must still be a real folder of ours
/// (or root's) that nobody else may write in. Then nobody else can have
/// swapped it, nor swap it while the socket is bound, chmod-ed and
/// chown-ed there by path (in a sticky `/tmp` only its owner may rename
/// it). A private folder in `/tmp` removed meanwhile (by hand, by a
/// cleaner) and made again by another user is refused: the new child
/// then shares the serving child's socket.
fn notify_sibling_as(serving: &Path, child_uid: Option<u32>, me: u32) -> io::Result<NotifyBinding> {
    use std::os::unix::fs::MetadataExt;
    let dir = serving.parent().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: no folder to put a second notify socket in",
                serving.display()
            ),
        )
    })?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let owner = meta.uid();
    if !meta.file_type().is_dir() || (owner != me && owner != 0) || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is no longer a private folder of ours (a {} owned by uid {owner}, mode {:o}); \
                 refusing to put a second notify socket there",
                dir.display(),
                file_kind(&meta),
                meta.mode() & 0o7777
            ),
        ));
    }
    bind_socket_file(&dir.join(sibling_name(serving)), child_uid, me)
}

/// Bind a notify socket file at `path` (replacing one a killed supervisor
/// left there), 0600, owned by the child's user when it is not us.
fn bind_socket_file(path: &Path, child_uid: Option<u32>, me: u32) -> io::Result<NotifyBinding> {
    use std::os::unix::fs::PermissionsExt;
    // A socket file left by a supervisor that was killed.
    let _ = std::fs::remove_file(path);
    let sock = std::os::unix::net::UnixDatagram::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let closed = |e: io::Error| {
        let _ = std::fs::remove_file(path);
        e
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(closed)?;
    // Linux: the sender's credentials with each datagram, on this socket
    // as on the first (a handover's second socket serves once its child
    // does, and the driver checks every sender's group by them).
    imp::notify_options(&sock).map_err(closed)?;
    if let Some(uid) = child_uid.filter(|uid| *uid != me) {
        // Sending needs write permission on the socket file: the child's
        // user gets it, and nobody else but root.
        std::os::unix::fs::chown(path, Some(uid), None).map_err(closed)?;
    }
    // Room for a burst (a watchdog ping must not meet a full queue).
    // Best effort: the system caps it (rmem_max, kern.ipc.maxsockbuf).
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(256 * 1024));
    Ok(NotifyBinding {
        sock,
        env_value: path.to_string_lossy().into_owned(),
        cleanup: vec![path.to_path_buf()],
    })
}

/// One datagram taken off the notify socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotifyDatagram {
    /// Payload bytes in the buffer.
    pub len: usize,
    /// The datagram was larger than the buffer (MSG_TRUNC): what is in the
    /// buffer is only its start.
    pub truncated: bool,
    /// The sender's pid, where the kernel vouches for it (Linux).
    pub sender: Option<i32>,
    /// The sender's uid as of sending, where the kernel tells (Linux).
    pub sender_uid: Option<u32>,
    /// Descriptors that came with it (SCM_RIGHTS). Every one has already
    /// been closed: that is also how a `BARRIER=1` is acknowledged.
    pub fds: usize,
    /// The kernel had more control data than fitted (MSG_CTRUNC). The
    /// payload is intact; descriptors that did not fit were never ours
    /// (Linux releases them) or could not be named.
    pub control_truncated: bool,
}

/// Control space for one datagram: SCM_CREDENTIALS plus as many descriptors
/// as one datagram can carry (Linux: SCM_MAX_FD = 253; XNU: the control
/// mbuf is at most MCLBYTES = 2048 bytes, and each descriptor crosses as
/// a pointer-sized `fileglob` there, so about 254 descriptors on LP64). On macOS
/// this size matters beyond tidiness: XNU installs passed descriptors in our
/// table before copying the control data out, so any that did not fit would
/// stay open, unnamed, for good.
const NOTIFY_CONTROL: usize = 4096;

#[repr(C, align(8))]
struct ControlBuf([u8; NOTIFY_CONTROL]);

/// Receive one datagram without waiting (EAGAIN when none is queued).
/// Passed descriptors are closed before this returns, whatever the payload
/// says; an EINTR is retried.
pub(crate) fn recv_notify(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<NotifyDatagram> {
    let mut control = ControlBuf([0; NOTIFY_CONTROL]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is "no name, no iov, no control".
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = NOTIFY_CONTROL as _;
    let len = loop {
        // SAFETY: msg points at live buffers of the sizes it states.
        let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, imp::NOTIFY_RECV_FLAGS) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut got = NotifyDatagram {
        len: len.min(buf.len()),
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        sender: None,
        sender_uid: None,
        fds: 0,
        control_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    };
    let start = control.0.as_ptr() as usize;
    let end = start + (msg.msg_controllen as usize).min(NOTIFY_CONTROL);
    // SAFETY: msg describes our control buffer, and msg_controllen is what
    // the kernel wrote into it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/NXTHDR only return headers that lie whole
        // inside [start, end).
        let hdr = unsafe { std::ptr::read_unaligned(cmsg) };
        if (hdr.cmsg_len as usize) < std::mem::size_of::<libc::cmsghdr>() {
            break; // malformed; CMSG_NXTHDR would not advance
        }
        // SAFETY: pointer arithmetic within the header just validated.
        let data = unsafe { libc::CMSG_DATA(cmsg) } as usize;
        // A truncated record may claim more than was copied out.
        let stop = (cmsg as usize + hdr.cmsg_len as usize).min(end);
        let bytes = stop.saturating_sub(data);
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                // SAFETY: within the copied-out part of this record.
                let fd = unsafe { std::ptr::read_unaligned((data as *const libc::c_int).add(i)) };
                // SAFETY: the kernel just installed this descriptor for us;
                // nothing else knows its number. Closing it is the point.
                unsafe { libc::close(fd) };
                got.fds += 1;
            }
        } else if let Some((pid, uid)) = imp::credentials(&hdr, data as *const u8, bytes) {
            got.sender = Some(pid);
            got.sender_uid = Some(uid);
        }
        // SAFETY: same msg and a header inside its control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(got)
}

/// Send to a `$NOTIFY_SOCKET` value (`@name` is Linux's abstract namespace).
pub(crate) fn send_to_notify(
    sock: &std::os::unix::net::UnixDatagram,
    target: &str,
    msg: &[u8],
) -> io::Result<usize> {
    imp::send_to_notify(sock, target, msg)
}

/// Whether two addresses of one port overlap: a socket listening on either
/// would take connections meant for the other. Wildcards cover their whole
/// family; an IPv6 wildcard that is `dual_stack` covers IPv4 too; a
/// v4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address.
pub(crate) fn addresses_overlap(
    ours: IpAddr,
    ours_dual: bool,
    theirs: IpAddr,
    theirs_dual: bool,
) -> bool {
    // Reduce each side to (IPv4 part, IPv6 part) it covers; `None` = none,
    // and an unspecified address within a part = the whole family.
    fn parts(ip: IpAddr, dual: bool) -> (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>) {
        match ip {
            IpAddr::V4(v4) => (Some(v4), None),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (Some(v4), None),
                None if v6.is_unspecified() && dual => {
                    (Some(std::net::Ipv4Addr::UNSPECIFIED), Some(v6))
                }
                None => (None, Some(v6)),
            },
        }
    }
    let (a4, a6) = parts(ours, ours_dual);
    let (b4, b6) = parts(theirs, theirs_dual);
    let v4 = matches!((a4, b4), (Some(a), Some(b)) if a == b || a.is_unspecified() || b.is_unspecified());
    let v6 = matches!((a6, b6), (Some(a), Some(b)) if a == b || a.is_unspecified() || b.is_unspecified());
    v4 || v6
}

#[cfg(test)]
mod process_tests;

#[cfg(test)]
mod tests;
