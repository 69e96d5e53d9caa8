//! Value parsers: one TOML item in, a typed value or a message for a person
//! out. Pure functions; each message says what is wrong with the value and
//! what to write instead. The key is named by the caller ([`super::check`]);
//! the parsers of arrays and tables report each bad element under its own
//! name (`child.command[1]`, `child.env.A`). Numbers with units are in
//! [`super::amounts`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use nix::sys::signal::Signal;
use toml_edit::{Item, Value};

use super::report::Sub;
use super::AlertEvent;

pub(super) type Parsed<T> = Result<T, String>;

/// What the item is, for "must be X, not Y" messages.
pub(super) fn kind(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => value_kind(v),
    }
}

pub(super) fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date/time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

pub(super) fn string(item: &Item) -> Parsed<&str> {
    item.as_str()
        .ok_or_else(|| format!("must be a string, not {}", kind(item)))
}

/// `log.to`: "files" or "stdout".
pub(super) fn log_to(item: &Item) -> Parsed<super::LogTo> {
    match string(item)? {
        "files" => Ok(super::LogTo::Files),
        "stdout" => Ok(super::LogTo::Stdout),
        other => Err(format!(
            r#""{other}" is not a log destination; use "files" or "stdout""#
        )),
    }
}

pub(super) fn boolean(item: &Item) -> Parsed<bool> {
    item.as_bool()
        .ok_or_else(|| format!("must be true or false, not {}", kind(item)))
}

/// A path in the file, resolved against `base` (the config file's folder).
pub(super) fn path(item: &Item, base: &Path) -> Parsed<PathBuf> {
    let s = string(item)?;
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

/// Removes `.` and resolves `..` lexically. Only the config file's own path
/// goes through symbolic links (when loaded); the paths in it are kept as
/// the operator spelled them, which is what they expect to see.
pub(super) fn normalize(path: &Path) -> PathBuf {
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

pub(super) fn address(item: &Item) -> Parsed<SocketAddr> {
    address_text(string(item)?)
}

fn address_text(s: &str) -> Parsed<SocketAddr> {
    let example = r#"expected IPv4:PORT or [IPv6]:PORT, e.g. "127.0.0.1:8420""#;
    if s.chars().any(char::is_whitespace) {
        return Err(format!(
            "{s:?} has spaces in it; write the address without them, e.g. \"127.0.0.1:8420\""
        ));
    }
    match s.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {
            return Err(format!(
                "{s:?}: port 0 picks a random port; the supervised port must be fixed"
            ))
        }
        Ok(addr) => return Ok(addr),
        Err(_) => {}
    }
    if s.parse::<IpAddr>().is_ok() {
        return Err(format!(
            r#"{s:?} has no port; write e.g. "127.0.0.1:8420" or "[::1]:8420""#
        ));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not an address; {example}"));
    };
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let ip_host = host.parse::<std::net::Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<Ipv6Addr>().is_ok());
    match (digits, ip_host) {
        (true, true) => Err(format!("{s:?}: port {port} is out of range (1-65535)")),
        (true, false) if !host.is_empty() && !host.contains([':', '[', ']']) => Err(format!(
            r#"{s:?}: host names are not resolved; use an IP address, e.g. "127.0.0.1:{port}""#
        )),
        _ => Err(format!("{s:?} is not an address; {example}")),
    }
}

/// `LISTEN_FDNAMES` is colon separated and systemd allows printable ASCII up
/// to 255 bytes.
pub(super) fn fd_name(item: &Item) -> Parsed<String> {
    let s = string(item)?;
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

/// The supervisor sets these for the socket hand-over; a config value would
/// break the protocol.
const RESERVED_ENV: &[&str] = &["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

pub(super) fn env_name(name: &str) -> Parsed<()> {
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

/// A string for argv or the environment: anything but NUL, which exec
/// cannot pass.
pub(super) fn c_string(item: &Item) -> Parsed<String> {
    match string(item)? {
        s if s.contains('\0') => Err("must not contain a NUL character".into()),
        s => Ok(s.to_owned()),
    }
}

pub(super) fn user(item: &Item) -> Parsed<String> {
    let s = string(item)?;
    let ok = !s.is_empty()
        && s.len() <= 256
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a user name or uid"))
    }
}

pub(super) fn http_path(item: &Item) -> Parsed<String> {
    let p = string(item)?;
    let ok = p.starts_with('/') && p.len() <= 2048 && p.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| p.to_owned())
        .ok_or_else(|| format!("{p:?} is not a URL path: start it with / and use no spaces"))
}

/// The stop signal: a name, with or without `SIG`, in any case. Signals
/// that do not end a process by default are refused, or every stop would
/// wait out `stop_timeout` and end in SIGKILL.
pub(super) fn stop_signal(item: &Item) -> Parsed<Signal> {
    let s = match item.as_value() {
        Some(Value::String(s)) => s.value(),
        Some(Value::Integer(_)) => {
            return Err(r#"write the signal's name, e.g. "SIGTERM", not its number"#.into())
        }
        _ => {
            return Err(format!(
                r#"must be a signal name like "SIGTERM", not {}"#,
                kind(item)
            ))
        }
    };
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let signal = Signal::from_str(&name)
        .map_err(|_| format!(r#"{s:?} is not a signal name; use e.g. "SIGTERM""#))?;
    let instead = "use e.g. SIGTERM, SIGINT or SIGQUIT";
    // Matched by name, not variant: SIGINFO exists on macOS only.
    match signal.as_str() {
        "SIGSTOP" | "SIGTSTP" | "SIGTTIN" | "SIGTTOU" => Err(format!(
            "{name} only pauses the child, it never exits; {instead}"
        )),
        "SIGCHLD" | "SIGWINCH" | "SIGURG" | "SIGCONT" | "SIGINFO" => Err(format!(
            "{name} is ignored by default, so the child would not stop and every stop \
             would wait out stop_timeout; {instead}"
        )),
        "SIGIO" => Err(format!(
            "SIGIO is ignored by default on macOS, so the child would not stop there; {instead}"
        )),
        _ => Ok(signal),
    }
}

/// An argv: a non-empty array of strings, the first not empty.
pub(super) fn argv(item: &Item, sub: &mut Sub) -> Parsed<Vec<String>> {
    let example = r#"e.g. ["python3", "-m", "app"]"#;
    let items = match item.as_array() {
        Some(items) if !items.is_empty() => items,
        Some(_) => {
            return Err(format!(
                "must not be empty: give the program and its arguments, {example}"
            ))
        }
        None => {
            return Err(format!(
                "must be an array of strings (no shell is used), {example}; not {}",
                kind(item)
            ))
        }
    };
    let mut argv = Vec::with_capacity(items.len());
    for (n, value) in items.iter().enumerate() {
        let at = format!("[{n}]");
        match value.as_str() {
            Some("") if n == 0 => {
                sub.report(value.span(), &at, "the program name must not be empty")
            }
            Some(s) if s.contains('\0') => {
                sub.report(value.span(), &at, "must not contain a NUL character")
            }
            Some(s) => argv.push(s.to_owned()),
            None => {
                let msg = format!("must be a string, not {}", value_kind(value));
                sub.report(value.span(), &at, msg)
            }
        }
    }
    Ok(argv)
}

/// `child.env`: a table of names to string values.
pub(super) fn env(item: &Item, sub: &mut Sub) -> Parsed<BTreeMap<String, String>> {
    let table = item.as_table_like().ok_or_else(|| {
        format!(
            r#"must be a table like {{ NAME = "value" }}, not {}"#,
            kind(item)
        )
    })?;
    let mut env = BTreeMap::new();
    for (name, value) in table.iter() {
        let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
        let at = format!(".{name}");
        if let Err(msg) = env_name(name) {
            sub.report(key_span.clone().or(value.span()), &at, msg);
        }
        match c_string(value) {
            Ok(s) => {
                env.insert(name.to_owned(), s);
            }
            Err(msg) => {
                let msg = match value.is_str() {
                    true => msg,
                    false => format!("{msg}; quote it"),
                };
                sub.report(value.span().or(key_span), &at, msg)
            }
        }
    }
    Ok(env)
}

/// `alerts.events`: known names, each once.
pub(super) fn events(item: &Item, sub: &mut Sub) -> Parsed<BTreeSet<AlertEvent>> {
    let names: Vec<&str> = AlertEvent::ALL.iter().map(|e| e.as_str()).collect();
    let items = item.as_array().ok_or_else(|| {
        format!(
            r#"must be an array of event names like ["crash-loop", "recovered"], not {}"#,
            kind(item)
        )
    })?;
    if items.is_empty() {
        return Err(
            "must name at least one event; to turn alerts off, remove alerts.command".into(),
        );
    }
    let mut events = BTreeSet::new();
    for (n, value) in items.iter().enumerate() {
        let at = format!("[{n}]");
        let event = match value.as_str() {
            Some(name) => AlertEvent::from_name(name).ok_or_else(|| {
                format!(
                    "{name:?} is not an event; the events are {}",
                    names.join(", ")
                )
            }),
            None => Err(format!("must be an event name, not {}", value_kind(value))),
        };
        match event {
            Ok(e) if !events.insert(e) => sub.report(
                value.span(),
                &at,
                format!("{:?} is listed twice", e.as_str()),
            ),
            Ok(_) => {}
            Err(msg) => sub.report(value.span(), &at, msg),
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::item;

    #[test]
    fn addresses() {
        for (text, want) in [
            ("127.0.0.1:8420", Ok("127.0.0.1:8420")),
            ("[::1]:8420", Ok("[::1]:8420")),
            ("127.0.0.1", Err("has no port")),
            ("::1", Err("has no port")),
            ("127.0.0.1:0", Err("port 0")),
            ("[::1]:0", Err("port 0")),
            ("localhost:8420", Err("host names are not resolved")),
            (
                "127.0.0.1:65536",
                Err("port 65536 is out of range (1-65535)"),
            ),
            ("[::1]:99999", Err("port 99999 is out of range (1-65535)")),
            (" 127.0.0.1:8420", Err("has spaces in it")),
            ("127.0.0.1: 8420", Err("has spaces in it")),
            ("", Err("is not an address")),
            ("[::1]", Err("is not an address")),
            ("::1:8420", Err("has no port")),
            ("1.2.3:8420", Err("host names are not resolved")),
            ("127.0.0.1:http", Err("is not an address")),
        ] {
            match (address_text(text), want) {
                (Ok(a), Ok(w)) => assert_eq!(a, w.parse().unwrap(), "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text:?}: {e}"),
                (got, _) => panic!("{text:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn stop_signals() {
        for (name, sig) in [
            ("SIGTERM", Signal::SIGTERM),
            ("int", Signal::SIGINT),
            ("SigQuit", Signal::SIGQUIT),
            ("KILL", Signal::SIGKILL),
            ("SIGUSR1", Signal::SIGUSR1),
        ] {
            assert_eq!(stop_signal(&item(&format!("{name:?}"))), Ok(sig), "{name}");
        }
        for (name, want) in [
            ("SIGSTOP", "only pauses"),
            ("TSTP", "only pauses"),
            ("SIGCHLD", "ignored by default"),
            ("SIGWINCH", "ignored by default"),
            ("SIGURG", "ignored by default"),
            ("cont", "ignored by default"),
            ("SIGIO", "on macOS"),
            ("SIGNOPE", "not a signal name"),
        ] {
            let e = stop_signal(&item(&format!("{name:?}"))).unwrap_err();
            assert!(e.contains(want), "{name}: {e}");
        }
        assert!(stop_signal(&item("15")).unwrap_err().contains("name"));
    }
}
