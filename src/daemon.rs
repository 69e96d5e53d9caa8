//! The one async driver: the only code that touches processes, signals,
//! the socket and the state file while the supervisor runs.
//!
//! It turns the world into [`Event`]s for the pure [`Machine`] and carries
//! out the [`Action`]s it returns. Everything waits in one `select!`: the
//! signal stream (SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGCHLD), the
//! machine's single deadline, and, only while leftovers of a child's process
//! group are being stopped, a short poll for the group to empty. With a
//! healthy child nothing is armed, so the supervisor makes no wake-ups.

use std::future::{poll_fn, Future};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::signal::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_tokio::Signals;
use tracing::{error, info, warn};

use crate::child::{self, Recipe};
use crate::config::Config;
use crate::health::{self, Notice, NotifySocket};
use crate::listener::{describe_bind_error, Listener};
use crate::lock::InstanceLock;
use crate::logs::{self, LogSink, Stream};
use crate::policy::{Action, Event, ExitKind, Failure, HealthPolicy, Machine, Phase, Settings};
use crate::state::{self, ChildInfo, ExitInfo, ListenInfo, PortHolder, Record, SupervisorInfo};
use crate::sys;

/// How long SIGKILLed leftovers get to vanish before we go on without them.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// The first readiness probe comes this soon after a spawn; the gap then
/// doubles up to `health.interval` until the child is ready.
const PROBE_FIRST: Duration = Duration::from_millis(50);
/// A state write refused by the disk is retried after this, doubling up to
/// `STATE_RETRY_MAX`.
const STATE_RETRY_FIRST: Duration = Duration::from_secs(1);
const STATE_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long, at exit, the log readers get to write the child's last lines.
const PUMP_DRAIN: Duration = Duration::from_secs(2);

/// Signals we handle; registered before the pid file is written or any
/// child exists, so a SIGTERM can never kill us and orphan a child.
const HANDLED: [i32; 5] = [SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD];

/// Hold the signals we handle back (they stay pending) from just before the
/// lock is taken until their handlers exist: a `stop` that finds the new
/// lock holder at once must get a clean exit 0, not a death by SIGTERM.
pub fn hold_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in HANDLED {
        if let Ok(s) = Signal::try_from(sig) {
            set.add(s);
        }
    }
    let _ = set.thread_block();
    set
}

/// Register the handlers, then let the held signals in.
pub fn register_signals(held: nix::sys::signal::SigSet) -> std::io::Result<Signals> {
    let signals = Signals::new(HANDLED)?;
    let _ = held.thread_unblock();
    Ok(signals)
}

/// The child that is alive now.
#[derive(Debug, Clone, Copy)]
struct Current {
    pid: i32,
    start_time: Option<u64>,
}

pub struct Daemon {
    cfg: Config,
    lock: InstanceLock,
    machine: Machine,
    recipe: Recipe,
    listener: Option<Listener>,
    current: Option<Current>,
    /// The latest child's process group (its pid), kept after the leader
    /// dies for as long as leftovers are being stopped.
    group: Option<Current>,
    /// Our session: children start in it, which identifies their leftovers.
    sid: Option<i32>,
    child_log: Arc<LogSink>,
    supervisor_log: Arc<LogSink>,
    /// Maps the machine's monotonic instants to wall-clock times for people.
    epoch: (Instant, SystemTime),
    own_start_time: Option<u64>,
    state_path: PathBuf,
    bind_error: Option<String>,
    port_holder: Option<(i32, String)>,
    /// Last state written, to skip identical rewrites.
    written: Option<String>,
    /// The threads reading children's output; finished ones are pruned.
    pumps: Vec<std::thread::JoinHandle<()>>,
    /// Where a `notify` child reports READY=1, STATUS= and WATCHDOG=1.
    notify: Option<NotifySocket>,
    /// The HTTP probe in flight, if any, and when the next one starts.
    probe: Option<Probe>,
    next_probe: Option<Instant>,
    /// The gap before the next probe while the child is not ready yet:
    /// short at first, doubling up to `health.interval`.
    probe_gap: Duration,
    /// The child's last STATUS= text.
    child_status: Option<String>,
    /// `$NOTIFY_SOCKET` of the service manager that started us, if any.
    manager: Option<String>,
    /// A failed state write is retried at this time (full disk), with a
    /// growing gap, so `status` catches up without waiting for an event.
    state_retry: Option<(Instant, Duration)>,
}

/// An HTTP health probe in flight.
type Probe = Pin<Box<dyn Future<Output = Result<u16, String>>>>;

/// What woke the driver.
enum Wake {
    Signal(Option<i32>),
    Tick,
    GroupPoll,
    Notice(Result<Notice, health::Rejected>),
    ProbeDone(Result<u16, String>),
    ProbeDue,
    StateRetry,
}

impl Daemon {
    pub fn new(
        cfg: Config,
        creds: Option<child::Creds>,
        lock: InstanceLock,
        child_log: Arc<LogSink>,
        supervisor_log: Arc<LogSink>,
        notify: Option<NotifySocket>,
    ) -> Daemon {
        let settings = Settings {
            initial_backoff: cfg.restart.initial_backoff,
            max_backoff: cfg.restart.max_backoff,
            reset_after: cfg.restart.reset_after,
            stop_timeout: cfg.child.stop_timeout,
            kill_grace: KILL_GRACE,
            health: HealthPolicy {
                readiness: cfg.health.readiness(),
                probe_ready: !cfg.health.notify && cfg.health.http.is_some(),
                start_timeout: cfg.health.start_timeout,
                failures: cfg.health.failures,
                watchdog: cfg.health.watchdog,
            },
        };
        let mut env = cfg.child.env.clone();
        if let Some(n) = &notify {
            env.insert("NOTIFY_SOCKET".into(), n.env_value.clone());
            if let Some(w) = cfg.health.watchdog {
                env.insert("WATCHDOG_USEC".into(), w.as_micros().to_string());
            }
        }
        let recipe = Recipe {
            command: cfg.child.command.clone(),
            cwd: cfg.child.cwd.clone(),
            env,
            fd_name: cfg.listen.name.clone(),
            death_signal: cfg.child.stop_signal as i32,
            creds,
        };
        let state_path = cfg.supervisor.state_dir.join("state.json");
        Daemon {
            machine: Machine::new(settings),
            recipe,
            listener: None,
            current: None,
            group: None,
            sid: nix::unistd::getsid(None).ok().map(Pid::as_raw),
            child_log,
            supervisor_log,
            epoch: (Instant::now(), SystemTime::now()),
            own_start_time: sys::process_start_time(std::process::id() as i32),
            state_path,
            bind_error: None,
            port_holder: None,
            written: None,
            pumps: Vec::new(),
            notify,
            probe: None,
            next_probe: None,
            probe_gap: PROBE_FIRST,
            child_status: None,
            // Captured once: the child never inherits our manager's socket.
            manager: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
            state_retry: None,
            lock,
            cfg,
        }
    }

    /// Run until asked to stop. Errors are fatal (exit 1).
    pub async fn run(mut self, mut signals: Signals) -> anyhow::Result<()> {
        self.lock.write_pid()?;
        info!(
            "supervisor {} started for {} (config {})",
            std::process::id(),
            self.cfg.listen.address,
            self.cfg.path.display()
        );
        // The previous record is overwritten only once its child is dealt
        // with: dying in between must not lose track of an orphan.
        let mut stop_pending = false;
        if let Some(prev) = state::read(&self.state_path).ok().flatten() {
            self.resume_history(&prev);
            stop_pending = self.stop_orphan(&prev, &mut signals).await;
        }
        // A stop asked for while the orphan was being dealt with: no child.
        self.feed(if stop_pending {
            Event::Stop
        } else {
            Event::Start
        });

        let mut poll = Duration::from_millis(2);
        while self.machine.phase != Phase::Exited {
            let deadline = self.machine.deadline();
            let leftovers = match self.machine.phase {
                Phase::Stopping {
                    pgid,
                    leader: false,
                    ..
                } => Some(pgid),
                _ => None,
            };
            let probe_due = if self.probe.is_none() {
                self.next_probe
            } else {
                None
            };
            let state_retry = self.state_retry.map(|(at, _)| at);
            let wake = tokio::select! {
                sig = next_signal(&mut signals) => Wake::Signal(sig),
                _ = sleep_until(deadline) => Wake::Tick,
                _ = tokio::time::sleep(poll), if leftovers.is_some() => Wake::GroupPoll,
                notice = recv_notice(self.notify.as_ref()) => Wake::Notice(notice),
                result = run_probe(&mut self.probe) => Wake::ProbeDone(result),
                _ = sleep_until(probe_due), if probe_due.is_some() => Wake::ProbeDue,
                _ = sleep_until(state_retry), if state_retry.is_some() => Wake::StateRetry,
            };
            match wake {
                Wake::Signal(Some(sig)) => self.on_signal(sig),
                Wake::Signal(None) => anyhow::bail!("the signal stream closed"),
                Wake::Tick => self.feed(Event::Tick),
                Wake::GroupPoll => {
                    if leftovers.is_some_and(|g| !sys::group_alive(g)) {
                        poll = Duration::from_millis(2);
                        self.feed(Event::GroupGone);
                    } else {
                        poll = (poll * 2).min(Duration::from_millis(100));
                    }
                }
                Wake::Notice(Ok(notice)) => self.on_notice(notice),
                // The socket stays open whatever one datagram did.
                Wake::Notice(Err(rejected)) => warn!("{rejected}"),
                Wake::ProbeDone(result) => self.on_probe(result),
                Wake::ProbeDue => self.start_probe(),
                Wake::StateRetry => self.write_state(),
            }
        }
        health::tell_manager(self.manager.as_deref(), "STOPPING=1");
        self.drain_pumps().await;
        info!("supervisor {} stopped", std::process::id());
        self.write_state();
        self.child_log.flush();
        self.supervisor_log.flush();
        Ok(())
    }

    /// Let the log readers write what the last child printed before we
    /// exit. Leftovers that escaped the process group may hold a pipe open
    /// forever, so this waits a little, not indefinitely.
    async fn drain_pumps(&mut self) {
        let deadline = Instant::now() + PUMP_DRAIN;
        let mut poll = Duration::from_millis(1);
        while self.pumps.iter().any(|p| !p.is_finished()) && Instant::now() < deadline {
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(50));
        }
        self.pumps.clear();
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            SIGTERM | SIGINT => {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                if self.machine.stopping {
                    info!("{name} again: killing the child's process group now");
                } else {
                    info!("{name}: stopping");
                }
                self.feed(Event::Stop);
            }
            SIGHUP => {
                // Never forwarded: uvicorn and many others die on SIGHUP.
                self.child_log.reopen();
                self.supervisor_log.reopen();
                info!("SIGHUP: log files reopened");
            }
            SIGUSR1 => {
                info!("SIGUSR1: restarting the child");
                self.feed(Event::Restart);
            }
            SIGCHLD => self.reap(),
            _ => {}
        }
    }

    /// Reap our child, and only it: `waitpid(-1)` would steal statuses.
    fn reap(&mut self) {
        let Some(cur) = self.current else { return };
        let kind = match waitpid(Pid::from_raw(cur.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => ExitKind::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => ExitKind::Signal(sig as i32),
            Ok(_) => return,
            Err(e) => {
                // ECHILD: somebody else reaped it; it is gone all the same.
                warn!(
                    "waitpid({}) failed: {e}; treating the child as gone",
                    cur.pid
                );
                ExitKind::Signal(0)
            }
        };
        self.current = None;
        let group_left = sys::group_alive(cur.pid);
        let event = Event::ChildExited { kind, group_left };
        // Say what happened and what comes next before it happens (the next
        // child may start within this very step): ask a copy of the machine.
        let now = Instant::now();
        let mut preview = self.machine.clone();
        preview.step(event, now);
        let lived = match self.machine.phase {
            Phase::Running { since, .. } => {
                format!(" after {}", human(now.saturating_duration_since(since)))
            }
            _ => String::new(),
        };
        let next = match preview.phase {
            Phase::Backoff { until } => format!(
                "; restarting in {}",
                human(until.saturating_duration_since(now))
            ),
            Phase::Starting => "; restarting at once".into(),
            Phase::Stopping { leader: false, .. } => {
                "; stopping what is left of its process group first".into()
            }
            _ => String::new(),
        };
        let how = describe_exit(kind);
        if matches!(kind, ExitKind::Code(0))
            || preview.stopping
            || !matches!(self.machine.phase, Phase::Running { .. })
        {
            info!("child {} {how}{lived}{next}", cur.pid);
        } else {
            warn!("child {} {how}{lived}{next}", cur.pid);
        }
        self.feed(event);
    }

    /// Step the machine and carry out what it asks, until it asks for
    /// nothing that answers at once.
    fn feed(&mut self, event: Event) {
        let mut queue = vec![event];
        while let Some(ev) = queue.pop() {
            let actions = self.machine.step(ev, Instant::now());
            for action in actions {
                if let Some(next) = self.perform(action) {
                    queue.push(next);
                }
            }
        }
        self.schedule_probes();
        self.write_state();
    }

    fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Bind => Some(self.bind()),
            Action::Spawn => Some(self.spawn()),
            Action::Signal { pgid, kill } => {
                let sig = if kill {
                    Signal::SIGKILL
                } else {
                    self.cfg.child.stop_signal
                };
                match killpg(Pid::from_raw(pgid), sig) {
                    Ok(()) => info!("sent {} to process group {pgid}", sig.as_str()),
                    Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => warn!("cannot send {} to process group {pgid}: {e}", sig.as_str()),
                }
                None
            }
            Action::GaveUpOnGroup { pgid } => {
                error!(
                    "process group {pgid} still has members {} after SIGKILL; going on without them",
                    human(KILL_GRACE)
                );
                None
            }
            Action::Ready { pid } => {
                if self.cfg.health.readiness() {
                    info!("child {pid} is ready");
                }
                health::tell_manager(
                    self.manager.as_deref(),
                    &format!(
                        "READY=1\nSTATUS=child {pid} ready\nMAINPID={}",
                        std::process::id()
                    ),
                );
                None
            }
            Action::Unhealthy { pid, why } => {
                let h = &self.cfg.health;
                let why = match why {
                    Failure::StartTimeout => {
                        format!(
                            "not ready within start_timeout ({})",
                            human(h.start_timeout)
                        )
                    }
                    Failure::Probes => format!(
                        "{} health probes in a row failed (GET {})",
                        h.failures,
                        h.http.as_deref().unwrap_or("?")
                    ),
                    Failure::Watchdog => format!(
                        "no WATCHDOG=1 within {}",
                        human(h.watchdog.unwrap_or_default())
                    ),
                };
                warn!("child {pid} is unhealthy: {why}; stopping it gracefully to restart it");
                None
            }
            Action::Exit => None,
        }
    }

    /// Probe only a live child, on its own timer; drop probes of a child
    /// that is gone.
    fn schedule_probes(&mut self) {
        if self.cfg.health.http.is_none() {
            return;
        }
        match self.machine.phase {
            Phase::Running { .. } if self.next_probe.is_none() && self.probe.is_none() => {
                self.probe_gap = PROBE_FIRST.min(self.cfg.health.interval);
                self.next_probe = Some(Instant::now() + self.probe_gap);
            }
            Phase::Running { .. } => {}
            _ => {
                self.probe = None;
                self.next_probe = None;
            }
        }
    }

    fn start_probe(&mut self) {
        self.next_probe = None;
        let (Some(path), Phase::Running { .. }) = (&self.cfg.health.http, self.machine.phase)
        else {
            return;
        };
        let target = health::probe_target(self.cfg.listen.address);
        self.probe = Some(Box::pin(health::probe(
            target,
            path.clone(),
            self.cfg.health.timeout,
        )));
    }

    fn on_probe(&mut self, result: Result<u16, String>) {
        self.probe = None;
        let Phase::Running { pid, health, .. } = self.machine.phase else {
            return;
        };
        let interval = self.cfg.health.interval;
        let gap = if health.ready_since.is_some() {
            interval
        } else {
            self.probe_gap = (self.probe_gap * 2).min(interval);
            self.probe_gap
        };
        self.next_probe = Some(Instant::now() + gap);
        match result {
            Ok(_) => self.feed(Event::ProbeOk),
            Err(e) => {
                if health.ready_since.is_some() {
                    warn!(
                        "health probe of child {pid} failed ({} of {}): {e}",
                        health.probe_failures + 1,
                        self.cfg.health.failures
                    );
                }
                self.feed(Event::ProbeFailed);
            }
        }
    }

    /// A datagram on the notify socket: accepted only from the child's
    /// process group (the kernel vouches for the sender's pid on Linux).
    fn on_notice(&mut self, notice: Notice) {
        let Some(pgid) = self.machine.child_pid() else {
            return;
        };
        if let Some(sender) = notice.sender {
            let group = nix::unistd::getpgid(Some(Pid::from_raw(sender))).map(Pid::as_raw);
            if group != Ok(pgid) {
                warn!("ignored a notify message from pid {sender}, which is not in the child's process group {pgid}");
                return;
            }
        }
        if let Some(status) = notice.status {
            self.child_status = Some(status);
            self.write_state();
        }
        if notice.ready {
            self.feed(Event::Ready);
        }
        if notice.watchdog {
            self.feed(Event::WatchdogPing);
        }
    }

    fn bind(&mut self) -> Event {
        let addr = self.cfg.listen.address;
        match Listener::bind(addr, self.cfg.listen.backlog) {
            Ok(l) => {
                self.listener = Some(l);
                if self.bind_error.take().is_some() {
                    info!("bound {addr} after waiting for it");
                }
                self.port_holder = None;
                Event::Bound
            }
            Err(e) => {
                let why = describe_bind_error(&e);
                self.port_holder = sys::port_holder(addr);
                let held = self
                    .port_holder
                    .as_ref()
                    .map(|(pid, cmd)| format!(" (held by pid {pid} {cmd})"))
                    .unwrap_or_default();
                let delay = self
                    .machine
                    .backoff(self.machine.bind_failures.saturating_add(1));
                warn!(
                    "cannot bind {addr}: {why}{held}; no child started; retrying in {}",
                    human(delay)
                );
                self.bind_error = Some(why);
                Event::BindFailed
            }
        }
    }

    fn spawn(&mut self) -> Event {
        if let Some(l) = &self.listener {
            if let Err(e) = l.make_blocking() {
                warn!("cannot make the listening socket blocking again: {e}");
            }
        }
        match child::spawn(&self.recipe) {
            Ok(sp) => {
                let pid = sp.pid;
                self.child_status = None;
                self.current = Some(Current {
                    pid,
                    start_time: sys::process_start_time(pid),
                });
                self.group = self.current;
                self.pumps.retain(|p| !p.is_finished());
                for (file, stream) in [(sp.stdout, Stream::Stdout), (sp.stderr, Stream::Stderr)] {
                    match logs::spawn_pump(file, stream, pid as u32, self.child_log.clone()) {
                        Ok(handle) => self.pumps.push(handle),
                        Err(e) => warn!(
                            "cannot start the log reader for child {pid}: {e}; its output is lost"
                        ),
                    }
                }
                info!("started child {pid}: {}", self.recipe.command.join(" "));
                Event::Spawned { pid }
            }
            Err(e) => {
                let delay = self.machine.backoff(self.machine.streak.saturating_add(1));
                error!("{e}; retrying in {}", human(delay));
                Event::SpawnFailed
            }
        }
    }

    /// Continue a crash loop's backoff across supervisor restarts: a
    /// supervisor respawned by launchd should not hammer a broken child
    /// from `initial_backoff` again.
    fn resume_history(&mut self, prev: &Record) {
        let Some(child) = &prev.child else { return };
        let recent = prev
            .updated_at
            .as_deref()
            .and_then(state::parse_timestamp)
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < self.cfg.restart.reset_after + self.cfg.restart.max_backoff);
        if recent && child.crash_streak > 0 {
            self.machine.streak = child.crash_streak.min(64);
            info!(
                "continuing a crash loop of {} early deaths from the previous supervisor",
                self.machine.streak
            );
        }
    }

    /// A child of an earlier supervisor that died without stopping it (a
    /// SIGKILL; on macOS there is no PDEATHSIG) would still hold the port
    /// and the shared state of the service. Stop its process group before
    /// binding, so two children never run at once. Touch it only if it is
    /// provably ours: same pid *and* same start time, or a group whose
    /// leader is gone (a live group keeps its id from being reused).
    /// Returns whether a stop was requested meanwhile.
    async fn stop_orphan(&mut self, prev: &Record, signals: &mut Signals) -> bool {
        let Some(child) = &prev.child else {
            return false;
        };
        let Some(pgid) = child.pgid.filter(|g| *g > 1) else {
            return false;
        };
        if !is_ours(prev, pgid) {
            return false;
        }
        let gone = || !sys::is_alive(pgid) && !sys::group_alive(pgid);
        warn!(
            "process group {pgid} of an earlier supervisor's child is still alive; stopping it before binding {}",
            self.cfg.listen.address
        );
        let mut stop_pending = false;
        let mut kill_now = false;
        for (sig, within) in [
            (self.cfg.child.stop_signal, self.cfg.child.stop_timeout),
            (Signal::SIGKILL, KILL_GRACE),
        ] {
            if sig != Signal::SIGKILL && kill_now {
                continue;
            }
            let _ = killpg(Pid::from_raw(pgid), sig);
            let deadline = Instant::now() + within;
            let mut poll = Duration::from_millis(2);
            while !gone() && Instant::now() < deadline {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    Some(s) = next_signal(signals) => match s {
                        SIGTERM | SIGINT => {
                            kill_now = stop_pending;
                            stop_pending = true;
                            if kill_now {
                                info!("stop requested again: killing process group {pgid} now");
                                break;
                            }
                            info!("stop requested: exiting once process group {pgid} is gone");
                        }
                        SIGHUP => {
                            self.child_log.reopen();
                            self.supervisor_log.reopen();
                        }
                        _ => {}
                    },
                }
                poll = (poll * 2).min(Duration::from_millis(100));
            }
            if gone() {
                info!("the earlier child's process group {pgid} is gone");
                return stop_pending;
            }
        }
        error!("process group {pgid} survived SIGKILL; going on");
        stop_pending
    }

    fn wall(&self, t: Instant) -> SystemTime {
        let (mono, wall) = self.epoch;
        match t.checked_duration_since(mono) {
            Some(d) => wall + d,
            None => wall - mono.saturating_duration_since(t),
        }
    }

    fn record(&self) -> Record {
        let m = &self.machine;
        let now = Instant::now();
        let (child_pid, pgid, since) = match m.phase {
            Phase::Running { pid, since, .. } => (Some(pid), Some(pid), Some(since)),
            Phase::Stopping { pgid, leader, .. } => (leader.then_some(pgid), Some(pgid), None),
            _ => (None, None, None),
        };
        // The group keeps its leader's start time after the leader died,
        // while leftovers are stopped.
        let start_time = self
            .group
            .filter(|g| Some(g.pid) == pgid)
            .and_then(|g| g.start_time);
        let next_restart = match m.phase {
            Phase::Backoff { until } => Some(until),
            Phase::WaitingForPort { retry_at } => Some(retry_at),
            _ => None,
        };
        let last_exit = m.last_exit.map(|e| {
            let (code, signal) = match e.kind {
                ExitKind::Code(c) => (Some(c), None),
                ExitKind::Signal(s) => (None, Some(signal_name(s))),
            };
            ExitInfo {
                code,
                signal,
                at: state::timestamp(self.wall(e.at)),
            }
        });
        let state = if m.phase == Phase::Exited {
            "not-running"
        } else {
            m.phase.name()
        };
        Record {
            state: state.into(),
            supervisor: Some(SupervisorInfo {
                pid: std::process::id() as i32,
                started_at: state::timestamp(self.epoch.1),
                start_time: self.own_start_time,
                version: Some(env!("CARGO_PKG_VERSION").into()),
                boot_id: sys::boot_id(),
            }),
            listen: Some(ListenInfo {
                address: self.cfg.listen.address.to_string(),
                bound: self.listener.is_some(),
                name: Some(self.cfg.listen.name.clone()),
            }),
            child: Some(ChildInfo {
                pid: child_pid,
                pgid,
                start_time,
                sid: pgid.and(self.sid),
                started_at: since.map(|s| state::timestamp(self.wall(s))),
                restarts: m.restarts(),
                last_exit,
                crash_streak: m.streak,
                ready: matches!(m.phase, Phase::Running { health, .. } if health.ready_since.is_some()),
                status: child_pid.and(self.child_status.clone()),
            }),
            next_restart_in_ms: next_restart
                .map(|t| t.saturating_duration_since(now).as_millis() as u64),
            next_restart_at: next_restart.map(|t| state::timestamp_ms(self.wall(t))),
            port_holder: self.port_holder.as_ref().map(|(pid, command)| PortHolder {
                pid: *pid,
                command: command.clone(),
            }),
            bind_error: self.bind_error.clone(),
            error: None,
            updated_at: None,
        }
    }

    /// Replace state.json if anything a reader cares about changed.
    fn write_state(&mut self) {
        let mut rec = self.record();
        // Compare without the ever-changing countdown and time stamp.
        rec.next_restart_in_ms = None;
        let key = rec.encode();
        if self.written.as_deref() == Some(key.as_str()) {
            return;
        }
        match self.lock.ensure_linked() {
            Ok(false) => {}
            Ok(true) => warn!(
                "{} had been removed; recreated it and took the lock again",
                self.lock.path().display()
            ),
            Err(e) => error!("the instance lock is lost: {e}"),
        }
        let mut full = self.record();
        full.updated_at = Some(state::timestamp_ms(SystemTime::now()));
        match state::write_atomic(&self.state_path, &full.encode()) {
            Ok(()) => {
                if self.state_retry.take().is_some() {
                    info!("{} is written again", self.state_path.display());
                }
                self.written = Some(key);
            }
            Err(e) => {
                let gap = match self.state_retry {
                    None => {
                        warn!(
                            "cannot write {}: {e}; `status` reports it stale; retrying every few seconds",
                            self.state_path.display()
                        );
                        STATE_RETRY_FIRST
                    }
                    Some((_, gap)) => (gap * 2).min(STATE_RETRY_MAX),
                };
                self.state_retry = Some((Instant::now() + gap, gap));
            }
        }
    }
}

/// Whether process group `pgid`, named by an earlier supervisor's record,
/// is still that supervisor's child (or its leftovers) and nobody else's.
/// Records from before a reboot name nothing of ours. The leader counts if
/// its pid *and* start time match. A group whose leader is gone counts only
/// through a member that started after the child did and still sits in the
/// session the child was started in (the supervisor's): a stranger's daemon
/// that now owns that group id has its own session.
fn is_ours(prev: &Record, pgid: i32) -> bool {
    let Some(child) = &prev.child else {
        return false;
    };
    let recorded_boot = prev.supervisor.as_ref().and_then(|s| s.boot_id.as_deref());
    if recorded_boot.is_none() || recorded_boot != sys::boot_id().as_deref() {
        return false;
    }
    let Some(started) = child.start_time else {
        return false;
    };
    if let Some(pid) = child.pid {
        if sys::is_alive(pid) {
            return pid == pgid && sys::process_start_time(pid) == Some(started);
        }
    }
    if sys::is_alive(pgid) {
        return false; // a live leader that is not our child: someone else's group
    }
    let Some(sid) = child.sid else {
        return false;
    };
    sys::group_members(pgid).into_iter().any(|m| {
        sys::process_start_time(m).is_some_and(|t| t >= started)
            && nix::unistd::getsid(Some(Pid::from_raw(m))).map(Pid::as_raw) == Ok(sid)
    })
}

async fn recv_notice(sock: Option<&NotifySocket>) -> Result<Notice, health::Rejected> {
    match sock {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn run_probe(probe: &mut Option<Probe>) -> Result<u16, String> {
    match probe {
        Some(p) => p.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The next handled signal. `Signals` is a `futures_core::Stream`; this
/// polls it without pulling in a futures utility crate.
async fn next_signal(signals: &mut Signals) -> Option<i32> {
    use futures_core::Stream as _;
    poll_fn(|cx| Pin::new(&mut *signals).poll_next(cx)).await
}

pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

pub fn describe_exit(kind: ExitKind) -> String {
    match kind {
        ExitKind::Code(c) => format!("exited with code {c}"),
        ExitKind::Signal(0) => "is gone (reaped elsewhere)".into(),
        ExitKind::Signal(s) => format!("was killed by {}", signal_name(s)),
    }
}

/// "250ms", "4s", "1m 30s": humantime, rounded to what people read.
pub fn human(d: Duration) -> String {
    let d = if d >= Duration::from_secs(10) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}
