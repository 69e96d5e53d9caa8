//! macOS: `sysctl` and libproc for every process and socket fact.
//!
//! macOS has no `/proc`, no `PR_SET_PDEATHSIG`, no `close_range`, no `dup3`
//! and no subreaper. Each function below is the smallest substitute, written
//! against XNU's sources (xnu-11417; the file and function are named where a
//! behaviour matters) and the `libc` crate's Apple bindings, and none starts
//! an external command. Nothing here runs on the Linux CI: it is
//! type-checked and linted for both Apple targets, and the byte layouts it
//! reads are parsed and tested in `darwin` on every platform.
//!
//! Permissions, from `proc_security_policy` in bsd/kern/proc_info.c: listing
//! pids, `PROC_PIDPATHINFO` and `sysctl(KERN_PROC)` work on any process;
//! descriptors (`PROC_PIDLISTFDS`, `proc_pidfdinfo`), `proc_pid_rusage`
//! and `PROC_PIDTASKINFO` only on processes of our own uid unless we are
//! root. A non-root supervisor's children share its uid, so what it must
//! see, it can.

use std::ffi::OsString;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use super::darwin::{self, ProcEntry, SocketFdInfo};
use super::{NotifyBinding, Scope, TcpListen};

fn my_pid() -> i32 {
    std::process::id() as i32
}

// ---------------------------------------------------------------- sysctl

/// One `sysctl(mib)` read into `buf`, or with `None` only the size it
/// would take: the bytes written (or needed).
fn sysctl_read(mib: &[libc::c_int], buf: Option<&mut [u8]>) -> io::Result<usize> {
    let (out, cap) = match buf {
        Some(b) => (b.as_mut_ptr().cast(), b.len()),
        None => (ptr::null_mut(), 0),
    };
    let mut len = cap;
    // SAFETY: `out` is null (a size query) or has `len` writable bytes.
    // The name is only read (sysctl in bsd/kern/kern_sysctl.c copies it
    // in), whatever the prototype's `int *` says.
    let r = unsafe {
        libc::sysctl(
            mib.as_ptr().cast_mut(),
            mib.len() as libc::c_uint,
            out,
            &mut len,
            ptr::null_mut(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if out.is_null() { len } else { len.min(cap) })
}

/// `sysctlbyname(name)` read into `buf`: the bytes written.
fn sysctl_read_name(name: &std::ffi::CStr, buf: &mut [u8]) -> io::Result<usize> {
    let mut size = buf.len();
    // SAFETY: sysctlbyname writes at most `size` bytes into `buf`.
    let r = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut size,
            ptr::null_mut(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size.min(buf.len()))
}

/// A sysctl answer of unknown size: ask for the size, then read, again if
/// it grew in between (ENOMEM: the kernel copies whole records only).
fn sysctl_bytes(mib: &[libc::c_int]) -> io::Result<Vec<u8>> {
    for _ in 0..5 {
        let len = sysctl_read(mib, None)?;
        // Some slack beyond the kernel's own (KERN_PROCSLOP): processes
        // start between the two calls.
        let mut buf = vec![0u8; len + len / 8 + 4096];
        match sysctl_read(mib, Some(&mut buf)) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOMEM))
}

/// An `int` sysctl by name (`kern.argmax`, `kern.ipc.somaxconn`).
pub(super) fn sysctl_int(name: &std::ffi::CStr) -> Option<libc::c_int> {
    let mut value = [0u8; mem::size_of::<libc::c_int>()];
    let n = sysctl_read_name(name, &mut value).ok()?;
    (n == value.len()).then(|| libc::c_int::from_ne_bytes(value))
}

/// A string sysctl by name (`kern.osproductversion`: "14.4.1").
pub(super) fn sysctl_string(name: &std::ffi::CStr) -> Option<String> {
    let mut buf = [0u8; 64];
    let n = sysctl_read_name(name, &mut buf).ok()?;
    let text = &buf[..n];
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    Some(String::from_utf8_lossy(&text[..end]).into_owned())
}

/// The macOS version ("14.4.1"), when it can be read (macOS 10.13.4+).
pub(super) fn product_version() -> Option<String> {
    sysctl_string(c"kern.osproductversion")
}

/// `kinfo_proc` records for a `KERN_PROC` query (`KERN_PROC_PGRP`, ...).
/// They include zombies (sysctl_prochandle walks allproc and zombproc in
/// bsd/kern/kern_sysctl.c) and need no privileges.
fn procs(op: libc::c_int, arg: libc::c_int) -> io::Result<Vec<ProcEntry>> {
    let bytes = sysctl_bytes(&[libc::CTL_KERN, libc::KERN_PROC, op, arg])?;
    Ok(darwin::parse_kinfo_procs(&bytes))
}

// ------------------------------------------------------------- processes

// libc marks the mach time calls deprecated in favour of the mach2 crate;
// two calls do not warrant another dependency.
#[allow(deprecated)]
pub(super) fn process_age(start_abstime: u64) -> Option<std::time::Duration> {
    let mut tb = libc::mach_timebase_info { numer: 0, denom: 0 };
    // SAFETY: mach_timebase_info writes the struct it is given, nothing more.
    if unsafe { libc::mach_timebase_info(&mut tb) } != 0 || tb.denom == 0 {
        return None;
    }
    // SAFETY: mach_absolute_time takes nothing and cannot fail.
    let now = unsafe { libc::mach_absolute_time() };
    let ticks = now.checked_sub(start_abstime)?;
    let ns = u128::from(ticks) * u128::from(tb.numer) / u128::from(tb.denom);
    Some(std::time::Duration::from_nanos(u64::try_from(ns).ok()?))
}

pub(super) fn process_start_time(pid: i32) -> Option<u64> {
    // ri_proc_start_abstime is the Mach absolute time of the fork
    // (p_stats->ps_start, set by microtime_with_abstime in
    // bsd/kern/kern_fork.c and kept across exec; filled for every flavor by
    // gather_rusage_info in bsd/kern/kern_resource.c). Unlike
    // pbi_start_tvsec it never moves with the wall clock. V0 is the
    // smallest flavor carrying it.
    // SAFETY: rusage_info_v0 is plain data; proc_pid_rusage writes exactly
    // the flavor's struct.
    let mut info: libc::rusage_info_v0 = unsafe { mem::zeroed() };
    // SAFETY: the buffer is a live rusage_info_v0, as the flavor promises.
    let r = unsafe {
        libc::proc_pid_rusage(
            pid,
            libc::RUSAGE_INFO_V0,
            (&mut info as *mut libc::rusage_info_v0).cast::<libc::rusage_info_t>(),
        )
    };
    (r == 0 && info.ri_proc_start_abstime != 0).then_some(info.ri_proc_start_abstime)
}

pub(super) fn is_zombie(pid: i32) -> bool {
    // proc_pidinfo(PROC_PIDTBSDINFO) fails for a zombie (proc_find skips
    // them) while kill(pid, 0) succeeds; sysctl still lists it, SZOMB.
    // One record, so one call with a buffer of exactly that size (the
    // stop loops ask this often).
    let mut buf = [0u8; mem::size_of::<darwin::KinfoProc>()];
    let mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, pid];
    sysctl_read(&mib, Some(&mut buf)).is_ok_and(|len| {
        darwin::parse_kinfo_procs(&buf[..len])
            .iter()
            .any(|e| e.pid == pid && e.zombie)
    })
}

pub(super) fn group_members(pgid: i32) -> Vec<i32> {
    live_members(pgid).unwrap_or_default()
}

pub(super) fn group_has_live_member(pgid: i32) -> bool {
    // Cannot tell: do not declare it gone.
    live_members(pgid).is_none_or(|m| !m.is_empty())
}

/// The live members of process group `pgid`; `None` when the sysctl
/// fails. Zombies stay in their group until reaped (pgrp_leave in
/// reap_child_locked, bsd/kern/kern_exit.c), so kill(-pgid, 0) answers for
/// a group of zombies: look at each member.
fn live_members(pgid: i32) -> Option<Vec<i32>> {
    let members = procs(libc::KERN_PROC_PGRP, pgid).ok()?;
    Some(
        members
            .into_iter()
            .filter(|e| e.pgid == pgid && !e.zombie && e.pid > 0)
            .map(|e| e.pid)
            .collect(),
    )
}

pub(super) fn executable(pid: i32) -> Option<PathBuf> {
    let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: proc_pidpath writes at most buf.len() bytes into buf.
    let n = unsafe { libc::proc_pidpath(pid, buf.as_mut_ptr().cast(), buf.len() as u32) };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(PathBuf::from(OsString::from_vec(buf)))
}

pub(super) fn process_command(pid: i32) -> Option<String> {
    procargs(pid)
        .map(|args| args.join(" "))
        .or_else(|| executable(pid).map(|p| p.display().to_string()))
}

/// argv through `KERN_PROCARGS2`. The buffer is `kern.argmax` bytes, as
/// ps(1) sizes it: sysctl_procargsx refuses more than ARG_MAX and, given
/// less than the whole area, returns its *end*, losing argc and argv.
/// Another user's process answers EINVAL unless we are root.
fn procargs(pid: i32) -> Option<Vec<String>> {
    let argmax = sysctl_int(c"kern.argmax")
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(1 << 20);
    let mut buf = vec![0u8; argmax];
    let mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid];
    let len = sysctl_read(&mib, Some(&mut buf)).ok()?;
    darwin::parse_procargs2(&buf[..len])
}

pub(super) fn boot_id() -> Option<String> {
    // A UUID generated once per boot (IOPMrootDomain::initializeBootSessionUUID).
    // kern.boottime is not an identity: clock_set_calendar_microtime in
    // osfmk/kern/clock.c shifts it on every clock step.
    let mut buf = [0u8; 64];
    let size = sysctl_read_name(c"kern.bootsessionuuid", &mut buf).ok()?;
    let text = &buf[..size];
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    let id = String::from_utf8_lossy(&text[..end]).trim().to_owned();
    (!id.is_empty()).then_some(id)
}

pub(super) fn resident_bytes(pid: i32) -> Option<u64> {
    // SAFETY: proc_taskinfo is plain data, filled whole or not at all.
    let mut info: libc::proc_taskinfo = unsafe { mem::zeroed() };
    let size = mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
    // SAFETY: the buffer is one live proc_taskinfo of `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTASKINFO,
            0,
            (&mut info as *mut libc::proc_taskinfo).cast(),
            size,
        )
    };
    (n == size).then_some(info.pti_resident_size)
}

pub(super) fn set_child_subreaper() -> bool {
    false // XNU has no subreaper; orphans go to launchd
}

/// Pids from one of libproc's list calls, which return a *count* of pids
/// (proc_listallpids, proc_listchildpids and proc_listpgrppids divide the
/// kernel's byte count by sizeof(int) in libsyscall/wrappers/libproc/
/// libproc.c) and, with no buffer, how many there might be.
fn list_pids(call: impl Fn(*mut libc::c_void, libc::c_int) -> libc::c_int) -> Vec<i32> {
    let estimate = call(ptr::null_mut(), 0);
    if estimate <= 0 {
        return Vec::new();
    }
    let mut pids = vec![0 as libc::pid_t; estimate as usize + 32];
    let bytes = (pids.len() * mem::size_of::<libc::pid_t>()) as libc::c_int;
    let n = call(pids.as_mut_ptr().cast(), bytes);
    if n <= 0 {
        return Vec::new();
    }
    pids.truncate((n as usize).min(pids.len()));
    pids.retain(|p| *p > 0);
    pids
}

fn all_pids() -> Vec<i32> {
    // SAFETY: the closure passes list_pids' buffer and its size in bytes.
    list_pids(|buf, size| unsafe { libc::proc_listallpids(buf, size) })
}

fn children_of(pid: i32) -> Vec<i32> {
    // SAFETY: as in all_pids.
    list_pids(|buf, size| unsafe { libc::proc_listchildpids(pid, buf, size) })
}

/// `root` and everything below it, by parent links. Without a subreaper,
/// an orphan is re-parented to launchd and is no longer found here: only
/// `Scope::All` (by the socket it holds) finds those.
fn descendants(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut seen: std::collections::HashSet<i32> = out.iter().copied().collect();
    let mut next = 0;
    while let Some(&pid) = out.get(next) {
        next += 1;
        for child in children_of(pid) {
            if seen.insert(child) {
                out.push(child);
            }
        }
    }
    out
}

// ---------------------------------------------------------- descriptors

/// The open descriptors of `pid` (`PROC_PIDLISTFDS` answers in bytes; with
/// no buffer, the room needed: proc_pidfdlist in bsd/kern/proc_info.c).
fn fds_of(pid: i32) -> Vec<libc::proc_fdinfo> {
    try_fds_of(pid).unwrap_or_default()
}

/// `fds_of`, saying why the list could not be had (EPERM: another user's
/// process).
fn try_fds_of(pid: i32) -> io::Result<Vec<libc::proc_fdinfo>> {
    // SAFETY: a size query, no buffer.
    let bytes = unsafe { libc::proc_pidinfo(pid, libc::PROC_PIDLISTFDS, 0, ptr::null_mut(), 0) };
    if bytes <= 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(0) | None => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    let size = mem::size_of::<libc::proc_fdinfo>();
    let empty = libc::proc_fdinfo {
        proc_fd: -1,
        proc_fdtype: 0,
    };
    let mut fds = vec![empty; bytes as usize / size + 16];
    // SAFETY: `fds` holds fds.len() records of `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDLISTFDS,
            0,
            fds.as_mut_ptr().cast(),
            (fds.len() * size) as libc::c_int,
        )
    };
    if n <= 0 {
        return Err(io::Error::last_os_error());
    }
    fds.truncate((n as usize / size).min(fds.len()));
    Ok(fds)
}

/// What `proc_pidfdinfo(PROC_PIDFDVNODEINFO)` tells of a file descriptor.
fn vnode_info(pid: i32, fd: RawFd) -> Option<darwin::VnodeFdInfo> {
    let mut info = darwin::VnodeFdInfo::zeroed();
    let size = mem::size_of::<darwin::VnodeFdInfo>() as libc::c_int;
    // SAFETY: the buffer is one live vnode_fdinfo of `size` bytes (the
    // layout is checked at compile time in `darwin`).
    let n = unsafe {
        libc::proc_pidfdinfo(
            pid,
            fd,
            darwin::PROC_PIDFDVNODEINFO,
            (&mut info as *mut darwin::VnodeFdInfo).cast(),
            size,
        )
    };
    (n == size).then_some(info)
}

pub(super) fn holds_file(pid: i32, dev: u64, ino: u64) -> io::Result<bool> {
    // st_dev is a 32-bit dev_t here; MetadataExt widens it.
    let dev = dev as u32;
    Ok(try_fds_of(pid)?
        .into_iter()
        .filter(|f| f.proc_fdtype == darwin::PROX_FDTYPE_VNODE)
        .filter_map(|f| vnode_info(pid, f.proc_fd))
        .any(|v| v.pvi.vi_stat.vst_dev == dev && v.pvi.vi_stat.vst_ino == ino))
}

fn socket_info(pid: i32, fd: RawFd) -> Option<SocketFdInfo> {
    let mut info = SocketFdInfo::zeroed();
    let size = mem::size_of::<SocketFdInfo>() as libc::c_int;
    // SAFETY: the buffer is one live socket_fdinfo of `size` bytes (the
    // layout is checked at compile time in `darwin`).
    let n = unsafe {
        libc::proc_pidfdinfo(
            pid,
            fd,
            darwin::PROC_PIDFDSOCKETINFO,
            (&mut info as *mut SocketFdInfo).cast(),
            size,
        )
    };
    (n == size).then_some(info)
}

/// The sockets `pid` holds, described.
fn sockets_of(pid: i32) -> impl Iterator<Item = SocketFdInfo> {
    fds_of(pid)
        .into_iter()
        .filter(|f| f.proc_fdtype == darwin::PROX_FDTYPE_SOCKET)
        .filter_map(move |f| socket_info(pid, f.proc_fd))
}

/// The highest descriptor the start-up pass saw, for the after-fork pass.
static HIGHEST_SEEN: AtomicI32 = AtomicI32::new(-1);

pub(super) fn cloexec_from(from: RawFd) {
    let fds = fds_of(my_pid());
    if fds.is_empty() {
        // SAFETY: fcntl on integers; descriptors that are not open just fail.
        unsafe { cloexec_from_after_fork(from) };
        return;
    }
    let mut highest = -1;
    for fd in fds.iter().map(|f| f.proc_fd) {
        highest = highest.max(fd);
        if fd >= from {
            // SAFETY: setting FD_CLOEXEC on a listed descriptor; one closed
            // meanwhile just fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    HIGHEST_SEEN.fetch_max(highest, Ordering::Relaxed);
}

pub(super) unsafe fn cloexec_from_after_fork(from: RawFd) {
    // No allocation after fork, so no listing: a loop over numbers.
    // getdtablesize() is the soft RLIMIT_NOFILE, which a descriptor opened
    // before the limit was lowered can exceed; the start-up pass recorded
    // the highest one it saw. Every descriptor we open later is
    // close-on-exec from birth (std opens with O_CLOEXEC).
    let table = match libc::getdtablesize() {
        n if n > 0 => n.min(65_536),
        _ => 4096,
    };
    let end = table.max(HIGHEST_SEEN.load(Ordering::Relaxed).saturating_add(1));
    for fd in from..end {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

pub(super) unsafe fn die_with_parent(_sig: libc::c_int, parent: libc::pid_t) -> bool {
    // No PDEATHSIG on macOS; still refuse to start under a dead supervisor.
    libc::getppid() == parent
}

/// One past the highest signal number (NSIG from <sys/signal.h>: signals 1..=31).
pub(super) const NSIG: libc::c_int = 32;

pub(super) unsafe fn default_signal_after_fork(sig: libc::c_int) {
    libc::signal(sig, libc::SIG_DFL);
}

pub(super) fn dup_to(fd: RawFd, target: RawFd) -> io::Result<()> {
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

pub(super) fn flock_holder(_fd: RawFd) -> Option<Option<i32>> {
    None // no /proc/locks; callers fall back to the pid file plus identity checks
}

pub(super) fn grow_pipe(_fd: RawFd) {
    // macOS pipes grow on their own (up to 64 KiB) and offer no knob.
}

// --------------------------------------------------------------- sockets

pub(super) fn socket_id(fd: RawFd) -> Option<u64> {
    socket_info(my_pid(), fd).map(|i| i.psi.soi_so)
}

pub(super) fn socket_holders(id: u64, scope: Scope) -> Vec<i32> {
    let me = my_pid();
    let candidates = match scope {
        Scope::All => all_pids(),
        Scope::DescendantsOf(root) => descendants(root),
        Scope::Only(pid) => vec![pid],
    };
    candidates
        .into_iter()
        .filter(|pid| *pid != me && sockets_of(*pid).any(|s| s.psi.soi_so == id))
        .collect()
}

/// The accepted end of our connection from `client` to `server`. macOS
/// has no table of connections to look in, so each of our descendants'
/// sockets is described (libproc) until one has these two ends: `None`
/// until a descendant has accepted it. A handful of calls per process
/// (its descriptor list, then each socket's record), made only for the
/// probes of a handover (one every 100 ms while it lasts), each looking
/// every 1–20 ms until its connection is taken.
pub(super) fn accepted_socket(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let me = my_pid();
    descendants(me)
        .into_iter()
        .filter(|pid| *pid != me)
        .find_map(|pid| {
            sockets_of(pid)
                .filter_map(|s| darwin::tcp_connection(&s))
                .find(|c| {
                    super::same_endpoint(c.local, server) && super::same_endpoint(c.remote, client)
                })
                .map(|c| c.socket)
        })
}

pub(super) fn tcp_listeners(port: u16) -> io::Result<Vec<TcpListen>> {
    let pids = all_pids();
    if pids.is_empty() {
        return Err(io::Error::other("cannot list processes (proc_listallpids)"));
    }
    let me = my_pid();
    let mut found: Vec<TcpListen> = Vec::new();
    for pid in pids {
        for l in sockets_of(pid).filter_map(|s| darwin::tcp_listening(&s)) {
            if l.local.port() != port {
                continue;
            }
            match found.iter_mut().find(|f| f.socket == l.socket) {
                Some(f) => f.ours |= pid == me,
                None => found.push(TcpListen {
                    addr: l.local,
                    dual_stack: l.dual_stack,
                    socket: l.socket,
                    ours: pid == me,
                }),
            }
        }
    }
    Ok(found)
}

pub(super) fn port_holder_pid(addr: SocketAddr) -> Option<i32> {
    let me = my_pid();
    let mut pids = all_pids();
    pids.sort_unstable();
    let dual = addr.is_ipv6() && addr.ip().is_unspecified();
    // Only a listener on an overlapping address can have refused our bind.
    pids.into_iter().filter(|p| *p != me).find(|pid| {
        sockets_of(*pid)
            .filter_map(|s| darwin::tcp_listening(&s))
            .any(|l| {
                l.local.port() == addr.port()
                    && super::addresses_overlap(addr.ip(), dual, l.local.ip(), l.dual_stack)
            })
    })
}

pub(super) fn somaxconn() -> Option<u32> {
    sysctl_int(c"kern.ipc.somaxconn").and_then(|n| u32::try_from(n).ok())
}

// --------------------------------------------------------- notify socket

pub(super) fn notify_bind(state_dir: &Path, child_uid: Option<u32>) -> io::Result<NotifyBinding> {
    super::bind_notify_file(state_dir, child_uid)
}

/// Nothing to set: XNU passes no credentials with datagrams.
pub(super) fn notify_options(_sock: &std::os::unix::net::UnixDatagram) -> io::Result<()> {
    Ok(())
}

/// No MSG_CMSG_CLOEXEC on macOS; received descriptors are closed at once,
/// and only this (the main) thread forks.
pub(super) const NOTIFY_RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// XNU sends no credentials with datagrams (unp_internalize accepts
/// SCM_RIGHTS only, bsd/kern/uipc_usrreq.c).
pub(super) fn credentials(
    _hdr: &libc::cmsghdr,
    _data: *const u8,
    _len: usize,
) -> Option<(i32, u32)> {
    None
}

pub(super) fn send_to_notify(
    sock: &std::os::unix::net::UnixDatagram,
    target: &str,
    msg: &[u8],
) -> io::Result<usize> {
    sock.send_to(msg, target)
}

extern "C" {
    /// liblaunch (part of libSystem), launch(3): the sockets of the job's
    /// `Sockets` entry `name`, activated; `*fds` is malloc'ed for the caller.
    fn launch_activate_socket(
        name: *const libc::c_char,
        fds: *mut *mut libc::c_int,
        cnt: *mut libc::size_t,
    ) -> libc::c_int;
}

pub(super) fn launchd_sockets(name: &str) -> io::Result<Vec<RawFd>> {
    // Only a launchd job can have Sockets; launchd names every job it
    // starts in XPC_SERVICE_NAME ("0" outside one). Asking elsewhere would
    // cost a round trip to launchd for nothing.
    if std::env::var("XPC_SERVICE_NAME").is_ok_and(|v| v.is_empty() || v == "0")
        || std::env::var_os("XPC_SERVICE_NAME").is_none()
    {
        return Ok(Vec::new());
    }
    let name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in listen.name"))?;
    let mut fds: *mut libc::c_int = std::ptr::null_mut();
    let mut cnt: libc::size_t = 0;
    // SAFETY: launch_activate_socket fills `fds` (malloc'ed, `cnt` long) or
    // returns an errno; both out-pointers are valid for writing.
    let r = unsafe { launch_activate_socket(name.as_ptr(), &mut fds, &mut cnt) };
    if r != 0 {
        // ESRCH: not managed by launchd; ENOENT: no such Sockets entry.
        return match r {
            libc::ESRCH | libc::ENOENT => Ok(Vec::new()),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    // SAFETY: `fds` points at `cnt` ints, ours to read and then free.
    let out = unsafe { std::slice::from_raw_parts(fds, cnt).to_vec() };
    // SAFETY: allocated by liblaunch with malloc, freed once here.
    unsafe { libc::free(fds.cast()) };
    Ok(out)
}

pub(super) fn sync_file(f: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fsync on a descriptor the caller owns.
    match unsafe { libc::fsync(f.as_raw_fd()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

// ---------------------------------------------------------------- timers

/// A kqueue of its own holding one periodic `EVFILT_TIMER`: the kqueue's
/// descriptor reads as readable while an expiration is pending, so tokio's
/// reactor (a kqueue itself) can wait on it.
#[derive(Debug)]
pub(super) struct Ticker(nix::sys::event::Kqueue);

impl Ticker {
    pub(super) fn new(every: std::time::Duration) -> io::Result<Ticker> {
        use nix::sys::event::{EventFilter, EventFlag, FilterFlag, KEvent, Kqueue};
        let kq = Kqueue::new()?;
        let usec = isize::try_from(every.as_micros())
            .unwrap_or(isize::MAX)
            .max(1);
        let timer = KEvent::new(
            0,
            EventFilter::EVFILT_TIMER,
            EventFlag::EV_ADD | EventFlag::EV_ENABLE,
            FilterFlag::NOTE_USECONDS,
            usec,
            0,
        );
        kq.kevent(&[timer], &mut [], None)?;
        Ok(Ticker(kq))
    }

    pub(super) fn take(&self) -> io::Result<u64> {
        use nix::sys::event::{EventFilter, EventFlag, FilterFlag, KEvent};
        let mut got = [KEvent::new(
            0,
            EventFilter::EVFILT_TIMER,
            EventFlag::empty(),
            FilterFlag::empty(),
            0,
            0,
        )];
        let now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // A timer event's data is the count of expirations since the last
        // time it was returned.
        match self.0.kevent(&[], &mut got, Some(now))? {
            0 => Ok(0),
            _ => Ok(u64::try_from(got[0].data()).unwrap_or(0)),
        }
    }

    pub(super) fn as_raw_fd(&self) -> RawFd {
        use std::os::fd::{AsFd, AsRawFd};
        self.0.as_fd().as_raw_fd()
    }
}

// ----------------------------------------------------------------- pidfd

/// macOS has no pidfd (nor any descriptor that names a process for
/// signalling): the control commands fall back to `kill(2)` on the pid
/// after checking its start time once more (`lock::Holder`), which leaves
/// a window of microseconds in which a reused pid could be signalled.
pub(super) fn pidfd_open(_pid: i32) -> io::Result<Option<std::os::fd::OwnedFd>> {
    Ok(None)
}

/// Never called without a pidfd; ENOSYS makes the caller fall back to
/// `kill(2)`.
pub(super) fn pidfd_send_signal(
    _fd: std::os::fd::BorrowedFd<'_>,
    _sig: libc::c_int,
) -> nix::Result<()> {
    Err(nix::errno::Errno::ENOSYS)
}

/// Never called without a pidfd: the caller checks the start time.
pub(super) fn pidfd_exited(
    _fd: std::os::fd::BorrowedFd<'_>,
    _wait: std::time::Duration,
) -> Option<bool> {
    None
}
