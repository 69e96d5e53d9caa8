//! Running the alert command (`[alerts] command`): one at a time, at most
//! [`QUEUE`] waiting, each in its own process group with stdin from
//! /dev/null, killed (the whole group) after `timeout`, its output into
//! `supervisor.log`, at most [`OUTPUT_CAP`] bytes a run. Nothing here ever
//! waits: the driver's loop polls the running hook's output, its deadline
//! and (through the one reaper) its exit, so a hook that hangs, floods or
//! cannot start delays no restart, stop, signal or state write.

use std::collections::VecDeque;
use std::io;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::helper::Helper;
use crate::config::AlertEvent;
use crate::policy::ExitKind;
use crate::text::{describe_exit, human};

/// Alerts waiting for the one running; more are dropped and counted.
pub(crate) const QUEUE: usize = 16;
/// A hook's output logged per run; the rest is counted, not kept.
const OUTPUT_CAP: usize = 16 * 1024;

/// One alert to send: its event and the environment of the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) event: AlertEvent,
    pub(crate) env: Vec<(String, String)>,
}

/// The last alert, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Last {
    pub(crate) event: AlertEvent,
    pub(crate) at: SystemTime,
    /// How the command ended; `None` while it runs.
    pub(crate) result: Option<String>,
}

struct Running {
    helper: Helper,
    event: AlertEvent,
    /// Killed because the supervisor exits, not for its timeout.
    cut: bool,
    /// Bytes of output logged so far, and the partial last line.
    logged: usize,
    partial: Vec<u8>,
    dropped: usize,
}

pub(crate) struct Hooks {
    command: Vec<String>,
    timeout: Duration,
    queue: VecDeque<Job>,
    running: Option<Running>,
    last: Option<Last>,
}

impl Hooks {
    pub(crate) fn new(command: Vec<String>, timeout: Duration) -> Hooks {
        Hooks {
            command,
            timeout,
            queue: VecDeque::new(),
            running: None,
            last: None,
        }
    }

    pub(crate) fn last(&self) -> Option<&Last> {
        self.last.as_ref()
    }

    /// Queue `job` and start it if nothing runs; `Err` with the event when
    /// the queue is full (the caller counts it as held back).
    pub(crate) fn push(&mut self, job: Job) -> Result<(), AlertEvent> {
        if self.queue.len() >= QUEUE {
            return Err(job.event);
        }
        self.queue.push_back(job);
        self.start_next();
        Ok(())
    }

    /// When the running hook is killed, if one runs.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.running.as_ref().and_then(|r| r.helper.deadline())
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The deadline passed: kill the hook's process group.
    pub(crate) fn tick(&mut self, now: Instant) {
        let Some(r) = self.running.as_mut().filter(|r| r.helper.overdue(now)) else {
            return;
        };
        warn!(
            "alert command for {} still runs after {}; killing its process group {}",
            r.event.as_str(),
            human(self.timeout),
            r.helper.pid()
        );
        r.helper.kill();
    }

    /// Kill the running hook's process group now, saying why.
    pub(crate) fn kill_now(&mut self, why: &str) {
        let Some(r) = self.running.as_mut().filter(|r| !r.helper.killed()) else {
            return;
        };
        r.cut = true;
        warn!(
            "alert command for {} still runs; killing its process group {}: {why}",
            r.event.as_str(),
            r.helper.pid()
        );
        r.helper.kill();
    }

    /// The running hook, whose output the driver's loop reads (and passes
    /// to `output_ready`).
    pub(crate) fn helper(&mut self) -> Option<&mut Helper> {
        self.running.as_mut().map(|r| &mut r.helper)
    }

    /// Log what the hook printed (whole lines, up to the cap); an empty
    /// read or an error is the end of its output.
    pub(crate) fn output_ready(&mut self, read: io::Result<Vec<u8>>) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        let bytes = match r.helper.read(read) {
            Some(b) => b,
            None => {
                let rest = std::mem::take(&mut r.partial);
                log_line(r, &rest);
                return;
            }
        };
        r.partial.extend_from_slice(&bytes);
        while let Some(nl) = memchr::memchr(b'\n', &r.partial) {
            let line: Vec<u8> = r.partial.drain(..=nl).collect();
            log_line(r, &line[..line.len() - 1]);
        }
        if r.partial.len() > 1024 {
            let line = std::mem::take(&mut r.partial);
            log_line(r, &line);
        }
    }

    /// A reaped pid: if it is the running hook, record how it ended and
    /// start the next one. Whether it was ours.
    pub(crate) fn reaped(&mut self, pid: i32, kind: ExitKind) -> bool {
        let Some(mut r) = self.running.take_if(|r| r.helper.pid() == pid) else {
            return false;
        };
        // Whatever of its output is still buffered is dropped with the
        // pipe; a grandchild may hold the pipe's other end for ever.
        let rest = std::mem::take(&mut r.partial);
        log_line(&mut r, &rest);
        if r.dropped > 0 {
            info!(
                "alert command for {}: {} more bytes of output not logged",
                r.event.as_str(),
                r.dropped
            );
        }
        let result = match (kind, r.helper.killed()) {
            (ExitKind::Code(0), _) => "exited with code 0".to_owned(),
            (_, true) if r.cut => "killed: the supervisor was exiting".to_owned(),
            (_, true) => format!("killed after the {} timeout", human(self.timeout)),
            (kind, false) => describe_exit(kind),
        };
        if matches!(kind, ExitKind::Code(0)) {
            info!("alert command for {} {result}", r.event.as_str());
        } else {
            warn!("alert command for {} {result}", r.event.as_str());
        }
        if let Some(last) = self.last.as_mut().filter(|l| l.event == r.event) {
            last.result = Some(result);
        }
        self.start_next();
        true
    }

    /// Give up on what is queued (at exit) but `keep` (the alert that says
    /// why the supervisor exits, started next); the running hook keeps its
    /// own deadline.
    pub(crate) fn drop_queue(&mut self, keep: AlertEvent) -> usize {
        let n = self.queue.len();
        self.queue.retain(|job| job.event == keep);
        n - self.queue.len()
    }

    fn start_next(&mut self) {
        while self.running.is_none() {
            let Some(job) = self.queue.pop_front() else {
                return;
            };
            self.last = Some(Last {
                event: job.event,
                at: SystemTime::now(),
                result: None,
            });
            match self.spawn(&job) {
                Ok(r) => {
                    info!(
                        "alert {}: started {} (pid {})",
                        job.event.as_str(),
                        self.command.join(" "),
                        r.helper.pid()
                    );
                    self.running = Some(r);
                }
                Err(e) => {
                    let result = format!("could not start: {e}");
                    warn!(
                        "alert {}: cannot start {}: {e}; the supervisor carries on",
                        job.event.as_str(),
                        self.command.join(" ")
                    );
                    if let Some(last) = self.last.as_mut() {
                        last.result = Some(result);
                    }
                }
            }
        }
    }

    fn spawn(&self, job: &Job) -> io::Result<Running> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args).envs(job.env.iter().map(|(k, v)| (k, v)));
        Ok(Running {
            helper: Helper::spawn(cmd, true, self.timeout)?,
            event: job.event,
            cut: false,
            logged: 0,
            partial: Vec::new(),
            dropped: 0,
        })
    }
}

/// One line of a hook's output into supervisor.log, within the cap.
fn log_line(r: &mut Running, line: &[u8]) {
    if line.is_empty() {
        return;
    }
    if r.logged + line.len() > OUTPUT_CAP {
        r.dropped += line.len() + 1;
        return;
    }
    r.logged += line.len() + 1;
    info!(
        "alert command for {}: {}",
        r.event.as_str(),
        String::from_utf8_lossy(line).trim_end()
    );
}
