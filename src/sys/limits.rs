//! Resource limits, nice, umask and resident memory: the platform facts
//! behind `[child.limits]`, `child.nice`, `child.umask` and
//! `child.max_memory`.
//!
//! Both systems have `getrlimit`/`setrlimit`, `setpriority` and `umask`;
//! they differ in the type of a resource's number, in the most open files
//! a process may be allowed (Linux: `/proc/sys/fs/nr_open` caps the hard
//! limit; macOS up to 10.15: XNU refuses a soft limit above
//! `kern.maxfilesperproc` with EINVAL, `RLIM_INFINITY` included; since
//! macOS 11 it stores any value and caps use at `kern.maxfilesperproc`,
//! see [`macos_nofile_fit`]) and in how resident memory is
//! read (Linux: `/proc/PID/statm`; macOS: `proc_pidinfo(PROC_PIDTASKINFO)`).
//! The functions ending in `_after_fork` make one system call each and
//! allocate nothing, for the `pre_exec` closure.

use std::io;

use crate::config::{Limit, Resource};

/// The type of a resource's number in `getrlimit`/`setrlimit`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Which = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Which = libc::c_int;

fn which(r: Resource) -> Which {
    match r {
        Resource::Core => libc::RLIMIT_CORE,
        Resource::Cpu => libc::RLIMIT_CPU,
        Resource::Data => libc::RLIMIT_DATA,
        Resource::Fsize => libc::RLIMIT_FSIZE,
        Resource::Memlock => libc::RLIMIT_MEMLOCK,
        Resource::Nofile => libc::RLIMIT_NOFILE,
        Resource::Nproc => libc::RLIMIT_NPROC,
        Resource::Stack => libc::RLIMIT_STACK,
    }
}

/// A resource's soft and hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rlimit {
    pub soft: Limit,
    pub hard: Limit,
}

// rlim_t is u64 on every 64-bit Linux and macOS target, the ones we build.
fn from_raw(v: libc::rlim_t) -> Limit {
    if v == libc::RLIM_INFINITY {
        Limit::Unlimited
    } else {
        Limit::Value(v)
    }
}

fn to_raw(l: Limit) -> libc::rlim_t {
    match l {
        Limit::Unlimited => libc::RLIM_INFINITY,
        // Linux's RLIM_INFINITY is u64::MAX, macOS's i64::MAX: anything
        // from there up means no limit.
        #[allow(clippy::unnecessary_min_or_max)]
        Limit::Value(n) => n.min(libc::RLIM_INFINITY),
    }
}

/// This process's limits for `r` (which a child inherits at fork).
pub(crate) fn rlimit(r: Resource) -> io::Result<Rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a valid, owned struct.
    if unsafe { libc::getrlimit(which(r), &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Rlimit {
        soft: from_raw(lim.rlim_cur),
        hard: from_raw(lim.rlim_max),
    })
}

/// Where the soft open-files limit the supervisor was started with is
/// kept across `reload` (the re-executed image inherits our environment;
/// the child never gets it).
pub(super) const STARTED_NOFILE_ENV: &str = "SUPERVISOR_STARTED_NOFILE";

/// Raise this process's soft open-files limit to what it may have: the
/// hard limit, capped where the system caps it (macOS: XNU refuses a soft
/// limit above `kern.maxfilesperproc`, `RLIM_INFINITY` included; Linux:
/// `fs.nr_open`). Descriptors held by detached helpers then cannot starve
/// the supervisor (launchd starts jobs with 256). Returns the soft limit
/// the supervisor was started with, which the child gets back (a child
/// must not inherit a limit it never asked for: `select()` breaks past
/// 1024): remembered in [`STARTED_NOFILE_ENV`] so a re-executed image
/// gives the same. Call before any thread starts (it sets a variable of
/// our own environment).
pub(crate) fn raise_nofile() -> Option<u64> {
    let started = std::env::var(STARTED_NOFILE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let now = rlimit(Resource::Nofile).ok()?;
    let started = started.or(match now.soft {
        Limit::Value(n) => Some(n),
        Limit::Unlimited => None,
    })?;
    std::env::set_var(STARTED_NOFILE_ENV, started.to_string());
    let cap = nofile_ceiling().map_or(libc::RLIM_INFINITY, |c| c.max);
    let want = to_raw(now.hard).min(cap);
    if to_raw(now.soft) < want {
        let lim = libc::rlimit {
            rlim_cur: want,
            rlim_max: to_raw(now.hard),
        };
        // SAFETY: setrlimit reads one valid struct; failing leaves the
        // limit as it was, which is only less room.
        unsafe { libc::setrlimit(which(Resource::Nofile), &lim) };
    }
    Some(started)
}

/// The soft open-files limit the supervisor was started with (see
/// [`raise_nofile`]), when it raised its own.
pub(crate) fn started_nofile() -> Option<u64> {
    std::env::var(STARTED_NOFILE_ENV).ok()?.parse().ok()
}

/// A `setrlimit` call prepared before fork.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRlimit {
    which: Which,
    lim: libc::rlimit,
}

impl RawRlimit {
    pub(crate) fn new(r: Resource, lim: Rlimit) -> RawRlimit {
        RawRlimit {
            which: which(r),
            lim: libc::rlimit {
                rlim_cur: to_raw(lim.soft),
                rlim_max: to_raw(lim.hard),
            },
        }
    }
}

/// After fork: `setrlimit`; false (errno set) if refused.
///
/// # Safety
/// One system call, no allocation; meant for a `pre_exec` closure.
pub(crate) unsafe fn set_rlimit_after_fork(l: &RawRlimit) -> bool {
    libc::setrlimit(l.which, &l.lim) == 0
}

/// After fork: this process's nice value; false (errno set) if refused
/// (lowering it needs privilege).
///
/// # Safety
/// One system call, no allocation; meant for a `pre_exec` closure.
pub(crate) unsafe fn set_nice_after_fork(nice: libc::c_int) -> bool {
    libc::setpriority(libc::PRIO_PROCESS, 0, nice) == 0
}

/// After fork: this process's umask (it cannot fail).
///
/// # Safety
/// One system call; meant for a `pre_exec` closure.
pub(crate) unsafe fn set_umask_after_fork(mask: libc::mode_t) {
    libc::umask(mask);
}

/// This process's nice value, which a child inherits.
pub(crate) fn nice() -> Option<i32> {
    // getpriority may rightly return -1: only errno tells an error.
    nix::errno::Errno::clear();
    // SAFETY: a plain query of our own priority.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    (n != -1 || nix::errno::Errno::last_raw() == 0).then_some(n)
}

/// This process's umask, which a child inherits. There is no call that
/// only reads it: it is set and put back, so this is for single-threaded
/// moments only (`check-config`, before any thread starts).
pub(crate) fn umask() -> u32 {
    // SAFETY: umask cannot fail; the old mask is restored at once.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        #[allow(clippy::useless_conversion)] // mode_t is u16 on macOS
        u32::from(old)
    }
}

/// The most open files any process may be allowed here, and the name of
/// the setting that says so: above it `setrlimit(RLIMIT_NOFILE)` fails even
/// for root, and "unlimited" is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NofileCeiling {
    pub max: u64,
    pub name: &'static str,
    /// `setrlimit(RLIMIT_NOFILE)` takes a soft limit above `max` (and
    /// "unlimited"), stores it, and the kernel caps use at `max`: macOS 11
    /// and later (xnu-7195). Otherwise a value above `max` is refused.
    pub caps_use: bool,
}

/// What a wanted open-files limit comes to against the system's ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NofileFit {
    /// Taken, and usable, as it is.
    Fits,
    /// Taken, but the process may use at most `max` open files.
    Capped { max: u64 },
    /// `setrlimit` refuses it (EINVAL / EPERM).
    Refused,
}

impl NofileCeiling {
    /// The ceiling of macOS `major` (from `kern.osproductversion`; None
    /// when it cannot be read: then the older, stricter rule) whose
    /// `kern.maxfilesperproc` is `max`.
    #[cfg_attr(not(target_os = "macos"), allow(dead_code))]
    pub(crate) fn macos(major: Option<u32>, max: u64) -> NofileCeiling {
        NofileCeiling {
            max,
            name: "kern.maxfilesperproc",
            caps_use: major.is_some_and(|m| m >= 11),
        }
    }

    /// What asking for `want` open files comes to here.
    pub(crate) fn fit(&self, want: Limit) -> NofileFit {
        let over = match want {
            Limit::Unlimited => true,
            Limit::Value(n) => n > self.max,
        };
        match (over, self.caps_use) {
            (false, _) => NofileFit::Fits,
            (true, true) => NofileFit::Capped { max: self.max },
            (true, false) => NofileFit::Refused,
        }
    }
}

/// The macOS rule, pure: asking for `want` open files on macOS `major`
/// whose `kern.maxfilesperproc` is `maxfilesperproc`. Up to 10.15
/// `setrlimit` refuses more (EINVAL, "unlimited" included); since 11
/// (xnu-7195) it stores the value and the kernel caps use at
/// `maxfilesperproc`.
#[cfg(test)]
pub(crate) fn macos_nofile_fit(major: Option<u32>, want: Limit, maxfilesperproc: u64) -> NofileFit {
    NofileCeiling::macos(major, maxfilesperproc).fit(want)
}

/// The major version in a `kern.osproductversion` ("10.15.7", "14.4").
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(super) fn product_major(version: &str) -> Option<u32> {
    let major = version
        .trim_matches(char::from(0))
        .trim()
        .split('.')
        .next()?;
    major.parse().ok().filter(|m| *m > 0)
}

/// Whether this process may raise a hard limit: root on macOS; on Linux
/// whoever has CAP_SYS_RESOURCE in its effective set (root in a container
/// often has not).
pub(crate) fn may_raise_hard_limits() -> bool {
    imp::may_raise_hard_limits()
}

/// [`NofileCeiling`] of this system, when it can be read.
pub(crate) fn nofile_ceiling() -> Option<NofileCeiling> {
    imp::nofile_ceiling()
}

#[cfg(target_os = "linux")]
mod imp {
    use super::NofileCeiling;

    /// From <linux/capability.h>.
    const CAP_SYS_RESOURCE: u32 = 24;

    pub(super) fn may_raise_hard_limits() -> bool {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return nix::unistd::Uid::effective().is_root();
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
    }

    pub(super) fn nofile_ceiling() -> Option<NofileCeiling> {
        let text = std::fs::read_to_string("/proc/sys/fs/nr_open").ok()?;
        Some(NofileCeiling {
            max: text.trim().parse().ok()?,
            name: "fs.nr_open",
            caps_use: false,
        })
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use super::NofileCeiling;

    pub(super) fn may_raise_hard_limits() -> bool {
        nix::unistd::Uid::effective().is_root()
    }

    pub(super) fn nofile_ceiling() -> Option<NofileCeiling> {
        let n = crate::sys::macos::sysctl_int(c"kern.maxfilesperproc").filter(|n| *n > 0)?;
        let major = crate::sys::macos::product_version()
            .as_deref()
            .and_then(super::product_major);
        Some(NofileCeiling::macos(major, n as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_convert_both_ways() {
        let table = [
            Limit::Unlimited,
            Limit::Value(0),
            Limit::Value(8192),
            Limit::Value(1 << 40),
        ];
        for l in table {
            assert_eq!(from_raw(to_raw(l)), l, "{l:?}");
        }
        // Beyond what the type holds is no limit.
        assert_eq!(from_raw(to_raw(Limit::Value(u64::MAX))), Limit::Unlimited);
    }

    #[test]
    fn macos_nofile_rule_by_version() {
        use Limit::{Unlimited as Inf, Value as V};
        use NofileFit::*;
        // (major, wanted, kern.maxfilesperproc, what comes of it)
        let table = [
            (Some(10), V(1000), 24576, Fits),
            (Some(10), V(24576), 24576, Fits),
            (Some(10), V(24577), 24576, Refused),
            (Some(10), Inf, 24576, Refused),
            (None, V(100_000), 24576, Refused),
            (None, V(10), 24576, Fits),
            (Some(11), V(24576), 24576, Fits),
            (Some(11), V(100_000), 24576, Capped { max: 24576 }),
            (Some(11), Inf, 24576, Capped { max: 24576 }),
            (Some(14), V(1 << 20), 61440, Capped { max: 61440 }),
            (Some(15), V(8192), 61440, Fits),
        ];
        for (major, want, max, fit) in table {
            assert_eq!(
                macos_nofile_fit(major, want, max),
                fit,
                "{major:?} {want:?} {max}"
            );
        }
    }

    #[test]
    fn product_versions_parse() {
        let table = [
            ("10.15.7", Some(10)),
            ("11.0", Some(11)),
            ("14.4.1\0", Some(14)),
            ("15", Some(15)),
            ("", None),
            ("x.1", None),
            ("0.1", None),
        ];
        for (text, want) in table {
            assert_eq!(product_major(text), want, "{text:?}");
        }
    }

    #[test]
    fn our_own_facts_are_readable() {
        for r in Resource::ALL {
            let l = rlimit(r).unwrap();
            assert!(
                matches!((l.soft, l.hard), (_, Limit::Unlimited))
                    || matches!((l.soft, l.hard), (Limit::Value(s), Limit::Value(h)) if s <= h),
                "{r:?}: {l:?}"
            );
        }
        assert!(nice().is_some());
        assert!(umask() <= 0o777);
        let me = std::process::id() as i32;
        assert!(crate::sys::resident_bytes(me).is_some_and(|b| b > 0));
        assert_eq!(crate::sys::resident_bytes(-1), None);
        assert!(nofile_ceiling().is_some_and(|c| c.max > 0));
    }
}
