//! macOS: libproc and sysctl for process facts, `lsof` for descriptors.
//!
//! Checked against xnu's `bsd/kern/proc_info.c` and libproc.c (none of
//! this can run on the Linux machines that build it; the macOS CI jobs
//! run it, and `tests/harness.rs` checks each answer against a process it
//! started):
//! - `proc_pidinfo(PROC_PIDTBSDINFO)` with `arg` 1 also finds zombies
//!   (`if (arg) findzomb = 1`) and reports them with `pbi_status == SZOMB`;
//!   with `arg` 0 it fails for a zombie, which would make it look gone
//!   while `kill(pid, 0)` still succeeds.
//! - `proc_listallpids` and `proc_listpgrppids` return a count of pids,
//!   not bytes; with a NULL buffer the kernel answers its estimate
//!   (`nprocs + 20`). Both lists include zombies.

use super::{lsof_port, parse_lsof_names, parse_procargs, run_cmd};
use std::ffi::c_void;
use std::mem;
use std::path::Path;
use std::ptr;
use std::sync::OnceLock;
use std::time::Duration;

/// `proc_pidinfo(pid, flavor, arg)` into one struct `T`.
///
/// # Safety
/// `T` must be the plain-data libc struct of `flavor` (all zeroes valid).
unsafe fn pidinfo<T>(pid: i32, flavor: libc::c_int, arg: u64) -> Option<T> {
    let mut info: T = mem::zeroed();
    let size = mem::size_of::<T>() as libc::c_int;
    // proc_pidinfo writes at most `size` bytes into `info`.
    let n = libc::proc_pidinfo(pid, flavor, arg, &mut info as *mut T as *mut c_void, size);
    (n == size).then_some(info)
}

fn bsdinfo(pid: i32) -> Option<libc::proc_bsdinfo> {
    // SAFETY: proc_bsdinfo is PROC_PIDTBSDINFO's plain-data struct. Arg 1:
    // zombies too.
    unsafe { pidinfo(pid, libc::PROC_PIDTBSDINFO, 1) }
}

pub fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let i = bsdinfo(pid)?;
    let state = match i.pbi_status {
        libc::SIDL => 'I',
        libc::SRUN => 'R',
        libc::SSLEEP => 'S',
        libc::SSTOP => 'T',
        libc::SZOMB => 'Z',
        _ => '?',
    };
    Some((state, i.pbi_ppid as i32, i.pbi_pgid as i32))
}

/// A libproc pid list: `call(buffer, bytes)` returns a count of pids.
fn pid_list(call: impl Fn(*mut c_void, libc::c_int) -> libc::c_int) -> Vec<i32> {
    let mut cap = usize::try_from(call(ptr::null_mut(), 0)).unwrap_or(0) + 64;
    loop {
        let mut pids = vec![0 as libc::pid_t; cap];
        let bytes = (cap * mem::size_of::<libc::pid_t>()) as libc::c_int;
        let Ok(n) = usize::try_from(call(pids.as_mut_ptr() as *mut c_void, bytes)) else {
            return Vec::new();
        };
        // A full buffer may have cut the list short: ask again, larger.
        if n < cap {
            pids.truncate(n);
            pids.retain(|&p| p > 0);
            return pids;
        }
        cap *= 2;
    }
}

pub fn all_pids() -> Vec<i32> {
    // SAFETY: proc_listallpids writes at most `bytes` bytes into `buf`, or
    // nothing when `buf` is NULL.
    pid_list(|buf, bytes| unsafe { libc::proc_listallpids(buf, bytes) })
}

pub fn group_pids(pgid: i32) -> Vec<i32> {
    // SAFETY: as above, for proc_listpgrppids.
    pid_list(|buf, bytes| unsafe { libc::proc_listpgrppids(pgid, buf, bytes) })
}

/// `kern.argmax`: the most a `KERN_PROCARGS2` answer can hold. Read once.
fn argmax() -> Option<usize> {
    static ARGMAX: OnceLock<Option<usize>> = OnceLock::new();
    *ARGMAX.get_or_init(|| {
        let mut argmax: libc::c_int = 0;
        let mut size = mem::size_of::<libc::c_int>();
        let mut mib = [libc::CTL_KERN, libc::KERN_ARGMAX];
        // SAFETY: sysctl writes at most `size` bytes into the c_int.
        let r = unsafe {
            libc::sysctl(
                mib.as_mut_ptr(),
                2,
                &mut argmax as *mut libc::c_int as *mut c_void,
                &mut size,
                ptr::null_mut(),
                0,
            )
        };
        if r == 0 {
            usize::try_from(argmax).ok().filter(|&n| n > 0)
        } else {
            None
        }
    })
}

/// The raw `KERN_PROCARGS2` buffer of a process (ours to inspect only).
fn procargs(pid: i32) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; argmax()?];
    let mut size = buf.len();
    let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid];
    // SAFETY: sysctl writes at most `size` bytes into `buf` and sets `size`
    // to what it wrote.
    let r = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            3,
            buf.as_mut_ptr() as *mut c_void,
            &mut size,
            ptr::null_mut(),
            0,
        )
    };
    if r != 0 {
        return None;
    }
    buf.truncate(size);
    Some(buf)
}

pub fn cmdline(pid: i32) -> Vec<String> {
    procargs(pid)
        .and_then(|b| parse_procargs(&b))
        .map(|(argv, _)| argv)
        .unwrap_or_default()
}

pub fn environ(pid: i32) -> Vec<String> {
    procargs(pid)
        .and_then(|b| parse_procargs(&b))
        .map(|(_, env)| env)
        .unwrap_or_default()
}

/// `lsof -n -P -w -a -p PID ARGS -F fn` as (descriptor, name) pairs. lsof
/// exits 1 when nothing matched; its output is used either way.
fn lsof(pid: i32, args: &[&str]) -> Vec<(String, String)> {
    let prog = if Path::new("/usr/sbin/lsof").exists() {
        "/usr/sbin/lsof"
    } else {
        "lsof"
    };
    let mut argv: Vec<String> = ["-n", "-P", "-w", "-a", "-p", &pid.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.extend(["-F".to_string(), "fn".to_string()]);
    match run_cmd(prog, &argv, Duration::from_secs(20)) {
        Ok(out) => parse_lsof_names(&out.stdout),
        Err(_) => Vec::new(),
    }
}

pub fn fd_targets(pid: i32) -> Vec<String> {
    lsof(pid, &[])
        .into_iter()
        .filter(|(fd, _)| fd.parse::<u32>().is_ok())
        .map(|(_, name)| name)
        .collect()
}

pub fn listening_ports(pid: i32) -> Vec<u16> {
    lsof(pid, &["-iTCP", "-sTCP:LISTEN"])
        .iter()
        .filter_map(|(_, name)| lsof_port(name))
        .collect()
}

pub fn rss_kib(pid: i32) -> u64 {
    // SAFETY: proc_taskinfo is PROC_PIDTASKINFO's plain-data struct.
    let info: Option<libc::proc_taskinfo> = unsafe { pidinfo(pid, libc::PROC_PIDTASKINFO, 0) };
    info.map_or(0, |i| i.pti_resident_size / 1024)
}

/// From `ps`: libproc's task times are in Mach ticks on Apple silicon,
/// and converting them needs `mach_timebase_info`, which libc deprecates.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    let argv = [
        "-o".to_string(),
        "time=".to_string(),
        "-p".to_string(),
        pid.to_string(),
    ];
    let out = run_cmd("/bin/ps", &argv, Duration::from_secs(20)).ok()?;
    super::parse_ps_time(&out.stdout)
}

/// Microseconds since the epoch, as src/sys/macos.rs records it.
pub fn start_time(pid: i32) -> Option<u64> {
    let i = bsdinfo(pid)?;
    Some(i.pbi_start_tvsec * 1_000_000 + i.pbi_start_tvusec)
}

pub fn boot_time() -> Option<u64> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut size = mem::size_of::<libc::timeval>();
    // SAFETY: sysctlbyname writes at most `size` bytes into the timeval.
    let r = unsafe {
        libc::sysctlbyname(
            c"kern.boottime".as_ptr(),
            &mut tv as *mut libc::timeval as *mut c_void,
            &mut size,
            ptr::null_mut(),
            0,
        )
    };
    (r == 0).then(|| u64::try_from(tv.tv_sec).ok()).flatten()
}
