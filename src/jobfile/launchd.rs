//! The launchd job: the plist for a config (launchd.plist(5)), built with
//! the `plist` crate, and `install`/`uninstall` as a LaunchAgent in the
//! user's GUI domain through `launchctl`.
//!
//! What install and uninstall do is decided by pure planners
//! ([`plan_install`], [`plan_uninstall`]) from a few facts (the file on
//! disk, whether launchd has the job loaded, whether a supervisor already
//! runs for the config); the shell gathers the facts, prints each step and
//! carries it out. `--dry-run` stops after printing, on any OS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plist::{Dictionary, Value};

use super::{
    choose_name, existing, print_all, shell_quote, stop_budget_secs, write_job_file, Existing,
    JobSpec,
};
use crate::cli::{LaunchdAction, LaunchdJob};
use crate::config::Config;
use crate::exit::{self, Fatal};
use crate::lock;
use crate::status;
use crate::sys;

/// launchd spawns the job at most once per this many seconds. It only
/// matters when the supervisor itself exits within that time of starting
/// (exit 78 for a bad config, exit 1 for an unusable system): a supervisor
/// that ran longer is respawned at once, and the child's own restarts are
/// the supervisor's business, not launchd's. 10 s is launchd's default,
/// written out so it is visible: each failed start adds one line to
/// `launchd.err`, which nothing rotates (about 8,600 lines a day at worst),
/// while a failure that clears by itself (a volume mounted late at login)
/// is retried soon enough.
pub const THROTTLE_INTERVAL: u64 = 10;

/// How long `install` waits for the supervisor to show up in `status`.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The plist for `spec`, keys in the order a person reads them.
pub fn plist(spec: &JobSpec, label: &str, sockets: bool) -> Dictionary {
    let s = |p: &Path| Value::String(p.display().to_string());
    let int = |n: u64| Value::Integer(n.into());
    let mut d = Dictionary::new();
    d.insert("Label".into(), label.into());
    d.insert(
        "ProgramArguments".into(),
        Value::Array(vec![
            s(&spec.program),
            "--config".into(),
            s(&spec.config),
            "run".into(),
        ]),
    );
    d.insert("WorkingDirectory".into(), s(&spec.workdir));
    if let Some(path) = &spec.path_env {
        let mut env = Dictionary::new();
        env.insert("PATH".into(), path.as_str().into());
        d.insert("EnvironmentVariables".into(), Value::Dictionary(env));
    }
    d.insert("RunAtLoad".into(), true.into());
    let mut keep_alive = Dictionary::new();
    keep_alive.insert("SuccessfulExit".into(), false.into());
    d.insert("KeepAlive".into(), Value::Dictionary(keep_alive));
    // Unset means "Background"-like light resource limits (CPU and I/O
    // throttled), which the child would inherit.
    d.insert("ProcessType".into(), "Standard".into());
    d.insert("ThrottleInterval".into(), int(THROTTLE_INTERVAL));
    d.insert(
        "ExitTimeOut".into(),
        int(stop_budget_secs(spec.stop_timeout)),
    );
    d.insert(
        "StandardOutPath".into(),
        s(&spec.launchd_log("launchd.out")),
    );
    d.insert(
        "StandardErrorPath".into(),
        s(&spec.launchd_log("launchd.err")),
    );
    if let Some(limits) = soft_limits(spec.nofile) {
        d.insert("SoftResourceLimits".into(), Value::Dictionary(limits));
    }
    if sockets {
        d.insert("Sockets".into(), Value::Dictionary(sockets_entry(spec)));
    }
    d
}

/// `SoftResourceLimits` for `child.limits.nofile`: launchd starts jobs with
/// a soft open-files limit of 256.
fn soft_limits(nofile: Option<u64>) -> Option<Dictionary> {
    let n = nofile?;
    let mut d = Dictionary::new();
    d.insert("NumberOfFiles".into(), Value::Integer(n.into()));
    Some(d)
}

/// One socket named `listen.name` on `listen.address`: launchd binds it and
/// keeps it while the supervisor comes and goes. launchd has no backlog
/// key; the system's (kern.ipc.somaxconn, 128 by default) applies.
fn sockets_entry(spec: &JobSpec) -> Dictionary {
    let (node, family) = match spec.address {
        std::net::SocketAddr::V4(a) => (a.ip().to_string(), "IPv4"),
        std::net::SocketAddr::V6(a) => (a.ip().to_string(), "IPv6"),
    };
    let mut sock = Dictionary::new();
    sock.insert("SockNodeName".into(), node.into());
    sock.insert(
        "SockServiceName".into(),
        spec.address.port().to_string().into(),
    );
    sock.insert("SockFamily".into(), family.into());
    sock.insert("SockType".into(), "stream".into());
    let mut d = Dictionary::new();
    d.insert(spec.fd_name.clone(), Value::Dictionary(sock));
    d
}

/// The plist as XML (what `plutil -lint` and launchd read), newline-ended.
pub fn render(d: &Dictionary) -> Result<Vec<u8>, Fatal> {
    let mut out = Vec::new();
    Value::Dictionary(d.clone())
        .to_writer_xml(&mut out)
        .map_err(|e| Fatal::with_code(exit::FAILURE, format!("cannot encode the plist: {e}")))?;
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    Ok(out)
}

/// Whether launchd has the job loaded, as far as we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
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
pub enum Step {
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
pub struct InstallFacts {
    pub file: Existing,
    pub loaded: Loaded,
    /// A supervisor that holds the lock for this config.
    pub running: Option<i32>,
    pub log_dir_missing: bool,
}

/// Why `install` does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A supervisor not started by this job runs for the config: the job's
    /// copy would exit 0 ("already running") and launchd would never
    /// respawn it, so nothing would supervise once that one stops.
    RunningOutside { pid: i32 },
    /// The plist on disk differs and `--force` was not given.
    Differs,
    /// launchd has the label loaded but not from our path.
    LoadedElsewhere,
}

pub fn plan_install(f: &InstallFacts, force: bool) -> Result<Vec<Step>, Refusal> {
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
pub enum OnDisk {
    Absent,
    /// A plist whose `Label` is the one asked for.
    Ours,
    /// Something else (another label, not a plist): left alone.
    Other(String),
}

pub fn plan_uninstall(file: &OnDisk, loaded: Loaded) -> Result<Vec<Step>, String> {
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
pub fn parse_print_pid(text: &str) -> Option<i32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("pid = "))
        .find_map(|v| v.trim().parse().ok())
}

/// Where the job lives and how launchctl names it.
struct Job {
    label: String,
    path: PathBuf,
    domain: String,
    target: String,
}

impl Job {
    fn new(label: String) -> Result<Job, Fatal> {
        let uid = nix::unistd::getuid().as_raw();
        let path = home()?
            .join("Library/LaunchAgents")
            .join(format!("{label}.plist"));
        Ok(Job {
            domain: format!("gui/{uid}"),
            target: format!("gui/{uid}/{label}"),
            label,
            path,
        })
    }

    /// The launchctl arguments of a step (`None` for file work).
    fn launchctl_args(&self, step: Step) -> Option<Vec<String>> {
        let path = self.path.display().to_string();
        Some(match step {
            Step::Bootout => vec!["bootout".into(), self.target.clone()],
            Step::Bootstrap => vec!["bootstrap".into(), self.domain.clone(), path],
            Step::Kickstart => vec!["kickstart".into(), self.target.clone()],
            Step::MakeLogDir | Step::Write | Step::Remove => return None,
        })
    }

    /// A step as a line for people: the exact command, or the file work.
    fn describe(&self, step: Step, spec: Option<&JobSpec>) -> String {
        if let Some(args) = self.launchctl_args(step) {
            let words: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
            return format!("$ launchctl {}", words.join(" "));
        }
        let path = shell_quote(&self.path.display().to_string());
        match step {
            Step::MakeLogDir => format!(
                "create {} (mode 0750)",
                spec.map_or(String::new(), |s| shell_quote(
                    &s.log_dir.display().to_string()
                ))
            ),
            Step::Write => format!("write {path} (mode 0644)"),
            _ => format!("remove {path}"),
        }
    }
}

/// The user's home folder: `$HOME`, else the password database.
fn home() -> Result<PathBuf, Fatal> {
    if let Some(h) = std::env::var_os("HOME").map(PathBuf::from) {
        if h.is_absolute() {
            return Ok(h);
        }
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .ok_or_else(|| {
            Fatal::with_code(
                exit::FAILURE,
                "cannot find the home folder: $HOME is unset and the user is not in the password database",
            )
        })
}

/// Runs launchctl; its exit status and stderr.
fn launchctl(args: &[String]) -> Result<(Option<i32>, String, String), Fatal> {
    let out = Command::new("launchctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Fatal::with_code(
                exit::FAILURE,
                format!("cannot run launchctl {}: {e}", args.join(" ")),
            )
        })?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

/// Asks launchd whether the job is loaded (a read-only `launchctl print`).
fn loaded(job: &Job) -> Result<Loaded, Fatal> {
    if !sys::HAS_LAUNCHD {
        return Ok(Loaded::Unknown);
    }
    let (code, stdout, _) = launchctl(&["print".into(), job.target.clone()])?;
    Ok(match code {
        Some(0) => Loaded::Yes {
            pid: parse_print_pid(&stdout),
        },
        _ => Loaded::No,
    })
}

/// Carries out a launchctl step, printing it first.
fn run_step(job: &Job, step: Step) -> Result<(), Fatal> {
    let Some(args) = job.launchctl_args(step) else {
        return Ok(());
    };
    crate::out!("{}\n", job.describe(step, None));
    let (code, _, stderr) = launchctl(&args)?;
    if code == Some(0) {
        return Ok(());
    }
    let code = code.map_or("a signal".into(), |c| format!("exit {c}"));
    Err(Fatal::with_code(
        exit::FAILURE,
        format!("launchctl {} failed ({code}): {stderr}", args.join(" ")),
    ))
}

pub fn command(config: &Path, action: LaunchdAction) -> Result<(), Fatal> {
    match action {
        LaunchdAction::Print { job } => print(config, &job),
        LaunchdAction::Install {
            job,
            force,
            dry_run,
        } => install(config, &job, force, dry_run),
        LaunchdAction::Uninstall { label, dry_run } => uninstall(config, label.as_deref(), dry_run),
    }
}

fn build(config: &Path, job: &LaunchdJob) -> Result<(JobSpec, Config, String, Vec<u8>), Fatal> {
    let (spec, cfg) = JobSpec::resolve(config)?;
    let label = choose_name("label", "--label", job.label.as_deref(), '.', &spec)?;
    let bytes = render(&plist(&spec, &label, job.sockets))?;
    Ok((spec, cfg, label, bytes))
}

fn print(config: &Path, job: &LaunchdJob) -> Result<(), Fatal> {
    let (spec, _, _, bytes) = build(config, job)?;
    if spec.path_env.is_none() {
        crate::say!("supervisor: note: PATH is unset here; the job gets launchd's /usr/bin:/bin:/usr/sbin:/sbin");
    }
    if !spec.log_dir.exists() {
        crate::say!(
            "supervisor: note: log.dir {} does not exist yet; create it before loading this job, \
             so launchd can open StandardErrorPath there (`launchd install` does)",
            spec.log_dir.display()
        );
    }
    print_all(&bytes)
}

fn install(config: &Path, job_args: &LaunchdJob, force: bool, dry_run: bool) -> Result<(), Fatal> {
    let (spec, cfg, label, bytes) = build(config, job_args)?;
    if !dry_run && !sys::HAS_LAUNCHD {
        return Err(Fatal::with_code(
            exit::FAILURE,
            "`launchd install` needs macOS (launchctl); nothing was written or run. \
             `supervisor launchd print` prints the job file, `launchd install --dry-run` what install would do",
        ));
    }
    if !dry_run && nix::unistd::getuid().is_root() {
        return Err(Fatal::with_code(
            exit::FAILURE,
            "`launchd install` writes a LaunchAgent for the logged-in user and root has none; \
             for a LaunchDaemon, write `supervisor launchd print` to /Library/LaunchDaemons/LABEL.plist \
             and `launchctl bootstrap system` it (see launchd/README.md)",
        ));
    }
    let job = Job::new(label)?;
    let log_dir_missing = !lock::check_dir("log dir", &spec.log_dir)
        .map_err(|e| Fatal::with_code(exit::CONFIG, e.to_string()))?;
    let facts = InstallFacts {
        file: existing(&job.path, &bytes)?,
        loaded: loaded(&job)?,
        running: lock::find_supervisor(&cfg.pid_path(), &cfg.state_path()),
        log_dir_missing,
    };
    let config_s = shell_quote(&spec.config.display().to_string());
    let steps = plan_install(&facts, force).map_err(|r| {
        let why = match r {
            Refusal::RunningOutside { pid } => format!(
                "a supervisor (pid {pid}) that launchd job {} did not start already runs for {}; \
                 the job's copy would exit 0 and never be respawned. Stop it first \
                 (`supervisor --config {config_s} stop`), then install again",
                job.label,
                spec.config.display()
            ),
            Refusal::Differs => format!(
                "{} exists and differs from the plist for this config; not replaced. \
                 Compare with `supervisor --config {config_s} launchd print --label {}`; \
                 --force replaces it (booting the loaded job out first)",
                job.path.display(),
                job.label
            ),
            Refusal::LoadedElsewhere => format!(
                "launchd has a job {} loaded, but not from {}; `supervisor launchd uninstall --label {}` \
                 unloads it, or --force replaces it",
                job.label,
                job.path.display(),
                job.label
            ),
        };
        Fatal::with_code(exit::FAILURE, why)
    })?;

    if dry_run {
        crate::out!("dry run: nothing is written and nothing is run. `launchd install` would:\n");
        if facts.loaded == Loaded::Unknown {
            crate::out!(
                "  (no launchctl here: whether {} is loaded was not checked)\n",
                job.target
            );
        }
        for &step in &steps {
            crate::out!("  {}\n", job.describe(step, Some(&spec)));
            if step == Step::Write {
                crate::out!(
                    "      (the plist `supervisor --config {config_s} launchd print --label {}{}` prints)\n",
                    job.label,
                    if job_args.sockets { " --sockets" } else { "" }
                );
            }
        }
        if steps.is_empty() {
            crate::out!("  nothing: {} is installed and running\n", job.label);
        }
        crate::out!(
            "  then wait up to {}s for `supervisor --config {config_s} status` to show the supervisor\n",
            START_DEADLINE.as_secs()
        );
        return Ok(());
    }

    for &step in &steps {
        match step {
            Step::MakeLogDir => {
                crate::out!("{}\n", job.describe(step, Some(&spec)));
                lock::create_dir("log dir", &spec.log_dir, 0o750)
                    .map_err(|e| Fatal::with_code(exit::CONFIG, e.to_string()))?;
            }
            Step::Write => {
                crate::out!("{}\n", job.describe(step, None));
                if let Some(dir) = job.path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Fatal::with_code(
                            exit::FAILURE,
                            format!("cannot create {}: {e}", dir.display()),
                        )
                    })?;
                }
                write_job_file(&job.path, &bytes, 0o644, force)?;
            }
            Step::Bootstrap => {
                if let Err(f) = run_step(&job, step) {
                    let kept = match facts.file {
                        Existing::Absent => {
                            let _ = std::fs::remove_file(&job.path);
                            format!("{} removed again", job.path.display())
                        }
                        _ => format!("{} kept", job.path.display()),
                    };
                    return Err(Fatal::with_code(
                        f.code,
                        format!(
                            "{}; {kept}. `launchctl print {}` and {} may tell more",
                            f.message,
                            job.target,
                            spec.launchd_log("launchd.err").display()
                        ),
                    ));
                }
            }
            _ => run_step(&job, step)?,
        }
    }

    crate::out!(
        "waiting up to {}s for the supervisor to start...\n",
        START_DEADLINE.as_secs()
    );
    let Some(pid) = wait_for(START_DEADLINE, || {
        lock::find_supervisor(&cfg.pid_path(), &cfg.state_path())
    }) else {
        let err = spec.launchd_log("launchd.err");
        return Err(Fatal::with_code(
            exit::FAILURE,
            format!(
                "launchd job {} is loaded, but no supervisor runs for {} after {}s. \
                 Its last words, in {}:\n{}\nSee also `launchctl print {}`",
                job.label,
                spec.config.display(),
                START_DEADLINE.as_secs(),
                err.display(),
                tail(&err, 5),
                job.target
            ),
        ));
    };
    // The human status: state, pids, the port.
    let _ = status::run(Ok(cfg.state_location()), false);
    crate::out!(
        "installed: launchd job {} ({}) runs supervisor pid {pid}\n",
        job.label,
        job.path.display()
    );
    Ok(())
}

fn uninstall(config: &Path, label: Option<&str>, dry_run: bool) -> Result<(), Fatal> {
    // The config is needed for the default label and to see the supervisor
    // go; an explicit label still uninstalls when the config is broken.
    let (spec, cfg) = match JobSpec::resolve(config) {
        Ok((spec, cfg)) => (Some(spec), Some(cfg)),
        Err(f) if label.is_some() => {
            crate::say!(
                "supervisor: note: {}; going on with the label given",
                f.message
            );
            (None, None)
        }
        Err(f) => return Err(f),
    };
    let label = match &spec {
        Some(spec) => choose_name("label", "--label", label, '.', spec)?,
        None => {
            let l = label.unwrap_or_default();
            super::check_name("label", l)
                .map_err(|e| Fatal::with_code(exit::USAGE, format!("--label: {e}")))?;
            l.to_owned()
        }
    };
    if !dry_run && !sys::HAS_LAUNCHD {
        return Err(Fatal::with_code(
            exit::FAILURE,
            "`launchd uninstall` needs macOS (launchctl); nothing was changed. \
             `launchd uninstall --dry-run` shows what it would do",
        ));
    }
    let job = Job::new(label)?;
    let file = on_disk(&job);
    let loaded = loaded(&job)?;
    let steps = plan_uninstall(&file, loaded)
        .map_err(|why| Fatal::with_code(exit::FAILURE, format!("{why}; nothing was changed")))?;

    if dry_run {
        crate::out!("dry run: nothing is changed. `launchd uninstall` would:\n");
        if loaded == Loaded::Unknown {
            crate::out!(
                "  (no launchctl here: whether {} is loaded was not checked)\n",
                job.target
            );
        }
        for &step in &steps {
            crate::out!("  {}\n", job.describe(step, None));
        }
        if file == OnDisk::Absent {
            crate::out!("  ({} does not exist)\n", job.path.display());
        }
        return Ok(());
    }
    if steps.is_empty() {
        crate::out!(
            "nothing to uninstall: launchd has no job {} loaded and {} does not exist\n",
            job.label,
            job.path.display()
        );
    }
    for &step in &steps {
        match step {
            Step::Remove => {
                crate::out!("{}\n", job.describe(step, None));
                std::fs::remove_file(&job.path).map_err(|e| {
                    Fatal::with_code(
                        exit::FAILURE,
                        format!("cannot remove {}: {e}", job.path.display()),
                    )
                })?;
            }
            _ => run_step(&job, step)?,
        }
    }
    // bootout stops the job's process; wait for it to be gone for good.
    if let (Loaded::Yes { pid: Some(pid) }, Some(spec)) = (loaded, &spec) {
        let budget = Duration::from_secs(stop_budget_secs(spec.stop_timeout) + 5);
        if wait_for(budget, || (!sys::is_alive(pid)).then_some(())).is_none() {
            return Err(Fatal::with_code(
                exit::FAILURE,
                format!(
                    "supervisor {pid} is still running {}s after bootout",
                    budget.as_secs()
                ),
            ));
        }
    }
    if let Some(cfg) = &cfg {
        if let Some(pid) = lock::find_supervisor(&cfg.pid_path(), &cfg.state_path()) {
            crate::out!(
                "note: a supervisor (pid {pid}) still runs for {}; this job did not start it \
                 (`supervisor --config {} stop` stops it)\n",
                cfg.path.display(),
                shell_quote(&cfg.path.display().to_string())
            );
        }
    }
    crate::out!("uninstalled: launchd job {}\n", job.label);
    Ok(())
}

/// What is at the job's path: uninstall removes only a plist whose `Label`
/// is the one asked for.
fn on_disk(job: &Job) -> OnDisk {
    if !job.path.exists() {
        return OnDisk::Absent;
    }
    let shown = job.path.display();
    match Value::from_file(&job.path) {
        Err(e) => OnDisk::Other(format!("{shown} is not a readable plist ({e})")),
        Ok(v) => match v
            .as_dictionary()
            .and_then(|d| d.get("Label"))
            .and_then(Value::as_string)
        {
            Some(l) if l == job.label => OnDisk::Ours,
            Some(l) => OnDisk::Other(format!("{shown} is the job {l:?}, not {:?}", job.label)),
            None => OnDisk::Other(format!("{shown} has no Label")),
        },
    }
}

/// Polls `f` every 100 ms until it gives a value or `within` passes.
fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of a file, for an error message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read it: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn spec() -> JobSpec {
        JobSpec {
            program: "/opt/homebrew/bin/supervisor".into(),
            config: "/Users/me/sm/supervisor.toml".into(),
            workdir: "/Users/me/sm".into(),
            log_dir: "/Users/me/sm/logs".into(),
            path_env: Some("/Users/me/sm/.venv/bin:/opt/homebrew/bin:/usr/bin:/bin".into()),
            stop_timeout: Duration::from_secs(10),
            address: "127.0.0.1:8420".parse::<SocketAddr>().unwrap(),
            backlog: 1024,
            fd_name: "http".into(),
            nofile: None,
        }
    }

    fn get<'a>(d: &'a Dictionary, path: &[&str]) -> Option<&'a Value> {
        let (last, parents) = path.split_last()?;
        let mut d = d;
        for p in parents {
            d = d.get(p)?.as_dictionary()?;
        }
        d.get(last)
    }

    #[test]
    fn the_plist_has_every_key() {
        let d = plist(&spec(), "supervisor.http.8420", false);
        let s = |path: &[&str]| get(&d, path).and_then(Value::as_string).map(str::to_owned);
        let n = |path: &[&str]| get(&d, path).and_then(Value::as_signed_integer);
        let b = |path: &[&str]| get(&d, path).and_then(Value::as_boolean);
        assert_eq!(s(&["Label"]).as_deref(), Some("supervisor.http.8420"));
        let args: Vec<&str> = get(&d, &["ProgramArguments"])
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .filter_map(Value::as_string)
            .collect();
        assert_eq!(
            args,
            [
                "/opt/homebrew/bin/supervisor",
                "--config",
                "/Users/me/sm/supervisor.toml",
                "run"
            ]
        );
        assert_eq!(b(&["RunAtLoad"]), Some(true));
        assert_eq!(b(&["KeepAlive", "SuccessfulExit"]), Some(false));
        assert_eq!(s(&["ProcessType"]).as_deref(), Some("Standard"));
        assert_eq!(n(&["ThrottleInterval"]), Some(10));
        assert_eq!(n(&["ExitTimeOut"]), Some(22));
        assert_eq!(s(&["WorkingDirectory"]).as_deref(), Some("/Users/me/sm"));
        assert_eq!(
            s(&["StandardErrorPath"]).as_deref(),
            Some("/Users/me/sm/logs/launchd.err")
        );
        assert_eq!(
            s(&["StandardOutPath"]).as_deref(),
            Some("/Users/me/sm/logs/launchd.out")
        );
        assert_eq!(
            s(&["EnvironmentVariables", "PATH"]).as_deref(),
            spec().path_env.as_deref()
        );
        assert!(d.get("SoftResourceLimits").is_none());
        assert!(d.get("Sockets").is_none());
    }

    #[test]
    fn optional_keys() {
        let mut sp = spec();
        sp.nofile = Some(8192);
        sp.path_env = None;
        sp.address = "[::1]:9000".parse().unwrap();
        sp.fd_name = "web".into();
        let d = plist(&sp, "x", true);
        assert_eq!(
            get(&d, &["SoftResourceLimits", "NumberOfFiles"]).and_then(Value::as_signed_integer),
            Some(8192)
        );
        assert!(d.get("EnvironmentVariables").is_none());
        let sock = |k: &str| {
            get(&d, &["Sockets", "web", k])
                .and_then(Value::as_string)
                .map(str::to_owned)
        };
        assert_eq!(sock("SockNodeName").as_deref(), Some("::1"));
        assert_eq!(sock("SockServiceName").as_deref(), Some("9000"));
        assert_eq!(sock("SockFamily").as_deref(), Some("IPv6"));
        assert_eq!(sock("SockType").as_deref(), Some("stream"));
    }

    #[test]
    fn xml_round_trips_awkward_paths() {
        let mut sp = spec();
        sp.config = "/Users/me/a <b> & \"c\" 'd'/supervisor.toml".into();
        let bytes = render(&plist(&sp, "x", false)).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("<?xml"), "{text}");
        assert!(text.ends_with("</plist>\n"), "{text}");
        let back = Value::from_reader_xml(bytes.as_slice()).unwrap();
        let args = back.as_dictionary().unwrap()["ProgramArguments"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(args[2].as_string(), sp.config.to_str());
    }

    #[test]
    fn install_plans() {
        use Existing::*;
        use Step::*;
        let facts = |file, loaded, running| InstallFacts {
            file,
            loaded,
            running,
            log_dir_missing: false,
        };
        let yes = |pid| Loaded::Yes { pid };
        type Case = (InstallFacts, bool, Result<Vec<Step>, Refusal>);
        let cases: &[Case] = &[
            // fresh install
            (
                facts(Absent, Loaded::No, None),
                false,
                Ok(vec![Write, Bootstrap]),
            ),
            // a dry run off macOS plans like a fresh install
            (
                facts(Absent, Loaded::Unknown, None),
                false,
                Ok(vec![Write, Bootstrap]),
            ),
            // written before but not loaded (e.g. booted out by hand)
            (facts(Same, Loaded::No, None), false, Ok(vec![Bootstrap])),
            // installed and running: nothing to do
            (facts(Same, yes(Some(7)), Some(7)), false, Ok(vec![])),
            // installed, but stopped with `supervisor stop`
            (facts(Same, yes(None), None), false, Ok(vec![Kickstart])),
            // a different file: refused, or replaced with --force
            (
                facts(Different, yes(Some(7)), Some(7)),
                false,
                Err(Refusal::Differs),
            ),
            (
                facts(Different, yes(Some(7)), Some(7)),
                true,
                Ok(vec![Bootout, Write, Bootstrap]),
            ),
            (
                facts(Different, Loaded::No, None),
                true,
                Ok(vec![Write, Bootstrap]),
            ),
            // loaded from another file
            (
                facts(Absent, yes(None), None),
                false,
                Err(Refusal::LoadedElsewhere),
            ),
            (
                facts(Absent, yes(None), None),
                true,
                Ok(vec![Bootout, Write, Bootstrap]),
            ),
            // a supervisor started by hand (or by the old job) holds the lock
            (
                facts(Absent, Loaded::No, Some(9)),
                true,
                Err(Refusal::RunningOutside { pid: 9 }),
            ),
            (
                facts(Same, yes(Some(7)), Some(9)),
                false,
                Err(Refusal::RunningOutside { pid: 9 }),
            ),
            (
                facts(Absent, Loaded::Unknown, Some(9)),
                false,
                Err(Refusal::RunningOutside { pid: 9 }),
            ),
        ];
        for (f, force, want) in cases {
            assert_eq!(&plan_install(f, *force), want, "{f:?} force={force}");
        }
        let mut f = facts(Absent, Loaded::No, None);
        f.log_dir_missing = true;
        assert_eq!(
            plan_install(&f, false),
            Ok(vec![MakeLogDir, Write, Bootstrap])
        );
    }

    #[test]
    fn uninstall_plans() {
        use Step::*;
        let yes = Loaded::Yes { pid: Some(3) };
        let cases = [
            (OnDisk::Ours, yes, Ok(vec![Bootout, Remove])),
            (OnDisk::Ours, Loaded::No, Ok(vec![Remove])),
            (OnDisk::Absent, yes, Ok(vec![Bootout])),
            (OnDisk::Absent, Loaded::No, Ok(vec![])),
            (OnDisk::Ours, Loaded::Unknown, Ok(vec![Bootout, Remove])),
            (OnDisk::Absent, Loaded::Unknown, Ok(vec![Bootout])),
            (
                OnDisk::Other("not ours".into()),
                yes,
                Err("not ours".to_string()),
            ),
        ];
        for (file, loaded, want) in cases {
            assert_eq!(plan_uninstall(&file, loaded), want, "{file:?} {loaded:?}");
        }
    }

    #[test]
    fn pid_from_launchctl_print() {
        // The shape of `launchctl print gui/501/LABEL` (macOS 13-15).
        let running = "gui/501/supervisor.http.8420 = {\n\
            \tactive count = 1\n\
            \tpath = /Users/me/Library/LaunchAgents/supervisor.http.8420.plist\n\
            \ttype = LaunchAgent\n\
            \tstate = running\n\
            \n\
            \tprogram = /opt/homebrew/bin/supervisor\n\
            \targuments = {\n\
            \t\t/opt/homebrew/bin/supervisor\n\
            \t\t--config\n\
            \t\t/Users/me/sm/supervisor.toml\n\
            \t\trun\n\
            \t}\n\
            \n\
            \tpid = 4242\n\
            \timmediate reason = speculative\n\
            \tforks = 0\n\
            }\n";
        assert_eq!(parse_print_pid(running), Some(4242));
        let stopped = "gui/501/x = {\n\tstate = not running\n\tlast exit code = 0\n}\n";
        assert_eq!(parse_print_pid(stopped), None);
        assert_eq!(parse_print_pid(""), None);
    }
}
