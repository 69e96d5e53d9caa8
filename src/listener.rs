//! The listening socket: bound once, kept for the life of the supervisor,
//! handed to every child as fd 3.
//!
//! The supervisor keeps the socket at fd 3 itself (see `reserve_fd3`), so
//! the child side of the hand-over is a single `fcntl` clearing
//! close-on-exec: no `dup2` can clobber a descriptor that std's spawn code
//! uses after fork.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// The descriptor number the socket-activation protocol hands over.
pub const LISTEN_FD: RawFd = 3;

/// Make sure fds 0-2 are open (on /dev/null if not) and park a /dev/null
/// placeholder at fd 3 until the socket replaces it, so nothing else we open
/// (the lock file, the log files) ever lands on 0-3. Call first thing in
/// `main`, before any other file is opened.
pub fn reserve_low_fds() {
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
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Bind and listen with `SO_REUSEADDR` (so a restart right after a
    /// previous supervisor does not trip over TIME_WAIT) and our backlog,
    /// then move the socket to fd 3, close-on-exec until a child needs it.
    pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
        let fd = bind_socket(addr, backlog)?;
        if fd.as_raw_fd() == LISTEN_FD {
            return Ok(Listener { fd });
        }
        sys::dup_to(fd.as_raw_fd(), LISTEN_FD)?;
        drop(fd);
        // SAFETY: fd 3 now holds our socket and nothing else owns it (the
        // /dev/null placeholder it replaced was never wrapped in an owner).
        let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FD) };
        Ok(Listener { fd })
    }

    /// Children (asyncio, tokio) set O_NONBLOCK, which lives on the shared
    /// open file description: undo it before every spawn, or a child that
    /// calls a blocking `accept` fails with EAGAIN.
    pub fn make_blocking(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.fd).set_nonblocking(false)
    }

    /// Whether the socket still accepts connections (`SO_ACCEPTCONN`). A
    /// child that calls `shutdown(fd 3, SHUT_RDWR)` (a common way to wake
    /// its own blocked `accept`) disarms it for every holder.
    pub fn is_listening(&self) -> bool {
        nix::sys::socket::getsockopt(&self.fd, nix::sys::socket::sockopt::AcceptConn)
            .unwrap_or(false)
    }

    /// Listen again on the same bound socket, re-arming it after a
    /// `shutdown`.
    pub fn rearm(&self, backlog: i32) -> io::Result<()> {
        socket2::SockRef::from(&self.fd).listen(backlog)
    }
}

fn bind_socket(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// "address in use" and friends, in words (the errno differs by platform:
/// EADDRINUSE is 98 on Linux and 48 on macOS, so match the kind).
pub fn describe_bind_error(e: &io::Error) -> String {
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
        nix::sys::socket::shutdown(listener.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both)
            .unwrap();
        assert!(!listener.is_listening());
        listener.rearm(16).unwrap();
        assert!(listener.is_listening());

        let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = bind_socket(squatter.local_addr().unwrap(), 16).unwrap_err();
        assert_eq!(describe_bind_error(&e), "address in use");
    }
}
