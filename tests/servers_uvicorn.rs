//! uvicorn, from the venv built by .ci/run, serving an ASGI app with
//! `--fd 3` on the supervisor's socket, across restarts (planned and a
//! SIGKILL) with no refused connection.

mod common;

use common::*;
use std::fs;

/// A supervised `uvicorn --fd 3 asgi_app:app` (app copied into the temp dir,
/// which is thus in the child's argv).
fn uvicorn_env() -> Env {
    let mut env = Setup::new("serve.py")
        .env("PYTHONUNBUFFERED", "1")
        .restart("initial_backoff", "100ms")
        .build();
    let app = format!("{}/tests/apps/asgi_app.py", env!("CARGO_MANIFEST_DIR"));
    fs::copy(&app, env.path("asgi_app.py")).unwrap();
    let argv: Vec<String> = [
        venv_bin("python").as_str(),
        "-m",
        "uvicorn",
        "--fd",
        "3",
        "--app-dir",
        &env.dir_s,
        "asgi_app:app",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    env.set_command(&argv);
    env
}

/// Waits until the child from `status` (other than `not`) answers itself.
fn serving_child(env: &Env, not: &[i32]) -> i32 {
    wait_serving(env, not, "uvicorn child", |pid, body| {
        (body.trim() == format!("asgi {pid}")).then_some(())
    })
    .0
}

#[test]
fn uvicorn_serves_the_handed_socket_across_restarts_without_refusing() {
    let env = uvicorn_env();
    let _sup = env.spawn();
    let first = serving_child(&env, &[]);
    // The line reaches child.log through the supervisor's reader a
    // moment after uvicorn serves (read once, child.log was not there yet
    // in one whole-suite run under load): waited for.
    let said = format!("Uvicorn running on socket ('127.0.0.1', {})", env.port);
    env.wait_for(
        "uvicorn to say it serves the inherited socket",
        DEADLINE,
        || {
            fs::read_to_string(env.log_dir.join("child.log"))
                .unwrap_or_default()
                .contains(&said)
        },
    );

    let hammer = Hammer::start(env.addr());
    env.wait_for(
        "the client is answered by the first child",
        DEADLINE,
        || hammer.tally().ok_with(&format!("asgi {first}")) >= 5,
    );

    // A planned restart: SIGTERM to uvicorn, which finishes in-flight
    // requests; the backlog holds new connections for the next child.
    let out = env.cli(&["restart"]);
    if out.code != Some(0) {
        env.fail(format!("restart failed:\n{out}"));
    }
    let second = serving_child(&env, &[first]);
    env.wait_for(
        "the client is answered by the second child",
        DEADLINE,
        || hammer.tally().ok_with(&format!("asgi {second}")) >= 5,
    );

    // An unplanned death: SIGKILL. Requests already accepted by it may be
    // reset; new connections wait in the backlog for the restart.
    kill(second, libc::SIGKILL);
    let third = serving_child(&env, &[first, second]);
    env.wait_for(
        "the client is answered by the third child",
        DEADLINE,
        || hammer.tally().ok_with(&format!("asgi {third}")) >= 5,
    );
    let t = hammer.finish();
    eprintln!(
        "uvicorn: {} answers ({:?}), {} refused, {} other errors: {:?}",
        t.total_ok(),
        t.ok,
        t.refused,
        t.errors.len(),
        t.errors
    );
    if t.refused != 0 {
        env.fail(format!("{} connections were refused: {t:?}", t.refused));
    }
    // Only the SIGKILLed child can have dropped requests, at most the one
    // in flight plus what it had accepted but not read yet.
    if t.errors.len() > 3 {
        env.fail(format!("too many failed requests: {t:?}"));
    }
    let total_known = t.ok_with(&format!("asgi {first}"))
        + t.ok_with(&format!("asgi {second}"))
        + t.ok_with(&format!("asgi {third}"));
    if total_known != t.total_ok() {
        env.fail(format!("answers from unknown processes: {t:?}"));
    }
}
