//! A deploy under load (issue 21): a child that takes 1 s to become ready
//! (READY=1), a client connecting every ~1 ms, n `supervisor restart`s in a
//! row, with `[restart] overlap` and stop-first side by side: refused,
//! reset, p99 and max client latency (each connection, connect to answer),
//! beside the steady state's p99 and max before the restarts, over as long
//! a window as the restarts take (a max is the tail of however many
//! samples there are: compared over equal windows it tells what the
//! restarts add to what the machine does anyway).
//! `SUPERVISOR_BENCH_DEPLOY_TRACE=1` prints the ten longest waits, each
//! placed in its restart, and the supervisor's own CPU time.

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
    /// (when it connected, ms since the client started; its wait).
    at: Vec<(f64, f64)>,
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
                let epoch = Instant::now();
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
                            s.at.push((ms(t - epoch), wait));
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

/// The steady state before the restarts: p99 and max.
#[derive(Clone, Copy)]
struct Steady {
    p99: f64,
    max: f64,
}

/// How each restart is asked for.
#[derive(Clone, Copy, PartialEq)]
enum Ask {
    /// `supervisor restart`, which waits for the outcome (what a deploy
    /// script runs).
    Command,
    /// SIGUSR1 from the bench itself, then the outcome read from
    /// state.json every 20 ms as `restart` does: the same handover with
    /// no command started on the machine's two cores meanwhile.
    Signal,
}

/// The outcome number of the last restart in state.json, and whether it
/// went well.
fn last_restart(state: &std::path::Path) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(state).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let r = v.get("supervisor")?.get("restart")?;
    Some((r.get("seq")?.as_u64()?, r.get("ok")?.as_bool()?))
}

/// SIGUSR1 to the supervisor, then wait (up to 30 s) for the outcome of
/// the restart numbered after `before`: did it go well.
fn restart_by_signal(pid: u32, state: &std::path::Path) -> bool {
    let before = last_restart(state).map_or(0, |(seq, _)| seq);
    let target = nix::unistd::Pid::from_raw(pid as i32);
    if nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGUSR1).is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match last_restart(state) {
            Some((seq, ok)) if seq > before => return ok,
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

/// One configuration: (steady state, deploy seen, restarts that exited 0).
fn run(opts: &OurOpts, restarts: usize, ask: Ask) -> (Steady, Seen, usize) {
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
    // As long as the restarts take (each ~1 s: the child's start-up).
    thread::sleep(Duration::from_millis(1050 * restarts.max(2) as u64));
    let mut steady = steady.finish();
    let steady = Steady {
        max: steady.waits.iter().copied().fold(0.0, f64::max),
        p99: p99(&mut steady.waits),
    };
    let cpu_before = own_cpu_ms(sup.pid());
    let client = Client::start(sup.addr);
    let epoch = Instant::now();
    let epoch_mono = mono_ms();
    let mut marks = Vec::new();
    let mut ok = 0;
    for _ in 0..restarts {
        let began = ms(epoch.elapsed());
        if ask == Ask::Signal {
            if restart_by_signal(sup.pid(), &sup.dir.join("run/state.json")) {
                ok += 1;
            }
            marks.push((began, ms(epoch.elapsed())));
            continue;
        }
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
        marks.push((began, ms(epoch.elapsed())));
    }
    thread::sleep(Duration::from_millis(200));
    let seen = client.finish();
    if std::env::var_os("SUPERVISOR_BENCH_DEPLOY_TRACE").is_some() {
        let cpu = own_cpu_ms(sup.pid()) - cpu_before;
        eprintln!(
            "  supervisor's own CPU over the {restarts} restarts: {cpu:.0} ms ({:.1} ms each)",
            cpu / restarts.max(1) as f64
        );
        trace(&seen, &marks, &sup.dir, epoch_mono);
    }
    drop(sup);
    (steady, seen, ok)
}

/// The ten longest waits, each placed against the restart it fell in
/// (ms after `restart` began, ms before it returned), and the
/// supervisor's log lines of the handovers.
fn trace(seen: &Seen, marks: &[(f64, f64)], dir: &std::path::Path, epoch_mono: f64) {
    let mut top = seen.at.clone();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (at, wait) in top.iter().take(10) {
        let place = marks
            .iter()
            .enumerate()
            .find(|(_, (b, e))| at >= b && at <= e)
            .map_or("between restarts".to_owned(), |(i, (b, e))| {
                format!("restart {i}: +{:.1} ms, -{:.1} ms", at - b, e - at)
            });
        eprintln!(
            "  wait {wait:.3} ms at {at:.1} ms ({place}; CLOCK_MONOTONIC {:.6} s)",
            (epoch_mono + at) / 1000.0
        );
    }
    for (i, (b, e)) in marks.iter().enumerate() {
        eprintln!("  restart {i}: {b:.1} .. {e:.1} ms");
    }
    let log = std::fs::read_to_string(dir.join("logs/supervisor.log")).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("handover")).take(8) {
        eprintln!("  {l}");
    }
}

/// CLOCK_MONOTONIC now, in ms (what `perf record -k CLOCK_MONOTONIC`
/// stamps its events with, so a long wait can be found in a trace).
fn mono_ms() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0.0, |t| {
        t.tv_sec() as f64 * 1000.0 + t.tv_nsec() as f64 / 1e6
    })
}

/// utime + stime of `pid` itself, in ms (Linux; 0 elsewhere).
fn own_cpu_ms(pid: u32) -> f64 {
    let ticks: u64 = (13..=14)
        .filter_map(|i| crate::procs::stat_field(pid, i))
        .sum();
    ticks as f64 * 10.0
}

fn cell(steady: Steady, seen: &mut Seen, ok: usize, n: usize) -> String {
    let max = seen.waits.iter().copied().fold(0.0, f64::max);
    format!(
        "{} refused, {} reset, {} answered; p99 {:.2} ms, max {:.2} ms (steady p99 {:.2} ms, max {:.2} ms over as long); {ok} of {n} restarts exited 0",
        seen.refused,
        seen.reset,
        seen.ok,
        p99(&mut seen.waits),
        max,
        steady.p99,
        steady.max
    )
}

pub(crate) fn deploy(n: &Counts, table: &mut Table) {
    eprintln!("deploy ...");
    let fig = "deploy under load: child ready 1 s after start, a client every ~1 ms, n restarts: refused, reset, p99 and max client latency";
    if std::env::var_os("SUPERVISOR_BENCH_DEPLOY_SIGNAL").is_some() {
        let (steady, mut seen, ok) = run(&OVERLAP, n.deploys, Ask::Signal);
        eprintln!("  by signal: {}", cell(steady, &mut seen, ok, n.deploys));
    }
    let (steady, mut seen, ok) = run(&OVERLAP, n.deploys, Ask::Command);
    let max = seen.waits.iter().copied().fold(0.0, f64::max);
    let met = seen.refused == 0 && seen.reset == 0 && ok == n.deploys && max <= 2.0 * steady.p99;
    let ours = format!("overlap: {}", cell(steady, &mut seen, ok, n.deploys));
    let (s_steady, mut s_seen, s_ok) = run(&READY, n.deploys, Ask::Command);
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
