//! The child's process attributes (`child.umask`, `child.nice`,
//! `[child.limits]`) as the child sees them, the refusals of limits this
//! system will not take, a supervisor started with few open files, and
//! `max_memory` restarting a child (or a grandchild's group) that grows.
//!
//! The child is `tests/children/attrs.py`, which writes what it got into
//! `attrs-PID.json`. The tests run as root (CI does); the non-root cases
//! start the supervisor as `nobody` from a `pre_exec` of ours, in a temp
//! dir it owns, with a python that `nobody` may run.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The resources of `[child.limits]`, by their config names.
fn resources() -> [(&'static str, RawResource); 8] {
    [
        ("core", libc::RLIMIT_CORE),
        ("cpu", libc::RLIMIT_CPU),
        ("data", libc::RLIMIT_DATA),
        ("fsize", libc::RLIMIT_FSIZE),
        ("memlock", libc::RLIMIT_MEMLOCK),
        ("nofile", libc::RLIMIT_NOFILE),
        ("nproc", libc::RLIMIT_NPROC),
        ("stack", libc::RLIMIT_STACK),
    ]
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type RawResource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type RawResource = libc::c_int;

/// A limit as the child reports it: a number or "unlimited".
fn json_limit(v: libc::rlim_t) -> Value {
    if v == libc::RLIM_INFINITY {
        Value::from("unlimited")
    } else {
        Value::from(v)
    }
}

/// A limit as `check-config` shows it.
fn shown(v: libc::rlim_t) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// This test process's (soft, hard) limit, which the supervisor inherits.
fn our_limit(r: RawResource) -> (libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills one owned struct.
    assert_eq!(unsafe { libc::getrlimit(r, &mut lim) }, 0);
    (lim.rlim_cur, lim.rlim_max)
}

/// `want`, or the hard limit when that is lower (root here may lack
/// CAP_SYS_RESOURCE, so no test may count on raising one).
fn within_hard(r: RawResource, want: u64) -> u64 {
    let (_, hard) = our_limit(r);
    if hard == libc::RLIM_INFINITY {
        want
    } else {
        want.min(hard)
    }
}

/// This process's umask, from /proc (setting it to read it would race
/// with the other tests' threads).
fn our_umask() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask: in /proc/self/status");
    format!("{:03o}", u32::from_str_radix(mask.trim(), 8).unwrap())
}

fn our_nice() -> i64 {
    // SAFETY: a plain query of this thread's priority (the supervisor is
    // spawned from this thread and inherits it).
    i64::from(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
}

/// What `attrs.py` with pid `pid` reported.
fn report(env: &Env, pid: i32) -> Value {
    let path = env.path(&format!("attrs-{pid}.json"));
    env.wait_value(&format!("the report of child {pid}"), DEADLINE, || {
        serde_json::from_str(&fs::read_to_string(&path).ok()?).ok()
    })
}

/// `[soft, hard]` of `name` in a report.
fn reported(env: &Env, rep: &Value, name: &str) -> (Value, Value) {
    let l = &rep["limits"][name];
    if !l.is_array() {
        env.fail(format!("no limit {name} in the report {rep}"));
    }
    (l[0].clone(), l[1].clone())
}

fn supervisor_log(env: &Env) -> String {
    fs::read_to_string(env.log_dir.join("supervisor.log")).unwrap_or_default()
}

// ------------------------------------------------------------ nobody

/// Set a (soft, hard) limit (for `pre_exec`).
fn set_limit(r: RawResource, soft: libc::rlim_t, hard: libc::rlim_t) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one valid struct.
    if unsafe { libc::setrlimit(r, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The child's command with a python `nobody` may run, and the temp dir
/// writable by the child.
fn for_nobody(mut env: Env, args: &[&str]) -> Env {
    let mut argv = vec![python_for_nobody(), env.script.clone(), env.dir_s.clone()];
    argv.extend(args.iter().map(|a| a.to_string()));
    env.set_command(&argv);
    env
}

/// Give the temp dir and its config to `nobody`, for a supervisor that
/// runs as nobody.
fn hand_to_nobody(env: &Env) {
    let (uid, gid, _) = nobody();
    for p in [&env.dir, &env.config] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
}

/// One `supervisor ARGS` started by this test with `pre` run in the new
/// process before exec; reaped by a thread; killed on drop if still alive.
/// (The harness's cleanup also finds it by the temp dir in its argv.)
struct Started {
    pid: i32,
    status: Arc<Mutex<Option<std::process::ExitStatus>>>,
    stderr: std::path::PathBuf,
}

impl Started {
    fn new(
        env: &Env,
        args: &[&str],
        pre: impl FnMut() -> io::Result<()> + Send + Sync + 'static,
    ) -> Started {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let stderr = env.path(&format!("started-{n}.stderr"));
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&env.config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap());
        // SAFETY: the closures make only system calls.
        unsafe { cmd.pre_exec(pre) };
        let mut child: Child = cmd
            .spawn()
            .unwrap_or_else(|e| env.fail(format!("cannot start {BIN} {args:?}: {e}")));
        let pid = child.id() as i32;
        let status = Arc::new(Mutex::new(None));
        let reaper = status.clone();
        thread::spawn(move || {
            if let Ok(st) = child.wait() {
                *reaper.lock().unwrap() = Some(st);
            }
        });
        Started {
            pid,
            status,
            stderr,
        }
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        *self.status.lock().unwrap()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for its exit; its status and stderr.
    fn wait(&self, env: &Env) -> (Option<i32>, String) {
        let st = env.wait_value(
            "the supervisor started by the test to exit",
            DEADLINE,
            || self.exited(),
        );
        (st.code(), self.stderr())
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.exited().is_none() {
            kill(self.pid, libc::SIGKILL);
            let _ = wait_until(Duration::from_secs(5), || self.exited().is_some());
        }
    }
}

// ------------------------------------------------------------ attributes

#[test]
fn configured_attributes_are_exactly_what_the_child_gets() {
    let nofile = within_hard(libc::RLIMIT_NOFILE, 1000);
    let stack = within_hard(libc::RLIMIT_STACK, 4 << 20);
    let memlock = within_hard(libc::RLIMIT_MEMLOCK, 64 << 10);
    let core = within_hard(libc::RLIMIT_CORE, 1 << 20);
    let nproc = within_hard(libc::RLIMIT_NPROC, 3000);
    let cpu = within_hard(libc::RLIMIT_CPU, 3600);
    let env = Setup::new("attrs.py")
        .child("umask", "027")
        .raw("child", "nice", "3")
        .raw(
            "child",
            "limits",
            &format!(
                "{{ nofile = {nofile}, stack = {stack}, memlock = {memlock}, core = {core}, \
                 nproc = {nproc}, cpu = {cpu} }}"
            ),
        )
        .build();

    // check-config tells what the child gets, and its output still loads.
    let out = env.cli(&["check-config"]);
    if out.code != Some(0) {
        env.fail(format!("check-config should accept this\n{out}"));
    }
    let (_, nofile_hard) = our_limit(libc::RLIMIT_NOFILE);
    for line in [
        format!(
            "# child.limits.nofile: soft {nofile} (hard here: {})",
            shown(nofile_hard)
        ),
        "# child.umask: 027".into(),
        "# child.nice: 3".into(),
    ] {
        if !out.stdout.lines().any(|l| l.starts_with(&line)) {
            env.fail(format!("check-config lacks {line:?}\n{out}"));
        }
    }
    let printed = env.path("printed.toml");
    fs::write(&printed, &out.stdout).unwrap();
    let again = env.cli_with(&printed, &["check-config"], DEADLINE);
    if again.code != Some(0) {
        env.fail(format!("check-config's output does not load\n{again}"));
    }

    let _sup = env.spawn();
    let pid = env.wait_child(&[]);
    let rep = report(&env, pid);
    if rep["umask"] != "027" || rep["nice"] != 3 {
        env.fail(format!("want umask 027 and nice 3; the child got {rep}"));
    }
    for (name, r, want) in [
        ("nofile", libc::RLIMIT_NOFILE, nofile),
        ("stack", libc::RLIMIT_STACK, stack),
        ("memlock", libc::RLIMIT_MEMLOCK, memlock),
        ("core", libc::RLIMIT_CORE, core),
        ("nproc", libc::RLIMIT_NPROC, nproc),
        ("cpu", libc::RLIMIT_CPU, cpu),
    ] {
        let (_, hard) = our_limit(r);
        let got = reported(&env, &rep, name);
        if got != (Value::from(want), json_limit(hard)) {
            env.fail(format!(
                "{name}: want soft {want} and the hard limit kept ({}); the child got {got:?}",
                json_limit(hard)
            ));
        }
    }
    // Unset: inherited.
    for name in ["data", "fsize"] {
        let (_, r) = resources().into_iter().find(|(n, _)| *n == name).unwrap();
        let (soft, hard) = our_limit(r);
        if reported(&env, &rep, name) != (json_limit(soft), json_limit(hard)) {
            env.fail(format!("{name} should be inherited; the child got {rep}"));
        }
    }
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads this process's umask from /proc/self/status (Linux only)"
)]
fn unset_keys_leave_what_the_supervisor_has() {
    let env = Setup::new("attrs.py").build();
    let _sup = env.spawn();
    let pid = env.wait_child(&[]);
    let rep = report(&env, pid);
    if rep["umask"] != our_umask() || rep["nice"] != our_nice() {
        env.fail(format!(
            "want the inherited umask {} and nice {}; the child got {rep}",
            our_umask(),
            our_nice()
        ));
    }
    for (name, r) in resources() {
        let (soft, hard) = our_limit(r);
        if reported(&env, &rep, name) != (json_limit(soft), json_limit(hard)) {
            env.fail(format!(
                "{name}: want the inherited {soft}/{hard}; the child got {rep}"
            ));
        }
    }
}

#[test]
fn a_dropped_user_still_gets_the_limits() {
    let (uid, _, _) = nobody();
    let nofile = within_hard(libc::RLIMIT_NOFILE, 2000);
    let env = for_nobody(
        Setup::new("attrs.py")
            .child("user", "nobody")
            .child("umask", "077")
            .raw("child", "nice", "-2")
            .raw(
                "child",
                "limits",
                &format!("{{ nofile = {nofile}, core = 0, fsize = \"1GiB\" }}"),
            )
            .build(),
        &[],
    );
    // The child (nobody) writes its report and events here: sticky, as /tmp
    // is, so the folder-trust rule still accepts the state folder below it.
    fs::set_permissions(
        &env.dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let _sup = env.spawn();
    let pid = env.wait_child(&[]);
    let rep = report(&env, pid);
    // A negative nice works too: it is set before the privilege drop.
    if rep["uid"] != uid || rep["umask"] != "077" || rep["nice"] != -2 {
        env.fail(format!(
            "want uid {uid}, umask 077, nice -2; the child got {rep}"
        ));
    }
    for (name, r, want) in [
        ("nofile", libc::RLIMIT_NOFILE, nofile),
        ("core", libc::RLIMIT_CORE, 0),
        ("fsize", libc::RLIMIT_FSIZE, 1 << 30),
    ] {
        let (_, hard) = our_limit(r);
        let got = reported(&env, &rep, name);
        if got != (Value::from(want), json_limit(hard)) {
            env.fail(format!("{name}: want soft {want}; the child got {got:?}"));
        }
    }
}

// ------------------------------------------------------------ refusals

#[test]
fn nofile_above_the_hard_limit_as_non_root_is_78_naming_the_key() {
    let (uid, gid, _) = nobody();
    let env = for_nobody(
        Setup::new("attrs.py")
            .raw("child", "limits", "{ nofile = 4096 }")
            .build(),
        &[],
    );
    hand_to_nobody(&env);
    // Hard limit 2048, then nobody: it cannot raise it to 4096.
    for cmd in ["check-config", "run"] {
        let started = Started::new(&env, &[cmd], move || {
            set_limit(libc::RLIMIT_NOFILE, 1024, 2048)?;
            become_user(uid, gid)
        });
        let (code, stderr) = started.wait(&env);
        if code != Some(78)
            || !stderr.contains("child.limits.nofile")
            || !stderr.contains("4096 is above the hard limit here (2048)")
        {
            env.fail(format!(
                "{cmd} as nobody with hard nofile 2048: want exit 78 naming child.limits.nofile; \
                 got {code:?}, stderr: {stderr}"
            ));
        }
    }
    // Nothing started. `run` checks limits once it holds the lock, so the
    // pid file may exist, but no pid was written into it.
    let pid = fs::read(env.state_dir.join("supervisor.pid")).unwrap_or_default();
    if !env.events().is_empty() || !pid.is_empty() {
        env.fail("a refused config started something");
    }
}

#[test]
fn unlimited_open_files_are_refused_with_78() {
    let env = Setup::new("attrs.py")
        .raw("child", "limits", "{ nofile = \"unlimited\" }")
        .build();
    for cmd in ["check-config", "run"] {
        let out = env.cli(&[cmd]);
        if out.code != Some(78)
            || !out.stderr.contains("child.limits.nofile")
            || !out.stderr.contains("\"unlimited\" is refused")
        {
            env.fail(format!("{cmd}: want 78 naming child.limits.nofile\n{out}"));
        }
    }
    if !env.events().is_empty() {
        env.fail("a refused config started a child");
    }
}

#[test]
fn a_negative_nice_as_non_root_is_a_spawn_error_naming_the_key() {
    let (uid, gid, _) = nobody();
    let env = for_nobody(
        Setup::new("attrs.py")
            .raw("child", "nice", "-5")
            .restart("initial_backoff", "1s")
            .restart("max_backoff", "2s")
            .build(),
        &[],
    );
    hand_to_nobody(&env);
    let sup = Started::new(&env, &["run"], move || become_user(uid, gid));
    let want = "cannot start the child: child.nice = -5: setpriority: Permission denied";
    let v = env.wait_value("status --json with the spawn error", DEADLINE, || {
        let (_, v) = env.status_json();
        (v["child"]["spawn_error"] == want).then_some(v)
    });
    if v["state"] != "backoff" || !v["child"]["pid"].is_null() {
        env.fail(format!(
            "want backoff and no child while it cannot start: {v:#}"
        ));
    }
    env.wait_for("the spawn error in supervisor.log", DEADLINE, || {
        supervisor_log(&env).contains(want)
    });
    if sup.exited().is_some() {
        env.fail(format!("the supervisor exited: {}", sup.stderr()));
    }
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop\n{out}"));
    }
}

// ------------------------------------------------------------ few descriptors

#[test]
fn a_supervisor_started_with_32_open_files_gives_the_child_4096() {
    let nofile = within_hard(libc::RLIMIT_NOFILE, 4096);
    let env = Setup::new("attrs.py")
        .raw("child", "limits", &format!("{{ nofile = {nofile} }}"))
        .build();
    let (_, hard) = our_limit(libc::RLIMIT_NOFILE);
    let sup = Started::new(&env, &["run"], move || {
        set_limit(libc::RLIMIT_NOFILE, 32, hard)
    });
    let mut seen = Vec::new();
    for round in 0..4 {
        let pid = env.wait_child(&seen);
        let rep = report(&env, pid);
        let (soft, _) = reported(&env, &rep, "nofile");
        if soft != nofile {
            env.fail(format!(
                "round {round}: want nofile {nofile}; the child got {rep}"
            ));
        }
        let answer = request(env.addr(), secs(5.0))
            .unwrap_or_else(|e| env.fail(format!("round {round}: no answer: {e}")));
        if answer.trim() != pid.to_string() {
            env.fail(format!(
                "round {round}: child {pid} should answer, got {answer:?}"
            ));
        }
        seen.push(pid);
        let out = env.cli(&["restart"]);
        if out.code != Some(0) {
            env.fail(format!("restart\n{out}"));
        }
    }
    // Its own soft limit was raised to its hard limit at start (room for
    // what detached helpers hold), whatever the child gets. Read from
    // /proc: Linux only; elsewhere, that it runs on.
    let limits = fs::read_to_string(format!("/proc/{}/limits", sup.pid)).unwrap_or_default();
    let words: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open").unwrap_or_default();
    let (own, own_hard) = (words.get(3).copied(), words.get(4).copied());
    let raised = !cfg!(target_os = "linux")
        || own == own_hard
        || (own_hard == Some("unlimited") && own == Some(nr_open.trim()));
    if !raised || sup.exited().is_some() {
        env.fail(format!(
            "the supervisor should run on with its soft limit raised to the hard one: \
             {own:?} of {own_hard:?}, {:?}, {}",
            sup.exited(),
            sup.stderr()
        ));
    }
    let out = env.cli(&["stop"]);
    if out.code != Some(0) {
        env.fail(format!("stop\n{out}"));
    }
    let (code, stderr) = sup.wait(&env);
    if code != Some(0) {
        env.fail(format!("the supervisor should exit 0: {code:?} {stderr}"));
    }
}

// ------------------------------------------------------------ max_memory

/// `rss BYTES` events of `pid`: (time, bytes).
fn rss_events(env: &Env, pid: i32) -> Vec<(f64, u64)> {
    env.events_of("rss")
        .into_iter()
        .filter(|e| e.pid == pid)
        .filter_map(|e| Some((e.t, e.extra.first()?.parse().ok()?)))
        .collect()
}

/// The "memory: child PID uses X MiB, above max_memory (64 MiB)" line's X.
fn memory_line(env: &Env, pid: i32) -> Option<f64> {
    let log = supervisor_log(env);
    let prefix = format!("memory: child {pid} uses ");
    let line = log.lines().find_map(|l| Some(&l[l.find(&prefix)?..]))?;
    let rest = line.strip_prefix(&prefix)?;
    let (figure, tail) = rest.split_once(" MiB, ")?;
    tail.starts_with("above max_memory (64 MiB); restarting it gracefully")
        .then(|| figure.parse().ok())
        .flatten()
}

const CHECK: f64 = 0.25;

fn memory_setup(args: &[&str]) -> Env {
    let mut s = Setup::new("attrs.py")
        .child("max_memory", "64MiB")
        .child("max_memory_check", "250ms")
        .restart("initial_backoff", "200ms");
    for a in args {
        s = s.arg(a);
    }
    s.build()
}

#[test]
fn a_child_growing_past_max_memory_is_restarted_gracefully() {
    // 4 MiB every 50 ms, up to 256 MiB.
    let env = memory_setup(&["hog", "4", "256"]);
    let _sup = env.spawn();
    let first = env.wait_child(&[]);
    let second = env.wait_child(&[first]);
    let figure = env.wait_value("the memory line in supervisor.log", DEADLINE, || {
        memory_line(&env, first)
    });
    if figure < 64.0 {
        env.fail(format!(
            "the figure {figure} MiB should be above the ceiling"
        ));
    }
    // Stopped gracefully (its SIGTERM handler ran), within a few checks
    // of passing the ceiling by itself.
    let term = env
        .events_of("term")
        .into_iter()
        .find(|e| e.pid == first)
        .unwrap_or_else(|| env.fail(format!("child {first} got no SIGTERM")));
    let over = rss_events(&env, first)
        .into_iter()
        .find(|(_, b)| *b > 64 << 20)
        .map(|(t, _)| t)
        .unwrap_or_else(|| env.fail(format!("child {first} never reported passing 64 MiB")));
    let checks = (term.t - over) / CHECK;
    if checks > 12.0 {
        env.fail(format!(
            "stopped {:.2}s ({checks:.1} checks) after passing the ceiling",
            term.t - over
        ));
    }
    let (_, v) = env.status_json();
    if v["child"]["restarts"].as_u64() < Some(1) {
        env.fail(format!(
            "want child {second} or a later one after a restart: {v:#}"
        ));
    }
}

#[test]
fn a_child_below_max_memory_is_never_restarted() {
    let env = memory_setup(&["hold", "16"]);
    let _sup = env.spawn();
    let pid = env.wait_child(&[]);
    // Eight checks or more: nothing may happen.
    let restarted = wait_until(secs(8.0 * CHECK + 0.5), || {
        env.events_of("start").len() > 1 || supervisor_log(&env).contains("memory:")
    });
    if restarted.is_ok() {
        env.fail("a child below max_memory was restarted");
    }
    let (_, v) = env.status_json();
    if v["state"] != "running" || v["child"]["pid"] != pid || v["child"]["restarts"] != 0 {
        env.fail(format!("want child {pid} still running, 0 restarts: {v:#}"));
    }
}

#[test]
fn memory_held_by_a_grandchild_in_the_group_counts() {
    let env = memory_setup(&["grandhog", "4", "256"]);
    let _sup = env.spawn();
    let first = env.wait_child(&[]);
    let figure = env.wait_value("the memory line naming the child", DEADLINE, || {
        memory_line(&env, first)
    });
    let grandchild = env
        .events_of("rss")
        .first()
        .map(|e| e.pid)
        .unwrap_or_else(|| env.fail("the grandchild reported nothing"));
    if grandchild == first || figure < 64.0 {
        env.fail(format!(
            "the grandchild {grandchild} should grow, the figure {figure} MiB pass 64 MiB"
        ));
    }
    env.wait_child(&[first]);
    env.wait_for("the grandchild to be stopped", DEADLINE, || {
        !pid_alive(grandchild)
    });
    if !env.events_of("term").iter().any(|e| e.pid == grandchild) {
        env.fail(format!(
            "grandchild {grandchild} should have been stopped gracefully"
        ));
    }
}
