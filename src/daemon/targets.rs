//! What the stop signals go to: the child's process group (and, in a stop
//! that began during a handover, the second child's), the child itself
//! when it has left that group, and single processes (leftovers of an
//! earlier supervisor, rivals holding our socket). Every pid is kept
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
    /// Process groups to signal as a whole, each with what it got last.
    groups: Vec<(i32, Option<Signal>)>,
    pids: Vec<Single>,
    /// The signal of the stop under way, for members found later.
    level: Option<Signal>,
}

impl Targets {
    /// A child and its process group (it is the group's leader).
    pub(crate) fn child(pid: i32, start_time: Option<u64>) -> Targets {
        Targets {
            groups: vec![(pid, None)],
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
            groups: vec![(pgid, None)],
            ..Targets::default()
        }
    }

    /// Add a whole process group (a handover's second child, joining a
    /// stop): what its members fork on their way out is stopped too. A
    /// group that is empty already is left out (its id is free for
    /// anyone); while a stop is under way it gets that stop's signal at
    /// once.
    pub(crate) fn add_group(&mut self, pgid: i32) {
        if self.groups.iter().any(|(g, _)| *g == pgid) || !sys::group_alive(pgid) {
            return;
        }
        self.groups.push((pgid, None));
        if let Some(level) = self.level {
            self.signal(level);
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

    /// Forget each process group once it is empty: its id may then be
    /// reused by anyone, and must never be signalled again.
    pub(crate) fn prune(&mut self) {
        self.groups.retain(|(g, _)| sys::group_alive(*g));
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
        !self.groups.iter().any(|(g, _)| sys::group_alive(*g))
            && !self.pids.iter().any(|s| Self::is_ours(s.pid, s.start_time))
    }

    /// Send `sig` to the groups, and to every single process that is not
    /// (or no longer) in one of them: a child that moved to another
    /// process group is stopped by its pid. Each gets `sig` once.
    pub(crate) fn signal(&mut self, sig: Signal) {
        self.level = Some(sig);
        for (pgid, sent) in &mut self.groups {
            if *sent != Some(sig) {
                *sent = Some(sig);
                match killpg(Pid::from_raw(*pgid), sig) {
                    Ok(()) => note_sent(sig, &format!("process group {pgid}")),
                    Err(Errno::ESRCH) => {}
                    Err(e) => warn!("cannot send {} to process group {pgid}: {e}", sig.as_str()),
                }
            }
        }
        for s in &mut self.pids {
            if s.sent == Some(sig) {
                continue;
            }
            s.sent = Some(sig);
            let in_group = !self.groups.is_empty()
                && nix::unistd::getpgid(Some(Pid::from_raw(s.pid)))
                    .is_ok_and(|g| self.groups.iter().any(|(pgid, _)| *pgid == g.as_raw()));
            if in_group || !Self::is_ours(s.pid, s.start_time) {
                continue;
            }
            match kill(Pid::from_raw(s.pid), sig) {
                Ok(()) => note_sent(sig, &format!("process {}", s.pid)),
                Err(Errno::ESRCH) => {}
                Err(e) => warn!("cannot send {} to process {}: {e}", sig.as_str(), s.pid),
            }
        }
    }
}

/// The stop signal follows a line that already says a stop begins (so a
/// crash loop costs two lines a restart); SIGKILL is news of its own.
fn note_sent(sig: Signal, to: &str) {
    match sig {
        Signal::SIGKILL => info!("sent SIGKILL to {to}: it outlived its stop signal"),
        _ => tracing::debug!("sent {} to {to}", sig.as_str()),
    }
}
