//! What the child says of its health: HTTP probe results and notify
//! datagrams, turned into events for the machine. Only the child's process
//! group is heard (the kernel vouches for a datagram's sender on Linux).

use std::time::Instant;

use nix::unistd::Pid;
use tracing::warn;

use super::Daemon;
use crate::health::Notice;
use crate::policy::{Event, Phase};

impl Daemon {
    /// A probe ended: tell the machine.
    pub(super) fn on_probe(&mut self, result: Result<u16, String>) {
        let Phase::Running { pid, health, .. } = self.machine.phase() else {
            return;
        };
        let ready = health.ready_since.is_some();
        let event = self.probes.finished(&result, ready, Instant::now());
        self.seen.last_probe = self.probes.last().map(str::to_owned);
        if let (Err(e), true) = (&result, ready) {
            warn!(
                "health probe of child {pid} failed ({} of {}): {e}",
                health.probe_failures + 1,
                self.cfg.health.failures
            );
        }
        self.feed(event);
    }

    /// A datagram on the notify socket: accepted only from the child's
    /// process group (the kernel vouches for the sender's pid on Linux).
    pub(super) fn on_notice(&mut self, notice: Notice) {
        let Some(pgid) = self.machine.child_pid() else {
            return;
        };
        if let Some(sender) = notice.sender {
            let group = nix::unistd::getpgid(Some(Pid::from_raw(sender))).map(Pid::as_raw);
            if group != Ok(pgid) {
                self.quiet.say(&format!(
                    "ignored a notify message from pid {sender}, which is not in the child's process group {pgid}"
                ));
                return;
            }
        }
        if let Some(status) = notice.status {
            self.seen.status = Some(status);
            self.write_state();
        }
        if notice.ready {
            self.feed(Event::Ready);
        }
        if notice.watchdog {
            self.feed(Event::WatchdogPing);
        }
    }
}
