//! Who the child runs as and the environment it gets: the inherited
//! variables minus the protocols' own, what login would set for a dropped
//! user, `child.env`, then the socket-activation and notify variables.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::Recipe;

/// The variables of the socket-activation and notify protocols: whatever
/// our own service manager set for *us* must never reach the child, and
/// only the supervisor sets them for the child.
pub(crate) const PROTOCOL_ENV: &[&str] = &[
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// The child's environment, without `LISTEN_PID` (its pid exists only
/// after fork): the inherited variables minus the protocols' own, what
/// login would set for a dropped user, `child.env`, then the protocols'
/// variables. Sorted by name.
pub(crate) fn environment(
    recipe: &Recipe,
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut vars: BTreeMap<OsString, OsString> = inherited
        .into_iter()
        .filter(|(k, _)| !PROTOCOL_ENV.iter().any(|p| k.as_bytes() == p.as_bytes()))
        .collect();
    if let Some(c) = &recipe.creds {
        // What login would set, so the child does not write into root's home.
        vars.insert("USER".into(), c.name.clone().into());
        vars.insert("LOGNAME".into(), c.name.clone().into());
        vars.insert("HOME".into(), c.home.clone().into());
    }
    for (k, v) in &recipe.env {
        vars.insert(k.into(), v.into());
    }
    vars.insert("LISTEN_FDS".into(), "1".into());
    vars.insert("LISTEN_FDNAMES".into(), recipe.fd_name.clone().into());
    if let Some(socket) = &recipe.notify_socket {
        vars.insert("NOTIFY_SOCKET".into(), socket.into());
        if let Some(w) = recipe.watchdog {
            vars.insert("WATCHDOG_USEC".into(), w.as_micros().to_string().into());
        }
    }
    vars.into_iter().collect()
}

/// Who the child runs as, when that differs from the supervisor (handed
/// to the image `reload` executes, which runs the child as the same).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Creds {
    pub(crate) name: String,
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
    pub(crate) home: PathBuf,
}

/// Decide who the child runs as: `Ok(None)` to keep our own identity.
/// A child never runs as root by accident: as root, the config must name a
/// `child.user` to drop to, or say `child.allow_root = true`.
pub(crate) fn credentials(user: Option<&str>, allow_root: bool) -> Result<Option<Creds>, String> {
    use nix::unistd::{Uid, User};
    let euid = Uid::effective();
    let refuse_root = || {
        "refusing to run the child as root: set child.user to drop privileges, \
         or child.allow_root = true to run it as root on purpose"
            .to_owned()
    };
    let Some(name) = user else {
        return if euid.is_root() && !allow_root {
            Err(refuse_root())
        } else {
            Ok(None)
        };
    };
    let found = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    };
    let u = match found {
        Ok(Some(u)) => u,
        Ok(None) => return Err(format!("child.user: no user {name:?} on this machine")),
        Err(e) => return Err(format!("child.user: cannot look up {name:?}: {e}")),
    };
    if u.uid.is_root() && !allow_root {
        return Err(refuse_root());
    }
    if u.uid == euid {
        return Ok(None);
    }
    if !euid.is_root() {
        return Err(format!(
            "child.user = {name:?} needs the supervisor to run as root (it runs as uid {euid})"
        ));
    }
    Ok(Some(Creds {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    }))
}
