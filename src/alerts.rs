//! When to tell a person: a pure rule from what happened to the alerts that
//! go out, with the clock as an argument like the restart policy.
//!
//! The driver feeds it what the machine noted ([`Seen`]) and its deadline
//! ticks; it answers with [`Fire`]s, which the driver hands to the hook
//! runner (`daemon/hooks.rs`). The rules are SPEC.md's `[alerts]`:
//! `crash-loop` when the streak of failed starts reaches
//! `crash_loop_after`, `port-busy` after waiting `port_busy_after` for the
//! port, `unhealthy` when a liveness failure restarts a ready child,
//! `memory` when `max_memory` does, `recovered` once the child has been up
//! (ready) for `reset_after` after any of those, `exit` on every unexpected
//! exit. The same event goes out at most once per `min_interval`; the ones
//! held back are counted and reported with the next one of their kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::{AlertEvent, AlertsSection};

/// What the driver saw, for alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A child was started: the port is ours.
    Spawned,
    /// The child became ready.
    Ready,
    /// The child ended; `expected` when it was stopped on request (a stop,
    /// a restart, a failed health rule). `streak`: early deaths in a row.
    ChildExited { expected: bool, streak: u32 },
    /// A start failed before the child ran (the port is ours).
    SpawnFailed { streak: u32 },
    /// The port has been refused since `since`.
    WaitingForPort { since: Instant },
    /// A liveness failure (probes, watchdog) stopped a ready child.
    Unhealthy,
    /// `max_memory` stopped the child.
    Memory,
    /// A handover's new child failed; the old one serves on.
    HandoverFailed,
    /// The crash streak reached `restart.give_up_after`: the supervisor
    /// stops and exits.
    GaveUp,
}

/// One alert to send now, with how many of its kind were held back since
/// the last one went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fire {
    pub(crate) event: AlertEvent,
    pub(crate) suppressed: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alerts {
    rules: AlertsSection,
    /// `restart.reset_after`: how long a child must be up to count as
    /// recovered.
    reset_after: Duration,
    /// Per kind: when one last went out.
    sent: BTreeMap<AlertEvent, Instant>,
    /// Per kind: how many were held back since.
    held: BTreeMap<AlertEvent, u32>,
    /// The streak at the last exit or failed start: a crash loop is told
    /// when it grows, not when an operator restarts a child mid-loop.
    streak: u32,
    /// Since when the port has been refused, while it is.
    port_since: Option<Instant>,
    /// This wait for the port has been decided: told, or held back by
    /// `min_interval`. One `port-busy` per wait, and no deadline after it.
    port_told: bool,
    /// A problem was told; `recovered` is owed once the child is up.
    owed: bool,
    /// Since when the child has been ready, while it is.
    ready_since: Option<Instant>,
}

impl Alerts {
    pub(crate) fn new(rules: AlertsSection, reset_after: Duration) -> Alerts {
        Alerts {
            rules,
            reset_after,
            sent: BTreeMap::new(),
            held: BTreeMap::new(),
            streak: 0,
            port_since: None,
            port_told: false,
            owed: false,
            ready_since: None,
        }
    }

    /// Carry on from an earlier supervisor (a launchd respawn must not
    /// re-alert a crash loop it already told about): its streak and when
    /// each kind last went out.
    pub(crate) fn resume(
        &mut self,
        streak: u32,
        sent: impl IntoIterator<Item = (AlertEvent, Instant)>,
    ) {
        self.streak = streak;
        for (event, at) in sent {
            self.sent.insert(event, at);
            if event != AlertEvent::Recovered && event != AlertEvent::Exit {
                self.owed = true;
            }
        }
    }

    /// An alert could not even be queued: count it with its kind.
    pub(crate) fn dropped(&mut self, event: AlertEvent) {
        *self.held.entry(event).or_default() += 1;
    }

    /// When `tick` has something to decide, if ever.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let port = self
            .port_since
            .map(|s| s + self.rules.port_busy_after)
            .filter(|_| !self.port_told && self.wants(AlertEvent::PortBusy));
        let recovery = self
            .ready_since
            .filter(|_| self.owed && self.wants(AlertEvent::Recovered))
            .map(|r| r + self.reset_after);
        match (port, recovery) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn see(&mut self, seen: Seen, now: Instant) -> Vec<Fire> {
        let mut out = Vec::new();
        match seen {
            Seen::Spawned => self.port_freed(),
            Seen::Ready => self.ready_since = Some(now),
            Seen::ChildExited { expected, streak } => {
                self.ready_since = None;
                if !expected {
                    out.extend(self.want(AlertEvent::Exit, now));
                }
                out.extend(self.streak_is(streak, now));
            }
            Seen::SpawnFailed { streak } => {
                self.port_freed();
                out.extend(self.streak_is(streak, now));
            }
            Seen::WaitingForPort { since } => {
                if self.port_since != Some(since) {
                    self.port_since = Some(since);
                    self.port_told = false;
                }
                out.extend(self.port_busy(now));
            }
            Seen::Unhealthy => {
                self.ready_since = None;
                out.extend(self.want(AlertEvent::Unhealthy, now));
            }
            Seen::Memory => {
                self.ready_since = None;
                out.extend(self.want(AlertEvent::Memory, now));
            }
            Seen::HandoverFailed => out.extend(self.want(AlertEvent::HandoverFailed, now)),
            // The last word of this supervisor: never held back by
            // `min_interval` (an earlier supervisor's may have gone out).
            Seen::GaveUp if self.wants(AlertEvent::GaveUp) => {
                self.ready_since = None;
                self.sent.insert(AlertEvent::GaveUp, now);
                out.push(Fire {
                    event: AlertEvent::GaveUp,
                    suppressed: self.held.remove(&AlertEvent::GaveUp).unwrap_or(0),
                });
            }
            Seen::GaveUp => {}
        }
        out
    }

    /// A deadline passed: the port has been busy long enough, or the child
    /// has been up long enough to call it recovered.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Fire> {
        let mut out = Vec::new();
        out.extend(self.port_busy(now));
        if let Some(ready) = self.ready_since {
            if self.owed && now >= ready + self.reset_after {
                self.owed = false;
                out.extend(self.want(AlertEvent::Recovered, now));
            }
        }
        out
    }

    fn streak_is(&mut self, streak: u32, now: Instant) -> Option<Fire> {
        let grew = streak > self.streak;
        self.streak = streak;
        (grew && streak >= self.rules.crash_loop_after)
            .then(|| self.want(AlertEvent::CrashLoop, now))
            .flatten()
    }

    fn wants(&self, event: AlertEvent) -> bool {
        self.rules.events.contains(&event)
    }

    /// The port has been ours again (a child started, or a start failed
    /// after the bind): the next wait is a new one.
    fn port_freed(&mut self) {
        self.port_since = None;
        self.port_told = false;
    }

    /// `port-busy`, once per wait, when it has lasted `port_busy_after`.
    fn port_busy(&mut self, now: Instant) -> Option<Fire> {
        let since = self.port_since?;
        if self.port_told || now < since + self.rules.port_busy_after {
            return None;
        }
        self.port_told = true;
        self.want(AlertEvent::PortBusy, now)
    }

    /// Send `event` now, unless it is not asked for or one went out less
    /// than `min_interval` ago (then it is counted).
    fn want(&mut self, event: AlertEvent, now: Instant) -> Option<Fire> {
        if !self.wants(event) {
            return None;
        }
        let recent = self
            .sent
            .get(&event)
            .is_some_and(|s| now.saturating_duration_since(*s) < self.rules.min_interval);
        if recent {
            *self.held.entry(event).or_default() += 1;
            return None;
        }
        self.sent.insert(event, now);
        if !matches!(event, AlertEvent::Recovered | AlertEvent::Exit) {
            self.owed = true;
        }
        Some(Fire {
            event,
            suppressed: self.held.remove(&event).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rules(events: &[AlertEvent]) -> AlertsSection {
        AlertsSection {
            command: vec!["/bin/true".into()],
            events: events.iter().copied().collect::<BTreeSet<_>>(),
            crash_loop_after: 3,
            port_busy_after: ms(30_000),
            min_interval: ms(900_000),
            timeout: ms(30_000),
        }
    }

    fn alerts() -> Alerts {
        Alerts::new(rules(&AlertEvent::DEFAULT), ms(60_000))
    }

    fn fired(out: Vec<Fire>) -> Vec<(AlertEvent, u32)> {
        out.into_iter().map(|f| (f.event, f.suppressed)).collect()
    }

    const DIED: fn(u32) -> Seen = |streak| Seen::ChildExited {
        expected: false,
        streak,
    };

    #[test]
    fn a_crash_loop_is_told_once_per_min_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut a = alerts();
        // (ms, what, alerts sent)
        type Case<'a> = (u64, Seen, &'a [(AlertEvent, u32)]);
        let table: [Case; 7] = [
            (0, DIED(1), &[]),
            (100, DIED(2), &[]),
            (300, DIED(3), &[(AlertEvent::CrashLoop, 0)]),
            (700, DIED(4), &[]),
            (1500, Seen::SpawnFailed { streak: 5 }, &[]),
            // min_interval (15 min) later: the held-back two are reported.
            (900_300, DIED(6), &[(AlertEvent::CrashLoop, 2)]),
            (900_400, DIED(7), &[]),
        ];
        for (at, seen, want) in table {
            assert_eq!(fired(a.see(seen, t0 + ms(at))), want, "at {at}");
        }
    }

    #[test]
    fn an_operator_restart_mid_loop_is_not_a_crash() {
        let t0 = Instant::now();
        let mut a2 = Alerts::new(
            AlertsSection {
                min_interval: ms(1),
                ..rules(&AlertEvent::DEFAULT)
            },
            ms(60_000),
        );
        a2.see(DIED(3), t0);
        // Same streak again (a restart of a child that never got healthy).
        let expected = Seen::ChildExited {
            expected: true,
            streak: 3,
        };
        assert_eq!(fired(a2.see(expected, t0 + ms(10))), []);
    }

    #[test]
    fn a_respawned_supervisor_does_not_tell_again_within_min_interval() {
        let t0 = Instant::now();
        let mut a = alerts();
        a.resume(4, [(AlertEvent::CrashLoop, t0)]);
        assert_eq!(fired(a.see(DIED(5), t0 + ms(5000))), []);
        assert_eq!(
            fired(a.see(DIED(6), t0 + ms(900_000))),
            [(AlertEvent::CrashLoop, 1)]
        );
    }

    #[test]
    fn a_busy_port_is_told_after_port_busy_after_then_recovery() {
        let t0 = Instant::now();
        let mut a = alerts();
        assert_eq!(fired(a.see(Seen::WaitingForPort { since: t0 }, t0)), []);
        assert_eq!(a.deadline(), Some(t0 + ms(30_000)));
        assert_eq!(fired(a.tick(t0 + ms(29_999))), []);
        assert_eq!(fired(a.tick(t0 + ms(30_000))), [(AlertEvent::PortBusy, 0)]);
        // No second one for the same wait: no deadline left for it (the
        // driver would otherwise wake at once, over and over), nothing at
        // the next tick or bind retry.
        assert_eq!(a.deadline(), None);
        assert_eq!(fired(a.tick(t0 + ms(30_001))), []);
        let retry = Seen::WaitingForPort { since: t0 };
        assert_eq!(fired(a.see(retry, t0 + ms(31_000))), []);
        assert_eq!(a.deadline(), None);
        // Freed: the child starts and is up for reset_after.
        let t1 = t0 + ms(40_000);
        a.see(Seen::Spawned, t1);
        a.see(Seen::Ready, t1);
        assert_eq!(a.deadline(), Some(t1 + ms(60_000)));
        assert_eq!(fired(a.tick(t1 + ms(59_999))), []);
        assert_eq!(fired(a.tick(t1 + ms(60_000))), [(AlertEvent::Recovered, 0)]);
        // Once.
        assert_eq!(a.deadline(), None);
        assert_eq!(fired(a.tick(t1 + ms(120_000))), []);
    }

    #[test]
    fn a_busy_port_held_back_is_counted_once_per_wait() {
        let t0 = Instant::now();
        let mut a = alerts();
        let wait = |since| Seen::WaitingForPort { since };
        a.see(wait(t0), t0);
        assert_eq!(fired(a.tick(t0 + ms(30_000))), [(AlertEvent::PortBusy, 0)]);
        a.see(Seen::Spawned, t0 + ms(31_000));
        // A second wait within min_interval: held back once, however many
        // bind retries and ticks it lasts.
        let t1 = t0 + ms(40_000);
        a.see(wait(t1), t1);
        assert_eq!(a.deadline(), Some(t1 + ms(30_000)));
        for n in 0..5 {
            let now = t1 + ms(30_000 + n * 1000);
            assert_eq!(fired(a.see(wait(t1), now)), []);
            assert_eq!(fired(a.tick(now)), []);
        }
        assert_eq!(a.deadline(), None);
        a.see(Seen::SpawnFailed { streak: 1 }, t1 + ms(60_000));
        // A third wait after min_interval: told, with the one held back.
        let t2 = t0 + ms(1_000_000);
        assert_eq!(
            fired(a.see(wait(t2), t2 + ms(30_000))),
            [(AlertEvent::PortBusy, 1)]
        );
        assert_eq!(a.deadline(), None);
    }

    #[test]
    fn recovery_needs_an_uninterrupted_run() {
        let t0 = Instant::now();
        let mut a = alerts();
        a.see(Seen::Ready, t0);
        assert_eq!(
            fired(a.see(Seen::Unhealthy, t0 + ms(10))),
            [(AlertEvent::Unhealthy, 0)]
        );
        a.see(Seen::Ready, t0 + ms(100));
        a.see(DIED(1), t0 + ms(30_000));
        a.see(Seen::Ready, t0 + ms(31_000));
        assert_eq!(fired(a.tick(t0 + ms(60_100))), [], "interrupted at 30 s");
        assert_eq!(fired(a.tick(t0 + ms(91_000))), [(AlertEvent::Recovered, 0)]);
        // Nothing owed without a problem told.
        let mut b = alerts();
        b.see(Seen::Ready, t0);
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn gave_up_is_a_default_event_never_held_back() {
        assert!(AlertEvent::DEFAULT.contains(&AlertEvent::GaveUp));
        let t0 = Instant::now();
        let mut a = Alerts::new(rules(&AlertEvent::DEFAULT), ms(60_000));
        // An earlier supervisor's gave-up went out a moment ago.
        a.resume(3, [(AlertEvent::GaveUp, t0)]);
        assert_eq!(
            fired(a.see(Seen::GaveUp, t0 + ms(1))),
            [(AlertEvent::GaveUp, 0)]
        );
        let mut b = Alerts::new(rules(&[AlertEvent::CrashLoop]), ms(60_000));
        assert_eq!(fired(b.see(Seen::GaveUp, t0)), [], "not asked for");
    }

    #[test]
    fn only_the_events_asked_for() {
        let t0 = Instant::now();
        let mut a = Alerts::new(rules(&[AlertEvent::Exit, AlertEvent::Memory]), ms(60_000));
        assert_eq!(fired(a.see(DIED(1), t0)), [(AlertEvent::Exit, 0)]);
        assert_eq!(fired(a.see(DIED(5), t0 + ms(1))), [], "exit held back");
        assert_eq!(
            fired(a.see(Seen::Memory, t0 + ms(2))),
            [(AlertEvent::Memory, 0)]
        );
        assert_eq!(fired(a.see(Seen::Unhealthy, t0 + ms(3))), []);
        // An expected exit is not an `exit` event.
        let mut b = Alerts::new(rules(&[AlertEvent::Exit]), ms(60_000));
        let stopped = Seen::ChildExited {
            expected: true,
            streak: 0,
        };
        assert_eq!(fired(b.see(stopped, t0)), []);
        // Recovered not asked for: no deadline for it.
        a.see(Seen::Ready, t0 + ms(4));
        assert_eq!(a.deadline(), None);
    }

    #[test]
    fn dropped_alerts_are_counted_with_the_next() {
        let t0 = Instant::now();
        let mut a = Alerts::new(
            AlertsSection {
                min_interval: ms(10),
                ..rules(&[AlertEvent::Exit])
            },
            ms(60_000),
        );
        a.dropped(AlertEvent::Exit);
        a.dropped(AlertEvent::Exit);
        assert_eq!(fired(a.see(DIED(1), t0)), [(AlertEvent::Exit, 2)]);
    }
}
