//! HTTP health probes on their own timer: one probe in flight at most, the
//! first soon after a spawn, the gap doubling up to `health.interval` until
//! the child is ready, then every `interval`. Nothing is armed without an
//! `http` path or without a live child.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::config::HealthSection;
use crate::health;
use crate::policy::Event;

/// The first readiness probe comes this soon after a spawn.
const FIRST: Duration = Duration::from_millis(50);

/// While a handover's new child starts, probes come this often (it is
/// ready when one of them is answered by it).
const HANDOVER_GAP: Duration = Duration::from_millis(100);

/// What a probe found, and which process took its connection, when asked.
pub(crate) type Probed = (Result<u16, String>, Option<i32>);

/// An HTTP health probe in flight.
type Probe = Pin<Box<dyn Future<Output = Probed>>>;

pub(crate) struct Probes {
    path: Option<String>,
    target: SocketAddr,
    interval: Duration,
    timeout: Duration,
    probe: Option<Probe>,
    next: Option<Instant>,
    /// The gap before the next probe while the child is not ready yet.
    gap: Duration,
    /// What the last probe found, for `status` while the child starts.
    last: Option<String>,
}

impl Probes {
    pub(crate) fn new(health: &HealthSection, address: SocketAddr) -> Probes {
        Probes {
            path: health.http.clone(),
            target: health::probe_target(address),
            interval: health.interval,
            timeout: health.timeout,
            probe: None,
            next: None,
            gap: FIRST,
            last: None,
        }
    }

    /// Arm the first probe of a live child; drop everything when there is
    /// no child.
    pub(crate) fn schedule(&mut self, child_alive: bool, now: Instant) {
        if self.path.is_none() {
            return;
        }
        match child_alive {
            true if self.next.is_none() && self.probe.is_none() => {
                self.gap = FIRST.min(self.interval);
                self.next = Some(now + self.gap);
            }
            true => {}
            false => {
                self.probe = None;
                self.next = None;
                self.last = None;
            }
        }
    }

    /// When the next probe starts, unless one is in flight.
    pub(crate) fn due(&self) -> Option<Instant> {
        match self.probe {
            None => self.next,
            Some(_) => None,
        }
    }

    /// Start a probe; with `identify`, find out who takes its connection.
    pub(crate) fn start(&mut self, identify: bool) {
        self.next = None;
        if let Some(path) = &self.path {
            self.probe = Some(Box::pin(health::probe_by(
                self.target,
                path.clone(),
                self.timeout,
                identify,
            )));
        }
    }

    /// A handover's new child was started: probe soon, and often.
    pub(crate) fn hurry(&mut self, now: Instant) {
        let soon = now + FIRST.min(self.interval);
        if self.next.is_some_and(|n| n > soon) {
            self.next = Some(soon);
        }
    }

    /// The probe in flight; pending forever when there is none.
    pub(crate) async fn done(&mut self) -> Probed {
        match &mut self.probe {
            Some(p) => p.as_mut().await,
            None => std::future::pending().await,
        }
    }

    /// A probe ended: arm the next one and say what it means.
    pub(crate) fn finished(
        &mut self,
        result: &Result<u16, String>,
        ready: bool,
        now: Instant,
        hurry: bool,
    ) -> Event {
        self.probe = None;
        let gap = if hurry {
            HANDOVER_GAP.min(self.interval)
        } else if ready {
            self.interval
        } else {
            self.gap = (self.gap * 2).min(self.interval);
            self.gap
        };
        self.next = Some(now + gap);
        match result {
            Ok(code) => {
                self.last = Some(format!("GET {} answered {code}", self.path()));
                Event::ProbeOk
            }
            Err(e) => {
                self.last = Some(e.clone());
                Event::ProbeFailed
            }
        }
    }

    pub(crate) fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("?")
    }

    /// What the last probe found.
    pub(crate) fn last(&self) -> Option<&str> {
        self.last.as_deref()
    }
}
