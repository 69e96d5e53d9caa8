//! The state dir of a config that no longer loads. A running supervisor
//! must stay reachable (`status`, `stop`, `restart`, `reopen-logs`) after
//! its file was edited into an invalid state, as long as the state dir can
//! still be told: from the document when it is still TOML, else from the
//! text, line by line. When the text leaves any doubt (a `state_dir` that
//! cannot be read, or one in a place the scan cannot follow), this says so
//! rather than guess: a guess would make `stop` report success while the
//! real supervisor runs on.

use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item};

use super::keys;
use super::report::{Problems, Sub};
use super::{Config, ConfigError, PID_FILE, STATE_FILE};

/// Where a supervisor keeps its instance files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateLocation {
    /// The config file, absolute, through symbolic links.
    pub(crate) config: PathBuf,
    pub(crate) state_dir: PathBuf,
}

impl StateLocation {
    pub(crate) fn pid_path(&self) -> PathBuf {
        self.state_dir.join(PID_FILE)
    }

    pub(crate) fn state_path(&self) -> PathBuf {
        self.state_dir.join(STATE_FILE)
    }
}

/// The state dir `text` (read from `config`) names, or the default.
pub(super) fn state_dir_in(text: &str, config: &Path) -> Result<PathBuf, ConfigError> {
    let file = config.display();
    let value = match ImDocument::parse(text) {
        Ok(doc) => {
            let supervisor = doc.get("supervisor");
            match supervisor.and_then(Item::as_table_like) {
                Some(table) => table.get("state_dir").cloned(),
                None if supervisor.is_some() => {
                    return Err(ConfigError::one(format!(
                        "{file}: cannot tell the state dir: [supervisor] is not a table"
                    )))
                }
                None => None,
            }
        }
        Err(_) => scan(text).map_err(|why| {
            ConfigError::one(format!(
                "{file}: not valid TOML, and the state dir cannot be told from it: {why}"
            ))
        })?,
    };
    // The same definition the loader uses, so both resolve alike.
    let mut cfg = Config::defaults(config);
    if let (Some(item), Some(def)) = (value, keys::find("supervisor", "state_dir")) {
        let mut problems = Problems::new(text, config);
        let mut sub = Sub::new("supervisor.state_dir", &mut problems);
        if let Err(msg) = (def.parse)(&mut cfg, &item, &mut sub) {
            return Err(ConfigError::one(format!(
                "{file}: cannot tell the state dir: key `supervisor.state_dir`: {msg}"
            )));
        }
    }
    Ok(cfg.supervisor.state_dir)
}

/// `state_dir`'s value in text that is not valid TOML: the one line that
/// sets it in `[supervisor]` (or `supervisor.state_dir = ...` before any
/// table), its value parsed alone; `None` when no line sets a `state_dir`.
/// A `state_dir` set anywhere the scan cannot place (an inline table, a
/// table header it cannot read) is an error.
fn scan(text: &str) -> Result<Option<Item>, String> {
    // The table the current line belongs to ("" for the root); None after
    // a header too broken to read.
    let mut table = Some(String::new());
    let mut found = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            table = header(line);
            continue;
        }
        // Lines without `=` set nothing (array continuations, garbage).
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        // Quotes and spaces dropped: `"state_dir"` and `supervisor . state_dir`
        // are the same key to TOML.
        let key: String = key
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
            .collect();
        let ours = matches!(
            (table.as_deref(), key.as_str()),
            (Some("supervisor"), "state_dir") | (Some(""), "supervisor.state_dir")
        );
        if ours {
            if found.is_some() {
                return Err(format!(
                    "`state_dir` is set twice (again on line {})",
                    n + 1
                ));
            }
            let alone = ImDocument::parse(format!("v = {value}"))
                .map_err(|_| format!("the `state_dir` line (line {}) is not valid TOML", n + 1))?;
            found = alone.get("v").cloned();
        } else if key.contains("state_dir") || sets_state_dir(value) {
            return Err(format!(
                "line {} sets a `state_dir` that cannot be placed",
                n + 1
            ));
        }
    }
    Ok(found)
}

/// Whether `state_dir` is a key inside this value (an inline table).
fn sets_state_dir(value: &str) -> bool {
    value.match_indices("state_dir").any(|(at, m)| {
        value
            .get(at + m.len()..)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

/// The table a `[name]` or `[[name]]` header line opens, or None when the
/// line is too broken to tell.
fn header(line: &str) -> Option<String> {
    let (inner, _) = line.trim_start_matches('[').split_once(']')?;
    let name: String = inner.split_whitespace().collect();
    Some(name.trim_matches(|c| c == '"' || c == '\'').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/sv/supervisor.toml";

    #[test]
    fn state_dir_from_valid_broken_and_garbled_files() {
        // (text, the state dir, or a piece of the error)
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("", Ok("/etc/sv/run")),
            ("[supervisor]\nstate_dir = \"/var/run/sv\"\n", Ok("/var/run/sv")),
            ("[supervisor]\nstate_dir = \"../x\"\n", Ok("/etc/x")),
            // Valid TOML, invalid config: the rest does not matter.
            (
                "[supervisor]\nstate_dir = \"s\"\n[listen]\nbacklog = -5\nbogus = 1\n",
                Ok("/etc/sv/s"),
            ),
            ("[listen]\nbacklog = \"many\"\n", Ok("/etc/sv/run")),
            ("supervisor.state_dir = \"d\"\n", Ok("/etc/sv/d")),
            ("supervisor = { state_dir = \"i\" }\n", Ok("/etc/sv/i")),
            // Not TOML at all.
            ("[listen\naddress = \n", Ok("/etc/sv/run")),
            (
                "[supervisor]\nstate_dir = \"st\"  # comment\n[child]\ncommand = [\n",
                Ok("/etc/sv/st"),
            ),
            (
                "supervisor.state_dir = 'lit'\n[listen\n",
                Ok("/etc/sv/lit"),
            ),
            (
                "[listen]\naddress = \"x\n# state_dir = \"nope\"\n[ supervisor ]\nstate_dir=\"sp\"\n",
                Ok("/etc/sv/sp"),
            ),
            // Doubt: refused, never guessed.
            ("[supervisor]\nstate_dir = 5\n", Err("must be a string")),
            ("[supervisor]\nstate_dir = \"~/x\"\n", Err("not expanded")),
            ("supervisor = 3\n", Err("not a table")),
            ("[supervisor]\nstate_dir = \"open\n", Err("not valid TOML")),
            ("[supervisor\nstate_dir = \"x\"\n", Err("cannot be placed")),
            ("[child]\nstate_dir = \"x\"\n[listen\n", Err("cannot be placed")),
            ("x = { state_dir = \"y\"\n", Err("cannot be placed")),
            (
                "[supervisor]\nstate_dir = \"a\"\nstate_dir = \"b\"\n",
                Err("set twice"),
            ),
            ("[listen\nstate_dir\n", Ok("/etc/sv/run")),
            (
                "[child]\ncommand = [\n  \"app\", \"--state_dir\",\n",
                Ok("/etc/sv/run"),
            ),
            ("[supervisor]\n\"state_dir\" = \"q\"\n[x\n", Ok("/etc/sv/q")),
            // An argument that looks like a key: doubt.
            (
                "[child]\ncommand = [\n  \"app\", \"--state_dir=x\",\n",
                Err("cannot be placed"),
            ),
            ("supervisor = { state_dir = \"y\"\n", Err("cannot be placed")),
        ];
        for (text, want) in cases {
            let got = state_dir_in(text, Path::new(FILE));
            match (got, want) {
                (Ok(dir), Ok(w)) => assert_eq!(dir, Path::new(w), "{text:?}"),
                (Err(e), Err(w)) => {
                    let e = e.to_string();
                    assert!(e.starts_with(FILE) && e.contains(w), "{text:?}: {e}");
                    assert!(!e.contains('\n'), "{e}");
                }
                (got, _) => panic!("{text:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn agrees_with_the_loader_and_resolves_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let file = real.join("supervisor.toml");
        let text = "[supervisor]\nstate_dir = \"../state\"\n[listen]\naddress = \"127.0.0.1:1\"\n\
                    [child]\ncommand = [\"app\"]\n";
        std::fs::write(&file, text).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let via_link = link.join("supervisor.toml");
        let cfg = Config::load(&via_link).unwrap();
        let loc = super::super::locate_state_dir(&via_link).unwrap();
        assert_eq!(loc, cfg.state_location());
        let canonical = std::fs::canonicalize(&file).unwrap();
        assert_eq!(loc.config, canonical);
        assert_eq!(
            loc.state_dir,
            canonical.parent().unwrap().parent().unwrap().join("state")
        );
        assert_eq!(loc.pid_path(), cfg.pid_path());
        assert_eq!(loc.state_path(), cfg.state_path());

        let missing = super::super::locate_state_dir(&dir.path().join("nope.toml")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }
}
