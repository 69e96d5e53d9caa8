//! The handover (`[restart] overlap`): a requested restart of a ready child
//! starts the new child beside the old one; the old one is stopped only
//! once the new one is ready, and the new one is stopped (the old serving
//! on) when it exits or is not ready within `start_timeout`. At most two
//! children, one handover at a time.
//!
//! While a handover is on, the machine's phase stays `Running` (its child
//! the one serving: the old until the new is ready, then the new) and the
//! second child lives in [`Handover`]. Every way out of `Running` (a stop,
//! the serving child's end, a failed health rule) first hands the second
//! child to the ordinary stop (`merge_handover`), so the rest of the
//! machine never sees two.

use std::time::Instant;

use super::{Action, Event, Handover, Health, LastExit, Machine, Note, Phase, Stage, Unmet};

impl Machine {
    /// The handover in progress, if any.
    pub(crate) fn handover(&self) -> Option<Handover> {
        self.handover
    }

    /// The second child of a handover, whose exit the driver reports as
    /// `SecondExited`, while its leader is alive.
    pub(crate) fn second_pid(&self) -> Option<i32> {
        self.handover
            .filter(|h| h.leader_alive)
            .and_then(|h| h.second())
    }

    /// The second child's leader is gone but its group is being waited
    /// for: the driver polls it and reports `SecondGone`.
    pub(crate) fn second_group_pending(&self) -> Option<i32> {
        self.handover
            .filter(|h| {
                !h.leader_alive
                    && matches!(h.stage, Stage::Aborting { .. } | Stage::Draining { .. })
            })
            .and_then(|h| h.second())
    }

    pub(super) fn handover_deadline(&self) -> Option<Instant> {
        let h = self.handover?;
        match h.stage {
            Stage::Spawning => None,
            Stage::Starting { since } => self
                .settings
                .health
                .readiness
                .then(|| since + self.settings.health.start_timeout),
            // After SIGKILL the leader's exit is waited for without a timer.
            Stage::Aborting { killed: true, .. } | Stage::Draining { killed: true, .. }
                if h.leader_alive =>
            {
                None
            }
            Stage::Aborting { deadline, .. } | Stage::Draining { deadline, .. } => Some(deadline),
        }
    }

    /// Start a handover away from the ready child `old`.
    pub(super) fn begin_handover(&mut self, old: i32, now: Instant) -> Vec<Action> {
        self.handover = Some(Handover {
            started_at: now,
            old,
            new: None,
            leader_alive: false,
            stage: Stage::Spawning,
        });
        vec![Action::SpawnNew]
    }

    pub(super) fn handover_step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let Some(mut h) = self.handover else {
            return vec![];
        };
        match (h.stage, event) {
            (Stage::Spawning, Event::NewSpawned { pid }) => {
                self.spawns = self.spawns.saturating_add(1);
                h.new = Some(pid);
                h.leader_alive = true;
                h.stage = Stage::Starting { since: now };
                self.handover = Some(h);
                let mut actions = vec![Action::Note(Note::HandoverStarted {
                    old: h.old,
                    new: pid,
                })];
                if !self.settings.health.readiness {
                    actions.extend(self.new_ready(now));
                }
                actions
            }
            (Stage::Spawning, Event::NewSpawnFailed) => {
                self.handover = None;
                self.replace_failed = Some(h.old);
                let mut actions = vec![Action::Note(Note::HandoverFailed {
                    old: h.old,
                    new: None,
                    why: Unmet::SpawnFailed,
                })];
                actions.extend(self.outcome(Err(Unmet::SpawnFailed)));
                actions
            }
            (Stage::Starting { .. }, Event::NewReady) => self.new_ready(now),
            (Stage::Starting { .. }, Event::SecondExited { kind, others_left }) => {
                h.leader_alive = false;
                self.handover = Some(h);
                self.abort(Unmet::Exited(kind), others_left, now)
            }
            (
                Stage::Aborting { killed, .. } | Stage::Draining { killed, .. },
                Event::SecondExited { kind, others_left },
            ) if h.leader_alive => {
                h.leader_alive = false;
                self.handover = Some(h);
                if matches!(h.stage, Stage::Draining { .. }) {
                    self.last_exit = Some(LastExit { kind, at: now });
                }
                match (others_left, h.second()) {
                    // Those found only now get what the others got.
                    (true, Some(pgid)) => vec![Action::SignalSecond { pgid, kill: killed }],
                    _ => self.end_handover(),
                }
            }
            (Stage::Aborting { .. } | Stage::Draining { .. }, Event::SecondGone)
                if !h.leader_alive =>
            {
                self.end_handover()
            }
            // `max_memory` holds for both children. A new child past it
            // before it is ready fails the handover (stopped gracefully, as
            // any child past it is; the old one serves on).
            (Stage::Starting { .. }, Event::SecondTooBig(bytes)) => {
                self.abort(Unmet::TooBig(bytes), false, now)
            }
            // One already being stopped gets no more time: killed now.
            (
                Stage::Aborting {
                    killed: false, why, ..
                },
                Event::SecondTooBig(bytes),
            ) => {
                h.stage = Stage::Aborting {
                    why,
                    deadline: now + self.settings.kill_grace,
                    killed: true,
                };
                self.cut_short(h, bytes)
            }
            (Stage::Draining { killed: false, .. }, Event::SecondTooBig(bytes)) => {
                h.stage = Stage::Draining {
                    deadline: now + self.settings.kill_grace,
                    killed: true,
                };
                self.cut_short(h, bytes)
            }
            _ => vec![],
        }
    }

    /// The handover's deadlines: the new child's start timeout, the stop
    /// timeout of whichever is being stopped, then the kill grace.
    pub(super) fn handover_tick(&mut self, now: Instant) -> Vec<Action> {
        let Some(mut h) = self.handover else {
            return vec![];
        };
        if self.handover_deadline().is_none_or(|d| now < d) {
            return vec![];
        }
        match h.stage {
            Stage::Starting { .. } => self.abort(Unmet::NotReady, false, now),
            Stage::Aborting {
                killed: false, why, ..
            } => {
                h.stage = Stage::Aborting {
                    why,
                    deadline: now + self.settings.kill_grace,
                    killed: true,
                };
                self.kill_second(h)
            }
            Stage::Draining { killed: false, .. } => {
                h.stage = Stage::Draining {
                    deadline: now + self.settings.kill_grace,
                    killed: true,
                };
                self.kill_second(h)
            }
            // Killed, the leader reaped, and members still there after the
            // grace: going on without them, as a stop does.
            Stage::Aborting { .. } | Stage::Draining { .. } => {
                let mut actions = vec![Action::Note(Note::GaveUp)];
                actions.extend(self.end_handover());
                actions
            }
            Stage::Spawning => vec![],
        }
    }

    /// The second child, being stopped, passed `max_memory`: SIGKILL now.
    fn cut_short(&mut self, h: Handover, bytes: u64) -> Vec<Action> {
        let Some(pid) = h.second() else {
            return vec![];
        };
        let mut actions = vec![Action::Note(Note::StopCutShort {
            pid,
            old: matches!(h.stage, Stage::Draining { .. }),
            bytes,
        })];
        actions.extend(self.kill_second(h));
        actions
    }

    fn kill_second(&mut self, h: Handover) -> Vec<Action> {
        self.handover = Some(h);
        match h.second() {
            Some(pgid) => vec![Action::SignalSecond { pgid, kill: true }],
            None => vec![],
        }
    }

    /// The new child is ready: it becomes the machine's child and serves;
    /// the old one's group gets the stop signal.
    fn new_ready(&mut self, now: Instant) -> Vec<Action> {
        let Some(mut h) = self.handover else {
            return vec![];
        };
        let (Stage::Starting { since }, Some(new)) = (h.stage, h.new) else {
            return vec![];
        };
        self.phase = Phase::Running {
            pid: new,
            since,
            health: Health {
                ready_since: Some(now),
                probe_failures: 0,
                watchdog_until: self.settings.health.watchdog.map(|w| now + w),
            },
        };
        h.stage = Stage::Draining {
            deadline: now + self.settings.stop_timeout,
            killed: false,
        };
        // The old child's leader is alive: it was serving until now.
        h.leader_alive = true;
        self.handover = Some(h);
        vec![
            Action::Note(Note::Ready { pid: new }),
            Action::Note(Note::HandoverDraining { old: h.old, new }),
            Action::SignalSecond {
                pgid: h.old,
                kill: false,
            },
        ]
    }

    /// The new child failed: stop its group (if anything of it is left);
    /// the old one serves on.
    fn abort(&mut self, why: Unmet, others_left: bool, now: Instant) -> Vec<Action> {
        let Some(mut h) = self.handover else {
            return vec![];
        };
        h.stage = Stage::Aborting {
            why,
            deadline: now + self.settings.stop_timeout,
            killed: false,
        };
        self.handover = Some(h);
        self.replace_failed = Some(h.old);
        let mut actions = vec![Action::Note(Note::HandoverFailed {
            old: h.old,
            new: h.new,
            why,
        })];
        match h.new {
            Some(pgid) if h.leader_alive || others_left => {
                actions.push(Action::SignalSecond { pgid, kill: false });
            }
            _ => actions.extend(self.end_handover()),
        }
        actions
    }

    /// Nothing of the second child is left: one child again.
    fn end_handover(&mut self) -> Vec<Action> {
        let Some(h) = self.handover.take() else {
            return vec![];
        };
        match (h.stage, h.new) {
            (Stage::Draining { .. }, Some(new)) => {
                let mut actions = vec![Action::Note(Note::HandoverDone { old: h.old, new })];
                actions.extend(self.outcome(Ok(new)));
                actions
            }
            (Stage::Aborting { why, .. }, _) => self.outcome(Err(why)).into_iter().collect(),
            _ => vec![],
        }
    }

    /// The serving child is leaving `Running` (a stop, its end, a failed
    /// health rule): the second child joins the ordinary stop, so that
    /// everything is gone before anything starts again. `why`, when the
    /// new child had not taken over yet, is said as the handover's failure.
    pub(super) fn merge_handover(&mut self, why: Option<Unmet>) -> Vec<Action> {
        let Some(h) = self.handover.take() else {
            return vec![];
        };
        let mut actions = Vec::new();
        if let (Some(why), Stage::Starting { .. }) = (why, h.stage) {
            actions.push(Action::Note(Note::HandoverFailed {
                old: h.old,
                new: h.new,
                why,
            }));
        }
        if let Some(pgid) = h.second() {
            actions.push(Action::StopAlso { pgid });
        }
        actions
    }
}
