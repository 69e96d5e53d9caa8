//! Talking to the supervised port: one request, one HTTP GET, a client
//! hammering it from a thread ([`Hammer`]), and waiting until the child
//! named by `status` answers itself.

use super::{secs, Env, DEADLINE};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One request: connect, send `ping`, read the reply to EOF.
pub fn request(addr: SocketAddr, timeout: Duration) -> io::Result<String> {
    exchange(addr, "ping", timeout)
}

/// Connect, send `line` and a newline in one write (a child reads one
/// segment, and bytes it leaves unread at its close would reset the
/// connection), read the reply to EOF.
pub fn exchange(addr: SocketAddr, line: &str, timeout: Duration) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// One HTTP/1.0 GET: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // One write: a server that answers after its first read and closes
    // would otherwise reset the rest of a request written in pieces.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    // A server killed mid-answer closes after the head: a cut answer is
    // an error, not an empty body.
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    if let Some(n) = length.filter(|&n| body.len() < n) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("HTTP body cut short: {} of {n} bytes: {text:?}", body.len()),
        ));
    }
    Ok((code, body.to_string()))
}

/// What a [`Hammer`] saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Answers with status 200, by body.
    pub ok: BTreeMap<String, usize>,
    /// Connections refused: the port was not listening. Must stay 0.
    pub refused: usize,
    /// Anything else (a reset or EOF from a child dying mid-request).
    pub errors: Vec<String>,
}

impl Tally {
    pub fn total_ok(&self) -> usize {
        self.ok.values().sum()
    }

    /// Successful answers whose body contains `needle`.
    pub fn ok_with(&self, needle: &str) -> usize {
        self.ok
            .iter()
            .filter(|(b, _)| b.contains(needle))
            .map(|(_, n)| n)
            .sum()
    }
}

/// A client sending GET / back to back from a thread, bounded in count and
/// time, until stopped.
pub struct Hammer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Hammer {
    pub fn start(addr: SocketAddr) -> Hammer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (s, t) = (stop.clone(), tally.clone());
        let thread = thread::spawn(move || {
            let start = Instant::now();
            for _ in 0..20_000 {
                if s.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let r = http_get(addr, "/", Duration::from_secs(10));
                let mut t = t.lock().unwrap();
                match r {
                    Ok((200, body)) => *t.ok.entry(body.trim().to_string()).or_default() += 1,
                    Ok((code, body)) => t.errors.push(format!("HTTP {code}: {body}")),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => t.refused += 1,
                    Err(e) => t.errors.push(format!("{:?}: {e}", e.kind())),
                }
            }
        });
        Hammer {
            stop,
            tally,
            thread: Some(thread),
        }
    }

    /// What it saw so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Stops the loop and returns what it saw.
    pub fn finish(mut self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.tally()
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Waits until `status` names a running child (other than those in `not`)
/// that itself answers `GET /`; `check(pid, body)` decides whether the
/// answer is that child's and returns what the test wants from it.
pub fn wait_serving<T>(
    env: &Env,
    not: &[i32],
    what: &str,
    check: impl Fn(i32, &str) -> Option<T>,
) -> (i32, T) {
    env.wait_value(
        &format!("{what} other than {not:?} serving"),
        DEADLINE,
        || {
            let (_, v) = env.status_json();
            let pid = v["child"]["pid"].as_i64()? as i32;
            if v["state"] != "running" || not.contains(&pid) {
                return None;
            }
            let (code, body) = http_get(env.addr(), "/", secs(2.0)).ok()?;
            let found = (code == 200).then(|| check(pid, &body)).flatten()?;
            Some((pid, found))
        },
    )
}
