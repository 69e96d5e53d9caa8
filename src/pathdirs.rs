//! Which `PATH` folders someone untrusted could write: a program planted
//! there runs as whoever searches that `PATH`. Used for the environment of
//! another user's child (folders its user could write are left out) and
//! for `systemd print` as root (folders a non-root user owns are left out
//! of a root unit).
//!
//! A folder is unsafe when it, or any folder above it, is owned by an
//! untrusted uid, or is writable by its group or by others (above the
//! folder a sticky bit, as on `/tmp`, makes that harmless: nobody can
//! rename what is not theirs). Relative entries (`""`, `.`, `bin`) and
//! folders that do not exist are left out too: what they name depends on
//! the moment and the working folder. Both the path as written and the
//! path it resolves to (through symbolic links) are checked.
//!
//! [`judge`] is pure over a [`Lookup`] of the file system, so the rule is
//! table-tested with made-up folders.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the rule needs to know of one path (no links followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) uid: u32,
    pub(crate) mode: u32,
    pub(crate) is_link: bool,
}

/// The file system as the rule sees it.
pub(crate) trait Lookup {
    /// `lstat`: `None` when the path does not exist or cannot be read.
    fn node(&self, path: &Path) -> Option<Node>;
    /// The path with every link resolved.
    fn resolve(&self, path: &Path) -> Option<PathBuf>;
}

/// The real file system.
pub(crate) struct Disk;

impl Lookup for Disk {
    fn node(&self, path: &Path) -> Option<Node> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(Node {
            uid: m.uid(),
            mode: m.mode(),
            is_link: m.file_type().is_symlink(),
        })
    }
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }
}

/// One folder left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeftOut {
    pub(crate) dir: String,
    pub(crate) why: String,
}

/// Why `dir` is unsafe for a reader that trusts every uid `untrusted`
/// refuses, or `None` when it is safe.
pub(crate) fn why_unsafe(
    dir: &Path,
    untrusted: &dyn Fn(u32) -> bool,
    fs: &impl Lookup,
) -> Option<String> {
    if !dir.is_absolute() {
        return Some("not an absolute path".into());
    }
    let Some(real) = fs.resolve(dir) else {
        return Some("does not exist".into());
    };
    for path in [dir, real.as_path()] {
        for (i, p) in path.ancestors().enumerate() {
            let Some(n) = fs.node(p) else {
                return Some(format!("{} cannot be examined", p.display()));
            };
            let at = |what: &str| match i {
                0 => what.to_owned(),
                _ => format!("{what} (the folder above it, {})", p.display()),
            };
            if untrusted(n.uid) {
                return Some(at(&format!("owned by {}", user_name(n.uid))));
            }
            if n.is_link {
                continue; // a link's own mode means nothing
            }
            let sticky = n.mode & 0o1000 != 0 && i > 0;
            if n.mode & 0o002 != 0 && !sticky {
                return Some(at("writable by anyone"));
            }
            if n.mode & 0o020 != 0 && !sticky {
                return Some(at("writable by its group"));
            }
        }
    }
    None
}

/// `path` split at `:`, without the folders [`why_unsafe`] refuses: what
/// is kept, joined again, and what was left out.
pub(crate) fn filter(
    path: &OsStr,
    untrusted: &dyn Fn(u32) -> bool,
    fs: &impl Lookup,
) -> (Vec<u8>, Vec<LeftOut>) {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut left = Vec::new();
    for entry in path.as_bytes().split(|b| *b == b':') {
        let dir = Path::new(OsStr::from_bytes(entry));
        match why_unsafe(dir, untrusted, fs) {
            None => {
                if !kept.contains(&entry) {
                    kept.push(entry);
                }
            }
            Some(why) => left.push(LeftOut {
                dir: String::from_utf8_lossy(entry).into_owned(),
                why,
            }),
        }
    }
    (kept.join(&b':'), left)
}

/// "uid 1000 (app)".
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("uid {uid} ({})", u.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Fake {
        nodes: BTreeMap<&'static str, Node>,
        links: BTreeMap<&'static str, &'static str>,
    }

    impl Lookup for Fake {
        fn node(&self, path: &Path) -> Option<Node> {
            self.nodes.get(path.to_str()?).copied()
        }
        fn resolve(&self, path: &Path) -> Option<PathBuf> {
            let s = path.to_str()?;
            self.node(path)?;
            Some(PathBuf::from(self.links.get(s).copied().unwrap_or(s)))
        }
    }

    fn dir(uid: u32, mode: u32) -> Node {
        Node {
            uid,
            mode: 0o040000 | mode,
            is_link: false,
        }
    }

    #[test]
    fn folders_someone_else_could_write_are_left_out() {
        let link = Node {
            uid: 0,
            mode: 0o120777,
            is_link: true,
        };
        let fake = Fake {
            nodes: BTreeMap::from([
                ("/", dir(0, 0o755)),
                ("/usr", dir(0, 0o755)),
                ("/usr/bin", dir(0, 0o755)),
                ("/bin", link),
                ("/home", dir(0, 0o755)),
                ("/home/app", dir(1000, 0o755)),
                ("/home/app/bin", dir(1000, 0o755)),
                ("/home/app/root-owned", dir(0, 0o755)),
                ("/opt", dir(0, 0o775)),
                ("/opt/tool", dir(0, 0o755)),
                ("/srv", dir(0, 0o777)),
                ("/tmp", dir(0, 0o1777)),
                ("/tmp/ours", dir(0, 0o755)),
                ("/var", dir(0, 0o755)),
                ("/var/app", dir(1000, 0o755)),
                ("/usr/evil", link),
            ]),
            links: BTreeMap::from([("/bin", "/usr/bin"), ("/usr/evil", "/var/app")]),
        };
        let app = |uid: u32| uid == 1000;
        // (PATH entry, why it is left out)
        let table: [(&str, Option<&str>); 13] = [
            ("/usr/bin", None),
            ("/bin", None),
            ("/tmp/ours", None),
            ("/home/app/bin", Some("owned by uid 1000")),
            (
                "/home/app/root-owned",
                Some("the folder above it, /home/app"),
            ),
            ("/opt", Some("writable by its group")),
            ("/opt/tool", Some("writable by its group (the folder above")),
            ("/srv", Some("writable by anyone")),
            ("/tmp", Some("writable by anyone")),
            ("/usr/evil", Some("owned by uid 1000")),
            ("", Some("not an absolute path")),
            ("bin", Some("not an absolute path")),
            ("/nonexistent", Some("does not exist")),
        ];
        for (entry, want) in table {
            let got = why_unsafe(Path::new(entry), &app, &fake);
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) if g.contains(w) => {}
                _ => panic!("{entry:?}: want {want:?}, got {got:?}"),
            }
        }
        let (kept, left) = filter(
            OsStr::new("/home/app/bin:/usr/bin::/bin:/usr/bin:/srv"),
            &app,
            &fake,
        );
        assert_eq!(kept, b"/usr/bin:/bin");
        let dirs: Vec<&str> = left.iter().map(|l| l.dir.as_str()).collect();
        assert_eq!(dirs, ["/home/app/bin", "", "/srv"]);
        // For a root unit every non-root owner is untrusted.
        let not_root = |uid: u32| uid != 0;
        let (kept, _) = filter(
            OsStr::new("/usr/bin:/home/app/root-owned"),
            &not_root,
            &fake,
        );
        assert_eq!(kept, b"/usr/bin");
    }
}
