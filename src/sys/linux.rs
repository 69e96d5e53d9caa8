//! Linux: facts from `/proc`, `prctl(PR_SET_PDEATHSIG)`, `close_range`.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{procnet, NotifyBinding, Scope, TcpListen};

/// The fields of `/proc/PID/stat` after the command name, which may itself
/// contain spaces and parentheses.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

pub(super) fn process_start_time(pid: i32) -> Option<u64> {
    // Field 22 of stat; index 19 once pid and comm are cut off.
    stat_fields(pid)?.get(19)?.parse().ok()
}

pub(super) fn process_age(start_ticks: u64) -> Option<std::time::Duration> {
    // stat's start time counts clock ticks since boot, suspend included:
    // CLOCK_BOOTTIME's origin.
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    // SAFETY: sysconf(3) reads a constant; no memory is involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0)?;
    let start = std::time::Duration::from_nanos(
        u64::try_from(u128::from(start_ticks) * 1_000_000_000 / u128::from(hz)).ok()?,
    );
    let now = std::time::Duration::new(
        u64::try_from(now.tv_sec()).ok()?,
        u32::try_from(now.tv_nsec()).ok()?,
    );
    now.checked_sub(start)
}

pub(super) fn is_zombie(pid: i32) -> bool {
    matches!(stat_fields(pid).as_deref().and_then(|f| f.first()), Some(s) if s == "Z" || s == "X")
}

pub(super) fn group_has_live_member(pgid: i32) -> bool {
    // The leader, alive and still in its group, is the usual answer: one
    // file read, not one per process on the machine (the scan below took
    // a millisecond or two of CPU and ran at every handover's switch).
    // A pid that leads a group is not reused while the group lives.
    let leads = stat_fields(pgid).is_some_and(|f| {
        !matches!(f.first().map(String::as_str), Some("Z" | "X") | None)
            && f.get(2).and_then(|s| s.parse::<i32>().ok()) == Some(pgid)
    });
    // Without /proc, assume someone is left: the caller keeps signalling.
    leads || live_members(pgid).is_none_or(|m| !m.is_empty())
}

/// The live (not zombie) members of process group `pgid`; `None` when
/// `/proc` cannot be listed.
fn live_members(pgid: i32) -> Option<Vec<i32>> {
    let dir = fs::read_dir("/proc").ok()?;
    Some(
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                // State, ppid, pgrp: the first three fields after the name.
                stat_fields(*pid).is_some_and(|f| {
                    f.get(2).and_then(|s| s.parse::<i32>().ok()) == Some(pgid)
                        && !matches!(f.first().map(String::as_str), Some("Z" | "X"))
                })
            })
            .collect(),
    )
}

pub(super) fn process_command(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        // Kernel threads and zombies have no command line; the name will do.
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        return Some(comm.trim_end().to_owned());
    }
    Some(words.join(" "))
}

pub(super) fn executable(pid: i32) -> Option<PathBuf> {
    let link = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    // A binary replaced under a running process (an upgrade) reads as
    // "PATH (deleted)"; it was started from PATH all the same.
    let text = link.as_os_str().as_bytes();
    Some(match text.strip_suffix(b" (deleted)") {
        Some(path) => PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        None => link,
    })
}

/// The pids in `/proc`.
fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// Whether `pid` has a descriptor open on socket inode `inode`.
fn holds_socket(pid: i32, inode: u64) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str().as_bytes() == want.as_bytes())
    })
}

/// Socket inodes this process holds.
fn own_socket_inodes() -> Vec<u64> {
    let Ok(fds) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let link = fs::read_link(fd.path()).ok()?;
            let text = link.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

pub(super) fn accepted_socket(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    // A v4 client of an IPv6 wildcard shows as a v4-mapped address there.
    tcp_table()
        .ok()?
        .into_iter()
        .find(|e| {
            e.inode != 0
                && super::same_endpoint(e.remote, client)
                && super::same_endpoint(e.local, server)
        })
        .map(|e| e.inode)
}

fn tcp_table() -> io::Result<Vec<procnet::TcpEntry>> {
    let mut all = Vec::new();
    let mut read_any = false;
    let mut last_error = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match fs::read_to_string(table) {
            Ok(text) => {
                read_any = true;
                all.extend(procnet::parse(&text));
            }
            // No IPv6 in this kernel or namespace: no tcp6 table.
            Err(e) => last_error = Some(e),
        }
    }
    match (read_any, last_error) {
        (false, Some(e)) => Err(e),
        _ => Ok(all),
    }
}

pub(super) fn tcp_listeners(port: u16) -> io::Result<Vec<TcpListen>> {
    let listening: Vec<procnet::TcpEntry> = tcp_table()?
        .into_iter()
        .filter(|e| e.state == procnet::LISTEN && e.local.port() == port)
        .collect();
    if listening.is_empty() {
        return Ok(Vec::new());
    }
    let ours = own_socket_inodes();
    Ok(listening
        .into_iter()
        .map(|e| TcpListen {
            addr: e.local,
            // /proc/net/tcp6 does not show IPV6_V6ONLY: assume the default.
            dual_stack: e.local.is_ipv6() && e.local.ip().is_unspecified(),
            socket: e.inode,
            ours: ours.contains(&e.inode),
        })
        .collect())
}

pub(super) fn port_holder_pid(addr: SocketAddr) -> Option<i32> {
    // Listening sockets first, then ones bound but not listening (yet);
    // only one on an overlapping address can have refused our bind (the
    // tables do not show IPV6_V6ONLY: an IPv6 wildcard counts as both).
    let table = tcp_table().ok()?;
    let dual = addr.is_ipv6() && addr.ip().is_unspecified();
    let overlaps = |e: &procnet::TcpEntry| {
        let theirs_dual = e.local.is_ipv6() && e.local.ip().is_unspecified();
        e.local.port() == addr.port()
            && e.inode != 0
            && super::addresses_overlap(addr.ip(), dual, e.local.ip(), theirs_dual)
    };
    let mut inodes: Vec<u64> = Vec::new();
    for state in [procnet::LISTEN, procnet::CLOSE] {
        inodes.extend(
            table
                .iter()
                .filter(|e| e.state == state && overlaps(e))
                .map(|e| e.inode),
        );
    }
    if inodes.is_empty() {
        return None;
    }
    let me = std::process::id() as i32;
    let mut pids = all_pids();
    pids.retain(|p| *p != me);
    pids.sort_unstable();
    inodes
        .iter()
        .find_map(|inode| pids.iter().copied().find(|p| holds_socket(*p, *inode)))
}

pub(super) fn socket_id(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat fills a plain struct for a descriptor number; a bad
    // number just fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    Some(st.st_ino)
}

pub(super) fn socket_holders(id: u64, scope: Scope) -> Vec<i32> {
    let me = std::process::id() as i32;
    let candidates = match scope {
        Scope::All => all_pids(),
        Scope::DescendantsOf(root) => descendants(root),
        Scope::Only(pid) => vec![pid],
    };
    candidates
        .into_iter()
        .filter(|p| *p != me && holds_socket(*p, id))
        .collect()
}

/// `root` and every process below it. With CONFIG_PROC_CHILDREN each
/// thread lists the children it forked (or adopted, as a subreaper) in
/// `/proc/PID/task/TID/children`: a process with no descendants costs one
/// directory listing and a small read per thread. Without it, one pass over
/// every `/proc/PID/stat`. The kernel documents the children files as a
/// snapshot that can miss processes forked or re-parented meanwhile;
/// callers that stop a tree look again until nothing is left.
fn descendants(root: i32) -> Vec<i32> {
    static HAVE_CHILDREN_FILES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let have = *HAVE_CHILDREN_FILES.get_or_init(|| {
        let me = std::process::id();
        Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
    });
    let mut out = vec![root];
    let mut seen: std::collections::HashSet<i32> = out.iter().copied().collect();
    if have {
        let mut next = 0;
        while let Some(&pid) = out.get(next) {
            next += 1;
            let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let Ok(text) = fs::read_to_string(task.path().join("children")) else {
                    continue;
                };
                for child in text.split_whitespace().filter_map(|c| c.parse().ok()) {
                    if seen.insert(child) {
                        out.push(child);
                    }
                }
            }
        }
        return out;
    }
    let parents: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|pid| {
            let ppid = stat_fields(pid)?.get(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut next = 0;
    while let Some(&pid) = out.get(next) {
        next += 1;
        for (child, _) in parents.iter().filter(|(_, ppid)| *ppid == pid) {
            if seen.insert(*child) {
                out.push(*child);
            }
        }
    }
    out
}

pub(super) fn set_child_subreaper() -> bool {
    nix::sys::prctl::set_child_subreaper(true).is_ok()
}

pub(super) fn somaxconn() -> Option<u32> {
    fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(super) fn resident_bytes(pid: i32) -> Option<u64> {
    // statm: size resident shared text lib data dt, in pages.
    let text = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| pages * p)
}

/// Read a /proc table in as few read() calls as possible: each call is a
/// consistent snapshot, but between two calls entries may shift while other
/// processes lock and unlock, so one could be seen twice or not at all.
fn read_proc_at_once(path: &str) -> Option<String> {
    use std::io::Read;
    let mut f = fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read(&mut buf[len..]).ok()? {
            0 => break,
            n => len += n,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

pub(super) fn flock_holder(fd: RawFd) -> Option<Option<i32>> {
    let meta = fs::metadata(format!("/proc/self/fd/{fd}")).ok()?;
    let (ino, dev) = (meta.ino(), meta.dev());
    let text = read_proc_at_once("/proc/locks")?;
    let holders = flock_lines(&text, ino);
    if holders.is_empty() {
        // Any holder's line carries the file's inode: nobody holds it.
        return Some(None);
    }
    // /proc/locks names the superblock's device, which `stat` does not
    // always report (btrfs subvolumes, overlayfs): where the numbers
    // disagree, the holder must have the very file open.
    let exact = (libc::major(dev), libc::minor(dev));
    holders
        .iter()
        .find(|h| h.1 == exact)
        .or_else(|| {
            holders
                .iter()
                .find(|h| holds_file(h.0, dev, ino).unwrap_or(false))
        })
        .map(|h| Some(h.0))
}

/// The FLOCK holders in `/proc/locks` text of a file with inode `ino`, as
/// (pid, (major, minor)): "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF".
/// A line with "->" is a waiter, not a holder.
pub(crate) fn flock_lines(text: &str, ino: u64) -> Vec<(i32, (u32, u32))> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(1) != Some(&"FLOCK") || f.contains(&"->") {
                return None;
            }
            let mut id = f.get(5)?.split(':');
            let major = u32::from_str_radix(id.next()?, 16).ok()?;
            let minor = u32::from_str_radix(id.next()?, 16).ok()?;
            let file = id.next()?.parse::<u64>().ok()?;
            if id.next().is_some() || file != ino {
                return None;
            }
            Some((f.get(4)?.parse().ok()?, (major, minor)))
        })
        .collect()
}

pub(super) fn holds_file(pid: i32, dev: u64, ino: u64) -> io::Result<bool> {
    let dir = fs::read_dir(format!("/proc/{pid}/fd"))?;
    Ok(dir
        .flatten()
        .any(|e| fs::metadata(e.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino)))
}

pub(super) fn cloexec_from(from: RawFd) {
    // Listing /proc/self/fd opens one descriptor of its own; collect first.
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        // SAFETY: plain fcntl on integers; invalid fds just fail.
        unsafe { cloexec_from_after_fork(from) };
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= from)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC on a descriptor number; a stale one fails harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

pub(super) unsafe fn cloexec_from_after_fork(from: RawFd) {
    // CLOSE_RANGE_CLOEXEC (Linux 5.11+): mark, don't close, so std's
    // exec-error pipe still reports a failed execve to the parent.
    libc::syscall(
        libc::SYS_close_range,
        from as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    );
}

pub(super) unsafe fn die_with_parent(sig: libc::c_int, parent: libc::pid_t) -> bool {
    if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
        return true; // not fatal: the next supervisor cleans up through state.json
    }
    // The parent may have died between fork and prctl; then nobody will
    // ever send the signal, and we must not start.
    libc::getppid() == parent
}

/// One past the highest signal number (signals 1..=64, real-time ones included).
pub(super) const NSIG: libc::c_int = 65;

pub(super) unsafe fn default_signal_after_fork(sig: libc::c_int) {
    // glibc's sigaction() refuses its internal real-time signals 32 and 33,
    // which its posix_spawn leaves *ignored* in the programs it starts (and
    // an ignored signal survives exec). The raw system call takes them all.
    // An all-zero kernel sigaction is SIG_DFL, no flags, empty mask, whatever
    // the architecture's field order.
    let dfl = [0u64; 4];
    libc::syscall(
        libc::SYS_rt_sigaction,
        sig,
        dfl.as_ptr(),
        std::ptr::null_mut::<u64>(),
        8usize,
    );
}

pub(super) fn dup_to(fd: RawFd, target: RawFd) -> io::Result<()> {
    if fd == target {
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(());
    }
    // SAFETY: dup3 atomically replaces `target`; both are plain integers.
    if unsafe { libc::dup3(fd, target, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn notify_bind(state_dir: &Path, child_uid: Option<u32>) -> io::Result<NotifyBinding> {
    super::bind_notify_file(state_dir, child_uid)
}

/// Set on every notify socket bound (the serving child's and a handover's
/// second): each datagram then carries its sender's pid and uid, as of
/// sending, which the driver checks.
pub(super) fn notify_options(sock: &std::os::unix::net::UnixDatagram) -> io::Result<()> {
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::PassCred, &true)?;
    Ok(())
}

/// Received descriptors are close-on-exec from the start, though they are
/// closed at once anyway.
pub(super) const NOTIFY_RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;

/// The sender's pid and uid from an SCM_CREDENTIALS record (the kernel
/// fills them in when the sender sends none, and checks them when it does).
pub(super) fn credentials(hdr: &libc::cmsghdr, data: *const u8, len: usize) -> Option<(i32, u32)> {
    if hdr.cmsg_level != libc::SOL_SOCKET
        || hdr.cmsg_type != libc::SCM_CREDENTIALS
        || len < std::mem::size_of::<libc::ucred>()
    {
        return None;
    }
    // SAFETY: `len` bytes at `data` lie inside the received control data.
    let cred: libc::ucred = unsafe { std::ptr::read_unaligned(data.cast()) };
    Some((cred.pid, cred.uid))
}

pub(super) fn send_to_notify(
    sock: &std::os::unix::net::UnixDatagram,
    target: &str,
    msg: &[u8],
) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    match target.strip_prefix('@') {
        Some(name) => sock.send_to_addr(
            msg,
            &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?,
        ),
        None => sock.send_to(msg, target),
    }
}

pub(super) fn grow_pipe(fd: RawFd) {
    // Kernel memory, not ours; capped by /proc/sys/fs/pipe-max-size (1 MiB
    // by default), so failure just leaves the default.
    // SAFETY: fcntl on a descriptor the caller owns.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
}

pub(super) fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned())
}

pub(super) fn group_members(pgid: i32) -> Vec<i32> {
    live_members(pgid).unwrap_or_default()
}

pub(super) fn launchd_sockets(_name: &str) -> io::Result<Vec<RawFd>> {
    Ok(Vec::new()) // no launchd here
}

pub(super) fn sync_file(f: &std::fs::File) -> io::Result<()> {
    f.sync_data()
}

// ---------------------------------------------------------------- timers

#[derive(Debug)]
pub(super) struct Ticker(nix::sys::timerfd::TimerFd);

impl Ticker {
    pub(super) fn new(every: std::time::Duration) -> io::Result<Ticker> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let period = TimeSpec::from_duration(every);
        fd.set(Expiration::Interval(period), TimerSetTimeFlags::empty())?;
        Ok(Ticker(fd))
    }

    pub(super) fn take(&self) -> io::Result<u64> {
        // A timerfd reads as the count of expirations since the last read.
        let mut count = [0u8; 8];
        match nix::unistd::read(self.as_raw_fd(), &mut count) {
            Ok(8) => Ok(u64::from_ne_bytes(count)),
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn as_raw_fd(&self) -> RawFd {
        use std::os::fd::{AsFd, AsRawFd};
        self.0.as_fd().as_raw_fd()
    }
}

// ----------------------------------------------------------------- pidfd

/// `pidfd_open(2)` (Linux 5.3): a descriptor that names this very
/// process, not its pid. `Ok(None)` where there is none to be had: a
/// kernel without it (ENOSYS) or one that refuses it (a seccomp filter's
/// EPERM, EINVAL for a thread, no descriptor left): the caller falls back
/// to the pid and its start time. NotFound (ESRCH) when it has exited.
pub(super) fn pidfd_open(pid: i32) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_open,
            libc::c_long::from(pid),
            0 as libc::c_long,
        )
    };
    if r >= 0 {
        let fd = RawFd::try_from(r).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: the kernel just returned this descriptor (close-on-exec,
        // as pidfds always are); nothing else owns it.
        return Ok(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ESRCH) => Err(io::Error::new(io::ErrorKind::NotFound, e)),
        _ => Ok(None),
    }
}

/// `pidfd_send_signal(2)`: `sig` to the process the pidfd names, or ESRCH
/// once it has exited and been reaped, whoever has its pid now.
pub(super) fn pidfd_send_signal(
    fd: std::os::fd::BorrowedFd<'_>,
    sig: libc::c_int,
) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a descriptor we hold, a signal number, no siginfo (the
    // kernel then fills one in as kill(2) would), no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(nix::errno::Errno::last())
    }
}

/// Whether the process the pidfd names has exited (a zombie counts),
/// waiting up to `wait` for it: a pidfd polls readable then. `None` when
/// poll fails.
pub(super) fn pidfd_exited(
    fd: std::os::fd::BorrowedFd<'_>,
    wait: std::time::Duration,
) -> Option<bool> {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd of ours, its count, a timeout.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    match r {
        0 => Some(false),
        1.. => Some(p.revents & (libc::POLLIN | libc::POLLHUP) != 0),
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => Some(false),
        _ => None,
    }
}
