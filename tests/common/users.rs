//! Another user for the cases that need one (CI runs as root): `nobody`,
//! becoming it in a `pre_exec`, and a python it may run.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::python;

/// The uid, gid and home of `nobody`.
pub fn nobody() -> (u32, u32, PathBuf) {
    let u = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("a user named nobody");
    (u.uid.as_raw(), u.gid.as_raw(), u.dir)
}

/// Drop to `uid`/`gid`, no supplementary groups (for `pre_exec`).
pub fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain system calls on integers.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A python that `nobody` may run, with the modules the test children
/// import (the harness's python may live under /root).
pub fn python_for_nobody() -> String {
    let (uid, gid, _) = nobody();
    let candidates = [
        python(),
        "/usr/bin/python3",
        "/usr/local/bin/python3",
        "/opt/homebrew/bin/python3",
    ];
    for py in candidates {
        let mut cmd = Command::new(py);
        cmd.args(["-c", "import json, resource"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only set*id system calls between fork and exec.
        unsafe { cmd.pre_exec(move || become_user(uid, gid)) };
        if cmd.status().is_ok_and(|s| s.success()) {
            return py.to_owned();
        }
    }
    panic!("no python3 that user nobody can run among {candidates:?}");
}
