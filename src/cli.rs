//! The command line, and nothing else.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes:
  run           0 stopped on request, or another supervisor already holds the lock
                78 invalid configuration (nothing started); 1 any other fatal error
  status        0 child running; 1 supervisor running, child not running;
                3 supervisor not running; 4 unknown
  stop          0 the supervisor has exited (or was not running); 1 timed out
  restart, reopen-logs
                0 signal sent; 3 no supervisor running
  check-config  0 valid; 78 invalid

Signals to a running supervisor:
  SIGTERM, SIGINT  stop the child's process group gracefully, then exit 0
                   (a second one kills the group at once)
  SIGHUP           reopen both log files (never forwarded to the child)
  SIGUSR1          restart the child; the listening socket stays open

Config lookup: --config, else $SUPERVISOR_CONFIG, else config/supervisor.toml.";

/// Keeps one network service alive: a single instance, the port bound first
/// and handed to the child as fd 3, restarts with backoff.
#[derive(Debug, Parser)]
#[command(name = "supervisor", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The configuration file (else $SUPERVISOR_CONFIG, else config/supervisor.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run in the foreground: lock, bind, start the child, keep it alive.
    Run,
    /// Tell whether the supervisor and its child run (see the exit codes).
    Status {
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Stop the running supervisor and its child, and wait for it to exit.
    Stop {
        /// How long to wait (default: child.stop_timeout + 5s), e.g. "30s".
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Restart the child gracefully; the listening socket stays open.
    Restart,
    /// Reopen the log files (same as sending SIGHUP).
    ReopenLogs,
    /// Validate the configuration and print it resolved.
    CheckConfig,
    /// Print a shell completion script (e.g. `supervisor completions zsh > _supervisor`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page in roff (e.g. `supervisor man > supervisor.1`).
    Man,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write it like \"250ms\", \"10s\", \"5m\")"))
}
