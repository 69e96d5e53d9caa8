//! What a process costs, read from /proc (the figures are measured on
//! Linux), and signals by pid or process group.

use std::fs;

pub(crate) fn kill(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a pid this bench started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

pub(crate) fn killpg(pgid: u32, sig: i32) {
    // SAFETY: plain killpg(2) on a process group this bench created.
    unsafe {
        libc::killpg(pgid as i32, sig);
    }
}

pub(crate) fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if stat_field(p, 3) == Some(pid as u64) {
                v.push(p);
            }
        }
    }
    v
}

pub(crate) fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Field `n` of /proc/PID/stat, counting `pid` as 0 and `comm` as 1.
pub(crate) fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    rest.split_whitespace().nth(n - 2)?.parse().ok()
}

/// utime + stime + cutime + cstime, in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    (13..=16).filter_map(|i| stat_field(pid, i)).sum::<u64>() as f64 / tick
}

/// A `KEY: N kB` line of /proc/PID/status.
pub(crate) fn status_kb(pid: u32, key: &str) -> u64 {
    kb_line(pid, "status", key)
}

/// A `KEY: N kB` line of /proc/PID/smaps_rollup.
pub(crate) fn rollup_kb(pid: u32, key: &str) -> u64 {
    kb_line(pid, "smaps_rollup", key)
}

/// The number after `key` in /proc/PID/`file` (0 when absent).
fn kb_line(pid: u32, file: &str, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Context switches of every thread of `pid`.
pub(crate) fn ctxt(pid: u32) -> u64 {
    let mut sum = 0;
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for e in rd.flatten() {
            let s = fs::read_to_string(e.path().join("status")).unwrap_or_default();
            for l in s.lines() {
                if l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
                {
                    sum += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    sum
}
