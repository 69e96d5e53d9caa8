//! Spawning the child: everything prepared before fork, almost nothing after.
//!
//! systemd's socket-activation protocol wants `LISTEN_PID` to be the child's
//! own pid, which exists only after fork. `Command::env` cannot carry it and
//! a `setenv` in `pre_exec` is lost (std installs its own envp afterwards)
//! and allocates. So argv and envp are built here, in the parent, with a
//! fixed-size `LISTEN_PID=` slot; the `pre_exec` closure writes the pid's
//! digits into that slot and calls `execve` itself. An `execve` failure is
//! returned from the closure, and std reports it from `spawn()`.
//!
//! After fork the child only: starts a session of its own (`setsid`: its
//! session and process group ids become its pid, and it loses the
//! supervisor's controlling terminal, so it can neither read, write nor
//! inject keystrokes into root's terminal); resets signal dispositions and
//! the signal mask; raises the hard limits `attrs` planned (root only) and sets its
//! nice value while it may still lower it; drops privileges; asks to die
//! with the supervisor (Linux); clears close-on-exec on fd 3, marks every
//! descriptor from 4 up close-on-exec; sets its soft limits and umask;
//! writes the pid digits and execs. std has already put /dev/null on stdin,
//! the log pipes on stdout and stderr and changed the directory. (std's
//! `process_group(0)` is not used: a process group leader cannot call
//! `setsid`, and `setsid` makes the group anyway.)
//!
//! std hands only an errno from a failed `pre_exec` back to `spawn()`. So
//! that the error can name the key that failed ("child.nice = -5:
//! setpriority: Permission denied"), every step that can fail has a label
//! made before fork, and the child writes the failing step's number into a
//! close-on-exec pipe of ours before returning the errno.
//!
//! The rooms: `identity` (the user and the environment), `program`
//! (finding it along PATH, explaining a failed start); this file builds
//! the exec image and forks.

mod identity;
mod program;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::attrs::{self, Plan};
use crate::config::{Limit, Resource};
use crate::listener::LISTEN_FD;
use crate::sys;
pub(crate) use identity::{credentials, environment, path_left_out, Creds, PROTOCOL_ENV};
use program::why_not_started;
pub(crate) use program::{misuses_the_socket, resolve_program};

const LISTEN_PID: &[u8] = b"LISTEN_PID=";
/// Enough digits for any pid (pid_t is 32-bit).
const PID_DIGITS: usize = 10;

/// What is needed to start a child, resolved from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Recipe {
    pub(crate) command: Vec<String>,
    pub(crate) cwd: PathBuf,
    /// `child.env`: added to the inherited (or, for another user, the
    /// clean) environment.
    pub(crate) env: BTreeMap<String, String>,
    /// `child.inherit_env`: another user's child inherits our whole
    /// environment too.
    pub(crate) inherit_env: bool,
    /// `LISTEN_FDNAMES`.
    pub(crate) fd_name: String,
    /// `NOTIFY_SOCKET` for a child that speaks the notify protocol.
    pub(crate) notify_socket: Option<String>,
    /// `WATCHDOG_USEC`, with `notify_socket`.
    pub(crate) watchdog: Option<Duration>,
    /// The signal the child gets when the supervisor dies (Linux).
    pub(crate) death_signal: i32,
    /// Drop to this user before exec.
    pub(crate) creds: Option<Creds>,
    /// `child.umask`, `child.nice` and `[child.limits]`.
    pub(crate) attrs: attrs::Wanted,
    /// `log.to = "stdout"`: the child writes straight into our stdout and
    /// stderr (no pipes, nothing for us to copy).
    pub(crate) inherit_output: bool,
}

/// A started child: its pid (also its process group and session) and its
/// output pipes.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) pid: i32,
    /// The read ends of its stdout and stderr; `None` when it inherited ours.
    pub(crate) pipes: Option<(File, File)>,
}

fn cstring(bytes: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "NUL byte in argument or environment",
        )
    })
}

/// argv and envp as C arrays, built before fork. The strings are owned here
/// and the pointer arrays point into their heap buffers, which never move
/// (moving a `Vec` moves only its header). The `LISTEN_PID=` slot is a
/// `Vec<u8>` whose pointers are taken with `as_ptr`/`as_mut_ptr`, which
/// never create a reference to the buffer, so the envp pointer and the
/// child's write of the digits do not invalidate each other.
struct ExecImage {
    program: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    /// "LISTEN_PID=" and room for the digits and the NUL.
    slot: Vec<u8>,
    env_ptrs: Vec<*const libc::c_char>,
    parent: libc::pid_t,
    death_signal: libc::c_int,
    /// uid, gid, and the step's number.
    creds: Option<(libc::uid_t, libc::gid_t, u8)>,
    /// Hard limits raised while still privileged.
    raise: Vec<(sys::RawRlimit, u8)>,
    nice: Option<(libc::c_int, u8)>,
    /// Soft limits, set after the privilege drop.
    set: Vec<(sys::RawRlimit, u8)>,
    umask: Option<libc::mode_t>,
    /// Where the number of a failed step goes (-1: nowhere).
    report: RawFd,
}

/// Steps after fork that can fail, besides those `attrs` plans.
const STEP_PARENT: u8 = 0;
const STEP_FD3: u8 = 1;
const STEP_SESSION: u8 = 2;

// SAFETY: the pointers only point into the Vecs owned by the same value, and
// the image is used by the one thread that forks (the closure std requires
// to be Send + Sync is run only in the forked child).
unsafe impl Send for ExecImage {}
// SAFETY: as above; nothing is shared between threads.
unsafe impl Sync for ExecImage {}

impl ExecImage {
    /// The image, and the words for each step that can fail after fork
    /// (indexed by the step's number).
    fn new(program: &Path, recipe: &Recipe, plan: &Plan) -> io::Result<(ExecImage, Vec<String>)> {
        let program = cstring(program.as_os_str().as_bytes())?;
        let argv: Vec<CString> = recipe
            .command
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let uid = recipe.creds.as_ref().map_or(0, |c| c.uid);
        let env: Vec<CString> = environment(recipe, std::env::vars_os(), |p| {
            identity::path_for_user(p, uid)
        })
        .into_iter()
        .map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend(v.into_vec());
            cstring(entry)
        })
        .collect::<io::Result<_>>()?;
        let slot: Vec<u8> = [LISTEN_PID, &[0u8; PID_DIGITS + 1]].concat();
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let env_ptrs = env
            .iter()
            .map(|e| e.as_ptr())
            .chain([slot.as_ptr().cast(), std::ptr::null()])
            .collect();

        let mut labels = vec![
            "the supervisor died while the child was starting".to_owned(),
            format!("cannot hand over the listening socket (fd {LISTEN_FD})"),
            "cannot give the child a session of its own (setsid)".to_owned(),
        ];
        let mut label = |text: String| -> u8 {
            labels.push(text);
            // At most 4 + 2 × 8 steps: far below 256.
            (labels.len() - 1) as u8
        };
        let creds = recipe.creds.as_ref().map(|c| {
            let step = label(format!(
                "child.user = {:?}: switching to uid {} and gid {} (setgroups, setgid, setuid)",
                c.name, c.uid, c.gid
            ));
            (c.uid, c.gid, step)
        });
        let raise = plan
            .limits
            .iter()
            .filter_map(|s| {
                let raise = s.raise?;
                Some((
                    sys::RawRlimit::new(s.resource, raise),
                    label(attrs::step_label(s, true)),
                ))
            })
            .collect();
        let nice = plan
            .nice
            .map(|n| (n, label(format!("child.nice = {n}: setpriority"))));
        let set = plan
            .limits
            .iter()
            .map(|s| {
                (
                    sys::RawRlimit::new(s.resource, s.set),
                    label(attrs::step_label(s, false)),
                )
            })
            .collect();
        let image = ExecImage {
            program,
            _argv: argv,
            argv_ptrs,
            _env: env,
            slot,
            env_ptrs,
            parent: nix::unistd::getpid().as_raw(),
            death_signal: recipe.death_signal,
            creds,
            raise,
            nice,
            set,
            umask: plan.umask.map(|m| m as libc::mode_t),
            report: -1,
        };
        Ok((image, labels))
    }

    /// Write `pid`'s digits and a NUL after "LISTEN_PID=", without
    /// allocating. Separate from `exec` so a unit test can check it.
    fn write_pid(&mut self, pid: u32) {
        let mut pid = pid;
        let mut digits = [0u8; PID_DIGITS];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (pid % 10) as u8;
            n += 1;
            pid /= 10;
            if pid == 0 || n == PID_DIGITS {
                break;
            }
        }
        let slot = self.slot.as_mut_ptr();
        for i in 0..n {
            // SAFETY: LISTEN_PID.len() + PID_DIGITS + 1 bytes were allocated.
            unsafe { *slot.add(LISTEN_PID.len() + i) = digits[n - 1 - i] };
        }
        // SAFETY: as above; n <= PID_DIGITS.
        unsafe { *slot.add(LISTEN_PID.len() + n) = 0 };
    }

    /// After fork: `errno` as an error, with the failed step's number sent
    /// to the parent first (no allocation: an OS error is a plain code).
    ///
    /// # Safety
    /// Call only between fork and exec.
    unsafe fn failed(&self, step: u8) -> io::Error {
        let e = io::Error::last_os_error();
        if self.report >= 0 {
            libc::write(self.report, (&step as *const u8).cast(), 1);
        }
        e
    }

    /// Runs in the forked child: only async-signal-safe calls, no allocation.
    /// (`setrlimit`, `setpriority` and `setgroups` are not on POSIX's list,
    /// but each is one system call that takes no lock.)
    ///
    /// # Safety
    /// Call only between fork and exec.
    unsafe fn exec(&mut self) -> io::Result<()> {
        // A session of its own, first: no controlling terminal (no
        // /dev/tty, no TIOCSTI into the supervisor's terminal), and its
        // process group is its pid, as the driver's group signals expect.
        if libc::setsid() < 0 {
            return Err(self.failed(STEP_SESSION));
        }
        // Signal state survives exec: ignored signals stay ignored and the
        // mask stays set. Give the child what a fresh process has.
        sys::reset_signals_after_fork();

        // While still privileged: raise the hard limits a soft limit needs
        // (only root may), and set the nice value (lowering it needs
        // privilege too, so `nice = -5` works for a dropped user). Soft
        // limits wait until after the drop: a low `nproc` would make
        // setuid fail.
        for (l, step) in &self.raise {
            if !sys::set_rlimit_after_fork(l) {
                return Err(self.failed(*step));
            }
        }
        if let Some((n, step)) = self.nice {
            if !sys::set_nice_after_fork(n) {
                return Err(self.failed(step));
            }
        }
        // Drop privileges: changing credentials clears the parent-death
        // signal on Linux, so that is asked for afterwards. Supplementary
        // groups shrink to the user's primary group.
        if let Some((uid, gid, step)) = self.creds {
            if libc::setgroups(1, &gid) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(self.failed(step));
            }
        }
        if !sys::die_with_parent(self.death_signal, self.parent) {
            let e = io::Error::from_raw_os_error(libc::ESRCH);
            if self.report >= 0 {
                libc::write(self.report, (&STEP_PARENT as *const u8).cast(), 1);
            }
            return Err(e);
        }
        // fd 3 is our listening socket already; it only loses close-on-exec.
        if libc::fcntl(LISTEN_FD, libc::F_SETFD, 0) != 0 {
            return Err(self.failed(STEP_FD3));
        }
        // Before the soft limits: on macOS this walks descriptors up to the
        // open-files limit, which `nofile` may be about to lower.
        sys::cloexec_from_after_fork(LISTEN_FD + 1);
        for (l, step) in &self.set {
            if !sys::set_rlimit_after_fork(l) {
                return Err(self.failed(*step));
            }
        }
        if let Some(mask) = self.umask {
            sys::set_umask_after_fork(mask);
        }

        self.write_pid(libc::getpid() as u32);

        libc::execve(
            self.program.as_ptr(),
            self.argv_ptrs.as_ptr(),
            self.env_ptrs.as_ptr(),
        );
        Err(io::Error::last_os_error())
    }
}

/// The plan for `recipe`'s attributes against this moment's limits: the
/// same checks as `check-config`, again, since our own limits may have
/// been changed from outside since.
fn plan(recipe: &Recipe) -> io::Result<Plan> {
    let refused = |text: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot start the child: {text}"),
        )
    };
    let facts = match recipe.attrs.limits.is_empty() {
        true => None,
        false => Some(attrs::Facts::here().map_err(refused)?),
    };
    let facts = facts.unwrap_or_else(|| attrs::Facts {
        current: BTreeMap::new(),
        may_raise_hard: false,
        nofile_ceiling: None,
    });
    let mut plan = attrs::plan(&recipe.attrs, &facts).map_err(|problems| {
        let words: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.why))
            .collect();
        refused(words.join("; "))
    })?;
    // The supervisor raised its own soft open-files limit at start; a child
    // that does not set `child.limits.nofile` gets the one we started with.
    if !recipe.attrs.limits.contains_key(&Resource::Nofile) {
        if let (Some(started), Ok(now)) = (sys::started_nofile(), sys::rlimit(Resource::Nofile)) {
            if now.soft != Limit::Value(started) {
                plan.limits.push(attrs::LimitStep {
                    resource: Resource::Nofile,
                    inherited: now,
                    raise: None,
                    set: sys::Rlimit {
                        soft: Limit::Value(started),
                        hard: now.hard,
                    },
                });
            }
        }
    }
    Ok(plan)
}

/// Start one child with the listening socket (already at fd 3, blocking)
/// and fresh pipes for its stdout and stderr.
///
/// A failure says what is wrong with what: the folder (`child.cwd`), the
/// program, the interpreter its `#!` line names, or the attribute (by its
/// key) the system refused.
pub(crate) fn spawn(recipe: &Recipe) -> io::Result<Spawned> {
    let program_name = recipe
        .command
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    if !recipe.cwd.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "cannot start the child: its folder (child.cwd) {} does not exist or is not a folder",
                recipe.cwd.display()
            ),
        ));
    }
    let path = recipe
        .env
        .get("PATH")
        .map(OsString::from)
        .or_else(|| std::env::var_os("PATH"));
    let program = resolve_program(program_name, path.as_deref(), &recipe.cwd)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start the child: {e}")))?;
    let plan = plan(recipe)?;
    start(recipe, &program, &plan)
}

/// fork, the steps of `plan`, exec.
fn start(recipe: &Recipe, program: &Path, plan: &Plan) -> io::Result<Spawned> {
    let (mut image, labels) = ExecImage::new(program, recipe, plan)?;
    // Close-on-exec at both ends: after a successful exec only the parent
    // holds them, and they are dropped unread.
    let (mut report_rx, report_tx) = io::pipe()?;
    image.report = report_tx.as_raw_fd();

    let output = || match recipe.inherit_output {
        true => Stdio::inherit(),
        false => Stdio::piped(),
    };
    let mut cmd = Command::new(program);
    cmd.current_dir(&recipe.cwd)
        .stdin(Stdio::null())
        .stdout(output())
        .stderr(output());
    // SAFETY: `exec` makes only async-signal-safe calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || image.exec());
    }
    let spawned = cmd.spawn();
    // std has reaped a child that failed before exec, so once our end is
    // closed the pipe holds a step number or nothing: the read cannot block.
    drop(report_tx);
    let mut child = spawned.map_err(|e| {
        let mut step = [0u8; 1];
        let failed = match report_rx.read(&mut step) {
            Ok(1) => labels.get(usize::from(step[0])),
            _ => None,
        };
        let why = match failed {
            Some(label) => format!("cannot start the child: {label}: {}", errno_words(&e)),
            None => why_not_started(&e, program, &recipe.cwd),
        };
        io::Error::new(e.kind(), why)
    })?;
    let pid = child.id() as i32;
    let pipes = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => {
            let (out, err): (OwnedFd, OwnedFd) = (out.into(), err.into());
            for fd in [&out, &err] {
                sys::grow_pipe(std::os::fd::AsRawFd::as_raw_fd(fd));
            }
            Some((File::from(out), File::from(err)))
        }
        _ => None,
    };
    // `child` is dropped without waiting: the driver reaps every child
    // itself (it is a subreaper) and keeps this one's status.
    drop(child);
    Ok(Spawned { pid, pipes })
}

/// "Permission denied": the system's words for an errno, without std's
/// "(os error 13)".
fn errno_words(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_owned(),
        None => e.to_string(),
    }
}
