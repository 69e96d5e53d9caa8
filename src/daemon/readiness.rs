//! What the child says of its health: HTTP probe results and notify
//! datagrams, turned into events for the machine. Only the child's process
//! group is heard (the kernel vouches for a datagram's sender on Linux).

use std::time::Instant;

use nix::unistd::Pid;
use tracing::warn;

use super::handover::Whose;
use super::Daemon;
use crate::health::{Notice, Rejected};
use crate::policy::{Event, Phase, Stage};

impl Daemon {
    /// A probe ended: tell the machine. During a handover, `by` says
    /// which child took the connection: an answer by the new child says
    /// whether it is ready, one by the old child (draining) counts for
    /// nobody.
    pub(super) fn on_probe(&mut self, result: Result<u16, String>, by: Option<i32>) {
        let Phase::Running { pid, health, .. } = self.machine.phase() else {
            return;
        };
        let starting = matches!(
            self.machine.handover().map(|h| h.stage),
            Some(Stage::Starting { .. })
        );
        let whose = match (self.machine.handover(), by) {
            (Some(_), Some(taker)) => self.whose(taker),
            // Not asked who took it (started before the handover, when
            // the serving child was the only one): whoever answered, it
            // says nothing about the new child, which is ready only when
            // an answer of its own says so (the next probe, soon).
            (Some(_), None) | (None, _) => Whose::Serving,
        };
        let ready = health.ready_since.is_some();
        let event = self
            .probes
            .finished(&result, ready, Instant::now(), starting);
        match (whose, &result) {
            (Whose::New, Ok(_)) => return self.feed(Event::NewReady),
            // Not ready yet; its failures are not the serving child's.
            (Whose::New, Err(_)) | (Whose::Draining, _) => return self.write_state(),
            _ => {}
        }
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

    /// A new `STATUS=` text: written now if the last status write is
    /// `STATUS_WRITE_EVERY` old, else once that much has passed (a chatty
    /// child costs one fsync'd write a second, and its last text still
    /// lands).
    fn status_changed(&mut self, now: Instant) {
        let (last, due) = self.status_writes;
        match status_write_at(last, now) {
            None => {
                self.write_state();
                self.status_writes = (Some(now), None);
            }
            Some(at) => self.status_writes = (last, due.or(Some(at))),
        }
    }

    /// What one wake-up read off the notify socket, in the order sent.
    /// Each datagram is checked on its own (sender's user and group); what
    /// the serving child's datagrams say is then taken together — the last
    /// `STATUS=`, any `READY=1`, any `WATCHDOG=1` — and acted on once, so a
    /// flood costs one state change per batch, not one per datagram.
    /// During a handover each datagram is acted on as it comes (who sent
    /// it decides what it means, and an earlier one may end the handover).
    pub(super) fn on_notices(&mut self, batch: Vec<Result<Notice, Rejected>>, via: Via) {
        // The socket a batch was read from, by its file: a READY=1 early
        // in a batch from the new child's socket may make that child the
        // serving one (the sockets swap roles at the switch), and what it
        // said after that in the same batch is the serving child's.
        let socket = match via {
            Via::Serving => self.notify.as_ref(),
            Via::Second => self.notify_second.as_ref(),
        }
        .map(|n| n.env_value.clone());
        let mut heard = Heard::default();
        for item in batch {
            let notice = match item {
                Ok(notice) => notice,
                // One datagram never turns the socket off: say so, rarely.
                Err(rejected) => {
                    self.quiet.say(&rejected.to_string());
                    continue;
                }
            };
            if self.machine.handover().is_some() {
                self.act_on(std::mem::take(&mut heard));
            }
            let serving = self.notify.as_ref().map(|n| n.env_value.as_str());
            let via = role_now(via, socket.as_deref(), serving);
            if let Some(notice) = self.sent_by_serving_child(notice, via) {
                heard.add(notice);
            }
        }
        self.act_on(heard);
    }

    /// A datagram on the notify socket: accepted only from the child's
    /// process group (the kernel vouches for the sender's pid on Linux).
    /// The serving child's message is handed back to be acted on; one for
    /// a handover's new child is acted on here; anyone else's is dropped.
    fn sent_by_serving_child(&mut self, notice: Notice, via: Via) -> Option<Notice> {
        let pgid = self.machine.child_pid()?;
        // Who sent it, as of sending (Linux): the child's user, ours or
        // root. Only they can reach the socket file anyway; this also holds
        // for a socket handed over by an older version.
        if let Some(uid) = notice.uid {
            let me = nix::unistd::geteuid().as_raw();
            let child = self.recipe.creds.as_ref().map_or(me, |c| c.uid);
            if uid != 0 && uid != me && uid != child {
                self.quiet.say(&format!(
                    "ignored a notify message from uid {uid} (pid {}), which is not the child's user",
                    notice.sender.unwrap_or(0)
                ));
                return None;
            }
        }
        let handover = self.machine.handover().map(|h| h.stage);
        match handover {
            // Queued on a second child's socket before its handover
            // ended: that child is not heard any more.
            None if via == Via::Second => return None,
            None => {}
            Some(stage) => {
                let starting = matches!(stage, Stage::Starting { .. });
                let own_socket = self.notify_second.is_some();
                let by_sender = notice.sender.map(|pid| self.whose(pid));
                match attribute(via, by_sender, starting, own_socket) {
                    Whose::New => {
                        if let Some(status) = notice.status {
                            self.new_status = Some(status);
                        }
                        if notice.ready {
                            self.feed(Event::NewReady);
                        }
                        // Without a sender (macOS) and with one socket for
                        // both (a second could not be bound), a ping cannot
                        // be told apart: the serving child's pings must not
                        // be lost while the new one starts, or a handover
                        // longer than the watchdog interval fails a healthy
                        // child.
                        if notice.watchdog && notice.sender.is_none() && !own_socket {
                            self.feed(Event::WatchdogPing);
                        }
                        return None;
                    }
                    // The old child, on its way out, is not heard any more.
                    Whose::Draining => return None,
                    Whose::Serving | Whose::Stranger => {}
                }
            }
        }
        if let Some(sender) = notice.sender {
            let group = nix::unistd::getpgid(Some(Pid::from_raw(sender))).map(Pid::as_raw);
            if group != Ok(pgid) {
                self.quiet.say(&format!(
                    "ignored a notify message from pid {sender}, which is not in the child's process group {pgid}"
                ));
                return None;
            }
        }
        Some(notice)
    }

    /// What the serving child said (one datagram's worth or a batch's).
    fn act_on(&mut self, heard: Heard) {
        if let Some(status) = heard
            .status
            .filter(|s| self.seen.status.as_ref() != Some(s))
        {
            self.seen.status = Some(status);
            self.status_changed(Instant::now());
        }
        if heard.ready {
            self.feed(Event::Ready);
        }
        if heard.watchdog {
            self.feed(Event::WatchdogPing);
        }
    }
}

/// Which notify socket a datagram came in on: the serving child's, or
/// (during a handover) the second child's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Serving,
    Second,
}

/// The role, as of now, of the socket (`socket`: its file) a datagram
/// was read from as `at_receipt`: the serving one if it is the serving
/// socket's file now, else the second. The roles swap when a handover's
/// new child starts serving, possibly in the middle of a batch.
fn role_now(at_receipt: Via, socket: Option<&str>, serving: Option<&str>) -> Via {
    match (socket, serving) {
        (Some(socket), Some(serving)) if socket == serving => Via::Serving,
        (Some(_), _) => Via::Second,
        (None, _) => at_receipt,
    }
}

/// Whose a notify datagram is during a handover. Where the kernel said
/// who sent it (Linux, SCM_CREDENTIALS), the sender's process group
/// decides (`by_sender`). Where it did not (macOS), the socket it came
/// in on: each child reports to its own (`own_socket`), so a `READY=1`
/// or `WATCHDOG=1` of the serving child is never taken for the new
/// one's. Only with one socket for both (a second could not be bound)
/// is a message of unknown sender while the new child starts taken as
/// its (the serving child said READY=1 long ago).
fn attribute(via: Via, by_sender: Option<Whose>, starting: bool, own_socket: bool) -> Whose {
    if let Some(whose) = by_sender {
        return whose;
    }
    match (via, own_socket, starting) {
        (Via::Second, _, true) => Whose::New,
        (Via::Second, _, false) => Whose::Draining,
        (Via::Serving, false, true) => Whose::New,
        (Via::Serving, _, _) => Whose::Serving,
    }
}

/// What a run of the serving child's datagrams said, taken together.
#[derive(Debug, Default, PartialEq, Eq)]
struct Heard {
    /// The last `STATUS=` text.
    status: Option<String>,
    /// Any `READY=1`.
    ready: bool,
    /// Any `WATCHDOG=1`.
    watchdog: bool,
}

impl Heard {
    fn add(&mut self, notice: Notice) {
        if notice.status.is_some() {
            self.status = notice.status;
        }
        self.ready |= notice.ready;
        self.watchdog |= notice.watchdog;
    }
}

/// `STATUS=` texts write `state.json` at most this often.
pub(super) const STATUS_WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// When a status text that came at `now` should be written, given the
/// last status write: `None` for at once.
fn status_write_at(last: Option<Instant>, now: Instant) -> Option<Instant> {
    let next = last? + STATUS_WRITE_EVERY;
    (next > now).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_says_its_last_status_and_any_ready_or_ping() {
        let heard = |texts: &[&str]| {
            let mut h = Heard::default();
            for t in texts {
                h.add(crate::health::parse(t.as_bytes(), Some(7)));
            }
            h
        };
        let want = |status: Option<&str>, ready, watchdog| Heard {
            status: status.map(str::to_owned),
            ready,
            watchdog,
        };
        let table: [(&[&str], Heard); 6] = [
            (&[], want(None, false, false)),
            (
                &["STATUS=a", "STATUS=b", "STATUS=c"],
                want(Some("c"), false, false),
            ),
            (
                &["STATUS=a", "WATCHDOG=1", "READY=1"],
                want(Some("a"), true, true),
            ),
            // A datagram without STATUS= keeps the last text said.
            (
                &["STATUS=a\nREADY=1", "WATCHDOG=1"],
                want(Some("a"), true, true),
            ),
            (&["STATUS=a", "STATUS="], want(Some(""), false, false)),
            // A barrier says nothing, and takes nothing back.
            (&["WATCHDOG=1", "BARRIER=1"], want(None, false, true)),
        ];
        for (texts, want) in table {
            assert_eq!(heard(texts), want, "{texts:?}");
        }
    }

    #[test]
    fn status_writes_are_at_most_one_a_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // (last status write, now, when to write)
        let table = [
            (None, ms(0), None),
            (Some(ms(0)), ms(10), Some(ms(1000))),
            (Some(ms(0)), ms(999), Some(ms(1000))),
            (Some(ms(0)), ms(1000), None),
            (Some(ms(0)), ms(5000), None),
        ];
        for (last, now, want) in table {
            assert_eq!(status_write_at(last, now), want, "{last:?} {now:?}");
        }
    }

    /// A batch read from the new child's socket whose first datagram
    /// (READY=1) made it the serving child: the rest of the batch came in
    /// on the serving socket now (macOS: a STATUS= or WATCHDOG=1 right
    /// after READY=1 was dropped as the draining child's).
    #[test]
    fn a_batch_read_before_the_switch_follows_its_socket_across_it() {
        use Via::{Second, Serving};
        let (one, two) = ("/s/notify.sock", "/s/notify.2.sock");
        let table = [
            // (read as, the socket's file, the serving file now) -> role
            (Second, Some(two), Some(one), Second),
            (Serving, Some(one), Some(one), Serving),
            // The switch happened within the batch: the roles swapped.
            (Second, Some(two), Some(two), Serving),
            (Serving, Some(one), Some(two), Second),
            (Serving, None, None, Serving),
        ];
        for (at_receipt, socket, serving, want) in table {
            assert_eq!(
                role_now(at_receipt, socket, serving),
                want,
                "{at_receipt:?} {socket:?} {serving:?}"
            );
        }
        // What the new child said after its READY=1 in that batch is the
        // serving child's, not the draining one's.
        let after = role_now(Second, Some(two), Some(two));
        assert_eq!(attribute(after, None, false, true), Whose::Serving);
    }

    #[test]
    fn a_datagram_during_a_handover_is_the_childs_whose_socket_it_came_in_on() {
        use Via::{Second, Serving};
        use Whose::{Draining, New, Stranger};
        // (socket, whose by the kernel-verified sender, starting, the
        // second child has its own socket) -> whose
        let table = [
            // macOS (no sender): the socket says.
            (Serving, None, true, true, Whose::Serving),
            (Second, None, true, true, New),
            (Serving, None, false, true, Whose::Serving),
            (Second, None, false, true, Draining),
            // One socket for both (none could be bound for the new child):
            // the old guess, a message while the new one starts is its.
            (Serving, None, true, false, New),
            (Serving, None, false, false, Whose::Serving),
            // Linux: the sender's group decides, whatever the socket.
            (Serving, Some(New), true, true, New),
            (Second, Some(Whose::Serving), true, true, Whose::Serving),
            (Second, Some(Stranger), true, true, Stranger),
            (Serving, Some(Draining), false, true, Draining),
            (Serving, Some(Whose::Serving), true, false, Whose::Serving),
        ];
        for (via, by_sender, starting, own, want) in table {
            assert_eq!(
                attribute(via, by_sender, starting, own),
                want,
                "{via:?} {by_sender:?} starting={starting} own={own}"
            );
        }
    }
}
