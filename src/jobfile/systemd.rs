//! The systemd units for a config: `NAME.service`, which runs `supervisor
//! run` (based on the shipped `systemd/supervisor.service`, see
//! docs/systemd.md), and the optional `NAME.socket`, with which systemd
//! holds the listening socket and passes it to the supervisor
//! (`LISTEN_FDS`), so the port stays open while the supervisor itself
//! restarts.
//!
//! Unit files are plain text, but their values are not: systemd expands
//! `%` specifiers nearly everywhere, `$VAR` in command lines, and splits
//! command lines at spaces with its own quoting. Every value from the
//! config or the environment goes through [`exec_word`] or [`escape`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{
    choose_name, existing, print_all, shell_quote, stop_budget_secs, write_job_file, Existing,
    JobSpec, Written,
};
use crate::cli::SystemdAction;
use crate::daemon::{HOOK_AT_EXIT, KILL_GRACE, PUMP_DRAIN, STOP_MARGIN};
use crate::exit::{self, Fatal};

/// Which manager runs the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The system manager; `run_as` is `(User=, Group=)`, `None` for root.
    System { run_as: Option<(String, String)> },
    /// A user manager (`systemctl --user`).
    User,
}

/// `%` written so systemd does not read it as a specifier.
pub(crate) fn escape(s: &str) -> String {
    s.replace('%', "%%")
}

/// One argument of an `ExecStart=` command line: specifiers and variables
/// made literal (`%%`, `$$`), and quoted when systemd would otherwise split
/// it or read its quotes and backslashes.
pub(crate) fn exec_word(s: &str) -> String {
    quote_if_needed(escape(s).replace('$', "$$"))
}

/// The program of an `ExecStart=` line: systemd expands specifiers in it
/// but not variables, so a `$` stays as it is.
pub(crate) fn exec_program(s: &str) -> String {
    quote_if_needed(escape(s))
}

/// systemd refuses an executable path holding a quote or a backslash
/// ("Executable name contains special characters"), however it is quoted.
pub(crate) fn check_program(path: &str) -> Result<(), String> {
    match path.chars().find(|c| matches!(c, '"' | '\'' | '\\')) {
        Some(c) => Err(format!(
            "this binary's path {path:?} contains {c:?}, which systemd refuses in an \
             executable path; run a copy (or a link) from a folder without it"
        )),
        None => Ok(()),
    }
}

fn quote_if_needed(s: String) -> String {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        s
    } else {
        quoted(&s)
    }
}

/// A double-quoted value with C-style escapes for `\` and `"`.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', r"\\").replace('"', "\\\""))
}

/// `NAME.service`.
pub(crate) fn service(spec: &JobSpec, name: &str, scope: &Scope) -> String {
    let mut u = String::new();
    let w = &mut u;
    let _ = writeln!(
        w,
        "# {name}.service: `supervisor run` for {}",
        spec.config.display()
    );
    let _ = writeln!(
        w,
        "# Written by `supervisor systemd print`; regenerate it rather than edit it."
    );
    let _ = writeln!(
        w,
        "# With {name}.socket active, systemd holds the port and passes it (LISTEN_FDS);"
    );
    let _ = writeln!(w, "# without it, the supervisor binds the port itself.");
    let _ = writeln!(w, "\n[Unit]");
    let _ = writeln!(
        w,
        "Description={}",
        escape(&format!(
            "supervisor for {} on {}",
            spec.fd_name, spec.address
        ))
    );
    if let Scope::System { .. } = scope {
        // A user manager has no network-online.target.
        let _ = writeln!(w, "After=network-online.target");
        let _ = writeln!(w, "Wants=network-online.target");
    }
    let _ = writeln!(w, "\n[Service]");
    let _ = writeln!(
        w,
        "# Started as soon as the supervisor runs; `supervisor status` tells whether the\n\
         # child serves. Type=notify would make `systemctl start` fail while the child\n\
         # cannot get ready (e.g. the port is held): see docs/systemd.md."
    );
    let _ = writeln!(w, "Type=simple");
    let _ = writeln!(
        w,
        "ExecStart={} --config {} run",
        exec_program(&spec.program.display().to_string()),
        exec_word(&spec.config.display().to_string())
    );
    let _ = writeln!(
        w,
        "# `systemctl reload`: re-execute in place with the config and binary on disk (same\n\
         # pid, socket and child; waits for the new image, fails if the reload does)."
    );
    let _ = writeln!(
        w,
        "ExecReload={} --config {} reload",
        exec_program(&spec.program.display().to_string()),
        exec_word(&spec.config.display().to_string())
    );
    let _ = writeln!(
        w,
        "WorkingDirectory={}",
        escape(&spec.workdir.display().to_string())
    );
    for left in &spec.path_left_out {
        let _ = writeln!(
            w,
            "# Left out of PATH (root must not run programs from a folder another user could write): {left}"
        );
    }
    if let Some(path) = &spec.path_env {
        let _ = writeln!(
            w,
            "# PATH as it was when this unit was written: the same venv and tools."
        );
        let _ = writeln!(
            w,
            "Environment={}",
            quoted(&escape(&format!("PATH={path}")))
        );
    }
    match scope {
        Scope::System {
            run_as: Some((user, group)),
        } => {
            let _ = writeln!(w, "User={}", escape(user));
            let _ = writeln!(w, "Group={}", escape(group));
        }
        Scope::System { run_as: None } => {
            let _ = writeln!(
                w,
                "# No User=: written as root, so it runs as root; the config must then name\n\
                 # child.user (or say child.allow_root = true)."
            );
        }
        Scope::User => {}
    }
    let _ = writeln!(
        w,
        "# Exit 0 (stopped on request, or another supervisor holds the lock) is final;\n\
         # exit 1, 78 or a signal is restarted."
    );
    let _ = writeln!(w, "Restart=on-failure");
    let _ = writeln!(w, "RestartSec=5s");
    let _ = writeln!(
        w,
        "# SIGTERM to the supervisor alone: it stops the child's process group itself\n\
         # (stop_signal, then SIGKILL after child.stop_timeout). Whatever is left after\n\
         # TimeoutStopSec is SIGKILLed."
    );
    let _ = writeln!(w, "KillMode=mixed");
    let _ = writeln!(w, "KillSignal=SIGTERM");
    let _ = writeln!(
        w,
        "# child.stop_timeout {} + kill grace {} + alert command at exit {} and its kill grace {} + log drain {} + margin {}, rounded up.",
        secs(spec.stop_timeout),
        secs(KILL_GRACE),
        secs(HOOK_AT_EXIT),
        secs(KILL_GRACE),
        secs(PUMP_DRAIN),
        secs(STOP_MARGIN)
    );
    let _ = writeln!(w, "TimeoutStopSec={}s", stop_budget_secs(spec.stop_timeout));
    let _ = writeln!(w, "\n[Install]");
    let target = match scope {
        Scope::System { .. } => "multi-user.target",
        Scope::User => "default.target",
    };
    let _ = writeln!(w, "WantedBy={target}");
    u
}

/// `NAME.socket`. Fails when `listen.name` cannot be a systemd value.
pub(crate) fn socket(spec: &JobSpec, name: &str) -> Result<String, String> {
    if spec.fd_name.trim() != spec.fd_name {
        return Err(format!(
            "listen.name {:?} starts or ends with a space, which a unit file drops",
            spec.fd_name
        ));
    }
    let mut u = String::new();
    let w = &mut u;
    let _ = writeln!(
        w,
        "# {name}.socket: systemd holds {} for {name}.service.",
        spec.address
    );
    let _ = writeln!(
        w,
        "# Optional. With it, the port stays open (clients wait in the backlog) while\n\
         # the supervisor itself restarts, crashes or is upgraded. Start it before the\n\
         # service: a supervisor already running holds the port, and this unit could\n\
         # not bind it. While it is active, a connection starts the service again\n\
         # after a stop: stop {name}.socket too to stop for good."
    );
    let _ = writeln!(w, "\n[Unit]");
    let _ = writeln!(
        w,
        "Description={}",
        escape(&format!("listening socket of {name} ({})", spec.address))
    );
    let _ = writeln!(w, "\n[Socket]");
    let _ = writeln!(w, "ListenStream={}", escape(&spec.address.to_string()));
    let _ = writeln!(w, "Backlog={}", spec.backlog);
    let _ = writeln!(
        w,
        "# LISTEN_FDNAMES: the supervisor picks the socket named listen.name."
    );
    let _ = writeln!(w, "FileDescriptorName={}", escape(&spec.fd_name));
    let _ = writeln!(w, "Service={name}.service");
    let _ = writeln!(w, "\n[Install]");
    let _ = writeln!(w, "WantedBy=sockets.target");
    Ok(u)
}

fn secs(d: std::time::Duration) -> String {
    crate::text::human(d)
}

pub(crate) fn command(config: &Path, action: SystemdAction) -> Result<(), Fatal> {
    let SystemdAction::Print {
        user,
        unit,
        dir,
        force,
    } = action;
    let (spec, _) = JobSpec::resolve(config)?;
    check_program(&spec.program.display().to_string()).map_err(Fatal::failure)?;
    let unit = unit.map(|u| u.strip_suffix(".service").map_or(u.clone(), str::to_owned));
    let name = choose_name("unit name", "--unit", unit.as_deref(), '-', &spec)?;
    let scope = match user {
        true => Scope::User,
        false => Scope::System { run_as: run_as() },
    };
    let mut spec = spec;
    if scope == (Scope::System { run_as: None }) {
        root_path(&mut spec, &crate::pathdirs::Disk);
    }
    let service = service(&spec, &name, &scope);
    let socket = socket(&spec, &name).map_err(|e| Fatal::with_code(exit::CONFIG, e))?;
    let files = [
        (format!("{name}.service"), service),
        (format!("{name}.socket"), socket),
    ];
    let Some(dir) = dir else {
        let mut out = String::new();
        for (i, (file, text)) in files.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "# file: {file}");
            out.push_str(text);
        }
        return print_all(out.as_bytes());
    };

    // Both files or neither: refuse before writing the first.
    if !force {
        for (file, text) in &files {
            let path = dir.join(file);
            if existing(&path, text.as_bytes())? == Existing::Different {
                return Err(Fatal::with_code(
                    exit::FAILURE,
                    format!(
                        "{} exists with other contents; nothing written (--force replaces it)",
                        path.display()
                    ),
                ));
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        Fatal::with_code(
            exit::FAILURE,
            format!("cannot create {}: {e}; nothing written", dir.display()),
        )
    })?;
    for (file, text) in &files {
        let path = dir.join(file);
        let what = match write_job_file(&path, text.as_bytes(), 0o644, force)? {
            Written::Created => "wrote",
            Written::Replaced => "replaced",
            Written::Unchanged => "unchanged:",
        };
        crate::out!("{what} {}\n", path.display());
    }
    let ctl = if user {
        "systemctl --user"
    } else {
        "systemctl"
    };
    let n = shell_quote(&name);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let config_home = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
    let folders = unit_folders(user, home.as_deref(), config_home.as_deref());
    let absolute = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
    if !folders.contains(&absolute) {
        // systemd loads units only from its own folders: a --dir elsewhere
        // (a checkout, /tmp) needs the copy before daemon-reload finds them.
        let to = folders.first().map_or("the unit folder".into(), |f| {
            shell_quote(&f.display().to_string())
        });
        let from: Vec<String> = files
            .iter()
            .map(|(file, _)| shell_quote(&dir.join(file).display().to_string()))
            .collect();
        crate::out!(
            "next: {ctl} reads units only from its unit folders, not {}: copy them there\n  \
             {}cp {} {to}/\n",
            dir.display(),
            if user || nix::unistd::geteuid().is_root() {
                ""
            } else {
                "sudo "
            },
            from.join(" ")
        );
    }
    crate::out!(
        "next: {ctl} daemon-reload, then one of\n  \
         {ctl} enable --now {n}.service    # the supervisor binds the port\n  \
         {ctl} enable --now {n}.socket {n}.service    # systemd holds the port\n"
    );
    Ok(())
}

/// A unit without `User=` runs as root: its `PATH` keeps only folders
/// that root (and no group or other) may write, all the way up, and each
/// one left out is named on stderr and in a comment in the unit.
fn root_path(spec: &mut JobSpec, fs: &impl crate::pathdirs::Lookup) {
    let Some(path) = spec.path_env.take() else {
        return;
    };
    let (kept, left) = crate::pathdirs::filter(std::ffi::OsStr::new(&path), &|uid| uid != 0, fs);
    for l in &left {
        crate::say!(
            "supervisor: PATH folder {:?} is left out of the unit, which runs as root: {}",
            l.dir,
            l.why
        );
    }
    spec.path_left_out = left
        .into_iter()
        .map(|l| format!("{:?} ({})", l.dir, l.why))
        .collect();
    spec.path_env = Some(String::from_utf8_lossy(&kept).into_owned());
}

/// The folders systemd loads units from (systemd.unit(5)), the one for an
/// administrator's own units first.
fn unit_folders(user: bool, home: Option<&Path>, config_home: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if user {
        let config = config_home
            .map(Path::to_path_buf)
            .or_else(|| home.map(|h| h.join(".config")));
        out.extend(config.map(|c| c.join("systemd/user")));
        out.extend(home.map(|h| h.join(".local/share/systemd/user")));
        out.extend(
            [
                "/etc/systemd/user",
                "/usr/lib/systemd/user",
                "/usr/local/lib/systemd/user",
            ]
            .map(PathBuf::from),
        );
    } else {
        out.extend(
            [
                "/etc/systemd/system",
                "/run/systemd/system",
                "/usr/local/lib/systemd/system",
                "/usr/lib/systemd/system",
                "/lib/systemd/system",
            ]
            .map(PathBuf::from),
        );
    }
    out
}

/// `User=`/`Group=` for a system unit: whoever writes it, unless root.
fn run_as() -> Option<(String, String)> {
    use nix::unistd::{getgid, getuid, Group, User};
    let uid = getuid();
    if uid.is_root() {
        return None;
    }
    Some(match User::from_uid(uid).ok().flatten() {
        Some(u) => {
            let group = Group::from_gid(u.gid)
                .ok()
                .flatten()
                .map_or_else(|| u.gid.to_string(), |g| g.name);
            (u.name, group)
        }
        None => (uid.to_string(), getgid().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unit_folders_are_where_systemd_looks_first_the_admins() {
        let home = Path::new("/home/ann");
        let user = unit_folders(true, Some(home), None);
        assert_eq!(user[0], Path::new("/home/ann/.config/systemd/user"));
        assert!(user.contains(&PathBuf::from("/etc/systemd/user")));
        let xdg = unit_folders(true, Some(home), Some(Path::new("/cfg")));
        assert_eq!(xdg[0], Path::new("/cfg/systemd/user"));
        let system = unit_folders(false, Some(home), None);
        assert_eq!(system[0], Path::new("/etc/systemd/system"));
        assert!(!system.iter().any(|f| f.starts_with(home)));
    }

    fn spec() -> JobSpec {
        JobSpec {
            program: "/usr/local/bin/supervisor".into(),
            config: "/opt/sm/supervisor.toml".into(),
            workdir: "/opt/sm".into(),
            log_dir: "/opt/sm/logs".into(),
            path_env: Some("/opt/sm/.venv/bin:/usr/bin:/bin".into()),
            path_left_out: Vec::new(),
            stop_timeout: Duration::from_secs(10),
            address: "127.0.0.1:8420".parse().unwrap(),
            backlog: 1024,
            fd_name: "http".into(),
            nofile: None,
        }
    }

    /// `Key=value` lines, comments and sections dropped.
    fn keys(text: &str) -> Vec<(&str, &str)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .collect()
    }

    fn get<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
        keys(text)
            .into_iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn exec_words() {
        let cases = [
            ("/usr/local/bin/supervisor", "/usr/local/bin/supervisor"),
            ("run", "run"),
            ("/a b/c.toml", "\"/a b/c.toml\""),
            ("/50%/x", "/50%%/x"),
            ("/$HOME/x", "/$$HOME/x"),
            ("/a\"b", "\"/a\\\"b\""),
            ("/a\\b", "\"/a\\\\b\""),
            ("/it's", "\"/it's\""),
            ("/x;y", "\"/x;y\""),
            ("", "\"\""),
        ];
        for (s, want) in cases {
            assert_eq!(exec_word(s), want, "{s:?}");
        }
        assert_eq!(exec_program("/a b/$x/50%"), "\"/a b/$x/50%%\"");
        assert_eq!(check_program("/a b/$x;&<%/supervisor"), Ok(()));
        for bad in ["/a'b/supervisor", "/a\"b/s", "/a\\b/s"] {
            assert!(check_program(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn system_service() {
        let run_as = Some(("sm".to_string(), "staff".to_string()));
        let u = service(&spec(), "supervisor-http-8420", &Scope::System { run_as });
        assert_eq!(
            get(&u, "ExecStart"),
            ["/usr/local/bin/supervisor --config /opt/sm/supervisor.toml run"]
        );
        assert_eq!(get(&u, "Type"), ["simple"]);
        assert_eq!(get(&u, "Restart"), ["on-failure"]);
        assert_eq!(get(&u, "KillMode"), ["mixed"]);
        assert_eq!(get(&u, "TimeoutStopSec"), ["29s"]);
        let reload = get(&u, "ExecReload");
        assert!(
            reload.len() == 1 && reload[0].ends_with(" reload") && reload[0].contains("--config"),
            "{reload:?}"
        );
        assert_eq!(get(&u, "User"), ["sm"]);
        assert_eq!(get(&u, "Group"), ["staff"]);
        assert_eq!(get(&u, "WorkingDirectory"), ["/opt/sm"]);
        assert_eq!(
            get(&u, "Environment"),
            ["\"PATH=/opt/sm/.venv/bin:/usr/bin:/bin\""]
        );
        assert_eq!(get(&u, "WantedBy"), ["multi-user.target"]);
        assert_eq!(get(&u, "After"), ["network-online.target"]);
    }

    #[test]
    fn a_root_unit_leaves_out_path_folders_another_user_could_write() {
        use crate::pathdirs::{Lookup, Node};
        use std::path::{Path, PathBuf};
        /// /home/me is uid 1000's; everything else root's; /srv/tmp 0777.
        struct Fake;
        impl Lookup for Fake {
            fn node(&self, p: &Path) -> Option<Node> {
                let s = p.to_str()?;
                let uid = if s.starts_with("/home/me") { 1000 } else { 0 };
                let mode = if s == "/srv/tmp" { 0o40777 } else { 0o40755 };
                Some(Node {
                    uid,
                    mode,
                    is_link: false,
                })
            }
            fn resolve(&self, p: &Path) -> Option<PathBuf> {
                Some(p.to_owned())
            }
        }
        let mut sp = spec();
        sp.path_env = Some("/home/me/.cargo/bin:/usr/bin:/srv/tmp:/bin".into());
        root_path(&mut sp, &Fake);
        assert_eq!(sp.path_env.as_deref(), Some("/usr/bin:/bin"));
        let u = service(&sp, "x", &Scope::System { run_as: None });
        assert_eq!(get(&u, "Environment"), ["\"PATH=/usr/bin:/bin\""]);
        assert!(u.contains("# Left out of PATH"), "{u}");
        assert!(
            u.contains("\"/home/me/.cargo/bin\" (owned by uid 1000"),
            "{u}"
        );
        assert!(u.contains("\"/srv/tmp\" (writable by anyone)"), "{u}");
    }

    #[test]
    fn user_and_root_services() {
        let u = service(&spec(), "x", &Scope::User);
        assert!(get(&u, "User").is_empty() && get(&u, "Group").is_empty());
        assert_eq!(get(&u, "WantedBy"), ["default.target"]);
        assert!(
            get(&u, "After").is_empty(),
            "no network-online.target for a user manager"
        );
        let root = service(&spec(), "x", &Scope::System { run_as: None });
        assert!(get(&root, "User").is_empty());
        assert_eq!(get(&root, "WantedBy"), ["multi-user.target"]);
    }

    #[test]
    fn awkward_values_are_escaped() {
        let mut sp = spec();
        sp.config = "/srv/a b/50%/$x/supervisor.toml".into();
        sp.workdir = "/srv/a b/50%/$x".into();
        sp.path_env = Some("/p%d:/q\"r".into());
        sp.fd_name = "h%t".into();
        let u = service(&sp, "x", &Scope::User);
        assert_eq!(
            get(&u, "ExecStart"),
            ["/usr/local/bin/supervisor --config \"/srv/a b/50%%/$$x/supervisor.toml\" run"]
        );
        assert_eq!(get(&u, "WorkingDirectory"), ["/srv/a b/50%%/$x"]);
        assert_eq!(get(&u, "Environment"), ["\"PATH=/p%%d:/q\\\"r\""]);
        assert_eq!(
            get(&u, "Description"),
            ["supervisor for h%%t on 127.0.0.1:8420"]
        );
        let s = socket(&sp, "x").unwrap();
        assert_eq!(get(&s, "FileDescriptorName"), ["h%%t"]);
        sp.fd_name = " web".into();
        assert!(socket(&sp, "x").unwrap_err().contains("space"));
    }

    #[test]
    fn socket_unit() {
        let s = socket(&spec(), "supervisor-http-8420").unwrap();
        assert_eq!(get(&s, "ListenStream"), ["127.0.0.1:8420"]);
        assert_eq!(get(&s, "Backlog"), ["1024"]);
        assert_eq!(get(&s, "FileDescriptorName"), ["http"]);
        assert_eq!(get(&s, "Service"), ["supervisor-http-8420.service"]);
        assert_eq!(get(&s, "WantedBy"), ["sockets.target"]);
        let mut v6 = spec();
        v6.address = "[::1]:9000".parse().unwrap();
        assert_eq!(
            get(&socket(&v6, "x").unwrap(), "ListenStream"),
            ["[::1]:9000"]
        );
    }
}
