//! The test's view of its temp dir: running the CLI ([`Env::cli`],
//! `status --json`), waiting on conditions with a deadline, the children's
//! events, the diagnostics every failure prints, and the cleanup that
//! kills by pid whatever this test left running.

use super::{all_pids, cmdline, kill, pid_alive, run_cmd, tail, wait_until, BIN, DEADLINE};
use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The output of one finished command.
#[derive(Debug, Clone)]
pub struct Out {
    pub cmd: String,
    pub status: ExitStatus,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n  -> {} after {:?}\n  stdout: {}\n  stderr: {}",
            self.cmd,
            self.status,
            self.took,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// One `supervisor run` this test started (see [`super::Supervisor`]).
pub(super) struct Run {
    pub(super) n: usize,
    pub(super) pid: u32,
    pub(super) cmd: String,
    pub(super) out: PathBuf,
    pub(super) err: PathBuf,
    pub(super) status: Mutex<Option<ExitStatus>>,
}

pub struct Env {
    pub dir: PathBuf,
    pub dir_s: String,
    pub config: PathBuf,
    pub config_text: String,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub port: u16,
    /// Absolute path of the child script.
    pub script: String,
    pub(super) runs: Mutex<Vec<Arc<Run>>>,
    pub(super) history: Mutex<Vec<String>>,
    pub(super) last_status: Mutex<String>,
    pub(super) _tmp: tempfile::TempDir,
}

impl Env {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Runs `supervisor --config <config> ARGS` to completion.
    pub fn cli(&self, args: &[&str]) -> Out {
        let out = self.cli_with(&self.config, args, DEADLINE);
        self.note(out.to_string());
        out
    }

    /// Runs the binary with another config file and a deadline.
    pub fn cli_with(&self, config: &Path, args: &[&str], timeout: Duration) -> Out {
        let mut full = vec!["--config".to_string(), config.display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        match run_cmd(BIN, &full, timeout) {
            Ok(out) => out,
            Err(msg) => self.fail(msg),
        }
    }

    /// `status --json`: exit code and the parsed JSON. Panics (with the
    /// diagnostics) on no exit code or invalid JSON.
    pub fn status_json(&self) -> (i32, Value) {
        let out = self.status_raw();
        let Some(code) = out.code else {
            self.fail(format!("status --json died by a signal\n{out}"));
        };
        match serde_json::from_str::<Value>(&out.stdout) {
            Ok(v) => (code, v),
            Err(e) => self.fail(format!("status --json printed invalid JSON ({e})\n{out}")),
        }
    }

    /// `status --json` without interpretation (safe from any thread).
    pub fn status_raw(&self) -> Out {
        let out = self.cli_with(&self.config, &["status", "--json"], DEADLINE);
        *self.last_status.lock().unwrap() = out.to_string();
        out
    }

    /// `<state_dir>/state.json`, if readable.
    pub fn state(&self) -> Option<Value> {
        let text = fs::read_to_string(self.state_dir.join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The child pid `status --json` reports, if any.
    pub fn child_pid(&self) -> Option<i32> {
        let (_, v) = self.status_json();
        v["child"]["pid"].as_i64().map(|p| p as i32)
    }

    pub fn fail(&self, msg: impl std::fmt::Display) -> ! {
        panic!("{msg}\n{}", self.diag())
    }

    /// Waits for `cond`, or fails naming `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
        if let Err(after) = wait_until(timeout, cond) {
            self.fail(format!("timed out after {after:?} waiting for: {what}"));
        }
    }

    /// Waits until `f` returns a value, or fails naming `what`.
    pub fn wait_value<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let mut got = None;
        self.wait_for(what, timeout, || {
            got = f();
            got.is_some()
        });
        got.unwrap()
    }

    /// Waits until `status --json` says `state`; returns that JSON.
    pub fn wait_state(&self, state: &str) -> Value {
        self.wait_value(&format!("status state {state:?}"), DEADLINE, || {
            let (_, v) = self.status_json();
            (v["state"] == state).then_some(v)
        })
    }

    /// Waits until the state is `running` with a child pid not in `not`,
    /// and that child has recorded its "start" (or "ready") event.
    pub fn wait_child(&self, not: &[i32]) -> i32 {
        self.wait_value(
            &format!("state running with a child other than {not:?}, started"),
            DEADLINE,
            || {
                let (_, v) = self.status_json();
                if v["state"] != "running" {
                    return None;
                }
                let pid = v["child"]["pid"].as_i64()? as i32;
                if not.contains(&pid) {
                    return None;
                }
                let started = self
                    .events()
                    .iter()
                    .any(|e| e.pid == pid && (e.kind == "start" || e.kind == "ready"));
                started.then_some(pid)
            },
        )
    }

    /// The children's events in `<dir>/events.log`.
    pub fn events(&self) -> Vec<Event> {
        let text = fs::read_to_string(self.dir.join("events.log")).unwrap_or_default();
        text.lines().filter_map(Event::parse).collect()
    }

    pub fn events_of(&self, kind: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    /// Live processes running this test's child script for this temp dir.
    pub fn child_processes(&self) -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|&p| {
                let argv = cmdline(p);
                pid_alive(p)
                    && argv.iter().any(|a| a == &self.script)
                    && argv.iter().any(|a| a == &self.dir_s)
            })
            .collect()
    }

    fn note(&self, s: String) {
        let mut h = self.history.lock().unwrap();
        h.push(s);
        if h.len() > 40 {
            h.remove(0);
        }
    }

    /// Everything useful after a failure.
    pub fn diag(&self) -> String {
        let mut d = String::new();
        let _ = writeln!(d, "=== temp dir {} (port {})", self.dir_s, self.port);
        let _ = writeln!(d, "=== config\n{}", self.config_text.trim_end());
        for run in self.runs.lock().unwrap().iter() {
            let st = *run.status.lock().unwrap();
            let st = st.map_or("still running".to_string(), |s| s.to_string());
            let _ = writeln!(
                d,
                "=== run #{} pid {}: {}\n  -> {st}",
                run.n, run.pid, run.cmd
            );
            let _ = writeln!(d, "  stdout: {}", tail(&run.out, 2000).trim_end());
            let _ = writeln!(d, "  stderr: {}", tail(&run.err, 4000).trim_end());
        }
        for h in self.history.lock().unwrap().iter() {
            let _ = writeln!(d, "=== command\n{h}");
        }
        let _ = writeln!(
            d,
            "=== last status --json\n{}",
            self.last_status.lock().unwrap()
        );
        for (name, path, max) in [
            ("state.json", self.state_dir.join("state.json"), 4000),
            ("supervisor.pid", self.state_dir.join("supervisor.pid"), 100),
            ("supervisor.log", self.log_dir.join("supervisor.log"), 12000),
            ("child.log", self.log_dir.join("child.log"), 6000),
            ("events.log", self.dir.join("events.log"), 6000),
        ] {
            let _ = writeln!(d, "=== {name} (tail)\n{}", tail(&path, max).trim_end());
        }
        let _ = writeln!(d, "=== live child processes: {:?}", self.child_processes());
        d
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for run in self.runs.lock().unwrap().iter() {
            if run.status.lock().unwrap().is_none() {
                kill(run.pid as i32, libc::SIGKILL);
            }
        }
        // Whatever still names our temp dir in its argv: children, orphans,
        // grandchildren, supervisors. By pid, a few rounds (forks).
        let me = std::process::id() as i32;
        for _ in 0..5 {
            let left: Vec<i32> = all_pids()
                .into_iter()
                .filter(|&p| p != me && pid_alive(p))
                .filter(|&p| cmdline(p).iter().any(|a| a.contains(&self.dir_s)))
                .collect();
            if left.is_empty() {
                break;
            }
            for p in left {
                kill(p, libc::SIGKILL);
            }
            let _ = wait_until(Duration::from_secs(2), || {
                all_pids().into_iter().all(|p| {
                    p == me || !pid_alive(p) || !cmdline(p).iter().any(|a| a.contains(&self.dir_s))
                })
            });
        }
    }
}

/// One child event: "KIND PID MONOTONIC [EXTRA...]".
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: String,
    pub pid: i32,
    pub t: f64,
    pub extra: Vec<String>,
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let mut w = line.split_whitespace();
        Some(Event {
            kind: w.next()?.to_string(),
            pid: w.next()?.parse().ok()?,
            t: w.next()?.parse().ok()?,
            extra: w.map(str::to_string).collect(),
        })
    }
}

/// Events "start" whose `alive=` list is not empty: a child started while
/// an earlier child or grandchild lived (children that record it use
/// `childlib.live_predecessors()`).
pub fn overlapping_starts(env: &Env) -> Vec<Event> {
    env.events_of("start")
        .into_iter()
        .filter(|e| e.extra.first().map(String::as_str) != Some("alive="))
        .collect()
}
