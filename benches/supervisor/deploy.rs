//! A deploy under load (issue 21): a child that takes 1 s to become ready
//! (READY=1), a client connecting every ~1 ms, n `supervisor restart`s in a
//! row, with `[restart] overlap` and stop-first side by side: refused,
//! reset, p99 and max client latency (each connection, connect to answer),
//! beside the steady state's p99 before the restarts.

use crate::services::{ms, root, serving, start, Job, OurOpts, Svc, RESTART_FAST};
use crate::table::Table;
use crate::{Counts, BIN};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const READY: OurOpts = OurOpts {
    sections: "\n[health]\nnotify = true\nstart_timeout = \"20s\"\n",
    ..RESTART_FAST
};

const OVERLAP: OurOpts = OurOpts {
    restart_extra: "overlap = true\n",
    ..READY
};

/// Every connection's outcome and wait.
#[derive(Default)]
struct Seen {
    ok: u64,
    refused: u64,
    reset: u64,
    waits: Vec<f64>,
}

struct Client {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    handle: thread::JoinHandle<()>,
}

impl Client {
    fn start(addr: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let handle = {
            let (stop, seen) = (stop.clone(), seen.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    let r = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).and_then(
                        |mut s| {
                            s.set_read_timeout(Some(Duration::from_secs(10)))?;
                            let mut buf = String::new();
                            s.read_to_string(&mut buf)?;
                            match buf.trim().parse::<u32>() {
                                Ok(_) => Ok(()),
                                Err(_) => Err(io::Error::from(io::ErrorKind::ConnectionReset)),
                            }
                        },
                    );
                    let wait = ms(t.elapsed());
                    let mut s = seen.lock().unwrap();
                    match r {
                        Ok(()) => {
                            s.ok += 1;
                            s.waits.push(wait);
                        }
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => s.refused += 1,
                        Err(_) => s.reset += 1,
                    }
                    drop(s);
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Client { stop, seen, handle }
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn p99(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

/// One configuration: (steady p99, deploy seen, restarts that exited 0).
fn run(opts: &OurOpts, restarts: usize) -> (f64, Seen, usize) {
    let sup: Svc = start(
        crate::services::Kind::Ours,
        &Job::ServeReady(1000),
        opts,
        &root(),
    );
    let config = sup.dir.join("supervisor.toml");
    // Ready: `restart` answers only once a child is.
    let _ = serving(sup.addr, 0, Duration::from_secs(30));
    let steady = Client::start(sup.addr);
    thread::sleep(Duration::from_secs(2));
    let mut steady = steady.finish();
    let steady_p99 = p99(&mut steady.waits);
    let client = Client::start(sup.addr);
    let mut ok = 0;
    for _ in 0..restarts {
        let status = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("restart")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if status.is_ok_and(|s| s.success()) {
            ok += 1;
        }
    }
    thread::sleep(Duration::from_millis(200));
    let seen = client.finish();
    drop(sup);
    (steady_p99, seen, ok)
}

fn cell(steady: f64, seen: &mut Seen, ok: usize, n: usize) -> String {
    let max = seen.waits.iter().copied().fold(0.0, f64::max);
    format!(
        "{} refused, {} reset, {} answered; p99 {:.1} ms, max {:.1} ms (steady p99 {:.2} ms); {ok} of {n} restarts exited 0",
        seen.refused,
        seen.reset,
        seen.ok,
        p99(&mut seen.waits),
        max,
        steady
    )
}

pub(crate) fn deploy(n: &Counts, table: &mut Table) {
    eprintln!("deploy ...");
    let fig = "deploy under load: child ready 1 s after start, a client every ~1 ms, n restarts: refused, reset, p99 and max client latency";
    let (steady, mut seen, ok) = run(&OVERLAP, n.deploys);
    let max = seen.waits.iter().copied().fold(0.0, f64::max);
    let met = seen.refused == 0 && seen.reset == 0 && ok == n.deploys && max <= 2.0 * steady;
    let ours = format!("overlap: {}", cell(steady, &mut seen, ok, n.deploys));
    let (s_steady, mut s_seen, s_ok) = run(&READY, n.deploys);
    let beside = format!(
        "stop-first: {}",
        cell(s_steady, &mut s_seen, s_ok, n.deploys)
    );
    table.add(
        fig,
        ours,
        beside,
        "0 refused, 0 reset, max latency within 2× the steady p99 (overlap)",
        Some(met),
    );
}
