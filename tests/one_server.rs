//! One server on the port, whatever the child does (issue 10): children
//! that daemonize, leave their process group, shut the socket down or leave
//! detached helpers behind; and a foreign listener that must never be hit.
//! The children are tests/children/escape.py (modes documented there).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// This test's processes (by the temp dir in their argv) that hold a
/// listening socket on the supervised port, the supervisor left out.
fn holders(env: &Env, sup: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| p != sup && pid_alive(p))
        .filter(|&p| cmdline(p).iter().any(|a| a == &env.dir_s))
        .filter(|&p| listening_ports(p).contains(&env.port))
        .collect()
}

/// For each process that said "serve", the child it descends from.
fn generations(env: &Env) -> BTreeMap<i32, String> {
    env.events_of("serve")
        .into_iter()
        .map(|e| (e.pid, e.extra.first().cloned().unwrap_or_default()))
        .collect()
}

/// Samples the holders of the port every 20 ms for `how_long`: never two
/// generations (two process trees) serving at once. Returns every holder
/// seen.
fn watch_one_tree(env: &Env, sup: i32, how_long: Duration) -> BTreeSet<i32> {
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    let mut samples = 0;
    while started.elapsed() < how_long {
        let now = holders(env, sup);
        let gens = generations(env);
        // A process that has not said "serve" yet is the newest child.
        let trees: BTreeSet<String> = now
            .iter()
            .map(|p| gens.get(p).cloned().unwrap_or_else(|| "new".into()))
            .collect();
        if trees.len() > 1 {
            env.fail(format!(
                "two process trees serve the port at once: holders {now:?}, generations {trees:?}"
            ));
        }
        seen.extend(now);
        samples += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{samples} samples, holders seen: {seen:?}");
    seen
}

/// `stop` exits 0; then nothing listens on the port and no process that
/// held it is alive.
fn stop_leaves_nothing(env: &Env, sup: &Supervisor, seen: &BTreeSet<i32>) {
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop failed:\n{out}"));
    }
    sup.wait_exit(DEADLINE);
    let alive: Vec<i32> = seen.iter().copied().filter(|p| pid_alive(*p)).collect();
    if !alive.is_empty() {
        env.fail(format!(
            "after stop, earlier holders of the port live on: {alive:?}"
        ));
    }
    if let Ok(answer) = request(env.addr(), secs(1.0)) {
        env.fail(format!(
            "after stop something still answers on the port: {answer:?}"
        ));
    }
}

#[test]
fn a_daemonizing_child_never_multiplies() {
    let env = Setup::new("escape.py").arg("daemon").build();
    let sup = env.spawn();
    env.wait_for("a daemon serving", DEADLINE, || {
        !env.events_of("serve").is_empty()
    });
    let seen = watch_one_tree(&env, sup.pid(), secs(4.0));
    // Its daemons are often stopped before they serve; the children that
    // daemonized were started again and again all the same.
    if env.events_of("start").len() < 2 {
        env.fail("the child was never restarted: the test proved nothing");
    }
    stop_leaves_nothing(&env, &sup, &seen);
}

#[test]
fn grandchildren_that_leave_the_group_are_stopped_with_their_child() {
    for mode in ["setsid", "setpgid"] {
        let env = Setup::new("escape.py").arg(mode).build();
        let sup = env.spawn();
        env.wait_for("child and grandchild serving", DEADLINE, || {
            env.events_of("serve").len() >= 2
        });
        let first = env.wait_child(&[]);
        let watcher = std::thread::scope(|s| {
            let w = s.spawn(|| watch_one_tree(&env, sup.pid(), secs(3.0)));
            let out = env.cli(&["restart"]);
            if out.code != Some(0) {
                env.fail(format!("{mode}: restart failed:\n{out}"));
            }
            w.join().unwrap_or_default()
        });
        env.wait_child(&[first]);
        // The first generation, grandchild included, is gone.
        let gens = generations(&env);
        let old: Vec<i32> = gens
            .iter()
            .filter(|(_, g)| **g == first.to_string())
            .map(|(p, _)| *p)
            .collect();
        if old.len() < 2 || old.iter().any(|p| pid_alive(*p)) {
            env.fail(format!("{mode}: the first tree {old:?} survived a restart"));
        }
        let mut seen = watcher;
        seen.extend(holders(&env, sup.pid()));
        stop_leaves_nothing(&env, &sup, &seen);
    }
}

#[test]
fn a_child_that_tries_to_leave_its_process_group_is_still_stopped() {
    // It tries to move into the supervisor's own group and ignores SIGTERM.
    // In a session of its own it cannot: setpgid is refused (EPERM), and
    // its group stays its pid.
    let env = Setup::new("escape.py")
        .arg("leave")
        .child("stop_timeout", "1s")
        .build();
    let sup = env.spawn();
    env.wait_for("the child tried to leave its group", DEADLINE, || {
        !env.events_of("left").is_empty() || !env.events_of("stayed").is_empty()
    });
    let first = env.wait_child(&[]);
    let stayed = env.events_of("stayed");
    if !env.events_of("left").is_empty()
        || stayed.first().map(|e| e.extra.first().cloned()) != Some(Some(first.to_string()))
    {
        env.fail(format!(
            "the child left its group, or its group is not its pid: {:?}",
            env.events()
        ));
    }
    let started = Instant::now();
    let out = env.cli(&["restart"]);
    if out.code != Some(0) {
        env.fail(format!("restart failed:\n{out}"));
    }
    let second = env.wait_child(&[first]);
    let took = started.elapsed();
    if pid_alive(first) || took > secs(1.0 + 5.0) {
        env.fail(format!(
            "restart took {took:?} (stop_timeout 1s); first child alive: {}",
            pid_alive(first)
        ));
    }
    let started = Instant::now();
    let out = env.cli(&["stop"]);
    let took = started.elapsed();
    if out.code != Some(0) || pid_alive(second) || took > secs(1.0 + 5.0) {
        env.fail(format!(
            "stop took {took:?} (stop_timeout 1s), child alive: {}:\n{out}",
            pid_alive(second)
        ));
    }
    // The supervisor exited by itself, not by its own group being killed.
    let status = sup.wait_exit(DEADLINE);
    if status.code() != Some(0) {
        env.fail(format!("the supervisor ended with {status}"));
    }
}

/// The re-arm path is Linux's: on XNU `shutdown(SHUT_RDWR)` on a listening
/// socket is ENOTCONN and disarms nothing, so there is nothing to re-arm.
#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "shutdown(SHUT_RDWR) does not disarm a listening socket on macOS"
)]
fn a_socket_a_child_shut_down_is_rearmed_for_the_next() {
    let env = Setup::new("escape.py")
        .arg("shutdown")
        .restart("initial_backoff", "2s")
        .restart("max_backoff", "2s")
        .build();
    let _sup = env.spawn();
    let first = env.wait_child(&[]);
    env.wait_for("the first child serving", DEADLINE, || {
        !env.events_of("serve").is_empty()
    });
    match request(env.addr(), DEADLINE) {
        Ok(answer) if answer.trim() == first.to_string() => {}
        other => env.fail(format!("the first child did not answer: {other:?}")),
    }
    // It shut the socket down and exited: while no child runs, the record
    // says the socket is not listening.
    let v = env.wait_value("backoff with bound false", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "backoff").then_some(v)
    });
    if v["listen"]["bound"] != false {
        env.fail(format!("a shut-down socket is reported bound: {v:#}"));
    }
    // The next child gets a listening socket again, reported bound while
    // it runs (asked before its one request: after it, it shuts the socket
    // down and exits too, and the record says so).
    let second = env.wait_child(&[first]);
    env.wait_for("the re-armed socket reported bound", DEADLINE, || {
        let (_, v) = env.status_json();
        v["listen"]["bound"] == true && v["child"]["pid"] == second
    });
    match request(env.addr(), DEADLINE) {
        Ok(answer) if answer.trim() == second.to_string() => {}
        other => env.fail(format!("the next child did not answer: {other:?}")),
    }
}

/// Thread count from /proc: the point is that it stays constant.
#[cfg(target_os = "linux")]
fn threads(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

// Linux only: the thread count comes from /proc/PID/status.
#[cfg(target_os = "linux")]
#[test]
fn detached_helpers_cost_no_threads_and_are_left_alone() {
    let env = Setup::new("escape.py").arg("helper").build();
    let sup = env.spawn();
    let mut child = env.wait_child(&[]);
    env.wait_for("the helper started", DEADLINE, || {
        !env.events_of("helper").is_empty()
    });
    let before = threads(sup.pid());
    for i in 0..10 {
        let out = env.cli(&["restart"]);
        if out.code != Some(0) {
            env.fail(format!("restart {i} failed:\n{out}"));
        }
        child = env.wait_child(&[child]);
        env.wait_for("its helper started", DEADLINE, || {
            env.events_of("helper").len() > i + 1
        });
    }
    let after = threads(sup.pid());
    if before.is_none() || before != after {
        env.fail(format!(
            "threads before {before:?}, after 10 restarts {after:?}"
        ));
    }
    let helpers: Vec<i32> = env
        .events_of("helper")
        .iter()
        .filter_map(|e| e.extra.first()?.parse().ok())
        .collect();
    let started = Instant::now();
    let out = env.cli(&["stop"]);
    let took = started.elapsed();
    if out.code != Some(0) || took > secs(3.0) {
        env.fail(format!(
            "stop took {took:?} with helpers holding the log pipes:\n{out}"
        ));
    }
    // They never held our socket: left alone (a session manager's sessions
    // may outlive it on purpose).
    let gone: Vec<&i32> = helpers.iter().filter(|p| !pid_alive(**p)).collect();
    if !gone.is_empty() {
        env.fail(format!(
            "helpers {gone:?} that did not hold the socket were killed"
        ));
    }
    for p in helpers {
        kill(p, libc::SIGKILL);
    }
}

#[test]
fn a_foreign_listener_on_our_port_is_reported_and_never_signalled() {
    let env = Setup::new("serve.py").build();
    // A stranger listening on the wildcard of our port, recording signals.
    let foreign = std::process::Command::new(python())
        .args([
            "-c",
            "import signal, socket, sys, time\n\
             log = open(sys.argv[1] + '/foreign.log', 'a', buffering=1)\n\
             for s in signal.valid_signals():\n\
             \x20   if s not in (signal.SIGKILL, signal.SIGSTOP):\n\
             \x20       try: signal.signal(s, lambda n, f: log.write('signal %d\\n' % n))\n\
             \x20       except (OSError, ValueError): pass\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', int(sys.argv[2]))); s.listen(8)\n\
             log.write('ready\\n')\n\
             while True: time.sleep(3600)\n",
            &env.dir_s,
            &env.port.to_string(),
        ])
        .spawn()
        .expect("start the foreign listener");
    let foreign_pid = foreign.id() as i32;
    let log = env.path("foreign.log");
    env.wait_for("the foreign listener", DEADLINE, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")
    });
    let sup = env.spawn();
    let v = env.wait_value("waiting-for-port naming the holder", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "waiting-for-port" && v["port_holder"]["pid"] == foreign_pid).then_some(v)
    });
    if env.path("ran").exists() {
        env.fail(format!("a child started beside a foreign listener: {v:#}"));
    }
    let out = env.cli(&["stop"]);
    sup.wait_exit(DEADLINE);
    let signals = std::fs::read_to_string(&log).unwrap_or_default();
    let alive = pid_alive(foreign_pid);
    kill(foreign_pid, libc::SIGKILL);
    let mut foreign = foreign;
    let _ = foreign.wait();
    if out.code != Some(0) || !alive || signals.contains("signal") {
        env.fail(format!(
            "the foreign listener was touched: alive {alive}, its log {signals:?}\n{out}"
        ));
    }
}

#[test]
fn spawn_errors_say_what_is_wrong_in_status() {
    let bad_shebang = |env: &Env| {
        let p = env.path("bad-script");
        std::fs::write(&p, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p.to_string_lossy().into_owned()
    };
    // (how to break it, words the spawn error must contain)
    let cases: [(&str, &[&str]); 3] = [
        (
            "missing command",
            &["no-such-program-for-sure", "not found"],
        ),
        (
            "bad interpreter",
            &["interpreter", "/nonexistent/interpreter"],
        ),
        ("cwd removed", &["child.cwd", "does not exist"]),
    ];
    for (case, words) in cases {
        let mut env = Setup::new("serve.py").build();
        let work = env.path("work");
        std::fs::create_dir(&work).unwrap();
        match case {
            "missing command" => env.set_command(&["no-such-program-for-sure".into()]),
            "bad interpreter" => {
                let script = bad_shebang(&env);
                env.set_command(&[script]);
            }
            _ => {
                let text = env
                    .config_text
                    .replace("[child]", &format!("[child]\ncwd = {work:?}"));
                std::fs::write(&env.config, text).unwrap();
            }
        }
        let _sup = env.spawn();
        if case == "cwd removed" {
            env.wait_child(&[]);
            std::fs::remove_dir(&work).unwrap();
            env.cli(&["restart"]);
        }
        let v = env.wait_value("a spawn error in status", DEADLINE, || {
            let (_, v) = env.status_json();
            v["child"]["spawn_error"].as_str().map(|_| v.clone())
        });
        let e = v["child"]["spawn_error"].as_str().unwrap_or_default();
        if words.iter().any(|w| !e.contains(w)) {
            env.fail(format!("{case}: spawn_error {e:?} lacks one of {words:?}"));
        }
        let text = env.cli(&["status"]).stdout;
        if !text.contains("spawn error:") {
            env.fail(format!("{case}: the status text does not show it:\n{text}"));
        }
    }
}

/// As PID 1 of a PID namespace (a container's init), every orphan comes
/// back to the supervisor: it must reap them all, or they stay zombies
/// for the namespace's life. Linux only (PID namespaces); skipped, saying
/// so, where this user may not create one.
#[cfg(target_os = "linux")]
#[test]
fn as_pid_1_in_a_container_orphans_are_reaped() {
    use std::process::{Command, Stdio};
    let unshare = ["-fp", "--mount-proc"];
    let can = Command::new("unshare")
        .args(unshare)
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can {
        eprintln!("skipped: `unshare -fp --mount-proc` is not permitted here");
        return;
    }
    // Five orphans that outlive their parent by 50 ms (without our
    // socket), then the server.
    let env = Setup::new("serve.py")
        .prelude(&[
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5; do (sleep 0.05 3>&- &); done; exec \"$@\"",
            "sh",
        ])
        .build();
    let mut outer = Command::new("unshare")
        .args(unshare)
        .arg(BIN)
        .arg("--config")
        .arg(&env.config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start unshare");
    let outer_pid = outer.id() as i32;
    let mut sup = 0;
    env.wait_for("the supervisor inside the namespace", DEADLINE, || {
        sup = all_pids()
            .into_iter()
            .find(|p| proc_stat(*p).is_some_and(|(_, ppid, _)| ppid == outer_pid))
            .unwrap_or(0);
        sup > 0
    });
    env.wait_for("the child to answer", DEADLINE, || {
        request(env.addr(), Duration::from_secs(2)).is_ok_and(|a| !a.is_empty())
    });
    let zombies = || {
        all_pids()
            .into_iter()
            .filter(|p| proc_stat(*p).is_some_and(|(s, ppid, _)| ppid == sup && s == 'Z'))
            .count()
    };
    let orphans = || {
        all_pids()
            .into_iter()
            .filter(|p| {
                cmdline(*p) == ["sleep", "0.05"]
                    && proc_stat(*p).is_some_and(|(_, ppid, _)| ppid == sup)
            })
            .count()
    };
    let settled = wait_until(DEADLINE, || orphans() == 0 && zombies() == 0);
    let left = (orphans(), zombies());
    kill(sup, libc::SIGTERM);
    let ended = wait_until(DEADLINE, || matches!(outer.try_wait(), Ok(Some(_))));
    if ended.is_err() {
        kill(outer_pid, libc::SIGKILL);
        let _ = outer.wait();
    }
    if settled.is_err() {
        env.fail(format!(
            "as PID 1 the supervisor left {} orphans running and {} zombies",
            left.0, left.1
        ));
    }
    if ended.is_err() {
        env.fail("the supervisor did not end on SIGTERM as PID 1");
    }
}
