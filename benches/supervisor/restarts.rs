//! The restart figures: a losing copy's exit, the restart latency, and
//! connections refused across restarts.

use crate::procs::{alive, kill};
use crate::services::{
    command, free_addr, ms, probe, root, sd_activate_argv, serving, start, wait_for, Job, Kind,
    Peers, PlainLoop, Probe, Svc, RESTART_FAST,
};
use crate::table::{show, Stats, Table};
use crate::Counts;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub(crate) fn time_exit(mut cmd: Command, n: usize) -> (Option<Stats>, Option<i32>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut v = Vec::new();
    let mut code = None;
    for _ in 0..n {
        let t = Instant::now();
        let st = cmd.status();
        v.push(ms(t.elapsed()));
        code = st.ok().and_then(|s| s.code());
    }
    (Stats::new(v), code)
}

pub(crate) fn losing_copy(n: &Counts, peers: &Peers, table: &mut Table) {
    eprintln!("losing-copy exit ...");
    let root = root();
    let holder = start(Kind::Ours, &Job::Serve, &RESTART_FAST, &root);
    let ok = serving(holder.addr, 0, Duration::from_secs(20)).is_some();
    let cmd = command(Kind::Ours, &Job::Serve, &holder.dir, holder.addr);
    let (ours, code) = time_exit(cmd, n.losing);
    let (truth, _) = time_exit(Command::new("/bin/true"), n.losing);
    let held = holder.proc.id();
    let still = alive(held) && serving(holder.addr, 0, Duration::from_secs(2)).is_some();
    drop(holder);
    let met = match (&ours, &truth) {
        (Some(o), Some(t)) => Some(
            ok && still && code == Some(0) && o.median() < 2.0 && o.median() <= 3.0 * t.median(),
        ),
        _ => None,
    };
    let ratio = match (&ours, &truth) {
        (Some(o), Some(t)) => format!("; {:.1}x", o.median() / t.median()),
        _ => String::new(),
    };
    table.add(
        "losing-copy exit, ms",
        format!(
            "{} (exit {})",
            show(&ours, 2),
            code.map_or("?".into(), |c| c.to_string())
        ),
        format!("/bin/true {}{ratio}", show(&truth, 2)),
        "< 2 ms and ≤ 3x /bin/true",
        met,
    );
    let mut medians = std::collections::BTreeMap::new();
    for k in peers.each(&[
        Kind::Static,
        Kind::Supervisord,
        Kind::Runsv,
        Kind::S6,
        Kind::SdActivate,
    ]) {
        let h = start(k, &Job::Serve, &RESTART_FAST, &root);
        if serving(h.addr, 0, Duration::from_secs(20)).is_none() {
            table.peer("losing-copy exit, ms", k, "did not start".into());
            continue;
        }
        let mut cmd = command(k, &Job::Serve, &h.dir, h.addr);
        cmd.current_dir(&h.dir);
        let reps = match k {
            Kind::Static | Kind::S6 => n.losing,
            _ => n.losing.min(10),
        };
        let (s, code) = time_exit(cmd, reps);
        if let Some(m) = s.as_ref().map(Stats::median) {
            medians.insert(k, m);
        }
        let cell = format!(
            "{} (exit {})",
            show(&s, 1),
            code.map_or("?".into(), |c| c.to_string())
        );
        table.peer("losing-copy exit, ms", k, cell);
    }
    // The static build, the container artifact: no slower than s6-supervise.
    // Head to head: the two taken in turn, many times, so that what the
    // machine does meanwhile falls on both alike (the per-peer cells above
    // are taken one after the other, 30 each, and drift by ±0.1 ms).
    if medians.contains_key(&Kind::Static) {
        let duel = if medians.contains_key(&Kind::S6) {
            head_to_head(Kind::Static, Kind::S6, n.losing * 10, &root)
        } else {
            None
        };
        let st = duel
            .as_ref()
            .map_or(medians[&Kind::Static], |d| d.0.median());
        table.add(
            "static (musl) build: losing-copy exit, ms",
            format!("{st:.2}"),
            duel.as_ref().map_or("s6-supervise not installed".into(), |(a, b)| {
                format!(
                    "s6-supervise {:.2} (taken in turn, n={} each; p10 {:.2} against {:.2}); glibc build {}",
                    b.median(),
                    a.v.len(),
                    a.v[a.v.len() / 10],
                    b.v[b.v.len() / 10],
                    show(&ours, 2)
                )
            }),
            "≤ s6-supervise's",
            duel.map(|(a, b)| a.median() <= b.median()),
        );
    }
}

/// Losing copies of `a` and `b`, each beside a holder of its own, timed in
/// turn `n` times (the order swapped every round).
fn head_to_head(a: Kind, b: Kind, n: usize, root: &std::path::Path) -> Option<(Stats, Stats)> {
    let ha = start(a, &Job::Serve, &RESTART_FAST, root);
    let hb = start(b, &Job::Serve, &RESTART_FAST, root);
    serving(ha.addr, 0, Duration::from_secs(20))?;
    serving(hb.addr, 0, Duration::from_secs(20))?;
    let prepare = |k: Kind, h: &Svc| {
        let mut cmd = command(k, &Job::Serve, &h.dir, h.addr);
        cmd.current_dir(&h.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    let (mut ca, mut cb) = (prepare(a, &ha), prepare(b, &hb));
    let once = |cmd: &mut Command| {
        let t = Instant::now();
        let _ = cmd.status();
        ms(t.elapsed())
    };
    let (mut va, mut vb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        if i % 2 == 0 {
            va.push(once(&mut ca));
            vb.push(once(&mut cb));
        } else {
            vb.push(once(&mut cb));
            va.push(once(&mut ca));
        }
    }
    Some((Stats::new(va)?, Stats::new(vb)?))
}

/// SIGKILL the serving child after it has served for `healthy`; time until
/// a new child answers; `note` learns every pid that answered.
pub(crate) fn latencies(
    addr: SocketAddr,
    n: usize,
    healthy: Duration,
    note: &dyn Fn(u32),
) -> Option<Stats> {
    let mut v = Vec::new();
    for _ in 0..n {
        let Some(pid) = serving(addr, 0, Duration::from_secs(20)) else {
            break;
        };
        note(pid);
        thread::sleep(healthy);
        let t0 = Instant::now();
        kill(pid, libc::SIGKILL);
        let deadline = t0 + Duration::from_secs(15);
        let mut got = None;
        while Instant::now() < deadline {
            match probe(addr, Duration::from_secs(10)) {
                Probe::Pid(p) if p != pid => {
                    got = Some(p);
                    break;
                }
                Probe::Refused => thread::sleep(Duration::from_micros(100)),
                _ => {}
            }
        }
        if got.is_none() {
            break;
        }
        v.push(ms(t0.elapsed()));
    }
    Stats::new(v)
}

pub(crate) fn restart_latency(n: &Counts, peers: &Peers, table: &mut Table) {
    eprintln!("restart latency ...");
    let root = root();
    let healthy = Duration::from_millis(150);
    let sup = start(Kind::Ours, &Job::Serve, &RESTART_FAST, &root);
    let ours = latencies(sup.addr, n.latency, healthy, &|p| sup.note(p));
    drop(sup);
    let addr = free_addr();
    let plain = PlainLoop::start(Job::Serve.argv(false, addr), addr);
    let direct = latencies(plain.addr, n.latency, healthy, &|_| {});
    drop(plain);
    let over = match (&ours, &direct) {
        (Some(o), Some(d)) => Some(o.median() - d.median()),
        _ => None,
    };
    table.add(
        "restart latency, ms (SIGKILL → new child's first answer)",
        show(&ours, 2),
        format!(
            "plain loop {}; overhead {}",
            show(&direct, 2),
            over.map_or("?".into(), |o| format!("{o:+.2} ms"))
        ),
        "overhead < 2 ms",
        over.map(|o| o < 2.0),
    );
    for k in peers.each(&[Kind::Supervisord, Kind::Runsv, Kind::S6]) {
        let s = start(k, &Job::Serve, &RESTART_FAST, &root);
        let st = latencies(s.addr, n.peer_latency, Duration::from_millis(1100), &|p| {
            s.note(p)
        });
        table.peer(
            "restart latency, ms (SIGKILL → new child's first answer)",
            k,
            show(&st, 1),
        );
    }
    if peers.has(Kind::SdActivate) {
        let addr = free_addr();
        let l = PlainLoop::start(sd_activate_argv(&Job::Serve, addr), addr);
        let st = latencies(l.addr, n.peer_latency.max(5), healthy, &|_| {});
        drop(l);
        table.peer(
            "restart latency, ms (SIGKILL → new child's first answer)",
            Kind::SdActivate,
            format!("{} (plain loop)", show(&st, 2)),
        );
    }
}

/// Counts of a client that connects every ~1 ms across `n` restarts, each
/// after the child has served for `serve_for`.
pub(crate) struct Refusals {
    pub(crate) per_restart: Option<Stats>,
    pub(crate) refused: u64,
    pub(crate) reset: u64,
    pub(crate) ok: u64,
    pub(crate) restarts: usize,
}

pub(crate) fn refusals(
    addr: SocketAddr,
    n: usize,
    serve_for: Duration,
    note: &dyn Fn(u32),
) -> Refusals {
    // Count from the first answer on: a service still starting is not a
    // restart.
    serving(addr, 0, Duration::from_secs(20));
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU32::new(0));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let client = {
        let (stop, last, counts) = (stop.clone(), last.clone(), counts.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let i = match probe(addr, Duration::from_secs(10)) {
                    Probe::Pid(p) => {
                        last.store(p, Ordering::SeqCst);
                        0
                    }
                    Probe::Refused => 1,
                    Probe::Other => 2,
                };
                counts[i].fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut per = Vec::new();
    let mut prev_pid = 0;
    let mut restarts = 0;
    let mut mark = 0;
    for _ in 0..=n {
        let fresh = || {
            let p = last.load(Ordering::SeqCst);
            p != 0 && p != prev_pid
        };
        if !wait_for(Duration::from_secs(20), fresh) {
            break;
        }
        let refused_now = counts[1].load(Ordering::SeqCst);
        if prev_pid != 0 {
            per.push((refused_now - mark) as f64);
            restarts += 1;
        }
        if restarts == n {
            break;
        }
        let pid = last.load(Ordering::SeqCst);
        note(pid);
        thread::sleep(serve_for);
        mark = counts[1].load(Ordering::SeqCst);
        prev_pid = pid;
        kill(pid, libc::SIGKILL);
    }
    stop.store(true, Ordering::SeqCst);
    let _ = client.join();
    Refusals {
        per_restart: Stats::new(per),
        ok: counts[0].load(Ordering::SeqCst),
        refused: counts[1].load(Ordering::SeqCst),
        reset: counts[2].load(Ordering::SeqCst),
        restarts,
    }
}

impl Refusals {
    pub(crate) fn cell(&self) -> String {
        format!(
            "{} per restart; {} refused, {} reset, {} answered over {} restarts",
            show(&self.per_restart, 0),
            self.refused,
            self.reset,
            self.ok,
            self.restarts
        )
    }
}

pub(crate) fn refused(n: &Counts, peers: &Peers, table: &mut Table) {
    eprintln!("refused connections ...");
    let root = root();
    let fig = "refused connections across restarts";
    let every = Duration::from_millis(20);
    let sup = start(Kind::Ours, &Job::Serve, &RESTART_FAST, &root);
    let ours = refusals(sup.addr, n.refused, every, &|p| sup.note(p));
    drop(sup);
    let addr = free_addr();
    let plain = PlainLoop::start(Job::Serve.argv(false, addr), addr);
    let direct = refusals(plain.addr, n.refused, every, &|_| {});
    drop(plain);
    table.add(
        fig,
        ours.cell(),
        format!("plain loop {}", direct.cell()),
        "0 refused",
        Some(ours.refused == 0 && ours.restarts == n.refused),
    );
    for k in peers.each(&[Kind::Supervisord, Kind::Runsv, Kind::S6]) {
        let s = start(k, &Job::Serve, &RESTART_FAST, &root);
        let r = refusals(s.addr, n.peer_refused, Duration::from_millis(1100), &|p| {
            s.note(p)
        });
        table.peer(fig, k, r.cell());
    }
    if peers.has(Kind::SdActivate) {
        let addr = free_addr();
        let l = PlainLoop::start(sd_activate_argv(&Job::Serve, addr), addr);
        let r = refusals(l.addr, n.refused.min(20), every, &|_| {});
        drop(l);
        table.peer(fig, Kind::SdActivate, format!("plain loop {}", r.cell()));
    }
}
