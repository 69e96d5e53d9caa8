//! examples/session_manager/app.py (uvicorn started in code on fd 3, the
//! topic created in the ASGI lifespan) under the supervisor, through a
//! crash loop, a killed child, killed and duplicated supervisors and a
//! direct start without the supervisor: many start-ups, exactly one topic.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::process::{Child, Command, Stdio};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/session_manager");

/// The topic stub, killed by pid when dropped.
struct Stub(Child);

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn topics(env: &Env) -> Vec<String> {
    fs::read_to_string(env.path("topics.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn startups(env: &Env) -> usize {
    let log = fs::read_to_string(env.log_dir.join("child.log")).unwrap_or_default();
    log.matches("Starting Claude Session Manager").count()
}

/// The running child's answer, once it serves and its start-up is done.
fn serving(env: &Env, not: &[i32]) -> (i32, Value) {
    wait_serving(env, not, "a session manager", |pid, body| {
        let j: Value = serde_json::from_str(body).ok()?;
        (j["pid"] == pid).then_some(j)
    })
}

/// Starts `n` supervisors at once; all but one exit 0. Returns the winner.
fn race<'a>(env: &'a Env, n: usize) -> Supervisor<'a> {
    let mut copies: Vec<Supervisor> = (0..n).map(|_| env.spawn()).collect();
    env.wait_for(&format!("{} of {n} copies exit", n - 1), DEADLINE, || {
        copies.iter().filter(|s| s.exited().is_some()).count() >= n - 1
    });
    for s in copies.iter().filter(|s| s.exited().is_some()) {
        if s.exited().unwrap().code() != Some(0) {
            env.fail(format!("a losing copy failed: {}", s.stderr()));
        }
    }
    let i = copies.iter().position(|s| s.exited().is_none()).unwrap();
    copies.swap_remove(i)
}

#[test]
fn session_manager_example_creates_exactly_one_topic() {
    let venv_python = venv_bin("python");
    let mut env = Setup::new("serve.py")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "400ms")
        .build();

    let port_file = env.path("stub.port");
    let stub = Stub(
        Command::new(python())
            .arg(format!("{EXAMPLE}/topic_stub.py"))
            .args(["--port", "0", "--log"])
            .arg(env.path("topics.log"))
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(fs::File::create(env.path("stub.out")).unwrap())
            .stderr(fs::File::create(env.path("stub.err")).unwrap())
            .spawn()
            .expect("start the topic stub"),
    );
    let stub_port: u16 = env.wait_value("the topic stub's port", DEADLINE, || {
        fs::read_to_string(&port_file).ok()?.trim().parse().ok()
    });
    let api = format!("http://127.0.0.1:{stub_port}");
    let crash_flag = env.path("crash-loop");
    let app_state = env.path("app-state");
    let argv: Vec<String> = vec![
        venv_python.clone(),
        format!("{EXAMPLE}/app.py"),
        "--state-dir".into(),
        app_state.display().to_string(),
        "--topic-api".into(),
        api.clone(),
        "--crash-flag".into(),
        crash_flag.display().to_string(),
    ];
    env.set_command(&argv);

    // 1. Three supervisors race; one wins and its child creates the topic.
    let sup = race(&env, 3);
    let (first, j) = serving(&env, &[]);
    let thread_id = j["sessions"][0]["telegram_thread_id"].clone();
    if !thread_id.is_i64() || topics(&env).len() != 1 {
        env.fail(format!(
            "want one topic after the first start: {j} {:?}",
            topics(&env)
        ));
    }

    // 2. A crash loop: every start crashes right after its start-up.
    fs::write(&crash_flag, "").unwrap();
    let restarts_before = env.status_json().1["child"]["restarts"]
        .as_i64()
        .unwrap_or(0);
    kill(first, libc::SIGKILL);
    env.wait_for("5 crashes in a row", DEADLINE, || {
        env.status_json().1["child"]["restarts"]
            .as_i64()
            .unwrap_or(0)
            >= restarts_before + 5
    });
    fs::remove_file(&crash_flag).unwrap();
    let (second, _) = serving(&env, &[first]);

    // 3. The supervisor is killed, and two copies race to take over. On
    //    Linux its child dies with it (PR_SET_PDEATHSIG); macOS has no such
    //    thing, and the winner stops the orphan before it starts a child.
    sup.kill9();
    if cfg!(target_os = "linux") {
        env.wait_for("the orphaned child gone", DEADLINE, || !pid_alive(second));
    }
    let sup2 = race(&env, 2);
    let (third, _) = serving(&env, &[first, second]);
    if pid_alive(second) {
        env.fail(format!("the orphaned child {second} lives next to {third}"));
    }

    // 4. A planned restart, and a copy started by hand without the
    //    supervisor (the old launchd job): it must exit before any effect.
    let out = env.cli(&["restart"]);
    if out.code != Some(0) {
        env.fail(format!("restart failed:\n{out}"));
    }
    let (_fourth, j) = serving(&env, &[first, second, third]);
    let direct = run_cmd(&venv_python, &argv[1..], DEADLINE).unwrap();
    if direct.code == Some(0) || !direct.stderr.contains("no listening socket handed over") {
        env.fail(format!("a direct start should refuse to run:\n{direct}"));
    }

    let n = startups(&env);
    let t = topics(&env);
    eprintln!("session manager: {n} start-ups, topics created: {t:?}");
    if t.len() != 1 || j["sessions"][0]["telegram_thread_id"] != thread_id {
        env.fail(format!(
            "want exactly one topic ({thread_id}), got {t:?}; state {j}"
        ));
    }
    if n < 6 {
        env.fail(format!("only {n} start-ups: the scenario did not run"));
    }
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop failed:\n{out}"));
    }
    sup2.wait_exit(DEADLINE);
    drop(stub);
}
