//! Processes, the same questions on Linux and macOS: is this pid alive (a
//! zombie is not), its state, parent and process group, every pid, a
//! process's argv and environment, the live members of a group, where its
//! descriptors point, the TCP ports it listens on, its resident size and
//! start time; plus running a command with a deadline and signalling by
//! pid.
//!
//! Linux reads `/proc` (`linux.rs`). macOS has no `/proc` (`macos.rs`):
//! libproc (`proc_pidinfo`, `proc_listallpids`, `proc_listpgrppids`) and
//! sysctl (`KERN_PROCARGS2`, `kern.boottime`) answer most questions, and
//! `lsof` the descriptor ones, which is acceptable in tests and keeps the
//! hand-written libproc structs to none. The parsers of what macOS hands
//! back are here, outside the `cfg`, so they are unit-tested on Linux too
//! (`tests/harness.rs`).

use super::Out;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;

/// Runs a program with a deadline; output via pipes read by a thread.
pub fn run_cmd(prog: &str, args: &[String], timeout: Duration) -> Result<Out, String> {
    let cmd = format!("{prog} {}", args.join(" "));
    let start = Instant::now();
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn {cmd}: {e}"))?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(o)) => Ok(Out {
            cmd,
            status: o.status,
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            took: start.elapsed(),
        }),
        Ok(Err(e)) => Err(format!("$ {cmd}: wait failed: {e}")),
        Err(_) => {
            kill(pid, libc::SIGKILL);
            Err(format!("$ {cmd}: still running after {timeout:?}; killed"))
        }
    }
}

/// Sends a signal to one pid (never 0, 1 or a negative "all" value).
pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with a concrete pid > 1; no memory is involved.
    pid > 1 && unsafe { libc::kill(pid, sig) } == 0
}

/// Sends a signal to a process group (pgid > 1).
pub fn kill_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) on the group -pgid with pgid > 1.
    pgid > 1 && unsafe { libc::kill(-pgid, sig) } == 0
}

/// (state, ppid, pgrp). The state is a letter as `ps` shows it: `R`
/// running, `S` sleeping, `T` stopped, `Z` zombie (and on Linux `D`, `X`,
/// ...; on macOS `I` for a process being created).
pub fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    if pid <= 0 {
        return None;
    }
    os::proc_stat(pid)
}

/// Alive and not a zombie. `kill(pid, 0)` alone says yes to a zombie on
/// both systems, so the state decides.
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks existence.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    matches!(proc_stat(pid), Some((s, _, _)) if s != 'Z' && s != 'X')
}

/// Every pid on the machine (zombies included).
pub fn all_pids() -> Vec<i32> {
    os::all_pids()
}

/// A process's argv; empty for a zombie or a process we may not inspect.
pub fn cmdline(pid: i32) -> Vec<String> {
    if pid <= 0 {
        return Vec::new();
    }
    os::cmdline(pid)
}

/// A process's environment as `KEY=value` strings, as it was at exec.
pub fn environ(pid: i32) -> Vec<String> {
    if pid <= 0 {
        return Vec::new();
    }
    os::environ(pid)
}

/// The value of `key` in a process's environment.
pub fn environ_var(pid: i32, key: &str) -> Option<String> {
    environ(pid)
        .into_iter()
        .find_map(|kv| Some(kv.strip_prefix(key)?.strip_prefix('=')?.to_string()))
}

/// Live (non-zombie) members of a process group.
pub fn group_members(pgid: i32) -> Vec<i32> {
    if pgid <= 0 {
        return Vec::new();
    }
    os::group_pids(pgid)
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some((s, _, g)) if g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

pub fn pgid_alive(pgid: i32) -> bool {
    !group_members(pgid).is_empty()
}

/// Where a process's descriptors point, one string per descriptor: a
/// path, or the system's name for a socket or pipe (Linux:
/// `socket:[INODE]`; macOS: what `lsof` prints, e.g. `127.0.0.1:8420`).
/// Equal lists mean equal descriptors; the strings differ between systems.
pub fn fd_targets(pid: i32) -> Vec<String> {
    if pid <= 0 {
        return Vec::new();
    }
    os::fd_targets(pid)
}

/// TCP ports on which `pid` holds a listening socket, sorted, each once.
pub fn listening_ports(pid: i32) -> Vec<u16> {
    if pid <= 0 {
        return Vec::new();
    }
    let mut ports = os::listening_ports(pid);
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Resident set size in KiB (0 when unknown).
pub fn rss_kib(pid: i32) -> u64 {
    if pid <= 0 {
        return 0;
    }
    os::rss_kib(pid)
}

/// CPU time (user + system) the process has used so far, if it can be
/// read.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    if pid <= 0 {
        return None;
    }
    os::cpu_time(pid)
}

/// When the process started, in the unit the supervisor records as
/// `start_time` in `state.json` on this system (Linux: clock ticks since
/// boot, `/proc/PID/stat` field 22; macOS: microseconds since the epoch).
pub fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    os::start_time(pid)
}

/// Seconds since the epoch at which this machine booted.
pub fn boot_time() -> Option<u64> {
    os::boot_time()
}

/// argv and environment from a `KERN_PROCARGS2` buffer (macOS): `argc` as
/// a native-endian C int, the executable path, NUL padding, `argc` strings,
/// then the environment strings up to an empty one (the "apple" strings
/// that follow are not the process's environment).
pub fn parse_procargs(buf: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    let argc = i32::from_ne_bytes(buf.get(..4)?.try_into().ok()?);
    let argc = usize::try_from(argc).ok()?;
    let rest = &buf[4..];
    // The executable path, then the padding after it.
    let path_end = rest.iter().position(|&b| b == 0)?;
    let mut at = path_end;
    while rest.get(at) == Some(&0) {
        at += 1;
    }
    let mut strings = rest[at..].split(|&b| b == 0);
    let text = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    let argv: Vec<String> = strings.by_ref().take(argc).map(text).collect();
    if argv.len() != argc {
        return None;
    }
    let env = strings.take_while(|s| !s.is_empty()).map(text).collect();
    Some((argv, env))
}

/// `ps -o time=` as macOS prints it: `[[dd-]hh:]mm:ss.ss`, e.g. `0:00.05`
/// or `1:02:03.45`.
pub fn parse_ps_time(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (days, clock) = match text.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().ok()?, rest),
        None => (0, text),
    };
    let mut seconds = (days * 86_400) as f64;
    let mut parts = clock.rsplit(':');
    let secs: f64 = parts.next()?.parse().ok()?;
    seconds += secs;
    for (i, part) in parts.enumerate() {
        let unit = [60.0, 3600.0].get(i)?;
        seconds += part.parse::<u64>().ok()? as f64 * unit;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// `lsof -F fn` output as (descriptor, name) pairs: `f` lines open a file
/// set, `n` lines name it; `p` (process) and any other field are skipped.
/// Descriptors like `cwd` or `txt` are kept as they are; callers filter.
pub fn parse_lsof_names(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut fd = None;
    for line in text.lines() {
        match line.split_at_checked(1) {
            Some(("f", v)) => fd = Some(v.to_string()),
            Some(("n", v)) => {
                if let Some(f) = fd.take() {
                    out.push((f, v.to_string()));
                }
            }
            _ => {}
        }
    }
    out
}

/// The port of an `lsof -n -P` socket name: `127.0.0.1:8420`,
/// `*:8420`, `[::1]:8420` (a connected socket's `A->B` gives A's port).
pub fn lsof_port(name: &str) -> Option<u16> {
    let local = name.split("->").next()?;
    local.rsplit(':').next()?.parse().ok()
}
