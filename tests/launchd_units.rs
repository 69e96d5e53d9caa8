//! The shipped service definitions: launchd/*.plist (parsed with Python's
//! plistlib) and systemd/supervisor.service (`systemd-analyze verify` where
//! it exists). Their keys are checked, and their command lines are run for
//! real against a temp config: the binary must accept exactly those
//! arguments, supervise, and let a second copy exit 0.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::process::{Child, Command, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A `supervisor` started with a job's arguments, killed by pid if left.
struct Job(Child);

impl Drop for Job {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs BIN with `args` (the job's argv without the program), the value of
/// `--config` replaced by the test's config: it must supervise the child;
/// a second copy must exit 0 at once; `stop` must end it with exit 0.
fn run_job_args(env: &Env, args: &[String]) {
    let i = args
        .iter()
        .position(|a| a == "--config")
        .unwrap_or_else(|| env.fail(format!("no --config in {args:?}")));
    let mut args = args.to_vec();
    args[i + 1] = env.config.display().to_string();
    let start = || {
        Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut job = Job(start());
    env.wait_child(&[]);
    let second = start().wait_with_output().expect("second copy");
    if second.status.code() != Some(0) {
        env.fail(format!(
            "a second `supervisor {}` exited {} (launchd/systemd would respawn it): {}",
            args.join(" "),
            second.status,
            String::from_utf8_lossy(&second.stderr)
        ));
    }
    let out = env.cli(&["stop"]);
    let st = env.wait_value("the job's supervisor to exit", DEADLINE, || {
        job.0.try_wait().ok().flatten()
    });
    if out.code != Some(0) || st.code() != Some(0) {
        env.fail(format!("stop: {out}\njob exit: {st}"));
    }
}

fn plist_json(path: &str) -> Value {
    let code =
        "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))";
    let out = run_cmd(python(), &["-c".into(), code.into(), path.into()], DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.code, Some(0), "plistlib cannot read {path}:\n{out}");
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn launchd_plist_has_the_keys_and_a_command_line_the_binary_runs() {
    let plists: Vec<String> = fs::read_dir(format!("{ROOT}/launchd"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "plist"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(!plists.is_empty(), "no launchd/*.plist");
    for path in plists {
        let p = plist_json(&path);
        let ctx = format!("{path}: {p:#}");
        assert!(
            p["Label"].as_str().is_some_and(|l| !l.is_empty()),
            "Label: {ctx}"
        );
        let args: Vec<String> = p["ProgramArguments"]
            .as_array()
            .unwrap_or_else(|| panic!("ProgramArguments: {ctx}"))
            .iter()
            .map(|a| a.as_str().expect("string argument").to_string())
            .collect();
        assert!(
            args[0].starts_with('/') && args[0].ends_with("/supervisor"),
            "program: {ctx}"
        );
        assert_eq!(args[1], "run", "{ctx}");
        assert_eq!(
            p["KeepAlive"],
            serde_json::json!({"SuccessfulExit": false}),
            "KeepAlive must respawn failures only: {ctx}"
        );
        assert!(p["RunAtLoad"] == true, "RunAtLoad: {ctx}");
        assert!(
            p["ThrottleInterval"].as_i64().is_some_and(|t| t >= 1),
            "ThrottleInterval: {ctx}"
        );
        // launchd SIGKILLs after ExitTimeOut (default 20 s): leave the
        // supervisor time to stop its child (stop_timeout, 10 s default).
        assert!(
            p["ExitTimeOut"].as_i64().is_some_and(|t| t > 10),
            "ExitTimeOut: {ctx}"
        );
        for key in ["StandardOutPath", "StandardErrorPath", "WorkingDirectory"] {
            assert!(
                p[key].as_str().is_some_and(|s| s.starts_with('/')),
                "{key}: {ctx}"
            );
        }
        let path_var = p["EnvironmentVariables"]["PATH"].as_str().unwrap_or("");
        assert!(
            path_var.contains("/.venv/bin") && path_var.contains("/usr/bin"),
            "PATH: {ctx}"
        );
        let cfg = &args[args.iter().position(|a| a == "--config").expect("--config") + 1];
        assert!(
            cfg.starts_with('/'),
            "--config must be absolute (launchd's cwd is /): {ctx}"
        );

        let env = Setup::new("serve.py").build();
        run_job_args(&env, &args[1..]);
    }
}

/// `Key=value` lines of the unit (comments and sections dropped).
fn unit_keys(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_unit_has_the_settings_and_a_command_line_the_binary_runs() {
    let text = fs::read_to_string(format!("{ROOT}/systemd/supervisor.service")).unwrap();
    let keys = unit_keys(&text);
    let get = |k: &str| {
        keys.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("systemd/supervisor.service has no {k}="))
    };
    assert_eq!(get("Type"), "simple", "no sd_notify READY=1 yet");
    assert_eq!(get("Restart"), "on-failure");
    assert!(matches!(get("KillMode"), "mixed" | "process"), "KillMode");
    let stop = humantime_secs(get("TimeoutStopSec"));
    assert!(
        stop > 10.0 + 5.0,
        "TimeoutStopSec must exceed child.stop_timeout (10s) + margin"
    );
    let argv: Vec<String> = get("ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(
        argv[0].ends_with("/supervisor") && argv[1] == "run",
        "ExecStart: {argv:?}"
    );

    let env = Setup::new("serve.py").build();
    run_job_args(&env, &argv[1..]);

    // systemd-analyze verify on a copy whose paths exist here.
    let Ok(which) = run_cmd(
        "sh",
        &["-c".into(), "command -v systemd-analyze".into()],
        DEADLINE,
    ) else {
        return;
    };
    if which.code != Some(0) {
        eprintln!("systemd-analyze not installed: unit checked by the assertions above only");
        return;
    }
    let unit = env.path("session-manager.service");
    let copy = text
        .replace("/usr/local/bin/supervisor", BIN)
        .replace("/opt/session-manager", &env.dir_s)
        .replace("User=sessionmgr", "User=root")
        .replace("Group=sessionmgr", "Group=root");
    fs::write(&unit, copy).unwrap();
    let out = run_cmd(
        "systemd-analyze",
        &["verify".into(), unit.display().to_string()],
        secs(60.0),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let complaints: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| l.contains("session-manager.service"))
        .collect();
    assert!(
        out.code == Some(0) && complaints.is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    eprintln!("systemd-analyze verify: clean");
}

/// "30s", "2min", "90" (seconds) -> seconds.
fn humantime_secs(v: &str) -> f64 {
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("duration {v:?}"));
    match unit.trim() {
        "" | "s" | "sec" => n,
        "min" | "m" => n * 60.0,
        "ms" => n / 1000.0,
        u => panic!("unit {u:?} in {v:?}"),
    }
}
