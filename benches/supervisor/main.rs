//! `cargo bench --bench supervisor`: the supervisor beside the physical
//! limit and its peers, as one table (issue 6).
//!
//! Every figure starts the real release binary. The supervised children are
//! this very executable re-run as `<bench> child MODE ...` (a few hundred
//! microseconds to start, no Python, no C), so the supervisor, the plain
//! loops and the peers (supervisord, runit's runsv, s6-supervise,
//! systemd-socket-activate, each only where installed) all run the same
//! child. Each cell is `median (min–max)` over the repetitions of that run;
//! `SUPERVISOR_BENCH_QUICK=1` makes every count small for a smoke run.
//! Everything started here is stopped by its pid (or the process group it
//! was started in) before the next figure.
//!
//! The rooms: `child` is the supervised child; `services` starts the
//! supervisor, its peers and the plain loops, and probes the port;
//! `procs` reads process costs from /proc (the bench measures on Linux);
//! `table` holds the statistics and renders the table; `restarts` and
//! `costs` are the figures, `reload` the reload one.

mod child;
mod costs;
mod deploy;
mod procs;
mod reload;
mod restarts;
mod services;
mod table;

use child::child_main;
use costs::{crash_loop, idle, log_throughput};
use deploy::deploy;
use reload::reload;
use restarts::{losing_copy, refused, restart_latency};
use services::{root, Peers};
use std::fs;
use std::time::{Duration, Instant};
use table::{loadavg, machine, Table};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_supervisor");
/// Each line the log child writes: 99 bytes and a newline.
pub(crate) const LINE: usize = 100;
/// Restarts per hour once the default backoff (1s doubling to 5m) is capped.
pub(crate) const CAPPED_PER_HOUR: f64 = 12.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child_main(&args[2..]);
        return;
    }
    let quick = std::env::var_os("SUPERVISOR_BENCH_QUICK").is_some_and(|v| v != "0");
    let n = Counts::new(quick);
    let peers = Peers::find();
    eprintln!(
        "supervisor bench{}: peers found: {}",
        if quick { " (quick)" } else { "" },
        peers.names()
    );
    let mut table = Table::new(&peers);
    let started = Instant::now();
    let load_before = loadavg();
    // SUPERVISOR_BENCH_ONLY=idle (a comma-separated list of the names
    // below) runs only those parts.
    let only = std::env::var("SUPERVISOR_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    if wanted("losing") {
        losing_copy(&n, &peers, &mut table);
    }
    if wanted("latency") {
        restart_latency(&n, &peers, &mut table);
    }
    if wanted("refused") {
        refused(&n, &peers, &mut table);
    }
    if wanted("reload") {
        reload(&n, &mut table);
    }
    if wanted("deploy") {
        deploy(&n, &mut table);
    }
    if wanted("idle") {
        idle(&n, &peers, &mut table);
    }
    if wanted("log") {
        log_throughput(&n, &peers, &mut table);
    }
    if wanted("crash") {
        crash_loop(&n, &peers, &mut table);
    }
    println!(
        "{}; load average {} before, {} after (other work on the machine skews the figures)",
        machine(),
        load_before,
        loadavg()
    );
    println!();
    println!("{}", table.render());
    println!("{}", NOTES.trim());
    let _ = fs::remove_dir_all(root());
    eprintln!("bench finished in {:.0} s", started.elapsed().as_secs_f64());
}

/// Repetition counts: modest, so the full run stays within a few minutes
/// on 2 cores (most of it is the peers' one-second restart throttles).
pub(crate) struct Counts {
    pub(crate) losing: usize,
    pub(crate) latency: usize,
    pub(crate) peer_latency: usize,
    pub(crate) refused: usize,
    pub(crate) peer_refused: usize,
    pub(crate) reloads: usize,
    pub(crate) deploys: usize,
    pub(crate) kickstarts: usize,
    pub(crate) idle_runs: usize,
    pub(crate) idle_window: Duration,
    /// Scrapes of `/metrics` timed after each idle window.
    pub(crate) scrapes: usize,
    pub(crate) log_bytes: usize,
    pub(crate) log_runs: usize,
    pub(crate) crash_windows: usize,
    pub(crate) crash_window: Duration,
}

impl Counts {
    pub(crate) fn new(quick: bool) -> Counts {
        if quick {
            Counts {
                losing: 10,
                latency: 5,
                peer_latency: 2,
                refused: 20,
                peer_refused: 2,
                reloads: 5,
                deploys: 3,
                kickstarts: 2,
                idle_runs: 1,
                idle_window: Duration::from_secs(2),
                scrapes: 5,
                log_bytes: 20_000_000,
                log_runs: 1,
                crash_windows: 1,
                crash_window: Duration::from_millis(1500),
            }
        } else {
            Counts {
                losing: 30,
                latency: 20,
                peer_latency: 5,
                refused: 100,
                peer_refused: 10,
                reloads: 20,
                deploys: 10,
                kickstarts: 5,
                idle_runs: 3,
                idle_window: Duration::from_secs(10),
                scrapes: 20,
                log_bytes: 200_000_000,
                log_runs: 21,
                crash_windows: 3,
                crash_window: Duration::from_secs(3),
            }
        }
    }
}

pub(crate) const NOTES: &str = r#"
Notes:
- Cells are median (min–max) over the repetitions of this run; n = repetitions.
- Children are the bench executable itself (`child serve-fd3` on the handed-over socket, `child serve-bind` binding the port itself for peers and plain loops).
- Supervisor config for restarts: initial_backoff = "1ms" (0 is refused), reset_after = "100ms". Restart latency kills a child that has served for 150 ms (a healthy run: restarted at once); the refused loop kills every 20 ms (early deaths, restarted after the 1 ms backoff).
- Peers' restart figures kill a child that has run 1.1 s: runsv and s6-supervise wait 1 s before restarting a younger child.
- Plain loop: the bench re-spawns the child as soon as waitpid returns; the child binds with SO_REUSEADDR. systemd-socket-activate is restarted the same way (it owns the socket only while it lives).
- Refused: a client connects every ~1 ms during the restarts; refused = ECONNREFUSED, reset = accepted then closed without an answer (a connection the killed child had taken).
- Reload: `supervisor reload` with nothing changed, n times in a row, a client connecting every ~1 ms throughout; the time is the command's, which returns once the new image has recorded itself in state.json; child restarts = distinct pids that answered, minus one. Beside it, `supervisor stop` then a new `supervisor run` (what `launchctl kickstart -k` or `systemctl restart` do), timed until the new child's first answer.
- Deploy: a child that sends READY=1 1 s after its start (it does not accept before), `supervisor restart` n times in a row (each waits for the outcome), a client connecting every ~1 ms throughout and timing each connection to its answer; with `[restart] overlap = true` (the new child starts beside the old one, which is stopped once the new one is ready) and stop-first (the default). Steady p99 and max: the same client before the restarts, for as long as they take (a max is the tail of however many samples there are: over equal windows it shows what the restarts add). Goal: 0 refused, 0 reset, max within 2× the steady p99 with overlap. SUPERVISOR_BENCH_DEPLOY_TRACE=1 prints the ten longest waits placed in their restarts and the supervisor's own CPU.
- Idle: RSS is VmRSS (PSS from smaps_rollup, anonymous from RssAnon) summed over the supervising processes (runsv + svlogd; supervisord; s6-supervise; our supervisor with its log-reader thread); wake-ups are voluntary + nonvoluntary context switches of all their threads per second. RSS, PSS and anonymous RSS are read 1 s after each answers, before three more of ours start beside them: one with max_memory = "1GiB" and max_memory_check = "1s" (never reached; one wake-up per check is the target), one with [alerts] command = ["/bin/true"] (nothing to say while the child is healthy: 0), one with [metrics] address set (its /metrics asked once, then its VmRSS read 0.2 s later; nobody asks during the window: 0 wake-ups). After each window, /metrics of that one is scraped N times in turn, each timed from connect to the whole answer (HTTP/1.1, Connection: close).
- Log throughput: MB/s reaching child.log (the issue's measure: every byte written there, each 100-byte line with its ~36-byte time stamp and stream prefix) until all lines are in, beside the child writing into a file itself; the payload rate (the child's own bytes) is shown too. runsv's figure goes through svlogd -tt.
- Crash loop: child prints one line to stderr and exits 1. Supervisor run scaled to initial_backoff 20ms / max_backoff 100ms; bytes (supervisor.log + child.log) and CPU (its own + reaped children) per restart, times 12 restarts/h (the default 5m cap). Peers: measured rate per second times 3600 (they restart every second forever; supervisord gives up after startretries, so its rate after that is 0 and the service stays down).
"#;
