//! Service-manager job files in tests: read a plist with Python's plistlib,
//! read a unit's `Key=value` lines and its `ExecStart=` words, run
//! `systemd-analyze verify`, and run a job's command line for real.

use super::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// A `supervisor` started with a job's command line, killed by pid if the
/// test leaves it running.
pub struct Job(std::process::Child);

impl Drop for Job {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `program args` (a job's command line), with the value of
/// `--config` replaced by the test's config when `swap_config`: it must
/// supervise the child; a second copy must exit 0 at once (launchd and
/// systemd do not respawn that); `stop` must end it with exit 0.
pub fn run_job(env: &Env, program: &str, args: &[String], swap_config: bool) {
    let i = args
        .iter()
        .position(|a| a == "--config")
        .unwrap_or_else(|| env.fail(format!("no --config in {args:?}")));
    let mut args = args.to_vec();
    if swap_config {
        args[i + 1] = env.config.display().to_string();
    }
    let start = || {
        Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| env.fail(format!("cannot run {program} {args:?}: {e}")))
    };
    let mut job = Job(start());
    env.wait_child(&[]);
    let second = start().wait_with_output().expect("second copy");
    if second.status.code() != Some(0) {
        env.fail(format!(
            "a second `{program} {}` exited {} (launchd/systemd would respawn it): {}",
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

/// The plist at `path` as JSON, read by Python's plistlib (an independent
/// reader: what launchd's own parser accepts, plistlib accepts too).
pub fn plist_json(path: &Path) -> Value {
    let code =
        "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))";
    let out = run_cmd(
        python(),
        &["-c".into(), code.into(), path.display().to_string()],
        DEADLINE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.code,
        Some(0),
        "plistlib cannot read {}:\n{out}",
        path.display()
    );
    serde_json::from_str(&out.stdout).unwrap()
}

/// `Key=value` lines of a unit (comments and section headers dropped).
pub fn unit_keys(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The one value of `key` in a unit; panics if it is missing or repeated.
pub fn unit_value(text: &str, key: &str) -> String {
    let found: Vec<String> = unit_keys(text)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    match found.as_slice() {
        [v] => v.clone(),
        _ => panic!("{key}= appears {} times in:\n{text}", found.len()),
    }
}

/// The words of an `ExecStart=` value as systemd reads them: split at
/// spaces, `"..."` quoting with `\\` and `\"`, `%%` for `%` and, except in
/// the program, `$$` for `$`.
pub fn exec_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut w = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
        }
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted => break,
                ' ' if !quoted => break,
                '\\' if quoted => w.extend(chars.next()),
                c => w.push(c),
            }
        }
        let w = w.replace("%%", "%");
        words.push(if words.is_empty() {
            w
        } else {
            w.replace("$$", "$")
        });
    }
    words
}

/// Runs `systemd-analyze [--user] verify FILES` and fails on any complaint
/// about them; `None` (with a note on stderr) where systemd-analyze is not
/// installed, as on macOS.
pub fn systemd_verify(env: &Env, files: &[PathBuf], user: bool) -> Option<Out> {
    let which = run_cmd(
        "sh",
        &["-c".into(), "command -v systemd-analyze".into()],
        DEADLINE,
    )
    .ok()?;
    if which.code != Some(0) {
        eprintln!("systemd-analyze not installed: units checked by the assertions only");
        return None;
    }
    let mut args: Vec<String> = Vec::new();
    if user {
        // A user manager needs a runtime dir; the test's own will do.
        let xdg = env.path("xdg-runtime");
        let _ = fs::create_dir(&xdg);
        let _ = fs::set_permissions(&xdg, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        args.push(format!("XDG_RUNTIME_DIR={}", xdg.display()));
    }
    args.push("systemd-analyze".into());
    if user {
        args.push("--user".into());
    }
    args.push("verify".into());
    args.extend(files.iter().map(|f| f.display().to_string()));
    let out = run_cmd("env", &args, secs(60.0)).unwrap_or_else(|e| env.fail(e));
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let complaints: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
        .collect();
    if out.code != Some(0) || !complaints.is_empty() {
        env.fail(format!("systemd-analyze verify:\n{out}"));
    }
    Some(out)
}

/// "30s", "2min", "90" (seconds) -> seconds.
pub fn unit_secs(v: &str) -> f64 {
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
