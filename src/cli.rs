//! The command line, and nothing else.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes:
  run           0 stopped on request, or another supervisor already holds the lock
                78 invalid configuration (nothing started); 1 any other fatal error
  status        0 child running; 1 supervisor running, child not running;
                3 supervisor not running; 4 unknown
  status --check ready
                silent: 0 child running and ready; 1 not (yet); 3 no supervisor
  stop          0 the supervisor has exited (or was not running); 1 timed out
  restart, reopen-logs
                0 signal sent; 3 no supervisor running
  reload        0 the new image runs; 78 invalid configuration; 1 it failed
                (the old image runs on); 3 no supervisor running
  check-config  0 valid; 78 invalid
  logs          0 printed (with -f: stopped by SIGINT/SIGTERM or a closed stdout);
                4 the log cannot be read; 78 invalid configuration
  launchd, systemd
                0 done; 1 failed, or install/uninstall without --dry-run off macOS;
                2 a --label/--unit that is not [A-Za-z0-9._-]; 78 invalid configuration

Signals to a running supervisor:
  SIGTERM, SIGINT  stop the child's process group gracefully, then exit 0
                   (a second one kills the group at once)
  SIGHUP           reopen both log files (never forwarded to the child)
  SIGUSR1          restart the child; the listening socket stays open
  SIGUSR2          reload: re-execute in place (same pid, lock, socket and
                   child), reading the config again

Config lookup: --config, else $SUPERVISOR_CONFIG, else config/supervisor.toml.";

/// Keeps one network service alive: a single instance, the port bound first
/// and handed to the child as fd 3, restarts with backoff.
#[derive(Debug, Parser)]
#[command(name = "supervisor", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// The configuration file (else $SUPERVISOR_CONFIG, else config/supervisor.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run in the foreground: lock, bind, start the child, keep it alive.
    Run,
    /// Tell whether the supervisor and its child run (see the exit codes).
    Status {
        /// One JSON object on stdout (the same as --format json).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// How to print it: text (default), json, or prometheus (the text
        /// exposition format, e.g. for node_exporter's textfile collector).
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<crate::status::Format>,
        /// Print nothing; answer with the exit code alone (an exec probe for
        /// Kubernetes or `podman healthcheck`): "ready" is 0 when the child
        /// runs and is ready, 1 otherwise, 3 when no supervisor runs.
        #[arg(long, value_enum, value_name = "WHAT", conflicts_with_all = ["json", "format"])]
        check: Option<Check>,
    },
    /// Stop the running supervisor and its child, and wait for it to exit.
    Stop {
        /// How long to wait (default: the stop budget, child.stop_timeout + 19s), e.g. "30s".
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Restart the child gracefully; the listening socket stays open. Waits
    /// until the new child runs (and is ready) and the old one is gone.
    Restart {
        /// Only send the request (SIGUSR1); do not wait for the outcome.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait (default: health.start_timeout + child.stop_timeout + 5s), e.g. "90s".
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "no_wait")]
        timeout: Option<Duration>,
    },
    /// Reopen the log files (same as sending SIGHUP).
    ReopenLogs,
    /// Re-execute the supervisor in place with the config (and binary) on
    /// disk: same pid, lock, socket and child; waits for the new image.
    Reload,
    /// Validate the configuration and print it resolved.
    CheckConfig,
    /// For `reload`'s preflight: print the handoff version this build
    /// takes over from (`supervisor-handoff N`). A build that does not
    /// know it is never executed by a reload.
    #[command(hide = true)]
    HandoffVersion,
    /// Print the last lines of child.log (or supervisor.log); -f keeps following.
    #[command(after_help = LOGS_HELP)]
    Logs {
        /// Keep printing new lines, across size rotation, reopen-logs, logrotate
        /// (create or copytruncate) and a deleted log, until SIGINT/SIGTERM.
        #[arg(short, long)]
        follow: bool,
        /// How many lines to print first (0: none, with -f only new lines).
        #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 50)]
        lines: u64,
        /// Read supervisor.log, the supervisor's own events, instead of child.log.
        #[arg(long)]
        supervisor: bool,
    },
    /// Print a shell completion script (e.g. `supervisor completions zsh > _supervisor`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page in roff (e.g. `supervisor man > supervisor.1`).
    Man,
    /// The launchd job (macOS) that runs this config: print, install, uninstall.
    #[command(after_help = LAUNCHD_HELP)]
    Launchd {
        #[command(subcommand)]
        action: LaunchdAction,
    },
    /// The systemd units (Linux) that run this config.
    #[command(after_help = SYSTEMD_HELP)]
    Systemd {
        #[command(subcommand)]
        action: SystemdAction,
    },
}

const LOGS_HELP: &str = "\
The log is found through the config (log.dir), which must load. When the current
file has fewer than N lines, the earlier ones come from the rotated files (NAME.1,
NAME.2, ...), so -n 200 right after a rotation still shows 200 lines. Bytes are
printed as they are in the file.

-f works like `tail -F`: a renamed, replaced, truncated or deleted log is noticed
(checked every 100-250 ms), the old file is read to its end before the new one,
and nothing is ever held open in a way that stops rotation.

Exit codes: 0 printed, or with -f stopped by SIGINT/SIGTERM or a closed stdout;
4 the log cannot be read (no such file: has the supervisor run with this config?);
78 invalid configuration.";

const LAUNCHD_HELP: &str = "\
The job runs `SUPERVISOR --config CONFIG run`, both paths absolute and resolved
through symbolic links. The default label is supervisor.<listen.name>.<port>; a
label may use letters, digits, '.', '_' and '-' only (anything else: exit 2).

install and uninstall run launchctl and print each command they run; with
--dry-run they only print what they would do (on any OS). Without --dry-run
they work on macOS only: elsewhere they exit 1 and write nothing.";

const SYSTEMD_HELP: &str = "\
`systemd print` writes two units on stdout, each starting with a line
`# file: NAME.service` or `# file: NAME.socket`: the service runs
`SUPERVISOR --config CONFIG run` and binds the port itself; the optional socket
unit lets systemd hold the port instead (it survives the supervisor's own
restarts). With --dir DIR they are written as DIR/NAME.service and
DIR/NAME.socket instead, e.g. --user --dir ~/.config/systemd/user.
The default NAME is supervisor-<listen.name>-<port>.";

#[derive(Debug, Subcommand)]
pub(crate) enum LaunchdAction {
    /// Print the plist (launchd.plist(5)) for this config on stdout.
    #[command(after_help = LAUNCHD_HELP)]
    Print {
        #[command(flatten)]
        job: LaunchdJob,
    },
    /// Write ~/Library/LaunchAgents/LABEL.plist, bootstrap it into gui/$UID,
    /// and wait until the supervisor runs.
    #[command(after_help = LAUNCHD_HELP)]
    Install {
        #[command(flatten)]
        job: LaunchdJob,
        /// Replace an existing LABEL.plist that differs (the loaded job is booted out first).
        #[arg(long)]
        force: bool,
        /// Only print the file it would write and the launchctl commands.
        #[arg(long)]
        dry_run: bool,
    },
    /// Boot the job out of gui/$UID (stopping the supervisor and its child)
    /// and remove ~/Library/LaunchAgents/LABEL.plist.
    #[command(after_help = LAUNCHD_HELP)]
    Uninstall {
        /// The job's label (default: supervisor.<listen.name>.<port>).
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
        /// Only print the launchctl commands and the file it would remove.
        #[arg(long)]
        dry_run: bool,
    },
}

/// What selects and shapes the launchd job.
#[derive(Debug, clap::Args)]
pub(crate) struct LaunchdJob {
    /// The job's label (default: supervisor.<listen.name>.<port>).
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// launchd binds listen.address and passes the socket (a `Sockets` entry
    /// named listen.name), so even a SIGKILLed supervisor refuses no client.
    #[arg(long)]
    pub sockets: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SystemdAction {
    /// Print the service and socket units for this config (see below).
    #[command(after_help = SYSTEMD_HELP)]
    Print {
        /// A user unit (systemctl --user): no User=, WantedBy=default.target.
        #[arg(long)]
        user: bool,
        /// The units' name (default: supervisor-<listen.name>-<port>).
        #[arg(long, value_name = "NAME")]
        unit: Option<String>,
        /// Write NAME.service and NAME.socket into DIR instead of stdout.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// With --dir: replace unit files that differ.
        #[arg(long, requires = "dir")]
        force: bool,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write it like \"250ms\", \"10s\", \"5m\")"))
}

/// What `status --check` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Check {
    /// The child runs and is ready (per `[health]`, or once spawned without it).
    Ready,
}
