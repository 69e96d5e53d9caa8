//! What the stop signals go to: the child's process group, the child
//! itself when it has left that group, and single processes (leftovers of
//! an earlier supervisor, rivals holding our socket). Every pid is kept
//! with its start time and signalled only while both still match, so a
//! reused pid is never hit.

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::sys;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Targets {
    /// A process group to signal as a whole.
    group: Option<i32>,
    /// Single processes: (pid, start time when known).
    pids: Vec<(i32, Option<u64>)>,
}

impl Targets {
    /// A child and its process group (it is the group's leader).
    pub(crate) fn child(pid: i32, start_time: Option<u64>) -> Targets {
        Targets {
            group: Some(pid),
            pids: vec![(pid, start_time)],
        }
    }

    /// Only a process group (its leader is gone).
    pub(crate) fn group(pgid: i32) -> Targets {
        Targets {
            group: Some(pgid),
            pids: Vec::new(),
        }
    }

    /// Forget a process that was reaped.
    pub(crate) fn forget(&mut self, pid: i32) {
        self.pids.retain(|(p, _)| *p != pid);
    }

    fn is_ours(pid: i32, start_time: Option<u64>) -> bool {
        sys::is_alive(pid) && start_time.is_none_or(|t| sys::process_start_time(pid) == Some(t))
    }

    /// The single processes that are still the ones recorded (their start
    /// times match): what besides the group counts toward `max_memory`.
    pub(crate) fn pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.pids
            .iter()
            .filter(|(p, t)| Self::is_ours(*p, *t))
            .map(|(p, _)| *p)
    }

    /// Whether nothing of it is alive any more.
    pub(crate) fn gone(&self) -> bool {
        !self.group.is_some_and(sys::group_alive)
            && !self.pids.iter().any(|(p, t)| Self::is_ours(*p, *t))
    }

    /// Send `sig` to the group, and to every single process that is not
    /// (or no longer) in it: a child that moved to another process group
    /// is stopped by its pid.
    pub(crate) fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.group {
            match killpg(Pid::from_raw(pgid), sig) {
                Ok(()) => info!("sent {} to process group {pgid}", sig.as_str()),
                Err(Errno::ESRCH) => {}
                Err(e) => warn!("cannot send {} to process group {pgid}: {e}", sig.as_str()),
            }
        }
        for &(pid, start) in &self.pids {
            let in_group = self.group.is_some()
                && nix::unistd::getpgid(Some(Pid::from_raw(pid))).ok()
                    == self.group.map(Pid::from_raw);
            if in_group || !Self::is_ours(pid, start) {
                continue;
            }
            match kill(Pid::from_raw(pid), sig) {
                Ok(()) => info!("sent {} to process {pid}", sig.as_str()),
                Err(Errno::ESRCH) => {}
                Err(e) => warn!("cannot send {} to process {pid}: {e}", sig.as_str()),
            }
        }
    }
}
