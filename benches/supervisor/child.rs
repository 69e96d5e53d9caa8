//! The supervised child: this very executable re-run as `child MODE ...`
//! (serve on fd 3 or on a port of its own, write lines, or crash at once).

use crate::LINE;
use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::net::TcpListener;
use std::os::fd::FromRawFd;
use std::thread;
use std::time::Duration;

pub(crate) fn child_main(args: &[String]) {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "serve-fd3" => serve(fd3()),
        "serve-ready" => {
            let l = fd3();
            thread::sleep(Duration::from_millis(arg(1).parse().expect("ms")));
            notify_ready();
            serve_draining(l)
        }
        "serve-bind" => serve(TcpListener::bind(arg(1).as_str()).expect("bind")),
        "spew-fd3" => spew_on_request(fd3(), arg(1).parse().expect("bytes")),
        "spew-bind" => spew_on_request(
            TcpListener::bind(arg(1).as_str()).expect("bind"),
            arg(2).parse().expect("bytes"),
        ),
        "spew" => spew(arg(1).parse().expect("bytes")),
        "crash" => {
            let _ = io::stderr().write_all(b"bench child: cannot start, exiting at once\n");
            std::process::exit(1);
        }
        other => panic!("unknown child mode {other:?}"),
    }
}

pub(crate) fn fd3() -> TcpListener {
    assert_eq!(
        std::env::var("LISTEN_FDS").as_deref(),
        Ok("1"),
        "no LISTEN_FDS"
    );
    // SAFETY: the supervisor (or systemd-socket-activate) hands us a
    // listening socket as fd 3, which nothing else in this process owns.
    unsafe { TcpListener::from_raw_fd(3) }
}

/// READY=1 to `$NOTIFY_SOCKET` (an abstract name on Linux, `@...`).
fn notify_ready() {
    use std::os::unix::net::UnixDatagram;
    let Ok(addr) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    #[cfg(target_os = "linux")]
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(a) = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            let _ = sock.send_to_addr(b"READY=1", &a);
        }
        return;
    }
    let _ = sock.send_to(b"READY=1", &addr);
}

/// [`serve`], but on SIGTERM as a graceful server: it takes no connection
/// after the signal and exits once the one it took is answered. One
/// thread does both, looking at the flag between connections (poll wakes
/// it every 5 ms), so a connection taken is never dropped unanswered (an
/// exit from another thread could land between `accept` and the answer:
/// a reset). The socket stays blocking: its flags are shared with the
/// other child of a handover.
fn serve_draining(l: TcpListener) {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let term = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone());
    let reply = format!("{}\n", std::process::id());
    loop {
        if term.load(Ordering::SeqCst) {
            std::process::exit(0);
        }
        let mut pfd = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length of the call.
        if unsafe { libc::poll(&mut pfd, 1, 5) } <= 0 || term.load(Ordering::SeqCst) {
            continue;
        }
        // The other child may take it first: then this waits for the
        // next one (a client every ~1 ms) and answers that.
        if let Ok((mut c, _)) = l.accept() {
            let _ = c.write_all(reply.as_bytes());
        }
    }
}

/// Answer every connection with our pid and a newline.
pub(crate) fn serve(l: TcpListener) {
    let reply = format!("{}\n", std::process::id());
    for mut c in l.incoming().flatten() {
        let _ = c.write_all(reply.as_bytes());
    }
}

/// Wait for one connection, then write `bytes` of lines and stay alive, so
/// the supervisor does not restart us while the log drains.
pub(crate) fn spew_on_request(l: TcpListener, bytes: usize) {
    if let Ok((mut c, _)) = l.accept() {
        let _ = c.write_all(b"go\n");
    }
    spew(bytes);
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

pub(crate) fn spew(bytes: usize) {
    let mut line = [b'x'; LINE];
    line[LINE - 1] = b'\n';
    let per_write = 655;
    let chunk: Vec<u8> = line.repeat(per_write);
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop
    // keeps the File from closing it. Unbuffered: each write is 64 KB.
    let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let mut lines = bytes / LINE;
    while lines > 0 {
        let k = lines.min(per_write);
        out.write_all(&chunk[..k * LINE]).expect("write stdout");
        lines -= k;
    }
}
