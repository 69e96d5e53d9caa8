//! The restart policy: a pure state machine.
//!
//! `Machine::step(event, now)` returns the side effects the driver must
//! perform; it never reads a clock, touches a process or sleeps, so every
//! rule of SPEC.md's "Restart policy" is a table of unit tests (`tests`).
//! The driver (`daemon/`) turns signals, child exits and timers into
//! [`Event`]s and carries out the returned [`Action`]s in order. `Launch`
//! is answered at once with a further event (`Spawned`, `SpawnFailed`,
//! `BindFailed` or `RivalsFound`); [`Action::Note`]s change nothing and only
//! tell the driver what happened and what comes next, so its log lines and
//! alerts can never disagree with the rule that decided.
//!
//! What the operator *wants* (up or down) is kept apart from what *is* (the
//! [`Phase`]), as s6 keeps `flagwantup` beside its state.
//!
//! The rooms: `terms` holds the words (settings, events, actions, notes,
//! phases); this file is the machine.

mod handover;
#[cfg(test)]
mod handover_tests;
mod terms;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub(crate) use terms::{
    Action, Event, ExitKind, Failure, Handover, Health, HealthPolicy, LastExit, Next, Note, Phase,
    Settings, Stage, Unmet, Want,
};

/// What a machine is, for a re-executed supervisor to carry on from
/// (`reload`): the phase and the memory, nothing of the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) phase: Phase,
    pub(crate) spawns: u32,
    pub(crate) streak: u32,
    pub(crate) bind_failures: u32,
    pub(crate) port_since: Option<Instant>,
    pub(crate) last_exit: Option<LastExit>,
}

/// The supervisor's state: the phase plus what it remembers across phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Machine {
    settings: Settings,
    want: Want,
    phase: Phase,
    /// Children spawned so far.
    spawns: u32,
    /// Consecutive early deaths (and failed spawns): the backoff exponent.
    streak: u32,
    /// Consecutive failed binds, and since when the port has been refused.
    bind_failures: u32,
    port_since: Option<Instant>,
    last_exit: Option<LastExit>,
    /// A second child, for a moment (`[restart] overlap`). While one is
    /// on, the phase is `Running`: every way out of it ends the handover
    /// first (`merge_handover`).
    handover: Option<Handover>,
    /// A restart was asked for (`restart`, SIGUSR1) and its outcome
    /// (`Note::Restarted`) is not told yet.
    asked: bool,
    /// The crash streak reached `give_up_after`.
    surrendered: bool,
    /// The serving child a handover failed to replace: past `max_memory`
    /// again, it is restarted stop-first (the limit holds; a new child that
    /// cannot come up is not tried again at every check, without backoff).
    replace_failed: Option<i32>,
}

impl Machine {
    pub(crate) fn new(settings: Settings) -> Machine {
        Machine {
            settings,
            want: Want::Up,
            phase: Phase::Starting,
            spawns: 0,
            streak: 0,
            bind_failures: 0,
            port_since: None,
            last_exit: None,
            handover: None,
            asked: false,
            surrendered: false,
            replace_failed: None,
        }
    }

    /// Continue a crash loop's backoff from where an earlier supervisor
    /// left it, so a respawned supervisor does not hammer a broken child
    /// from `initial_backoff` again. Capped: beyond 64 doublings every
    /// delay is `max_backoff` anyway.
    pub(crate) fn resume(&mut self, streak: u32) {
        self.streak = streak.min(64);
    }

    /// Start by stopping what an earlier supervisor left running (its
    /// child's process group, whatever holds its socket): nothing of ours
    /// runs yet, so there is no leader to reap; the driver reports
    /// `OthersGone`, then the first child is launched.
    pub(crate) fn adopt(&mut self, now: Instant) -> Vec<Action> {
        self.stop_others(None, now, now)
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Everything but the settings, for `reload`.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            phase: self.phase,
            spawns: self.spawns,
            streak: self.streak,
            bind_failures: self.bind_failures,
            port_since: self.port_since,
            last_exit: self.last_exit,
        }
    }

    /// Carry on where a snapshot left off, under (possibly new) settings.
    /// Only a settled phase can be carried over: a running child (its
    /// health counters start afresh, its watchdog from now), a backoff or a
    /// wait for the port. Anything else starts over as a fresh start.
    pub(crate) fn restore(settings: Settings, s: Snapshot, now: Instant) -> Machine {
        let phase = match s.phase {
            Phase::Running { pid, since, health } => Phase::Running {
                pid,
                since,
                health: Health {
                    ready_since: health.ready_since,
                    probe_failures: 0,
                    watchdog_until: health
                        .ready_since
                        .and(settings.health.watchdog)
                        .map(|w| now + w),
                },
            },
            p @ (Phase::Backoff { .. } | Phase::WaitingForPort { .. }) => p,
            _ => Phase::Starting,
        };
        Machine {
            settings,
            want: Want::Up,
            phase,
            spawns: s.spawns,
            streak: s.streak,
            bind_failures: s.bind_failures,
            port_since: s.port_since,
            last_exit: s.last_exit,
            handover: None,
            asked: false,
            surrendered: false,
            replace_failed: None,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn want(&self) -> Want {
        self.want
    }

    /// The state `status` shows: the phase's name, but `restarting` while a
    /// requested restart (`restart`, SIGUSR1) stops the old child and
    /// starts the new one, until its outcome is told: the supervisor is
    /// not stopping.
    pub(crate) fn state_name(&self) -> &'static str {
        match self.restarting() {
            true => "restarting",
            false => self.phase.name(),
        }
    }

    /// Whether a requested restart stops the old child or starts the new
    /// one (`restarting` in `status`).
    pub(crate) fn restarting(&self) -> bool {
        let between = match self.phase {
            Phase::Stopping { .. } | Phase::Starting => true,
            // Started, not ready yet: "starting".
            Phase::Running { health, .. } => health.ready_since.is_none(),
            _ => false,
        };
        between && self.asked && self.want == Want::Up
    }

    pub(crate) fn streak(&self) -> u32 {
        self.streak
    }

    pub(crate) fn last_exit(&self) -> Option<LastExit> {
        self.last_exit
    }

    /// Restarts so far (the first child is not a restart).
    pub(crate) fn restarts(&self) -> u32 {
        self.spawns.saturating_sub(1)
    }

    /// The current child's pid, if one is alive.
    pub(crate) fn child_pid(&self) -> Option<i32> {
        match self.phase {
            Phase::Running { pid, .. } => Some(pid),
            Phase::Stopping { leader, .. } => leader,
            _ => None,
        }
    }

    /// Whether the child has passed its readiness check.
    pub(crate) fn ready(&self) -> bool {
        matches!(self.phase, Phase::Running { health, .. } if health.ready_since.is_some())
    }

    /// When the driver must send `Tick`, if ever.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let phase = self.phase_deadline();
        match (phase, self.handover_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn phase_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::WaitingForPort { retry_at, .. } => Some(retry_at),
            Phase::Backoff { until } => Some(until),
            Phase::Running { since, health, .. } => match health.ready_since {
                None if self.settings.health.readiness => {
                    Some(since + self.settings.health.start_timeout)
                }
                _ => health.watchdog_until,
            },
            // SIGKILL always ends the leader: wait for its exit, with no
            // timer, so two children never overlap.
            Phase::Stopping {
                killed: true,
                leader: Some(_),
                ..
            } => None,
            Phase::Stopping { deadline, .. } => Some(deadline),
            Phase::Starting | Phase::Exited => None,
        }
    }

    /// The delay before the `n`th consecutive retry (n >= 1): `initial`
    /// doubled n-1 times, capped at `max`.
    fn backoff(&self, n: u32) -> Duration {
        let s = &self.settings;
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        s.initial_backoff
            .checked_mul(factor)
            .map_or(s.max_backoff, |d| d.min(s.max_backoff))
    }

    pub(crate) fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        if self.phase == Phase::Exited {
            return vec![];
        }
        match event {
            Event::NewSpawned { .. }
            | Event::NewSpawnFailed
            | Event::NewReady
            | Event::SecondExited { .. }
            | Event::SecondGone
            | Event::SecondTooBig(_) => self.handover_step(event, now),
            Event::Tick if self.handover.is_some() => {
                let mut actions = self.handover_tick(now);
                actions.extend(self.step_phase(event, now));
                actions
            }
            _ => self.step_phase(event, now),
        }
    }

    fn step_phase(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let s = self.settings;
        match (self.phase, event) {
            (Phase::Exited, _) => vec![],

            // --- the operator -------------------------------------------
            (_, Event::Stop) => self.stop(now),
            (Phase::Running { .. }, Event::Restart) if self.handover.is_some() => {
                vec![Action::Note(Note::HandoverBusy)]
            }
            (Phase::Running { pid, health, .. }, Event::Restart) => {
                self.asked = true;
                if s.overlap && health.ready_since.is_some() {
                    return self.begin_handover(pid, now);
                }
                self.stop_child(pid, now, now)
            }
            (Phase::Running { pid, .. }, Event::RestartStopFirst) => {
                let mut actions = self.merge_handover(None);
                actions.extend(self.stop_child(pid, now, now));
                actions
            }
            (_, Event::RestartStopFirst) => vec![],
            (Phase::Backoff { .. } | Phase::WaitingForPort { .. }, Event::Restart) => {
                self.asked = true;
                self.launch()
            }
            (_, Event::Restart) => {
                self.asked = true;
                vec![]
            }

            // --- launching ----------------------------------------------
            (Phase::Starting, Event::Start) => self.launch(),
            (Phase::Starting, Event::Spawned { pid }) => {
                self.spawns = self.spawns.saturating_add(1);
                self.port_bound();
                let ready = !s.health.readiness;
                self.phase = Phase::Running {
                    pid,
                    since: now,
                    health: Health {
                        ready_since: ready.then_some(now),
                        probe_failures: 0,
                        watchdog_until: None,
                    },
                };
                if ready {
                    let mut actions = vec![Action::Note(Note::Ready { pid })];
                    actions.extend(self.outcome(Ok(pid)));
                    actions
                } else {
                    vec![]
                }
            }
            (Phase::Starting, Event::SpawnFailed) => {
                self.port_bound();
                self.streak = self.streak.saturating_add(1);
                let retry_in = self.backoff(self.streak);
                self.phase = Phase::Backoff {
                    until: now + retry_in,
                };
                let mut actions = vec![Action::Note(Note::SpawnFailed {
                    streak: self.streak,
                    retry_in,
                })];
                actions.extend(self.outcome(Err(Unmet::SpawnFailed)));
                if let Some(note) = self.surrender() {
                    actions.push(note);
                    actions.extend(self.stop(now));
                }
                actions
            }
            (Phase::Starting, Event::BindFailed) => {
                self.bind_failures = self.bind_failures.saturating_add(1);
                let retry_in = self.backoff(self.bind_failures);
                let since = *self.port_since.get_or_insert(now);
                self.phase = Phase::WaitingForPort {
                    since,
                    retry_at: now + retry_in,
                };
                let mut actions = vec![Action::Note(Note::WaitingForPort {
                    since,
                    failures: self.bind_failures,
                    retry_in,
                })];
                actions.extend(self.outcome(Err(Unmet::BindFailed)));
                actions
            }
            (Phase::Starting, Event::RivalsFound) => {
                let mut actions = vec![Action::Note(Note::StoppingRivals)];
                actions.extend(self.stop_others(None, now, now));
                actions
            }
            (Phase::WaitingForPort { retry_at, .. }, Event::Tick) if now >= retry_at => {
                self.launch()
            }
            (Phase::Backoff { until }, Event::Tick) if now >= until => self.launch(),

            // --- health -------------------------------------------------
            (Phase::Running { pid, since, health }, Event::Ready)
                if health.ready_since.is_none() =>
            {
                self.become_ready(pid, since, now)
            }
            (
                Phase::Running {
                    pid,
                    since,
                    mut health,
                },
                Event::ProbeOk,
            ) => {
                health.probe_failures = 0;
                if health.ready_since.is_none() && s.health.probe_ready {
                    return self.become_ready(pid, since, now);
                }
                self.phase = Phase::Running { pid, since, health };
                vec![]
            }
            (
                Phase::Running {
                    pid,
                    since,
                    mut health,
                },
                Event::ProbeFailed,
            ) if health.ready_since.is_some() => {
                health.probe_failures = health.probe_failures.saturating_add(1);
                if health.probe_failures >= s.health.failures.max(1) {
                    return self.give_up(pid, health, Failure::Probes, now);
                }
                self.phase = Phase::Running { pid, since, health };
                vec![]
            }
            (
                Phase::Running {
                    pid,
                    since,
                    mut health,
                },
                Event::WatchdogPing,
            ) if health.ready_since.is_some() => {
                health.watchdog_until = s.health.watchdog.map(|w| now + w);
                self.phase = Phase::Running { pid, since, health };
                vec![]
            }
            // During a handover the serving child is not restarted for its
            // memory: the old one is being replaced already (stopping it
            // now would make the gap overlap is there to avoid), and a new
            // one that took over waits for the old one to be gone (one
            // handover at a time); the next check after that restarts it.
            (Phase::Running { .. }, Event::TooBig(_)) if self.handover.is_some() => vec![],
            (Phase::Running { pid, health, .. }, Event::TooBig(bytes))
                if s.overlap
                    && health.ready_since.is_some()
                    && self.replace_failed != Some(pid) =>
            {
                let mut actions = vec![Action::Note(Note::Unhealthy {
                    pid,
                    why: Failure::Memory(bytes),
                })];
                actions.extend(self.begin_handover(pid, now));
                actions
            }
            (Phase::Running { pid, health, .. }, Event::TooBig(bytes)) => {
                self.give_up(pid, health, Failure::Memory(bytes), now)
            }
            (Phase::Running { pid, since, health }, Event::Tick) => match health.ready_since {
                None if s.health.readiness && now >= since + s.health.start_timeout => {
                    self.give_up(pid, health, Failure::StartTimeout, now)
                }
                Some(_) if health.watchdog_until.is_some_and(|w| now >= w) => {
                    self.give_up(pid, health, Failure::Watchdog, now)
                }
                _ => vec![],
            },

            // --- the child's end ----------------------------------------
            (Phase::Running { pid, since, health }, Event::ChildExited { kind, others_left }) => {
                self.last_exit = Some(LastExit { kind, at: now });
                // A second child still runs: it is stopped with the leftovers.
                let mut merged = self.merge_handover(Some(Unmet::OldEnded));
                let others_left = others_left || !merged.is_empty();
                if health.ready_since.is_none() {
                    merged.extend(self.outcome(Err(Unmet::Exited(kind))));
                }
                let delay = self.next_delay(health, now);
                let restart_at = now + delay;
                let surrender = self.surrender();
                let next = match (others_left, self.want) {
                    (true, _) => Next::StopOthers,
                    (false, Want::Down) => Next::Exit,
                    (false, Want::Up) if delay.is_zero() => Next::RestartNow,
                    (false, Want::Up) => Next::RestartIn(delay),
                };
                let mut actions = vec![Action::Note(Note::ChildExited {
                    pid,
                    kind,
                    lived: now.saturating_duration_since(since),
                    expected: false,
                    streak: self.streak,
                    next,
                })];
                actions.extend(merged);
                actions.extend(surrender);
                actions.extend(if others_left {
                    // Leftovers would hold fd 3 and the log pipe: clear them first.
                    self.stop_others(None, now, restart_at)
                } else {
                    self.finish(restart_at, now)
                });
                actions
            }
            (
                Phase::Stopping {
                    leader: Some(pid),
                    deadline,
                    killed,
                    restart_at,
                },
                Event::ChildExited { kind, others_left },
            ) => {
                self.last_exit = Some(LastExit { kind, at: now });
                let next = match (others_left, self.want) {
                    (true, _) => Next::StopOthers,
                    (false, Want::Down) => Next::Exit,
                    (false, Want::Up) if restart_at <= now => Next::RestartNow,
                    (false, Want::Up) => Next::RestartIn(restart_at - now),
                };
                let mut actions = vec![Action::Note(Note::ChildExited {
                    pid,
                    kind,
                    lived: Duration::ZERO,
                    expected: true,
                    streak: self.streak,
                    next,
                })];
                if others_left {
                    self.phase = Phase::Stopping {
                        leader: None,
                        deadline,
                        killed,
                        restart_at,
                    };
                    // Those found only now get what the others got.
                    actions.push(Action::Signal { kill: killed });
                } else {
                    actions.extend(self.finish(restart_at, now));
                }
                actions
            }
            (
                Phase::Stopping {
                    leader: None,
                    restart_at,
                    ..
                },
                Event::OthersGone,
            ) => self.finish(restart_at, now),
            (
                Phase::Stopping {
                    leader,
                    deadline,
                    killed,
                    restart_at,
                },
                Event::Tick,
            ) if now >= deadline => {
                if !killed {
                    self.phase = Phase::Stopping {
                        leader,
                        deadline: now + s.kill_grace,
                        killed: true,
                        restart_at,
                    };
                    vec![Action::Signal { kill: true }]
                } else if leader.is_some() {
                    vec![]
                } else {
                    let mut actions = vec![Action::Note(Note::GaveUp)];
                    actions.extend(self.finish(restart_at, now));
                    actions
                }
            }

            // Everything else (early ticks, stray events) changes nothing.
            _ => vec![],
        }
    }

    /// SIGTERM / SIGINT: stop the child (if any) and exit; a second one
    /// while the child is being stopped for that reason kills at once.
    fn stop(&mut self, now: Instant) -> Vec<Action> {
        let first = self.want == Want::Up;
        self.want = Want::Down;
        let mut actions: Vec<Action> = self.outcome(Err(Unmet::Stopping)).into_iter().collect();
        // Both children of a handover are stopped.
        actions.extend(self.merge_handover(None));
        actions.extend(self.stop_phase(first, now));
        actions
    }

    fn stop_phase(&mut self, first: bool, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Running { pid, .. } => self.stop_child(pid, now, now),
            Phase::Stopping {
                leader,
                killed: false,
                restart_at,
                ..
            } if !first => {
                self.phase = Phase::Stopping {
                    leader,
                    deadline: now + self.settings.kill_grace,
                    killed: true,
                    restart_at,
                };
                vec![Action::Signal { kill: true }]
            }
            // Already stopping (for a restart, or killed): exit once done.
            Phase::Stopping { .. } => vec![],
            // No child: whatever still holds our socket (a daemon a child
            // left, found only now) is stopped before we exit; the driver
            // says `OthersGone` at once when there is nothing.
            Phase::Starting | Phase::WaitingForPort { .. } | Phase::Backoff { .. } => {
                self.stop_others(None, now, now)
            }
            Phase::Exited => vec![],
        }
    }

    /// The delay before the next child after this one ends now: none after
    /// a run that was *ready* for `reset_after`, else the next backoff step.
    fn next_delay(&mut self, health: Health, now: Instant) -> Duration {
        let healthy = health
            .ready_since
            .is_some_and(|r| now.saturating_duration_since(r) >= self.settings.reset_after);
        if healthy {
            self.streak = 0;
            Duration::ZERO
        } else {
            self.streak = self.streak.saturating_add(1);
            self.backoff(self.streak)
        }
    }

    /// The streak just grew: at `give_up_after` the operator's wish turns
    /// to down (what follows stops everything and exits), said once.
    fn surrender(&mut self) -> Option<Action> {
        let limit = self.settings.give_up_after;
        if limit == 0 || self.streak < limit || self.surrendered {
            return None;
        }
        self.surrendered = true;
        self.want = Want::Down;
        Some(Action::Note(Note::Surrender {
            streak: self.streak,
        }))
    }

    fn become_ready(&mut self, pid: i32, since: Instant, now: Instant) -> Vec<Action> {
        self.phase = Phase::Running {
            pid,
            since,
            health: Health {
                ready_since: Some(now),
                probe_failures: 0,
                watchdog_until: self.settings.health.watchdog.map(|w| now + w),
            },
        };
        let mut actions = vec![Action::Note(Note::Ready { pid })];
        actions.extend(self.outcome(Ok(pid)));
        actions
    }

    /// The outcome of a requested restart, told once.
    fn outcome(&mut self, result: Result<i32, Unmet>) -> Option<Action> {
        std::mem::take(&mut self.asked).then_some(Action::Note(Note::Restarted(result)))
    }

    /// A live child broke its health rules: stop it gracefully, then
    /// restart under the backoff policy.
    fn give_up(&mut self, pid: i32, health: Health, why: Failure, now: Instant) -> Vec<Action> {
        let restart_at = now + self.next_delay(health, now);
        let mut actions = vec![Action::Note(Note::Unhealthy { pid, why })];
        if why == Failure::StartTimeout {
            actions.extend(self.outcome(Err(Unmet::NotReady)));
        }
        actions.extend(self.merge_handover(None));
        actions.extend(self.surrender());
        actions.extend(self.stop_child(pid, now, restart_at));
        actions
    }

    /// A launch got past the bind: the port's failures are forgotten.
    fn port_bound(&mut self) {
        self.bind_failures = 0;
        self.port_since = None;
    }

    fn launch(&mut self) -> Vec<Action> {
        self.phase = Phase::Starting;
        vec![Action::Launch]
    }

    fn stop_child(&mut self, pid: i32, now: Instant, restart_at: Instant) -> Vec<Action> {
        self.stop_others(Some(pid), now, restart_at)
    }

    fn stop_others(
        &mut self,
        leader: Option<i32>,
        now: Instant,
        restart_at: Instant,
    ) -> Vec<Action> {
        self.phase = Phase::Stopping {
            leader,
            deadline: now + self.settings.stop_timeout,
            killed: false,
            restart_at,
        };
        vec![Action::Signal { kill: false }]
    }

    fn finish(&mut self, restart_at: Instant, now: Instant) -> Vec<Action> {
        match self.want {
            Want::Down => {
                self.phase = Phase::Exited;
                vec![Action::Exit]
            }
            Want::Up if restart_at <= now => self.launch(),
            Want::Up => {
                self.phase = Phase::Backoff { until: restart_at };
                vec![]
            }
        }
    }
}
