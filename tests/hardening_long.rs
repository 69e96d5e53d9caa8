//! Long runs don't leak (hardening issue, item 5).
//!
//! A child that exits at once is restarted hundreds of times with no
//! backoff: afterwards the supervisor holds the same descriptors, its
//! resident memory has grown by less than 1 MiB, and it leaves no zombie.
//! Bursts of 1,000 SIGHUP and 1,000 SIGUSR1: it keeps running, answers
//! `status`, leaks no descriptor, never forwards SIGHUP, and a child is
//! serving once the restarts settle. CI runs 2,000 restarts (a few seconds); the 10,000
//! restart version is `long_restarts_10000` (ignored; see
//! docs/hardening.md).

mod common;

use common::*;
use std::fs;
use std::time::{Duration, Instant};

/// The child: exits 0 at once, unless `<dir>/settle` exists; then it
/// stays (a `sleep` in its group), so the supervisor can be measured at
/// rest. The temp dir is `$0`, so the harness's cleanup finds it.
const CHILD: &str = "if [ -e \"$0/settle\" ]; then sleep 3600; fi; exit 0";

fn fd_count(pid: i32) -> (usize, Vec<String>) {
    let mut t = fd_targets(pid);
    t.sort();
    (t.len(), t)
}

fn zombies_of(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some(('Z', ppid, _)) if ppid == pid))
        .collect()
}

fn restarts(env: &Env) -> u64 {
    env.status_json().1["child"]["restarts"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until the supervisor is at rest: a child that stays (its
/// `sleep` started), state running.
fn settle(env: &Env) -> i32 {
    fs::write(env.path("settle"), "").unwrap();
    env.wait_value("a child that stays", DEADLINE, || {
        let (_, v) = env.status_json();
        let pid = v["child"]["pid"].as_i64()? as i32;
        let sleeping = group_members(pid).len() >= 2;
        (v["state"] == "running" && sleeping).then_some(pid)
    })
}

/// Lets the churn go on: no more settling, and the staying child killed.
fn churn(env: &Env, child: i32) {
    fs::remove_file(env.path("settle")).unwrap();
    kill_group(child, libc::SIGKILL);
}

fn restart_churn(n: u64) {
    let mut env = Setup::new("serve.py")
        .restart("initial_backoff", "1ms")
        .restart("max_backoff", "1ms")
        .restart("reset_after", "1h")
        .build();
    let dir = env.dir_s.clone();
    env.set_command(&["/bin/sh".into(), "-c".into(), CHILD.into(), dir]);
    let sup = env.spawn();
    let pid = sup.pid();

    // Warm up (first allocations, log files opened), then measure at rest.
    env.wait_for("50 restarts", DEADLINE, || restarts(&env) >= 50);
    let child = settle(&env);
    let (fds0, targets0) = fd_count(pid);
    let rss0 = rss_kib(pid);
    let r0 = restarts(&env);
    churn(&env, child);

    let t = Instant::now();
    let budget = DEADLINE + Duration::from_millis(n * 20);
    env.wait_for(&format!("{n} more restarts"), budget, || {
        restarts(&env) >= r0 + n
    });
    let took = t.elapsed();
    let child = settle(&env);
    let (fds1, targets1) = fd_count(pid);
    let rss1 = rss_kib(pid);
    let r1 = restarts(&env);
    let zombies = zombies_of(pid);

    eprintln!(
        "{} restarts in {took:.2?} ({:.2} ms each); fds {fds0} -> {fds1}; RSS {rss0} -> {rss1} KiB",
        r1 - r0,
        took.as_secs_f64() * 1000.0 / (r1 - r0) as f64
    );
    if fds1 != fds0 {
        env.fail(format!(
            "descriptors changed over {} restarts: {fds0} -> {fds1}\nbefore {targets0:?}\nafter  {targets1:?}",
            r1 - r0
        ));
    }
    if rss1 > rss0 + 1024 {
        env.fail(format!(
            "RSS grew by {} KiB over {} restarts",
            rss1 - rss0,
            r1 - r0
        ));
    }
    if !zombies.is_empty() {
        env.fail(format!("zombie children of the supervisor: {zombies:?}"));
    }
    if !pid_alive(child) {
        env.fail("the staying child is gone");
    }
    let out = env.cli(&["stop"]);
    if out.code != Some(0) || sup.wait_exit(DEADLINE).code() != Some(0) {
        env.fail(format!("stop failed\n{out}"));
    }
    if !group_members(child).is_empty() {
        env.fail("the child's group outlived the stop");
    }
}

#[test]
fn restarts_2000_leak_nothing() {
    // About 2 ms a restart: 2,000 take a few seconds.
    restart_churn(2000);
}

#[test]
#[ignore = "long: 10,000 restarts (a few minutes)"]
fn long_restarts_10000() {
    restart_churn(10_000);
}

fn signal_storm(n: usize) {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let pid = sup.pid();
    let child = env.wait_child(&[]);
    let (fds0, targets0) = fd_count(pid);

    // SIGHUP: logs reopened each time, never forwarded, no descriptor kept.
    let t = Instant::now();
    for _ in 0..n {
        kill(pid, libc::SIGHUP);
    }
    let (code, v) = env.status_json();
    if sup.exited().is_some() || v["supervisor"]["pid"] != pid {
        env.fail(format!("after {n} SIGHUP: status {code} {v}"));
    }
    // Every SIGHUP handled: the log says so at least once after the burst,
    // and the child still serves.
    match request(env.addr(), Duration::from_secs(10)) {
        Ok(r) if r.trim() == child.to_string() => {}
        other => env.fail(format!(
            "after {n} SIGHUP the child {child} does not serve: {other:?}"
        )),
    }
    env.wait_for("SIGHUP logged", DEADLINE, || {
        fs::read_to_string(env.log_dir.join("supervisor.log"))
            .unwrap_or_default()
            .contains("SIGHUP: log files reopened")
    });
    if !env.events_of("hup").is_empty() {
        env.fail("SIGHUP was forwarded to the child");
    }
    let (fds1, targets1) = fd_count(pid);
    if fds1 != fds0 {
        env.fail(format!(
            "descriptors after {n} SIGHUP: {fds0} -> {fds1}\nbefore {targets0:?}\nafter  {targets1:?}"
        ));
    }

    // SIGUSR1 (and SIGHUP mixed in): restarts, coalesced or not.
    for _ in 0..n {
        kill(pid, libc::SIGUSR1);
        kill(pid, libc::SIGHUP);
    }
    let burst = t.elapsed();
    let (code, v) = env.status_json();
    if sup.exited().is_some() || !matches!(code, 0 | 1) {
        env.fail(format!("after {n} SIGUSR1: status {code} {v}"));
    }
    // Settled: running, a new child serving, and it stays for a moment.
    let last = env.wait_value("the restarts settle", DEADLINE, || {
        let (_, v) = env.status_json();
        let pid = v["child"]["pid"].as_i64()? as i32;
        if v["state"] != "running" || pid == child {
            return None;
        }
        let served = request(env.addr(), Duration::from_secs(5)).ok()?;
        (served.trim() == pid.to_string()).then_some(pid)
    });
    let restarts = env.status_json().1["child"]["restarts"]
        .as_u64()
        .unwrap_or(0);
    if !pid_alive(last) || env.child_processes() != [last] {
        env.fail(format!(
            "after the storm: children {:?}, want [{last}]",
            env.child_processes()
        ));
    }
    let (fds2, targets2) = fd_count(pid);
    if fds2 != fds0 {
        env.fail(format!(
            "descriptors after the storm: {fds0} -> {fds2}\nbefore {targets0:?}\nafter  {targets2:?}"
        ));
    }
    if !zombies_of(pid).is_empty() {
        env.fail(format!("zombies: {:?}", zombies_of(pid)));
    }
    eprintln!("{n} SIGHUP, then {n} SIGUSR1 + {n} SIGHUP in {burst:.2?}: {restarts} restarts; fds {fds0} -> {fds2}");
    let out = env.cli(&["stop"]);
    if out.code != Some(0) || sup.wait_exit(DEADLINE).code() != Some(0) {
        env.fail(format!("stop failed\n{out}"));
    }
}

#[test]
fn signal_storm_1000_hup_and_usr1() {
    signal_storm(1000);
}
