//! The Prometheus text exposition format (version 0.0.4) of a status
//! record: what `status --format prometheus` prints and `GET /metrics`
//! serves. A pure function of the record `status` shows and one live
//! measure, the child's resident memory, taken when asked ([`child_memory`];
//! `GET /metrics` reuses one for up to [`MEMORY_REUSED_FOR`], [`Memory`]).
//!
//! Families follow Prometheus' naming: `_total` for counters, `_seconds`
//! and `_bytes` for units, labels only where SPEC.md gives them. A
//! supervisor that is not running is `supervisor_up 0` and nothing else
//! of its own, so a textfile collector still tells that it is down.

use std::fmt::Write as _;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::config::AlertEvent;
use crate::state::{self, Counters, Record};
use crate::sys;

/// The exposition text for `rec` (as `status` presents it), with the
/// child's resident memory `memory` in bytes.
pub(crate) fn render(rec: &Record, memory: u64) -> String {
    let mut out = String::with_capacity(4096);
    let up = !matches!(rec.state.as_str(), "not-running" | "unknown");
    family(
        &mut out,
        "up",
        "gauge",
        "Whether the supervisor runs (1) or not (0).",
        &[("", f(up))],
    );
    family(
        &mut out,
        "build_info",
        "gauge",
        "The supervisor's version, as a label; always 1.",
        &[(
            &format!("version=\"{}\"", escape(env!("CARGO_PKG_VERSION"))),
            1.0,
        )],
    );
    if !up {
        return out;
    }
    let sup = rec.supervisor.as_ref();
    let child = rec.child.as_ref();
    let seconds = |at: Option<&str>| {
        at.and_then(state::parse_timestamp)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    };
    let started = seconds(sup.map(|s| s.started_at.as_str()));
    family(
        &mut out,
        "start_time_seconds",
        "gauge",
        "When the supervisor started (Unix time; kept across reloads).",
        &started.map(|t| ("", t)).into_iter().collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "reloads_total",
        "counter",
        "Times the supervisor re-executed itself in place (reload).",
        &[("", sup.map_or(0.0, |s| s.reloads.into()))],
    );
    family(
        &mut out,
        "port_bound",
        "gauge",
        "Whether the listening socket is bound and listening (1) or not (0).",
        &[("", f(rec.listen.as_ref().is_some_and(|l| l.bound)))],
    );
    let pid = child.and_then(|c| c.pid);
    let running = pid.is_some() && child.is_some_and(|c| c.started_at.is_some());
    family(
        &mut out,
        "child_up",
        "gauge",
        "Whether a child process runs (1) or not (0: starting, backing off, waiting for the port, stopping).",
        &[("", f(running))],
    );
    family(
        &mut out,
        "child_ready",
        "gauge",
        "Whether the child passed its readiness check (always once it runs, without [health]).",
        &[("", f(running && child.is_some_and(|c| c.ready)))],
    );
    let child_started = running
        .then(|| seconds(child.and_then(|c| c.started_at.as_deref())))
        .flatten();
    family(
        &mut out,
        "child_start_time_seconds",
        "gauge",
        "When the running child started (Unix time); no sample while none runs.",
        &child_started
            .map(|t| ("", t))
            .into_iter()
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "child_restarts_total",
        "counter",
        "Children started after the first.",
        &[("", child.map_or(0.0, |c| c.restarts.into()))],
    );
    family(
        &mut out,
        "child_crash_streak",
        "gauge",
        "Early deaths in a row (the backoff exponent); 0 once a child stayed up.",
        &[("", child.map_or(0.0, |c| c.crash_streak.into()))],
    );
    let exit = child.and_then(|c| c.last_exit.as_ref());
    let code = exit.and_then(|e| e.code).map_or(-1.0, f64::from);
    let signal = exit
        .and_then(|e| e.signal.as_deref())
        .map_or(0.0, |s| signal_number(s).into());
    family(
        &mut out,
        "child_last_exit_code",
        "gauge",
        "The last child's exit code; -1 before the first exit or when a signal ended it.",
        &[("", code)],
    );
    family(
        &mut out,
        "child_last_exit_signal",
        "gauge",
        "The signal that ended the last child (9: SIGKILL); 0 before the first exit or when it exited.",
        &[("", signal)],
    );
    family(
        &mut out,
        "child_memory_bytes",
        "gauge",
        "Resident memory of the child's process group, measured now (the max_memory measure).",
        &[("", memory as f64)],
    );
    let counters = rec.counters.clone().unwrap_or_default();
    family(
        &mut out,
        "handovers_total",
        "counter",
        "Overlapped restarts, by how they ended.",
        &[
            ("result=\"ok\"", counters.handovers.ok as f64),
            ("result=\"failed\"", counters.handovers.failed as f64),
        ],
    );
    let alerts = alert_counts(&counters);
    let labels: Vec<(String, f64)> = alerts
        .iter()
        .map(|(e, n)| (format!("event=\"{}\"", escape(e)), *n as f64))
        .collect();
    family(
        &mut out,
        "alerts_total",
        "counter",
        "Alerts the [alerts] rule fired, by event.",
        &labels
            .iter()
            .map(|(l, n)| (l.as_str(), *n))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "log_bytes_total",
        "counter",
        "Bytes the child wrote to its stdout and stderr.",
        &[
            ("stream=\"stdout\"", counters.log_bytes.stdout as f64),
            ("stream=\"stderr\"", counters.log_bytes.stderr as f64),
        ],
    );
    out
}

/// Every alert event with its count, 0 before its first; names a newer
/// record brings are kept.
fn alert_counts(c: &Counters) -> Vec<(String, u64)> {
    let mut all: std::collections::BTreeMap<String, u64> = AlertEvent::ALL
        .iter()
        .map(|e| (e.as_str().to_owned(), 0))
        .collect();
    for (name, n) in &c.alerts {
        all.insert(name.clone(), *n);
    }
    all.into_iter().collect()
}

fn f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// One family: `# HELP`, `# TYPE` and its samples (`labels` without
/// braces, "" for none).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP supervisor_{name} {help}");
    let _ = writeln!(out, "# TYPE supervisor_{name} {kind}");
    for (labels, value) in samples {
        let value = number(*value);
        if labels.is_empty() {
            let _ = writeln!(out, "supervisor_{name} {value}");
        } else {
            let _ = writeln!(out, "supervisor_{name}{{{labels}}} {value}");
        }
    }
}

/// Integers without a fraction, times with their milliseconds.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// "SIGKILL" → 9; "signal 64" (a name the platform lacks) → 64; else 0.
fn signal_number(name: &str) -> i32 {
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .ok()
        .or_else(|| name.strip_prefix("signal ")?.parse().ok())
        .unwrap_or(0)
}

/// The resident memory of the child `rec` names, in bytes: its process
/// group, the child itself should it have left the group, and whatever
/// below the supervisor holds its listening socket (a daemonized
/// grandchild serves for the child) — what `max_memory` adds up. 0 while
/// no child runs.
pub(crate) fn child_memory(rec: &Record) -> u64 {
    let group_of = |pid: i32| {
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
            .ok()
            .map(nix::unistd::Pid::as_raw)
    };
    let holders = |id, sup| sys::socket_holders(id, sys::Scope::DescendantsOf(sup));
    crate::daemon::memory::resident(counted(rec, sys::group_members, holders, group_of))
}

/// How long `GET /metrics` reuses a measure of the child's memory: a
/// measure reads `/proc` (a scan of the supervisor's descendants, every
/// member's `statm`) on the driver's thread, so scrapes that come faster
/// than this — many scrapers, or someone asking in a loop — share one. A
/// scrape every 15 s (Prometheus' default is 1 min) always measures anew.
pub(crate) const MEMORY_REUSED_FOR: Duration = Duration::from_secs(1);

/// Everything of the record that decides whose memory [`counted`] adds
/// up: a measure is reused only for the same children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Whose {
    child: i32,
    pgid: Option<i32>,
    other: Option<i32>,
    socket: Option<u64>,
    supervisor: Option<i32>,
}

impl Whose {
    /// `None` while no child runs (nothing to measure).
    fn of(rec: &Record) -> Option<Whose> {
        let child = rec.child.as_ref()?;
        Some(Whose {
            child: child.pid?,
            pgid: child.pgid,
            other: other_child(rec),
            socket: rec.listen.as_ref().and_then(|l| l.socket_id),
            supervisor: rec.supervisor.as_ref().map(|s| s.pid),
        })
    }
}

/// The last measure of the child's memory, reused by [`Memory::get`].
#[derive(Debug, Default)]
pub(crate) struct Memory {
    last: Option<(Instant, Whose, u64)>,
}

impl Memory {
    /// The resident memory of the child `rec` names at `now`: the last
    /// measure when it is of the same children (the same child, and the
    /// same handover phase: a handover that moved on is measured at once)
    /// and younger than [`MEMORY_REUSED_FOR`]; else `measure(rec)`,
    /// remembered. No timer: nothing happens between scrapes.
    pub(crate) fn get(
        &mut self,
        rec: &Record,
        now: Instant,
        measure: impl FnOnce(&Record) -> u64,
    ) -> u64 {
        let Some(whose) = Whose::of(rec) else {
            self.last = None;
            return 0;
        };
        if let Some((at, w, bytes)) = self.last {
            if w == whose && now.saturating_duration_since(at) < MEMORY_REUSED_FOR {
                return bytes;
            }
        }
        let bytes = measure(rec);
        self.last = Some((now, whose, bytes));
        bytes
    }
}

/// During a handover, the child `rec.child` does not name: the new one
/// while starting, the old one while draining. Each child leads its own
/// group: the other child's pid is its group.
fn other_child(rec: &Record) -> Option<i32> {
    rec.handover.as_ref().and_then(|h| {
        h.second.map(|g| g.pgid).or(match h.phase.as_str() {
            "draining" => Some(h.old_pid),
            _ => h.new_pid,
        })
    })
}

/// Whose memory [`child_memory`] adds up, given the members of a process
/// group, the holders of socket `id` below `supervisor`, and a process's
/// group. During a handover the other child holds the socket too: its
/// group is not the child's (nor does `max_memory` count it).
fn counted(
    rec: &Record,
    members: impl Fn(i32) -> Vec<i32>,
    holders: impl FnOnce(u64, i32) -> Vec<i32>,
    group_of: impl Fn(i32) -> Option<i32>,
) -> Vec<i32> {
    let Some(child) = rec.child.as_ref() else {
        return Vec::new();
    };
    let Some(pid) = child.pid else {
        return Vec::new();
    };
    let supervisor = rec.supervisor.as_ref().map(|s| s.pid);
    let other = other_child(rec);
    let mut pids = child.pgid.map(members).unwrap_or_default();
    pids.push(pid);
    if let (Some(id), Some(sup)) = (rec.listen.as_ref().and_then(|l| l.socket_id), supervisor) {
        pids.extend(
            holders(id, sup)
                .into_iter()
                .filter(|p| other.is_none_or(|o| *p != o && group_of(*p) != Some(o))),
        );
    }
    pids.retain(|p| Some(*p) != supervisor);
    pids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ChildInfo, ExitInfo, ListenInfo, SupervisorInfo};

    fn running() -> Record {
        Record {
            state: "running".into(),
            supervisor: Some(SupervisorInfo {
                pid: 40,
                started_at: "2026-11-26T08:00:00Z".into(),
                reloads: 2,
                ..Default::default()
            }),
            listen: Some(ListenInfo {
                address: "127.0.0.1:8420".into(),
                bound: true,
                name: None,
                inherited: false,
                socket_id: None,
            }),
            child: Some(ChildInfo {
                pid: Some(41),
                pgid: Some(41),
                start_time: None,
                sid: None,
                started_at: Some("2026-11-26T08:00:01Z".into()),
                restarts: 2,
                last_exit: Some(ExitInfo {
                    code: None,
                    signal: Some("SIGKILL".into()),
                    at: "2026-11-26T08:00:00Z".into(),
                }),
                crash_streak: 1,
                ready: true,
                status: None,
                last_probe: None,
                spawn_error: None,
            }),
            counters: Some(Counters {
                alerts: [("crash-loop".to_owned(), 3)].into(),
                log_bytes: state::Streams {
                    stdout: 10,
                    stderr: 20,
                },
                handovers: state::Handovers { ok: 1, failed: 0 },
            }),
            ..Record::not_running()
        }
    }

    /// The value of the sample `line` starts with (name and labels).
    fn sample(text: &str, name: &str) -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .map(|l| l[name.len() + 1..].to_owned())
    }

    #[test]
    fn a_running_supervisor_in_every_family() {
        let text = render(&running(), 4096);
        // (sample, value)
        let table = [
            ("supervisor_up", "1"),
            ("supervisor_start_time_seconds", "1795680000"),
            ("supervisor_reloads_total", "2"),
            ("supervisor_port_bound", "1"),
            ("supervisor_child_up", "1"),
            ("supervisor_child_ready", "1"),
            ("supervisor_child_start_time_seconds", "1795680001"),
            ("supervisor_child_restarts_total", "2"),
            ("supervisor_child_crash_streak", "1"),
            ("supervisor_child_last_exit_code", "-1"),
            ("supervisor_child_last_exit_signal", "9"),
            ("supervisor_child_memory_bytes", "4096"),
            ("supervisor_handovers_total{result=\"ok\"}", "1"),
            ("supervisor_handovers_total{result=\"failed\"}", "0"),
            ("supervisor_alerts_total{event=\"crash-loop\"}", "3"),
            ("supervisor_alerts_total{event=\"recovered\"}", "0"),
            ("supervisor_log_bytes_total{stream=\"stdout\"}", "10"),
            ("supervisor_log_bytes_total{stream=\"stderr\"}", "20"),
        ];
        for (name, want) in table {
            assert_eq!(sample(&text, name).as_deref(), Some(want), "{name}\n{text}");
        }
        let version = format!(
            "supervisor_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&text, &version).as_deref(), Some("1"));
        // Every family has its HELP and TYPE, once, before its samples.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(families.len(), 16, "{text}");
        for t in families {
            let name = t.split(' ').next().unwrap();
            assert_eq!(text.matches(&format!("# HELP {name} ")).count(), 1);
        }
        for kind in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = kind.split_once(' ').unwrap();
            assert_eq!(name.ends_with("_total"), kind == "counter", "{name}");
        }
    }

    #[test]
    fn what_a_stopped_or_starting_child_shows() {
        let mut rec = running();
        let c = rec.child.as_mut().unwrap();
        c.pid = None;
        c.started_at = None;
        c.last_exit = Some(ExitInfo {
            code: Some(3),
            signal: None,
            at: "2026-11-26T08:00:00Z".into(),
        });
        rec.state = "backoff".into();
        let text = render(&rec, 0);
        assert_eq!(sample(&text, "supervisor_child_up").as_deref(), Some("0"));
        assert_eq!(
            sample(&text, "supervisor_child_ready").as_deref(),
            Some("0")
        );
        assert_eq!(sample(&text, "supervisor_child_start_time_seconds"), None);
        assert!(text.contains("# TYPE supervisor_child_start_time_seconds gauge"));
        assert_eq!(
            sample(&text, "supervisor_child_last_exit_code").as_deref(),
            Some("3")
        );
        assert_eq!(
            sample(&text, "supervisor_child_last_exit_signal").as_deref(),
            Some("0")
        );
        // Before the first exit, and before any counter was recorded.
        rec.child.as_mut().unwrap().last_exit = None;
        rec.counters = None;
        let text = render(&rec, 0);
        assert_eq!(
            sample(&text, "supervisor_child_last_exit_code").as_deref(),
            Some("-1")
        );
        assert_eq!(
            sample(&text, "supervisor_alerts_total{event=\"crash-loop\"}").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn a_supervisor_that_does_not_run_is_up_0_and_nothing_else() {
        for rec in [Record::not_running(), Record::unknown("bad".into())] {
            let text = render(&rec, 0);
            assert_eq!(sample(&text, "supervisor_up").as_deref(), Some("0"));
            let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(samples.len(), 2, "{text}");
        }
    }

    #[test]
    fn memory_counts_the_childs_group_and_socket_holders_not_the_other_child_of_a_handover() {
        let mut rec = running();
        rec.listen.as_mut().unwrap().socket_id = Some(77);
        // Group 41: the child and its worker 42. Holding socket 77 below the
        // supervisor (40): the child, its daemonized grandchild 50 (group
        // 50), and, during a handover, the new child 60 and its worker 61.
        let members = |g: i32| match g {
            41 => vec![41, 42],
            60 => vec![60, 61],
            _ => vec![],
        };
        let holders = |id: u64, sup: i32| {
            assert_eq!((id, sup), (77, 40));
            vec![41, 50, 60, 61]
        };
        let group_of = |p: i32| {
            Some(if p >= 60 {
                60
            } else if p == 50 {
                50
            } else {
                41
            })
        };
        let sorted = |mut v: Vec<i32>| {
            v.sort_unstable();
            v.dedup();
            v
        };
        assert_eq!(
            sorted(counted(&rec, members, holders, group_of)),
            [41, 42, 50, 60, 61]
        );
        // Starting: child 41 serves, new child 60 starts. Draining: 60
        // serves, old 41 is stopping. Either way, only the one `child` names.
        for (phase, serving, other, want) in [
            ("starting", 41, 60, vec![41, 42, 50]),
            ("draining", 60, 41, vec![50, 60, 61]),
        ] {
            let mut rec = rec.clone();
            let c = rec.child.as_mut().unwrap();
            c.pid = Some(serving);
            c.pgid = Some(serving);
            rec.handover = Some(state::HandoverInfo {
                phase: phase.into(),
                new_pid: Some(60),
                old_pid: 41,
                started_at: "2026-11-26T08:00:02Z".into(),
                second: Some(state::GroupInfo {
                    pgid: other,
                    start_time: None,
                    sid: None,
                }),
            });
            assert_eq!(
                sorted(counted(&rec, members, holders, group_of)),
                want,
                "{phase}"
            );
            // Without the group recorded (a record from an older image).
            rec.handover.as_mut().unwrap().second = None;
            assert_eq!(
                sorted(counted(&rec, members, holders, group_of)),
                want,
                "{phase}, no group"
            );
        }
        // No child: nothing, and no scan.
        rec.child.as_mut().unwrap().pid = None;
        let no_scan = |_: u64, _: i32| -> Vec<i32> { panic!("scanned with no child") };
        assert!(counted(&rec, members, no_scan, group_of).is_empty());
    }

    #[test]
    fn a_measure_is_reused_for_a_second_and_only_for_the_same_children() {
        let mut memory = Memory::default();
        let measures = std::cell::Cell::new(0);
        let mut get = |rec: &Record, at: Instant| {
            memory.get(rec, at, |_| {
                measures.set(measures.get() + 1);
                1000 + measures.get()
            })
        };
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let rec = running();
        // A hundred scrapes within the second: one measure.
        for n in 0..100 {
            assert_eq!(get(&rec, ms(n * 9)), 1001);
        }
        assert_eq!(measures.get(), 1);
        // The second over: measured anew, and that one reused in turn.
        assert_eq!(get(&rec, ms(1000)), 1002);
        assert_eq!(get(&rec, ms(1999)), 1002);
        assert_eq!(get(&rec, ms(2000)), 1003);
        // A scrape every 15 s: each measures.
        for n in 1..=3 {
            assert_eq!(get(&rec, ms(2000 + n * 15_000)), 1003 + n);
        }
        assert_eq!(measures.get(), 6);
        let t = ms(50_000);
        assert_eq!(get(&rec, t), 1007);
        // Another child, a handover that began, then moved on to draining:
        // each measured at once, whatever the age of the last measure.
        let mut other = rec.clone();
        other.child.as_mut().unwrap().pid = Some(99);
        assert_eq!(get(&other, t), 1008);
        let mut starting = rec.clone();
        starting.handover = Some(state::HandoverInfo {
            phase: "starting".into(),
            new_pid: Some(60),
            old_pid: 41,
            started_at: "2026-11-26T08:00:02Z".into(),
            second: None,
        });
        assert_eq!(get(&starting, t), 1009);
        assert_eq!(get(&starting, t), 1009);
        let mut draining = starting.clone();
        let h = draining.handover.as_mut().unwrap();
        h.phase = "draining".into();
        let c = draining.child.as_mut().unwrap();
        c.pid = Some(60);
        c.pgid = Some(60);
        assert_eq!(get(&draining, t), 1010);
        // The handover over: the new child alone, measured at once.
        let mut done = draining.clone();
        done.handover = None;
        assert_eq!(get(&done, t), 1011);
        // No child: 0, nothing measured, nothing kept.
        let mut none = rec.clone();
        none.child.as_mut().unwrap().pid = None;
        assert_eq!(get(&none, t), 0);
        assert_eq!(get(&done, t), 1012);
        assert_eq!(measures.get(), 12);
    }

    #[test]
    fn signals_and_labels() {
        assert_eq!(signal_number("SIGKILL"), 9);
        assert_eq!(signal_number("SIGTERM"), 15);
        assert_eq!(signal_number("signal 64"), 64);
        assert_eq!(signal_number("nonsense"), 0);
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(-1.0), "-1");
        assert_eq!(number(1.5), "1.500");
    }
}
