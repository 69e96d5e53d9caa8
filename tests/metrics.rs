//! Prometheus metrics: `status --format prometheus` checked by the real
//! tools (`promtool check metrics`, prometheus_client's parser); values
//! beside `status --json`.
//!
//! promtool (and the Prometheus server) come from Debian's `prometheus`
//! package, which `.ci/run` installs; where it is missing the tests that
//! need it say so and skip. prometheus_client comes from the test venv
//! (`tests/requirements.txt`).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A tool on PATH (or in /usr/bin, /usr/sbin), if installed.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `prog args` with `input` on stdin: (exit code, stdout, stderr).
fn pipe_through(prog: &std::path::Path, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", prog.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `promtool check metrics` on `text` (lint included): fails the test on
/// any complaint; false when promtool is not installed (said on stderr).
fn promtool_check(text: &str) -> bool {
    let Some(promtool) = tool("promtool") else {
        eprintln!(
            "skipped: promtool is not installed (Debian: apt-get install prometheus; .ci/run does)"
        );
        return false;
    };
    let (code, out, err) = pipe_through(&promtool, &["check", "metrics"], text);
    assert!(
        code == 0 && out.trim().is_empty() && err.trim().is_empty(),
        "promtool check metrics: exit {code}\n{out}{err}\n--- the text:\n{text}"
    );
    true
}

/// The samples as prometheus_client's reference parser reads them:
/// `name{label="v",...}` (labels sorted) → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{%s}" % labels if labels else "")] = s.value
print(json.dumps(out))
"#;
    let python = venv().join("bin/python");
    let (code, out, err) = pipe_through(&python, &["-c", SCRIPT], text);
    assert_eq!(
        code, 0,
        "prometheus_client could not parse the text (is it in the venv? pip install -r tests/requirements.txt): {err}\n--- the text:\n{text}"
    );
    serde_json::from_str(&out).unwrap()
}

fn unix_seconds(rfc3339: &Value) -> f64 {
    let t = humantime::parse_rfc3339_weak(rfc3339.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Kills the child twice and waits for the third: restarts 2, the last
/// exit SIGKILL.
fn two_kills(env: &Env) -> Value {
    let first = env.wait_child(&[]);
    kill(first, 9);
    let second = env.wait_child(&[first]);
    kill(second, 9);
    env.wait_child(&[first, second]);
    env.wait_value("restarts 2 after SIGKILL", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running"
            && v["child"]["restarts"] == 2
            && v["child"]["last_exit"]["signal"] == "SIGKILL")
            .then_some(v)
    })
}

/// The samples `status --json` (`v`) implies, checked against `m`.
fn matches_json(env: &Env, m: &BTreeMap<String, f64>, v: &Value) {
    let child = &v["child"];
    let want = [
        ("supervisor_up", 1.0),
        (
            "supervisor_reloads_total",
            v["supervisor"]["reloads"].as_f64().unwrap(),
        ),
        ("supervisor_port_bound", 1.0),
        ("supervisor_child_up", 1.0),
        ("supervisor_child_ready", 1.0),
        ("supervisor_child_restarts_total", 2.0),
        (
            "supervisor_child_crash_streak",
            child["crash_streak"].as_f64().unwrap(),
        ),
        ("supervisor_child_last_exit_code", -1.0),
        ("supervisor_child_last_exit_signal", 9.0),
        (
            "supervisor_start_time_seconds",
            unix_seconds(&v["supervisor"]["started_at"]),
        ),
        (
            "supervisor_child_start_time_seconds",
            unix_seconds(&child["started_at"]),
        ),
        ("supervisor_handovers_total{result=\"ok\"}", 0.0),
        ("supervisor_handovers_total{result=\"failed\"}", 0.0),
        ("supervisor_alerts_total{event=\"crash-loop\"}", 0.0),
    ];
    for (name, value) in want {
        match m.get(name) {
            Some(got) if (got - value).abs() < 1e-6 => {}
            got => env.fail(format!(
                "{name}: want {value} (from status --json), got {got:?}\n{m:#?}\n{v:#}"
            )),
        }
    }
    let version = format!(
        "supervisor_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m.get(&version), Some(&1.0), "{m:#?}");
    let memory = m["supervisor_child_memory_bytes"];
    // A python child: several MiB, measured now.
    if !(1e6..1e10).contains(&memory) {
        env.fail(format!(
            "supervisor_child_memory_bytes {memory}: not a python child's RSS"
        ));
    }
    for stream in ["stdout", "stderr"] {
        assert!(
            m.contains_key(&format!(
                "supervisor_log_bytes_total{{stream=\"{stream}\"}}"
            )),
            "{m:#?}"
        );
    }
}

#[test]
fn status_format_prometheus_passes_promtool_and_matches_status_json() {
    let env = Setup::new("serve.py").build();
    let _sup = env.spawn();
    let v = two_kills(&env);
    let out = env.cli(&["status", "--format", "prometheus"]);
    assert_eq!(out.code, Some(0), "{out}");
    promtool_check(&out.stdout);
    let m = parse(&out.stdout);
    matches_json(&env, &m, &v);

    // Not running: up 0, exit 3, still valid.
    env.cli(&["stop"]);
    let out = env.cli(&["status", "--format", "prometheus"]);
    assert_eq!(out.code, Some(3), "{out}");
    promtool_check(&out.stdout);
    let m = parse(&out.stdout);
    assert_eq!(m.get("supervisor_up"), Some(&0.0), "{m:#?}");
}
