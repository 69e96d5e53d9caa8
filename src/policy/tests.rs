//! The restart policy's rules, one table or scenario each, as SPEC.md
//! states them. Over 600 lines because each rule is its own short test;
//! split by subject they would share every helper above them.

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
        overlap: false,
        give_up_after: 0,
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

/// The rule the README's `[health]` states: as under systemd, one missed
/// watchdog ping is a failure that restarts; `failures` counts failed HTTP
/// probes in a row and never delays the watchdog, and pings never excuse
/// failed probes.
#[test]
fn one_missed_watchdog_ping_restarts_whatever_failures_says() {
    let unhealthy = |why| Action::Note(Note::Unhealthy { pid: 100, why });
    // (failures, events after ready at t0: (at ms, event), gives up why)
    type Row<'a> = (u32, &'a [(u64, Event)], Option<Failure>);
    let table: [Row; 5] = [
        // Pings every 1.5 s: alive.
        (
            3,
            &[
                (1500, Event::WatchdogPing),
                (3000, Event::WatchdogPing),
                (4400, Event::Tick),
            ],
            None,
        ),
        // The first missed deadline (2 s after the last ping) restarts,
        // although failures = 3 (or 10).
        (
            3,
            &[(1500, Event::WatchdogPing), (3500, Event::Tick)],
            Some(Failure::Watchdog),
        ),
        (10, &[(2000, Event::Tick)], Some(Failure::Watchdog)),
        // Failed probes still need `failures` in a row, pings or not.
        (
            3,
            &[
                (500, Event::ProbeFailed),
                (1000, Event::WatchdogPing),
                (1500, Event::ProbeFailed),
            ],
            None,
        ),
        (
            3,
            &[
                (500, Event::ProbeFailed),
                (1000, Event::WatchdogPing),
                (1500, Event::ProbeFailed),
                (1900, Event::ProbeFailed),
            ],
            Some(Failure::Probes),
        ),
    ];
    for (failures, events, gives_up) in table {
        let t0 = Instant::now();
        let mut settings = notify_settings();
        settings.health.failures = failures;
        let mut m = spawned(settings, t0);
        m.step(Event::Ready, t0);
        let mut seen = None;
        for (at, event) in events {
            let actions = m.step(*event, t0 + ms(*at));
            for why in [Failure::Watchdog, Failure::Probes] {
                if actions.contains(&unhealthy(why)) {
                    seen = Some(why);
                }
            }
        }
        assert_eq!(seen, gives_up, "failures {failures}, {events:?}");
        let phase = if gives_up.is_some() {
            "stopping"
        } else {
            "running"
        };
        assert_eq!(m.phase().name(), phase, "failures {failures}, {events:?}");
    }
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
    // `restart` is told its restart will not happen.
    assert_eq!(
        m.step(Event::Stop, t0 + ms(1)),
        vec![Action::Note(Note::Restarted(Err(Unmet::Stopping)))]
    );
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

/// `give_up_after`: how each way of failing a start counts towards it, and
/// what the machine does when the streak reaches it.
#[test]
fn give_up_after_stops_and_exits_at_the_nth_failed_start() {
    #[derive(Clone, Copy, Debug)]
    enum Fail {
        /// The child dies at once.
        Dies,
        /// It cannot be spawned.
        Spawn,
        /// Not ready within start_timeout, then stopped.
        NeverReady,
    }
    let table: [(u32, Fail, u32); 7] = [
        // (give_up_after, how each start fails, starts wanted before exit)
        (1, Fail::Dies, 1),
        (3, Fail::Dies, 3),
        (3, Fail::Spawn, 3),
        (2, Fail::NeverReady, 2),
        (5, Fail::Dies, 5),
        // 0 never gives up: 20 failed starts and it is still backing off.
        (0, Fail::Dies, 20),
        (0, Fail::Spawn, 20),
    ];
    for (limit, fail, want) in table {
        let mut st = match fail {
            Fail::NeverReady => notify_settings(),
            _ => settings(),
        };
        st.give_up_after = limit;
        let mut m = Machine::new(st);
        let mut now = Instant::now();
        let mut actions = m.step(Event::Start, now);
        let mut starts = 0;
        let mut surrendered = Vec::new();
        while starts < 20 && m.phase() != Phase::Exited {
            assert!(
                actions.contains(&Action::Launch),
                "{limit} {fail:?}: {actions:?}"
            );
            starts += 1;
            let pid = 100 + starts as i32;
            actions = match fail {
                Fail::Dies => {
                    m.step(Event::Spawned { pid }, now);
                    now += ms(10);
                    m.step(DIED, now)
                }
                Fail::Spawn => m.step(Event::SpawnFailed, now),
                Fail::NeverReady => {
                    m.step(Event::Spawned { pid }, now);
                    now += ms(5000);
                    let mut a = m.step(Event::Tick, now);
                    now += ms(10);
                    a.extend(m.step(exited(ExitKind::Signal(15), false), now));
                    a
                }
            };
            surrendered.extend(
                notes(&actions)
                    .into_iter()
                    .filter(|n| matches!(n, Note::Surrender { .. })),
            );
            if m.phase() == Phase::Exited {
                break;
            }
            if let Phase::Stopping { leader: None, .. } = m.phase() {
                // Nothing else to stop (a failed spawn leaves nothing).
                actions.extend(m.step(Event::OthersGone, now));
            }
            if m.phase() == Phase::Exited {
                break;
            }
            if let Phase::Backoff { until } = m.phase() {
                now = until;
                actions = m.step(Event::Tick, now);
            }
        }
        assert_eq!(starts, want, "{limit} {fail:?}: starts");
        if limit == 0 {
            assert_eq!(m.want(), Want::Up, "{fail:?}");
            assert!(surrendered.is_empty(), "{fail:?}");
            assert_ne!(m.phase(), Phase::Exited, "{fail:?}");
        } else {
            assert_eq!(m.phase(), Phase::Exited, "{limit} {fail:?}");
            assert_eq!(
                surrendered,
                vec![Note::Surrender { streak: limit }],
                "{limit} {fail:?}: said once, with the streak"
            );
            assert!(actions.contains(&Action::Exit) || m.phase() == Phase::Exited);
        }
    }
}

#[test]
fn give_up_after_says_why_after_the_exit_and_before_exiting() {
    let t0 = Instant::now();
    let mut m = Machine::new(Settings {
        give_up_after: 1,
        ..settings()
    });
    m.step(Event::Start, t0);
    m.step(Event::Spawned { pid: 100 }, t0);
    let actions = m.step(DIED, t0 + ms(5));
    assert_eq!(
        actions,
        vec![
            Action::Note(Note::ChildExited {
                pid: 100,
                kind: ExitKind::Code(1),
                lived: ms(5),
                expected: false,
                streak: 1,
                next: Next::Exit,
            }),
            Action::Note(Note::Surrender { streak: 1 }),
            Action::Exit,
        ]
    );
}

#[test]
fn a_healthy_run_resets_the_count_towards_give_up_after() {
    let t0 = Instant::now();
    let mut m = Machine::new(Settings {
        give_up_after: 2,
        ..settings()
    });
    m.step(Event::Start, t0);
    m.step(Event::Spawned { pid: 100 }, t0);
    let a = m.step(DIED, t0 + ms(5));
    assert!(notes(&a)
        .iter()
        .all(|n| !matches!(n, Note::Surrender { .. })));
    // The next child lives past reset_after: the streak starts over.
    let t1 = t0 + ms(5) + ms(1000);
    m.step(Event::Tick, t1);
    m.step(Event::Spawned { pid: 101 }, t1);
    let a = m.step(DIED, t1 + ms(61_000));
    assert_eq!(m.streak(), 0);
    assert!(effects(a).contains(&Action::Launch), "restarted at once");
    m.step(Event::Spawned { pid: 102 }, t1 + ms(61_000));
    let a = m.step(DIED, t1 + ms(61_010));
    assert_eq!(m.streak(), 1);
    assert_eq!(m.want(), Want::Up, "{a:?}");
}

#[test]
fn a_requested_restart_is_restarting_until_its_outcome() {
    let t0 = Instant::now();
    let mut m = spawned(notify_settings(), t0);
    m.step(Event::Ready, t0);
    assert_eq!(m.state_name(), "running");
    // (event, state after it)
    let table = [
        (Event::Restart, "restarting"),
        (
            Event::ChildExited {
                kind: ExitKind::Signal(15),
                others_left: false,
            },
            "restarting",
        ),
        (Event::Spawned { pid: 101 }, "restarting"),
        (Event::Ready, "running"),
    ];
    // The machine's Launch is answered by the table's next event.
    for (event, want) in table {
        m.step(event, t0 + ms(10));
        assert_eq!(m.state_name(), want, "after {event:?}");
    }
    // A stop for exit, and leftovers being stopped, stay `stopping`.
    m.step(Event::Stop, t0 + ms(20));
    assert_eq!(m.state_name(), "stopping");
}
