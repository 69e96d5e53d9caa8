//! `child.max_memory`: the resident memory of the running child's whole
//! process group, sampled every `child.max_memory_check`.
//!
//! A timer is armed only while a child runs *and* `max_memory` is set, so a
//! supervisor without it still makes no wake-ups; with it, one per check:
//! the timer is the kernel's ([`sys::Ticker`], periodic, read through
//! tokio's reactor), since tokio's timer wheel would wake the loop twice
//! for each check more than 64 ms away. Where none can be made, tokio's
//! timer does the job.
//! Counted: every live member of the child's process group (grandchildren
//! included) and the single processes the driver would stop with it
//! ([`Targets`](super::targets::Targets): the child itself, should it have
//! left its group), and whatever holds our socket outside the group (a
//! daemonized grandchild serves for the child). Each process's RSS is added up, so pages
//! shared after a fork count once per process, as `ps` would show them.
//! Past the ceiling the machine gets `Event::TooBig`, stops the child
//! gracefully and restarts it under the backoff policy (with `overlap`, by
//! a handover).
//!
//! During a handover the second child's group (the new child while it
//! starts, the old one while it drains) is measured too, on its own
//! against the same ceiling (`Event::SecondTooBig`): each is one copy of
//! the service. What follows is the machine's (`policy/handover.rs`).

use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::warn;

use super::Daemon;
use crate::policy::{Event, Phase};
use crate::sys;

/// When the next sample is due, for which child.
#[derive(Debug)]
pub(crate) struct Sampler {
    /// `child.max_memory` in bytes; `None`: never sample.
    max: Option<u64>,
    every: Duration,
    /// Whether to ask the kernel for the timer (always, but in the tables).
    kernel: bool,
    /// The child being watched and what says its next check is due.
    next: Option<(i32, Next)>,
    /// Said once that the memory cannot be read here.
    warned: bool,
}

/// What wakes the loop for the next check.
#[derive(Debug)]
enum Next {
    /// A periodic kernel timer started with the child.
    Ticker(AsyncFd<sys::Ticker>),
    /// tokio's timer: the instant of the next check.
    At(Instant),
}

impl Sampler {
    pub(crate) fn new(max: Option<u64>, every: Duration) -> Sampler {
        Sampler {
            max,
            every,
            kernel: true,
            next: None,
            warned: false,
        }
    }

    /// The ceiling, when there is one.
    pub(crate) fn max(&self) -> Option<u64> {
        self.max
    }

    /// Arms the timer when a child starts running (the first check `every`
    /// later, then one every `every`), keeps it while the same child runs,
    /// and disarms it while none runs or without `max_memory` (then
    /// nothing is armed). Whether it is armed.
    pub(crate) fn arm(&mut self, running: Option<i32>, now: Instant) -> bool {
        let (Some(_), Some(pid)) = (self.max, running) else {
            self.next = None;
            return false;
        };
        if !matches!(&self.next, Some((watched, _)) if *watched == pid) {
            let ticker = self.kernel.then(|| kernel_timer(self.every)).flatten();
            let next = ticker.map_or(Next::At(now + self.every), Next::Ticker);
            self.next = Some((pid, next));
        }
        true
    }

    /// Resolves when the armed check is due; never while none is armed.
    pub(crate) async fn elapsed(&self) {
        let at = match &self.next {
            Some((_, Next::At(at))) => *at,
            Some((_, Next::Ticker(fd))) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    // The reactor is gone: only at exit.
                    return std::future::pending().await;
                };
                let taken = ready.get_inner().take();
                ready.clear_ready();
                // 0: woken for nothing; an error: check anyway (the next
                // expiration wakes the loop again).
                if !matches!(taken, Ok(0)) {
                    return;
                }
            },
            None => return std::future::pending().await,
        };
        tokio::time::sleep_until(at.into()).await
    }

    /// A check was made at `now`: with tokio's timer the next one is
    /// `every` later; the kernel's keeps its period by itself.
    fn checked(&mut self, pid: i32, now: Instant) {
        if let Some((watched, Next::At(at))) = &mut self.next {
            if *watched == pid {
                *at = now + self.every;
            }
        }
    }
}

/// A periodic kernel timer on tokio's reactor, if this system makes one.
fn kernel_timer(every: Duration) -> Option<AsyncFd<sys::Ticker>> {
    let ticker = sys::Ticker::new(every).ok()?;
    // SAFETY: the ticker owns its descriptor for as long as it lives and
    // always names that one; the AsyncFd owns the ticker.
    unsafe { AsyncFd::register_with_interest(ticker, Interest::READABLE) }.ok()
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
        }
        if let Some(second) = self.machine.handover().and_then(|h| h.second()) {
            let theirs = resident(
                sys::group_members(second)
                    .into_iter()
                    .chain(self.second.singles()),
            );
            if theirs > max {
                self.feed(Event::SecondTooBig(theirs));
            }
        }
        if bytes == 0 && !self.memory.warned {
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

    /// The next check of tokio's timer, as armed for `running` at `now`.
    fn due(s: &mut Sampler, running: Option<i32>, now: Instant) -> Option<Instant> {
        if !s.arm(running, now) {
            return None;
        }
        match &s.next {
            Some((_, Next::At(at))) => Some(*at),
            other => panic!("not tokio's timer: {other:?}"),
        }
    }

    #[test]
    fn armed_only_for_a_running_child_with_a_ceiling() {
        let t0 = Instant::now();
        let every = Duration::from_millis(250);
        let mut off = Sampler::new(None, every);
        assert!(!off.arm(Some(100), t0));

        let mut s = Sampler::new(Some(64 << 20), every);
        s.kernel = false;
        // (running child, now, due)
        let table = [
            (None, 0, None),
            (Some(100), 10, Some(260)),
            (Some(100), 200, Some(260)),
            (Some(101), 300, Some(550)),
            (None, 400, None),
            (Some(101), 500, Some(750)),
        ];
        for (running, now, want) in table {
            let ms = |m: u64| t0 + Duration::from_millis(m);
            assert_eq!(
                due(&mut s, running, ms(now)),
                want.map(ms),
                "{running:?} at {now}"
            );
        }
        s.checked(101, t0 + Duration::from_millis(760));
        assert_eq!(
            due(&mut s, Some(101), t0 + Duration::from_millis(761)),
            Some(t0 + Duration::from_millis(1010))
        );
    }

    #[test]
    fn the_kernel_timer_fires_every_period() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let every = Duration::from_millis(30);
            let mut s = Sampler::new(Some(64 << 20), every);
            let t0 = Instant::now();
            assert!(s.arm(Some(100), t0));
            assert!(
                matches!(s.next, Some((100, Next::Ticker(_)))),
                "{:?}",
                s.next
            );
            for n in 1..=3 {
                tokio::time::timeout(Duration::from_secs(10), s.elapsed())
                    .await
                    .expect("the timer never fired");
                assert!(t0.elapsed() >= every * n, "check {n} came early");
            }
            // Another child: a new timer; none: disarmed.
            assert!(s.arm(Some(101), Instant::now()));
            assert!(matches!(s.next, Some((101, Next::Ticker(_)))));
            assert!(!s.arm(None, Instant::now()));
            assert!(s.next.is_none());
        });
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
