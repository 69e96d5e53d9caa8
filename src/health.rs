//! Readiness and liveness I/O: the notify socket the child reports to, the
//! HTTP probe, and READY=1 upwards to systemd. Decisions are the policy's;
//! this module only turns datagrams and HTTP answers into facts.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::os::fd::AsFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

use crate::sys;

/// The datagram socket a `notify = true` child sends READY=1, STATUS=...
/// and WATCHDOG=1 to (systemd's notify protocol, `$NOTIFY_SOCKET`).
///
/// The socket lives as long as the supervisor: nothing a sender does can
/// close it. `recv_batch` hands back the messages and rejected datagrams
/// queued, and either way the next `recv_batch` works (a hostile or broken sender
/// must cost no more than a log line). Only the child's user and root can
/// send to it at all (a socket file; see `sys::notify_bind`).
pub(crate) struct NotifySocket {
    sock: tokio::net::UnixDatagram,
    /// What the child gets as `$NOTIFY_SOCKET`.
    pub env_value: String,
    /// Files, then folders, to remove at exit.
    cleanup: Vec<PathBuf>,
}

/// One message from the child, with the sender's pid where the platform
/// tells it (Linux: SCM_CREDENTIALS, checked by the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    pub sender: Option<i32>,
    /// The sender's uid as of sending (Linux: SCM_CREDENTIALS).
    pub uid: Option<u32>,
    pub ready: bool,
    pub watchdog: bool,
    pub status: Option<String>,
    /// `BARRIER=1` (`sd_notify_barrier`, as `systemd-notify` sends after
    /// its message): the sender waits until the descriptor it passed is
    /// closed, which has already happened. As systemd does, every other
    /// field of such a datagram is ignored.
    pub barrier: bool,
    /// Descriptors passed with the message; all are closed already (we keep
    /// no file descriptor store).
    pub fds: usize,
}

/// A datagram that was read and dropped, or a failed read. The socket stays
/// open and usable either way; the driver logs it (rate-limited) and goes
/// on.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// Larger than the 4096-byte messages systemd accepts (its
    /// NOTIFY_BUFFER_MAX); the whole datagram is dropped, as systemd does.
    Oversized { sender: Option<i32>, fds: usize },
    /// The read itself failed (e.g. ENOMEM, or EMSGSIZE when passed
    /// descriptors did not fit our table). Nothing was delivered.
    Io(io::Error),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Oversized { sender, fds } => {
                write!(f, "dropped a notify datagram over {NOTIFY_MAX} bytes")?;
                if let Some(pid) = sender {
                    write!(f, " from pid {pid}")?;
                }
                if *fds > 0 {
                    write!(f, " ({fds} passed descriptors closed)")?;
                }
                Ok(())
            }
            Rejected::Io(e) => write!(f, "cannot read the notify socket: {e}"),
        }
    }
}

/// The largest notify message systemd accepts (NOTIFY_BUFFER_MAX, PIPE_BUF).
pub(crate) const NOTIFY_MAX: usize = 4096;

/// After a failed read, wait this long before the next, so an error that
/// repeats cannot turn the event loop into a busy loop.
const AFTER_READ_ERROR: Duration = Duration::from_millis(50);

impl NotifySocket {
    /// Bind the socket; `child_uid` is the uid the child runs as when it is
    /// not ours (`child.user`), so it can reach a socket file (macOS).
    pub(crate) fn bind(state_dir: &Path, child_uid: Option<u32>) -> io::Result<NotifySocket> {
        let b = sys::notify_bind(state_dir, child_uid)?;
        b.sock.set_nonblocking(true)?;
        Ok(NotifySocket {
            sock: tokio::net::UnixDatagram::from_std(b.sock)?,
            env_value: b.env_value,
            cleanup: b.cleanup,
        })
    }

    /// The socket handed over across `reload`: the child still sends to
    /// the name it was given.
    pub(crate) fn adopt(
        fd: std::os::fd::OwnedFd,
        env_value: String,
        cleanup: Vec<PathBuf>,
    ) -> io::Result<NotifySocket> {
        let sock = UnixDatagram::from(fd);
        sock.set_nonblocking(true)?;
        Ok(NotifySocket {
            sock: tokio::net::UnixDatagram::from_std(sock)?,
            env_value,
            cleanup,
        })
    }

    /// A second socket beside this one, for a handover's new child (its
    /// own file in the same folder: see `sys::notify_sibling`). `None`
    /// when this one is not a socket file (an abstract name handed over
    /// by an older version).
    pub(crate) fn sibling(&self, child_uid: Option<u32>) -> Option<io::Result<NotifySocket>> {
        let serving = Path::new(&self.env_value);
        if !serving.is_absolute() {
            return None;
        }
        Some(sys::notify_sibling(serving, child_uid).and_then(|b| {
            b.sock.set_nonblocking(true)?;
            Ok(NotifySocket {
                sock: tokio::net::UnixDatagram::from_std(b.sock)?,
                env_value: b.env_value,
                cleanup: b.cleanup,
            })
        }))
    }

    /// This socket now serves (the handover's new child is the serving
    /// one): the folders `old` was to remove at exit are this one's to
    /// remove, after the files of both.
    pub(crate) fn take_folders(&mut self, old: &mut NotifySocket) {
        let folders = old.cleanup.split_off(old.cleanup.len().min(1));
        self.cleanup.extend(folders);
    }

    /// What `reload` hands over: the descriptor and what the child knows.
    pub(crate) fn handover(&self) -> (std::os::fd::RawFd, String, Vec<PathBuf>) {
        use std::os::fd::AsRawFd;
        (
            self.sock.as_raw_fd(),
            self.env_value.clone(),
            self.cleanup.clone(),
        )
    }

    /// What is queued, read at one wake-up: waits without waking until a
    /// datagram comes, then takes it and whatever else is queued already,
    /// up to `NOTIFY_BATCH`, in the order sent. Never fatal for the socket:
    /// a `Rejected` is for the log only. Nothing is read after the first
    /// wait, so a batch is never half-taken when the caller stops waiting.
    pub(crate) async fn recv_batch(&self) -> Vec<Result<Notice, Rejected>> {
        // One byte more than the largest message, so one that fills the
        // buffer exactly is known to fit.
        let mut buf = [0u8; NOTIFY_MAX + 1];
        let first = self
            .sock
            .async_io(Interest::READABLE, || {
                sys::recv_notify(self.sock.as_fd(), &mut buf)
            })
            .await;
        let mut batch = Vec::new();
        match first {
            Ok(d) => batch.push(notice(d, &buf)),
            Err(e) => {
                tokio::time::sleep(AFTER_READ_ERROR).await;
                return vec![Err(Rejected::Io(e))];
            }
        }
        while batch.len() < NOTIFY_BATCH {
            let next = self.sock.try_io(Interest::READABLE, || {
                sys::recv_notify(self.sock.as_fd(), &mut buf)
            });
            match next {
                Ok(d) => batch.push(notice(d, &buf)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The next wake-up's first read meets it again, and waits.
                Err(e) => {
                    batch.push(Err(Rejected::Io(e)));
                    break;
                }
            }
        }
        batch
    }
}

/// At most this many datagrams are read per wake-up of the event loop:
/// what is queued is taken at once (the kernel queues only about ten per
/// socket, `net.unix.max_dgram_qlen`, so a child's `WATCHDOG=1` must find
/// room), and a sender that never stops still leaves the rest of the loop
/// its turn.
pub(crate) const NOTIFY_BATCH: usize = 64;

/// The message in `buf` that `d` describes, or why it was dropped.
fn notice(d: sys::NotifyDatagram, buf: &[u8]) -> Result<Notice, Rejected> {
    if d.truncated || d.len > NOTIFY_MAX {
        return Err(Rejected::Oversized {
            sender: d.sender,
            fds: d.fds,
        });
    }
    let mut notice = parse(&buf[..d.len], d.sender);
    notice.fds = d.fds;
    notice.uid = d.sender_uid;
    Ok(notice)
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        for path in &self.cleanup {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
        }
    }
}

/// `KEY=VALUE` lines; unknown keys are ignored, as systemd does. A message
/// with `BARRIER=1` is only a barrier.
pub(crate) fn parse(bytes: &[u8], sender: Option<i32>) -> Notice {
    let text = String::from_utf8_lossy(bytes);
    let mut n = Notice {
        sender,
        uid: None,
        ready: false,
        watchdog: false,
        status: None,
        barrier: false,
        fds: 0,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => n.ready = true,
            Some(("WATCHDOG", "1")) => n.watchdog = true,
            // Cleaned as it arrives: `status` shows it to people, often
            // at a terminal, so no escape sequence of the child's gets
            // there.
            Some(("STATUS", s)) => n.status = Some(crate::text::one_line(s, 512)),
            Some(("BARRIER", "1")) => n.barrier = true,
            _ => {}
        }
    }
    if n.barrier {
        // systemd (manager_process_barrier_fd): "nothing else must be sent
        // when using BARRIER=1"; such a datagram is dropped whole.
        n.ready = false;
        n.watchdog = false;
        n.status = None;
    }
    n
}

/// Where to connect to probe a service listening on `addr`: the wildcard
/// addresses are reached through loopback.
pub(crate) fn probe_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// GET `path` on `addr` through a real connection to the listening socket:
/// `Ok(status)` for a 2xx answer within `timeout`, else why not; and, with
/// `identify`, which process took the connection
/// (before the request is sent, so it is still holding it): during a
/// handover two children accept on the socket, and only an answer by the
/// new one says it is ready. `None` when that cannot be told (macOS, or
/// not accepted in time).
pub(crate) async fn probe_by(
    addr: SocketAddr,
    path: String,
    timeout: Duration,
    identify: bool,
) -> (Result<u16, String>, Option<i32>) {
    let mut by = None;
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if identify {
            by = accepted_by(&s).await;
        }
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: supervisor-health\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        status_code(&head)
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(code)) if (200..300).contains(&code) => Ok(code),
        Ok(Ok(code)) => Err(format!("GET {path} answered {code}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {}", crate::text::human(timeout))),
    };
    (result, by)
}

/// The process (one of our descendants) that accepted our connection `s`,
/// looked for until it has (a few milliseconds, bounded by the probe's
/// timeout around it).
async fn accepted_by(s: &tokio::net::TcpStream) -> Option<i32> {
    let (client, server) = (s.local_addr().ok()?, s.peer_addr().ok()?);
    let me = std::process::id() as i32;
    let mut gap = Duration::from_millis(1);
    loop {
        // Linux: the connection is in the kernel's table from its
        // handshake on, its socket named once taken; macOS: found among
        // our descendants' sockets once one has taken it.
        if let Some(id) = sys::accepted_socket(server, client) {
            if let Some(pid) = sys::socket_holders(id, sys::Scope::DescendantsOf(me))
                .into_iter()
                .next()
            {
                return Some(pid);
            }
        }
        tokio::time::sleep(gap).await;
        gap = (gap * 2).min(Duration::from_millis(20));
    }
}

/// The status code of an HTTP/1.x status line.
pub(crate) fn status_code(head: &[u8]) -> Result<u16, String> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") => Ok(code),
        _ if head.is_empty() => Err("connection closed without an answer".into()),
        _ => Err(format!("not an HTTP answer: {:?}", line.trim_end())),
    }
}

/// Tell the service manager that started us (systemd with `Type=notify`)
/// about our state: `READY=1` once the child is ready, `STOPPING=1`.
/// A no-op when `$NOTIFY_SOCKET` was not set for us.
pub(crate) fn tell_manager(socket: Option<&str>, message: &str) {
    if let Some(path) = socket {
        if let Ok(sock) = UnixDatagram::unbound() {
            let _ = sys::send_to_notify(&sock, path, message.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_messages() {
        let table: [(&str, bool, bool, Option<&str>); 8] = [
            ("READY=1", true, false, None),
            (
                "READY=1\nSTATUS=warming up\n",
                true,
                false,
                Some("warming up"),
            ),
            ("WATCHDOG=1", false, true, None),
            ("READY=0\nWATCHDOG=trigger", false, false, None),
            ("STATUS=", false, false, Some("")),
            ("garbage\u{0}\u{1}", false, false, None),
            ("BARRIER=1", false, false, None),
            ("READY=1\nBARRIER=1\nSTATUS=x", false, false, None),
        ];
        for (text, ready, watchdog, status) in table {
            let n = parse(text.as_bytes(), Some(7));
            assert_eq!(
                (n.ready, n.watchdog, n.status.as_deref()),
                (ready, watchdog, status),
                "{text:?}"
            );
            assert_eq!(n.barrier, text.contains("BARRIER=1"), "{text:?}");
        }
    }

    #[test]
    fn status_lines() {
        let table: [(&[u8], Result<u16, ()>); 5] = [
            (b"HTTP/1.1 200 OK\r\n", Ok(200)),
            (b"HTTP/1.0 503 Service Unavailable\r\n", Ok(503)),
            (b"HTTP/1.1 204", Ok(204)),
            (b"", Err(())),
            (b"SSH-2.0-OpenSSH\r\n", Err(())),
        ];
        for (head, want) in table {
            assert_eq!(status_code(head).map_err(|_| ()), want, "{head:?}");
        }
    }

    #[test]
    fn wildcards_are_probed_through_loopback() {
        let table = [
            ("0.0.0.0:80", "127.0.0.1:80"),
            ("[::]:80", "[::1]:80"),
            ("10.1.2.3:80", "10.1.2.3:80"),
        ];
        for (addr, want) in table {
            assert_eq!(probe_target(addr.parse().unwrap()), want.parse().unwrap());
        }
    }

    /// Linux: a handover's second socket says who sent each datagram, as
    /// the first does (SCM_CREDENTIALS): the driver tells the new child
    /// from a stranger by it, and once the new child serves, its socket
    /// is the serving one for good.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "current_thread")]
    async fn a_second_socket_says_who_sent_each_datagram() {
        let base = tempfile::tempdir().unwrap();
        let first = NotifySocket::bind(base.path(), None).unwrap();
        let second = first.sibling(None).unwrap().unwrap();
        let me = std::process::id() as i32;
        let uid = nix::unistd::geteuid().as_raw();
        for s in [&first, &second] {
            let d = UnixDatagram::unbound().unwrap();
            d.send_to(b"STATUS=hi", &s.env_value).unwrap();
            let batch = s.recv_batch().await;
            let n = batch[0].as_ref().unwrap();
            assert_eq!(
                (n.sender, n.uid, n.status.as_deref()),
                (Some(me), Some(uid), Some("hi")),
                "{}",
                s.env_value
            );
        }
    }

    /// A handover's second socket beside one in a private folder (a state
    /// folder too deep for `sun_path`): once it serves, the folder is its
    /// to remove, after the old child's file.
    #[tokio::test(flavor = "current_thread")]
    async fn the_serving_socket_removes_the_shared_folder_last() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("d".repeat(120));
        let mut first = NotifySocket::bind(&deep, None).unwrap();
        let folder = Path::new(&first.env_value).parent().unwrap().to_path_buf();
        assert!(folder.starts_with("/tmp"), "{folder:?}");
        let mut second = first.sibling(None).unwrap().unwrap();
        assert_eq!(
            Path::new(&second.env_value).parent(),
            Some(folder.as_path())
        );
        assert_ne!(second.env_value, first.env_value);
        // The switch: the new child's socket serves.
        second.take_folders(&mut first);
        std::mem::swap(&mut first, &mut second);
        let (serving, old) = (first.env_value.clone(), second.env_value.clone());
        drop(second);
        assert!(!Path::new(&old).exists());
        assert!(Path::new(&serving).exists());
        drop(first);
        assert!(!Path::new(&serving).exists());
        assert!(!folder.exists(), "{folder:?} left behind");
    }
}
