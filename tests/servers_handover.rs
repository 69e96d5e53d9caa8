//! Overlapped restarts (`[restart] overlap`, readiness by `[health] http`)
//! of real servers under load: a Starlette app (what FastAPI is built on)
//! on uvicorn `--fd 3`, and a WSGI app on gunicorn (2 threaded workers,
//! socket activation). Each takes a second to import, as an application
//! loading its models does. Five restarts under a client loop with slow
//! requests mixed in: not one request fails (gunicorn), and none but those
//! uvicorn's own shutdown drops unread (below).
//!
//! uvicorn's graceful shutdown (`Server.shutdown` → each connection's
//! `shutdown()`) closes every connection that has no request cycle yet:
//! `if self.cycle is None or self.cycle.response_complete:
//! self.transport.close()` (uvicorn 0.54, `protocols/http/h11_impl.py`
//! line 340, `httptools_impl.py` line 353). A connection it accepted in the
//! last turn of its event loop before the stop signal's shutdown ran, whose
//! request is still in the kernel's buffer, unread, is closed: the client
//! gets no answer (or a reset, as data was left unread). Upstream knows it:
//! Kludex/uvicorn#2757 (open; the residual of its own rolling restart,
//! "connections the old worker had accepted but not yet read"). Seen here
//! with uvicorn alone, no supervisor: two uvicorns on one socket, the new
//! one started and answering before the old one gets SIGTERM, a client
//! connecting back to back: 4 such failures in 80 handovers (0 to 2 a
//! run), none of a request the app was handed; with that branch changed
//! to read the pending request first, 0 in 70. Nothing outside uvicorn can avoid it:
//! both children accept from one shared socket, so the old one accepts
//! until its own shutdown closes its listener, and nothing on Linux makes
//! one holder of a shared socket stop accepting before another. So the
//! uvicorn test tolerates exactly that failure: a connection answered with
//! not one byte whose request the app never saw (the app records each
//! request's id the moment it is handed it), at most one per client loop
//! per restart, each counted and reported; everything else fails it.
//! `uvicorn_closes_a_connection_it_has_accepted_unread_at_shutdown` pins
//! the branch: once uvicorn answers there, drop the tolerance. Through
//! `examples/uvicorn_handover.py` (the README's launcher, which changes
//! that branch) the same connection is answered, and five restarts under
//! load are held to no failure at all.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const RESTARTS: usize = 5;

fn overlap_env(app: &str, argv: impl Fn(&Env) -> Vec<String>) -> Env {
    let mut env = Setup::new("serve.py")
        .env("PYTHONUNBUFFERED", "1")
        .set("health", "http", "/health")
        .set("health", "interval", "1s")
        // A probe's answer may wait behind the load this test makes (and,
        // on a busy 2-core machine, behind the other Python server's start):
        // liveness is not what is tested here.
        .set("health", "timeout", "10s")
        .set("health", "start_timeout", "30s")
        .set("child", "stop_timeout", "15s")
        .raw("restart", "overlap", "true")
        .build();
    let src = format!("{}/tests/apps/{app}", env!("CARGO_MANIFEST_DIR"));
    fs::copy(&src, env.path(app)).unwrap();
    let argv = argv(&env);
    env.set_command(&argv);
    env
}

/// What one client loop saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    ok: usize,
    refused: usize,
    /// Failed requests: (id, what happened, whether any byte came back).
    failed: Vec<(String, String, bool)>,
}

/// Numbered requests (`path` plus `id=<tag><n>`) one after another from a
/// thread, `pause` between them, bounded in count and time.
struct Loop(Background<Seen>);

impl Loop {
    fn start(addr: SocketAddr, path: &'static str, tag: &'static str, pause: Duration) -> Loop {
        Loop(Background::start(move |s| {
            let mut t = Seen::default();
            let start = Instant::now();
            let sep = if path.contains('?') { '&' } else { '?' };
            for n in 0..100_000 {
                if s.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(120) {
                    break;
                }
                let id = format!("{tag}{n}");
                match get(addr, &format!("{path}{sep}id={id}")) {
                    Ok(answer) if whole_200(&answer) => t.ok += 1,
                    Ok(answer) => t
                        .failed
                        .push((id, format!("{answer:?}"), !answer.is_empty())),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => t.refused += 1,
                    Err(e) => t.failed.push((id, format!("{:?}: {e}", e.kind()), false)),
                }
                thread::sleep(pause);
            }
            t
        }))
    }

    fn finish(self) -> Seen {
        self.0.finish()
    }
}

/// One HTTP/1.0 GET in one write; the whole answer, as read to EOF (an
/// error only when the connection failed before any byte came back or
/// was reset).
fn get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let timeout = secs(30.0);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A 200 with a body, all of it (a server killed mid-answer closes after
/// the head: a cut answer is a failure).
fn whole_200(answer: &str) -> bool {
    let Some((head, body)) = answer.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    head.split_whitespace().nth(1) == Some("200")
        && !body.is_empty()
        && length.is_none_or(|n| body.len() >= n)
}

/// Failed requests that are uvicorn's shutdown closing a connection it had
/// not read (module doc): not one byte back, and the app never saw its id.
fn unread(seen: &Seen, app_saw: &BTreeSet<String>) -> usize {
    seen.failed
        .iter()
        .filter(|(id, _, answered)| !answered && !app_saw.contains(id))
        .count()
}

/// One server under load at a time: two client loops against two Python
/// servers starting side by side would measure the machine, not us.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Five overlapped restarts under load. `unread_per_loop`: how many
/// requests each client loop may lose to the old child closing them unread
/// (module doc), per restart; any other failure fails the test.
fn five_restarts(env: &Env, slow_path: &'static str, unread_per_restart: usize) {
    let first = env.wait_value("the first child ready", secs(60.0), || {
        let (_, v) = env.status_json();
        (v["state"] == "running" && v["child"]["ready"] == true)
            .then(|| v["child"]["pid"].as_i64())
            .flatten()
    });
    let quick = Loop::start(env.addr(), "/", "q", Duration::from_millis(1));
    let slow = Loop::start(env.addr(), slow_path, "s", Duration::from_millis(100));
    let mut children = vec![first as i32];
    for _ in 0..RESTARTS {
        let out = env.cli_with(&env.config, &["restart"], secs(90.0));
        if out.code != Some(0) {
            env.fail(format!("restart failed:\n{out}"));
        }
        let pid = env.child_pid().unwrap_or(0);
        if children.contains(&pid) {
            env.fail(format!(
                "no new child after a restart: {children:?} then {pid}"
            ));
        }
        children.push(pid);
        thread::sleep(Duration::from_millis(300));
    }
    let quick = quick.finish();
    let slow = slow.finish();
    let app_saw: BTreeSet<String> = fs::read_to_string(env.path("seen.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let allowed = unread_per_restart * RESTARTS;
    for (name, seen) in [("quick", &quick), ("slow", &slow)] {
        let unread = unread(seen, &app_saw);
        eprintln!(
            "{name}: {} answered, refused {}, failed {} ({unread} closed unread by the old \
             child's shutdown): {:?}",
            seen.ok,
            seen.refused,
            seen.failed.len(),
            seen.failed
        );
        if seen.refused != 0 || seen.failed.len() > unread.min(allowed) {
            env.fail(format!(
                "{name} requests failed: refused {}, failed {:?} (of which {unread} closed \
                 unread, {allowed} allowed)",
                seen.refused, seen.failed
            ));
        }
    }
    if quick.ok < 50 || slow.ok < 5 {
        env.fail(format!(
            "too few answers to tell: {} quick, {} slow",
            quick.ok, slow.ok
        ));
    }
    let log = fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default();
    if log.matches("handover done").count() != RESTARTS {
        env.fail("want five completed handovers in the log");
    }
}

/// The README's launcher for uvicorn under `[restart] overlap`: uvicorn
/// with its shutdown answering what it accepted before the stop.
fn launcher() -> String {
    format!(
        "{}/examples/uvicorn_handover.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn uvicorn_argv(env: &Env) -> Vec<String> {
    uvicorn_argv_by(env, &["-m", "uvicorn"])
}

fn launcher_argv(env: &Env) -> Vec<String> {
    uvicorn_argv_by(env, &[&launcher()])
}

/// uvicorn on fd 3, started as `python <how...>`.
fn uvicorn_argv_by(env: &Env, how: &[&str]) -> Vec<String> {
    let python = venv_bin("python");
    [python.as_str()]
        .into_iter()
        .chain(how.iter().copied())
        .chain([
            "--fd",
            "3",
            "--timeout-graceful-shutdown",
            "10",
            "--app-dir",
            &env.dir_s,
            "handover_asgi:app",
        ])
        .map(str::to_owned)
        .collect()
}

#[test]
fn uvicorn_restarts_five_times_with_overlap_and_no_request_fails() {
    let _turn = one_at_a_time();
    let env = overlap_env("handover_asgi.py", uvicorn_argv);
    let _sup = env.spawn();
    // At most one request per client loop per restart closed unread by
    // uvicorn's own shutdown (module doc); nothing else.
    five_restarts(&env, "/slow?s=1", 1);
}

/// The same through `examples/uvicorn_handover.py`: not one request fails.
#[test]
fn uvicorn_through_the_handover_launcher_restarts_five_times_and_no_request_fails() {
    let _turn = one_at_a_time();
    let env = overlap_env("handover_asgi.py", launcher_argv);
    let _sup = env.spawn();
    five_restarts(&env, "/slow?s=1", 0);
}

#[test]
fn gunicorn_restarts_five_times_with_overlap_and_no_request_fails() {
    let _turn = one_at_a_time();
    // --no-control-socket: gunicorn 24+ would otherwise create
    // ~/.gunicorn/gunicorn.ctl, shared by every test run on the machine.
    let env = overlap_env("handover_wsgi.py", |env| {
        [
            venv_bin("gunicorn").as_str(),
            "--workers",
            "2",
            "--threads",
            "4",
            "--graceful-timeout",
            "10",
            "--no-control-socket",
            "--chdir",
            &env.dir_s,
            "handover_wsgi:app",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    let _sup = env.spawn();
    five_restarts(&env, "/slow", 0);
}

/// The tolerance above, pinned: uvicorn alone (no supervisor) closes a
/// connection it has accepted but has no request of when its graceful
/// shutdown begins (Kludex/uvicorn#2757's ordering, made deterministic
/// with conditions instead of sleeps). When this starts failing, uvicorn
/// answers such connections: drop the tolerance in the test above.
#[test]
fn uvicorn_closes_a_connection_it_has_accepted_unread_at_shutdown() {
    match accepted_unread_at_shutdown(&["-m", "uvicorn"], "stock") {
        Ok(None) => {}
        Ok(Some(answer)) => panic!(
            "uvicorn answered a connection it had accepted before its shutdown ({answer:?}): \
             Kludex/uvicorn#2757 is fixed in this uvicorn; drop the tolerance in \
             uvicorn_restarts_five_times_with_overlap_and_no_request_fails"
        ),
        Err(why) => panic!("{why}"),
    }
}

/// The same connection through `examples/uvicorn_handover.py`: answered
/// in full, and the server still exits.
#[test]
fn the_handover_launcher_answers_a_connection_uvicorn_accepted_before_its_shutdown() {
    match accepted_unread_at_shutdown(&[&launcher()], "launcher") {
        Ok(Some(answer))
            if whole_200(&answer)
                && answer.split_once("\r\n\r\n").is_some_and(|(head, _)| {
                    head.to_ascii_lowercase().contains("\r\nconnection: close")
                }) => {}
        Ok(Some(answer)) => panic!("not a whole answer that closes: {answer:?}"),
        Ok(None) => panic!("closed unread, as stock uvicorn does"),
        Err(why) => panic!("{why}"),
    }
}

/// uvicorn alone (`python <how...>`, no supervisor): a connection it has
/// accepted with no request yet when SIGTERM comes; then its request.
/// Ok(None): closed unread; Ok(Some(answer)): answered; Err: the
/// experiment itself failed. The server must exit within its deadline
/// either way.
fn accepted_unread_at_shutdown(how: &[&str], tag: &str) -> Result<Option<String>, String> {
    let _turn = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("sv-uvicorn-2757-{tag}-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::copy(
        format!("{}/tests/apps/handover_asgi.py", env!("CARGO_MANIFEST_DIR")),
        dir.join("handover_asgi.py"),
    )
    .unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = Command::new(venv_bin("python"))
        .args(how)
        .args(["--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--app-dir")
        .arg(&dir)
        .args(["--log-level", "info", "handover_asgi:app"])
        .env("APP_IMPORT_SECONDS", "0")
        .stdin(Stdio::null())
        // Its access log (stdout) is not the test's output.
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("uvicorn.log")).map_err(|e| e.to_string())?)
        .spawn()
        .expect("start uvicorn");
    let pid = server.id() as i32;
    // Ok(None): closed unread, as the tolerance says; Ok(Some(answer)):
    // answered; Err: the experiment itself failed.
    let result = (|| -> Result<Option<String>, String> {
        wait_until(secs(30.0), || {
            get(addr, "/").is_ok_and(|a| a.starts_with("HTTP/1.1 200"))
        })
        .map_err(|_| "uvicorn never answered".to_string())?;
        // Connected, nothing sent yet. A whole request on a second
        // connection answered after it means the first was accepted (one
        // event loop accepts in order): it is a connection of uvicorn's
        // with no request cycle.
        let mut first = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let answer = get(addr, "/").map_err(|e| e.to_string())?;
        if !answer.starts_with("HTTP/1.1 200") {
            return Err(format!("second connection: {answer:?}"));
        }
        kill(pid, libc::SIGTERM);
        // Stock uvicorn's shutdown closes the first connection at once:
        // EOF without a byte. One that waits for its request keeps it open
        // while it says (its log) that it waits for connections to close.
        first
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + secs(20.0);
        let mut buf = [0u8; 1024];
        loop {
            match first.read(&mut buf) {
                Ok(0) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Ok(n) => return Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
                Err(_) => {} // still open
            }
            let said = fs::read_to_string(dir.join("uvicorn.log")).unwrap_or_default();
            if said.contains("Waiting for connections to close") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{tag}: neither closed nor waiting 20 s after SIGTERM:\n{said}"
                ));
            }
        }
        first
            .set_read_timeout(Some(secs(20.0)))
            .map_err(|e| e.to_string())?;
        // The request sent now is answered only by a uvicorn that waits
        // for it. HTTP/1.1, as a keep-alive client sends it: the answer
        // must say `Connection: close` itself (to an HTTP/1.0 request h11
        // says it anyway), or the client may send its next request on a
        // connection being closed.
        let _ = first.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
        let mut rest = Vec::new();
        let _ = first.read_to_end(&mut rest);
        Ok((!rest.is_empty()).then(|| String::from_utf8_lossy(&rest).into_owned()))
    })();
    // Its graceful shutdown ends once nothing is left to answer.
    let exited = wait_until(secs(30.0), || server.try_wait().ok().flatten().is_some()).is_ok();
    if !exited {
        kill(pid, libc::SIGKILL);
    }
    let _ = server.wait();
    let _ = fs::remove_dir_all(&dir);
    match exited {
        true => result,
        false => Err(format!(
            "{tag} uvicorn did not exit within 30 s of SIGTERM ({result:?})"
        )),
    }
}
