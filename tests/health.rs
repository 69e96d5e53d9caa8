//! Readiness and liveness (`[health]`): READY=1, start_timeout, HTTP
//! probes of a frozen child, the watchdog, and notify messages from
//! strangers (Linux only: there the notify socket is an abstract name and
//! the sender's credentials are checked; a macOS datagram carries no
//! sender to check).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn ready_after_one_second_is_starting_until_then() {
    let env = Setup::new("notify.py")
        .arg("ready")
        .arg("1.0")
        .raw("health", "notify", "true")
        .build();
    let _sup = env.spawn();
    env.wait_for("the child started", DEADLINE, || {
        !env.events_of("start").is_empty()
    });
    let (code, v) = env.status_json();
    if env.events_of("ready").is_empty() && (code != 1 || v["state"] != "starting") {
        env.fail(format!(
            "before READY=1 want starting / exit 1, got {code}: {v:#}"
        ));
    }
    let (code, v) = env.wait_value("running after READY=1", DEADLINE, || {
        let (code, v) = env.status_json();
        (v["state"] == "running").then_some((code, v))
    });
    if env.events_of("ready").is_empty() {
        env.fail("running before the child sent READY=1");
    }
    if code != 0 || v["child"]["ready"] != true || v["child"]["status"] != "warmed up" {
        env.fail(format!(
            "want exit 0, ready, STATUS text; got {code}: {v:#}"
        ));
    }
}

#[test]
fn never_ready_is_restarted_after_start_timeout_with_backoff() {
    let env = Setup::new("notify.py")
        .arg("never")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "500ms")
        .restart("initial_backoff", "400ms")
        .restart("max_backoff", "5s")
        .build();
    let _sup = env.spawn();
    env.wait_for("three starts", DEADLINE, || {
        env.events_of("start").len() >= 3
    });
    let t: Vec<f64> = env.events_of("start").iter().map(|e| e.t).collect();
    // start_timeout + backoff: 0.5 + 0.4, then 0.5 + 0.8 s (plus the stop).
    // The child records its start after Python's own start-up, whose
    // jitter on a busy machine is allowed for in the lower bounds.
    let gaps = [t[1] - t[0], t[2] - t[1]];
    if gaps[0] < 0.65 || gaps[1] < 1.05 || gaps[1] - gaps[0] < 0.15 {
        env.fail(format!(
            "gaps {gaps:.3?}: want about 0.9 s then 1.3 s (start_timeout + doubling backoff)"
        ));
    }
    let log = std::fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default();
    if !log.contains("not ready within start_timeout") {
        env.fail("supervisor.log does not say why the child was stopped");
    }
}

#[test]
fn a_frozen_http_child_is_stopped_and_restarted_without_refusing_clients() {
    let env = Setup::new("http_health.py")
        .set("health", "http", "/healthz")
        .set("health", "interval", "200ms")
        .set("health", "timeout", "300ms")
        .raw("health", "failures", "2")
        .build();
    let _sup = env.spawn();
    let first = env.wait_value("running and ready", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running")
            .then(|| v["child"]["pid"].as_i64())
            .flatten()
    });
    std::fs::write(env.path("freeze"), "").unwrap();
    env.wait_for("the child froze", DEADLINE, || {
        !env.events_of("frozen").is_empty()
    });
    let frozen_at = std::time::Instant::now();

    // A client during the freeze and the restart: accepted into the
    // backlog, answered by the next child; never refused.
    let addr = env.addr();
    let client = std::thread::spawn(move || request(addr, Duration::from_secs(20)));
    let second = env.wait_value("a new ready child", DEADLINE, || {
        let (_, v) = env.status_json();
        let pid = v["child"]["pid"].as_i64()?;
        (v["state"] == "running" && pid != first).then_some(pid)
    });
    let took = frozen_at.elapsed();
    // interval * failures + timeout, plus the stop and a new start.
    if took > Duration::from_secs(6) {
        env.fail(format!("the freeze took {took:?} to detect and repair"));
    }
    if env.events_of("term").is_empty() {
        env.fail("the frozen child was not stopped gracefully (no SIGTERM recorded)");
    }
    match client.join().expect("client thread") {
        Ok(reply) if reply.contains(&second.to_string()) => {}
        other => env.fail(format!(
            "the client waiting through the restart got {other:?}"
        )),
    }
}

#[test]
fn a_child_that_stops_pinging_is_restarted_after_the_watchdog() {
    let env = Setup::new("notify.py")
        .arg("watchdog")
        .arg("4")
        .raw("health", "notify", "true")
        .set("health", "watchdog", "400ms")
        .restart("initial_backoff", "100ms")
        .build();
    let _sup = env.spawn();
    env.wait_for("a second start", DEADLINE, || {
        env.events_of("start").len() >= 2
    });
    let starts = env.events_of("start");
    if starts[0].extra.first().map(String::as_str) != Some("400000") {
        env.fail(format!("WATCHDOG_USEC should be 400000: {:?}", starts[0]));
    }
    let frozen = env.events_of("frozen");
    let Some(frozen) = frozen.first() else {
        env.fail("restarted before the child stopped pinging");
    };
    let gap = starts[1].t - frozen.t;
    if !(0.0..5.0).contains(&gap) {
        env.fail(format!("restart {gap:.3}s after the pings stopped"));
    }
    let log = std::fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default();
    if !log.contains("no WATCHDOG=1 within") {
        env.fail("supervisor.log does not say the watchdog fired");
    }
}

/// README "[health]": as under systemd, one missed watchdog ping restarts
/// the child; `failures = 3` does not make it three. The child pings every
/// 0.5 s (WATCHDOG_USEC/4) and then stops; its last ping was 0.5 s before
/// its `frozen` event, so the stop signal is due 1.5 s after `frozen` (three
/// misses would be 5.5 s).
#[test]
fn one_missed_watchdog_ping_restarts_although_failures_is_3() {
    let env = Setup::new("notify.py")
        .arg("watchdog")
        .arg("3")
        .raw("health", "notify", "true")
        .set("health", "watchdog", "2s")
        .raw("health", "failures", "3")
        .restart("initial_backoff", "100ms")
        .build();
    let _sup = env.spawn();
    env.wait_for("the child stopped after its pings ended", DEADLINE, || {
        !env.events_of("term").is_empty()
    });
    let frozen = env.events_of("frozen");
    let Some(frozen) = frozen.first() else {
        env.fail("stopped before the child stopped pinging");
    };
    let term = &env.events_of("term")[0];
    let gap = term.t - frozen.t;
    if !(1.0..4.0).contains(&gap) {
        env.fail(format!(
            "stop signal {gap:.3}s after the pings stopped; expected about 1.5s (one missed 2s ping)"
        ));
    }
    let log = std::fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default();
    let unhealthy: Vec<&str> = log.lines().filter(|l| l.contains("is unhealthy")).collect();
    if unhealthy.len() != 1
        || !unhealthy[0].contains("no WATCHDOG=1 within 2s (one missed ping is a failure)")
    {
        env.fail(format!("supervisor.log should say it once: {unhealthy:?}"));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn notify_messages_from_outside_the_childs_group_are_ignored() {
    let env = Setup::new("notify.py")
        .arg("never")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "1h")
        .build();
    let _sup = env.spawn();
    env.wait_for("the child started", DEADLINE, || {
        !env.events_of("start").is_empty()
    });
    let socket = env.wait_value(
        "the notify socket in the child's environment",
        DEADLINE,
        || environ_var(env.child_pid()?, "NOTIFY_SOCKET"),
    );
    // A socket file (root, the test, may send to it), not in the group.
    let stranger = std::os::unix::net::UnixDatagram::unbound().unwrap();
    stranger
        .send_to(b"READY=1", &socket)
        .expect("send to the notify socket");
    let log = env.log_dir.join("supervisor.log");
    env.wait_for("the supervisor logged the refusal", DEADLINE, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ignored a notify message")
    });
    let (code, v) = env.status_json();
    if code != 1 || v["state"] != "starting" {
        env.fail(format!("a stranger's READY=1 counted: {code} {v:#}"));
    }
}

/// Kills the supervisor it holds (by pid) when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn under_systemd_the_supervisor_says_ready_once_its_child_is() {
    let env = Setup::new("notify.py")
        .arg("ready")
        .arg("0.5")
        .raw("health", "notify", "true")
        .build();
    // Play systemd: a datagram socket named by NOTIFY_SOCKET.
    let manager_path = env.path("systemd-notify.sock");
    let manager = std::os::unix::net::UnixDatagram::bind(&manager_path).unwrap();
    manager.set_read_timeout(Some(DEADLINE)).unwrap();
    let sup = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&env.config)
        .arg("run")
        .env("NOTIFY_SOCKET", &manager_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the supervisor");
    let sup = KillOnDrop(sup);
    let mut buf = [0u8; 512];
    let n = manager
        .recv(&mut buf)
        .expect("a message from the supervisor");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    if !msg.lines().any(|l| l == "READY=1") {
        env.fail(format!("first message to systemd is not READY=1: {msg:?}"));
    }
    if env.events_of("ready").is_empty() {
        env.fail("the supervisor said READY=1 before its child did");
    }
    let (code, v) = env.status_json();
    if code != 0 || v["state"] != "running" {
        env.fail(format!("after READY=1 want running / 0, got {code}: {v:#}"));
    }
    // The child must not inherit the supervisor's NOTIFY_SOCKET.
    let pid = env.child_pid().expect("child pid");
    let theirs = environ_var(pid, "NOTIFY_SOCKET");
    // The supervisor's own socket is a file of its own, never the
    // manager's.
    let own = |s: &str| !s.starts_with('@') && std::path::Path::new(s) != manager_path;
    if theirs.as_deref().is_none_or(|s| !own(s)) {
        env.fail(format!(
            "the child's NOTIFY_SOCKET should be the supervisor's own: {theirs:?}"
        ));
    }
    // A clean stop says STOPPING=1.
    let _ = env.cli(&["stop"]);
    let n = manager.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
    drop(sup);
}
