//! Linux: facts from `/proc`, `prctl(PR_SET_PDEATHSIG)`, `close_range`.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The fields of `/proc/PID/stat` after the command name, which may itself
/// contain spaces and parentheses.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

pub fn process_start_time(pid: i32) -> Option<u64> {
    // Field 22 of stat; index 19 once pid and comm are cut off.
    stat_fields(pid)?.get(19)?.parse().ok()
}

pub fn is_zombie(pid: i32) -> bool {
    matches!(stat_fields(pid).as_deref().and_then(|f| f.first()), Some(s) if s == "Z" || s == "X")
}

pub fn group_has_live_member(pgid: i32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat_fields)
        .any(|f| {
            let state = f.first().map(String::as_str);
            let pgrp = f.get(2).and_then(|s| s.parse::<i32>().ok());
            pgrp == Some(pgid) && !matches!(state, Some("Z") | Some("X"))
        })
}

pub fn process_command(pid: i32) -> Option<String> {
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

pub fn executable(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Inodes of sockets bound to `addr`'s port (LISTEN state preferred) from
/// `/proc/net/tcp` and `/proc/net/tcp6`.
fn socket_inodes(addr: SocketAddr) -> Vec<u64> {
    let port = addr.port();
    let mut listening = Vec::new();
    let mut bound = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let Some(p) = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            let Ok(inode) = inode.parse::<u64>() else {
                continue;
            };
            if p != port || inode == 0 {
                continue;
            }
            // 0A is TCP_LISTEN; 07 (CLOSE) is a socket bound but not yet listening.
            match *st {
                "0A" => listening.push(inode),
                "07" => bound.push(inode),
                _ => {}
            }
        }
    }
    listening.extend(bound);
    listening
}

pub fn port_holder_pid(addr: SocketAddr) -> Option<i32> {
    let inodes = socket_inodes(addr);
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let me = std::process::id() as i32;
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().map(|s| wanted.iter().any(|w| w == s)))
                .unwrap_or(false)
        })
    })
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

pub fn flock_holder(fd: RawFd) -> Option<Option<i32>> {
    // /proc/locks: "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF"
    let meta = fs::metadata(format!("/proc/self/fd/{fd}")).ok()?;
    let (ino, dev) = (meta.ino(), meta.dev());
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let text = read_proc_at_once("/proc/locks")?;
    Some(text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // A "->" marks a waiter, not a holder.
        if f.get(1) != Some(&"FLOCK") || f.contains(&"->") {
            return None;
        }
        let id: Vec<&str> = f.get(5)?.split(':').collect();
        let same = id.len() == 3
            && u32::from_str_radix(id[0], 16).ok()? == major
            && u32::from_str_radix(id[1], 16).ok()? == minor
            && id[2].parse::<u64>().ok()? == ino;
        if same {
            f.get(4)?.parse().ok()
        } else {
            None
        }
    }))
}

pub fn cloexec_from(from: RawFd) {
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

pub unsafe fn cloexec_from_after_fork(from: RawFd) {
    // CLOSE_RANGE_CLOEXEC (Linux 5.11+): mark, don't close, so std's
    // exec-error pipe still reports a failed execve to the parent.
    libc::syscall(
        libc::SYS_close_range,
        from as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    );
}

pub unsafe fn die_with_parent(sig: libc::c_int, parent: libc::pid_t) -> bool {
    if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
        return true; // not fatal: the next supervisor cleans up through state.json
    }
    // The parent may have died between fork and prctl; then nobody will
    // ever send the signal, and we must not start.
    libc::getppid() == parent
}

/// One past the highest signal number (signals 1..=64, real-time ones included).
pub const NSIG: libc::c_int = 65;

pub unsafe fn default_signal_after_fork(sig: libc::c_int) {
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

pub fn dup_to(fd: RawFd, target: RawFd) -> io::Result<()> {
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

pub fn notify_bind(
    _state_dir: &std::path::Path,
) -> io::Result<(std::os::unix::net::UnixDatagram, String, Option<PathBuf>)> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("supervisor-notify-{}-{nanos:x}", std::process::id());
    let sock = UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes())?)?;
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)?;
    Ok((sock, format!("@{name}"), None))
}

pub fn recv_with_pid(
    sock: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<i32>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(UnixCredentials);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let pid = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
        _ => None,
    });
    Ok((msg.bytes, pid))
}

pub fn send_to_notify(
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

pub fn grow_pipe(fd: RawFd) {
    // Kernel memory, not ours; capped by /proc/sys/fs/pipe-max-size (1 MiB
    // by default), so failure just leaves the default.
    // SAFETY: fcntl on a descriptor the caller owns.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
}

pub fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned())
}

pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            stat_fields(*pid).is_some_and(|f| {
                let state = f.first().map(String::as_str);
                f.get(2).and_then(|s| s.parse::<i32>().ok()) == Some(pgid)
                    && !matches!(state, Some("Z") | Some("X"))
            })
        })
        .collect()
}

pub fn set_child_subreaper() -> bool {
    nix::sys::prctl::set_child_subreaper(true).is_ok()
}
