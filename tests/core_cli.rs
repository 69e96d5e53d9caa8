//! Commands without a running supervisor, configuration refusals, stale
//! files, and SIGHUP (reopen logs, never forwarded).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

fn expect_code(env: &Env, out: &Out, code: i32) {
    if out.code != Some(code) {
        env.fail(format!("want exit {code}\n{out}"));
    }
}

#[test]
fn status_when_nothing_runs_is_3_and_not_running() {
    let env = Setup::new("serve.py").build();
    let out = env.cli(&["status", "--json"]);
    expect_code(&env, &out, 3);
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| env.fail(format!("invalid JSON ({e})\n{out}")));
    if v["state"] != "not-running" {
        env.fail(format!("want state not-running\n{out}"));
    }
    // SPEC 0.2: every state's object has these keys (null here).
    for key in ["supervisor", "listen", "child"] {
        if !v.get(key).is_some_and(serde_json::Value::is_null) {
            env.fail(format!("want `{key}: null` when not running\n{out}"));
        }
    }
    let plain = env.cli(&["status"]);
    expect_code(&env, &plain, 3);
}

/// `run` says once, in one line on stderr, where its lines go (a newcomer
/// at a terminal otherwise sees nothing).
#[test]
fn run_says_once_on_stderr_where_the_logs_are() {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let pid = env.wait_child(&[]);
    let err = sup.stderr();
    let said: Vec<&str> = err.lines().filter(|l| l.contains("its log:")).collect();
    let log = env.log_dir.join("supervisor.log");
    let child_log = env.log_dir.join("child.log");
    if said.len() != 1
        || !said[0].contains(&log.display().to_string())
        || !said[0].contains(&child_log.display().to_string())
        || !said[0].contains(&format!("pid {}", sup.pid()))
    {
        env.fail(format!(
            "want one line naming both logs on stderr, got {err:?}"
        ));
    }
    let _ = pid;
}

#[test]
fn stop_when_nothing_runs_is_0() {
    let env = Setup::new("serve.py").build();
    let out = env.cli(&["stop"]);
    expect_code(&env, &out, 0);
}

#[test]
fn restart_and_reopen_logs_when_nothing_runs_are_3() {
    let env = Setup::new("serve.py").build();
    for cmd in ["restart", "reopen-logs"] {
        let out = env.cli(&[cmd]);
        expect_code(&env, &out, 3);
    }
}

#[test]
fn check_config_accepts_good_and_refuses_bad_naming_the_file() {
    let env = Setup::new("serve.py").build();
    let good = env.cli(&["check-config"]);
    expect_code(&env, &good, 0);

    // An unknown key in an otherwise valid file.
    let bad = env.path("broken-config.toml");
    let text = env
        .config_text
        .replace("[child]\n", "[child]\nno_such_key = 1\n");
    fs::write(&bad, text).unwrap();
    let out = env.cli_with(&bad, &["check-config"], DEADLINE);
    expect_code(&env, &out, 78);
    if !out.stderr.contains("broken-config.toml") {
        env.fail(format!("stderr should name the file\n{out}"));
    }
    if !out.stderr.contains("no_such_key") {
        env.fail(format!("stderr should name the key\n{out}"));
    }
}

#[test]
fn run_with_a_bad_config_is_78_and_creates_nothing() {
    let env = Setup::new("serve.py").build();
    let bad = env.path("broken-config.toml");
    let text = env
        .config_text
        .replace("[restart]\n", "[restart]\nbogus = \"x\"\n");
    fs::write(&bad, text).unwrap();
    let out = env.cli_with(&bad, &["run"], DEADLINE);
    expect_code(&env, &out, 78);
    if env.state_dir.exists() || env.log_dir.exists() {
        env.fail("run with a bad config created the state or log dir");
    }
    if !env.child_processes().is_empty() {
        env.fail("run with a bad config started the child");
    }
}

/// `dir` (the state or log dir) is a link to a private folder: `run` exits
/// 78 and writes nothing through it.
fn refuses_a_symlinked(env: &Env, dir: &std::path::Path, what: &str) {
    let real = env.path(&format!("real-{what}"));
    fs::create_dir(&real).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&real, dir).unwrap();
    let out = env.cli_with(&env.config, &["run"], DEADLINE);
    expect_code(env, &out, 78);
    if fs::read_dir(&real).unwrap().next().is_some() {
        env.fail(format!(
            "files were written through the symlinked {what} dir"
        ));
    }
}

#[test]
fn a_symlinked_state_dir_is_refused_with_78() {
    let env = Setup::new("serve.py").build();
    refuses_a_symlinked(&env, &env.state_dir, "state");
}

#[test]
fn a_world_writable_state_dir_is_refused_with_78() {
    let env = Setup::new("serve.py").build();
    fs::create_dir(&env.state_dir).unwrap();
    fs::set_permissions(&env.state_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.cli_with(&env.config, &["run"], DEADLINE);
    expect_code(&env, &out, 78);
    if fs::read_dir(&env.state_dir).unwrap().next().is_some() {
        env.fail("files were written into the world-writable state dir");
    }
}

#[test]
fn a_symlinked_log_dir_is_refused_with_78() {
    let env = Setup::new("serve.py").build();
    refuses_a_symlinked(&env, &env.log_dir, "log");
}

#[test]
fn state_dir_is_created_with_mode_0700() {
    let env = Setup::new("serve.py").build();
    let _sup = env.spawn();
    env.wait_child(&[]);
    let mode = fs::symlink_metadata(&env.state_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    if mode != 0o700 {
        env.fail(format!("state dir mode {mode:o}, want 700"));
    }
}

#[test]
fn status_after_the_supervisor_was_killed_is_3() {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let child = env.wait_child(&[]);
    sup.kill9();
    // Stale pid file and state.json stay behind; status must prove liveness.
    let out = env.cli(&["status", "--json"]);
    expect_code(&env, &out, 3);
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| env.fail(format!("invalid JSON ({e})\n{out}")));
    if v["state"] != "not-running" {
        env.fail(format!("want state not-running\n{out}"));
    }
    kill(child, libc::SIGKILL);
}

/// True once no descriptor of `pid` points at a file whose name ends in ".moved".
fn no_fd_on_moved_files(pid: i32) -> bool {
    !fd_targets(pid)
        .iter()
        .any(|t| t.ends_with(".moved") || t.ends_with(".moved (deleted)"))
}

/// Moves both logs away (as logrotate does); true if any existed.
fn move_logs(env: &Env) -> bool {
    let mut any = false;
    for name in ["supervisor.log", "child.log"] {
        let p = env.log_dir.join(name);
        if p.exists() {
            let _ = fs::remove_file(env.log_dir.join(format!("{name}.moved")));
            fs::rename(&p, env.log_dir.join(format!("{name}.moved"))).unwrap();
            any = true;
        }
    }
    any
}

#[test]
fn sighup_reopens_logs_and_is_not_forwarded_to_the_child() {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let child = env.wait_child(&[]);

    if !move_logs(&env) {
        env.fail("no log file existed while running");
    }
    sup.signal(libc::SIGHUP);
    env.wait_for(
        "the supervisor to reopen its logs after SIGHUP",
        DEADLINE,
        || no_fd_on_moved_files(sup.pid()),
    );
    // One more round trip through the supervisor before looking.
    let (code, v) = env.status_json();
    if code != 0 || v["child"]["pid"].as_i64() != Some(child as i64) || !pid_alive(child) {
        env.fail(format!(
            "after SIGHUP the child {child} should still run: exit {code} {v}"
        ));
    }
    if sup.exited().is_some() {
        env.fail("the supervisor exited on SIGHUP");
    }
    let hups = env.events_of("hup");
    if !hups.is_empty() {
        env.fail(format!("SIGHUP reached the child: {hups:?}"));
    }

    // The same through the command.
    move_logs(&env);
    let out = env.cli(&["reopen-logs"]);
    expect_code(&env, &out, 0);
    env.wait_for(
        "the supervisor to reopen its logs after reopen-logs",
        DEADLINE,
        || no_fd_on_moved_files(sup.pid()),
    );
    if !env.events_of("hup").is_empty() || env.child_pid() != Some(child) {
        env.fail("reopen-logs reached or replaced the child");
    }
}

/// An invalid setup prints its error only: `check-config` started the way
/// a manager would start `run`, with `LISTEN_FDS` naming no matching socket,
/// used to print the whole resolved config before the error.
#[test]
fn check_config_prints_only_the_error_when_invalid() {
    let env = Setup::new("serve.py").build();
    let script = format!(
        "export LISTEN_FDS=1 LISTEN_PID=$$; exec {BIN} --config {} check-config 3</dev/null",
        env.config.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(78) || !stdout.is_empty() || !stderr.contains("LISTEN_FDS") {
        env.fail(format!(
            "want 78, the error on stderr and nothing on stdout: {:?}\nstdout: {stdout}\nstderr: {stderr}",
            out.status.code()
        ));
    }
}

/// gunicorn given `--bind fd://3` dies with EBADF at every start: the
/// config is still valid (0), with a warning naming the fix.
#[test]
fn check_config_warns_about_gunicorn_binding_fd_3() {
    let env = Setup::new("serve.py").build();
    let text = fs::read_to_string(&env.config).expect("config");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("command = ") {
                "command = [\"gunicorn\", \"--bind\", \"fd://3\", \"app:app\"]".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(&env.config, text).expect("write config");
    let out = env.cli(&["check-config"]);
    expect_code(&env, &out, 0);
    if !out.stderr.contains("Bad file descriptor") || !out.stderr.contains("drop the --bind") {
        env.fail(format!("want a warning about --bind fd://3\n{out}"));
    }
}
