//! The shipped service definitions: launchd/*.plist (parsed with Python's
//! plistlib) and systemd/supervisor.{service,socket} (`systemd-analyze
//! verify` where it exists). Their keys are checked, and their command lines are run for
//! real against a temp config: the binary must accept exactly those
//! arguments, supervise, and let a second copy exit 0.

mod common;

use common::jobs::*;
use common::*;
use std::fs;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

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
        let p = plist_json(Path::new(&path));
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
        assert_eq!(args.last().map(String::as_str), Some("run"), "{ctx}");
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
        // Unset, launchd throttles CPU and I/O, and the child inherits it.
        assert_eq!(p["ProcessType"], "Standard", "ProcessType: {ctx}");
        // launchd SIGKILLs after ExitTimeOut: leave the supervisor time to
        // stop its child (stop_timeout, 10 s by default), SIGKILLed
        // leftovers (5 s) and the log drain (2 s).
        assert!(
            p["ExitTimeOut"].as_i64().is_some_and(|t| t > 10 + 5 + 2),
            "ExitTimeOut: {ctx}"
        );
        assert!(
            p["SoftResourceLimits"]["NumberOfFiles"]
                .as_i64()
                .is_some_and(|n| n > 256),
            "launchd's soft open-files limit is 256: {ctx}"
        );
        if path.ends_with("-sockets.plist") {
            let sock = &p["Sockets"]["http"];
            assert_eq!(sock["SockType"], "stream", "{ctx}");
            assert_eq!(sock["SockNodeName"], "127.0.0.1", "{ctx}");
            assert_eq!(sock["SockServiceName"], "8420", "{ctx}");
        }
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
        run_job(&env, BIN, &args[1..], true);
    }
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
    assert_eq!(get("Type"), "simple", "deliberate: see docs/systemd.md");
    assert_eq!(get("Restart"), "on-failure");
    assert!(matches!(get("KillMode"), "mixed" | "process"), "KillMode");
    let stop = unit_secs(get("TimeoutStopSec"));
    assert!(
        stop > 10.0 + 5.0 + 2.0,
        "TimeoutStopSec must exceed child.stop_timeout (10s) + kill grace (5s) + log drain (2s)"
    );
    let argv: Vec<String> = get("ExecStart")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(
        argv[0].ends_with("/supervisor") && argv.last().is_some_and(|a| a == "run"),
        "ExecStart: {argv:?}"
    );

    let env = Setup::new("serve.py").build();
    run_job(&env, BIN, &argv[1..], true);

    // systemd-analyze verify on copies whose paths exist here, the socket
    // unit under the service's name (systemd pairs them by name).
    let socket = fs::read_to_string(format!("{ROOT}/systemd/supervisor.socket")).unwrap();
    assert_eq!(unit_value(&socket, "FileDescriptorName"), "http");
    assert_eq!(unit_value(&socket, "ListenStream"), "127.0.0.1:8420");
    let service = env.path("session-manager.service");
    let copy = text
        .replace("/usr/local/bin/supervisor", BIN)
        .replace("/opt/session-manager", &env.dir_s)
        .replace("User=sessionmgr", "User=root")
        .replace("Group=sessionmgr", "Group=root");
    fs::write(&service, copy).unwrap();
    let socket_copy = env.path("session-manager.socket");
    fs::write(&socket_copy, socket).unwrap();
    if systemd_verify(&env, &[service, socket_copy], false).is_some() {
        eprintln!("systemd-analyze verify: clean");
    }
}
