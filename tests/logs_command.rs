//! `supervisor logs` end to end (issue 13): the last lines of `child.log`
//! and `supervisor.log`, spilling into the rotated files; `-f` across a size
//! rotation, a `reopen-logs` after the log was renamed away (logrotate
//! style, with and without an empty new file), `copytruncate`, and a
//! deleted log the supervisor recreates; a missing or unreadable log (exit
//! 4), an invalid config (78), and a reader that leaves early (exit 0).
//!
//! The child is `tests/children/numbers.py` in `serve` mode: it prints lines
//! numbered `n 0000042` only when asked, never repeating a number, so a test
//! knows exactly which lines exist and can tell any line lost, repeated or
//! out of order. The follower is paused with SIGSTOP where a test needs
//! several things to happen between two of its looks; nothing waits on a
//! fixed sleep.

mod common;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_default()
}

/// The complete lines of `data` (without their `\n`); a last piece with no
/// newline yet is left out.
fn complete_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    v.pop();
    v
}

/// The number of a `TS out[PID]: n 0000042 xxx` line.
fn number(line: &[u8]) -> Option<u64> {
    let sp = line.iter().position(|&b| b == b' ')?;
    humantime::parse_rfc3339(std::str::from_utf8(&line[..sp]).ok()?).ok()?;
    let at = line.windows(5).position(|w| w == b"]: n ")? + 5;
    std::str::from_utf8(line.get(at..at + 7)?)
        .ok()?
        .parse()
        .ok()
}

/// The numbers of the numbered lines in `data`, in order.
fn numbers(data: &[u8]) -> Vec<u64> {
    complete_lines(data)
        .into_iter()
        .filter_map(number)
        .collect()
}

/// The last `n` lines of `data`, the plain way (a last line without its
/// newline counts).
fn last_lines(data: &[u8], n: usize) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
    let from = lines.len().saturating_sub(n);
    lines.drain(..from);
    lines.concat()
}

/// `NAME.k`, ..., `NAME.1`, `NAME`: every file of one log, oldest first.
fn oldest_first(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (1..50)
        .rev()
        .map(|k| dir.join(format!("{name}.{k}")))
        .filter(|p| p.exists())
        .collect();
    v.push(dir.join(name));
    v
}

/// Sends one command line to the child and returns the next number it
/// will print.
fn ask(env: &Env, cmd: &str) -> u64 {
    let reply = exchange(env.addr(), cmd, Duration::from_secs(10));
    let next = reply
        .as_ref()
        .ok()
        .and_then(|r| r.trim().split_once(' ')?.1.parse().ok());
    next.unwrap_or_else(|| env.fail(format!("child answered {cmd:?} with {reply:?}")))
}

/// Asks for `count` lines and waits until they are all in `child.log`.
fn print_lines(env: &Env, count: u64, width: u64) -> u64 {
    let next = ask(env, &format!("print {count} {width}"));
    let log = env.log_dir.join("child.log");
    env.wait_for(&format!("line {} in child.log", next - 1), DEADLINE, || {
        numbers(&read(&log)).last() == Some(&(next - 1))
    });
    next
}

/// `supervisor stop`, which must succeed.
fn stop(env: &Env, sup: &Supervisor) {
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop failed\n{out}"));
    }
    sup.wait_exit(DEADLINE);
}

/// A command's exit status and raw output.
struct Raw {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// `supervisor --config CONFIG ARGS` to completion with a deadline, keeping
/// stdout as bytes.
fn run_raw(env: &Env, args: &[&str]) -> Raw {
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| env.fail(format!("cannot spawn logs {args:?}: {e}")));
    wait_output(env, child, &format!("{args:?}"))
}

/// Copies what a pipe delivers into a shared buffer until end of file.
fn pump(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let to = buf.clone();
    thread::spawn(move || {
        let mut chunk = [0u8; 65536];
        while let Ok(n @ 1..) = from.read(&mut chunk) {
            to.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

/// One `supervisor logs -f ...`, its output collected by threads; killed by
/// pid if the test ends before stopping it.
struct Follow {
    child: Child,
    pid: i32,
    args: Vec<String>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Follow {
    fn start(env: &Env, args: &[&str]) -> Follow {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&env.config)
            .args(["logs", "-f"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| env.fail(format!("cannot spawn logs -f: {e}")));
        let out = pump(child.stdout.take().unwrap());
        let err = pump(child.stderr.take().unwrap());
        Follow {
            pid: child.id() as i32,
            child,
            args: args.iter().map(|s| s.to_string()).collect(),
            out,
            err,
        }
    }

    fn output(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    fn numbers(&self) -> Vec<u64> {
        numbers(&self.output())
    }

    /// What it printed (the end of it) and said, for a failure message.
    fn describe(&self) -> String {
        let out = self.output();
        let from = out.len().saturating_sub(3000);
        format!(
            "=== logs -f {:?} (pid {}): {} bytes printed, numbers {}\n... {}\n=== its stderr\n{}",
            self.args,
            self.pid,
            out.len(),
            summary(&numbers(&out)),
            String::from_utf8_lossy(&out[from..]),
            String::from_utf8_lossy(&self.err.lock().unwrap()),
        )
    }

    /// Waits until it has printed line `last`.
    fn wait_for(&self, env: &Env, last: u64) {
        if wait_until(DEADLINE, || self.numbers().contains(&last)).is_err() {
            env.fail(format!(
                "logs -f did not print line {last} within {DEADLINE:?}\n{}",
                self.describe()
            ));
        }
    }

    /// Every number in `from..next` printed exactly once, in order, and
    /// nothing else numbered.
    fn assert_exactly(&self, env: &Env, from: u64, next: u64) {
        let seen = self.numbers();
        if seen != (from..next).collect::<Vec<_>>() {
            env.fail(format!(
                "logs -f must print lines {from}..{next} once each, in order\n{}",
                self.describe()
            ));
        }
    }

    fn pause(&self) {
        kill(self.pid, libc::SIGSTOP);
    }

    fn resume(&self) {
        kill(self.pid, libc::SIGCONT);
    }

    /// Sends `sig` and waits for the exit, which must be 0 with nothing on
    /// stderr but `expect_stderr` (when given).
    fn stop(&mut self, env: &Env, sig: i32, expect_stderr: Option<&str>) {
        kill(self.pid, sig);
        let start = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if start.elapsed() < DEADLINE => thread::sleep(POLL),
                _ => env.fail(format!(
                    "logs -f did not exit within {DEADLINE:?} of signal {sig}\n{}",
                    self.describe()
                )),
            }
        };
        let err = String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned();
        let err_ok = match expect_stderr {
            None => err.is_empty(),
            Some(want) => err.contains(want),
        };
        if status.code() != Some(0) || !err_ok {
            env.fail(format!(
                "logs -f exited with {status} after signal {sig} (want 0, stderr {expect_stderr:?})\n{}",
                self.describe()
            ));
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.pid, libc::SIGCONT);
            kill(self.pid, libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// "N numbers: a..b" or where the sequence first breaks.
fn summary(seen: &[u64]) -> String {
    let Some(&first) = seen.first() else {
        return "none".into();
    };
    let brk = seen.windows(2).position(|w| w[1] != w[0] + 1);
    match brk {
        None => format!(
            "{} in order: {first}..={}",
            seen.len(),
            seen[seen.len() - 1]
        ),
        Some(i) => format!(
            "{} from {first}, in order up to {} then {} (at index {})",
            seen.len(),
            seen[i],
            seen[i + 1],
            i + 1
        ),
    }
}

/// With a numbers.py child serving (none of its lines printed yet): line
/// 0 printed, and a `logs -f -n 1` that has shown it, so it follows from
/// there.
fn followed(env: &Env) -> Follow {
    env.wait_child(&[]);
    let next = print_lines(env, 1, 60);
    assert_eq!(next, 1);
    let f = Follow::start(env, &["-n", "1"]);
    f.wait_for(env, 0);
    f
}

// ---------------------------------------------------------------- tests

#[test]
fn last_lines_of_child_log_and_supervisor_log() {
    let env = Setup::new("numbers.py").arg("serve").build();
    let sup = env.spawn();
    env.wait_child(&[]);
    let next = print_lines(&env, 300, 40);
    let child_log = read(&env.log_dir.join("child.log"));

    for (args, n) in [
        (&["logs", "-n", "5"][..], 5),
        (&["logs"][..], 50),
        (&["logs", "--lines", "1"][..], 1),
        (&["logs", "-n", "0"][..], 0),
    ] {
        let out = run_raw(&env, args);
        let want = last_lines(&child_log, n);
        if out.status.code() != Some(0) || out.stdout != want || !out.stderr.is_empty() {
            env.fail(format!(
                "{args:?}: exit {}, stderr {:?}; printed {:?}, want the last {n} lines of child.log {:?}",
                out.status,
                out.stderr,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&want)
            ));
        }
    }
    let five = numbers(&run_raw(&env, &["logs", "-n", "5"]).stdout);
    assert_eq!(five, (next - 5..next).collect::<Vec<_>>());

    let sup_log = env.log_dir.join("supervisor.log");
    let out = run_raw(&env, &["logs", "--supervisor", "-n", "3"]);
    let want = last_lines(&read(&sup_log), 3);
    if out.status.code() != Some(0) || out.stdout != want || want.is_empty() {
        env.fail(format!(
            "logs --supervisor -n 3: exit {}, printed {:?}, want {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&want)
        ));
    }
    stop(&env, &sup);
}

#[test]
fn more_lines_than_the_current_file_has_come_from_the_rotated_files() {
    let env = Setup::new("numbers.py")
        .arg("serve")
        .set("log", "max_bytes", "4KiB")
        .raw("log", "max_files", "3")
        .build();
    let sup = env.spawn();
    env.wait_child(&[]);
    // ~100 bytes a line: about 40 lines a file, 5 rotations.
    print_lines(&env, 200, 60);
    stop(&env, &sup);

    let files = oldest_first(&env.log_dir, "child.log");
    let all: Vec<u8> = files.iter().flat_map(|p| read(p)).collect();
    let current = complete_lines(&read(&env.log_dir.join("child.log"))).len();
    if files.len() != 4 || current >= 60 {
        env.fail(format!(
            "want child.log (under 60 lines, has {current}) and 3 rotated files, got {files:?}"
        ));
    }
    for n in [current, current + 1, current + 50, 100_000] {
        let out = run_raw(&env, &["logs", "-n", &n.to_string()]);
        let want = last_lines(&all, n);
        if out.status.code() != Some(0) || out.stdout != want {
            env.fail(format!(
                "logs -n {n}: exit {}, printed {} lines {}, want {} lines {}",
                out.status,
                complete_lines(&out.stdout).len(),
                summary(&numbers(&out.stdout)),
                complete_lines(&want).len(),
                summary(&numbers(&want)),
            ));
        }
    }
}

#[test]
fn follow_across_size_rotation() {
    let env = Setup::new("numbers.py")
        .arg("serve")
        .set("log", "max_bytes", "4KiB")
        .build();
    let _sup = env.spawn();
    let mut f = followed(&env);
    // About one rotation every other round, each seen as it happens.
    for _ in 0..8 {
        let next = print_lines(&env, 25, 60);
        f.wait_for(&env, next - 1);
    }
    // Three rotations while the follower is not looking: it must walk
    // child.log.3 -> .2 -> .1 -> child.log.
    f.pause();
    let next = print_lines(&env, 120, 60);
    f.resume();
    f.wait_for(&env, next - 1);
    f.assert_exactly(&env, 0, next);
    if !env.log_dir.join("child.log.4").exists() {
        env.fail("expected at least four rotations (child.log.4)");
    }
    f.stop(&env, libc::SIGTERM, None);
}

#[test]
fn follow_across_reopen_logs_after_the_log_was_renamed_away() {
    let env = Setup::new("numbers.py").arg("serve").build();
    let _sup = env.spawn();
    let mut f = followed(&env);
    let child_log = env.log_dir.join("child.log");
    let sup_log = env.log_dir.join("supervisor.log");
    let reopen = |round: usize| {
        let out = env.cli(&["reopen-logs"]);
        if out.code != Some(0) {
            env.fail(format!("reopen-logs failed\n{out}"));
        }
        env.wait_for("the supervisor to reopen its logs", DEADLINE, || {
            String::from_utf8_lossy(&read(&sup_log))
                .matches("log files reopened")
                .count()
                >= round
        });
    };

    // 1. Renamed away (logrotate `nocreate`); the supervisor keeps writing
    // into the renamed file until reopen-logs, and the follower with it.
    fs::rename(&child_log, env.log_dir.join("child.log.1")).unwrap();
    let next = print_lines_to(&env, 10, &env.log_dir.join("child.log.1"));
    f.wait_for(&env, next - 1);
    reopen(1);
    let next = print_lines(&env, 10, 60);
    f.wait_for(&env, next - 1);

    // logrotate's `create`: each file moves one number up, and an empty
    // child.log takes the name.
    let rotate_by_rename = || {
        fs::rename(
            env.log_dir.join("child.log.1"),
            env.log_dir.join("child.log.2"),
        )
        .unwrap();
        fs::rename(&child_log, env.log_dir.join("child.log.1")).unwrap();
        fs::File::create(&child_log).unwrap();
    };

    // 2. Renamed away and an empty file created in its place (logrotate
    // `create`), all while the follower is paused: lines still go to the
    // old file, then after reopen-logs to the new one. Old ones first.
    f.pause();
    rotate_by_rename();
    print_lines_to(&env, 10, &env.log_dir.join("child.log.1"));
    reopen(2);
    let next = print_lines(&env, 10, 60);
    f.resume();
    f.wait_for(&env, next - 1);

    // 3. The same with the follower looking: the empty new file must not
    // make it leave the old one early. Once it has shown the first batch it
    // has looked since the new file appeared; the second batch then proves
    // it stayed.
    rotate_by_rename();
    for _ in 0..2 {
        let next = print_lines_to(&env, 10, &env.log_dir.join("child.log.1"));
        f.wait_for(&env, next - 1);
    }
    reopen(3);
    let next = print_lines(&env, 10, 60);
    f.wait_for(&env, next - 1);

    f.assert_exactly(&env, 0, next);
    f.stop(&env, libc::SIGINT, None);
}

/// Asks for `count` lines and waits until they are all in `file` (a log
/// the supervisor still writes after it was renamed).
fn print_lines_to(env: &Env, count: u64, file: &Path) -> u64 {
    let next = ask(env, &format!("print {count} 60"));
    env.wait_for(
        &format!("line {} in {}", next - 1, file.display()),
        DEADLINE,
        || numbers(&read(file)).last() == Some(&(next - 1)),
    );
    next
}

#[test]
fn follow_across_copytruncate() {
    let env = Setup::new("numbers.py").arg("serve").build();
    let _sup = env.spawn();
    let mut f = followed(&env);
    let child_log = env.log_dir.join("child.log");
    let copytruncate = || {
        fs::copy(&child_log, env.log_dir.join("child.log.1")).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&child_log)
            .unwrap()
            .set_len(0)
            .unwrap();
    };

    // Unread lines at the copy, and more written after the truncation than
    // had been read: the rest comes from the copy, the bytes before the
    // read position changed.
    f.pause();
    print_lines(&env, 30, 60);
    copytruncate();
    let mut next = print_lines(&env, 20, 60);
    f.resume();
    f.wait_for(&env, next - 1);

    // Read up to the copy, then fewer bytes written after the truncation
    // than had been read: the file is shorter than the read position.
    next = print_lines(&env, 30, 60);
    f.wait_for(&env, next - 1);
    f.pause();
    print_lines(&env, 5, 60);
    copytruncate();
    next = print_lines(&env, 3, 60);
    f.resume();
    f.wait_for(&env, next - 1);

    f.assert_exactly(&env, 0, next);
    f.stop(&env, libc::SIGTERM, Some("was truncated"));
}

#[test]
fn follow_a_deleted_log_into_the_one_the_supervisor_recreates() {
    let env = Setup::new("numbers.py").arg("serve").build();
    let _sup = env.spawn();
    let mut f = followed(&env);
    let child_log = env.log_dir.join("child.log");
    fs::remove_file(&child_log).unwrap();
    // The supervisor notices the deletion on a write (at most once a
    // second) and creates the file again; until then lines go to the
    // deleted file, which the follower still reads.
    let start = Instant::now();
    while numbers(&read(&child_log)).is_empty() {
        let next = ask(&env, "print 5 60");
        f.wait_for(&env, next - 1);
        if start.elapsed() > DEADLINE {
            env.fail(format!(
                "the supervisor did not recreate child.log\n{}",
                f.describe()
            ));
        }
    }
    let next = print_lines(&env, 10, 60);
    f.wait_for(&env, next - 1);
    f.assert_exactly(&env, 0, next);
    f.stop(&env, libc::SIGTERM, None);
}

#[test]
fn follow_with_n_0_prints_only_new_lines() {
    let env = Setup::new("numbers.py").arg("serve").build();
    let _sup = env.spawn();
    env.wait_child(&[]);
    let old = print_lines(&env, 20, 60);
    let mut f = Follow::start(&env, &["-n", "0"]);
    // Ready once it holds child.log open (it finds the end right after).
    let log = env.log_dir.join("child.log").display().to_string();
    env.wait_for("logs -f to open child.log", DEADLINE, || {
        fd_targets(f.pid).contains(&log)
    });
    let next = print_lines(&env, 10, 60);
    f.wait_for(&env, next - 1);
    let seen = f.numbers();
    if seen.first().is_none_or(|&n| n < old) {
        env.fail(format!("logs -f -n 0 printed old lines\n{}", f.describe()));
    }
    f.assert_exactly(&env, seen[0], next);
    f.stop(&env, libc::SIGTERM, None);
}

#[test]
fn a_missing_or_unreadable_log_is_exit_4_and_an_invalid_config_78() {
    let env = Setup::new("numbers.py").arg("serve").build();
    let child_log = env.log_dir.join("child.log");
    for args in [&["logs"][..], &["logs", "-f"][..], &["logs", "-n", "0"][..]] {
        let out = env.cli(args);
        let want = format!(
            "cannot read {}: no such file; has the supervisor run with this config?",
            child_log.display()
        );
        if out.code != Some(4) || !out.stderr.contains(&want) || !out.stdout.is_empty() {
            env.fail(format!("want exit 4 saying {want:?}\n{out}"));
        }
    }
    let out = env.cli(&["logs", "--supervisor"]);
    if out.code != Some(4) || !out.stderr.contains("supervisor.log: no such file") {
        env.fail(format!("want exit 4 naming supervisor.log\n{out}"));
    }

    fs::create_dir_all(&child_log).unwrap();
    let out = env.cli(&["logs", "-f"]);
    let want = format!("cannot read {}: not a regular file", child_log.display());
    if out.code != Some(4) || !out.stderr.contains(&want) {
        env.fail(format!("want exit 4 saying {want:?}\n{out}"));
    }

    fs::write(&env.config, "[listen]\naddress = \"localhost:1\"\n").unwrap();
    let out = env.cli(&["logs"]);
    if out.code != Some(78)
        || !out.stderr.contains("invalid configuration")
        || !out.stderr.contains("listen.address")
    {
        env.fail(format!("want exit 78 naming the problem\n{out}"));
    }
}

#[test]
fn a_reader_that_leaves_early_is_not_an_error() {
    let env = Setup::new("numbers.py").arg("serve").build();
    let sup = env.spawn();
    env.wait_child(&[]);
    // ~470 KB: far more than a pipe holds.
    print_lines(&env, 3000, 120);

    // `supervisor logs -n 3000 | head -1`, and a reader that closes at once.
    for read_first in [true, false] {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&env.config)
            .args(["logs", "-n", "3000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        if read_first {
            let mut first = String::new();
            BufReader::new(stdout).read_line(&mut first).unwrap();
            assert!(number(first.trim_end().as_bytes()).is_some(), "{first:?}");
        } else {
            drop(stdout);
        }
        let out = wait_output(&env, child, "logs -n 3000");
        if out.status.code() != Some(0) || !out.stderr.is_empty() {
            env.fail(format!(
                "logs with a reader gone (read first line: {read_first}): {}, stderr {:?}",
                out.status, out.stderr
            ));
        }
    }

    // `supervisor logs -f | head -1` on a quiet log: it notices the reader
    // left without having to write anything more.
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&env.config)
        .args(["logs", "-f", "-n", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut first = String::new();
        let _ = r.read_line(&mut first);
        let _ = tx.send(first);
        // The reader goes away here.
    });
    let first = rx.recv_timeout(DEADLINE).unwrap_or_default();
    if number(first.trim_end().as_bytes()).is_none() {
        kill(child.id() as i32, libc::SIGKILL);
        env.fail(format!("logs -f -n 1 printed {first:?}"));
    }
    let out = wait_output(&env, child, "logs -f");
    if out.status.code() != Some(0) || !out.stderr.is_empty() {
        env.fail(format!(
            "logs -f after its reader left: {}, stderr {:?}",
            out.status, out.stderr
        ));
    }
    stop(&env, &sup);
}

/// Waits for a spawned command (`what` in messages) with a deadline;
/// whatever of its stdout and stderr was not taken is returned.
fn wait_output(env: &Env, child: Child, what: &str) -> Raw {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(o)) => Raw {
            status: o.status,
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Ok(Err(e)) => env.fail(format!("{what}: wait failed: {e}")),
        Err(_) => {
            kill(pid, libc::SIGKILL);
            env.fail(format!("{what} still running after {DEADLINE:?}; killed"))
        }
    }
}

#[test]
fn invalid_utf8_and_a_megabyte_line_pass_through_untouched() {
    let env = Setup::new("numbers.py").arg("raw").build();
    let sup = env.spawn();
    env.wait_for("the child to write its raw bytes", DEADLINE, || {
        !env.events_of("wrote").is_empty()
    });
    // Stopping flushes the partial megabyte line into the file.
    stop(&env, &sup);
    let data = read(&env.log_dir.join("child.log"));
    for n in [1, 3, 40] {
        let out = run_raw(&env, &["logs", "-n", &n.to_string()]);
        let want = last_lines(&data, n);
        if out.status.code() != Some(0) || out.stdout != want {
            env.fail(format!(
                "logs -n {n}: {}, {} bytes printed, want the last {n} lines: {} bytes",
                out.status,
                out.stdout.len(),
                want.len()
            ));
        }
    }
    if !data.windows(2).any(|w| w == b"\xff\xfe") {
        env.fail("child.log lacks the raw bytes the child wrote");
    }
}
