//! The child's process attributes: `child.umask`, `child.nice` and
//! `[child.limits]`, planned here and set by `child` between fork and exec.
//!
//! [`plan`] is pure: from what the config asks for ([`Wanted`]) and the
//! facts of this system ([`Facts`]: the supervisor's own limits, which the
//! child inherits at fork; whether a hard limit may be raised; the most open
//! files a process may have) it decides the `setrlimit` calls the child
//! makes, or refuses with every problem, each naming its key. `run` and
//! `check-config` refuse such a config with 78 (`commands::preflight`), and
//! each spawn plans again from the limits of that moment. The configured
//! values are soft limits: a hard limit is only ever raised, only by root,
//! and only as far as a soft one needs. The supervisor's own soft
//! open-files limit is raised at start (`sys::raise_nofile`); a child
//! without `nofile` gets the one the supervisor started with (`child`).

use std::collections::BTreeMap;

use crate::config::{ChildSection, Limit, LimitUnit, Resource};
use crate::sys::{NofileCeiling, NofileFit, Rlimit};

/// What the config asks the child to get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) umask: Option<u32>,
    pub(crate) nice: Option<i32>,
    pub(crate) limits: BTreeMap<Resource, Limit>,
}

impl Wanted {
    /// `other_user`: the child runs as another user (`child.user`), whose
    /// umask is 022 unless `child.umask` says otherwise, not whatever the
    /// supervisor was started with (a 000 would let anyone write the
    /// child's files).
    pub(crate) fn of(child: &ChildSection, other_user: bool) -> Wanted {
        Wanted {
            umask: child.umask.or(other_user.then_some(OTHER_USER_UMASK)),
            nice: child.nice,
            limits: child.limits.clone(),
        }
    }
}

/// Another user's child's umask unless `child.umask` is set.
pub(crate) const OTHER_USER_UMASK: u32 = 0o022;

/// What the system allows, as far as the plan needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The supervisor's limits, which the child inherits at fork.
    pub(crate) current: BTreeMap<Resource, Rlimit>,
    /// Only root (on Linux: CAP_SYS_RESOURCE) may raise a hard limit;
    /// anyone may lower one, or set a soft limit anywhere up to it.
    pub(crate) may_raise_hard: bool,
    /// The most open files any process may be allowed (Linux: the hard
    /// limit's cap; macOS: the soft limit's), when it can be read.
    pub(crate) nofile_ceiling: Option<NofileCeiling>,
}

impl Facts {
    /// The facts of this process and system now.
    pub(crate) fn here() -> Result<Facts, String> {
        let current = Resource::ALL
            .into_iter()
            .map(|r| {
                crate::sys::rlimit(r)
                    .map(|l| (r, l))
                    .map_err(|e| format!("cannot read the {} limit (getrlimit): {e}", r.name()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Facts {
            current,
            may_raise_hard: crate::sys::may_raise_hard_limits(),
            nofile_ceiling: crate::sys::nofile_ceiling(),
        })
    }
}

/// One configured limit, as the child sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitStep {
    pub(crate) resource: Resource,
    /// What the supervisor has, and the child would otherwise inherit.
    pub(crate) inherited: Rlimit,
    /// Set first, while still privileged: the hard limit raised to let the
    /// soft one through, the soft limit unchanged.
    pub(crate) raise: Option<Rlimit>,
    /// Set after the privilege drop: the configured soft limit.
    pub(crate) set: Rlimit,
}

/// Everything the child sets before exec, beyond its identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) limits: Vec<LimitStep>,
    pub(crate) umask: Option<u32>,
    pub(crate) nice: Option<i32>,
}

/// A configured value this system will not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The key, as written in the file: `child.limits.nofile`.
    pub(crate) key: String,
    pub(crate) why: String,
}

/// "No limit" is above every number.
fn above(a: Limit, b: Limit) -> bool {
    match (a, b) {
        (_, Limit::Unlimited) => false,
        (Limit::Unlimited, Limit::Value(_)) => true,
        (Limit::Value(a), Limit::Value(b)) => a > b,
    }
}

/// Decide what the child sets, or say every configured value this system
/// refuses.
pub(crate) fn plan(wanted: &Wanted, facts: &Facts) -> Result<Plan, Vec<Refusal>> {
    let mut refusals = Vec::new();
    let mut limits = Vec::new();
    for (&resource, &want) in &wanted.limits {
        let key = format!("child.limits.{}", resource.name());
        let mut refuse = |why: String| {
            refusals.push(Refusal {
                key: key.clone(),
                why,
            })
        };
        let Some(&inherited) = facts.current.get(&resource) else {
            refuse("its current limit cannot be read here".into());
            continue;
        };
        if let (Resource::Nofile, Some(ceiling)) = (resource, &facts.nofile_ceiling) {
            let NofileCeiling { max, name, .. } = ceiling;
            // Above the ceiling: refused (Linux, macOS up to 10.15), or
            // stored and capped in use (macOS 11+: `report` says so).
            match (want, ceiling.fit(want)) {
                (_, NofileFit::Fits | NofileFit::Capped { .. }) => {}
                (Limit::Unlimited, NofileFit::Refused) => {
                    refuse(format!(
                        "\"unlimited\" is refused for open files on this system; \
                         the most it allows a process is {name} = {max}: write a number"
                    ));
                    continue;
                }
                (Limit::Value(n), NofileFit::Refused) => {
                    refuse(format!(
                        "{n} is above {name} ({max}), the most open files this system allows a process"
                    ));
                    continue;
                }
            }
        }
        let step = if above(want, inherited.hard) {
            if !facts.may_raise_hard {
                refuse(format!(
                    "{} is above the hard limit here ({}), which this supervisor may not raise \
                     (that takes root; on Linux, CAP_SYS_RESOURCE); ask for at most that, \
                     or raise the hard limit where the supervisor is started",
                    show(resource, want),
                    show(resource, inherited.hard)
                ));
                continue;
            }
            LimitStep {
                resource,
                inherited,
                raise: Some(Rlimit {
                    soft: inherited.soft,
                    hard: want,
                }),
                set: Rlimit {
                    soft: want,
                    hard: want,
                },
            }
        } else {
            LimitStep {
                resource,
                inherited,
                raise: None,
                set: Rlimit {
                    soft: want,
                    hard: inherited.hard,
                },
            }
        };
        limits.push(step);
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    Ok(Plan {
        limits,
        umask: wanted.umask,
        nice: wanted.nice,
    })
}

/// A limit for people: "8192", "64MiB", "unlimited".
pub(crate) fn show(resource: Resource, limit: Limit) -> String {
    let n = match limit {
        Limit::Unlimited => return "unlimited".into(),
        Limit::Value(n) => n,
    };
    if resource.unit() != LimitUnit::Bytes {
        return n.to_string();
    }
    [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        .into_iter()
        .find(|(unit, _)| n > 0 && n.is_multiple_of(*unit))
        .map_or_else(
            || n.to_string(),
            |(unit, name)| format!("{}{name}", n / unit),
        )
}

/// The words a failed step after fork is reported with, before the
/// system's reason: "child.limits.nofile = 8192: setrlimit".
pub(crate) fn step_label(step: &LimitStep, raising: bool) -> String {
    let value = show(step.resource, step.set.soft);
    match raising {
        true => format!(
            "child.limits.{} = {value}: setrlimit (raising the hard limit, as root)",
            step.resource.name()
        ),
        false => format!("child.limits.{} = {value}: setrlimit", step.resource.name()),
    }
}

/// What the supervisor itself has and the child would otherwise inherit,
/// for `check-config`'s report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inherited {
    pub(crate) umask: u32,
    pub(crate) nice: Option<i32>,
}

/// Comment lines for `check-config`: every attribute the child gets here,
/// configured or inherited, so an operator sees what `run` would set.
pub(crate) fn report(plan: &Plan, facts: &Facts, inherited: Inherited) -> String {
    let mut out =
        String::from("\n# The child's process attributes, as `run` would set them here:\n");
    let umask = match plan.umask {
        Some(m) if m == inherited.umask => format!("{m:03o}"),
        Some(m) => format!("{m:03o} (the supervisor's: {:03o})", inherited.umask),
        None => format!("inherited: {:03o}", inherited.umask),
    };
    out.push_str(&format!("# child.umask: {umask}\n"));
    let theirs = inherited
        .nice
        .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    let nice = match plan.nice {
        Some(n) if Some(n) == inherited.nice => n.to_string(),
        Some(n) => format!("{n} (the supervisor's: {theirs})"),
        None => format!("inherited: {theirs}"),
    };
    out.push_str(&format!("# child.nice: {nice}\n"));
    for r in Resource::ALL {
        let step = plan.limits.iter().find(|s| s.resource == r);
        let line = match (step, facts.current.get(&r)) {
            (Some(s), _) => {
                let hard = show(r, s.inherited.hard);
                match s.raise {
                    Some(_) => format!(
                        "soft {} (hard here: {hard}; raised to {} first, as root)",
                        show(r, s.set.soft),
                        show(r, s.set.hard)
                    ),
                    None => format!("soft {} (hard here: {hard})", show(r, s.set.soft)),
                }
            }
            (None, Some(l)) => format!(
                "inherited: soft {} (hard here: {})",
                show(r, l.soft),
                show(r, l.hard)
            ),
            (None, None) => "inherited (cannot be read here)".into(),
        };
        let capped = match (r, step, &facts.nofile_ceiling) {
            (Resource::Nofile, Some(s), Some(c)) => match c.fit(s.set.soft) {
                NofileFit::Capped { max } => format!(
                    "; this system stores it but lets a process use at most {max} open files \
                     ({}), so that is what the child gets",
                    c.name
                ),
                _ => String::new(),
            },
            _ => String::new(),
        };
        out.push_str(&format!("# child.limits.{}: {line}{capped}\n", r.name()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Limit::{Unlimited as Inf, Value as V};

    fn lim(soft: Limit, hard: Limit) -> Rlimit {
        Rlimit { soft, hard }
    }

    fn facts(root: bool, ceiling: Option<u64>) -> Facts {
        Facts {
            current: BTreeMap::from([
                (Resource::Nofile, lim(V(1024), V(4096))),
                (Resource::Core, lim(V(0), Inf)),
                (Resource::Stack, lim(V(8 << 20), Inf)),
                (Resource::Memlock, lim(V(64 << 10), V(64 << 10))),
            ]),
            may_raise_hard: root,
            nofile_ceiling: ceiling.map(|max| NofileCeiling {
                max,
                name: "fs.nr_open",
                caps_use: false,
            }),
        }
    }

    fn want(limits: &[(Resource, Limit)]) -> Wanted {
        Wanted {
            umask: Some(0o027),
            nice: Some(5),
            limits: limits.iter().copied().collect(),
        }
    }

    #[test]
    fn limits_within_the_hard_one_are_set_as_soft_limits() {
        use Resource::*;
        // (resource, wanted, what the child sets)
        let table = [
            (Nofile, V(8), lim(V(8), V(4096))),
            (Nofile, V(4096), lim(V(4096), V(4096))),
            (Core, Inf, lim(Inf, Inf)),
            (Core, V(1 << 30), lim(V(1 << 30), Inf)),
            (Stack, V(4 << 20), lim(V(4 << 20), Inf)),
        ];
        for (r, w, set) in table {
            for root in [false, true] {
                let p = plan(&want(&[(r, w)]), &facts(root, Some(1 << 20))).unwrap();
                assert_eq!(p.limits.len(), 1);
                assert_eq!(p.limits[0].set, set, "{r:?} {w:?} root={root}");
                assert_eq!(p.limits[0].raise, None, "{r:?} {w:?} root={root}");
                assert_eq!((p.umask, p.nice), (Some(0o027), Some(5)));
            }
        }
    }

    #[test]
    fn root_raises_the_hard_limit_first_and_no_one_else_may() {
        use Resource::*;
        // (resource, wanted, the raise, then the set)
        let table = [
            (
                Nofile,
                V(8192),
                lim(V(1024), V(8192)),
                lim(V(8192), V(8192)),
            ),
            (
                Memlock,
                V(1 << 20),
                lim(V(64 << 10), V(1 << 20)),
                lim(V(1 << 20), V(1 << 20)),
            ),
            (Memlock, Inf, lim(V(64 << 10), Inf), lim(Inf, Inf)),
        ];
        for (r, w, raise, set) in table {
            let p = plan(&want(&[(r, w)]), &facts(true, Some(1 << 20))).unwrap();
            assert_eq!(p.limits[0].raise, Some(raise), "{r:?} {w:?}");
            assert_eq!(p.limits[0].set, set, "{r:?} {w:?}");
            let refused = plan(&want(&[(r, w)]), &facts(false, Some(1 << 20))).unwrap_err();
            assert_eq!(refused.len(), 1);
            assert_eq!(refused[0].key, format!("child.limits.{}", r.name()));
            assert!(
                refused[0].why.contains("above the hard limit here")
                    && refused[0].why.contains("may not raise"),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn open_files_stop_at_the_system_ceiling_even_for_root() {
        use Resource::*;
        for root in [false, true] {
            // (wanted, words of the refusal)
            let table: [(Limit, &[&str]); 2] = [
                (Inf, &["\"unlimited\" is refused", "fs.nr_open = 5000"]),
                (V(5001), &["5001 is above fs.nr_open (5000)"]),
            ];
            for (w, words) in table {
                let refused = plan(&want(&[(Nofile, w)]), &facts(root, Some(5000))).unwrap_err();
                for word in words {
                    assert!(refused[0].why.contains(word), "{w:?}: {refused:?}");
                }
            }
        }
        // Without a known ceiling only the hard limit counts.
        assert!(plan(&want(&[(Nofile, V(4096))]), &facts(false, None)).is_ok());
        // Every problem at once.
        let all = plan(
            &want(&[(Nofile, Inf), (Memlock, V(1 << 20))]),
            &facts(false, Some(5000)),
        )
        .unwrap_err();
        let keys: Vec<&str> = all.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["child.limits.memlock", "child.limits.nofile"]);
    }

    #[test]
    fn open_files_above_maxfilesperproc_are_capped_on_macos_11_and_said() {
        use Resource::*;
        let mac = |major| Facts {
            nofile_ceiling: Some(NofileCeiling::macos(Some(major), 5000)),
            ..facts(true, None)
        };
        let inherited = Inherited {
            umask: 0o022,
            nice: Some(0),
        };
        for w in [V(8000), Inf] {
            // macOS 10.15: refused, as before.
            let refused = plan(&want(&[(Nofile, w)]), &mac(10)).unwrap_err();
            assert!(
                refused[0].why.contains("kern.maxfilesperproc"),
                "{refused:?}"
            );
            // macOS 11+: taken; check-config says what the child gets.
            let p = plan(&want(&[(Nofile, w)]), &mac(11)).unwrap();
            assert_eq!(p.limits[0].set, lim(w, w), "{w:?}");
            let text = report(&p, &mac(11), inherited);
            assert!(
                text.contains("use at most 5000 open files (kern.maxfilesperproc)"),
                "{text}"
            );
        }
        // Within the ceiling nothing more is said.
        let p = plan(&want(&[(Nofile, V(4096))]), &mac(14)).unwrap();
        assert!(!report(&p, &mac(14), inherited).contains("at most"));
    }

    #[test]
    fn unset_keys_plan_nothing() {
        let p = plan(&Wanted::default(), &facts(false, None)).unwrap();
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn words_for_limits() {
        use Resource::*;
        let table = [
            (Nofile, V(8192), "8192"),
            (Cpu, V(3600), "3600"),
            (Stack, V(8 << 20), "8MiB"),
            (Data, V(3 << 30), "3GiB"),
            (Memlock, V(64 << 10), "64KiB"),
            (Fsize, V(1_000_001), "1000001"),
            (Core, V(0), "0"),
            (Core, Inf, "unlimited"),
        ];
        for (r, l, want) in table {
            assert_eq!(show(r, l), want);
        }
    }

    #[test]
    fn check_config_reports_every_attribute() {
        use Resource::*;
        let f = facts(true, Some(1 << 20));
        let p = plan(&want(&[(Nofile, V(8192)), (Core, V(0))]), &f).unwrap();
        let text = report(
            &p,
            &f,
            Inherited {
                umask: 0o022,
                nice: Some(0),
            },
        );
        for line in [
            "# child.umask: 027 (the supervisor's: 022)",
            "# child.nice: 5 (the supervisor's: 0)",
            "# child.limits.nofile: soft 8192 (hard here: 4096; raised to 8192 first, as root)",
            "# child.limits.core: soft 0 (hard here: unlimited)",
            "# child.limits.stack: inherited: soft 8MiB (hard here: unlimited)",
            "# child.limits.cpu: inherited (cannot be read here)",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        // Every line is a TOML comment (or blank), so the output still parses.
        assert!(text.lines().all(|l| l.is_empty() || l.starts_with('#')));
        let none = report(
            &Plan::default(),
            &f,
            Inherited {
                umask: 0o022,
                nice: None,
            },
        );
        assert!(none.contains("# child.umask: inherited: 022\n"), "{none}");
        assert!(
            none.contains("# child.nice: inherited: unknown\n"),
            "{none}"
        );
    }
}
