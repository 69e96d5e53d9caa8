//! `supervisor run` as the tests start it: [`Env::spawn`] starts one, a
//! thread of ours reaps it at once (as launchd would), and [`Supervisor`]
//! is the handle: pid, exit status, signals, its stdout and stderr. A
//! handle dropped while its supervisor runs SIGKILLs it and the child
//! group its `state.json` names.

use super::env::Run;
use super::{kill, kill_group, wait_until, Env, BIN, DEADLINE};
use std::fs;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

impl Env {
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

    /// Like [`Env::spawn`], but the supervisor's stderr is a pipe, copied
    /// into the same `run-N.stderr` file by a thread of ours: a test that
    /// limits the supervisor's file writes (RLIMIT_FSIZE) still sees what it
    /// says on stderr.
    pub fn spawn_stderr_pipe(&self) -> Supervisor<'_> {
        self.spawn_run(true)
    }
}

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
