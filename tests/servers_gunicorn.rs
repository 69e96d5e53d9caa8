//! gunicorn (2 sync workers), started WITHOUT --bind: it finds the socket
//! through systemd socket activation, which it honours only when LISTEN_PID
//! is its own pid. It must answer on the supervised port and listen on
//! nothing else (not its default 127.0.0.1:8000).

mod common;

use common::*;
use std::fs;

#[test]
fn gunicorn_takes_the_socket_through_listen_pid_and_answers_on_our_port() {
    let mut env = Setup::new("serve.py").env("PYTHONUNBUFFERED", "1").build();
    let app = format!("{}/tests/apps/wsgi_app.py", env!("CARGO_MANIFEST_DIR"));
    fs::copy(&app, env.path("wsgi_app.py")).unwrap();
    // --no-control-socket: gunicorn 24+ would otherwise create
    // ~/.gunicorn/gunicorn.ctl, shared by every test run on the machine.
    let argv: Vec<String> = [
        venv_bin("gunicorn").as_str(),
        "--workers",
        "2",
        "--no-control-socket",
        "--chdir",
        &env.dir_s,
        "wsgi_app:app",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    env.set_command(&argv);
    let _sup = env.spawn();

    // The arbiter is the supervised child; both workers are its children.
    let (master, workers) = env.wait_value(
        "gunicorn answering on the supervised port with 2 workers",
        DEADLINE,
        || {
            let (_, v) = env.status_json();
            let master = v["child"]["pid"].as_i64()? as i32;
            if v["state"] != "running" {
                return None;
            }
            let (code, body) = http_get(env.addr(), "/", secs(2.0)).ok()?;
            let w: Vec<&str> = body.split_whitespace().collect();
            if code != 200 || w.len() != 3 || w[0] != "wsgi" || w[2] != master.to_string() {
                return None;
            }
            let workers: Vec<i32> = all_pids()
                .into_iter()
                .filter(|&p| {
                    pid_alive(p) && matches!(proc_stat(p), Some((_, pp, _)) if pp == master)
                })
                .collect();
            (workers.len() == 2).then_some((master, workers))
        },
    );

    let log = fs::read_to_string(env.log_dir.join("child.log")).unwrap_or_default();
    if !log.contains(&format!("Listening at: http://127.0.0.1:{}", env.port)) {
        env.fail("gunicorn's log does not say it listens on the supervised port");
    }
    if log.contains(":8000") {
        env.fail("gunicorn fell back to its default port 8000");
    }
    // Every listening socket the arbiter and its workers hold is ours.
    for &p in std::iter::once(&master).chain(&workers) {
        let ports = listening_ports(p);
        if ports != [env.port] {
            env.fail(format!(
                "gunicorn process {p} listens on {ports:?}, want only [{}]",
                env.port
            ));
        }
    }
    // Both workers serve (the kernel spreads accepts between them).
    let mut seen = std::collections::BTreeSet::new();
    env.wait_for("both workers answer", DEADLINE, || {
        if let Ok((200, body)) = http_get(env.addr(), "/", secs(2.0)) {
            if let Some(w) = body
                .split_whitespace()
                .nth(1)
                .and_then(|w| w.parse::<i32>().ok())
            {
                seen.insert(w);
            }
        }
        workers.iter().all(|w| seen.contains(w))
    });
    eprintln!(
        "gunicorn: arbiter {master} (the supervised child), workers {workers:?}, all listening only on {}",
        env.port
    );

    // A graceful stop takes the arbiter and its workers down.
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop failed:\n{out}"));
    }
    env.wait_for("arbiter and workers gone", DEADLINE, || {
        !pid_alive(master) && workers.iter().all(|&w| !pid_alive(w))
    });
}
