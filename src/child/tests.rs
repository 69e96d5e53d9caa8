//! Programs found like a shell, the environment contract, the pid slot,
//! and spawn failures that name what failed.

use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn programs_resolve_like_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let tool = bin.join("tool");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plain = bin.join("plain");
    std::fs::write(&plain, "").unwrap();
    let path = OsString::from(format!("/nonexistent:{}", bin.display()));
    let cwd = dir.path();
    assert_eq!(resolve_program("tool", Some(&path), cwd).unwrap(), tool);
    assert_eq!(
        resolve_program("bin/tool", Some(&path), cwd).unwrap(),
        cwd.join("bin/tool")
    );
    assert_eq!(
        resolve_program(&tool.to_string_lossy(), None, cwd).unwrap(),
        tool
    );
    for bad in ["plain", "nope", "bin/plain", ""] {
        assert!(resolve_program(bad, Some(&path), cwd).is_err(), "{bad}");
    }
    // Relative PATH entries resolve against the child's folder.
    let rel = OsString::from("bin");
    assert_eq!(
        resolve_program("tool", Some(&rel), cwd).unwrap(),
        cwd.join("bin/tool")
    );
}

fn recipe() -> Recipe {
    Recipe {
        command: vec!["app".into()],
        cwd: PathBuf::from("/"),
        env: BTreeMap::from([("APP".into(), "1".into()), ("PATH".into(), "/opt".into())]),
        inherit_env: false,
        fd_name: "web".into(),
        notify_socket: None,
        watchdog: None,
        death_signal: libc::SIGTERM,
        creds: None,
        attrs: attrs::Wanted::default(),
        inherit_output: false,
    }
}

#[test]
fn the_environment_contract() {
    let inherited = |pairs: &[(&str, &str)]| -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    };
    let names = |env: &[(OsString, OsString)]| -> Vec<String> {
        env.iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect()
    };
    let from_manager = inherited(&[
        ("HOME", "/root"),
        ("LISTEN_PID", "1"),
        ("LISTEN_FDS", "4"),
        ("NOTIFY_SOCKET", "/run/systemd/notify"),
        ("WATCHDOG_USEC", "1"),
        ("WATCHDOG_PID", "1"),
        ("PATH", "/usr/bin"),
    ]);
    // (recipe, inherited, the child's environment)
    let mut notify = recipe();
    notify.notify_socket = Some("@sv".into());
    notify.watchdog = Some(Duration::from_millis(1500));
    let mut dropped = recipe();
    dropped.creds = Some(Creds {
        name: "app".into(),
        uid: 1000,
        gid: 1000,
        home: "/home/app".into(),
        shell: Some("/bin/sh".into()),
    });
    // Another user, our PATH (child.env has none) and secrets.
    let mut clean = dropped.clone();
    clean.env.remove("PATH");
    let mut inheriting = clean.clone();
    inheriting.inherit_env = true;
    let ours = inherited(&[
        ("HOME", "/root"),
        ("USER", "root"),
        ("SECRET_TOKEN", "s3cret"),
        ("LANG", "C.UTF-8"),
        ("LC_TIME", "C"),
        ("TZ", "UTC"),
        ("LISTEN_FDS", "4"),
        ("PATH", "/root/bin:/usr/bin"),
    ]);
    type Case<'a> = (Recipe, Vec<(OsString, OsString)>, &'a [&'a str]);
    let table: [Case; 5] = [
        (
            clean,
            ours.clone(),
            &[
                "APP=1",
                "HOME=/home/app",
                "LANG=C.UTF-8",
                "LC_TIME=C",
                "LISTEN_FDNAMES=web",
                "LISTEN_FDS=1",
                "LOGNAME=app",
                "PATH=/usr/bin",
                "SHELL=/bin/sh",
                "TZ=UTC",
                "USER=app",
            ],
        ),
        (
            inheriting,
            ours,
            &[
                "APP=1",
                "HOME=/home/app",
                "LANG=C.UTF-8",
                "LC_TIME=C",
                "LISTEN_FDNAMES=web",
                "LISTEN_FDS=1",
                "LOGNAME=app",
                "PATH=/root/bin:/usr/bin",
                "SECRET_TOKEN=s3cret",
                "SHELL=/bin/sh",
                "TZ=UTC",
                "USER=app",
            ],
        ),
        (
            recipe(),
            from_manager.clone(),
            &[
                "APP=1",
                "HOME=/root",
                "LISTEN_FDNAMES=web",
                "LISTEN_FDS=1",
                "PATH=/opt",
            ],
        ),
        (
            notify,
            from_manager,
            &[
                "APP=1",
                "HOME=/root",
                "LISTEN_FDNAMES=web",
                "LISTEN_FDS=1",
                "NOTIFY_SOCKET=@sv",
                "PATH=/opt",
                "WATCHDOG_USEC=1500000",
            ],
        ),
        (
            dropped,
            inherited(&[("HOME", "/root"), ("USER", "root")]),
            &[
                "APP=1",
                "HOME=/home/app",
                "LISTEN_FDNAMES=web",
                "LISTEN_FDS=1",
                "LOGNAME=app",
                "PATH=/opt",
                "SHELL=/bin/sh",
                "USER=app",
            ],
        ),
    ];
    for (r, inherited, want) in table {
        // A made-up cleaner: /root/bin is what the child's user could write.
        let clean_path =
            |p: &std::ffi::OsStr| OsString::from(p.to_string_lossy().replace("/root/bin:", ""));
        assert_eq!(names(&environment(&r, inherited, clean_path)), want);
    }
}

#[test]
fn the_pid_slot() {
    let (mut image, _) =
        ExecImage::new(Path::new("/bin/true"), &recipe(), &Plan::default()).unwrap();
    for (pid, want) in [(7u32, "7"), (4242, "4242"), (u32::MAX, "4294967295")] {
        image.write_pid(pid);
        let end = image.slot.iter().position(|b| *b == 0).unwrap();
        assert_eq!(&image.slot[..end], format!("LISTEN_PID={want}").as_bytes());
    }
    // The envp entry is the slot itself.
    let last = image.env_ptrs[image.env_ptrs.len() - 2];
    assert_eq!(last, image.slot.as_ptr().cast());
}

#[test]
fn spawn_failures_name_the_right_thing() {
    let dir = tempfile::tempdir().unwrap();
    let script = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_string_lossy().into_owned()
    };
    let bad_shebang = script("bad", "#!/nonexistent/python3 -u\nprint(1)\n");
    let no_shebang = script("plain", "\x7fnot really a program\n");
    // Failures found before fork: (command, cwd, words the error must contain).
    let missing = dir.path().join("missing");
    let cases: [(&str, &Path, &[&str]); 2] = [
        (
            "/bin/sh",
            &missing,
            &["child.cwd", "missing", "does not exist"],
        ),
        (
            "no-such-program-xyz",
            dir.path(),
            &["no-such-program-xyz", "not found"],
        ),
    ];
    for (command, cwd, words) in cases {
        let mut r = recipe();
        r.command = vec![command.into()];
        r.cwd = cwd.to_owned();
        let e = spawn(&r).map(|s| s.pid).unwrap_err().to_string();
        for w in words {
            assert!(e.contains(w), "{command}: {e:?} lacks {w:?}");
        }
    }
    // What execve said: (errno, program, words).
    let cases: [(i32, &str, &[&str]); 3] = [
        (
            libc::ENOENT,
            &bad_shebang,
            &["interpreter", "/nonexistent/python3"],
        ),
        (libc::ENOEXEC, &no_shebang, &["plain", "#!"]),
        (
            libc::E2BIG,
            &no_shebang,
            &["plain", "Argument list too long"],
        ),
    ];
    for (errno, program, words) in cases {
        let e = io::Error::from_raw_os_error(errno);
        let why = why_not_started(&e, Path::new(program), dir.path());
        for w in words {
            assert!(why.contains(w), "{program}: {why:?} lacks {w:?}");
        }
    }
}

#[test]
fn a_step_that_fails_after_fork_is_named() {
    use crate::config::{Limit, Resource};
    use crate::sys::Rlimit;
    // A soft limit above the hard one: setrlimit refuses it (EINVAL)
    // whoever runs the test.
    let bad = Rlimit {
        soft: Limit::Value(10),
        hard: Limit::Value(5),
    };
    let step = attrs::LimitStep {
        resource: Resource::Core,
        inherited: bad,
        raise: None,
        set: bad,
    };
    // The raising step runs first, before fd 3 is handed over: this test
    // process's fd 3 is whatever a test running beside it has open (or
    // nothing), so a later step could fail on fd 3 instead.
    let plan = Plan {
        limits: vec![attrs::LimitStep {
            raise: Some(bad),
            ..step
        }],
        ..Plan::default()
    };
    let e = start(&recipe(), Path::new("/bin/true"), &plan)
        .map(|s| s.pid)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "cannot start the child: child.limits.core = 10: \
         setrlimit (raising the hard limit, as root): Invalid argument"
    );
    // The labels: each step that can fail has its own.
    let mut r = recipe();
    r.creds = Some(Creds {
        name: "app".into(),
        uid: 1000,
        gid: 1000,
        home: "/home/app".into(),
        shell: Some("/bin/sh".into()),
    });
    let plan = Plan {
        limits: vec![attrs::LimitStep {
            raise: Some(bad),
            ..step
        }],
        nice: Some(-5),
        umask: Some(0o027),
    };
    let (image, labels) = ExecImage::new(Path::new("/bin/true"), &r, &plan).unwrap();
    let named = |n: u8| labels[usize::from(n)].as_str();
    assert_eq!(
        named(image.creds.unwrap().2),
        "child.user = \"app\": switching to uid 1000 and gid 1000 (setgroups, setgid, setuid)"
    );
    assert_eq!(
        named(image.raise[0].1),
        "child.limits.core = 10: setrlimit (raising the hard limit, as root)"
    );
    assert_eq!(named(image.nice.unwrap().1), "child.nice = -5: setpriority");
    assert_eq!(named(image.set[0].1), "child.limits.core = 10: setrlimit");
    assert_eq!(image.umask, Some(0o027));
    assert!(named(STEP_FD3).contains("fd 3"));
}

#[test]
fn gunicorn_binding_fd_3_itself_is_named() {
    let argv = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<String>>();
    let table = [
        ("gunicorn --bind fd://3 app:app", true),
        ("/srv/.venv/bin/gunicorn -b fd://3 app:app", true),
        ("python3 -m gunicorn --bind=fd://3 app:app", true),
        ("gunicorn app:app", false),
        ("gunicorn --bind 127.0.0.1:8000 app:app", false),
        ("uvicorn --fd 3 app:app", false),
        ("myserver --bind fd://3", false),
    ];
    for (command, named) in table {
        let why = super::misuses_the_socket(&argv(command));
        assert_eq!(why.is_some(), named, "{command}");
        if let Some(why) = why {
            assert!(
                why.contains("Bad file descriptor") && why.contains("--bind"),
                "{why}"
            );
        }
    }
}
