//! `[alerts]` (issue 13): the command runs once per event with the
//! `SUPERVISOR_*` environment, one at a time, bounded, and never holds the
//! supervisor up. Nothing here touches the network: the hook records its
//! environment into `<dir>/alerts.log`, one JSON object a run.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// A hook that appends its SUPERVISOR_* environment as one JSON line, then
/// runs `extra` (python) if given.
fn recording_hook(env: &Env, extra: &str) -> String {
    let path = env.path("hook.py");
    fs::write(
        &path,
        format!(
            "#!{py}\n\
             import json, os, sys, time\n\
             vars = {{k: v for k, v in os.environ.items() if k.startswith('SUPERVISOR_')}}\n\
             vars['pid'] = os.getpid()\n\
             vars['pgid'] = os.getpgrp()\n\
             with open({log:?}, 'a') as f:\n\
             \x20   f.write(json.dumps(vars) + '\\n')\n\
             {extra}\n",
            py = python(),
            log = env.path("alerts.log").to_string_lossy(),
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

/// The alerts recorded so far.
fn alerts(env: &Env) -> Vec<Value> {
    fs::read_to_string(env.path("alerts.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_kind(env: &Env, kind: &str) -> Vec<Value> {
    alerts(env)
        .into_iter()
        .filter(|a| a["SUPERVISOR_EVENT"] == kind)
        .collect()
}

fn supervisor_log(env: &Env) -> String {
    fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default()
}

/// Adds `[alerts]` to the config: `command = [hook]` and the given keys
/// (raw TOML values).
fn add_alerts(env: &mut Env, hook: &str, keys: &[(&str, &str)]) {
    let mut text = format!("{}\n[alerts]\ncommand = [{hook:?}]\n", env.config_text);
    for (k, v) in keys {
        text += &format!("{k} = {v}\n");
    }
    fs::write(&env.config, &text).unwrap();
    env.config_text = text;
}

#[test]
fn a_crash_loop_is_told_once_with_its_streak_and_exit_code() {
    let mut env = Setup::new("crash.py").build();
    let hook = recording_hook(&env, "");
    add_alerts(
        &mut env,
        &hook,
        &[("crash_loop_after", "3"), ("min_interval", "\"1h\"")],
    );
    let _sup = env.spawn();
    env.wait_for("a crash-loop alert", DEADLINE, || {
        !of_kind(&env, "crash-loop").is_empty()
    });
    env.wait_for("three more starts", DEADLINE, || {
        env.events_of("start").len() >= 7
    });
    let loops = of_kind(&env, "crash-loop");
    if loops.len() != 1 {
        env.fail(format!(
            "want one crash-loop alert within min_interval: {loops:#?}"
        ));
    }
    let a = &loops[0];
    let streak: u32 = a["SUPERVISOR_STREAK"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    if streak < 3 || a["SUPERVISOR_EXIT_CODE"] != "1" || a["SUPERVISOR_SUPPRESSED"] != "0" {
        env.fail(format!(
            "want streak >= 3, exit code 1, nothing suppressed: {a:#}"
        ));
    }
    for key in [
        "SUPERVISOR_MESSAGE",
        "SUPERVISOR_CONFIG",
        "SUPERVISOR_PID",
        "SUPERVISOR_CHILD_PID",
        "SUPERVISOR_EXIT_SIGNAL",
        "SUPERVISOR_RESTARTS",
        "SUPERVISOR_PORT_HOLDER_PID",
        "SUPERVISOR_PORT_HOLDER_COMMAND",
        "SUPERVISOR_LOG_DIR",
    ] {
        if a.get(key).is_none() {
            env.fail(format!("the hook's environment lacks {key}: {a:#}"));
        }
    }
    if !a["SUPERVISOR_MESSAGE"]
        .as_str()
        .is_some_and(|m| m.contains("crash loop") && m.contains("exited with code 1"))
    {
        env.fail(format!("an unhelpful message: {a:#}"));
    }
    // Its own process group, not ours.
    if a["pgid"] != a["pid"] {
        env.fail(format!(
            "the hook did not run in its own process group: {a:#}"
        ));
    }
    let v = env.status_json().1;
    if v["alerts"]["last_event"] != "crash-loop" || !v["alerts"]["last_at"].is_string() {
        env.fail(format!("status does not show the last alert: {v:#}"));
    }
}

#[test]
fn alerts_held_back_by_min_interval_are_counted_in_the_next() {
    let mut env = Setup::new("crash.py")
        .restart("initial_backoff", "50ms")
        .restart("max_backoff", "100ms")
        .build();
    let hook = recording_hook(&env, "");
    add_alerts(
        &mut env,
        &hook,
        &[("crash_loop_after", "2"), ("min_interval", "\"2s\"")],
    );
    let _sup = env.spawn();
    env.wait_for("a second crash-loop alert", DEADLINE, || {
        of_kind(&env, "crash-loop").len() >= 2
    });
    let loops = of_kind(&env, "crash-loop");
    let held: u32 = loops[1]["SUPERVISOR_SUPPRESSED"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    if held == 0 || loops[0]["SUPERVISOR_SUPPRESSED"] != "0" {
        env.fail(format!(
            "want the second alert to count the held-back ones: {loops:#?}"
        ));
    }
}

#[test]
fn a_busy_port_is_told_with_its_holder_then_recovery() {
    let mut env = Setup::new("serve.py").restart("reset_after", "1s").build();
    let hook = recording_hook(&env, "");
    add_alerts(&mut env, &hook, &[("port_busy_after", "\"1s\"")]);
    let squatter = std::net::TcpListener::bind(env.addr()).expect("squat the port");
    let me = std::process::id().to_string();
    let sup = env.spawn();
    env.wait_for("a port-busy alert", DEADLINE, || {
        !of_kind(&env, "port-busy").is_empty()
    });
    let busy = &of_kind(&env, "port-busy")[0];
    if busy["SUPERVISOR_PORT_HOLDER_PID"] != me.as_str()
        || busy["SUPERVISOR_PORT_HOLDER_COMMAND"]
            .as_str()
            .is_none_or(|c| c.is_empty())
    {
        env.fail(format!(
            "the alert should name the holder (pid {me}): {busy:#}"
        ));
    }
    // Told once, the rule has nothing more to decide for this wait: the
    // supervisor goes back to sleep between its bind retries. A loop that
    // kept waking for the passed deadline would use a core; measured over
    // a window rather than waited for, so the bound is loose.
    let pid = sup.pid();
    let before = cpu_time(pid).expect("the supervisor's CPU time");
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_time(pid).expect("the supervisor's CPU time") - before;
    if used > window.elapsed() / 4 {
        env.fail(format!(
            "the supervisor used {used:?} of CPU in {:?} while the port stayed busy",
            window.elapsed()
        ));
    }
    drop(squatter);
    env.wait_child(&[]);
    env.wait_for("a recovered alert", DEADLINE, || {
        !of_kind(&env, "recovered").is_empty()
    });
    if of_kind(&env, "port-busy").len() != 1 || of_kind(&env, "recovered").len() != 1 {
        env.fail(format!(
            "want one port-busy and one recovered: {:#?}",
            alerts(&env)
        ));
    }
}

#[test]
fn a_liveness_failure_of_a_ready_child_is_unhealthy() {
    let mut env = Setup::new("http_health.py")
        .set("health", "http", "/healthz")
        .set("health", "interval", "200ms")
        .set("health", "timeout", "300ms")
        .raw("health", "failures", "2")
        .build();
    let hook = recording_hook(&env, "");
    add_alerts(&mut env, &hook, &[]);
    let _sup = env.spawn();
    env.wait_state("running");
    fs::write(env.path("freeze"), "").unwrap();
    env.wait_for("an unhealthy alert", DEADLINE, || {
        !of_kind(&env, "unhealthy").is_empty()
    });
    let a = &of_kind(&env, "unhealthy")[0];
    if !a["SUPERVISOR_MESSAGE"]
        .as_str()
        .is_some_and(|m| m.contains("health probes"))
    {
        env.fail(format!("the message should say why: {a:#}"));
    }
}

#[test]
fn a_hook_that_hangs_is_killed_and_holds_nothing_up() {
    let mut env = Setup::new("crash.py")
        .restart("initial_backoff", "200ms")
        .restart("max_backoff", "200ms")
        .build();
    // It records itself, then hangs with a child of its own.
    let hook = recording_hook(
        &env,
        "import subprocess\nsubprocess.Popen(['sleep', '300'])\ntime.sleep(300)",
    );
    add_alerts(
        &mut env,
        &hook,
        &[
            ("events", "[\"exit\"]"),
            ("timeout", "\"1s\""),
            ("min_interval", "\"1ms\""),
        ],
    );
    let sup = env.spawn();
    env.wait_for("the hook started", DEADLINE, || !alerts(&env).is_empty());
    let hook_pgid = alerts(&env)[0]["pgid"].as_i64().unwrap_or(0) as i32;
    env.wait_for("the hook's group killed", DEADLINE, || {
        !pgid_alive(hook_pgid)
    });
    env.wait_for("it said so", DEADLINE, || {
        supervisor_log(&env).contains("killed after the 1s timeout")
    });
    // Restarts kept their 200 ms pace while the hook hung.
    env.wait_for("several starts", DEADLINE, || {
        env.events_of("start").len() >= 6
    });
    let starts: Vec<f64> = env.events_of("start").iter().map(|e| e.t).collect();
    let slowest = starts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    if slowest > 0.2 + 1.5 {
        env.fail(format!(
            "a hanging hook delayed a restart: gaps up to {slowest:.2}s"
        ));
    }
    // `stop` does not wait longer than the hook's timeout.
    let started = Instant::now();
    let out = env.cli(&["stop"]);
    if out.code != Some(0) || started.elapsed() > secs(1.0 + 5.0) {
        env.fail(format!("stop took {:?}\n{out}", started.elapsed()));
    }
    sup.wait_exit(DEADLINE);
    for a in alerts(&env) {
        let pgid = a["pgid"].as_i64().unwrap_or(0) as i32;
        if pgid_alive(pgid) {
            env.fail(format!("hook group {pgid} outlived the supervisor"));
        }
    }
}

#[test]
fn a_missing_or_broken_hook_is_logged_and_changes_nothing() {
    for (case, hook) in [
        ("missing", "/nonexistent/alert-hook"),
        ("not executable", ""),
    ] {
        let mut env = Setup::new("crash.py")
            .restart("initial_backoff", "100ms")
            .restart("max_backoff", "100ms")
            .build();
        let hook = if hook.is_empty() {
            let p = env.path("not-executable.sh");
            fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            p.to_string_lossy().into_owned()
        } else {
            hook.to_owned()
        };
        add_alerts(
            &mut env,
            &hook,
            &[("events", "[\"exit\"]"), ("min_interval", "\"1ms\"")],
        );
        // check-config warns, and does not refuse.
        let out = env.cli(&["check-config"]);
        if out.code != Some(0) || !out.stderr.contains("warning") {
            env.fail(format!(
                "{case}: check-config should warn about the hook\n{out}"
            ));
        }
        let _sup = env.spawn();
        env.wait_for("several restarts", DEADLINE, || {
            env.events_of("start").len() >= 5
        });
        let log = supervisor_log(&env);
        let complaints = log.matches("cannot start").count();
        if complaints == 0 {
            env.fail(format!("{case}: the failing hook is not logged"));
        }
        let v = env.wait_value("the result in status", DEADLINE, || {
            let v = env.status_json().1;
            v["alerts"]["last_result"]
                .as_str()
                .is_some_and(|r| r.contains("could not start"))
                .then_some(v)
        });
        let _ = v;
    }
}

#[test]
fn a_hook_printing_megabytes_does_not_grow_the_log_past_its_caps() {
    let mut env = Setup::new("crash.py")
        .set("log", "max_bytes", "64KiB")
        .raw("log", "max_files", "2")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "100ms")
        .build();
    let hook = recording_hook(
        &env,
        "sys.stdout.write(('x' * 99 + '\\n') * 100_000)\nsys.stdout.flush()",
    );
    add_alerts(
        &mut env,
        &hook,
        &[("events", "[\"exit\"]"), ("min_interval", "\"1ms\"")],
    );
    let _sup = env.spawn();
    env.wait_for("three hook runs", DEADLINE, || alerts(&env).len() >= 3);
    env.wait_for("the third run ended", DEADLINE, || {
        supervisor_log(&env)
            .matches("alert command for exit exited")
            .count()
            >= 2
    });
    let total: u64 = fs::read_dir(&env.log_dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("supervisor.log")
        })
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    if total > 3 * 64 * 1024 {
        env.fail(format!(
            "supervisor.log and its rotations hold {total} bytes"
        ));
    }
    if !supervisor_log(&env).contains("more bytes of output not logged") {
        env.fail("the dropped output is not counted");
    }
}

#[test]
fn a_respawned_supervisor_continues_the_streak_without_alerting_again() {
    let mut env = Setup::new("crash.py")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "300ms")
        .restart("reset_after", "30s")
        .build();
    let hook = recording_hook(&env, "");
    add_alerts(
        &mut env,
        &hook,
        &[("crash_loop_after", "3"), ("min_interval", "\"1h\"")],
    );
    let sup = env.spawn();
    env.wait_for("a crash-loop alert", DEADLINE, || {
        !of_kind(&env, "crash-loop").is_empty()
    });
    let streak_before = env.status_json().1["child"]["crash_streak"]
        .as_u64()
        .unwrap_or(0);
    sup.kill9();
    let starts = env.events_of("start").len();
    let _sup2 = env.spawn();
    env.wait_for("three more starts", DEADLINE, || {
        env.events_of("start").len() >= starts + 3
    });
    let v = env.status_json().1;
    let streak = v["child"]["crash_streak"].as_u64().unwrap_or(0);
    if streak <= streak_before {
        env.fail(format!(
            "the streak restarted: {streak_before} then {streak}: {v:#}"
        ));
    }
    if of_kind(&env, "crash-loop").len() != 1 {
        env.fail(format!("a respawn alerted again: {:#?}", alerts(&env)));
    }
}

#[test]
fn without_alerts_the_status_has_none() {
    let env = Setup::new("serve.py").build();
    let _sup = env.spawn();
    env.wait_state("running");
    let v = env.status_json().1;
    if v.get("alerts").is_some_and(|a| !a.is_null()) {
        env.fail(format!("alerts shown without [alerts]: {v:#}"));
    }
    let _ = Duration::ZERO;
}
