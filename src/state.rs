//! The status record: what `state.json` holds and `status --json` prints.
//!
//! Encoding and decoding are pure; [`write_atomic`] is the one function that
//! touches the disk (temp file in the same folder, fsync, rename), so a
//! reader sees the old record or the new one, never half of either.
//! Everything read back is untrusted: a record may be truncated, hand-made,
//! from the future or about processes that no longer exist.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub state: String,
    #[serde(default)]
    pub supervisor: Option<SupervisorInfo>,
    #[serde(default)]
    pub listen: Option<ListenInfo>,
    #[serde(default)]
    pub child: Option<ChildInfo>,
    /// Filled in by `status` from `next_restart_at`, so it is never stale.
    #[serde(default)]
    pub next_restart_in_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_at: Option<String>,
    #[serde(default)]
    pub port_holder: Option<PortHolder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_error: Option<String>,
    /// With `[alerts]`: the last alert and how its command ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsInfo>,
    /// What `status --format prometheus` and `/metrics` count: alerts
    /// per event, the child's output per stream, handovers. Kept by the
    /// driver, handed over by `reload`, started afresh by a new process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// A handover in progress (`[restart] overlap`): null, or the two
    /// children.
    #[serde(default)]
    pub handover: Option<HandoverInfo>,
}

/// `handover` in the record: the two children of a handover. While
/// `starting`, `child` is the old one (serving); from `draining` on, the
/// new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HandoverInfo {
    /// "starting" (the new child is not ready yet) or "draining" (the old
    /// one is being stopped).
    pub phase: String,
    pub new_pid: Option<i32>,
    pub old_pid: i32,
    pub started_at: String,
    /// The child that is not `child` (the new one while starting, the old
    /// one while draining), its group and start time: a supervisor started
    /// after this one was killed stops it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second: Option<GroupInfo>,
}

/// A child's process group, as an earlier supervisor recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupInfo {
    pub pgid: i32,
    #[serde(default)]
    pub start_time: Option<u64>,
    #[serde(default)]
    pub sid: Option<i32>,
}

/// The outcome of the last requested restart (`restart`, SIGUSR1): what
/// `supervisor restart` waits for. `seq` counts outcomes, so the command
/// tells a new one from the one recorded before it asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RestartOutcome {
    pub seq: u64,
    pub at: String,
    pub ok: bool,
    /// What happened, for people: the new child that serves, or why not.
    pub message: String,
    /// When the supervisor took the last request this restart answers
    /// (`RestartAnswer::mono_ns`; several requests taken while one
    /// restart is under way are answered by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_mono_ns: Option<u64>,
}

/// The supervisor's answer to one restart request (SIGUSR1), made when it
/// took the signal: taken (a restart is under way; its outcome follows in
/// `restart`) or refused (a handover is in progress). `supervisor restart`
/// reads the first answer made after it sent its signal: that one is its
/// own (or covers it), however stale the record was when it asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RestartAnswer {
    /// When it was taken, on the machine's monotonic clock
    /// (`sys::monotonic_ns`), in nanoseconds.
    pub mono_ns: u64,
    pub taken: bool,
    /// Why it was refused, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The record's `counters`: totals since the supervisor process started
/// (across `reload`s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    /// Alerts the rule fired, by event name ("crash-loop", ...).
    #[serde(default)]
    pub alerts: BTreeMap<String, u64>,
    /// Bytes the child wrote to its stdout and stderr (as of the last
    /// state write: the log reader counts them as they come).
    #[serde(default)]
    pub log_bytes: Streams,
    /// Overlapped restarts that handed the port to a new child, and those
    /// that failed.
    #[serde(default)]
    pub handovers: Handovers,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Streams {
    pub stdout: u64,
    pub stderr: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Handovers {
    pub ok: u64,
    pub failed: u64,
}

/// `alerts` in the record (null fields before the first alert).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AlertsInfo {
    pub last_event: Option<String>,
    pub last_at: Option<String>,
    /// How the command ended ("exited with code 0", "killed after the 30s
    /// timeout", "could not start: ..."); null while it runs.
    pub last_result: Option<String>,
    /// When each kind of alert last went out: a supervisor started after
    /// this one keeps to `min_interval` across the restart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sent: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SupervisorInfo {
    pub pid: i32,
    pub started_at: String,
    /// Platform start time of the supervisor process: with the pid, proof
    /// that the process named here is the one that wrote the record.
    #[serde(default)]
    pub start_time: Option<u64>,
    #[serde(default)]
    pub version: Option<String>,
    /// Which boot of the machine this was: processes named in a record
    /// from before a reboot are never ours.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Times this supervisor re-executed itself in place (`reload`).
    #[serde(default)]
    pub reloads: u32,
    /// The binary it runs (what `reload` executes again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// Why the last `reload` failed; what `supervisor reload` prints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_error: Option<ReloadError>,
    /// The `child.stop_timeout` this supervisor runs with, in ms: `stop`
    /// waits by it even after the file on disk was edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
    /// The config file this supervisor runs (absolute, through links):
    /// one state folder belongs to one service, and a command for another
    /// config is refused rather than acting on this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The outcome of the last requested restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartOutcome>,
    /// The answers to the last few restart requests, oldest first (null
    /// from a supervisor too old to give them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_answers: Option<Vec<RestartAnswer>>,
    /// `health.start_timeout` this supervisor runs with, in ms (with
    /// `stop_timeout_ms`, how long `restart` waits by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout_ms: Option<u64>,
}

/// A failed `reload`: when, the exit code `reload` gives (78: invalid
/// config; 1: anything else) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReloadError {
    pub at: String,
    pub code: i32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListenInfo {
    pub address: String,
    pub bound: bool,
    #[serde(default)]
    pub name: Option<String>,
    /// The service manager passed the socket (systemd `.socket` unit,
    /// `LISTEN_FDS`, launchd `Sockets`) rather than us binding it.
    #[serde(default)]
    pub inherited: bool,
    /// What names the listening socket in every process that holds it
    /// (Linux: its inode; macOS: the kernel's hashed socket address): a
    /// later supervisor finds what still holds it after this one was
    /// killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChildInfo {
    pub pid: Option<i32>,
    /// The child's process group (its pid when it was started).
    #[serde(default)]
    pub pgid: Option<i32>,
    /// Platform start time of the child: a new supervisor kills a recorded
    /// child only if pid *and* start time still match.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// The child's session: its own pid (a child runs in a session of its
    /// own; records of older versions name the supervisor's). Its
    /// leftovers still sit there.
    #[serde(default)]
    pub sid: Option<i32>,
    pub started_at: Option<String>,
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    /// Consecutive early deaths: the backoff exponent.
    #[serde(default)]
    pub crash_streak: u32,
    /// The child passed its readiness check (always, without `[health]`).
    #[serde(default)]
    pub ready: bool,
    /// The child's last `STATUS=` text (notify protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What the last HTTP health probe of this child found (`[health]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<String>,
    /// Why the last spawn failed (command not found, not executable, bad
    /// interpreter, `cwd` missing); null after a successful spawn.
    #[serde(default)]
    pub spawn_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PortHolder {
    pub pid: i32,
    pub command: String,
}

/// The keys every state's JSON has, null when there is nothing to say.
const EVERY_STATE: [&str; 3] = ["supervisor", "listen", "child"];

impl Record {
    pub(crate) fn not_running() -> Record {
        Record {
            state: "not-running".into(),
            supervisor: None,
            listen: None,
            child: None,
            next_restart_in_ms: None,
            next_restart_at: None,
            port_holder: None,
            bind_error: None,
            alerts: None,
            counters: None,
            error: None,
            updated_at: None,
            handover: None,
        }
    }

    pub(crate) fn unknown(error: String) -> Record {
        Record {
            state: "unknown".into(),
            error: Some(error),
            ..Record::not_running()
        }
    }

    /// JSON text, pretty for people who `cat` the state file.
    pub(crate) fn encode(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        // Every live record prints `next_restart_in_ms` and `port_holder`
        // even when null; `not-running` and `unknown` carry only the keys
        // every state has (SPEC 0.2: `supervisor`, `listen`, `child`, null
        // here, so a script can read `.child.pid` whatever the state) and
        // those they have a value for.
        if self.state == "not-running" || self.state == "unknown" {
            if let Some(map) = value.as_object_mut() {
                map.retain(|k, v| !v.is_null() || EVERY_STATE.contains(&k.as_str()));
            }
        }
        let text = serde_json::to_string_pretty(&value).unwrap_or_else(|e| {
            // Serializing plain strings and numbers cannot fail; say so if it does.
            format!("{{\"state\": \"unknown\", \"error\": \"cannot encode state: {e}\"}}")
        });
        text + "\n"
    }

    /// How long ago the record was written, when it says and that is not
    /// in the future.
    pub(crate) fn age(&self, now: SystemTime) -> Option<Duration> {
        let written = parse_timestamp(self.updated_at.as_deref()?)?;
        now.duration_since(written).ok()
    }

    pub(crate) fn decode(text: &str) -> Result<Record, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// RFC 3339 UTC, to the second, as SPEC.md shows.
pub(crate) fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 UTC with milliseconds, for deadlines.
pub(crate) fn timestamp_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub(crate) fn parse_timestamp(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// Clamp a recorded time that lies in the future (a clock step, or a
/// hand-edited file) to `now`.
pub(crate) fn clamp_past(t: SystemTime, now: SystemTime) -> SystemTime {
    t.min(now)
}

/// Milliseconds from `now` until `at`, zero if past.
pub(crate) fn ms_until(at: SystemTime, now: SystemTime) -> u64 {
    at.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// Replace `name` in the held folder `dir` atomically with `text`, mode
/// 0600: a temp file created with `O_EXCL | O_NOFOLLOW` beside it, synced,
/// renamed over it. Nothing is reached through a link.
pub(crate) fn write_atomic(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
    text: &str,
) -> io::Result<()> {
    use crate::fsafe::{open_at, rename_at, unlink_at};
    use nix::fcntl::OFlag;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    // Left by an earlier process that had our pid and died mid-write.
    let _ = unlink_at(dir, &tmp);
    let result = (|| {
        let mut f = open_at(
            dir,
            &tmp,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            0o600,
        )?;
        f.write_all(text.as_bytes())?;
        crate::sys::sync_file(&f)?;
        rename_at(dir, &tmp, name)
    })();
    if result.is_err() {
        let _ = unlink_at(dir, &tmp);
    }
    result
}

/// Read and decode a record; `Ok(None)` when there is no file.
pub(crate) fn read(path: &Path) -> Result<Option<Record>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Record::decode(&text)
        .map(Some)
        .map_err(|e| format!("{} is not a valid state record: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            state: "running".into(),
            supervisor: Some(SupervisorInfo {
                pid: 4242,
                started_at: "2026-11-26T08:00:00Z".into(),
                start_time: Some(123),
                version: Some("0.1.0".into()),
                ..Default::default()
            }),
            listen: Some(ListenInfo {
                address: "127.0.0.1:8420".into(),
                bound: true,
                name: Some("http".into()),
                inherited: false,
                socket_id: None,
            }),
            child: Some(ChildInfo {
                pid: Some(4243),
                pgid: Some(4243),
                start_time: Some(456),
                sid: Some(4242),
                started_at: Some("2026-11-26T08:00:00Z".into()),
                ready: true,
                ..ChildInfo::default()
            }),
            next_restart_in_ms: None,
            next_restart_at: None,
            port_holder: None,
            bind_error: None,
            alerts: None,
            counters: None,
            error: None,
            updated_at: None,
            handover: None,
        }
    }

    #[test]
    fn round_trip_and_spec_fields() {
        let r = sample();
        let text = r.encode();
        assert_eq!(Record::decode(&text).unwrap(), r);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "state",
            "supervisor",
            "listen",
            "child",
            "next_restart_in_ms",
            "port_holder",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {text}");
        }
        assert!(v["child"]["last_exit"].is_null());
    }

    #[test]
    fn not_running_is_the_state_and_the_keys_every_state_has() {
        let v: serde_json::Value = serde_json::from_str(&Record::not_running().encode()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"state": "not-running", "supervisor": null, "listen": null, "child": null})
        );
        let v: serde_json::Value =
            serde_json::from_str(&Record::unknown("bad".into()).encode()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"state": "unknown", "error": "bad", "supervisor": null, "listen": null, "child": null})
        );
    }

    #[test]
    fn hostile_records_are_errors_not_panics() {
        for text in [
            "",
            "{",
            "null",
            "[]",
            "{\"state\": 5}",
            "\u{0}\u{1}",
            "{\"state\":\"running\",\"child\":{\"pid\":\"x\"}}",
        ] {
            assert!(Record::decode(text).is_err(), "{text:?}");
        }
        // Unknown extra fields from a newer version are fine.
        assert!(Record::decode("{\"state\":\"running\",\"new\":1}").is_ok());
    }

    #[test]
    fn times() {
        let now = parse_timestamp("2026-11-26T08:00:00Z").unwrap();
        let later = now + Duration::from_millis(1500);
        assert_eq!(ms_until(later, now), 1500);
        assert_eq!(ms_until(now, later), 0);
        assert_eq!(clamp_past(later, now), now);
        assert_eq!(timestamp(now), "2026-11-26T08:00:00Z");
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let held = crate::fsafe::Dir::open("state dir", dir.path(), 0o700).unwrap();
        let held = std::os::fd::AsFd::as_fd(&held);
        let name = OsStr::new("state.json");
        write_atomic(held, name, "one").unwrap();
        // A temp file left by an earlier process with our pid is replaced.
        let tmp = dir
            .path()
            .join(format!(".state.json.{}.tmp", std::process::id()));
        fs::write(&tmp, "stale").unwrap();
        write_atomic(held, name, "two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A link where the temp file goes is removed, never followed.
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic(held, name, "three").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&p).unwrap(), "three");
    }
}
