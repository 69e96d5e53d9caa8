//! What an earlier supervisor left running. A supervisor that died without
//! stopping its child (a SIGKILL; on macOS there is no PDEATHSIG) leaves it
//! holding the port and the service's shared state. The new supervisor
//! adopts it as something to stop (`Machine::adopt`) before it binds, so two
//! children never run at once, but only if it is provably that
//! supervisor's: nobody else's process is ever signalled.
//!
//! The system is asked through [`Facts`], so the rule is table-tested with
//! made-up processes.

use nix::unistd::Pid;

use crate::state::Record;
use crate::sys;

/// What the orphan check asks of the system.
pub(crate) trait Facts {
    fn boot_id(&self) -> Option<String>;
    fn is_alive(&self, pid: i32) -> bool;
    fn start_time(&self, pid: i32) -> Option<u64>;
    /// Live members of a process group.
    fn group_members(&self, pgid: i32) -> Vec<i32>;
    fn session(&self, pid: i32) -> Option<i32>;
    /// The ids of the sockets listening on TCP `port`.
    fn listening(&self, port: u16) -> Vec<u64>;
    /// The processes, other than us, holding socket `id`.
    fn holders(&self, id: u64) -> Vec<i32>;
    /// This process.
    fn me(&self) -> i32 {
        std::process::id() as i32
    }
}

/// The real answers.
pub(crate) struct System;

impl Facts for System {
    fn boot_id(&self) -> Option<String> {
        sys::boot_id()
    }
    fn is_alive(&self, pid: i32) -> bool {
        sys::is_alive(pid)
    }
    fn start_time(&self, pid: i32) -> Option<u64> {
        sys::process_start_time(pid)
    }
    fn group_members(&self, pgid: i32) -> Vec<i32> {
        sys::group_members(pgid)
    }
    fn session(&self, pid: i32) -> Option<i32> {
        nix::unistd::getsid(Some(Pid::from_raw(pid)))
            .ok()
            .map(Pid::as_raw)
    }
    fn listening(&self, port: u16) -> Vec<u64> {
        sys::tcp_listeners(port)
            .map(|l| l.into_iter().map(|l| l.socket).collect())
            .unwrap_or_default()
    }
    fn holders(&self, id: u64) -> Vec<i32> {
        sys::socket_holders(id, sys::Scope::All)
    }
}

/// The supervisor that wrote `prev`, when it is still alive (same pid,
/// start time and boot) and is not this process: a supervisor that lost
/// its lock (its state folder was removed and made again) but still runs
/// its service. What it runs is never an earlier supervisor's leftovers.
pub(crate) fn live_supervisor(prev: &Record, facts: &impl Facts) -> Option<i32> {
    let s = prev.supervisor.as_ref()?;
    let recorded_boot = s.boot_id.as_deref()?;
    if facts.boot_id().as_deref() != Some(recorded_boot) || s.pid == facts.me() {
        return None;
    }
    let started = s.start_time?;
    (facts.is_alive(s.pid) && facts.start_time(s.pid) == Some(started)).then_some(s.pid)
}

/// An earlier supervisor's child, or what is left of its process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leftovers {
    pub(crate) pgid: i32,
    /// The child itself, when it is still alive: pid and start time.
    pub(crate) leader: Option<(i32, u64)>,
}

/// Whether the child named by an earlier supervisor's record (or its
/// leftovers) is still alive and that supervisor's, and nobody else's;
/// never while that supervisor itself is alive ([`live_supervisor`]).
/// Records from before a reboot name nothing of ours. The leader counts if
/// its pid *and* start time match. A group whose leader is gone counts only
/// through a member that started after the child did and still sits in the
/// recorded session: the child's own (its pid; a record of an older version
/// names the supervisor's). A stranger's group that took the id later in
/// another session does not count. While any of the child's group or
/// session lives, the kernel does not hand its pid out again, so a stranger
/// can only own the id once every leftover is gone.
pub(crate) fn find(prev: &Record, facts: &impl Facts) -> Option<Leftovers> {
    if live_supervisor(prev, facts).is_some() {
        return None;
    }
    let child = prev.child.as_ref()?;
    let pgid = child.pgid.filter(|g| *g > 1)?;
    let recorded_boot = prev.supervisor.as_ref()?.boot_id.as_deref()?;
    if facts.boot_id().as_deref() != Some(recorded_boot) {
        return None;
    }
    let started = child.start_time?;
    if let Some(pid) = child.pid {
        if facts.is_alive(pid) {
            let ours = pid == pgid && facts.start_time(pid) == Some(started);
            return ours.then_some(Leftovers {
                pgid,
                leader: Some((pid, started)),
            });
        }
    }
    if facts.is_alive(pgid) {
        return None; // a live leader that is not our child: someone else's group
    }
    let sid = child.sid?;
    let ours = facts.group_members(pgid).into_iter().any(|m| {
        facts.start_time(m).is_some_and(|t| t >= started) && facts.session(m) == Some(sid)
    });
    ours.then_some(Leftovers { pgid, leader: None })
}

/// The second child of a handover an earlier supervisor was in the middle
/// of (`handover.second` in its record), by the same rule as [`find`].
pub(crate) fn find_second(prev: &Record, facts: &impl Facts) -> Option<Leftovers> {
    let g = prev.handover.as_ref()?.second?;
    let child = prev.child.clone().map(|c| crate::state::ChildInfo {
        pid: Some(g.pgid),
        pgid: Some(g.pgid),
        start_time: g.start_time,
        sid: g.sid,
        ..c
    })?;
    let as_child = Record {
        child: Some(child),
        ..prev.clone()
    };
    find(&as_child, facts)
}

/// The processes that still hold an earlier supervisor's listening socket
/// (a daemonized grandchild of its child, a helper that left the group):
/// they serve our port and are ours. Only on the same boot, and only while
/// that socket still listens on `port` (an id of a closed socket may name
/// another socket later).
pub(crate) fn socket_holders(prev: &Record, port: u16, facts: &impl Facts) -> Vec<i32> {
    if live_supervisor(prev, facts).is_some() {
        return Vec::new();
    }
    let recorded_boot = prev.supervisor.as_ref().and_then(|s| s.boot_id.as_deref());
    let id = prev.listen.as_ref().and_then(|l| l.socket_id);
    match (recorded_boot, id) {
        (Some(boot), Some(id))
            if facts.boot_id().as_deref() == Some(boot) && facts.listening(port).contains(&id) =>
        {
            facts.holders(id)
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ChildInfo, SupervisorInfo};
    use std::collections::HashMap;

    /// (pid, start time, process group, session) of a live process.
    type Proc = (i32, u64, i32, i32);

    /// A made-up machine.
    struct Fake {
        boot: &'static str,
        procs: Vec<Proc>,
    }

    impl Facts for Fake {
        fn boot_id(&self) -> Option<String> {
            Some(self.boot.into())
        }
        fn is_alive(&self, pid: i32) -> bool {
            self.procs.iter().any(|p| p.0 == pid)
        }
        fn start_time(&self, pid: i32) -> Option<u64> {
            self.procs.iter().find(|p| p.0 == pid).map(|p| p.1)
        }
        fn group_members(&self, pgid: i32) -> Vec<i32> {
            self.procs
                .iter()
                .filter(|p| p.2 == pgid)
                .map(|p| p.0)
                .collect()
        }
        fn session(&self, pid: i32) -> Option<i32> {
            self.procs.iter().find(|p| p.0 == pid).map(|p| p.3)
        }
        fn listening(&self, port: u16) -> Vec<u64> {
            match port {
                8420 => vec![77],
                _ => vec![],
            }
        }
        fn holders(&self, id: u64) -> Vec<i32> {
            match id {
                77 => vec![300, 301],
                _ => vec![],
            }
        }
    }

    /// A record of child 100 (group 100, started at 500, session 50),
    /// written on boot "b1".
    fn record(pid: Option<i32>) -> Record {
        Record {
            state: "running".into(),
            supervisor: Some(SupervisorInfo {
                pid: 40,
                started_at: "2026-11-26T08:00:00Z".into(),
                start_time: Some(1),
                version: None,
                boot_id: Some("b1".into()),
                reloads: 0,
                executable: None,
                reload_error: None,
                stop_timeout_ms: None,
                config: None,
                restart: None,
                start_timeout_ms: None,
                restart_answers: None,
            }),
            child: Some(ChildInfo {
                pid,
                pgid: Some(100),
                start_time: Some(500),
                sid: Some(50),
                ready: true,
                ..ChildInfo::default()
            }),
            ..Record::not_running()
        }
    }

    #[test]
    fn only_provably_ours() {
        let leader = Some(Leftovers {
            pgid: 100,
            leader: Some((100, 500)),
        });
        let group = Some(Leftovers {
            pgid: 100,
            leader: None,
        });
        // (what the record names, the live processes, boot, expected)
        type Case = (Option<i32>, Vec<Proc>, &'static str, Option<Leftovers>);
        let table: Vec<Case> = vec![
            (Some(100), vec![(100, 500, 100, 50)], "b1", leader),
            // Rebooted since: nothing is ours.
            (Some(100), vec![(100, 500, 100, 50)], "b2", None),
            // The pid was reused (another start time).
            (Some(100), vec![(100, 900, 100, 50)], "b1", None),
            // Leader gone; a member of its group started after it, same session.
            (Some(100), vec![(101, 600, 100, 50)], "b1", group),
            (None, vec![(101, 600, 100, 50)], "b1", group),
            // ... in another session: a stranger's group that reused the id.
            (Some(100), vec![(101, 600, 100, 77)], "b1", None),
            // ... started before the child: not its descendant.
            (Some(100), vec![(101, 400, 100, 50)], "b1", None),
            // The group id belongs to a live leader that is not our child.
            (
                None,
                vec![(100, 900, 100, 50), (101, 950, 100, 50)],
                "b1",
                None,
            ),
            // Nothing left.
            (Some(100), vec![(7, 1, 7, 7)], "b1", None),
        ];
        for (i, (pid, procs, boot, want)) in table.into_iter().enumerate() {
            let fake = Fake { boot, procs };
            assert_eq!(find(&record(pid), &fake), want, "case {i}");
        }
        // Today's records name the child's own session (its pid): a member
        // left in it counts, one that moved to a session of its own not.
        let mut own = record(None);
        if let Some(c) = own.child.as_mut() {
            c.sid = Some(100);
        }
        let fake = |sid| Fake {
            boot: "b1",
            procs: vec![(101, 600, 100, sid)],
        };
        assert_eq!(find(&own, &fake(100)), group);
        assert_eq!(find(&own, &fake(50)), None);
    }

    #[test]
    fn a_live_supervisor_leaves_nothing_over() {
        // The supervisor that wrote the record (pid 40, started at 1) is
        // alive: its child and its socket's holders are its own.
        let fake = Fake {
            boot: "b1",
            procs: vec![(40, 1, 40, 40), (100, 500, 100, 50)],
        };
        let mut r = record(Some(100));
        r.listen = Some(crate::state::ListenInfo {
            address: "127.0.0.1:8420".into(),
            bound: true,
            name: None,
            inherited: false,
            socket_id: Some(77),
        });
        assert_eq!(live_supervisor(&r, &fake), Some(40));
        assert_eq!(find(&r, &fake), None);
        assert_eq!(socket_holders(&r, 8420, &fake), [] as [i32; 0]);
        // Its pid reused by another process: it is gone.
        let fake = Fake {
            boot: "b1",
            procs: vec![(40, 2, 40, 40), (100, 500, 100, 50)],
        };
        assert_eq!(live_supervisor(&r, &fake), None);
        assert!(find(&r, &fake).is_some());
        assert_eq!(socket_holders(&r, 8420, &fake), [300, 301]);
    }

    #[test]
    fn incomplete_records_name_nothing() {
        let fake = Fake {
            boot: "b1",
            procs: vec![(100, 500, 100, 50), (101, 600, 100, 50)],
        };
        type Edit = Box<dyn Fn(&mut Record)>;
        let mut edits: HashMap<&str, Edit> = HashMap::new();
        edits.insert("no child", Box::new(|r| r.child = None));
        edits.insert("no supervisor", Box::new(|r| r.supervisor = None));
        edits.insert(
            "no boot id",
            Box::new(|r| {
                if let Some(s) = r.supervisor.as_mut() {
                    s.boot_id = None
                }
            }),
        );
        edits.insert(
            "no pgid",
            Box::new(|r| {
                if let Some(c) = r.child.as_mut() {
                    c.pgid = None
                }
            }),
        );
        edits.insert(
            "pgid 1",
            Box::new(|r| {
                if let Some(c) = r.child.as_mut() {
                    c.pgid = Some(1)
                }
            }),
        );
        edits.insert(
            "no start time",
            Box::new(|r| {
                if let Some(c) = r.child.as_mut() {
                    c.start_time = None
                }
            }),
        );
        for (name, edit) in edits {
            let mut r = record(Some(100));
            edit(&mut r);
            assert_eq!(find(&r, &fake), None, "{name}");
        }
        // Without a session the leaderless group cannot be proven ours.
        let fake = Fake {
            boot: "b1",
            procs: vec![(101, 600, 100, 50)],
        };
        let mut r = record(None);
        if let Some(c) = r.child.as_mut() {
            c.sid = None;
        }
        assert_eq!(find(&r, &fake), None);
    }

    #[test]
    fn holders_of_the_earlier_socket_while_it_still_listens() {
        let with = |boot: &'static str, id: Option<u64>, port: u16| {
            let mut r = record(Some(100));
            r.listen = Some(crate::state::ListenInfo {
                address: "127.0.0.1:8420".into(),
                bound: true,
                name: None,
                inherited: false,
                socket_id: id,
            });
            let fake = Fake {
                boot,
                procs: vec![],
            };
            socket_holders(&r, port, &fake)
        };
        assert_eq!(with("b1", Some(77), 8420), [300, 301]);
        assert_eq!(with("b2", Some(77), 8420), [] as [i32; 0], "another boot");
        assert_eq!(
            with("b1", Some(78), 8420),
            [] as [i32; 0],
            "closed: not listening"
        );
        assert_eq!(
            with("b1", Some(77), 9000),
            [] as [i32; 0],
            "not on our port"
        );
        assert_eq!(with("b1", None, 8420), [] as [i32; 0], "not recorded");
    }
}
