//! The driver's side of a handover (`[restart] overlap`): the second child
//! spawned on the same listening socket, its exit reaped, its group
//! signalled, its notify datagrams and probe answers told apart from the
//! serving child's. What happens when is the machine's
//! ([`crate::policy::Machine`], `policy/handover.rs`); this only carries
//! it out.

use std::time::{Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{info, warn};

use super::record::Group;
use super::targets::Targets;
use super::Daemon;
use crate::child;
use crate::logs::Stream;
use crate::policy::{Action, Event, ExitKind, Note, Stage};
use crate::state::RestartAnswer;
use crate::sys;

/// Whose a notify datagram or a probe answer is, during a handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Whose {
    /// The machine's child (the one serving).
    Serving,
    /// The new child, not ready yet.
    New,
    /// The old child being drained: not heard any more.
    Draining,
    /// Neither child's group.
    Stranger,
}

/// How many answers to restart requests the record keeps.
const ANSWERS_KEPT: usize = 8;

impl Daemon {
    /// SIGUSR1 (`supervisor restart`): the machine decides, and its answer
    /// goes into the record with the moment it was made (taken, or refused
    /// while a handover is in progress), written before anything else is
    /// done: `restart` reads the answer to its own request there, never a
    /// guess from a record that may be older than its signal.
    pub(super) fn restart_requested(&mut self) {
        let at = sys::monotonic_ns();
        let busy = self
            .machine
            .handover()
            .map(|h| crate::text::handover(h.phase_name(), h.new, h.old));
        let actions = self.machine.step(Event::Restart, Instant::now());
        let refused = actions
            .contains(&Action::Note(Note::HandoverBusy))
            .then(|| {
                format!(
                    "a handover is already in progress ({}); not restarting again",
                    busy.unwrap_or_default()
                )
            });
        if refused.is_none() {
            self.seen.restart_asked = Some(at);
        }
        if self.seen.restart_answers.len() >= ANSWERS_KEPT {
            self.seen.restart_answers.pop_front();
        }
        self.seen.restart_answers.push_back(RestartAnswer {
            mono_ns: at,
            taken: refused.is_none(),
            refused,
        });
        self.carry_out(actions);
    }

    /// `SpawnNew`: the new child on the same socket, beside the serving
    /// one. The socket is neither bound, re-armed nor made blocking (its
    /// flags are shared with the child that serves on it), and nothing
    /// holding it is a rival: both children are ours.
    pub(super) fn spawn_new(&mut self) -> Event {
        // The new child reports to a notify socket of its own, so what it
        // says is known to be its even where the kernel does not say who
        // sent a datagram (macOS). Should none be bound, it shares the
        // serving child's (as before) and the handover goes on.
        self.notify_second = None;
        let child_uid = self.recipe.creds.as_ref().map(|c| c.uid);
        let mut recipe = std::borrow::Cow::Borrowed(&self.recipe);
        match self.notify.as_ref().and_then(|n| n.sibling(child_uid)) {
            Some(Ok(sibling)) => {
                recipe.to_mut().notify_socket = Some(sibling.env_value.clone());
                self.notify_second = Some(sibling);
            }
            Some(Err(e)) => warn!(
                "handover: cannot bind a notify socket for the new child ({e}); it reports to the serving child's"
            ),
            None => {}
        }
        let spawned = child::spawn(&recipe);
        match spawned {
            Ok(sp) => {
                let pid = sp.pid;
                let start_time = sys::process_start_time(pid);
                self.second = Targets::child(pid, start_time);
                self.seen.second = Some(Group {
                    pgid: pid,
                    start_time,
                    // The child's own session (setsid before exec).
                    sid: Some(pid),
                    started_at: Some(SystemTime::now()),
                });
                self.seen.handover_at = Some(SystemTime::now());
                self.new_status = None;
                self.probes.hurry(std::time::Instant::now());
                if let (Some(readers), Some((out, err))) = (&self.logs.readers, sp.pipes) {
                    readers.add(out, Stream::Stdout, pid as u32);
                    readers.add(err, Stream::Stderr, pid as u32);
                }
                info!(
                    "handover: started new child {pid}: {}",
                    self.recipe.command.join(" ")
                );
                Event::NewSpawned { pid }
            }
            Err(e) => {
                // The serving child runs on: this is the handover's failure
                // (narrated, answered and alerted as one), never the
                // serving child's spawn error.
                self.notify_second = None;
                self.new_spawn_error = Some(e.to_string());
                Event::NewSpawnFailed
            }
        }
    }

    /// `SignalSecond`: the stop signal (or SIGKILL) to the second child's
    /// group; its leader by pid too, should it have left the group.
    pub(super) fn signal_second(&mut self, kill: bool) {
        let sig = match kill {
            true => Signal::SIGKILL,
            false => self.cfg.child.stop_signal,
        };
        self.second.prune();
        self.second.signal(sig);
    }

    /// `StopAlso`: the handover ends into an ordinary stop; what is left of
    /// the second child is stopped with the rest: its group as a group
    /// (what it forks on its way out goes too), and each member and its
    /// leader by pid with its start time (should one leave the group).
    /// The group first: while a stop is under way, each gets its signal
    /// once (by the group; by pid only what is outside it).
    pub(super) fn stop_also(&mut self, pgid: i32) {
        let mut members = sys::group_members(pgid);
        members.extend(self.second.singles());
        self.targets.add_group(pgid);
        self.targets.add(&members);
        self.second = Targets::default();
    }

    /// A note that moves things between the two children.
    pub(super) fn handover_noted(&mut self, note: &Note) {
        if let Note::HandoverDraining { .. } = note {
            // The new child is the machine's now: its group is the one
            // recorded as `child`, the old one's the second.
            std::mem::swap(&mut self.targets, &mut self.second);
            // Its notify socket is the serving one now (a stop-first
            // restart later starts its child on it, a reload hands it
            // over); the old child's is the second until it is gone.
            if let (Some(serving), Some(new)) = (self.notify.as_mut(), self.notify_second.as_mut())
            {
                new.take_folders(serving);
                std::mem::swap(serving, new);
                self.recipe.notify_socket = Some(serving.env_value.clone());
            }
            std::mem::swap(&mut self.seen.group, &mut self.seen.second);
            self.seen.status = self.new_status.take();
            self.seen.last_probe = None;
        }
    }

    /// After the machine moved: forget the second child once the handover
    /// is over.
    pub(super) fn handover_settled(&mut self) {
        if self.machine.handover().is_none() && self.seen.second.is_some() {
            // The second child's notify socket and its file.
            self.notify_second = None;
            self.seen.second = None;
            self.seen.handover_at = None;
            self.second = Targets::default();
            self.new_status = None;
        }
    }

    /// The second child's leader was reaped.
    pub(super) fn second_exited(&mut self, pid: i32, kind: ExitKind) {
        // It may have shut the socket down for everyone on its way out.
        self.rearm();
        self.second.forget(pid);
        self.second.prune();
        let others_left = !self.second.gone();
        if let Some(h) = self.machine.handover() {
            if matches!(h.stage, Stage::Starting { .. }) {
                warn!(
                    "handover: new child {pid} {} before it was ready",
                    crate::text::describe_exit(kind)
                );
            }
        }
        self.feed(Event::SecondExited { kind, others_left });
    }

    /// While the second child's leader is gone but its group is not: is it
    /// gone now?
    pub(super) fn poll_second(&mut self) -> bool {
        if self.machine.second_group_pending().is_none() {
            return false;
        }
        self.second.prune();
        if self.second.gone() {
            self.feed(Event::SecondGone);
            return true;
        }
        false
    }

    /// Which child a known process (a datagram's kernel-verified sender,
    /// a probe's taker) belongs to, by its process group. What has no
    /// known process is attributed by its caller: a datagram by its
    /// socket (`readiness::attribute`), a probe to the serving child.
    pub(super) fn whose(&self, pid: i32) -> Whose {
        let Some(serving) = self.machine.child_pid() else {
            return Whose::Stranger;
        };
        let handover = self.machine.handover();
        let group = nix::unistd::getpgid(Some(Pid::from_raw(pid)))
            .map(Pid::as_raw)
            .ok();
        if group == Some(serving) || pid == serving {
            return Whose::Serving;
        }
        match handover.and_then(|h| h.second().map(|s| (s, h.stage))) {
            Some((second, Stage::Starting { .. })) if group == Some(second) || pid == second => {
                Whose::New
            }
            Some((second, _)) if group == Some(second) || pid == second => Whose::Draining,
            _ => Whose::Stranger,
        }
    }

    /// The members of the second child's group: ours, never rivals.
    pub(super) fn in_second_group(&self, pid: i32) -> bool {
        let Some(second) = self.machine.handover().and_then(|h| h.second()) else {
            return false;
        };
        pid == second
            || nix::unistd::getpgid(Some(Pid::from_raw(pid))).ok() == Some(Pid::from_raw(second))
    }
}
