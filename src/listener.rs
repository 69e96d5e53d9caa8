//! The listening socket: bound once, kept for the life of the supervisor,
//! handed to every child as fd 3.
//!
//! The supervisor keeps the socket at fd 3 itself (fd 3 is reserved
//! before anything else opens a file, and never left free), so the child
//! side of the hand-over is a single `fcntl` clearing close-on-exec: no
//! `dup2` can clobber a descriptor that std's spawn code uses after fork.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// The descriptor number the socket-activation protocol hands over.
pub(crate) const LISTEN_FD: RawFd = 3;

/// Make sure fds 0-2 are open (on /dev/null if not) and park a /dev/null
/// placeholder at fd 3 until the socket replaces it, so nothing else we open
/// (the lock file, the log files) ever lands on 0-3. Call first thing in
/// `main`, before any other file is opened.
pub(crate) fn reserve_low_fds() {
    for fd in 0..=LISTEN_FD {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            if fd == LISTEN_FD {
                // Inherited from whoever started us: not for the child.
                // SAFETY: setting a flag on an open descriptor.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
            continue;
        }
        let flags = if fd == 0 {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
        // SAFETY: open returns the lowest free descriptor, which is `fd` here
        // since every lower one is open; the result is checked.
        let got = unsafe { libc::open(c"/dev/null".as_ptr(), flags | libc::O_CLOEXEC) };
        if got >= 0 && got != fd {
            let _ = sys::dup_to(got, fd);
            // SAFETY: closing the extra descriptor we just opened.
            unsafe { libc::close(got) };
        }
        if fd < LISTEN_FD && got >= 0 {
            // Standard streams are inherited by children on purpose.
            // SAFETY: clearing a flag on an open descriptor.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        }
    }
}

/// The bound, listening socket, living at fd 3.
#[derive(Debug)]
pub(crate) struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Bind and listen with our backlog (see `bind_socket` for how
    /// `SO_REUSEADDR` is used), then move the socket to fd 3, close-on-exec
    /// until a child needs it.
    pub(crate) fn bind(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
        Listener::adopt(bind_socket(addr, backlog)?)
    }

    /// Children (asyncio, tokio) set O_NONBLOCK, which lives on the shared
    /// open file description: undo it before every spawn, or a child that
    /// calls a blocking `accept` fails with EAGAIN.
    pub(crate) fn make_blocking(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.fd).set_nonblocking(false)
    }

    /// Whether the socket still accepts connections (`SO_ACCEPTCONN`). A
    /// child that calls `shutdown(fd 3, SHUT_RDWR)` (a common way to wake
    /// its own blocked `accept`) disarms it for every holder on Linux; on
    /// macOS that `shutdown` is ENOTCONN and disarms nothing, so the
    /// re-arm path is Linux's.
    pub(crate) fn is_listening(&self) -> bool {
        nix::sys::socket::getsockopt(&self.fd, nix::sys::socket::sockopt::AcceptConn)
            .unwrap_or(false)
    }

    /// Listen again on the same bound socket, re-arming it after a
    /// `shutdown`.
    pub(crate) fn rearm(&self, backlog: i32) -> io::Result<()> {
        socket2::SockRef::from(&self.fd).listen(backlog)
    }
}

/// fd 3 is never free: dropping the listener puts the /dev/null
/// placeholder back in its place, closing the socket in the same `dup2`.
/// A free fd 3 would be taken by the next file anything opens (the log
/// reader thread rotating child.log), and the next socket moved into place
/// would silently close that file.
impl Drop for Listener {
    fn drop(&mut self) {
        if self.fd.as_raw_fd() != LISTEN_FD {
            return;
        }
        let Ok(null) = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
        else {
            return;
        };
        if sys::dup_to(null.as_raw_fd(), LISTEN_FD).is_ok() {
            // fd 3 is the placeholder now, owned by nothing (as at start);
            // what closes with this listener is the extra /dev/null.
            std::mem::forget(std::mem::replace(&mut self.fd, OwnedFd::from(null)));
        }
    }
}

impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A socket bound and listening at some descriptor other than 3,
/// close-on-exec, waiting to take fd 3's place: a changed `[listen]`
/// after `reload` is bound while the old socket still serves.
#[derive(Debug)]
pub(crate) struct Standby {
    fd: OwnedFd,
}

impl Listener {
    /// Bind and listen on `addr` beside the socket at fd 3; moved into
    /// place later by [`Listener::replace`] or [`Standby::into_place`].
    pub(crate) fn bind_elsewhere(addr: SocketAddr, backlog: i32) -> io::Result<Standby> {
        bind_socket(addr, backlog).map(|fd| Standby { fd })
    }

    /// Put `next` in place of ours at fd 3; the old socket closes in the
    /// same `dup2` (a changed `[listen]` after `reload`).
    pub(crate) fn replace(&mut self, next: Standby) -> io::Result<()> {
        sys::dup_to(next.fd.as_raw_fd(), LISTEN_FD)
    }

    /// Adopt a socket passed to us at `fd` (by a service manager, or across
    /// `reload`): moved to fd 3, close-on-exec.
    pub(crate) fn adopt(fd: OwnedFd) -> io::Result<Listener> {
        if fd.as_raw_fd() != LISTEN_FD {
            sys::dup_to(fd.as_raw_fd(), LISTEN_FD)?;
            drop(fd);
        } else {
            sys::dup_to(LISTEN_FD, LISTEN_FD)?;
            std::mem::forget(fd);
        }
        // SAFETY: fd 3 now holds the socket and nothing else owns it (the
        // original descriptor was closed, or is this one and was forgotten).
        let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FD) };
        Ok(Listener { fd })
    }
}

impl Standby {
    /// Moved to fd 3 while no listener is there.
    pub(crate) fn into_place(self) -> io::Result<Listener> {
        Listener::adopt(self.fd)
    }
}

/// The descriptors `LISTEN_FDS` passes to us: `(fd, name)` from fd 3 on,
/// when `LISTEN_PID` is our pid (otherwise they are someone else's: a
/// manager that started our parent). Names come from `LISTEN_FDNAMES`.
fn parse_listen_env(
    me: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
) -> Option<Vec<(RawFd, Option<String>)>> {
    if listen_pid?.trim().parse::<u32>().ok()? != me {
        return None;
    }
    let n: RawFd = listen_fds?
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0 && *n < 4096)?;
    let names: Vec<Option<String>> = match names {
        Some(list) => list.split(':').map(|n| Some(n.to_owned())).collect(),
        None => Vec::new(),
    };
    Some(
        (0..n)
            .map(|i| (LISTEN_FD + i, names.get(i as usize).cloned().flatten()))
            .collect(),
    )
}

/// The listening socket the service manager passed to us for `addr` (the
/// one named `name` when the manager names them), or `None` when it passed
/// none. Every other passed descriptor is closed, and the protocol's
/// variables leave our environment. A manager that passed sockets but none
/// listening on `addr` is a configuration error (exit 78), naming what was
/// passed. Call before any other thread runs.
pub(crate) fn from_manager(addr: SocketAddr, name: &str) -> Result<Option<Listener>, String> {
    let env = |k: &str| std::env::var(k).ok();
    let (passed, source) = match parse_listen_env(
        std::process::id(),
        env("LISTEN_PID").as_deref(),
        env("LISTEN_FDS").as_deref(),
        env("LISTEN_FDNAMES").as_deref(),
    ) {
        Some(p) => (p, "LISTEN_FDS"),
        None => match launchd_answer(name, sys::launchd_sockets(name))? {
            Some(fds) => (
                fds.into_iter()
                    .map(|fd| (fd, Some(name.to_owned())))
                    .collect(),
                "launchd",
            ),
            None => return Ok(None),
        },
    };
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called at start-up, before any other thread exists.
        unsafe { std::env::remove_var(var) };
    }
    let mut seen = Vec::new();
    let mut chosen = None;
    for (fd, fd_name) in passed {
        // The manager passed these descriptors to this process and nothing
        // here owns them yet.
        let Some(owned) = sys::adopt_fd(fd) else {
            seen.push(format!("fd {fd}: not open"));
            continue;
        };
        let sock = socket2::SockRef::from(&owned);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let listening = nix::sys::socket::getsockopt(&owned, nix::sys::socket::sockopt::AcceptConn)
            .unwrap_or(false);
        let label = match (&local, &fd_name) {
            (Some(a), Some(n)) => format!("fd {fd}: {a} named {n:?}"),
            (Some(a), None) => format!("fd {fd}: {a}"),
            (None, _) => format!("fd {fd}: not a TCP socket"),
        };
        seen.push(if listening || local.is_none() {
            label
        } else {
            format!("{label} (not listening)")
        });
        let named_ok = fd_name.as_deref().is_none_or(|n| n == name);
        if chosen.is_none() && listening && local == Some(addr) && named_ok {
            chosen = Some(owned);
        }
        // Every other one is dropped, and so closed, here.
    }
    match chosen {
        Some(fd) => Listener::adopt(fd)
            .map(Some)
            .map_err(|e| format!("cannot take the socket passed by {source}: {e}")),
        None => Err(format!(
            "{source} passed {} but none listens on listen.address {addr}{}: {}",
            crate::text::count(seen.len() as u64, "socket"),
            if source == "LISTEN_FDS" {
                format!(" (named {name:?}, if names are given)")
            } else {
                String::new()
            },
            seen.join("; ")
        )),
    }
}

/// What `launch_activate_socket` answered for the `Sockets` entry `name`:
/// the descriptors, `None` when launchd passed none (not a launchd job, no
/// such entry: `sys::launchd_sockets` says so with an empty list), or,
/// for any other error, a configuration problem (exit 78): a `Sockets`
/// entry that cannot be activated would leave the supervisor waiting for
/// a port launchd holds, saying nothing.
fn launchd_answer(
    name: &str,
    answer: io::Result<Vec<RawFd>>,
) -> Result<Option<Vec<RawFd>>, String> {
    match answer {
        Ok(fds) if fds.is_empty() => Ok(None),
        Ok(fds) => Ok(Some(fds)),
        Err(e) => Err(format!(
            "launchd could not activate the Sockets entry {name:?} (launch_activate_socket: {e}); \
             check the job's Sockets key and listen.name"
        )),
    }
}

/// Bind without `SO_REUSEADDR` first. On BSD stacks (macOS) that option
/// lets `127.0.0.1:P` bind while another socket of the same user listens on
/// `0.0.0.0:P` or `[::]:P` (in_pcbbind in XNU's bsd/netinet/in_pcb.c then
/// looks for exact matches only): the child would start beside the old
/// server, the incident itself. Without it, every overlapping socket is a
/// conflict, TIME_WAIT leftovers of earlier connections included; so on
/// EADDRINUSE we look for a socket *listening* on an overlapping address,
/// and only when there is none bind again with `SO_REUSEADDR`. The rule is
/// the same on Linux, whose kernel refuses those overlaps either way.
///
/// The bound socket gets `SO_REUSEADDR` before `listen`: connections it
/// accepts inherit the flag, and on Linux a TIME_WAIT socket blocks a later
/// bind unless both it and the new socket carry it, so the next supervisor
/// (after a crash or an upgrade) can bind at once.
fn bind_socket(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    bind_listening(addr, backlog, false)
}

/// [`bind_socket`]'s rule for any listener of ours (the `[metrics]` one
/// too); `v6_only`: an IPv6 address takes IPv6 only (else an IPv6
/// wildcard is dual-stack).
pub(crate) fn bind_listening(addr: SocketAddr, backlog: i32, v6_only: bool) -> io::Result<OwnedFd> {
    let socket = match bound(addr, false, v6_only) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => match rival_listener(addr, v6_only) {
            Ok(None) => bound(addr, true, v6_only)?,
            // A real listener (port_holder names it), or no way to tell:
            // never risk a second server.
            Ok(Some(_)) | Err(_) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    socket.set_reuse_address(true)?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn bound(addr: SocketAddr, reuse: bool, v6_only: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && v6_only {
        socket.set_only_v6(true)?;
    }
    if reuse {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Another socket, not ours, listening on an address of `addr`'s port that
/// overlaps it (exact, wildcard of the family, IPv6 wildcard taking IPv4,
/// v4-mapped).
fn rival_listener(addr: SocketAddr, v6_only: bool) -> io::Result<Option<sys::TcpListen>> {
    // Our own IPv6 wildcard is dual-stack unless asked or the system says otherwise.
    let dual = addr.is_ipv6() && addr.ip().is_unspecified() && !v6_only;
    Ok(sys::tcp_listeners(addr.port())?
        .into_iter()
        .find(|l| !l.ours && sys::addresses_overlap(addr.ip(), dual, l.addr.ip(), l.dual_stack)))
}

/// "address in use" and friends, in words (the errno differs by platform:
/// EADDRINUSE is 98 on Linux and 48 on macOS, so match the kind).
pub(crate) fn describe_bind_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".into(),
        io::ErrorKind::AddrNotAvailable => "address not available (yet?) on this machine".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    // Moving to fd 3 is left to the integration tests: in this
    // multi-threaded test process fd 3 may belong to another test.
    #[test]
    fn binds_listens_and_reports_in_use() {
        let fd = bind_socket("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on our socket.
        let cloexec = unsafe { libc::fcntl(raw, libc::F_GETFD) } & libc::FD_CLOEXEC;
        assert_eq!(cloexec, libc::FD_CLOEXEC);
        // SAFETY: set O_NONBLOCK as a child would.
        unsafe { libc::fcntl(raw, libc::F_SETFL, libc::O_NONBLOCK) };
        let listener = Listener { fd };
        listener.make_blocking().unwrap();
        // SAFETY: reading flags.
        assert_eq!(
            unsafe { libc::fcntl(raw, libc::F_GETFL) } & libc::O_NONBLOCK,
            0
        );

        assert!(listener.is_listening());
        // The re-arm path is Linux's: there `shutdown(SHUT_RDWR)` on a
        // listening socket stops it listening; XNU answers ENOTCONN and
        // disarms nothing.
        if cfg!(target_os = "linux") {
            nix::sys::socket::shutdown(listener.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both)
                .unwrap();
            assert!(!listener.is_listening());
            listener.rearm(16).unwrap();
            assert!(listener.is_listening());
        }

        let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = bind_socket(squatter.local_addr().unwrap(), 16).unwrap_err();
        assert_eq!(describe_bind_error(&e), "address in use");
    }

    #[test]
    fn a_launchd_socket_that_cannot_be_activated_is_a_config_error() {
        assert_eq!(launchd_answer("http", Ok(Vec::new())), Ok(None));
        assert_eq!(launchd_answer("http", Ok(vec![3, 4])), Ok(Some(vec![3, 4])));
        let e = launchd_answer("http", Err(io::Error::from_raw_os_error(libc::EPERM))).unwrap_err();
        assert!(
            e.contains("\"http\"") && e.contains("launch_activate_socket"),
            "{e}"
        );
    }

    #[test]
    fn the_systemd_protocol_names_our_descriptors() {
        // (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, what we take)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<Vec<(RawFd, Option<&'a str>)>>,
        );
        let table: [Case; 7] = [
            (Some("42"), Some("1"), None, Some(vec![(3, None)])),
            (
                Some("42"),
                Some("2"),
                Some("http:admin"),
                Some(vec![(3, Some("http")), (4, Some("admin"))]),
            ),
            // For our parent, not for us.
            (Some("41"), Some("1"), None, None),
            (None, Some("1"), None, None),
            (Some("42"), Some("0"), None, None),
            (Some("42"), Some("x"), None, None),
            (Some(" 42 "), Some("1"), Some(""), Some(vec![(3, Some(""))])),
        ];
        for (pid, fds, names, want) in table {
            let got = parse_listen_env(42, pid, fds, names);
            let want: Option<Vec<(RawFd, Option<String>)>> = want.map(|v| {
                v.into_iter()
                    .map(|(fd, n)| (fd, n.map(str::to_owned)))
                    .collect()
            });
            assert_eq!(got, want, "{pid:?} {fds:?} {names:?}");
        }
    }

    /// A listener on the wildcard of the port refuses the specific address
    /// (and the other way round): the rule, whatever the kernel would allow.
    /// Linux only: on macOS the listener this test holds is "ours" (this
    /// process's), and XNU's `in_pcbbind` lets the `SO_REUSEADDR` retry
    /// bind beside it; a foreign listener is refused on both
    /// (tests/listener_overlap.rs).
    #[test]
    #[cfg(target_os = "linux")]
    fn overlapping_listeners_refuse_the_bind() {
        let wildcard = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = wildcard.local_addr().unwrap().port();
        let e = bind_socket(SocketAddr::from(([127, 0, 0, 1], port)), 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // Held by this test process, so listed as ours (a foreign one is
        // tested with a real process in tests/listener_overlap.rs).
        let listed = sys::tcp_listeners(port).unwrap();
        assert!(
            listed
                .iter()
                .any(|l| l.addr == wildcard.local_addr().unwrap() && l.ours),
            "{listed:?}"
        );

        let specific = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = specific.local_addr().unwrap().port();
        let e = bind_socket(SocketAddr::from(([0, 0, 0, 0], port)), 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    /// Our own listening socket is no rival: binding another address of
    /// the same port (a reload onto a new address) is up to the kernel.
    #[test]
    fn our_own_listener_is_not_a_rival() {
        let ours = bind_socket("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = socket2::SockRef::from(&ours).local_addr().unwrap();
        let addr = addr.as_socket().unwrap();
        assert_eq!(rival_listener(addr, false).unwrap(), None);
    }

    /// TIME_WAIT leftovers of a previous listener's connections do not keep
    /// the next bind from succeeding, and our own connections leave none
    /// that would (the listener carries SO_REUSEADDR once bound).
    #[test]
    fn time_wait_leftovers_are_no_obstacle() {
        let first = bind_socket("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let listener = TcpListener::from(first);
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (served, _) = listener.accept().unwrap();
        // The server closes first: its end of the connection (on our
        // port) goes to TIME_WAIT.
        drop(served);
        let mut byte = [0u8; 1];
        use std::io::Read;
        let _ = (&client).read(&mut byte);
        drop(client);
        drop(listener);
        // Without SO_REUSEADDR the port is taken by the TIME_WAIT entry.
        let plain = bound(addr, false, false);
        assert_eq!(
            plain.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::AddrInUse)
        );
        assert_eq!(rival_listener(addr, false).unwrap(), None);
        let again = bind_socket(addr, 16).expect("bind beside TIME_WAIT leftovers");
        let again = TcpListener::from(again);
        assert_eq!(again.local_addr().unwrap(), addr);
    }
}
