//! `supervisor` keeps one network service alive from outside.
//!
//! How data flows: `main.rs` parses the command line ([`cli`]) and hands it
//! to [`commands`]. `run` loads the [`config`], checks the folders and takes
//! the instance [`lock`], opens the [`logs`], then gives everything to the
//! one async driver in [`daemon`]. The driver binds the [`listener`] (fd 3),
//! starts the [`child`] and feeds every signal, child exit and timer as an
//! event to the pure restart [`policy`], carrying out the actions it returns
//! and recording each transition in `state.json` ([`state`]); with
//! `[health]` it also listens on the notify socket and runs HTTP probes
//! ([`health`]). The other
//! subcommands find the running supervisor without taking its lock
//! ([`status`]) and talk to it through signals; `launchd` and `systemd`
//! write the job files that run a config ([`jobfile`]). Platform
//! differences live in [`sys`] only.

/// `eprintln!` that never panics: a closed or broken stderr (a launchd job
/// without a log path, a pipe whose reader left) must not turn an exit code
/// into a panic.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `print!` that never panics (`supervisor status | head -1`).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod child;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod health;
pub mod jobfile;
pub mod listener;
pub mod lock;
pub mod logs;
pub mod policy;
pub mod state;
pub mod status;
pub mod sys;
