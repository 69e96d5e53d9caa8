//! The status record: built from the machine and what the driver has seen
//! (a pure function of both and the clock), and written to `state.json`
//! when anything a reader cares about changed, repairing the instance lock
//! on the way if the state dir was removed.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tracing::{error, info, warn};

use super::port::Shown;
use crate::lock::InstanceLock;
use crate::policy::{ExitKind, Machine, Phase};
use crate::state::{
    self, ChildInfo, ExitInfo, GroupInfo, HandoverInfo, ListenInfo, PortHolder, Record,
    SupervisorInfo,
};
use crate::text::signal_name;

/// A state write refused by the disk is retried after this, doubling up to
/// `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// This supervisor process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Me {
    pub(crate) pid: i32,
    pub(crate) start_time: Option<u64>,
    pub(crate) boot_id: Option<String>,
    pub(crate) started_at: SystemTime,
    /// `child.stop_timeout` as this supervisor runs it.
    pub(crate) stop_timeout: Duration,
    /// The binary, and reloads since the first start.
    pub(crate) executable: String,
    pub(crate) reloads: u32,
    /// The config file it runs (absolute, through links).
    pub(crate) config: String,
}

/// The process group being run or stopped: the latest child's, or an
/// earlier supervisor's that is being stopped. Kept in the record until
/// it is gone, so a supervisor that dies meanwhile leaves its successor a
/// trail to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Group {
    pub(crate) pgid: i32,
    /// Its leader's start time (the child's): with the pid, one process.
    pub(crate) start_time: Option<u64>,
    /// The session it was started in.
    pub(crate) sid: Option<i32>,
    /// When the child was started, for people.
    #[serde(rename = "started_at_ms", with = "super::handoff::opt_unix_ms")]
    pub(crate) started_at: Option<SystemTime>,
}

/// What the driver has seen, beyond the machine. Wall-clock times are
/// taken when things happen (never derived from `Instant`, which stops
/// while a Mac sleeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) me: Me,
    pub(crate) group: Option<Group>,
    pub(crate) last_exit_at: Option<SystemTime>,
    /// The child's last STATUS= text (notify protocol).
    pub(crate) status: Option<String>,
    /// What the last health probe of the child found.
    pub(crate) last_probe: Option<String>,
    /// Why the last spawn failed; `None` after a successful one.
    pub(crate) spawn_error: Option<String>,
    /// With `[alerts]`: what `status` shows of them.
    pub(crate) alerts: Option<crate::state::AlertsInfo>,
    /// Why the last `reload` failed.
    pub(crate) reload_error: Option<crate::state::ReloadError>,
    /// The outcome of the last requested restart.
    pub(crate) restart: Option<crate::state::RestartOutcome>,
    /// The answers to the last few restart requests, oldest first, and
    /// when the last one taken was taken (for its outcome).
    pub(crate) restart_answers: std::collections::VecDeque<crate::state::RestartAnswer>,
    pub(crate) restart_asked: Option<u64>,
    /// During a handover: the second child's group (the new one while it
    /// starts, the old one while it drains) and when the handover began.
    pub(crate) second: Option<Group>,
    pub(crate) handover_at: Option<SystemTime>,
}

/// The record for this moment.
pub(crate) fn build(
    m: &Machine,
    o: &Observed,
    port: &Shown,
    now: Instant,
    wall: SystemTime,
) -> Record {
    let phase = m.phase();
    let (pid, started_at) = match phase {
        Phase::Running { pid, .. } => (Some(pid), o.group.and_then(|g| g.started_at)),
        Phase::Stopping { leader, .. } => (leader, None),
        _ => (None, None),
    };
    // The group is named while it runs or is being stopped.
    let group = match phase {
        Phase::Running { .. } | Phase::Stopping { .. } => o.group,
        _ => None,
    };
    let next_restart = match phase {
        Phase::Backoff { until } => Some(until),
        Phase::WaitingForPort { retry_at, .. } => Some(retry_at),
        _ => None,
    };
    let last_exit = m.last_exit().map(|e| {
        let (code, signal) = match e.kind {
            ExitKind::Code(c) => (Some(c), None),
            ExitKind::Signal(s) => (None, Some(signal_name(s))),
        };
        ExitInfo {
            code,
            signal,
            at: state::timestamp(o.last_exit_at.unwrap_or(wall)),
        }
    });
    let state = m.state_name();
    Record {
        state: state.into(),
        supervisor: Some(SupervisorInfo {
            pid: o.me.pid,
            started_at: state::timestamp(o.me.started_at),
            start_time: o.me.start_time,
            version: Some(env!("CARGO_PKG_VERSION").into()),
            boot_id: o.me.boot_id.clone(),
            reloads: o.me.reloads,
            executable: Some(o.me.executable.clone()),
            reload_error: o.reload_error.clone(),
            stop_timeout_ms: Some(o.me.stop_timeout.as_millis() as u64),
            config: Some(o.me.config.clone()),
            restart: o.restart.clone(),
            start_timeout_ms: Some(m.settings().health.start_timeout.as_millis() as u64),
            restart_answers: Some(o.restart_answers.iter().cloned().collect()),
        }),
        listen: Some(ListenInfo {
            address: port.address.clone(),
            bound: port.bound,
            name: Some(port.name.clone()),
            inherited: port.inherited,
            socket_id: port.socket_id,
        }),
        child: Some(ChildInfo {
            pid,
            pgid: group.map(|g| g.pgid),
            start_time: group.and_then(|g| g.start_time),
            sid: group.and_then(|g| g.sid),
            started_at: started_at.map(state::timestamp),
            restarts: m.restarts(),
            last_exit,
            crash_streak: m.streak(),
            ready: m.ready(),
            status: pid.and(o.status.clone()),
            last_probe: pid.and(o.last_probe.clone()),
            spawn_error: o.spawn_error.clone(),
        }),
        next_restart_in_ms: next_restart
            .map(|t| t.saturating_duration_since(now).as_millis() as u64),
        next_restart_at: next_restart
            .map(|t| state::timestamp_ms(wall + t.saturating_duration_since(now))),
        port_holder: port.port_holder.as_ref().map(|(pid, command)| PortHolder {
            pid: *pid,
            command: command.clone(),
        }),
        bind_error: port.bind_error.clone(),
        alerts: o.alerts.clone(),
        counters: None,
        error: None,
        updated_at: None,
        handover: m.handover().map(|h| HandoverInfo {
            phase: h.phase_name().into(),
            new_pid: h.new,
            old_pid: h.old,
            started_at: state::timestamp(o.handover_at.unwrap_or(wall)),
            second: o.second.map(|g| GroupInfo {
                pgid: g.pgid,
                start_time: g.start_time,
                sid: g.sid,
            }),
        }),
    }
}

/// `state.json`, and the lock that makes it ours.
pub(crate) struct StateFile {
    path: PathBuf,
    lock: InstanceLock,
    /// The last record written, without its countdown, to skip rewrites.
    written: Option<String>,
    /// A write the disk refused is retried at this time, with this gap.
    retry: Option<(Instant, Duration)>,
    /// The lock was found lost (said once); `state.json` is not written
    /// while it is.
    lock_lost: bool,
}

impl StateFile {
    pub(crate) fn new(path: PathBuf, lock: InstanceLock) -> StateFile {
        StateFile {
            path,
            lock,
            written: None,
            retry: None,
            lock_lost: false,
        }
    }

    pub(crate) fn lock(&mut self) -> &mut InstanceLock {
        &mut self.lock
    }

    /// When a refused write is tried again, if one was refused.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry.map(|(at, _)| at)
    }

    /// Replace state.json if anything a reader cares about changed.
    pub(crate) fn write(&mut self, mut rec: Record, wall: SystemTime) {
        // Compare without the ever-changing countdown and time stamp, and
        // without the child's output count: it is recorded with what
        // changes, never a reason for a write of its own.
        let countdown = rec.next_restart_in_ms.take();
        let streams = rec
            .counters
            .as_mut()
            .map(|c| std::mem::take(&mut c.log_bytes));
        let key = rec.encode();
        if self.written.as_deref() == Some(key.as_str()) {
            return;
        }
        match self.lock.ensure_linked() {
            Ok(false) => self.lock_lost = false,
            Ok(true) => {
                self.lock_lost = false;
                warn!(
                    "{} (or its folder) had been removed or replaced; wrote it again (the lock is \
                     the state folder's)",
                    self.lock.path().display()
                )
            }
            Err(e) => {
                // Whatever `state.json` is now, it is not ours to write:
                // another supervisor may own it, or the path may lead
                // somewhere we must not write.
                if !self.lock_lost {
                    error!(
                        "the instance lock on {} is lost ({e}); a second supervisor for this config could start now; \
                         {} is not written while the lock is lost; this one carries on and tries again at the next state change",
                        self.lock.path().display(),
                        self.path.display()
                    );
                }
                self.lock_lost = true;
                return;
            }
        }
        rec.next_restart_in_ms = countdown;
        if let (Some(c), Some(s)) = (rec.counters.as_mut(), streams) {
            c.log_bytes = s;
        }
        rec.updated_at = Some(state::timestamp_ms(wall));
        let name = self.path.file_name().unwrap_or(OsStr::new("state.json"));
        match state::write_atomic(self.lock.dir_fd(), name, &rec.encode()) {
            Ok(()) => {
                if self.retry.take().is_some() {
                    info!("{} is written again", self.path.display());
                }
                self.written = Some(key);
            }
            Err(e) => {
                let gap = match self.retry {
                    None => {
                        warn!(
                            "cannot write {}: {e}; `status` reports it stale; retrying every few seconds",
                            self.path.display()
                        );
                        RETRY_FIRST
                    }
                    Some((_, gap)) => (gap * 2).min(RETRY_MAX),
                };
                self.retry = Some((Instant::now() + gap, gap));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Event, HealthPolicy, Settings};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn machine() -> Machine {
        Machine::new(Settings {
            give_up_after: 0,
            initial_backoff: ms(1000),
            max_backoff: ms(8000),
            reset_after: ms(60_000),
            stop_timeout: ms(10_000),
            kill_grace: ms(5000),
            health: HealthPolicy::default(),
            overlap: false,
        })
    }

    fn observed(wall: SystemTime) -> Observed {
        Observed {
            me: Me {
                pid: 40,
                start_time: Some(7),
                boot_id: Some("b1".into()),
                started_at: wall,
                stop_timeout: ms(10_000),
                executable: "/usr/bin/supervisor".into(),
                reloads: 0,
                config: "/etc/sup.toml".into(),
            },
            group: Some(Group {
                pgid: 100,
                start_time: Some(500),
                sid: Some(40),
                started_at: Some(wall + ms(1000)),
            }),
            last_exit_at: None,
            status: Some("serving".into()),
            last_probe: None,
            spawn_error: None,
            alerts: None,
            reload_error: None,
            restart: None,
            restart_answers: Default::default(),
            restart_asked: None,
            second: None,
            handover_at: None,
        }
    }

    fn port() -> Shown {
        Shown {
            address: "127.0.0.1:8420".into(),
            name: "http".into(),
            bound: true,
            ..Shown::default()
        }
    }

    #[test]
    fn each_phase_says_what_a_reader_needs() {
        let t0 = Instant::now();
        let wall = state::parse_timestamp("2026-11-26T08:00:00Z").unwrap();
        let o = observed(wall);
        let exited = Event::ChildExited {
            kind: crate::policy::ExitKind::Code(3),
            others_left: false,
        };
        let leftovers = Event::ChildExited {
            kind: crate::policy::ExitKind::Signal(9),
            others_left: true,
        };
        // (events, state, child pid, pgid, status text, next restart in ms)
        #[allow(clippy::type_complexity)]
        let table: [(
            &[Event],
            &str,
            Option<i32>,
            Option<i32>,
            Option<&str>,
            Option<u64>,
        ); 5] = [
            (&[Event::Start], "starting", None, None, None, None),
            (
                &[Event::Start, Event::Spawned { pid: 100 }],
                "running",
                Some(100),
                Some(100),
                Some("serving"),
                None,
            ),
            (
                &[Event::Start, Event::Spawned { pid: 100 }, exited],
                "backoff",
                None,
                None,
                None,
                Some(1000),
            ),
            (
                &[Event::Start, Event::Spawned { pid: 100 }, leftovers],
                "stopping",
                None,
                Some(100),
                None,
                None,
            ),
            (
                &[Event::Start, Event::BindFailed],
                "waiting-for-port",
                None,
                None,
                None,
                Some(1000),
            ),
        ];
        for (events, state, pid, pgid, status, next) in table {
            let mut m = machine();
            for ev in events {
                m.step(*ev, t0);
            }
            let r = build(&m, &o, &port(), t0, wall);
            let c = r.child.as_ref().unwrap();
            assert_eq!(r.state, state, "{events:?}");
            assert_eq!((c.pid, c.pgid), (pid, pgid), "{events:?}");
            assert_eq!(c.status.as_deref(), status, "{events:?}");
            assert_eq!(c.sid, pgid.and(Some(40)), "{events:?}");
            assert_eq!(r.next_restart_in_ms, next, "{events:?}");
            assert_eq!(r.next_restart_at.is_some(), next.is_some(), "{events:?}");
            assert_eq!(r.supervisor.as_ref().unwrap().pid, 40);
            assert!(r.listen.as_ref().unwrap().bound);
        }
    }

    #[test]
    fn times_are_the_wall_clock_times_seen() {
        let t0 = Instant::now();
        let wall = state::parse_timestamp("2026-11-26T08:00:00Z").unwrap();
        let mut o = observed(wall);
        let mut m = machine();
        m.step(Event::Start, t0);
        m.step(Event::Spawned { pid: 100 }, t0);
        let r = build(&m, &o, &port(), t0, wall);
        let c = r.child.unwrap();
        assert_eq!(c.started_at.as_deref(), Some("2026-11-26T08:00:01Z"));
        assert_eq!(r.supervisor.unwrap().started_at, "2026-11-26T08:00:00Z");

        m.step(
            Event::ChildExited {
                kind: crate::policy::ExitKind::Signal(9),
                others_left: false,
            },
            t0 + ms(300),
        );
        o.last_exit_at = Some(wall + ms(5000));
        // Written 200 ms after the exit: the countdown is from then.
        let r = build(&m, &o, &port(), t0 + ms(500), wall + ms(5200));
        let e = r.child.unwrap().last_exit.unwrap();
        assert_eq!((e.code, e.signal.as_deref()), (None, Some("SIGKILL")));
        assert_eq!(e.at, "2026-11-26T08:00:05Z");
        assert_eq!(r.next_restart_in_ms, Some(800));
        assert_eq!(
            r.next_restart_at.as_deref(),
            Some("2026-11-26T08:00:06.000Z")
        );
    }
}
