//! Handover (`[restart] overlap`): the new child is ready before the old
//! one stops. Real processes: `handover.py` takes its time to become ready
//! (READY=1), serves HTTP from threads and drains on SIGTERM; a client
//! connects every few milliseconds throughout and measures each wait.

mod common;

use common::*;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the client loop saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    ok: usize,
    refused: usize,
    reset: usize,
    other: Vec<String>,
    /// The longest wait for one answer, connect to the last byte.
    longest: Duration,
    /// The pids that answered.
    pids: Vec<i32>,
}

/// A client connecting every `every` (each request on its own thread, as
/// independent clients would), until stopped.
struct Clients(Background<Seen>);

fn get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let timeout = Duration::from_secs(15);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    match buf.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.trim().to_string()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer {buf:?}"),
        )),
    }
}

impl Clients {
    fn start(addr: SocketAddr, every: Duration) -> Clients {
        Clients(Background::start(move |s| {
            let t = Arc::new(Mutex::new(Seen::default()));
            let inflight = Arc::new(AtomicUsize::new(0));
            let mut handles = Vec::new();
            while !s.load(Ordering::Relaxed) {
                // Bounded: a stalled service must not pile up threads.
                if inflight.load(Ordering::Relaxed) < 200 {
                    let (t, inflight) = (t.clone(), inflight.clone());
                    inflight.fetch_add(1, Ordering::Relaxed);
                    handles.push(thread::spawn(move || {
                        let began = Instant::now();
                        let r = get(addr, "/");
                        let took = began.elapsed();
                        let mut t = t.lock().unwrap();
                        t.longest = t.longest.max(took);
                        match r {
                            Ok(body) => {
                                t.ok += 1;
                                if let Ok(pid) = body.parse::<i32>() {
                                    if !t.pids.contains(&pid) {
                                        t.pids.push(pid);
                                    }
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                                t.refused += 1
                            }
                            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => t.reset += 1,
                            Err(e) => t.other.push(format!("{:?}: {e}", e.kind())),
                        }
                        inflight.fetch_sub(1, Ordering::Relaxed);
                    }));
                }
                handles.retain(|h| !h.is_finished());
                thread::sleep(every);
            }
            for h in handles {
                let _ = h.join();
            }
            let seen = t.lock().unwrap().clone();
            seen
        }))
    }

    fn finish(self) -> Seen {
        self.0.finish()
    }
}

/// Samples how many of the test's children are alive, until stopped.
struct Census(Background<usize>);

impl Census {
    fn start(script: String, dir: String) -> Census {
        Census(Background::start(move |s| {
            let mut most = 0;
            while !s.load(Ordering::Relaxed) {
                let n = all_pids()
                    .into_iter()
                    .filter(|&p| {
                        let argv = cmdline(p);
                        pid_alive(p)
                            && argv.iter().any(|a| a == &script)
                            && argv.iter().any(|a| a == &dir)
                    })
                    .count();
                most = most.max(n);
                thread::sleep(Duration::from_millis(20));
            }
            most
        }))
    }

    fn finish(self) -> usize {
        self.0.finish()
    }
}

fn setup(ready_after: &str, overlap: bool) -> Env {
    Setup::new("handover.py")
        .arg("ready")
        .arg(ready_after)
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "10s")
        .set("child", "stop_timeout", "5s")
        .raw("restart", "overlap", if overlap { "true" } else { "false" })
        .build()
}

/// Waits for the first child to be running and ready.
fn first_ready(env: &Env) -> i32 {
    env.wait_value("the first child ready", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running" && v["child"]["ready"] == true)
            .then(|| v["child"]["pid"].as_i64().map(|p| p as i32))
            .flatten()
    })
}

/// `restart` three times under the client loop: what the clients saw and
/// the most children alive at once.
fn three_restarts(env: &Env) -> (Seen, usize, Vec<i32>) {
    let first = first_ready(env);
    let census = Census::start(env.script.clone(), env.dir_s.clone());
    let clients = Clients::start(env.addr(), Duration::from_millis(5));
    thread::sleep(Duration::from_millis(300));
    let mut served = vec![first];
    for _ in 0..3 {
        let out = env.cli_with(&env.config, &["restart"], secs(60.0));
        if out.code != Some(0) {
            env.fail(format!("restart did not exit 0:\n{out}"));
        }
        let pid = env.child_pid().unwrap_or(0);
        served.push(pid);
        thread::sleep(Duration::from_millis(300));
    }
    let seen = clients.finish();
    (seen, census.finish(), served)
}

#[test]
fn overlapped_restarts_make_clients_wait_no_longer_than_stop_first_ones() {
    // The control first: stop-first restarts stall clients for the new
    // child's whole start-up (1.5 s).
    let control = setup("1.5", false);
    let _sup = control.spawn();
    let (before, _, _) = three_restarts(&control);
    if before.longest < Duration::from_millis(1000) {
        control.fail(format!(
            "the control should stall clients for the start-up: {before:?}"
        ));
    }
    drop(_sup);

    let env = setup("1.5", true);
    let _sup = env.spawn();
    let (seen, most, served) = three_restarts(&env);
    let ctx = format!("overlap: {seen:?}\ncontrol: {before:?}\nmost children: {most}");
    eprintln!("{ctx}");
    if seen.refused != 0 || seen.reset != 0 || !seen.other.is_empty() {
        env.fail(format!("clients refused, reset or failed\n{ctx}"));
    }
    // The bound: well under the start-up, and under half the control's
    // stall (on a loaded 2-core machine a thread may wait its turn for a
    // while; a stall for the start-up would be 1.5 s or more).
    if seen.longest >= Duration::from_millis(500) || seen.longest * 2 >= before.longest {
        env.fail(format!("a client waited too long\n{ctx}"));
    }
    if most > 2 {
        env.fail(format!("more than two children alive at once\n{ctx}"));
    }
    // Every new child answered, and each restart brought a new one.
    for pid in &served {
        if !seen.pids.contains(pid) {
            env.fail(format!(
                "child {pid} never answered (served {served:?})\n{ctx}"
            ));
        }
    }
    let mut distinct = served.clone();
    distinct.dedup();
    if distinct.len() != 4 {
        env.fail(format!(
            "want four different children, got {served:?}\n{ctx}"
        ));
    }
    if env.child_processes().len() != 1 {
        env.fail(format!("want one child left\n{ctx}"));
    }
}

/// A supervisor with overlap whose first child is ready: (env, supervisor, first pid).
fn ready_env(start_timeout: &str) -> Env {
    Setup::new("handover.py")
        .arg("ready")
        .arg("0.2")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", start_timeout)
        .set("child", "stop_timeout", "3s")
        .raw("restart", "overlap", "true")
        .build()
}

fn supervisor_log(env: &Env) -> String {
    std::fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default()
}

/// `restart` in the background (it waits for the outcome).
fn restart_in_background(env: &Env) -> thread::JoinHandle<Out> {
    let config = env.config.display().to_string();
    thread::spawn(move || {
        run_cmd(
            BIN,
            &["--config".into(), config, "restart".into()],
            secs(60.0),
        )
        .expect("restart runs")
    })
}

/// The handover object of `status --json` once it is in `phase`.
fn wait_handover(env: &Env, phase: &str) -> serde_json::Value {
    env.wait_value(&format!("a handover {phase}"), DEADLINE, || {
        let (_, v) = env.status_json();
        (v["handover"]["phase"] == phase).then_some(v)
    })
}

/// The `$NOTIFY_SOCKET` each child was given, in the order they started.
fn notify_sockets(env: &Env) -> Vec<(i32, String)> {
    env.events_of("notify-socket")
        .into_iter()
        .map(|e| (e.pid, e.extra.first().cloned().unwrap_or_default()))
        .collect()
}

/// Waits until the serving child `pid` has pinged its watchdog for `n`
/// more seconds, then checks it is still the one serving: its pings are
/// heard (one missed interval would have restarted it).
fn pings_are_heard(env: &Env, pid: i32, n: usize) {
    let before = env
        .events_of("pinged")
        .iter()
        .filter(|e| e.pid == pid)
        .count();
    env.wait_for(
        &format!("child {pid} pinging for {n} more seconds"),
        DEADLINE,
        || {
            env.events_of("pinged")
                .iter()
                .filter(|e| e.pid == pid)
                .count()
                >= before + n
        },
    );
    let (_, v) = env.status_json();
    if v["child"]["pid"] != pid || v["state"] != "running" {
        env.fail(format!(
            "child {pid} pinged every 0.1 s, but is not the one running:\n{v:#}"
        ));
    }
}

/// Each child of a handover reports to a notify socket of its own (so
/// where the kernel does not say who sent a datagram, macOS, the socket
/// does): the new child gets the other name in the same folder; once it
/// serves, its socket is the serving one (its watchdog pings keep it, a
/// `reload` hands that socket over, the next handover's child takes the
/// first name again), and the old child's file goes with the old child.
#[test]
fn each_child_of_a_handover_reports_to_a_notify_socket_of_its_own() {
    let env = Setup::new("handover.py")
        .arg("ready")
        .arg("0.2")
        .arg("ping")
        .arg("0.1")
        .raw("health", "notify", "true")
        .set("health", "watchdog", "500ms")
        .set("health", "start_timeout", "10s")
        .set("child", "stop_timeout", "3s")
        .raw("restart", "overlap", "true")
        .build();
    let _sup = env.spawn();
    let first = first_ready(&env);
    pings_are_heard(&env, first, 1);
    let restart = |n: usize| {
        let out = env.cli_with(&env.config, &["restart"], secs(60.0));
        if out.code != Some(0) {
            env.fail(format!("restart {n} did not exit 0:\n{out}"));
        }
        env.child_pid().unwrap_or(0)
    };
    let gone = |path: &str| {
        env.wait_for(
            &format!("{path} removed with the old child"),
            DEADLINE,
            || !std::path::Path::new(path).exists(),
        )
    };

    let second = restart(1);
    let sockets = notify_sockets(&env);
    let [(p1, s1), (p2, s2)] = &sockets[..] else {
        env.fail(format!("two children should have started: {sockets:?}"));
    };
    assert_eq!((*p1, *p2), (first, second), "{sockets:?}");
    assert_ne!(
        s1, s2,
        "the new child shares the serving child's notify socket"
    );
    let (f1, f2) = (std::path::Path::new(s1), std::path::Path::new(s2));
    assert_eq!(f1.parent(), f2.parent(), "{sockets:?}");
    gone(s1);
    // The new child's socket serves now: its pings are heard, across a
    // reload too (the new image is handed that socket).
    pings_are_heard(&env, second, 2);
    let out = env.cli_with(&env.config, &["reload"], secs(60.0));
    if out.code != Some(0) {
        env.fail(format!("reload did not exit 0:\n{out}"));
    }
    pings_are_heard(&env, second, 2);

    let third = restart(2);
    let sockets = notify_sockets(&env);
    assert_eq!(sockets.len(), 3, "{sockets:?}");
    assert_eq!(sockets[2], (third, s1.clone()), "the first name again");
    gone(s2);
    pings_are_heard(&env, third, 2);
    if !supervisor_log(&env).contains("handover done") || supervisor_log(&env).contains("watchdog")
    {
        env.fail("the log should have two handovers done and no watchdog restart");
    }
    let out = env.cli(&["stop"]);
    assert_eq!(out.code, Some(0), "{out}");
    for s in [s1, s2] {
        assert!(!std::path::Path::new(s).exists(), "{s} left after stop");
    }
}

/// A stranger's datagram (this test: not in either child's group) to the
/// socket `path`; then waits for the supervisor to say it ignored it.
#[cfg(target_os = "linux")]
fn stranger_sends(env: &Env, path: &str, msg: &str) {
    let stranger = std::os::unix::net::UnixDatagram::unbound().unwrap();
    stranger
        .send_to(msg.as_bytes(), path)
        .expect("send to the notify socket");
    env.wait_for(
        &format!("the supervisor ignoring a stranger's {msg:?} on {path}"),
        DEADLINE,
        || supervisor_log(env).contains("ignored a notify message"),
    );
}

/// Linux: the new child's own notify socket says who sent each datagram,
/// as the first does: a stranger's READY=1 there while the new child
/// starts is ignored (it would have ended the handover for a child that
/// never said it), and the handover fails as it should.
#[cfg(target_os = "linux")]
#[test]
fn a_strangers_ready_on_the_new_childs_socket_is_ignored() {
    // Long enough that the new child's socket is still there when the
    // stranger sends, on a loaded machine too.
    let env = ready_env("10s");
    let _sup = env.spawn();
    let old = first_ready(&env);
    std::fs::write(env.path("next-mode"), "never").unwrap();
    let restart = restart_in_background(&env);
    wait_handover(&env, "starting");
    let sockets = env.wait_value("the new child's notify socket", DEADLINE, || {
        let s = notify_sockets(&env);
        (s.len() == 2).then(|| s[1].1.clone())
    });
    stranger_sends(&env, &sockets, "READY=1");
    let out = restart.join().unwrap();
    if out.code != Some(1) || !out.stderr.contains("was not ready within start_timeout") {
        env.fail(format!("a stranger's READY=1 ended the handover:\n{out}"));
    }
    let (_, v) = env.status_json();
    if v["child"]["pid"] != old {
        env.fail(format!("child {old} should serve on: {v:#}"));
    }
}

/// Linux: once the new child serves, its socket is the serving one, and
/// it still says who sent each datagram: a stranger's STATUS= there is
/// ignored, as on the first child's socket.
#[cfg(target_os = "linux")]
#[test]
fn a_strangers_status_on_the_socket_serving_after_a_handover_is_ignored() {
    let env = ready_env("10s");
    let _sup = env.spawn();
    first_ready(&env);
    let out = env.cli_with(&env.config, &["restart"], secs(60.0));
    if out.code != Some(0) {
        env.fail(format!("restart did not exit 0:\n{out}"));
    }
    let sockets = notify_sockets(&env);
    let [_, (new, serving)] = &sockets[..] else {
        env.fail(format!("two children should have started: {sockets:?}"));
    };
    stranger_sends(&env, serving, "STATUS=forged by a stranger");
    let (_, v) = env.status_json();
    if v["child"]["pid"] != *new || v["child"]["status"] == "forged by a stranger" {
        env.fail(format!("a stranger's STATUS= counted: {v:#}"));
    }
}

/// A probe started before a handover (nobody asked then who takes its
/// connection) and answered by the serving child while the new one starts
/// is not the new child's answer. Here the new child never answers at
/// all: the handover must fail after start_timeout with the old child
/// serving on. (Taken for the new child's, it ended the handover at once:
/// the unready child served and the old one was stopped.)
#[test]
fn a_probe_started_before_a_handover_is_not_taken_for_the_new_childs_answer() {
    let env = Setup::new("handover.py")
        .arg("ready")
        .arg("0.2")
        .raw("health", "notify", "true")
        .set("health", "http", "/slow?1")
        .set("health", "interval", "3s")
        .set("health", "timeout", "5s")
        .set("health", "start_timeout", "4s")
        .set("child", "stop_timeout", "3s")
        .raw("restart", "overlap", "true")
        .build();
    let _sup = env.spawn();
    let old = first_ready(&env);
    std::fs::write(env.path("next-mode"), "never").unwrap();
    // A probe in flight: the serving child has read it and answers in 1 s,
    // after the restart below has started the new child.
    let before = env.events_of("slow-begin").len();
    env.wait_for("a probe in flight", DEADLINE, || {
        env.events_of("slow-begin").len() > before
    });
    let out = env.cli_with(&env.config, &["restart"], secs(60.0));
    if out.code != Some(1) || !out.stderr.contains("was not ready within start_timeout") {
        env.fail(format!(
            "the serving child's answer to a probe from before the handover was taken for \
             the new child's:\n{out}"
        ));
    }
    let (_, v) = env.status_json();
    if v["child"]["pid"] != old || env.child_processes() != [old] {
        env.fail(format!("child {old} should serve on, alone: {v:#}"));
    }
}

#[test]
fn a_new_child_that_exits_or_is_never_ready_leaves_the_old_one_serving() {
    for (mode, why) in [
        ("exit 0.3 3", "exited with code 3 before it was ready"),
        ("never", "was not ready within start_timeout (2s)"),
    ] {
        let env = ready_env("2s");
        let _sup = env.spawn();
        let old = first_ready(&env);
        std::fs::write(env.path("next-mode"), mode).unwrap();
        let clients = Clients::start(env.addr(), Duration::from_millis(5));
        let out = env.cli_with(&env.config, &["restart"], secs(60.0));
        let seen = clients.finish();
        if out.code != Some(1) || !out.stderr.contains(why) {
            env.fail(format!("{mode}: want exit 1 saying {why:?}:\n{out}"));
        }
        if seen.refused != 0 || seen.reset != 0 || !seen.other.is_empty() || seen.pids != [old] {
            env.fail(format!("{mode}: clients: {seen:?} (old child {old})"));
        }
        let (code, v) = env.status_json();
        if code != 0 || v["child"]["pid"] != old || !v["handover"].is_null() {
            env.fail(format!("{mode}: the old child should serve on: {v:#}"));
        }
        let alive = env.child_processes();
        if alive != [old] {
            env.fail(format!("{mode}: want only {old} alive, got {alive:?}"));
        }
        let log = supervisor_log(&env);
        if !log.contains("handover failed") || !log.contains(why) {
            env.fail(format!("{mode}: the log does not say why"));
        }
        // A later restart works.
        std::fs::write(env.path("next-mode"), "ready 0.2").unwrap();
        let out = env.cli_with(&env.config, &["restart"], secs(60.0));
        if out.code != Some(0) {
            env.fail(format!("{mode}: the next restart failed:\n{out}"));
        }
    }
}

#[test]
fn a_new_child_that_cannot_even_be_spawned_leaves_the_old_one_running_in_status() {
    // The child is started through a launcher in the temp dir, removed
    // once the first child runs: the new child of the handover cannot be
    // spawned at all (an executable that vanished before a deploy's
    // restart).
    let mut env = ready_env("5s");
    let launcher = env.path("launch");
    std::fs::write(&launcher, "#!/bin/sh\nexec \"$@\"\n").unwrap();
    std::fs::set_permissions(
        &launcher,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let argv: Vec<String> = [
        launcher.display().to_string(),
        python().into(),
        env.script.clone(),
        env.dir_s.clone(),
        "ready".into(),
        "0.2".into(),
    ]
    .into();
    env.set_command(&argv);
    let _sup = env.spawn();
    let old = first_ready(&env);
    std::fs::remove_file(&launcher).unwrap();
    let clients = Clients::start(env.addr(), Duration::from_millis(5));
    let out = env.cli_with(&env.config, &["restart"], secs(60.0));
    let seen = clients.finish();
    let why = "could not be started";
    let serves_on = format!("child {old} serves on");
    if out.code != Some(1)
        || !out.stderr.contains(why)
        || !out.stderr.contains("launch")
        || !out.stderr.contains(&serves_on)
    {
        env.fail(format!(
            "want exit 1 saying {why:?} and {serves_on:?}:\n{out}"
        ));
    }
    if seen.refused != 0 || seen.reset != 0 || !seen.other.is_empty() || seen.pids != [old] {
        env.fail(format!("clients: {seen:?} (old child {old})"));
    }
    // `status --json`: the old child runs, ready, with no spawn error of
    // its own; the failed handover is the restart's outcome.
    let (code, v) = env.status_json();
    let restart = &v["supervisor"]["restart"];
    if code != 0
        || v["state"] != "running"
        || v["child"]["pid"] != old
        || v["child"]["ready"] != true
        || !v["child"]["spawn_error"].is_null()
        || !v["handover"].is_null()
        || restart["ok"] != false
        || !restart["message"].as_str().is_some_and(|m| {
            m.starts_with("handover failed: ") && m.contains(why) && m.contains(&serves_on)
        })
        || v["counters"]["handovers"]["failed"] != 1
    {
        env.fail(format!(
            "status --json should show {old} running and the failed handover: {v:#}"
        ));
    }
    // The text: the child running, the failed restart with its reason, no
    // "spawn error".
    let text = env.cli(&["status"]);
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("last restart: failed"))
        .unwrap_or_default()
        .to_owned();
    if text.code != Some(0)
        || !text
            .stdout
            .contains(&format!("child:        pid {old}, up"))
        || text.stdout.contains("spawn error")
        || !line.contains("handover failed: ")
        || !line.contains(why)
    {
        env.fail(format!(
            "status should show {old} running and the failed handover:\n{text}"
        ));
    }
    if env.child_processes() != [old] {
        env.fail(format!(
            "want only {old} alive, got {:?}",
            env.child_processes()
        ));
    }
    let log = supervisor_log(&env);
    if !log.contains("handover failed: the new child could not be started") {
        env.fail("the log does not say the handover failed");
    }
}

/// A request to the serving child that takes `secs` to answer, once the
/// child has begun on it.
fn hold_a_slow_request(env: &Env, secs: u32) -> thread::JoinHandle<io::Result<String>> {
    let addr = env.addr();
    let slow = thread::spawn(move || get(addr, &format!("/slow?{secs}")));
    env.wait_for("the old child holds the slow request", DEADLINE, || {
        !env.events_of("slow-begin").is_empty()
    });
    slow
}

/// `restart` to a new child ready 0.3 s after its start; it must succeed.
fn restart_to_a_quick_child(env: &Env) -> Out {
    std::fs::write(env.path("next-mode"), "ready 0.3").unwrap();
    let out = env.cli_with(&env.config, &["restart"], secs(60.0));
    if out.code != Some(0) {
        env.fail(format!("restart failed:\n{out}"));
    }
    out
}

#[test]
fn a_slow_request_held_by_the_old_child_is_answered_in_full() {
    let env = ready_env("10s");
    let _sup = env.spawn();
    let old = first_ready(&env);
    let slow = hold_a_slow_request(&env, 2);
    restart_to_a_quick_child(&env);
    match slow.join().unwrap() {
        Ok(body) if body == old.to_string() => {}
        other => env.fail(format!(
            "the slow request was not answered by {old}: {other:?}"
        )),
    }
    // The old child got the stop signal only once the new one was ready,
    // and drained before it exited.
    let ready_new = env
        .events_of("ready")
        .into_iter()
        .find(|e| e.pid != old)
        .map(|e| e.t);
    let term_old = env.events_of("term").into_iter().find(|e| e.pid == old);
    let drained = env.events_of("drained").into_iter().any(|e| e.pid == old);
    match (ready_new, term_old) {
        (Some(r), Some(t)) if t.t >= r && drained => {}
        _ => env.fail("the old child was stopped before the new one was ready, or did not drain"),
    }
}

#[test]
fn during_a_handover_status_says_so_and_restart_and_reload_are_refused() {
    let env = Setup::new("handover.py")
        .arg("ready")
        .arg("0.2")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "20s")
        .set("child", "stop_timeout", "3s")
        .raw("restart", "overlap", "true")
        .build();
    let _sup = env.spawn();
    let old = first_ready(&env);
    std::fs::write(env.path("next-mode"), "ready 2.5").unwrap();
    let first = restart_in_background(&env);
    let v = wait_handover(&env, "starting");
    let new = v["handover"]["new_pid"].as_i64().unwrap_or(0) as i32;
    if v["child"]["pid"] != old || v["handover"]["old_pid"] != old || new == 0 || new == old {
        env.fail(format!("while starting, child is the old one: {v:#}"));
    }
    if v["handover"]["started_at"].as_str().is_none() {
        env.fail(format!("no started_at: {v:#}"));
    }
    let text = env.cli(&["status"]);
    let want = format!("handover:     starting new child {new} (old {old} serving)");
    if !text.stdout.contains(&want) {
        env.fail(format!("status text lacks {want:?}:\n{text}"));
    }
    // The same words as `status` (one function makes both).
    let again = env.cli(&["restart"]);
    let busy =
        format!("a handover is already in progress (starting new child {new} (old {old} serving))");
    if again.code != Some(1) || !again.stderr.contains(&busy) {
        env.fail(format!("a second restart should be refused:\n{again}"));
    }
    let reload = env.cli(&["reload"]);
    if reload.code != Some(1) || !reload.stderr.contains("a handover is in progress") {
        env.fail(format!("reload should be refused:\n{reload}"));
    }
    // SIGUSR1 during one is logged and ignored.
    let sup_pid = v["supervisor"]["pid"].as_i64().unwrap() as i32;
    kill(sup_pid, libc::SIGUSR1);
    env.wait_for("the ignored SIGUSR1 logged", DEADLINE, || {
        supervisor_log(&env).contains("restart ignored: a handover is in progress")
    });
    let out = first.join().unwrap();
    if out.code != Some(0) || !out.stdout.contains(&format!("child {new}")) {
        env.fail(format!("the first restart should succeed:\n{out}"));
    }
    let (_, v) = env.status_json();
    if v["child"]["pid"] != new || !v["handover"].is_null() || env.child_processes() != [new] {
        env.fail(format!("after it, only the new child: {v:#}"));
    }
}

#[test]
fn stop_during_a_handover_stops_both_children() {
    let env = ready_env("20s");
    let sup = env.spawn();
    let old = first_ready(&env);
    std::fs::write(env.path("next-mode"), "ready 5").unwrap();
    let restart = restart_in_background(&env);
    let v = wait_handover(&env, "starting");
    let new = v["handover"]["new_pid"].as_i64().unwrap_or(0) as i32;
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop failed:\n{out}"));
    }
    sup.wait_exit(DEADLINE);
    if pid_alive(old) || pid_alive(new) || !env.child_processes().is_empty() {
        env.fail(format!("both {old} and {new} should be gone"));
    }
    let out = restart.join().unwrap();
    if out.code == Some(0) {
        env.fail(format!(
            "the restart cut by the stop cannot succeed:\n{out}"
        ));
    }
}

#[test]
fn a_supervisor_killed_mid_handover_leaves_nothing_the_next_one_does_not_stop() {
    let env = ready_env("20s");
    let sup = env.spawn();
    let old = first_ready(&env);
    std::fs::write(env.path("next-mode"), "ready 30").unwrap();
    let _restart = restart_in_background(&env);
    let v = wait_handover(&env, "starting");
    let new = v["handover"]["new_pid"].as_i64().unwrap_or(0) as i32;
    // Its SIGTERM handler is in place (the death signal of a killed
    // supervisor then only asks it to stop, once it has started serving).
    env.wait_for("the new child started", DEADLINE, || {
        env.events_of("start").iter().any(|e| e.pid == new)
    });
    let state = env.state().unwrap_or_default();
    if state["handover"]["second"]["pgid"] != new {
        env.fail(format!(
            "state.json does not name the second child: {state:#}"
        ));
    }
    sup.kill9();
    sup.wait_exit(DEADLINE);
    let _next = env.spawn();
    let third = env.wait_value("one new child tree serving", DEADLINE, || {
        let (_, v) = env.status_json();
        let pid = v["child"]["pid"].as_i64()? as i32;
        (v["state"] == "running" && !pid_alive(old) && !pid_alive(new) && pid != old && pid != new)
            .then_some(pid)
    });
    env.wait_for("one child tree", DEADLINE, || {
        env.child_processes() == [third]
    });
    if !supervisor_log(&env).contains("second child of an earlier supervisor's handover") {
        env.fail("the log does not say the second child was stopped");
    }
}

/// Whether `sig` is pending for process `pid` (`ShdPnd` in
/// `/proc/PID/status`: sent, not taken yet).
#[cfg(target_os = "linux")]
fn signal_pending(pid: i32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (sig - 1)) != 0)
}

/// `restart` decides nothing from `state.json` (which may be older than
/// its signal): the supervisor answers the request it takes. Here the
/// record `restart` reads is the one from just before a handover began
/// (the supervisor is held stopped so that it cannot rewrite it), as a
/// `restart` that read the record an instant before another request began
/// the handover would see it: its request arrives during the handover and
/// must be refused, not answered with the other restart's outcome.
#[cfg(target_os = "linux")]
#[test]
fn a_restart_that_read_a_record_from_before_the_handover_is_still_refused() {
    let env = ready_env("20s");
    let _sup = env.spawn();
    let old = first_ready(&env);
    let before = std::fs::read(env.state_dir.join("state.json")).unwrap();
    std::fs::write(env.path("next-mode"), "ready 3").unwrap();
    let first = restart_in_background(&env);
    let v = wait_handover(&env, "starting");
    let sup_pid = v["supervisor"]["pid"].as_i64().unwrap() as i32;
    kill(sup_pid, libc::SIGSTOP);
    std::fs::write(env.state_dir.join("state.json"), &before).unwrap();
    let second = restart_in_background(&env);
    let sent = wait_until(DEADLINE, || signal_pending(sup_pid, libc::SIGUSR1));
    kill(sup_pid, libc::SIGCONT);
    if sent.is_err() {
        env.fail("the second restart never signalled the supervisor");
    }
    let out = second.join().unwrap();
    if out.code != Some(1) || !out.stderr.contains("a handover is already in progress") {
        env.fail(format!(
            "a restart asked during the handover should be refused:\n{out}"
        ));
    }
    let out = first.join().unwrap();
    if out.code != Some(0) {
        env.fail(format!("the first restart should succeed:\n{out}"));
    }
    let (_, v) = env.status_json();
    if v["child"]["pid"] == old || !v["handover"].is_null() {
        env.fail(format!("want the new child alone: {v:#}"));
    }
}

/// Overlap with `max_memory` 96 MiB, checked every 100 ms.
fn memory_env() -> Env {
    Setup::new("handover.py")
        .arg("ready")
        .arg("0.2")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "20s")
        .set("child", "stop_timeout", "30s")
        .child("max_memory", "96MiB")
        .child("max_memory_check", "100ms")
        .raw("restart", "overlap", "true")
        .build()
}

#[test]
fn a_new_child_past_max_memory_fails_the_handover_and_the_old_serves_on() {
    let env = memory_env();
    let _sup = env.spawn();
    let old = first_ready(&env);
    // The new child takes 160 MiB at once and would be ready only in 10 s.
    std::fs::write(env.path("next-mode"), "ready 10 grow 160").unwrap();
    let out = env.cli_with(&env.config, &["restart"], secs(60.0));
    let why = "above max_memory (96 MiB), before it was ready";
    if out.code != Some(1) || !out.stderr.contains(why) {
        env.fail(format!("want exit 1 saying {why:?}:\n{out}"));
    }
    if out.took > secs(8.0) {
        env.fail(format!(
            "it should fail at a check, not by a timeout:\n{out}"
        ));
    }
    let (_, v) = env.status_json();
    if v["child"]["pid"] != old || !v["handover"].is_null() {
        env.fail(format!("the old child should serve on: {v:#}"));
    }
    env.wait_for("only the old child", DEADLINE, || {
        env.child_processes() == [old]
    });
    match get(env.addr(), "/") {
        Ok(body) if body == old.to_string() => {}
        other => env.fail(format!("the old child does not answer: {other:?}")),
    }
    let log = supervisor_log(&env);
    if !log.contains("handover failed: new child") || !log.contains(why) {
        env.fail("the log does not say the handover failed for memory");
    }
}

#[test]
fn an_old_child_past_max_memory_while_it_drains_is_killed_then() {
    let env = memory_env();
    // The old child takes 160 MiB on SIGTERM, and holds a 20 s request (it
    // would drain for 20 s); the new child is a plain one.
    std::fs::write(env.path("next-mode"), "ready 0.2 grow-on-term 160").unwrap();
    let _sup = env.spawn();
    let old = first_ready(&env);
    let slow = hold_a_slow_request(&env, 20);
    let out = restart_to_a_quick_child(&env);
    if out.took > secs(10.0) {
        env.fail(format!(
            "the old child should be killed at a check, not drain for 20 s:\n{out}"
        ));
    }
    if pid_alive(old) {
        env.fail(format!("old child {old} still alive"));
    }
    let log = supervisor_log(&env);
    let want = format!("memory: old child {old} uses ");
    if !log.contains(&want) || !log.contains("while it drains, above max_memory (96 MiB)") {
        env.fail(format!("the log does not say {want}..."));
    }
    // Its request was cut with it.
    if let Ok(Ok(body)) = slow.join() {
        env.fail(format!("the killed old child answered: {body:?}"));
    }
}
