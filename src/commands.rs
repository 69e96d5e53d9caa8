//! The subcommands: each a function from the parsed command line to an
//! exit code. `run` sets the stage for the driver; the others talk to a
//! running supervisor through signals, after proving it is the lock holder.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use nix::sys::signal::{kill, SigHandler, Signal};
use nix::unistd::Pid;
use tracing_subscriber::fmt::writer::MakeWriterExt;

use crate::cli::{Cli, Command};
use crate::config::{self, Config};
use crate::daemon::{self, Daemon};
use crate::exit;
use crate::lock::{self, InstanceLock};
use crate::logs::{LogSink, SinkWriter};
use crate::status;
use crate::sys;

pub fn main(cli: Cli) -> i32 {
    let path = config::locate(cli.config.as_deref());
    match cli.command {
        Command::Run => run(&path),
        Command::Status { json } => {
            status::run(Config::load(&path).map_err(|e| e.to_string()), json)
        }
        Command::Stop { timeout } => with_config(&path, |cfg| stop(&cfg, timeout)),
        Command::Restart => with_config(&path, |cfg| {
            signal(&cfg, Signal::SIGUSR1, "restart the child")
        }),
        Command::ReopenLogs => {
            with_config(&path, |cfg| signal(&cfg, Signal::SIGHUP, "reopen the logs"))
        }
        Command::CheckConfig => with_config(&path, |cfg| {
            crate::out!("{}", cfg.to_toml());
            exit::OK
        }),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "supervisor", &mut std::io::stdout());
            exit::OK
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => exit::OK,
                Err(e) => {
                    crate::say!("supervisor: cannot write the manual page: {e}");
                    exit::FAILURE
                }
            }
        }
    }
}

fn with_config(path: &Path, f: impl FnOnce(Config) -> i32) -> i32 {
    match Config::load(path) {
        Ok(cfg) => f(cfg),
        Err(e) => {
            crate::say!("supervisor: invalid configuration:\n{e}");
            exit::CONFIG
        }
    }
}

/// `supervisor run`: the launchd / systemd entry point.
fn run(path: &Path) -> i32 {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            crate::say!("supervisor: invalid configuration; nothing started:\n{e}");
            return exit::CONFIG;
        }
    };
    let creds = match crate::child::credentials(cfg.child.user.as_deref(), cfg.child.allow_root) {
        Ok(c) => c,
        Err(e) => {
            crate::say!("supervisor: {}: {e}; nothing started", cfg.path.display());
            return exit::CONFIG;
        }
    };
    // Hostile folders are refused before anything is created or locked.
    let state_dir = &cfg.supervisor.state_dir;
    let dirs = lock::check_dir("state dir", state_dir)
        .and_then(|exists| lock::check_dir("log dir", &cfg.log.dir).map(|_| exists))
        .and_then(|exists| match exists {
            true => Ok(()),
            false => lock::create_dir("state dir", state_dir, 0o700),
        });
    if let Err(e) = dirs {
        crate::say!("supervisor: {e}; nothing started");
        return exit::CONFIG;
    }

    let pid_path = status::pid_path(&cfg);
    let held = daemon::hold_signals();
    let lock = match InstanceLock::acquire(&pid_path) {
        Ok(Ok(lock)) => lock,
        Ok(Err(held)) => {
            // The deliberate exit 0: launchd's SuccessfulExit=false keeps
            // this copy from being respawned. Nothing was written.
            let who = held
                .pid
                .map_or("another supervisor (pid not yet written)".into(), |p| {
                    format!("pid {p}")
                });
            crate::say!(
                "supervisor: already running as {who} (lock {}); this copy exits and changes nothing",
                pid_path.display()
            );
            return exit::OK;
        }
        Err(e) => {
            crate::say!("supervisor: cannot lock {}: {e}", pid_path.display());
            return exit::FAILURE;
        }
    };

    // From here on we are the one supervisor.
    if let Err(e) = lock::create_dir("log dir", &cfg.log.dir, 0o750) {
        crate::say!("supervisor: {e}; nothing started");
        return exit::CONFIG;
    }
    // A file-size limit (RLIMIT_FSIZE) must fail a log write with EFBIG,
    // which the sinks drop and count, not kill us. The child gets every
    // signal reset to its default.
    // SAFETY: installs SIG_IGN, no handler code; nothing else sets SIGXFSZ.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGXFSZ, SigHandler::SigIgn) };
    let child_log = LogSink::new(
        cfg.log.dir.join("child.log"),
        cfg.log.max_bytes,
        cfg.log.max_files,
    );
    let supervisor_log = LogSink::new(
        cfg.log.dir.join("supervisor.log"),
        cfg.log.max_bytes,
        cfg.log.max_files,
    );
    let to_terminal = std::io::stderr().is_terminal();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_writer(
            SinkWriter(supervisor_log.clone())
                .and(std::io::stderr.with_filter(move |_| to_terminal)),
        )
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);

    // Whatever our parent leaked must not reach the child.
    sys::cloexec_from(4);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::say!("supervisor: cannot start the event loop: {e}");
            return exit::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let signals = daemon::register_signals(held)?;
        let notify = match cfg.health.notify {
            true => Some(
                crate::health::NotifySocket::bind(
                    &cfg.supervisor.state_dir,
                    creds.as_ref().map(|c| c.uid),
                )
                .map_err(|e| anyhow::anyhow!("cannot create the notify socket: {e}"))?,
            ),
            false => None,
        };
        Daemon::new(cfg, creds, lock, child_log, supervisor_log.clone(), notify)
            .run(signals)
            .await
    });
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!("fatal: {e:#}; exiting");
            crate::say!("supervisor: {e:#}");
            exit::FAILURE
        }
    }
}

fn signal(cfg: &Config, sig: Signal, what: &str) -> i32 {
    let Some(pid) = status::find_supervisor(cfg) else {
        crate::say!(
            "supervisor: no supervisor is running for {}; cannot {what}",
            cfg.path.display()
        );
        return exit::NOT_RUNNING;
    };
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) => exit::OK,
        Err(nix::errno::Errno::ESRCH) => {
            crate::say!("supervisor: supervisor {pid} exited meanwhile; cannot {what}");
            exit::NOT_RUNNING
        }
        Err(e) => {
            crate::say!("supervisor: cannot signal supervisor {pid}: {e}");
            exit::FAILURE
        }
    }
}

fn stop(cfg: &Config, timeout: Option<Duration>) -> i32 {
    let timeout = timeout.unwrap_or(cfg.child.stop_timeout + Duration::from_secs(5));
    let Some(pid) = status::find_supervisor(cfg) else {
        return exit::OK;
    };
    if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
        if e != nix::errno::Errno::ESRCH {
            crate::say!("supervisor: cannot signal supervisor {pid}: {e}");
            return exit::FAILURE;
        }
    }
    let deadline = Instant::now() + timeout;
    while sys::is_alive(pid) {
        if Instant::now() >= deadline {
            crate::say!(
                "supervisor: supervisor {pid} did not exit within {}; it may still be stopping its child",
                daemon::human(timeout)
            );
            return exit::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    exit::OK
}
