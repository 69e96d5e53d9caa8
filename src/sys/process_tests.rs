//! `sys` against real processes: socket holders (whole machine
//! and descendants, a subreaper's adopted orphan included), zombies and
//! zombie groups, start times, command lines, memory, listeners and the
//! port holder. Portable: on macOS the same checks go through sysctl and
//! libproc, so a Mac CI run proves that side too.

use super::{self as sys, Scope};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

/// The real python3 executable (not a pyenv shim script).
fn python() -> &'static str {
    static PY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".into())
    })
}

/// Polls `cond` until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        if std::time::Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    Ok(())
}

/// Kills and reaps a child this test started, however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

/// A python that sleeps; `keep` is a descriptor it inherits (close-on-exec
/// cleared in the child only).
fn sleeper(keep: Option<RawFd>, extra: &[&str]) -> Reaped {
    let mut cmd = Command::new(python());
    cmd.args(["-c", "import time\ntime.sleep(60)"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(fd) = keep {
        // SAFETY: only fcntl, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::fcntl(fd, libc::F_SETFD, 0);
                Ok(())
            });
        }
    }
    Reaped(cmd.spawn().expect("spawn python"))
}

/// The first `Some` from `f` within `timeout`.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let mut got = None;
    let _ = wait_until(timeout, || {
        got = f();
        got.is_some()
    });
    got
}

fn me() -> i32 {
    std::process::id() as i32
}

#[test]
fn holders_of_a_socket_are_found_on_the_machine_and_among_descendants() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let id = sys::socket_id(listener.as_fd()).expect("a socket has an id");
    let file = std::fs::File::open("/dev/null").unwrap();
    assert_eq!(sys::socket_id(file.as_fd()), None, "not a socket");

    let found = |scope| {
        let mut v = sys::socket_holders(id, scope);
        v.sort_unstable();
        v
    };
    // Other tests of this binary fork in parallel, and a forked child holds
    // our descriptors until it execs: every answer is waited for.
    let settles = |scope, want: Vec<i32>| {
        let ok = wait_until(DEADLINE, || found(scope) == want).is_ok();
        assert!(ok, "{scope:?}: {:?}, want {want:?}", found(scope));
    };

    // Nobody else holds it yet; we never count ourselves.
    settles(Scope::All, vec![]);

    let holder = sleeper(Some(listener.as_raw_fd()), &[]);
    let bystander = sleeper(None, &[]);
    settles(Scope::All, vec![holder.pid()]);
    settles(Scope::DescendantsOf(me()), vec![holder.pid()]);
    settles(Scope::DescendantsOf(holder.pid()), vec![holder.pid()]);
    settles(Scope::DescendantsOf(bystander.pid()), vec![]);

    drop(holder);
    settles(Scope::All, vec![]);
}

/// A double-forked daemon's grandchild holding the socket comes back to a
/// subreaper and is found among its descendants (Linux; macOS has no
/// subreaper and finds it only with `Scope::All`).
#[test]
fn an_orphan_holding_the_socket_is_found() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let id = sys::socket_id(listener.as_fd()).unwrap();
    let subreaper = sys::set_child_subreaper();
    assert_eq!(subreaper, cfg!(target_os = "linux"));

    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        r#""$0" -c 'import time; time.sleep(60)' </dev/null >/dev/null 2>&1 & echo $!"#,
        python(),
    ])
    .stdout(Stdio::piped());
    // SAFETY: only fcntl, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let out = cmd.output().expect("run sh");
    let orphan: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the orphan's pid");
    let _cleanup = KillPid(orphan);

    let all = wait_until(DEADLINE, || {
        sys::socket_holders(id, Scope::All) == vec![orphan]
    });
    assert!(
        all.is_ok(),
        "All: {:?}, want [{orphan}]",
        sys::socket_holders(id, Scope::All)
    );
    if subreaper {
        let mine = wait_until(DEADLINE, || {
            sys::socket_holders(id, Scope::DescendantsOf(me())) == vec![orphan]
        });
        assert!(
            mine.is_ok(),
            "DescendantsOf(us): {:?}, want [{orphan}]",
            sys::socket_holders(id, Scope::DescendantsOf(me()))
        );
    }
}

/// SIGKILLs a pid at the end and reaps it if it is our child (as a
/// subreaper, an adopted orphan is).
struct KillPid(i32);

impl Drop for KillPid {
    fn drop(&mut self) {
        // SAFETY: kill and waitpid on one concrete pid > 1 this test made.
        unsafe {
            if self.0 > 1 {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
}

#[test]
fn zombies_and_groups_of_zombies_are_not_alive() {
    // A child in its own group that exits at once and is not yet reaped.
    let mut zombie = Command::new("/bin/sh")
        .args(["-c", "exit 0"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = zombie.id() as i32;
    let gone = wait_until(DEADLINE, || !sys::is_alive(pid));
    // SAFETY: signal 0 only asks whether the pid exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    assert!(gone.is_ok(), "a zombie counts as alive");
    assert!(exists, "the zombie should still exist until reaped");
    assert!(!sys::group_alive(pid), "a group of zombies counts as alive");
    assert_eq!(sys::group_members(pid), Vec::<i32>::new());
    zombie.wait().unwrap();
    assert!(!sys::is_alive(pid));

    // A live group of one.
    let mut cmd = Command::new(python());
    cmd.args(["-c", "import time; time.sleep(60)"])
        .process_group(0);
    let live = Reaped(cmd.spawn().unwrap());
    assert!(sys::is_alive(live.pid()));
    assert!(sys::group_alive(live.pid()));
    assert_eq!(sys::group_members(live.pid()), vec![live.pid()]);

    // A group whose leader is a zombie but whose member lives.
    let mut leader = Command::new("/bin/sh")
        .args(["-c", "sleep 60 & exit 0"])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pgid = leader.id() as i32;
    let member = poll(DEADLINE, || {
        (!sys::is_alive(pgid))
            .then(|| sys::group_members(pgid).first().copied())
            .flatten()
    });
    let alive = sys::group_alive(pgid);
    if let Some(m) = member {
        // SAFETY: kill(2) on the sleep this test started.
        unsafe { libc::kill(m, libc::SIGKILL) };
    }
    leader.wait().unwrap();
    assert!(member.is_some(), "the leader's sleep should outlive it");
    assert!(alive, "a group with a live member behind a zombie leader");
}

#[test]
fn start_times_name_one_process_and_grow() {
    let first = sleeper(None, &[]);
    let t1 = sys::process_start_time(first.pid()).expect("start time");
    assert_eq!(sys::process_start_time(first.pid()), Some(t1), "stable");
    // Linux counts clock ticks (10 ms): make sure one passes.
    std::thread::sleep(Duration::from_millis(30));
    let second = sleeper(None, &[]);
    let t2 = sys::process_start_time(second.pid()).expect("start time");
    assert!(t2 > t1, "a later process started later: {t1} then {t2}");
    let ours = sys::process_start_time(me()).unwrap();
    assert!(ours <= t1);
    drop(first);
    assert_eq!(sys::process_start_time(i32::MAX), None);
    // The age on the same clock: this test process is older than the
    // sleepers, and none is older than the test run.
    let age_ours = sys::process_age(ours).expect("our age");
    let age_second = sys::process_age(t2).expect("its age");
    assert!(age_ours >= age_second, "{age_ours:?} < {age_second:?}");
    assert!(age_ours < Duration::from_secs(3600), "{age_ours:?}");
    assert_eq!(
        sys::process_age(u64::MAX),
        None,
        "a start ahead of the clock"
    );
}

#[test]
fn command_lines_memory_and_executables() {
    let child = sleeper(None, &["--flag", "two words"]);
    let want = "import time time.sleep(60) --flag two words";
    let cmd = poll(DEADLINE, || {
        sys::process_command(child.pid()).filter(|c| c.ends_with(want))
    });
    assert!(cmd.is_some(), "{:?}", sys::process_command(child.pid()));
    assert!(!cmd.unwrap().contains('\n'));
    // Right after exec python has mapped little yet: wait for it.
    let rss = poll(DEADLINE, || {
        sys::resident_bytes(child.pid()).filter(|b| *b > 1 << 20)
    });
    assert!(rss.is_some(), "{:?}", sys::resident_bytes(child.pid()));
    let ours = std::env::current_exe().unwrap();
    let same = |pid| sys::executable(pid).is_some_and(|e| sys::same_file_path(&e, &ours));
    assert!(same(me()));
    assert!(!same(child.pid()));
}

#[test]
fn listeners_and_the_port_holder() {
    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ours.local_addr().unwrap().port();
    let listed = sys::tcp_listeners(port).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].ours && listed[0].addr == ours.local_addr().unwrap());
    assert_eq!(Some(listed[0].socket), sys::socket_id(ours.as_fd()));
    drop(ours);

    // A foreign listener on the wildcard of a port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', {port}))\ns.listen(8)\ntime.sleep(60)"
    );
    let mut cmd = Command::new(python());
    cmd.args(["-c", &script]);
    let foreign = Reaped(cmd.spawn().unwrap());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listed = poll(DEADLINE, || {
        sys::tcp_listeners(port).ok().filter(|l| !l.is_empty())
    })
    .expect("the foreign listener is listed");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].addr, SocketAddr::from(([0, 0, 0, 0], port)));
    assert!(!listed[0].ours);
    let (pid, command) = sys::port_holder(addr).expect("a port holder");
    assert_eq!(pid, foreign.pid());
    assert!(command.contains("socket"), "{command}");
}
