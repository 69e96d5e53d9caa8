//! The supervisor as a container's entry point (SPEC.md "Containers and
//! orchestrators"): `status --check ready`, `restart.give_up_after`,
//! `log.to = "stdout"`. The same behaviours under a real engine are in
//! `tests/podman.rs`.

mod common;
use common::*;

/// `status --check ready`: silent, with only its exit code.
fn check_ready(env: &Env) -> Out {
    let out = env.cli(&["status", "--check", "ready"]);
    if !out.stdout.is_empty() {
        env.fail(format!("status --check ready printed something\n{out}"));
    }
    out
}

#[test]
fn check_ready_is_1_while_starting_0_once_ready_3_when_stopped() {
    // Never ready: `starting` for as long as the test looks.
    let starting = Setup::new("notify.py")
        .arg("never")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "1h")
        .build();
    let _sup = starting.spawn();
    starting.wait_for("the child started", DEADLINE, || {
        !starting.events_of("start").is_empty()
    });
    let out = check_ready(&starting);
    if out.code != Some(1) {
        starting.fail(format!("while starting: want exit 1\n{out}"));
    }

    let env = Setup::new("notify.py")
        .arg("ready")
        .arg("0")
        .raw("health", "notify", "true")
        .build();
    let sup = env.spawn();
    env.wait_for("status --check ready exits 0", DEADLINE, || {
        check_ready(&env).code == Some(0)
    });
    if env.events_of("ready").is_empty() {
        env.fail("ready before the child sent READY=1");
    }
    let out = check_ready(&env);
    if out.took > secs(1.0) {
        env.fail(format!("status --check ready is not quick\n{out}"));
    }
    let stop = env.cli(&["stop"]);
    if stop.code != Some(0) {
        env.fail(format!("stop failed\n{stop}"));
    }
    sup.wait_exit(DEADLINE);
    let out = check_ready(&env);
    if out.code != Some(3) {
        env.fail(format!("stopped: want exit 3\n{out}"));
    }
}

#[test]
fn check_ready_without_health_is_0_once_spawned() {
    let env = Setup::new("serve.py").build();
    let _sup = env.spawn();
    let pid = env.wait_child(&[]);
    let out = check_ready(&env);
    if out.code != Some(0) {
        env.fail(format!(
            "child {pid} runs without [health]: want exit 0\n{out}"
        ));
    }
}

/// A hook that appends `$SUPERVISOR_EVENT` to `<dir>/alerts.log`.
fn add_event_hook(env: &mut Env) {
    use std::os::unix::fs::PermissionsExt;
    let hook = env.path("hook.sh");
    let log = env.path("alerts.log");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$SUPERVISOR_EVENT\" >> '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = format!(
        "{}\n[alerts]\ncommand = [\"{}\"]\n",
        env.config_text,
        hook.display()
    );
    std::fs::write(&env.config, &text).unwrap();
    env.config_text = text;
}

#[test]
fn give_up_after_3_starts_3_children_then_exits_1_saying_why() {
    let mut env = Setup::new("crash.py")
        .raw("restart", "give_up_after", "3")
        .build();
    add_event_hook(&mut env);
    let sup = env.spawn();
    let status = sup.wait_exit(DEADLINE);
    if status.code() != Some(1) {
        env.fail(format!("want exit 1 after giving up, got {status}"));
    }
    let starts = env.events_of("start").len();
    if starts != 3 {
        env.fail(format!("want exactly 3 starts, got {starts}"));
    }
    let log = std::fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default();
    let last = log.lines().last().unwrap_or_default();
    if !last.contains("gave up: 3 failed starts in a row (restart.give_up_after = 3)")
        || !last.contains("exited with code 1")
    {
        env.fail(format!(
            "the last line of supervisor.log does not say why: {last:?}"
        ));
    }
    let err = sup.stderr();
    if !err.contains("gave up: 3 failed starts in a row") {
        env.fail(format!("stderr does not say why: {err:?}"));
    }
    let alerts = std::fs::read_to_string(env.path("alerts.log")).unwrap_or_default();
    if alerts.lines().collect::<Vec<_>>() != ["gave-up"] {
        env.fail(format!("want one gave-up alert, got {alerts:?}"));
    }
    let at = log.find("alert gave-up: started");
    let end = log.rfind("gave up: 3 failed starts in a row");
    if !matches!((at, end), (Some(a), Some(b)) if a < b) {
        env.fail("the gave-up alert was not raised before the supervisor's last line");
    }
    if !env.child_processes().is_empty() {
        env.fail("a child outlived the supervisor that gave up");
    }
}

#[test]
fn give_up_after_0_never_gives_up() {
    let env = Setup::new("crash.py")
        .raw("restart", "give_up_after", "0")
        .restart("initial_backoff", "20ms")
        .restart("max_backoff", "50ms")
        .build();
    let sup = env.spawn();
    env.wait_for("more than 5 starts", DEADLINE, || {
        env.events_of("start").len() > 5
    });
    if let Some(st) = sup.exited() {
        env.fail(format!(
            "the supervisor exited ({st}) with give_up_after = 0"
        ));
    }
}

#[test]
fn log_to_stdout_child_writes_into_our_stdout_and_stderr_no_files() {
    // log.dir names a folder that cannot be created: never used, never
    // checked, with log.to = "stdout".
    let env = Setup::new("chatty.py")
        .arg("40")
        .set("log", "to", "stdout")
        .set("log", "dir", "/proc/no-logs-here")
        .build();
    let sup = env.spawn();
    let pid = env.wait_child(&[]);
    if let Err(e) = request(env.addr(), DEADLINE) {
        env.fail(format!("no answer from the child: {e}"));
    }
    let tag = format!("chatty-{pid}-1 ");
    env.wait_for(
        "the child's line on the supervisor's stdout and stderr",
        DEADLINE,
        || sup.stdout().contains(&tag) && sup.stderr().contains(&tag),
    );
    // The child writes into our descriptors itself: no pipe to us.
    let ours: Vec<String> = ["1", "2"]
        .iter()
        .filter_map(|fd| std::fs::read_link(format!("/proc/{}/fd/{fd}", sup.pid())).ok())
        .map(|p| p.display().to_string())
        .collect();
    let its: Vec<String> = ["1", "2"]
        .iter()
        .filter_map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
        .map(|p| p.display().to_string())
        .collect();
    if ours != its || ours.len() != 2 {
        env.fail(format!(
            "the child's stdout/stderr {its:?} are not the supervisor's {ours:?}"
        ));
    }
    let reopen = env.cli(&["reopen-logs"]);
    if reopen.code != Some(0) {
        env.fail(format!("reopen-logs\n{reopen}"));
    }
    env.wait_for("SIGHUP said to do nothing", DEADLINE, || {
        sup.stderr()
            .contains("supervisor: INFO SIGHUP: nothing to reopen: log.to = \"stdout\"")
    });
    let logs = env.cli(&["logs"]);
    if logs.code != Some(4) || !logs.stderr.contains("log.to = \"stdout\"") {
        env.fail(format!(
            "logs: want exit 4 saying where the lines go\n{logs}"
        ));
    }
    if env.cli(&["stop"]).code != Some(0) {
        env.fail("stop failed");
    }
    let st = sup.wait_exit(DEADLINE);
    if st.code() != Some(0) {
        env.fail(format!("want exit 0 after stop, got {st}"));
    }
    // Our own lines: on stderr, every one prefixed; none on stdout.
    let err = sup.stderr();
    let ours: Vec<&str> = err.lines().filter(|l| !l.starts_with("chatty-")).collect();
    if ours.is_empty() || ours.iter().any(|l| !l.starts_with("supervisor: ")) {
        env.fail(format!(
            "supervisor lines on stderr not all prefixed: {ours:#?}"
        ));
    }
    if !err.contains(&format!("supervisor: INFO started child {pid}")) {
        env.fail(format!("stderr does not say the child started: {err}"));
    }
    let out = sup.stdout();
    if out.lines().any(|l| !l.starts_with("chatty-")) {
        env.fail(format!(
            "the supervisor wrote its own lines on stdout: {out}"
        ));
    }
    if env.path("logs").exists() || env.path("child.log").exists() {
        env.fail("a log folder or file was created");
    }
}
