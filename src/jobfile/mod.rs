//! Job files written for the user: the launchd plist and the systemd units
//! that run one config, and installing the launchd job (`launchd install`,
//! `launchd uninstall`).
//!
//! Everything that decides what goes into a job file is pure: [`JobSpec`]
//! (resolved, absolute paths and the few numbers a job needs) in, a plist
//! dictionary or unit text out, unit-tested here. The shell around it
//! resolves the paths, reads the environment, writes files and runs
//! `launchctl`; the launchd code compiles on every OS (only `--dry-run`
//! runs off macOS), so what Linux CI tests is the code a Mac runs.

pub(crate) mod launchd;
pub(crate) mod systemd;

use std::fs;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{LaunchdAction, SystemdAction};
use crate::config::Config;
use crate::exit::{self, Fatal, Outcome};

/// How long launchd (`ExitTimeOut`) and systemd (`TimeoutStopSec`) must let
/// the supervisor stop before they SIGKILL it, in whole seconds: the one
/// stop budget ([`crate::daemon::stop_budget`]).
pub(crate) fn stop_budget_secs(stop_timeout: Duration) -> u64 {
    crate::daemon::stop_budget(stop_timeout).as_secs()
}

/// What a job file needs, resolved: every path absolute and canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobSpec {
    /// This binary, resolved through symbolic links.
    pub program: PathBuf,
    /// The config file, resolved through symbolic links.
    pub config: PathBuf,
    /// The config's folder: a job's working directory (launchd starts jobs
    /// in `/`).
    pub workdir: PathBuf,
    pub log_dir: PathBuf,
    /// `PATH` as it is now, so the venv and Homebrew found from this shell
    /// are found by the job; `None` when unset.
    pub path_env: Option<String>,
    /// Folders left out of `path_env` and why ("/home/me/.cargo/bin (owned
    /// by uid 1000 (me))"): a unit that runs as root searches no folder
    /// another user could write (`systemd print`).
    pub path_left_out: Vec<String>,
    pub stop_timeout: Duration,
    pub address: SocketAddr,
    pub backlog: i32,
    /// `listen.name`: the socket's name for `LISTEN_FDNAMES` and launchd.
    pub fd_name: String,
    /// `child.limits.nofile` (a number; "unlimited" is `None`): launchd's
    /// soft open-files limit is 256, and the supervisor inherits it.
    pub nofile: Option<u64>,
}

impl JobSpec {
    /// Resolves the config at `path` (through symbolic links, against the
    /// current directory) and this binary, and loads the config from its
    /// resolved path: the job runs that path, so its relative paths are
    /// resolved exactly as the job will resolve them.
    pub(crate) fn resolve(path: &Path) -> Result<(JobSpec, Config), Fatal> {
        let config = fs::canonicalize(path).map_err(|e| {
            Fatal::with_code(
                exit::CONFIG,
                format!("cannot resolve the config file {}: {e}", path.display()),
            )
        })?;
        let cfg = Config::load(&config)
            .map_err(|e| Fatal::config("invalid configuration").with_detail(e.to_string()))?;
        let program = std::env::current_exe()
            .and_then(fs::canonicalize)
            .map_err(|e| {
                Fatal::with_code(
                    exit::FAILURE,
                    format!("cannot tell where this supervisor binary is: {e}"),
                )
            })?;
        let path_env = match std::env::var_os("PATH") {
            None => None,
            Some(p) => Some(p.into_string().map_err(|p| {
                Fatal::with_code(
                    exit::FAILURE,
                    format!("PATH is not valid UTF-8 ({p:?}); a job file cannot carry it"),
                )
            })?),
        };
        let workdir = config
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let spec = JobSpec {
            program,
            config,
            workdir,
            log_dir: cfg.log.dir.clone(),
            path_env,
            path_left_out: Vec::new(),
            stop_timeout: cfg.child.stop_timeout,
            address: cfg.listen.address,
            backlog: cfg.listen.backlog,
            fd_name: cfg.listen.name.clone(),
            nofile: nofile_of(&cfg),
        };
        spec.check_text()?;
        Ok((spec, cfg))
    }

    /// A control character in a path cannot be written into an XML plist
    /// (XML 1.0 has no way to say most of them) nor a unit file (a newline
    /// ends the line): refuse rather than write a broken file.
    fn check_text(&self) -> Result<(), Fatal> {
        let paths = [
            ("this binary's path", &self.program),
            ("the config path", &self.config),
            ("log.dir", &self.log_dir),
        ];
        for (what, p) in paths {
            let Some(s) = p.to_str() else {
                return Err(Fatal::with_code(
                    exit::CONFIG,
                    format!("{what} {p:?} is not valid UTF-8; a job file cannot name it"),
                ));
            };
            no_control(what, s)?;
        }
        if let Some(p) = &self.path_env {
            no_control("PATH", p)?;
        }
        Ok(())
    }

    /// `StandardOutPath` / `StandardErrorPath`.
    pub(crate) fn launchd_log(&self, name: &str) -> PathBuf {
        self.log_dir.join(name)
    }
}

/// `child.limits.nofile` when it is a number, for launchd's
/// `SoftResourceLimits.NumberOfFiles` (`None` for "unlimited": launchd
/// takes only numbers, and the supervisor sets the child's own limit).
fn nofile_of(cfg: &Config) -> Option<u64> {
    match cfg.child.limits.get(&crate::config::Resource::Nofile) {
        Some(crate::config::Limit::Value(n)) => Some(*n),
        _ => None,
    }
}

fn no_control(what: &str, s: &str) -> Result<(), Fatal> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(Fatal::with_code(
            exit::CONFIG,
            format!("{what} {s:?} contains the control character {c:?}; a job file cannot hold it"),
        )),
        None => Ok(()),
    }
}

/// Longest label or unit name accepted: the file name (`NAME.plist`,
/// `NAME.service`) must stay well within 255 bytes.
const MAX_NAME: usize = 200;

/// A launchd label or a systemd unit name becomes a file name under the
/// user's LaunchAgents or unit folder and part of a `launchctl` target, so
/// only `[A-Za-z0-9._-]` is allowed, starting with a letter or digit: no
/// `/` or `..` to climb out of the folder, no `@` (a systemd template), no
/// leading `-` or `.` (an option, a hidden file). The message names the
/// first character refused.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() {
        return Err(format!("the {kind} is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "the {kind} {name:?} is {} bytes long; at most {MAX_NAME} are allowed",
            name.len()
        ));
    }
    if let Some((i, c)) = name.char_indices().find(|&(_, c)| !allowed(c)) {
        return Err(format!(
            "the {kind} {name:?} contains {c:?} (at byte {i}); use letters, digits, '.', '_' and '-' only"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "the {kind} {name:?} must start with a letter or a digit"
        ));
    }
    Ok(())
}

/// The name given on the command line (exit 2 if unusable), else
/// `PREFIX<sep>listen.name<sep>port` (exit 78 if listen.name cannot be part
/// of one, saying how to choose another).
fn choose_name(
    kind: &str,
    flag: &str,
    given: Option<&str>,
    sep: char,
    spec: &JobSpec,
) -> Result<String, Fatal> {
    if let Some(name) = given {
        return check_name(kind, name)
            .map(|()| name.to_owned())
            .map_err(|e| Fatal::with_code(exit::USAGE, format!("{flag}: {e}")));
    }
    let name = format!(
        "supervisor{sep}{}{sep}{}",
        spec.fd_name,
        spec.address.port()
    );
    check_name(kind, &name).map(|()| name).map_err(|e| {
        Fatal::with_code(
            exit::CONFIG,
            format!(
                "cannot make the default {kind} from listen.name {:?}: {e}; choose one with {flag} NAME",
                spec.fd_name
            ),
        )
    })
}

/// How a file write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Created,
    Replaced,
    Unchanged,
}

/// What is at a path a job file is about to be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    Absent,
    Same,
    Different,
}

pub(crate) fn existing(path: &Path, bytes: &[u8]) -> Result<Existing, Fatal> {
    match fs::read(path) {
        Ok(old) if old == bytes => Ok(Existing::Same),
        Ok(_) => Ok(Existing::Different),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Absent),
        Err(e) => Err(Fatal::with_code(
            exit::FAILURE,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Writes `bytes` to `path` with `mode` whatever the umask, whole or not at
/// all (a temp file in the same folder, fsync, rename): a service manager
/// never reads half a job. An existing file with other contents is replaced
/// only with `force`.
pub(crate) fn write_job_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    force: bool,
) -> Result<Written, Fatal> {
    let was = existing(path, bytes)?;
    match was {
        Existing::Same => return Ok(Written::Unchanged),
        Existing::Different if !force => {
            return Err(Fatal::with_code(
                exit::FAILURE,
                format!(
                    "{} exists with other contents; not replaced (--force replaces it)",
                    path.display()
                ),
            ))
        }
        _ => {}
    }
    let fail = |what: &str, e: io::Error| {
        Fatal::with_code(
            exit::FAILURE,
            format!("cannot {what} {}: {e}; nothing written", path.display()),
        )
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map_or_else(|| "job".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(fail("write", e));
    }
    Ok(match was {
        Existing::Absent => Written::Created,
        _ => Written::Replaced,
    })
}

/// An argument as a POSIX shell would need it, for the commands printed
/// for people to read or paste.
pub(crate) fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `supervisor launchd ...`.
pub(crate) fn launchd(config: &Path, action: LaunchdAction) -> Outcome {
    launchd::command(config, action).map(|()| exit::OK)
}

/// `supervisor systemd ...`.
pub(crate) fn systemd(config: &Path, action: SystemdAction) -> Outcome {
    systemd::command(config, action).map(|()| exit::OK)
}

/// Writes `text` to stdout, failing loudly: a job file cut short by a
/// closed pipe must not look like success.
fn print_all(bytes: &[u8]) -> Result<(), Fatal> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Fatal::failure(format!("cannot write to stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_budget_covers_a_graceful_stop() {
        use crate::daemon::{HOOK_AT_EXIT, KILL_GRACE, PUMP_DRAIN};
        // stop_timeout + 5 s kill grace + 2 s hook at exit + 5 s its kill
        // grace + 2 s drain + 5 s margin, rounded up.
        let cases = [
            (Duration::from_millis(1), 20),
            (Duration::from_secs(1), 20),
            (Duration::from_millis(1500), 21),
            (Duration::from_secs(3), 22),
            (Duration::from_secs(10), 29),
            (Duration::from_millis(10_001), 30),
            (Duration::from_secs(60), 79),
            (Duration::from_secs(3600), 3619),
        ];
        for (stop, want) in cases {
            let got = stop_budget_secs(stop);
            assert_eq!(got, want, "stop_timeout {stop:?}");
            let needed = stop + KILL_GRACE + HOOK_AT_EXIT + KILL_GRACE + PUMP_DRAIN;
            assert!(Duration::from_secs(got) > needed, "{stop:?}: {got} s");
        }
    }

    #[test]
    fn names_are_checked() {
        let ok = [
            "supervisor.http.8420",
            "com.example.session-manager.supervisor",
            "a",
            "0_x-y.z",
        ];
        for n in ok {
            assert_eq!(check_name("label", n), Ok(()), "{n}");
        }
        let long = "a".repeat(MAX_NAME + 1);
        let refused = [
            ("", "empty"),
            ("a/b", "'/'"),
            ("../x", "'.'"),
            ("..", "must start"),
            ("-x", "must start"),
            (".hidden", "must start"),
            ("a b", "' '"),
            ("x@y", "'@'"),
            ("tab\there", "'\\t'"),
            ("new\nline", "'\\n'"),
            ("caf\u{e9}", "'é'"),
            ("a;rm", "';'"),
            ("a$b", "'$'"),
            (long.as_str(), "at most 200"),
        ];
        for (n, says) in refused {
            let e = check_name("label", n).expect_err(n);
            assert!(e.contains(says), "{n:?}: {e}");
        }
    }

    #[test]
    fn shell_quoting() {
        let cases = [
            ("gui/501", "gui/501"),
            (
                "/Users/a/Library/LaunchAgents/x.plist",
                "/Users/a/Library/LaunchAgents/x.plist",
            ),
            ("/a b/c", "'/a b/c'"),
            ("it's", r"'it'\''s'"),
            ("", "''"),
            ("$HOME", "'$HOME'"),
        ];
        for (s, want) in cases {
            assert_eq!(shell_quote(s), want);
        }
    }

    #[test]
    fn job_files_are_written_whole_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.plist");
        // (The umask is process-wide; other tests run meanwhile, so it is
        // not changed here. `set_permissions` makes the mode exact anyway.)
        assert_eq!(
            write_job_file(&p, b"one", 0o644, false),
            Ok(Written::Created)
        );
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            write_job_file(&p, b"one", 0o644, false),
            Ok(Written::Unchanged)
        );
        let refused = write_job_file(&p, b"two", 0o644, false).unwrap_err();
        assert!(refused.message.contains("--force"), "{refused:?}");
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            write_job_file(&p, b"two", 0o644, true),
            Ok(Written::Replaced)
        );
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left behind");
    }
}
