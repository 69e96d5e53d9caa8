//! `restarting` and a reload during a restart (issue 25 item 8): while a
//! requested restart stops the old child and starts the new one, `status`
//! says `restarting` (not `stopping`: the supervisor is not exiting), and a
//! `reload` that arrives meanwhile waits for the restart (bounded by the
//! stop budget) instead of failing.

mod common;

use common::*;
use std::thread;

fn expect_code(env: &Env, out: &Out, code: i32) {
    if out.code != Some(code) {
        env.fail(format!("want exit {code}\n{out}"));
    }
}

#[test]
fn status_says_restarting_while_a_requested_restart_stops_the_child() {
    // The child ignores SIGTERM: the stop lasts stop_timeout (3 s).
    let env = Setup::new("stubborn.py").build();
    let sup = env.spawn();
    let first = env.wait_child(&[]);
    expect_code(&env, &env.cli(&["restart", "--no-wait"]), 0);
    let (code, v) = env.wait_value("state restarting", DEADLINE, || {
        let (code, v) = env.status_json();
        (v["state"] == "restarting").then_some((code, v))
    });
    if code != 1 || v["supervisor"]["pid"] != sup.pid() {
        env.fail(format!("status while restarting: {code} {v}"));
    }
    // A reload now waits for the restart, then reloads.
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 0);
    let second = env.wait_child(&[first]);
    let (_, v) = env.status_json();
    if v["supervisor"]["reloads"] != 1 || v["child"]["pid"] != second {
        env.fail(format!("after the reload: {v}"));
    }
}

#[test]
fn restart_then_reload_back_to_back_both_succeed() {
    let env = Setup::new("serve.py").build();
    let _sup = env.spawn();
    let mut child = env.wait_child(&[]);
    for round in 0..3 {
        for restart in [&["restart"][..], &["restart", "--no-wait"]] {
            expect_code(&env, &env.cli(restart), 0);
            let out = env.cli(&["reload"]);
            if out.code != Some(0) || out.stderr.contains("stopping") {
                env.fail(format!("round {round}: {restart:?} then reload\n{out}"));
            }
            child = env.wait_child(&[child]);
        }
    }
}

#[test]
fn no_reload_fails_in_a_race_of_restarts_and_reloads() {
    let env = Setup::new("serve.py").build();
    let _sup = env.spawn();
    env.wait_child(&[]);
    let outs: Vec<Out> = thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let env = &env;
                s.spawn(move || match i % 3 {
                    0 => env.cli(&["restart", "--no-wait"]),
                    1 => env.cli(&["restart"]),
                    _ => env.cli(&["reload"]),
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        let reload = out.cmd.ends_with("reload");
        if (reload && out.code != Some(0)) || out.stderr.contains("stopping") {
            env.fail(format!("in the race:\n{out}"));
        }
    }
    env.wait_state("running");
}

/// A `restart` still waiting when a `reload` execs the new image finds its
/// answer there: the answers to restart requests are carried across (the
/// new image wrote an empty list, and such a `restart` waited out its
/// whole budget; seen once in CI in the race above).
#[test]
fn a_reload_keeps_the_answers_to_restart_requests() {
    let env = Setup::new("serve.py").build();
    let _sup = env.spawn();
    let first = env.wait_child(&[]);
    expect_code(&env, &env.cli(&["restart"]), 0);
    env.wait_child(&[first]);
    let answers = |env: &Env| {
        env.state()
            .map(|v| v["supervisor"]["restart_answers"].clone())
    };
    let before = answers(&env).unwrap_or_default();
    if before.as_array().is_none_or(|a| a.is_empty()) {
        env.fail(format!("no answer recorded for the restart: {before}"));
    }
    expect_code(&env, &env.cli(&["reload"]), 0);
    let after = answers(&env).unwrap_or_default();
    if after != before {
        env.fail(format!(
            "the reload lost the answers: {before} then {after}"
        ));
    }
}
