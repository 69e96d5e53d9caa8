//! The driver's side of `[alerts]`: what the machine noted goes to the
//! pure rule ([`crate::alerts`]), what it fires becomes a run of the alert
//! command ([`hooks`](super::hooks)) with the `SUPERVISOR_*` environment of
//! SPEC.md, and what `status` shows and a successor needs is kept.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use tracing::warn;

use super::hooks::{Hooks, Job};
use crate::alerts::{Alerts, Fire, Seen};
use crate::config::{AlertEvent, AlertsSection};
use crate::policy::{ExitKind, LastExit};
use crate::state::{self, AlertsInfo};
use crate::text::signal_name;

/// What the environment of an alert says besides the event: the driver's
/// view at the moment it fires.
pub(crate) struct Context {
    pub(crate) config: String,
    pub(crate) pid: i32,
    pub(crate) child_pid: Option<i32>,
    pub(crate) last_exit: Option<LastExit>,
    pub(crate) streak: u32,
    pub(crate) restarts: u32,
    pub(crate) port_holder: Option<(i32, String)>,
    pub(crate) log_dir: String,
}

pub(crate) struct Alerting {
    rules: Alerts,
    hooks: Hooks,
    /// When each kind last went out, in wall time (persisted).
    sent_at: BTreeMap<AlertEvent, SystemTime>,
    /// How many of each kind the rule fired (`supervisor_alerts_total`).
    fired: BTreeMap<AlertEvent, u64>,
}

impl Alerting {
    pub(crate) fn new(section: &AlertsSection, reset_after: std::time::Duration) -> Alerting {
        Alerting {
            rules: Alerts::new(section.clone(), reset_after),
            hooks: Hooks::new(section.command.clone(), section.timeout),
            sent_at: BTreeMap::new(),
            fired: BTreeMap::new(),
        }
    }

    /// How many of each kind the rule fired in this image.
    pub(crate) fn fired(&self) -> impl Iterator<Item = (AlertEvent, u64)> + '_ {
        self.fired.iter().map(|(e, n)| (*e, *n))
    }

    /// Carry on from an earlier supervisor's record: its streak and when
    /// each kind last went out, so a respawn does not alert again within
    /// `min_interval`.
    pub(crate) fn resume(&mut self, streak: u32, prev: Option<&AlertsInfo>) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut sent = Vec::new();
        for (name, at) in prev.map(|a| &a.sent).into_iter().flatten() {
            let (Some(event), Some(t)) = (AlertEvent::from_name(name), state::parse_timestamp(at))
            else {
                continue;
            };
            // Times from the future (a clock step) count as now.
            let ago = wall.duration_since(t).unwrap_or_default();
            if let Some(then) = now.checked_sub(ago) {
                sent.push((event, then));
                self.sent_at.insert(event, t.min(wall));
            }
        }
        self.rules.resume(streak, sent);
    }

    /// Something the machine noted; `message` words each alert it fires.
    pub(crate) fn see(
        &mut self,
        seen: Seen,
        message: impl Fn(AlertEvent) -> String,
        ctx: &Context,
    ) {
        for fire in self.rules.see(seen, Instant::now()) {
            let text = message(fire.event);
            self.send(fire, &text, ctx);
        }
    }

    /// The earliest of the rule's and the running hook's deadlines.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match (self.rules.deadline(), self.hooks.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the running alert command's timeout ends, if one runs.
    pub(crate) fn hook_deadline(&self) -> Option<Instant> {
        self.hooks.deadline()
    }

    /// A deadline passed; `message` says what the tick may be about.
    pub(crate) fn tick(&mut self, message: impl Fn(AlertEvent) -> String, ctx: &Context) {
        let now = Instant::now();
        self.hooks.tick(now);
        for fire in self.rules.tick(now) {
            let text = message(fire.event);
            self.send(fire, &text, ctx);
        }
    }

    pub(crate) fn hooks(&mut self) -> &mut Hooks {
        &mut self.hooks
    }

    /// For `status` and for a successor.
    pub(crate) fn info(&self) -> AlertsInfo {
        let last = self.hooks.last();
        AlertsInfo {
            last_event: last.map(|l| l.event.as_str().to_owned()),
            last_at: last.map(|l| state::timestamp(l.at)),
            last_result: last.and_then(|l| l.result.clone()),
            sent: self
                .sent_at
                .iter()
                .map(|(e, t)| (e.as_str().to_owned(), state::timestamp_ms(*t)))
                .collect(),
        }
    }

    fn send(&mut self, fire: Fire, message: &str, ctx: &Context) {
        self.sent_at.insert(fire.event, SystemTime::now());
        *self.fired.entry(fire.event).or_default() += 1;
        let job = Job {
            event: fire.event,
            env: environment(fire, message, ctx),
        };
        if let Err(event) = self.hooks.push(job) {
            warn!(
                "alert {}: {} alerts wait already; this one is counted, not sent",
                event.as_str(),
                super::hooks::QUEUE
            );
            self.rules.dropped(event);
        }
    }
}

/// SPEC.md's `SUPERVISOR_*` variables; empty where they do not apply.
fn environment(fire: Fire, message: &str, ctx: &Context) -> Vec<(String, String)> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let (code, signal) = match ctx.last_exit.map(|e| e.kind) {
        Some(ExitKind::Code(c)) => (Some(c.to_string()), None),
        Some(ExitKind::Signal(s)) => (None, Some(signal_name(s))),
        None => (None, None),
    };
    [
        ("SUPERVISOR_EVENT", fire.event.as_str().to_owned()),
        ("SUPERVISOR_MESSAGE", message.replace('\n', " ")),
        ("SUPERVISOR_CONFIG", ctx.config.clone()),
        ("SUPERVISOR_PID", ctx.pid.to_string()),
        (
            "SUPERVISOR_CHILD_PID",
            opt(ctx.child_pid.map(|p| p.to_string())),
        ),
        ("SUPERVISOR_EXIT_CODE", opt(code)),
        ("SUPERVISOR_EXIT_SIGNAL", opt(signal)),
        ("SUPERVISOR_STREAK", ctx.streak.to_string()),
        ("SUPERVISOR_RESTARTS", ctx.restarts.to_string()),
        (
            "SUPERVISOR_PORT_HOLDER_PID",
            opt(ctx.port_holder.as_ref().map(|(p, _)| p.to_string())),
        ),
        (
            "SUPERVISOR_PORT_HOLDER_COMMAND",
            opt(ctx.port_holder.as_ref().map(|(_, c)| c.clone())),
        ),
        ("SUPERVISOR_SUPPRESSED", fire.suppressed.to_string()),
        ("SUPERVISOR_LOG_DIR", ctx.log_dir.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
