//! Exit codes, as SPEC.md's table gives them, and the one error type of
//! the fatal paths: every command returns `Result<code, Fatal>`, and
//! `commands::main` prints a `Fatal` and maps it to its code in one place.

use std::fmt;

pub(crate) const OK: i32 = 0;
/// `run`: any other fatal error. `status`: supervisor up, child not running.
/// `stop`: the supervisor did not exit in time.
pub(crate) const FAILURE: i32 = 1;
/// `status`, `restart`, `reopen-logs`, `reload`: no supervisor runs.
pub(crate) const NOT_RUNNING: i32 = 3;
/// `status`: unreadable state or invalid config. `logs`: unreadable log.
pub(crate) const UNKNOWN: i32 = 4;
/// A bad argument on the command line (what clap exits with, too).
pub(crate) const USAGE: i32 = 2;
/// EX_CONFIG from sysexits.h: the configuration is invalid or unusable.
pub(crate) const CONFIG: i32 = 78;

/// A command cannot go on: what failed, on what, and what happens next,
/// already in words, with the exit code that says so to scripts.
///
/// What happens next (`consequence`: "nothing started") is kept apart from
/// what failed and joined to it only where the whole is printed: a reload
/// that meets the same refusal reports what failed with its own
/// consequence. With `detail` (the config's problems, one a line) the
/// printed form is `message; consequence:` and the list below.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Fatal {
    pub(crate) code: i32,
    /// What failed, on what.
    pub(crate) message: String,
    /// A list below the message, one item a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
    /// What follows from it for this command, said after the message.
    #[serde(skip)]
    pub(crate) consequence: Option<&'static str>,
}

/// `run`'s consequence of every refusal before the child's first start.
pub(crate) const NOTHING_STARTED: &str = "nothing started";

impl Fatal {
    /// Exit 78: the configuration (or a folder it names) cannot be used.
    pub(crate) fn config(message: impl Into<String>) -> Fatal {
        Fatal::with_code(CONFIG, message)
    }

    /// Exit 1: anything else.
    pub(crate) fn failure(message: impl Into<String>) -> Fatal {
        Fatal::with_code(FAILURE, message)
    }

    pub(crate) fn with_code(code: i32, message: impl Into<String>) -> Fatal {
        Fatal {
            code,
            message: message.into(),
            detail: None,
            consequence: None,
        }
    }

    /// With a list below the message.
    pub(crate) fn with_detail(self, detail: impl Into<String>) -> Fatal {
        Fatal {
            detail: Some(detail.into()),
            ..self
        }
    }

    /// With what follows from it, said where it is printed.
    pub(crate) fn then(self, consequence: &'static str) -> Fatal {
        Fatal {
            consequence: Some(consequence),
            ..self
        }
    }

    /// What failed, without the consequence: the message and its list.
    pub(crate) fn reason(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}:\n{d}", self.message),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(c) = self.consequence {
            write!(f, "; {c}")?;
        }
        match &self.detail {
            Some(d) => write!(f, ":\n{d}"),
            None => Ok(()),
        }
    }
}

/// What every command returns: an exit code for the outcomes the command
/// table names, or a fatal error.
pub(crate) type Outcome = Result<i32, Fatal>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consequence_is_said_after_the_message_and_before_the_list() {
        let f = Fatal::config("invalid configuration").with_detail("a\nb");
        assert_eq!(f.to_string(), "invalid configuration:\na\nb");
        let f = f.then(NOTHING_STARTED);
        assert_eq!(
            f.to_string(),
            "invalid configuration; nothing started:\na\nb"
        );
        assert_eq!(f.reason(), "invalid configuration:\na\nb");
        let f = Fatal::failure("cannot lock x").then(NOTHING_STARTED);
        assert_eq!(f.to_string(), "cannot lock x; nothing started");
        assert_eq!(f.reason(), "cannot lock x");
    }
}
