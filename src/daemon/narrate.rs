//! What the machine decided, in words: one line in `supervisor.log` per
//! note, and the same words for the alerts it may set off (`[alerts]`), so
//! a person reads the same story in the log and in the message.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::alerting::Context;
use super::{memory, Daemon, KILL_GRACE};
use crate::alerts::Seen;
use crate::config::AlertEvent;
use crate::policy::{ExitKind, Failure, Next, Note, Phase, Unmet};
use crate::text::{count, describe_exit, human};

/// A warning that others can cause at will (anyone on the machine can send
/// datagrams to the notify socket): the first goes to the log, the rest are
/// counted and reported with the next one at most once a minute, so a
/// flood cannot rotate the log's history away.
#[derive(Debug, Default)]
pub(super) struct Quiet {
    last: Option<Instant>,
    held: u64,
}

impl Quiet {
    const EVERY: Duration = Duration::from_secs(60);

    pub(super) fn say(&mut self, what: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            self.held += 1;
            return;
        }
        self.last = Some(now);
        match std::mem::take(&mut self.held) {
            0 => warn!("{what}; more of these are counted and logged at most once a minute"),
            n => warn!("{what} ({n} more like this since the last such line)"),
        }
    }
}

impl Daemon {
    /// Say what the machine decided, and tell alerts.
    pub(super) fn narrate(&mut self, note: Note) {
        let addr = self.cfg.listen.address;
        match note {
            Note::ChildExited {
                pid,
                kind,
                lived,
                expected,
                streak,
                next,
            } => {
                let how = describe_exit(kind);
                let lived = match expected {
                    false => format!(" {}", crate::text::lived(lived)),
                    true => String::new(),
                };
                let next = match next {
                    Next::RestartIn(d) => format!("; restarting in {}", human(d)),
                    Next::RestartNow => "; restarting at once".into(),
                    Next::StopOthers => {
                        "; stopping what it left behind (its process group, anything holding our socket) first"
                            .into()
                    }
                    Next::Exit => String::new(),
                };
                let line = format!("child {pid} {how}{lived}{next}");
                if expected || matches!(kind, ExitKind::Code(0)) {
                    info!("{line}");
                } else {
                    warn!("{line}");
                }
                self.alert(
                    Seen::ChildExited { expected, streak },
                    |event| match event {
                        AlertEvent::CrashLoop => format!(
                            "{addr}: crash loop, {} in a row: {line}",
                            count(streak.into(), "failed start")
                        ),
                        _ => format!("{addr}: {line}"),
                    },
                );
            }
            Note::SpawnFailed { streak, retry_in } => {
                let why = self.seen.spawn_error.clone().unwrap_or_default();
                let line = format!("{why}; retrying in {}", human(retry_in));
                error!("{line}");
                self.alert(Seen::SpawnFailed { streak }, |_| {
                    format!(
                        "{addr}: crash loop, {} in a row: {line}",
                        count(streak.into(), "failed start")
                    )
                });
            }
            Note::WaitingForPort {
                since, retry_in, ..
            } => {
                let why = self.port_trouble();
                warn!(
                    "cannot bind {addr}: {why}; no child started; retrying in {}",
                    human(retry_in)
                );
                let waited = human(Instant::now().saturating_duration_since(since));
                self.alert(Seen::WaitingForPort { since }, |_| {
                    format!("{addr}: the port has been busy for {waited}: {why}; no child runs")
                });
            }
            Note::StoppingRivals => {
                let pids: Vec<i32> = self.targets.singles().collect();
                warn!(
                    "processes {pids:?} hold our listening socket but are not our child's; \
                     stopping them before a child starts"
                );
            }
            Note::Unhealthy { pid, why } => {
                let h = &self.cfg.health;
                let text = match why {
                    // `max_memory`: its own words and its own alert.
                    Failure::Memory(bytes) => {
                        let line = memory::narration(pid, bytes, self.memory.max());
                        warn!("{line}");
                        self.alert(Seen::Memory, |_| format!("{addr}: {line}"));
                        return;
                    }
                    Failure::StartTimeout => format!(
                        "not ready within start_timeout ({})",
                        human(h.start_timeout)
                    ),
                    Failure::Probes => format!(
                        "{} health probes in a row failed (GET {})",
                        h.failures,
                        self.probes.path()
                    ),
                    // One miss is enough, as under systemd: `failures`
                    // counts HTTP probes only (README "[health]").
                    Failure::Watchdog => format!(
                        "no WATCHDOG=1 within {} (one missed ping is a failure)",
                        human(h.watchdog.unwrap_or_default())
                    ),
                };
                let line = format!(
                    "child {pid} is unhealthy: {text}; stopping it gracefully to restart it"
                );
                warn!("{line}");
                // A start that never got ready is a failed start (a crash
                // loop if it goes on), not a liveness failure.
                if why != Failure::StartTimeout {
                    self.alert(Seen::Unhealthy, |_| format!("{addr}: {line}"));
                }
            }
            Note::Ready { pid } => {
                if self.cfg.health.readiness() {
                    info!("child {pid} is ready");
                }
                // Told once the state is written: whoever waits for READY=1
                // then finds `status` saying running.
                self.tell_manager = Some(format!(
                    "READY=1\nSTATUS=child {pid} ready\nMAINPID={}",
                    std::process::id()
                ));
                self.alert(Seen::Ready, |_| String::new());
            }
            Note::Surrender { streak } => {
                let last = match (&self.seen.spawn_error, self.machine.last_exit()) {
                    (Some(e), _) => format!("; the last: {e}"),
                    (None, Some(e)) => format!("; the last child {}", describe_exit(e.kind)),
                    (None, None) => String::new(),
                };
                let why = format!(
                    "gave up: {} in a row (restart.give_up_after = {}){last}",
                    count(streak.into(), "failed start"),
                    self.cfg.restart.give_up_after
                );
                error!(
                    "{why}; stopping everything, then exiting 1 for the orchestrator to restart"
                );
                self.alert(Seen::GaveUp, |_| {
                    format!("{addr}: {why}; the supervisor exits 1")
                });
                self.gave_up = Some(why);
            }
            Note::GaveUp => error!(
                "what was being stopped is still alive {} after SIGKILL; going on without it",
                human(KILL_GRACE)
            ),
            Note::HandoverStarted { old, new } => info!(
                "handover: new child {new} started beside child {old}, which serves until {new} is ready"
            ),
            Note::HandoverDraining { old, new } => info!(
                "handover: child {new} is ready and serves; stopping old child {old} (it gets {} to finish what it holds)",
                human(self.cfg.child.stop_timeout)
            ),
            Note::HandoverDone { old, new } => {
                self.handovers.ok += 1;
                info!("handover done: old child {old} is gone; child {new} serves")
            }
            Note::StopCutShort { pid, old, bytes } => {
                let (who, while_) = match old {
                    true => ("old child", "while it drains"),
                    false => ("new child", "while it is being stopped"),
                };
                let line = format!(
                    "memory: {who} {pid} uses {} {while_}, above max_memory ({}); killing it \
                     now rather than after stop_timeout ({})",
                    memory::mib(bytes),
                    self.memory.max().map_or_else(|| "?".to_owned(), memory::mib),
                    human(self.cfg.child.stop_timeout)
                );
                warn!("{line}");
                self.alert(Seen::Memory, |_| format!("{addr}: {line}"));
            }
            Note::HandoverBusy => {
                warn!("restart ignored: a handover is in progress")
            }
            Note::HandoverFailed { old, new, why } => {
                self.handovers.failed += 1;
                let new = new.map_or("the new child".into(), |p| format!("new child {p}"));
                let line = match why {
                    Unmet::Stopping | Unmet::OldEnded => {
                        format!("handover failed: {}; stopping {new} as well", self.unmet(why))
                    }
                    // Nothing was started: nothing to stop.
                    Unmet::SpawnFailed => format!(
                        "handover failed: {new} could not be started ({}); child {old} serves on",
                        self.new_spawn_error
                            .take()
                            .as_deref()
                            .unwrap_or("spawn failed")
                    ),
                    _ => format!(
                        "handover failed: {new} {}; it is stopped and child {old} serves on",
                        self.unmet(why)
                    ),
                };
                warn!("{line}");
                self.handover_failure = Some(line.clone());
                self.alert(Seen::HandoverFailed, |_| format!("{addr}: {line}"));
            }
            Note::Restarted(result) => self.restarted(result),
        }
    }

    /// The outcome of a requested restart, in the record for `restart`.
    fn restarted(&mut self, result: Result<i32, Unmet>) {
        let failure = self.handover_failure.take();
        let (ok, message) = match result {
            Ok(pid) => {
                let ready = match self.cfg.health.readiness() {
                    true => " and is ready",
                    false => "",
                };
                (true, format!("child {pid} runs{ready}"))
            }
            Err(why) => (
                false,
                failure.unwrap_or_else(|| format!("the new child {}", self.unmet(why))),
            ),
        };
        match ok {
            true => info!("restart done: {message}"),
            false => warn!("restart failed: {message}"),
        }
        let seq = self.seen.restart.as_ref().map_or(0, |r| r.seq) + 1;
        self.seen.restart = Some(crate::state::RestartOutcome {
            seq,
            at: crate::state::timestamp_ms(std::time::SystemTime::now()),
            ok,
            message,
            asked_mono_ns: self.seen.restart_asked,
        });
    }

    /// Why a restart brought no new ready child, in words.
    pub(super) fn unmet(&self, why: Unmet) -> String {
        match why {
            Unmet::SpawnFailed => format!(
                "could not be started ({})",
                self.seen.spawn_error.as_deref().unwrap_or("spawn failed")
            ),
            Unmet::BindFailed => format!("could not be started: {}", self.port_trouble()),
            Unmet::Exited(kind) => format!("{} before it was ready", describe_exit(kind)),
            Unmet::NotReady => format!(
                "was not ready within start_timeout ({})",
                human(self.cfg.health.start_timeout)
            ),
            Unmet::Stopping => "the supervisor is stopping".into(),
            Unmet::OldEnded => "the serving child ended during the handover".into(),
            Unmet::TooBig(bytes) => format!(
                "used {}, above max_memory ({}), before it was ready",
                memory::mib(bytes),
                self.memory
                    .max()
                    .map_or_else(|| "?".to_owned(), memory::mib)
            ),
        }
    }

    /// Why the port cannot be bound, and who holds it if that is known.
    fn port_trouble(&self) -> String {
        let port = self.port.shown();
        let why = port.bind_error.as_deref().unwrap_or("cannot bind");
        let held = port
            .port_holder
            .as_ref()
            .map(|(pid, cmd)| format!(" (held by pid {pid} {cmd})"))
            .unwrap_or_default();
        format!("{why}{held}")
    }

    /// Tell alerts what was seen; `message` words the alert it may fire.
    pub(super) fn alert(&mut self, seen: Seen, message: impl Fn(AlertEvent) -> String) {
        if self.alerting.is_none() {
            return;
        }
        let ctx = self.alert_context();
        if let Some(a) = self.alerting.as_mut() {
            a.see(seen, message, &ctx);
        }
    }

    /// An alert deadline passed: the port busy long enough, a child up
    /// long enough to call it recovered, or a hook to kill.
    pub(super) fn alert_tick(&mut self) {
        let addr = self.cfg.listen.address;
        let ctx = self.alert_context();
        let busy = match self.machine.phase() {
            Phase::WaitingForPort { since, .. } => {
                human(Instant::now().saturating_duration_since(since))
            }
            _ => String::new(),
        };
        let trouble = self.port_trouble();
        let up = human(self.cfg.restart.reset_after);
        let child = self.machine.child_pid();
        if let Some(a) = self.alerting.as_mut() {
            a.tick(
                |event| match event {
                    AlertEvent::PortBusy => {
                        format!(
                            "{addr}: the port has been busy for {busy}: {trouble}; no child runs"
                        )
                    }
                    _ => format!(
                        "{addr}: child {} has been up for {up}: recovered",
                        child.map_or("?".into(), |p| p.to_string())
                    ),
                },
                &ctx,
            );
        }
    }

    fn alert_context(&self) -> Context {
        Context {
            config: self.cfg.path.display().to_string(),
            pid: self.seen.me.pid,
            child_pid: self
                .machine
                .child_pid()
                .or_else(|| self.seen.group.map(|g| g.pgid)),
            last_exit: self.machine.last_exit(),
            streak: self.machine.streak(),
            restarts: self.machine.restarts(),
            port_holder: self.port.shown().port_holder.clone(),
            log_dir: match self.cfg.log.to {
                crate::config::LogTo::Files => self.cfg.log.dir.display().to_string(),
                crate::config::LogTo::Stdout => String::new(),
            },
        }
    }
}
