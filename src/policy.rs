//! The restart policy: a pure state machine.
//!
//! `Machine::step(event, now)` returns the side effects the driver must
//! perform; it never reads a clock, touches a process or sleeps, so every
//! rule of SPEC.md's "Restart policy" is a table of unit tests below.
//! The driver (`daemon/`) turns signals, child exits and timers into
//! [`Event`]s and carries out the returned [`Action`]s in order. `Launch`
//! is answered at once with a further event (`Spawned`, `SpawnFailed`,
//! `BindFailed` or `RivalsFound`); [`Action::Note`]s change nothing and only
//! tell the driver what happened and what comes next, so its log lines and
//! alerts can never disagree with the rule that decided.
//!
//! What the operator *wants* (up or down) is kept apart from what *is* (the
//! [`Phase`]), as s6 keeps `flagwantup` beside its state.

use std::time::{Duration, Instant};

/// The numbers the policy needs from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) reset_after: Duration,
    pub(crate) stop_timeout: Duration,
    /// How long to wait after SIGKILL for leftovers to vanish before going
    /// on without them (a process in uninterruptible sleep, or a zombie that
    /// a careless init never reaps).
    pub(crate) kill_grace: Duration,
    pub(crate) health: HealthPolicy,
}

/// Readiness and liveness rules (`[health]`); the default has none: a
/// child is ready the moment it is spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct HealthPolicy {
    /// A spawned child is `starting` until `Ready` (or, with `probe_ready`,
    /// its first good probe).
    pub(crate) readiness: bool,
    /// Readiness comes from the HTTP probe rather than READY=1.
    pub(crate) probe_ready: bool,
    pub(crate) start_timeout: Duration,
    /// Consecutive failed probes that make a ready child unhealthy.
    pub(crate) failures: u32,
    /// A ready child must ping at least this often.
    pub(crate) watchdog: Option<Duration>,
}

/// What a running child has shown of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Health {
    /// Since when it has been ready; `None` while it is still starting.
    pub(crate) ready_since: Option<Instant>,
    pub(crate) probe_failures: u32,
    /// The next watchdog ping is due by then.
    pub(crate) watchdog_until: Option<Instant>,
}

/// Why a live child is given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not ready within `start_timeout`.
    StartTimeout,
    /// `failures` probes in a row failed.
    Probes,
    /// No WATCHDOG=1 within the watchdog interval.
    Watchdog,
    /// The child's resident memory passed `max_memory` (bytes seen).
    Memory(u64),
}

/// How a child ended, as `waitpid` told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitKind {
    Code(i32),
    Signal(i32),
}

/// The last exit of a child, with when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastExit {
    pub(crate) kind: ExitKind,
    pub(crate) at: Instant,
}

/// What the operator wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Keep a child running.
    Up,
    /// Stop everything and exit.
    Down,
}

/// What *is*, each state with the data only it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Lock held; the port is being bound and a child started (transient:
    /// the driver answers `Launch` at once).
    Starting,
    /// The port could not be bound since `since`; the next try is at `retry_at`.
    WaitingForPort { since: Instant, retry_at: Instant },
    /// A child is alive (`starting` until ready, when readiness is configured).
    Running {
        pid: i32,
        since: Instant,
        health: Health,
    },
    /// No child; the next one starts at `until`.
    Backoff { until: Instant },
    /// Stop signals went out. `leader` is the child while it is alive (its
    /// exit is reaped); once it is gone, or when there was none (leftovers
    /// of an earlier supervisor, a rival holding our socket), the driver
    /// reports `OthersGone` when everything it is stopping has vanished.
    /// Then the next child starts, not before `restart_at`, unless the
    /// operator wants the supervisor down.
    Stopping {
        leader: Option<i32>,
        deadline: Instant,
        killed: bool,
        restart_at: Instant,
    },
    /// Done: the driver exits.
    Exited,
}

impl Phase {
    /// The state name of SPEC.md.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::WaitingForPort { .. } => "waiting-for-port",
            Phase::Running { health, .. } if health.ready_since.is_none() => "starting",
            Phase::Running { .. } => "running",
            Phase::Backoff { .. } => "backoff",
            Phase::Stopping { .. } => "stopping",
            Phase::Exited => "not-running",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The lock is held and the driver is ready.
    Start,
    /// Answers to `Launch`: a child runs; it could not be started; the port
    /// could not be bound; processes outside the last child's process group
    /// hold our socket and must be stopped first.
    Spawned {
        pid: i32,
    },
    SpawnFailed,
    BindFailed,
    RivalsFound,
    /// The child was reaped; `others_left` says processes it leaves behind
    /// (its process group, anything holding our socket) are still alive.
    ChildExited {
        kind: ExitKind,
        others_left: bool,
    },
    /// Everything being stopped besides the child is gone.
    OthersGone,
    /// A timer fired; the machine checks its own deadline.
    Tick,
    /// SIGUSR1 / `supervisor restart`.
    Restart,
    /// The child said READY=1.
    Ready,
    /// An HTTP probe answered 2xx / failed.
    ProbeOk,
    ProbeFailed,
    /// The child said WATCHDOG=1.
    WatchdogPing,
    /// The child's process group uses more memory than allowed (bytes).
    TooBig(u64),
    /// SIGTERM / SIGINT / `supervisor stop`; a second one kills at once.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Make sure the port is ours and listening, look for rivals holding
    /// our socket, and start a child; answer with the event that says how.
    Launch,
    /// Send the stop signal (`kill == false`) or SIGKILL to everything
    /// being stopped: the child's process group, the child itself if it
    /// left the group, and whatever else holds our socket.
    Signal {
        kill: bool,
    },
    Exit,
    /// Something for the log (and for alerts); nothing to do.
    Note(Note),
}

/// What happens after a child's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    RestartNow,
    RestartIn(Duration),
    /// Processes it left behind are stopped first (the restart follows,
    /// after the backoff counted from the exit).
    StopOthers,
    Exit,
}

/// What the driver is told, for people and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    ChildExited {
        pid: i32,
        kind: ExitKind,
        lived: Duration,
        /// Stopped on request (a stop, a restart, a failed health rule)
        /// rather than dying on its own.
        expected: bool,
        /// Early deaths in a row, this one included (0 after a healthy run).
        streak: u32,
        next: Next,
    },
    SpawnFailed {
        streak: u32,
        retry_in: Duration,
    },
    WaitingForPort {
        since: Instant,
        failures: u32,
        retry_in: Duration,
    },
    /// Stop signals go to processes outside the last child's group that
    /// hold our socket, before a child is started.
    StoppingRivals,
    /// A live child broke a health rule and is being stopped gracefully.
    Unhealthy {
        pid: i32,
        why: Failure,
    },
    /// The child became ready (tell systemd, if it listens).
    Ready {
        pid: i32,
    },
    /// Leftovers did not vanish after SIGKILL; going on without them.
    GaveUp,
}

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
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn want(&self) -> Want {
        self.want
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
        let s = self.settings;
        match (self.phase, event) {
            (Phase::Exited, _) => vec![],

            // --- the operator -------------------------------------------
            (_, Event::Stop) => self.stop(now),
            (Phase::Running { pid, .. }, Event::Restart) => self.stop_child(pid, now, now),
            (Phase::Backoff { .. } | Phase::WaitingForPort { .. }, Event::Restart) => self.launch(),
            (_, Event::Restart) => vec![],

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
                    vec![Action::Note(Note::Ready { pid })]
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
                vec![Action::Note(Note::SpawnFailed {
                    streak: self.streak,
                    retry_in,
                })]
            }
            (Phase::Starting, Event::BindFailed) => {
                self.bind_failures = self.bind_failures.saturating_add(1);
                let retry_in = self.backoff(self.bind_failures);
                let since = *self.port_since.get_or_insert(now);
                self.phase = Phase::WaitingForPort {
                    since,
                    retry_at: now + retry_in,
                };
                vec![Action::Note(Note::WaitingForPort {
                    since,
                    failures: self.bind_failures,
                    retry_in,
                })]
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
                let delay = self.next_delay(health, now);
                let restart_at = now + delay;
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
        vec![Action::Note(Note::Ready { pid })]
    }

    /// A live child broke its health rules: stop it gracefully, then
    /// restart under the backoff policy.
    fn give_up(&mut self, pid: i32, health: Health, why: Failure, now: Instant) -> Vec<Action> {
        let restart_at = now + self.next_delay(health, now);
        let mut actions = vec![Action::Note(Note::Unhealthy { pid, why })];
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The actions that do something: notes left out.
    fn effects(actions: Vec<Action>) -> Vec<Action> {
        actions
            .into_iter()
            .filter(|a| !matches!(a, Action::Note(_)))
            .collect()
    }

    fn notes(actions: &[Action]) -> Vec<Note> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Note(n) => Some(*n),
                _ => None,
            })
            .collect()
    }

    fn settings() -> Settings {
        Settings {
            initial_backoff: ms(1000),
            max_backoff: ms(8000),
            reset_after: ms(60_000),
            stop_timeout: ms(10_000),
            kill_grace: ms(5000),
            health: HealthPolicy::default(),
        }
    }

    /// Settings with readiness by READY=1 and a 2 s watchdog.
    fn notify_settings() -> Settings {
        Settings {
            health: HealthPolicy {
                readiness: true,
                probe_ready: false,
                start_timeout: ms(5000),
                failures: 3,
                watchdog: Some(ms(2000)),
            },
            ..settings()
        }
    }

    /// Settings with readiness and liveness by HTTP probe.
    fn probe_settings() -> Settings {
        Settings {
            health: HealthPolicy {
                readiness: true,
                probe_ready: true,
                start_timeout: ms(5000),
                failures: 3,
                watchdog: None,
            },
            ..settings()
        }
    }

    fn spawned(settings: Settings, t0: Instant) -> Machine {
        let mut m = Machine::new(settings);
        m.step(Event::Start, t0);
        m.step(Event::Spawned { pid: 100 }, t0);
        m
    }

    /// A machine with a child running since `t0`.
    fn running(t0: Instant) -> Machine {
        let mut m = Machine::new(settings());
        assert_eq!(m.step(Event::Start, t0), vec![Action::Launch]);
        assert_eq!(
            m.step(Event::Spawned { pid: 100 }, t0),
            vec![Action::Note(Note::Ready { pid: 100 })]
        );
        m
    }

    const DIED: Event = Event::ChildExited {
        kind: ExitKind::Code(1),
        others_left: false,
    };

    fn exited(kind: ExitKind, others_left: bool) -> Event {
        Event::ChildExited { kind, others_left }
    }

    #[test]
    fn readiness_keeps_a_child_starting_until_ready() {
        let t0 = Instant::now();
        let mut m = spawned(notify_settings(), t0);
        assert_eq!(m.phase().name(), "starting");
        assert_eq!(m.deadline(), Some(t0 + ms(5000)));
        // Pings before READY=1 mean nothing.
        assert_eq!(m.step(Event::WatchdogPing, t0 + ms(10)), vec![]);
        assert_eq!(
            m.step(Event::Ready, t0 + ms(1000)),
            vec![Action::Note(Note::Ready { pid: 100 })]
        );
        assert_eq!(m.phase().name(), "running");
        assert!(m.ready());
        assert_eq!(m.deadline(), Some(t0 + ms(3000)), "the watchdog is armed");
        assert_eq!(m.step(Event::Ready, t0 + ms(1100)), vec![], "only once");
    }

    #[test]
    fn not_ready_within_start_timeout_is_a_failed_start() {
        let t0 = Instant::now();
        let mut m = spawned(notify_settings(), t0);
        assert_eq!(m.step(Event::Tick, t0 + ms(4999)), vec![]);
        assert_eq!(
            m.step(Event::Tick, t0 + ms(5000)),
            vec![
                Action::Note(Note::Unhealthy {
                    pid: 100,
                    why: Failure::StartTimeout
                }),
                Action::Signal { kill: false }
            ]
        );
        assert_eq!(m.streak(), 1);
        // The backoff counts from when it was given up on.
        let actions = m.step(exited(ExitKind::Signal(15), false), t0 + ms(5100));
        assert_eq!(effects(actions.clone()), vec![]);
        assert!(matches!(
            notes(&actions)[..],
            [Note::ChildExited {
                expected: true,
                next: Next::RestartIn(d),
                ..
            }] if d == ms(900)
        ));
        assert_eq!(
            m.phase(),
            Phase::Backoff {
                until: t0 + ms(6000)
            }
        );
    }

    #[test]
    fn a_missed_watchdog_ping_stops_the_child() {
        let t0 = Instant::now();
        let mut m = spawned(notify_settings(), t0);
        m.step(Event::Ready, t0);
        // (ping at, tick at, gives up?)
        let table = [(1500, 3000, false), (3400, 5000, false), (5300, 7300, true)];
        for (ping, tick, gives_up) in table {
            m.step(Event::WatchdogPing, t0 + ms(ping));
            let actions = m.step(Event::Tick, t0 + ms(tick));
            assert_eq!(
                actions.contains(&Action::Note(Note::Unhealthy {
                    pid: 100,
                    why: Failure::Watchdog
                })),
                gives_up,
                "ping {ping} tick {tick}: {actions:?}"
            );
        }
        assert_eq!(m.phase().name(), "stopping");
    }

    #[test]
    fn probes_make_ready_and_consecutive_failures_stop() {
        let t0 = Instant::now();
        let mut m = spawned(probe_settings(), t0);
        // Failures before ready do not count; start_timeout does.
        assert_eq!(m.step(Event::ProbeFailed, t0 + ms(50)), vec![]);
        assert_eq!(
            m.step(Event::ProbeOk, t0 + ms(100)),
            vec![Action::Note(Note::Ready { pid: 100 })]
        );
        // (event, gives up?)
        let table = [
            (Event::ProbeFailed, false),
            (Event::ProbeFailed, false),
            (Event::ProbeOk, false), // resets the count
            (Event::ProbeFailed, false),
            (Event::ProbeFailed, false),
            (Event::ProbeFailed, true),
        ];
        for (i, (ev, gives_up)) in table.into_iter().enumerate() {
            let actions = m.step(ev, t0 + ms(200 + i as u64));
            assert_eq!(
                actions.contains(&Action::Note(Note::Unhealthy {
                    pid: 100,
                    why: Failure::Probes
                })),
                gives_up,
                "step {i}: {actions:?}"
            );
        }
    }

    #[test]
    fn too_much_memory_stops_the_child_gracefully() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let actions = m.step(Event::TooBig(70 << 20), t0 + ms(500));
        assert_eq!(
            actions,
            vec![
                Action::Note(Note::Unhealthy {
                    pid: 100,
                    why: Failure::Memory(70 << 20)
                }),
                Action::Signal { kill: false }
            ]
        );
        // An early end: the backoff applies as for any other failure.
        m.step(exited(ExitKind::Signal(15), false), t0 + ms(600));
        assert_eq!(
            m.phase(),
            Phase::Backoff {
                until: t0 + ms(1500)
            }
        );
        // Not while no child runs.
        assert_eq!(m.step(Event::TooBig(1), t0 + ms(700)), vec![]);
    }

    #[test]
    fn backoff_resets_only_after_being_ready_for_reset_after() {
        let t0 = Instant::now();
        // Alive 90 s but ready only for the last 30 s: still an early death.
        let mut m = spawned(notify_settings(), t0);
        m.step(Event::Ready, t0 + ms(60_000));
        m.phase = match m.phase {
            Phase::Running {
                pid,
                since,
                mut health,
            } => {
                health.watchdog_until = None;
                Phase::Running { pid, since, health }
            }
            p => p,
        };
        assert_eq!(effects(m.step(DIED, t0 + ms(90_000))), vec![]);
        assert_eq!(m.streak(), 1);
        // Ready for reset_after: restarted at once.
        let mut m = spawned(probe_settings(), t0);
        m.step(Event::ProbeOk, t0 + ms(1000));
        assert_eq!(effects(m.step(DIED, t0 + ms(61_000))), vec![Action::Launch]);
        assert_eq!(m.streak(), 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let m = Machine::new(settings());
        let table = [
            (1, 1000),
            (2, 2000),
            (3, 4000),
            (4, 8000),
            (5, 8000),
            (40, 8000),
            (u32::MAX, 8000),
        ];
        for (n, want) in table {
            assert_eq!(m.backoff(n), ms(want), "n = {n}");
        }
    }

    #[test]
    fn early_deaths_back_off_and_double() {
        let t0 = Instant::now();
        let mut m = running(t0);
        // (child lived for, expected delay before the next spawn)
        let table = [(200, 1000), (100, 2000), (50, 4000), (10, 8000), (10, 8000)];
        let mut t = t0;
        for (i, (lived, delay)) in table.into_iter().enumerate() {
            t += ms(lived);
            let pid = if i == 0 { 100 } else { 199 + i as i32 };
            assert_eq!(
                m.step(DIED, t),
                vec![Action::Note(Note::ChildExited {
                    pid,
                    kind: ExitKind::Code(1),
                    lived: ms(lived),
                    expected: false,
                    streak: i as u32 + 1,
                    next: Next::RestartIn(ms(delay)),
                })],
                "death {i}"
            );
            assert_eq!(
                m.phase(),
                Phase::Backoff {
                    until: t + ms(delay)
                },
                "death {i}"
            );
            assert_eq!(m.deadline(), Some(t + ms(delay)));
            // An early tick does nothing; the due one launches.
            assert_eq!(m.step(Event::Tick, t + ms(delay) - ms(1)), vec![]);
            t += ms(delay);
            assert_eq!(m.step(Event::Tick, t), vec![Action::Launch], "death {i}");
            m.step(
                Event::Spawned {
                    pid: 200 + i as i32,
                },
                t,
            );
        }
        assert_eq!(m.restarts(), 5);
    }

    #[test]
    fn a_healthy_run_resets_the_backoff_and_restarts_at_once() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(DIED, t0 + ms(10));
        m.step(Event::Tick, t0 + ms(1010));
        m.step(Event::Spawned { pid: 101 }, t0 + ms(1010));
        assert_eq!(m.streak(), 1);
        // Lives exactly reset_after: healthy.
        let t = t0 + ms(1010) + ms(60_000);
        let actions = m.step(DIED, t);
        assert!(matches!(
            notes(&actions)[..],
            [Note::ChildExited {
                streak: 0,
                next: Next::RestartNow,
                ..
            }]
        ));
        assert_eq!(effects(actions), vec![Action::Launch]);
        assert_eq!(m.streak(), 0);
        assert_eq!(m.phase(), Phase::Starting);
        m.step(Event::Spawned { pid: 102 }, t);
        // The next early death starts again from initial_backoff.
        m.step(DIED, t + ms(5));
        assert_eq!(
            m.phase(),
            Phase::Backoff {
                until: t + ms(5) + ms(1000)
            }
        );
    }

    #[test]
    fn last_exit_is_recorded() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(exited(ExitKind::Signal(9), false), t0 + ms(3));
        assert_eq!(
            m.last_exit(),
            Some(LastExit {
                kind: ExitKind::Signal(9),
                at: t0 + ms(3)
            })
        );
    }

    #[test]
    fn leftovers_are_stopped_before_the_next_child() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let actions = m.step(exited(ExitKind::Code(0), true), t0 + ms(100));
        assert!(matches!(
            notes(&actions)[..],
            [Note::ChildExited {
                next: Next::StopOthers,
                ..
            }]
        ));
        assert_eq!(effects(actions), vec![Action::Signal { kill: false }]);
        assert!(matches!(m.phase(), Phase::Stopping { leader: None, .. }));
        assert_eq!(m.child_pid(), None);
        // Gone quickly, but the backoff (1 s from the exit) still applies.
        assert_eq!(m.step(Event::OthersGone, t0 + ms(150)), vec![]);
        assert_eq!(
            m.phase(),
            Phase::Backoff {
                until: t0 + ms(1100)
            }
        );
    }

    #[test]
    fn stubborn_leftovers_get_sigkill_then_are_given_up() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(exited(ExitKind::Code(0), true), t0);
        assert_eq!(m.deadline(), Some(t0 + ms(10_000)));
        let t1 = t0 + ms(10_000);
        assert_eq!(m.step(Event::Tick, t1), vec![Action::Signal { kill: true }]);
        assert_eq!(m.deadline(), Some(t1 + ms(5000)));
        let t2 = t1 + ms(5000);
        assert_eq!(
            m.step(Event::Tick, t2),
            vec![Action::Note(Note::GaveUp), Action::Launch]
        );
    }

    #[test]
    fn graceful_stop_then_sigkill_after_stop_timeout() {
        let t0 = Instant::now();
        let mut m = running(t0);
        assert_eq!(
            m.step(Event::Stop, t0),
            vec![Action::Signal { kill: false }]
        );
        assert_eq!(m.phase().name(), "stopping");
        assert_eq!(m.want(), Want::Down);
        assert_eq!(m.step(Event::Tick, t0 + ms(9_999)), vec![]);
        assert_eq!(
            m.step(Event::Tick, t0 + ms(10_000)),
            vec![Action::Signal { kill: true }]
        );
        // Killed leader: no timer until it is reaped.
        assert_eq!(m.deadline(), None);
        let actions = m.step(exited(ExitKind::Signal(9), false), t0 + ms(10_001));
        assert!(matches!(
            notes(&actions)[..],
            [Note::ChildExited {
                expected: true,
                next: Next::Exit,
                ..
            }]
        ));
        assert_eq!(effects(actions), vec![Action::Exit]);
        assert_eq!(m.phase(), Phase::Exited);
    }

    #[test]
    fn a_second_stop_kills_at_once() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(Event::Stop, t0);
        assert_eq!(
            m.step(Event::Stop, t0 + ms(1)),
            vec![Action::Signal { kill: true }]
        );
        assert_eq!(m.step(Event::Stop, t0 + ms(2)), vec![]);
    }

    #[test]
    fn stop_without_a_child_exits_once_nothing_holds_the_socket() {
        let t0 = Instant::now();
        // (how to get there, phase name before the stop)
        let mut backoff = running(t0);
        backoff.step(DIED, t0);
        let mut waiting = Machine::new(settings());
        waiting.step(Event::Start, t0);
        waiting.step(Event::BindFailed, t0);
        for (mut m, name) in [(backoff, "backoff"), (waiting, "waiting-for-port")] {
            assert_eq!(m.phase().name(), name);
            // Anything still holding the socket is stopped first.
            assert_eq!(
                m.step(Event::Stop, t0),
                vec![Action::Signal { kill: false }],
                "{name}"
            );
            assert_eq!(m.step(Event::OthersGone, t0), vec![Action::Exit], "{name}");
            assert_eq!(m.phase(), Phase::Exited);
            assert_eq!(m.step(Event::Tick, t0 + ms(100_000)), vec![]);
        }
    }

    #[test]
    fn stop_during_a_restart_exits_instead_of_restarting() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(Event::Restart, t0);
        assert_eq!(m.step(Event::Stop, t0 + ms(1)), vec![]);
        let actions = m.step(exited(ExitKind::Signal(15), false), t0 + ms(2));
        assert_eq!(effects(actions), vec![Action::Exit]);
    }

    #[test]
    fn stop_while_leftovers_are_stopped_exits_once_they_are_gone() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(exited(ExitKind::Code(1), true), t0);
        // The first stop only changes where this ends; the second kills.
        assert_eq!(m.step(Event::Stop, t0 + ms(1)), vec![]);
        assert_eq!(
            m.step(Event::Stop, t0 + ms(2)),
            vec![Action::Signal { kill: true }]
        );
        assert_eq!(m.step(Event::OthersGone, t0 + ms(3)), vec![Action::Exit]);
    }

    #[test]
    fn restart_request_restarts_without_backoff() {
        let t0 = Instant::now();
        let mut m = running(t0);
        assert_eq!(
            m.step(Event::Restart, t0),
            vec![Action::Signal { kill: false }]
        );
        // A second request while stopping changes nothing.
        assert_eq!(m.step(Event::Restart, t0), vec![]);
        let actions = m.step(exited(ExitKind::Signal(15), false), t0 + ms(5));
        assert_eq!(effects(actions), vec![Action::Launch]);
        assert_eq!(m.streak(), 0);
    }

    #[test]
    fn restart_request_cuts_backoff_and_port_waits_short() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(DIED, t0);
        assert_eq!(m.step(Event::Restart, t0 + ms(1)), vec![Action::Launch]);
        let mut w = Machine::new(settings());
        w.step(Event::Start, t0);
        w.step(Event::BindFailed, t0);
        assert_eq!(w.step(Event::Restart, t0 + ms(1)), vec![Action::Launch]);
    }

    #[test]
    fn port_retries_back_off_and_reset_once_bound() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.step(Event::Start, t0);
        let mut t = t0;
        for (n, delay) in [1000, 2000, 4000, 8000, 8000].into_iter().enumerate() {
            assert_eq!(
                m.step(Event::BindFailed, t),
                vec![Action::Note(Note::WaitingForPort {
                    since: t0,
                    failures: n as u32 + 1,
                    retry_in: ms(delay)
                })]
            );
            assert_eq!(
                m.phase(),
                Phase::WaitingForPort {
                    since: t0,
                    retry_at: t + ms(delay)
                }
            );
            t += ms(delay);
            assert_eq!(m.step(Event::Tick, t), vec![Action::Launch]);
        }
        m.step(Event::Spawned { pid: 7 }, t);
        assert_eq!((m.bind_failures, m.port_since), (0, None));
        // The port's failures never count against the child.
        assert_eq!(m.streak(), 0);
    }

    #[test]
    fn failed_spawns_back_off_like_early_deaths() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.step(Event::Start, t0);
        assert_eq!(
            m.step(Event::SpawnFailed, t0),
            vec![Action::Note(Note::SpawnFailed {
                streak: 1,
                retry_in: ms(1000)
            })]
        );
        assert_eq!(
            m.phase(),
            Phase::Backoff {
                until: t0 + ms(1000)
            }
        );
        m.step(Event::Tick, t0 + ms(1000));
        m.step(Event::SpawnFailed, t0 + ms(1000));
        assert_eq!(
            m.phase(),
            Phase::Backoff {
                until: t0 + ms(3000)
            }
        );
        assert_eq!(m.spawns, 0);
    }

    #[test]
    fn rivals_holding_the_socket_are_stopped_before_a_launch() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(DIED, t0);
        m.step(Event::Tick, t0 + ms(1000));
        assert_eq!(
            m.step(Event::RivalsFound, t0 + ms(1000)),
            vec![
                Action::Note(Note::StoppingRivals),
                Action::Signal { kill: false }
            ]
        );
        assert_eq!(m.child_pid(), None);
        assert_eq!(m.phase().name(), "stopping");
        // Gone: the launch is tried again at once.
        assert_eq!(
            m.step(Event::OthersGone, t0 + ms(1200)),
            vec![Action::Launch]
        );
    }

    #[test]
    fn an_earlier_supervisors_leftovers_are_stopped_first() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.resume(3);
        assert_eq!(m.adopt(t0), vec![Action::Signal { kill: false }]);
        assert_eq!(m.phase().name(), "stopping");
        assert_eq!(m.deadline(), Some(t0 + ms(10_000)));
        assert_eq!(m.step(Event::OthersGone, t0 + ms(5)), vec![Action::Launch]);
        // The crash loop goes on where it was.
        m.step(Event::Spawned { pid: 9 }, t0 + ms(5));
        m.step(DIED, t0 + ms(10));
        assert_eq!(m.streak(), 4);
        assert_eq!(
            m.phase(),
            Phase::Backoff {
                until: t0 + ms(10) + ms(8000)
            }
        );
        // A stop meanwhile: exit once they are gone, start nothing.
        let mut m = Machine::new(settings());
        m.adopt(t0);
        assert_eq!(m.step(Event::Stop, t0 + ms(1)), vec![]);
        assert_eq!(m.step(Event::OthersGone, t0 + ms(2)), vec![Action::Exit]);
    }

    #[test]
    fn a_snapshot_carries_over_under_new_settings() {
        let t0 = Instant::now();
        let mut m = spawned(notify_settings(), t0);
        m.step(Event::Ready, t0 + ms(100));
        m.step(Event::ProbeFailed, t0 + ms(200));
        let snap = m.snapshot();
        // New settings: a longer watchdog; the counters start afresh.
        let mut s = notify_settings();
        s.health.watchdog = Some(ms(9000));
        let r = Machine::restore(s, snap, t0 + ms(300));
        assert_eq!(r.child_pid(), Some(100));
        assert!(r.ready());
        assert_eq!(r.deadline(), Some(t0 + ms(9300)));
        assert_eq!((r.restarts(), r.streak()), (m.restarts(), m.streak()));
        // A backoff goes on; a phase in motion starts over.
        let mut b = running(t0);
        b.step(DIED, t0);
        let r = Machine::restore(settings(), b.snapshot(), t0 + ms(10));
        assert_eq!(
            r.phase(),
            Phase::Backoff {
                until: t0 + ms(1000)
            }
        );
        let mut s = running(t0);
        s.step(Event::Stop, t0);
        let r = Machine::restore(settings(), s.snapshot(), t0);
        assert_eq!((r.phase(), r.want()), (Phase::Starting, Want::Up));
    }

    #[test]
    fn stray_events_change_nothing() {
        let t0 = Instant::now();
        let m0 = running(t0);
        for ev in [
            Event::Tick,
            Event::SpawnFailed,
            Event::BindFailed,
            Event::RivalsFound,
            Event::OthersGone,
            Event::Start,
        ] {
            let mut m = m0.clone();
            assert_eq!(m.step(ev, t0 + ms(1)), vec![], "{ev:?}");
            assert_eq!(m, m0, "{ev:?}");
        }
    }
}
