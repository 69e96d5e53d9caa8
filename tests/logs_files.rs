//! The log files end to end (issue 3): size rotation, logrotate with
//! `create` + SIGHUP and with `copytruncate`, `reopen-logs`, a log that
//! cannot be written, raw bytes and over-long lines, a crash loop's
//! `supervisor.log`, and the shipped rotator examples.
//!
//! The child is `tests/children/numbers.py`: it prints lines numbered
//! `n 0000042`, never repeating a number, so a test can tell exactly which
//! lines were kept, lost or duplicated.
//!
//! "Cannot be written" is made with RLIMIT_FSIZE = 0 on the supervisor
//! (prlimit(2)): the tests run as root, so permissions cannot stop it, and
//! unlike a tmpfs mount or `chattr +i` this needs no mount rights or
//! particular file system and leaves nothing behind if the test dies. Every
//! write to a log then fails with EFBIG, exactly like a full disk.
//!
//! The logrotate and prlimit(2) tests are Linux only (module `linux`):
//! logrotate is Linux's rotator (macOS ships newsyslog, whose entry is
//! checked on every system), and macOS cannot change another process's
//! limits.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

// ---------------------------------------------------------------- helpers

/// One record of `child.log`.
#[derive(Debug)]
struct Line {
    stream: String,
    pid: i32,
    /// A continuation piece of an over-long line (`+` instead of `:`).
    cont: bool,
    payload: Vec<u8>,
}

/// Parses `TS out[PID]: payload`; `None` for anything else (the
/// supervisor's own "lines dropped" notice).
fn parse_line(l: &[u8]) -> Option<Line> {
    let sp = l.iter().position(|&b| b == b' ')?;
    humantime::parse_rfc3339(std::str::from_utf8(&l[..sp]).ok()?).ok()?;
    let rest = &l[sp + 1..];
    let stream = std::str::from_utf8(rest.get(..3)?).ok()?.to_string();
    if (stream != "out" && stream != "err") || rest.get(3) != Some(&b'[') {
        return None;
    }
    let close = rest.iter().position(|&b| b == b']')?;
    let pid = std::str::from_utf8(&rest[4..close]).ok()?.parse().ok()?;
    let cont = match rest.get(close + 1..close + 3)? {
        b": " => false,
        b"+ " => true,
        _ => return None,
    };
    Some(Line {
        stream,
        pid,
        cont,
        payload: rest[close + 3..].to_vec(),
    })
}

/// The lines of `data` (without their `\n`); a missing final `\n` is an
/// error the caller sees as a last line that does not parse.
fn lines(data: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

/// The number of a `n 0000042 xxx` payload.
fn number(payload: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(payload.strip_prefix(b"n ")?.get(..7)?).ok()?;
    s.parse().ok()
}

/// Numbers of the numbered lines in `data`, in file order, with their stream.
fn numbers(data: &[u8]) -> Vec<(u64, String)> {
    lines(data)
        .into_iter()
        .filter_map(parse_line)
        .filter_map(|l| Some((number(&l.payload)?, l.stream)))
        .collect()
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_default()
}

/// Names in `dir` starting with `prefix`, sorted.
fn names(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `NAME.k`, ..., `NAME.1`, `NAME`: oldest first, as rotation names them.
fn oldest_first(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = names(dir, name)
        .into_iter()
        .filter_map(|n| {
            let k = n.strip_prefix(name)?.strip_prefix('.')?.parse().ok()?;
            Some((k, dir.join(n)))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut v: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    v.push(dir.join(name));
    v
}

/// Sends one command line to the child and returns its `PID NEXT` reply.
fn ask(env: &Env, cmd: &str) -> (i32, u64) {
    let reply = exchange(env.addr(), cmd, Duration::from_secs(10));
    let parsed = reply.as_ref().ok().and_then(|r| {
        let (pid, next) = r.trim().split_once(' ')?;
        Some((pid.parse().ok()?, next.parse().ok()?))
    });
    parsed.unwrap_or_else(|| env.fail(format!("child answered {cmd:?} with {reply:?}")))
}

/// `supervisor stop`, which must succeed, and the run's exit 0.
fn stop(env: &Env, sup: &Supervisor) {
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop failed\n{out}"));
    }
    let st = sup.wait_exit(DEADLINE);
    if !st.success() {
        env.fail(format!("supervisor exited with {st}"));
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn size_rotation_keeps_a_contiguous_tail_within_the_cap() {
    const N: u64 = 100_000; // 50-byte lines: 5 MB
    const CAP: u64 = 256 * 1024;
    let env = Setup::new("numbers.py")
        .arg("burst")
        .arg(&N.to_string())
        .arg("49")
        .set("log", "max_bytes", "256KiB")
        .raw("log", "max_files", "3")
        .build();
    let sup = env.spawn();
    let child_log = env.log_dir.join("child.log");
    env.wait_for("the child to print 5 MB", DEADLINE, || {
        !env.events_of("done").is_empty()
    });
    env.wait_for("the last line in child.log", DEADLINE, || {
        numbers(&read(&child_log)).last().map(|l| l.0) == Some(N - 1)
    });
    let pid = env.child_pid().unwrap();
    stop(&env, &sup);

    let want = ["child.log", "child.log.1", "child.log.2", "child.log.3"];
    let got = names(&env.log_dir, "child.log");
    if got != want {
        env.fail(format!("want exactly {want:?}, got {got:?}"));
    }
    let mut all = Vec::new();
    for p in oldest_first(&env.log_dir, "child.log") {
        let data = read(&p);
        // Rotated files are filled up to the last whole line (~90 bytes).
        let low = if p.ends_with("child.log") {
            1
        } else {
            CAP - 200
        };
        if data.len() as u64 > CAP || (data.len() as u64) < low || !data.ends_with(b"\n") {
            env.fail(format!(
                "{} has {} bytes (cap {CAP}, at least {low}), ends with a newline: {}",
                p.display(),
                data.len(),
                data.ends_with(b"\n")
            ));
        }
        all.extend(data);
    }
    let mut expect = None;
    let mut count = 0;
    for l in lines(&all) {
        let Some(line) = parse_line(l).filter(|x| x.pid == pid && x.stream == "out" && !x.cont)
        else {
            env.fail(format!("unexpected line {:?}", String::from_utf8_lossy(l)));
        };
        let n = number(&line.payload);
        if line.payload.len() != 49 || n.is_none() || expect.is_some_and(|e| n != Some(e)) {
            env.fail(format!(
                "line {count} of the retained tail is {:?}, want number {expect:?}",
                String::from_utf8_lossy(l)
            ));
        }
        expect = n.map(|n| n + 1);
        count += 1;
    }
    if expect != Some(N) {
        env.fail(format!("the retained tail ends before {N}: {expect:?}"));
    }
    eprintln!("retained the last {count} of {N} lines in 4 files");
}

#[test]
fn reopen_logs_recreates_files_moved_away() {
    let env = Setup::new("numbers.py").arg("serve").build();
    let sup = env.spawn();
    env.wait_child(&[]);
    let child_log = env.log_dir.join("child.log");
    let sup_log = env.log_dir.join("supervisor.log");
    ask(&env, "print 5 20");
    env.wait_for("5 lines in child.log", DEADLINE, || {
        numbers(&read(&child_log)).len() == 5
    });
    fs::rename(&child_log, env.log_dir.join("old-child")).unwrap();
    fs::rename(&sup_log, env.log_dir.join("old-supervisor")).unwrap();
    let out = env.cli(&["reopen-logs"]);
    if out.code != Some(0) {
        env.fail(format!("reopen-logs failed\n{out}"));
    }
    env.wait_for("a new supervisor.log saying it reopened", DEADLINE, || {
        String::from_utf8_lossy(&read(&sup_log)).contains("SIGHUP: log files reopened")
    });
    ask(&env, "print 5 20");
    env.wait_for("lines 5..10 in a new child.log", DEADLINE, || {
        numbers(&read(&child_log)).len() == 5
    });
    let old: Vec<u64> = numbers(&read(&env.log_dir.join("old-child")))
        .into_iter()
        .map(|l| l.0)
        .collect();
    let new: Vec<u64> = numbers(&read(&child_log))
        .into_iter()
        .map(|l| l.0)
        .collect();
    let modes: Vec<u32> = [&child_log, &sup_log]
        .iter()
        .map(|p| fs::metadata(p).unwrap().permissions().mode() & 0o777)
        .collect();
    if old != [0, 1, 2, 3, 4] || new != [5, 6, 7, 8, 9] || modes != [0o600, 0o600] {
        env.fail(format!(
            "old {old:?}, new {new:?}, modes {modes:?} (want [384, 384]: 0600)"
        ));
    }
    stop(&env, &sup);
}

#[test]
fn invalid_utf8_and_a_megabyte_without_newline_pass_through() {
    const BIG: usize = 1_000_000;
    let env = Setup::new("numbers.py").arg("raw").build();
    let sup = env.spawn();
    let pid = env.wait_child(&[]);
    let child_log = env.log_dir.join("child.log");
    env.wait_for("the child to write it all", DEADLINE, || {
        !env.events_of("wrote").is_empty()
    });
    // 15 full 64 KiB pieces arrive while the child lives; the rest of the
    // line only at its exit.
    env.wait_for("15 pieces of the long line", DEADLINE, || {
        lines(&read(&child_log))
            .into_iter()
            .filter_map(parse_line)
            .filter(|l| l.payload.len() == 64 * 1024)
            .count()
            == 15
    });
    let (answered, _) = ask(&env, "ping");
    let (_, status) = env.status_json();
    if answered != pid || status["state"] != "running" {
        env.fail(format!("the child should still serve: {answered} vs {pid}"));
    }
    stop(&env, &sup);

    let data = read(&child_log);
    let recs: Vec<Line> = lines(&data)
        .into_iter()
        .map(|l| parse_line(l).unwrap_or_else(|| env.fail(format!("bad line {l:?}"))))
        .collect();
    let out: Vec<&Line> = recs.iter().filter(|l| l.stream == "out").collect();
    let err: Vec<&Line> = recs.iter().filter(|l| l.stream == "err").collect();
    let stdout_bad: &[u8] = b"bad \xff\xfe utf-8 \xc3\x28 and a NUL \x00 on stdout";
    if err.len() != 1 || err[0].payload != b"bad \x80\x81 on stderr\r" || err[0].cont {
        env.fail(format!("stderr lines: {err:?}"));
    }
    if out.len() != 17 || out[0].payload != stdout_bad || out.iter().any(|l| l.pid != pid) {
        env.fail(format!(
            "want the bad line and 16 pieces, got {} lines",
            out.len()
        ));
    }
    let pieces = &out[1..];
    let joined: Vec<u8> = pieces.iter().flat_map(|l| l.payload.clone()).collect();
    let want: Vec<u8> = (0..BIG).map(|i| b'a' + (i % 26) as u8).collect();
    let shape: Vec<(bool, usize)> = pieces.iter().map(|l| (l.cont, l.payload.len())).collect();
    let mut want_shape = vec![(true, 64 * 1024); 15];
    want_shape[0].0 = false;
    want_shape.push((true, BIG - 15 * 64 * 1024));
    if shape != want_shape || joined != want {
        env.fail(format!("pieces (continued, length): {shape:?}"));
    }
}

#[test]
fn a_crash_loop_writes_at_most_two_supervisor_lines_per_restart() {
    let env = Setup::new("crash.py")
        .restart("initial_backoff", "10ms")
        .restart("max_backoff", "10ms")
        .build();
    let sup = env.spawn();
    env.wait_for("50 crashes", DEADLINE, || env.events_of("exit").len() >= 50);
    stop(&env, &sup);

    let text: String = oldest_first(&env.log_dir, "supervisor.log")
        .iter()
        .map(|p| String::from_utf8_lossy(&read(p)).into_owned())
        .collect();
    let all: Vec<&str> = text.lines().collect();
    let exits: Vec<&&str> = all
        .iter()
        .filter(|l| l.contains("exited with code 1"))
        .collect();
    // The last child may be stopped before it even ran python: count the
    // supervisor's spawns, not the children's own start events.
    let starts = all.iter().filter(|l| l.contains("started child")).count();
    // Per restart: the exit (pid, status, delay) and the start. Constant:
    // our start and stop, the stop signal, the last child's exit.
    if all.len() > 2 * starts + 8 || starts < 50 || exits.len() + 1 < starts {
        env.fail(format!(
            "{} supervisor.log lines for {starts} starts ({} exit lines)",
            all.len(),
            exits.len()
        ));
    }
    let pid_and_delay = exits
        .iter()
        .take(starts - 1)
        .all(|l| l.contains("child ") && l.contains("restarting in 10ms"));
    if !pid_and_delay || !all.last().is_some_and(|l| l.contains(" stopped")) {
        env.fail(format!(
            "exit lines name the pid and the delay, the last line is the stop: {:?} ... {:?}",
            exits.first(),
            all.last()
        ));
    }
    eprintln!("{} supervisor.log lines for {starts} starts", all.len());
}

#[test]
fn shipped_newsyslog_entry_points_at_the_pid_file_and_sends_sighup() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = Setup::new("numbers.py").build();

    // newsyslog (macOS; not run, only read): every entry has the 8 fields
    // logfile mode count size when flags pid_file signal, signal 1 (SIGHUP).
    let text = fs::read_to_string(root.join("launchd/newsyslog.d/supervisor.conf")).unwrap();
    let entries: Vec<Vec<&str>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let ok = |f: &Vec<&str>| {
        let n = f.len();
        n >= 8
            && f[0].starts_with('/')
            && (f[0].ends_with("/child.log") || f[0].ends_with("/supervisor.log"))
            && f[n - 2].starts_with('/')
            && f[n - 2].ends_with("/supervisor.pid")
            && (f[n - 1] == "1" || f[n - 1] == "SIGHUP")
            && !f[n - 3].contains('N')
    };
    if entries.len() != 2 || !entries.iter().all(ok) {
        env.fail(format!("newsyslog.d entries: {entries:?}"));
    }
}

/// Linux only: logrotate is Linux's rotator, and prlimit(2) on another
/// process (the unwritable log) has no macOS counterpart.
#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use std::collections::BTreeMap;

    fn logrotate() -> &'static str {
        for p in [
            "/usr/sbin/logrotate",
            "/sbin/logrotate",
            "/usr/bin/logrotate",
        ] {
            if Path::new(p).exists() {
                return p;
            }
        }
        panic!("logrotate is not installed (`apt-get install logrotate`; .ci/run does it)");
    }

    /// Runs `logrotate -f -s <dir>/lr.state <conf>`, which must succeed.
    fn force_rotate(env: &Env, conf: &Path) {
        let args = [
            "-f".to_string(),
            "-s".into(),
            env.path("lr.state").display().to_string(),
            conf.display().to_string(),
        ];
        match run_cmd(logrotate(), &args, DEADLINE) {
            Ok(out) if out.code == Some(0) => {}
            Ok(out) => env.fail(format!("logrotate failed\n{out}")),
            Err(e) => env.fail(e),
        }
    }

    /// Sets the supervisor's RLIMIT_FSIZE (soft and hard; we are root).
    fn set_fsize(env: &Env, pid: i32, limit: libc::rlim_t) {
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: prlimit(2) on a pid we started, with a valid new limit and no
        // old-limit pointer.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
        if rc != 0 {
            env.fail(format!(
                "prlimit({pid}, RLIMIT_FSIZE, {limit}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }

    /// The `last NEXT` a tick child records on SIGTERM.
    fn last_next(env: &Env) -> u64 {
        let ev = env.events_of("last");
        match &ev[..] {
            [e] => e.extra[0].parse().unwrap(),
            _ => env.fail(format!("want one `last` event, got {ev:?}")),
        }
    }

    /// Every number below `next` exactly once across `data`, even ones on
    /// stdout and odd ones on stderr (the tick child's pattern).
    fn assert_each_once(env: &Env, data: &[u8], next: u64, missing_ok: u64) -> Vec<u64> {
        let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
        for (n, stream) in numbers(data) {
            let want = if n % 2 == 0 { "out" } else { "err" };
            if stream != want {
                env.fail(format!("line {n} tagged {stream}, want {want}"));
            }
            *seen.entry(n).or_default() += 1;
        }
        let twice: Vec<u64> = seen
            .iter()
            .filter(|(_, &c)| c > 1)
            .map(|(&n, _)| n)
            .collect();
        let beyond: Vec<u64> = seen.keys().copied().filter(|&n| n >= next).collect();
        let missing: Vec<u64> = (0..next).filter(|n| !seen.contains_key(n)).collect();
        if !twice.is_empty() || !beyond.is_empty() || missing.len() as u64 != missing_ok {
            env.fail(format!(
                "numbers 0..{next}: {} seen; {} twice {:?}; {} past the end {:?}; {} missing (want {missing_ok}) {:?}",
                seen.len(),
                twice.len(),
                &twice[..twice.len().min(20)],
                beyond.len(),
                &beyond[..beyond.len().min(20)],
                missing.len(),
                &missing[..missing.len().min(20)],
            ));
        }
        missing
    }

    #[test]
    fn logrotate_create_and_sighup_lose_no_line() {
        let env = Setup::new("numbers.py").arg("tick").arg("3").build();
        let sup = env.spawn();
        env.wait_child(&[]);
        let child_log = env.log_dir.join("child.log");
        let conf = env.path("logrotate.conf");
        let logs = env.log_dir.display();
        fs::write(
            &conf,
            format!(
                "{logs}/child.log {logs}/supervisor.log {{\n\
                 \x20   rotate 20\n\
                 \x20   create\n\
                 \x20   missingok\n\
                 \x20   sharedscripts\n\
                 \x20   postrotate\n\
                 \x20       kill -HUP $(cat {}/supervisor.pid)\n\
                 \x20   endscript\n\
                 }}\n",
                env.state_dir.display()
            ),
        )
        .unwrap();
        let rounds = 5;
        for _ in 0..rounds {
            // `create` leaves an empty child.log: only a reopen fills it again.
            env.wait_for("20 lines in the current child.log", DEADLINE, || {
                numbers(&read(&child_log)).len() >= 20
            });
            force_rotate(&env, &conf);
        }
        env.wait_for(
            "lines in child.log after the last rotation",
            DEADLINE,
            || numbers(&read(&child_log)).len() >= 20,
        );
        stop(&env, &sup);

        let files = oldest_first(&env.log_dir, "child.log");
        let want: Vec<String> = std::iter::once("child.log".to_string())
            .chain((1..=rounds).map(|i| format!("child.log.{i}")))
            .collect();
        let mut got = names(&env.log_dir, "child.log");
        got.sort_by_key(|n| n.len());
        if got != want {
            env.fail(format!("want files {want:?}, got {got:?}"));
        }
        let all: Vec<u8> = files.iter().flat_map(|p| read(p)).collect();
        let next = last_next(&env);
        assert_each_once(&env, &all, next, 0);

        let sup_logs: String = oldest_first(&env.log_dir, "supervisor.log")
            .iter()
            .map(|p| String::from_utf8_lossy(&read(p)).into_owned())
            .collect();
        let hups = sup_logs.matches("SIGHUP: log files reopened").count();
        let current =
            String::from_utf8_lossy(&read(&env.log_dir.join("supervisor.log"))).into_owned();
        if hups != rounds
            || !current.contains("SIGHUP: log files reopened")
            || !current.contains(" stopped")
        {
            env.fail(format!(
                "supervisor.log*: want {rounds} reopen lines (got {hups}), the last one and the stop in the current file"
            ));
        }
        eprintln!("{next} lines over {} files, each exactly once", files.len());
    }

    #[test]
    fn copytruncate_leaves_no_nul_and_writing_resumes() {
        let env = Setup::new("numbers.py")
            .arg("serve")
            .set("log", "max_bytes", "64KiB")
            .build();
        let sup = env.spawn();
        env.wait_child(&[]);
        let child_log = env.log_dir.join("child.log");
        let conf = env.path("logrotate.conf");
        fs::write(
            &conf,
            format!(
                "{}/child.log {{\n    rotate 5\n    copytruncate\n}}\n",
                env.log_dir.display()
            ),
        )
        .unwrap();

        // ~41 KB, then copy and truncate, then ~31 KB: 72 KB in all, past the
        // 64 KiB cap if the writer trusted its own count instead of the file.
        ask(&env, "print 40 999");
        env.wait_for("lines 0..40 in child.log", DEADLINE, || {
            numbers(&read(&child_log)).len() == 40
        });
        force_rotate(&env, &conf);
        ask(&env, "print 30 999");
        env.wait_for("lines 40..70 in child.log", DEADLINE, || {
            numbers(&read(&child_log)).last().map(|l| l.0) == Some(69)
        });

        let data = read(&child_log);
        if let Some(at) = data.iter().position(|&b| b == 0) {
            env.fail(format!(
                "child.log has a NUL byte at {at} of {}",
                data.len()
            ));
        }
        let got: Vec<u64> = numbers(&data).into_iter().map(|l| l.0).collect();
        let copy: Vec<u64> = numbers(&read(&env.log_dir.join("child.log.1")))
            .into_iter()
            .map(|l| l.0)
            .collect();
        let files = names(&env.log_dir, "child.log");
        if got != (40..70).collect::<Vec<_>>()
            || copy != (0..40).collect::<Vec<_>>()
            || files != ["child.log", "child.log.1"]
            || lines(&data).len() != 30
        {
            env.fail(format!(
                "want child.log = lines 40..70 only, child.log.1 = 0..40 and no other file; got {got:?}, copy {copy:?}, files {files:?}"
            ));
        }
        stop(&env, &sup);
    }

    #[test]
    fn an_unwritable_log_drops_and_counts_while_the_child_keeps_serving() {
        let env = Setup::new("numbers.py").arg("tick").arg("2").build();
        // stderr a pipe: the limit would stop a write to a file there as well.
        let sup = env.spawn_stderr_pipe();
        let pid = env.wait_child(&[]);
        let child_log = env.log_dir.join("child.log");
        env.wait_for("20 lines in child.log", DEADLINE, || {
            numbers(&read(&child_log)).len() >= 20
        });

        set_fsize(&env, sup.pid(), 0);
        let (_, at) = ask(&env, "ping");
        let complaint = |stderr: &str| {
            stderr
                .lines()
                .filter(|l| l.contains("cannot write") && l.contains("child.log"))
                .count()
        };
        env.wait_for("a complaint on stderr", DEADLINE, || {
            complaint(&sup.stderr()) > 0
        });
        let size = read(&child_log).len();
        // The child is not blocked on its pipe: it keeps printing and answering.
        env.wait_for("the child to print 200 more lines", DEADLINE, || {
            ask(&env, "ping").1 >= at + 200
        });
        if read(&child_log).len() != size {
            env.fail("child.log grew while no write could succeed");
        }
        set_fsize(&env, sup.pid(), libc::RLIM_INFINITY);

        let notice = |data: &[u8]| -> Option<u64> {
            lines(data).into_iter().find_map(|l| {
                let s = std::str::from_utf8(l).ok()?;
                let rest = s.split_once(" supervisor: ")?.1;
                if !rest.contains(" could not be written (") {
                    return None;
                }
                rest.split_once(' ')?.0.parse().ok()
            })
        };
        env.wait_for("the drop count in child.log", DEADLINE, || {
            notice(&read(&child_log)).is_some()
        });
        env.wait_for("lines after the notice", DEADLINE, || {
            let data = read(&child_log);
            let tail = data.rsplit(|&b| b == b'\n').nth(1).unwrap_or_default();
            parse_line(tail).is_some()
        });
        stop(&env, &sup);

        let data = read(&child_log);
        let dropped = notice(&data).unwrap();
        let notices = lines(&data)
            .iter()
            .filter(|l| parse_line(l).is_none())
            .count();
        let missing = assert_each_once(&env, &data, last_next(&env), dropped);
        if notices != 1 || dropped < 100 || complaint(&sup.stderr()) != 1 {
            env.fail(format!(
                "want one notice of >= 100 dropped lines and one stderr complaint; got {notices} notices, {dropped} dropped, stderr:\n{}",
                sup.stderr()
            ));
        }
        if env.events_of("start").len() != 1 || env.child_processes().contains(&pid) {
            env.fail("the child should have run once, until the stop");
        }
        eprintln!(
            "dropped {dropped} lines ({}..={}), as the notice says",
            missing[0],
            missing[missing.len() - 1]
        );
    }

    #[test]
    fn shipped_logrotate_entry_points_at_the_pid_file_and_sends_sighup() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let env = Setup::new("numbers.py").build();

        // logrotate: the shipped entry, with its paths moved into the temp dir,
        // must pass logrotate's own check (-d: parse and plan, touch nothing).
        let text = fs::read_to_string(root.join("config/logrotate.d/supervisor")).unwrap();
        if !text.contains("supervisor.pid") || !text.contains("kill -HUP") {
            env.fail(format!("logrotate.d entry:\n{text}"));
        }
        fs::create_dir_all(&env.log_dir).unwrap();
        fs::set_permissions(&env.log_dir, fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(env.log_dir.join("child.log"), "x\n").unwrap();
        let conf = env.path("example.conf");
        fs::write(
            &conf,
            text.replace("/var/log/supervisor", &env.log_dir.display().to_string())
                .replace("/var/lib/supervisor", &env.state_dir.display().to_string()),
        )
        .unwrap();
        let args = [
            "-d".to_string(),
            "-s".into(),
            env.path("lr.state").display().to_string(),
            conf.display().to_string(),
        ];
        let out = run_cmd(logrotate(), &args, DEADLINE).unwrap_or_else(|e| env.fail(e));
        if out.code != Some(0) || out.stderr.contains("error") || !out.stderr.contains("child.log")
        {
            env.fail(format!("logrotate -d on the shipped entry\n{out}"));
        }
    }
}
