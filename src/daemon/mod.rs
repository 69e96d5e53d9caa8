//! The one async driver: the only code that touches processes, signals,
//! the socket and the state file while the supervisor runs.
//!
//! It turns the world into [`Event`]s for the pure [`Machine`] and carries
//! out the [`Action`]s it returns. Everything waits in one `select!`: the
//! signal stream (SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 and SIGCHLD),
//! the machine's single deadline, the notify socket and the HTTP probe
//! (with `[health]`), a refused state write's retry, the `max_memory` check
//! (only when it is set), the alert rule's deadlines and the alert
//! command's output (with `[alerts]`), a reload's preflight, and, only
//! while something other than our own child is being stopped, a short poll
//! for it to vanish. With a healthy child nothing is armed, so the
//! supervisor makes no wake-ups. Every child ends in the one reaper
//! (`waitpid(-1)`: we are a subreaper), which tells the child's exit, an
//! alert command's and a preflight's apart.
//!
//! The rooms: this file is the loop, the start (fresh, or resumed from a
//! reload's [`handoff`]) and the reaper; [`port`] is the socket (bound,
//! re-armed, switched, and the rivals holding it); [`launch`] brings a
//! child up on it; [`narrate`] puts the machine's decisions
//! into words and alerts; [`readiness`] hears probes and notify datagrams;
//! [`signals`] is the signal stream; [`record`] what `state.json` says and
//! writing it; [`probes`] HTTP probe timing; [`memory`] `max_memory`
//! sampling; [`orphan`] an earlier supervisor's leftovers; [`targets`]
//! what stop signals go to; [`alerting`] and [`hooks`] the alert rule's
//! side and the alert command, [`helper`] running either it or a reload's
//! preflight; [`reload`] re-executing in place.

mod alerting;
mod exporter;
pub(crate) mod handoff;
mod handover;
mod helper;
mod hooks;
mod launch;
pub(crate) mod memory;
mod narrate;
pub(crate) mod orphan;
mod port;
pub(crate) mod probes;
mod readiness;
pub(crate) mod record;
pub(crate) mod reload;
pub(crate) mod signals;
pub(crate) mod targets;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use signal_hook::consts::signal::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_tokio::Signals;
use tracing::{error, info, warn};

use crate::child::{self, Recipe};
use crate::config::{Config, LogTo};
use crate::exit::Fatal;
use crate::health::{self, Notice, NotifySocket};
use crate::listener::{Listener, Standby};
use crate::lock::InstanceLock;
use crate::logs::{Handed, LogCounts, LogSink, Readers};
use crate::policy::{Action, Event, ExitKind, HealthPolicy, Machine, Phase, Settings};
use crate::state;
use crate::sys;
use port::Port;
use record::{Group, Me, Observed, StateFile};
use targets::Targets;

/// How long SIGKILLed leftovers get to vanish before we go on without them.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long, at exit, a running alert command may still take (at most its
/// own timeout).
pub(crate) const HOOK_AT_EXIT: Duration = Duration::from_secs(2);
/// How long, at exit, the log reader may take to write what the pipes
/// still hold, should live writers keep it busy.
pub(crate) const PUMP_DRAIN: Duration = Duration::from_secs(2);
/// Beyond every bounded wait of the exit path: the state write (an
/// `F_FULLFSYNC` on macOS), the process's own exit, a busy machine.
pub(crate) const STOP_MARGIN: Duration = Duration::from_secs(5);

/// How long a supervisor may take to exit after SIGTERM, for the child's
/// `stop_timeout`, in whole seconds: the child's graceful stop (its stop
/// signal, SIGKILL after `stop_timeout`), [`KILL_GRACE`] for SIGKILLed
/// leftovers to vanish, a running alert command's [`HOOK_AT_EXIT`] and
/// then [`KILL_GRACE`] for its killed group, [`PUMP_DRAIN`] for the
/// child's last log lines, and [`STOP_MARGIN`]. `stop` waits this long;
/// launchd's `ExitTimeOut` and systemd's `TimeoutStopSec` are this: a
/// supervisor killed sooner would orphan a child in the middle of its
/// graceful stop.
pub(crate) fn stop_budget(stop_timeout: Duration) -> Duration {
    let total = stop_timeout + KILL_GRACE + HOOK_AT_EXIT + KILL_GRACE + PUMP_DRAIN + STOP_MARGIN;
    Duration::from_secs(total.as_secs() + u64::from(total.subsec_nanos() > 0))
}

/// `log.to = "files"`: the two log files.
pub(crate) struct LogFiles {
    pub(crate) child: Arc<LogSink>,
    pub(crate) supervisor: Arc<LogSink>,
}

/// The logs the driver writes, and the thread that fills `child.log`;
/// neither with `log.to = "stdout"` (the child writes into our stdout and
/// stderr itself).
struct Logs {
    files: Option<LogFiles>,
    /// Reads every child pipe; taken at exit to write the last lines.
    readers: Option<Readers>,
    /// What the reader has read, per stream.
    counts: Arc<LogCounts>,
}

pub(crate) struct Daemon {
    cfg: Config,
    machine: Machine,
    recipe: Recipe,
    /// fd 3 and what goes with it.
    port: Port,
    /// What stop signals go to while the machine is stopping.
    targets: Targets,
    /// During a handover: what the second child's stop signals go to.
    second: Targets,
    /// The new child's STATUS= text while it starts (shown once it serves).
    new_status: Option<String>,
    /// Why the new child of a handover could not be spawned: the
    /// handover's failure, not the serving child's (`seen.spawn_error`).
    new_spawn_error: Option<String>,
    seen: Observed,
    logs: Logs,
    /// During a handover: the second child's own notify socket (the new
    /// child's while it starts, the old child's while it drains), so what
    /// arrives there is known to be that child's even where the kernel
    /// does not say who sent it (macOS). Declared before `notify`, so it
    /// is closed (and its file removed) before the folder they share.
    notify_second: Option<NotifySocket>,
    /// Where a `notify` child reports READY=1, STATUS= and WATCHDOG=1.
    notify: Option<NotifySocket>,
    /// `state.json` and the lock. Declared after the notify sockets, so
    /// their files (and a private folder made for them) are removed
    /// before the lock is released: a supervisor that takes the lock next
    /// binds its own socket at that path, which must not then be removed
    /// from under it.
    state: StateFile,
    probes: probes::Probes,
    /// When the child's memory is checked next (`max_memory`).
    memory: memory::Sampler,
    /// `$NOTIFY_SOCKET` of the service manager that started us, if any.
    manager: Option<String>,
    /// A message for it, sent after the state is written.
    tell_manager: Option<String>,
    /// Complaints about notify datagrams, at most one line a minute.
    quiet: narrate::Quiet,
    /// `STATUS=` text writes `state.json` at most once a second
    /// (`readiness::STATUS_WRITE_EVERY`): the last such write, and when a
    /// text that came meanwhile is due.
    status_writes: (Option<Instant>, Option<Instant>),
    /// `[alerts]`: the rule and the command runner.
    alerting: Option<alerting::Alerting>,
    /// The path we were started as (a symlink stays a symlink): `reload`
    /// resolves it again, so after an upgrade that moved the link (Homebrew)
    /// the new binary is the one executed.
    exe: PathBuf,
    /// Why the supervisor gave up (`restart.give_up_after`): it exits 1
    /// with this as its last line once everything is stopped.
    gave_up: Option<String>,
    /// A `reload` whose preflight runs.
    reloading: Option<reload::Preflight>,
    /// The preflight passed: the loop execs this image next (it holds the
    /// signal stream, which the exec must drain).
    exec_due: Option<std::path::PathBuf>,
    /// A `reload` asked for during a restart: begun once the child runs
    /// again, or failed at this time (the stop budget).
    reload_waits: Option<Instant>,
    /// Why the handover under way failed, for the restart's outcome.
    handover_failure: Option<String>,
    /// Counters an earlier image of this process handed over (`reload`):
    /// what this one counts is added to them.
    carried: state::Counters,
    /// Handovers this image saw end, well or not.
    handovers: state::Handovers,
    /// `[metrics]`: what its requests read, and its listener's descriptor
    /// (served by a task; handed over by `reload`).
    metrics: Option<(Arc<exporter::View>, std::os::fd::RawFd)>,
    /// Until `run` starts: what a `reload`ed image still has to apply.
    carry: Option<Carry>,
    /// The machine said `Exit`: everything is stopped; the loop ends.
    exit: bool,
}

/// How this image of the supervisor began.
pub(crate) enum Origin {
    /// A fresh start, with the socket the service manager passed, if any.
    Fresh { passed: Option<Listener> },
    /// Re-executed by `reload`: carry on from the handoff.
    Resumed(Box<Resumption>),
}

/// What a `reload`ed image starts from: the handoff's record with its
/// descriptors owned, and what the new config made of it.
pub(crate) struct Resumption {
    /// The record (its descriptor numbers are spent: they are below).
    pub(crate) handoff: handoff::Handoff,
    pub(crate) listener: Option<Listener>,
    /// The child's log pipes.
    pub(crate) pipes: Vec<Handed>,
    /// The config the child runs under.
    pub(crate) old: Config,
    /// What went wrong with the new one (reported as the reload's failure).
    pub(crate) problems: Vec<Fatal>,
    /// A socket bound for a changed `[listen]`.
    pub(crate) next_listener: Option<Standby>,
    /// The `[metrics]` listener and the address it was bound for.
    pub(crate) metrics: Option<(OwnedFd, String)>,
}

/// What `run` still does with a [`Resumption`] once the driver is built.
struct Carry {
    old: Box<Config>,
    problems: Vec<Fatal>,
    /// The `[metrics]` listener and the address it was bound for.
    metrics: Option<(OwnedFd, String)>,
}

/// The path this program was started as: `argv[0]` made absolute when it
/// names a file (a link stays a link), else (found along PATH) the running
/// executable.
fn invoked_as() -> PathBuf {
    let current = || std::env::current_exe().unwrap_or_default();
    match std::env::args_os().next().map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) if p.components().count() > 1 => std::env::current_dir()
            .map(|cwd| cwd.join(&p))
            .unwrap_or_else(|_| current()),
        _ => current(),
    }
}

/// What woke the driver.
enum Wake {
    Signal(Option<i32>),
    Tick,
    OthersPoll,
    /// What a notify socket had queued (see `NotifySocket::recv_batch`):
    /// the serving child's socket, or the second child's.
    Notice(Vec<Result<Notice, health::Rejected>>, readiness::Via),
    ProbeDone(probes::Probed),
    ProbeDue,
    StateRetry,
    /// A `STATUS=` text held back to keep state writes rare.
    StatusDue,
    MemoryCheck,
    /// The alert rule's, the alert command's or the preflight's deadline.
    HelperTick,
    /// Output of the alert command (`true`) or the preflight.
    HelperOutput(bool, std::io::Result<Vec<u8>>),
}

impl Daemon {
    pub(crate) fn new(
        cfg: Config,
        creds: Option<child::Creds>,
        lock: InstanceLock,
        files: Option<LogFiles>,
        notify: Option<NotifySocket>,
        origin: Origin,
    ) -> Result<Daemon, Fatal> {
        let settings = Settings {
            initial_backoff: cfg.restart.initial_backoff,
            max_backoff: cfg.restart.max_backoff,
            reset_after: cfg.restart.reset_after,
            stop_timeout: cfg.child.stop_timeout,
            kill_grace: KILL_GRACE,
            overlap: cfg.restart.overlap,
            give_up_after: cfg.restart.give_up_after,
            health: HealthPolicy {
                readiness: cfg.health.readiness(),
                probe_ready: !cfg.health.notify && cfg.health.http.is_some(),
                start_timeout: cfg.health.start_timeout,
                failures: cfg.health.failures,
                watchdog: cfg.health.watchdog,
            },
        };
        let recipe = Recipe {
            command: cfg.child.command.clone(),
            cwd: cfg.child.cwd.clone(),
            env: cfg.child.env.clone(),
            inherit_env: cfg.child.inherit_env,
            fd_name: cfg.listen.name.clone(),
            notify_socket: notify.as_ref().map(|n| n.env_value.clone()),
            watchdog: cfg.health.watchdog.filter(|_| notify.is_some()),
            death_signal: cfg.child.stop_signal as i32,
            attrs: crate::attrs::Wanted::of(&cfg.child, creds.is_some()),
            creds,
            inherit_output: cfg.log.to == LogTo::Stdout,
        };
        let me = std::process::id() as i32;
        let exe = invoked_as();
        let mut seen = Observed {
            me: Me {
                pid: me,
                start_time: sys::process_start_time(me),
                boot_id: sys::boot_id(),
                started_at: SystemTime::now(),
                stop_timeout: cfg.child.stop_timeout,
                executable: std::fs::canonicalize(&exe)
                    .unwrap_or_else(|_| exe.clone())
                    .display()
                    .to_string(),
                reloads: 0,
                config: cfg.path.display().to_string(),
            },
            group: None,
            last_exit_at: None,
            status: None,
            last_probe: None,
            spawn_error: None,
            alerts: None,
            reload_error: None,
            restart: None,
            restart_answers: Default::default(),
            restart_asked: None,
            second: None,
            handover_at: None,
        };
        let mut machine = Machine::new(settings);
        let mut targets = Targets::default();
        let mut alerting = cfg
            .alerts
            .as_ref()
            .map(|a| alerting::Alerting::new(a, cfg.restart.reset_after));
        let (port, pipes, carry, carried) = match origin {
            Origin::Fresh { passed } => {
                let port = Port::fresh(&cfg.listen, passed);
                (port, Vec::new(), None, None)
            }
            Origin::Resumed(r) => {
                let Resumption {
                    handoff: h,
                    listener,
                    pipes,
                    old,
                    problems,
                    next_listener,
                    metrics,
                } = *r;
                let now = Instant::now();
                seen.me.reloads = h.reloads + 1;
                seen.me.started_at = handoff::from_unix_ms(h.started_at_ms);
                seen.status = h.child_status;
                seen.last_exit_at = h.last_exit_at_ms.map(handoff::from_unix_ms);
                seen.group = h.group;
                machine = Machine::restore(settings, h.machine.snapshot(now), now);
                if let Phase::Running { pid, .. } = machine.phase() {
                    targets = Targets::child(pid, seen.group.and_then(|g| g.start_time));
                }
                if let Some(a) = alerting.as_mut() {
                    a.resume(machine.streak(), h.alerts.as_ref());
                }
                let carry = Carry {
                    old: Box::new(old),
                    problems,
                    metrics,
                };
                let port = Port::resumed(
                    &cfg.listen,
                    listener,
                    next_listener,
                    h.managers,
                    (h.inherited, h.socket_id),
                );
                (port, pipes, Some(carry), h.counters)
            }
        };
        let counts = Arc::new(LogCounts::default());
        let readers = match &files {
            Some(f) => Some(
                Readers::start(f.child.clone(), counts.clone()).map_err(|e| {
                    Fatal::failure(format!(
                        "cannot start the thread that reads the child's output: {e}"
                    ))
                })?,
            ),
            None => None,
        };
        if let Some(readers) = &readers {
            for p in pipes {
                readers.add(p.file, p.stream, p.pid);
            }
        }
        Ok(Daemon {
            machine,
            recipe,
            port,
            targets,
            second: Targets::default(),
            new_status: None,
            new_spawn_error: None,
            seen,
            state: StateFile::new(cfg.state_path(), lock),
            logs: Logs {
                files,
                readers,
                counts,
            },
            notify_second: None,
            notify,
            probes: probes::Probes::new(&cfg.health, cfg.listen.address),
            memory: memory::Sampler::new(cfg.child.max_memory, cfg.child.max_memory_check),
            // Captured once: the child never inherits our manager's socket.
            manager: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
            tell_manager: None,
            quiet: narrate::Quiet::default(),
            status_writes: (None, None),
            alerting,
            exe,
            gave_up: None,
            reloading: None,
            exec_due: None,
            reload_waits: None,
            handover_failure: None,
            carried: carried.unwrap_or_default(),
            handovers: state::Handovers::default(),
            metrics: None,
            carry,
            exit: false,
            cfg,
        })
    }

    /// Run until asked to stop.
    pub(crate) async fn run(mut self, mut signals: Signals) -> Result<(), Fatal> {
        self.state.lock().write_pid().map_err(|e| {
            Fatal::failure(format!(
                "cannot write {}: {e}",
                self.cfg.pid_path().display()
            ))
            .then(crate::exit::NOTHING_STARTED)
        })?;
        info!(
            "supervisor {} started for {} (config {})",
            std::process::id(),
            self.cfg.listen.address,
            self.cfg.path.display()
        );
        // Orphaned descendants of our children come back to us, to be
        // found (they may hold our socket) and reaped.
        self.port.become_subreaper();
        // The earlier record, read once: `restart` tells outcomes apart by
        // their number (carry it on), and a fresh start takes over from it.
        let prev = state::read(&self.cfg.state_path()).ok().flatten();
        self.seen.restart = prev
            .as_ref()
            .and_then(|r| r.supervisor.as_ref())
            .and_then(|s| s.restart.clone());
        let handed_metrics = match self.carry.take() {
            None => {
                self.take_over(prev);
                None
            }
            Some(Carry {
                old,
                problems,
                metrics,
            }) => {
                // Across a reload (the same pid), the answers to restart
                // requests stay: a `restart` still waiting finds its own.
                self.seen.restart_answers = prev
                    .as_ref()
                    .and_then(|r| r.supervisor.as_ref())
                    .and_then(|s| s.restart_answers.clone())
                    .unwrap_or_default()
                    .into();
                self.carry_on(&old, problems);
                metrics
            }
        };
        self.start_metrics(handed_metrics);

        let mut poll = Duration::from_millis(2);
        while !self.exit {
            let deadline = self.machine.deadline();
            let others = matches!(self.machine.phase(), Phase::Stopping { leader: None, .. })
                || self.machine.second_group_pending().is_some();
            let probe_due = self.probes.due();
            let state_retry = self.state.retry_at();
            let status_due = self.status_writes.1;
            let running = match self.machine.phase() {
                Phase::Running { pid, .. } => Some(pid),
                _ => None,
            };
            let memory_armed = self.memory.arm(running, Instant::now());
            let alert_due = self.alerting.as_ref().and_then(|a| a.deadline());
            let reload_due = self
                .reloading
                .as_ref()
                .and_then(|p| p.deadline())
                .into_iter()
                .chain(self.reload_waits)
                .min();
            let helper_due = alert_due.into_iter().chain(reload_due).min();
            let wake = tokio::select! {
                sig = signals::next(&mut signals) => Wake::Signal(sig),
                _ = sleep_until(deadline) => Wake::Tick,
                _ = tokio::time::sleep(poll), if others => Wake::OthersPoll,
                batch = recv_notices(self.notify.as_ref()) => Wake::Notice(batch, readiness::Via::Serving),
                batch = recv_notices(self.notify_second.as_ref()) => Wake::Notice(batch, readiness::Via::Second),
                result = self.probes.done() => Wake::ProbeDone(result),
                _ = sleep_until(probe_due), if probe_due.is_some() => Wake::ProbeDue,
                _ = sleep_until(state_retry), if state_retry.is_some() => Wake::StateRetry,
                _ = sleep_until(status_due), if status_due.is_some() => Wake::StatusDue,
                _ = self.memory.elapsed(), if memory_armed => Wake::MemoryCheck,
                _ = sleep_until(helper_due), if helper_due.is_some() => Wake::HelperTick,
                (hook, out) = helper::output(
                    self.alerting.as_mut().and_then(|a| a.hooks().helper()),
                    self.reloading.as_mut().map(reload::Preflight::helper),
                ) => Wake::HelperOutput(hook, out),
            };
            match wake {
                Wake::Signal(Some(sig)) => self.on_signal(sig),
                Wake::Signal(None) => {
                    return Err(Fatal::failure("the signal stream closed; exiting"))
                }
                Wake::Tick => self.feed(Event::Tick),
                Wake::OthersPoll if self.machine.second_group_pending().is_some() => {
                    if self.poll_second() {
                        poll = Duration::from_millis(2);
                    } else {
                        poll = (poll * 2).min(Duration::from_millis(100));
                    }
                }
                Wake::OthersPoll => {
                    // Those being stopped may have forked a new holder of
                    // our socket meanwhile (a daemon's second fork).
                    let rivals = self.rivals();
                    self.note_scan(&rivals);
                    self.targets.add(&rivals);
                    if self.targets.gone() {
                        poll = Duration::from_millis(2);
                        self.feed(Event::OthersGone);
                    } else {
                        poll = (poll * 2).min(Duration::from_millis(100));
                    }
                }
                Wake::Notice(batch, via) => self.on_notices(batch, via),
                Wake::ProbeDone((result, by)) => self.on_probe(result, by),
                Wake::ProbeDue => {
                    let identify = self.machine.handover().is_some();
                    self.probes.start(identify);
                }
                Wake::StateRetry => self.write_state(),
                Wake::StatusDue => {
                    self.write_state();
                    self.status_writes.0 = Some(Instant::now());
                }
                Wake::MemoryCheck => self.check_memory(),
                Wake::HelperTick => {
                    let now = Instant::now();
                    if alert_due.is_some_and(|d| d <= now) {
                        self.alert_tick();
                        self.write_state();
                    }
                    self.reload_tick(now);
                }
                Wake::HelperOutput(true, out) => {
                    if let Some(a) = self.alerting.as_mut() {
                        a.hooks().output_ready(out);
                    }
                }
                Wake::HelperOutput(false, said) => self.preflight_said(said),
            }
            if let Some(exe) = self.exec_due.take() {
                self.exec_new_image(&exe, &mut signals);
            }
        }
        self.finish_alerts(&mut signals).await;
        health::tell_manager(self.manager.as_deref(), "STOPPING=1");
        if let Some(readers) = self.logs.readers.take() {
            readers.finish(PUMP_DRAIN);
        }
        info!("supervisor {} stopped", std::process::id());
        self.write_state();
        if let Err(e) = self.state.lock().clear_pid() {
            warn!("cannot empty {}: {e}", self.cfg.pid_path().display());
        }
        match self.gave_up.take() {
            Some(why) => Err(Fatal::failure(format!("{why}; everything is stopped"))),
            None => Ok(()),
        }
    }

    /// Continue where an earlier supervisor left off: its crash streak, and
    /// its child if that is still alive (stopped before we bind). The
    /// earlier record is overwritten only once we know what it names, and
    /// then names it until it is gone.
    fn take_over(&mut self, prev: Option<state::Record>) {
        let Some(prev) = prev else {
            self.feed(Event::Start);
            return;
        };
        self.resume_history(&prev);
        let streak = self.machine.streak();
        if let Some(a) = self.alerting.as_mut() {
            a.resume(streak, prev.alerts.as_ref());
        }
        let left = orphan::find(&prev, &orphan::System);
        let port = self.cfg.listen.address.port();
        let mut holders = orphan::socket_holders(&prev, port, &orphan::System);
        // The service manager that passed the socket (again) holds it too;
        // and a process it (or anyone holding the socket) forked holds it
        // for a moment before its exec closes it: only those still holding
        // it a little later are leftovers.
        holders.retain(|p| !self.port.is_manager(*p));
        let holders = port::settled(holders, || {
            orphan::socket_holders(&prev, port, &orphan::System)
        });
        // Killed during a handover: the second child is stopped too.
        let second = orphan::find_second(&prev, &orphan::System);
        if left.is_none() && second.is_none() && holders.is_empty() {
            self.feed(Event::Start);
            return;
        }
        self.targets = Targets::default();
        if let Some(left) = left {
            warn!(
                "process group {} of an earlier supervisor's child is still alive; stopping it before binding {}",
                left.pgid, self.cfg.listen.address
            );
            let child = prev.child.as_ref();
            self.seen.group = Some(Group {
                pgid: left.pgid,
                start_time: child.and_then(|c| c.start_time),
                sid: child.and_then(|c| c.sid),
                started_at: None,
            });
            self.targets = match left.leader {
                Some((pid, start)) => Targets::child(pid, Some(start)),
                None => Targets::group(left.pgid),
            };
        }
        if let Some(second) = second {
            warn!(
                "process group {} of the second child of an earlier supervisor's handover is still alive; stopping it too",
                second.pgid
            );
            let mut members = sys::group_members(second.pgid);
            members.extend(second.leader.map(|(pid, _)| pid));
            match left {
                Some(_) => self.targets.add(&members),
                None => {
                    let g = prev.handover.as_ref().and_then(|h| h.second);
                    self.seen.group = Some(Group {
                        pgid: second.pgid,
                        start_time: g.and_then(|g| g.start_time),
                        sid: g.and_then(|g| g.sid),
                        started_at: None,
                    });
                    self.targets = match second.leader {
                        Some((pid, start)) => Targets::child(pid, Some(start)),
                        None => Targets::group(second.pgid),
                    };
                }
            }
        }
        if !holders.is_empty() {
            warn!(
                "processes {holders:?} still hold an earlier supervisor's listening socket on {}; stopping them before binding",
                self.cfg.listen.address
            );
            self.targets.add(&holders);
            // Named in our record until we bind our own: should we die
            // meanwhile, the next supervisor still finds them.
            self.port
                .name_earlier(prev.listen.as_ref().and_then(|l| l.socket_id));
        }
        let actions = self.machine.adopt(Instant::now());
        self.carry_out(actions);
    }

    /// Continue a crash loop's backoff across supervisor restarts: a
    /// supervisor respawned by launchd should not hammer a broken child
    /// from `initial_backoff` again.
    fn resume_history(&mut self, prev: &state::Record) {
        let Some(child) = &prev.child else { return };
        // A supervisor that was stopped on request wrote "not-running" on
        // its way out: a deliberate start afterwards begins afresh. Only
        // one that died (SIGKILL, a crash, `kickstart -k`) and was started
        // again carries its crash loop on.
        if prev.state == Phase::Exited.name() {
            return;
        }
        let recent = prev
            .age(SystemTime::now())
            .is_some_and(|age| age < self.cfg.restart.reset_after + self.cfg.restart.max_backoff);
        if recent && child.crash_streak > 0 {
            self.machine.resume(child.crash_streak);
            info!(
                "continuing a crash loop of {} from the previous supervisor",
                crate::text::count(self.machine.streak().into(), "early death")
            );
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            SIGTERM | SIGINT => {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                if self.machine.want() == crate::policy::Want::Down {
                    info!("{name} again: killing what is being stopped now");
                } else {
                    info!("{name}: stopping");
                }
                self.feed(Event::Stop);
            }
            SIGHUP => {
                // Never forwarded: uvicorn and many others die on SIGHUP.
                match &self.logs.files {
                    Some(files) => {
                        files.child.reopen();
                        files.supervisor.reopen();
                        info!("SIGHUP: log files reopened");
                    }
                    None => info!(
                        "SIGHUP: nothing to reopen: log.to = \"stdout\" (the child's lines and ours \
                         go to the supervisor's stdout and stderr, no files)"
                    ),
                }
            }
            SIGUSR1 => {
                info!("SIGUSR1: restarting the child");
                self.restart_requested();
            }
            SIGUSR2 => self.begin_reload(),
            SIGCHLD => self.reap(),
            _ => {}
        }
    }

    /// Reap every child that ended. We are a subreaper (Linux): orphaned
    /// descendants of our children come back to us and must not stay
    /// zombies. Nothing else in this process waits for children (no
    /// tokio process driver, no `Command::wait`), so `waitpid(-1)` steals
    /// no one's status; the current child's is kept exactly.
    fn reap(&mut self) {
        loop {
            let (pid, kind) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), ExitKind::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid.as_raw(), ExitKind::Signal(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("waitpid failed: {e}; ended children may stay zombies until the next SIGCHLD");
                    return;
                }
            };
            self.targets.forget(pid);
            self.targets.prune();
            if self.machine.child_pid() == Some(pid) {
                self.child_exited(kind);
            } else if self.machine.second_pid() == Some(pid) {
                self.second_exited(pid, kind);
            } else if !self.preflight_reaped(pid, kind) {
                // Not the child, not the preflight: an alert command, or
                // an orphan that came back to us (just reaped).
                let hook = self.alerting.as_mut();
                if hook.is_some_and(|a| a.hooks().reaped(pid, kind)) {
                    self.write_state();
                }
            }
        }
    }

    fn child_exited(&mut self, kind: ExitKind) {
        self.seen.last_exit_at = Some(SystemTime::now());
        // A child may have shut the socket down for everyone: say so until
        // it is re-armed before the next spawn.
        self.port.check();
        // Whatever still holds our socket outside the group (a daemonized
        // grandchild, a setsid helper) is stopped with the leftovers.
        let rivals = self.rivals();
        self.note_scan(&rivals);
        self.targets.add(&rivals);
        let others_left = !self.targets.gone();
        self.feed(Event::ChildExited { kind, others_left });
    }

    /// Step the machine and carry out what it asks, until it asks for
    /// nothing that answers at once.
    fn feed(&mut self, event: Event) {
        let actions = self.machine.step(event, Instant::now());
        self.carry_out(actions);
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            if let Some(answer) = self.perform(action) {
                let more = self.machine.step(answer, Instant::now());
                for (i, a) in more.into_iter().enumerate() {
                    queue.insert(i, a);
                }
            }
        }
        self.handover_settled();
        self.probes.schedule(
            matches!(self.machine.phase(), Phase::Running { .. }),
            Instant::now(),
        );
        self.write_state();
        if let Some(message) = self.tell_manager.take() {
            health::tell_manager(self.manager.as_deref(), &message);
        }
        self.reload_when_settled(Instant::now());
    }

    fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Launch => Some(self.launch()),
            Action::Signal { kill } => {
                let sig = if kill {
                    Signal::SIGKILL
                } else {
                    self.cfg.child.stop_signal
                };
                // Whatever holds our socket outside the child's group goes
                // with it: after a stop, nothing that served is alive. On
                // `stop` or a requested restart, looked for anywhere (a
                // process the child passed fd 3 to); else in our tree.
                let on_request =
                    self.machine.want() == crate::policy::Want::Down || self.machine.restarting();
                let rivals = match (on_request, kill) {
                    (true, false) => self.rivals_anywhere(),
                    _ => self.rivals(),
                };
                self.targets.prune();
                self.targets.add(&rivals);
                self.targets.signal(sig);
                if let Phase::Stopping { leader: None, .. } = self.machine.phase() {
                    if self.targets.gone() {
                        return Some(Event::OthersGone);
                    }
                }
                None
            }
            Action::Note(note) => {
                self.handover_noted(&note);
                self.narrate(note);
                None
            }
            Action::Exit => {
                self.exit = true;
                None
            }
            Action::SpawnNew => Some(self.spawn_new()),
            Action::SignalSecond { kill, .. } => {
                self.signal_second(kill);
                None
            }
            Action::StopAlso { pgid } => {
                self.stop_also(pgid);
                None
            }
        }
    }

    /// At exit: queued alerts are dropped, a running alert command gets
    /// what is left of its own timeout (then its group is killed), and no
    /// more: `stop` never waits for a hook longer than that.
    async fn finish_alerts(&mut self, signals: &mut Signals) {
        let Some(a) = self.alerting.as_mut() else {
            return;
        };
        let dropped = a.hooks().drop_queue(crate::config::AlertEvent::GaveUp);
        if dropped > 0 {
            warn!(
                "exiting: {} not sent",
                crate::text::count(dropped as u64, "queued alert")
            );
        }
        // Not its whole timeout: a stop (and the service manager's budget
        // for it) must not hang on a slow webhook. The alert has most
        // likely gone out by then; if not, the log says it was cut short.
        let cut = Instant::now() + HOOK_AT_EXIT;
        let give_up = cut + KILL_GRACE;
        while self
            .alerting
            .as_mut()
            .is_some_and(|a| a.hooks().is_running())
            && Instant::now() < give_up
        {
            let kill_at = self
                .alerting
                .as_ref()
                .and_then(alerting::Alerting::hook_deadline)
                .map(|d| d.min(cut));
            // Once killed, wait for its exit (reaped below), not forever:
            // a process stuck in the kernel holds nothing of ours.
            let wake = kill_at.unwrap_or(give_up);
            tokio::select! {
                sig = signals::next(signals) => {
                    if sig == Some(SIGCHLD) {
                        self.reap();
                    }
                }
                _ = sleep_until(Some(wake)) => {
                    if let Some(a) = self.alerting.as_mut() {
                        a.hooks().kill_now("the supervisor is exiting");
                    }
                }
                (_, out) = helper::output(self.alerting.as_mut().and_then(|a| a.hooks().helper()), None) => {
                    if let Some(a) = self.alerting.as_mut() {
                        a.hooks().output_ready(out);
                    }
                }
            }
        }
    }

    fn write_state(&mut self) {
        // Whatever `STATUS=` text was held back goes out with this write.
        self.status_writes.1 = None;
        self.seen.alerts = self.alerting.as_ref().map(alerting::Alerting::info);
        let mut rec = record::build(
            &self.machine,
            &self.seen,
            self.port.shown(),
            Instant::now(),
            SystemTime::now(),
        );
        rec.counters = Some(self.counters());
        if let Some((view, _)) = &self.metrics {
            view.publish(rec.clone(), self.carried.log_bytes, SystemTime::now());
        }
        self.state.write(rec, SystemTime::now());
    }

    /// `[metrics]`: serve on the listener an earlier image handed over if
    /// it is for the same address (else it is closed), or on a new one. A
    /// listener that cannot be had is logged; the service runs on
    /// without metrics.
    fn start_metrics(&mut self, handed: Option<(OwnedFd, String)>) {
        let want = self.cfg.metrics.address;
        let handed = handed.and_then(|(fd, address)| {
            // Another address now (or none): the old listener closes here.
            (Some(address) == want.map(|a| a.to_string())).then_some(fd)
        });
        let Some(addr) = want else { return };
        let fd = match handed {
            Some(fd) => fd,
            None => match exporter::bind(addr) {
                Ok(fd) => fd,
                Err(e) => {
                    error!(
                        "metrics: cannot listen on {addr}: {}; serving no metrics (the service runs on)",
                        crate::listener::describe_bind_error(&e)
                    );
                    return;
                }
            },
        };
        let view = exporter::View::new(self.logs.counts.clone());
        match exporter::serve(fd, view.clone()) {
            Ok(raw) => {
                self.metrics = Some((view, raw));
                info!("metrics: serving GET /metrics and GET /status on {addr}");
                self.write_state();
            }
            Err(e) => error!("metrics: cannot serve on {addr}: {e}; serving no metrics"),
        }
    }

    /// The counters as they stand: what was handed over plus what this
    /// image counted. Every alert event is named, with 0 before its first.
    fn counters(&self) -> state::Counters {
        let mut c = self.carried.clone();
        for event in crate::config::AlertEvent::ALL {
            c.alerts.entry(event.as_str().to_owned()).or_default();
        }
        for (event, n) in self.alerting.iter().flat_map(alerting::Alerting::fired) {
            *c.alerts.entry(event.as_str().to_owned()).or_default() += n;
        }
        c.handovers.ok += self.handovers.ok;
        c.handovers.failed += self.handovers.failed;
        let (stdout, stderr) = self.logs.counts.get();
        c.log_bytes.stdout += stdout;
        c.log_bytes.stderr += stderr;
        c
    }
}

async fn recv_notices(sock: Option<&NotifySocket>) -> Vec<Result<Notice, health::Rejected>> {
    match sock {
        Some(s) => s.recv_batch().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
