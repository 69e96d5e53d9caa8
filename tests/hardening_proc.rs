//! A root supervisor its child cannot take over (issue 20, the process
//! side): the child's own session (no way into root's terminal), a clean
//! environment and umask 022 for another user's child, no terminal escapes
//! from the child reaching a person, bounded descriptors, and a notify
//! socket only the child's user (and root) can send to.
//!
//! The child is `tests/children/trust.py`; the cases that need another
//! user run it as `nobody` under a root supervisor (CI runs as root) and
//! say they skip otherwise. A supervisor on a terminal runs under
//! `tests/children/pty_run.py` (a new pseudo-terminal).

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

// ------------------------------------------------------------ helpers

/// Whether the cases that need another user can run here (root only).
fn as_root(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("{test}: skipped: needs root (it runs the child as nobody)");
    }
    root
}

/// `<dir>/out`, where the child writes: owned by `owner` (the child's
/// user), and the temp dir passable (0711, not writable) so a child of
/// another user reaches it.
fn out_dir(env: &Env, owner: Option<(u32, u32)>) -> PathBuf {
    let out = env.dir.join("out");
    fs::create_dir(&out).unwrap();
    if let Some((uid, gid)) = owner {
        fs::set_permissions(&env.dir, fs::Permissions::from_mode(0o711)).unwrap();
        std::os::unix::fs::chown(&out, Some(uid), Some(gid)).unwrap();
    }
    out
}

/// Point the child at `trust.py MODE OUT ARGS...` run by `py`.
fn trust_child(env: &mut Env, py: &str, mode: &str, out: &Path, args: &[&str]) {
    let mut argv = vec![
        py.to_owned(),
        env.script.clone(),
        env.dir_s.clone(),
        mode.to_owned(),
        out.display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    env.set_command(&argv);
}

/// The pid of the running child (this child records no events).
fn running_child(env: &Env) -> i32 {
    env.wait_value("state running with a child", DEADLINE, || {
        let (_, v) = env.status_json();
        if v["state"] != "running" {
            return None;
        }
        v["child"]["pid"].as_i64().map(|p| p as i32)
    })
}

/// What child `pid` reported (`trust-PID.json`).
fn report(env: &Env, out: &Path, pid: i32) -> Value {
    let path = out.join(format!("trust-{pid}.json"));
    env.wait_value(&format!("{} written", path.display()), DEADLINE, || {
        let text = fs::read_to_string(&path).ok()?;
        serde_json::from_str(&text).ok()
    })
}

/// A `supervisor run` started by this file (with its own environment,
/// umask or terminal), SIGKILLed and reaped if still running when dropped.
struct Own {
    child: Child,
}

impl Own {
    /// `argv` (the supervisor, or a wrapper around it) with `vars` added to
    /// the environment and umask `mask`; output in `<dir>/own.out`.
    fn start(env: &Env, argv: &[String], vars: &[(&str, &str)], mask: Option<u32>) -> Own {
        let log = fs::File::create(env.dir.join("own.out")).unwrap();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(mask) = mask {
            // SAFETY: umask is one system call on an integer.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                })
            };
        }
        Own {
            child: cmd.spawn().unwrap(),
        }
    }

    /// `supervisor --config <config> run`.
    fn run(env: &Env, vars: &[(&str, &str)], mask: Option<u32>) -> Own {
        let argv = [BIN, "--config", &env.config.display().to_string(), "run"].map(String::from);
        Own::start(env, &argv, vars, mask)
    }

    /// Stop it through the CLI and reap it.
    fn stop(mut self, env: &Env) {
        let out = env.cli(&["stop"]);
        if out.code != Some(0) {
            env.fail(format!("stop failed:\n{out}"));
        }
        let _ = wait_until(DEADLINE, || matches!(self.child.try_wait(), Ok(Some(_))));
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn pty_run() -> String {
    script("pty_run.py")
}

// ------------------------------------------------------------ session

#[test]
fn the_child_leads_its_own_session_and_cannot_open_the_supervisors_terminal() {
    let mut env = Setup::new("trust.py").build();
    let out = out_dir(&env, None);
    trust_child(&mut env, python(), "report", &out, &[]);
    // The supervisor runs on a terminal of its own, as root at a shell.
    let screen = env.dir.join("screen");
    let argv = [
        python(),
        &pty_run(),
        &screen.display().to_string(),
        BIN,
        "--config",
        &env.config.display().to_string(),
        "run",
    ]
    .map(String::from);
    let sup = Own::start(&env, &argv, &[], None);
    let pid = running_child(&env);
    let rep = report(&env, &out, pid);
    // The test proves something only if the supervisor has that terminal.
    let state = env.state().unwrap_or_default();
    let sup_pid = state["supervisor"]["pid"].as_i64().unwrap_or(0) as i32;
    let tty_nr = fs::read_to_string(format!("/proc/{sup_pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_owned();
            after.split_whitespace().nth(4)?.parse::<i64>().ok()
        });
    if cfg!(target_os = "linux") && tty_nr.unwrap_or(0) == 0 {
        env.fail(format!(
            "the supervisor {sup_pid} has no controlling terminal: {tty_nr:?}"
        ));
    }
    if rep["sid"] != pid || rep["pgid"] != pid || rep["tty"] != "ENXIO" {
        env.fail(format!(
            "want session and group {pid} and /dev/tty refused with ENXIO; the child got {rep}"
        ));
    }
    sup.stop(&env);
}

// ------------------------------------------------------------ environment

#[test]
fn another_users_child_gets_a_clean_environment_and_umask_022() {
    if !as_root("another_users_child_gets_a_clean_environment_and_umask_022") {
        return;
    }
    let (uid, gid, home) = nobody();
    let py = python_for_nobody();
    for inherit in [false, true] {
        let mut env = Setup::new("trust.py")
            .child("user", "nobody")
            .raw("child", "inherit_env", &inherit.to_string())
            .env("FROM_CONFIG", "1")
            .build();
        let out = out_dir(&env, Some((uid, gid)));
        trust_child(&mut env, &py, "report", &out, &[]);
        // A folder nobody owns on the supervisor's PATH: a program planted
        // there would run as the child whenever it looks a name up.
        let planted = env.dir.join("nobody-bin");
        fs::create_dir(&planted).unwrap();
        std::os::unix::fs::chown(&planted, Some(uid), Some(gid)).unwrap();
        let path = format!("{}:/usr/bin:/bin", planted.display(),);
        let vars = [
            ("SUPTEST_SECRET_TOKEN", "s3cret"),
            ("PATH", path.as_str()),
            ("LANG", "C.UTF-8"),
            ("TZ", "UTC"),
        ];
        // Started with umask 000: the child must not inherit it.
        let sup = Own::run(&env, &vars, Some(0o000));
        let pid = running_child(&env);
        let rep = report(&env, &out, pid);
        let var = |k: &str| rep["env"][k].as_str().map(str::to_owned);
        let mut wrong = Vec::new();
        if rep["uid"] != uid {
            wrong.push(format!("uid {} (want {uid})", rep["uid"]));
        }
        if rep["umask"] != "022" {
            wrong.push(format!(
                "umask {} under a supervisor with 000",
                rep["umask"]
            ));
        }
        if var("HOME") != Some(home.display().to_string())
            || var("USER").as_deref() != Some("nobody")
            || var("LOGNAME").as_deref() != Some("nobody")
        {
            wrong.push("HOME, USER or LOGNAME not nobody's".into());
        }
        for k in ["LANG", "TZ", "FROM_CONFIG", "LISTEN_FDS", "LISTEN_PID"] {
            if var(k).is_none() {
                wrong.push(format!("{k} missing"));
            }
        }
        let secret = var("SUPTEST_SECRET_TOKEN");
        let child_path = var("PATH").unwrap_or_default();
        if inherit {
            if secret.as_deref() != Some("s3cret") || child_path != path {
                wrong.push(
                    "inherit_env = true: the supervisor's variables are not all there".into(),
                );
            }
        } else {
            if secret.is_some() {
                wrong.push("a variable only the supervisor had reached the child".into());
            }
            if child_path != "/usr/bin:/bin" {
                wrong.push(format!(
                    "PATH {child_path:?}: want /usr/bin:/bin, without the folder nobody owns"
                ));
            }
        }
        if !wrong.is_empty() {
            env.fail(format!(
                "inherit_env = {inherit}: {}; the child got {rep}",
                wrong.join("; ")
            ));
        }
        sup.stop(&env);
    }
}

// ------------------------------------------------------------ terminal escapes

/// What the child says, with escapes (written as Python escapes).
const HOSTILE: &str = "\\x1b]0;TITLE\\x07\\x1b[2J\\x1b[31mRED\\rFAKE LINE\\xc2\\x9b2J";

#[test]
fn status_text_reaches_status_without_control_characters() {
    let mut env = Setup::new("trust.py")
        .raw("health", "notify", "true")
        .build();
    let out = out_dir(&env, None);
    trust_child(&mut env, python(), "status", &out, &[HOSTILE]);
    let _sup = env.spawn();
    env.wait_for("the status text in state.json", DEADLINE, || {
        env.state().is_some_and(|s| {
            s["child"]["status"]
                .as_str()
                .is_some_and(|t| t.contains("FAKE"))
        })
    });
    for args in [&["status"][..], &["status", "--json"][..]] {
        let o = env.cli(args);
        let raw = o.stdout.as_bytes();
        let bad: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|b| (*b < 0x20 && *b != b'\n') || *b == 0x7f)
            .collect();
        if !bad.is_empty() || !o.stdout.contains("FAKE LINE") || o.stdout.contains("\\u001b") {
            env.fail(format!("{args:?} shows control characters {bad:?}:\n{o}"));
        }
        if o.stdout.contains('\u{9b}') || o.stdout.contains("\\u009b") {
            env.fail(format!("{args:?} shows a C1 control:\n{o}"));
        }
    }
}

#[test]
fn logs_escapes_control_characters_on_a_terminal_only() {
    let mut env = Setup::new("trust.py").build();
    let out = out_dir(&env, None);
    trust_child(&mut env, python(), "shout", &out, &[HOSTILE]);
    let _sup = env.spawn();
    let log = env.log_dir.join("child.log");
    env.wait_for("the child's line in child.log", DEADLINE, || {
        fs::read(&log).is_ok_and(|b| b.windows(4).any(|w| w == b"FAKE"))
    });
    // Through a pipe: the bytes as they are.
    let piped = env.cli(&["logs"]);
    if !piped.stdout.contains("\x1b]0;TITLE\x07") {
        env.fail(format!(
            "a pipe did not get the bytes as they are:\n{piped}"
        ));
    }
    // On a terminal: escaped.
    let screen = env.dir.join("logs-screen");
    let o = run_cmd(
        python(),
        &[
            pty_run(),
            screen.display().to_string(),
            BIN.into(),
            "--config".into(),
            env.config.display().to_string(),
            "logs".into(),
        ],
        DEADLINE,
    )
    .unwrap_or_else(|e| env.fail(e));
    let shown = fs::read(&screen).unwrap_or_default();
    let text = String::from_utf8_lossy(&shown);
    let raw_escape = shown.iter().any(|b| {
        matches!(b, 0x1b | 0x07 | 0x7f) || (*b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t'))
    });
    if o.code != Some(0)
        || raw_escape
        || !text.contains("\\x1b]0;TITLE\\x07")
        || !text.contains("\\u{9b}")
    {
        env.fail(format!(
            "logs on a terminal (exit {:?}) wrote {text:?}",
            o.code
        ));
    }
}

// ------------------------------------------------------------ systemd print

#[test]
fn a_root_unit_leaves_out_path_folders_another_user_owns() {
    if !as_root("a_root_unit_leaves_out_path_folders_another_user_owns") {
        return;
    }
    let (uid, gid, _) = nobody();
    let env = Setup::new("trust.py").build();
    let theirs = env.dir.join("nobody-bin");
    let open = env.dir.join("open-bin");
    fs::create_dir(&theirs).unwrap();
    fs::create_dir(&open).unwrap();
    std::os::unix::fs::chown(&theirs, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let path = format!("{}:/usr/bin:{}:/bin", theirs.display(), open.display());
    let o = run_cmd(
        "/usr/bin/env",
        &[
            format!("PATH={path}"),
            BIN.into(),
            "--config".into(),
            env.config.display().to_string(),
            "systemd".into(),
            "print".into(),
        ],
        DEADLINE,
    )
    .unwrap_or_else(|e| env.fail(e));
    let line = o
        .stdout
        .lines()
        .find(|l| l.starts_with("Environment=") && l.contains("PATH="))
        .unwrap_or_default()
        .to_owned();
    let named = |d: &Path| o.stderr.contains(&format!("{:?}", d.display().to_string()));
    if o.code != Some(0)
        || line != "Environment=\"PATH=/usr/bin:/bin\""
        || !named(&theirs)
        || !named(&open)
        || !o.stdout.contains("# Left out of PATH")
    {
        env.fail(format!(
            "want PATH=/usr/bin:/bin, the two folders named on stderr and in the unit; got {line:?}:\n{o}"
        ));
    }
}

// ------------------------------------------------------------ STATUS= writes

#[test]
fn a_chatty_status_writes_state_json_about_once_a_second_and_the_last_text_lands() {
    use std::os::unix::fs::MetadataExt;
    let mut env = Setup::new("trust.py")
        .raw("health", "notify", "true")
        .build();
    let out = out_dir(&env, None);
    trust_child(&mut env, python(), "chatty", &out, &["600"]);
    let state = env.state_dir.join("state.json");
    let _sup = env.spawn();
    // Every write replaces the file (a new inode, or a reused one with a
    // new mtime): count them while the child talks (600 texts over 1.2 s
    // or more).
    let mut seen = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < DEADLINE {
        if let Ok(m) = fs::metadata(&state) {
            seen.insert((m.ino(), m.mtime(), m.mtime_nsec()));
        }
        if let Some(v) = env.state() {
            last = v["child"]["status"].as_str().unwrap_or_default().to_owned();
            if last == "final" {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let took = started.elapsed();
    if last != "final" {
        env.fail(format!(
            "the last STATUS= text never landed (last seen {last:?})"
        ));
    }
    // At most about one a second for the texts, plus the writes of the
    // start itself (spawned, ready); generous for a loaded machine.
    let bound = 6 + took.as_secs() as usize * 2;
    eprintln!("{} state.json writes seen in {took:?}", seen.len());
    if seen.len() > bound {
        env.fail(format!(
            "{} state.json writes seen in {took:?} (bound {bound})",
            seen.len()
        ));
    }
}

// ------------------------------------------------------------ descriptors

/// Kills the detached helpers whose pids are in `<out>/helpers` (each in a
/// session of its own, so nothing else reaches them), when dropped.
struct Helpers(PathBuf);

impl Helpers {
    fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.0.join("helpers"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        for pid in self.pids() {
            kill(pid, libc::SIGKILL);
        }
    }
}

#[test]
fn detached_helpers_of_150_children_leave_the_supervisor_under_64_descriptors() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: counts descriptors through /proc");
        return;
    }
    let mut env = Setup::new("trust.py")
        .restart("initial_backoff", "1ms")
        .restart("max_backoff", "5ms")
        .build();
    let out = out_dir(&env, None);
    trust_child(&mut env, python(), "helper", &out, &[]);
    let helpers = Helpers(out.clone());
    let sup = env.spawn();
    env.wait_value("150 children with detached helpers", secs(240.0), || {
        (helpers.pids().len() >= 150).then_some(())
    });
    let fds = |pid: i32| fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let n = fds(sup.pid());
    let log = fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default();
    if n >= 64 || sup.exited().is_some() {
        env.fail(format!(
            "after 150 children with helpers the supervisor holds {n} descriptors (exited: {:?})",
            sup.exited()
        ));
    }
    if !log.contains("closed the output pipes of earlier child") {
        env.fail("no log line says earlier children's pipes were closed");
    }
    if log.contains("Too many open files") {
        env.fail("a spawn ran out of descriptors");
    }
    eprintln!(
        "{} helpers, the supervisor holds {n} descriptors",
        helpers.pids().len()
    );
    drop(sup);
}

// ------------------------------------------------------------ notify socket

#[test]
fn only_the_childs_user_and_root_can_send_to_the_notify_socket() {
    if !as_root("only_the_childs_user_and_root_can_send_to_the_notify_socket") {
        return;
    }
    let (uid, gid, _) = nobody();
    let py = python_for_nobody();
    let mut env = Setup::new("trust.py")
        .child("user", "nobody")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "1h")
        .build();
    let out = out_dir(&env, Some((uid, gid)));
    trust_child(&mut env, &py, "notify", &out, &[]);
    let _sup = env.spawn();
    // The child (nobody) says READY=1: heard.
    let pid = env.wait_value("a ready child", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running" && v["child"]["ready"] == true)
            .then(|| v["child"]["pid"].as_i64())
            .flatten()
    });
    let socket = environ_var(pid as i32, "NOTIFY_SOCKET").unwrap_or_default();
    if socket.is_empty() || socket.starts_with('@') {
        env.fail(format!(
            "want a socket file, the child got NOTIFY_SOCKET={socket:?}"
        ));
    }
    // A third user (a uid no one has) cannot send to it.
    let third = 54_321;
    let mut cmd = Command::new(&py);
    cmd.args([
        "-c",
        "import socket, sys\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         try:\n    s.sendto(b'STATUS=forged', sys.argv[1])\n\
         except OSError as e:\n    print(e.errno); sys.exit(3)\n",
        &socket,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: only set*id system calls between fork and exec.
    unsafe { cmd.pre_exec(move || become_user(third, third)) };
    let o = cmd.output().unwrap();
    let said = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    if o.status.code() != Some(3) || said != libc::EACCES.to_string() {
        env.fail(format!(
            "uid {third} sending to {socket}: want EACCES, got {:?} {said:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    // The child's user can (its STATUS= lands).
    fs::write(out.join("send"), "STATUS=from the child\n").unwrap();
    std::os::unix::fs::chown(out.join("send"), Some(uid), Some(gid)).unwrap();
    env.wait_for("the child's STATUS= heard", DEADLINE, || {
        env.state()
            .is_some_and(|s| s["child"]["status"] == "from the child")
    });
}
