//! The restart policy: a pure state machine.
//!
//! `Machine::step(event, now)` returns the side effects the driver must
//! perform; it never reads a clock, touches a process or sleeps, so every
//! rule of SPEC.md's "Restart policy" is a table of unit tests below.
//! The driver (`daemon.rs`) turns signals, child exits and timers into
//! [`Event`]s and carries out the returned [`Action`]s, some of which answer
//! with a further event at once (`Bind` → `Bound` or `BindFailed`).

use std::time::{Duration, Instant};

/// The numbers the policy needs from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub reset_after: Duration,
    pub stop_timeout: Duration,
    /// How long to wait after SIGKILL for leftovers to vanish before going
    /// on without them (a process in uninterruptible sleep, or a zombie that
    /// a careless init never reaps).
    pub kill_grace: Duration,
    pub health: HealthPolicy,
}

/// Readiness and liveness rules (`[health]`); the default has none: a
/// child is ready the moment it is spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthPolicy {
    /// A spawned child is `starting` until `Ready` (or, with `probe_ready`,
    /// its first good probe).
    pub readiness: bool,
    /// Readiness comes from the HTTP probe rather than READY=1.
    pub probe_ready: bool,
    pub start_timeout: Duration,
    /// Consecutive failed probes that make a ready child unhealthy.
    pub failures: u32,
    /// A ready child must ping at least this often.
    pub watchdog: Option<Duration>,
}

/// What a running child has shown of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Since when it has been ready; `None` while it is still starting.
    pub ready_since: Option<Instant>,
    pub probe_failures: u32,
    /// The next watchdog ping is due by then.
    pub watchdog_until: Option<Instant>,
}

/// Why a live child is given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not ready within `start_timeout`.
    StartTimeout,
    /// `failures` probes in a row failed.
    Probes,
    /// No WATCHDOG=1 within the watchdog interval.
    Watchdog,
}

/// How a child ended, as `waitpid` told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

/// The last exit of a child, with when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastExit {
    pub kind: ExitKind,
    pub at: Instant,
}

/// What happens once a stopping child's group is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Start the next child, not before `at`.
    Restart {
        at: Instant,
    },
    Exit,
}

/// What *is*, each state with the data only it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Lock held; binding the port or spawning the child (transient: the
    /// driver answers `Bind` and `Spawn` at once).
    Starting,
    /// The port could not be bound; the next try is at `retry_at`.
    WaitingForPort { retry_at: Instant },
    /// A child is alive (`starting` until ready, when readiness is configured).
    Running {
        pid: i32,
        since: Instant,
        health: Health,
    },
    /// No child; the next one starts at `until`.
    Backoff { until: Instant },
    /// Signals went to process group `pgid`; `leader` tells whether the
    /// child itself is still alive or only leftovers of its group remain.
    Stopping {
        pgid: i32,
        leader: bool,
        deadline: Instant,
        killed: bool,
        then: Then,
    },
    /// Done: the driver exits.
    Exited,
}

impl Phase {
    /// The state name of SPEC.md.
    pub fn name(&self) -> &'static str {
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
pub enum Event {
    /// The lock is held and any orphan of an earlier supervisor is gone.
    Start,
    Bound,
    BindFailed,
    Spawned {
        pid: i32,
    },
    SpawnFailed,
    /// The child was reaped; `group_left` says members of its process
    /// group are still alive.
    ChildExited {
        kind: ExitKind,
        group_left: bool,
    },
    /// The last member of the stopping process group is gone.
    GroupGone,
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
    /// SIGTERM / SIGINT / `supervisor stop`; a second one kills at once.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Bind,
    Spawn,
    /// Send the stop signal (`kill == false`) or SIGKILL to process group `pgid`.
    Signal {
        pgid: i32,
        kill: bool,
    },
    /// Leftovers did not vanish after SIGKILL; going on without them.
    GaveUpOnGroup {
        pgid: i32,
    },
    /// The child became ready (tell systemd, if it listens).
    Ready {
        pid: i32,
    },
    /// A live child failed its health rules and is being stopped.
    Unhealthy {
        pid: i32,
        why: Failure,
    },
    Exit,
}

/// The supervisor's state: the phase plus what it remembers across phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub settings: Settings,
    pub phase: Phase,
    /// The port is bound (it stays bound for the life of the supervisor).
    pub bound: bool,
    /// Children spawned so far.
    pub spawns: u32,
    /// Consecutive early deaths (and failed spawns): the backoff exponent.
    pub streak: u32,
    /// Consecutive failed binds.
    pub bind_failures: u32,
    pub last_exit: Option<LastExit>,
    /// The operator asked us to exit.
    pub stopping: bool,
}

impl Machine {
    pub fn new(settings: Settings) -> Machine {
        Machine {
            settings,
            phase: Phase::Starting,
            bound: false,
            spawns: 0,
            streak: 0,
            bind_failures: 0,
            last_exit: None,
            stopping: false,
        }
    }

    /// Restarts so far (the first child is not a restart).
    pub fn restarts(&self) -> u32 {
        self.spawns.saturating_sub(1)
    }

    /// The delay before the `n`th consecutive retry (n >= 1): `initial`
    /// doubled n-1 times, capped at `max`.
    pub fn backoff(&self, n: u32) -> Duration {
        let s = &self.settings;
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        s.initial_backoff
            .checked_mul(factor)
            .map_or(s.max_backoff, |d| d.min(s.max_backoff))
    }

    /// When the driver must send `Tick`, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::WaitingForPort { retry_at } => Some(retry_at),
            Phase::Backoff { until } => Some(until),
            Phase::Running { since, health, .. } => match health.ready_since {
                None if self.settings.health.readiness => {
                    Some(since + self.settings.health.start_timeout)
                }
                _ => health.watchdog_until,
            },
            Phase::Stopping {
                deadline,
                killed,
                leader,
                ..
            } if !(killed && leader) => Some(deadline),
            _ => None,
        }
    }

    /// The current child's pid, if one is alive.
    pub fn child_pid(&self) -> Option<i32> {
        match self.phase {
            Phase::Running { pid, .. } => Some(pid),
            Phase::Stopping {
                pgid, leader: true, ..
            } => Some(pgid),
            _ => None,
        }
    }

    pub fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let s = self.settings;
        match (self.phase, event) {
            (Phase::Exited, _) => vec![],

            // --- the operator -------------------------------------------
            (
                Phase::Stopping {
                    then: Then::Exit,
                    killed: false,
                    pgid,
                    leader,
                    ..
                },
                Event::Stop,
            ) => {
                // A second stop means "now".
                self.phase = Phase::Stopping {
                    pgid,
                    leader,
                    deadline: now + s.kill_grace,
                    killed: true,
                    then: Then::Exit,
                };
                vec![Action::Signal { pgid, kill: true }]
            }
            (
                Phase::Stopping {
                    pgid,
                    leader,
                    deadline,
                    killed,
                    ..
                },
                Event::Stop,
            ) => {
                self.stopping = true;
                self.phase = Phase::Stopping {
                    pgid,
                    leader,
                    deadline,
                    killed,
                    then: Then::Exit,
                };
                vec![]
            }
            (Phase::Running { pid, .. }, Event::Stop) => {
                self.stopping = true;
                self.stop_group(pid, true, now, Then::Exit)
            }
            (_, Event::Stop) => {
                self.stopping = true;
                self.phase = Phase::Exited;
                vec![Action::Exit]
            }
            (Phase::Running { pid, .. }, Event::Restart) => {
                self.stop_group(pid, true, now, Then::Restart { at: now })
            }
            (Phase::Backoff { .. }, Event::Restart) => self.spawn(),
            (Phase::WaitingForPort { .. }, Event::Restart) => self.bind(),
            (_, Event::Restart) => vec![],

            // --- the port -----------------------------------------------
            (Phase::Starting, Event::Start) if self.bound => self.spawn(),
            (Phase::Starting, Event::Start) => self.bind(),
            (Phase::Starting, Event::Bound) => {
                self.bound = true;
                self.bind_failures = 0;
                self.spawn()
            }
            (Phase::Starting, Event::BindFailed) => {
                self.bind_failures = self.bind_failures.saturating_add(1);
                self.phase = Phase::WaitingForPort {
                    retry_at: now + self.backoff(self.bind_failures),
                };
                vec![]
            }
            (Phase::WaitingForPort { retry_at }, Event::Tick) if now >= retry_at => self.bind(),

            // --- the child ----------------------------------------------
            (Phase::Starting, Event::Spawned { pid }) => {
                self.spawns = self.spawns.saturating_add(1);
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
                    vec![Action::Ready { pid }]
                } else {
                    vec![]
                }
            }

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
            (Phase::Running { pid, since, health }, Event::Tick) => match health.ready_since {
                None if s.health.readiness && now >= since + s.health.start_timeout => {
                    self.give_up(pid, health, Failure::StartTimeout, now)
                }
                Some(_) if health.watchdog_until.is_some_and(|w| now >= w) => {
                    self.give_up(pid, health, Failure::Watchdog, now)
                }
                _ => vec![],
            },
            (Phase::Starting, Event::SpawnFailed) => {
                self.streak = self.streak.saturating_add(1);
                self.phase = Phase::Backoff {
                    until: now + self.backoff(self.streak),
                };
                vec![]
            }
            (Phase::Backoff { until }, Event::Tick) if now >= until => self.spawn(),
            (Phase::Running { pid, health, .. }, Event::ChildExited { kind, group_left }) => {
                self.last_exit = Some(LastExit { kind, at: now });
                let then = Then::Restart {
                    at: now + self.next_delay(health, now),
                };
                if group_left {
                    // Leftovers would hold fd 3 and the log pipe: clear them first.
                    self.stop_group(pid, false, now, then)
                } else {
                    self.finish(then, now)
                }
            }
            (
                Phase::Stopping {
                    pgid,
                    leader: true,
                    deadline,
                    killed,
                    then,
                },
                Event::ChildExited { kind, group_left },
            ) => {
                self.last_exit = Some(LastExit { kind, at: now });
                if group_left {
                    self.phase = Phase::Stopping {
                        pgid,
                        leader: false,
                        deadline,
                        killed,
                        then,
                    };
                    vec![]
                } else {
                    self.finish(then, now)
                }
            }
            (
                Phase::Stopping {
                    leader: false,
                    then,
                    ..
                },
                Event::GroupGone,
            ) => self.finish(then, now),
            (
                Phase::Stopping {
                    pgid,
                    leader,
                    deadline,
                    killed,
                    then,
                },
                Event::Tick,
            ) if now >= deadline => {
                if !killed {
                    self.phase = Phase::Stopping {
                        pgid,
                        leader,
                        deadline: now + s.kill_grace,
                        killed: true,
                        then,
                    };
                    vec![Action::Signal { pgid, kill: true }]
                } else if leader {
                    // SIGKILL always ends the leader; wait for its exit, with
                    // no timer, so two children never overlap.
                    vec![]
                } else {
                    let mut actions = vec![Action::GaveUpOnGroup { pgid }];
                    actions.extend(self.finish(then, now));
                    actions
                }
            }

            // Everything else (early ticks, stray events) changes nothing.
            _ => vec![],
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
        vec![Action::Ready { pid }]
    }

    /// A live child broke its health rules: stop it gracefully, then
    /// restart under the backoff policy.
    fn give_up(&mut self, pid: i32, health: Health, why: Failure, now: Instant) -> Vec<Action> {
        let then = Then::Restart {
            at: now + self.next_delay(health, now),
        };
        let mut actions = vec![Action::Unhealthy { pid, why }];
        actions.extend(self.stop_group(pid, true, now, then));
        actions
    }

    fn bind(&mut self) -> Vec<Action> {
        self.phase = Phase::Starting;
        vec![Action::Bind]
    }

    fn spawn(&mut self) -> Vec<Action> {
        self.phase = Phase::Starting;
        vec![Action::Spawn]
    }

    fn stop_group(&mut self, pgid: i32, leader: bool, now: Instant, then: Then) -> Vec<Action> {
        self.phase = Phase::Stopping {
            pgid,
            leader,
            deadline: now + self.settings.stop_timeout,
            killed: false,
            then,
        };
        vec![Action::Signal { pgid, kill: false }]
    }

    fn finish(&mut self, then: Then, now: Instant) -> Vec<Action> {
        match then {
            _ if self.stopping => {
                self.phase = Phase::Exited;
                vec![Action::Exit]
            }
            Then::Exit => {
                self.phase = Phase::Exited;
                vec![Action::Exit]
            }
            Then::Restart { at } if at <= now => self.spawn(),
            Then::Restart { at } => {
                self.phase = Phase::Backoff { until: at };
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
        m.step(Event::Bound, t0);
        m.step(Event::Spawned { pid: 100 }, t0);
        m
    }

    #[test]
    fn readiness_keeps_a_child_starting_until_ready() {
        let t0 = Instant::now();
        let mut m = spawned(notify_settings(), t0);
        assert_eq!(m.phase.name(), "starting");
        assert_eq!(m.deadline(), Some(t0 + ms(5000)));
        // Pings before READY=1 mean nothing.
        assert_eq!(m.step(Event::WatchdogPing, t0 + ms(10)), vec![]);
        assert_eq!(
            m.step(Event::Ready, t0 + ms(1000)),
            vec![Action::Ready { pid: 100 }]
        );
        assert_eq!(m.phase.name(), "running");
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
                Action::Unhealthy {
                    pid: 100,
                    why: Failure::StartTimeout
                },
                Action::Signal {
                    pgid: 100,
                    kill: false
                }
            ]
        );
        assert_eq!(m.streak, 1);
        let ev = Event::ChildExited {
            kind: ExitKind::Signal(15),
            group_left: false,
        };
        // The backoff counts from when it was given up on.
        assert_eq!(m.step(ev, t0 + ms(5100)), vec![]);
        assert_eq!(
            m.phase,
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
                actions.contains(&Action::Unhealthy {
                    pid: 100,
                    why: Failure::Watchdog
                }),
                gives_up,
                "ping {ping} tick {tick}: {actions:?}"
            );
        }
        assert_eq!(m.phase.name(), "stopping");
    }

    #[test]
    fn probes_make_ready_and_consecutive_failures_stop() {
        let t0 = Instant::now();
        let mut m = spawned(probe_settings(), t0);
        // Failures before ready do not count; start_timeout does.
        assert_eq!(m.step(Event::ProbeFailed, t0 + ms(50)), vec![]);
        assert_eq!(
            m.step(Event::ProbeOk, t0 + ms(100)),
            vec![Action::Ready { pid: 100 }]
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
                actions.contains(&Action::Unhealthy {
                    pid: 100,
                    why: Failure::Probes
                }),
                gives_up,
                "step {i}: {actions:?}"
            );
        }
    }

    #[test]
    fn backoff_resets_only_after_being_ready_for_reset_after() {
        let t0 = Instant::now();
        let died = |m: &mut Machine, t: Instant| {
            m.step(
                Event::ChildExited {
                    kind: ExitKind::Code(1),
                    group_left: false,
                },
                t,
            )
        };
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
        assert_eq!(died(&mut m, t0 + ms(90_000)), vec![]);
        assert_eq!(m.streak, 1);
        // Ready for reset_after: restarted at once.
        let mut m = spawned(probe_settings(), t0);
        m.step(Event::ProbeOk, t0 + ms(1000));
        assert_eq!(died(&mut m, t0 + ms(61_000)), vec![Action::Spawn]);
        assert_eq!(m.streak, 0);
    }

    /// A machine with a child running since `t0`.
    fn running(t0: Instant) -> Machine {
        let mut m = Machine::new(settings());
        assert_eq!(m.step(Event::Start, t0), vec![Action::Bind]);
        assert_eq!(m.step(Event::Bound, t0), vec![Action::Spawn]);
        assert_eq!(
            m.step(Event::Spawned { pid: 100 }, t0),
            vec![Action::Ready { pid: 100 }]
        );
        m
    }

    const DIED: Event = Event::ChildExited {
        kind: ExitKind::Code(1),
        group_left: false,
    };

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
    fn backoff_with_zero_initial_stays_zero() {
        let mut s = settings();
        s.initial_backoff = Duration::ZERO;
        let m = Machine::new(s);
        assert_eq!(m.backoff(7), Duration::ZERO);
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
            assert_eq!(m.step(DIED, t), vec![], "death {i}");
            assert_eq!(
                m.phase,
                Phase::Backoff {
                    until: t + ms(delay)
                },
                "death {i}"
            );
            assert_eq!(m.deadline(), Some(t + ms(delay)));
            // An early tick does nothing; the due one spawns.
            assert_eq!(m.step(Event::Tick, t + ms(delay) - ms(1)), vec![]);
            t += ms(delay);
            assert_eq!(m.step(Event::Tick, t), vec![Action::Spawn], "death {i}");
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
        assert_eq!(m.streak, 1);
        // Lives exactly reset_after: healthy.
        let t = t0 + ms(1010) + ms(60_000);
        assert_eq!(m.step(DIED, t), vec![Action::Spawn]);
        assert_eq!(m.streak, 0);
        assert_eq!(m.phase, Phase::Starting);
        m.step(Event::Spawned { pid: 102 }, t);
        // The next early death starts again from initial_backoff.
        m.step(DIED, t + ms(5));
        assert_eq!(
            m.phase,
            Phase::Backoff {
                until: t + ms(5) + ms(1000)
            }
        );
    }

    #[test]
    fn last_exit_is_recorded() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let ev = Event::ChildExited {
            kind: ExitKind::Signal(9),
            group_left: false,
        };
        m.step(ev, t0 + ms(3));
        assert_eq!(
            m.last_exit,
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
        let ev = Event::ChildExited {
            kind: ExitKind::Code(0),
            group_left: true,
        };
        assert_eq!(
            m.step(ev, t0 + ms(100)),
            vec![Action::Signal {
                pgid: 100,
                kill: false
            }]
        );
        assert!(matches!(m.phase, Phase::Stopping { leader: false, .. }));
        assert_eq!(m.child_pid(), None);
        // Gone quickly, but the backoff (1 s from the exit) still applies.
        assert_eq!(m.step(Event::GroupGone, t0 + ms(150)), vec![]);
        assert_eq!(
            m.phase,
            Phase::Backoff {
                until: t0 + ms(1100)
            }
        );
    }

    #[test]
    fn stubborn_leftovers_get_sigkill_then_are_given_up() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let ev = Event::ChildExited {
            kind: ExitKind::Code(0),
            group_left: true,
        };
        m.step(ev, t0);
        assert_eq!(m.deadline(), Some(t0 + ms(10_000)));
        let t1 = t0 + ms(10_000);
        assert_eq!(
            m.step(Event::Tick, t1),
            vec![Action::Signal {
                pgid: 100,
                kill: true
            }]
        );
        assert_eq!(m.deadline(), Some(t1 + ms(5000)));
        let t2 = t1 + ms(5000);
        assert_eq!(
            m.step(Event::Tick, t2),
            vec![Action::GaveUpOnGroup { pgid: 100 }, Action::Spawn]
        );
    }

    #[test]
    fn graceful_stop_then_sigkill_after_stop_timeout() {
        let t0 = Instant::now();
        let mut m = running(t0);
        assert_eq!(
            m.step(Event::Stop, t0),
            vec![Action::Signal {
                pgid: 100,
                kill: false
            }]
        );
        assert_eq!(m.phase.name(), "stopping");
        assert_eq!(m.step(Event::Tick, t0 + ms(9_999)), vec![]);
        assert_eq!(
            m.step(Event::Tick, t0 + ms(10_000)),
            vec![Action::Signal {
                pgid: 100,
                kill: true
            }]
        );
        // Killed leader: no timer until it is reaped.
        assert_eq!(m.deadline(), None);
        let ev = Event::ChildExited {
            kind: ExitKind::Signal(9),
            group_left: false,
        };
        assert_eq!(m.step(ev, t0 + ms(10_001)), vec![Action::Exit]);
        assert_eq!(m.phase, Phase::Exited);
    }

    #[test]
    fn a_second_stop_kills_at_once() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(Event::Stop, t0);
        assert_eq!(
            m.step(Event::Stop, t0 + ms(1)),
            vec![Action::Signal {
                pgid: 100,
                kill: true
            }]
        );
        assert_eq!(m.step(Event::Stop, t0 + ms(2)), vec![]);
    }

    #[test]
    fn stop_without_a_child_exits_at_once() {
        let t0 = Instant::now();
        // (how to get there, phase name before the stop)
        let mut backoff = running(t0);
        backoff.step(DIED, t0);
        let mut waiting = Machine::new(settings());
        waiting.step(Event::Start, t0);
        waiting.step(Event::BindFailed, t0);
        for (mut m, name) in [(backoff, "backoff"), (waiting, "waiting-for-port")] {
            assert_eq!(m.phase.name(), name);
            assert_eq!(m.step(Event::Stop, t0), vec![Action::Exit], "{name}");
            assert_eq!(m.phase, Phase::Exited);
            assert_eq!(m.step(Event::Tick, t0 + ms(100_000)), vec![]);
        }
    }

    #[test]
    fn stop_during_a_restart_exits_instead_of_restarting() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(Event::Restart, t0);
        assert_eq!(m.step(Event::Stop, t0 + ms(1)), vec![]);
        let ev = Event::ChildExited {
            kind: ExitKind::Signal(15),
            group_left: false,
        };
        assert_eq!(m.step(ev, t0 + ms(2)), vec![Action::Exit]);
    }

    #[test]
    fn restart_request_restarts_without_backoff() {
        let t0 = Instant::now();
        let mut m = running(t0);
        assert_eq!(
            m.step(Event::Restart, t0),
            vec![Action::Signal {
                pgid: 100,
                kill: false
            }]
        );
        // A second request while stopping changes nothing.
        assert_eq!(m.step(Event::Restart, t0), vec![]);
        let ev = Event::ChildExited {
            kind: ExitKind::Signal(15),
            group_left: false,
        };
        assert_eq!(m.step(ev, t0 + ms(5)), vec![Action::Spawn]);
        assert_eq!(m.streak, 0);
    }

    #[test]
    fn restart_request_cuts_backoff_and_port_waits_short() {
        let t0 = Instant::now();
        let mut m = running(t0);
        m.step(DIED, t0);
        assert_eq!(m.step(Event::Restart, t0 + ms(1)), vec![Action::Spawn]);
        let mut w = Machine::new(settings());
        w.step(Event::Start, t0);
        w.step(Event::BindFailed, t0);
        assert_eq!(w.step(Event::Restart, t0 + ms(1)), vec![Action::Bind]);
    }

    #[test]
    fn port_retries_back_off_and_reset_once_bound() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.step(Event::Start, t0);
        let mut t = t0;
        for delay in [1000, 2000, 4000, 8000, 8000] {
            assert_eq!(m.step(Event::BindFailed, t), vec![]);
            assert_eq!(
                m.phase,
                Phase::WaitingForPort {
                    retry_at: t + ms(delay)
                }
            );
            t += ms(delay);
            assert_eq!(m.step(Event::Tick, t), vec![Action::Bind]);
        }
        assert_eq!(m.step(Event::Bound, t), vec![Action::Spawn]);
        assert_eq!((m.bound, m.bind_failures), (true, 0));
        // The port's failures never count against the child.
        assert_eq!(m.streak, 0);
    }

    #[test]
    fn failed_spawns_back_off_like_early_deaths() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.step(Event::Start, t0);
        m.step(Event::Bound, t0);
        assert_eq!(m.step(Event::SpawnFailed, t0), vec![]);
        assert_eq!(
            m.phase,
            Phase::Backoff {
                until: t0 + ms(1000)
            }
        );
        m.step(Event::Tick, t0 + ms(1000));
        m.step(Event::SpawnFailed, t0 + ms(1000));
        assert_eq!(
            m.phase,
            Phase::Backoff {
                until: t0 + ms(3000)
            }
        );
        assert_eq!(m.spawns, 0);
    }

    #[test]
    fn a_restarted_supervisor_does_not_bind_twice() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.bound = true;
        assert_eq!(m.step(Event::Start, t0), vec![Action::Spawn]);
    }

    #[test]
    fn stray_events_change_nothing() {
        let t0 = Instant::now();
        let m0 = running(t0);
        for ev in [
            Event::Tick,
            Event::Bound,
            Event::BindFailed,
            Event::GroupGone,
            Event::Start,
        ] {
            let mut m = m0.clone();
            assert_eq!(m.step(ev, t0 + ms(1)), vec![], "{ev:?}");
            assert_eq!(m, m0, "{ev:?}");
        }
    }
}
