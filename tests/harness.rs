//! The harness's own process API (tests/common/procs.rs) against processes
//! this test starts, on whichever system runs it: every other suite trusts
//! its answers for cleanup and assertions, so a wrong answer on macOS (where
//! it is libproc, sysctl and lsof instead of /proc) must fail here first.
//! Plus the parsers of what macOS hands back, as tables, on every system.

mod common;

use common::*;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `sleep` in its own process group, SIGKILLed and reaped when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        let child = Command::new("sleep")
            .arg("60")
            .env("SUPTEST_HARNESS_MARK", "marked")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        Sleeper(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        kill(self.pid(), libc::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
fn procargs_buffers_parse_into_argv_and_environment() {
    fn buf(argc: i32, rest: &[u8]) -> Vec<u8> {
        let mut b = argc.to_ne_bytes().to_vec();
        b.extend_from_slice(rest);
        b
    }
    type ArgvAndEnv = Option<(Vec<String>, Vec<String>)>;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases: Vec<(Vec<u8>, ArgvAndEnv)> = vec![
        (
            // The layout xnu's sysctl_procargsx writes: path, padding, argv,
            // environment, an empty string, then the "apple" strings.
            buf(
                3,
                b"/usr/bin/python3\0\0\0\0\0python3\0/t/serve.py\0/tmp/suptest-x\0\
                  HOME=/h\0LISTEN_FDS=1\0\0executable_path=/usr/bin/python3\0",
            ),
            Some((
                s(&["python3", "/t/serve.py", "/tmp/suptest-x"]),
                s(&["HOME=/h", "LISTEN_FDS=1"]),
            )),
        ),
        (
            buf(1, b"/bin/sleep\0sleep\0"),
            Some((s(&["sleep"]), vec![])),
        ),
        // Fewer strings than argc says: not trusted.
        (buf(4, b"/bin/sh\0\0sh\0-c\0"), None),
        (buf(-1, b"/bin/sh\0sh\0"), None),
        (vec![1, 0], None),
        (buf(1, b"no terminator"), None),
    ];
    for (input, want) in cases {
        assert_eq!(parse_procargs(&input), want, "input {input:?}");
    }
}

#[test]
fn lsof_field_output_parses_into_descriptors_and_ports() {
    // lsof(8) -F: a `p` line per process, then `f` and `n` per file.
    let text = "p4242\nfcwd\nn/\nftxt\nn/usr/bin/python3\nf0\nn/dev/null\nf3\nn*:8420\n\
                f4\nn127.0.0.1:8421->127.0.0.1:50123\nf5\nn[::1]:8422\n";
    let pairs = parse_lsof_names(text);
    let fds: Vec<&str> = pairs.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fds, ["cwd", "txt", "0", "3", "4", "5"], "{pairs:?}");
    assert_eq!(pairs[2].1, "/dev/null");
    for (name, port) in [
        ("*:8420", Some(8420)),
        ("127.0.0.1:8421->127.0.0.1:50123", Some(8421)),
        ("[::1]:8422", Some(8422)),
        ("/dev/null", None),
        ("localhost:http", None),
    ] {
        assert_eq!(lsof_port(name), port, "{name}");
    }
}

#[test]
fn ps_cpu_times_parse() {
    let s = Duration::from_secs_f64;
    for (text, want) in [
        ("0:00.05\n", Some(s(0.05))),
        ("  12:34.50", Some(s(754.5))),
        ("1:02:03.45", Some(s(3723.45))),
        ("2-01:00:00.00", Some(s(2.0 * 86_400.0 + 3600.0))),
        ("", None),
        ("abc", None),
        ("1:2:3:4.0", None),
    ] {
        assert_eq!(parse_ps_time(text), want, "{text:?}");
    }
}

#[test]
fn a_live_process_is_seen_whole() {
    let me = std::process::id() as i32;
    let sleeper = Sleeper::start();
    let pid = sleeper.pid();
    let seen = wait_until(DEADLINE, || cmdline(pid) == ["sleep", "60"]);
    assert!(seen.is_ok(), "argv of {pid}: {:?}", cmdline(pid));
    assert!(pid_alive(pid));
    match proc_stat(pid) {
        Some((state, ppid, pgrp)) => {
            assert!(state != 'Z', "state {state}");
            assert_eq!((ppid, pgrp), (me, pid), "ppid and process group");
        }
        None => panic!("no proc_stat for {pid}"),
    }
    assert!(all_pids().contains(&pid), "all_pids lacks {pid}");
    assert!(all_pids().contains(&me), "all_pids lacks ourselves");
    assert_eq!(group_members(pid), [pid]);
    assert!(pgid_alive(pid));
    assert_eq!(
        environ_var(pid, "SUPTEST_HARNESS_MARK").as_deref(),
        Some("marked"),
        "environment of {pid}: {:?}",
        environ(pid)
    );
    assert!(start_time(pid).is_some(), "start time of {pid}");
    assert!(
        start_time(me) <= start_time(pid),
        "we started before our child"
    );
    assert!(rss_kib(me) > 0, "our own resident size");
    assert!(cpu_time(me).is_some(), "our own CPU time");
    let boot = boot_time().expect("boot time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(boot > 0 && boot <= now, "boot time {boot}, now {now}");
}

#[test]
fn a_killed_unreaped_process_is_a_zombie_and_not_alive() {
    let mut sleeper = Sleeper::start();
    let pid = sleeper.pid();
    assert!(pid_alive(pid));
    kill(pid, libc::SIGKILL);
    // Not reaped yet: kill(pid, 0) still succeeds, yet it is dead.
    let zombie = wait_until(DEADLINE, || matches!(proc_stat(pid), Some(('Z', _, _))));
    assert!(zombie.is_ok(), "state of {pid}: {:?}", proc_stat(pid));
    assert!(!pid_alive(pid), "a zombie counts as alive");
    assert!(group_members(pid).is_empty(), "a zombie counts as a member");
    assert!(all_pids().contains(&pid), "all_pids lists zombies too");
    let _ = sleeper.0.wait();
    assert!(!pid_alive(pid) && proc_stat(pid).is_none());
}

#[test]
fn our_own_descriptors_and_listening_port_are_found() {
    let me = std::process::id() as i32;
    let dir = tempfile::tempdir().unwrap();
    let path = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("marker.txt");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"x").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let targets = fd_targets(me);
    let want = path.display().to_string();
    assert!(
        targets.contains(&want),
        "no descriptor on {want}: {targets:?}"
    );
    let ports = listening_ports(me);
    assert!(ports.contains(&port), "listening on {port}: {ports:?}");
    drop(listener);
    assert!(!listening_ports(me).contains(&port));
}
