//! Bad input (hardening issue, items 1 and 2).
//!
//! Configs: generated and mutated TOML fed to the loader never panics and
//! always yields non-empty, one-line problems that start with the file
//! (and, for a document that is valid TOML, name the key and its
//! line:column, or say the key is missing); at the command line a bad
//! config is exit 78 with `FILE:LINE:COL: key `...`` on stderr and nothing
//! created. `fuzz/` holds the same loader as a cargo-fuzz target.
//!
//! Files on disk are untrusted: a garbage pid file, a pid file naming an
//! unrelated live process, a truncated or non-JSON or future-dated
//! state.json, a state.json naming a child whose pid now belongs to an
//! innocent process: the supervisor still starts, and no process it did
//! not start ever gets a signal (`tests/children/innocent.py` records every
//! signal it receives).

mod common;

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as PtConfig, TestCaseError};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use supervisor::config::Config;

// ================================================================ item 1

fn base_config() -> String {
    fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/supervisor.toml"
    ))
    .expect("config/supervisor.toml")
}

/// Where the property tests pretend the text comes from.
fn fake_path() -> PathBuf {
    PathBuf::from("/nonexistent-suptest/conf dir/supervisor.toml")
}

/// `:LINE:COL: ` right after the file name, if there.
fn position(rest: &str) -> Option<(usize, usize)> {
    let rest = rest.strip_prefix(':')?;
    let (line, rest) = rest.split_once(':')?;
    let (col, rest) = rest.split_once(':')?;
    rest.starts_with(' ').then_some(())?;
    Some((line.parse().ok()?, col.parse().ok()?))
}

/// The properties every outcome of [`Config::parse`] must have.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    let path = fake_path();
    let file = path.display().to_string();
    let Err(e) = Config::parse(text, &path) else {
        return Ok(());
    };
    prop_assert!(!e.problems.is_empty(), "an error with no problem");
    let valid_toml = toml_edit::ImDocument::parse(text).is_ok();
    let lines = text.split('\n').count();
    for p in &e.problems {
        prop_assert!(!p.contains('\n'), "a problem spans lines: {p:?}");
        prop_assert!(p.starts_with(&file), "does not name the file: {p:?}");
        let rest = &p[file.len()..];
        prop_assert!(
            rest.starts_with(": ") || rest.starts_with(':'),
            "no ':' after the file: {p:?}"
        );
        let pos = position(rest);
        if let Some((line, col)) = pos {
            prop_assert!(
                line >= 1 && line <= lines && col >= 1,
                "position {line}:{col} outside the text ({lines} lines): {p:?}"
            );
        }
        let message = p.rsplit(": ").next().unwrap_or("");
        prop_assert!(!message.trim().is_empty(), "empty message: {p:?}");
        if valid_toml {
            prop_assert!(p.contains("key `"), "valid TOML, no key named: {p:?}");
            prop_assert!(
                pos.is_some() || p.ends_with("missing (required)"),
                "valid TOML, no line:column: {p:?}"
            );
        }
    }
    Ok(())
}

/// Short pieces of TOML syntax and values the loader has opinions about.
fn token() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        "=",
        "\"",
        "'",
        "\"\"\"",
        "'''",
        ",",
        ".",
        "#",
        "\n",
        "\r\n",
        "\t",
        " ",
        "\\",
        "\\u",
        "\u{0}",
        "\u{feff}",
        "\u{e9}",
        "\u{1F600}",
        "inf",
        "nan",
        "-0",
        "+1",
        "1e999",
        "0x7fffffff",
        "99999999999999999999",
        "-1",
        "0",
        "true",
        "1979-05-27T07:32:00Z",
        "\"-1s\"",
        "\"0s\"",
        "\"1ms\"",
        "\"5m\"",
        "\"18446744073709551615s\"",
        "\"99999999999h\"",
        "\"10MiB\"",
        "\"1KB\"",
        "\"0\"",
        "\"9999999999EiB\"",
        "\"SIGKILL\"",
        "\"SIGFOO\"",
        "\"localhost:1\"",
        "\"[::1]:0\"",
        "\"127.0.0.1:99999\"",
        "\"\"",
        "[]",
        "[\"\"]",
        "{}",
        "command",
        "state_dir",
        "address",
        "backlog",
        "stop_signal",
        "max_files",
        "max_bytes",
        "initial_backoff",
        "max_backoff",
        "reset_after",
        "env",
        "user",
        "\"root\"",
        "allow_root",
        "health",
        "notify",
        "http",
        "watchdog",
        "failures",
        "child.",
        "listen.",
        "[child]",
        "[restart]",
        "[log]",
        "[health]",
        "[[child]]",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        3 => fixed,
        1 => "[\\[\\]{}=\"'#,.\n a-z0-9_:-]{1,8}",
        1 => any::<char>().prop_map(String::from),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(Index, u8),
    Insert(Index, String),
    DupLine(Index),
    DropLine(Index),
    SwapLines(Index, Index),
    Truncate(Index),
    /// Replaces the value after the `=` of a line.
    SetValue(Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 1..24u8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        3 => (any::<Index>(), token()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        1 => any::<Index>().prop_map(Mutation::DupLine),
        1 => any::<Index>().prop_map(Mutation::DropLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), prop::collection::vec(token(), 1..4))
            .prop_map(|(i, t)| Mutation::SetValue(i, t.concat())),
    ]
}

fn mutate(text: &str, m: &Mutation) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    match m {
        Mutation::Delete(i, n) => {
            let at = i.index(chars.len() + 1);
            let end = (at + *n as usize).min(chars.len());
            chars[..at].iter().chain(&chars[end..]).collect()
        }
        Mutation::Insert(i, s) => {
            let at = i.index(chars.len() + 1);
            let mut out: String = chars[..at].iter().collect();
            out.push_str(s);
            out.extend(&chars[at..]);
            out
        }
        Mutation::Truncate(i) => chars[..i.index(chars.len() + 1)].iter().collect(),
        Mutation::DupLine(i) => {
            let at = i.index(lines.len());
            lines.insert(at, lines[at].clone());
            lines.join("\n")
        }
        Mutation::DropLine(i) => {
            lines.remove(i.index(lines.len()));
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
            lines.join("\n")
        }
        Mutation::SetValue(i, v) => {
            let with_value: Vec<usize> = (0..lines.len())
                .filter(|&n| !lines[n].trim_start().starts_with('#') && lines[n].contains('='))
                .collect();
            if let Some(&n) = with_value.get(i.index(with_value.len().max(1))) {
                let key = lines[n].split('=').next().unwrap().to_string();
                lines[n] = format!("{key}= {v}");
            }
            lines.join("\n")
        }
    }
}

/// A TOML value, often of the wrong type or out of range.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        prop::sample::select(vec!["1.5", "-0.0", "inf", "nan", "1979-05-27", "07:32:00"])
            .prop_map(str::to_string),
        token().prop_filter("a complete value", |t| t.starts_with('"') && t.len() > 1),
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
        (
            0u64..100_000,
            prop::sample::select(vec![
                "ms", "s", "m", "h", "d", "B", "KB", "KiB", "MiB", "GB", "x", ""
            ])
        )
            .prop_map(|(n, u)| format!("\"{n}{u}\"")),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-zA-Z_]{1,6}", inner), 0..3).prop_map(|v| {
                let kv: Vec<String> = v.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

/// The loader's own schema (every table, `child.limits` included, and its
/// keys) plus a section it must reject.
fn sections() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut all = supervisor::config::schema();
    all.push(("bogus", vec!["key"]));
    all
}

/// A whole document: known and unknown sections and keys, any values,
/// sometimes as dotted keys at the top.
fn document() -> impl Strategy<Value = String> {
    let entry = (any::<Index>(), any::<Index>(), value(), 0..10u8);
    prop::collection::vec(entry, 0..24).prop_map(|entries| {
        let mut by_section: Vec<(String, Vec<String>)> = Vec::new();
        let mut top = Vec::new();
        for (s, k, v, how) in entries {
            let sections = sections();
            let (section, keys) = &sections[s.index(sections.len())];
            let key = keys[k.index(keys.len())];
            let section = *section;
            match how {
                0 => top.push(format!("{section}.{key} = {v}")),
                1 => top.push(format!("{key} = {v}")),
                2 => top.push(format!("{section} = {v}")),
                _ => match by_section.iter_mut().find(|(n, _)| n == section) {
                    Some((_, lines)) => lines.push(format!("{key} = {v}")),
                    None => by_section.push((section.to_string(), vec![format!("{key} = {v}")])),
                },
            }
        }
        let mut text = top.join("\n");
        for (name, lines) in by_section {
            text.push_str(&format!("\n[{name}]\n{}\n", lines.join("\n")));
        }
        text
    })
}

proptest! {
    #![proptest_config(PtConfig { cases: 1500, failure_persistence: None, ..PtConfig::default() })]

    #[test]
    fn mutated_configs_never_panic_and_always_say_where(
        ms in prop::collection::vec(mutation(), 1..6)
    ) {
        let mut text = base_config();
        for m in &ms {
            text = mutate(&text, m);
        }
        check_parse(&text)?;
    }

    #[test]
    fn generated_configs_never_panic_and_always_say_where(text in document()) {
        check_parse(&text)?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        check_parse(&text)?;
    }
}

#[test]
fn the_shipped_config_parses() {
    if let Err(e) = Config::parse(&base_config(), &fake_path()) {
        panic!("config/supervisor.toml is invalid: {e}");
    }
}

#[test]
fn hostile_shapes_are_errors_not_crashes() {
    let deep = 5_000;
    let cases = [
        format!("a = {}{}", "[".repeat(deep), "]".repeat(deep)),
        format!("a = {}", "{ b = ".repeat(deep) + &"}".repeat(deep)),
        format!("{}x = 1", "a.".repeat(deep)),
        format!("[{}]", "a.".repeat(deep) + "b"),
        "[child]\ncommand = [\"x\"]\n".repeat(2000),
        format!("x = \"{}\"", "\\u0000".repeat(10_000)),
        "\u{feff}[child]\ncommand = [\"a\"]\n".to_string(),
        "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = []\n".to_string(),
        "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = [\"\"]\n".to_string(),
        "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = [\"a\\u0000b\"]\n".to_string(),
    ];
    for text in &cases {
        if let Err(e) = check_parse(text) {
            panic!("{e}\n(text starts {:?})", &text[..text.len().min(80)]);
        }
    }
}

#[test]
fn a_toml_syntax_error_always_has_a_message() {
    for text in ["\r", "#\0 comment\n", "a = 1\r\n\r", "[listen]\n\u{7f}"] {
        let e = Config::parse(text, &fake_path()).expect_err(text);
        for p in &e.problems {
            let message = p.rsplit(": ").next().unwrap_or("");
            assert!(
                !message.trim().is_empty(),
                "{text:?}: empty message in {p:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- CLI

/// Writes `text` as a config beside `env`'s and runs `run` with it: exit
/// 78 with every stderr line `FILE:LINE:COL: ...` (and naming `keys`, in
/// order), nothing created, no child, the port untouched.
fn expect_bad_config(env: &Env, name: &str, text: &[u8], keys: &[&str]) {
    let path = env.path(name);
    fs::write(&path, text).unwrap();
    let file = path.display().to_string();
    for args in [&["check-config"][..], &["run"][..]] {
        let before = snapshot(&[&env.dir]);
        let out = env.cli_with(&path, args, DEADLINE);
        let after = snapshot(&[&env.dir]);
        // A header line, then one line per problem.
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.starts_with("supervisor: invalid configuration"))
            .collect();
        let mut bad = Vec::new();
        if out.code != Some(78) {
            bad.push("exit code is not 78".to_string());
        }
        if lines.is_empty() {
            bad.push("nothing on stderr".into());
        }
        for l in &lines {
            let pos = l.strip_prefix(&file).and_then(position);
            if pos.is_none() {
                bad.push(format!("not FILE:LINE:COL: {l:?}"));
            }
        }
        if !keys.is_empty() {
            let named: Vec<&str> = lines
                .iter()
                .filter_map(|l| l.split("key `").nth(1)?.split('`').next())
                .collect();
            if named != keys || lines.len() != keys.len() {
                bad.push(format!(
                    "want one line per key {keys:?}, got keys {named:?}"
                ));
            }
        }
        if out.stderr.contains("panicked") {
            bad.push("a panic".into());
        }
        let diff = snapshot_diff(&before, &after);
        if !diff.is_empty() {
            bad.push(format!("files changed:\n{diff}"));
        }
        if env.state_dir.exists() || env.log_dir.exists() {
            bad.push("the state or log dir was created".into());
        }
        if !env.events().is_empty() {
            bad.push("a child ran".into());
        }
        if std::net::TcpListener::bind(env.addr()).is_err() {
            bad.push("the port is held".into());
        }
        if !bad.is_empty() {
            env.fail(format!(
                "{name}: {}\n{out}\n--- config\n{}",
                bad.join("; "),
                String::from_utf8_lossy(text)
            ));
        }
    }
}

#[test]
fn bad_configs_exit_78_naming_file_line_column_and_key() {
    let env = Setup::new("serve.py").build();
    let good = env.config_text.clone();
    let with = |extra: &str, section: &str| {
        good.replace(
            &format!("[{section}]\n"),
            &format!("[{section}]\n{extra}\n"),
        )
    };

    expect_bad_config(
        &env,
        "unknown.toml",
        with("bogus = 1", "listen").as_bytes(),
        &["listen.bogus"],
    );
    expect_bad_config(
        &env,
        "duration.toml",
        good.replace(
            "initial_backoff = \"100ms\"",
            "initial_backoff = \"ten seconds\"",
        )
        .as_bytes(),
        &["restart.initial_backoff"],
    );
    expect_bad_config(
        &env,
        "type.toml",
        with("backlog = \"many\"", "listen").as_bytes(),
        &["listen.backlog"],
    );
    expect_bad_config(
        &env,
        "several.toml",
        with("max_files = -3", "log")
            .replace(
                "stop_timeout = \"3s\"",
                "stop_timeout = \"3s\"\nstop_signal = \"SIGFOO\"",
            )
            .replace("name = \"http\"", "name = 7")
            .as_bytes(),
        &["listen.name", "child.stop_signal", "log.max_files"],
    );
    expect_bad_config(
        &env,
        "host.toml",
        good.replace(
            &format!("127.0.0.1:{}", env.port),
            &format!("localhost:{}", env.port),
        )
        .as_bytes(),
        &["listen.address"],
    );
    expect_bad_config(
        &env,
        "dotted.toml",
        // After [log], a dotted key belongs to `log`: the full path is named.
        format!("{good}\nchild.bogus = 1\n").as_bytes(),
        &["log.child"],
    );
    // Not TOML at all: a position, no key to name.
    expect_bad_config(
        &env,
        "syntax.toml",
        with("backlog = \"unterminated", "listen").as_bytes(),
        &[],
    );
    expect_bad_config(
        &env,
        "dup.toml",
        with("name = \"x\"", "listen").as_bytes(),
        &[],
    );
    let mut latin1 = good.clone().into_bytes();
    latin1.extend_from_slice(b"# caf\xe9\n");
    expect_bad_config(&env, "latin1.toml", &latin1, &[]);
    let deep = format!("{good}x = {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
    expect_bad_config(&env, "deep.toml", deep.as_bytes(), &[]);
}

// ================================================================ item 2

/// A process the supervisor did not start, in its own process group,
/// recording every signal it gets.
struct Innocent {
    pid: i32,
    pgid: i32,
    /// The leader of a "daemon" innocent, already exited and reaped.
    leader: Option<Child>,
    proc: Option<Child>,
}

impl Innocent {
    fn start(env: &Env, daemon: bool) -> Innocent {
        let mut cmd = Command::new(python());
        cmd.arg(script("innocent.py")).arg(&env.dir_s);
        if daemon {
            cmd.arg("daemon");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn innocent.py");
        let leader_pid = child.id() as i32;
        let (pid, pgid) = env.wait_value("innocent.py ready", DEADLINE, || {
            let text = fs::read_to_string(env.path("innocent.log")).unwrap_or_default();
            text.lines().find_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.len() != 3 || w[0] != "ready" {
                    return None;
                }
                Some((w[1].parse().ok()?, w[2].parse().ok()?))
            })
        });
        if daemon {
            let _ = child.wait();
            Innocent {
                pid,
                pgid,
                leader: Some(child),
                proc: None,
            }
        } else {
            assert_eq!((pid, pgid), (leader_pid, leader_pid));
            Innocent {
                pid,
                pgid,
                leader: None,
                proc: Some(child),
            }
        }
    }

    /// Its start time, in the unit `state.json` records it in.
    fn start_time(&self) -> u64 {
        start_time(self.pid).expect("the innocent process's start time")
    }

    /// Alive and unharmed: not stopped, no signal recorded.
    fn check(&self, env: &Env, when: &str) {
        let log = fs::read_to_string(env.path("innocent.log")).unwrap_or_default();
        let signals: Vec<&str> = log.lines().filter(|l| l.starts_with("signal ")).collect();
        let state = proc_stat(self.pid).map(|s| s.0);
        if !pid_alive(self.pid) || matches!(state, Some('T') | Some('t')) || !signals.is_empty() {
            env.fail(format!(
                "{when}: the innocent process {} (group {}) was touched: state {state:?}, signals {signals:?}",
                self.pid, self.pgid
            ));
        }
    }
}

impl Drop for Innocent {
    fn drop(&mut self) {
        kill(self.pid, libc::SIGKILL);
        if let Some(c) = self.proc.as_mut() {
            let _ = c.wait();
        }
        let _ = self.leader.take();
    }
}

fn now_rfc3339(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A state.json as a previous supervisor would leave it.
fn record(sup_pid: i32, child_pid: i32, pgid: i32, child_start: u64, at: &str) -> Value {
    json!({
        "state": "running",
        "supervisor": { "pid": sup_pid, "started_at": at, "start_time": 12345, "version": "0.1.0" },
        "listen": { "address": "127.0.0.1:1", "bound": true, "name": "http" },
        "child": {
            "pid": child_pid, "pgid": pgid, "start_time": child_start, "started_at": at,
            "restarts": 7, "last_exit": { "code": 1, "signal": null, "at": at },
            "crash_streak": 3, "ready": true
        },
        "next_restart_in_ms": null,
        "port_holder": null,
        "updated_at": at
    })
}

fn plant(env: &Env, pid_file: Option<&[u8]>, state: Option<&[u8]>) {
    fs::create_dir_all(&env.state_dir).unwrap();
    fs::set_permissions(&env.state_dir, fs::Permissions::from_mode(0o700)).unwrap();
    for (name, content) in [("supervisor.pid", pid_file), ("state.json", state)] {
        if let Some(c) = content {
            let p = env.state_dir.join(name);
            fs::write(&p, c).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

/// The CLI commands that talk to a running supervisor, with none running:
/// they must not believe the planted files.
fn commands_find_no_supervisor(env: &Env) {
    for (args, want) in [
        (&["status", "--json"][..], 3),
        (&["restart"][..], 3),
        (&["reopen-logs"][..], 3),
        (&["stop", "--timeout", "2s"][..], 0),
    ] {
        let out = env.cli(args);
        if out.code != Some(want) {
            env.fail(format!(
                "with planted files and no supervisor: want exit {want}\n{out}"
            ));
        }
    }
}

/// Starts a supervisor over the planted files: it starts, its child
/// serves, `status` is right; then it stops cleanly.
fn starts_anyway(env: &Env, innocent: Option<&Innocent>) {
    let sup = env.spawn();
    let child = env.wait_child(&[]);
    if innocent.is_some_and(|i| i.pid == child) {
        env.fail("the supervisor reports the innocent process as its child");
    }
    match request(env.addr(), Duration::from_secs(10)) {
        Ok(r) if r.trim() == child.to_string() => {}
        other => env.fail(format!("the child does not serve: {other:?}")),
    }
    let (code, v) = env.status_json();
    if code != 0 || v["supervisor"]["pid"] != sup.pid() {
        env.fail(format!("status: exit {code} {v}"));
    }
    let pid_file = fs::read_to_string(env.state_dir.join("supervisor.pid")).unwrap_or_default();
    if pid_file != format!("{}\n", sup.pid()) {
        env.fail(format!("pid file {pid_file:?}, want the supervisor's pid"));
    }
    if let Some(i) = innocent {
        i.check(env, "while the supervisor runs");
    }
    let out = env.cli(&["stop"]);
    if out.code != Some(0) || sup.wait_exit(DEADLINE).code() != Some(0) {
        env.fail(format!("stop failed\n{out}"));
    }
    if let Some(i) = innocent {
        i.check(env, "after stop");
    }
}

#[test]
fn a_garbage_pid_file_is_ignored() {
    for garbage in [
        &b"garbage\n"[..],
        b"",
        b"\0\xff\xfe",
        b"-1\n",
        b"0\n",
        b"1\n",
        b"99999999999999999999\n",
        &[b'7'; 5000],
    ] {
        let env = Setup::new("serve.py").build();
        plant(&env, Some(garbage), None);
        commands_find_no_supervisor(&env);
        starts_anyway(&env, None);
    }
}

#[test]
fn a_pid_file_naming_an_unrelated_live_process_is_ignored() {
    let env = Setup::new("serve.py").build();
    let innocent = Innocent::start(&env, false);
    plant(&env, Some(format!("{}\n", innocent.pid).as_bytes()), None);
    commands_find_no_supervisor(&env);
    innocent.check(&env, "after status/restart/reopen-logs/stop");
    starts_anyway(&env, Some(&innocent));
}

#[test]
fn a_broken_state_json_is_ignored() {
    let full = record(999_999, 999_998, 999_998, 1, &now_rfc3339(-5)).to_string();
    let cases: Vec<Vec<u8>> = vec![
        full.as_bytes()[..full.len() / 2].to_vec(),
        b"not json at all".to_vec(),
        b"\0\0\0\0\0\0\0\0".to_vec(),
        b"".to_vec(),
        b"[]".to_vec(),
        b"{\"state\": 7}".to_vec(),
        json!({ "state": "running", "child": { "pid": -1, "pgid": -1, "start_time": 1, "restarts": 1, "started_at": null, "last_exit": null } }).to_string().into_bytes(),
        json!({ "state": "running", "child": { "pid": 0, "pgid": 0, "restarts": 4294967295u64, "started_at": "yesterday", "last_exit": null, "crash_streak": 4294967295u64 } }).to_string().into_bytes(),
        json!({ "state": "running", "child": { "pid": 1, "pgid": 1, "start_time": 1, "restarts": 0, "started_at": null, "last_exit": null } }).to_string().into_bytes(),
    ];
    for content in &cases {
        let env = Setup::new("serve.py").build();
        plant(&env, None, Some(content));
        commands_find_no_supervisor(&env);
        starts_anyway(&env, None);
    }
}

#[test]
fn a_state_json_from_the_future_resumes_no_crash_loop_and_status_clamps() {
    // At start: a record dated years ahead with a long crash streak. Its
    // streak must not be resumed (the first backoff is initial_backoff).
    let env = Setup::new("crash.py")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "20s")
        .restart("reset_after", "60s")
        .build();
    let mut rec = record(999_999, 999_998, 999_998, 1, "2099-01-01T00:00:00Z");
    rec["child"]["crash_streak"] = json!(40);
    rec["next_restart_at"] = json!("2099-01-01T00:00:00Z");
    plant(&env, None, Some(rec.to_string().as_bytes()));
    let sup = env.spawn();
    env.wait_for("a second child start", DEADLINE, || {
        env.events_of("start").len() >= 2
    });
    let starts = env.events_of("start");
    let gap = starts[1].t - starts[0].t;
    if gap > 2.0 {
        env.fail(format!(
            "a future record's crash streak was resumed: restart after {gap:.3}s, want ~0.1s"
        ));
    }
    sup.signal(libc::SIGTERM);
    sup.wait_exit(DEADLINE);

    // While running: the live record edited to lie in the future.
    let env = Setup::new("serve.py").build();
    let _sup = env.spawn();
    env.wait_child(&[]);
    let mut live = env.state().expect("state.json");
    let future = "2099-06-01T12:00:00Z";
    live["supervisor"]["started_at"] = json!(future);
    live["child"]["started_at"] = json!(future);
    live["child"]["last_exit"] = json!({ "code": 1, "signal": null, "at": future });
    live["updated_at"] = json!(future);
    fs::write(env.state_dir.join("state.json"), live.to_string()).unwrap();
    let (code, v) = env.status_json();
    let now = now_rfc3339(1);
    for (what, t) in [
        ("supervisor.started_at", &v["supervisor"]["started_at"]),
        ("child.started_at", &v["child"]["started_at"]),
        ("child.last_exit.at", &v["child"]["last_exit"]["at"]),
    ] {
        // Same RFC 3339 seconds format: the text order is the time order.
        if !t
            .as_str()
            .is_some_and(|t| t.len() == now.len() && *t <= *now.as_str())
        {
            env.fail(format!(
                "status --json (exit {code}) does not clamp {what}: {t} (now {now})\n{v:#}"
            ));
        }
    }
    let human = env.cli(&["status"]);
    if human.code != Some(0) || human.stdout.contains("up -") || human.stdout.contains("panick") {
        env.fail(format!("human status with a future record\n{human}"));
    }
    // The uptime is the processes' own (a clock that never steps), not
    // "0s" from a clamped timestamp and never negative: a few seconds.
    for line in human.stdout.lines() {
        if line.contains(" up ")
            && !(0..60)
                .any(|s| line.contains(&format!("up {s}s,")) || line.ends_with(&format!("up {s}s")))
        {
            env.fail(format!(
                "a future start shows an uptime other than a few seconds: {line:?}\n{human}"
            ));
        }
    }
    // As after the clock was set back: the uptime keeps counting (issue 25
    // item 11: it used to stay at "up 0s" until the clock caught up).
    env.wait_for("status to show an uptime of 2s or more", DEADLINE, || {
        let human = env.cli(&["status"]);
        human.stdout.lines().any(|l| {
            l.starts_with("supervisor:") && (2..60).any(|s| l.ends_with(&format!("up {s}s")))
        }) && human.stdout.contains("child:")
    });
}

#[test]
fn a_recorded_child_pid_now_owned_by_an_innocent_process_is_never_signalled() {
    let env = Setup::new("serve.py").build();
    let innocent = Innocent::start(&env, false);
    // Same pid and group, another start time: the pid was reused.
    let rec = record(
        innocent.pid,
        innocent.pid,
        innocent.pgid,
        innocent.start_time() + 1000,
        &now_rfc3339(-2),
    );
    plant(
        &env,
        Some(format!("{}\n", innocent.pid).as_bytes()),
        Some(rec.to_string().as_bytes()),
    );
    commands_find_no_supervisor(&env);
    innocent.check(&env, "after status/restart/reopen-logs/stop");
    starts_anyway(&env, Some(&innocent));
}

#[test]
fn a_recorded_child_without_a_start_time_is_never_signalled() {
    let env = Setup::new("serve.py").build();
    let innocent = Innocent::start(&env, false);
    let mut rec = record(999_999, innocent.pid, innocent.pgid, 0, &now_rfc3339(-2));
    rec["child"]["start_time"] = Value::Null;
    plant(&env, None, Some(rec.to_string().as_bytes()));
    starts_anyway(&env, Some(&innocent));
}

#[test]
fn a_state_json_from_before_boot_naming_an_innocent_group_is_never_signalled() {
    // A classic daemon (fork, parent exits) lives in a group whose leader
    // is gone; a state.json written before this boot names that group id,
    // as one left by a supervisor that died with the machine would.
    let env = Setup::new("serve.py").build();
    let innocent = Innocent::start(&env, true);
    if innocent.pid == innocent.pgid {
        env.fail("innocent.py daemon should not lead its group");
    }
    let booted = boot_time().expect("the machine's boot time");
    let before_boot = std::time::UNIX_EPOCH + Duration::from_secs(booted - 3600);
    let at = humantime::format_rfc3339_seconds(before_boot).to_string();
    let rec = record(999_999, innocent.pgid, innocent.pgid, 4242, &at);
    plant(&env, None, Some(rec.to_string().as_bytes()));
    starts_anyway(&env, Some(&innocent));
}

// ============================================ issue 25 item 6: not a file

/// A config that is not a regular file — a FIFO nobody writes to, a Unix
/// socket — is refused at once with "not a regular file" by every command
/// that reads it: the open never waits for a writer.
#[test]
fn a_fifo_or_socket_config_is_refused_promptly_by_every_command() {
    let env = Setup::new("serve.py").build();
    let fifo = env.path("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let sock = env.path("sock.toml");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind a unix socket");
    // check-config is 78; status says unknown (4) as SPEC's table has it
    // for an invalid config; the commands that act are 78.
    let cases: &[(&[&str], i32)] = &[
        (&["check-config"], 78),
        (&["status"], 4),
        (&["stop"], 78),
        (&["restart"], 78),
        (&["run"], 78),
    ];
    for (config, what) in [(&fifo, "a FIFO"), (&sock, "a socket")] {
        for (args, code) in cases {
            let out = env.cli_with(config, args, Duration::from_secs(10));
            let all = format!("{}{}", out.stdout, out.stderr);
            if out.code != Some(*code) || !all.contains("not a regular file") {
                env.fail(format!(
                    "{what} as the config: expected exit {code} saying \"not a regular file\"\n{out}"
                ));
            }
            if out.took > Duration::from_secs(5) {
                env.fail(format!("{what} as the config: took {:?}\n{out}", out.took));
            }
        }
    }
    assert!(!env.state_dir.exists(), "nothing created");
}

// ========================================= issue 25 item 7: check-config

/// A tmpfs mounted read-only (mode 0700, ours) for the test, unmounted when
/// dropped. None (with the reason) where mounting is not allowed.
#[cfg(target_os = "linux")]
struct ReadOnlyMount(PathBuf);

#[cfg(target_os = "linux")]
impl ReadOnlyMount {
    fn at(dir: &std::path::Path) -> Result<ReadOnlyMount, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("mounting a tmpfs needs root".into());
        }
        fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,mode=0700,size=64k", "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(ReadOnlyMount(dir.to_owned()))
    }
}

#[cfg(target_os = "linux")]
impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `run` fails on a read-only state dir ("Read-only file system");
/// `check-config` now says so too (78) instead of "valid".
#[cfg(target_os = "linux")]
#[test]
fn check_config_refuses_a_read_only_state_dir() {
    let probe = tempfile::tempdir().expect("temp dir");
    let ro = probe.path().join("ro");
    let env = Setup::new("serve.py")
        .set("supervisor", "state_dir", ro.to_str().expect("utf-8"))
        .build();
    let _mount = match ReadOnlyMount::at(&ro) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let out = env.cli(&["check-config"]);
    if out.code != Some(78)
        || !out.stderr.contains("Read-only file system")
        || !out.stderr.contains(&ro.display().to_string())
    {
        env.fail(format!("check-config on a read-only state dir\n{out}"));
    }
    if !out.stdout.is_empty() {
        env.fail(format!(
            "an invalid config prints no resolved config\n{out}"
        ));
    }
    let run = env.cli_with(&env.config, &["run"], DEADLINE);
    if run.code == Some(0) || !run.stderr.contains("Read-only file system") {
        env.fail(format!("run on a read-only state dir\n{run}"));
    }
}

/// A state dir whose pid file path passes PATH_MAX: `run` used to create
/// the folders and then fail (1); now both refuse it first (78), naming
/// the key, and nothing is created.
#[test]
fn check_config_and_run_refuse_a_state_dir_longer_than_path_max() {
    let long = format!("deep/{}", "d/".repeat(2100));
    let env = Setup::new("serve.py")
        .set("supervisor", "state_dir", &long)
        .build();
    let deep = env.path("deep");
    for args in [&["check-config"][..], &["run"][..]] {
        let out = env.cli(args);
        if out.code != Some(78)
            || !out.stderr.contains("key `supervisor.state_dir`")
            || !out.stderr.contains("PATH_MAX")
        {
            env.fail(format!("a state dir longer than PATH_MAX\n{out}"));
        }
    }
    assert!(!deep.exists(), "nothing created");
}

/// A config that has no folder of its own — a deleted file reached as
/// `/dev/fd/5`, a pipe as from `--config <(cat sup.toml)` — cannot give
/// `state_dir = "run"` a meaning: refused (78) naming why, not resolved
/// to `/dev/fd/run`.
#[test]
fn check_config_refuses_relative_paths_against_a_descriptor_config() {
    let env = Setup::new("serve.py").build();
    let text = fs::read(&env.config).expect("config");
    let run_with_fd5 = |fd: std::os::fd::RawFd, args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg("/dev/fd/5").args(args);
        cmd.stdin(Stdio::null()).current_dir(&env.dir);
        // SAFETY: dup2 between two open descriptors, async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 5) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("run the supervisor");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A deleted regular file: readable, but its folder is /dev/fd.
    let gone = env.path("gone.toml");
    fs::write(&gone, &text).expect("write");
    let file = fs::File::open(&gone).expect("open");
    fs::remove_file(&gone).expect("unlink");
    use std::os::fd::AsRawFd;
    for args in [&["check-config"][..], &["run"][..]] {
        let (code, stderr) = run_with_fd5(file.as_raw_fd(), args);
        if code != Some(78)
            || !stderr.contains("not a real folder")
            || !stderr.contains("key `supervisor.state_dir`")
        {
            env.fail(format!(
                "{args:?} with a deleted config as /dev/fd/5: {code:?}\n{stderr}"
            ));
        }
    }

    // A pipe, as `<(cat sup.toml)` gives.
    let (read, write) = nix::unistd::pipe().expect("pipe");
    let mut writer = fs::File::from(write);
    std::io::Write::write_all(&mut writer, &text).expect("fill the pipe");
    drop(writer);
    let (code, stderr) = run_with_fd5(read.as_raw_fd(), &["check-config"]);
    if code != Some(78) || !stderr.contains("not a regular file") {
        env.fail(format!("a pipe as the config: {code:?}\n{stderr}"));
    }
    assert!(
        !env.dir.join("run").exists() && !env.state_dir.exists(),
        "nothing created"
    );
}
