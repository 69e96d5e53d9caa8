//! Control commands and the config on disk (issue 10, items 5-7 and 9):
//! durations that would allow a tight loop, a config edited into an invalid
//! state under a running supervisor, a lowered stop_timeout, a config
//! reached through a symbolic link, `check-config` refusing everything
//! `run` refuses, and output into a closed pipe.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;

fn expect_code(env: &Env, out: &Out, code: i32) {
    if out.code != Some(code) {
        env.fail(format!("want exit {code}\n{out}"));
    }
}

/// `text` with `line` added at the top of `[section]`.
fn with_line(text: &str, section: &str, line: &str) -> String {
    let header = format!("[{section}]\n");
    if text.contains(&header) {
        text.replacen(&header, &format!("{header}{line}\n"), 1)
    } else {
        format!("{text}\n{header}{line}\n")
    }
}

#[test]
fn durations_that_allow_a_tight_loop_and_ignored_stop_signals_are_refused() {
    let env = Setup::new("serve.py").build();
    // (section, key = value, the key the refusal names)
    let cases = [
        (
            "restart",
            "initial_backoff = \"0s\"",
            "restart.initial_backoff",
        ),
        ("restart", "reset_after = \"0s\"", "restart.reset_after"),
        ("child", "stop_timeout = \"0ms\"", "child.stop_timeout"),
        ("child", "stop_signal = \"SIGCHLD\"", "child.stop_signal"),
        ("child", "stop_signal = \"SIGWINCH\"", "child.stop_signal"),
        ("child", "stop_signal = \"SIGURG\"", "child.stop_signal"),
        ("child", "stop_signal = \"SIGCONT\"", "child.stop_signal"),
    ];
    for (section, line, key) in cases {
        let text = env
            .config_text
            .lines()
            .filter(|l| {
                let k = line.split(' ').next().unwrap_or("");
                !l.starts_with(&format!("{k} ="))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let bad = env.path("tight.toml");
        fs::write(&bad, with_line(&text, section, line)).unwrap();
        for cmd in ["check-config", "run"] {
            let out = env.cli_with(&bad, &[cmd], DEADLINE);
            expect_code(&env, &out, 78);
            if !out.stderr.contains(key) {
                env.fail(format!("{line}: {cmd} does not name {key}\n{out}"));
            }
        }
    }
    if env.path("ran").exists() {
        env.fail("a child ran under a refused config");
    }
}

#[test]
fn a_config_edited_into_an_invalid_state_still_reaches_the_supervisor() {
    let env = Setup::new("serve.py").build();
    let sup = env.spawn();
    let first = env.wait_child(&[]);
    // A half-done edit: not even TOML any more.
    fs::write(
        &env.config,
        format!("{}\n[[[ half an edit", env.config_text),
    )
    .unwrap();
    let out = env.cli(&["status", "--json"]);
    expect_code(&env, &out, 0);
    if !out.stderr.contains("invalid") {
        env.fail(format!(
            "status should warn that the file is invalid\n{out}"
        ));
    }
    let out = env.cli(&["restart"]);
    expect_code(&env, &out, 0);
    env.wait_child(&[first]);
    let out = env.cli(&["reopen-logs"]);
    expect_code(&env, &out, 0);
    let out = env.cli(&["stop"]);
    expect_code(&env, &out, 0);
    let status = sup.wait_exit(DEADLINE);
    if status.code() != Some(0) {
        env.fail(format!("the supervisor ended with {status}"));
    }
    // Semantically invalid TOML works the same way.
    fs::write(
        &env.config,
        env.config_text
            .replace("[listen]\n", "[listen]\nbogus = 1\n"),
    )
    .unwrap();
    let sup = env.cli_with(&env.config, &["status"], DEADLINE);
    expect_code(&env, &sup, 3);
}

#[test]
fn stop_waits_by_the_running_supervisors_stop_timeout() {
    // A child that ignores SIGTERM is killed after stop_timeout (4 s); the
    // file is then edited to say 1 s. `stop` must still wait long enough.
    let env = Setup::new("stubborn.py")
        .child("stop_timeout", "4s")
        .build();
    let sup = env.spawn();
    env.wait_for("the child ready", DEADLINE, || {
        !env.events_of("ready").is_empty()
    });
    fs::write(
        &env.config,
        env.config_text
            .replace("stop_timeout = \"4s\"", "stop_timeout = \"1s\""),
    )
    .unwrap();
    let started = Instant::now();
    let out = env.cli_with(&env.config, &["stop"], secs(30.0));
    expect_code(&env, &out, 0);
    if started.elapsed() < secs(3.5) {
        env.fail(format!(
            "stop returned after {:?}, before the old stop_timeout could pass",
            started.elapsed()
        ));
    }
    sup.wait_exit(DEADLINE);
}

#[test]
fn a_config_reached_through_a_symlink_is_the_same_supervisor() {
    let env = Setup::new("serve.py").build();
    let real_dir = env.path("real");
    fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("supervisor.toml");
    fs::write(&real, &env.config_text).unwrap();
    let link = env.path("link.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // Started through the link: relative paths resolve beside the real file.
    let out = env.cli_with(&link, &["check-config"], DEADLINE);
    expect_code(&env, &out, 0);
    let want = real_dir.join("run");
    if !out.stdout.contains(&format!("{}", want.display())) {
        env.fail(format!("the state dir should be {}\n{out}", want.display()));
    }
    let mut first = Command::new(BIN)
        .args(["--config", &link.to_string_lossy(), "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for("the supervisor started through the link", DEADLINE, || {
        env.cli_with(&real, &["status"], DEADLINE).code == Some(0)
    });
    // A second copy through the real path is the same instance: it loses.
    let second = env.cli_with(&real, &["run"], DEADLINE);
    expect_code(&env, &second, 0);
    if !second.stderr.contains("already running") {
        env.fail(format!("want 'already running'\n{second}"));
    }
    let out = env.cli_with(&real, &["stop"], DEADLINE);
    expect_code(&env, &out, 0);
    let _ = first.wait();
    if env.state_dir.exists() {
        env.fail("a second state dir appeared beside the link");
    }
}

#[test]
fn check_config_refuses_everything_run_refuses() {
    let env = Setup::new("serve.py").build();
    let bad = env.path("refused.toml");
    let log_link = env.path("log-link");
    std::os::unix::fs::symlink(env.path("elsewhere"), &log_link).unwrap();
    let loose = env.path("loose-state");
    fs::create_dir(&loose).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o770)).unwrap();
    // (what, the edit, words the refusal must contain)
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "root without child.user or allow_root",
            Box::new(|t: &str| t.replace("allow_root = true", "allow_root = false")),
            "root",
        ),
        (
            "an unknown user",
            Box::new(|t: &str| with_line(t, "child", "user = \"nosuchuser-xyz\"")),
            "nosuchuser-xyz",
        ),
        (
            "a state dir writable by its group",
            Box::new(move |t: &str| {
                t.replace("state_dir = \"run\"", "state_dir = \"loose-state\"")
            }),
            "writable",
        ),
        (
            "a symlinked log dir",
            Box::new(|t: &str| t.replace("dir = \"logs\"", "dir = \"log-link\"")),
            "symbolic link",
        ),
        (
            "a log dir that is a device",
            Box::new(|t: &str| t.replace("dir = \"logs\"", "dir = \"/dev/null\"")),
            "not a folder",
        ),
        (
            "a missing cwd",
            Box::new(|t: &str| with_line(t, "child", "cwd = \"no-such-folder\"")),
            "child.cwd",
        ),
    ];
    for (what, edit, words) in cases {
        fs::write(&bad, edit(&env.config_text)).unwrap();
        for cmd in ["check-config", "run"] {
            let out = env.cli_with(&bad, &[cmd], DEADLINE);
            if out.code != Some(78) || !out.stderr.contains(words) {
                env.fail(format!(
                    "{what}: want exit 78 mentioning {words:?} from {cmd}\n{out}"
                ));
            }
        }
    }
    // A command that is not executable now is a warning, not a refusal.
    fs::write(
        &bad,
        env.config_text
            .replace("command = [", "command = [\"/nonexistent/app\", "),
    )
    .unwrap();
    let out = env.cli_with(&bad, &["check-config"], DEADLINE);
    expect_code(&env, &out, 0);
    if !out.stderr.contains("warning") || !out.stderr.contains("/nonexistent/app") {
        env.fail(format!("want a warning naming the command\n{out}"));
    }
}

#[test]
fn generated_text_into_a_closed_pipe_is_not_a_panic() {
    let env = Setup::new("serve.py").build();
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"][..],
        &["man"][..],
        &["check-config"][..],
    ] {
        let mut child = Command::new(BIN)
            .args(["--config", &env.config.to_string_lossy()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Like `| head -0`: the reader goes away at once.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(0) || stderr.contains("panicked") {
            env.fail(format!(
                "{args:?} into a closed pipe: {}\n{stderr}",
                out.status
            ));
        }
    }
}
