//! The incident replayed: a service that creates a "topic" at start-up
//! whenever its state file has no id. Duplicate starts, killed supervisors,
//! killed and crashing children: in the end there is exactly one topic, and
//! no child ever started while another lived.

mod common;

use common::*;
use std::time::Duration;

/// The current child, once it is past its start-up side effects.
fn ready_child(env: &Env, not: &[i32]) -> i32 {
    env.wait_value(
        &format!("a ready child other than {not:?}"),
        DEADLINE,
        || {
            let (_, v) = env.status_json();
            let pid = v["child"]["pid"].as_i64()? as i32;
            (v["state"] == "running"
                && !not.contains(&pid)
                && env.path(&format!("ready-{pid}")).exists())
            .then_some(pid)
        },
    )
}

#[test]
fn the_incident_replayed_creates_exactly_one_topic() {
    let env = Setup::new("topic.py")
        .env("CRASH_P", "0.3")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "500ms")
        .build();

    let rounds = 4;
    for round in 0..rounds {
        // Four copies at once: one wins, three lose with exit 0.
        let copies: Vec<Supervisor> = (0..4).map(|_| env.spawn()).collect();
        env.wait_for(
            &format!("round {round}: 3 of 4 copies exit"),
            DEADLINE,
            || copies.iter().filter(|s| s.exited().is_some()).count() >= 3,
        );
        let live: Vec<&Supervisor> = copies.iter().filter(|s| s.exited().is_none()).collect();
        if live.len() != 1 {
            env.fail(format!("round {round}: {} copies run, want 1", live.len()));
        }
        for s in copies.iter().filter(|s| s.exited().is_some()) {
            let st = s.exited().unwrap();
            if st.code() != Some(0) {
                env.fail(format!(
                    "round {round}: a losing copy exited with {st}: {}",
                    s.stderr()
                ));
            }
        }
        let sup = live[0];

        // Three children per round: each either crashes on its own or,
        // once it serves, is killed (the last one is left serving).
        let mut gone = Vec::new();
        for k in 0..3 {
            let child = ready_child(&env, &gone);
            let fate = env.wait_value(
                &format!("child {child} crashes or serves"),
                DEADLINE,
                || {
                    env.events()
                        .into_iter()
                        .find(|e| e.pid == child && (e.kind == "crash" || e.kind == "serving"))
                        .map(|e| e.kind)
                },
            );
            if fate == "serving" && k < 2 {
                kill(child, libc::SIGKILL);
            }
            gone.push(child);
        }

        if round + 1 < rounds {
            sup.kill9();
        } else {
            let out = env.cli(&["stop"]);
            if out.code != Some(0) {
                env.fail(format!("stop failed\n{out}"));
            }
            sup.wait_exit(DEADLINE);
        }
    }
    env.wait_for("no child left", Duration::from_secs(10), || {
        env.child_processes().is_empty()
    });

    let topics = std::fs::read_to_string(env.path("topics.txt")).unwrap_or_default();
    if topics.lines().count() != 1 {
        env.fail(format!("topics.txt should have one line:\n{topics}"));
    }
    let overlaps = overlapping_starts(&env);
    if !overlaps.is_empty() {
        env.fail(format!("children started next to live ones: {overlaps:?}"));
    }
    eprintln!(
        "children started: {}, crashed on their own: {}",
        env.events_of("start").len(),
        env.events_of("crash").len()
    );
}
