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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fatal {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl Fatal {
    /// Exit 78: the configuration (or a folder it names) cannot be used.
    pub(crate) fn config(message: impl Into<String>) -> Fatal {
        Fatal {
            code: CONFIG,
            message: message.into(),
        }
    }

    /// Exit 1: anything else.
    pub(crate) fn failure(message: impl Into<String>) -> Fatal {
        Fatal {
            code: FAILURE,
            message: message.into(),
        }
    }

    pub(crate) fn with_code(code: i32, message: impl Into<String>) -> Fatal {
        Fatal {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every command returns: an exit code for the outcomes the command
/// table names, or a fatal error.
pub(crate) type Outcome = Result<i32, Fatal>;
