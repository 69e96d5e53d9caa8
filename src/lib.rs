//! `supervisor` keeps one network service alive from outside.
//!
//! How data flows: `main.rs` calls [`main`], which parses the command line
//! (`cli`) and hands it to `commands`, where every command returns an exit
//! code or one `exit::Fatal` error. `run` loads the [`config`], makes the
//! same checks `check-config` makes, takes the instance lock (`lock`),
//! opens the `logs`, then gives everything to the one async driver in
//! `daemon`. The driver binds the `listener` (fd 3), starts the `child`
//! (with the umask, nice and resource limits `attrs` plans) and feeds every
//! signal, child exit and timer as an event to the pure restart `policy`,
//! carrying out the actions it returns and recording each transition in
//! `state.json` (`state`); with `[health]` it also listens on the notify
//! socket and runs HTTP probes (`health`); with `[alerts]` it tells a
//! person through the alert command when `alerts` (a pure rule) says so;
//! on `reload` (SIGUSR2) it re-executes itself in place, handing the lock,
//! the socket and the child to its new image. The other subcommands
//! find the running supervisor without taking its lock
//! (`lock::find`, which proves the holder is the recorded supervisor), show its record (`status`) and talk to it
//! through signals; `launchd` and `systemd` write the job files that
//! run a config (`jobfile`). Words for people live in `text`; platform differences
//! in `sys` only.
//!
//! Only [`config`] is public (the fuzz target and the property tests read
//! the loader); everything else is the binary's.

#![warn(unreachable_pub)]

/// `eprintln!` that never panics: a closed or broken stderr (a launchd job
/// without a log path, a pipe whose reader left) must not turn an exit code
/// into a panic. The line goes out in one write, whole even where other
/// processes share the same stderr.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

/// `print!` that never panics (`supervisor status | head -1`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub(crate) use {out, say};

mod alerts;
mod attrs;
mod child;
mod cli;
mod commands;
pub mod config;
mod daemon;
mod exit;
mod fsafe;
mod health;
mod jobfile;
mod listener;
mod lock;
mod logs;
mod metrics;
mod pathdirs;
mod policy;
mod state;
mod status;
mod sys;
mod text;

/// The whole program: parse the command line, run the command, return the
/// exit code. `main.rs` only calls this.
pub fn main() -> i32 {
    use clap::Parser;
    // Before anything opens a file: keep 0-2 open and park fd 3 for the
    // listening socket, so no log or lock file ever lands there.
    listener::reserve_low_fds();
    let cli = cli::Cli::parse();
    commands::main(cli)
}
