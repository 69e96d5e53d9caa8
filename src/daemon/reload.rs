//! `reload` (SIGUSR2): the supervisor re-executes itself in place — same
//! pid, same lock, same listening socket, same child — so a new config or
//! an upgraded binary never closes the port.
//!
//! 1. Preflight: the binary at the path we were started from (a replaced
//!    one, after an upgrade) is asked which handoff it speaks (the hidden
//!    `handoff-version`: anything but this build's version, an older build
//!    or another program included, is never executed), then runs
//!    `check-config` on the config, told the handoff version it would get.
//!    Each is our child like any other: reaped by the one reaper, its stderr
//!    read by the loop, killed after [`PREFLIGHT_TIMEOUT`]. A failure is
//!    logged and recorded (`supervisor.reload_error`, which `reload`
//!    prints) and nothing changes.
//! 2. The handoff ([`super::handoff`]): a versioned JSON record in an unlinked
//!    file, plus the descriptors it names — the lock, the socket, the
//!    notify socket, the child's log pipes (the reader thread stops first,
//!    having written what they held) — made inheritable; every other
//!    descriptor stays close-on-exec. The handled signals are blocked
//!    across the exec: one that arrives meanwhile waits until the new
//!    image has its handlers.
//! 3. `execve`. If it fails, everything is put back and the old image runs
//!    on, saying why.
//! 4. The new image (`commands::run` sees [`HANDOFF_ENV`]) takes the lock
//!    and descriptors over without taking or releasing anything
//!    ([`handoff::take`]), builds its driver from them once
//!    (`Daemon::new` with `Origin::Resumed`: the machine restored, the
//!    record carried) and compares the config with the one
//!    the child runs under: `[child]`/`[health]` changed → a graceful
//!    restart; `[listen]` changed → the new address bound first, the child
//!    restarted onto it, the old socket closed (if it cannot be bound,
//!    everything stays as it was); the rest applies live.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::handoff::{
    self, Handoff, MachineHand, MetricsHand, NotifyHand, PipeHand, HANDOFF_ENV, HANDOFF_VERSION,
    HANDOFF_VERSION_ENV,
};
use super::helper::Helper;
use super::{signals, Daemon};
use crate::config::Config;
use crate::exit::Fatal;
use crate::logs::{Handed, Readers, Stream};
use crate::policy::{Event, ExitKind, Want};
use signal_hook_tokio::Signals;

use crate::state::{self, ReloadError};
use crate::sys;
use crate::text::{describe_exit, human};

/// A preflight that takes longer is killed and the reload given up.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);
/// What of the preflight's stderr is kept for the reason.
const STDERR_CAP: usize = 4096;

/// The preflight under way: first the new binary is asked which handoff
/// it speaks, then it checks the config.
pub(crate) struct Preflight {
    helper: Helper,
    exe: PathBuf,
    step: Step,
    said: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `EXE handoff-version`: an older build, or anything that is not a
    /// supervisor, fails this.
    Asking,
    /// `EXE --config CONFIG check-config`.
    Checking,
}

impl Preflight {
    /// The process, whose output the driver's loop reads.
    pub(super) fn helper(&mut self) -> &mut Helper {
        &mut self.helper
    }

    /// When it is to be killed.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.helper.deadline()
    }
}

/// The line `supervisor handoff-version` prints.
pub(crate) fn handoff_answer() -> String {
    format!("supervisor-handoff {HANDOFF_VERSION}")
}

/// The handoff version in what a binary answered to `handoff-version`:
/// exactly one line `supervisor-handoff N`.
fn answered_version(said: &str) -> Option<u32> {
    match said.trim().lines().collect::<Vec<_>>().as_slice() {
        [line] => line
            .strip_prefix("supervisor-handoff ")?
            .trim()
            .parse()
            .ok(),
        _ => None,
    }
}

impl Daemon {
    /// SIGUSR2 / `supervisor reload`: run the preflight.
    pub(super) fn begin_reload(&mut self) {
        if self.reloading.is_some() {
            info!("SIGUSR2: a reload is already under way");
            return;
        }
        if self.machine.handover().is_some() {
            return self.reload_failed(Fatal::failure(
                "a handover is in progress (two children run for a moment); reload once it is over",
            ));
        }
        if MachineHand::of(&self.machine.snapshot(), Instant::now()).is_none() {
            if self.machine.want() == Want::Up {
                // A restart under way: reload once the child runs again,
                // within the stop budget.
                if self.reload_waits.is_none() {
                    let budget = super::stop_budget(self.cfg.child.stop_timeout);
                    self.reload_waits = Some(Instant::now() + budget);
                    info!(
                        "SIGUSR2 while the supervisor is {}: reloading once its child runs again \
                         (waiting up to {})",
                        self.machine.state_name(),
                        human(budget)
                    );
                }
                return;
            }
            return self.reload_failed(Fatal::failure(format!(
                "the supervisor is {} (it is exiting); not reloading",
                self.machine.state_name()
            )));
        }
        // Resolved now: an upgrade may have replaced the file or moved the
        // link we were started through.
        let exe = std::fs::canonicalize(&self.exe).unwrap_or_else(|_| self.exe.clone());
        // As root, even the preflight runs it as root: it must be root's,
        // all the way up, before it runs at all.
        if let Err(e) = crate::fsafe::check_root_file(
            "the supervisor's executable",
            &self.exe,
            "install it where only root can change it, or run the supervisor as the \
             service's user instead of root",
        ) {
            return self.reload_failed(Fatal::config(e));
        }
        info!(
            "SIGUSR2: reloading; asking {} which handoff it speaks, then checking {} with it",
            exe.display(),
            self.cfg.path.display(),
        );
        self.preflight_step(exe, Step::Asking);
    }

    fn preflight_step(&mut self, exe: PathBuf, step: Step) {
        let mut cmd = Command::new(&exe);
        match step {
            Step::Asking => cmd.arg("handoff-version"),
            Step::Checking => cmd
                .arg("--config")
                .arg(&self.cfg.path)
                .arg("check-config")
                .env(HANDOFF_VERSION_ENV, HANDOFF_VERSION.to_string()),
        };
        match Helper::spawn(cmd, step == Step::Asking, PREFLIGHT_TIMEOUT) {
            Ok(helper) => {
                self.reloading = Some(Preflight {
                    helper,
                    exe,
                    step,
                    said: Vec::new(),
                })
            }
            Err(e) => {
                self.reload_failed(Fatal::failure(format!("cannot run {}: {e}", exe.display())))
            }
        }
    }

    /// The preflight's deadline passed: kill it.
    pub(super) fn reload_tick(&mut self, now: Instant) {
        if let Some(p) = self.reloading.as_mut().filter(|p| p.helper.overdue(now)) {
            p.helper.kill();
        }
        self.reload_when_settled(now);
    }

    /// A reload that waits for a restart: begun once the child runs (or
    /// backs off, or waits for the port) again; failed when the
    /// supervisor is exiting instead, or the stop budget is spent.
    pub(super) fn reload_when_settled(&mut self, now: Instant) {
        let Some(deadline) = self.reload_waits else {
            return;
        };
        if self.machine.want() != Want::Up {
            self.reload_waits = None;
            return self.reload_failed(Fatal::failure("the supervisor is exiting; not reloading"));
        }
        if MachineHand::of(&self.machine.snapshot(), now).is_some() {
            self.reload_waits = None;
            return self.begin_reload();
        }
        if now >= deadline {
            self.reload_waits = None;
            self.reload_failed(Fatal::failure(format!(
                "the supervisor was still {} when its stop budget ran out; try again",
                self.machine.state_name()
            )));
        }
    }

    /// What the preflight printed (kept for the reason).
    pub(super) fn preflight_said(&mut self, got: io::Result<Vec<u8>>) {
        if let Some(p) = self.reloading.as_mut() {
            if let Some(b) = p.helper.read(got) {
                let room = STDERR_CAP.saturating_sub(p.said.len());
                p.said.extend_from_slice(&b[..b.len().min(room)]);
            }
        }
    }

    /// A reaped pid: the preflight's end, if it is. Whether it was.
    pub(super) fn preflight_reaped(&mut self, pid: i32, kind: ExitKind) -> bool {
        let Some(mut p) = self.reloading.take_if(|p| p.helper.pid() == pid) else {
            return false;
        };
        // It has exited: what it printed is all in the pipe already.
        let room = STDERR_CAP.saturating_sub(p.said.len());
        let rest = p.helper.rest(room);
        p.said.extend(rest);
        let said = one_line(&String::from_utf8_lossy(&p.said));
        let exe = p.exe.display();
        let killed = p.helper.killed();
        if p.step == Step::Asking {
            match (kind, answered_version(&said)) {
                (ExitKind::Code(0), Some(HANDOFF_VERSION)) => {
                    self.preflight_step(p.exe, Step::Checking)
                }
                (ExitKind::Code(0), Some(v)) => self.reload_failed(Fatal::failure(format!(
                        "{exe} speaks handoff version {v}, this supervisor hands over version \
                         {HANDOFF_VERSION}; it was not executed (stop and start the supervisor \
                         to switch to it)"
                    ))),
                _ if killed => self.reload_failed(Fatal::failure(format!(
                        "{exe} did not answer `handoff-version` within {}; it was not executed",
                        human(PREFLIGHT_TIMEOUT)
                    ))),
                _ => self.reload_failed(Fatal::failure(format!(
                        "{exe} does not speak the handoff protocol: asked `handoff-version`, it {}{}; it was not executed",
                        describe_exit(kind),
                        if said.is_empty() {
                            " saying nothing".to_owned()
                        } else {
                            format!(" saying {said:?}")
                        }
                    ))),
            }
            return true;
        }
        // A refusal comes typed (`exit::Fatal` as one JSON line on stderr:
        // the same build, as the handoff version proved); anything else
        // the binary printed is kept as it is.
        let refusal = refusal(&p.said, kind);
        match (kind, killed, refusal) {
            // Carried out by the loop, which holds the signal stream.
            (ExitKind::Code(0), _, _) => self.exec_due = Some(p.exe),
            (ExitKind::Code(crate::exit::CONFIG), _, refusal) => {
                let why = match refusal {
                    Some(f) => one_line(f.detail.as_deref().unwrap_or(&f.message)),
                    None => said,
                };
                self.reload_failed(Fatal::config(format!("the config is invalid: {why}")))
            }
            (_, true, _) => self.reload_failed(Fatal::failure(format!(
                "{exe} check-config did not finish within {}",
                human(PREFLIGHT_TIMEOUT)
            ))),
            (kind, false, refusal) => {
                let said = refusal.map_or(said, |f| one_line(&f.reason()));
                self.reload_failed(Fatal::failure(format!(
                    "{exe} check-config {}{}",
                    describe_exit(kind),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(": {said}")
                    }
                )))
            }
        }
        true
    }

    /// The reload cannot go on: logged with what follows (nothing
    /// changes), recorded for `reload` to print (the code it exits with).
    pub(super) fn reload_failed(&mut self, problem: Fatal) {
        let message = problem.reason();
        warn!("reload failed: {message}; carrying on unchanged");
        self.seen.reload_error = Some(ReloadError {
            at: state::timestamp_ms(SystemTime::now()),
            code: problem.code,
            message,
        });
        self.write_state();
    }

    /// Hand everything over and `execve` the new image. Returns only if
    /// the exec failed, with everything put back. `stream`: the signal
    /// stream, whose caught but unread signals are raised again once the handled
    /// set is blocked, so they stay pending across the exec for the new
    /// image (a `restart` whose SIGUSR1 came in the last moment is not
    /// lost with the old image's signal pipe).
    pub(super) fn exec_new_image(&mut self, exe: &Path, stream: &mut Signals) {
        let now = Instant::now();
        if self.machine.handover().is_some() {
            return self.reload_failed(Fatal::failure(
                "a handover began during the reload's checks; reload once it is over",
            ));
        }
        let Some(machine) = MachineHand::of(&self.machine.snapshot(), now) else {
            return self.reload_failed(Fatal::failure(format!(
                "the supervisor became {}; try again",
                self.machine.state_name()
            )));
        };
        // The log pipes: the reader thread writes what they hold and stops.
        let pipes: Vec<Handed> = self
            .logs
            .readers
            .take()
            .map(Readers::detach)
            .unwrap_or_default();
        let notify = self.notify.as_ref().map(|n| {
            let (fd, env_value, cleanup) = n.handover();
            NotifyHand {
                fd,
                env_value,
                cleanup,
            }
        });
        let (listen_fd, managers) = self.port.hand();
        let handoff =
            Handoff {
                version: HANDOFF_VERSION,
                lock_fd: self.state.lock().raw_fd(),
                listen_fd,
                inherited: self.port.shown().inherited,
                socket_id: self.port.shown().socket_id,
                managers,
                notify,
                pipes: pipes
                    .iter()
                    .map(|p| PipeHand {
                        fd: p.file.as_raw_fd(),
                        stderr: p.stream == Stream::Stderr,
                        pid: p.pid,
                    })
                    .collect(),
                config: self.cfg.to_toml(),
                started_at_ms: handoff::unix_ms(self.seen.me.started_at),
                reloads: self.seen.me.reloads,
                machine,
                group: self.seen.group,
                child_status: self.seen.status.clone(),
                last_exit_at_ms: self.seen.last_exit_at.map(handoff::unix_ms),
                alerts: self.seen.alerts.clone(),
                creds: self.recipe.creds.clone(),
                counters: Some(self.counters()),
                metrics: self.metrics.as_ref().zip(self.cfg.metrics.address).map(
                    |((_, fd), addr)| MetricsHand {
                        fd: *fd,
                        address: addr.to_string(),
                    },
                ),
            };
        let error = match handoff::write(self.state.lock().dir_fd(), &handoff) {
            Ok(file) => {
                let mut fds: Vec<RawFd> = vec![handoff.lock_fd, file.as_raw_fd()];
                fds.extend(handoff.listen_fd);
                fds.extend(handoff.notify.as_ref().map(|n| n.fd));
                fds.extend(handoff.pipes.iter().map(|p| p.fd));
                fds.extend(handoff.metrics.as_ref().map(|m| m.fd));
                let held = signals::hold();
                let requeued = signals::requeue_caught(stream);
                info!(
                    "reload: executing {} (pid {} stays; handing over {} descriptors{})",
                    exe.display(),
                    std::process::id(),
                    fds.len(),
                    match requeued {
                        0 => String::new(),
                        n => format!(", and {} for it", crate::text::count(n as u64, "signal")),
                    }
                );
                let e = exec(exe, &self.exe, &self.cfg.path, file.as_raw_fd(), &fds);
                // Still here: the exec failed. Put everything back.
                for fd in &fds {
                    let _ = sys::set_cloexec(*fd, true);
                }
                // What was raised again is delivered now, to the stream.
                let _ = held.thread_unblock();
                drop(file);
                e
            }
            Err(e) => e,
        };
        match self
            .logs
            .files
            .as_ref()
            .map(|f| Readers::start(f.child.clone(), self.logs.counts.clone()))
        {
            Some(Ok(readers)) => {
                for p in pipes {
                    readers.add(p.file, p.stream, p.pid);
                }
                self.logs.readers = Some(readers);
            }
            Some(Err(e)) => {
                warn!("cannot restart the thread that reads the child's output: {e}; it is lost")
            }
            None => {}
        }
        self.reload_failed(Fatal::failure(format!(
            "cannot execute {}: {error}",
            exe.display()
        )));
    }

    /// In the new image, started from the handoff ([`super::Origin`]):
    /// say so, report what went wrong with the new config, apply what
    /// changed. `old` is the config the child runs under; `self.cfg`
    /// what was read now.
    pub(super) fn carry_on(&mut self, old: &Config, problems: Vec<Fatal>) {
        info!(
            "reloaded: supervisor {} now runs {} {} ({}); child {}",
            std::process::id(),
            self.seen.me.executable,
            env!("CARGO_PKG_VERSION"),
            crate::text::count(self.seen.me.reloads.into(), "reload"),
            self.machine
                .child_pid()
                .map_or("none".into(), |p| format!("{p} carries on"))
        );
        for problem in problems {
            self.reload_failed(problem);
        }
        // Health probes of a running child go on from now.
        self.probes
            .schedule(self.machine.child_pid().is_some(), Instant::now());
        self.apply_changes(old);
        self.write_state();
        // A child that ended while the old image handed over is a zombie
        // whose SIGCHLD went to the old image: reap it now, not at the
        // next one (which might never come).
        self.reap();
    }

    /// What changed in the config since the child started, applied: a
    /// socket bound for a changed `[listen]` takes over at the next launch
    /// (the child is restarted onto it); a changed `[child]` or `[health]`
    /// restarts the child gracefully; the rest is live already.
    fn apply_changes(&mut self, old: &Config) {
        let cfg = &self.cfg;
        if self.port.switching() {
            info!(
                "reload: {} bound; the child moves there from {}",
                cfg.listen.address, old.listen.address
            );
            match self.machine.child_pid() {
                // Onto the new socket: the old child must go first.
                Some(_) => self.feed(Event::RestartStopFirst),
                None => self.port.switch(),
            }
        } else if cfg.child != old.child
            || cfg.health != old.health
            || cfg.listen.name != old.listen.name
        {
            if self.machine.child_pid().is_some() {
                info!("reload: [child] or [health] changed; restarting the child gracefully");
                self.feed(Event::Restart);
            }
        } else if self.machine.child_pid().is_some() {
            info!("reload: nothing the child depends on changed; it carries on");
        }
    }
}

/// The refusal `check-config` printed as a reload's preflight (its last
/// line that is an `exit::Fatal` in JSON), when it exited with its code.
fn refusal(said: &[u8], kind: ExitKind) -> Option<Fatal> {
    String::from_utf8_lossy(said)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Fatal>(l).ok())
        .filter(|f| kind == ExitKind::Code(f.code))
}

/// Lines as one, as a reason in a log line reads best.
fn one_line(text: &str) -> String {
    text.trim().replace('\n', " / ")
}

/// `execve(exe --config CONFIG run)` with `fds` inheritable and the handoff
/// named in the environment; `argv0` is the path we were started as, so
/// the new image resolves the same link at its own next reload. Returns
/// only on failure.
fn exec(exe: &Path, argv0: &Path, config: &Path, handoff: RawFd, fds: &[RawFd]) -> io::Error {
    let c = |s: OsString| CString::new(s.into_vec()).map_err(|_| io::Error::other("NUL in a path"));
    let built = (|| -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = c(exe.as_os_str().to_owned())?;
        let argv = vec![
            c(argv0.as_os_str().to_owned())?,
            c("--config".into())?,
            c(config.as_os_str().to_owned())?,
            c("run".into())?,
        ];
        let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        env.insert(HANDOFF_ENV.into(), handoff.to_string().into());
        let env = env
            .into_iter()
            .map(|(k, v)| {
                let mut e = k.into_vec();
                e.push(b'=');
                e.extend(v.into_vec());
                CString::new(e).map_err(|_| io::Error::other("NUL in the environment"))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok((path, argv, env))
    })();
    let (path, argv, env) = match built {
        Ok(b) => b,
        Err(e) => return e,
    };
    for fd in fds {
        if let Err(e) = sys::set_cloexec(*fd, false) {
            return e;
        }
    }
    match nix::unistd::execve(&path, &argv, &env) {
        Err(e) => io::Error::from(e),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preflight_refusal_comes_back_typed_without_its_consequence() {
        let sent = Fatal::config("invalid configuration")
            .with_detail("/c.toml:3:1: key `child.bogus`: unknown key")
            .then(crate::exit::NOTHING_STARTED);
        let said = format!(
            "supervisor: warning: something first\n{}\n",
            serde_json::to_string(&sent).unwrap()
        );
        let got = refusal(said.as_bytes(), ExitKind::Code(78)).unwrap();
        assert_eq!(
            (got.code, got.detail.as_deref()),
            (78, sent.detail.as_deref())
        );
        assert_eq!(got.consequence, None);
        // Another exit than the refusal's, or plain text: not a refusal.
        assert_eq!(refusal(said.as_bytes(), ExitKind::Code(1)), None);
        assert_eq!(
            refusal(b"supervisor: invalid configuration:\n", ExitKind::Code(78)),
            None
        );
    }

    #[test]
    fn only_this_handoff_version_answered_alone_is_taken() {
        assert_eq!(answered_version(&handoff_answer()), Some(HANDOFF_VERSION));
        assert_eq!(answered_version("supervisor-handoff 0\n"), Some(0));
        for said in [
            "",
            "supervisor 0.1.0",
            "supervisor-handoff one",
            "supervisor-handoff 1\nsupervisor-handoff 2",
            "error: unrecognized subcommand 'handoff-version'",
        ] {
            assert_eq!(answered_version(said), None, "{said:?}");
        }
    }
}
