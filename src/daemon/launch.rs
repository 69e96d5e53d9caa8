//! Bringing a child up: the port made ours ([`super::port`]: bound, or
//! re-armed when a child shut it down), nothing else holding our socket,
//! then the spawn. The answer to the machine's `Launch` is the event that
//! says how it went.

use std::time::SystemTime;

use nix::unistd::Pid;
use tracing::info;

use super::record::Group;
use super::targets::Targets;
use super::Daemon;
use crate::alerts::Seen;
use crate::child;
use crate::logs::Stream;
use crate::policy::Event;
use crate::sys;

impl Daemon {
    /// Make sure the port is ours and listening and nothing else holds our
    /// socket, then start a child.
    pub(super) fn launch(&mut self) -> Event {
        // A reload that changed [listen] bound the new socket already.
        self.port.switch();
        self.rearm();
        if self.port.listener().is_none() && !self.port.bind() {
            return Event::BindFailed;
        }
        // One machine-wide scan per restart (no subreaper): the one at the
        // child's exit (or the last while stopping what it left) counts
        // when it found nothing.
        let rivals = match self.port.take_clean() {
            true => Vec::new(),
            false => self.rivals(),
        };
        if !rivals.is_empty() {
            // Said once, by the machine's StoppingRivals note.
            self.targets = Targets::pids(&rivals);
            return Event::RivalsFound;
        }
        self.spawn()
    }

    /// A socket a child shut down listens again (or is bound anew).
    pub(super) fn rearm(&mut self) {
        self.port.rearm();
    }

    /// The processes, other than us, our child and a handover's second
    /// child, that hold our listening socket ([`super::port::Port::rivals`]).
    pub(super) fn rivals(&self) -> Vec<i32> {
        let child = self.machine.child_pid();
        self.port.rivals(self.seen.me.pid, |p| {
            Some(p) == child || self.in_second_group(p)
        })
    }

    /// After a scan by [`Daemon::rivals`]: whether it lets the next spawn
    /// skip its own (only while no child of ours runs).
    pub(super) fn note_scan(&mut self, rivals: &[i32]) {
        let alone =
            self.machine.handover().is_none() && self.machine.second_group_pending().is_none();
        self.port.note_scan(rivals, alone);
    }

    /// The rivals anywhere on the machine, in our tree or not (the
    /// start-up scan's rule): a process the child passed the socket to
    /// over a Unix socket (`SCM_RIGHTS`) descends from someone else. What
    /// a `stop` or a requested restart looks for once, as it begins: after
    /// `stop` returns 0, no process that held our socket is alive (SPEC
    /// 0.2). The current child's group is signalled as a group and is
    /// left out.
    pub(super) fn rivals_anywhere(&self) -> Vec<i32> {
        let child = self.machine.child_pid();
        let group = child.map(Pid::from_raw);
        let mut holders = self.port.holders(sys::Scope::All, |p| {
            Some(p) == child || self.in_second_group(p)
        });
        holders.retain(|p| {
            group.is_none() || nix::unistd::getpgid(Some(Pid::from_raw(*p))).ok() != group
        });
        holders
    }

    fn spawn(&mut self) -> Event {
        self.port.spawning();
        match child::spawn(&self.recipe) {
            Ok(sp) => {
                let pid = sp.pid;
                let start_time = sys::process_start_time(pid);
                self.seen.status = None;
                self.seen.last_probe = None;
                self.seen.spawn_error = None;
                self.targets = Targets::child(pid, start_time);
                self.seen.group = Some(Group {
                    pgid: pid,
                    start_time,
                    // The child's own session (setsid before exec).
                    sid: Some(pid),
                    started_at: Some(SystemTime::now()),
                });
                if let (Some(readers), Some((out, err))) = (&self.logs.readers, sp.pipes) {
                    readers.add(out, Stream::Stdout, pid as u32);
                    readers.add(err, Stream::Stderr, pid as u32);
                }
                info!("started child {pid}: {}", self.recipe.command.join(" "));
                self.alert(Seen::Spawned, |_| String::new());
                Event::Spawned { pid }
            }
            Err(e) => {
                self.seen.spawn_error = Some(e.to_string());
                Event::SpawnFailed
            }
        }
    }
}
