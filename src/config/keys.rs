//! Every key of the configuration, defined once: section, name, a line of
//! documentation, how its value is parsed into the [`Config`] and how it is
//! written back. [`KEYS`] drives the unknown-key check, validation and
//! rendering, and [`schema`] hands it to the property tests; rules between
//! keys follow in [`cross_checks`]. Below the table, the two walks over it:
//! [`check`] over a parsed document (each key found handed to its parser,
//! anything else an unknown key, then the required keys and the rules
//! between keys; every problem kept with its position and reported at
//! once, in file order), and [`to_toml`] over a config. To add a key: a field (and its default
//! in `Config::defaults`), one entry here, and a documented line in
//! `config/supervisor.toml` (a unit test insists on the last).

use std::path::Path;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::amounts::{self as a, DAY, HOUR};
use super::render as r;
use super::report::{Found, Problems, Seen, Sub};
use super::values::{self as v, kind, Parsed};
use super::{folder, AlertsSection, Config, ConfigError, Resource};

/// Fills one key's value into the config, or says what is wrong with it.
/// Problems below the key (an array element, a table entry) go to the
/// [`Sub`]; the returned message is about the value as a whole.
type ParseFn = fn(&mut Config, &Item, &mut Sub) -> Result<(), String>;
/// The key's value as TOML, or `None` to leave it out (unset and optional).
type RenderFn = fn(&Config) -> Option<Value>;

pub(super) struct KeyDef {
    pub(super) section: &'static str,
    pub(super) name: &'static str,
    /// What the key does, in a few words: the comment `check-config`
    /// prints beside it.
    pub(super) doc: &'static str,
    pub(super) required: bool,
    pub(super) parse: ParseFn,
    pub(super) render: RenderFn,
}

/// Stores a parsed value in its field.
fn set<T>(field: &mut T, value: Parsed<T>) -> Result<(), String> {
    *field = value?;
    Ok(())
}

const fn key(
    section: &'static str,
    name: &'static str,
    doc: &'static str,
    parse: ParseFn,
    render: RenderFn,
) -> KeyDef {
    KeyDef {
        section,
        name,
        doc,
        required: false,
        parse,
        render,
    }
}

const fn required(
    section: &'static str,
    name: &'static str,
    doc: &'static str,
    parse: ParseFn,
    render: RenderFn,
) -> KeyDef {
    KeyDef {
        required: true,
        ..key(section, name, doc, parse, render)
    }
}

/// The tables, in the order `check-config` writes them.
pub(super) const SECTIONS: &[&str] = &[
    "supervisor",
    "listen",
    "child",
    "child.limits",
    "restart",
    "log",
    "health",
    "alerts",
    "metrics",
];

/// The alerts being built; a key of `[alerts]` without `command` is refused
/// in [`cross_checks`].
fn alerts(c: &mut Config) -> &mut AlertsSection {
    c.alerts.get_or_insert_with(AlertsSection::default)
}

/// Rendered only when alerts are on.
fn alerts_value(c: &Config, f: impl FnOnce(&AlertsSection) -> Value) -> Option<Value> {
    c.alerts.as_ref().map(f)
}

/// One `[child.limits]` key per resource, all alike.
macro_rules! limit {
    ($resource:ident, $doc:literal) => {
        key(
            "child.limits",
            Resource::$resource.name(),
            $doc,
            |c, i, _| {
                let limit = a::limit(i, Resource::$resource)?;
                c.child.limits.insert(Resource::$resource, limit);
                Ok(())
            },
            |c| {
                Some(r::limit(
                    Resource::$resource,
                    c.child.limits.get(&Resource::$resource)?,
                ))
            },
        )
    };
}

pub(super) static KEYS: &[KeyDef] = &[
    key(
        "supervisor",
        "state_dir",
        "holds supervisor.pid (the instance lock) and state.json",
        |c, i, _| set(&mut c.supervisor.state_dir, v::path(i, folder(&c.path))),
        |c| Some(r::path(&c.supervisor.state_dir)),
    ),
    required(
        "listen",
        "address",
        "IPv4:port or [IPv6]:port, bound here and handed over as fd 3",
        |c, i, _| set(&mut c.listen.address, v::address(i)),
        |c| Some(r::text(&c.listen.address.to_string())),
    ),
    key(
        "listen",
        "backlog",
        "accept queue: clients wait here across restarts",
        |c, i, _| set(&mut c.listen.backlog, a::int_in(i, 1, 65535)),
        |c| Some(r::int(c.listen.backlog)),
    ),
    key(
        "listen",
        "name",
        "LISTEN_FDNAMES",
        |c, i, _| set(&mut c.listen.name, v::fd_name(i)),
        |c| Some(r::text(&c.listen.name)),
    ),
    required(
        "child",
        "command",
        "argv, no shell",
        |c, i, sub| set(&mut c.child.command, v::argv(i, sub)),
        |c| Some(r::array(&c.child.command)),
    ),
    key(
        "child",
        "cwd",
        "the child's working directory",
        |c, i, _| set(&mut c.child.cwd, v::path(i, folder(&c.path))),
        |c| Some(r::path(&c.child.cwd)),
    ),
    key(
        "child",
        "env",
        "added to the child's environment",
        |c, i, sub| set(&mut c.child.env, v::env(i, sub)),
        |c| Some(r::table(&c.child.env)),
    ),
    key(
        "child",
        "stop_signal",
        "sent to the child's process group to stop it",
        |c, i, _| set(&mut c.child.stop_signal, v::stop_signal(i)),
        |c| Some(r::text(c.child.stop_signal.as_str())),
    ),
    key(
        "child",
        "stop_timeout",
        "then SIGKILL",
        |c, i, _| {
            let why = "the child needs a moment to stop";
            set(&mut c.child.stop_timeout, a::positive(i, HOUR, why))
        },
        |c| Some(r::duration(c.child.stop_timeout)),
    ),
    key(
        "child",
        "user",
        "run the child as this user (needs root)",
        |c, i, _| set(&mut c.child.user, v::user(i).map(Some)),
        |c| c.child.user.as_deref().map(r::text),
    ),
    key(
        "child",
        "allow_root",
        "consent to run the child as root",
        |c, i, _| set(&mut c.child.allow_root, v::boolean(i)),
        |c| Some(Value::from(c.child.allow_root)),
    ),
    key(
        "child",
        "inherit_env",
        "with child.user: pass the supervisor's whole environment, not a clean one",
        |c, i, _| set(&mut c.child.inherit_env, v::boolean(i)),
        |c| Some(Value::from(c.child.inherit_env)),
    ),
    key(
        "child",
        "umask",
        "octal; default: inherited (022 for another user's child)",
        |c, i, _| set(&mut c.child.umask, a::umask(i).map(Some)),
        |c| c.child.umask.map(|m| r::text(&format!("{m:03o}"))),
    ),
    key(
        "child",
        "nice",
        "-20 (favoured) to 19; default: inherited",
        |c, i, _| set(&mut c.child.nice, a::int_in(i, -20, 19).map(Some)),
        |c| c.child.nice.map(r::int),
    ),
    key(
        "child",
        "max_memory",
        "restart the child gracefully when its process group's RSS passes this",
        |c, i, _| {
            let why = "the child could not run";
            set(
                &mut c.child.max_memory,
                a::size_at_least(i, 1, why).map(Some),
            )
        },
        |c| c.child.max_memory.map(r::size),
    ),
    key(
        "child",
        "max_memory_check",
        "how often max_memory is checked",
        |c, i, _| {
            let why = "memory would be checked in a tight loop";
            set(&mut c.child.max_memory_check, a::positive(i, HOUR, why))
        },
        |c| Some(r::duration(c.child.max_memory_check)),
    ),
    limit!(Core, "core dump size"),
    limit!(Cpu, "CPU seconds"),
    limit!(Data, "data segment size"),
    limit!(Fsize, "largest file the child may write"),
    limit!(Memlock, "locked memory"),
    limit!(Nofile, "open files (launchd's default is 256)"),
    limit!(Nproc, "processes of the child's user"),
    limit!(Stack, "stack size"),
    key(
        "restart",
        "initial_backoff",
        "first delay after an early death",
        |c, i, _| {
            let why = "a failing child would be restarted in a tight loop";
            set(&mut c.restart.initial_backoff, a::positive(i, DAY, why))
        },
        |c| Some(r::duration(c.restart.initial_backoff)),
    ),
    key(
        "restart",
        "max_backoff",
        "the doubling stops here",
        |c, i, _| set(&mut c.restart.max_backoff, a::duration(i, DAY)),
        |c| Some(r::duration(c.restart.max_backoff)),
    ),
    key(
        "restart",
        "reset_after",
        "a child up this long counts as healthy",
        |c, i, _| {
            let why = "every child would count as healthy, so a crash loop never backs off";
            set(&mut c.restart.reset_after, a::positive(i, DAY, why))
        },
        |c| Some(r::duration(c.restart.reset_after)),
    ),
    key(
        "restart",
        "overlap",
        "a requested restart starts the new child before stopping the old one",
        |c, i, _| set(&mut c.restart.overlap, v::boolean(i)),
        |c| Some(Value::from(c.restart.overlap)),
    ),
    key(
        "restart",
        "give_up_after",
        "failed starts in a row after which the supervisor stops and exits 1 (0: never)",
        |c, i, _| set(&mut c.restart.give_up_after, a::int_in(i, 0, 1_000_000)),
        |c| Some(r::int(c.restart.give_up_after)),
    ),
    key(
        "log",
        "to",
        r#""files" (child.log, supervisor.log in dir) or "stdout" (the supervisor's own stdout/stderr, for a container engine)"#,
        |c, i, _| set(&mut c.log.to, v::log_to(i)),
        |c| Some(r::text(c.log.to.as_str())),
    ),
    key(
        "log",
        "dir",
        "supervisor.log and child.log",
        |c, i, _| set(&mut c.log.dir, v::path(i, folder(&c.path))),
        |c| Some(r::path(&c.log.dir)),
    ),
    key(
        "log",
        "group",
        "a group that may read the log files (then 0640 and that group; else 0600)",
        |c, i, _| set(&mut c.log.group, v::user(i).map(Some)),
        |c| c.log.group.as_deref().map(r::text),
    ),
    key(
        "log",
        "max_bytes",
        "per file, then rotated to NAME.1, NAME.2, ...",
        |c, i, _| {
            let why = "smaller files would rotate every few lines";
            set(&mut c.log.max_bytes, a::size_at_least(i, 4096, why))
        },
        |c| Some(r::size(c.log.max_bytes)),
    ),
    key(
        "log",
        "max_files",
        "rotated files kept per log",
        |c, i, _| set(&mut c.log.max_files, a::int_in(i, 1, 1000)),
        |c| Some(r::int(c.log.max_files)),
    ),
    key(
        "health",
        "notify",
        "child sends READY=1 / WATCHDOG=1 to $NOTIFY_SOCKET",
        |c, i, _| set(&mut c.health.notify, v::boolean(i)),
        |c| Some(Value::from(c.health.notify)),
    ),
    key(
        "health",
        "http",
        "GET on the supervised address; 2xx is healthy",
        |c, i, _| set(&mut c.health.http, v::http_path(i).map(Some)),
        |c| c.health.http.as_deref().map(r::text),
    ),
    key(
        "health",
        "interval",
        "between probes once ready",
        |c, i, _| {
            set(
                &mut c.health.interval,
                a::positive(i, HOUR, "probes would never pause"),
            )
        },
        |c| Some(r::duration(c.health.interval)),
    ),
    key(
        "health",
        "timeout",
        "a probe slower than this failed",
        |c, i, _| {
            set(
                &mut c.health.timeout,
                a::positive(i, HOUR, "every probe would fail"),
            )
        },
        |c| Some(r::duration(c.health.timeout)),
    ),
    key(
        "health",
        "start_timeout",
        "not ready by then: a failed start",
        |c, i, _| {
            set(
                &mut c.health.start_timeout,
                a::positive(i, DAY, "every start would fail"),
            )
        },
        |c| Some(r::duration(c.health.start_timeout)),
    ),
    key(
        "health",
        "failures",
        "failed HTTP probes in a row that make it unhealthy",
        |c, i, _| set(&mut c.health.failures, a::int_in(i, 1, 1000)),
        |c| Some(r::int(c.health.failures)),
    ),
    key(
        "health",
        "watchdog",
        "with notify: WATCHDOG_USEC; as systemd, one missed ping restarts the child",
        |c, i, _| {
            let why = "every ping would be late";
            set(&mut c.health.watchdog, a::positive(i, HOUR, why).map(Some))
        },
        |c| c.health.watchdog.map(r::duration),
    ),
    key(
        "alerts",
        "command",
        "argv, no shell; run once per event (setting it turns alerts on)",
        |c, i, sub| set(&mut alerts(c).command, v::argv(i, sub)),
        |c| alerts_value(c, |a| r::array(&a.command)),
    ),
    key(
        "alerts",
        "events",
        "what to tell",
        |c, i, sub| set(&mut alerts(c).events, v::events(i, sub)),
        |c| alerts_value(c, |a| r::array(a.events.iter().map(|e| e.as_str()))),
    ),
    key(
        "alerts",
        "crash_loop_after",
        "failed starts in a row that make a crash loop",
        |c, i, _| set(&mut alerts(c).crash_loop_after, a::int_in(i, 2, 1000)),
        |c| alerts_value(c, |a| r::int(a.crash_loop_after)),
    ),
    key(
        "alerts",
        "port_busy_after",
        "waiting for the port this long",
        |c, i, _| {
            let why = "every failed bind would be an alert";
            set(&mut alerts(c).port_busy_after, a::positive(i, DAY, why))
        },
        |c| alerts_value(c, |a| r::duration(a.port_busy_after)),
    ),
    key(
        "alerts",
        "min_interval",
        "the same event at most once per this",
        |c, i, _| {
            let why = "a crash loop would run the command on every restart";
            set(&mut alerts(c).min_interval, a::positive(i, DAY, why))
        },
        |c| alerts_value(c, |a| r::duration(a.min_interval)),
    ),
    key(
        "alerts",
        "timeout",
        "the command's process group is killed after this",
        |c, i, _| {
            let why = "the command would be killed at once";
            set(&mut alerts(c).timeout, a::positive(i, HOUR, why))
        },
        |c| alerts_value(c, |a| r::duration(a.timeout)),
    ),
    key(
        "metrics",
        "address",
        "serve GET /metrics and GET /status here (default: no listener)",
        |c, i, _| v::address(i).map(|a| c.metrics.address = Some(a)),
        |c| c.metrics.address.map(|a| r::text(&a.to_string())),
    ),
];

/// The definition of `name` in `section`, if there is one.
pub(super) fn find(section: &str, name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

pub(super) fn is_section(path: &str) -> bool {
    SECTIONS.contains(&path)
}

pub(super) fn required_keys() -> impl Iterator<Item = &'static KeyDef> {
    KEYS.iter().filter(|k| k.required)
}

/// What may appear in the table at `path` ("" for the root).
pub(super) fn unknown_key_message(path: &str) -> String {
    let subsections = SECTIONS.iter().filter_map(|s| match path {
        "" => (!s.contains('.')).then_some(*s),
        _ => s.strip_prefix(path)?.strip_prefix('.'),
    });
    if path.is_empty() {
        let all: Vec<&str> = subsections.collect();
        return format!("unknown key; the tables are {}", all.join(", "));
    }
    let keys = KEYS.iter().filter(|k| k.section == path).map(|k| k.name);
    let all: Vec<&str> = keys.chain(subsections).collect();
    format!("unknown key; expected one of {}", all.join(", "))
}

/// Every table and its keys, as the loader knows them: for tests that
/// generate configs (`tests/hardening_input.rs`).
pub fn schema() -> Vec<(&'static str, Vec<&'static str>)> {
    SECTIONS
        .iter()
        .map(|s| {
            let keys = KEYS.iter().filter(|k| k.section == *s).map(|k| k.name);
            (*s, keys.collect())
        })
        .collect()
}

/// The rules between keys, once every key was read. A rule is skipped when
/// a key it uses was already reported as bad.
pub(super) fn cross_checks(c: &mut Config, found: &Found, sub: &mut Sub) {
    let restart = &c.restart;
    if found.ok("restart", "initial_backoff")
        && found.ok("restart", "max_backoff")
        && restart.max_backoff < restart.initial_backoff
    {
        // Blame the key the operator wrote; the two defaults agree.
        let name = match found.present("restart", "max_backoff") {
            true => "max_backoff",
            false => "initial_backoff",
        };
        let msg = format!(
            "max_backoff ({}) must be at least initial_backoff ({})",
            humantime::format_duration(restart.max_backoff),
            humantime::format_duration(restart.initial_backoff)
        );
        sub.report(found.span("restart", name), &format!("restart.{name}"), msg);
    }

    if c.health.watchdog.is_some() && !c.health.notify {
        sub.report(
            found.span("health", "watchdog"),
            "health.watchdog",
            "needs notify = true: the child pings with WATCHDOG=1 over the notify socket",
        );
    }

    if c.restart.overlap && !c.health.readiness() {
        sub.report(
            found.span("restart", "overlap"),
            "restart.overlap",
            "needs [health] notify = true or http: without a readiness signal there is no moment at which the old child may go",
        );
    }

    if let Some(m) = c.metrics.address {
        let l = c.listen.address;
        let overlap = m.port() == l.port()
            && (m.ip() == l.ip() || m.ip().is_unspecified() || l.ip().is_unspecified());
        if overlap {
            sub.report(
                found.span("metrics", "address"),
                "metrics.address",
                format!(
                    "{m} is (or overlaps) the service's own listen.address {l}; give the metrics another port"
                ),
            );
        }
    }

    if !found.present("alerts", "command") {
        for name in found.in_section("alerts") {
            sub.report(
                found.span("alerts", name),
                &format!("alerts.{name}"),
                "needs alerts.command: alerts are sent by running it",
            );
        }
        c.alerts = None;
    }
}

// ------------------------------------------------------------------ the walk

/// Parses and checks `text`, read from `path` (absolute).
pub(super) fn check(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut problems = Problems::new(text, path);
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            // toml_edit leaves the message empty for some bytes (a NUL in a
            // comment, a lone CR); say something a person can act on.
            let msg = match one_line(e.message()) {
                m if m.trim().is_empty() => {
                    "invalid TOML here (a control character such as NUL or a lone CR?)".to_owned()
                }
                m => m,
            };
            problems.raw(e.span(), &msg);
            return Err(problems.into_error());
        }
    };
    let mut cfg = Config::defaults(path);
    let mut walk = Walk {
        problems,
        found: Vec::new(),
        broken_sections: Vec::new(),
    };
    walk.table("", doc.as_table(), &mut cfg);
    walk.missing();
    cross_checks(
        &mut cfg,
        &Found(&walk.found),
        &mut Sub::new("", &mut walk.problems),
    );
    if walk.problems.is_empty() {
        Ok(cfg)
    } else {
        Err(walk.problems.into_error())
    }
}

struct Walk<'t> {
    problems: Problems<'t>,
    found: Vec<Seen>,
    /// Sections given as something other than a table (already reported).
    broken_sections: Vec<String>,
}

impl Walk<'_> {
    /// Checks every entry of the table at dotted path `path` ("" for the
    /// root).
    fn table(&mut self, path: &str, table: &dyn TableLike, cfg: &mut Config) {
        for (name, item) in table.iter() {
            let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
            // Implicit tables (from dotted keys) have no span of their own;
            // their key is the best place to point at.
            let value_span = item.span().or_else(|| key_span.clone());
            let full = match path {
                "" => name.to_owned(),
                _ => format!("{path}.{name}"),
            };
            if let Some(def) = find(path, name) {
                let mut sub = Sub::new(&full, &mut self.problems);
                let result = (def.parse)(cfg, item, &mut sub);
                let mut ok = !sub.failed;
                if let Err(msg) = result {
                    self.problems.report(value_span.clone(), &full, msg);
                    ok = false;
                }
                self.found.push(Seen {
                    section: def.section,
                    name: def.name,
                    span: value_span,
                    ok,
                });
            } else if is_section(&full) {
                match item.as_table_like() {
                    Some(inner) => self.table(&full, inner, cfg),
                    None => {
                        let msg = format!("must be a table ([{full}]), not {}", kind(item));
                        self.problems.report(value_span, &full, msg);
                        self.broken_sections.push(full);
                    }
                }
            } else {
                let msg = unknown_key_message(path);
                self.problems.report(key_span.or(value_span), &full, msg);
            }
        }
    }

    /// Required keys that were not there. Under a section that was not a
    /// table, that was reported already; once is enough.
    fn missing(&mut self) {
        for def in required_keys() {
            let broken = self
                .broken_sections
                .iter()
                .any(|s| def.section == s || def.section.starts_with(&format!("{s}.")));
            if !broken && !Found(&self.found).present(def.section, def.name) {
                let key = format!("{}.{}", def.section, def.name);
                self.problems.report(None, &key, "missing (required)");
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.trim().replace('\n', "; ")
}

/// Values are padded to this width before their comment, which puts the
/// `#` where `config/supervisor.toml` has it.
const VALUE_WIDTH: usize = 32;

/// The resolved config written back as TOML (`check-config`): every key
/// in effect, in table order, each with its definition's doc line as a
/// comment.
pub(super) fn to_toml(cfg: &Config) -> String {
    let mut out = String::from(
        "# Resolved configuration: the values in effect, defaults filled in, paths\n\
         # absolute. Optional keys that are not set are left out.\n",
    );
    for section in SECTIONS {
        let lines: Vec<String> = KEYS
            .iter()
            .filter(|k| k.section == *section)
            .filter_map(|k| {
                let line = format!("{} = {}", k.name, (k.render)(cfg)?);
                Some(format!("{line:<VALUE_WIDTH$} # {}\n", k.doc))
            })
            .collect();
        if !lines.is_empty() {
            out.push_str(&format!("\n[{section}]\n"));
            out.extend(lines);
        }
    }
    out
}
