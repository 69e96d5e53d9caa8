//! The job files the supervisor writes for a config: `launchd print`
//! (parsed with Python's plistlib), `launchd install|uninstall --dry-run`
//! and their refusal off macOS, and `systemd print` (checked with
//! `systemd-analyze verify`). The command lines they contain are run for
//! real: they must supervise the service.

mod common;

use common::jobs::*;
use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// This test binary's supervisor, resolved as the job files resolve it.
fn bin_resolved() -> String {
    fs::canonicalize(BIN).unwrap().display().to_string()
}

/// Runs `supervisor ARGS` through `sh -c` with a working directory and
/// extra environment (`K=V` words), with the harness's deadline.
fn sh(env: &Env, cwd: &Path, vars: &[String], program: &str, args: &[&str]) -> Out {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = format!("cd {} && exec env", quote(&cwd.display().to_string()));
    for v in vars {
        line.push(' ');
        line.push_str(&quote(v));
    }
    line.push(' ');
    line.push_str(&quote(program));
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    run_cmd("sh", &["-c".into(), line], DEADLINE).unwrap_or_else(|e| env.fail(e))
}

/// `launchd print ARGS` for the test's config, parsed.
fn print_plist(env: &Env, args: &[&str]) -> Value {
    let mut full = vec!["launchd", "print"];
    full.extend_from_slice(args);
    let out = env.cli(&full);
    if out.code != Some(0) {
        env.fail(format!("launchd print failed\n{out}"));
    }
    parse_plist(env, &out.stdout)
}

fn parse_plist(env: &Env, text: &str) -> Value {
    let file = env.path("printed.plist");
    fs::write(&file, text).unwrap();
    plist_json(&file)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

#[test]
fn launchd_print_has_every_key_and_its_command_line_supervises() {
    let env = Setup::new("serve.py").build();
    let p = print_plist(&env, &[]);
    let ctx = format!("{p:#}");
    assert_eq!(p["Label"], format!("supervisor.http.{}", env.port), "{ctx}");
    let args = strings(&p["ProgramArguments"]);
    let config = env.config.display().to_string();
    assert_eq!(
        args,
        [bin_resolved(), "--config".into(), config, "run".into()]
    );
    for a in [&args[0], &args[2]] {
        assert!(Path::new(a).is_absolute() && Path::new(a).exists(), "{a}");
    }
    assert_eq!(p["RunAtLoad"], true, "{ctx}");
    assert_eq!(p["KeepAlive"], serde_json::json!({"SuccessfulExit": false}));
    assert_eq!(p["ProcessType"], "Standard", "{ctx}");
    assert_eq!(p["ThrottleInterval"], 10, "{ctx}");
    // stop_timeout is 3 s in the harness: 3 + 5 + 2 + 5 + 2 + 5.
    assert_eq!(p["ExitTimeOut"], 22, "{ctx}");
    assert_eq!(p["WorkingDirectory"], env.dir_s.as_str(), "{ctx}");
    for (key, file) in [
        ("StandardOutPath", "launchd.out"),
        ("StandardErrorPath", "launchd.err"),
    ] {
        assert_eq!(
            p[key],
            env.log_dir.join(file).display().to_string(),
            "{key}: {ctx}"
        );
    }
    let path = std::env::var("PATH").expect("PATH");
    assert_eq!(p["EnvironmentVariables"]["PATH"], path.as_str(), "{ctx}");
    assert!(p.get("SoftResourceLimits").is_none(), "no nofile: {ctx}");
    assert!(p.get("Sockets").is_none(), "{ctx}");

    // Exactly that command line supervises the service.
    run_job(&env, &args[0], &args[1..], false);
    assert!(env.log_dir.is_dir(), "the job's log.dir exists once it ran");
}

#[test]
fn exit_timeout_and_timeout_stop_sec_cover_a_graceful_stop() {
    // stop_timeout -> the stop budget: ceil(stop_timeout + 5 + 2 + 5 + 2 + 5).
    for (stop, stop_s, secs) in [
        ("1s", 1.0, 20),
        ("2500ms", 2.5, 22),
        ("10s", 10.0, 29),
        ("90s", 90.0, 109),
    ] {
        let env = Setup::new("serve.py").child("stop_timeout", stop).build();
        let p = print_plist(&env, &[]);
        let exit = p["ExitTimeOut"].as_i64().expect("ExitTimeOut");
        assert!(
            exit as f64 > stop_s + 5.0 + 2.0,
            "ExitTimeOut {exit} for stop_timeout {stop}: no time for the kill grace and log drain"
        );
        assert_eq!(exit, secs, "stop_timeout {stop}");
        let out = env.cli(&["systemd", "print"]);
        assert_eq!(out.code, Some(0), "{out}");
        assert_eq!(
            unit_value(&units(&out.stdout)[0].1, "TimeoutStopSec"),
            format!("{secs}s"),
            "stop_timeout {stop}"
        );
    }
}

#[test]
fn launchd_sockets_entry_is_named_like_listen_name() {
    let env = Setup::new("serve.py").set("listen", "name", "web").build();
    let p = print_plist(&env, &["--sockets"]);
    let s = &p["Sockets"]["web"];
    assert_eq!(s["SockNodeName"], "127.0.0.1", "{p:#}");
    assert_eq!(s["SockServiceName"], env.port.to_string(), "{p:#}");
    assert_eq!(s["SockFamily"], "IPv4", "{p:#}");
    assert_eq!(s["SockType"], "stream", "{p:#}");
    assert_eq!(p["Label"], format!("supervisor.web.{}", env.port));
}

#[test]
fn relative_and_symlinked_configs_become_the_resolved_path() {
    let env = Setup::new("serve.py").build();
    let config = env.config.display().to_string();
    let expect_args = |out: &Out, how: &str| {
        if out.code != Some(0) {
            env.fail(format!("{how}\n{out}"));
        }
        let p = parse_plist(&env, &out.stdout);
        let args = strings(&p["ProgramArguments"]);
        assert_eq!(args[2], config, "{how}: {p:#}");
        assert_eq!(args[0], bin_resolved(), "{how}: {p:#}");
        assert_eq!(p["WorkingDirectory"], env.dir_s.as_str(), "{how}");
        assert_eq!(
            p["StandardErrorPath"],
            env.log_dir.join("launchd.err").display().to_string(),
            "{how}"
        );
    };
    let sub = env.path("sub");
    fs::create_dir(&sub).unwrap();
    let print = ["launchd", "print"];
    for (cwd, given) in [
        (&env.dir, "supervisor.toml"),
        (&env.dir, "./supervisor.toml"),
        (&sub, "../supervisor.toml"),
    ] {
        let mut args = vec!["--config", given];
        args.extend(print);
        let out = sh(&env, cwd, &[], BIN, &args);
        expect_args(&out, &format!("--config {given} from {}", cwd.display()));
    }
    let out = sh(
        &env,
        &sub,
        &["SUPERVISOR_CONFIG=../supervisor.toml".into()],
        BIN,
        &print,
    );
    expect_args(&out, "SUPERVISOR_CONFIG=../supervisor.toml");

    // A link to the file, a link to its folder, and a link to the binary.
    let link = env.path("link.toml");
    std::os::unix::fs::symlink(&env.config, &link).unwrap();
    let alias = env.path("alias");
    std::os::unix::fs::symlink(&env.dir, &alias).unwrap();
    let bin_link = env.path("bin-link");
    std::os::unix::fs::symlink(BIN, &bin_link).unwrap();
    for cfg in [link.clone(), alias.join("supervisor.toml")] {
        let c = cfg.display().to_string();
        let out = sh(
            &env,
            &sub,
            &[],
            &bin_link.display().to_string(),
            &["--config", &c, "launchd", "print"],
        );
        expect_args(
            &out,
            &format!("--config {c} through {}", bin_link.display()),
        );
    }
    let out = env.cli_with(&link, &["systemd", "print"], DEADLINE);
    assert_eq!(out.code, Some(0), "{out}");
    let exec = exec_words(&unit_value(&units(&out.stdout)[0].1, "ExecStart"));
    assert_eq!(
        exec,
        [bin_resolved(), "--config".into(), config, "run".into()]
    );
}

#[test]
fn unusual_labels_are_refused_naming_the_character() {
    let env = Setup::new("serve.py").build();
    let cases = [
        ("a/b", "'/'"),
        ("../../../.ssh/x", "'.'"),
        ("a b", "' '"),
        ("x<y>&z", "'<'"),
        ("new\nline", "'\\n'"),
        ("caf\u{e9}", "'é'"),
        ("", "empty"),
        ("-x", "must start"),
        (".hidden", "must start"),
        ("x@y", "'@'"),
    ];
    for (label, says) in cases {
        let flag = format!("--label={label}");
        for cmd in [
            vec!["launchd", "print", &flag],
            vec!["launchd", "install", "--dry-run", &flag],
            vec!["launchd", "uninstall", "--dry-run", &flag],
        ] {
            let out = env.cli(&cmd);
            assert_eq!(out.code, Some(2), "{label:?}: {out}");
            assert!(
                out.stdout.is_empty(),
                "nothing printed for {label:?}: {out}"
            );
            assert!(
                out.stderr.contains(says),
                "{label:?} should say {says}: {out}"
            );
        }
        let unit = format!("--unit={label}");
        let out = env.cli(&["systemd", "print", &unit]);
        assert_eq!(out.code, Some(2), "{label:?}: {out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
    // Letters, digits, '.', '_' and '-' are fine.
    let p = print_plist(&env, &["--label", "Com.Example_svc-1.2"]);
    assert_eq!(p["Label"], "Com.Example_svc-1.2");

    // A listen.name that cannot be part of the default label: 78, with a way out.
    let env = Setup::new("serve.py")
        .set("listen", "name", "my app")
        .build();
    let out = env.cli(&["launchd", "print"]);
    assert_eq!(out.code, Some(78), "{out}");
    assert!(
        out.stdout.is_empty() && out.stderr.contains("' '") && out.stderr.contains("--label"),
        "{out}"
    );
    let out = env.cli(&["systemd", "print"]);
    assert_eq!(out.code, Some(78), "{out}");
    assert!(out.stderr.contains("--unit"), "{out}");
    let p = print_plist(&env, &["--label", "my-app", "--sockets"]);
    assert_eq!(p["Sockets"]["my app"]["SockType"], "stream", "{p:#}");
}

#[test]
fn install_and_uninstall_dry_runs_print_the_launchctl_commands_and_write_nothing() {
    let env = Setup::new("serve.py").build();
    let home = env.path("home");
    fs::create_dir(&home).unwrap();
    let vars = [format!("HOME={}", home.display())];
    let config = env.config.display().to_string();
    let label = format!("supervisor.http.{}", env.port);
    let plist = home.join(format!("Library/LaunchAgents/{label}.plist"));
    // `supervisor --config CONFIG launchd ARGS...` with HOME in the temp dir.
    let launchd = |args: &[&str]| {
        let argv = [&["--config", config.as_str(), "launchd"], args].concat();
        sh(&env, &env.dir, &vars, BIN, &argv)
    };

    let out = launchd(&["install", "--dry-run"]);
    assert_eq!(out.code, Some(0), "{out}");
    let bootstrap = format!("$ launchctl bootstrap gui/{} {}", uid(), plist.display());
    assert!(
        out.stdout.contains(&bootstrap),
        "wanted {bootstrap:?}\n{out}"
    );
    assert!(
        out.stdout.contains(&format!("write {}", plist.display())),
        "{out}"
    );

    let out = launchd(&["uninstall", "--dry-run"]);
    assert_eq!(out.code, Some(0), "{out}");
    let bootout = format!("$ launchctl bootout gui/{}/{label}", uid());
    assert!(out.stdout.contains(&bootout), "wanted {bootout:?}\n{out}");

    let empty = |what: &str| {
        let left: Vec<PathBuf> = fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "{what} wrote {left:?}");
        assert!(!env.log_dir.exists(), "{what} created the log dir");
    };
    empty("a dry run");

    // An identical plist already there is "nothing to write"; a different
    // one is refused without --force.
    fs::create_dir_all(plist.parent().unwrap()).unwrap();
    let printed = env.cli(&["launchd", "print"]).stdout;
    fs::write(&plist, &printed).unwrap();
    let out = launchd(&["install", "--dry-run"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!out.stdout.contains("write "), "identical file: {out}");
    assert!(out.stdout.contains(&bootstrap), "{out}");
    fs::write(&plist, printed.replace("run", "rum")).unwrap();
    let out = launchd(&["install", "--dry-run"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("--force") && out.stdout.is_empty(),
        "{out}"
    );
    let out = launchd(&["install", "--dry-run", "--force"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("write "), "{out}");
    fs::remove_dir_all(home.join("Library")).unwrap();

    // A supervisor already running for the config (not started by the
    // job): install refuses, since the job's copy would exit 0 for good.
    let sup = env.spawn();
    env.wait_child(&[]);
    let out = launchd(&["install", "--dry-run"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!("pid {}", sup.pid())) && out.stderr.contains("stop"),
        "{out}"
    );
    let out = env.cli(&["stop"]);
    assert_eq!(out.code, Some(0), "{out}");
    sup.wait_exit(DEADLINE);
}

/// Off macOS there is no launchctl: install and uninstall without
/// --dry-run exit 1 saying so, and write nothing.
#[cfg(target_os = "linux")]
#[test]
fn install_and_uninstall_refuse_off_macos_writing_nothing() {
    let env = Setup::new("serve.py").build();
    let home = env.path("home");
    fs::create_dir(&home).unwrap();
    let vars = [format!("HOME={}", home.display())];
    let config = env.config.display().to_string();
    for cmd in [["launchd", "install"], ["launchd", "uninstall"]] {
        let mut args = vec!["--config", config.as_str()];
        args.extend(cmd);
        let out = sh(&env, &env.dir, &vars, BIN, &args);
        assert_eq!(out.code, Some(1), "{out}");
        assert!(
            out.stderr.contains("macOS") && out.stdout.is_empty(),
            "{out}"
        );
        let left: Vec<_> = fs::read_dir(&home).unwrap().collect();
        assert!(left.is_empty(), "{cmd:?} wrote {left:?}");
        assert!(!env.log_dir.exists(), "{cmd:?} created the log dir");
    }
}

/// The `# file: NAME` blocks of `systemd print`.
fn units(stdout: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in stdout.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("# file: ") {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
        } else {
            panic!("systemd print starts without a `# file:` line:\n{stdout}");
        }
    }
    // The blank line before the next `# file:` belongs to neither.
    for (_, text) in &mut out {
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
        text.push('\n');
    }
    out
}

#[test]
fn systemd_units_verify_and_their_exec_start_supervises() {
    let env = Setup::new("serve.py").build();
    let name = format!("supervisor-http-{}", env.port);
    for user in [false, true] {
        let mut args = vec!["systemd", "print"];
        if user {
            args.push("--user");
        }
        let out = env.cli(&args);
        assert_eq!(out.code, Some(0), "{out}");
        let files = units(&out.stdout);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [format!("{name}.service"), format!("{name}.socket")]);
        let (service, socket) = (&files[0].1, &files[1].1);

        assert_eq!(unit_value(service, "Type"), "simple");
        assert_eq!(unit_value(service, "Restart"), "on-failure");
        assert_eq!(unit_value(service, "KillMode"), "mixed");
        assert_eq!(
            exec_words(&unit_value(service, "ExecReload")),
            exec_words(&unit_value(service, "ExecStart"))
                .into_iter()
                .map(|w| if w == "run" { "reload".to_owned() } else { w })
                .collect::<Vec<_>>()
        );
        assert_eq!(unit_value(service, "TimeoutStopSec"), "22s");
        assert_eq!(unit_value(service, "WorkingDirectory"), env.dir_s);
        // A unit that runs as root (no `User=`) keeps only the PATH folders
        // root alone may write, each once; what it leaves out is named on
        // stderr. Any other unit gets the PATH as it is.
        let raw = std::env::var("PATH").unwrap();
        let as_root = !unit_keys(service).iter().any(|(k, _)| k == "User");
        let path = if user || !as_root {
            raw
        } else {
            let left: Vec<&str> = out
                .stderr
                .lines()
                .filter_map(|l| l.split("PATH folder \"").nth(1)?.split('"').next())
                .collect();
            let mut kept: Vec<&str> = Vec::new();
            for dir in raw.split(':') {
                if !left.contains(&dir) && !kept.contains(&dir) {
                    kept.push(dir);
                }
            }
            kept.join(":")
        };
        assert_eq!(
            unit_value(service, "Environment"),
            format!("\"PATH={path}\""),
            "{out}"
        );
        let users = unit_keys(service)
            .into_iter()
            .filter(|(k, _)| k == "User")
            .count();
        let want_target = if user {
            "default.target"
        } else {
            "multi-user.target"
        };
        assert_eq!(unit_value(service, "WantedBy"), want_target);
        if user || uid() == 0 {
            assert_eq!(users, 0, "{service}");
        } else {
            assert_eq!(users, 1, "{service}");
        }
        assert_eq!(unit_value(socket, "ListenStream"), env.addr().to_string());
        assert_eq!(unit_value(socket, "FileDescriptorName"), "http");
        assert_eq!(unit_value(socket, "Backlog"), "1024");
        assert_eq!(unit_value(socket, "Service"), format!("{name}.service"));

        // --dir writes the same two files, 0644.
        let dir = env.path(if user { "user-units" } else { "units" });
        let d = dir.display().to_string();
        let mut with_dir = args.clone();
        with_dir.extend(["--dir", d.as_str()]);
        let wrote = env.cli(&with_dir);
        assert_eq!(wrote.code, Some(0), "{wrote}");
        // A folder systemd does not read: the copy step comes before
        // daemon-reload.
        let copy = wrote.stdout.find("copy them there");
        let reload = wrote.stdout.find("daemon-reload");
        assert!(
            copy.is_some()
                && copy < reload
                && wrote.stdout.contains(&format!("{d}/{name}.service")),
            "{wrote}"
        );
        let mut paths = Vec::new();
        for (file, text) in &files {
            let p = dir.join(file);
            assert_eq!(&fs::read_to_string(&p).unwrap(), text, "{}", p.display());
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o644
            );
            paths.push(p);
        }
        systemd_verify(&env, &paths, user);

        if !user {
            // Written again: unchanged. Edited: refused, untouched, unless --force.
            let again = env.cli(&with_dir);
            assert!(
                again.code == Some(0) && again.stdout.contains("unchanged"),
                "{again}"
            );
            fs::write(&paths[1], "# mine\n").unwrap();
            let refused = env.cli(&with_dir);
            assert_eq!(refused.code, Some(1), "{refused}");
            assert!(refused.stderr.contains("--force"), "{refused}");
            assert_eq!(fs::read_to_string(&paths[1]).unwrap(), "# mine\n");
            assert_eq!(
                fs::read_to_string(&paths[0]).unwrap(),
                files[0].1,
                "neither written"
            );
            with_dir.push("--force");
            let forced = env.cli(&with_dir);
            assert_eq!(forced.code, Some(0), "{forced}");
            assert_eq!(fs::read_to_string(&paths[1]).unwrap(), files[1].1);

            // The unit's ExecStart, run for real.
            let argv = exec_words(&unit_value(service, "ExecStart"));
            assert_eq!(
                argv,
                [
                    bin_resolved(),
                    "--config".into(),
                    env.config.display().to_string(),
                    "run".into()
                ]
            );
            run_job(&env, &argv[0], &argv[1..], false);
        }
    }
}

/// Paths with spaces, quotes, `%`, `$`, `&` and `<`: a valid plist, and
/// units that systemd reads back to the same paths. (systemd refuses a
/// quote or a backslash in the program's path, so `systemd print` does too.)
#[test]
fn awkward_paths_stay_intact() {
    let env = Setup::new("serve.py").build();
    let odd = env.path("a b%c$d&<e>;");
    let odder = odd.join("\"f\" 'g' \\h");
    fs::create_dir_all(&odder).unwrap();
    let config = odder.join("supervisor.toml");
    fs::write(&config, &env.config_text).unwrap();
    // The binary too, so ExecStart's program needs quoting (a hard link
    // is cheap; a copy where the file system refuses one).
    let link = |to: &Path| {
        if fs::hard_link(BIN, to).is_err() {
            fs::copy(BIN, to).unwrap();
        }
        to.display().to_string()
    };
    let program = link(&odd.join("super visor"));
    let config_s = config.display().to_string();
    let run = |program: &str, args: &[&str]| {
        let mut full = vec!["--config".to_string(), config_s.clone()];
        full.extend(args.iter().map(|a| a.to_string()));
        run_cmd(program, &full, DEADLINE).unwrap_or_else(|e| env.fail(e))
    };

    let out = run(&program, &["launchd", "print"]);
    assert_eq!(out.code, Some(0), "{out}");
    let p = parse_plist(&env, &out.stdout);
    assert_eq!(
        strings(&p["ProgramArguments"]),
        [
            program.clone(),
            "--config".into(),
            config_s.clone(),
            "run".into()
        ]
    );
    assert_eq!(p["WorkingDirectory"], odder.display().to_string());

    let dir = env.path("odd-units");
    let d = dir.display().to_string();
    let out = run(&program, &["systemd", "print", "--dir", &d]);
    assert_eq!(out.code, Some(0), "{out}");
    let name = format!("supervisor-http-{}", env.port);
    let service = dir.join(format!("{name}.service"));
    let text = fs::read_to_string(&service).unwrap();
    assert_eq!(
        exec_words(&unit_value(&text, "ExecStart")),
        [program, "--config".into(), config_s.clone(), "run".into()]
    );
    // verify also checks that ExecStart's program exists as systemd reads it.
    systemd_verify(&env, &[service, dir.join(format!("{name}.socket"))], false);

    let quoted = link(&odder.join("supervisor"));
    let out = run(&quoted, &["systemd", "print"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.is_empty() && out.stderr.contains("systemd refuses"),
        "{out}"
    );
}
