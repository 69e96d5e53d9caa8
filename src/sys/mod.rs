//! The only place with `#[cfg(target_os = ...)]`.
//!
//! Everything here is a small fact about processes, descriptors or sockets
//! that Linux and macOS answer differently. Linux reads `/proc`; macOS asks
//! libproc (or, for the rare "who holds this port" question, `lsof`). Callers
//! see one portable function each, and a `None` where the platform cannot
//! tell.

use std::io;
use std::os::fd::RawFd;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as imp;

mod limits;
pub use limits::{
    may_raise_hard_limits, nice, nofile_ceiling, resident_bytes, rlimit, set_nice_after_fork,
    set_rlimit_after_fork, set_umask_after_fork, umask, NofileCeiling, RawRlimit, Rlimit,
};

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
compile_error!("supervisor runs on Linux and macOS only");

/// Whether this system has launchd (`launchctl`): only macOS. The launchd
/// job code compiles everywhere, so `--dry-run` works and is tested on Linux.
pub const HAS_LAUNCHD: bool = cfg!(target_os = "macos");

/// When a process started, in an opaque platform unit (clock ticks since
/// boot on Linux, microseconds since the epoch on macOS). Together with the
/// pid it names one process for good: pids are reused, start times are not.
pub fn process_start_time(pid: i32) -> Option<u64> {
    imp::process_start_time(pid)
}

/// The command line of a process, for people (`port_holder.command`): on
/// one line (an argument may hold newlines, e.g. `python3 -c`), and cut at
/// 400 characters.
pub fn process_command(pid: i32) -> Option<String> {
    imp::process_command(pid).map(|c| one_line(&c, 400))
}

fn one_line(text: &str, max: usize) -> String {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.join(" ");
    match joined.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// Whether `pid` is a live process: zombies count as dead, since they hold
/// no descriptors and run no code.
pub fn is_alive(pid: i32) -> bool {
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
pub fn group_alive(pgid: i32) -> bool {
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

/// The process listening on (or bound to) a local TCP port, when it can be
/// found out: `(pid, command line)`.
pub fn port_holder(addr: std::net::SocketAddr) -> Option<(i32, String)> {
    let pid = imp::port_holder_pid(addr)?;
    Some((pid, process_command(pid).unwrap_or_default()))
}

/// Who holds an flock on the open file `fd`: `Some(Some(pid))`, `Some(None)`
/// for nobody, `None` where the platform cannot tell (only Linux can, from
/// `/proc/locks`). Used by `status` to prove a supervisor alive without ever
/// taking the lock itself.
pub fn flock_holder(fd: RawFd) -> Option<Option<i32>> {
    imp::flock_holder(fd)
}

/// Whether `pid` runs the same executable as this process: the macOS fallback
/// for `flock_holder`, and a sanity check everywhere.
pub fn runs_same_executable(pid: i32) -> bool {
    let ours = std::env::current_exe().ok();
    match (ours, imp::executable(pid)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Mark every descriptor from `from` up close-on-exec, so whatever our own
/// parent leaked (launchd and shells have been seen to leave 10 and 251 open)
/// never reaches the child. Runs once at start-up, in the parent.
pub fn cloexec_from(from: RawFd) {
    imp::cloexec_from(from)
}

/// After fork, before exec: the same, without allocating. Best effort; the
/// start-up pass in the parent already did the work.
///
/// # Safety
/// Only async-signal-safe calls; meant for a `pre_exec` closure.
pub unsafe fn cloexec_from_after_fork(from: RawFd) {
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
pub unsafe fn die_with_parent(sig: libc::c_int, parent: libc::pid_t) -> bool {
    imp::die_with_parent(sig, parent)
}

/// After fork, before exec: every signal's disposition back to the default
/// and an empty signal mask, as a fresh process has (ignored signals and
/// the mask survive exec).
///
/// # Safety
/// Only async-signal-safe calls; meant for a `pre_exec` closure.
pub unsafe fn reset_signals_after_fork() {
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
pub fn dup_to(fd: RawFd, target: RawFd) -> io::Result<()> {
    imp::dup_to(fd, target)
}

/// Bind the datagram socket children send notify messages to. Returns the
/// socket, the `$NOTIFY_SOCKET` value for the child, and a file to remove at
/// exit if there is one. Linux uses the abstract namespace (no file, so a
/// child running as another user can reach it; senders are checked by
/// their kernel-verified pid instead); macOS a socket file in the state dir.
pub fn notify_bind(
    state_dir: &std::path::Path,
) -> io::Result<(
    std::os::unix::net::UnixDatagram,
    String,
    Option<std::path::PathBuf>,
)> {
    imp::notify_bind(state_dir)
}

/// Receive one datagram and, where the platform tells, the sender's pid.
pub fn recv_with_pid(
    sock: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<i32>)> {
    imp::recv_with_pid(sock, buf)
}

/// Send to a `$NOTIFY_SOCKET` value (`@name` is Linux's abstract namespace).
pub fn send_to_notify(
    sock: &std::os::unix::net::UnixDatagram,
    target: &str,
    msg: &[u8],
) -> io::Result<usize> {
    imp::send_to_notify(sock, target, msg)
}

/// Ask for a larger pipe buffer (Linux: 1 MiB instead of 64 KiB), so a
/// chatty child blocks less often on its stdout while the log reader
/// catches up: fewer context switches per megabyte. Best effort.
pub fn grow_pipe(fd: RawFd) {
    imp::grow_pipe(fd)
}

/// Names this boot of the machine, so nothing recorded before a reboot is
/// mistaken for a process of now (Linux: the kernel's boot_id; macOS: the
/// boot time).
pub fn boot_id() -> Option<String> {
    imp::boot_id()
}

/// Make orphaned descendants come back to us instead of to init (Linux's
/// child subreaper), so a daemonizing child's grandchildren can be found,
/// stopped and reaped. False where the platform has no such thing (macOS).
pub fn set_child_subreaper() -> bool {
    imp::set_child_subreaper()
}

/// The live (non-zombie) members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    imp::group_members(pgid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn commands_are_shown_on_one_short_line() {
        let table = [
            (
                "python3 -c \nimport x\n\tx.run()",
                "python3 -c import x x.run()",
            ),
            ("a\u{7}b", "a b"),
            ("plain", "plain"),
        ];
        for (raw, want) in table {
            assert_eq!(super::one_line(raw, 400), want);
        }
        assert_eq!(super::one_line("abcdef", 3), "abc…");
    }
}
