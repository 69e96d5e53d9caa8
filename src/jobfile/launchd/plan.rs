//! What `install` and `uninstall` do, decided from a few facts (the file
//! on disk, whether launchd has the job loaded, whether a supervisor
//! already runs for the config) without touching anything.

use std::time::Duration;

use super::super::Existing;

/// Whether launchd has the job loaded, as far as we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loaded {
    /// Not asked (no launchctl here: a dry run off macOS).
    Unknown,
    No,
    /// Loaded; `pid` is its running process, if any.
    Yes {
        pid: Option<i32>,
    },
}

/// One thing install or uninstall does, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Create `log.dir` (0750), so launchd can open `launchd.err` there
    /// (it is not known to create folders).
    MakeLogDir,
    /// `launchctl bootout gui/UID/LABEL`: stops the supervisor (SIGTERM,
    /// SIGKILL after `ExitTimeOut`) and unloads the job.
    Bootout,
    /// Write the plist (0644).
    Write,
    /// `launchctl bootstrap gui/UID PLIST`: loads the job; `RunAtLoad`
    /// starts it.
    Bootstrap,
    /// `launchctl kickstart gui/UID/LABEL`: starts a loaded job that is not
    /// running (e.g. after `supervisor stop`).
    Kickstart,
    /// Remove the plist, so the next login does not load it again.
    Remove,
}

/// The facts `install` decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InstallFacts {
    pub file: Existing,
    pub loaded: Loaded,
    /// A supervisor that holds the lock for this config.
    pub running: Option<i32>,
    pub log_dir_missing: bool,
}

/// Why `install` does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A supervisor not started by this job runs for the config: the job's
    /// copy would exit 0 ("already running") and launchd would never
    /// respawn it, so nothing would supervise once that one stops.
    RunningOutside { pid: i32 },
    /// The plist on disk differs and `--force` was not given.
    Differs,
    /// launchd has the label loaded but not from our path.
    LoadedElsewhere,
}

pub(super) fn plan_install(f: &InstallFacts, force: bool) -> Result<Vec<Step>, Refusal> {
    let job_pid = match f.loaded {
        Loaded::Yes { pid } => pid,
        _ => None,
    };
    if let Some(pid) = f.running.filter(|&p| Some(p) != job_pid) {
        return Err(Refusal::RunningOutside { pid });
    }
    let loaded = matches!(f.loaded, Loaded::Yes { .. });
    match (f.file, loaded) {
        (Existing::Different, _) if !force => return Err(Refusal::Differs),
        (Existing::Absent, true) if !force => return Err(Refusal::LoadedElsewhere),
        _ => {}
    }
    let mut steps = Vec::new();
    if f.log_dir_missing {
        steps.push(Step::MakeLogDir);
    }
    if f.file == Existing::Same && loaded {
        if f.running.is_none() {
            steps.push(Step::Kickstart);
        }
        return Ok(steps);
    }
    if loaded {
        steps.push(Step::Bootout);
    }
    if f.file != Existing::Same {
        steps.push(Step::Write);
    }
    steps.push(Step::Bootstrap);
    Ok(steps)
}

/// The plist at the job's path, as far as uninstall is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OnDisk {
    Absent,
    /// A plist whose `Label` is the one asked for.
    Ours,
    /// Something else (another label, not a plist): left alone.
    Other(String),
}

pub(super) fn plan_uninstall(file: &OnDisk, loaded: Loaded) -> Result<Vec<Step>, String> {
    if let OnDisk::Other(why) = file {
        return Err(why.clone());
    }
    let mut steps = Vec::new();
    if loaded != Loaded::No {
        steps.push(Step::Bootout);
    }
    if *file == OnDisk::Ours {
        steps.push(Step::Remove);
    }
    Ok(steps)
}

/// `pid = N` in `launchctl print gui/UID/LABEL` (its process, when running).
pub(super) fn parse_print_pid(text: &str) -> Option<i32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("pid = "))
        .find_map(|v| v.trim().parse().ok())
}

/// The pauses before each new `launchctl bootstrap` after one that failed
/// with EIO: launchd keeps a label for a few seconds after `bootout`
/// (reports of ~5 s; other tools sleep 3 s). 7.75 s in all, then the
/// error stands.
pub(super) const BOOTSTRAP_BACKOFF: [Duration; 6] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(2),
    Duration::from_secs(2),
];

/// Whether a failed `launchctl bootstrap` is launchd still holding the
/// label it was just told to boot out: "Bootstrap failed: 5: Input/output
/// error", exit status 5.
pub(super) fn is_eio(code: Option<i32>, stderr: &str) -> bool {
    code == Some(5) || stderr.contains("Input/output error")
}

/// How a bootstrap went, over every try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bootstrapped {
    /// Ok, or the last failure's exit status and stderr.
    pub result: Result<(), (Option<i32>, String)>,
    /// How many times launchctl ran.
    pub tries: usize,
    /// How long was paused between tries, in all.
    pub waited: Duration,
}

/// Runs `try_once` (one `launchctl bootstrap`: its exit status and
/// stderr) until it succeeds, fails with something other than EIO, or
/// [`BOOTSTRAP_BACKOFF`] runs out, pausing with `pause` before each retry.
pub(super) fn bootstrap_retrying(
    mut try_once: impl FnMut() -> (Option<i32>, String),
    mut pause: impl FnMut(Duration),
) -> Bootstrapped {
    let mut waited = Duration::ZERO;
    let mut tries = 0;
    let mut backoff = BOOTSTRAP_BACKOFF.iter();
    loop {
        let (code, stderr) = try_once();
        tries += 1;
        if code == Some(0) {
            return Bootstrapped {
                result: Ok(()),
                tries,
                waited,
            };
        }
        match backoff.next() {
            Some(&d) if is_eio(code, &stderr) => {
                pause(d);
                waited += d;
            }
            _ => {
                return Bootstrapped {
                    result: Err((code, stderr)),
                    tries,
                    waited,
                }
            }
        }
    }
}
