//! `child.max_memory`: the resident memory of the running child's whole
//! process group, sampled every `child.max_memory_check`.
//!
//! A timer is armed only while a child runs *and* `max_memory` is set, so a
//! supervisor without it still makes no wake-ups; with it, one per check.
//! Counted: every live member of the child's process group (grandchildren
//! included) and the single processes the driver would stop with it
//! ([`Targets`](super::targets::Targets): the child itself, should it have
//! left its group), and whatever holds our socket outside the group (a
//! daemonized grandchild serves for the child). Each process's RSS is added up, so pages
//! shared after a fork count once per process, as `ps` would show them.
//! Past the ceiling the machine gets `Event::TooBig`, stops the child
//! gracefully and restarts it under the backoff policy.

use std::time::{Duration, Instant};

use tracing::warn;

use super::Daemon;
use crate::policy::{Event, Phase};
use crate::sys;

/// When the next sample is due, for which child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sampler {
    /// `child.max_memory` in bytes; `None`: never sample.
    max: Option<u64>,
    every: Duration,
    /// The child being watched and its next check.
    next: Option<(i32, Instant)>,
    /// Said once that the memory cannot be read here.
    warned: bool,
}

impl Sampler {
    pub(crate) fn new(max: Option<u64>, every: Duration) -> Sampler {
        Sampler {
            max,
            every,
            next: None,
            warned: false,
        }
    }

    /// The ceiling, when there is one.
    pub(crate) fn max(&self) -> Option<u64> {
        self.max
    }

    /// When the next check is due: `every` after a child starts running,
    /// then `every` after each check; `None` while no child runs or without
    /// `max_memory` (then nothing is armed).
    pub(crate) fn due(&mut self, running: Option<i32>, now: Instant) -> Option<Instant> {
        let (Some(_), Some(pid)) = (self.max, running) else {
            self.next = None;
            return None;
        };
        match self.next {
            Some((watched, at)) if watched == pid => Some(at),
            _ => {
                let at = now + self.every;
                self.next = Some((pid, at));
                Some(at)
            }
        }
    }

    /// A check was made at `now`: the next one is `every` later.
    fn checked(&mut self, pid: i32, now: Instant) {
        self.next = Some((pid, now + self.every));
    }
}

/// The summed RSS of `pids` (each counted once), in bytes. A process that
/// vanished meanwhile counts 0.
pub(crate) fn resident(pids: impl IntoIterator<Item = i32>) -> u64 {
    let mut pids: Vec<i32> = pids.into_iter().collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter().filter_map(sys::resident_bytes).sum()
}

/// "81.2 MiB"; a whole number of MiB without the decimal ("64 MiB").
pub(crate) fn mib(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

/// The log line for a child past the ceiling.
pub(crate) fn narration(pid: i32, bytes: u64, max: Option<u64>) -> String {
    let ceiling = max.map_or_else(|| "?".to_owned(), mib);
    format!(
        "memory: child {pid} uses {}, above max_memory ({ceiling}); restarting it gracefully",
        mib(bytes)
    )
}

impl Daemon {
    /// A memory check is due: sample, and tell the machine when the child's
    /// group is past the ceiling.
    pub(super) fn check_memory(&mut self) {
        let Phase::Running { pid, .. } = self.machine.phase() else {
            return;
        };
        let Some(max) = self.memory.max() else {
            return;
        };
        let now = Instant::now();
        self.memory.checked(pid, now);
        let members = sys::group_members(pid);
        if members.is_empty() && !sys::is_alive(pid) {
            // It is exiting; its SIGCHLD says the rest.
            return;
        }
        // The group, and what holds our socket outside it (a daemonized
        // grandchild serves for the child and counts with it).
        let rivals = self.rivals();
        let bytes = resident(
            members
                .into_iter()
                .chain(self.targets.singles())
                .chain(rivals),
        );
        if bytes > max {
            self.feed(Event::TooBig(bytes));
        } else if bytes == 0 && !self.memory.warned {
            self.memory.warned = true;
            warn!(
                "memory: cannot read the resident memory of child {pid}'s process group; \
                 max_memory is not enforced while it cannot"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_only_for_a_running_child_with_a_ceiling() {
        let t0 = Instant::now();
        let every = Duration::from_millis(250);
        let mut off = Sampler::new(None, every);
        assert_eq!(off.due(Some(100), t0), None);

        let mut s = Sampler::new(Some(64 << 20), every);
        // (running child, now, due)
        let table = [
            (None, 0, None),
            (Some(100), 10, Some(260)),
            (Some(100), 200, Some(260)),
            (Some(101), 300, Some(550)),
            (None, 400, None),
            (Some(101), 500, Some(750)),
        ];
        for (running, now, due) in table {
            let ms = |m: u64| t0 + Duration::from_millis(m);
            assert_eq!(s.due(running, ms(now)), due.map(ms), "{running:?} at {now}");
        }
        s.checked(101, t0 + Duration::from_millis(760));
        assert_eq!(
            s.due(Some(101), t0 + Duration::from_millis(761)),
            Some(t0 + Duration::from_millis(1010))
        );
    }

    #[test]
    fn figures_for_people() {
        let table = [
            (64 << 20, "64 MiB"),
            ((81 << 20) + (1 << 18), "81.2 MiB"),
            (512 << 10, "0.5 MiB"),
            (1 << 30, "1024 MiB"),
        ];
        for (bytes, want) in table {
            assert_eq!(mib(bytes), want);
        }
        assert_eq!(
            narration(4243, (81 << 20) + (1 << 18), Some(64 << 20)),
            "memory: child 4243 uses 81.2 MiB, above max_memory (64 MiB); restarting it gracefully"
        );
    }

    #[test]
    fn resident_counts_each_process_once() {
        let me = std::process::id() as i32;
        let one = resident([me]);
        assert!(one > 0);
        // Twice the same pid and a pid that does not exist: still one.
        let twice = resident([me, me, -1]);
        assert!(twice < one * 2, "{one} {twice}");
    }
}
