//! Handover (`[restart] overlap`): the new child is ready before the old
//! one stops. Real processes: `handover.py` takes its time to become ready
//! (READY=1), serves HTTP from threads and drains on SIGTERM; a client
//! connects every few milliseconds throughout and measures each wait.

mod common;

use common::*;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the client loop saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    ok: usize,
    refused: usize,
    reset: usize,
    other: Vec<String>,
    /// The longest wait for one answer, connect to the last byte.
    longest: Duration,
    /// The pids that answered.
    pids: Vec<i32>,
}

/// A client connecting every `every` (each request on its own thread, as
/// independent clients would), until stopped.
struct Clients {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<thread::JoinHandle<()>>,
}

fn get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let timeout = Duration::from_secs(15);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    match buf.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.trim().to_string()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer {buf:?}"),
        )),
    }
}

impl Clients {
    fn start(addr: SocketAddr, every: Duration) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s, t) = (stop.clone(), seen.clone());
        let thread = thread::spawn(move || {
            let inflight = Arc::new(AtomicUsize::new(0));
            let mut handles = Vec::new();
            while !s.load(Ordering::Relaxed) {
                // Bounded: a stalled service must not pile up threads.
                if inflight.load(Ordering::Relaxed) < 200 {
                    let (t, inflight) = (t.clone(), inflight.clone());
                    inflight.fetch_add(1, Ordering::Relaxed);
                    handles.push(thread::spawn(move || {
                        let began = Instant::now();
                        let r = get(addr, "/");
                        let took = began.elapsed();
                        let mut t = t.lock().unwrap();
                        t.longest = t.longest.max(took);
                        match r {
                            Ok(body) => {
                                t.ok += 1;
                                if let Ok(pid) = body.parse::<i32>() {
                                    if !t.pids.contains(&pid) {
                                        t.pids.push(pid);
                                    }
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                                t.refused += 1
                            }
                            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => t.reset += 1,
                            Err(e) => t.other.push(format!("{:?}: {e}", e.kind())),
                        }
                        inflight.fetch_sub(1, Ordering::Relaxed);
                    }));
                }
                handles.retain(|h| !h.is_finished());
                thread::sleep(every);
            }
            for h in handles {
                let _ = h.join();
            }
        });
        Clients {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Samples how many of the test's children are alive, until stopped.
struct Census {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Census {
    fn start(script: String, dir: String) -> Census {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let (s, m) = (stop.clone(), most.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let n = all_pids()
                    .into_iter()
                    .filter(|&p| {
                        let argv = cmdline(p);
                        pid_alive(p)
                            && argv.iter().any(|a| a == &script)
                            && argv.iter().any(|a| a == &dir)
                    })
                    .count();
                m.fetch_max(n, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
        });
        Census {
            stop,
            most,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.most.load(Ordering::Relaxed)
    }
}

fn setup(ready_after: &str, overlap: bool) -> Env {
    Setup::new("handover.py")
        .arg("ready")
        .arg(ready_after)
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "10s")
        .set("child", "stop_timeout", "5s")
        .raw("restart", "overlap", if overlap { "true" } else { "false" })
        .build()
}

/// Waits for the first child to be running and ready.
fn first_ready(env: &Env) -> i32 {
    env.wait_value("the first child ready", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running" && v["child"]["ready"] == true)
            .then(|| v["child"]["pid"].as_i64().map(|p| p as i32))
            .flatten()
    })
}

/// `restart` three times under the client loop: what the clients saw and
/// the most children alive at once.
fn three_restarts(env: &Env) -> (Seen, usize, Vec<i32>) {
    let first = first_ready(env);
    let census = Census::start(env.script.clone(), env.dir_s.clone());
    let clients = Clients::start(env.addr(), Duration::from_millis(5));
    thread::sleep(Duration::from_millis(300));
    let mut served = vec![first];
    for _ in 0..3 {
        let out = env.cli_with(&env.config, &["restart"], secs(60.0));
        if out.code != Some(0) {
            env.fail(format!("restart did not exit 0:\n{out}"));
        }
        let pid = env.child_pid().unwrap_or(0);
        served.push(pid);
        thread::sleep(Duration::from_millis(300));
    }
    let seen = clients.finish();
    (seen, census.finish(), served)
}

#[test]
fn overlapped_restarts_make_clients_wait_no_longer_than_stop_first_ones() {
    // The control first: stop-first restarts stall clients for the new
    // child's whole start-up (1.5 s).
    let control = setup("1.5", false);
    let _sup = control.spawn();
    let (before, _, _) = three_restarts(&control);
    if before.longest < Duration::from_millis(1000) {
        control.fail(format!(
            "the control should stall clients for the start-up: {before:?}"
        ));
    }
    drop(_sup);

    let env = setup("1.5", true);
    let _sup = env.spawn();
    let (seen, most, served) = three_restarts(&env);
    let ctx = format!("overlap: {seen:?}\ncontrol: {before:?}\nmost children: {most}");
    eprintln!("{ctx}");
    if seen.refused != 0 || seen.reset != 0 || !seen.other.is_empty() {
        env.fail(format!("clients refused, reset or failed\n{ctx}"));
    }
    // The bound: well under the start-up, and under half the control's
    // stall (on a loaded 2-core machine a thread may wait its turn for a
    // while; a stall for the start-up would be 1.5 s or more).
    if seen.longest >= Duration::from_millis(500) || seen.longest * 2 >= before.longest {
        env.fail(format!("a client waited too long\n{ctx}"));
    }
    if most > 2 {
        env.fail(format!("more than two children alive at once\n{ctx}"));
    }
    // Every new child answered, and each restart brought a new one.
    for pid in &served {
        if !seen.pids.contains(pid) {
            env.fail(format!(
                "child {pid} never answered (served {served:?})\n{ctx}"
            ));
        }
    }
    let mut distinct = served.clone();
    distinct.dedup();
    if distinct.len() != 4 {
        env.fail(format!(
            "want four different children, got {served:?}\n{ctx}"
        ));
    }
    if env.child_processes().len() != 1 {
        env.fail(format!("want one child left\n{ctx}"));
    }
}
