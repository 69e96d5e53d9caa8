//! The plist's keys and XML, the install and uninstall plans, and
//! reading `launchctl print`.

use super::*;
use plist::Dictionary;
use std::net::SocketAddr;

fn spec() -> JobSpec {
    JobSpec {
        program: "/opt/homebrew/bin/supervisor".into(),
        config: "/Users/me/sm/supervisor.toml".into(),
        workdir: "/Users/me/sm".into(),
        log_dir: "/Users/me/sm/logs".into(),
        path_env: Some("/Users/me/sm/.venv/bin:/opt/homebrew/bin:/usr/bin:/bin".into()),
        path_left_out: Vec::new(),
        stop_timeout: Duration::from_secs(10),
        address: "127.0.0.1:8420".parse::<SocketAddr>().unwrap(),
        backlog: 1024,
        fd_name: "http".into(),
        nofile: None,
    }
}

fn get<'a>(d: &'a Dictionary, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut d = d;
    for p in parents {
        d = d.get(p)?.as_dictionary()?;
    }
    d.get(last)
}

#[test]
fn the_plist_has_every_key() {
    let d = plist(&spec(), "supervisor.http.8420", false);
    let s = |path: &[&str]| get(&d, path).and_then(Value::as_string).map(str::to_owned);
    let n = |path: &[&str]| get(&d, path).and_then(Value::as_signed_integer);
    let b = |path: &[&str]| get(&d, path).and_then(Value::as_boolean);
    assert_eq!(s(&["Label"]).as_deref(), Some("supervisor.http.8420"));
    let args: Vec<&str> = get(&d, &["ProgramArguments"])
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .filter_map(Value::as_string)
        .collect();
    assert_eq!(
        args,
        [
            "/opt/homebrew/bin/supervisor",
            "--config",
            "/Users/me/sm/supervisor.toml",
            "run"
        ]
    );
    assert_eq!(b(&["RunAtLoad"]), Some(true));
    assert_eq!(b(&["KeepAlive", "SuccessfulExit"]), Some(false));
    assert_eq!(s(&["ProcessType"]).as_deref(), Some("Standard"));
    assert_eq!(n(&["ThrottleInterval"]), Some(10));
    assert_eq!(n(&["ExitTimeOut"]), Some(29));
    assert_eq!(s(&["WorkingDirectory"]).as_deref(), Some("/Users/me/sm"));
    assert_eq!(
        s(&["StandardErrorPath"]).as_deref(),
        Some("/Users/me/sm/logs/launchd.err")
    );
    assert_eq!(
        s(&["StandardOutPath"]).as_deref(),
        Some("/Users/me/sm/logs/launchd.out")
    );
    assert_eq!(
        s(&["EnvironmentVariables", "PATH"]).as_deref(),
        spec().path_env.as_deref()
    );
    assert!(d.get("SoftResourceLimits").is_none());
    assert!(d.get("Sockets").is_none());
}

#[test]
fn optional_keys() {
    let mut sp = spec();
    sp.nofile = Some(8192);
    sp.path_env = None;
    sp.address = "[::1]:9000".parse().unwrap();
    sp.fd_name = "web".into();
    let d = plist(&sp, "x", true);
    assert_eq!(
        get(&d, &["SoftResourceLimits", "NumberOfFiles"]).and_then(Value::as_signed_integer),
        Some(8192)
    );
    assert!(d.get("EnvironmentVariables").is_none());
    let sock = |k: &str| {
        get(&d, &["Sockets", "web", k])
            .and_then(Value::as_string)
            .map(str::to_owned)
    };
    assert_eq!(sock("SockNodeName").as_deref(), Some("::1"));
    assert_eq!(sock("SockServiceName").as_deref(), Some("9000"));
    assert_eq!(sock("SockFamily").as_deref(), Some("IPv6"));
    assert_eq!(sock("SockType").as_deref(), Some("stream"));
}

#[test]
fn xml_round_trips_awkward_paths() {
    let mut sp = spec();
    sp.config = "/Users/me/a <b> & \"c\" 'd'/supervisor.toml".into();
    let bytes = render(&plist(&sp, "x", false)).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("<?xml"), "{text}");
    assert!(text.ends_with("</plist>\n"), "{text}");
    let back = Value::from_reader_xml(bytes.as_slice()).unwrap();
    let args = back.as_dictionary().unwrap()["ProgramArguments"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(args[2].as_string(), sp.config.to_str());
}

#[test]
fn install_plans() {
    use Existing::*;
    use Step::*;
    let facts = |file, loaded, running| InstallFacts {
        file,
        loaded,
        running,
        log_dir_missing: false,
    };
    let yes = |pid| Loaded::Yes { pid };
    type Case = (InstallFacts, bool, Result<Vec<Step>, Refusal>);
    let cases: &[Case] = &[
        // fresh install
        (
            facts(Absent, Loaded::No, None),
            false,
            Ok(vec![Write, Bootstrap]),
        ),
        // a dry run off macOS plans like a fresh install
        (
            facts(Absent, Loaded::Unknown, None),
            false,
            Ok(vec![Write, Bootstrap]),
        ),
        // written before but not loaded (e.g. booted out by hand)
        (facts(Same, Loaded::No, None), false, Ok(vec![Bootstrap])),
        // installed and running: nothing to do
        (facts(Same, yes(Some(7)), Some(7)), false, Ok(vec![])),
        // installed, but stopped with `supervisor stop`
        (facts(Same, yes(None), None), false, Ok(vec![Kickstart])),
        // a different file: refused, or replaced with --force
        (
            facts(Different, yes(Some(7)), Some(7)),
            false,
            Err(Refusal::Differs),
        ),
        (
            facts(Different, yes(Some(7)), Some(7)),
            true,
            Ok(vec![Bootout, Write, Bootstrap]),
        ),
        (
            facts(Different, Loaded::No, None),
            true,
            Ok(vec![Write, Bootstrap]),
        ),
        // loaded from another file
        (
            facts(Absent, yes(None), None),
            false,
            Err(Refusal::LoadedElsewhere),
        ),
        (
            facts(Absent, yes(None), None),
            true,
            Ok(vec![Bootout, Write, Bootstrap]),
        ),
        // a supervisor started by hand (or by the old job) holds the lock
        (
            facts(Absent, Loaded::No, Some(9)),
            true,
            Err(Refusal::RunningOutside { pid: 9 }),
        ),
        (
            facts(Same, yes(Some(7)), Some(9)),
            false,
            Err(Refusal::RunningOutside { pid: 9 }),
        ),
        (
            facts(Absent, Loaded::Unknown, Some(9)),
            false,
            Err(Refusal::RunningOutside { pid: 9 }),
        ),
    ];
    for (f, force, want) in cases {
        assert_eq!(&plan_install(f, *force), want, "{f:?} force={force}");
    }
    let mut f = facts(Absent, Loaded::No, None);
    f.log_dir_missing = true;
    assert_eq!(
        plan_install(&f, false),
        Ok(vec![MakeLogDir, Write, Bootstrap])
    );
}

#[test]
fn uninstall_plans() {
    use Step::*;
    let yes = Loaded::Yes { pid: Some(3) };
    let cases = [
        (OnDisk::Ours, yes, Ok(vec![Bootout, Remove])),
        (OnDisk::Ours, Loaded::No, Ok(vec![Remove])),
        (OnDisk::Absent, yes, Ok(vec![Bootout])),
        (OnDisk::Absent, Loaded::No, Ok(vec![])),
        (OnDisk::Ours, Loaded::Unknown, Ok(vec![Bootout, Remove])),
        (OnDisk::Absent, Loaded::Unknown, Ok(vec![Bootout])),
        (
            OnDisk::Other("not ours".into()),
            yes,
            Err("not ours".to_string()),
        ),
    ];
    for (file, loaded, want) in cases {
        assert_eq!(plan_uninstall(&file, loaded), want, "{file:?} {loaded:?}");
    }
}

#[test]
fn pid_from_launchctl_print() {
    // The shape of `launchctl print gui/501/LABEL` (macOS 13-15).
    let running = "gui/501/supervisor.http.8420 = {\n\
        \tactive count = 1\n\
        \tpath = /Users/me/Library/LaunchAgents/supervisor.http.8420.plist\n\
        \ttype = LaunchAgent\n\
        \tstate = running\n\
        \n\
        \tprogram = /opt/homebrew/bin/supervisor\n\
        \targuments = {\n\
        \t\t/opt/homebrew/bin/supervisor\n\
        \t\t--config\n\
        \t\t/Users/me/sm/supervisor.toml\n\
        \t\trun\n\
        \t}\n\
        \n\
        \tpid = 4242\n\
        \timmediate reason = speculative\n\
        \tforks = 0\n\
        }\n";
    assert_eq!(parse_print_pid(running), Some(4242));
    let stopped = "gui/501/x = {\n\tstate = not running\n\tlast exit code = 0\n}\n";
    assert_eq!(parse_print_pid(stopped), None);
    assert_eq!(parse_print_pid(""), None);
}

/// A fake `launchctl bootstrap` answering from a script; records the
/// pauses asked for.
fn fake_bootstrap(answers: &[(i32, &str)]) -> (Bootstrapped, usize, Vec<Duration>) {
    let mut calls = 0;
    let mut pauses = Vec::new();
    let got = plan::bootstrap_retrying(
        || {
            let (code, err) = answers
                .get(calls)
                .copied()
                .unwrap_or(*answers.last().unwrap());
            calls += 1;
            (Some(code), err.to_owned())
        },
        |d| pauses.push(d),
    );
    (got, calls, pauses)
}

const EIO: (i32, &str) = (5, "Bootstrap failed: 5: Input/output error");

#[test]
fn bootstrap_is_retried_while_launchd_keeps_the_label() {
    // EIO twice (the label not yet released after bootout), then loaded.
    let (got, calls, pauses) = fake_bootstrap(&[EIO, EIO, (0, "")]);
    assert_eq!(got.result, Ok(()));
    assert_eq!((got.tries, calls), (3, 3));
    assert_eq!(pauses, plan::BOOTSTRAP_BACKOFF[..2]);
    assert_eq!(got.waited, Duration::from_millis(750));

    // EIO for good: bounded, and the last error stands.
    let (got, calls, pauses) = fake_bootstrap(&[EIO]);
    assert_eq!(got.result, Err((Some(5), EIO.1.to_owned())));
    assert_eq!(calls, plan::BOOTSTRAP_BACKOFF.len() + 1);
    assert_eq!(pauses, plan::BOOTSTRAP_BACKOFF);
    assert!(got.waited <= Duration::from_secs(8), "{:?}", got.waited);

    // Any other failure is not retried.
    let (got, calls, pauses) = fake_bootstrap(&[(
        125,
        "Bootstrap failed: 125: Domain does not support specified action",
    )]);
    assert!(got.result.is_err());
    assert_eq!((calls, pauses.len()), (1, 0));
    // Loaded at once: nothing waited.
    let (got, calls, _) = fake_bootstrap(&[(0, "")]);
    assert_eq!((got.result, calls, got.waited), (Ok(()), 1, Duration::ZERO));
    // EIO told by its words alone (another exit status).
    assert!(plan::is_eio(
        Some(1),
        "Bootstrap failed: 5: Input/output error"
    ));
    assert!(!plan::is_eio(Some(37), "Operation already in progress"));
}
