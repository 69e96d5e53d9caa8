//! The configuration file: where it is found, what it may say, and the
//! resolved [`Config`] the rest of the program reads.
//!
//! Every key is defined once, in one table: its section, name, a line of
//! documentation, how its value is parsed into a [`Config`] and how it is
//! written back. That table drives the unknown-key check, validation,
//! [`Config::to_toml`] and the property tests, so they cannot drift apart.
//! Loading is two steps: `toml_edit` parses the text keeping the position
//! of every key and value (a syntax error stops there), then a walk over
//! the document against the table gathers *every* problem, each as
//! `FILE:LINE:COL: key `a.b`: message`, so an operator fixes the file in
//! one pass; the rules between keys come last. When the file is broken,
//! the state dir is still made out, leniently, so the control commands can
//! reach a running supervisor. Nothing here panics on any input.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

mod amounts;
mod keys;
mod lenient;
mod render;
mod report;
#[cfg(test)]
mod tests;
mod usable;
mod values;

pub use keys::schema;
pub(crate) use lenient::StateLocation;

/// Where the config is looked for when neither `--config` nor
/// `$SUPERVISOR_CONFIG` names it; relative to the current directory.
const DEFAULT_PATH: &str = "config/supervisor.toml";
/// The environment variable consulted by [`locate`].
const ENV_VAR: &str = "SUPERVISOR_CONFIG";

/// The instance lock and the supervisor's pid, in the state dir.
const PID_FILE: &str = "supervisor.pid";
/// The status record, in the state dir.
const STATE_FILE: &str = "state.json";
/// `child.stop_timeout` when the file does not set it (and what `stop`
/// assumes when neither the running supervisor nor a file says).
pub(crate) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A config file bigger than this is a mistake (say `--config /dev/zero`);
/// refusing it beats reading forever.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The resolved, validated configuration. Every path is absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Absolute path of the file this was read from (symbolic links
    /// resolved when it was loaded from disk).
    pub path: PathBuf,
    pub supervisor: SupervisorSection,
    pub listen: ListenSection,
    pub child: ChildSection,
    pub restart: RestartSection,
    pub log: LogSection,
    pub health: HealthSection,
    /// `None` unless `[alerts] command` is set: its presence enables alerts.
    pub alerts: Option<AlertsSection>,
    pub metrics: MetricsSection,
}

/// `[metrics]`: Prometheus metrics over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSection {
    /// Serve `GET /metrics` and `GET /status` here; `None`: no listener.
    pub address: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorSection {
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSection {
    pub address: SocketAddr,
    pub backlog: i32,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSection {
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    /// Run the child as this user (name or numeric uid); needs root.
    pub user: Option<String>,
    /// Explicit consent to run the child as root.
    pub allow_root: bool,
    /// Another user's child (`user`) inherits the supervisor's whole
    /// environment instead of a clean one.
    pub inherit_env: bool,
    /// The child's umask (0..=0o777); `None` inherits the supervisor's.
    pub umask: Option<u32>,
    /// The child's nice value (-20..=19); `None` inherits.
    pub nice: Option<i32>,
    /// Restart the child gracefully when its resident memory passes this
    /// many bytes; `None`: never (and no timer is armed).
    pub max_memory: Option<u64>,
    /// How often `max_memory` is checked.
    pub max_memory_check: Duration,
    /// Soft resource limits set in the child before exec; absent ones are
    /// inherited. Only checked for sense here: whether the system allows
    /// them is decided at start.
    pub limits: BTreeMap<Resource, Limit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartSection {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub reset_after: Duration,
    /// A requested restart of a ready child starts the new child first
    /// (a handover); needs a readiness signal.
    pub overlap: bool,
    /// Failed starts in a row after which the supervisor stops and exits 1
    /// (an orchestrator's restart policy takes over); 0: never.
    pub give_up_after: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSection {
    /// Where the child's output and the supervisor's own lines go.
    pub to: LogTo,
    pub dir: PathBuf,
    /// A group that may read the log files (name or gid); else they are
    /// the supervisor's user's alone.
    pub group: Option<String>,
    pub max_bytes: u64,
    pub max_files: u32,
}

/// `log.to`: files in `log.dir`, or the supervisor's own stdout and stderr
/// (what a container engine collects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    /// `child.log` and `supervisor.log` in `log.dir`, rotated.
    Files,
    /// The child inherits the supervisor's stdout and stderr (no pipe, no
    /// copy, no file); the supervisor's lines go to its stderr.
    Stdout,
}

impl LogTo {
    pub fn as_str(self) -> &'static str {
        match self {
            LogTo::Files => "files",
            LogTo::Stdout => "stdout",
        }
    }
}

/// Readiness and liveness (not in SPEC.md's contract; all optional). With
/// neither `notify` nor `http` a child counts as ready once spawned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSection {
    /// The child speaks the systemd notify protocol (READY=1, WATCHDOG=1).
    pub notify: bool,
    /// GET this path on the supervised address; 2xx is healthy.
    pub http: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Not ready within this: a failed start.
    pub start_timeout: Duration,
    /// Consecutive failed probes that make a child unhealthy.
    pub failures: u32,
    /// With `notify`: WATCHDOG_USEC; a missed ping beyond it is a failure.
    pub watchdog: Option<Duration>,
}

impl HealthSection {
    /// Whether readiness is something to wait for.
    pub(crate) fn readiness(&self) -> bool {
        self.notify || self.http.is_some()
    }
}

/// `[alerts]`: a command run to tell a person about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsSection {
    /// argv, no shell; never empty in a loaded config.
    pub command: Vec<String>,
    pub events: BTreeSet<AlertEvent>,
    /// Failed starts in a row that make a crash loop (at least 2).
    pub crash_loop_after: u32,
    /// Waiting for the port this long is worth an alert.
    pub port_busy_after: Duration,
    /// The same event is sent at most once per this.
    pub min_interval: Duration,
    /// The command's process group is killed after this.
    pub timeout: Duration,
}

/// What an alert is about; the names are SPEC.md's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertEvent {
    CrashLoop,
    /// `restart.give_up_after` failed starts in a row: the supervisor stops
    /// and exits 1.
    GaveUp,
    PortBusy,
    Unhealthy,
    Memory,
    Recovered,
    Exit,
    /// A handover's new child failed; the old one serves on.
    HandoverFailed,
}

impl AlertEvent {
    pub const ALL: [AlertEvent; 8] = [
        AlertEvent::CrashLoop,
        AlertEvent::GaveUp,
        AlertEvent::PortBusy,
        AlertEvent::Unhealthy,
        AlertEvent::Memory,
        AlertEvent::Recovered,
        AlertEvent::Exit,
        AlertEvent::HandoverFailed,
    ];
    /// Every event but `exit`, which would fire on each restart.
    pub const DEFAULT: [AlertEvent; 7] = [
        AlertEvent::CrashLoop,
        AlertEvent::GaveUp,
        AlertEvent::PortBusy,
        AlertEvent::Unhealthy,
        AlertEvent::Memory,
        AlertEvent::Recovered,
        AlertEvent::HandoverFailed,
    ];

    /// The name in the config file and in `SUPERVISOR_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::CrashLoop => "crash-loop",
            AlertEvent::GaveUp => "gave-up",
            AlertEvent::PortBusy => "port-busy",
            AlertEvent::Unhealthy => "unhealthy",
            AlertEvent::Memory => "memory",
            AlertEvent::Recovered => "recovered",
            AlertEvent::Exit => "exit",
            AlertEvent::HandoverFailed => "handover-failed",
        }
    }

    pub fn from_name(name: &str) -> Option<AlertEvent> {
        AlertEvent::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// A resource of `[child.limits]`, named as in the file (`RLIMIT_` + the
/// name in upper case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Core,
    Cpu,
    Data,
    Fsize,
    Memlock,
    Nofile,
    Nproc,
    Stack,
}

/// What a [`Resource`]'s number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitUnit {
    Bytes,
    Count,
    Seconds,
}

impl Resource {
    pub const ALL: [Resource; 8] = [
        Resource::Core,
        Resource::Cpu,
        Resource::Data,
        Resource::Fsize,
        Resource::Memlock,
        Resource::Nofile,
        Resource::Nproc,
        Resource::Stack,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Resource::Core => "core",
            Resource::Cpu => "cpu",
            Resource::Data => "data",
            Resource::Fsize => "fsize",
            Resource::Memlock => "memlock",
            Resource::Nofile => "nofile",
            Resource::Nproc => "nproc",
            Resource::Stack => "stack",
        }
    }

    pub fn unit(self) -> LimitUnit {
        match self {
            Resource::Cpu => LimitUnit::Seconds,
            Resource::Nofile | Resource::Nproc => LimitUnit::Count,
            Resource::Core
            | Resource::Data
            | Resource::Fsize
            | Resource::Memlock
            | Resource::Stack => LimitUnit::Bytes,
        }
    }
}

/// A soft limit: a number in the resource's unit, or no limit at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Value(u64),
    Unlimited,
}

/// Every problem found, each already formatted as
/// `FILE:LINE:COL: key `a.b`: message` (line/col omitted when unknown).
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.problems.join("\n"))
    }
}
impl std::error::Error for ConfigError {}

/// `--config`, else `$SUPERVISOR_CONFIG`, else `config/supervisor.toml`
/// under the current directory.
pub(crate) fn locate(cli: Option<&Path>) -> PathBuf {
    locate_with(cli, std::env::var_os(ENV_VAR))
}

fn locate_with(cli: Option<&Path>, env: Option<OsString>) -> PathBuf {
    match (cli, env) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

impl Config {
    /// Reads and validates the file at `path`. The path is made absolute
    /// and, when the file exists, resolved through symbolic links first:
    /// the same file reached through a link must give the same state dir.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let path = resolve(path)?;
        let bytes = read(&path)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let prefix = e
                .as_bytes()
                .get(..valid)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("");
            let (line, col) = report::line_col(prefix, prefix.len());
            ConfigError::one(format!(
                "{}:{line}:{col}: not valid UTF-8 (TOML files must be UTF-8)",
                path.display()
            ))
        })?;
        let cfg = Config::parse(&text, &path)?;
        match usable::problems(&cfg) {
            problems if problems.is_empty() => Ok(cfg),
            problems => Err(ConfigError { problems }),
        }
    }

    /// Validates `text` as if read from `path`: relative paths in it resolve
    /// against `path`'s folder. The path is only made absolute (lexically),
    /// never looked up.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        keys::check(text, &absolute(path)?)
    }

    /// The resolved config as TOML text (for `check-config`): every key in
    /// effect with a comment saying what it does. [`Config::parse`] reads it
    /// back to an equal config (paths that are not UTF-8 are the exception:
    /// they are written lossily).
    pub(crate) fn to_toml(&self) -> String {
        keys::to_toml(self)
    }

    /// The defaults of every key, relative paths resolved against `path`'s
    /// folder. Required keys get placeholders that a loaded config never
    /// keeps: their absence is a problem.
    fn defaults(path: &Path) -> Config {
        let folder = folder(path);
        Config {
            path: path.to_path_buf(),
            supervisor: SupervisorSection {
                state_dir: folder.join("run"),
            },
            listen: ListenSection {
                address: SocketAddr::from(([127, 0, 0, 1], 0)),
                backlog: 1024,
                name: "http".to_owned(),
            },
            child: ChildSection {
                command: Vec::new(),
                cwd: folder.to_path_buf(),
                env: BTreeMap::new(),
                stop_signal: Signal::SIGTERM,
                stop_timeout: DEFAULT_STOP_TIMEOUT,
                user: None,
                allow_root: false,
                inherit_env: false,
                umask: None,
                nice: None,
                max_memory: None,
                max_memory_check: Duration::from_secs(5),
                limits: BTreeMap::new(),
            },
            restart: RestartSection {
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(300),
                reset_after: Duration::from_secs(60),
                overlap: false,
                give_up_after: 0,
            },
            log: LogSection {
                to: LogTo::Files,
                dir: folder.join("logs"),
                group: None,
                max_bytes: 10 << 20,
                max_files: 5,
            },
            health: HealthSection {
                notify: false,
                http: None,
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                start_timeout: Duration::from_secs(60),
                failures: 3,
                watchdog: None,
            },
            alerts: None,
            metrics: MetricsSection::default(),
        }
    }
}

impl Default for AlertsSection {
    /// Everything but the command, which the file must give.
    fn default() -> Self {
        AlertsSection {
            command: Vec::new(),
            events: AlertEvent::DEFAULT.into_iter().collect(),
            crash_loop_after: 5,
            port_busy_after: Duration::from_secs(30),
            min_interval: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(30),
        }
    }
}

// The files the program keeps, derived in one place.
impl Config {
    /// `<state_dir>/supervisor.pid`: the instance lock.
    pub(crate) fn pid_path(&self) -> PathBuf {
        self.supervisor.state_dir.join(PID_FILE)
    }

    /// `<state_dir>/state.json`: the status record.
    pub(crate) fn state_path(&self) -> PathBuf {
        self.supervisor.state_dir.join(STATE_FILE)
    }

    /// `<log.dir>/child.log`.
    pub(crate) fn child_log_path(&self) -> PathBuf {
        self.log.dir.join("child.log")
    }

    /// `<log.dir>/supervisor.log`.
    pub(crate) fn supervisor_log_path(&self) -> PathBuf {
        self.log.dir.join("supervisor.log")
    }

    /// Just where the instance files are, as [`locate_state_dir`] finds
    /// them in a broken file.
    pub(crate) fn state_location(&self) -> StateLocation {
        StateLocation {
            config: self.path.clone(),
            state_dir: self.supervisor.state_dir.clone(),
        }
    }
}

/// The canonical config path and the state dir of the file at `path`,
/// however broken the rest of it is, so the control commands can reach a
/// running supervisor; the same state dir [`Config::load`] gives for a
/// valid file. An error when the file cannot be read or the state dir
/// cannot be told without guessing (see [`lenient`]).
pub(crate) fn locate_state_dir(path: &Path) -> Result<StateLocation, ConfigError> {
    let config = resolve(path)?;
    let text = String::from_utf8_lossy(&read(&config)?).into_owned();
    let state_dir = lenient::state_dir_in(&text, &config)?;
    Ok(StateLocation { config, state_dir })
}

/// The folder relative paths in the file at `path` are resolved against.
fn folder(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// `path` made absolute against the current directory, `.` and `..`
/// resolved lexically.
fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    if path.is_absolute() {
        return Ok(values::normalize(path));
    }
    std::env::current_dir()
        .map(|cwd| values::normalize(&cwd.join(path)))
        .map_err(|e| {
            ConfigError::one(format!(
                "{}: cannot resolve against the current directory: {e}",
                path.display()
            ))
        })
}

/// [`absolute`], then through symbolic links when the file exists. A path
/// that cannot be resolved is kept as spelled: reading it will say why.
fn resolve(path: &Path) -> Result<PathBuf, ConfigError> {
    let path = absolute(path)?;
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

/// The file's bytes, refusing anything that is not a regular file (a FIFO
/// would block the open until a writer comes, a device would never end)
/// and anything unreasonably large. The open itself never blocks
/// (`O_NONBLOCK`, no effect on a regular file), and the type is checked on
/// the opened descriptor, so a path swapped after the first look is caught.
fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: &dyn std::fmt::Display| {
        ConfigError::one(format!("{}: cannot read: {e}", path.display()))
    };
    let not_regular = |kind: std::fs::FileType| {
        ConfigError::one(format!(
            "{}: not a regular file ({}); give the config as a file (relative paths in it \
             resolve against its folder)",
            path.display(),
            file_kind(kind)
        ))
    };
    // A socket cannot be opened at all (ENXIO): look first to say what it is.
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(not_regular(meta.file_type()));
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| cannot(&e))?;
    let meta = file.metadata().map_err(|e| cannot(&e))?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(cannot(&format_args!(
            "larger than {MAX_FILE_BYTES} bytes; is this the config file?"
        )));
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, in words.
fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO or pipe, such as <(...)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_dir() {
        "a folder"
    } else {
        "not a file"
    }
}
