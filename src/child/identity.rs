//! Who the child runs as and the environment it gets. A child of our own
//! user inherits our variables minus the protocols' own; a child of
//! another user (`child.user`) starts clean, as login would start it
//! (unless `child.inherit_env`): whatever the supervisor's environment
//! holds (an alert token, root's tool paths) is not handed across the
//! boundary. Then `child.env`, then the socket-activation and notify
//! variables.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
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
    // Our own bookkeeping across `reload` (sys::STARTED_NOFILE_ENV).
    "SUPERVISOR_STARTED_NOFILE",
];

/// What another user's child keeps of our environment (besides `PATH`,
/// which it keeps without the folders its user could write): the locale
/// and the time zone.
fn kept_across_users(name: &[u8]) -> bool {
    matches!(name, b"LANG" | b"TZ") || name.starts_with(b"LC_")
}

/// The child's environment, without `LISTEN_PID` (its pid exists only
/// after fork). Sorted by name:
///
/// - our own user's child (no `creds`), or `child.inherit_env`: the
///   inherited variables minus the protocols' own;
/// - another user's child: only `PATH` (through `clean_path`, which leaves
///   out the folders that user could write), `LANG`, `LC_*` and `TZ`;
///
/// then for another user `HOME`, `USER`, `LOGNAME` and `SHELL` as login
/// would set them, `child.env`, and the protocols' variables.
pub(crate) fn environment(
    recipe: &Recipe,
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
    clean_path: impl Fn(&OsStr) -> OsString,
) -> Vec<(OsString, OsString)> {
    let clean = recipe.creds.is_some() && !recipe.inherit_env;
    let mut vars: BTreeMap<OsString, OsString> = inherited
        .into_iter()
        .filter(|(k, _)| !PROTOCOL_ENV.iter().any(|p| k.as_bytes() == p.as_bytes()))
        .filter(|(k, _)| !clean || k == "PATH" || kept_across_users(k.as_bytes()))
        .map(|(k, v)| match clean && k == "PATH" {
            true => {
                let v = clean_path(&v);
                (k, v)
            }
            false => (k, v),
        })
        .collect();
    if let Some(c) = &recipe.creds {
        // What login would set, so the child does not write into root's home.
        vars.insert("USER".into(), c.name.clone().into());
        vars.insert("LOGNAME".into(), c.name.clone().into());
        vars.insert("HOME".into(), c.home.clone().into());
        if let Some(shell) = &c.shell {
            vars.insert("SHELL".into(), shell.clone().into());
        }
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
    /// The user's login shell, for `SHELL` (absent in a handoff from an
    /// older version).
    #[serde(default)]
    pub(crate) shell: Option<PathBuf>,
}

/// `PATH` for a child running as `uid`: without the folders that user
/// could write (or that are relative, or missing), each said once on
/// stderr by `run`'s preflight (see [`path_left_out`]).
pub(crate) fn path_for_user(path: &OsStr, uid: libc::uid_t) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let (kept, _) = crate::pathdirs::filter(path, &|owner| owner == uid, &crate::pathdirs::Disk);
    OsString::from_vec(kept)
}

/// The folders of our `PATH` another user's child does not get, and why.
pub(crate) fn path_left_out(uid: libc::uid_t) -> Vec<crate::pathdirs::LeftOut> {
    match std::env::var_os("PATH") {
        Some(path) => {
            crate::pathdirs::filter(&path, &|owner| owner == uid, &crate::pathdirs::Disk).1
        }
        None => Vec::new(),
    }
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
        shell: Some(u.shell).filter(|s| !s.as_os_str().is_empty()),
    }))
}
