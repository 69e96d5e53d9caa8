//! `reload` (issue 15): the supervisor re-executes itself in place — same
//! pid, lock, socket and child — with the config (and binary) on disk; and
//! a socket passed by the service manager. Each test keeps a client loop
//! on the port, counting refused and reset connections.

mod common;

use common::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn expect_code(env: &Env, out: &Out, code: i32) {
    if out.code != Some(code) {
        env.fail(format!("want exit {code}\n{out}"));
    }
}

/// The supervisor's record: (pid, reloads).
fn supervisor(env: &Env) -> (i64, u64) {
    let v = env.status_json().1;
    (
        v["supervisor"]["pid"].as_i64().unwrap_or(0),
        v["supervisor"]["reloads"].as_u64().unwrap_or(0),
    )
}

/// (pid, start time) of the running child.
fn child(env: &Env) -> (i64, u64) {
    let v = env.status_json().1;
    (
        v["child"]["pid"].as_i64().unwrap_or(0),
        v["child"]["start_time"].as_u64().unwrap_or(0),
    )
}

/// Nothing refused, nothing reset, answers seen.
fn no_refusals(env: &Env, t: &Tally) {
    if t.refused > 0 || !t.errors.is_empty() || t.total_ok() == 0 {
        env.fail(format!("the client loop saw trouble: {t:?}"));
    }
}

/// Nothing refused (a child stopped mid-request may reset the request it
/// had taken: that is the child's, not the socket's).
fn none_refused(env: &Env, t: &Tally) {
    if t.refused > 0 || t.total_ok() == 0 {
        env.fail(format!("the client loop saw refusals: {t:?}"));
    }
}

fn serving(env: &Env) -> i32 {
    wait_serving(env, &[], "the child", |pid, body| {
        (body.trim() == pid.to_string()).then_some(())
    })
    .0
}

#[test]
fn a_reload_with_nothing_changed_touches_nothing_and_keeps_the_lock() {
    let env = Setup::new("http_health.py").build();
    let sup = env.spawn();
    serving(&env);
    let (sup_pid, _) = supervisor(&env);
    let before = child(&env);
    // Copies that try to start during the exec must find the lock held.
    let racing = Arc::new(AtomicBool::new(true));
    let racer = {
        let racing = racing.clone();
        let config = env.config.clone();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            while racing.load(Ordering::Relaxed) && outcomes.len() < 200 {
                let out = Command::new(BIN)
                    .args(["--config", &config.to_string_lossy(), "run"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output();
                outcomes.push(out);
            }
            outcomes
        })
    };
    let hammer = Hammer::start(env.addr());
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 0);
    std::thread::sleep(Duration::from_millis(200)); // a few more racers after it
    racing.store(false, Ordering::Relaxed);
    let tally = hammer.finish();
    let outcomes = racer.join().unwrap_or_default();
    no_refusals(&env, &tally);
    if (sup_pid, 1) != supervisor(&env) || child(&env) != before {
        env.fail(format!(
            "want the same supervisor {sup_pid} with reloads 1 and the same child {before:?}; got {:?} {:?}",
            supervisor(&env),
            child(&env)
        ));
    }
    for o in outcomes.into_iter().flatten() {
        let stderr = String::from_utf8_lossy(&o.stderr);
        if o.status.code() != Some(0) || !stderr.contains("already running") {
            env.fail(format!(
                "a copy started during the reload: {:?} {stderr}",
                o.status
            ));
        }
    }
    if sup.exited().is_some() {
        env.fail("the supervisor exited");
    }
}

#[test]
fn health_checks_go_on_after_a_reload() {
    let env = Setup::new("http_health.py")
        .set("health", "http", "/healthz")
        .set("health", "interval", "200ms")
        .set("health", "timeout", "300ms")
        .raw("health", "failures", "2")
        .build();
    let _sup = env.spawn();
    let first = serving(&env);
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 0);
    if env.status_json().1["child"]["ready"] != true {
        env.fail("the child is not ready any more after the reload");
    }
    // A freeze after the reload is still noticed and repaired.
    fs::write(env.path("freeze"), "").unwrap();
    env.wait_child(&[first]);
}

#[test]
fn sigusr2_reloads_too() {
    let env = Setup::new("http_health.py").build();
    let sup = env.spawn();
    serving(&env);
    sup.signal(libc::SIGUSR2);
    env.wait_for("reloads 1", DEADLINE, || supervisor(&env).1 == 1);
}

/// A copy of the binary in the temp dir, to run from and then replace.
fn own_binary(env: &Env) -> String {
    let path = env.path("supervisor-bin");
    fs::copy(BIN, &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

/// `supervisor run` from `bin`. A binary written a moment ago may still be
/// open for writing in a child another test forked meanwhile (ETXTBSY,
/// until that child execs): try again briefly.
fn run_from(bin: &str, env: &Env) -> std::process::Child {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let spawned = Command::new(bin)
            .args(["--config", &env.config.to_string_lossy(), "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other.unwrap(),
        }
    }
}

/// Replaces the file at `path` with `content` (a new inode, like an
/// upgrade's rename into place).
fn replace(path: &str, content: &[u8]) {
    let tmp = format!("{path}.new");
    fs::write(&tmp, content).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A second copy of the binary, `supervisor-real`, for a script put in
/// place of `bin` to `exec`.
fn real_binary(env: &Env) -> std::path::PathBuf {
    let real = env.path("supervisor-real");
    fs::copy(BIN, &real).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
    real
}

/// The old image runs on untouched after a refused reload: the same
/// process, no reload counted, the same child.
fn runs_on_untouched(env: &Env, sup: &std::process::Child, before: (i64, u64)) {
    let (pid, reloads) = supervisor(env);
    if pid != sup.id() as i64 || reloads != 0 || child(env) != before {
        env.fail("the old image did not run on untouched");
    }
}

/// `stop` exits 0, and the supervisor started here is reaped.
fn stop(env: &Env, mut sup: std::process::Child) {
    let out = env.cli(&["stop"]);
    expect_code(env, &out, 0);
    let _ = sup.wait();
}

#[test]
fn a_replaced_binary_is_the_one_executed() {
    let env = Setup::new("http_health.py").build();
    let bin = own_binary(&env);
    let sup = run_from(&bin, &env);
    serving(&env);
    let before = child(&env);
    let old_inode = fs::metadata(&bin)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    replace(&bin, &fs::read(BIN).unwrap());
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 0);
    // The process now runs the new file, not the deleted old one.
    let exe = fs::read_link(format!("/proc/{}/exe", sup.id())).unwrap_or_default();
    let new_inode = fs::metadata(&bin)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    if cfg!(target_os = "linux")
        && (exe.to_string_lossy().contains("(deleted)") || old_inode == new_inode)
    {
        env.fail(format!("still the old binary: {exe:?}"));
    }
    if child(&env) != before {
        env.fail("the child was restarted by a binary upgrade");
    }
    stop(&env, sup);
}

#[test]
fn a_link_moved_to_a_new_version_is_followed() {
    // Homebrew's way: bin/supervisor -> Cellar/<version>/bin/supervisor.
    let env = Setup::new("http_health.py").build();
    let (v1, v2) = (env.path("v1"), env.path("v2"));
    for v in [&v1, &v2] {
        fs::create_dir(v).unwrap();
        fs::copy(BIN, v.join("supervisor")).unwrap();
        fs::set_permissions(v.join("supervisor"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let link = env.path("supervisor-link");
    std::os::unix::fs::symlink(v1.join("supervisor"), &link).unwrap();
    let sup = run_from(&link.to_string_lossy(), &env);
    serving(&env);
    let tmp = env.path("supervisor-link.new");
    std::os::unix::fs::symlink(v2.join("supervisor"), &tmp).unwrap();
    fs::rename(&tmp, &link).unwrap();
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 0);
    let v = env.status_json().1;
    let runs = v["supervisor"]["executable"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !runs.starts_with(&v2.to_string_lossy().into_owned()) {
        env.fail(format!(
            "after the upgrade it runs {runs:?}, not the one in {v2:?}"
        ));
    }
    stop(&env, sup);
}

#[test]
fn a_binary_that_fails_its_preflight_is_not_executed() {
    let env = Setup::new("http_health.py").build();
    let bin = own_binary(&env);
    let sup = run_from(&bin, &env);
    serving(&env);
    let before = child(&env);
    replace(&bin, b"#!/bin/sh\necho 'broken build' >&2\nexit 1\n");
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 1);
    if !out.stderr.contains("broken build") {
        env.fail(format!("reload should say why\n{out}"));
    }
    runs_on_untouched(&env, &sup, before);
    stop(&env, sup);
}

/// `reload` onto `bin` replaced by `script` (issue 25): refused before the
/// exec, exit 1 naming the binary and what it answered; the old image
/// runs on with the same child and the port never stops answering.
fn refused_before_exec(script: &str, answered: &str) {
    let env = Setup::new("http_health.py").build();
    let bin = own_binary(&env);
    let real = real_binary(&env);
    let mut sup = run_from(&bin, &env);
    serving(&env);
    let before = child(&env);
    replace(
        &bin,
        script.replace("REAL", &real.to_string_lossy()).as_bytes(),
    );
    let hammer = Hammer::start(env.addr());
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 1);
    if !out.stderr.contains(&bin) || !out.stderr.contains(answered) {
        env.fail(format!(
            "reload should name {bin} and what it answered ({answered:?})\n{out}"
        ));
    }
    let tally = hammer.finish();
    no_refusals(&env, &tally);
    runs_on_untouched(&env, &sup, before);
    serving(&env);
    if sup.try_wait().unwrap().is_some() {
        env.fail("the supervisor exited");
    }
    stop(&env, sup);
}

#[test]
fn a_program_that_exits_0_is_not_executed() {
    refused_before_exec("#!/bin/sh\nexit 0\n", "does not speak the handoff protocol");
}

#[test]
fn a_binary_answering_an_old_handoff_version_is_not_executed() {
    refused_before_exec(
        "#!/bin/sh\n[ \"$1\" = handoff-version ] && { echo 'supervisor-handoff 0'; exit 0; }\nexec 'REAL' \"$@\"\n",
        "speaks handoff version 0",
    );
}

#[test]
fn a_new_image_that_cannot_check_the_running_config_carries_on() {
    // The race the preflight cannot close: check-config passes, then the
    // child's cwd goes before the new image checks the same config. The
    // new image holds the lock, the socket and a live child by then: it
    // must report the reload as failed and keep all three.
    let env = Setup::new("http_health.py").build();
    let work = env.path("work");
    fs::create_dir(&work).unwrap();
    let text = env.config_text.replace(
        "[child]\n",
        &format!("[child]\ncwd = {:?}\n", work.to_string_lossy()),
    );
    fs::write(&env.config, &text).unwrap();
    let bin = own_binary(&env);
    let real = real_binary(&env);
    let sup = run_from(&bin, &env);
    serving(&env);
    let before = child(&env);
    // The preflight (`--config C check-config`) passes; the exec (`run`)
    // removes the folder first.
    replace(
        &bin,
        format!(
            "#!/bin/sh\n[ \"$3\" = run ] && rmdir '{}'\nexec '{}' \"$@\"\n",
            work.display(),
            real.display()
        )
        .as_bytes(),
    );
    let out = env.cli(&["reload"]);
    if out.code != Some(78) || !out.stderr.contains("child.cwd") {
        env.fail(format!("the reload should fail naming child.cwd\n{out}"));
    }
    let (pid, reloads) = supervisor(&env);
    if pid != sup.id() as i64 || reloads != 1 || child(&env) != before {
        env.fail(format!(
            "the new image should carry on with the same child (supervisor {pid}, reloads {reloads})"
        ));
    }
    serving(&env);
    stop(&env, sup);
}

#[test]
fn an_invalid_config_is_refused_and_the_old_image_runs_on() {
    let env = Setup::new("http_health.py").build();
    let _sup = env.spawn();
    serving(&env);
    let before = child(&env);
    fs::write(
        &env.config,
        format!("{}\n[child]\nbogus = 1\n", env.config_text),
    )
    .unwrap();
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 78);
    if supervisor(&env).1 != 0 || child(&env) != before {
        env.fail("an invalid config changed something");
    }
}

#[test]
fn a_changed_child_is_restarted_once_with_the_socket_open() {
    let env = Setup::new("http_health.py").build();
    let _sup = env.spawn();
    let first = serving(&env);
    let hammer = Hammer::start(env.addr());
    let text = env
        .config_text
        .replace("[child]\n", "[child]\nenv = { CHANGED = \"1\" }\n");
    fs::write(&env.config, &text).unwrap();
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 0);
    let second = env.wait_child(&[first]);
    let tally = hammer.finish();
    none_refused(&env, &tally);
    if env.events_of("start").len() != 2 {
        env.fail(format!(
            "want exactly one restart, starts: {:?}",
            env.events_of("start")
        ));
    }
    if environ_var(second, "CHANGED").as_deref() != Some("1") {
        env.fail("the new child does not have the new environment");
    }
}

#[test]
fn a_changed_address_moves_the_child_with_no_moment_without_a_listener() {
    let env = Setup::new("http_health.py").build();
    let _sup = env.spawn();
    let first = serving(&env);
    let old = env.addr();
    let new_port = free_port();
    let new = std::net::SocketAddr::from(([127, 0, 0, 1], new_port));
    // Sample both ports back to back: at every moment one of them answers.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut gaps = 0;
            let mut samples = 0;
            while sampling.load(Ordering::Relaxed) && samples < 100_000 {
                let up =
                    |a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok();
                if !up(old) && !up(new) {
                    gaps += 1;
                }
                samples += 1;
            }
            (gaps, samples)
        })
    };
    let text = env.config_text.replace(
        &format!("127.0.0.1:{}", env.port),
        &format!("127.0.0.1:{new_port}"),
    );
    fs::write(&env.config, &text).unwrap();
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 0);
    let second = env.wait_child(&[first]);
    env.wait_for("the new port answering", DEADLINE, || {
        http_get(new, "/", secs(2.0)).is_ok_and(|(c, b)| c == 200 && b.trim() == second.to_string())
    });
    sampling.store(false, Ordering::Relaxed);
    let (gaps, samples) = sampler.join().unwrap_or((1, 0));
    if gaps > 0 {
        env.fail(format!(
            "{gaps} of {samples} samples found neither port listening"
        ));
    }
    if std::net::TcpStream::connect_timeout(&old, secs(1.0)).is_ok() {
        env.fail("the old port still accepts connections");
    }
}

#[test]
fn restart_and_log_changes_apply_with_the_child_untouched() {
    let env = Setup::new("http_health.py").build();
    let _sup = env.spawn();
    serving(&env);
    let before = child(&env);
    let text = env
        .config_text
        .replace("initial_backoff = \"100ms\"", "initial_backoff = \"3s\"")
        .replace("max_backoff = \"1s\"", "max_backoff = \"5s\"")
        .replace("dir = \"logs\"", "dir = \"logs2\"");
    fs::write(&env.config, &text).unwrap();
    let out = env.cli(&["reload"]);
    expect_code(&env, &out, 0);
    if child(&env) != before {
        env.fail("the child was restarted for a [restart]/[log] change");
    }
    // The log: new lines go to the new folder.
    env.wait_for("supervisor.log in the new folder", DEADLINE, || {
        fs::read_to_string(env.path("logs2/supervisor.log"))
            .unwrap_or_default()
            .contains("reloaded")
    });
    // The restart policy: an early death now waits the new 3 s.
    kill(before.0 as i32, libc::SIGKILL);
    let died = Instant::now();
    let next = env.wait_child(&[before.0 as i32]);
    let gap = died.elapsed();
    if gap < secs(2.5) {
        env.fail(format!(
            "child {next} started {gap:?} after the death: the old backoff"
        ));
    }
}

#[test]
fn twenty_reloads_in_a_row_leak_nothing_and_lose_no_line() {
    let env = Setup::new("numbers.py").arg("tick").arg("5").build();
    let sup = env.spawn();
    env.wait_child(&[]);
    let fds = |pid: i32| fd_targets(pid).len();
    let threads = |pid: i32| -> usize {
        fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // Settle: the first lines are in.
    env.wait_for("lines in child.log", DEADLINE, || {
        fs::read_to_string(env.log_dir.join("child.log"))
            .unwrap_or_default()
            .lines()
            .count()
            > 10
    });
    let (fd0, th0) = (fds(sup.pid()), threads(sup.pid()));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loading = Arc::new(AtomicBool::new(true));
    let load = {
        let (refused, loading, addr) = (refused.clone(), loading.clone(), env.addr());
        std::thread::spawn(move || {
            while loading.load(Ordering::Relaxed) {
                if let Err(e) = request(addr, Duration::from_secs(5)) {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    for i in 0..20 {
        let out = env.cli(&["reload"]);
        if out.code != Some(0) {
            env.fail(format!("reload {i} failed\n{out}"));
        }
    }
    loading.store(false, Ordering::Relaxed);
    let _ = load.join();
    if supervisor(&env).1 != 20 {
        env.fail(format!("reloads: {:?}", supervisor(&env)));
    }
    let (fd1, th1) = (fds(sup.pid()), threads(sup.pid()));
    if cfg!(target_os = "linux") && (fd1 > fd0 || th1 > th0) {
        env.fail(format!(
            "descriptors {fd0} -> {fd1}, threads {th0} -> {th1}"
        ));
    }
    if refused.load(Ordering::Relaxed) > 0 {
        env.fail("a connection was refused during the reloads");
    }
    // Every number the child printed is in child.log, once, in order per
    // stream (stop first: the child says where it got to).
    let out = env.cli(&["stop"]);
    expect_code(&env, &out, 0);
    let log = fs::read_to_string(env.log_dir.join("child.log")).unwrap_or_default();
    let mut numbers: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("n ").nth(1)?.get(..7)?.parse().ok())
        .collect();
    let last = env
        .events_of("last")
        .first()
        .and_then(|e| e.extra.first()?.parse::<u64>().ok())
        .unwrap_or(0);
    numbers.sort_unstable();
    numbers.dedup();
    if numbers.len() as u64 != last {
        env.fail(format!(
            "child.log holds {} distinct numbers, the child printed {last}",
            numbers.len()
        ));
    }
}

/// `supervisor run` started the way a service manager does it: the socket
/// at fd 3, `LISTEN_FDS=1`, `LISTEN_PID` its own pid.
fn run_with_socket(
    config: &std::path::Path,
    socket: &std::net::TcpListener,
) -> std::process::Child {
    let fd = socket.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec \"$0\" --config \"$1\" run",
        BIN,
        &config.to_string_lossy(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::fcntl(3, libc::F_SETFD, 0);
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

#[test]
fn a_socket_from_the_service_manager_survives_the_supervisor() {
    let env = Setup::new("http_health.py").build();
    // The "manager": binds the port and keeps the socket for good.
    let socket = std::net::TcpListener::bind(env.addr()).unwrap();
    let mut first = run_with_socket(&env.config, &socket);
    serving(&env);
    let v = env.status_json().1;
    if v["listen"]["inherited"] != true {
        env.fail(format!("want listen.inherited true: {v:#}"));
    }
    // It uses that very socket: no second bind.
    let ours = fd_targets(std::process::id() as i32)
        .into_iter()
        .find(|t| fd_targets(first.id() as i32).contains(t) && t.starts_with("socket:"));
    if cfg!(target_os = "linux") && ours.is_none() {
        env.fail("the supervisor does not hold the socket it was passed");
    }
    // A SIGKILLed supervisor, started again with the same socket: clients
    // wait in the backlog, nobody is refused.
    let hammer = Hammer::start(env.addr());
    let _ = first.kill();
    let _ = first.wait();
    let mut second = run_with_socket(&env.config, &socket);
    env.wait_for("a new supervisor serving", DEADLINE, || {
        supervisor(&env).0 == second.id() as i64 && env.status_json().1["state"] == "running"
    });
    std::thread::sleep(Duration::from_millis(300));
    let tally = hammer.finish();
    if tally.refused > 0 {
        env.fail(format!(
            "refused across the supervisor's restart: {tally:?}"
        ));
    }
    let out = env.cli(&["stop"]);
    expect_code(&env, &out, 0);
    let _ = second.wait();
}

#[test]
fn a_passed_socket_on_another_address_is_refused() {
    let env = Setup::new("http_health.py").build();
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let child = run_with_socket(&env.config, &elsewhere);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let other = elsewhere.local_addr().unwrap().to_string();
    if out.status.code() != Some(78) || !stderr.contains(&other) {
        env.fail(format!("want 78 naming {other}: {:?} {stderr}", out.status));
    }
    if env.path("ran").exists() || !env.events_of("start").is_empty() {
        env.fail("a child started");
    }
}
