//! Restart timing, graceful stop, and a killed supervisor's child never
//! overlapping the next one.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn crash_loop_follows_the_backoff() {
    let env = Setup::new("crash.py")
        .restart("initial_backoff", "200ms")
        .restart("max_backoff", "800ms")
        .restart("reset_after", "5s")
        .build();
    let _sup = env.spawn();

    env.wait_for("5 child starts", DEADLINE, || {
        env.events_of("start").len() >= 5
    });
    let v = env.wait_value(
        "status backoff with next_restart_in_ms and last_exit.code 1",
        DEADLINE,
        || {
            let (code, v) = env.status_json();
            (v["state"] == "backoff").then_some((code, v))
        },
    );
    let (code, v) = v;
    if code != 1 || !v["next_restart_in_ms"].is_number() || v["child"]["last_exit"]["code"] != 1 {
        env.fail(format!(
            "during backoff want exit 1, next_restart_in_ms a number, child.last_exit.code 1; got exit {code}: {v:#}"
        ));
    }

    let starts: Vec<f64> = env.events_of("start").iter().map(|e| e.t).collect();
    let expected = [0.2, 0.4, 0.8, 0.8];
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).take(4).collect();
    for (i, (&gap, &want)) in gaps.iter().zip(&expected).enumerate() {
        // Never sooner than the backoff; later by however long a python
        // start takes on a loaded 2-core machine.
        if gap < 0.9 * want || gap > want + 1.5 {
            env.fail(format!(
                "gap {i} between starts is {gap:.3}s, want about {want}s (all gaps {gaps:.3?})"
            ));
        }
    }
    eprintln!("gaps between starts: {gaps:.3?}");
}

#[test]
fn a_child_that_lived_past_reset_after_restarts_at_once() {
    let env = Setup::new("crash.py")
        .arg("1.5")
        .restart("initial_backoff", "3s")
        .restart("max_backoff", "3s")
        .restart("reset_after", "1s")
        .build();
    let _sup = env.spawn();

    env.wait_for("a second start", DEADLINE, || {
        env.events_of("start").len() >= 2
    });
    let exit = env.events_of("exit")[0].t;
    let next = env.events_of("start")[1].t;
    let gap = next - exit;
    if !(0.0..0.7).contains(&gap) {
        env.fail(format!(
            "after a healthy run the next start came {gap:.3}s after the exit, want < 0.7s"
        ));
    }
}

#[test]
fn stop_command_stops_gracefully() {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let child = env.wait_child(&[]);

    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop failed\n{out}"));
    }
    let st = sup.wait_exit(DEADLINE);
    if st.code() != Some(0) {
        env.fail(format!("the supervisor exited with {st}, want 0"));
    }
    if !env.events_of("term").iter().any(|e| e.pid == child) {
        env.fail(format!("child {child} never saw SIGTERM"));
    }
    env.wait_for(&format!("child {child} gone"), DEADLINE, || {
        !pid_alive(child)
    });
    let (code, v) = env.status_json();
    if code != 3 || v["state"] != "not-running" {
        env.fail(format!(
            "status after stop: exit {code} {v}, want 3 not-running"
        ));
    }
}

#[test]
fn sigterm_kills_a_stubborn_child_and_its_grandchild_after_stop_timeout() {
    let env = Setup::new("stubborn.py")
        .child("stop_timeout", "1s")
        .build();
    let sup = env.spawn();

    let ready = env.wait_value("child and grandchild ready", DEADLINE, || {
        let ev = env.events_of("ready");
        let role = |r: &str| {
            ev.iter()
                .find(|e| e.extra.first().map(String::as_str) == Some(r))
                .map(|e| e.pid)
        };
        Some((role("child")?, role("grandchild")?))
    });
    let (child, grandchild) = ready;
    match proc_stat(grandchild) {
        Some((_, _, g)) if g == child => {}
        other => env.fail(format!(
            "grandchild {grandchild} should be in group {child}: {other:?}"
        )),
    }
    if env.child_pid() != Some(child) {
        env.fail(format!("status does not name child {child}"));
    }

    sup.signal(libc::SIGTERM);
    env.wait_for(
        "child and grandchild dead within stop_timeout + 5s",
        Duration::from_secs(6),
        || !pid_alive(child) && !pid_alive(grandchild),
    );
    let st = sup.wait_exit(DEADLINE);
    if st.code() != Some(0) {
        env.fail(format!(
            "the supervisor exited with {st} after SIGTERM, want 0"
        ));
    }
}

#[test]
fn a_killed_supervisors_child_is_gone_before_the_next_child_starts() {
    let env = Setup::new("overlap.py")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "500ms")
        .build();

    let mut sup = env.spawn();
    let mut old = env.wait_child(&[]);
    let mut seen = vec![old];
    for round in 0..2 {
        sup.kill9();
        sup = env.spawn();
        let new = env.wait_child(&seen);
        seen.push(new);

        if pid_alive(old) {
            env.fail(format!(
                "round {round}: old child {old} still alive next to {new}"
            ));
        }
        let start = env
            .events_of("start")
            .into_iter()
            .find(|e| e.pid == new)
            .unwrap();
        if start.extra.first().map(String::as_str) != Some("alive=") {
            env.fail(format!(
                "round {round}: child {new} started while earlier children lived: {:?}",
                start.extra
            ));
        }
        if let Some(exit) = env.events_of("exit").iter().find(|e| e.pid == old) {
            if start.t <= exit.t {
                env.fail(format!(
                    "round {round}: child {new} started at {} before child {old} exited at {}",
                    start.t, exit.t
                ));
            }
        }
        old = new;
    }
    let overlaps = overlapping_starts(&env);
    if !overlaps.is_empty() {
        env.fail(format!("children started next to live ones: {overlaps:?}"));
    }
}

#[test]
fn leftovers_in_the_group_are_killed_before_the_next_child_starts() {
    // The child exits and leaves a grandchild that ignores SIGTERM and
    // holds fd 3: it must get SIGKILL after stop_timeout, before a restart.
    let env = Setup::new("stubborn.py")
        .arg("leave")
        .child("stop_timeout", "1s")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "500ms")
        .build();
    let _sup = env.spawn();

    env.wait_for("a second child start", DEADLINE, || {
        env.events_of("start").len() >= 2
    });
    let first_grandchild = env.events_of("ready")[0].pid;
    let second = env.events_of("start")[1].pid;
    if pid_alive(first_grandchild) {
        env.fail(format!(
            "child {second} started while grandchild {first_grandchild} of the first child lives"
        ));
    }
    let overlaps = overlapping_starts(&env);
    if !overlaps.is_empty() {
        env.fail(format!("children started next to leftovers: {overlaps:?}"));
    }
}

#[test]
fn a_killed_supervisors_stubborn_leftovers_are_gone_before_the_next_child() {
    // PDEATHSIG (if any) is ignored by this child, and the grandchild never
    // gets it: the next supervisor must find both and stop them.
    let env = Setup::new("stubborn.py")
        .child("stop_timeout", "1s")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "500ms")
        .build();
    let sup = env.spawn();
    let ready = |not: &[i32]| {
        env.wait_value("a new child and its grandchild ready", DEADLINE, || {
            let ev = env.events_of("ready");
            let role = |r: &str| {
                ev.iter()
                    .find(|e| {
                        e.extra.first().map(String::as_str) == Some(r) && !not.contains(&e.pid)
                    })
                    .map(|e| e.pid)
            };
            Some((role("child")?, role("grandchild")?))
        })
    };
    let (child, grandchild) = ready(&[]);
    sup.kill9();
    let _sup2 = env.spawn();
    let (child2, _) = ready(&[child, grandchild]);
    if env.child_pid() != Some(child2) {
        env.fail(format!("status does not name the new child {child2}"));
    }
    if pid_alive(child) || pid_alive(grandchild) {
        env.fail(format!(
            "old child {child} or grandchild {grandchild} still alive next to {child2}"
        ));
    }
    let overlaps = overlapping_starts(&env);
    if !overlaps.is_empty() {
        env.fail(format!("children started next to leftovers: {overlaps:?}"));
    }
}

#[test]
fn a_supervisor_killed_while_stopping_leftovers_leaves_them_to_the_next() {
    // The child exits and leaves a stubborn grandchild; the supervisor is
    // SIGKILLed while it waits for it. The next supervisor must recognise
    // the leaderless group as its predecessor's (same boot, same session,
    // started after the child) and stop it before a new child starts.
    let env = Setup::new("stubborn.py")
        .arg("leave")
        .child("stop_timeout", "30s")
        .build();
    let sup = env.spawn();
    env.wait_for("the first child left its grandchild", DEADLINE, || {
        !env.events_of("exit").is_empty() && !env.events_of("ready").is_empty()
    });
    let grandchild = env.events_of("ready")[0].pid;
    env.wait_for("stopping the leftovers", DEADLINE, || {
        let (_, v) = env.status_json();
        v["state"] == "stopping" && v["child"]["pid"].is_null() && v["child"]["pgid"].is_i64()
    });
    sup.kill9();
    // stop_timeout (30 s) would let the grandchild live through the whole
    // test: a second SIGTERM makes the new supervisor SIGKILL at once.
    let sup2 = env.spawn();
    // While it stops them, its record has every key (issue 10).
    let v = env.wait_value("the new supervisor stopping them", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "stopping" && v["supervisor"]["pid"] == sup2.pid()).then_some(v)
    });
    for key in [
        "supervisor",
        "listen",
        "child",
        "next_restart_in_ms",
        "port_holder",
    ] {
        if v.get(key).is_none() {
            env.fail(format!(
                "status --json lacks `{key}` while stopping leftovers: {v:#}"
            ));
        }
    }
    env.wait_for("the new supervisor took over", DEADLINE, || {
        std::fs::read_to_string(env.log_dir.join("supervisor.log"))
            .unwrap_or_default()
            .contains("earlier supervisor's child is still alive")
    });
    // Signals do not queue: let the first be seen before the second.
    let log_says = |what: &str| {
        std::fs::read_to_string(env.log_dir.join("supervisor.log"))
            .unwrap_or_default()
            .contains(what)
    };
    sup2.signal(libc::SIGTERM);
    env.wait_for("the first SIGTERM seen", DEADLINE, || {
        log_says("SIGTERM: stopping")
    });
    sup2.signal(libc::SIGTERM);
    env.wait_for("the leftover grandchild is dead", DEADLINE, || {
        !pid_alive(grandchild)
    });
    let code = sup2.wait_exit(DEADLINE);
    if code.code() != Some(0) {
        env.fail(format!("the new supervisor exited {code}"));
    }
    if env.events_of("start").len() != 1 {
        env.fail("a second child started next to the leftovers");
    }
}
