//! The loader as a whole: defaults, what the keys resolve to, the round
//! trip through `to_toml`, the shipped files, loading from disk. What it
//! says about bad files is in [`problems`].

use super::amounts::HOUR;
use super::keys;
use super::values::normalize;
use super::*;

mod problems;

const FILE: &str = "/etc/sv/supervisor.toml";
const MINIMAL: &str = "[listen]\naddress = \"127.0.0.1:8420\"\n[child]\ncommand = [\"app\"]\n";

/// `text` as the value of a key, the way the checker sees it (for the
/// value parsers' own tables).
pub(super) fn item(text: &str) -> toml_edit::Item {
    let doc = toml_edit::ImDocument::parse(format!("k = {text}")).expect(text);
    doc.get("k").cloned().expect("k")
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE))
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(c) => panic!("accepted:\n{text}\n{c:?}"),
        Err(e) => e.problems,
    }
}

/// MINIMAL with `extra` lines appended to `[section]` (TOML allows
/// reopening a table only once, so the extras go into the right place).
fn with(section: &str, extra: &str) -> String {
    match section {
        "listen" => format!(
            "[listen]\naddress = \"127.0.0.1:8420\"\n{extra}\n[child]\ncommand = [\"app\"]\n"
        ),
        "child" => format!(
            "[listen]\naddress = \"127.0.0.1:8420\"\n[child]\ncommand = [\"app\"]\n{extra}\n"
        ),
        other => format!("{MINIMAL}[{other}]\n{extra}\n"),
    }
}

#[test]
fn defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.path, Path::new(FILE));
    assert_eq!(c.supervisor.state_dir, Path::new("/etc/sv/run"));
    assert_eq!(c.listen.address, "127.0.0.1:8420".parse().unwrap());
    assert_eq!((c.listen.backlog, c.listen.name.as_str()), (1024, "http"));
    assert_eq!(c.child.command, ["app"]);
    assert_eq!(c.child.cwd, Path::new("/etc/sv"));
    assert!(c.child.env.is_empty());
    assert_eq!(c.child.stop_signal, Signal::SIGTERM);
    assert_eq!(c.child.stop_timeout, Duration::from_secs(10));
    assert_eq!(c.restart.initial_backoff, Duration::from_secs(1));
    assert_eq!(c.restart.max_backoff, Duration::from_secs(300));
    assert_eq!(c.restart.reset_after, Duration::from_secs(60));
    assert_eq!(c.log.dir, Path::new("/etc/sv/logs"));
    assert_eq!((c.log.max_bytes, c.log.max_files), (10 * 1024 * 1024, 5));
}

#[test]
fn full_example_from_spec() {
    let text = r#"
        [supervisor]
        state_dir = "run"
        [listen]
        address = "[::1]:8420"
        backlog = 1024
        name = "http"
        [child]
        command = ["python3", "-m", "src.main"]
        cwd = "."
        env = { APP_ENV = "prod" }
        stop_signal = "term"
        stop_timeout = "10s"
        [restart]
        initial_backoff = "250ms"
        max_backoff = "5m"
        reset_after = "60s"
        [log]
        dir = "logs"
        max_bytes = "10MiB"
        max_files = 5
    "#;
    let c = parse(text).unwrap();
    assert_eq!(c.listen.address, "[::1]:8420".parse().unwrap());
    assert_eq!(c.child.env.get("APP_ENV").map(String::as_str), Some("prod"));
    assert_eq!(c.child.stop_signal, Signal::SIGTERM);
    assert_eq!(c.restart.initial_backoff, Duration::from_millis(250));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let text = with("supervisor", "state_dir = \"../var/./run\"").replace(
        "[child]\ncommand = [\"app\"]",
        "[child]\ncommand = [\"app\"]\ncwd = \"srv/app/\"",
    ) + "[log]\ndir = \"/var/log/../log/sv\"\n";
    let c = Config::parse(&text, Path::new("/etc/./sv/conf/../supervisor.toml")).unwrap();
    assert_eq!(c.path, Path::new("/etc/sv/supervisor.toml"));
    assert_eq!(c.supervisor.state_dir, Path::new("/etc/var/run"));
    assert_eq!(c.child.cwd, Path::new("/etc/sv/srv/app"));
    assert_eq!(c.log.dir, Path::new("/var/log/sv"));

    // A relative config path is made absolute against the current directory.
    let c = Config::parse(MINIMAL, Path::new("conf/x.toml")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.path, normalize(&cwd.join("conf/x.toml")));
    assert_eq!(c.supervisor.state_dir, normalize(&cwd.join("conf/run")));
}

#[test]
fn sizes() {
    let c = parse(&with("log", "max_bytes = 5000")).unwrap();
    assert_eq!(c.log.max_bytes, 5000);
    let c = parse(&with("log", "max_bytes = \"2 MiB\"")).unwrap();
    assert_eq!(c.log.max_bytes, 2 << 20);
}

#[test]
fn durations() {
    let c = parse(&with(
        "restart",
        "initial_backoff = \"1ms\"\nmax_backoff = \"1m 30s\"\nreset_after = \"1.5s\"",
    ))
    .unwrap();
    assert_eq!(c.restart.initial_backoff, Duration::from_millis(1));
    assert_eq!(c.restart.max_backoff, Duration::from_secs(90));
    assert_eq!(c.restart.reset_after, Duration::from_millis(1500));
    let c = parse(&with("child", "stop_timeout = \"1h\"")).unwrap();
    assert_eq!(c.child.stop_timeout, HOUR);
    let c = parse(&with("restart", "initial_backoff = \"5m\"")).unwrap();
    assert_eq!(c.restart.initial_backoff, c.restart.max_backoff);
}

#[test]
fn signals() {
    for (name, sig) in [
        ("SIGTERM", Signal::SIGTERM),
        ("int", Signal::SIGINT),
        ("SigQuit", Signal::SIGQUIT),
        ("KILL", Signal::SIGKILL),
    ] {
        let c = parse(&with("child", &format!("stop_signal = {name:?}"))).unwrap();
        assert_eq!(c.child.stop_signal, sig, "{name}");
    }
}

/// Every key set, most to something other than its default.
const EVERY_KEY: &str = r#"
    [supervisor]
    state_dir = "/var/run/sv"
    [listen]
    address = "[fe80::1]:8420"
    backlog = 7
    name = "web api"
    [child]
    command = ["sh", "-c", "echo 'hi' \"there\"\\n", "line\nbreak"]
    cwd = "srv"
    env = { "A.B" = "x\ty", Z = "", 'q"uote' = "\u00e9" }
    stop_signal = "KILL"
    stop_timeout = "1m 30s 5ms"
    user = "_app"
    allow_root = true
    umask = "0027"
    nice = -3
    max_memory = "1536MiB"
    max_memory_check = "250ms"
    [child.limits]
    core = 0
    cpu = "1h"
    data = "unlimited"
    fsize = 1000001
    memlock = "64KiB"
    nofile = 8192
    nproc = "unlimited"
    stack = "8MiB"
    [restart]
    initial_backoff = "1ns"
    max_backoff = "1s 1ns"
    reset_after = "1day"
    overlap = true
    [log]
    dir = "/var/log/sv"
    group = "adm"
    max_bytes = "1.5GiB"
    max_files = 1000
    [health]
    notify = true
    http = "/healthz?x=1"
    interval = "1s"
    timeout = "500ms"
    start_timeout = "2m"
    failures = 1
    watchdog = "3s"
    [alerts]
    command = ["/usr/local/bin/notify-me", "--to", "ops"]
    events = ["exit", "crash-loop"]
    crash_loop_after = 2
    port_busy_after = "1m"
    min_interval = "1h"
    timeout = "5s"
    [metrics]
    address = "127.0.0.1:9420"
"#;

#[test]
fn round_trip() {
    for text in [MINIMAL, EVERY_KEY] {
        let c = parse(text).unwrap();
        let out = c.to_toml();
        let back = Config::parse(&out, &c.path).unwrap_or_else(|e| panic!("{out}\n{e}"));
        assert_eq!(back, c, "{out}");
        assert_eq!(back.to_toml(), out);
    }
}

#[test]
fn every_key_is_rendered_with_its_doc() {
    let out = parse(EVERY_KEY).unwrap().to_toml();
    for (section, names) in schema() {
        let header = format!("\n[{section}]\n");
        let start = out
            .find(&header)
            .unwrap_or_else(|| panic!("no {header:?} in\n{out}"));
        let body = &out[start + header.len()..];
        let body = &body[..body.find("\n[").unwrap_or(body.len())];
        for name in names {
            let def = keys::find(section, name).unwrap();
            let line = body
                .lines()
                .find(|l| {
                    l.starts_with(&format!("{name} = ")) || l.starts_with(&format!("{name} ="))
                })
                .unwrap_or_else(|| panic!("{section}.{name} not rendered in\n{out}"));
            // A multi-line string ends where its comment is.
            let last = body[body.find(line).unwrap()..]
                .lines()
                .find(|l| l.contains(" # "))
                .unwrap();
            assert!(last.ends_with(&format!("# {}", def.doc)), "{last:?}");
        }
    }
}

#[test]
fn new_keys_have_their_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        (c.child.umask, c.child.nice, c.child.max_memory),
        (None, None, None)
    );
    assert_eq!(c.child.max_memory_check, Duration::from_secs(5));
    assert!(c.child.limits.is_empty());
    assert_eq!(c.alerts, None);
    // An empty [alerts] turns nothing on.
    assert_eq!(parse(&with("alerts", "")).unwrap().alerts, None);

    let c = parse(&with("alerts", "command = [\"notify-me\"]")).unwrap();
    let a = c.alerts.unwrap();
    assert_eq!(a.command, ["notify-me"]);
    assert_eq!(a.events, AlertEvent::DEFAULT.into_iter().collect());
    assert!(!a.events.contains(&AlertEvent::Exit));
    assert_eq!(a.crash_loop_after, 5);
    assert_eq!(a.port_busy_after, Duration::from_secs(30));
    assert_eq!(a.min_interval, Duration::from_secs(15 * 60));
    assert_eq!(a.timeout, Duration::from_secs(30));
}

#[test]
fn new_keys_parse() {
    let c = parse(EVERY_KEY).unwrap();
    assert_eq!(c.child.umask, Some(0o027));
    assert_eq!(c.child.nice, Some(-3));
    assert_eq!(c.child.max_memory, Some(1536 << 20));
    assert_eq!(c.child.max_memory_check, Duration::from_millis(250));
    let limits: Vec<(Resource, Limit)> = c.child.limits.into_iter().collect();
    assert_eq!(
        limits,
        [
            (Resource::Core, Limit::Value(0)),
            (Resource::Cpu, Limit::Value(3600)),
            (Resource::Data, Limit::Unlimited),
            (Resource::Fsize, Limit::Value(1_000_001)),
            (Resource::Memlock, Limit::Value(64 << 10)),
            (Resource::Nofile, Limit::Value(8192)),
            (Resource::Nproc, Limit::Unlimited),
            (Resource::Stack, Limit::Value(8 << 20)),
        ]
    );
    let a = c.alerts.unwrap();
    assert_eq!(a.command, ["/usr/local/bin/notify-me", "--to", "ops"]);
    let events: Vec<&str> = a.events.iter().map(|e| e.as_str()).collect();
    assert_eq!(events, ["crash-loop", "exit"]);
    assert_eq!(a.crash_loop_after, 2);
    // Dotted keys and inline tables reach the same place.
    for limits in ["limits.nofile = 64", "limits = { nofile = 64 }"] {
        let c = parse(&with("child", limits)).unwrap();
        assert_eq!(
            c.child.limits.get(&Resource::Nofile),
            Some(&Limit::Value(64))
        );
    }
}

#[test]
fn the_shipped_configs_parse_and_document_every_key() {
    let shipped = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/supervisor.toml"
    ));
    let example = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/session_manager/supervisor.toml"
    ));
    for text in [shipped, example] {
        let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
        // launchd's soft limit of 256 open files is too few for a server.
        assert_eq!(
            c.child.limits.get(&Resource::Nofile),
            Some(&Limit::Value(8192))
        );
    }
    // `[section]` and `key = ...` lines, commented out or not.
    let mut section = "";
    let mut documented = Vec::new();
    for line in shipped.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some((name, _)) = line.strip_prefix('[').and_then(|l| l.split_once(']')) {
            section = name;
        } else if let Some((key, _)) = line.split_once('=') {
            documented.push((section, key.trim()));
        }
    }
    for (section, names) in schema() {
        for name in names {
            assert!(
                documented.contains(&(section, name)),
                "config/supervisor.toml does not show {section}.{name}"
            );
        }
    }
}

#[test]
fn derived_paths() {
    let c = parse(&with("log", "dir = \"/var/log/sv\"")).unwrap();
    assert_eq!(c.pid_path(), Path::new("/etc/sv/run/supervisor.pid"));
    assert_eq!(c.state_path(), Path::new("/etc/sv/run/state.json"));
    assert_eq!(c.child_log_path(), Path::new("/var/log/sv/child.log"));
    assert_eq!(
        c.supervisor_log_path(),
        Path::new("/var/log/sv/supervisor.log")
    );
}

#[test]
fn load_resolves_symbolic_links_first() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("supervisor.toml"), MINIMAL).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink("real/supervisor.toml", dir.path().join("file.toml")).unwrap();
    let want = std::fs::canonicalize(&real).unwrap();
    for path in ["link/supervisor.toml", "file.toml"] {
        let c = Config::load(&dir.path().join(path)).unwrap();
        assert_eq!(c.path, want.join("supervisor.toml"), "{path}");
        assert_eq!(c.supervisor.state_dir, want.join("run"), "{path}");
    }
}

#[test]
fn locate_order() {
    let cli = Path::new("/x/cli.toml");
    assert_eq!(locate_with(Some(cli), Some("/x/env.toml".into())), cli);
    assert_eq!(
        locate_with(None, Some("/x/env.toml".into())),
        Path::new("/x/env.toml")
    );
    assert_eq!(locate_with(None, Some("".into())), Path::new(DEFAULT_PATH));
    assert_eq!(locate_with(None, None), Path::new(DEFAULT_PATH));
}

#[test]
fn load_reports_unreadable_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = Config::load(&missing).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert!(
        e.problems[0].starts_with(&format!("{}: cannot read: ", missing.display())),
        "{e}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, b"[listen]\naddress = \"\xff\"\n").unwrap();
    let e = Config::load(&bad).unwrap_err();
    assert!(
        e.problems[0].starts_with(&format!("{}:2:12: not valid UTF-8", bad.display())),
        "{e}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, MINIMAL).unwrap();
    let c = Config::load(&good).unwrap();
    assert_eq!(c.supervisor.state_dir, dir.path().join("run"));
}
