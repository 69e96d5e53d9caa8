//! Finding the running supervisor from outside, and the `status` command.
//!
//! A pid file and a state file on disk prove nothing by themselves: the
//! supervisor may have been SIGKILLed and its pid reused. So liveness is
//! proven first ([`lock::find`]), and only then is the record
//! read, checked against the processes it names, and shown.

use std::io::IsTerminal;
use std::time::SystemTime;

use crate::config::{Config, StateLocation};
use crate::exit;
use crate::lock::{self, Finding};
use crate::state::{self, Record};
use crate::sys;

/// A record naming a dead child is called stale (not merely a moment
/// behind) once it is this old.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The record to show for the live supervisor that wrote `rec` (proven).
fn live_record(loc: &StateLocation, mut rec: Record, now: SystemTime) -> Record {
    // The record names a child that is gone (or whose pid now belongs to
    // someone else). Usually the supervisor is a moment away from recording
    // the exit; if the record is old, it cannot write it (a full disk). Either
    // way, never report a dead child as running.
    if let Some(child) = rec.child.as_mut() {
        if let Some(cpid) = child.pid {
            let same = sys::is_alive(cpid)
                && child
                    .start_time
                    .is_none_or(|t| sys::process_start_time(cpid) == Some(t));
            if !same {
                child.pid = None;
                child.ready = false;
                if rec.state != "stopping" {
                    rec.state = "starting".into();
                }
                if rec.age(now).is_some_and(|a| a > STALE_AFTER) {
                    rec.error = Some(format!(
                        "{} is stale: it names child {cpid}, which is gone; the supervisor \
                         cannot record its state (is the disk full?)",
                        loc.state_path().display()
                    ));
                }
            }
        }
    }
    present(rec, now)
}

/// What `status` shows for the lock holder `pid` that no record names
/// yet: a supervisor in its first moments, between taking the lock and
/// writing `state.json`. `starting` (exit 1) with every key a live record
/// has: `supervisor` with what the process table tells, `listen` from the
/// config (not bound yet), `child: null`. Past [`STALE_AFTER`] the record
/// should long be there: `error` then says why it is not proven.
fn unrecorded(pid: i32, cfg: Option<&Config>, why: String, now: SystemTime) -> Record {
    let start_time = sys::process_start_time(pid);
    let age = start_time.and_then(sys::process_age);
    let started_at = now.checked_sub(age.unwrap_or_default()).unwrap_or(now);
    Record {
        state: "starting".into(),
        supervisor: Some(state::SupervisorInfo {
            pid,
            started_at: state::timestamp(started_at),
            start_time,
            executable: sys::executable(pid).map(|p| p.display().to_string()),
            ..Default::default()
        }),
        listen: cfg.map(|c| state::ListenInfo {
            address: c.listen.address.to_string(),
            bound: false,
            name: None,
            inherited: false,
            socket_id: None,
        }),
        error: age.is_none_or(|a| a > STALE_AFTER).then_some(why),
        ..Record::not_running()
    }
}

/// A live supervisor's record as `status` shows it at `now`: the countdown
/// to the next try worked out, times from the future clamped. Also what
/// the supervisor serves as `GET /status`.
pub(crate) fn present(mut rec: Record, now: SystemTime) -> Record {
    if rec.state == "not-running" {
        // Written on the way out; the process is about to exit.
        rec.state = "stopping".into();
    }
    rec.next_restart_in_ms = rec
        .next_restart_at
        .as_deref()
        .and_then(state::parse_timestamp)
        .map(|at| state::ms_until(at, now));
    let clamp = |s: &mut String| {
        if let Some(t) = state::parse_timestamp(s) {
            *s = state::timestamp(state::clamp_past(t, now));
        }
    };
    if let Some(s) = rec.supervisor.as_mut() {
        clamp(&mut s.started_at);
    }
    if let Some(c) = rec.child.as_mut() {
        if let Some(s) = c.started_at.as_mut() {
            clamp(s);
        }
        if let Some(e) = c.last_exit.as_mut() {
            clamp(&mut e.at);
        }
    }
    rec
}

/// How `status` prints the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// One fact a line, for people.
    Text,
    /// One JSON object (the same as --json).
    Json,
    /// The Prometheus text exposition format (0.0.4).
    Prometheus,
}

/// `supervisor status [--json | --format F]`; returns the exit code.
///
/// The lock holder is proven to be the supervisor its record names
/// (`lock::find`) before anything is shown of it: otherwise unknown (4),
/// naming the pid and why. A record of another config's supervisor (a
/// shared state folder) is 78, naming both.
pub(crate) fn run(found: Result<(StateLocation, Option<Config>), String>, format: Format) -> i32 {
    let now = SystemTime::now();
    let mut other_service = false;
    let rec = match found {
        Err(e) => Record::unknown(e),
        Ok((loc, cfg)) => match lock::find(&loc.pid_path(), &loc.state_path()) {
            Finding::NotRunning => Record::not_running(),
            Finding::Unknown {
                why,
                starting: Some(pid),
            } => unrecorded(pid, cfg.as_ref(), why, now),
            Finding::Unknown { why, .. } => Record::unknown(why),
            Finding::Running { record, .. } => {
                let address = cfg.as_ref().map(|c| c.listen.address.to_string());
                match lock::other_service(&record, &loc.config, address.as_deref(), &loc.state_dir)
                {
                    Some(why) => {
                        other_service = true;
                        crate::say!("supervisor: {why}");
                        Record::unknown(why)
                    }
                    None => live_record(&loc, *record, now),
                }
            }
        },
    };
    let code = match rec.state.as_str() {
        _ if other_service => exit::CONFIG,
        "running" => exit::OK,
        "not-running" => exit::NOT_RUNNING,
        "unknown" => exit::UNKNOWN,
        _ => exit::FAILURE,
    };
    match format {
        Format::Json => crate::out!("{}", rec.encode()),
        Format::Text => crate::out!("{}", human(&rec, now, colour_wanted())),
        Format::Prometheus => crate::out!(
            "{}",
            crate::metrics::render(&rec, crate::metrics::child_memory(&rec))
        ),
    }
    code
}

/// `supervisor status --check ready`: no output, only the exit code — 0
/// when the child runs and is ready, 1 otherwise (starting, backing off,
/// stopping, an unreadable record), 3 when no supervisor runs. The same
/// proofs as `status`, no more: it answers in a few milliseconds.
pub(crate) fn ready(found: Result<(StateLocation, Option<Config>), String>) -> i32 {
    let Ok((loc, cfg)) = found else {
        return exit::FAILURE;
    };
    match lock::find(&loc.pid_path(), &loc.state_path()) {
        Finding::NotRunning => exit::NOT_RUNNING,
        Finding::Unknown { .. } => exit::FAILURE,
        Finding::Running { record, .. } => {
            let address = cfg.as_ref().map(|c| c.listen.address.to_string());
            if lock::other_service(&record, &loc.config, address.as_deref(), &loc.state_dir)
                .is_some()
            {
                return exit::CONFIG;
            }
            match is_ready(&live_record(&loc, *record, SystemTime::now())) {
                true => exit::OK,
                false => exit::FAILURE,
            }
        }
    }
}

/// Running and ready: `running` is only recorded once ready, and the child
/// it names was just proven alive.
fn is_ready(rec: &Record) -> bool {
    rec.state == "running"
        && rec
            .child
            .as_ref()
            .is_some_and(|c| c.ready && c.pid.is_some())
}

fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn ago(at: &str, now: SystemTime) -> Option<String> {
    let t = state::parse_timestamp(at)?;
    let d = now.duration_since(t).unwrap_or_default();
    Some(crate::text::human(std::time::Duration::from_secs(
        d.as_secs(),
    )))
}

/// How long a process has been up. By its start time, on the clock
/// [`crate::sys::process_start_time`] uses, when the pid is still the
/// process recorded: that clock never steps, so after the wall clock was
/// set back this is still the true uptime (the wall-clock `started_at` then
/// lies in the future and is clamped). Else from `started_at`.
fn uptime(pid: i32, start_time: Option<u64>, started_at: &str, now: SystemTime) -> Option<String> {
    let by_start = start_time
        .filter(|&st| crate::sys::process_start_time(pid) == Some(st))
        .and_then(crate::sys::process_age);
    match by_start {
        Some(d) => Some(crate::text::human(std::time::Duration::from_secs(
            d.as_secs(),
        ))),
        None => ago(started_at, now),
    }
}

/// The record for people: one fact a line.
pub(crate) fn human(rec: &Record, now: SystemTime, colour: bool) -> String {
    let paint = |text: &str, code: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let state_colour = match rec.state.as_str() {
        "running" => "32",
        "not-running" | "unknown" => "31",
        _ => "33",
    };
    let mut out = format!("state:        {}\n", paint(&rec.state, state_colour));
    if let Some(e) = &rec.error {
        out += &format!("error:        {e}\n");
    }
    if let Some(s) = &rec.supervisor {
        let up = uptime(s.pid, s.start_time, &s.started_at, now)
            .map(|d| format!(", up {d}"))
            .unwrap_or_default();
        out += &format!("supervisor:   pid {}{up}\n", s.pid);
    }
    if let Some(l) = &rec.listen {
        let bound = match (l.bound, l.inherited) {
            (true, true) => "bound, passed by the service manager",
            (true, false) => "bound",
            (false, _) => "not bound",
        };
        out += &format!("listen:       {} ({bound})\n", l.address);
    }
    if let Some(c) = &rec.child {
        match (c.pid, &c.started_at) {
            (Some(pid), Some(at)) => {
                let up = uptime(pid, c.start_time, at, now)
                    .map(|d| format!(", up {d}"))
                    .unwrap_or_default();
                out += &format!(
                    "child:        pid {pid}{up}, {}\n",
                    crate::text::count(c.restarts.into(), "restart")
                );
            }
            (Some(pid), None) => {
                out += &format!(
                    "child:        pid {pid} (stopping), {}\n",
                    crate::text::count(c.restarts.into(), "restart")
                )
            }
            _ => {
                out += &format!(
                    "child:        none, {}\n",
                    crate::text::count(c.restarts.into(), "restart")
                )
            }
        }
        if let Some(text) = &c.status {
            // Cleaned on arrival; again here for a record an older version
            // wrote.
            out += &format!("child status: {}\n", crate::text::one_line(text, 512));
        }
        if let Some(e) = &c.spawn_error {
            out += &format!("spawn error:  {e}\n");
        }
        if let (Some(probe), false) = (&c.last_probe, c.ready) {
            out += &format!("last probe:   {probe}\n");
        }
        if let Some(e) = &c.last_exit {
            let how = match (&e.code, &e.signal) {
                (Some(code), _) => format!("exited {code}"),
                (None, Some(sig)) => format!("killed by {sig}"),
                (None, None) => "ended".into(),
            };
            let when = ago(&e.at, now)
                .map(|d| format!(", {d} ago"))
                .unwrap_or_default();
            out += &format!("last exit:    {how}{when}\n");
        }
    }
    // A restart asked for that did not happen (a failed handover: the
    // child above serves on), with why, as `restart` said it.
    if let Some(r) = rec
        .supervisor
        .as_ref()
        .and_then(|s| s.restart.as_ref())
        .filter(|r| !r.ok)
    {
        let when = ago(&r.at, now)
            .map(|d| format!(", {d} ago"))
            .unwrap_or_default();
        out += &format!("last restart: failed{when}: {}\n", r.message);
    }
    if let Some(h) = &rec.handover {
        out += &format!(
            "handover:     {}\n",
            crate::text::handover(&h.phase, h.new_pid, h.old_pid)
        );
    }
    if let Some(ms) = rec.next_restart_in_ms {
        let what = if rec.state == "waiting-for-port" {
            "next bind try"
        } else {
            "next restart"
        };
        out += &format!(
            "{what}: in {}\n",
            crate::text::human(std::time::Duration::from_millis(ms))
        );
    }
    if let Some(a) = &rec.alerts {
        if let (Some(event), Some(at)) = (&a.last_event, &a.last_at) {
            let when = ago(at, now)
                .map(|d| format!(", {d} ago"))
                .unwrap_or_default();
            let how = a.last_result.as_deref().unwrap_or("its command is running");
            out += &format!("last alert:   {event}{when} ({how})\n");
        }
    }
    if let Some(h) = &rec.port_holder {
        out += &format!("port holder:  pid {} {}\n", h.pid, h.command);
    } else if let Some(e) = &rec.bind_error {
        out += &format!("bind error:   {e}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ChildInfo, ExitInfo};

    #[test]
    fn a_holder_not_recorded_yet_is_starting_with_every_key() {
        let cfg = Config::parse(
            "[listen]\naddress = \"127.0.0.1:8420\"\n[child]\ncommand = [\"true\"]\n",
            std::path::Path::new("/etc/sv/supervisor.toml"),
        )
        .unwrap();
        let me = std::process::id() as i32;
        let rec = unrecorded(me, Some(&cfg), "not recorded".into(), SystemTime::now());
        let v: serde_json::Value = serde_json::from_str(&rec.encode()).unwrap();
        assert_eq!(v["state"], "starting");
        assert_eq!(v["supervisor"]["pid"], me);
        assert!(v["supervisor"]["started_at"].is_string(), "{v}");
        assert_eq!(
            v["listen"],
            serde_json::json!({"address": "127.0.0.1:8420", "bound": false, "name": null, "inherited": false})
        );
        assert!(v.get("child").is_some_and(|c| c.is_null()), "{v}");
        // A process that old should long have recorded itself: say why not.
        let rec = unrecorded(me, None, "not recorded".into(), SystemTime::now());
        assert!(rec.listen.is_none());
        let young = sys::process_start_time(me)
            .and_then(sys::process_age)
            .is_some_and(|a| a <= STALE_AFTER);
        assert_eq!(rec.error.is_none(), young);
    }

    fn starting(pid: i32) -> Record {
        Record {
            state: "starting".into(),
            supervisor: Some(state::SupervisorInfo {
                pid,
                started_at: state::timestamp(SystemTime::now()),
                ..Default::default()
            }),
            ..Record::not_running()
        }
    }

    #[test]
    fn ready_means_running_with_a_ready_child() {
        let child = |pid: Option<i32>, ready: bool| ChildInfo {
            pid,
            pgid: None,
            start_time: None,
            sid: None,
            started_at: None,
            restarts: 0,
            last_exit: None,
            crash_streak: 0,
            ready,
            status: None,
            last_probe: None,
            spawn_error: None,
        };
        let table = [
            ("running", Some(child(Some(7), true)), true),
            ("running", Some(child(Some(7), false)), false),
            ("running", Some(child(None, true)), false),
            ("running", None, false),
            ("starting", Some(child(Some(7), false)), false),
            ("stopping", Some(child(Some(7), true)), false),
            ("backoff", Some(child(None, false)), false),
        ];
        for (state, child, want) in table {
            let rec = Record {
                state: state.into(),
                child,
                ..starting(42)
            };
            assert_eq!(is_ready(&rec), want, "{state} {:?}", rec.child);
        }
    }

    #[test]
    fn human_status_reads_at_a_glance() {
        let now = state::parse_timestamp("2026-11-26T08:10:00Z").unwrap();
        let rec = Record {
            state: "backoff".into(),
            child: Some(ChildInfo {
                pid: None,
                pgid: None,
                start_time: None,
                sid: None,
                started_at: None,
                restarts: 3,
                last_exit: Some(ExitInfo {
                    code: Some(1),
                    signal: None,
                    at: "2026-11-26T08:09:48Z".into(),
                }),
                crash_streak: 3,
                ready: false,
                status: None,
                last_probe: None,
                spawn_error: None,
            }),
            next_restart_in_ms: Some(4000),
            ..starting(42)
        };
        let text = human(&rec, now, false);
        assert!(text.contains("state:        backoff"), "{text}");
        assert!(text.contains("supervisor:   pid 42"), "{text}");
        assert!(text.contains("last exit:    exited 1, 12s ago"), "{text}");
        assert!(text.contains("next restart: in 4s"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(human(&rec, now, true).contains("\x1b[33mbackoff"));
    }

    #[test]
    fn a_failed_restart_is_said_under_the_child_that_serves_on() {
        let now = SystemTime::now();
        let at = |secs| state::timestamp_ms(now - std::time::Duration::from_secs(secs));
        let mut rec = Record {
            state: "running".into(),
            child: Some(ChildInfo {
                pid: Some(std::process::id() as i32),
                started_at: Some(state::timestamp(now)),
                ready: true,
                ..ChildInfo::default()
            }),
            ..starting(42)
        };
        let why = "handover failed: the new child could not be started (cannot start the \
                   child: /srv/app/run: No such file or directory); child 41 serves on";
        rec.supervisor.as_mut().unwrap().restart = Some(state::RestartOutcome {
            seq: 1,
            at: at(5),
            ok: false,
            message: why.into(),
            asked_mono_ns: None,
        });
        let text = human(&rec, now, false);
        assert!(
            text.contains(&format!("last restart: failed, 5s ago: {why}\n")),
            "{text}"
        );
        assert!(!text.contains("spawn error"), "{text}");
        // A restart that worked says nothing more than the child's line.
        rec.supervisor.as_mut().unwrap().restart = Some(state::RestartOutcome {
            seq: 2,
            at: at(1),
            ok: true,
            message: "child 43 runs and is ready".into(),
            asked_mono_ns: None,
        });
        assert!(!human(&rec, now, false).contains("last restart"));
    }
}
