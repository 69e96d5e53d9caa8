//! The alert hooks shipped in `examples/alerts/`, run for real against a
//! local HTTP receiver on 127.0.0.1 (never the network): the webhook's JSON
//! and Telegram's form fields carry the message exactly, quotes,
//! backslashes, newlines and all; a refused post is a non-zero exit with
//! the reason; secrets never have to sit in the config. The macOS one runs
//! against a stand-in `osascript` that records its arguments. Last, a crash
//! loop reaches the receiver through the real supervisor.
//!
//! The hooks need `curl` (on every Mac, and on the CI's Linux images): a
//! missing one fails the test saying so.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A message with everything a careless hook gets wrong.
const TRICKY: &str =
    "127.0.0.1:8420: child 42 \"crashed\" \\ twice\tat once\r\nand C:\\path ünïcødé €";

fn hook(name: &str) -> String {
    format!("{}/examples/alerts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// A tiny HTTP server on 127.0.0.1 that records every request and answers
/// each with `status`.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (got, stop) = (got.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut conn) = conn else { continue };
                    if let Some(req) = serve_one(&mut conn, status) {
                        got.lock().unwrap().push(req);
                    }
                }
            })
        };
        Receiver {
            addr,
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read one request (headers, then `Content-Length` bytes) and answer it.
fn serve_one(conn: &mut TcpStream, status: u16) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let answer = match status {
        200 => r#"{"ok":true}"#,
        _ => r#"{"ok":false,"description":"Bad Request: chat not found"}"#,
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    Some(Request {
        method,
        path,
        content_type: header("content-type").unwrap_or_default(),
        body,
    })
}

/// How a hook ran.
struct Ran {
    code: Option<i32>,
    stderr: String,
    what: String,
}

/// Run a hook with `vars` (and nothing else of ours: the test's own
/// SUPERVISOR_*, ALERT_* and TELEGRAM_* are removed), PATH prefixed by
/// `path_first` if given, within a deadline.
fn run_hook(argv: &[&str], vars: &[(&str, &str)], path_first: Option<&Path>) -> Ran {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if ["SUPERVISOR_", "ALERT_", "TELEGRAM_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(k);
        }
    }
    if let Some(dir) = path_first {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    cmd.envs(vars.iter().copied());
    let what = format!("{argv:?} with {vars:?}");
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(o)) => Ran {
            code: o.status.code(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            what,
        },
        Ok(Err(e)) => panic!("waiting for {what}: {e}"),
        Err(_) => {
            kill(pid, libc::SIGKILL);
            panic!("{what} still runs after {DEADLINE:?}; killed");
        }
    }
}

fn need_curl() {
    let ok = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the alert examples need curl on PATH (apt-get install curl; every Mac has it)"
    );
}

/// `application/x-www-form-urlencoded` into (name, value) pairs.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).expect("percent escape"));
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).expect("UTF-8 form value")
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Wait (with the deadline) until the receiver has `n` requests.
fn wait_requests(rx: &Receiver, n: usize) -> Vec<Request> {
    let start = Instant::now();
    while rx.requests().len() < n {
        assert!(
            start.elapsed() < DEADLINE,
            "the receiver got {} of {n} requests within {DEADLINE:?}",
            rx.requests().len()
        );
        thread::sleep(POLL);
    }
    rx.requests()
}

#[test]
fn the_webhook_posts_the_message_as_json_text() {
    need_curl();
    let rx = Receiver::start(200);
    let url = rx.url("/services/T000/B000/secret");
    let ran = run_hook(
        &[&hook("webhook.sh")],
        &[
            ("ALERT_WEBHOOK_URL", &url),
            ("ALERT_TITLE", "host \"a\""),
            ("SUPERVISOR_EVENT", "crash-loop"),
            // A control character JSON forbids raw: dropped.
            ("SUPERVISOR_MESSAGE", &format!("{TRICKY}\u{1}!")),
        ],
        None,
    );
    assert_eq!(ran.code, Some(0), "{}: stderr: {}", ran.what, ran.stderr);
    let got = wait_requests(&rx, 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/services/T000/B000/secret");
    assert_eq!(r.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)));
    assert_eq!(
        v,
        serde_json::json!({ "text": format!("host \"a\": {TRICKY}!") }),
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn the_webhook_fails_loudly() {
    need_curl();
    // Refused by the receiver: non-zero, with the status and its reason.
    let rx = Receiver::start(500);
    let ran = run_hook(
        &[&hook("webhook.sh")],
        &[
            ("ALERT_WEBHOOK_URL", &rx.url("/hook")),
            ("SUPERVISOR_MESSAGE", "m"),
        ],
        None,
    );
    assert_eq!(ran.code, Some(1), "{}: {}", ran.what, ran.stderr);
    assert!(
        ran.stderr.contains("500") && ran.stderr.contains("chat not found"),
        "want the status and the answer in stderr: {}",
        ran.stderr
    );
    // Nobody listening.
    let closed = free_port();
    let ran = run_hook(
        &[&hook("webhook.sh")],
        &[
            ("ALERT_WEBHOOK_URL", &format!("http://127.0.0.1:{closed}/")),
            ("SUPERVISOR_MESSAGE", "m"),
        ],
        None,
    );
    assert_eq!(ran.code, Some(1), "{}: {}", ran.what, ran.stderr);
    // No URL: says so, sends nothing.
    let ran = run_hook(&[&hook("webhook.sh")], &[("SUPERVISOR_MESSAGE", "m")], None);
    assert_eq!(ran.code, Some(2), "{}: {}", ran.what, ran.stderr);
    assert!(ran.stderr.contains("ALERT_WEBHOOK_URL"), "{}", ran.stderr);
}

#[test]
fn telegram_sends_the_text_as_a_form_field() {
    need_curl();
    let rx = Receiver::start(200);
    let ran = run_hook(
        &[&hook("telegram.sh")],
        &[
            ("TELEGRAM_API", &rx.url("")),
            ("TELEGRAM_BOT_TOKEN", "123456:ABC-def_GHI"),
            ("TELEGRAM_CHAT_ID", "-1001234567890"),
            ("ALERT_TITLE", "mac-mini"),
            ("SUPERVISOR_MESSAGE", TRICKY),
        ],
        None,
    );
    assert_eq!(ran.code, Some(0), "{}: {}", ran.what, ran.stderr);
    let got = wait_requests(&rx, 1);
    let r = &got[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/bot123456:ABC-def_GHI/sendMessage")
    );
    assert_eq!(r.content_type, "application/x-www-form-urlencoded");
    let fields = form_fields(&r.body);
    assert_eq!(
        fields,
        vec![
            ("chat_id".to_owned(), "-1001234567890".to_owned()),
            ("text".to_owned(), format!("mac-mini: {TRICKY}")),
        ],
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn telegram_fails_loudly() {
    need_curl();
    let rx = Receiver::start(400);
    let vars = |api: String| {
        vec![
            ("TELEGRAM_API".to_owned(), api),
            ("TELEGRAM_BOT_TOKEN".to_owned(), "1:x".to_owned()),
            ("TELEGRAM_CHAT_ID".to_owned(), "7".to_owned()),
            ("SUPERVISOR_MESSAGE".to_owned(), "m".to_owned()),
        ]
    };
    let v = vars(rx.url(""));
    let v: Vec<(&str, &str)> = v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let ran = run_hook(&[&hook("telegram.sh")], &v, None);
    assert_eq!(ran.code, Some(1), "{}: {}", ran.what, ran.stderr);
    assert!(
        ran.stderr.contains("chat not found"),
        "want Telegram's reason in stderr: {}",
        ran.stderr
    );
    // Without the chat id: says so, sends nothing.
    let before = rx.requests().len();
    let ran = run_hook(
        &[&hook("telegram.sh")],
        &[("TELEGRAM_API", &rx.url("")), ("TELEGRAM_BOT_TOKEN", "1:x")],
        None,
    );
    assert_eq!(ran.code, Some(2), "{}: {}", ran.what, ran.stderr);
    assert!(ran.stderr.contains("TELEGRAM_CHAT_ID"), "{}", ran.stderr);
    assert_eq!(rx.requests().len(), before, "nothing should have been sent");
}

#[test]
fn the_macos_notification_passes_the_texts_as_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("args");
    // A stand-in osascript: each argument, NUL-terminated.
    let stub = dir.path().join("osascript");
    fs::write(
        &stub,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > '{}'\n",
            record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    let ran = run_hook(
        &[&hook("macos-notification.sh")],
        &[
            ("SUPERVISOR_EVENT", "port-busy"),
            ("SUPERVISOR_MESSAGE", TRICKY),
        ],
        Some(dir.path()),
    );
    assert_eq!(ran.code, Some(0), "{}: {}", ran.what, ran.stderr);
    let args = fs::read(&record).expect("osascript was not run");
    let args: Vec<String> = args
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // The script is fixed text; the texts come after it, untouched.
    assert_eq!(
        args,
        vec![
            "-e",
            "on run argv",
            "-e",
            "display notification (item 2 of argv) with title (item 1 of argv)",
            "-e",
            "end run",
            "supervisor: port-busy",
            TRICKY,
        ]
    );
}

/// A 0600 file of assignments for `with-env.sh`.
fn env_file(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let path = dir.join("alerts.env");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn with_env_exports_a_private_file_and_refuses_a_shared_one() {
    need_curl();
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(200);
    let text = format!(
        "ALERT_WEBHOOK_URL='{}'\nALERT_TITLE='from the file'\n",
        rx.url("/from-file")
    );
    for mode in [0o640, 0o604, 0o620, 0o602] {
        let file = env_file(dir.path(), &text, mode);
        let ran = run_hook(
            &[
                &hook("with-env.sh"),
                file.to_str().unwrap(),
                &hook("webhook.sh"),
            ],
            &[("SUPERVISOR_MESSAGE", "m")],
            None,
        );
        assert_eq!(
            ran.code,
            Some(2),
            "mode {mode:o}: {}: {}",
            ran.what,
            ran.stderr
        );
        assert!(ran.stderr.contains("chmod 600"), "{}", ran.stderr);
    }
    assert!(rx.requests().is_empty(), "a refused file sent something");
    let file = env_file(dir.path(), &text, 0o600);
    let ran = run_hook(
        &[
            &hook("with-env.sh"),
            file.to_str().unwrap(),
            &hook("webhook.sh"),
        ],
        &[("SUPERVISOR_MESSAGE", "m")],
        None,
    );
    assert_eq!(ran.code, Some(0), "{}: {}", ran.what, ran.stderr);
    let got = wait_requests(&rx, 1);
    assert_eq!(got[0].path, "/from-file");
    let v: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(v["text"], "from the file: m");
}

#[test]
fn a_crash_loop_reaches_the_webhook_through_the_supervisor() {
    need_curl();
    let rx = Receiver::start(200);
    let mut env = Setup::new("crash.py").build();
    let file = env_file(
        &env.dir,
        &format!(
            "ALERT_WEBHOOK_URL='{}'\nALERT_TITLE=test\n",
            rx.url("/hook")
        ),
        0o600,
    );
    let text = format!(
        "{}\n[alerts]\ncommand = [{:?}, {:?}, {:?}]\ncrash_loop_after = 2\n",
        env.config_text,
        hook("with-env.sh"),
        file.display().to_string(),
        hook("webhook.sh"),
    );
    fs::write(&env.config, &text).unwrap();
    env.config_text = text;
    let _sup = env.spawn();
    let start = Instant::now();
    while rx.requests().is_empty() {
        if start.elapsed() > DEADLINE {
            env.fail(format!("no post reached the receiver within {DEADLINE:?}"));
        }
        thread::sleep(POLL);
    }
    let r = &rx.requests()[0];
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| env.fail(format!("not JSON ({e}): {:?}", r.body)));
    let text = v["text"].as_str().unwrap_or_default();
    if !(text.starts_with("test: ")
        && text.contains("crash loop")
        && text.contains(&env.addr().to_string()))
    {
        env.fail(format!("an unhelpful alert text: {text:?}"));
    }
    // The hook ended well, and status says so.
    env.wait_for("status to show how the hook ended", DEADLINE, || {
        env.status_json().1["alerts"]["last_result"] == "exited with code 0"
    });
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop failed: {out}"));
    }
}
