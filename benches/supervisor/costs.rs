//! The cost figures: idle memory and wake-ups, log throughput and the
//! memory it takes, and what a crash loop costs once the backoff is capped.

use crate::procs::{cpu_secs, ctxt, rollup_kb, status_kb};
use crate::services::{
    exe, root, serving, start, wait_for, Job, Kind, OurOpts, Peers, Svc, ALERTS_IDLE,
    MEMORY_CHECKED, METRICS_IDLE, RESTART_FAST,
};
use crate::table::{show, Stats, Table};
use crate::{Counts, CAPPED_PER_HOUR, LINE};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

pub(crate) fn idle(n: &Counts, peers: &Peers, table: &mut Table) {
    eprintln!("idle cost ...");
    let root = root();
    let kinds: Vec<Kind> = std::iter::once(Kind::Ours)
        .chain(peers.each(&[
            Kind::Static,
            Kind::Supervisord,
            Kind::Runsv,
            Kind::S6,
            Kind::SdActivate,
        ]))
        .collect();
    let mut rss: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
    let mut wake: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
    let mut pss: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
    let mut anon: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
    // Ours again with `max_memory` (one check a second), with `[alerts]`
    // and with `[metrics]` (asked once before): their wake-ups, and the
    // last one's RSS and the time of a scrape.
    let variants = [&MEMORY_CHECKED, &ALERTS_IDLE, &METRICS_IDLE];
    let mut variant_wake: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut metrics_rss = Vec::new();
    let mut scrape_ms = Vec::new();
    for _ in 0..n.idle_runs {
        // All side by side: each has its own process, so they do not
        // disturb each other's counts.
        let mut svcs: Vec<Svc> = kinds
            .iter()
            .map(|k| start(*k, &Job::Serve, &RESTART_FAST, &root))
            .collect();
        settle(&svcs);
        // Memory first, while ours is the only copy of the binary: the
        // variants would share its pages and shrink its PSS.
        for s in &svcs {
            let ps = s.cost_pids();
            let kb: u64 = ps.iter().map(|p| status_kb(*p, "VmRSS:")).sum();
            rss.entry(s.kind).or_default().push(kb as f64 / 1024.0);
            let p: u64 = ps.iter().map(|p| rollup_kb(*p, "Pss:")).sum();
            pss.entry(s.kind).or_default().push(p as f64 / 1024.0);
            let a: u64 = ps.iter().map(|p| status_kb(*p, "RssAnon:")).sum();
            anon.entry(s.kind).or_default().push(a as f64 / 1024.0);
        }
        let variant_svcs: Vec<Svc> = variants
            .iter()
            .map(|o| start(Kind::Ours, &Job::Serve, o, &root))
            .collect();
        settle(&variant_svcs);
        let metrics_svc = &variant_svcs[2];
        let metrics_addr: Option<std::net::SocketAddr> =
            fs::read_to_string(metrics_svc.dir.join("metrics.addr"))
                .ok()
                .and_then(|a| a.trim().parse().ok());
        if let Some(addr) = metrics_addr {
            scrape(addr);
            thread::sleep(Duration::from_millis(200));
            let kb: u64 = metrics_svc
                .cost_pids()
                .iter()
                .map(|p| status_kb(*p, "VmRSS:"))
                .sum();
            metrics_rss.push(kb as f64 / 1024.0);
        }
        svcs.extend(variant_svcs);
        let pids: Vec<Vec<u32>> = svcs.iter().map(|s| s.cost_pids()).collect();
        let c0: Vec<u64> = pids
            .iter()
            .map(|ps| ps.iter().map(|p| ctxt(*p)).sum())
            .collect();
        let t0 = Instant::now();
        thread::sleep(n.idle_window);
        let secs = t0.elapsed().as_secs_f64();
        for (i, ((s, ps), c0)) in svcs.iter().zip(&pids).zip(c0).enumerate() {
            let c1: u64 = ps.iter().map(|p| ctxt(*p)).sum();
            let per_sec = (c1 - c0) as f64 / secs;
            match i.checked_sub(kinds.len()) {
                Some(v) => variant_wake[v].push(per_sec),
                None => wake.entry(s.kind).or_default().push(per_sec),
            }
        }
        // After the window: one scrape at a time, timed from connect to
        // the whole answer.
        let metrics_addr = fs::read_to_string(svcs[kinds.len() + 2].dir.join("metrics.addr"))
            .ok()
            .and_then(|a| a.trim().parse().ok());
        for _ in 0..n.scrapes {
            if let Some(ms) = metrics_addr.and_then(scrape) {
                scrape_ms.push(ms);
            }
        }
    }
    let get = |m: &BTreeMap<Kind, Vec<f64>>, k| Stats::new(m.get(&k).cloned().unwrap_or_default());
    let r = get(&rss, Kind::Ours);
    let w = get(&wake, Kind::Ours);
    let window = format!("{:.0} s", n.idle_window.as_secs_f64());
    table.add(
        "idle RSS, MiB (healthy child)",
        show(&r, 2),
        "—".into(),
        "< 3 MiB",
        r.as_ref().map(|s| s.median() < 3.0),
    );
    let (pf, af) = (
        "idle PSS, MiB (shared pages split)",
        "idle anonymous RSS, MiB",
    );
    table.add(pf, show(&get(&pss, Kind::Ours), 2), "—".into(), "—", None);
    table.add(af, show(&get(&anon, Kind::Ours), 2), "—".into(), "—", None);
    table.add(
        &format!("idle wake-ups/s (over {window})"),
        show(&w, 2),
        "—".into(),
        "0",
        w.as_ref().map(|s| s.median() == 0.0),
    );
    let [memory, alerts, metrics] = [0, 1, 2].map(|v| Stats::new(variant_wake[v].clone()));
    table.add(
        &format!("idle wake-ups/s with max_memory, checked every 1 s (over {window})"),
        show(&memory, 2),
        "—".into(),
        "1 (one per check)",
        memory.as_ref().map(|s| (0.8..=1.3).contains(&s.median())),
    );
    table.add(
        &format!("idle wake-ups/s with [alerts] configured (over {window})"),
        show(&alerts, 2),
        "—".into(),
        "0",
        alerts.as_ref().map(|s| s.median() == 0.0),
    );
    let with_metrics = Stats::new(metrics_rss);
    table.add(
        "idle RSS, MiB, with [metrics] (asked once)",
        show(&with_metrics, 2),
        format!("without: {}", show(&r, 2)),
        "—",
        None,
    );
    table.add(
        &format!("idle wake-ups/s with [metrics] set (over {window})"),
        show(&metrics, 2),
        format!("without: {}", show(&w, 2)),
        "0",
        metrics.as_ref().map(|s| s.median() == 0.0),
    );
    table.add(
        "one scrape of /metrics, ms (connect to the whole answer)",
        show(&Stats::new(scrape_ms), 2),
        "—".into(),
        "—",
        None,
    );
    if peers.has(Kind::Static) {
        let st = get(&rss, Kind::Static);
        table.add(
            "static (musl) build: idle RSS, MiB (healthy child)",
            show(&st, 2),
            format!("glibc build {}", show(&r, 2)),
            "< 2.5 MiB",
            st.as_ref().map(|s| s.median() < 2.5),
        );
    }
    for k in kinds.iter().skip(1) {
        let note = match k {
            Kind::Runsv => " (runsv + svlogd)",
            Kind::SdActivate => " (execs into the child)",
            _ => "",
        };
        table.peer(
            "idle RSS, MiB (healthy child)",
            *k,
            format!("{}{note}", show(&get(&rss, *k), 2)),
        );
        table.peer(pf, *k, show(&get(&pss, *k), 2));
        table.peer(af, *k, show(&get(&anon, *k), 2));
        table.peer(
            &format!("idle wake-ups/s (over {window})"),
            *k,
            show(&get(&wake, *k), 2),
        );
    }
}

/// `GET /metrics` on `addr`, read to the end: the milliseconds it took,
/// if it answered 200.
fn scrape(addr: std::net::SocketAddr) -> Option<f64> {
    use std::io::Write;
    let t0 = Instant::now();
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).ok()?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    answer.starts_with(b"HTTP/1.1 200").then_some(ms)
}

/// Waits until each answers on its port, then a second for it to settle.
fn settle(svcs: &[Svc]) {
    for s in svcs {
        if let Some(p) = serving(s.addr, 0, Duration::from_secs(20)) {
            s.note(p);
        }
    }
    thread::sleep(Duration::from_secs(1));
}

/// Expected child.log size once all `lines` lines are in: each gains the
/// prefix seen on the first line.
pub(crate) fn expected_log(path: &Path, lines: usize, within: Duration) -> Option<u64> {
    let mut head = Vec::new();
    let ok = wait_for(within, || {
        head.clear();
        File::open(path)
            .and_then(|f| f.take(512).read_to_end(&mut head))
            .is_ok()
            && head.contains(&b'\n')
    });
    if !ok {
        return None;
    }
    let first = head.split(|b| *b == b'\n').next()?;
    let prefix = first.len() + 1 - LINE;
    Some((lines * (LINE + prefix)) as u64)
}

pub(crate) fn dir_bytes(d: &Path) -> u64 {
    fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Trigger the spewing child through its port and time until every line
/// has reached the log (`log_name` in `log_dir`, or the whole folder).
/// Returns payload MB/s and log-file MB/s (payload plus prefixes).
pub(crate) fn timed_spew(
    s: &Svc,
    log_dir: &Path,
    log_name: Option<&str>,
    bytes: usize,
) -> Option<(f64, f64)> {
    let addr = s.addr;
    let deadline = Duration::from_secs(120);
    let size = |d: &Path| match log_name {
        Some(n) => fs::metadata(d.join(n)).map_or(0, |m| m.len()),
        None => dir_bytes(d),
    };
    let base = size(log_dir);
    let t0 = Instant::now();
    let mut conn = loop {
        match TcpStream::connect(addr) {
            Ok(c) => break c,
            Err(_) if t0.elapsed() < Duration::from_secs(20) => {
                thread::sleep(Duration::from_millis(2))
            }
            Err(_) => return None,
        }
    };
    let t0 = Instant::now();
    let mut go = [0u8; 3];
    let _ = conn.read_exact(&mut go);
    let lines = bytes / LINE;
    let want = match log_name {
        Some(n) => expected_log(&log_dir.join(n), lines, deadline)?,
        None => {
            // svlogd -tt: the prefix of the first line it writes.
            expected_log(&log_dir.join("current"), lines, deadline)?
        }
    };
    if !wait_for(deadline, || size(log_dir) >= base + want) {
        eprintln!(
            "    log did not reach {want} bytes (has {})",
            size(log_dir) - base
        );
        return None;
    }
    let secs = t0.elapsed().as_secs_f64();
    Some((bytes as f64 / 1e6 / secs, want as f64 / 1e6 / secs))
}

pub(crate) fn log_throughput(n: &Counts, peers: &Peers, table: &mut Table) {
    eprintln!("log throughput ...");
    let root = root();
    let mut ours = Vec::new();
    let mut direct = Vec::new();
    let mut peak = Vec::new();
    let mut file_rate = Vec::new();
    let bytes = n.log_bytes;
    // The static build's runs, taken in turn with the glibc build's.
    let mut static_rate = Vec::new();
    for _ in 0..n.log_runs {
        if peers.has(Kind::Static) {
            let s = start(Kind::Static, &Job::Spew(bytes), &RESTART_FAST, &root);
            let logs = s.dir.join("logs");
            wait_for(Duration::from_secs(20), || logs.join("child.log").exists());
            if let Some((_, f)) = timed_spew(&s, &logs, Some("child.log"), bytes) {
                static_rate.push(f);
            }
            drop(s);
            let _ = fs::remove_dir_all(&logs);
        }
        let s = start(Kind::Ours, &Job::Spew(bytes), &RESTART_FAST, &root);
        let logs = s.dir.join("logs");
        wait_for(Duration::from_secs(20), || logs.join("child.log").exists());
        if let Some((r, f)) = timed_spew(&s, &logs, Some("child.log"), bytes) {
            ours.push(r);
            file_rate.push(f);
        }
        peak.push(status_kb(s.pid(), "VmHWM:") as f64 / 1024.0);
        drop(s);
        let _ = fs::remove_dir_all(root.join("direct.log"));
        let out = File::create(root.join("direct.log")).unwrap();
        let t0 = Instant::now();
        let st = Command::new(exe())
            .args(["child", "spew", &bytes.to_string()])
            .stdout(out)
            .status();
        if st.is_ok_and(|s| s.success()) {
            direct.push(bytes as f64 / 1e6 / t0.elapsed().as_secs_f64());
        }
        let _ = fs::remove_file(root.join("direct.log"));
        let _ = fs::remove_dir_all(&logs);
    }
    let (o, d, p) = (Stats::new(ours), Stats::new(direct), Stats::new(peak));
    let f = Stats::new(file_rate);
    // The issue measures "MB/s reaching child.log": the bytes written there,
    // time stamps and stream prefixes included. The child's own payload
    // rate is shown too; it is lower by the prefixes' share.
    let ratio = |x: &Option<Stats>| match (x, &d) {
        (Some(x), Some(d)) => Some(100.0 * x.median() / d.median()),
        _ => None,
    };
    let (pct, pct_payload) = (ratio(&f), ratio(&o));
    let mb = bytes / 1_000_000;
    table.add(
        &format!("log throughput, MB/s reaching child.log ({mb} MB of 100-byte lines)"),
        format!(
            "{}; payload {}",
            show(&f, 0),
            o.as_ref()
                .map_or("?".into(), |o| format!("{:.0} MB/s", o.median()))
        ),
        format!(
            "child > file {}; {} ({} in payload)",
            show(&d, 0),
            pct.map_or("?".into(), |p| format!("{p:.0}%")),
            pct_payload.map_or("?".into(), |p| format!("{p:.0}%"))
        ),
        "≥ 80%",
        pct.map(|p| p >= 80.0),
    );
    table.add(
        "peak RSS during log throughput, MiB",
        show(&p, 2),
        "—".into(),
        "< 8 MiB",
        p.as_ref().map(|s| s.max() < 8.0),
    );
    let fig = format!("log throughput, MB/s reaching child.log ({mb} MB of 100-byte lines)");
    if let Some(st) = Stats::new(static_rate) {
        let vs = f.as_ref().map(|g| 100.0 * st.median() / g.median());
        table.peer(&fig, Kind::Static, show(&Some(st.clone()), 0));
        table.add(
            "static (musl) build: log throughput, MB/s reaching child.log",
            show(&Some(st), 0),
            format!(
                "glibc build {}; {}",
                show(&f, 0),
                vs.map_or("?".into(), |p| format!("{p:.0}%"))
            ),
            "≥ 90% of the glibc build's",
            vs.map(|p| p >= 90.0),
        );
    }
    for k in peers.each(&[Kind::Supervisord, Kind::Runsv]) {
        let s = start(k, &Job::Spew(bytes), &RESTART_FAST, &root);
        let r = match k {
            Kind::Supervisord => {
                let d = s.dir.clone();
                wait_for(Duration::from_secs(20), || d.join("child.log").exists());
                timed_spew(&s, &d, Some("child.log"), bytes)
            }
            _ => {
                let d = s.dir.join("svc/log/main");
                timed_spew(&s, &d, None, bytes)
            }
        };
        let hwm: u64 = s.cost_pids().iter().map(|p| status_kb(*p, "VmHWM:")).sum();
        table.peer(
            "peak RSS during log throughput, MiB",
            k,
            format!("{:.2} n=1", hwm as f64 / 1024.0),
        );
        let note = if k == Kind::Runsv {
            " via svlogd -tt"
        } else {
            ""
        };
        let cell = match r {
            Some((r, f)) => format!("{f:.0} n=1{note}; payload {r:.0} MB/s"),
            None => "timed out".into(),
        };
        table.peer(&fig, k, cell);
        let dir = s.dir.clone();
        drop(s);
        let _ = fs::remove_dir_all(dir);
    }
}

pub(crate) fn restarts_of(state: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(state).ok()?).ok()?;
    v["child"]["restarts"].as_u64()
}

pub(crate) fn crash_loop(n: &Counts, peers: &Peers, table: &mut Table) {
    eprintln!("crash-loop cost ...");
    let root = root();
    let opts = OurOpts {
        initial_backoff: "20ms",
        max_backoff: "100ms",
        reset_after: "60s",
        ..RESTART_FAST
    };
    let kinds: Vec<Kind> = std::iter::once(Kind::Ours)
        .chain(peers.each(&[Kind::Supervisord, Kind::Runsv, Kind::S6]))
        .collect();
    let svcs: Vec<Svc> = kinds
        .iter()
        .map(|k| start(*k, &Job::Crash, &opts, &root))
        .collect();
    // Past the cap (20, 40, 80, 100 ms) and past the peers' first seconds.
    thread::sleep(Duration::from_secs(2));
    let bytes_of = |s: &Svc| -> u64 {
        match s.kind {
            Kind::Ours => dir_bytes(&s.dir.join("logs")),
            Kind::Runsv => dir_bytes(&s.dir.join("svc/log/main")),
            _ => dir_bytes(&s.dir),
        }
    };
    let snap = |s: &Svc| {
        let restarts = restarts_of(&s.dir.join("run/state.json")).unwrap_or(0);
        (bytes_of(s), cpu_secs(s.pid()), restarts, Instant::now())
    };
    let first: Vec<_> = svcs.iter().map(snap).collect();
    let mut prev = first.clone();
    let mut per: BTreeMap<Kind, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut per_restart_bytes = Vec::new();
    for _ in 0..n.crash_windows {
        thread::sleep(n.crash_window);
        for (i, s) in svcs.iter().enumerate() {
            let now = snap(s);
            let (b0, c0, r0, t0) = prev[i];
            let (db, dc) = ((now.0 - b0) as f64, now.1 - c0);
            let e = per.entry(s.kind).or_default();
            if s.kind == Kind::Ours {
                let dr = (now.2 - r0).max(1) as f64;
                per_restart_bytes.push(db / dr);
                e.0.push(db / dr * CAPPED_PER_HOUR / 1e3);
                e.1.push(dc / dr * CAPPED_PER_HOUR);
            } else {
                let secs = (now.3 - t0).as_secs_f64();
                e.0.push(db / secs * 3600.0 / 1e3);
                e.1.push(dc / secs * 3600.0);
            }
            prev[i] = now;
        }
    }
    // Peers' CPU in 10 ms ticks is too coarse per window: take the whole run.
    let whole: BTreeMap<Kind, f64> = svcs
        .iter()
        .zip(&first)
        .map(|(s, f)| {
            let now = snap(s);
            (s.kind, (now.1 - f.1) / (now.3 - f.3).as_secs_f64() * 3600.0)
        })
        .collect();
    let gave_up = svcs.iter().any(|s| {
        s.kind == Kind::Supervisord
            && fs::read_to_string(s.dir.join("supervisord.log")).is_ok_and(|l| l.contains("FATAL"))
    });
    drop(svcs);
    let get = |k: Kind, cpu: bool| {
        per.get(&k)
            .and_then(|(b, c)| Stats::new(if cpu { c.clone() } else { b.clone() }))
    };
    let b = get(Kind::Ours, false);
    let prb = Stats::new(per_restart_bytes);
    table.add(
        "crash-loop log, KB/h after the backoff cap",
        show(&b, 2),
        format!("{} bytes per restart × 12/h", show(&prb, 0)),
        "< 10 KB/h",
        b.as_ref().map(|s| s.median() < 10.0),
    );
    table.add(
        "crash-loop CPU, s/h after the backoff cap",
        show(&get(Kind::Ours, true), 3),
        "own + reaped children, 10 ms ticks".into(),
        "—",
        None,
    );
    for k in kinds.iter().skip(1) {
        if *k == Kind::Supervisord && gave_up {
            let cell = "0: gave up after startretries (FATAL); the service stays down";
            table.peer(
                "crash-loop log, KB/h after the backoff cap",
                *k,
                cell.into(),
            );
            table.peer(
                "crash-loop CPU, s/h after the backoff cap",
                *k,
                "0 (down)".into(),
            );
            continue;
        }
        table.peer(
            "crash-loop log, KB/h after the backoff cap",
            *k,
            show(&get(*k, false), 0),
        );
        let secs = n.crash_window.as_secs_f64() * n.crash_windows as f64;
        let cell = format!("{:.1} (whole {secs:.0} s run, 10 ms ticks)", whole[k]);
        table.peer("crash-loop CPU, s/h after the backoff cap", *k, cell);
    }
}
