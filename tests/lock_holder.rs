//! The instance lock and who holds it (issue 20 item 4, issue 25 items 1
//! and 3): the lock is the state folder itself, so removing the pid file
//! takes nothing away; control commands signal only a lock holder proven
//! to be the supervisor `state.json` records (a decoy, a reused pid and an
//! unreadable state folder are unknown, 4, and nothing is signalled); and
//! one state folder belongs to one service.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn expect_code(env: &Env, out: &Out, code: i32) {
    if out.code != Some(code) {
        env.fail(format!("want exit {code}\n{out}"));
    }
}

fn port_closed(env: &Env) -> bool {
    TcpStream::connect_timeout(&env.addr(), Duration::from_millis(500)).is_err()
}

/// A process this test started, SIGKILLed by pid when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        kill(self.0.id() as i32, libc::SIGKILL);
        let _ = self.0.wait();
    }
}

/// A `sleep` that got the dead process `pid`'s pid, where we can make
/// one (`ns_last_pid`: root, and a machine quiet enough that no other
/// process takes it first; 50 tries).
#[cfg(target_os = "linux")]
fn reuse_pid(pid: i32) -> Option<Started> {
    for _ in 0..50 {
        if fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).is_err() {
            return None;
        }
        let s = Started(
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        if s.0.id() as i32 == pid {
            return Some(s);
        }
    }
    None
}

/// A python process that flocks `path` (a folder or a file), writes
/// `marker` and sleeps: a decoy lock holder.
fn decoy(env: &Env, path: &std::path::Path) -> Started {
    let marker = env.path("decoy-locked");
    let _ = fs::remove_file(&marker);
    let code = "import fcntl, os, sys, time\n\
                fd = os.open(sys.argv[1], os.O_RDONLY)\n\
                fcntl.flock(fd, fcntl.LOCK_EX)\n\
                open(sys.argv[2], 'w').write('locked')\n\
                time.sleep(600)\n";
    let child = Command::new(python())
        .args(["-c", code])
        .arg(path)
        .arg(&marker)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the decoy");
    let d = Started(child);
    env.wait_for("the decoy holds the lock", DEADLINE, || marker.exists());
    d
}

/// Every control command that signals: each must exit `code` and signal
/// nothing (`alive` still alive after each).
fn no_command_signals(env: &Env, code: i32, alive: &[i32], why: &str) {
    for args in [
        &["stop", "--timeout", "3s"][..],
        &["restart"],
        &["reopen-logs"],
        &["reload"],
    ] {
        let out = env.cli(args);
        expect_code(env, &out, code);
        if !out.stderr.contains(why) {
            env.fail(format!("{args:?} should say {why:?}\n{out}"));
        }
        for &pid in alive {
            if !pid_alive(pid) {
                env.fail(format!("{args:?} ended pid {pid}\n{out}"));
            }
        }
    }
}

#[test]
fn a_removed_pid_file_leaves_the_supervisor_found_and_a_second_run_changes_nothing() {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let child = env.wait_child(&[]);
    fs::remove_file(env.state_dir.join("supervisor.pid")).unwrap();

    let (code, v) = env.status_json();
    if code != 0 || v["supervisor"]["pid"].as_i64() != Some(sup.pid() as i64) {
        env.fail(format!("status after rm supervisor.pid: {code} {v}"));
    }
    let state_before = fs::read_to_string(env.state_dir.join("state.json")).unwrap();
    let second = env.spawn();
    let st = second.wait_exit(DEADLINE);
    if st.code() != Some(0) || !second.stderr().contains("already running") {
        env.fail(format!(
            "second run: {st}, want 0 'already running'; stderr: {}",
            second.stderr()
        ));
    }
    if sup.exited().is_some() || !pid_alive(child) || env.child_pid() != Some(child) {
        env.fail("the second run disturbed the first supervisor or its child");
    }
    if fs::read_to_string(env.state_dir.join("state.json")).unwrap() != state_before {
        env.fail("the second run rewrote state.json");
    }
    let out = env.cli(&["stop"]);
    expect_code(&env, &out, 0);
    let st = sup.wait_exit(DEADLINE);
    if st.code() != Some(0) || pid_alive(child) || !port_closed(&env) {
        env.fail(format!(
            "after stop: supervisor {st}, child alive {}, port open {}",
            pid_alive(child),
            !port_closed(&env)
        ));
    }
}

#[test]
fn a_decoy_holding_the_lock_is_unknown_and_never_signalled() {
    let env = Setup::new("serve.py").build();
    // A record of an earlier supervisor, stopped since.
    let sup = env.spawn();
    env.wait_child(&[]);
    expect_code(&env, &env.cli(&["stop"]), 0);
    sup.wait_exit(DEADLINE);

    // The lock object itself (the folder), then the pid file an older
    // supervisor locked.
    for object in [env.state_dir.clone(), env.state_dir.join("supervisor.pid")] {
        let d = decoy(&env, &object);
        let pid = d.0.id() as i32;
        let (code, v) = env.status_json();
        let error = v["error"].as_str().unwrap_or("");
        if code != 4 || v["state"] != "unknown" || !error.contains(&format!("pid {pid}")) {
            env.fail(format!("status with a decoy on {object:?}: {code} {v}"));
        }
        no_command_signals(&env, 4, &[pid], &format!("pid {pid}"));
        // A run does not start beside it either.
        let starts = env.events_of("start").len();
        let second = env.spawn();
        second.wait_exit(DEADLINE);
        if env.events_of("start").len() != starts || !env.child_processes().is_empty() {
            env.fail("a child started while the decoy holds the lock");
        }
    }
}

#[test]
fn a_holder_whose_start_time_is_not_the_recorded_one_is_never_signalled() {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let child = env.wait_child(&[]);
    let path = env.state_dir.join("state.json");
    let good = fs::read_to_string(&path).unwrap();
    // The record now names the pid with another start time: the pid's
    // process is not the one that wrote it (a reused pid).
    let mut v: Value = serde_json::from_str(&good).unwrap();
    let t = v["supervisor"]["start_time"].as_u64().unwrap();
    v["supervisor"]["start_time"] = Value::from(t + 1);
    let forged = serde_json::to_string_pretty(&v).unwrap();
    fs::write(&path, &forged).unwrap();

    let (code, s) = env.status_json();
    if code != 4 || !s["error"].as_str().unwrap_or("").contains("start time") {
        env.fail(format!("status with a forged start time: {code} {s}"));
    }
    no_command_signals(&env, 4, &[sup.pid(), child], "start time");
    if sup.exited().is_some() || !pid_alive(child) {
        env.fail("the supervisor or its child was disturbed");
    }
    // The record put back, it is found and stopped again.
    fs::write(&path, &good).unwrap();
    expect_code(&env, &env.cli(&["stop"]), 0);
    sup.wait_exit(DEADLINE);
}

/// Linux: a process takes the lock and forks; the parent exits, so
/// `/proc/locks` names a dead pid. That pid is then given to an unrelated
/// process (`ns_last_pid`, as root) which must never be signalled.
#[cfg(target_os = "linux")]
#[test]
fn a_lock_table_naming_a_reused_pid_is_unknown_and_never_signalled() {
    let env = Setup::new("serve.py").build();
    fs::create_dir(&env.state_dir).unwrap();
    fs::set_permissions(&env.state_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let holder_file = env.path("holder.pid");
    let code = "import fcntl, os, sys, time\n\
                fd = os.open(sys.argv[1], os.O_RDONLY)\n\
                fcntl.flock(fd, fcntl.LOCK_EX)\n\
                if os.fork() == 0:\n\
                \x20   os.setsid()\n\
                \x20   open(sys.argv[2], 'w').write(str(os.getpid()))\n\
                \x20   time.sleep(600)\n\
                \x20   os._exit(0)\n\
                while not os.path.exists(sys.argv[2]):\n\
                \x20   time.sleep(0.01)\n";
    let mut parent = Command::new(python())
        .args(["-c", code])
        .arg(&env.state_dir)
        .arg(&holder_file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let dead = parent.id() as i32;
    parent.wait().unwrap();
    let keeper: i32 = fs::read_to_string(&holder_file).unwrap().parse().unwrap();
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            kill(self.0, libc::SIGKILL);
        }
    }
    let _keeper = Kill(keeper);

    // Give the dead parent's pid to an unrelated process, where we may.
    let reused = reuse_pid(dead);
    match &reused {
        Some(_) => eprintln!("pid {dead} reused by a sleep"),
        None => eprintln!(
            "cannot make pid {dead} be reused (ns_last_pid needs root, and a quiet machine); \
             checking the dead holder only"
        ),
    }
    let (code, v) = env.status_json();
    if code != 4
        || !v["error"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("pid {dead}"))
    {
        env.fail(format!(
            "status with the lock table naming pid {dead}: {code} {v}"
        ));
    }
    let mut alive = vec![keeper];
    if reused.is_some() {
        alive.push(dead);
    }
    no_command_signals(&env, 4, &alive, &format!("pid {dead}"));
}

#[test]
fn an_unreadable_state_folder_is_unknown_not_not_running() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the commands as another user (nobody)");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    env.wait_child(&[]);
    // The config readable by everyone; the state folder stays root's 0700.
    fs::set_permissions(&env.dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&env.config, fs::Permissions::from_mode(0o644)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut full: Vec<String> = [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            BIN,
            "--config",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        full.push(env.config.display().to_string());
        full.extend(args.iter().map(|s| s.to_string()));
        run_cmd("setpriv", &full, DEADLINE).unwrap_or_else(|e| env.fail(e))
    };
    let out = as_nobody(&["status", "--json"]);
    if out.code != Some(4) || !out.stdout.contains("permission denied") {
        env.fail(format!(
            "status as nobody: want 4 'permission denied'\n{out}"
        ));
    }
    for args in [&["stop"][..], &["restart"], &["reopen-logs"], &["reload"]] {
        let out = as_nobody(args);
        if out.code != Some(4) || !out.stderr.contains("permission denied") {
            env.fail(format!(
                "{args:?} as nobody: want 4 'permission denied'\n{out}"
            ));
        }
    }
    if sup.exited().is_some() {
        env.fail("the supervisor exited");
    }
}

#[test]
fn two_configs_sharing_a_state_folder_cannot_act_on_each_other() {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let child = env.wait_child(&[]);
    // A second service (another port, its own logs) naming the same
    // state folder.
    let other_port = free_port();
    let b = env.path("b.toml");
    let text = env
        .config_text
        .replace(&format!(":{}\"", env.port), &format!(":{other_port}\""))
        .replace("dir = \"logs\"", "dir = \"logs-b\"");
    assert!(text.contains(&other_port.to_string()), "{text}");
    fs::write(&b, text).unwrap();
    let names_both = |out: &Out| {
        out.stderr.contains(&env.config.display().to_string())
            && out.stderr.contains(&b.display().to_string())
    };
    let out = env.cli_with(&b, &["run"], DEADLINE);
    if out.code != Some(78) || !names_both(&out) {
        env.fail(format!(
            "second service's run: want 78 naming both configs\n{out}"
        ));
    }
    for args in [
        &["status"][..],
        &["stop"],
        &["restart"],
        &["reload"],
        &["reopen-logs"],
    ] {
        let out = env.cli_with(&b, args, DEADLINE);
        if out.code != Some(78) || !names_both(&out) {
            env.fail(format!(
                "second service's {args:?}: want 78 naming both\n{out}"
            ));
        }
    }
    let (code, v) = env.status_json();
    if code != 0
        || sup.exited().is_some()
        || env.child_pid() != Some(child)
        || v["supervisor"]["reloads"] != 0
        || env.events_of("start").len() != 1
    {
        env.fail(format!("the first service was disturbed: {code} {v}"));
    }
    if TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], other_port)),
        Duration::from_millis(300),
    )
    .is_ok()
    {
        env.fail("the second service's port is open");
    }
    expect_code(&env, &env.cli(&["stop"]), 0);
    sup.wait_exit(DEADLINE);
}

/// Issue 24 item 13: `status --json` from the first millisecond of a
/// supervisor's life (before the lock, between the lock and the first
/// `state.json`, while the child starts) always prints one JSON object
/// with every key SPEC 0.2 gives every state, and an exit code that
/// agrees with the state: 3 not-running, 1 on the way up, 0 running.
#[test]
fn status_from_the_first_millisecond_always_has_every_key() {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let mut seen: Vec<(i32, String)> = Vec::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let out = env.status_raw();
        let v: Value = match serde_json::from_str(&out.stdout) {
            Ok(v) => v,
            Err(e) => env.fail(format!("status --json printed invalid JSON ({e})\n{out}")),
        };
        for key in ["state", "supervisor", "listen", "child"] {
            if v.get(key).is_none() {
                env.fail(format!("status --json has no {key:?}\n{out}"));
            }
        }
        let state = v["state"].as_str().unwrap_or("").to_string();
        let want = match state.as_str() {
            "running" => 0,
            "not-running" => 3,
            "starting" | "waiting-for-port" | "backoff" => 1,
            _ => env.fail(format!("unexpected state while starting\n{out}")),
        };
        if out.code != Some(want) {
            env.fail(format!("state {state:?} with exit {:?}\n{out}", out.code));
        }
        if state != "not-running"
            && (!v["supervisor"]["pid"].is_i64() || v["listen"]["address"].as_str().is_none())
        {
            env.fail(format!(
                "a live state names no supervisor pid or address\n{out}"
            ));
        }
        if seen.last().is_none_or(|(c, s)| *c != want || *s != state) {
            seen.push((want, state.clone()));
        }
        if state == "running" {
            break;
        }
        if sup.exited().is_some() || std::time::Instant::now() > deadline {
            env.fail(format!("never running; states seen: {seen:?}"));
        }
    }
    eprintln!("states seen: {seen:?}");
    expect_code(&env, &env.cli(&["stop"]), 0);
    sup.wait_exit(DEADLINE);
}

/// Issue 20's leftover C: the control commands open a pidfd on the lock
/// holder before they prove it, and signal it through that pidfd (Linux
/// 5.3+), never with `kill(2)` on a pid that may have been reused since
/// the proof. Seen from outside with strace: `reload`, `restart`,
/// `reopen-logs` and `stop` each `pidfd_open` the supervisor's pid and
/// send their signal with `pidfd_send_signal`, and each still works.
/// (That a reused pid is then never signalled is
/// `lock::tests::a_pid_reused_after_the_holder_was_opened_is_never_signalled_nor_waited_for`:
/// reusing the supervisor's own pid between a command's proof and its
/// signal cannot be timed from outside.)
#[cfg(target_os = "linux")]
#[test]
fn control_commands_signal_the_proven_supervisor_through_a_pidfd() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let first = env.wait_child(&[]);
    let pid = sup.pid();
    let traced = |args: &[&str], sig: &str| {
        let trace = env.path("trace");
        let _ = fs::remove_file(&trace);
        let mut full: Vec<String> = ["-f", "-qq", "-o"].iter().map(|s| s.to_string()).collect();
        full.push(trace.display().to_string());
        full.extend(
            [
                "-e",
                "trace=pidfd_open,pidfd_send_signal,kill",
                BIN,
                "--config",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        full.push(env.config.display().to_string());
        full.extend(args.iter().map(|s| s.to_string()));
        let out = match run_cmd("strace", &full, DEADLINE) {
            Ok(out) => out,
            Err(e) => env.fail(e),
        };
        let text = fs::read_to_string(&trace).unwrap_or_default();
        if text.contains("Operation not permitted") && !text.contains("pidfd_open(") {
            eprintln!("skipped: strace may not trace here\n{text}");
            return None;
        }
        expect_code(&env, &out, 0);
        let opened = text.contains(&format!("pidfd_open({pid}, 0)"));
        let sent = text
            .lines()
            .any(|l| l.contains("pidfd_send_signal(") && l.contains(sig) && l.ends_with("= 0"));
        let killed = text.contains(&format!("kill({pid}, {sig}"));
        if !opened || !sent || killed {
            env.fail(format!(
                "{args:?}: want pidfd_open({pid}) and pidfd_send_signal({sig}), no kill\n{out}\n{text}"
            ));
        }
        Some(())
    };
    if traced(&["reload"], "SIGUSR2").is_none() {
        return;
    }
    traced(&["reopen-logs"], "SIGHUP");
    traced(&["restart"], "SIGUSR1");
    let second = env.wait_child(&[first]);
    traced(&["stop"], "SIGTERM");
    sup.wait_exit(DEADLINE);
    if pid_alive(second) {
        env.fail(format!("child {second} survived the stop"));
    }
}

/// Whether `pid` has `sig` pending (sent to the process, not yet taken:
/// it is stopped).
#[cfg(target_os = "linux")]
fn pending(pid: i32, sig: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("ShdPnd:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

#[cfg(target_os = "linux")]
fn stopped(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            t.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

/// Issue 20's leftover D, from outside: `stop`, `restart` and `reload`
/// wait on the supervisor they signalled, not on its pid. The supervisor
/// is frozen (SIGSTOP), so the command's signal stays pending and the
/// command sits in its wait; the command is frozen too; the supervisor is
/// killed, reaped, and its pid given to a sleeping process (`ns_last_pid`,
/// as root); then the command goes on. `stop` must return 0 at once,
/// `restart` and `reload` must say at once that the supervisor exited,
/// and the sleeper is untouched. Checking only whether the pid was alive,
/// each waited out its whole budget on the sleeper (`stop` then exited 1
/// saying the supervisor did not exit; `restart` that no outcome was
/// recorded; `reload` waits 60 s).
#[cfg(target_os = "linux")]
#[test]
fn the_waits_of_stop_restart_and_reload_are_not_kept_by_a_reused_pid() {
    let ns_last_pid = "/proc/sys/kernel/ns_last_pid";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || fs::metadata(ns_last_pid).is_err() {
        eprintln!("skipped: needs root and /proc/sys/kernel/ns_last_pid to reuse a pid");
        return;
    }
    let budget = Duration::from_secs(8);
    let cases: [(&[&str], i32, i32, &str); 3] = [
        (&["stop", "--timeout", "8s"], libc::SIGTERM, 0, ""),
        (
            &["restart", "--timeout", "8s"],
            libc::SIGUSR1,
            1,
            "exited during the restart",
        ),
        (&["reload"], libc::SIGUSR2, 1, "exited during the reload"),
    ];
    for (args, sig, want, says) in cases {
        let env = Setup::new("serve.py").build();
        let sup = env.spawn();
        env.wait_child(&[]);
        let pid = sup.pid();
        kill(pid, libc::SIGSTOP);
        let mut cmd = Started(
            Command::new(BIN)
                .args(["--config", &env.config.display().to_string()])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        env.wait_for(&format!("{args:?}'s signal pending"), DEADLINE, || {
            pending(pid, sig)
        });
        let cmd_pid = cmd.0.id() as i32;
        kill(cmd_pid, libc::SIGSTOP);
        env.wait_for(&format!("{args:?} frozen"), DEADLINE, || stopped(cmd_pid));
        sup.kill9();
        let reused = reuse_pid(pid);
        kill(cmd_pid, libc::SIGCONT);
        if reused.is_none() {
            eprintln!("skipped: cannot make pid {pid} be reused (a machine quiet enough)");
            return;
        }
        let started = std::time::Instant::now();
        let code = env.wait_value(&format!("{args:?} to return"), budget + DEADLINE, || {
            cmd.0.try_wait().ok().flatten()
        });
        let mut stderr = String::new();
        if let Some(mut e) = cmd.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        if code.code() != Some(want) || started.elapsed() >= budget || !stderr.contains(says) {
            env.fail(format!(
                "{args:?} exited {code:?} after {:?} saying {stderr:?} (want {want}, {says:?}), \
                 with the supervisor's pid {pid} reused by a sleep",
                started.elapsed()
            ));
        }
        if !pid_alive(pid) {
            env.fail(format!("the process that reused pid {pid} was ended"));
        }
    }
}

/// A stopping supervisor removes its notify socket (and a private folder
/// it made for it) before it gives up the lock: once the lock is free, a
/// new supervisor may take it and bind its own socket at that very path,
/// which the old one would then remove from under it (its child's
/// `READY=1` would go nowhere). Shown with strace: the unlink of the
/// socket file comes before the last `flock(LOCK_UN)`.
#[test]
fn a_stopping_supervisor_removes_its_notify_socket_before_it_gives_up_the_lock() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let env = Setup::new("handover.py")
        .arg("ready")
        .arg("0.2")
        .raw("health", "notify", "true")
        .build();
    let trace = env.path("trace");
    let sup = Started(
        Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .args(["-e", "trace=flock,unlink,unlinkat,rmdir", BIN, "--config"])
            .arg(&env.config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace runs"),
    );
    let socket = env.wait_value("a ready child and its notify socket", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running" && v["child"]["ready"] == true).then_some(())?;
        env.events_of("notify-socket")
            .first()
            .and_then(|e| e.extra.first().cloned())
    });
    let out = env.cli(&["stop"]);
    expect_code(&env, &out, 0);
    let mut sup = sup;
    let exited = wait_until(DEADLINE, || sup.0.try_wait().ok().flatten().is_some()).is_ok();
    let text = fs::read_to_string(&trace).unwrap_or_default();
    if !exited || text.contains("Operation not permitted") && !text.contains("flock(") {
        eprintln!("skipped: strace may not trace here\n{text}");
        return;
    }
    let lines: Vec<&str> = text.lines().collect();
    let removed = lines.iter().position(|l| {
        l.contains(&format!("\"{socket}\"")) && l.contains("unlink") && l.ends_with("= 0")
    });
    let released = lines.iter().rposition(|l| l.contains("LOCK_UN"));
    match (removed, released) {
        (Some(r), Some(u)) if r < u => {}
        _ => env.fail(format!(
            "want {socket} unlinked before the lock is released (lines {removed:?}, {released:?})\n{text}"
        )),
    }
}
