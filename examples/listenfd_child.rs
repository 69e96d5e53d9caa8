//! A small Rust service that takes its listening socket from the supervisor
//! with the `listenfd` crate (the systemd socket-activation protocol:
//! `LISTEN_FDS`, `LISTEN_PID`, fd 3) and never binds a port itself.
//!
//! Every request is answered with one plain-text line, "listenfd PID NAME",
//! where NAME is `LISTEN_FDNAMES` (or "-"). Extra arguments are ignored, so a
//! test can tag the process's command line.
//!
//! ```sh
//! cargo build --release --example listenfd_child
//! # config:  command = ["target/release/examples/listenfd_child"]
//! supervisor --config my.toml run
//! curl 127.0.0.1:8420
//! ```
//!
//! Without a handed-over socket it exits 2 with one line on stderr: falling
//! back to binding the port itself would bring back the very failure the
//! supervisor exists to prevent.
//!
//! On SIGTERM (the supervisor's stop signal) it finishes the request in
//! hand and exits 0; connections not yet accepted stay in the socket's
//! backlog, which the supervisor keeps open for the next child.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Blocks SIGTERM in every thread and starts one that waits for it, then
/// takes `busy` (so no request is cut in half) and exits 0.
fn exit_gracefully_on_sigterm(busy: Arc<Mutex<()>>) {
    // SAFETY: plain libc signal-set calls on a local, initialised sigset_t;
    // done before any other thread exists, so every thread inherits the mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: sigwait on the set blocked above, into a local int.
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 || sig != libc::SIGTERM {}
        let _held = busy.lock();
        println!("listenfd_child {} stopping", std::process::id());
        std::process::exit(0);
    });
}

fn main() -> ExitCode {
    // Read before listenfd consumes LISTEN_PID / LISTEN_FDS.
    let name = std::env::var("LISTEN_FDNAMES").unwrap_or_else(|_| "-".into());
    let mut fds = listenfd::ListenFd::from_env();
    let listener: TcpListener = match fds.take_tcp_listener(0) {
        Ok(Some(l)) => l,
        Ok(None) => {
            eprintln!("listenfd_child: no socket handed over (run me under `supervisor run`)");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("listenfd_child: fd 3 is not a TCP listener: {e}");
            return ExitCode::from(2);
        }
    };
    // The supervisor hands the socket over in blocking mode; say so anyway.
    if let Err(e) = listener.set_nonblocking(false) {
        eprintln!("listenfd_child: cannot make the socket blocking: {e}");
        return ExitCode::from(1);
    }
    let busy = Arc::new(Mutex::new(()));
    exit_gracefully_on_sigterm(busy.clone());
    let pid = std::process::id();
    match listener.local_addr() {
        Ok(a) => println!("listenfd_child {pid} serving on {a} ({name})"),
        Err(e) => println!("listenfd_child {pid} serving ({name}; no address: {e})"),
    }
    let reply = format!("listenfd {pid} {name}\n");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let _serving = busy.lock();
                if let Err(e) = answer(stream, &reply) {
                    eprintln!("listenfd_child: request failed: {e}");
                }
            }
            Err(e) => eprintln!("listenfd_child: accept failed: {e}"),
        }
    }
    ExitCode::SUCCESS
}

/// Reads the request head (to the blank line, or the first line of a bare
/// "ping"), then writes a minimal HTTP/1.0 response and closes.
fn answer(stream: TcpStream, body: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.starts_with("GET ") || line.starts_with("HEAD ") || line.starts_with("POST ") {
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
        }
    }
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}
