//! The plist for a config (launchd.plist(5)), built with the `plist`
//! crate and written as XML.

use std::path::Path;

use plist::{Dictionary, Value};

use super::super::{stop_budget_secs, JobSpec};
use crate::exit::Fatal;

/// launchd spawns the job at most once per this many seconds. It only
/// matters when the supervisor itself exits within that time of starting
/// (exit 78 for a bad config, exit 1 for an unusable system): a supervisor
/// that ran longer is respawned at once, and the child's own restarts are
/// the supervisor's business, not launchd's. 10 s is launchd's default,
/// written out so it is visible: each failed start adds one line to
/// `launchd.err`, which nothing rotates (about 8,600 lines a day at worst),
/// while a failure that clears by itself (a volume mounted late at login)
/// is retried soon enough.
pub(super) const THROTTLE_INTERVAL: u64 = 10;

/// The plist for `spec`, keys in the order a person reads them.
pub(super) fn plist(spec: &JobSpec, label: &str, sockets: bool) -> Dictionary {
    let s = |p: &Path| Value::String(p.display().to_string());
    let int = |n: u64| Value::Integer(n.into());
    let mut d = Dictionary::new();
    d.insert("Label".into(), label.into());
    d.insert(
        "ProgramArguments".into(),
        Value::Array(vec![
            s(&spec.program),
            "--config".into(),
            s(&spec.config),
            "run".into(),
        ]),
    );
    d.insert("WorkingDirectory".into(), s(&spec.workdir));
    if let Some(path) = &spec.path_env {
        let mut env = Dictionary::new();
        env.insert("PATH".into(), path.as_str().into());
        d.insert("EnvironmentVariables".into(), Value::Dictionary(env));
    }
    d.insert("RunAtLoad".into(), true.into());
    let mut keep_alive = Dictionary::new();
    keep_alive.insert("SuccessfulExit".into(), false.into());
    d.insert("KeepAlive".into(), Value::Dictionary(keep_alive));
    // Unset means "Background"-like light resource limits (CPU and I/O
    // throttled), which the child would inherit.
    d.insert("ProcessType".into(), "Standard".into());
    d.insert("ThrottleInterval".into(), int(THROTTLE_INTERVAL));
    d.insert(
        "ExitTimeOut".into(),
        int(stop_budget_secs(spec.stop_timeout)),
    );
    d.insert(
        "StandardOutPath".into(),
        s(&spec.launchd_log("launchd.out")),
    );
    d.insert(
        "StandardErrorPath".into(),
        s(&spec.launchd_log("launchd.err")),
    );
    if let Some(limits) = soft_limits(spec.nofile) {
        d.insert("SoftResourceLimits".into(), Value::Dictionary(limits));
    }
    if sockets {
        d.insert("Sockets".into(), Value::Dictionary(sockets_entry(spec)));
    }
    d
}

/// `SoftResourceLimits` for `child.limits.nofile`: launchd starts jobs with
/// a soft open-files limit of 256.
fn soft_limits(nofile: Option<u64>) -> Option<Dictionary> {
    let n = nofile?;
    let mut d = Dictionary::new();
    d.insert("NumberOfFiles".into(), Value::Integer(n.into()));
    Some(d)
}

/// One socket named `listen.name` on `listen.address`: launchd binds it and
/// keeps it while the supervisor comes and goes. launchd has no backlog
/// key; the system's (kern.ipc.somaxconn, 128 by default) applies.
fn sockets_entry(spec: &JobSpec) -> Dictionary {
    let (node, family) = match spec.address {
        std::net::SocketAddr::V4(a) => (a.ip().to_string(), "IPv4"),
        std::net::SocketAddr::V6(a) => (a.ip().to_string(), "IPv6"),
    };
    let mut sock = Dictionary::new();
    sock.insert("SockNodeName".into(), node.into());
    sock.insert(
        "SockServiceName".into(),
        spec.address.port().to_string().into(),
    );
    sock.insert("SockFamily".into(), family.into());
    sock.insert("SockType".into(), "stream".into());
    let mut d = Dictionary::new();
    d.insert(spec.fd_name.clone(), Value::Dictionary(sock));
    d
}

/// The plist as XML (what `plutil -lint` and launchd read), newline-ended.
pub(super) fn render(d: &Dictionary) -> Result<Vec<u8>, Fatal> {
    let mut out = Vec::new();
    Value::Dictionary(d.clone())
        .to_writer_xml(&mut out)
        .map_err(|e| Fatal::failure(format!("cannot encode the plist: {e}")))?;
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    Ok(out)
}
