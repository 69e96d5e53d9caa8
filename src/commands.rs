//! The subcommands: each a function from the parsed command line to an
//! [`Outcome`] — an exit code from SPEC.md's table, or a [`Fatal`] error,
//! which [`main`] prints and maps to its code in one place. `run` sets the
//! stage for the driver; the others talk to a running supervisor through
//! signals, after proving it is the lock holder.

use std::io::IsTerminal;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use nix::errno::Errno;
use nix::sys::signal::{SigHandler, Signal};
use tracing_subscriber::fmt::writer::MakeWriterExt;

use crate::attrs;
use crate::child::{self, Creds};
use crate::cli::{Check, Cli, Command};
use crate::config::{self, Config, LogTo, StateLocation};
use crate::daemon::{self, handoff, reload, Daemon, Origin, Resumption};
use crate::exit::{self, Fatal, Outcome, NOTHING_STARTED};
use crate::fsafe;
use crate::listener;
use crate::lock::{self, Finding, InstanceLock};
use crate::logs::{LogSink, Perms, PrefixedStderr, SinkWriter};
use crate::state::Record;
use crate::status;
use crate::sys;
use crate::text::human;

/// Run the command; the process's exit code.
pub(crate) fn main(cli: Cli) -> i32 {
    let path = config::locate(cli.config.as_deref());
    let outcome = match cli.command {
        Command::Run => run(&path),
        Command::Status {
            json,
            format,
            check,
        } => {
            let format = match (json, format) {
                (true, _) => status::Format::Json,
                (false, f) => f.unwrap_or(status::Format::Text),
            };
            Ok(match check {
                Some(Check::Ready) => status::ready(reach(&path)),
                None => status::run(reach(&path), format),
            })
        }
        Command::Stop { timeout } => reach(&path)
            .map_err(Fatal::config)
            .and_then(|(loc, cfg)| stop(&loc, cfg.as_ref(), timeout)),
        Command::Restart { no_wait: true, .. } => {
            reach(&path).map_err(Fatal::config).and_then(|(loc, cfg)| {
                signal(&loc, cfg.as_ref(), Signal::SIGUSR1, "restart the child")
            })
        }
        Command::Restart { timeout, .. } => reach(&path)
            .map_err(Fatal::config)
            .and_then(|(loc, cfg)| restart(&loc, cfg.as_ref(), timeout)),
        Command::Reload => reach(&path)
            .map_err(Fatal::config)
            .and_then(|(loc, cfg)| reload(&loc, cfg.as_ref())),
        Command::ReopenLogs => reach(&path)
            .map_err(Fatal::config)
            .and_then(|(loc, cfg)| signal(&loc, cfg.as_ref(), Signal::SIGHUP, "reopen the logs")),
        Command::CheckConfig => match load(&path).and_then(|cfg| check_config(&cfg)) {
            // A reload's preflight: the refusal goes to the supervisor
            // that asked, typed, as one JSON line.
            Err(fatal) if handoff::asked_by_a_reload() => {
                crate::say!("{}", serde_json::to_string(&fatal).unwrap_or_default());
                return fatal.code;
            }
            checked => checked,
        },
        Command::HandoffVersion => {
            crate::out!("{}", reload::handoff_answer());
            Ok(exit::OK)
        }
        Command::Logs {
            follow,
            lines,
            supervisor,
        } => load(&path).and_then(|cfg| crate::logs::tail::run(&cfg, lines, follow, supervisor)),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "supervisor", &mut script);
            print_bytes(&script)
        }
        Command::Launchd { action } => crate::jobfile::launchd(&path, action),
        Command::Systemd { action } => crate::jobfile::systemd(&path, action),
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|e| Fatal::failure(format!("cannot render the manual page: {e}")))
                .and_then(|()| print_bytes(&page))
        }
    };
    match outcome {
        Ok(code) => code,
        Err(fatal) => {
            crate::say!("supervisor: {fatal}");
            fatal.code
        }
    }
}

/// Write generated text to stdout. A reader that goes away early
/// (`supervisor completions bash | head -1`) is not an error.
fn print_bytes(bytes: &[u8]) -> Outcome {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => Ok(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(e) => Err(Fatal::failure(format!("cannot write to stdout: {e}"))),
    }
}

fn load(path: &Path) -> Result<Config, Fatal> {
    Config::load(path)
        .map_err(|e| Fatal::config("invalid configuration").with_detail(e.to_string()))
}

/// Where the running supervisor for the config at `path` keeps its files,
/// for the commands that talk to it. A file edited into an invalid state
/// still tells that as long as its state dir can be made out (the edit may
/// be half done; the supervisor runs with what it read at start): then a
/// warning goes to stderr and the config is `None`.
fn reach(path: &Path) -> Result<(StateLocation, Option<Config>), String> {
    match Config::load(path) {
        Ok(cfg) => Ok((cfg.state_location(), Some(cfg))),
        Err(problems) => match config::locate_state_dir(path) {
            Ok(loc) => {
                crate::say!(
                    "supervisor: warning: the config file on disk is invalid (a running supervisor \
                     keeps what it read at start):\n{problems}"
                );
                Ok((loc, None))
            }
            Err(_) => Err(format!("invalid configuration:\n{problems}")),
        },
    }
}

/// What `run` needs that only the system can tell, checked the same way by
/// `check-config`: nothing here changes anything (a file created and
/// removed at once proves a folder writable).
struct Checked {
    /// Who the child runs as, when that differs from us.
    creds: Option<Creds>,
    /// What the child's umask, nice and limits will be, and the facts
    /// that decided it (for `check-config`'s report).
    attributes: (attrs::Plan, attrs::Facts),
    /// Things that may work by the time the child starts, said on stderr.
    warnings: Vec<String>,
}

/// Every check `run` makes before it starts anything; a failure is the
/// same exit 78 for both commands.
fn run_checks(cfg: &Config) -> Result<Checked, Fatal> {
    let file = cfg.path.display();
    let creds = child::credentials(cfg.child.user.as_deref(), cfg.child.allow_root)
        .map_err(|e| Fatal::config(format!("{file}: {e}")).then(NOTHING_STARTED))?;
    check_dirs(cfg)?;
    check_writable("state dir", &cfg.supervisor.state_dir)?;
    if cfg.log.to == LogTo::Files {
        check_writable("log dir", &cfg.log.dir)?;
        log_perms(cfg)?;
    }
    let attributes = attributes(cfg, creds.is_some())?;
    match std::fs::metadata(&cfg.child.cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Fatal::config(format!(
                "{file}: key `child.cwd`: {} is not a folder",
                cfg.child.cwd.display()
            ))
            .then(NOTHING_STARTED))
        }
        Err(e) => {
            return Err(Fatal::config(format!(
                "{file}: key `child.cwd`: {}: {e}",
                cfg.child.cwd.display()
            ))
            .then(NOTHING_STARTED))
        }
    }
    let mut warnings = Vec::new();
    if let Some(c) = creds.as_ref().filter(|_| !cfg.child.inherit_env) {
        for left in child::path_left_out(c.uid) {
            warnings.push(format!(
                "PATH folder {:?} is left out of the PATH of child.user {:?}: {}",
                left.dir, c.name, left.why
            ));
        }
    }
    if let Some(cap) =
        sys::somaxconn().filter(|cap| i64::from(cfg.listen.backlog) > i64::from(*cap))
    {
        warnings.push(format!(
            "{file}: key `listen.backlog`: {} is above the system's cap of {cap} \
             ({}); the kernel silently uses {cap}",
            cfg.listen.backlog,
            if cfg!(target_os = "macos") {
                "kern.ipc.somaxconn"
            } else {
                "net.core.somaxconn"
            }
        ));
    }
    let path = cfg
        .child
        .env
        .get("PATH")
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"));
    if let Some(program) = cfg.child.command.first() {
        if let Err(e) = child::resolve_program(program, path.as_deref(), &cfg.child.cwd) {
            warnings.push(format!(
                "{file}: key `child.command`: {e}; the child cannot start until it is there"
            ));
        }
    }
    if let Some(why) = child::misuses_the_socket(&cfg.child.command) {
        warnings.push(format!("{file}: key `child.command`: {why}"));
    }
    if let Some(program) = cfg.alerts.as_ref().and_then(|a| a.command.first()) {
        // Run from wherever the supervisor runs: a path relative to that
        // would mean something else under launchd.
        if program.contains('/') && !Path::new(program).is_absolute() {
            return Err(Fatal::config(format!(
                "{file}: key `alerts.command`: {program:?} must be an absolute path or a name \
                 found on PATH"
            ))
            .then(NOTHING_STARTED));
        }
        let ours = std::env::var_os("PATH");
        if let Err(e) = child::resolve_program(program, ours.as_deref(), Path::new("/")) {
            warnings.push(format!(
                "{file}: key `alerts.command`: {e}; alerts cannot be sent until it is there"
            ));
        }
    }
    Ok(Checked {
        creds,
        attributes,
        warnings,
    })
}

/// Can files be created in `dir` (or, while it does not exist, in the
/// nearest folder above it, where `run` will create it)? Tried for real —
/// a file created and removed at once — since modes alone do not tell a
/// read-only mount, an immutable folder or a quota. A 78 naming the folder
/// and the system's reason. The name is `mkstemp`'s: that folder may be a
/// sticky one others write in too (`/tmp`), where a name they can guess
/// could be taken already.
fn check_writable(what: &str, dir: &Path) -> Result<(), Fatal> {
    let Some(existing) = dir.ancestors().find(|d| d.symlink_metadata().is_ok()) else {
        return Ok(());
    };
    let created = nix::unistd::mkstemp(&existing.join(".supervisor-check.XXXXXX"))
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32));
    match created {
        Ok((fd, probe)) => {
            // SAFETY: mkstemp just returned this descriptor; nothing else owns it.
            drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => {
            let place = if existing == dir {
                String::new()
            } else {
                format!(" (it would be created in {})", existing.display())
            };
            Err(Fatal::config(format!(
                "{what} {}: cannot create files there{place}: {e}",
                dir.display()
            ))
            .then(NOTHING_STARTED))
        }
    }
}

/// What to do about a file root would run or read that someone else could
/// change.
const ROOT_REMEDY: &str = "install it where only root can change it (owned by root, no group or \
     other write, all the way up), or run the supervisor as the service's user instead of root";

/// As root, what root runs or reads must be root's all the way up: the
/// config file, the supervisor's own executable (what `reload` runs), and
/// the alert command's program as it will be found on PATH. 78 naming the
/// path, its owner and what to do. Nothing to check for any other user.
fn root_files(cfg: &Config) -> Result<(), Fatal> {
    if fsafe::euid() != 0 {
        return Ok(());
    }
    let refuse = |e: String| Fatal::config(e).then(NOTHING_STARTED);
    fsafe::check_root_file("config", &cfg.path, ROOT_REMEDY).map_err(refuse)?;
    match std::env::current_exe() {
        Ok(exe) => fsafe::check_root_file("the supervisor's executable", &exe, ROOT_REMEDY)
            .map_err(refuse)?,
        Err(e) => {
            return Err(refuse(format!(
                "cannot find the supervisor's own executable to check who can change it: {e}"
            )))
        }
    }
    if let Some(program) = cfg.alerts.as_ref().and_then(|a| a.command.first()) {
        let ours = std::env::var_os("PATH");
        // Not found: run_checks warns; nothing to check yet.
        if let Ok(found) = child::resolve_program(program, ours.as_deref(), Path::new("/")) {
            let what = format!("{}: key `alerts.command`: the program", cfg.path.display());
            fsafe::check_root_file(&what, &found, ROOT_REMEDY).map_err(refuse)?;
        }
    }
    Ok(())
}

/// Who may read the log files: 0600, or 0640 and `log.group`, a group
/// that must exist and that we are root or a member of (else `fchown`
/// would fail on every file).
fn log_perms(cfg: &Config) -> Result<Perms, Fatal> {
    use nix::unistd::{getegid, Gid, Group, Uid, User};
    let Some(name) = cfg.log.group.as_deref() else {
        return Ok(Perms::PRIVATE);
    };
    let bad = |why: String| {
        Fatal::config(format!("{}: key `log.group`: {why}", cfg.path.display()))
            .then(NOTHING_STARTED)
    };
    let group = match name.parse::<u32>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(name),
    }
    .map_err(|e| bad(format!("cannot look up group {name:?}: {e}")))?
    .ok_or_else(|| bad(format!("no group {name:?} on this system")))?;
    // The group database's members (as `id` and `newgrp` see them; the
    // same on Linux and macOS), or our own group.
    let me = User::from_uid(Uid::from_raw(fsafe::euid())).ok().flatten();
    let member = fsafe::euid() == 0
        || getegid() == group.gid
        || me.is_some_and(|u| u.gid == group.gid || group.mem.contains(&u.name));
    if !member {
        return Err(bad(format!(
            "this supervisor (uid {}) is not a member of group {} ({}), so it cannot give \
             the log files to it; add its user to the group or run it as root",
            fsafe::euid(),
            group.name,
            group.gid
        )));
    }
    Ok(Perms::readable_by(Some(group.gid.as_raw())))
}

/// Hostile state and log folders (a link, not ours, writable by others)
/// are refused before anything is created or locked. Whether the state dir
/// exists already (else `run` creates it).
fn check_dirs(cfg: &Config) -> Result<bool, Fatal> {
    let state_dir_exists = lock::check_dir("state dir", &cfg.supervisor.state_dir)?;
    // With `log.to = "stdout"` the log folder is never used.
    if cfg.log.to == LogTo::Files {
        lock::check_dir("log dir", &cfg.log.dir)?;
    }
    Ok(state_dir_exists)
}

/// The child's umask, nice and `[child.limits]` against this system: a
/// limit it would refuse (above the hard limit without root, beyond the
/// most open files allowed, "unlimited" open files) is a 78 naming the key.
fn attributes(cfg: &Config, other_user: bool) -> Result<(attrs::Plan, attrs::Facts), Fatal> {
    let file = cfg.path.display();
    let facts =
        attrs::Facts::here().map_err(|e| Fatal::failure(e.to_string()).then(NOTHING_STARTED))?;
    let plan =
        attrs::plan(&attrs::Wanted::of(&cfg.child, other_user), &facts).map_err(|refused| {
            let lines: Vec<String> = refused
                .iter()
                .map(|r| format!("{file}: key `{}`: {}", r.key, r.why))
                .collect();
            match lines.as_slice() {
                [one] => Fatal::config(one.as_str()).then(NOTHING_STARTED),
                _ => Fatal::config("this system refuses these limits")
                    .with_detail(lines.join("\n"))
                    .then(NOTHING_STARTED),
            }
        })?;
    Ok((plan, facts))
}

/// `supervisor check-config`: every check `run` makes, then the resolved
/// config on stdout, followed by the child's attributes here as comments.
fn check_config(cfg: &Config) -> Outcome {
    // As a reload's preflight: can this build take over?
    handoff::can_take_over().map_err(Fatal::failure)?;
    root_files(cfg)?;
    let pre = run_checks(cfg)?;
    // Started the way `run` would be, by a manager passing the socket?
    // Every check comes before the first line of output: an invalid config
    // prints its errors only, not the resolved config first.
    let passed = listener::from_manager(cfg.listen.address, &cfg.listen.name)
        .map_err(|e| Fatal::config(format!("{}: {e}", cfg.path.display())))?;
    for w in &pre.warnings {
        crate::say!("supervisor: warning: {w}");
    }
    crate::out!("{}", cfg.to_toml());
    // Still single-threaded here, as reading the umask needs.
    let inherited = attrs::Inherited {
        umask: sys::umask(),
        nice: sys::nice(),
    };
    let (plan, facts) = &pre.attributes;
    crate::out!("{}", attrs::report(plan, facts, inherited));
    if passed.is_some() {
        crate::out!(
            "# listen: the socket the service manager passed for {} (no bind)\n",
            cfg.listen.address
        );
    }
    Ok(exit::OK)
}

/// `supervisor run`: the launchd / systemd entry point.
///
/// A copy that loses the race for the lock (launchd starting one at every
/// login, a second `run` typed by hand) does only what finding the lock
/// takes: the config, the folders' refusal, the state dir, the lock. The
/// rest of [`run_checks`] (the user database, limits, PATH searches, /proc)
/// runs once this copy holds the lock; its failure is still 78 with no
/// child started, the pid file left empty.
fn run(path: &Path) -> Outcome {
    // Re-executed by `reload`? Then the lock, the socket and the child are
    // ours already.
    if let Some(handoff) = handoff::take()
        .map_err(|e| Fatal::failure(format!("cannot carry on after a reload: {e}")))?
    {
        sys::raise_nofile();
        return run_reloaded(path, handoff);
    }
    let cfg = Config::load(path).map_err(|e| {
        Fatal::config("invalid configuration")
            .with_detail(e.to_string())
            .then(NOTHING_STARTED)
    })?;
    root_files(&cfg)?;
    if !check_dirs(&cfg)? {
        lock::create_dir("state dir", &cfg.supervisor.state_dir, 0o700)?;
    }

    let pid_path = cfg.pid_path();
    let held = daemon::signals::hold();
    let lock = match InstanceLock::acquire(&pid_path) {
        Ok(Ok(lock)) => lock,
        Ok(Err(holder)) if holder.pid == Some(std::process::id() as i32) => {
            // Our own pid holds it: a reload executed this image and the
            // handoff did not come with it. The service is ours and we
            // cannot carry it on: fail, so the service manager restarts it.
            return Err(Fatal::failure(format!(
                "this process (pid {}) holds the lock {} already: a reload executed it without a handoff; exiting",
                std::process::id(),
                pid_path.display()
            )));
        }
        Ok(Err(holder)) => return already_running(&cfg, holder.pid),
        Err(e) => {
            return Err(
                Fatal::failure(format!("cannot lock {}: {e}", pid_path.display()))
                    .then(NOTHING_STARTED),
            )
        }
    };

    // A supervisor whose lock was taken from it (its state folder removed
    // and made again) still runs its service: this copy must not take it
    // over, nor stop its child as an earlier supervisor's leftovers.
    if let Some(pid) = live_recorded_supervisor(&cfg) {
        drop(lock);
        crate::say!(
            "supervisor: already running as pid {pid} (recorded in {}), though it no longer \
             holds the lock on {}; this copy exits and changes nothing (stop that one first)",
            cfg.state_path().display(),
            cfg.supervisor.state_dir.display()
        );
        return Ok(exit::OK);
    }

    // From here on we are the one supervisor. Before any thread (it sets
    // a variable of our environment), and only in the copy that holds the
    // lock (a losing copy reads nothing it does not need): room for
    // descriptors that detached helpers of earlier children may hold (the
    // child gets the limit we started with).
    sys::raise_nofile();
    let pre = run_checks(&cfg)?;
    for w in &pre.warnings {
        crate::say!("supervisor: warning: {w}");
    }
    // A socket the service manager passed is taken now, while we are the
    // only thread.
    let passed = listener::from_manager(cfg.listen.address, &cfg.listen.name)
        .map_err(|e| Fatal::config(format!("{}: {e}", cfg.path.display())).then(NOTHING_STARTED))?;
    serve(Serve {
        cfg,
        creds: pre.creds,
        lock,
        notify: None,
        held,
        origin: Origin::Fresh { passed },
    })
}

/// A `run` that lost the race for the lock. The deliberate exit 0:
/// launchd's SuccessfulExit=false keeps this copy from being respawned.
/// Nothing was written. Unless the holder is proven to be the supervisor
/// of another config sharing this state folder: that is a configuration
/// to fix (78), not a second copy.
fn already_running(cfg: &Config, pid: Option<i32>) -> Outcome {
    let address = cfg.listen.address.to_string();
    let mut who = pid.map_or("another supervisor (pid not yet written)".into(), |p| {
        format!("pid {p}")
    });
    // The record is read, not the holder proven: this copy signals nobody
    // and changes nothing, so the proof (/proc, the holder's open files)
    // is taken only when the record says another service holds the folder,
    // before that refuses the start (the holder may not have written its
    // own record yet).
    let conflict = crate::state::read(&cfg.state_path())
        .ok()
        .flatten()
        .and_then(|r| {
            lock::other_service(&r, &cfg.path, Some(&address), &cfg.supervisor.state_dir)
        });
    if conflict.is_some() {
        match lock::find(&cfg.pid_path(), &cfg.state_path()) {
            Finding::Running { pid, record, .. } => {
                if let Some(why) = lock::other_service(
                    &record,
                    &cfg.path,
                    Some(&address),
                    &cfg.supervisor.state_dir,
                ) {
                    return Err(Fatal::config(why).then(NOTHING_STARTED));
                }
                who = format!("pid {pid}");
            }
            Finding::Unknown { why, .. } => who = format!("{who} ({why})"),
            Finding::NotRunning => {}
        }
    }
    crate::say!(
        "supervisor: already running as {who} (lock {}); this copy exits and changes nothing",
        cfg.supervisor.state_dir.display()
    );
    Ok(exit::OK)
}

/// The supervisor `state.json` names, when it is alive and still the
/// process that wrote the record (pid, start time, boot) and is not us.
fn live_recorded_supervisor(cfg: &Config) -> Option<i32> {
    let rec = crate::state::read(&cfg.state_path()).ok().flatten()?;
    crate::daemon::orphan::live_supervisor(&rec, &crate::daemon::orphan::System)
}

/// `run` in the image `reload` executed: the config read again, checked,
/// compared; what cannot be taken (an invalid file, a `[listen]` that
/// cannot be bound, a moved state dir) leaves the config the child runs
/// under in force, and is reported as the reload's failure.
fn run_reloaded(path: &Path, resumed: handoff::Resumed) -> Outcome {
    let handoff::Resumed {
        lock,
        listener,
        notify,
        pipes,
        metrics,
        handoff,
    } = resumed;
    let old = Config::parse(&handoff.config, path).map_err(|e| {
        Fatal::failure(format!(
            "cannot read the config handed over by the reload:\n{e}"
        ))
    })?;
    // Each a reason the reload failed (what it leaves in force is said
    // where it is reported).
    let mut problems: Vec<Fatal> = Vec::new();
    let mut cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            problems.push(Fatal::config(format!("the config is invalid: {e}")));
            old.clone()
        }
    };
    if cfg.log.to != old.log.to {
        problems.push(Fatal::failure(format!(
            "log.to cannot change in a reload (the child's output is wired when it starts; \
             it stays \"{}\"); stop and start the supervisor to change it",
            old.log.to.as_str()
        )));
        cfg.log.to = old.log.to;
    }
    if cfg.supervisor != old.supervisor {
        problems.push(Fatal::failure(
            "supervisor.state_dir cannot change in a reload (the lock lives there); \
             stop and start the supervisor to move it",
        ));
        cfg = old.clone();
    }
    // The running service is ours now: a check that fails even for the
    // config it runs under (the child's cwd or user gone since it started)
    // fails the reload and leaves it running as it is, with the identity
    // the old image used.
    let creds = match run_checks(&cfg) {
        Ok(pre) => pre.creds,
        Err(f) => {
            problems.push(f);
            let again = (cfg != old).then(|| {
                cfg = old.clone();
                run_checks(&cfg)
            });
            match again {
                Some(Ok(pre)) => pre.creds,
                Some(Err(f)) => {
                    problems.push(f);
                    handoff.creds.clone()
                }
                None => handoff.creds.clone(),
            }
        }
    };
    let mut next_listener = None;
    if cfg.listen.address != old.listen.address || cfg.listen.backlog != old.listen.backlog {
        match listener::Listener::bind_elsewhere(cfg.listen.address, cfg.listen.backlog) {
            Ok(fd) => next_listener = Some(fd),
            Err(e) => {
                problems.push(Fatal::failure(format!(
                    "cannot bind the new listen.address {}: {}; everything stays as it was (still on {})",
                    cfg.listen.address,
                    listener::describe_bind_error(&e),
                    old.listen.address
                )));
                cfg = old.clone();
            }
        }
    }
    let lock = InstanceLock::from_handed(lock, cfg.pid_path()).map_err(|e| {
        Fatal::failure(format!(
            "cannot take the instance lock over after a reload: {e}"
        ))
    })?;
    let listener = match listener {
        Some(fd) => Some(
            listener::Listener::adopt(fd)
                .map_err(|e| Fatal::failure(format!("cannot take the socket over: {e}")))?,
        ),
        None => None,
    };
    serve(Serve {
        held: daemon::signals::hold(),
        origin: Origin::Resumed(Box::new(Resumption {
            handoff,
            listener,
            pipes,
            old,
            problems,
            next_listener,
            metrics,
        })),
        cfg,
        creds,
        lock,
        notify,
    })
}

/// What `serve` needs: everything `run` and `run_reloaded` settled.
struct Serve {
    cfg: Config,
    creds: Option<Creds>,
    lock: InstanceLock,
    /// A notify socket handed over by `reload`: (fd, NOTIFY_SOCKET value,
    /// files to remove at exit).
    notify: Option<(OwnedFd, String, Vec<std::path::PathBuf>)>,
    held: nix::sys::signal::SigSet,
    origin: Origin,
}

/// The lock is held: open the logs, start the event loop and drive.
fn serve(s: Serve) -> Outcome {
    let Serve {
        cfg,
        creds,
        lock,
        notify,
        held,
        origin,
    } = s;
    // A file-size limit (RLIMIT_FSIZE) must fail a log write with EFBIG,
    // which the sinks drop and count, not kill us. The child gets every
    // signal reset to its default.
    // SAFETY: installs SIG_IGN, no handler code; nothing else sets SIGXFSZ.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGXFSZ, SigHandler::SigIgn) };
    let files = match cfg.log.to {
        LogTo::Files => {
            lock::create_dir("log dir", &cfg.log.dir, 0o750)?;
            let perms = log_perms(&cfg)?;
            let child = LogSink::narrated(
                cfg.child_log_path(),
                perms,
                cfg.log.max_bytes,
                cfg.log.max_files,
            );
            let supervisor = LogSink::new(
                cfg.supervisor_log_path(),
                perms,
                cfg.log.max_bytes,
                cfg.log.max_files,
            );
            let to_terminal = std::io::stderr().is_terminal();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_target(false)
                .with_writer(
                    SinkWriter(supervisor.clone())
                        .and(std::io::stderr.with_filter(move |_| to_terminal)),
                )
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
            // Once, one line, on a fresh start: a newcomer at a terminal
            // sees where the lines go; under launchd or systemd it is one
            // line per start in what they capture.
            if matches!(origin, Origin::Fresh { .. }) {
                crate::say!(
                    "supervisor: running as pid {} for {}; its log: {}, the child's output: {} \
                     (`supervisor logs -f`)",
                    std::process::id(),
                    cfg.listen.address,
                    cfg.supervisor_log_path().display(),
                    cfg.child_log_path().display()
                );
            }
            Some(daemon::LogFiles { child, supervisor })
        }
        // The engine stamps each line with its own time.
        LogTo::Stdout => {
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .event_format(crate::logs::Bare)
                .with_writer(PrefixedStderr)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
            None
        }
    };

    // Whatever our parent leaked (or the old image handed over and we
    // took) must not reach the child.
    sys::cloexec_from(4);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal::failure(format!("cannot start the event loop: {e}")))?;
    let result = runtime.block_on(async {
        let signals = daemon::signals::register(held)
            .map_err(|e| Fatal::failure(format!("cannot handle signals: {e}")))?;
        let notify = match (cfg.health.notify, notify) {
            (true, Some((fd, env_value, cleanup))) => Some(
                crate::health::NotifySocket::adopt(fd, env_value, cleanup).map_err(|e| {
                    Fatal::failure(format!("cannot take the notify socket over: {e}"))
                })?,
            ),
            (true, None) => Some(
                crate::health::NotifySocket::bind(
                    &cfg.supervisor.state_dir,
                    creds.as_ref().map(|c| c.uid),
                )
                .map_err(|e| Fatal::failure(format!("cannot create the notify socket: {e}")))?,
            ),
            (false, _) => None,
        };
        Daemon::new(cfg, creds, lock, files, notify, origin)?
            .run(signals)
            .await
    });
    if let Err(e) = &result {
        tracing::error!("fatal: {e}; exiting");
    }
    result.map(|()| exit::OK)
}

/// The supervisor running for `loc`, proven to be the lock holder its
/// record names (`lock::find`) and to run this config: `None` when none
/// runs. A holder that is not proven is exit 4, and is never signalled;
/// another service's supervisor (a shared state folder) is 78. What is
/// signalled and waited on is the [`lock::Holder`]: the very process
/// proven (through a pidfd on Linux), never one that got its pid since.
fn running(
    loc: &StateLocation,
    cfg: Option<&Config>,
    what: &str,
) -> Result<Option<(lock::Holder, Record)>, Fatal> {
    match lock::find(&loc.pid_path(), &loc.state_path()) {
        Finding::NotRunning => Ok(None),
        Finding::Unknown { why, .. } => Err(Fatal::with_code(
            exit::UNKNOWN,
            format!("{why}; cannot {what}: nothing was signalled"),
        )),
        Finding::Running { record, holder, .. } => {
            let address = cfg.map(|c| c.listen.address.to_string());
            match lock::other_service(&record, &loc.config, address.as_deref(), &loc.state_dir) {
                Some(why) => Err(Fatal::config(format!(
                    "{why}; cannot {what}: nothing was done"
                ))),
                None => Ok(Some((holder, *record))),
            }
        }
    }
}

fn signal(loc: &StateLocation, cfg: Option<&Config>, sig: Signal, what: &str) -> Outcome {
    let Some((holder, _)) = running(loc, cfg, what)? else {
        return Err(Fatal::with_code(
            exit::NOT_RUNNING,
            format!(
                "no supervisor is running for {}; cannot {what}",
                loc.config.display()
            ),
        ));
    };
    send(&holder, sig, what)
}

/// `sig` to the proven supervisor.
fn send(holder: &lock::Holder, sig: Signal, what: &str) -> Outcome {
    let pid = holder.pid();
    match holder.signal(sig) {
        Ok(()) => Ok(exit::OK),
        Err(Errno::ESRCH) => Err(Fatal::with_code(
            exit::NOT_RUNNING,
            format!("supervisor {pid} exited meanwhile; cannot {what}"),
        )),
        Err(e) => Err(Fatal::failure(format!(
            "cannot signal supervisor {pid}: {e}"
        ))),
    }
}

/// How long `reload` waits for the new image (the preflight alone may
/// take 30 s before it is given up).
const RELOAD_WAIT: Duration = Duration::from_secs(60);

/// `supervisor reload`: SIGUSR2 to the running supervisor, then wait until
/// its record says the new image runs (`supervisor.reloads` grew) or why
/// the reload failed (`supervisor.reload_error`, newer than the request).
fn reload(loc: &StateLocation, cfg: Option<&Config>) -> Outcome {
    let Some((holder, found)) = running(loc, cfg, "reload")? else {
        return Err(Fatal::with_code(
            exit::NOT_RUNNING,
            format!(
                "no supervisor is running for {}; nothing to reload",
                loc.config.display()
            ),
        ));
    };
    let pid = holder.pid();
    let record = || {
        crate::state::read(&loc.state_path())
            .ok()
            .flatten()
            .and_then(|r| r.supervisor)
            .filter(|s| s.pid == pid)
    };
    // The answer is a change: more reloads, or a reload error other than
    // the one recorded before asking (its time stamp has only
    // milliseconds, so comparing it with the clock could miss a fast one).
    // A handover in progress is the supervisor's to refuse (it records
    // why as the reload's error): a record read here may be older than
    // the signal.
    let (before, old_error) = found
        .supervisor
        .map_or((0, None), |s| (s.reloads, s.reload_error));
    match holder.signal(Signal::SIGUSR2) {
        Ok(()) => {}
        Err(Errno::ESRCH) => {
            return Err(Fatal::with_code(
                exit::NOT_RUNNING,
                format!("supervisor {pid} exited meanwhile; nothing to reload"),
            ))
        }
        Err(e) => {
            return Err(Fatal::failure(format!(
                "cannot signal supervisor {pid}: {e}"
            )))
        }
    }
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        if let Some(s) = record() {
            let failed = s.reload_error.filter(|e| Some(e) != old_error.as_ref());
            if let Some(e) = failed {
                return Err(Fatal::with_code(
                    e.code,
                    format!("reload failed: {}", e.message),
                ));
            }
            if s.reloads > before {
                crate::out!(
                    "reloaded: supervisor {pid} runs {} {} ({})\n",
                    s.executable.as_deref().unwrap_or("?"),
                    s.version.as_deref().unwrap_or("?"),
                    crate::text::count(s.reloads.into(), "reload")
                );
                return Ok(exit::OK);
            }
        }
        // The very process signalled, not whatever has its pid now.
        if holder.exited_within(Duration::from_millis(10)) {
            return Err(Fatal::failure(format!(
                "supervisor {pid} exited during the reload; see its log"
            )));
        }
        if Instant::now() >= deadline {
            return Err(Fatal::failure(format!(
                "supervisor {pid} did not finish reloading within {}",
                human(RELOAD_WAIT)
            )));
        }
    }
}

/// What `restart` waits beyond the start and stop timeouts.
const RESTART_MARGIN: Duration = Duration::from_secs(5);

/// `health.start_timeout` when neither the running supervisor nor the file says.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// `supervisor restart`: SIGUSR1 to the running supervisor, then wait for
/// its answer. The supervisor decides when it takes the signal and records
/// the answer with that moment (`supervisor.restart_answers`): the first
/// answer made after the signal was sent is this request's (or covers
/// it). Refused (a handover in progress): exit 1 at once; taken: wait for
/// the outcome of that restart (`supervisor.restart`, whose
/// `asked_mono_ns` is no older than the answer). A supervisor too old to
/// answer: the first outcome numbered after the one recorded before.
fn restart(loc: &StateLocation, cfg: Option<&Config>, timeout: Option<Duration>) -> Outcome {
    let Some((holder, found)) = running(loc, cfg, "restart the child")? else {
        return Err(Fatal::with_code(
            exit::NOT_RUNNING,
            format!(
                "no supervisor is running for {}; cannot restart the child",
                loc.config.display()
            ),
        ));
    };
    let pid = holder.pid();
    let record = || {
        crate::state::read(&loc.state_path())
            .ok()
            .flatten()
            .filter(|r| r.supervisor.as_ref().is_some_and(|s| s.pid == pid))
    };
    let sup = found.supervisor;
    let before = sup
        .as_ref()
        .and_then(|s| s.restart.as_ref())
        .map_or(0, |r| r.seq);
    let ms = |v: Option<u64>| v.map(Duration::from_millis);
    let start = ms(sup.as_ref().and_then(|s| s.start_timeout_ms))
        .or(cfg.map(|c| c.health.start_timeout))
        .unwrap_or(DEFAULT_START_TIMEOUT);
    let stop = ms(sup.as_ref().and_then(|s| s.stop_timeout_ms))
        .or(cfg.map(|c| c.child.stop_timeout))
        .unwrap_or(crate::config::DEFAULT_STOP_TIMEOUT);
    let timeout = timeout.unwrap_or(start + stop + RESTART_MARGIN);
    let sent = sys::monotonic_ns();
    send(&holder, Signal::SIGUSR1, "restart the child")?;
    let deadline = Instant::now() + timeout;
    loop {
        // Ok: the outcome of the restart that took this request; Err: why
        // it was refused.
        let answer = record().and_then(|r| r.supervisor).and_then(|s| {
            let Some(answers) = s.restart_answers else {
                return s.restart.filter(|r| r.seq > before).map(Ok);
            };
            let mine = answers.into_iter().find(|a| a.mono_ns >= sent)?;
            if let Some(why) = mine.refused {
                return Some(Err(why));
            }
            s.restart
                .filter(|r| r.asked_mono_ns.is_some_and(|t| t >= mine.mono_ns))
                .map(Ok)
        });
        match answer {
            Some(Ok(r)) if r.ok => {
                crate::out!("restarted: {}\n", r.message);
                return Ok(exit::OK);
            }
            Some(Ok(r)) => return Err(Fatal::failure(format!("restart failed: {}", r.message))),
            Some(Err(why)) => return Err(Fatal::failure(why)),
            None => {}
        }
        // The very process signalled, not whatever has its pid now.
        if holder.exited_within(Duration::from_millis(20)) {
            return Err(Fatal::failure(format!(
                "supervisor {pid} exited during the restart; see its log"
            )));
        }
        if Instant::now() >= deadline {
            return Err(Fatal::failure(format!(
                "no outcome recorded in state.json within {}: the restart may still be under way, \
                 or the supervisor cannot write state.json (a full disk?); see `supervisor status` and its log",
                human(timeout)
            )));
        }
    }
}

fn stop(loc: &StateLocation, cfg: Option<&Config>, timeout: Option<Duration>) -> Outcome {
    let Some((holder, record)) = running(loc, cfg, "stop it")? else {
        return Ok(exit::OK);
    };
    // The running supervisor's own stop_timeout, not the file's: it may
    // have been edited since.
    let running = record
        .supervisor
        .and_then(|s| s.stop_timeout_ms)
        .map(Duration::from_millis);
    let from_file = cfg.map_or(crate::config::DEFAULT_STOP_TIMEOUT, |c| {
        c.child.stop_timeout
    });
    let timeout = timeout.unwrap_or(crate::daemon::stop_budget(running.unwrap_or(from_file)));
    let pid = holder.pid();
    match holder.signal(Signal::SIGTERM) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            return Err(Fatal::failure(format!(
                "cannot signal supervisor {pid}: {e}"
            )))
        }
    }
    let deadline = Instant::now() + timeout;
    // Until the very process signalled exits: a pid reused at once by
    // another process does not keep `stop` waiting out its budget.
    while !holder.exited_within(Duration::from_millis(10)) {
        if Instant::now() >= deadline {
            return Err(Fatal::failure(format!(
                "supervisor {pid} did not exit within {}; it may still be stopping its child",
                human(timeout)
            )));
        }
    }
    Ok(exit::OK)
}
