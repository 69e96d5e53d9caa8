//! Bringing a child up: the port made ours (bound, or re-armed when a child
//! shut it down), nothing else holding our socket, then the spawn. The
//! answer to the machine's `Launch` is the event that says how it went.

use std::os::fd::AsFd;
use std::time::SystemTime;

use nix::unistd::Pid;
use tracing::{info, warn};

use super::record::Group;
use super::targets::Targets;
use super::Daemon;
use crate::alerts::Seen;
use crate::child;
use crate::listener::{describe_bind_error, Listener};
use crate::logs::Stream;
use crate::policy::Event;
use crate::sys;

/// A process that holds a socket only because it was just forked by one
/// that holds it drops it at its exec, within milliseconds: holders seen
/// machine-wide are looked at twice, this far apart, before they count.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(30);

/// `holders` that are still among `look()` after [`SETTLE`] (none looked
/// for when there are none).
pub(super) fn settled(mut holders: Vec<i32>, look: impl Fn() -> Vec<i32>) -> Vec<i32> {
    if !holders.is_empty() {
        std::thread::sleep(SETTLE);
        let again = look();
        holders.retain(|p| again.contains(p));
    }
    holders
}

impl Daemon {
    /// Make sure the port is ours and listening and nothing else holds our
    /// socket, then start a child.
    pub(super) fn launch(&mut self) -> Event {
        // A reload that changed [listen] bound the new socket already.
        self.switch_listener();
        self.rearm();
        if self.listener.is_none() {
            if let Err(event) = self.bind() {
                return event;
            }
        }
        // One machine-wide scan per restart (no subreaper): the one at the
        // child's exit (or the last while stopping what it left) counts
        // when it found nothing.
        let rivals = match std::mem::take(&mut self.clean_since_exit) {
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

    /// The processes, other than us, that hold our listening socket. With a
    /// subreaper they all descend from us (cheap: our few descendants);
    /// without one (macOS) they may be anywhere.
    pub(super) fn rivals(&self) -> Vec<i32> {
        let scope = match self.subreaper {
            true => sys::Scope::DescendantsOf(self.seen.me.pid),
            false => sys::Scope::All,
        };
        self.holders_in(scope)
    }

    /// After a scan by [`Daemon::rivals`] between a child's exit and the
    /// next spawn: whether it lets that spawn skip its own. Only without a
    /// subreaper (a machine-wide scan is the costly one; Linux keeps its
    /// cheap scan of our tree before each spawn) and only when no child of
    /// ours runs (no handover's second child, which holds the socket and
    /// is left out of the scan).
    pub(super) fn note_scan(&mut self, rivals: &[i32]) {
        self.clean_since_exit = !self.subreaper
            && rivals.is_empty()
            && self.machine.handover().is_none()
            && self.machine.second_group_pending().is_none();
    }

    /// The rivals anywhere on the machine, in our tree or not (the
    /// start-up scan's rule): a process the child passed the socket to
    /// over a Unix socket (`SCM_RIGHTS`) descends from someone else. What
    /// a `stop` or a requested restart looks for once, as it begins: after
    /// `stop` returns 0, no process that held our socket is alive (SPEC
    /// 0.2). The current child's group is signalled as a group and is
    /// left out.
    pub(super) fn rivals_anywhere(&self) -> Vec<i32> {
        let group = self.machine.child_pid().map(Pid::from_raw);
        let mut holders = self.holders_in(sys::Scope::All);
        holders.retain(|p| {
            group.is_none() || nix::unistd::getpgid(Some(Pid::from_raw(*p))).ok() != group
        });
        holders
    }

    fn holders_in(&self, scope: sys::Scope) -> Vec<i32> {
        let Some(id) = self.seen.socket_id else {
            return Vec::new();
        };
        let mut holders = sys::socket_holders(id, scope);
        let child = self.machine.child_pid();
        // A handover's second child is ours too.
        holders.retain(|p| {
            Some(*p) != child && !self.managers.contains(p) && !self.in_second_group(*p)
        });
        // Machine-wide (no subreaper), a stranger forked by a holder can be
        // caught between its fork and its exec: look again.
        match scope {
            sys::Scope::All => settled(holders, || sys::socket_holders(id, scope)),
            _ => holders,
        }
    }

    /// A child may have shut the listening socket down (`shutdown(2)` on
    /// fd 3 disarms it for every holder): listen on it again, or, if that
    /// fails, bind anew.
    pub(super) fn rearm(&mut self) {
        let Some(l) = &self.listener else { return };
        if l.is_listening() {
            return;
        }
        match l.rearm(self.cfg.listen.backlog) {
            Ok(()) => {
                self.seen.bound = true;
                warn!("the listening socket had been shut down (by a child?); it listens again");
            }
            Err(e) => {
                warn!(
                    "the listening socket had been shut down and cannot listen again ({e}); binding {} anew",
                    self.cfg.listen.address
                );
                self.listener = None;
                self.seen.bound = false;
            }
        }
    }

    fn bind(&mut self) -> Result<(), Event> {
        let addr = self.cfg.listen.address;
        match Listener::bind(addr, self.cfg.listen.backlog) {
            Ok(l) => {
                self.seen.socket_id = sys::socket_id(l.as_fd());
                self.listener = Some(l);
                self.seen.bound = true;
                if self.seen.bind_error.take().is_some() {
                    info!("bound {addr} after waiting for it");
                }
                self.seen.port_holder = None;
                Ok(())
            }
            Err(e) => {
                self.seen.bind_error = Some(describe_bind_error(&e));
                self.seen.port_holder = sys::port_holder(addr);
                Err(Event::BindFailed)
            }
        }
    }

    fn spawn(&mut self) -> Event {
        self.clean_since_exit = false;
        if let Some(l) = &self.listener {
            if let Err(e) = l.make_blocking() {
                warn!(
                    "cannot make the listening socket blocking again ({e}); \
                     a child that calls a blocking accept may get EAGAIN"
                );
            }
        }
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
