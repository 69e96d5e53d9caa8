//! The launchd job: the plist for a config (launchd.plist(5)), built with
//! the `plist` crate, and `install`/`uninstall` as a LaunchAgent in the
//! user's GUI domain through `launchctl`.
//!
//! What install and uninstall do is decided by pure planners
//! ([`plan_install`], [`plan_uninstall`]) from a few facts (the file on
//! disk, whether launchd has the job loaded, whether a supervisor already
//! runs for the config); the shell gathers the facts, prints each step and
//! carries it out. `--dry-run` stops after printing, on any OS.
//!
//! The rooms: `file` builds the plist, `plan` holds the planners; this
//! file gathers the facts and runs launchctl.

mod file;
mod plan;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plist::Value;

use super::{choose_name, existing, print_all, shell_quote, write_job_file, Existing, JobSpec};
use crate::cli::{LaunchdAction, LaunchdJob};
use crate::config::Config;
use crate::exit::{self, Fatal};
use crate::lock;
use crate::status;
use crate::sys;
use file::{plist, render};
use plan::{
    bootstrap_retrying, parse_print_pid, plan_install, plan_uninstall, Bootstrapped, InstallFacts,
    Loaded, OnDisk, Refusal, Step, BOOTSTRAP_BACKOFF,
};

/// How long `install` waits for the supervisor to show up in `status`.
const START_DEADLINE: Duration = Duration::from_secs(30);

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

pub(crate) fn command(config: &Path, action: LaunchdAction) -> Result<(), Fatal> {
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
        Fatal::failure(why)
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
            if step == Step::Bootout {
                crate::out!(
                    "      (then wait up to {}s for the supervisor it stops to exit)\n",
                    crate::daemon::stop_budget(spec.stop_timeout).as_secs()
                );
            }
            if step == Step::Bootstrap && steps.contains(&Step::Bootout) {
                crate::out!(
                    "      (retried for up to {:.2}s while launchd still holds the label: EIO)\n",
                    BOOTSTRAP_BACKOFF.iter().sum::<Duration>().as_secs_f64()
                );
            }
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

    // The supervisor a bootout stops: the next bootstrap must wait for it
    // to be gone, or the new copy loses the lock and exits 0 for good.
    let old = facts.running.or(match facts.loaded {
        Loaded::Yes { pid } => pid,
        _ => None,
    });
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
            Step::Bootout => {
                run_step(&job, step)?;
                if let Some(pid) = old {
                    wait_gone(pid, &spec)?;
                }
            }
            Step::Bootstrap => {
                if let Err(f) = bootstrap(&job) {
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
    let _ = status::run(
        Ok((cfg.state_location(), Some(cfg.clone()))),
        status::Format::Text,
    );
    crate::out!(
        "installed: launchd job {} ({}) runs supervisor pid {pid}\n",
        job.label,
        job.path.display()
    );
    Ok(())
}

/// After `bootout`: waits for the supervisor `pid` it stops to exit,
/// bounded by the stop budget, saying what it waits for.
fn wait_gone(pid: i32, spec: &JobSpec) -> Result<(), Fatal> {
    if !sys::is_alive(pid) {
        return Ok(());
    }
    let budget = crate::daemon::stop_budget(spec.stop_timeout);
    crate::out!(
        "waiting up to {}s for supervisor {pid} (booted out) to exit...\n",
        budget.as_secs()
    );
    let started = Instant::now();
    if wait_for(budget, || (!sys::is_alive(pid)).then_some(())).is_none() {
        return Err(Fatal::failure(format!(
            "supervisor {pid} is still running {}s after bootout; the new job was not loaded \
             (it would lose the lock to it and exit). Once it has exited, run \
             `supervisor launchd install` again",
            budget.as_secs()
        )));
    }
    crate::out!(
        "supervisor {pid} exited after {:.1}s\n",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `launchctl bootstrap`, retried while launchd still holds the label
/// after a bootout (EIO), saying so.
fn bootstrap(job: &Job) -> Result<(), Fatal> {
    let Some(args) = job.launchctl_args(Step::Bootstrap) else {
        return Ok(());
    };
    crate::out!("{}\n", job.describe(Step::Bootstrap, None));
    let Bootstrapped {
        result,
        tries,
        waited,
    } = bootstrap_retrying(
        || match launchctl(&args) {
            Ok((code, _, stderr)) => (code, stderr),
            Err(f) => (None, f.message),
        },
        |d| {
            crate::out!(
                "launchd still holds {} (bootstrap: Input/output error); trying again in {}ms\n",
                job.label,
                d.as_millis()
            );
            std::thread::sleep(d)
        },
    );
    let after = match tries {
        1 => String::new(),
        n => format!(
            " (after {n} tries over {:.2}s: launchd kept the label after bootout)",
            waited.as_secs_f64()
        ),
    };
    match result {
        Ok(()) => {
            if tries > 1 {
                crate::out!("loaded{after}\n");
            }
            Ok(())
        }
        Err((code, stderr)) => {
            let code = code.map_or("a signal".into(), |c| format!("exit {c}"));
            Err(Fatal::with_code(
                exit::FAILURE,
                format!(
                    "launchctl {} failed ({code}): {stderr}{after}",
                    args.join(" ")
                ),
            ))
        }
    }
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
        .map_err(|why| Fatal::failure(format!("{why}; nothing was changed")))?;

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
        let budget = crate::daemon::stop_budget(spec.stop_timeout) + Duration::from_secs(5);
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
