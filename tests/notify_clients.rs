//! The notify socket takes what real clients send: the real
//! `systemd-notify --ready --status=...` (which follows its message with a
//! BARRIER=1 carrying a descriptor and waits for it to be closed), a client
//! passing descriptors, and a hostile local process sending descriptors,
//! oversized datagrams and a flood. The socket is never turned off: after
//! all of it, a restarted child still becomes ready.
//!
//! Linux only: the socket is in the abstract namespace, found through
//! `/proc/PID/environ`, and `systemd-notify` is a Linux tool. The macOS
//! receive path is the same code (`sys::recv_notify`), whose descriptor
//! handling is unit-tested on a socketpair on both systems.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// The child's `$NOTIFY_SOCKET` as an address to send to.
fn notify_addr(env: &Env, pid: i32) -> UnixAddr {
    let value = env.wait_value("the child's NOTIFY_SOCKET", DEADLINE, || {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"NOTIFY_SOCKET="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    });
    match value.strip_prefix('@') {
        Some(name) => UnixAddr::from_abstract_name(name.as_bytes()).unwrap(),
        // A socket file (only the child's user and root can send to it).
        None => UnixAddr::from_pathname(&value).unwrap(),
    }
}

/// Waits for a running, ready child other than those in `not`.
fn ready_child(env: &Env, not: &[i32]) -> (i32, serde_json::Value) {
    env.wait_value(
        &format!("a ready child other than {not:?}"),
        DEADLINE,
        || {
            let (code, v) = env.status_json();
            let pid = v["child"]["pid"].as_i64()? as i32;
            (code == 0
                && v["state"] == "running"
                && v["child"]["ready"] == true
                && !not.contains(&pid))
            .then_some((pid, v))
        },
    )
}

fn restart(env: &Env) {
    let out = env.cli(&["restart"]);
    if out.code != Some(0) {
        env.fail(format!("restart failed: {out}"));
    }
}

#[test]
fn systemd_notify_is_heard_and_its_barrier_released() {
    // The wrapper records systemd-notify's exit status and how long it
    // waited (its barrier gives up after 5 s), then becomes the server.
    let wrapper = concat!(
        r#"t0=$(date +%s%N); "#,
        r#"systemd-notify --ready --status="ready via systemd-notify"; rc=$?; "#,
        r#"echo "$rc $(( ($(date +%s%N) - t0) / 1000000 ))" > "$3/notify-rc.$$"; "#,
        r#"exec "$@""#
    );
    let env = Setup::new("serve.py")
        .prelude(&["/bin/sh", "-c", wrapper, "sh"])
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "20s")
        .build();
    let _sup = env.spawn();
    let (first, v) = ready_child(&env, &[]);
    if v["child"]["status"] != "ready via systemd-notify" {
        env.fail(format!("STATUS= not recorded: {v:#}"));
    }
    let rc_file = env.path(&format!("notify-rc.{first}"));
    let rc = env.wait_value("systemd-notify's exit status", DEADLINE, || {
        std::fs::read_to_string(&rc_file)
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    let words: Vec<u64> = rc
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // Without a closed barrier descriptor it would wait its full 5 s.
    if words.len() != 2 || words[0] != 0 || words[1] >= 4000 {
        env.fail(format!(
            "systemd-notify should exit 0 at once (barrier answered); got \"{}\" (status, ms)",
            rc.trim()
        ));
    }
    // The socket is still read after that: the next child is heard too.
    restart(&env);
    ready_child(&env, &[first]);
}

#[test]
fn a_client_passing_descriptors_is_heard_and_they_are_closed() {
    let env = Setup::new("notify_fds.py")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "20s")
        .build();
    let _sup = env.spawn();
    let (first, v) = ready_child(&env, &[]);
    if v["child"]["status"] != "passed two fds" {
        env.fail(format!("STATUS= not recorded: {v:#}"));
    }
    env.wait_for("the child's verdicts", DEADLINE, || {
        !env.events_of("barrier").is_empty()
    });
    if env.events_of("fds-closed").is_empty() {
        env.fail("the descriptors passed with READY=1 stayed open in the supervisor");
    }
    let barrier = env.events_of("barrier");
    if barrier[0].extra.first().map(String::as_str) != Some("ok") {
        env.fail(format!("BARRIER=1 was not answered: {:?}", barrier[0]));
    }
    restart(&env);
    ready_child(&env, &[first]);
}

/// The read end of a pipe to pass away; `gone` tells (by EPIPE) whether
/// the receiver closed its copy once ours is dropped.
struct Probe {
    read: Option<OwnedFd>,
    write: std::fs::File,
}

impl Probe {
    /// Close-on-exec: a supervisor another test starts meanwhile must not
    /// inherit the read end and keep it open.
    fn new() -> Probe {
        let (read, write) = std::io::pipe().unwrap();
        Probe {
            read: Some(OwnedFd::from(read)),
            write: std::fs::File::from(OwnedFd::from(write)),
        }
    }

    fn fd(&self) -> RawFd {
        self.read.as_ref().map_or(-1, |r| r.as_raw_fd())
    }

    fn gone(&mut self) -> bool {
        use std::io::Write;
        self.read = None;
        matches!(self.write.write(b"x"), Err(e) if e.raw_os_error() == Some(libc::EPIPE))
    }
}

fn send(sock: &UnixDatagram, to: &UnixAddr, payload: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr as NixAddr};
    let dest = match (to.as_abstract_name(), to.as_pathname()) {
        (Some(name), _) => NixAddr::new_abstract(name).unwrap(),
        (None, Some(path)) => NixAddr::new(path).unwrap(),
        (None, None) => panic!("an unnamed notify address"),
    };
    let iov = [std::io::IoSlice::new(payload)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_DONTWAIT,
        Some(&dest),
    )
    .map(|_| ())
    .map_err(std::io::Error::from)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn hostile_senders_never_turn_the_socket_off() {
    let env = Setup::new("notify.py")
        .arg("ready")
        .arg("0")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "20s")
        .build();
    let sup = env.spawn();
    let (first, _) = ready_child(&env, &[]);
    let to = notify_addr(&env, first);
    let fds_before = open_fds(sup.pid());

    // This test process is outside the child's group: a stranger.
    let stranger = UnixDatagram::unbound().unwrap();
    // Descriptors with a READY=1 (which must not count), then many.
    let mut probes = [Probe::new(), Probe::new()];
    let fds: Vec<RawFd> = probes.iter().map(Probe::fd).collect();
    send(&stranger, &to, b"READY=1\nSTATUS=stranger", &fds).expect("send two descriptors");
    let mut many = Probe::new();
    send(&stranger, &to, b"FDSTORE=1", &vec![many.fd(); 200]).expect("send 200 descriptors");
    // Oversized, with and without descriptors.
    let mut big = Probe::new();
    send(&stranger, &to, &vec![b'A'; 8192], &[big.fd()]).expect("send 8 KiB");
    send(&stranger, &to, &vec![b'B'; 60_000], &[]).expect("send 60 KB");
    // A bounded flood: at most 20,000 datagrams or 2 s.
    let started = Instant::now();
    let mut sent = 0;
    while sent < 20_000 && started.elapsed() < Duration::from_secs(2) {
        match send(&stranger, &to, b"WATCHDOG=1", &[]) {
            Ok(()) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => env.fail(format!("the notify socket stopped taking datagrams: {e}")),
        }
    }

    let [a, b] = &mut probes;
    for (what, p) in [
        ("two", a),
        ("two", b),
        ("200", &mut many),
        ("oversized", &mut big),
    ] {
        let closed = wait_until(DEADLINE, || p.gone()).is_ok();
        if !closed {
            env.fail(format!(
                "a descriptor from the {what}-descriptor datagram stayed open"
            ));
        }
    }
    if wait_until(DEADLINE, || open_fds(sup.pid()) <= fds_before).is_err() {
        env.fail(format!(
            "the supervisor holds {} descriptors, {fds_before} before the stranger",
            open_fds(sup.pid())
        ));
    }
    let (code, v) = env.status_json();
    if code != 0 || v["child"]["status"] == "stranger" {
        env.fail(format!("a stranger's message counted: {code} {v:#}"));
    }

    // The socket is still read: a new child becomes ready.
    restart(&env);
    let (second, _) = ready_child(&env, &[first]);
    // And once more, right after another burst.
    for _ in 0..500 {
        let _ = send(&stranger, &to, &vec![b'C'; 5000], &[]);
    }
    restart(&env);
    ready_child(&env, &[first, second]);
    if sup.exited().is_some() {
        env.fail("the supervisor exited");
    }
}

/// Rejected datagrams cost at most about one log line a minute, with a
/// count: a flood from a stranger must not rotate the log's history away.
#[test]
fn a_flood_of_rejected_datagrams_is_logged_about_once_a_minute() {
    let env = Setup::new("notify.py")
        .arg("ready")
        .arg("0")
        .raw("health", "notify", "true")
        .build();
    let _sup = env.spawn();
    let (first, _) = ready_child(&env, &[]);
    let to = notify_addr(&env, first);
    let log = env.log_dir.join("supervisor.log");
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = lines();
    let stranger = UnixDatagram::unbound().unwrap();
    let started = Instant::now();
    let mut sent = 0;
    while sent < 5_000 && started.elapsed() < Duration::from_secs(5) {
        let payload: &[u8] = if sent % 10 == 0 {
            &[b'D'; 6000]
        } else {
            b"READY=1"
        };
        match send(&stranger, &to, payload, &[]) {
            Ok(()) => sent += 1,
            Err(_) => std::thread::yield_now(),
        }
    }
    // Wait until the supervisor has read them all (the queue drains when
    // a marker datagram can be sent without waiting).
    let drained = wait_until(DEADLINE, || {
        send(&stranger, &to, b"STATUS=marker", &[]).is_ok() && {
            let a = lines();
            std::thread::sleep(Duration::from_millis(200));
            a == lines()
        }
    });
    if drained.is_err() {
        env.fail("the supervisor never caught up with the flood");
    }
    let grew = lines() - before;
    if grew > 5 {
        env.fail(format!(
            "{sent} rejected datagrams wrote {grew} lines to supervisor.log; want a few, with a count"
        ));
    }
}
