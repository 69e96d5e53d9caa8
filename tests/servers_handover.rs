//! Overlapped restarts (`[restart] overlap`, readiness by `[health] http`)
//! of real servers under load: a Starlette app (what FastAPI is built on)
//! on uvicorn `--fd 3`, and a WSGI app on gunicorn (2 threaded workers,
//! socket activation). Each takes a second to import, as an application
//! loading its models does. Five restarts under a client loop with slow
//! requests mixed in: not one request fails.

mod common;

use common::*;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

fn overlap_env(app: &str, argv: impl Fn(&Env) -> Vec<String>) -> Env {
    let mut env = Setup::new("serve.py")
        .env("PYTHONUNBUFFERED", "1")
        .set("health", "http", "/health")
        .set("health", "interval", "1s")
        // A probe's answer may wait behind the load this test makes (and,
        // on a busy 2-core machine, behind the other Python server's start):
        // liveness is not what is tested here.
        .set("health", "timeout", "10s")
        .set("health", "start_timeout", "30s")
        .set("child", "stop_timeout", "15s")
        .raw("restart", "overlap", "true")
        .build();
    let src = format!("{}/tests/apps/{app}", env!("CARGO_MANIFEST_DIR"));
    fs::copy(&src, env.path(app)).unwrap();
    let argv = argv(&env);
    env.set_command(&argv);
    env
}

/// Slow requests (`path`) one after another from a thread: (ok, failures).
struct Slow {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(usize, Vec<String>)>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Slow {
    fn start(env: &Env, path: &'static str) -> Slow {
        let addr = env.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((0, Vec::new())));
        let (s, t) = (stop.clone(), seen.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let r = http_get(addr, path, secs(30.0));
                let mut t = t.lock().unwrap();
                match r {
                    Ok((200, body)) if body.contains(' ') => t.0 += 1,
                    other => t.1.push(format!("{other:?}")),
                }
                drop(t);
                thread::sleep(Duration::from_millis(100));
            }
        });
        Slow {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// One server under load at a time: two client loops against two Python
/// servers starting side by side would measure the machine, not us.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Five overlapped restarts under load; fails on any failed request but
/// `tolerated` connections closed without an answer or reset.
fn five_restarts(env: &Env, slow_path: &'static str, tolerated: usize) {
    let first = env.wait_value("the first child ready", secs(60.0), || {
        let (_, v) = env.status_json();
        (v["state"] == "running" && v["child"]["ready"] == true)
            .then(|| v["child"]["pid"].as_i64())
            .flatten()
    });
    let hammer = Hammer::start(env.addr());
    let slow = Slow::start(env, slow_path);
    let mut children = vec![first as i32];
    for _ in 0..5 {
        let out = env.cli_with(&env.config, &["restart"], secs(90.0));
        if out.code != Some(0) {
            env.fail(format!("restart failed:\n{out}"));
        }
        let pid = env.child_pid().unwrap_or(0);
        if children.contains(&pid) {
            env.fail(format!(
                "no new child after a restart: {children:?} then {pid}"
            ));
        }
        children.push(pid);
        thread::sleep(Duration::from_millis(300));
    }
    let tally = hammer.finish();
    let (slow_ok, slow_failed) = slow.finish();
    eprintln!(
        "{} quick answers, {slow_ok} slow; refused {}, errors {:?}",
        tally.total_ok(),
        tally.refused,
        tally.errors
    );
    let unanswered = tally
        .errors
        .iter()
        .filter(|e| e.contains("not HTTP: \"\"") || e.starts_with("ConnectionReset"))
        .count();
    let failed = tally.errors.len() - unanswered.min(tolerated);
    if tally.refused != 0 || failed != 0 || !slow_failed.is_empty() {
        env.fail(format!(
            "failed requests: refused {}, errors {:?}, slow failures {slow_failed:?}",
            tally.refused, tally.errors
        ));
    }
    if tally.total_ok() < 50 || slow_ok < 5 {
        env.fail(format!(
            "too few answers to tell: {} quick, {slow_ok} slow",
            tally.total_ok()
        ));
    }
    let log = fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default();
    if log.matches("handover done").count() != 5 {
        env.fail("want five completed handovers in the log");
    }
}

#[test]
fn uvicorn_restarts_five_times_with_overlap_and_no_request_fails() {
    let _turn = one_at_a_time();
    let env = overlap_env("handover_asgi.py", |env| {
        [
            venv_bin("python").as_str(),
            "-m",
            "uvicorn",
            "--fd",
            "3",
            "--timeout-graceful-shutdown",
            "10",
            "--app-dir",
            &env.dir_s,
            "handover_asgi:app",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    let _sup = env.spawn();
    // uvicorn's graceful shutdown closes a connection it has accepted but
    // whose request it has not read yet (h11_impl/httptools_impl
    // `shutdown()`: no cycle yet, so it closes the transport): a client
    // that connected in that same instant gets no answer, or a reset when
    // the request had arrived unread. That is the old child's own
    // shutdown, the same with stop-first restarts; at most one such per
    // restart is allowed, nothing else (no refusal, no other error).
    five_restarts(&env, "/slow?s=1", 5);
}

#[test]
fn gunicorn_restarts_five_times_with_overlap_and_no_request_fails() {
    let _turn = one_at_a_time();
    // --no-control-socket: gunicorn 24+ would otherwise create
    // ~/.gunicorn/gunicorn.ctl, shared by every test run on the machine.
    let env = overlap_env("handover_wsgi.py", |env| {
        [
            venv_bin("gunicorn").as_str(),
            "--workers",
            "2",
            "--threads",
            "4",
            "--graceful-timeout",
            "10",
            "--no-control-socket",
            "--chdir",
            &env.dir_s,
            "handover_wsgi:app",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    let _sup = env.spawn();
    five_restarts(&env, "/slow", 0);
}
