//! One instance per config: a losing copy changes nothing, a crowd of
//! copies leaves exactly one supervisor and one child, and `status` never
//! makes a starting supervisor lose.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The numbers in a text, as separate tokens.
fn numbers(s: &str) -> Vec<i64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[test]
fn losing_copy_exits_zero_fast_and_changes_no_file() {
    let env = Setup::new("serve.py").build();
    let first = env.spawn();
    let child = env.wait_child(&[]);
    let before = snapshot(&[&env.state_dir, &env.log_dir]);

    let t0 = Instant::now();
    let second = env.spawn();
    let st = second.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    let after = snapshot(&[&env.state_dir, &env.log_dir]);

    if st.code() != Some(0) {
        env.fail(format!("the losing copy exited with {st}, want 0"));
    }
    if took > Duration::from_secs(5) {
        env.fail(format!("the losing copy took {took:?} to exit"));
    }
    if !second.stdout().is_empty() {
        env.fail("the losing copy wrote to stdout");
    }
    let err = second.stderr();
    let lines: Vec<&str> = err.lines().collect();
    if lines.len() != 1 || !numbers(lines[0]).contains(&(first.pid() as i64)) {
        env.fail(format!(
            "want exactly one stderr line naming pid {}, got {} lines: {err:?}",
            first.pid(),
            lines.len()
        ));
    }
    let diff = snapshot_diff(&before, &after);
    if !diff.is_empty() {
        env.fail(format!("the losing copy changed files:\n{diff}"));
    }
    let (code, v) = env.status_json();
    if code != 0 || v["child"]["pid"].as_i64() != Some(child as i64) || !pid_alive(child) {
        env.fail(format!(
            "the first child {child} should still run (status exit {code})"
        ));
    }
    if first.exited().is_some() {
        env.fail("the first supervisor exited");
    }
}

/// The losing copy looks at nothing but the folders and the lock: a
/// config edited since the first copy started (here: a child folder that
/// is gone, which the holder of the lock would refuse with 78) is not
/// checked, and no warning is printed.
#[test]
fn losing_copy_checks_only_the_lock() {
    let env = Setup::new("serve.py").build();
    let first = env.spawn();
    env.wait_child(&[]);
    let edited = env.path("edited.toml");
    let text = env
        .config_text
        .replacen("[child]\n", "[child]\ncwd = \"no-such-folder\"\n", 1);
    std::fs::write(&edited, text).unwrap();
    let out = env.cli_with(&edited, &["run"], DEADLINE);
    let lines: Vec<&str> = out.stderr.lines().collect();
    if out.code != Some(0) || lines.len() != 1 || !numbers(lines[0]).contains(&(first.pid() as i64))
    {
        env.fail(format!(
            "want exit 0 and one line naming pid {} from a losing copy\n{out}",
            first.pid()
        ));
    }
    // The same file is refused by the copy that holds the lock.
    let check = env.cli_with(&edited, &["check-config"], DEADLINE);
    if check.code != Some(78) || !check.stderr.contains("child.cwd") {
        env.fail(format!(
            "check-config should refuse the edited file\n{check}"
        ));
    }
}

#[test]
fn thirty_copies_at_once_leave_one_supervisor_and_one_child() {
    let env = Setup::new("serve.py").build();
    let sups: Vec<Supervisor> = (0..30).map(|_| env.spawn()).collect();
    env.wait_for("29 of the 30 copies to exit", DEADLINE, || {
        sups.iter().filter(|s| s.exited().is_some()).count() >= 29
    });
    let alive: Vec<&Supervisor> = sups.iter().filter(|s| s.exited().is_none()).collect();
    if alive.len() != 1 {
        env.fail(format!("{} copies still run, want 1", alive.len()));
    }
    let winner = alive[0];
    for s in sups.iter().filter(|s| s.exited().is_some()) {
        let st = s.exited().unwrap();
        let err = s.stderr();
        if st.code() != Some(0) {
            env.fail(format!("copy pid {} exited with {st}: {err}", s.pid()));
        }
        let lines: Vec<&str> = err.lines().collect();
        if lines.len() != 1 || !numbers(lines[0]).contains(&(winner.pid() as i64)) {
            env.fail(format!(
                "copy pid {} should print one line naming pid {}, printed {err:?}",
                s.pid(),
                winner.pid()
            ));
        }
        if !s.stdout().is_empty() {
            env.fail(format!("copy pid {} wrote to stdout", s.pid()));
        }
    }

    let child = env.wait_child(&[]);
    let (_, v) = env.status_json();
    if v["supervisor"]["pid"].as_i64() != Some(winner.pid() as i64) {
        env.fail(format!(
            "status names another supervisor than pid {}",
            winner.pid()
        ));
    }
    let pidfile = std::fs::read_to_string(env.state_dir.join("supervisor.pid")).unwrap_or_default();
    if pidfile != format!("{}\n", winner.pid()) {
        env.fail(format!(
            "supervisor.pid holds {pidfile:?}, want \"{}\\n\"",
            winner.pid()
        ));
    }
    let group = group_members(child);
    if group != vec![child] {
        env.fail(format!(
            "process group {child} has {group:?}, want only the child"
        ));
    }
    let running = env.child_processes();
    if running != vec![child] {
        env.fail(format!(
            "processes running the child script: {running:?}, want [{child}]"
        ));
    }
    if winner.exited().is_some() {
        env.fail("the winner exited");
    }
}

#[test]
fn status_polled_in_a_tight_loop_never_makes_a_start_lose() {
    let env = Setup::new("serve.py").build();
    let stop = AtomicBool::new(false);
    let bad: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let polls = Mutex::new(0u64);

    thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let out = env.status_raw();
                *polls.lock().unwrap() += 1;
                let json_ok = serde_json::from_str::<serde_json::Value>(&out.stdout)
                    .map(|v| v.is_object())
                    .unwrap_or(false);
                if !matches!(out.code, Some(0 | 1 | 3)) || !json_ok {
                    bad.lock().unwrap().push(out.to_string());
                }
            }
        });

        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for round in 0..15 {
                let sup = env.spawn();
                env.wait_for(
                    &format!("round {round}: run reaches running"),
                    DEADLINE,
                    || {
                        if let Some(st) = sup.exited() {
                            env.fail(format!(
                                "round {round}: run exited early with {st}: {}",
                                sup.stderr()
                            ));
                        }
                        let (_, v) = env.status_json();
                        v["state"] == "running"
                            && v["supervisor"]["pid"].as_i64() == Some(sup.pid() as i64)
                    },
                );
                let out = env.cli(&["stop"]);
                if out.code != Some(0) {
                    env.fail(format!("round {round}: stop failed\n{out}"));
                }
                let st = sup.wait_exit(DEADLINE);
                let err = sup.stderr();
                if st.code() != Some(0) || err.contains("already running") {
                    env.fail(format!("round {round}: run exited with {st}: {err}"));
                }
            }
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    });

    let bad = bad.into_inner().unwrap();
    let polls = polls.into_inner().unwrap();
    if !bad.is_empty() {
        env.fail(format!(
            "{} of {polls} status calls had a bad exit code or invalid JSON; first:\n{}",
            bad.len(),
            bad[..bad.len().min(5)].join("\n")
        ));
    }
    if polls < 15 {
        env.fail(format!("only {polls} status calls ran"));
    }
    eprintln!("status polls: {polls}");
}
