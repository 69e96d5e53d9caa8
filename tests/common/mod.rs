//! Harness shared by the integration tests.
//!
//! Each test gets an [`Env`]: a temp dir holding a generated
//! `supervisor.toml` (state dir `run/`, log dir `logs/`, a free port) and a
//! python child from `tests/children/` that gets the temp dir as `argv[1]`.
//! [`Supervisor`] is one `supervisor run`; a thread reaps it at once, as
//! launchd would, so its exit status is known and it never lingers as a
//! zombie. Everything is waited for with a deadline, and every failure
//! panics with the commands, their exit statuses and stderr, the status
//! JSON, `supervisor.log`, `child.log` and the children's events.
//! Cleanup kills by pid only: the supervisors this test started, the child
//! process group recorded in `state.json`, and finally any process whose
//! argv names this test's temp dir.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub mod jobs;

pub const BIN: &str = env!("CARGO_BIN_EXE_supervisor");

/// Deadline for anything that should happen "soon" on a noisy 2-core box.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Pause between two checks of a condition.
pub const POLL: Duration = Duration::from_millis(15);

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The real python3 executable (not a pyenv shim script), found once.
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if p.is_empty() {
                    "python3".into()
                } else {
                    p
                }
            }
            _ => "python3".into(),
        }
    })
}

/// Absolute path of a script in `tests/children/`.
pub fn script(name: &str) -> String {
    format!("{}/tests/children/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A port that was free a moment ago (the supervisor copes with a race).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Polls `cond` every [`POLL`] until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<(), Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(start.elapsed());
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------- config

/// Builds an [`Env`]: which child runs, and config keys per section (values
/// are raw TOML). Defaults keep tests fast: short backoff and stop timeout.
pub struct Setup {
    script: String,
    args: Vec<String>,
    prelude: Vec<String>,
    env: Vec<(String, String)>,
    sections: BTreeMap<&'static str, BTreeMap<String, String>>,
}

impl Setup {
    pub fn new(script_name: &str) -> Setup {
        Setup {
            script: script(script_name),
            args: Vec::new(),
            prelude: Vec::new(),
            env: Vec::new(),
            sections: BTreeMap::new(),
        }
        .set("supervisor", "state_dir", "run")
        .set("listen", "name", "http")
        .set("child", "stop_timeout", "3s")
        // CI runs as root; the tests' children run as root on purpose.
        .raw("child", "allow_root", "true")
        .set("restart", "initial_backoff", "100ms")
        .set("restart", "max_backoff", "1s")
        .set("log", "dir", "logs")
    }

    /// Sets a string-valued key.
    pub fn set(self, section: &'static str, key: &str, value: &str) -> Setup {
        self.raw(section, key, &toml_str(value))
    }

    /// Sets a key to a raw TOML value.
    pub fn raw(mut self, section: &'static str, key: &str, value: &str) -> Setup {
        self.sections
            .entry(section)
            .or_default()
            .insert(key.into(), value.into());
        self
    }

    pub fn restart(self, key: &str, value: &str) -> Setup {
        self.set("restart", key, value)
    }

    pub fn child(self, key: &str, value: &str) -> Setup {
        self.set("child", key, value)
    }

    /// An extra argument for the child script (after the temp dir).
    pub fn arg(mut self, a: &str) -> Setup {
        self.args.push(a.into());
        self
    }

    /// Added to the child's environment through `child.env`.
    pub fn env(mut self, k: &str, v: &str) -> Setup {
        self.env.push((k.into(), v.into()));
        self
    }

    /// argv elements put before `python3 script dir ...` (a wrapper that
    /// execs the rest).
    pub fn prelude(mut self, argv: &[&str]) -> Setup {
        self.prelude = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn build(self) -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("suptest-")
            .tempdir()
            .expect("temp dir");
        let dir = fs::canonicalize(tmp.path()).unwrap();
        let dir_s = dir.to_str().expect("utf-8 temp path").to_string();
        let port = free_port();

        let mut argv = self.prelude.clone();
        argv.push(python().into());
        argv.push(self.script.clone());
        argv.push(dir_s.clone());
        argv.extend(self.args.iter().cloned());
        let command: Vec<String> = argv.iter().map(|a| toml_str(a)).collect();

        let mut sections = self.sections;
        sections
            .entry("listen")
            .or_default()
            .insert("address".into(), toml_str(&format!("127.0.0.1:{port}")));
        let child = sections.entry("child").or_default();
        child.insert("command".into(), format!("[{}]", command.join(", ")));
        if !self.env.is_empty() {
            let pairs: Vec<String> = self
                .env
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_str(v)))
                .collect();
            child.insert("env".into(), format!("{{ {} }}", pairs.join(", ")));
        }

        let mut text = String::new();
        for section in ["supervisor", "listen", "child", "restart", "log", "health"] {
            let Some(keys) = sections.get(section) else {
                continue;
            };
            let _ = writeln!(text, "[{section}]");
            for (k, v) in keys {
                let _ = writeln!(text, "{k} = {v}");
            }
            text.push('\n');
        }
        let config = dir.join("supervisor.toml");
        fs::write(&config, &text).unwrap();

        Env {
            state_dir: dir.join("run"),
            log_dir: dir.join("logs"),
            dir_s,
            config,
            port,
            script: self.script,
            config_text: text,
            runs: Mutex::new(Vec::new()),
            history: Mutex::new(Vec::new()),
            last_status: Mutex::new(String::new()),
            dir,
            _tmp: tmp,
        }
    }
}

// ---------------------------------------------------------------- env

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

struct Run {
    n: usize,
    pid: u32,
    cmd: String,
    out: PathBuf,
    err: PathBuf,
    status: Mutex<Option<ExitStatus>>,
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
    runs: Mutex<Vec<Arc<Run>>>,
    history: Mutex<Vec<String>>,
    last_status: Mutex<String>,
    _tmp: tempfile::TempDir,
}

impl Env {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts `supervisor --config <config> run`.
    pub fn spawn(&self) -> Supervisor<'_> {
        self.spawn_run(false)
    }

    /// Starts `run`, with stdout and stderr in `run-N.std{out,err}`; with
    /// `pipe_stderr` stderr goes through a pipe that a thread of ours
    /// copies into that file (see [`Env::spawn_stderr_pipe`]).
    fn spawn_run(&self, pipe_stderr: bool) -> Supervisor<'_> {
        let mut runs = self.runs.lock().unwrap();
        let n = runs.len();
        let out = self.dir.join(format!("run-{n}.stdout"));
        let err = self.dir.join(format!("run-{n}.stderr"));
        let cmd = format!("{BIN} --config {} run", self.config.display());
        let stderr = if pipe_stderr {
            Stdio::piped()
        } else {
            Stdio::from(fs::File::create(&err).unwrap())
        };
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd}: {e}"));
        if let Some(mut pipe) = child.stderr.take() {
            let mut copy = fs::File::create(&err).unwrap();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    let _ = copy.write_all(&buf[..n]);
                }
            });
        }
        let run = Arc::new(Run {
            n,
            pid: child.id(),
            cmd,
            out,
            err,
            status: Mutex::new(None),
        });
        let reaper = run.clone();
        thread::spawn(move || {
            if let Ok(st) = child.wait() {
                *reaper.status.lock().unwrap() = Some(st);
            }
        });
        runs.push(run.clone());
        Supervisor { env: self, run }
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

// ---------------------------------------------------------------- supervisor

/// One `supervisor run`, reaped by a background thread.
pub struct Supervisor<'a> {
    env: &'a Env,
    run: Arc<Run>,
}

impl Supervisor<'_> {
    pub fn pid(&self) -> i32 {
        self.run.pid as i32
    }

    /// The exit status once it exited (and was reaped).
    pub fn exited(&self) -> Option<ExitStatus> {
        *self.run.status.lock().unwrap()
    }

    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let what = format!(
            "supervisor run #{} (pid {}) to exit",
            self.run.n, self.run.pid
        );
        self.env.wait_value(&what, timeout, || self.exited())
    }

    /// Sends `sig` unless it already exited.
    pub fn signal(&self, sig: i32) {
        if self.exited().is_none() {
            kill(self.pid(), sig);
        }
    }

    /// SIGKILL and wait until reaped.
    pub fn kill9(&self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(DEADLINE);
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.run.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.run.err).unwrap_or_default()
    }
}

impl Drop for Supervisor<'_> {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pgid = self.env.state().and_then(|s| {
            let mine = s["supervisor"]["pid"].as_i64() == Some(self.pid() as i64);
            let c = &s["child"];
            let g = c["pgid"].as_i64().or_else(|| c["pid"].as_i64())?;
            mine.then_some(g as i32)
        });
        kill(self.pid(), libc::SIGKILL);
        let _ = wait_until(Duration::from_secs(5), || self.exited().is_some());
        if let Some(g) = pgid {
            kill_group(g, libc::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------- processes

/// Runs a program with a deadline; output via pipes read by a thread.
pub fn run_cmd(prog: &str, args: &[String], timeout: Duration) -> Result<Out, String> {
    let cmd = format!("{prog} {}", args.join(" "));
    let start = Instant::now();
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn {cmd}: {e}"))?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(o)) => Ok(Out {
            cmd,
            status: o.status,
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            took: start.elapsed(),
        }),
        Ok(Err(e)) => Err(format!("$ {cmd}: wait failed: {e}")),
        Err(_) => {
            kill(pid, libc::SIGKILL);
            Err(format!("$ {cmd}: still running after {timeout:?}; killed"))
        }
    }
}

/// Sends a signal to one pid (never 0, 1 or a negative "all" value).
pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with a concrete pid > 1; no memory is involved.
    pid > 1 && unsafe { libc::kill(pid, sig) } == 0
}

/// Sends a signal to a process group (pgid > 1).
pub fn kill_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) on the group -pgid with pgid > 1.
    pgid > 1 && unsafe { libc::kill(-pgid, sig) } == 0
}

/// (state, ppid, pgrp) from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut w = rest.split_whitespace();
    let state = w.next()?.chars().next()?;
    let ppid = w.next()?.parse().ok()?;
    let pgrp = w.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Alive and not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks existence.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    matches!(proc_stat(pid), Some((s, _, _)) if s != 'Z' && s != 'X')
}

pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

pub fn cmdline(pid: i32) -> Vec<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Live (non-zombie) members of a process group.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some((s, _, g)) if g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

pub fn pgid_alive(pgid: i32) -> bool {
    !group_members(pgid).is_empty()
}

/// Where a process's descriptors point.
pub fn fd_targets(pid: i32) -> Vec<String> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let t = fs::read_link(e.ok()?.path()).ok()?;
        Some(t.to_string_lossy().into_owned())
    })
    .collect()
}

// ---------------------------------------------------------------- network

/// One request: connect, send a line, read the reply to EOF.
pub fn request(addr: SocketAddr, timeout: Duration) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"ping\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

// ---------------------------------------------------------------- files

fn tail(path: &Path, max: usize) -> String {
    match fs::read(path) {
        Ok(b) => {
            let from = b.len().saturating_sub(max);
            let cut = if from > 0 { "...[cut]...\n" } else { "" };
            format!("{cut}{}", String::from_utf8_lossy(&b[from..]))
        }
        Err(e) => format!("<{e}>"),
    }
}

/// What a snapshot records about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub content: Vec<u8>,
}

/// Every path under `roots` (and the roots): kind, mode, inode, size,
/// mtime and content. Never follows symlinks.
pub fn snapshot(roots: &[&Path]) -> BTreeMap<PathBuf, Entry> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        let kind = if m.is_dir() {
            "dir"
        } else if m.file_type().is_symlink() {
            "symlink"
        } else {
            "file"
        };
        let content = if m.is_file() {
            fs::read(p).unwrap_or_default()
        } else {
            Vec::new()
        };
        out.insert(
            p.to_path_buf(),
            Entry {
                kind,
                mode: m.mode(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                content,
            },
        );
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for r in roots {
        walk(r, &mut out);
    }
    out
}

/// Human-readable differences between two snapshots.
pub fn snapshot_diff(a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>) -> String {
    let mut d = String::new();
    for (p, ea) in a {
        match b.get(p) {
            None => {
                let _ = writeln!(d, "removed: {}", p.display());
            }
            Some(eb) if eb != ea => {
                let _ = writeln!(
                    d,
                    "changed: {} (kind {}->{}, mode {:o}->{:o}, ino {}->{}, size {}->{}, mtime {}->{}, content {})",
                    p.display(),
                    ea.kind,
                    eb.kind,
                    ea.mode,
                    eb.mode,
                    ea.ino,
                    eb.ino,
                    ea.size,
                    eb.size,
                    ea.mtime_ns,
                    eb.mtime_ns,
                    if ea.content == eb.content { "same" } else { "differs" }
                );
            }
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            let _ = writeln!(d, "added: {}", p.display());
        }
    }
    d
}

// ---------------------------------------------------------------- real servers

/// The Python virtual environment with uvicorn, gunicorn and starlette
/// (`tests/requirements.txt`): `$SUPERVISOR_TEST_VENV`, else `<repo>/.venv`.
/// Panics with how to build it when it is missing or incomplete: the
/// real-server tests are never skipped silently.
pub fn venv() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = VENV.get_or_init(|| {
        let dir = match std::env::var_os("SUPERVISOR_TEST_VENV") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"),
        };
        let py = dir.join("bin/python");
        let check = "import uvicorn, gunicorn, starlette";
        match Command::new(&py)
            .args(["-c", check])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => Ok(dir),
            Ok(o) => Err(format!(
                "{} -c {check:?} failed: {}",
                py.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run {}: {e}", py.display())),
        }
    });
    match found {
        Ok(dir) => dir.clone(),
        Err(why) => panic!(
            "the Python venv for the real-server tests is missing or incomplete: {why}\n\
             Create it (what CI does) from the repository root with:\n    \
             python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt\n\
             (`bash .ci/run` does the same), or set SUPERVISOR_TEST_VENV to such a venv."
        ),
    }
}

/// A program in the venv's `bin/`, as a string for a config's command.
pub fn venv_bin(name: &str) -> String {
    venv().join("bin").join(name).display().to_string()
}

/// The binary of `examples/<name>.rs`, which `cargo test` builds next to
/// the supervisor's (`target/<profile>/examples/`). Panics saying how to
/// build it when it is missing (e.g. under `cargo test --test ...`, which
/// builds no example).
pub fn example_bin(name: &str) -> PathBuf {
    let p = Path::new(BIN)
        .parent()
        .expect("binary folder")
        .join("examples")
        .join(name);
    if !p.is_file() {
        panic!(
            "{} is missing: `cargo test` builds the examples; with a filter, build it first: \
             cargo build --example {name}",
            p.display()
        );
    }
    p
}

impl Env {
    /// Replaces the child's argv in the config (the harness's default is
    /// `python3 SCRIPT DIR ...`). Keep this test's temp dir somewhere in
    /// argv so the cleanup finds every process.
    pub fn set_command(&mut self, argv: &[String]) {
        let command: Vec<String> = argv.iter().map(|a| toml_str(a)).collect();
        let line = format!("command = [{}]", command.join(", "));
        let mut text = String::new();
        for l in self.config_text.lines() {
            text.push_str(if l.starts_with("command = ") {
                &line
            } else {
                l
            });
            text.push('\n');
        }
        fs::write(&self.config, &text).unwrap();
        self.config_text = text;
    }
}

/// One HTTP/1.0 GET: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
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
    // A server killed after sending its headers leaves a short body: that
    // is a reset, not an answer.
    let promised = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    if promised.is_some_and(|n| body.len() < n) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("answer cut short: {text:?}"),
        ));
    }
    Ok((code, body.to_string()))
}

/// TCP ports on which `pid` holds a listening socket (from /proc/net/tcp*
/// and the process's descriptors).
pub fn listening_ports(pid: i32) -> Vec<u16> {
    let mut by_inode = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let w: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode (10th column)
            if w.len() > 9 && w[3] == "0A" {
                let port = w[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                if let Some(port) = port {
                    by_inode.insert(w[9].to_string(), port);
                }
            }
        }
    }
    let mut ports: Vec<u16> = fd_targets(pid)
        .iter()
        .filter_map(|t| {
            t.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .filter_map(|inode| by_inode.get(&inode).copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

// ---------------------------------------------------------------- logs

impl Env {
    /// Like [`Env::spawn`], but the supervisor's stderr is a pipe, copied
    /// into the same `run-N.stderr` file by a thread of ours: a test that
    /// limits the supervisor's file writes (RLIMIT_FSIZE) still sees what it
    /// says on stderr.
    pub fn spawn_stderr_pipe(&self) -> Supervisor<'_> {
        self.spawn_run(true)
    }
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

/// Events "start" whose `alive=` list is not empty: a child started while
/// an earlier child or grandchild lived (children that record it use
/// `childlib.live_predecessors()`).
pub fn overlapping_starts(env: &Env) -> Vec<Event> {
    env.events_of("start")
        .into_iter()
        .filter(|e| e.extra.first().map(String::as_str) != Some("alive="))
        .collect()
}
