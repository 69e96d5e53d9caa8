//! The test's temp dir and its `supervisor.toml`: [`Setup`] collects the
//! child script, its arguments and config keys, and [`Setup::build`] writes
//! them out and hands back the [`Env`].

use super::{free_port, python, script, Env};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::sync::Mutex;

/// A TOML basic string holding `s`.
pub(super) fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Builds an [`Env`]: which child runs, and config keys per section (values
/// are raw TOML). Defaults keep tests fast: short backoff and stop timeout.
pub struct Setup {
    script: String,
    args: Vec<String>,
    prelude: Vec<String>,
    env: Vec<(String, String)>,
    sections: BTreeMap<&'static str, BTreeMap<String, String>>,
}

impl Setup {
    pub fn new(script_name: &str) -> Setup {
        Setup {
            script: script(script_name),
            args: Vec::new(),
            prelude: Vec::new(),
            env: Vec::new(),
            sections: BTreeMap::new(),
        }
        .set("supervisor", "state_dir", "run")
        .set("listen", "name", "http")
        .set("child", "stop_timeout", "3s")
        // CI runs as root; the tests' children run as root on purpose.
        .raw("child", "allow_root", "true")
        .set("restart", "initial_backoff", "100ms")
        .set("restart", "max_backoff", "1s")
        .set("log", "dir", "logs")
    }

    /// Sets a string-valued key.
    pub fn set(self, section: &'static str, key: &str, value: &str) -> Setup {
        self.raw(section, key, &toml_str(value))
    }

    /// Sets a key to a raw TOML value.
    pub fn raw(mut self, section: &'static str, key: &str, value: &str) -> Setup {
        self.sections
            .entry(section)
            .or_default()
            .insert(key.into(), value.into());
        self
    }

    pub fn restart(self, key: &str, value: &str) -> Setup {
        self.set("restart", key, value)
    }

    pub fn child(self, key: &str, value: &str) -> Setup {
        self.set("child", key, value)
    }

    /// An extra argument for the child script (after the temp dir).
    pub fn arg(mut self, a: &str) -> Setup {
        self.args.push(a.into());
        self
    }

    /// Added to the child's environment through `child.env`.
    pub fn env(mut self, k: &str, v: &str) -> Setup {
        self.env.push((k.into(), v.into()));
        self
    }

    /// argv elements put before `python3 script dir ...` (a wrapper that
    /// execs the rest).
    pub fn prelude(mut self, argv: &[&str]) -> Setup {
        self.prelude = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn build(self) -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("suptest-")
            .tempdir()
            .expect("temp dir");
        let dir = fs::canonicalize(tmp.path()).unwrap();
        let dir_s = dir.to_str().expect("utf-8 temp path").to_string();
        let port = free_port();

        let mut argv = self.prelude.clone();
        argv.push(python().into());
        argv.push(self.script.clone());
        argv.push(dir_s.clone());
        argv.extend(self.args.iter().cloned());
        let command: Vec<String> = argv.iter().map(|a| toml_str(a)).collect();

        let mut sections = self.sections;
        sections
            .entry("listen")
            .or_default()
            .insert("address".into(), toml_str(&format!("127.0.0.1:{port}")));
        let child = sections.entry("child").or_default();
        child.insert("command".into(), format!("[{}]", command.join(", ")));
        if !self.env.is_empty() {
            let pairs: Vec<String> = self
                .env
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_str(v)))
                .collect();
            child.insert("env".into(), format!("{{ {} }}", pairs.join(", ")));
        }

        let mut text = String::new();
        for section in [
            "supervisor",
            "listen",
            "child",
            "restart",
            "log",
            "health",
            "metrics",
        ] {
            let Some(keys) = sections.get(section) else {
                continue;
            };
            let _ = writeln!(text, "[{section}]");
            for (k, v) in keys {
                let _ = writeln!(text, "{k} = {v}");
            }
            text.push('\n');
        }
        let config = dir.join("supervisor.toml");
        fs::write(&config, &text).unwrap();

        Env {
            state_dir: dir.join("run"),
            log_dir: dir.join("logs"),
            dir_s,
            config,
            port,
            script: self.script,
            config_text: text,
            runs: Mutex::new(Vec::new()),
            history: Mutex::new(Vec::new()),
            last_status: Mutex::new(String::new()),
            dir,
            _tmp: tmp,
        }
    }
}

impl Env {
    /// Replaces the child's argv in the config (the harness's default is
    /// `python3 SCRIPT DIR ...`). Keep this test's temp dir somewhere in
    /// argv so the cleanup finds every process.
    pub fn set_command(&mut self, argv: &[String]) {
        let command: Vec<String> = argv.iter().map(|a| toml_str(a)).collect();
        let line = format!("command = [{}]", command.join(", "));
        let mut text = String::new();
        for l in self.config_text.lines() {
            text.push_str(if l.starts_with("command = ") {
                &line
            } else {
                l
            });
            text.push('\n');
        }
        fs::write(&self.config, &text).unwrap();
        self.config_text = text;
    }
}
