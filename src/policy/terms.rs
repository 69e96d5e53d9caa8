//! The words the machine and the driver share: the settings it is built
//! from, the [`Event`]s it is fed, the [`Action`]s and [`Note`]s it
//! returns, and the [`Phase`] and [`Want`] it is in.

use std::time::{Duration, Instant};

/// The numbers the policy needs from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) reset_after: Duration,
    pub(crate) stop_timeout: Duration,
    /// How long to wait after SIGKILL for leftovers to vanish before going
    /// on without them (a process in uninterruptible sleep, or a zombie that
    /// a careless init never reaps).
    pub(crate) kill_grace: Duration,
    pub(crate) health: HealthPolicy,
    /// `[restart] overlap`: a requested restart of a ready child starts
    /// the new child first and stops the old one once the new is ready.
    pub(crate) overlap: bool,
    /// Failed starts in a row after which the supervisor stops for good
    /// (`restart.give_up_after`); 0: never.
    pub(crate) give_up_after: u32,
}

/// Readiness and liveness rules (`[health]`); the default has none: a
/// child is ready the moment it is spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct HealthPolicy {
    /// A spawned child is `starting` until `Ready` (or, with `probe_ready`,
    /// its first good probe).
    pub(crate) readiness: bool,
    /// Readiness comes from the HTTP probe rather than READY=1.
    pub(crate) probe_ready: bool,
    pub(crate) start_timeout: Duration,
    /// Consecutive failed probes that make a ready child unhealthy.
    pub(crate) failures: u32,
    /// A ready child must ping at least this often.
    pub(crate) watchdog: Option<Duration>,
}

/// What a running child has shown of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Health {
    /// Since when it has been ready; `None` while it is still starting.
    pub(crate) ready_since: Option<Instant>,
    pub(crate) probe_failures: u32,
    /// The next watchdog ping is due by then.
    pub(crate) watchdog_until: Option<Instant>,
}

/// Why a live child is given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not ready within `start_timeout`.
    StartTimeout,
    /// `failures` probes in a row failed.
    Probes,
    /// No WATCHDOG=1 within the watchdog interval.
    Watchdog,
    /// The child's resident memory passed `max_memory` (bytes seen).
    Memory(u64),
}

/// How a child ended, as `waitpid` told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitKind {
    Code(i32),
    Signal(i32),
}

/// The last exit of a child, with when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastExit {
    pub(crate) kind: ExitKind,
    pub(crate) at: Instant,
}

/// What the operator wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Keep a child running.
    Up,
    /// Stop everything and exit.
    Down,
}

/// What *is*, each state with the data only it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Lock held; the port is being bound and a child started (transient:
    /// the driver answers `Launch` at once).
    Starting,
    /// The port could not be bound since `since`; the next try is at `retry_at`.
    WaitingForPort { since: Instant, retry_at: Instant },
    /// A child is alive (`starting` until ready, when readiness is configured).
    Running {
        pid: i32,
        since: Instant,
        health: Health,
    },
    /// No child; the next one starts at `until`.
    Backoff { until: Instant },
    /// Stop signals went out. `leader` is the child while it is alive (its
    /// exit is reaped); once it is gone, or when there was none (leftovers
    /// of an earlier supervisor, a rival holding our socket), the driver
    /// reports `OthersGone` when everything it is stopping has vanished.
    /// Then the next child starts, not before `restart_at`, unless the
    /// operator wants the supervisor down.
    Stopping {
        leader: Option<i32>,
        deadline: Instant,
        killed: bool,
        restart_at: Instant,
    },
    /// Done: the driver exits.
    Exited,
}

impl Phase {
    /// The state name of SPEC.md.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::WaitingForPort { .. } => "waiting-for-port",
            Phase::Running { health, .. } if health.ready_since.is_none() => "starting",
            Phase::Running { .. } => "running",
            Phase::Backoff { .. } => "backoff",
            Phase::Stopping { .. } => "stopping",
            Phase::Exited => "not-running",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The lock is held and the driver is ready.
    Start,
    /// Answers to `Launch`: a child runs; it could not be started; the port
    /// could not be bound; processes outside the last child's process group
    /// hold our socket and must be stopped first.
    Spawned {
        pid: i32,
    },
    SpawnFailed,
    BindFailed,
    RivalsFound,
    /// The child was reaped; `others_left` says processes it leaves behind
    /// (its process group, anything holding our socket) are still alive.
    ChildExited {
        kind: ExitKind,
        others_left: bool,
    },
    /// Everything being stopped besides the child is gone.
    OthersGone,
    /// A timer fired; the machine checks its own deadline.
    Tick,
    /// SIGUSR1 / `supervisor restart`.
    Restart,
    /// A restart that must stop the child first whatever `overlap` says
    /// (a `reload` moved the service to another socket).
    RestartStopFirst,
    /// The child said READY=1.
    Ready,
    /// An HTTP probe answered 2xx / failed.
    ProbeOk,
    ProbeFailed,
    /// The child said WATCHDOG=1.
    WatchdogPing,
    /// The child's process group uses more memory than allowed (bytes).
    TooBig(u64),
    /// SIGTERM / SIGINT / `supervisor stop`; a second one kills at once.
    Stop,
    /// Answers to `SpawnNew`: the handover's new child runs; it could not
    /// be started.
    NewSpawned {
        pid: i32,
    },
    NewSpawnFailed,
    /// The handover's new child (not yet the machine's) is ready: READY=1
    /// from its group, or a probe it answered.
    NewReady,
    /// The handover's second child was reaped: the new one while it starts
    /// or is stopped after failing, the old one while it drains.
    /// `others_left`: its process group still has live members.
    SecondExited {
        kind: ExitKind,
        others_left: bool,
    },
    /// The second child's process group has no live member any more.
    SecondGone,
    /// The second child's process group uses more memory than allowed
    /// (bytes): measured beside the serving child's during a handover.
    SecondTooBig(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Make sure the port is ours and listening, look for rivals holding
    /// our socket, and start a child; answer with the event that says how.
    Launch,
    /// Send the stop signal (`kill == false`) or SIGKILL to everything
    /// being stopped: the child's process group, the child itself if it
    /// left the group, and whatever else holds our socket.
    Signal { kill: bool },
    /// Everything is stopped and nothing will start again: the driver
    /// ends its loop and exits.
    Exit,
    /// Something for the log (and for alerts); nothing to do.
    Note(Note),
    /// Start the handover's new child on the listening socket while the
    /// current one keeps serving (no bind, no rivals: both are ours);
    /// answer `NewSpawned` or `NewSpawnFailed`.
    SpawnNew,
    /// Send the stop signal (or SIGKILL) to the handover's second child:
    /// its process group `pgid` (and the leader, should it have left it).
    SignalSecond { pgid: i32, kill: bool },
    /// The handover ends into a stop of everything: process group `pgid`
    /// joins what `Signal` reaches and what must be gone before going on.
    StopAlso { pgid: i32 },
}

/// Why a restart (or a handover) did not bring a new ready child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmet {
    /// The new child could not be started.
    SpawnFailed,
    /// The port could not be bound.
    BindFailed,
    /// The new child exited before it was ready.
    Exited(ExitKind),
    /// The new child was not ready within `health.start_timeout`.
    NotReady,
    /// The supervisor was asked to stop.
    Stopping,
    /// The old child ended while the new one started; the handover became
    /// a stop-first restart.
    OldEnded,
    /// The new child's process group passed `max_memory` (bytes seen)
    /// before it was ready.
    TooBig(u64),
}

/// A handover: for a moment two children, the machine's (`Phase::Running`)
/// and a second one. While `Starting` (and `Aborting`) the second is the
/// new child and the machine's is the old one, serving; from `Draining` on
/// the new child is the machine's and the second is the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handover {
    pub(crate) started_at: Instant,
    pub(crate) old: i32,
    /// The new child, once spawned.
    pub(crate) new: Option<i32>,
    /// The second child's leader has not been reaped yet.
    pub(crate) leader_alive: bool,
    pub(crate) stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `SpawnNew` is out (transient: answered at once).
    Spawning,
    /// The new child runs since `since`, not ready yet.
    Starting { since: Instant },
    /// The new child failed (`why`) and its group is being stopped.
    Aborting {
        why: Unmet,
        deadline: Instant,
        killed: bool,
    },
    /// The new child is ready; the old one's group is being stopped.
    Draining { deadline: Instant, killed: bool },
}

impl Handover {
    /// The child that is not the machine's: the new one until it is
    /// ready, the old one after.
    pub(crate) fn second(&self) -> Option<i32> {
        match self.stage {
            Stage::Draining { .. } => Some(self.old),
            _ => self.new,
        }
    }

    /// `status`: "starting" until the new child is ready, then "draining".
    pub(crate) fn phase_name(&self) -> &'static str {
        match self.stage {
            Stage::Draining { .. } => "draining",
            _ => "starting",
        }
    }
}

/// What happens after a child's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    RestartNow,
    RestartIn(Duration),
    /// Processes it left behind are stopped first (the restart follows,
    /// after the backoff counted from the exit).
    StopOthers,
    Exit,
}

/// What the driver is told, for people and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    ChildExited {
        pid: i32,
        kind: ExitKind,
        lived: Duration,
        /// Stopped on request (a stop, a restart, a failed health rule)
        /// rather than dying on its own.
        expected: bool,
        /// Early deaths in a row, this one included (0 after a healthy run).
        streak: u32,
        next: Next,
    },
    SpawnFailed {
        streak: u32,
        retry_in: Duration,
    },
    WaitingForPort {
        since: Instant,
        failures: u32,
        retry_in: Duration,
    },
    /// Stop signals go to processes outside the last child's group that
    /// hold our socket, before a child is started.
    StoppingRivals,
    /// A live child broke a health rule and is being stopped gracefully.
    Unhealthy {
        pid: i32,
        why: Failure,
    },
    /// The child became ready (tell systemd, if it listens).
    Ready {
        pid: i32,
    },
    /// Leftovers did not vanish after SIGKILL; going on without them.
    GaveUp,
    /// A handover's new child runs beside the old one.
    HandoverStarted {
        old: i32,
        new: i32,
    },
    /// The new child is ready: it serves, the old one is stopped.
    HandoverDraining {
        old: i32,
        new: i32,
    },
    /// The new child failed: it is stopped, the old one serves on.
    HandoverFailed {
        old: i32,
        new: Option<i32>,
        why: Unmet,
    },
    /// The old child is gone: the handover is complete.
    HandoverDone {
        old: i32,
        new: i32,
    },
    /// A restart asked for during a handover is ignored.
    HandoverBusy,
    /// The second child, already being stopped (the old one draining, or
    /// a failed new one), passed `max_memory` (bytes seen): it is killed
    /// now rather than after its `stop_timeout`.
    StopCutShort {
        pid: i32,
        /// The old child draining (else the failed new one).
        old: bool,
        bytes: u64,
    },
    /// The outcome of the last requested restart (`restart`, SIGUSR1):
    /// the new child ready (its pid), or why not.
    Restarted(Result<i32, Unmet>),
    /// The crash streak reached `give_up_after`: everything is stopped and
    /// the supervisor exits (1), so that an orchestrator's restart policy
    /// takes over. Comes right after the note on the start that failed.
    Surrender {
        streak: u32,
    },
}
