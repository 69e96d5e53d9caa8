//! Files as evidence: the tail of a log for a failure message, and
//! snapshots of whole folders (kind, mode, inode, size, mtime, content) to
//! prove that a refused or losing run changed nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The last `max` bytes of a file, or why it could not be read.
pub(super) fn tail(path: &Path, max: usize) -> String {
    match fs::read(path) {
        Ok(b) => {
            let from = b.len().saturating_sub(max);
            let cut = if from > 0 { "...[cut]...\n" } else { "" };
            format!("{cut}{}", String::from_utf8_lossy(&b[from..]))
        }
        Err(e) => format!("<{e}>"),
    }
}

/// What a snapshot records about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub content: Vec<u8>,
}

/// Every path under `roots` (and the roots): kind, mode, inode, size,
/// mtime and content. Never follows symlinks.
pub fn snapshot(roots: &[&Path]) -> BTreeMap<PathBuf, Entry> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        let kind = if m.is_dir() {
            "dir"
        } else if m.file_type().is_symlink() {
            "symlink"
        } else {
            "file"
        };
        let content = if m.is_file() {
            fs::read(p).unwrap_or_default()
        } else {
            Vec::new()
        };
        out.insert(
            p.to_path_buf(),
            Entry {
                kind,
                mode: m.mode(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                content,
            },
        );
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for r in roots {
        walk(r, &mut out);
    }
    out
}

/// Human-readable differences between two snapshots.
pub fn snapshot_diff(a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>) -> String {
    let mut d = String::new();
    for (p, ea) in a {
        match b.get(p) {
            None => {
                let _ = writeln!(d, "removed: {}", p.display());
            }
            Some(eb) if eb != ea => {
                let _ = writeln!(
                    d,
                    "changed: {} (kind {}->{}, mode {:o}->{:o}, ino {}->{}, size {}->{}, mtime {}->{}, content {})",
                    p.display(),
                    ea.kind,
                    eb.kind,
                    ea.mode,
                    eb.mode,
                    ea.ino,
                    eb.ino,
                    ea.size,
                    eb.size,
                    ea.mtime_ns,
                    eb.mtime_ns,
                    if ea.content == eb.content { "same" } else { "differs" }
                );
            }
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            let _ = writeln!(d, "added: {}", p.display());
        }
    }
    d
}
