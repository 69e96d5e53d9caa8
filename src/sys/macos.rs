//! macOS: libproc for process facts, `lsof` for the port holder.
//!
//! macOS has no `/proc`, no `PR_SET_PDEATHSIG`, no `close_range` and no
//! `dup3`. Each function below is the smallest portable substitute, and CI
//! cannot build it, so it sticks to calls documented in libproc.h and the
//! `libc` crate's Apple bindings.

use std::ffi::OsString;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bsdinfo(pid: i32) -> Option<libc::proc_bsdinfo> {
    // SAFETY: proc_pidinfo fills at most `size` bytes of a zeroed plain-data struct.
    unsafe {
        let mut info: libc::proc_bsdinfo = mem::zeroed();
        let size = mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
        let n = libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            &mut info as *mut _ as *mut libc::c_void,
            size,
        );
        (n == size).then_some(info)
    }
}

pub fn process_start_time(pid: i32) -> Option<u64> {
    let info = bsdinfo(pid)?;
    Some(info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec)
}

/// SZOMB from <sys/proc.h>.
const SZOMB: u32 = 5;

pub fn is_zombie(pid: i32) -> bool {
    bsdinfo(pid).is_some_and(|i| i.pbi_status == SZOMB)
}

pub fn group_has_live_member(_pgid: i32) -> bool {
    // launchd reaps orphans at once, so a group that answers kill(0) is live.
    true
}

pub fn executable(pid: i32) -> Option<PathBuf> {
    let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: proc_pidpath writes at most buf.len() bytes into buf.
    let n =
        unsafe { libc::proc_pidpath(pid, buf.as_mut_ptr() as *mut libc::c_void, buf.len() as u32) };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(PathBuf::from(OsString::from_vec(buf)))
}

pub fn process_command(pid: i32) -> Option<String> {
    // `ps` reads KERN_PROCARGS2 for us; this runs only while waiting for a port.
    let out = Command::new("/bin/ps")
        .args(["-o", "command=", "-p", &pid.to_string()])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if s.is_empty() {
        executable(pid).map(|p| p.display().to_string())
    } else {
        Some(s)
    }
}

pub fn port_holder_pid(addr: SocketAddr) -> Option<i32> {
    let out = Command::new("/usr/sbin/lsof")
        .args([
            "-nP",
            "-t",
            &format!("-iTCP:{}", addr.port()),
            "-sTCP:LISTEN",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let me = std::process::id() as i32;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .find(|pid| *pid != me)
}

pub fn flock_holder(_fd: RawFd) -> Option<Option<i32>> {
    None // no /proc/locks; callers fall back to the pid file plus identity checks
}

pub fn cloexec_from(from: RawFd) {
    // SAFETY: fcntl on integers; descriptors that are not open just fail.
    unsafe { cloexec_from_after_fork(from) }
}

pub unsafe fn cloexec_from_after_fork(from: RawFd) {
    let max = match libc::getdtablesize() {
        n if n > 0 => n.min(65_536),
        _ => 4096,
    };
    for fd in from..max {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

pub unsafe fn die_with_parent(_sig: libc::c_int, parent: libc::pid_t) -> bool {
    // No PDEATHSIG on macOS; still refuse to start under a dead supervisor.
    libc::getppid() == parent
}

/// One past the highest signal number (NSIG from <sys/signal.h>: signals 1..=31).
pub const NSIG: libc::c_int = 32;

pub unsafe fn default_signal_after_fork(sig: libc::c_int) {
    libc::signal(sig, libc::SIG_DFL);
}

pub fn dup_to(fd: RawFd, target: RawFd) -> io::Result<()> {
    // No dup3: dup2 then set FD_CLOEXEC. Only the main thread forks, so no
    // exec can slip in between the two calls.
    // SAFETY: plain descriptor calls on integers we own.
    unsafe {
        if fd != target && libc::dup2(fd, target) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(target, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn notify_bind(
    state_dir: &std::path::Path,
) -> io::Result<(std::os::unix::net::UnixDatagram, String, Option<PathBuf>)> {
    // No abstract namespace and no sender credentials on datagrams: a file
    // in the 0700 state dir, so only our own user can send to it.
    let path = state_dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = std::os::unix::net::UnixDatagram::bind(&path)?;
    let text = path.to_string_lossy().into_owned();
    Ok((sock, text, Some(path)))
}

pub fn recv_with_pid(
    sock: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<i32>)> {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    Ok((recv(sock.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)?, None))
}

pub fn send_to_notify(
    sock: &std::os::unix::net::UnixDatagram,
    target: &str,
    msg: &[u8],
) -> io::Result<usize> {
    sock.send_to(msg, target)
}

pub fn grow_pipe(_fd: RawFd) {
    // macOS pipes grow on their own (up to 64 KiB) and offer no knob.
}

pub fn boot_id() -> Option<String> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut size = mem::size_of::<libc::timeval>();
    // SAFETY: sysctlbyname writes at most `size` bytes into the timeval.
    let r = unsafe {
        libc::sysctlbyname(
            c"kern.boottime".as_ptr(),
            &mut tv as *mut _ as *mut libc::c_void,
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    };
    (r == 0).then(|| format!("{}.{:06}", tv.tv_sec, tv.tv_usec))
}

pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut pids = vec![0 as libc::pid_t; 1024];
    let bytes = (pids.len() * mem::size_of::<libc::pid_t>()) as libc::c_int;
    // SAFETY: proc_listpgrppids writes at most `bytes` bytes of pids.
    let n = unsafe { libc::proc_listpgrppids(pgid, pids.as_mut_ptr() as *mut libc::c_void, bytes) };
    if n <= 0 {
        return Vec::new();
    }
    pids.truncate(n as usize / mem::size_of::<libc::pid_t>());
    pids.retain(|p| *p > 0 && !is_zombie(*p));
    pids
}

pub fn set_child_subreaper() -> bool {
    false // no subreaper on macOS: orphans go to launchd
}
