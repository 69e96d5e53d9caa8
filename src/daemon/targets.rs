//! What the stop signals go to: the child's process group, the child
//! itself when it has left that group, and single processes (leftovers of
//! an earlier supervisor, rivals holding our socket). Every pid is kept
//! with its start time and signalled only while both still match, so a
//! reused pid is never hit. Each member gets each signal once: processes
//! found while a stop is under way (a daemon's intermediate forked the
//! grandchild we are now told about) get the signal the others got.

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::sys;

/// One process stopped by its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Single {
    pid: i32,
    start_time: Option<u64>,
    sent: Option<Signal>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Targets {
    /// A process group to signal as a whole, and what it got last.
    group: Option<(i32, Option<Signal>)>,
    pids: Vec<Single>,
    /// The signal of the stop under way, for members found later.
    level: Option<Signal>,
}

impl Targets {
    /// A child and its process group (it is the group's leader).
    pub(crate) fn child(pid: i32, start_time: Option<u64>) -> Targets {
        Targets {
            group: Some((pid, None)),
            pids: vec![Single {
                pid,
                start_time,
                sent: None,
            }],
            level: None,
        }
    }

    /// Only a process group (its leader is gone).
    pub(crate) fn group(pgid: i32) -> Targets {
        Targets {
            group: Some((pgid, None)),
            ..Targets::default()
        }
    }

    /// Single processes, each with its start time (now): rivals holding our
    /// socket, found by what they hold rather than by their group.
    pub(crate) fn pids(pids: &[i32]) -> Targets {
        let mut t = Targets::default();
        t.add(pids);
        t
    }

    /// Add single processes to what is being stopped; while a stop is under
    /// way they get its signal at once. One whose start time cannot be read
    /// (gone already) is left out: without it, its pid could later name
    /// someone else.
    pub(crate) fn add(&mut self, pids: &[i32]) {
        let mut new = false;
        for &pid in pids {
            if self.pids.iter().any(|s| s.pid == pid) {
                continue;
            }
            let Some(start_time) = sys::process_start_time(pid) else {
                continue;
            };
            self.pids.push(Single {
                pid,
                start_time: Some(start_time),
                sent: None,
            });
            new = true;
        }
        if let (true, Some(level)) = (new, self.level) {
            self.signal(level);
        }
    }

    /// Forget the process group once it is empty: its id may then be
    /// reused by anyone, and must never be signalled again.
    pub(crate) fn prune(&mut self) {
        if self.group.is_some_and(|(g, _)| !sys::group_alive(g)) {
            self.group = None;
        }
    }

    /// Forget a process that was reaped.
    pub(crate) fn forget(&mut self, pid: i32) {
        self.pids.retain(|s| s.pid != pid);
    }

    fn is_ours(pid: i32, start_time: Option<u64>) -> bool {
        sys::is_alive(pid) && start_time.is_none_or(|t| sys::process_start_time(pid) == Some(t))
    }

    /// The single processes that are still the ones recorded (their start
    /// times match): what besides the group counts toward `max_memory`.
    pub(crate) fn singles(&self) -> impl Iterator<Item = i32> + '_ {
        self.pids
            .iter()
            .filter(|s| Self::is_ours(s.pid, s.start_time))
            .map(|s| s.pid)
    }

    /// Whether nothing of it is alive any more.
    pub(crate) fn gone(&self) -> bool {
        !self.group.is_some_and(|(g, _)| sys::group_alive(g))
            && !self.pids.iter().any(|s| Self::is_ours(s.pid, s.start_time))
    }

    /// Send `sig` to the group, and to every single process that is not
    /// (or no longer) in it: a child that moved to another process group
    /// is stopped by its pid. Each gets `sig` once.
    pub(crate) fn signal(&mut self, sig: Signal) {
        self.level = Some(sig);
        if let Some((pgid, sent)) = self.group.as_mut() {
            if *sent != Some(sig) {
                *sent = Some(sig);
                match killpg(Pid::from_raw(*pgid), sig) {
                    Ok(()) => info!("sent {} to process group {pgid}", sig.as_str()),
                    Err(Errno::ESRCH) => {}
                    Err(e) => warn!("cannot send {} to process group {pgid}: {e}", sig.as_str()),
                }
            }
        }
        let group = self.group.map(|(g, _)| Pid::from_raw(g));
        for s in &mut self.pids {
            if s.sent == Some(sig) {
                continue;
            }
            s.sent = Some(sig);
            let in_group =
                group.is_some() && nix::unistd::getpgid(Some(Pid::from_raw(s.pid))).ok() == group;
            if in_group || !Self::is_ours(s.pid, s.start_time) {
                continue;
            }
            match kill(Pid::from_raw(s.pid), sig) {
                Ok(()) => info!("sent {} to process {}", sig.as_str(), s.pid),
                Err(Errno::ESRCH) => {}
                Err(e) => warn!("cannot send {} to process {}: {e}", sig.as_str(), s.pid),
            }
        }
    }
}
