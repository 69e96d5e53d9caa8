//! The configuration file: where it is found, what it may say, and the
//! resolved [`Config`] the rest of the program reads.
//!
//! Loading has two layers. toml's deserializer turns the text into a tree of
//! [`Node`]s that remember where every key and value sits; a syntax error
//! stops there, since the parser cannot go on. Then [`Checker`] walks the
//! tree against the schema and gathers *every* problem (unknown keys, wrong
//! types, bad values), each with file, line, column and dotted key, so an
//! operator fixes the file in one pass. Nothing here panics on any input.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Where the config is looked for when neither `--config` nor
/// `$SUPERVISOR_CONFIG` names it; relative to the current directory.
pub const DEFAULT_PATH: &str = "config/supervisor.toml";
/// The environment variable consulted by [`locate`].
pub const ENV_VAR: &str = "SUPERVISOR_CONFIG";

/// The resolved, validated configuration. Every path is absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Absolute path of the file this was read from.
    pub path: PathBuf,
    pub supervisor: SupervisorSection,
    pub listen: ListenSection,
    pub child: ChildSection,
    pub restart: RestartSection,
    pub log: LogSection,
    pub health: HealthSection,
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
    pub fn readiness(&self) -> bool {
        self.notify || self.http.is_some()
    }
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartSection {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub reset_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSection {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_files: u32,
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

/// `--config`, else `$SUPERVISOR_CONFIG`, else `config/supervisor.toml` under the current directory.
pub fn locate(cli: Option<&Path>) -> PathBuf {
    locate_with(cli, std::env::var_os(ENV_VAR))
}

fn locate_with(cli: Option<&Path>, env: Option<OsString>) -> PathBuf {
    match (cli, env) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// A config file bigger than this is a mistake (say `--config /dev/zero`);
/// refusing it beats reading forever.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Every section and its keys; anything else is an unknown key.
pub const SCHEMA: &[(&str, &[&str])] = &[
    ("supervisor", &["state_dir"]),
    ("listen", &["address", "backlog", "name"]),
    (
        "child",
        &[
            "command",
            "cwd",
            "env",
            "stop_signal",
            "stop_timeout",
            "user",
            "allow_root",
        ],
    ),
    (
        "restart",
        &["initial_backoff", "max_backoff", "reset_after"],
    ),
    ("log", &["dir", "max_bytes", "max_files"]),
    (
        "health",
        &[
            "notify",
            "http",
            "interval",
            "timeout",
            "start_timeout",
            "failures",
            "watchdog",
        ],
    ),
];

/// The supervisor sets these for the socket hand-over; a config value would
/// break the protocol.
const RESERVED_ENV: &[&str] = &["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Rotating below this would churn files for every few lines.
const MIN_LOG_BYTES: u64 = 4096;

impl Config {
    /// `<state_dir>/supervisor.pid`: the lock.
    pub fn pid_path(&self) -> PathBuf {
        self.supervisor.state_dir.join("supervisor.pid")
    }

    /// `<state_dir>/state.json`: the record `status` reads.
    pub fn state_path(&self) -> PathBuf {
        self.supervisor.state_dir.join("state.json")
    }

    /// Reads and validates the file at `path` (made absolute against the
    /// current directory).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let path = absolute_or_report(path)?;
        let file = path.display().to_string();
        let cannot = |e: &dyn fmt::Display| ConfigError::one(format!("{file}: cannot read: {e}"));
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| cannot(&e))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(cannot(&format_args!(
                "larger than {MAX_FILE_BYTES} bytes; is this the config file?"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let prefix = e
                .as_bytes()
                .get(..valid)
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("");
            let (line, col) = line_col(prefix, prefix.len());
            ConfigError::one(format!(
                "{file}:{line}:{col}: not valid UTF-8 (TOML files must be UTF-8)"
            ))
        })?;
        Config::parse(&text, &path)
    }

    /// Validates `text` as if read from `path`: relative paths in it resolve
    /// against `path`'s folder.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let path = absolute_or_report(path)?;
        let file = path.display().to_string();
        let root = match toml::from_str::<Bare>(text) {
            Ok(Bare(Item {
                node: Node::Table(root),
                ..
            })) => root,
            // The toml deserializer always yields a table at the top.
            Ok(_) => return Err(ConfigError::one(format!("{file}: not a TOML table"))),
            Err(e) => {
                // toml leaves the message empty for some bytes (a NUL in a
                // comment, a lone CR); say something a person can act on.
                let msg = match one_line(e.message()) {
                    m if m.trim().is_empty() => {
                        "invalid TOML here (a control character such as NUL or a lone CR?)"
                            .to_owned()
                    }
                    m => m,
                };
                return Err(ConfigError::one(match e.span() {
                    Some(span) => {
                        let (line, col) = line_col(text, span.start);
                        format!("{file}:{line}:{col}: {msg}")
                    }
                    None => format!("{file}: {msg}"),
                }));
            }
        };
        let mut checker = Checker {
            text,
            file,
            root: &root,
            problems: Vec::new(),
        };
        checker.check_keys();
        let config = checker.config(&path);
        let mut problems = checker.problems;
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => {
                // File order reads best; problems without a position last.
                problems.sort_by_key(|(at, _)| at.unwrap_or(usize::MAX));
                Err(ConfigError {
                    problems: problems.into_iter().map(|(_, p)| p).collect(),
                })
            }
        }
    }

    /// The resolved config as TOML text (for `check-config`).
    ///
    /// Every key is written, so the output documents what is in effect, and
    /// [`Config::parse`] reads it back to an equal config (paths that are not
    /// UTF-8 are the exception: they are written lossily).
    pub fn to_toml(&self) -> String {
        let env = self
            .child
            .env
            .iter()
            .map(|(k, v)| format!(" {} = {} ", quote(k), quote(v)))
            .collect::<Vec<_>>()
            .join(",");
        let command: Vec<String> = self.child.command.iter().map(|a| quote(a)).collect();
        let path = |p: &Path| quote(&p.to_string_lossy());
        let dur = |d: Duration| quote(&humantime::format_duration(d).to_string());
        format!(
            "# Resolved configuration: every key, defaults filled in, paths absolute.\n\
             [supervisor]\n\
             state_dir = {}\n\
             \n\
             [listen]\n\
             address = {}\n\
             backlog = {}\n\
             name = {}\n\
             \n\
             [child]\n\
             command = [{}]\n\
             cwd = {}\n\
             env = {{{}}}\n\
             stop_signal = {}\n\
             stop_timeout = {}\n\
             {}allow_root = {}\n\
             \n\
             [restart]\n\
             initial_backoff = {}\n\
             max_backoff = {}\n\
             reset_after = {}\n\
             \n\
             [log]\n\
             dir = {}\n\
             max_bytes = {}\n\
             max_files = {}\n\
             \n\
             [health]\n\
             notify = {}\n\
             {}interval = {}\n\
             timeout = {}\n\
             start_timeout = {}\n\
             failures = {}\n\
             {}",
            path(&self.supervisor.state_dir),
            quote(&self.listen.address.to_string()),
            self.listen.backlog,
            quote(&self.listen.name),
            command.join(", "),
            path(&self.child.cwd),
            env,
            quote(self.child.stop_signal.as_str()),
            dur(self.child.stop_timeout),
            self.child
                .user
                .as_deref()
                .map(|u| format!("user = {}\n", quote(u)))
                .unwrap_or_default(),
            self.child.allow_root,
            dur(self.restart.initial_backoff),
            dur(self.restart.max_backoff),
            dur(self.restart.reset_after),
            path(&self.log.dir),
            self.log.max_bytes,
            self.log.max_files,
            self.health.notify,
            self.health
                .http
                .as_deref()
                .map(|h| format!("http = {}\n", quote(h)))
                .unwrap_or_default(),
            dur(self.health.interval),
            dur(self.health.timeout),
            dur(self.health.start_timeout),
            self.health.failures,
            self.health
                .watchdog
                .map(|w| format!("watchdog = {}\n", dur(w)))
                .unwrap_or_default(),
        )
    }
}

/// A TOML string literal for `s`, escaped by toml itself.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn one_line(s: &str) -> String {
    s.trim().replace('\n', "; ")
}

/// Byte offset → 1-based line and column (in characters).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1; // never below 0: offset 0 is always a boundary
    }
    let before = text.get(..end).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

fn absolute_or_report(path: &Path) -> Result<PathBuf, ConfigError> {
    if path.is_absolute() {
        return Ok(normalize(path));
    }
    std::env::current_dir()
        .map(|cwd| normalize(&cwd.join(path)))
        .map_err(|e| {
            ConfigError::one(format!(
                "{}: cannot resolve against the current directory: {e}",
                path.display()
            ))
        })
}

/// Removes `.` and resolves `..` lexically. Symlinks are deliberately not
/// followed: the operator's spelling of a path is what they expect to see.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop(); // `/..` is `/`
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

type Table = Vec<(Key, Item)>;

/// A TOML value that remembers the position of every key and value below it,
/// which `toml::Value` forgets.
enum Node {
    Str(String),
    Int(i64),
    Float,
    Bool(bool),
    Datetime,
    Array(Vec<Item>),
    Table(Table),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Str(_) => "a string",
            Node::Int(_) => "an integer",
            Node::Float => "a float",
            Node::Bool(_) => "a boolean",
            Node::Datetime => "a date/time",
            Node::Array(_) => "an array",
            Node::Table(_) => "a table",
        }
    }
}

/// toml's private serde encodings (serde_spanned's and toml_datetime's
/// `__unstable`), pinned by toml 0.8. Should they ever change, problems merely
/// lose their line:col (deserialization falls back to plain values) and dates
/// read as tables: still errors. A unit test notices.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];
const DATETIME: &str = "$__toml_private_datetime";

/// A table key with its position when toml gives one (it does not for the
/// private key of a date, where `Spanned<String>` would fail).
struct Key {
    name: String,
    span: Option<Range<usize>>,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(Key {
            name: v.to_owned(),
            span: None,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let (mut start, mut end, mut name) = (None, None, None);
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                _ => name = Some(map.next_value::<String>()?),
            }
        }
        Ok(Key {
            name: name.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?,
            span: start.zip(end).map(|(s, e)| s..e),
        })
    }
}

/// A [`Node`] and where it sits. toml knows the span of nearly every value,
/// but not of implicit tables made by dotted keys (`a.b = 1`) nor of dates,
/// which is why `toml::Spanned` cannot be used here: it fails on those.
struct Item {
    span: Option<Range<usize>>,
    node: Node,
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, ItemVisitor)
    }
}

/// An [`Item`] read without asking for a span: the root, and the value
/// inside a span (asking again there would recurse).
struct Bare(Item);

impl<'de> Deserialize<'de> for Bare {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor).map(Bare)
    }
}

struct ItemVisitor;

fn bare<E>(node: Node) -> Result<Item, E> {
    Ok(Item { span: None, node })
}

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Item, E> {
        bare(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Item, E> {
        bare(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Item, E> {
        let v = i64::try_from(v).map_err(|_| E::custom("integer out of range"))?;
        bare(Node::Int(v))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Item, E> {
        bare(Node::Float)
    }
    fn visit_str<E>(self, v: &str) -> Result<Item, E> {
        bare(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Item, E> {
        bare(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        bare(Node::Array(items))
    }
    /// A map is one of three things, told apart by its first key: a span
    /// around a value, a date, or a real table.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let Some(first) = map.next_key::<Key>()? else {
            return bare(Node::Table(Vec::new()));
        };
        if first.name == SPANNED_START {
            let start: usize = map.next_value()?;
            let (mut end, mut value) = (start, None);
            while let Some(key) = map.next_key::<Key>()? {
                if key.name == SPANNED_END {
                    end = map.next_value()?;
                } else {
                    value = Some(map.next_value::<Bare>()?.0.node);
                }
            }
            let node = value.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
            return Ok(Item {
                span: Some(start..end),
                node,
            });
        }
        if first.name == DATETIME {
            map.next_value::<de::IgnoredAny>()?;
            return bare(Node::Datetime);
        }
        let mut entries = Vec::new();
        let mut key = Some(first);
        while let Some(k) = key {
            let mut value: Item = map.next_value()?;
            // An implicit table has no span of its own; its key is the best
            // place to point at.
            value.span = value.span.or_else(|| k.span.clone());
            entries.push((k, value));
            key = map.next_key()?;
        }
        bare(Node::Table(entries))
    }
}

fn entry<'n>(table: &'n [(Key, Item)], key: &str) -> Option<&'n Item> {
    table.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
}

/// Walks the tree against the schema, collecting every problem.
struct Checker<'a> {
    text: &'a str,
    file: String,
    root: &'a [(Key, Item)],
    /// Byte offset (for sorting) and the formatted problem.
    problems: Vec<(Option<usize>, String)>,
}

impl<'a> Checker<'a> {
    fn report(&mut self, span: Option<Range<usize>>, key: &str, msg: impl fmt::Display) {
        // Keys may be quoted TOML strings holding anything; keep one line.
        let key = key.escape_debug();
        let problem = match &span {
            Some(span) => {
                let (line, col) = line_col(self.text, span.start);
                format!("{}:{line}:{col}: key `{key}`: {msg}", self.file)
            }
            None => format!("{}: key `{key}`: {msg}", self.file),
        };
        self.problems.push((span.map(|s| s.start), problem));
    }

    fn check_keys(&mut self) {
        let sections: Vec<&str> = SCHEMA.iter().map(|(s, _)| *s).collect();
        for (name, value) in self.root {
            let at = name.span.clone().or(value.span.clone());
            let Some((_, keys)) = SCHEMA.iter().find(|(s, _)| *s == name.name) else {
                let msg = format!("unknown key; the tables are {}", sections.join(", "));
                self.report(at, &name.name, msg);
                continue;
            };
            let Node::Table(table) = &value.node else {
                let kind = value.node.kind();
                let msg = format!("must be a table ([{}]), not {kind}", name.name);
                self.report(value.span.clone(), &name.name, msg);
                continue;
            };
            for (key, value) in table {
                if !keys.contains(&key.name.as_str()) {
                    let msg = format!("unknown key; expected one of {}", keys.join(", "));
                    let at = key.span.clone().or(value.span.clone());
                    self.report(at, &format!("{}.{}", name.name, key.name), msg);
                }
            }
        }
    }

    fn find(&self, section: &str, key: &str) -> Option<&'a Item> {
        match &entry(self.root, section)?.node {
            Node::Table(table) => entry(table, key),
            _ => None,
        }
    }

    /// `section.key` converted by `conv`; `None` when absent or invalid
    /// (then a problem is recorded).
    fn opt<T>(
        &mut self,
        section: &str,
        key: &str,
        conv: impl FnOnce(&Node) -> Result<T, String>,
    ) -> Option<T> {
        let node = self.find(section, key)?;
        conv(&node.node)
            .map_err(|msg| self.report(node.span.clone(), &format!("{section}.{key}"), msg))
            .ok()
    }

    /// Like [`Checker::opt`] with a default. An invalid value also yields the
    /// default, so checking goes on; the problem already dooms the result.
    fn get<T>(
        &mut self,
        section: &str,
        key: &str,
        default: T,
        conv: impl FnOnce(&Node) -> Result<T, String>,
    ) -> T {
        self.opt(section, key, conv).unwrap_or(default)
    }

    /// The node at `section.key`, reporting it missing if it is not there.
    fn need(&mut self, section: &str, key: &str) -> Option<&'a Item> {
        let node = self.find(section, key);
        // A section that is not a table was already reported; once is enough.
        let section_ok = entry(self.root, section).is_none_or(|s| matches!(s.node, Node::Table(_)));
        if node.is_none() && section_ok {
            self.report(None, &format!("{section}.{key}"), "missing (required)");
        }
        node
    }

    fn config(&mut self, path: &Path) -> Option<Config> {
        let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let dir = |d: &str| normalize(&base.join(d));

        let state_dir = self.get("supervisor", "state_dir", dir("run"), |n| path_of(n, &base));

        let address = self
            .need("listen", "address")
            .and_then(|_| self.opt("listen", "address", address_of));
        let backlog = self.get("listen", "backlog", 1024, |n| int_in(n, 1, 65535));
        let name = self.get("listen", "name", "http".to_owned(), fd_name_of);

        let command = self.command();
        let cwd = self.get("child", "cwd", base.clone(), |n| path_of(n, &base));
        let env = self.env();
        let stop_signal = self.get("child", "stop_signal", Signal::SIGTERM, signal_of);
        let stop_timeout = self.get("child", "stop_timeout", Duration::from_secs(10), |n| {
            Some(duration_of(n, HOUR)?)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| "must be more than 0: the child needs a moment to stop".into())
        });

        let user = self.get("child", "user", None, user_of);
        let allow_root = self.get("child", "allow_root", false, bool_of);

        let within_day = |n: &Node| duration_of(n, DAY);
        let before = self.problems.len();
        let initial_backoff = self.get(
            "restart",
            "initial_backoff",
            Duration::from_secs(1),
            within_day,
        );
        let max_backoff = self.get(
            "restart",
            "max_backoff",
            Duration::from_secs(300),
            within_day,
        );
        if self.problems.len() == before && max_backoff < initial_backoff {
            // Blame the key the operator wrote; the two defaults agree.
            let key = match self.find("restart", "max_backoff") {
                Some(_) => "max_backoff",
                None => "initial_backoff",
            };
            let span = self.find("restart", key).and_then(|n| n.span.clone());
            let msg = format!(
                "max_backoff ({}) must be at least initial_backoff ({})",
                humantime::format_duration(max_backoff),
                humantime::format_duration(initial_backoff)
            );
            self.report(span, &format!("restart.{key}"), msg);
        }
        let reset_after = self.get(
            "restart",
            "reset_after",
            Duration::from_secs(60),
            within_day,
        );

        let log_dir = self.get("log", "dir", dir("logs"), |n| path_of(n, &base));
        let max_bytes = self.get("log", "max_bytes", 10 << 20, log_size_of);
        let max_files = self.get("log", "max_files", 5, |n| int_in(n, 1, 1000));

        let health = self.health();
        Some(Config {
            path: path.to_path_buf(),
            supervisor: SupervisorSection { state_dir },
            listen: ListenSection {
                address: address?,
                backlog,
                name,
            },
            child: ChildSection {
                command: command?,
                cwd,
                env,
                stop_signal,
                stop_timeout,
                user,
                allow_root,
            },
            restart: RestartSection {
                initial_backoff,
                max_backoff,
                reset_after,
            },
            log: LogSection {
                dir: log_dir,
                max_bytes,
                max_files,
            },
            health,
        })
    }

    fn health(&mut self) -> HealthSection {
        let positive = |max: Duration| {
            move |n: &Node| {
                Some(duration_of(n, max)?)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| "must be more than 0".to_owned())
            }
        };
        let notify = self.get("health", "notify", false, bool_of);
        let http = self.opt("health", "http", |n| {
            let p = str_of(n)?;
            let ok =
                p.starts_with('/') && p.len() <= 2048 && p.bytes().all(|b| b.is_ascii_graphic());
            ok.then(|| p.to_owned()).ok_or_else(|| {
                format!("{p:?} is not a URL path: start it with / and use no spaces")
            })
        });
        let interval = self.get(
            "health",
            "interval",
            Duration::from_secs(10),
            positive(HOUR),
        );
        let timeout = self.get("health", "timeout", Duration::from_secs(2), positive(HOUR));
        let start_timeout = self.get(
            "health",
            "start_timeout",
            Duration::from_secs(60),
            positive(DAY),
        );
        let failures = self.get("health", "failures", 3, |n| int_in(n, 1, 1000));
        let watchdog = self.opt("health", "watchdog", positive(HOUR));
        if watchdog.is_some() && !notify {
            let span = self.find("health", "watchdog").and_then(|n| n.span.clone());
            self.report(
                span,
                "health.watchdog",
                "needs notify = true: the child pings with WATCHDOG=1 over the notify socket",
            );
        }
        HealthSection {
            notify,
            http,
            interval,
            timeout,
            start_timeout,
            failures,
            watchdog,
        }
    }

    fn command(&mut self) -> Option<Vec<String>> {
        let node = self.need("child", "command")?;
        let example = r#"e.g. ["python3", "-m", "app"]"#;
        let items = match &node.node {
            Node::Array(items) if !items.is_empty() => items,
            Node::Array(_) => {
                let msg =
                    format!("must not be empty: give the program and its arguments, {example}");
                self.report(node.span.clone(), "child.command", msg);
                return None;
            }
            other => {
                let msg = format!(
                    "must be an array of strings (no shell is used), {example}; not {}",
                    other.kind()
                );
                self.report(node.span.clone(), "child.command", msg);
                return None;
            }
        };
        let mut argv = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let label = format!("child.command[{i}]");
            match &item.node {
                Node::Str(s) if i == 0 && s.is_empty() => self.report(
                    item.span.clone(),
                    &label,
                    "the program name must not be empty",
                ),
                Node::Str(s) if s.contains('\0') => self.report(
                    item.span.clone(),
                    &label,
                    "must not contain a NUL character",
                ),
                Node::Str(s) => argv.push(s.clone()),
                other => {
                    let msg = format!("must be a string, not {}", other.kind());
                    self.report(item.span.clone(), &label, msg)
                }
            }
        }
        Some(argv)
    }

    fn env(&mut self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Some(node) = self.find("child", "env") else {
            return env;
        };
        let Node::Table(entries) = &node.node else {
            let msg = format!(
                r#"must be a table like {{ NAME = "value" }}, not {}"#,
                node.node.kind()
            );
            self.report(node.span.clone(), "child.env", msg);
            return env;
        };
        for (key, value) in entries {
            let name = &key.name;
            let label = format!("child.env.{name}");
            if let Err(msg) = env_name_ok(name) {
                self.report(key.span.clone().or(value.span.clone()), &label, msg);
            }
            match &value.node {
                Node::Str(v) if v.contains('\0') => self.report(
                    value.span.clone(),
                    &label,
                    "must not contain a NUL character",
                ),
                Node::Str(v) => {
                    env.insert(name.clone(), v.clone());
                }
                other => {
                    let msg = format!("must be a string, not {}; quote it", other.kind());
                    self.report(value.span.clone(), &label, msg)
                }
            }
        }
        env
    }
}

fn str_of(node: &Node) -> Result<&str, String> {
    match node {
        Node::Str(s) => Ok(s),
        other => Err(format!("must be a string, not {}", other.kind())),
    }
}

fn bool_of(node: &Node) -> Result<bool, String> {
    match node {
        Node::Bool(b) => Ok(*b),
        other => Err(format!("must be true or false, not {}", other.kind())),
    }
}

fn user_of(node: &Node) -> Result<Option<String>, String> {
    let s = str_of(node)?;
    let ok = !s.is_empty()
        && s.len() <= 256
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c));
    if ok {
        Ok(Some(s.to_owned()))
    } else {
        Err(format!("{s:?} is not a user name or uid"))
    }
}

fn int_in<T: TryFrom<i64>>(node: &Node, lo: i64, hi: i64) -> Result<T, String> {
    match node {
        Node::Int(i) if (lo..=hi).contains(i) => {
            T::try_from(*i).map_err(|_| format!("{i} is out of range"))
        }
        Node::Int(i) => Err(format!("{i} is out of range; must be {lo} to {hi}")),
        other => Err(format!("must be an integer, not {}", other.kind())),
    }
}

fn path_of(node: &Node, base: &Path) -> Result<PathBuf, String> {
    let s = str_of(node)?;
    if s.is_empty() {
        return Err(r#"must not be empty (write "." for the config file's folder)"#.into());
    }
    if s.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    if s.starts_with('~') {
        return Err(
            "`~` is not expanded; write an absolute path or one relative to the config file".into(),
        );
    }
    Ok(normalize(&base.join(s)))
}

fn address_of(node: &Node) -> Result<SocketAddr, String> {
    let s = str_of(node)?;
    match s.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => Err(format!(
            "{s:?}: port 0 picks a random port; the supervised port must be fixed"
        )),
        Ok(addr) => Ok(addr),
        Err(_) if s.parse::<IpAddr>().is_ok() => Err(format!(
            r#"{s:?} has no port; write e.g. "127.0.0.1:8420" or "[::1]:8420""#
        )),
        Err(_) => match s.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok() =>
            {
                Err(format!(
                    r#"{s:?}: host names are not resolved; use an IP address, e.g. "127.0.0.1:{port}""#
                ))
            }
            _ => Err(format!(
                r#"{s:?} is not an address; expected IPv4:PORT or [IPv6]:PORT, e.g. "127.0.0.1:8420""#
            )),
        },
    }
}

/// `LISTEN_FDNAMES` is colon separated and systemd allows printable ASCII up
/// to 255 bytes.
fn fd_name_of(node: &Node) -> Result<String, String> {
    let s = str_of(node)?;
    if s.is_empty() || s.len() > 255 {
        return Err(format!("{s:?} must be 1 to 255 characters long"));
    }
    if let Some(c) = s.chars().find(|c| !(' '..='~').contains(c) || *c == ':') {
        return Err(format!(
            "{s:?} contains {c:?}; LISTEN_FDNAMES allows printable ASCII except ':'"
        ));
    }
    Ok(s.to_owned())
}

fn env_name_ok(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("the variable name must not be empty".into())
    } else if name.contains('=') || name.contains('\0') {
        Err("a variable name cannot contain '=' or NUL".into())
    } else if RESERVED_ENV.contains(&name) {
        Err("is set by the supervisor for the socket hand-over; remove it".into())
    } else {
        Ok(())
    }
}

fn signal_of(node: &Node) -> Result<Signal, String> {
    let s = match node {
        Node::Str(s) => s,
        Node::Int(_) => {
            return Err(r#"write the signal's name, e.g. "SIGTERM", not its number"#.into())
        }
        other => {
            return Err(format!(
                r#"must be a signal name like "SIGTERM", not {}"#,
                other.kind()
            ))
        }
    };
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    match Signal::from_str(&name) {
        Ok(Signal::SIGSTOP) => Err(
            "SIGSTOP only pauses the child, it never exits; use e.g. SIGTERM, SIGINT or SIGQUIT"
                .into(),
        ),
        Ok(signal) => Ok(signal),
        Err(_) => Err(format!(r#"{s:?} is not a signal name; use e.g. "SIGTERM""#)),
    }
}

fn duration_of(node: &Node, max: Duration) -> Result<Duration, String> {
    let s = match node {
        Node::Str(s) => s,
        Node::Int(i) => return Err(format!(r#"a bare number needs a unit, e.g. "{i}s""#)),
        Node::Float => return Err(r#"a bare number needs a unit, e.g. "1.5s""#.into()),
        other => {
            return Err(format!(
                r#"must be a duration like "10s", not {}"#,
                other.kind()
            ))
        }
    };
    let d = humantime::parse_duration(s).map_err(|e| {
        let t = s.trim();
        if t.parse::<f64>().is_ok() {
            format!(r#"{s:?} needs a unit, e.g. "{t}s""#)
        } else {
            format!(r#"{s:?} is not a duration ({e}); write e.g. "250ms", "10s", "5m""#)
        }
    })?;
    if d > max {
        return Err(format!(
            "{s:?} is too long; at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

fn log_size_of(node: &Node) -> Result<u64, String> {
    let bytes = match node {
        Node::Int(i) => u64::try_from(*i).map_err(|_| format!("{i} is negative"))?,
        Node::Str(s) => parse_size(s)?,
        other => {
            return Err(format!(
                r#"must be a size like "10MiB" or a number of bytes, not {}"#,
                other.kind()
            ))
        }
    };
    if bytes < MIN_LOG_BYTES {
        return Err(format!(
            "{bytes} bytes is too small; at least {MIN_LOG_BYTES}"
        ));
    }
    Ok(bytes)
}

/// `"10MiB"`, `"500 KB"`, `"1.5GiB"`, `"4096"`. Decimal and binary units are
/// both accepted; the bare letters K/M/G/T are refused as ambiguous.
fn parse_size(s: &str) -> Result<u64, String> {
    let not_a_size =
        || format!(r#"{s:?} is not a size; write e.g. "10MiB", "500KB" or a number of bytes"#);
    let too_large = || format!("{s:?} is too large");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at_checked(split).ok_or_else(not_a_size)?;
    let unit = unit.trim().to_ascii_uppercase();
    let multiplier: u128 = match unit.as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KIB" => 1 << 10,
        "MB" => 1_000_000,
        "MIB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GIB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "TIB" => 1 << 40,
        "K" | "M" | "G" | "T" => {
            return Err(format!(
                r#"{s:?}: "{unit}" is ambiguous; write "{unit}B" (powers of 1000) or "{unit}iB" (powers of 1024)"#
            ))
        }
        _ => return Err(not_a_size()),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(not_a_size());
    }
    // u128 integer arithmetic is exact; 18 fraction digits are finer than
    // any byte count needs.
    let frac = frac.get(..frac.len().min(18)).unwrap_or("");
    let value = |d: &str| match d {
        "" => Ok(0),
        d => d.parse::<u128>().map_err(|_| too_large()),
    };
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = value(whole)?
        .checked_mul(multiplier)
        .and_then(|w| w.checked_add(value(frac).ok()? * multiplier / scale))
        .ok_or_else(too_large)?;
    // TOML integers are i64; staying within keeps `to_toml` round-trippable.
    i64::try_from(bytes)
        .ok()
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/sv/supervisor.toml";
    const MINIMAL: &str = "[listen]\naddress = \"127.0.0.1:8420\"\n[child]\ncommand = [\"app\"]\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(FILE))
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(c) => panic!("accepted:\n{text}\n{c:?}"),
            Err(e) => e.problems,
        }
    }

    /// MINIMAL with `extra` lines appended to `[section]` (TOML allows
    /// reopening a table only once, so the extras go into the right place).
    fn with(section: &str, extra: &str) -> String {
        match section {
            "listen" => format!(
                "[listen]\naddress = \"127.0.0.1:8420\"\n{extra}\n[child]\ncommand = [\"app\"]\n"
            ),
            "child" => format!(
                "[listen]\naddress = \"127.0.0.1:8420\"\n[child]\ncommand = [\"app\"]\n{extra}\n"
            ),
            other => format!("{MINIMAL}[{other}]\n{extra}\n"),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.path, Path::new(FILE));
        assert_eq!(c.supervisor.state_dir, Path::new("/etc/sv/run"));
        assert_eq!(c.listen.address, "127.0.0.1:8420".parse().unwrap());
        assert_eq!((c.listen.backlog, c.listen.name.as_str()), (1024, "http"));
        assert_eq!(c.child.command, ["app"]);
        assert_eq!(c.child.cwd, Path::new("/etc/sv"));
        assert!(c.child.env.is_empty());
        assert_eq!(c.child.stop_signal, Signal::SIGTERM);
        assert_eq!(c.child.stop_timeout, Duration::from_secs(10));
        assert_eq!(c.restart.initial_backoff, Duration::from_secs(1));
        assert_eq!(c.restart.max_backoff, Duration::from_secs(300));
        assert_eq!(c.restart.reset_after, Duration::from_secs(60));
        assert_eq!(c.log.dir, Path::new("/etc/sv/logs"));
        assert_eq!((c.log.max_bytes, c.log.max_files), (10 * 1024 * 1024, 5));
    }

    #[test]
    fn full_example_from_spec() {
        let text = r#"
            [supervisor]
            state_dir = "run"
            [listen]
            address = "[::1]:8420"
            backlog = 1024
            name = "http"
            [child]
            command = ["python3", "-m", "src.main"]
            cwd = "."
            env = { APP_ENV = "prod" }
            stop_signal = "term"
            stop_timeout = "10s"
            [restart]
            initial_backoff = "250ms"
            max_backoff = "5m"
            reset_after = "60s"
            [log]
            dir = "logs"
            max_bytes = "10MiB"
            max_files = 5
        "#;
        let c = parse(text).unwrap();
        assert_eq!(c.listen.address, "[::1]:8420".parse().unwrap());
        assert_eq!(c.child.env.get("APP_ENV").map(String::as_str), Some("prod"));
        assert_eq!(c.child.stop_signal, Signal::SIGTERM);
        assert_eq!(c.restart.initial_backoff, Duration::from_millis(250));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let text = with("supervisor", "state_dir = \"../var/./run\"").replace(
            "[child]\ncommand = [\"app\"]",
            "[child]\ncommand = [\"app\"]\ncwd = \"srv/app/\"",
        ) + "[log]\ndir = \"/var/log/../log/sv\"\n";
        let c = Config::parse(&text, Path::new("/etc/./sv/conf/../supervisor.toml")).unwrap();
        assert_eq!(c.path, Path::new("/etc/sv/supervisor.toml"));
        assert_eq!(c.supervisor.state_dir, Path::new("/etc/var/run"));
        assert_eq!(c.child.cwd, Path::new("/etc/sv/srv/app"));
        assert_eq!(c.log.dir, Path::new("/var/log/sv"));

        // A relative config path is made absolute against the current directory.
        let c = Config::parse(MINIMAL, Path::new("conf/x.toml")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.path, normalize(&cwd.join("conf/x.toml")));
        assert_eq!(c.supervisor.state_dir, normalize(&cwd.join("conf/run")));
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("10MiB", 10_485_760),
            ("10MB", 10_000_000),
            ("500KB", 500_000),
            ("500 kib", 512_000),
            ("1.5GiB", 1_610_612_736),
            (".5 MiB", 524_288),
            ("4096", 4096),
            ("4096B", 4096),
            ("2TB", 2_000_000_000_000),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "MiB",
            "10M",
            "1.2.3MB",
            "-5MB",
            "inf",
            "NaN",
            "1e9",
            "10 XB",
            "99999999999999TiB",
            "9999999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let c = parse(&with("log", "max_bytes = 5000")).unwrap();
        assert_eq!(c.log.max_bytes, 5000);
        let c = parse(&with("log", "max_bytes = \"2 MiB\"")).unwrap();
        assert_eq!(c.log.max_bytes, 2 << 20);
    }

    #[test]
    fn durations() {
        let c = parse(&with(
            "restart",
            "initial_backoff = \"0s\"\nmax_backoff = \"1m 30s\"\nreset_after = \"1.5s\"",
        ))
        .unwrap();
        assert_eq!(c.restart.initial_backoff, Duration::ZERO);
        assert_eq!(c.restart.max_backoff, Duration::from_secs(90));
        assert_eq!(c.restart.reset_after, Duration::from_millis(1500));
        let c = parse(&with("child", "stop_timeout = \"1h\"")).unwrap();
        assert_eq!(c.child.stop_timeout, HOUR);
        let c = parse(&with("restart", "initial_backoff = \"5m\"")).unwrap();
        assert_eq!(c.restart.initial_backoff, c.restart.max_backoff);
    }

    #[test]
    fn signals() {
        for (name, sig) in [
            ("SIGTERM", Signal::SIGTERM),
            ("int", Signal::SIGINT),
            ("SigQuit", Signal::SIGQUIT),
            ("KILL", Signal::SIGKILL),
        ] {
            let c = parse(&with("child", &format!("stop_signal = {name:?}"))).unwrap();
            assert_eq!(c.child.stop_signal, sig, "{name}");
        }
    }

    /// (section for [`with`], extra lines, key named in the problem, line).
    /// In `with`, extras start on line 3 for listen, 5 for child and the
    /// others (after their header on line 5).
    const BAD: &[(&str, &str, &str, usize)] = &[
        ("supervisor", "state_dir = \"\"", "supervisor.state_dir", 6),
        ("supervisor", "state_dir = 5", "supervisor.state_dir", 6),
        (
            "supervisor",
            "state_dir = \"~/run\"",
            "supervisor.state_dir",
            6,
        ),
        ("supervisor", "pid_file = \"x\"", "supervisor.pid_file", 6),
        ("listen", "backlog = 0", "listen.backlog", 3),
        ("listen", "backlog = 65536", "listen.backlog", 3),
        ("listen", "backlog = \"1024\"", "listen.backlog", 3),
        ("listen", "name = \"\"", "listen.name", 3),
        ("listen", "name = \"a:b\"", "listen.name", 3),
        ("listen", "name = \"caf\u{e9}\"", "listen.name", 3),
        ("listen", "port = 1", "listen.port", 3),
        ("child", "cwd = \"\"", "child.cwd", 5),
        ("child", "env = \"A=B\"", "child.env", 5),
        ("child", "env = { \"\" = \"x\" }", "child.env.", 5),
        ("child", "env = { \"A=B\" = \"x\" }", "child.env.A=B", 5),
        ("child", "env = { A = 1 }", "child.env.A", 5),
        ("child", "env = { A = \"\\u0000\" }", "child.env.A", 5),
        (
            "child",
            "[child.env]\nLISTEN_PID = \"1\"",
            "child.env.LISTEN_PID",
            6,
        ),
        (
            "child",
            "env.LISTEN_FDNAMES = \"x\"",
            "child.env.LISTEN_FDNAMES",
            5,
        ),
        ("child", "stop_signal = \"SIGSTOP\"", "child.stop_signal", 5),
        ("child", "stop_signal = \"SIGNOPE\"", "child.stop_signal", 5),
        ("child", "stop_signal = 15", "child.stop_signal", 5),
        ("child", "stop_timeout = \"0s\"", "child.stop_timeout", 5),
        ("child", "stop_timeout = \"61m\"", "child.stop_timeout", 5),
        ("child", "stop_timeout = 10", "child.stop_timeout", 5),
        (
            "child",
            "stop_timeout = 1979-05-27",
            "child.stop_timeout",
            5,
        ),
        ("child", "env.A.B = \"x\"", "child.env.A", 5),
        ("child", "stop_timeout = \"10\"", "child.stop_timeout", 5),
        ("child", "shell = true", "child.shell", 5),
        (
            "restart",
            "initial_backoff = \"soon\"",
            "restart.initial_backoff",
            6,
        ),
        ("restart", "max_backoff = \"25h\"", "restart.max_backoff", 6),
        (
            "restart",
            "max_backoff = \"500ms\"",
            "restart.max_backoff",
            6,
        ),
        (
            "restart",
            "initial_backoff = \"6m\"",
            "restart.initial_backoff",
            6,
        ),
        ("restart", "reset_after = -1", "restart.reset_after", 6),
        ("restart", "jitter = \"1s\"", "restart.jitter", 6),
        ("log", "max_bytes = 4095", "log.max_bytes", 6),
        ("log", "max_bytes = -1", "log.max_bytes", 6),
        ("log", "max_bytes = \"1KB\"", "log.max_bytes", 6),
        ("log", "max_bytes = 1.5", "log.max_bytes", 6),
        ("log", "max_files = 0", "log.max_files", 6),
        ("log", "max_files = 1001", "log.max_files", 6),
        ("log", "dir = [\"logs\"]", "log.dir", 6),
        ("log", "level = \"info\"", "log.level", 6),
        ("extra", "x = 1", "extra", 5),
    ];

    #[test]
    fn bad_values_name_key_and_line() {
        for (section, extra, key, line) in BAD {
            let text = with(section, extra);
            let problems = problems(&text);
            let want = format!("{FILE}:{line}:");
            let named = format!("key `{key}`");
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&want) && p.contains(&named)),
                "{extra:?}: want {want}… {named}, got {problems:#?}"
            );
            assert!(problems.iter().all(|p| !p.contains('\n')), "{problems:?}");
        }
    }

    #[test]
    fn bad_addresses() {
        for (address, hint) in [
            ("127.0.0.1", "no port"),
            ("::1", "no port"),
            ("127.0.0.1:0", "port 0"),
            ("[::1]:0", "port 0"),
            ("localhost:8420", "IP address"),
            ("127.0.0.1:99999", "not an address"),
            ("", "not an address"),
        ] {
            let text = MINIMAL.replace("127.0.0.1:8420", address);
            let problems = problems(&text);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with(&format!("{FILE}:2:11: key `listen.address`: ")),
                "{problems:?}"
            );
            assert!(problems[0].contains(hint), "{address}: {problems:?}");
        }
    }

    #[test]
    fn required_keys() {
        assert_eq!(
            problems(""),
            [
                format!("{FILE}: key `listen.address`: missing (required)"),
                format!("{FILE}: key `child.command`: missing (required)"),
            ]
        );
        for (text, key) in [
            (
                "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = []\n",
                "child.command",
            ),
            (
                "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = [\"\"]\n",
                "child.command[0]",
            ),
            (
                "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = \"app --x\"\n",
                "child.command",
            ),
            (
                "[listen]\naddress = \"127.0.0.1:1\"\n[child]\ncommand = [\"a\", 1]\n",
                "child.command[1]",
            ),
        ] {
            let problems = problems(text);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with(&format!("{FILE}:4:")),
                "{problems:?}"
            );
            assert!(
                problems[0].contains(&format!("key `{key}`")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn all_problems_at_once() {
        let text = "[listen]\naddress = \"127.0.0.1:8420\"\nbacklog = 0\n\
                    [child]\ncommand = [\"app\"]\nstop_timeout = 5\n\
                    [log]\nmax_files = 0\n";
        let problems = problems(text);
        let keys = ["listen.backlog", "child.stop_timeout", "log.max_files"];
        assert_eq!(problems.len(), 3, "{problems:#?}");
        for ((problem, key), line) in problems.iter().zip(keys).zip([3, 6, 8]) {
            assert!(problem.starts_with(&format!("{FILE}:{line}:")), "{problem}");
            assert!(problem.contains(&format!("key `{key}`")), "{problem}");
        }
    }

    #[test]
    fn syntax_errors_have_a_position() {
        for (text, at) in [
            ("[listen\n", ":1:"),
            ("a = \n", ":1:"),
            ("[listen]\nname = 1\nname = 2\n", ":3:"),
        ] {
            let problems = problems(text);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with(&format!("{FILE}{at}")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn problems_point_at_the_key_or_value() {
        // Key positions come through toml's private span protocol; this
        // notices if a toml upgrade loses them.
        let p = problems(&with("log", "  bogus = 1"));
        assert!(
            p[0].starts_with(&format!("{FILE}:6:3: key `log.bogus`")),
            "{p:?}"
        );
        let p = problems(&with("log", "max_files =   0"));
        assert!(
            p[0].starts_with(&format!("{FILE}:6:15: key `log.max_files`")),
            "{p:?}"
        );
        let p = problems("[listen]\naddress = \"\u{e9}\u{e9}\"\n[child]\ncommand = [\"a\"]\nenv = { \"\u{e9}\" = 1 }\n");
        assert!(p[0].starts_with(&format!("{FILE}:2:11: ")), "{p:?}");
        assert!(
            p[1].starts_with(&format!("{FILE}:5:15: key `child.env.\u{e9}`")),
            "{p:?}"
        );
    }

    #[test]
    fn round_trip() {
        let text = r#"
            [supervisor]
            state_dir = "/var/run/sv"
            [listen]
            address = "[fe80::1]:8420"
            backlog = 7
            name = "web api"
            [child]
            command = ["sh", "-c", "echo 'hi' \"there\"\\n", "line\nbreak"]
            env = { "A.B" = "x\ty", Z = "", 'q"uote' = "\u00e9" }
            stop_signal = "KILL"
            stop_timeout = "1m 30s 5ms"
            [restart]
            initial_backoff = "0s"
            max_backoff = "1s 1ns"
            reset_after = "1day"
            [log]
            max_bytes = "1.5GiB"
            max_files = 1000
        "#;
        for text in [MINIMAL, text] {
            let c = parse(text).unwrap();
            let out = c.to_toml();
            let back = Config::parse(&out, &c.path).unwrap_or_else(|e| panic!("{out}\n{e}"));
            assert_eq!(back, c, "{out}");
            assert_eq!(back.to_toml(), out);
        }
    }

    #[test]
    fn locate_order() {
        let cli = Path::new("/x/cli.toml");
        assert_eq!(locate_with(Some(cli), Some("/x/env.toml".into())), cli);
        assert_eq!(
            locate_with(None, Some("/x/env.toml".into())),
            Path::new("/x/env.toml")
        );
        assert_eq!(locate_with(None, Some("".into())), Path::new(DEFAULT_PATH));
        assert_eq!(locate_with(None, None), Path::new(DEFAULT_PATH));
    }

    #[test]
    fn load_reports_unreadable_and_non_utf8_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = Config::load(&missing).unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert!(
            e.problems[0].starts_with(&format!("{}: cannot read: ", missing.display())),
            "{e}"
        );

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, b"[listen]\naddress = \"\xff\"\n").unwrap();
        let e = Config::load(&bad).unwrap_err();
        assert!(
            e.problems[0].starts_with(&format!("{}:2:12: not valid UTF-8", bad.display())),
            "{e}"
        );

        let good = dir.path().join("good.toml");
        std::fs::write(&good, MINIMAL).unwrap();
        let c = Config::load(&good).unwrap();
        assert_eq!(c.supervisor.state_dir, dir.path().join("run"));
    }

    #[test]
    fn garbage_never_panics() {
        let mut inputs: Vec<String> = vec![
            "\0\u{1}\u{ff}[[".into(),
            "[".repeat(10_000),
            format!("a = {}", "[".repeat(10_000)),
            format!("a = {}", "{ b = ".repeat(10_000)),
            "\"\u{10FFFF}\" = 1\n[child]\n\"\u{0}\" = [1, [2, {}]]".into(),
            "listen = []\nchild = 1\n[[log]]\n".into(),
            "[listen.address]\n[child.command.x]\n".into(),
            format!("[log]\nmax_bytes = \"{}\"\n", "9".repeat(5000)),
            format!("[child]\nstop_timeout = \"{}s\"\n", "9".repeat(5000)),
            "[log]\nmax_bytes = \"\u{1F600}MiB\"\n".into(),
        ];
        // A cheap deterministic byte soup built from TOML's own punctuation.
        let alphabet = b"[]{}=\"'.,:# \n\t\\abcdefgzlistenchild0123456789-+_\xc3\xa9";
        let mut seed: u32 = 0x2545_f491;
        for _ in 0..2000 {
            let len = (seed % 80) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    alphabet
                        .get(seed as usize % alphabet.len())
                        .copied()
                        .unwrap_or(b' ')
                })
                .collect();
            inputs.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        for text in inputs {
            if let Err(e) = parse(&text) {
                assert!(!e.problems.is_empty());
            }
            for cut in (0..text.len()).step_by(7) {
                let _ = line_col(&text, cut);
            }
        }
    }
}
