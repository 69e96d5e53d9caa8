//! Harness shared by the integration tests.
//!
//! Each test gets an [`Env`]: a temp dir holding a generated
//! `supervisor.toml` (state dir `run/`, log dir `logs/`, a free port) and a
//! python child from `tests/children/` that gets the temp dir as `argv[1]`.
//! [`Supervisor`] is one `supervisor run`; a thread reaps it at once, as
//! launchd would, so its exit status is known and it never lingers as a
//! zombie. Everything is waited for with a deadline, and every failure
//! panics with the commands, their exit statuses and stderr, the status
//! JSON, `supervisor.log`, `child.log` and the children's events.
//! Cleanup kills by pid only: the supervisors this test started, the child
//! process group recorded in `state.json`, and finally any process whose
//! argv names this test's temp dir.
//!
//! The rooms: `config` builds the temp dir and its config ([`Setup`]);
//! `env` is the test's view of it ([`Env`]: commands, status, waits,
//! events, diagnostics, cleanup); `supervisor` starts and reaps `run`;
//! `procs` answers questions about processes the same way on Linux and
//! macOS; `net` talks to the supervised port; `files` snapshots folders;
//! `users` is `nobody` for the cases that need another user; `venv` finds
//! the Python venv and the example binaries; `jobs` runs the
//! command lines of launchd and systemd job files; `background` runs a
//! client loop or a sampler beside the test until told to stop.
#![allow(dead_code)]

mod background;
mod config;
mod env;
mod files;
pub mod jobs;
mod net;
mod procs;
mod supervisor;
mod users;
mod venv;

// Each test file is its own crate and uses only part of the harness.
#[allow(unused_imports)]
pub use {
    background::*, config::*, env::*, files::*, net::*, procs::*, supervisor::*, users::*, venv::*,
};

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test: the one cargo built for this test run, or the
/// one `SUPERVISOR_TEST_BIN` names when the tests were compiled (CI runs
/// the suite again against the static musl build that way; cargo rebuilds
/// the tests when the variable changes).
pub const BIN: &str = match option_env!("SUPERVISOR_TEST_BIN") {
    Some(path) => path,
    None => env!("CARGO_BIN_EXE_supervisor"),
};

/// Deadline for anything that should happen "soon" on a noisy 2-core box.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Pause between two checks of a condition.
pub const POLL: Duration = Duration::from_millis(15);

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The real python3 executable (not a pyenv shim script), found once.
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if p.is_empty() {
                    "python3".into()
                } else {
                    p
                }
            }
            _ => "python3".into(),
        }
    })
}

/// Absolute path of a script in `tests/children/`.
pub fn script(name: &str) -> String {
    format!("{}/tests/children/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A port that was free a moment ago (the supervisor copes with a race).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Polls `cond` every [`POLL`] until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<(), Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(start.elapsed());
        }
        thread::sleep(POLL);
    }
}
