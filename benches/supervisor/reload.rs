//! Reload beside stop + start (issue 15): connections refused, child
//! restarts, and how long each takes, with a client on the port throughout.
//! `reload` returns once the new image has recorded itself in state.json;
//! stop + start (what `launchctl kickstart -k` or `systemctl restart` do)
//! is timed until the new child's first answer.

use crate::services::{ms, probe, root, serving, start, Job, Kind, Probe, RESTART_FAST};
use crate::table::{show, Stats, Table};
use crate::{Counts, BIN};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A client connecting every ~1 ms, counting answers, refusals and resets,
/// and every pid that answered.
struct Client {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 3]>,
    pids: Arc<Mutex<BTreeSet<u32>>>,
    handle: thread::JoinHandle<()>,
}

impl Client {
    fn start(addr: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let pids = Arc::new(Mutex::new(BTreeSet::new()));
        let handle = {
            let (stop, counts, pids) = (stop.clone(), counts.clone(), pids.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let i = match probe(addr, Duration::from_secs(10)) {
                        Probe::Pid(p) => {
                            pids.lock().unwrap().insert(p);
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
        Client {
            stop,
            counts,
            pids,
            handle,
        }
    }

    /// (answered, refused, reset, distinct pids that answered)
    fn finish(self) -> (u64, u64, u64, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
        let c = |i: usize| self.counts[i].load(Ordering::SeqCst);
        let pids = self.pids.lock().unwrap().len();
        (c(0), c(1), c(2), pids)
    }
}

fn control(config: &Path, what: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .arg(what)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

pub(crate) fn reload(n: &Counts, table: &mut Table) {
    eprintln!("reload ...");
    let root = root();
    let fig = "reload: refused connections, child restarts, time (ms) until the new image has recorded itself";

    let mut sup = start(Kind::Ours, &Job::Serve, &RESTART_FAST, &root);
    let config = sup.dir.join("supervisor.toml");
    let first = serving(sup.addr, 0, Duration::from_secs(20));
    if let Some(p) = first {
        sup.note(p);
    }
    let pid = sup.pid();
    let client = Client::start(sup.addr);
    let mut times = Vec::new();
    let mut failed = 0;
    for _ in 0..n.reloads {
        let t = Instant::now();
        match control(&config, "reload").status() {
            Ok(s) if s.success() => times.push(ms(t.elapsed())),
            _ => failed += 1,
        }
    }
    // One answer after the last reload, so a child lost at the end counts.
    let last = serving(sup.addr, 0, Duration::from_secs(20));
    let (ok, refused, reset, pids) = client.finish();
    let same_pid = matches!(sup.proc.try_wait(), Ok(None)) && sup.pid() == pid;
    let restarts = pids.saturating_sub(1);
    let ours = format!(
        "{refused} refused, {reset} reset, {ok} answered; {restarts} child restarts; {} over {} reloads{}",
        show(&Stats::new(times.clone()), 2),
        n.reloads,
        if failed > 0 {
            format!(" ({failed} failed)")
        } else {
            String::new()
        }
    );

    // stop + start, on the same config and port.
    let client = Client::start(sup.addr);
    let mut kick = Vec::new();
    let mut previous = last.or(first).unwrap_or(0);
    for _ in 0..n.kickstarts {
        let t = Instant::now();
        if !control(&config, "stop").status().is_ok_and(|s| s.success()) {
            break;
        }
        let _ = sup.proc.wait();
        let Ok(next) = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .current_dir(&sup.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
        else {
            break;
        };
        sup.proc = next;
        let Some(p) = serving(sup.addr, previous, Duration::from_secs(20)) else {
            break;
        };
        kick.push(ms(t.elapsed()));
        sup.note(p);
        previous = p;
    }
    let (k_ok, k_refused, k_reset, k_pids) = client.finish();
    drop(sup);
    let beside = format!(
        "stop + start: {k_refused} refused, {k_reset} reset, {k_ok} answered; {} child restarts; {} to the new child's first answer over {} stop + starts",
        k_pids.saturating_sub(1),
        show(&Stats::new(kick), 1),
        n.kickstarts
    );
    table.add(
        fig,
        ours,
        beside,
        "0 refused, 0 child restarts",
        Some(
            failed == 0
                && refused == 0
                && restarts == 0
                && same_pid
                && times.len() == n.reloads
                && last.is_some(),
        ),
    );
}
