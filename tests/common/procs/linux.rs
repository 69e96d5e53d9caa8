//! Linux: every answer from `/proc`.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

/// `/proc/PID/stat`, split after the command name (which may hold spaces
/// and parentheses): field 3 (state) is the first word.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

pub fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let f = stat_fields(pid)?;
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let pgrp = f.get(2)?.parse().ok()?;
    Some((state, ppid, pgrp))
}

pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// NUL-separated strings of a /proc file.
fn nul_list(path: String) -> Vec<String> {
    let raw = fs::read(path).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

pub fn cmdline(pid: i32) -> Vec<String> {
    nul_list(format!("/proc/{pid}/cmdline"))
}

pub fn environ(pid: i32) -> Vec<String> {
    nul_list(format!("/proc/{pid}/environ"))
}

/// Candidates for a group's members (the caller checks each one's group).
pub fn group_pids(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some((_, _, g)) if g == pgid))
        .collect()
}

pub fn fd_targets(pid: i32) -> Vec<String> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let t = fs::read_link(e.ok()?.path()).ok()?;
        Some(t.to_string_lossy().into_owned())
    })
    .collect()
}

/// Listening sockets from /proc/net/tcp*, matched by inode against the
/// process's `socket:[INODE]` descriptors.
pub fn listening_ports(pid: i32) -> Vec<u16> {
    let mut by_inode = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let w: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode (10th column)
            if w.len() > 9 && w[3] == "0A" {
                let port = w[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                if let Some(port) = port {
                    by_inode.insert(w[9].to_string(), port);
                }
            }
        }
    }
    fd_targets(pid)
        .iter()
        .filter_map(|t| {
            t.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .filter_map(|inode| by_inode.get(&inode).copied())
        .collect()
}

pub fn rss_kib(pid: i32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Field 22 of /proc/PID/stat: clock ticks since boot.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    // utime and stime, fields 14 and 15, in clock ticks.
    let f = stat_fields(pid)?;
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a constant.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    (hz > 0).then(|| Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

pub fn boot_time() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}
