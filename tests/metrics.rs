//! Prometheus metrics: `status --format prometheus` checked by the real
//! tools (`promtool check metrics`, prometheus_client's parser); values
//! beside `status --json`.
//!
//! promtool (and the Prometheus server) come from Debian's `prometheus`
//! package, which `.ci/run` installs; where it is missing the tests that
//! need it say so and skip. prometheus_client comes from the test venv
//! (`tests/requirements.txt`).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tool on PATH (or in /usr/bin, /usr/sbin), if installed.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `prog args` with `input` on stdin: (exit code, stdout, stderr).
fn pipe_through(prog: &std::path::Path, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", prog.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `promtool check metrics` on `text` (lint included): fails the test on
/// any complaint; false when promtool is not installed (said on stderr).
fn promtool_check(text: &str) -> bool {
    let Some(promtool) = tool("promtool") else {
        eprintln!(
            "skipped: promtool is not installed (Debian: apt-get install prometheus; .ci/run does)"
        );
        return false;
    };
    let (code, out, err) = pipe_through(&promtool, &["check", "metrics"], text);
    assert!(
        code == 0 && out.trim().is_empty() && err.trim().is_empty(),
        "promtool check metrics: exit {code}\n{out}{err}\n--- the text:\n{text}"
    );
    true
}

/// The samples as prometheus_client's reference parser reads them:
/// `name{label="v",...}` (labels sorted) → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{%s}" % labels if labels else "")] = s.value
print(json.dumps(out))
"#;
    let python = venv().join("bin/python");
    let (code, out, err) = pipe_through(&python, &["-c", SCRIPT], text);
    assert_eq!(
        code, 0,
        "prometheus_client could not parse the text (is it in the venv? pip install -r tests/requirements.txt): {err}\n--- the text:\n{text}"
    );
    serde_json::from_str(&out).unwrap()
}

fn unix_seconds(rfc3339: &Value) -> f64 {
    let t = humantime::parse_rfc3339_weak(rfc3339.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Kills the child twice and waits for the third: restarts 2, the last
/// exit SIGKILL.
fn two_kills(env: &Env) -> Value {
    let first = env.wait_child(&[]);
    kill(first, 9);
    let second = env.wait_child(&[first]);
    kill(second, 9);
    env.wait_child(&[first, second]);
    env.wait_value("restarts 2 after SIGKILL", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running"
            && v["child"]["restarts"] == 2
            && v["child"]["last_exit"]["signal"] == "SIGKILL")
            .then_some(v)
    })
}

/// The samples `status --json` (`v`) implies, checked against `m`.
fn matches_json(env: &Env, m: &BTreeMap<String, f64>, v: &Value) {
    let child = &v["child"];
    let want = [
        ("supervisor_up", 1.0),
        (
            "supervisor_reloads_total",
            v["supervisor"]["reloads"].as_f64().unwrap(),
        ),
        ("supervisor_port_bound", 1.0),
        ("supervisor_child_up", 1.0),
        ("supervisor_child_ready", 1.0),
        ("supervisor_child_restarts_total", 2.0),
        (
            "supervisor_child_crash_streak",
            child["crash_streak"].as_f64().unwrap(),
        ),
        ("supervisor_child_last_exit_code", -1.0),
        ("supervisor_child_last_exit_signal", 9.0),
        (
            "supervisor_start_time_seconds",
            unix_seconds(&v["supervisor"]["started_at"]),
        ),
        (
            "supervisor_child_start_time_seconds",
            unix_seconds(&child["started_at"]),
        ),
        ("supervisor_handovers_total{result=\"ok\"}", 0.0),
        ("supervisor_handovers_total{result=\"failed\"}", 0.0),
        ("supervisor_alerts_total{event=\"crash-loop\"}", 0.0),
    ];
    for (name, value) in want {
        match m.get(name) {
            Some(got) if (got - value).abs() < 1e-6 => {}
            got => env.fail(format!(
                "{name}: want {value} (from status --json), got {got:?}\n{m:#?}\n{v:#}"
            )),
        }
    }
    let version = format!(
        "supervisor_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m.get(&version), Some(&1.0), "{m:#?}");
    let memory = m["supervisor_child_memory_bytes"];
    // A python child: several MiB, measured now.
    if !(1e6..1e10).contains(&memory) {
        env.fail(format!(
            "supervisor_child_memory_bytes {memory}: not a python child's RSS"
        ));
    }
    for stream in ["stdout", "stderr"] {
        assert!(
            m.contains_key(&format!(
                "supervisor_log_bytes_total{{stream=\"{stream}\"}}"
            )),
            "{m:#?}"
        );
    }
}

#[test]
fn status_format_prometheus_passes_promtool_and_matches_status_json() {
    let env = Setup::new("serve.py").build();
    let _sup = env.spawn();
    let v = two_kills(&env);
    let out = env.cli(&["status", "--format", "prometheus"]);
    assert_eq!(out.code, Some(0), "{out}");
    promtool_check(&out.stdout);
    let m = parse(&out.stdout);
    matches_json(&env, &m, &v);

    // Not running: up 0, exit 3, still valid.
    env.cli(&["stop"]);
    let out = env.cli(&["status", "--format", "prometheus"]);
    assert_eq!(out.code, Some(3), "{out}");
    promtool_check(&out.stdout);
    let m = parse(&out.stdout);
    assert_eq!(m.get("supervisor_up"), Some(&0.0), "{m:#?}");
}

/// An Env whose config has `[metrics] address` on a free port; the address.
fn with_metrics(setup: Setup) -> (Env, SocketAddr) {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let env = setup.set("metrics", "address", &addr.to_string()).build();
    (env, addr)
}

/// One HTTP/1.1 request (`method path`), the whole answer: status code,
/// head and body.
fn http(addr: SocketAddr, method: &str, path: &str) -> io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, DEADLINE)?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("not HTTP: {text:?}")))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status: {text:?}")))?;
    Ok((code, head.to_owned(), body.to_owned()))
}

/// `GET path`, which must answer 200; the body.
fn get(env: &Env, addr: SocketAddr, path: &str) -> String {
    match http(addr, "GET", path) {
        Ok((200, _, body)) => body,
        other => env.fail(format!("GET {path} on {addr}: {other:?}")),
    }
}

/// The keys of a JSON object, recursively (`a.b.c`), values left out.
fn keys(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            let name = format!("{prefix}{k}");
            keys(v, &format!("{name}."), out);
            out.push(name);
        }
    }
}

/// The supervisor's descriptors: (number, what it names).
fn fds(pid: i32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.display().to_string()))
        })
        .collect()
}

#[test]
fn metrics_and_status_over_http_match_status_json() {
    let (env, addr) = with_metrics(Setup::new("serve.py"));
    let sup = env.spawn();
    let v = two_kills(&env);
    let text = get(&env, addr, "/metrics");
    promtool_check(&text);
    matches_json(&env, &parse(&text), &v);

    // /status: the JSON of `status --json`, in keys and state.
    let (_, json) = env.status_json();
    let served: Value = serde_json::from_str(&get(&env, addr, "/status")).unwrap();
    let (mut want, mut got) = (Vec::new(), Vec::new());
    keys(&json, "", &mut want);
    keys(&served, "", &mut got);
    want.sort();
    got.sort();
    assert_eq!(got, want, "/status keys differ from status --json");
    assert_eq!(served["state"], json["state"]);
    assert_eq!(served["child"]["pid"], json["child"]["pid"]);
    assert_eq!(served["child"]["restarts"], 2);

    // Nothing else: other paths 404, other methods 405; the service is
    // untouched.
    for (method, path, code) in [
        ("GET", "/", 404),
        ("GET", "/metrics/x", 404),
        ("POST", "/status", 405),
        ("PUT", "/metrics", 405),
        ("DELETE", "/metrics", 405),
        ("HEAD", "/metrics", 405),
    ] {
        match http(addr, method, path) {
            Ok((c, _, _)) if c == code => {}
            other => env.fail(format!("{method} {path}: want {code}, got {other:?}")),
        }
    }
    let (_, after) = env.status_json();
    assert_eq!(after["child"]["pid"], json["child"]["pid"]);
    assert_eq!(after["child"]["restarts"], 2);

    // The listener is not fd 3 (the service's socket is) and the child
    // has none of ours.
    if cfg!(target_os = "linux") {
        let ours = fds(sup.pid());
        let three = ours.iter().find(|(n, _)| *n == 3).map(|(_, t)| t.clone());
        let child = env.child_pid().unwrap();
        let theirs = fds(child);
        assert!(
            theirs.iter().all(|(n, _)| *n <= 3),
            "the child holds more than 0-3: {theirs:?}"
        );
        assert_eq!(
            theirs.iter().find(|(n, _)| *n == 3).map(|(_, t)| t.clone()),
            three,
            "fd 3 is the service's socket in both"
        );
    }
}

#[test]
fn check_config_refuses_the_services_own_address() {
    let env = Setup::new("serve.py").build();
    let listen = env.addr();
    for (metrics, ok) in [
        (listen.to_string(), false),
        (format!("0.0.0.0:{}", listen.port()), false),
        (format!("127.0.0.1:{}", free_port()), true),
        ("localhost:9420".to_owned(), false),
    ] {
        let text = std::fs::read_to_string(&env.config).unwrap();
        let path = env.path(&format!("m-{ok}.toml"));
        std::fs::write(
            &path,
            format!("{text}\n[metrics]\naddress = \"{metrics}\"\n"),
        )
        .unwrap();
        let out = env.cli_with(&path, &["check-config"], DEADLINE);
        let want = if ok { 0 } else { 78 };
        assert_eq!(out.code, Some(want), "metrics.address = {metrics:?}\n{out}");
        if !ok {
            assert!(out.stderr.contains("metrics.address"), "{out}");
        }
    }
}

/// The `[metrics]` listener is bound by the rule of the service's own: not
/// beside another server listening on an overlapping address (on macOS,
/// `SO_REUSEADDR` before the bind let `127.0.0.1:P` bind beside another
/// socket on `0.0.0.0:P` and take its loopback connections; Linux refuses
/// that either way). The service runs on without metrics, saying why.
#[test]
fn the_metrics_listener_is_never_bound_beside_another_servers_wildcard_socket() {
    // Another server's wildcard socket (std sets SO_REUSEADDR, as most do).
    let other = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = other.local_addr().unwrap().port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let env = Setup::new("serve.py")
        .set("metrics", "address", &addr.to_string())
        .build();
    let _sup = env.spawn();
    let log = || std::fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default();
    env.wait_for("the metrics bind refused in the log", DEADLINE, || {
        log().contains(&format!("metrics: cannot listen on {addr}"))
    });
    env.wait_for("the child serving", DEADLINE, || {
        env.status_json().1["state"] == "running"
    });
    // A connection to the address is the other server's.
    let _c = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    other.set_nonblocking(true).unwrap();
    env.wait_for("the other server to get the connection", DEADLINE, || {
        other.accept().is_ok()
    });
}

/// The value of `name` in `text` (the exposition format), if sampled.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The inode of the socket listening on 127.0.0.1:`port` (Linux).
fn listening_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        (local_port == port && f.get(3) == Some(&"0A")).then(|| f.get(9)?.parse().ok())?
    })
}

/// Voluntary and involuntary context switches of all of `pid`'s threads:
/// every time it was woken or preempted (Linux).
#[cfg(target_os = "linux")]
fn context_switches(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn idle_and_half_requests_do_not_delay_a_scrape_and_are_dropped() {
    let (env, addr) = with_metrics(Setup::new("serve.py"));
    let sup = env.spawn();
    env.wait_child(&[]);
    get(&env, addr, "/metrics");
    let linux = cfg!(target_os = "linux");
    let (fds_before, threads_before) = (fds(sup.pid()).len(), threads(sup.pid()));

    // 40 connections that say nothing, one that sends half a request.
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect_timeout(&addr, DEADLINE).unwrap())
        .collect();
    let mut half = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let opened = Instant::now();

    let t = Instant::now();
    let text = get(&env, addr, "/metrics");
    let took = t.elapsed();
    assert!(value(&text, "supervisor_up") == Some(1.0), "{text}");
    if took > Duration::from_secs(2) {
        env.fail(format!("a scrape beside 41 idle connections took {took:?}"));
    }

    // The half request is dropped about 5 s after it connected.
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let got = half.read_to_end(&mut buf);
    let after = opened.elapsed();
    let answered = String::from_utf8_lossy(&buf);
    if answered.contains(" 200 ") || !(secs(4.0)..secs(12.0)).contains(&after) {
        env.fail(format!(
            "the half request ended after {after:?} ({got:?}, {answered:?}); want dropped after about 5 s"
        ));
    }
    eprintln!("scrape beside 41 idle connections: {took:?}; half request dropped after {after:?}");
    drop(idle);

    // A 20 KiB head is refused (431, or the connection closed on it), and
    // the listener serves on.
    let mut big = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    big.set_read_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let _ = big.write_all(head.as_bytes());
    let mut buf = Vec::new();
    let _ = big.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        !answer.contains(" 200 "),
        "a 20 KiB head was answered: {answer:?}"
    );
    eprintln!(
        "20 KiB head: {:?}",
        answer
            .lines()
            .next()
            .unwrap_or("(closed without an answer)")
    );
    if !answer.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    }
    drop(big);
    get(&env, addr, "/metrics");
    get(&env, addr, "/status");

    // Threads and descriptors back where they were: no more than before
    // (the count before may still include the first scrape's connection,
    // whose answer the client had read in full a moment before the server
    // side let go of it).
    if linux {
        let back = || fds(sup.pid()).len() <= fds_before && threads(sup.pid()) <= threads_before;
        if wait_until(DEADLINE, back).is_err() {
            env.fail(format!(
                "descriptors and threads not back: {fds_before} descriptors and \
                 {threads_before} threads before, now {} threads and {:?}",
                threads(sup.pid()),
                fds(sup.pid())
            ));
        }
    }
}

#[test]
fn counters_and_the_listener_survive_reload() {
    let (env, addr) = with_metrics(Setup::new("chatty.py").arg("100"));
    let _sup = env.spawn();
    let v = two_kills(&env);
    let child = v["child"]["pid"].as_i64().unwrap();
    for _ in 0..3 {
        request(env.addr(), DEADLINE).unwrap();
    }
    let bytes = |text: &str| value(text, "supervisor_log_bytes_total{stream=\"stdout\"}");
    let before = env.wait_value("the child's output counted", DEADLINE, || {
        let text = get(&env, addr, "/metrics");
        bytes(&text).filter(|b| *b >= 300.0).map(|_| text)
    });
    let inode = listening_inode(addr.port());
    let out = env.cli(&["reload"]);
    assert_eq!(out.code, Some(0), "{out}");
    let after = get(&env, addr, "/metrics");
    promtool_check(&after);
    let m = parse(&after);
    assert_eq!(m["supervisor_reloads_total"], 1.0, "{after}");
    assert_eq!(m["supervisor_child_restarts_total"], 2.0, "{after}");
    assert_eq!(m["supervisor_child_last_exit_signal"], 9.0, "{after}");
    assert!(
        bytes(&after) >= bytes(&before),
        "log bytes went back: {before}\n{after}"
    );
    assert_eq!(env.child_pid(), Some(child as i32), "the child carried on");
    // And counts on in the new image.
    request(env.addr(), DEADLINE).unwrap();
    env.wait_for("the new image counts on", DEADLINE, || {
        bytes(&get(&env, addr, "/metrics")) > bytes(&after)
    });
    if cfg!(target_os = "linux") {
        assert_eq!(
            listening_inode(addr.port()),
            inode,
            "the metrics listener is the same socket after reload"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn no_wake_ups_while_nobody_asks() {
    let (env, addr) = with_metrics(Setup::new("serve.py"));
    let sup = env.spawn();
    env.wait_child(&[]);
    // Asked once: whatever timer that connection had ends with it.
    get(&env, addr, "/metrics");
    env.wait_for("the connection gone", DEADLINE, || {
        !fds(sup.pid()).is_empty() && {
            let before = context_switches(sup.pid());
            std::thread::sleep(Duration::from_millis(200));
            context_switches(sup.pid()) == before
        }
    });
    let before = context_switches(sup.pid());
    std::thread::sleep(Duration::from_secs(5));
    let woken = context_switches(sup.pid()) - before;
    if woken != 0 {
        env.fail(format!(
            "supervisor {} was woken {woken} times in 5 s idle with [metrics] set",
            sup.pid()
        ));
    }
    get(&env, addr, "/metrics");
}

/// The read system calls (`read`, `pread`, `readv`) `pid` made so far
/// (`/proc/PID/io` `syscr`; socket receives are not counted): a measure of
/// the child's memory is a scan of `/proc`, many reads (Linux).
#[cfg(target_os = "linux")]
fn reads(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("syscr:")?.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("cannot read /proc/{pid}/io"))
}

/// How long the supervisor reuses a measure of the child's memory
/// (`metrics::MEMORY_REUSED_FOR`).
#[cfg(target_os = "linux")]
const MEMORY_REUSED_FOR: Duration = Duration::from_secs(1);

#[cfg(target_os = "linux")]
#[test]
fn rapid_scrapes_measure_the_childs_memory_at_most_once_a_second() {
    let (env, addr) = with_metrics(Setup::new("serve.py"));
    let sup = env.spawn();
    env.wait_child(&[]);
    // What one measure costs: the reads of a scrape that comes after the
    // last measure is too old to reuse (a time to let pass, not a
    // condition to wait for). A scrape of /status measures nothing.
    let one_measure = || {
        std::thread::sleep(MEMORY_REUSED_FOR + Duration::from_millis(200));
        let before = reads(sup.pid());
        let text = get(&env, addr, "/metrics");
        let n = reads(sup.pid()) - before;
        (
            n,
            value(&text, "supervisor_child_memory_bytes").unwrap_or(0.0),
        )
    };
    get(&env, addr, "/metrics");
    let (fresh, bytes) = one_measure();
    let before = reads(sup.pid());
    get(&env, addr, "/status");
    let status = reads(sup.pid()) - before;
    if fresh < 10 || fresh <= 4 * status || bytes < 1e6 {
        env.fail(format!(
            "a scrape after the interval should measure anew (reads: {fresh}, /status: {status}; \
             {bytes} bytes)"
        ));
    }
    // For 2.5 s, 8 clients scraping as fast as each can ask: one measure
    // per second at most, however many ask.
    let began = Instant::now();
    let before = reads(sup.pid());
    let scrapers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut n = 0;
                while began.elapsed() < Duration::from_millis(2500) {
                    if http(addr, "GET", "/metrics").is_ok_and(|(code, _, _)| code == 200) {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let scrapes: u64 = scrapers.into_iter().map(|s| s.join().unwrap()).sum();
    let burst = reads(sup.pid()) - before;
    let took = began.elapsed();
    // At most one measure in each second begun, and one at the start.
    let allowed = (took.as_secs_f64() / MEMORY_REUSED_FOR.as_secs_f64()).ceil() as u64 + 1;
    eprintln!(
        "{scrapes} scrapes in {took:?}: {burst} reads; one measure {fresh} reads; \
         allowed {allowed} measures"
    );
    if scrapes < 20 || burst > allowed * fresh + allowed * fresh / 2 {
        env.fail(format!(
            "{scrapes} scrapes in {took:?} made {burst} reads: more than {allowed} measures \
             of {fresh}"
        ));
    }
    // And after the interval, a scrape measures anew.
    let (again, _) = one_measure();
    if again < fresh / 2 {
        env.fail(format!(
            "a scrape after the interval should measure anew: {again} reads, one measure {fresh}"
        ));
    }
}

#[test]
fn a_handover_that_moved_on_is_measured_at_once() {
    // The new child takes 100 MiB at its start; the old one a few MiB.
    let env = Setup::new("handover.py")
        .arg("ready")
        .arg("0.2")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "10s")
        .raw("restart", "overlap", "true");
    let (env, addr) = with_metrics(env);
    let _sup = env.spawn();
    env.wait_value("the first child ready", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running" && v["child"]["ready"] == true).then_some(())
    });
    let memory = |text: &str| value(text, "supervisor_child_memory_bytes").unwrap_or(-1.0);
    let before = memory(&get(&env, addr, "/metrics"));
    if !(1e6..50e6).contains(&before) {
        env.fail(format!("the old child's memory: {before} bytes"));
    }
    // Scraped all along, so a measure younger than the interval is there
    // at every moment of the handover.
    let scraper = Background::start(move |stop| {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = http(addr, "GET", "/metrics");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    std::fs::write(env.path("next-mode"), "ready 0.2 grow 100").unwrap();
    let out = env.cli_with(&env.config, &["restart"], secs(60.0));
    if out.code != Some(0) {
        env.fail(format!("restart failed:\n{out}"));
    }
    // The handover is over: the new child alone, measured now, not the
    // old child's measure from a moment ago.
    let after = memory(&get(&env, addr, "/metrics"));
    scraper.finish();
    if after < 100e6 {
        env.fail(format!(
            "after the handover, the new child's memory (over 100 MiB) was shown as {after} bytes"
        ));
    }
}

/// A Prometheus server of our own; killed (by pid) when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_server_scrapes_it() {
    let Some(prometheus) = tool("prometheus") else {
        eprintln!(
            "skipped: prometheus is not installed (Debian: apt-get install prometheus; .ci/run does)"
        );
        return;
    };
    let (env, addr) = with_metrics(Setup::new("serve.py"));
    let _sup = env.spawn();
    two_kills(&env);
    let dir = env.path("prometheus");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: supervisor\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: [\"{addr}\"]\n"
        ),
    )
    .unwrap();
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let server = Prometheus(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", prometheus.display())),
    );
    let query = |q: &str| -> Option<String> {
        let path = format!("/api/v1/query?query={q}");
        let (code, _, body) = http(web, "GET", &path).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        if code != 200 || v["status"] != "success" {
            return None;
        }
        Some(v["data"]["result"].get(0)?["value"][1].as_str()?.to_owned())
    };
    let deadline = Duration::from_secs(60);
    let found = wait_until(deadline, || {
        query("supervisor_child_up%20%3D%3D%201").as_deref() == Some("1")
            && query("supervisor_child_restarts_total").as_deref() == Some("2")
    });
    if found.is_err() {
        let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        env.fail(format!(
            "Prometheus (pid {}) never answered supervisor_child_up == 1 and restarts 2: \
             up {:?}, restarts {:?}, targets {:?}\n--- its log:\n{log}",
            server.0.id(),
            query("supervisor_child_up"),
            query("supervisor_child_restarts_total"),
            http(web, "GET", "/api/v1/targets").map(|(_, _, b)| b),
        ));
    }
    drop(server);
}

#[test]
fn an_overlapped_restart_counts_as_a_handover() {
    let env = Setup::new("handover.py")
        .arg("ready")
        .arg("0.2")
        .raw("health", "notify", "true")
        .set("health", "start_timeout", "10s")
        .raw("restart", "overlap", "true")
        .build();
    let _sup = env.spawn();
    let first = env.wait_value("the first child ready", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["state"] == "running" && v["child"]["ready"] == true)
            .then(|| v["child"]["pid"].as_i64())
            .flatten()
    });
    let out = env.cli_with(&env.config, &["restart"], secs(60.0));
    assert_eq!(out.code, Some(0), "{out}");
    let ok = "supervisor_handovers_total{result=\"ok\"}";
    let text = env.wait_value("handovers_total{ok} 1", DEADLINE, || {
        let out = env.cli(&["status", "--format", "prometheus"]);
        (value(&out.stdout, ok) == Some(1.0)).then_some(out.stdout)
    });
    assert_eq!(
        value(&text, "supervisor_handovers_total{result=\"failed\"}"),
        Some(0.0),
        "{text}"
    );
    assert_ne!(env.child_pid(), Some(first as i32));
}
