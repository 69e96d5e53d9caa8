//! The handover's rules (`[restart] overlap`), one scenario each: who is
//! signalled when, what `restart` is told, and that there are never more
//! than two children.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
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

fn effects(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::Note(_)))
        .copied()
        .collect()
}

/// READY=1 readiness, 5 s start timeout, 10 s stop timeout, overlap on.
fn overlap_settings() -> Settings {
    Settings {
        initial_backoff: ms(1000),
        max_backoff: ms(8000),
        reset_after: ms(60_000),
        stop_timeout: ms(10_000),
        kill_grace: ms(5000),
        health: HealthPolicy {
            readiness: true,
            probe_ready: false,
            start_timeout: ms(5000),
            failures: 3,
            watchdog: None,
        },
        overlap: true,
        give_up_after: 0,
    }
}

/// Child 100, ready at `t0`.
fn ready(settings: Settings, t0: Instant) -> Machine {
    let mut m = Machine::new(settings);
    m.step(Event::Start, t0);
    m.step(Event::Spawned { pid: 100 }, t0);
    m.step(Event::Ready, t0);
    assert!(m.ready());
    m
}

/// Child 100 serving, new child 200 spawned at `t`.
fn starting(t0: Instant, t: Instant) -> Machine {
    let mut m = ready(overlap_settings(), t0);
    assert_eq!(m.step(Event::Restart, t), vec![Action::SpawnNew]);
    let a = m.step(Event::NewSpawned { pid: 200 }, t);
    assert_eq!(
        a,
        vec![Action::Note(Note::HandoverStarted { old: 100, new: 200 })]
    );
    m
}

fn exited(code: i32, others_left: bool) -> Event {
    Event::SecondExited {
        kind: ExitKind::Code(code),
        others_left,
    }
}

/// The serving (machine's) child was reaped.
fn child_exited(kind: ExitKind, others_left: bool) -> Event {
    Event::ChildExited { kind, others_left }
}

/// How many children are alive, as the machine knows them.
fn alive(m: &Machine) -> usize {
    usize::from(m.child_pid().is_some()) + usize::from(m.second_pid().is_some())
}

#[test]
fn a_ready_child_is_replaced_only_once_the_new_one_is_ready() {
    let t0 = Instant::now();
    let t1 = t0 + ms(1000);
    let mut m = starting(t0, t1);
    // Old serves, new starts: the old child is still the machine's.
    assert_eq!(m.child_pid(), Some(100));
    assert_eq!(m.second_pid(), Some(200));
    assert_eq!(alive(&m), 2);
    let h = m.handover().expect("a handover");
    assert_eq!((h.phase_name(), h.old, h.new), ("starting", 100, Some(200)));
    assert_eq!(h.started_at, t1);
    // The start timeout is the deadline; an early tick does nothing.
    assert_eq!(m.deadline(), Some(t1 + ms(5000)));
    assert_eq!(m.step(Event::Tick, t1 + ms(10)), vec![]);
    // Ready: the new child serves, the old one's group is stopped.
    let t2 = t1 + ms(1500);
    let a = m.step(Event::NewReady, t2);
    assert_eq!(
        notes(&a),
        vec![
            Note::Ready { pid: 200 },
            Note::HandoverDraining { old: 100, new: 200 }
        ]
    );
    assert_eq!(
        effects(&a),
        vec![Action::SignalSecond {
            pgid: 100,
            kill: false
        }]
    );
    assert_eq!(m.child_pid(), Some(200));
    assert!(m.ready());
    assert_eq!(m.second_pid(), Some(100));
    assert_eq!(m.handover().map(|h| h.phase_name()), Some("draining"));
    assert_eq!(m.deadline(), Some(t2 + ms(10_000)));
    // The old one finishes and exits: done, and `restart` is told.
    let a = m.step(exited(0, false), t2 + ms(300));
    assert_eq!(
        notes(&a),
        vec![
            Note::HandoverDone { old: 100, new: 200 },
            Note::Restarted(Ok(200))
        ]
    );
    assert_eq!(m.handover(), None);
    assert_eq!(alive(&m), 1);
    assert_eq!(m.restarts(), 1);
    assert_eq!(m.phase().name(), "running");
}

#[test]
fn a_new_child_that_exits_is_given_up_and_the_old_serves_on() {
    let t0 = Instant::now();
    let mut m = starting(t0, t0);
    let kind = ExitKind::Code(3);
    let a = m.step(exited(3, false), t0 + ms(200));
    assert_eq!(
        a,
        vec![
            Action::Note(Note::HandoverFailed {
                old: 100,
                new: Some(200),
                why: Unmet::Exited(kind)
            }),
            Action::Note(Note::Restarted(Err(Unmet::Exited(kind))))
        ]
    );
    assert_eq!(m.handover(), None);
    assert_eq!(m.child_pid(), Some(100));
    assert!(m.ready());
    assert_eq!(m.deadline(), None);
}

#[test]
fn leftovers_of_a_failed_new_child_are_stopped_then_killed() {
    let t0 = Instant::now();
    let mut m = starting(t0, t0);
    let a = m.step(exited(1, true), t0);
    assert_eq!(
        effects(&a),
        vec![Action::SignalSecond {
            pgid: 200,
            kill: false
        }]
    );
    assert_eq!(m.second_group_pending(), Some(200));
    assert_eq!(m.deadline(), Some(t0 + ms(10_000)));
    let a = m.step(Event::Tick, t0 + ms(10_000));
    assert_eq!(
        a,
        vec![Action::SignalSecond {
            pgid: 200,
            kill: true
        }]
    );
    let a = m.step(Event::SecondGone, t0 + ms(10_010));
    assert_eq!(
        notes(&a),
        vec![Note::Restarted(Err(Unmet::Exited(ExitKind::Code(1))))]
    );
    assert_eq!(m.handover(), None);
}

#[test]
fn a_new_child_never_ready_is_stopped_after_start_timeout() {
    let t0 = Instant::now();
    let mut m = starting(t0, t0);
    let a = m.step(Event::Tick, t0 + ms(5000));
    assert_eq!(
        a,
        vec![
            Action::Note(Note::HandoverFailed {
                old: 100,
                new: Some(200),
                why: Unmet::NotReady
            }),
            Action::SignalSecond {
                pgid: 200,
                kill: false
            }
        ]
    );
    // It ignores the stop signal: SIGKILL after stop_timeout, then its
    // exit is waited for without a timer.
    assert_eq!(m.deadline(), Some(t0 + ms(15_000)));
    let a = m.step(Event::Tick, t0 + ms(15_000));
    assert_eq!(
        a,
        vec![Action::SignalSecond {
            pgid: 200,
            kill: true
        }]
    );
    assert_eq!(m.deadline(), None);
    // A late READY=1 changes nothing now.
    assert_eq!(m.step(Event::NewReady, t0 + ms(15_001)), vec![]);
    let a = m.step(exited(137, false), t0 + ms(15_002));
    assert_eq!(notes(&a), vec![Note::Restarted(Err(Unmet::NotReady))]);
    assert_eq!((m.child_pid(), alive(&m)), (Some(100), 1));
}

#[test]
fn a_new_child_that_cannot_be_spawned_fails_the_restart() {
    let t0 = Instant::now();
    let mut m = ready(overlap_settings(), t0);
    m.step(Event::Restart, t0);
    let a = m.step(Event::NewSpawnFailed, t0);
    assert_eq!(
        notes(&a),
        vec![
            Note::HandoverFailed {
                old: 100,
                new: None,
                why: Unmet::SpawnFailed
            },
            Note::Restarted(Err(Unmet::SpawnFailed))
        ]
    );
    assert_eq!((m.handover(), m.child_pid()), (None, Some(100)));
}

#[test]
fn an_old_child_that_ignores_the_stop_signal_is_killed_after_stop_timeout() {
    let t0 = Instant::now();
    let mut m = starting(t0, t0);
    m.step(Event::NewReady, t0 + ms(100));
    let a = m.step(Event::Tick, t0 + ms(10_100));
    assert_eq!(
        a,
        vec![Action::SignalSecond {
            pgid: 100,
            kill: true
        }]
    );
    // Its leader is reaped but a member lingers past the kill grace.
    let a = m.step(exited(137, true), t0 + ms(10_200));
    assert_eq!(
        a,
        vec![Action::SignalSecond {
            pgid: 100,
            kill: true
        }]
    );
    let a = m.step(Event::Tick, t0 + ms(15_100));
    assert_eq!(
        notes(&a),
        vec![
            Note::GaveUp,
            Note::HandoverDone { old: 100, new: 200 },
            Note::Restarted(Ok(200))
        ]
    );
}

#[test]
fn only_a_requested_restart_of_a_ready_child_overlaps() {
    let t0 = Instant::now();
    // Not ready yet: stop first.
    let mut m = Machine::new(overlap_settings());
    m.step(Event::Start, t0);
    m.step(Event::Spawned { pid: 100 }, t0);
    assert_eq!(
        m.step(Event::Restart, t0),
        vec![Action::Signal { kill: false }]
    );
    assert_eq!(m.handover(), None);
    // A crash: stop first (the next child after the backoff).
    let mut m = ready(overlap_settings(), t0);
    let a = m.step(child_exited(ExitKind::Code(1), false), t0 + ms(10));
    assert!(!a.contains(&Action::SpawnNew));
    // A liveness failure: stop first.
    let mut watchdog = overlap_settings();
    watchdog.health.watchdog = Some(ms(2000));
    let mut m2 = ready(watchdog, t0);
    let a = m2.step(Event::Tick, t0 + ms(2000));
    assert_eq!(effects(&a), vec![Action::Signal { kill: false }]);
    // Overlap off: stop first.
    let mut off = overlap_settings();
    off.overlap = false;
    let mut m3 = ready(off, t0);
    assert_eq!(
        m3.step(Event::Restart, t0),
        vec![Action::Signal { kill: false }]
    );
    // Onto a new socket (a reload changed [listen]): stop first.
    let mut m4 = ready(overlap_settings(), t0);
    assert_eq!(
        m4.step(Event::RestartStopFirst, t0),
        vec![Action::Signal { kill: false }]
    );
    // Too much memory, ready, overlap on: a handover.
    let mut m = ready(overlap_settings(), t0);
    let a = m.step(Event::TooBig(1 << 30), t0);
    assert_eq!(effects(&a), vec![Action::SpawnNew]);
}

#[test]
fn one_handover_at_a_time() {
    let t0 = Instant::now();
    let mut m = starting(t0, t0);
    for t in [ms(10), ms(20)] {
        assert_eq!(
            m.step(Event::Restart, t0 + t),
            vec![Action::Note(Note::HandoverBusy)]
        );
        assert_eq!(m.step(Event::TooBig(1 << 30), t0 + t), vec![]);
    }
    m.step(Event::NewReady, t0 + ms(30));
    assert_eq!(
        m.step(Event::Restart, t0 + ms(40)),
        vec![Action::Note(Note::HandoverBusy)]
    );
    assert_eq!(alive(&m), 2);
}

#[test]
fn stop_during_a_handover_stops_both_children() {
    for draining in [false, true] {
        let t0 = Instant::now();
        let mut m = starting(t0, t0);
        let second = if draining {
            m.step(Event::NewReady, t0 + ms(10));
            100
        } else {
            200
        };
        let a = m.step(Event::Stop, t0 + ms(20));
        assert_eq!(
            effects(&a),
            vec![
                Action::StopAlso { pgid: second },
                Action::Signal { kill: false }
            ],
            "draining: {draining}"
        );
        // The restart that was asked for is told it did not happen.
        if !draining {
            assert!(notes(&a).contains(&Note::Restarted(Err(Unmet::Stopping))));
        }
        assert_eq!(m.handover(), None);
        // The serving child ends; the second one's group is still there.
        let a = m.step(child_exited(ExitKind::Code(0), true), t0 + ms(30));
        assert_eq!(effects(&a), vec![Action::Signal { kill: false }]);
        assert_eq!(m.step(Event::OthersGone, t0 + ms(40)), vec![Action::Exit]);
    }
}

#[test]
fn the_serving_child_ending_during_a_handover_stops_the_new_one_too() {
    let t0 = Instant::now();
    let mut m = starting(t0, t0);
    let a = m.step(child_exited(ExitKind::Signal(9), false), t0 + ms(10));
    assert!(notes(&a).contains(&Note::HandoverFailed {
        old: 100,
        new: Some(200),
        why: Unmet::OldEnded
    }));
    assert_eq!(
        effects(&a),
        vec![
            Action::StopAlso { pgid: 200 },
            Action::Signal { kill: false }
        ]
    );
    assert_eq!(m.handover(), None);
    // Both gone: a fresh child after the crash's backoff, and the restart
    // asked for is told when it is ready.
    assert_eq!(m.step(Event::OthersGone, t0 + ms(20)), vec![]);
    assert_eq!(m.phase().name(), "backoff");
    let a = m.step(Event::Tick, t0 + ms(1010));
    assert_eq!(a, vec![Action::Launch]);
    m.step(Event::Spawned { pid: 300 }, t0 + ms(1010));
    let a = m.step(Event::Ready, t0 + ms(1030));
    assert_eq!(
        notes(&a),
        vec![Note::Ready { pid: 300 }, Note::Restarted(Ok(300))]
    );
}

/// Overlap off, child 100 ready at `t0` and restarted: it has exited and
/// new child 101 runs, not ready yet.
fn restarted_stop_first(t0: Instant) -> Machine {
    let mut off = overlap_settings();
    off.overlap = false;
    let mut m = ready(off, t0);
    m.step(Event::Restart, t0);
    m.step(child_exited(ExitKind::Code(0), false), t0);
    m.step(Event::Spawned { pid: 101 }, t0);
    m
}

#[test]
fn a_stop_first_restart_tells_its_outcome() {
    let t0 = Instant::now();
    // (what happens to the new child, when, what `restart` is told)
    let table = [
        (Event::Ready, ms(5), Ok(101)),
        (
            child_exited(ExitKind::Code(2), false),
            ms(5),
            Err(Unmet::Exited(ExitKind::Code(2))),
        ),
        (Event::Tick, ms(5000), Err(Unmet::NotReady)),
    ];
    for (event, at, told) in table {
        let mut m = restarted_stop_first(t0);
        let a = m.step(event, t0 + at);
        assert!(
            notes(&a).contains(&Note::Restarted(told)),
            "{event:?} at {at:?}: {a:?}"
        );
        // Told once.
        assert!(!notes(&m.step(Event::Tick, t0 + at + ms(1))).contains(&Note::Restarted(told)));
    }
    // Without readiness: told at the spawn.
    let mut m = Machine::new(Settings {
        health: HealthPolicy::default(),
        overlap: false,
        ..overlap_settings()
    });
    m.step(Event::Start, t0);
    m.step(Event::Spawned { pid: 100 }, t0);
    m.step(Event::Restart, t0);
    m.step(child_exited(ExitKind::Code(0), false), t0);
    let a = m.step(Event::Spawned { pid: 101 }, t0);
    assert!(notes(&a).contains(&Note::Restarted(Ok(101))));
}

#[test]
fn the_new_childs_failure_while_draining_stops_the_old_one_too() {
    let t0 = Instant::now();
    let mut m = starting(t0, t0);
    m.step(Event::NewReady, t0 + ms(10));
    let a = m.step(child_exited(ExitKind::Code(1), false), t0 + ms(20));
    assert_eq!(
        effects(&a),
        vec![
            Action::StopAlso { pgid: 100 },
            Action::Signal { kill: false }
        ]
    );
    assert_eq!(m.phase().name(), "stopping");
    assert_eq!(m.handover(), None);
}

#[test]
fn stray_handover_events_change_nothing() {
    let t0 = Instant::now();
    let mut m = ready(overlap_settings(), t0);
    let before = m.clone();
    for e in [
        Event::NewSpawned { pid: 5 },
        Event::NewSpawnFailed,
        Event::NewReady,
        exited(0, false),
        Event::SecondGone,
    ] {
        assert_eq!(m.step(e, t0), vec![], "{e:?}");
    }
    assert_eq!(m, before);
    // SecondGone while the draining old child's leader is alive: nothing.
    let mut m = starting(t0, t0);
    m.step(Event::NewReady, t0);
    assert_eq!(m.step(Event::SecondGone, t0), vec![]);
    assert!(m.handover().is_some());
}

#[test]
fn max_memory_holds_for_both_children_during_a_handover() {
    let t0 = Instant::now();
    let big = 1 << 30;
    let at = t0 + ms(100);
    // Child 100 serving, new child 200 starting since t0.
    let start = || starting(t0, t0);
    let draining = || {
        let mut m = starting(t0, t0);
        m.step(Event::NewReady, t0 + ms(10));
        m
    };
    let aborting = || {
        let mut m = starting(t0, t0);
        m.step(Event::Tick, t0 + ms(5000));
        m
    };
    let killed = || {
        let mut m = draining();
        m.step(Event::Tick, t0 + ms(10_010));
        m
    };
    type Build<'a> = &'a dyn Fn() -> Machine;
    // (the handover, which child grew, what follows)
    let table: [(&str, Build, Event, Vec<Action>); 8] = [
        (
            "new child starting",
            &start,
            Event::SecondTooBig(big),
            vec![
                Action::Note(Note::HandoverFailed {
                    old: 100,
                    new: Some(200),
                    why: Unmet::TooBig(big),
                }),
                Action::SignalSecond {
                    pgid: 200,
                    kill: false,
                },
            ],
        ),
        // Being replaced already: stopping it now would be the gap.
        ("old child serving", &start, Event::TooBig(big), vec![]),
        (
            "old child draining",
            &draining,
            Event::SecondTooBig(big),
            vec![
                Action::Note(Note::StopCutShort {
                    pid: 100,
                    old: true,
                    bytes: big,
                }),
                Action::SignalSecond {
                    pgid: 100,
                    kill: true,
                },
            ],
        ),
        // One handover at a time: restarted after this one.
        ("new child serving", &draining, Event::TooBig(big), vec![]),
        (
            "failed new child being stopped",
            &aborting,
            Event::SecondTooBig(big),
            vec![
                Action::Note(Note::StopCutShort {
                    pid: 200,
                    old: false,
                    bytes: big,
                }),
                Action::SignalSecond {
                    pgid: 200,
                    kill: true,
                },
            ],
        ),
        (
            "old child serving on",
            &aborting,
            Event::TooBig(big),
            vec![],
        ),
        (
            "old child killed already",
            &killed,
            Event::SecondTooBig(big),
            vec![],
        ),
        (
            "no handover",
            &|| ready(overlap_settings(), t0),
            Event::SecondTooBig(big),
            vec![],
        ),
    ];
    for (case, build, event, want) in table {
        let mut m = build();
        assert_eq!(m.step(event, at), want, "{case}");
        assert!(alive(&m) <= 2, "{case}");
    }
    // The failed new child's exit tells `restart` why; the old one serves.
    let mut m = start();
    m.step(Event::SecondTooBig(big), at);
    let a = m.step(exited(0, false), at + ms(50));
    assert_eq!(notes(&a), vec![Note::Restarted(Err(Unmet::TooBig(big)))]);
    assert_eq!((m.handover(), m.child_pid()), (None, Some(100)));
    // The old child, still past the limit once the failed handover is
    // over, is restarted stop-first: a new child that cannot come up is
    // not tried beside it again at every check.
    let mut m = start();
    m.step(Event::SecondTooBig(big), at);
    m.step(exited(0, false), at + ms(50));
    let a = m.step(Event::TooBig(big), at + ms(1100));
    assert!(
        a.contains(&Action::Signal { kill: false }),
        "stop-first: {a:?}"
    );
    assert!(!a.contains(&Action::SpawnNew), "no second handover: {a:?}");
    // A requested restart still overlaps.
    let mut m = start();
    m.step(Event::SecondTooBig(big), at);
    m.step(exited(0, false), at + ms(50));
    assert_eq!(m.step(Event::Restart, at + ms(60)), vec![Action::SpawnNew]);
    // A killed old child's exit ends the handover as usual.
    let mut m = draining();
    m.step(Event::SecondTooBig(big), at);
    assert_eq!(m.deadline(), None, "after SIGKILL the exit is waited for");
    let a = m.step(exited(137, false), at + ms(10));
    assert_eq!(
        notes(&a),
        vec![
            Note::HandoverDone { old: 100, new: 200 },
            Note::Restarted(Ok(200))
        ]
    );
}
