//! The reload handoff: what one image of the supervisor hands the next
//! across `execve`, and how the next one takes it.
//!
//! The old image writes a versioned JSON record ([`Handoff`]) into an
//! unlinked file and leaves the descriptors it names inheritable; the new
//! image finds the file's number in [`HANDOFF_ENV`] and [`take`]s it all:
//! every named descriptor checked to be open and owned exactly once, close-
//! on-exec again, before anything else runs. The machine crosses as ages
//! and delays (an `Instant` means nothing in another image), tagged by its
//! phase. A build that cannot read a version says so in the reload's
//! preflight, before anything happens.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::record::Group;
use crate::logs::{Handed, Stream};
use crate::policy::{ExitKind, Health, LastExit, Phase, Snapshot};
use crate::state::{self, AlertsInfo};
use crate::sys;

/// Where the new image finds the handoff: the number of an inherited
/// descriptor.
pub(crate) const HANDOFF_ENV: &str = "SUPERVISOR_HANDOFF";
/// Told to the preflight: the handoff version it would be given.
pub(crate) const HANDOFF_VERSION_ENV: &str = "SUPERVISOR_HANDOFF_VERSION";
/// The handoff this build writes and reads.
pub(crate) const HANDOFF_VERSION: u32 = 1;

/// Everything the new image needs to carry on.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Handoff {
    pub(crate) version: u32,
    pub(crate) lock_fd: RawFd,
    pub(crate) listen_fd: Option<RawFd>,
    pub(crate) inherited: bool,
    pub(crate) socket_id: Option<u64>,
    pub(crate) managers: Vec<i32>,
    pub(crate) notify: Option<NotifyHand>,
    pub(crate) pipes: Vec<PipeHand>,
    /// The config the child runs under, as TOML (`check-config`'s output).
    pub(crate) config: String,
    /// Unix ms of the first start, and reloads so far.
    pub(crate) started_at_ms: u64,
    pub(crate) reloads: u32,
    pub(crate) machine: MachineHand,
    pub(crate) group: Option<Group>,
    pub(crate) child_status: Option<String>,
    pub(crate) last_exit_at_ms: Option<u64>,
    pub(crate) alerts: Option<AlertsInfo>,
    /// Who the child runs as: the new image keeps it if it cannot
    /// resolve `child.user` again.
    #[serde(default)]
    pub(crate) creds: Option<crate::child::Creds>,
    /// The metrics' counters so far: they survive the exec.
    #[serde(default)]
    pub(crate) counters: Option<state::Counters>,
    /// The `[metrics]` listener.
    #[serde(default)]
    pub(crate) metrics: Option<MetricsHand>,
}

/// The `[metrics]` listener and the address it was bound for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MetricsHand {
    pub(crate) fd: RawFd,
    pub(crate) address: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NotifyHand {
    pub(crate) fd: RawFd,
    pub(crate) env_value: String,
    pub(crate) cleanup: Vec<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PipeHand {
    pub(crate) fd: RawFd,
    pub(crate) stderr: bool,
    pub(crate) pid: u32,
}

/// The machine's snapshot with its instants as ages (ms before the exec)
/// or delays (ms after it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MachineHand {
    #[serde(flatten)]
    pub(crate) phase: PhaseHand,
    pub(crate) spawns: u32,
    pub(crate) streak: u32,
    pub(crate) bind_failures: u32,
    pub(crate) port_waiting_ms: Option<u64>,
    /// (exit code, signal, ms ago)
    pub(crate) last_exit: Option<(Option<i32>, Option<i32>, u64)>,
}

/// The phases that can be handed over (a stop under way cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub(crate) enum PhaseHand {
    /// How long the child has run, and been ready.
    Running {
        pid: i32,
        up_ms: u64,
        ready_ms: Option<u64>,
    },
    /// When the next try is due.
    Backoff {
        due_in_ms: u64,
    },
    WaitingForPort {
        due_in_ms: u64,
    },
}

/// What the new image takes: the record, and the descriptors it named,
/// each owned once.
pub(crate) struct Resumed {
    pub(crate) lock: File,
    pub(crate) listener: Option<OwnedFd>,
    /// The notify socket: (fd, `NOTIFY_SOCKET` value, files to remove at
    /// exit).
    pub(crate) notify: Option<(OwnedFd, String, Vec<PathBuf>)>,
    /// The child's log pipes that are still open.
    pub(crate) pipes: Vec<Handed>,
    /// The `[metrics]` listener and the address it was bound for.
    pub(crate) metrics: Option<(OwnedFd, String)>,
    /// The rest of the record (its descriptor numbers are spent).
    pub(crate) handoff: Handoff,
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// `Option<SystemTime>` as Unix ms on the wire (serde `with`).
pub(crate) mod opt_unix_ms {
    use super::{from_unix_ms, unix_ms};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&unix_ms(*t)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(from_unix_ms))
    }
}

impl MachineHand {
    /// The machine as it can cross the exec; `None` in a phase that
    /// cannot (starting, stopping).
    pub(crate) fn of(s: &Snapshot, now: Instant) -> Option<MachineHand> {
        let age = |t: Instant| ms(now.saturating_duration_since(t));
        let due = |t: Instant| ms(t.saturating_duration_since(now));
        let phase = match s.phase {
            Phase::Running { pid, since, health } => PhaseHand::Running {
                pid,
                up_ms: age(since),
                ready_ms: health.ready_since.map(age),
            },
            Phase::Backoff { until } => PhaseHand::Backoff {
                due_in_ms: due(until),
            },
            Phase::WaitingForPort { retry_at, .. } => PhaseHand::WaitingForPort {
                due_in_ms: due(retry_at),
            },
            _ => return None,
        };
        Some(MachineHand {
            phase,
            spawns: s.spawns,
            streak: s.streak,
            bind_failures: s.bind_failures,
            port_waiting_ms: s.port_since.map(age),
            last_exit: s.last_exit.map(|e| match e.kind {
                ExitKind::Code(c) => (Some(c), None, age(e.at)),
                ExitKind::Signal(sig) => (None, Some(sig), age(e.at)),
            }),
        })
    }

    /// Back into instants of this image.
    pub(crate) fn snapshot(&self, now: Instant) -> Snapshot {
        let ago = |m: u64| now.checked_sub(Duration::from_millis(m)).unwrap_or(now);
        let due = |m: u64| now + Duration::from_millis(m);
        let phase = match self.phase {
            PhaseHand::Running {
                pid,
                up_ms,
                ready_ms,
            } => Phase::Running {
                pid,
                since: ago(up_ms),
                health: Health {
                    ready_since: ready_ms.map(ago),
                    probe_failures: 0,
                    watchdog_until: None,
                },
            },
            PhaseHand::Backoff { due_in_ms } => Phase::Backoff {
                until: due(due_in_ms),
            },
            PhaseHand::WaitingForPort { due_in_ms } => Phase::WaitingForPort {
                since: ago(self.port_waiting_ms.unwrap_or(0)),
                retry_at: due(due_in_ms),
            },
        };
        Snapshot {
            phase,
            spawns: self.spawns,
            streak: self.streak,
            bind_failures: self.bind_failures,
            port_since: self.port_waiting_ms.map(ago),
            last_exit: self.last_exit.map(|(code, sig, age)| LastExit {
                kind: match (code, sig) {
                    (Some(c), _) => ExitKind::Code(c),
                    (None, s) => ExitKind::Signal(s.unwrap_or(0)),
                },
                at: ago(age),
            }),
        }
    }
}

/// The handoff in an unlinked file of the state folder (no size limit,
/// no reader needed while writing), rewound for the new image. Made in
/// the held (locked) folder `dir` by descriptor — `openat` with
/// `O_CREAT|O_EXCL|O_NOFOLLOW`, 0600, then `unlinkat` — so no path is
/// resolved again: a state folder swapped for a link since it was proven
/// is never written through. The new image reads it through the inherited
/// descriptor, never by name.
pub(crate) fn write(dir: std::os::fd::BorrowedFd<'_>, h: &Handoff) -> io::Result<File> {
    use nix::fcntl::OFlag;
    let text = serde_json::to_vec(h).map_err(io::Error::other)?;
    let name = std::ffi::OsString::from(format!(".handoff.{}", std::process::id()));
    let mut file = crate::fsafe::open_at(
        dir,
        &name,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
        0o600,
    )?;
    let _ = crate::fsafe::unlink_at(dir, &name);
    file.write_all(&text)?;
    file.rewind()?;
    Ok(file)
}

/// In a new image: the handoff, if the old one left one (and the variable
/// leaves the environment), with every descriptor it names owned. An
/// unreadable one is an error: the lock and the child are ours, and
/// starting over would orphan the child. Call before any other thread runs.
pub(crate) fn take() -> Result<Option<Resumed>, String> {
    let Some(value) = std::env::var_os(HANDOFF_ENV) else {
        return Ok(None);
    };
    // SAFETY: called at start-up, before any other thread exists.
    unsafe { std::env::remove_var(HANDOFF_ENV) };
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{HANDOFF_ENV}={value:?} is not a descriptor number"))?;
    let mut file = File::from(
        sys::adopt_fd(fd)
            .ok_or_else(|| format!("{HANDOFF_ENV} names fd {fd}, which is not open"))?,
    );
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .map_err(|e| format!("cannot read the handoff: {e}"))?;
    drop(file);
    let h: Handoff =
        serde_json::from_slice(&text).map_err(|e| format!("cannot read the handoff: {e}"))?;
    if h.version != HANDOFF_VERSION {
        return Err(format!(
            "the handoff is version {}, this build reads {HANDOFF_VERSION}",
            h.version
        ));
    }
    let lock = File::from(sys::adopt_fd(h.lock_fd).ok_or_else(|| {
        format!(
            "the handoff names the lock as fd {}, which is not open",
            h.lock_fd
        )
    })?);
    let listener = match h.listen_fd {
        Some(fd) => Some(sys::adopt_fd(fd).ok_or_else(|| {
            format!("the handoff names the listening socket as fd {fd}, which is not open")
        })?),
        None => None,
    };
    let notify = h
        .notify
        .as_ref()
        .and_then(|n| sys::adopt_fd(n.fd).map(|fd| (fd, n.env_value.clone(), n.cleanup.clone())));
    // A pipe whose number is not open is skipped: its output is lost, not
    // the child.
    let pipes = h
        .pipes
        .iter()
        .filter_map(|p| {
            sys::adopt_fd(p.fd).map(|fd| Handed {
                file: File::from(fd),
                stream: if p.stderr {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                pid: p.pid,
            })
        })
        .collect();
    let metrics = h
        .metrics
        .as_ref()
        .and_then(|m| sys::adopt_fd(m.fd).map(|fd| (fd, m.address.clone())));
    Ok(Some(Resumed {
        lock,
        listener,
        notify,
        pipes,
        metrics,
        handoff: h,
    }))
}

/// Whether `check-config` runs as a reload's preflight (told the handoff
/// version it would be given).
pub(crate) fn asked_by_a_reload() -> bool {
    std::env::var_os(HANDOFF_VERSION_ENV).is_some()
}

/// For `check-config` run as a reload's preflight: whether this build can
/// take over from the handoff version it would be given.
pub(crate) fn can_take_over() -> Result<(), String> {
    match std::env::var(HANDOFF_VERSION_ENV) {
        Ok(v) if v.trim() != HANDOFF_VERSION.to_string() => Err(format!(
            "this build cannot take over from a supervisor that hands over version {v} \
             (it reads version {HANDOFF_VERSION}); stop and start it instead"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handoff {
        Handoff {
            version: HANDOFF_VERSION,
            lock_fd: 3,
            listen_fd: None,
            inherited: false,
            socket_id: None,
            managers: vec![],
            notify: None,
            pipes: vec![],
            config: "# the config".into(),
            started_at_ms: 1,
            reloads: 2,
            machine: MachineHand {
                phase: PhaseHand::Backoff { due_in_ms: 5 },
                spawns: 0,
                streak: 0,
                bind_failures: 0,
                port_waiting_ms: None,
                last_exit: None,
            },
            group: None,
            child_status: None,
            last_exit_at_ms: None,
            alerts: None,
            creds: None,
            counters: None,
            metrics: None,
        }
    }

    /// Issue 20's leftover F: the file is made in the held folder, by
    /// descriptor. A state folder swapped for a link after it was proven
    /// (by a user who could rename a folder above it) is not written
    /// through: nothing appears at the link's target, and no name is left
    /// in the held folder either.
    #[test]
    fn the_handoff_is_made_in_the_held_folder_never_through_its_path() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let held = crate::fsafe::Dir::open("state dir", &state, 0o700).unwrap();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&state, t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &state).unwrap();
        // A file of that name at the link's target: made by path, through
        // the link, the handoff would fail there (`O_EXCL`).
        let name = format!(".handoff.{}", std::process::id());
        std::fs::write(elsewhere.join(&name), "theirs").unwrap();
        let mut file = write(std::os::fd::AsFd::as_fd(&held), &sample()).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let back: Handoff = serde_json::from_str(&text).unwrap();
        assert_eq!((back.reloads, back.config.as_str()), (2, "# the config"));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(file.metadata().unwrap().mode() & 0o777, 0o600);
        assert_eq!(file.metadata().unwrap().nlink(), 0, "unlinked at once");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);
        assert_eq!(
            std::fs::read_to_string(elsewhere.join(&name)).unwrap(),
            "theirs"
        );
        assert_eq!(
            std::fs::read_dir(t.path().join("moved")).unwrap().count(),
            0
        );
        // A name planted where the file goes is never opened or followed.
        std::os::unix::fs::symlink(elsewhere.join("x"), t.path().join("moved").join(&name))
            .unwrap();
        assert!(write(std::os::fd::AsFd::as_fd(&held), &sample()).is_err());
        assert!(!elsewhere.join("x").exists());
    }

    #[test]
    fn the_machine_crosses_the_exec() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let running = Snapshot {
            phase: Phase::Running {
                pid: 42,
                since: t0,
                health: Health {
                    ready_since: Some(t0 + ms(100)),
                    probe_failures: 2,
                    watchdog_until: None,
                },
            },
            spawns: 3,
            streak: 1,
            bind_failures: 0,
            port_since: None,
            last_exit: Some(LastExit {
                kind: ExitKind::Signal(9),
                at: t0,
            }),
        };
        let later = t0 + ms(5000);
        let h = MachineHand::of(&running, later).unwrap();
        let json = serde_json::to_string(&h).unwrap();
        let back: MachineHand = serde_json::from_str(&json).unwrap();
        let s = back.snapshot(later);
        assert_eq!((s.spawns, s.streak), (3, 1));
        match s.phase {
            Phase::Running { pid, since, health } => {
                assert_eq!(pid, 42);
                assert_eq!(later.duration_since(since), ms(5000));
                assert_eq!(
                    health.ready_since.map(|r| later.duration_since(r)),
                    Some(ms(4900))
                );
                assert_eq!(health.probe_failures, 0);
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(s.last_exit.map(|e| e.kind), Some(ExitKind::Signal(9)));
        // A backoff keeps what is left of its delay.
        let backoff = Snapshot {
            phase: Phase::Backoff {
                until: t0 + ms(800),
            },
            ..running
        };
        let s = MachineHand::of(&backoff, t0 + ms(300))
            .unwrap()
            .snapshot(t0 + ms(300));
        assert_eq!(
            s.phase,
            Phase::Backoff {
                until: t0 + ms(800)
            }
        );
        // A stop under way cannot be handed over.
        let stopping = Snapshot {
            phase: Phase::Stopping {
                leader: Some(42),
                deadline: t0,
                killed: false,
                restart_at: t0,
            },
            ..running
        };
        assert!(MachineHand::of(&stopping, t0).is_none());
    }

    #[test]
    fn the_wire_format_is_the_one_version_1_always_had() {
        // What a version-1 image wrote before the phase was typed: read
        // back the same, and written again with the same keys.
        let old = r#"{"phase":"running","pid":42,"up_ms":5000,"ready_ms":null,
            "due_in_ms":null,"spawns":3,"streak":1,"bind_failures":0,
            "port_waiting_ms":null,"last_exit":[null,9,7000]}"#;
        let h: MachineHand = serde_json::from_str(old).unwrap();
        assert_eq!(
            h.phase,
            PhaseHand::Running {
                pid: 42,
                up_ms: 5000,
                ready_ms: None
            }
        );
        let again = serde_json::to_value(&h).unwrap();
        assert_eq!(again["phase"], "running");
        assert_eq!(again["pid"], 42);
        let waiting: MachineHand = serde_json::from_str(
            r#"{"phase":"waiting-for-port","pid":null,"up_ms":null,"ready_ms":null,
            "due_in_ms":250,"spawns":0,"streak":0,"bind_failures":2,
            "port_waiting_ms":900,"last_exit":null}"#,
        )
        .unwrap();
        assert_eq!(waiting.phase, PhaseHand::WaitingForPort { due_in_ms: 250 });
        let g: Group = serde_json::from_str(
            r#"{"pgid":7,"start_time":99,"sid":7,"started_at_ms":1700000000000}"#,
        )
        .unwrap();
        assert_eq!(g.started_at.map(unix_ms), Some(1_700_000_000_000));
        assert_eq!(
            serde_json::to_value(g).unwrap()["started_at_ms"],
            1_700_000_000_000u64
        );
    }
}
