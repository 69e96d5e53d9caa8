//! Where the config's paths lead, checked when it is loaded from disk (so
//! `check-config` and `run` refuse the same files, 78, before anything is
//! created): paths the system cannot open at all (longer than `PATH_MAX`
//! with the supervisor's own file names added, or a component longer than
//! `NAME_MAX`), and relative paths resolved against a config folder that
//! is not a real folder — a config given as `/dev/fd/N`, `/dev/stdin` or
//! `/proc/self/fd/N` whose file has no name to go back to (a pipe, a
//! deleted file), where `state_dir = "run"` would become `/dev/fd/run`.
//! Pure: the paths are looked at, never looked up.

use std::path::Path;

use super::Config;

/// Room left in a folder's path for the longest name the supervisor puts
/// in it (`.state.json.PID.tmp`, `supervisor.log.N`, `.handoff.PID`, with
/// room to spare).
const NAMES: usize = 64;
/// The longest path name component Linux and macOS file systems accept.
const NAME_MAX: usize = 255;

/// Every such problem, one line each, naming the key.
pub(super) fn problems(cfg: &Config) -> Vec<String> {
    let file = cfg.path.display();
    let folder = super::folder(&cfg.path);
    let path_max = usize::try_from(libc::PATH_MAX).unwrap_or(1024);
    let mut out = Vec::new();
    let mut keyed = vec![
        (
            "supervisor.state_dir",
            cfg.supervisor.state_dir.as_path(),
            true,
        ),
        ("log.dir", cfg.log.dir.as_path(), true),
        ("child.cwd", cfg.child.cwd.as_path(), false),
    ];
    // With `log.to = "stdout"` the log folder is never used.
    if cfg.log.to != super::LogTo::Files {
        keyed.retain(|(key, _, _)| *key != "log.dir");
    }
    if not_a_real_folder(folder) {
        for &(key, path, _) in &keyed {
            if path.starts_with(folder) {
                out.push(format!(
                    "{file}: key `{key}`: {} is resolved against the config's folder {}, which is \
                     not a real folder (the config was given as a descriptor or a pipe, e.g. \
                     `--config <(...)`); give the config as a file, or make `{key}` absolute",
                    path.display(),
                    folder.display()
                ));
            }
        }
    }
    for (key, path, holds_files) in keyed {
        let room = if holds_files { NAMES } else { 0 };
        let len = path.as_os_str().len();
        // PATH_MAX counts the terminating NUL.
        if len + room >= path_max {
            out.push(format!(
                "{file}: key `{key}`: the path is {len} bytes long; with the files kept in it \
                 that passes this system's limit of {} bytes (PATH_MAX); use a shorter path",
                path_max - 1
            ));
        } else if let Some(long) = path
            .components()
            .map(|c| c.as_os_str())
            .find(|c| c.len() > NAME_MAX)
        {
            out.push(format!(
                "{file}: key `{key}`: a name in the path is {} bytes long, more than the {NAME_MAX} \
                 a file system accepts: {}...",
                long.len(),
                long.to_string_lossy().chars().take(40).collect::<String>()
            ));
        }
    }
    out
}

/// `/dev/fd`, `/dev`, `/proc/self/fd` and the like: what a descriptor path
/// (`--config <(...)`, `/dev/stdin`) leaves as the folder when the file
/// behind it has no path of its own.
fn not_a_real_folder(folder: &Path) -> bool {
    folder.starts_with("/dev") || folder.starts_with("/proc")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config_at(path: &str, text: &str) -> Config {
        Config::parse(
            &format!(
                "[listen]\naddress = \"127.0.0.1:8420\"\n[child]\ncommand = [\"true\"]\n{text}"
            ),
            Path::new(path),
        )
        .expect("valid config")
    }

    #[test]
    fn folders_that_are_not_real_folders() {
        for (folder, pseudo) in [
            ("/dev/fd", true),
            ("/dev", true),
            ("/proc/self/fd", true),
            ("/proc/4242/fd", true),
            ("/srv/app", false),
            ("/device", false),
            ("/", false),
        ] {
            assert_eq!(not_a_real_folder(Path::new(folder)), pseudo, "{folder}");
        }
    }

    #[test]
    fn relative_paths_against_a_descriptor_folder_are_refused_naming_the_key() {
        // (config path, absolute state_dir, log.dir, cwd?, keys refused)
        let all: &[&str] = &["supervisor.state_dir", "log.dir", "child.cwd"];
        let table: [(&str, [bool; 3], &[&str]); 5] = [
            ("/dev/fd/63", [false, false, false], all),
            ("/proc/self/fd/5", [false, false, false], all),
            ("/dev/fd/63", [true, true, false], &["child.cwd"]),
            ("/dev/fd/63", [true, true, true], &[]),
            ("/srv/app/supervisor.toml", [false, false, false], &[]),
        ];
        for (path, absolute, keys) in table {
            let mut cfg = config_at(path, "");
            let fields = [
                &mut cfg.supervisor.state_dir,
                &mut cfg.log.dir,
                &mut cfg.child.cwd,
            ];
            for (field, abs) in fields.into_iter().zip(absolute) {
                if abs {
                    *field = PathBuf::from("/srv/elsewhere");
                }
            }
            let got = problems(&cfg);
            assert_eq!(got.len(), keys.len(), "{path} {absolute:?}: {got:#?}");
            for (line, key) in got.iter().zip(keys) {
                assert!(line.contains(&format!("key `{key}`")), "{line}");
                assert!(line.contains("not a real folder"), "{line}");
                assert!(line.starts_with(path), "{line}");
            }
        }
    }

    #[test]
    fn paths_too_long_for_the_system_are_refused() {
        let path_max = usize::try_from(libc::PATH_MAX).expect("PATH_MAX");
        let deep = format!("/srv/{}", "d/".repeat(path_max / 2));
        let mut cfg = config_at("/srv/app/supervisor.toml", "");
        cfg.supervisor.state_dir = PathBuf::from(&deep);
        let got = problems(&cfg);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].contains("key `supervisor.state_dir`") && got[0].contains("PATH_MAX"));

        // Just short enough for the files in it.
        let fits = format!(
            "/{}",
            "d".repeat(200) + &"/d".repeat((path_max - NAMES - 203) / 2)
        );
        cfg.supervisor.state_dir = PathBuf::from(&fits);
        assert!(fits.len() + NAMES < path_max);
        assert_eq!(problems(&cfg), Vec::<String>::new());

        cfg.log.dir = PathBuf::from(format!("/srv/{}/logs", "n".repeat(256)));
        cfg.supervisor.state_dir = PathBuf::from("/srv/run");
        let got = problems(&cfg);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].contains("key `log.dir`") && got[0].contains("256 bytes"));
    }
}
