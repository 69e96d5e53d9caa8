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
