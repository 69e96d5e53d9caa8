//! What the child gets (socket activation protocol, clean process state),
//! the port held by someone else, and clients across child restarts.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Reads the signal mask and ignored set with dash builtins only (python
/// and perl change them at start-up), exports them as $SUPTEST_SIG, and
/// execs the rest of argv with the same pid.
#[cfg(target_os = "linux")]
const SIG_PRELUDE: &str = r#"s=""; while read -r k v; do case "$k" in SigBlk:|SigIgn:) s="$s$k$v;";; esac; done < /proc/self/status; SUPTEST_SIG="$s"; export SUPTEST_SIG; exec "$@""#;
/// macOS has no /proc/self/status (and `ps`'s mask columns are not
/// documented to be filled): report.py reads the mask and the ignored set
/// itself, which misses only SIGPIPE and SIGXFSZ (python ignores those).
#[cfg(not(target_os = "linux"))]
const SIG_PRELUDE: &str = r#"exec "$@""#;

fn wait_report(env: &Env, pid: i32) -> Value {
    let path = env.path(&format!("report-{pid}.json"));
    env.wait_value(&format!("report of child {pid}"), DEADLINE, || {
        let text = std::fs::read_to_string(&path).ok()?;
        serde_json::from_str(&text).ok()
    })
}

/// Everything wrong with one child's report.
fn check_report(env: &Env, r: &Value, pid: i32) -> Vec<String> {
    let mut bad = Vec::new();
    let mut want = |ok: bool, what: &str| {
        if !ok {
            bad.push(what.to_string());
        }
    };
    want(r["pid"] == pid, "report pid is the child pid from status");
    want(
        r["env"]["LISTEN_PID"] == pid.to_string().as_str(),
        "LISTEN_PID is the child's own pid",
    );
    want(r["env"]["LISTEN_FDS"] == "1", "LISTEN_FDS=1");
    want(
        r["env"]["LISTEN_FDNAMES"] == "testsock",
        "LISTEN_FDNAMES=testsock",
    );
    want(r["fd3_error"].is_null(), "fd 3 is usable as a socket");
    want(r["fd3_stream"] == true, "fd 3 is SOCK_STREAM");
    want(r["fd3_inet"] == true, "fd 3 is AF_INET");
    want(
        r["fd3_accepting"] == true,
        "fd 3 is listening (SO_ACCEPTCONN)",
    );
    want(
        r["fd3_name"] == serde_json::json!(["127.0.0.1", env.port]),
        "fd 3 is bound to the configured address",
    );
    want(r["fd3_blocking"] == true, "fd 3 is blocking");
    want(
        r["fds"] == serde_json::json!([0, 1, 2, 3]),
        "no descriptors besides 0-3",
    );
    want(r["pgrp"] == pid, "the child leads its own process group");
    want(r["stdin_is_devnull"] == true, "stdin is /dev/null");
    let sig = r["sig_prelude"].as_str().unwrap_or("");
    let (blocked, ignored) = (signals_in(sig, "SigBlk:"), signals_in(sig, "SigIgn:"));
    want(
        blocked.as_deref() == Some(&[][..]) && ignored.as_deref() == Some(&[][..]),
        &format!(
            "empty signal mask and no ignored signals (blocked {blocked:?}, ignored {ignored:?})"
        ),
    );
    bad
}

/// Signal numbers set in the hex mask after `key` in "SigBlk:HEX;SigIgn:HEX;".
fn signals_in(text: &str, key: &str) -> Option<Vec<u32>> {
    let hex = text.split(';').find_map(|f| f.strip_prefix(key))?;
    let mask = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(
        (0..64)
            .filter(|b| mask & (1 << b) != 0)
            .map(|b| b + 1)
            .collect(),
    )
}

/// Starts the supervisor as a careless launcher would: SIGUSR2 ignored and
/// SIGWINCH blocked (both inherited across exec). std spawns it with
/// posix_spawn, which with glibc also leaves the two signals glibc keeps for
/// itself (32, 33) ignored.
fn spawn_with_dirty_signal_state(env: &Env) -> Supervisor<'_> {
    // SAFETY: process-wide SIG_IGN for SIGUSR2, which no test here uses;
    // SIGWINCH is blocked only in this thread and only around the spawn.
    unsafe {
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGWINCH);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let sup = env.spawn();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        sup
    }
}

#[test]
fn child_gets_the_socket_activation_protocol_and_a_clean_state() {
    let env = Setup::new("report.py")
        .prelude(&["/bin/sh", "-c", SIG_PRELUDE, "sh"])
        .set("listen", "name", "testsock")
        .build();
    let _sup = spawn_with_dirty_signal_state(&env);

    // Both children are checked before failing, so one run tells all.
    let first = env.wait_child(&[]);
    let r1 = wait_report(&env, first);
    let bad1 = check_report(&env, &r1, first);

    // The child has made fd 3 non-blocking (shared open file description);
    // the next child must get it blocking again.
    kill(first, libc::SIGKILL);
    let second = env.wait_child(&[first]);
    let r2 = wait_report(&env, second);
    let bad2 = check_report(&env, &r2, second);
    if !bad1.is_empty() || !bad2.is_empty() {
        env.fail(format!(
            "first child {first}: wrong: {bad1:?}\nsecond child {second} (after the first set \
             O_NONBLOCK): wrong: {bad2:?}\nfirst report: {r1:#}\nsecond report: {r2:#}"
        ));
    }
    // And it serves.
    let reply = request(env.addr(), Duration::from_secs(10));
    if reply.as_deref().ok().map(str::trim) != Some(second.to_string().as_str()) {
        env.fail(format!("request to the second child: {reply:?}"));
    }
}

#[test]
fn port_squatter_means_waiting_for_port_then_start_once_it_leaves() {
    let env = Setup::new("serve.py")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "500ms")
        .build();
    let squatter = TcpListener::bind(env.addr()).expect("test binds the port first");
    let _sup = env.spawn();

    let me = std::process::id() as i64;
    let (code, v) = env.wait_value(
        "waiting-for-port with port_holder.pid = the test's pid",
        DEADLINE,
        || {
            let (code, v) = env.status_json();
            (v["state"] == "waiting-for-port" && v["port_holder"]["pid"].as_i64() == Some(me))
                .then_some((code, v))
        },
    );
    if code != 1 {
        env.fail(format!(
            "status exit {code} while waiting for the port, want 1: {v}"
        ));
    }
    if !(v["child"].is_null() || v["child"]["pid"].is_null()) {
        env.fail(format!(
            "a child is reported while waiting for the port: {v}"
        ));
    }
    if env.path("ran").exists() || !env.child_processes().is_empty() {
        env.fail("the child ran although the port was never bound");
    }

    drop(squatter);
    let child = env.wait_child(&[]);
    if !env.path("ran").exists() {
        env.fail("running, but the child never ran");
    }
    let reply = request(env.addr(), Duration::from_secs(10));
    if reply.as_deref().ok().map(str::trim) != Some(child.to_string().as_str()) {
        env.fail(format!("request to the child: {reply:?}"));
    }
}

#[derive(Default, Debug)]
struct Tally {
    issued: u64,
    answered: u64,
    refused: u64,
    resets: u64,
    timeouts: u64,
    unanswered: u64,
    other: Vec<String>,
    pids: BTreeSet<i32>,
}

#[test]
fn clients_are_never_refused_across_child_restarts() {
    let env = Setup::new("serve.py")
        .restart("initial_backoff", "100ms")
        .restart("max_backoff", "500ms")
        .build();
    let _sup = env.spawn();
    let first = env.wait_child(&[]);

    let stop = AtomicBool::new(false);
    let tally = Mutex::new(Tally::default());
    let addr = env.addr();
    let deadline = Instant::now() + Duration::from_secs(90);

    thread::scope(|scope| {
        scope.spawn(|| {
            // Bounded in count and time; stops by itself.
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && tally.lock().unwrap().issued < 200_000
            {
                tally.lock().unwrap().issued += 1;
                let asked = Instant::now();
                loop {
                    let r = request(addr, Duration::from_secs(5));
                    let mut t = tally.lock().unwrap();
                    match r {
                        Ok(s) => match s.trim().parse::<i32>() {
                            Ok(pid) => {
                                t.answered += 1;
                                t.pids.insert(pid);
                                break;
                            }
                            // Accepted by a dying child, closed unanswered.
                            Err(_) => t.resets += 1,
                        },
                        Err(e) => match e.kind() {
                            io::ErrorKind::ConnectionRefused => t.refused += 1,
                            io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                            | io::ErrorKind::UnexpectedEof => t.resets += 1,
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => t.timeouts += 1,
                            _ => t.other.push(e.to_string()),
                        },
                    }
                    if asked.elapsed() > Duration::from_secs(20) {
                        t.unanswered += 1;
                        break;
                    }
                }
            }
        });

        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let seen = |pid: i32| tally.lock().unwrap().pids.contains(&pid);
            let mut pids = vec![first];
            for round in 0..6 {
                let old = *pids.last().unwrap();
                env.wait_for(
                    &format!("the client served by child {old}"),
                    DEADLINE,
                    || seen(old),
                );
                if round < 3 {
                    kill(old, libc::SIGKILL);
                } else {
                    let out = env.cli(&["restart"]);
                    if out.code != Some(0) {
                        env.fail(format!("restart failed\n{out}"));
                    }
                }
                let new = env.wait_child(&pids);
                pids.push(new);
            }
            let last = *pids.last().unwrap();
            env.wait_for(
                &format!("the client served by child {last}"),
                DEADLINE,
                || seen(last),
            );
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    });

    let t = tally.into_inner().unwrap();
    eprintln!(
        "client: issued {} answered {} refused {} resets {} timeouts {} unanswered {} other {:?} children {:?}",
        t.issued, t.answered, t.refused, t.resets, t.timeouts, t.unanswered, t.other, t.pids
    );
    if t.refused > 0 || t.unanswered > 0 || !t.other.is_empty() || t.answered != t.issued {
        env.fail(format!("the client saw failures: {t:?}"));
    }
    if t.pids.len() < 7 {
        env.fail(format!("replies came from {:?}, want 7 children", t.pids));
    }
}
