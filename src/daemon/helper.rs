//! A short-lived helper process of ours — an alert command, a reload's
//! preflight — run without ever being waited for: its own process group,
//! stdin from /dev/null, none of the protocols' variables, every signal at
//! its default, its output in one pipe the driver's loop reads, a deadline
//! after which its whole group is killed. Its exit comes through the
//! driver's one reaper like every other child's; what it means is the
//! owner's business (the alert hooks log it, the reload decides on it).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::child::PROTOCOL_ENV;
use crate::sys;

/// One running helper.
pub(super) struct Helper {
    pid: i32,
    deadline: Instant,
    killed: bool,
    output: Option<pipe::Receiver>,
}

impl Helper {
    /// Start `cmd` with `timeout` to live; its stderr (and stdout, with
    /// `stdout`) into the pipe [`Helper::output`] reads.
    pub(super) fn spawn(mut cmd: Command, stdout: bool, timeout: Duration) -> io::Result<Helper> {
        let (reader, writer) = io::pipe()?;
        let out = match stdout {
            true => Stdio::from(writer.try_clone()?),
            false => Stdio::null(),
        };
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(writer)
            .process_group(0);
        for var in PROTOCOL_ENV {
            cmd.env_remove(var);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                sys::reset_signals_after_fork();
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // `cmd` holds the pipe's write end in its stdio setup: drop it, so
        // the read end sees EOF once the helper's last holder exits.
        drop(cmd);
        let pid = child.id() as i32;
        drop(child);
        Ok(Helper {
            pid,
            deadline: Instant::now() + timeout,
            killed: false,
            output: pipe::Receiver::from_owned_fd(OwnedFd::from(reader)).ok(),
        })
    }

    pub(super) fn pid(&self) -> i32 {
        self.pid
    }

    pub(super) fn killed(&self) -> bool {
        self.killed
    }

    /// When it is to be killed; `None` once it was.
    pub(super) fn deadline(&self) -> Option<Instant> {
        (!self.killed).then_some(self.deadline)
    }

    /// Whether the deadline has passed (and it is not killed yet).
    pub(super) fn overdue(&self, now: Instant) -> bool {
        !self.killed && now >= self.deadline
    }

    /// SIGKILL its whole process group (once). Whether it was killed now.
    pub(super) fn kill(&mut self) -> bool {
        if self.killed {
            return false;
        }
        self.killed = true;
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        true
    }

    /// The next bytes it wrote; pending while there are none (or the pipe
    /// was closed). An empty read or an error is the end of its output:
    /// pass it to [`Helper::read`].
    pub(super) async fn output(&mut self) -> io::Result<Vec<u8>> {
        let Some(rx) = self.output.as_mut() else {
            return std::future::pending().await;
        };
        let mut buf = vec![0u8; 4096];
        let n = rx.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    /// What an [`Helper::output`] read gave: the bytes, or `None` at the
    /// end of the output (the pipe is dropped then).
    pub(super) fn read(&mut self, got: io::Result<Vec<u8>>) -> Option<Vec<u8>> {
        match got {
            Ok(b) if !b.is_empty() => Some(b),
            _ => {
                self.output = None;
                None
            }
        }
    }

    /// After its exit: what is still in the pipe, read without waiting
    /// (the reactor may not have seen it yet), at most `cap` bytes.
    pub(super) fn rest(&mut self, cap: usize) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(rx) = &self.output {
            let mut buf = [0u8; 1024];
            while out.len() < cap {
                match nix::unistd::read(rx.as_raw_fd(), &mut buf) {
                    Ok(n @ 1..) => out.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
        }
        out.truncate(cap);
        out
    }
}

/// The next output of whichever helper has some: (the first's?, bytes).
/// Pending while neither has a pipe open.
pub(super) async fn output(
    a: Option<&mut Helper>,
    b: Option<&mut Helper>,
) -> (bool, io::Result<Vec<u8>>) {
    match (a, b) {
        (Some(a), Some(b)) => tokio::select! {
            got = a.output() => (true, got),
            got = b.output() => (false, got),
        },
        (Some(a), None) => (true, a.output().await),
        (None, Some(b)) => (false, b.output().await),
        (None, None) => std::future::pending().await,
    }
}
