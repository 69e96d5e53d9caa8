//! What the loader says about bad files: every problem at once, each on
//! one line naming the file, the position and the key; syntax errors with
//! a position and a message; no panic on garbage.

use super::*;
use crate::config::report::line_col;

/// (section for [`with`], extra lines, key named in the problem, line).
/// In `with`, extras start on line 3 for listen, 5 for child and the
/// others (after their header on line 5).
const BAD: &[(&str, &str, &str, usize)] = &[
    ("supervisor", "state_dir = \"\"", "supervisor.state_dir", 6),
    ("supervisor", "state_dir = 5", "supervisor.state_dir", 6),
    (
        "supervisor",
        "state_dir = \"~/run\"",
        "supervisor.state_dir",
        6,
    ),
    ("supervisor", "pid_file = \"x\"", "supervisor.pid_file", 6),
    ("listen", "backlog = 0", "listen.backlog", 3),
    ("listen", "backlog = 65536", "listen.backlog", 3),
    ("listen", "backlog = \"1024\"", "listen.backlog", 3),
    ("listen", "name = \"\"", "listen.name", 3),
    ("listen", "name = \"a:b\"", "listen.name", 3),
    ("listen", "name = \"caf\u{e9}\"", "listen.name", 3),
    ("listen", "port = 1", "listen.port", 3),
    ("child", "cwd = \"\"", "child.cwd", 5),
    ("child", "env = \"A=B\"", "child.env", 5),
    ("child", "env = { \"\" = \"x\" }", "child.env.", 5),
    ("child", "env = { \"A=B\" = \"x\" }", "child.env.A=B", 5),
    ("child", "env = { A = 1 }", "child.env.A", 5),
    ("child", "env = { A = \"\\u0000\" }", "child.env.A", 5),
    (
        "child",
        "[child.env]\nLISTEN_PID = \"1\"",
        "child.env.LISTEN_PID",
        6,
    ),
    (
        "child",
        "env.LISTEN_FDNAMES = \"x\"",
        "child.env.LISTEN_FDNAMES",
        5,
    ),
    ("child", "stop_signal = \"SIGSTOP\"", "child.stop_signal", 5),
    ("child", "stop_signal = \"SIGNOPE\"", "child.stop_signal", 5),
    ("child", "stop_signal = 15", "child.stop_signal", 5),
    ("child", "stop_timeout = \"0s\"", "child.stop_timeout", 5),
    ("child", "stop_timeout = \"61m\"", "child.stop_timeout", 5),
    ("child", "stop_timeout = 10", "child.stop_timeout", 5),
    (
        "child",
        "stop_timeout = 1979-05-27",
        "child.stop_timeout",
        5,
    ),
    ("child", "env.A.B = \"x\"", "child.env.A", 5),
    ("child", "stop_timeout = \"10\"", "child.stop_timeout", 5),
    ("child", "shell = true", "child.shell", 5),
    (
        "restart",
        "initial_backoff = \"soon\"",
        "restart.initial_backoff",
        6,
    ),
    ("restart", "max_backoff = \"25h\"", "restart.max_backoff", 6),
    (
        "restart",
        "max_backoff = \"500ms\"",
        "restart.max_backoff",
        6,
    ),
    (
        "restart",
        "initial_backoff = \"6m\"",
        "restart.initial_backoff",
        6,
    ),
    ("restart", "reset_after = -1", "restart.reset_after", 6),
    ("restart", "jitter = \"1s\"", "restart.jitter", 6),
    ("log", "max_bytes = 4095", "log.max_bytes", 6),
    ("log", "max_bytes = -1", "log.max_bytes", 6),
    ("log", "max_bytes = \"1KB\"", "log.max_bytes", 6),
    ("log", "max_bytes = 1.5", "log.max_bytes", 6),
    ("log", "max_files = 0", "log.max_files", 6),
    ("log", "max_files = 1001", "log.max_files", 6),
    ("log", "dir = [\"logs\"]", "log.dir", 6),
    ("log", "level = \"info\"", "log.level", 6),
    ("extra", "x = 1", "extra", 5),
    // Durations that would allow a tight loop, signals that stop nothing.
    (
        "restart",
        "initial_backoff = \"0s\"",
        "restart.initial_backoff",
        6,
    ),
    ("restart", "reset_after = \"0ms\"", "restart.reset_after", 6),
    ("child", "stop_signal = \"SIGCHLD\"", "child.stop_signal", 5),
    ("child", "stop_signal = \"winch\"", "child.stop_signal", 5),
    ("child", "stop_signal = \"SIGURG\"", "child.stop_signal", 5),
    ("child", "stop_signal = \"SIGCONT\"", "child.stop_signal", 5),
    // The child's process attributes.
    ("child", "umask = \"999\"", "child.umask", 5),
    ("child", "umask = 22", "child.umask", 5),
    ("child", "nice = 20", "child.nice", 5),
    ("child", "nice = -21", "child.nice", 5),
    ("child", "nice = \"5\"", "child.nice", 5),
    ("child", "max_memory = 0", "child.max_memory", 5),
    ("child", "max_memory = \"lots\"", "child.max_memory", 5),
    (
        "child",
        "max_memory_check = \"0s\"",
        "child.max_memory_check",
        5,
    ),
    ("child", "limits = 5", "child.limits", 5),
    (
        "child",
        "limits.nofile = \"many\"",
        "child.limits.nofile",
        5,
    ),
    ("child", "limits = { nproc = 0 }", "child.limits.nproc", 5),
    ("child.limits", "nofile = 0", "child.limits.nofile", 6),
    ("child.limits", "cpu = \"1.5s\"", "child.limits.cpu", 6),
    ("child.limits", "stack = \"big\"", "child.limits.stack", 6),
    ("child.limits", "files = 5", "child.limits.files", 6),
    // Alerts.
    ("alerts", "events = [\"crash-loop\"]", "alerts.events", 6),
    ("alerts", "timeout = \"5s\"", "alerts.timeout", 6),
    ("alerts", "command = []", "alerts.command", 6),
    ("alerts", "command = \"notify-me\"", "alerts.command", 6),
    ("alerts", "command = [\"a\", 2]", "alerts.command[1]", 6),
    (
        "alerts",
        "command = [\"x\"]\nevents = [\"crash-loop\", \"nope\"]",
        "alerts.events[1]",
        7,
    ),
    (
        "alerts",
        "command = [\"x\"]\nevents = [\"exit\", \"memory\", \"exit\"]",
        "alerts.events[2]",
        7,
    ),
    (
        "alerts",
        "command = [\"x\"]\nevents = []",
        "alerts.events",
        7,
    ),
    (
        "alerts",
        "command = [\"x\"]\nevents = \"exit\"",
        "alerts.events",
        7,
    ),
    (
        "alerts",
        "command = [\"x\"]\ncrash_loop_after = 1",
        "alerts.crash_loop_after",
        7,
    ),
    (
        "alerts",
        "command = [\"x\"]\nmin_interval = \"0s\"",
        "alerts.min_interval",
        7,
    ),
    (
        "alerts",
        "command = [\"x\"]\ntimeout = \"2h\"",
        "alerts.timeout",
        7,
    ),
    (
        "alerts",
        "command = [\"x\"]\nport_busy_after = 30",
        "alerts.port_busy_after",
        7,
    ),
    (
        "alerts",
        "command = [\"x\"]\nwebhook = \"u\"",
        "alerts.webhook",
        7,
    ),
    ("health", "watchdog = \"10s\"", "health.watchdog", 6),
    // A handover needs a readiness signal to know when the old child may go.
    ("restart", "overlap = true", "restart.overlap", 6),
    ("restart", "overlap = \"yes\"", "restart.overlap", 6),
];

#[test]
fn bad_values_name_key_and_line() {
    for (section, extra, key, line) in BAD {
        let text = with(section, extra);
        let problems = problems(&text);
        let want = format!("{FILE}:{line}:");
        let named = format!("key `{key}`");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&want) && p.contains(&named)),
            "{extra:?}: want {want}… {named}, got {problems:#?}"
        );
        assert!(problems.iter().all(|p| !p.contains('\n')), "{problems:?}");
    }
}

#[test]
fn bad_addresses() {
    for (address, hint) in [
        ("127.0.0.1", "no port"),
        ("::1", "no port"),
        ("127.0.0.1:0", "port 0"),
        ("[::1]:0", "port 0"),
        ("localhost:8420", "IP address"),
        ("127.0.0.1:99999", "port 99999 is out of range (1-65535)"),
        (" 127.0.0.1:8420", "has spaces"),
        ("", "not an address"),
    ] {
        let text = MINIMAL.replace("127.0.0.1:8420", address);
        let problems = problems(&text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{FILE}:2:11: key `listen.address`: ")),
            "{problems:?}"
        );
        assert!(problems[0].contains(hint), "{address}: {problems:?}");
    }
}

#[test]
fn required_keys() {
    assert_eq!(
        problems(""),
        [
            format!("{FILE}: key `listen.address`: missing (required)"),
            format!("{FILE}: key `child.command`: missing (required)"),
        ]
    );
    for (text, key) in [
        (
            "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = []\n",
            "child.command",
        ),
        (
            "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = [\"\"]\n",
            "child.command[0]",
        ),
        (
            "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = \"app --x\"\n",
            "child.command",
        ),
        (
            "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = [\"a\", 1]\n",
            "child.command[1]",
        ),
    ] {
        let problems = problems(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{FILE}:4:")),
            "{problems:?}"
        );
        assert!(
            problems[0].contains(&format!("key `{key}`")),
            "{problems:?}"
        );
    }
}

#[test]
fn all_problems_at_once() {
    let text = "[listen]\naddress = \"127.0.0.1:8420\"\nbacklog = 0\n\
                [child]\ncommand = [\"app\"]\nstop_timeout = 5\n\
                [log]\nmax_files = 0\n";
    let problems = problems(text);
    let keys = ["listen.backlog", "child.stop_timeout", "log.max_files"];
    assert_eq!(problems.len(), 3, "{problems:#?}");
    for ((problem, key), line) in problems.iter().zip(keys).zip([3, 6, 8]) {
        assert!(problem.starts_with(&format!("{FILE}:{line}:")), "{problem}");
        assert!(problem.contains(&format!("key `{key}`")), "{problem}");
    }
}

#[test]
fn syntax_errors_have_a_position() {
    for (text, at) in [
        ("[listen\n", ":1:"),
        ("a = \n", ":1:"),
        ("[listen]\nname = 1\nname = 2\n", ":3:"),
    ] {
        let problems = problems(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{FILE}{at}")),
            "{problems:?}"
        );
    }
}

#[test]
fn problems_point_at_the_key_or_value() {
    // Key and value positions come from toml_edit's spans; this notices
    // if an upgrade loses them.
    let p = problems(&with("log", "  bogus = 1"));
    assert!(
        p[0].starts_with(&format!("{FILE}:6:3: key `log.bogus`")),
        "{p:?}"
    );
    let p = problems(&with("log", "max_files =   0"));
    assert!(
        p[0].starts_with(&format!("{FILE}:6:15: key `log.max_files`")),
        "{p:?}"
    );
    let p = problems("[listen]\naddress = \"\u{e9}\u{e9}\"\n[child]\ncommand = [\"a\"]\nenv = { \"\u{e9}\" = 1 }\n");
    assert!(p[0].starts_with(&format!("{FILE}:2:11: ")), "{p:?}");
    assert!(
        p[1].starts_with(&format!("{FILE}:5:15: key `child.env.\u{e9}`")),
        "{p:?}"
    );
}

#[test]
fn alert_keys_without_a_command_are_each_named() {
    let p = problems(&with("alerts", "events = [\"exit\"]\ntimeout = \"5s\""));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with(&format!(
        "{FILE}:6:10: key `alerts.events`: needs alerts.command"
    )));
    assert!(p[1].starts_with(&format!(
        "{FILE}:7:11: key `alerts.timeout`: needs alerts.command"
    )));
}

#[test]
fn garbage_never_panics() {
    let mut inputs: Vec<String> = vec![
        "\0\u{1}\u{ff}[[".into(),
        "[".repeat(10_000),
        format!("a = {}", "[".repeat(10_000)),
        format!("a = {}", "{ b = ".repeat(10_000)),
        "\"\u{10FFFF}\" = 1\n[child]\n\"\u{0}\" = [1, [2, {}]]".into(),
        "listen = []\nchild = 1\n[[log]]\n".into(),
        "[listen.address]\n[child.command.x]\n".into(),
        format!("[log]\nmax_bytes = \"{}\"\n", "9".repeat(5000)),
        format!("[child]\nstop_timeout = \"{}s\"\n", "9".repeat(5000)),
        "[log]\nmax_bytes = \"\u{1F600}MiB\"\n".into(),
    ];
    // A cheap deterministic byte soup built from TOML's own punctuation.
    let alphabet = b"[]{}=\"'.,:# \n\t\\abcdefgzlistenchild0123456789-+_\xc3\xa9";
    let mut seed: u32 = 0x2545_f491;
    for _ in 0..2000 {
        let len = (seed % 80) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                alphabet
                    .get(seed as usize % alphabet.len())
                    .copied()
                    .unwrap_or(b' ')
            })
            .collect();
        inputs.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    for text in inputs {
        if let Err(e) = parse(&text) {
            assert!(!e.problems.is_empty());
        }
        for cut in (0..text.len()).step_by(7) {
            let _ = line_col(&text, cut);
        }
    }
}
