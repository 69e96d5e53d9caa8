//! Exit codes, as SPEC.md's table gives them.

pub const OK: i32 = 0;
/// `run`: any other fatal error. `status`: supervisor up, child not running.
/// `stop`: the supervisor did not exit in time.
pub const FAILURE: i32 = 1;
/// `status`, `restart`, `reopen-logs`: no supervisor runs.
pub const NOT_RUNNING: i32 = 3;
/// `status`: unreadable state or invalid config.
pub const UNKNOWN: i32 = 4;
/// A bad argument on the command line (what clap exits with, too).
pub const USAGE: i32 = 2;
/// EX_CONFIG from sysexits.h: the configuration is invalid or unusable.
pub const CONFIG: i32 = 78;
