//! Running the alert command (`[alerts] command`): one at a time, at most
//! [`QUEUE`] waiting, each in its own process group with stdin from
//! /dev/null, killed (the whole group) after `timeout`, its output into
//! `supervisor.log`, at most [`OUTPUT_CAP`] bytes a run. Nothing here ever
//! waits: the driver's loop polls the running hook's output, its deadline
//! and (through the one reaper) its exit, so a hook that hangs, floods or
//! cannot start delays no restart, stop, signal or state write.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tracing::{info, warn};

use crate::child::PROTOCOL_ENV;
use crate::config::AlertEvent;
use crate::policy::ExitKind;
use crate::sys;
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
    pid: i32,
    event: AlertEvent,
    deadline: Instant,
    killed: bool,
    /// Killed because the supervisor exits, not for its timeout.
    cut: bool,
    output: Option<pipe::Receiver>,
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
        self.running
            .as_ref()
            .filter(|r| !r.killed)
            .map(|r| r.deadline)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The deadline passed: kill the hook's process group.
    pub(crate) fn tick(&mut self, now: Instant) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        if r.killed || now < r.deadline {
            return;
        }
        r.killed = true;
        warn!(
            "alert command for {} still runs after {}; killing its process group {}",
            r.event.as_str(),
            human(self.timeout),
            r.pid
        );
        let _ = killpg(Pid::from_raw(r.pid), Signal::SIGKILL);
    }

    /// Kill the running hook's process group now, saying why.
    pub(crate) fn kill_now(&mut self, why: &str) {
        let Some(r) = self.running.as_mut().filter(|r| !r.killed) else {
            return;
        };
        r.killed = true;
        r.cut = true;
        warn!(
            "alert command for {} still runs; killing its process group {}: {why}",
            r.event.as_str(),
            r.pid
        );
        let _ = killpg(Pid::from_raw(r.pid), Signal::SIGKILL);
    }

    /// Read what the running hook printed; pending while there is nothing
    /// to read (or no hook). Call `output_ready` with the result.
    pub(crate) async fn output(&mut self) -> io::Result<Vec<u8>> {
        let Some(rx) = self.running.as_mut().and_then(|r| r.output.as_mut()) else {
            return std::future::pending().await;
        };
        let mut buf = vec![0u8; 4096];
        let n = rx.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Log what the hook printed (whole lines, up to the cap); an empty
    /// read or an error is the end of its output.
    pub(crate) fn output_ready(&mut self, read: io::Result<Vec<u8>>) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        let bytes = match read {
            Ok(b) if !b.is_empty() => b,
            _ => {
                r.output = None;
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
        let Some(mut r) = self.running.take_if(|r| r.pid == pid) else {
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
        let result = match (kind, r.killed) {
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
                        r.pid
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
        let (pid, output) = spawn_helper(cmd, true)?;
        Ok(Running {
            pid,
            event: job.event,
            deadline: Instant::now() + self.timeout,
            killed: false,
            cut: false,
            output,
            logged: 0,
            partial: Vec::new(),
            dropped: 0,
        })
    }
}

/// Start a helper of ours (an alert command, a reload's preflight): in its
/// own process group, stdin from /dev/null, none of the protocols'
/// variables, every signal at its default; its stderr (and stdout, with
/// `stdout`) into one pipe the loop reads. It is reaped by the driver's one
/// reaper like every other child, never waited for here.
pub(super) fn spawn_helper(
    mut cmd: Command,
    stdout: bool,
) -> io::Result<(i32, Option<pipe::Receiver>)> {
    let (reader, writer) = io::pipe()?;
    let out = match stdout {
        true => Stdio::from(writer.try_clone()?),
        false => Stdio::null(),
    };
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(writer)
        .process_group(0);
    for var in PROTOCOL_ENV {
        cmd.env_remove(var);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            sys::reset_signals_after_fork();
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // `cmd` holds the pipe's write end in its stdio setup: drop it, so the
    // read end sees EOF once the helper's last holder exits.
    drop(cmd);
    let pid = child.id() as i32;
    drop(child);
    Ok((
        pid,
        pipe::Receiver::from_owned_fd(OwnedFd::from(reader)).ok(),
    ))
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
