//! A `stop` during a handover leaves nothing of either child: what the
//! second child forks on its way out is stopped too (its process group is
//! stopped as a group, as the serving child's is), not only the members
//! it had when the stop began.

mod common;

use common::*;
use std::fs;

#[test]
fn what_the_second_child_forks_while_stopping_is_stopped_too() {
    let env = Setup::new("forks_on_term.py")
        .arg("0.2")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "30s")
        .set("child", "stop_timeout", "1s")
        .raw("restart", "overlap", "true")
        .build();
    let sup = env.spawn();
    let old = env.wait_value("the first child ready", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running" && v["child"]["ready"] == true)
            .then(|| v["child"]["pid"].as_i64().map(|p| p as i32))
            .flatten()
    });
    // The new child takes its time: the stop comes while it starts.
    fs::write(env.path("next-ready"), "30").unwrap();
    let out = env.cli(&["restart", "--no-wait"]);
    if out.code != Some(0) {
        env.fail(format!("restart --no-wait failed:\n{out}"));
    }
    let new = env.wait_value("the new child started", DEADLINE, || {
        let (_, v) = env.status_json();
        let new = v["handover"]["new_pid"].as_i64()? as i32;
        // Its SIGTERM handler is in place once it says it started.
        env.events_of("start")
            .iter()
            .any(|e| e.pid == new)
            .then_some(new)
    });
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop failed:\n{out}"));
    }
    sup.wait_exit(DEADLINE);
    // Both children stopped, and each left a helper on its way out.
    let termed: Vec<i32> = env.events_of("term").iter().map(|e| e.pid).collect();
    if !termed.contains(&old) || !termed.contains(&new) {
        env.fail(format!(
            "both {old} and {new} should have had the stop signal: {termed:?}"
        ));
    }
    let helpers: Vec<i32> = env.events_of("helper").iter().map(|e| e.pid).collect();
    if helpers.len() != 2 {
        env.fail(format!("want one helper of each child: {helpers:?}"));
    }
    let alive: Vec<i32> = helpers.into_iter().filter(|p| pid_alive(*p)).collect();
    if !alive.is_empty() || !env.child_processes().is_empty() {
        env.fail(format!(
            "stop returned with helpers {alive:?} of the children alive (children left: {:?})",
            env.child_processes()
        ));
    }
}
