//! Trust by owner, all the way up: the folders the supervisor writes in and
//! the files root runs or reads, and the held folders it writes through.
//!
//! A folder is only as safe as every folder above it: whoever can rename an
//! ancestor can swap everything below it. [`walk`] resolves a path one
//! component at a time (following links itself, so each link and the
//! folder holding it are judged too) and asks [`judge`] about each: it must
//! belong to root or to us and not be writable by group or others, except
//! that a sticky folder (like `/tmp`) may be writable above a folder that
//! is ours (the sticky bit keeps others from renaming what we own there).
//!
//! Missing folders are made by descriptor ([`create_dir`]): each with
//! `mkdirat` in the held folder above it, opened `O_NOFOLLOW` and judged
//! before the next, so a link planted between the check and the creation
//! is refused, never followed.
//!
//! [`Dir`] is a folder checked so and then held open (`O_DIRECTORY |
//! O_NOFOLLOW`) for the supervisor's life; every file in it is reached
//! relative to that descriptor (`openat`, `renameat`, `unlinkat`, all with
//! `O_NOFOLLOW`), so a folder swapped for a link later is never written
//! through. The same rules serve both users: the state and log folders
//! (root or us), and, when we are root, what root runs or reads (then
//! "us" is root, so root only).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};

/// The sticky bit (`S_ISVTX`, whose type differs between platforms).
const STICKY: u32 = 0o1000;

/// Links followed in one walk before giving up (Linux's own limit).
const MAX_LINKS: u32 = 40;

/// What is wrong with one component on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flaw {
    /// Owned by a user who is neither root nor us.
    Owner(u32),
    /// Writable by group or others (the mode), and not a sticky folder
    /// above one of ours.
    Writable(u32),
}

/// The rule for one component: `owner` and `mode` from `lstat`, `me` our
/// effective uid, `above_ours` whether a folder or file that must itself
/// be ours lies below it in the walk (only then may a sticky folder be
/// writable by others: they cannot rename what we own in it).
pub(crate) fn judge(me: u32, owner: u32, mode: u32, above_ours: bool) -> Result<(), Flaw> {
    if owner != 0 && owner != me {
        return Err(Flaw::Owner(owner));
    }
    let sticky = mode & STICKY != 0;
    if mode & 0o022 != 0 && !(sticky && above_ours) {
        return Err(Flaw::Writable(mode & 0o7777));
    }
    Ok(())
}

/// A link's own mode means nothing; only who owns it (in a sticky folder,
/// its owner may replace it).
pub(crate) fn judge_link(me: u32, owner: u32) -> Result<(), Flaw> {
    if owner != 0 && owner != me {
        return Err(Flaw::Owner(owner));
    }
    Ok(())
}

/// Why a path cannot be trusted.
#[derive(Debug)]
pub(crate) enum Why {
    /// `at` (the path itself, a folder above it, or a link on the way).
    Flawed { at: PathBuf, flaw: Flaw, link: bool },
    /// The path itself is a symbolic link where one is not allowed.
    FinalLink,
    /// A component above the end is not a folder.
    NotAFolder(PathBuf),
    /// Too many links.
    Loop,
    /// `lstat` or `readlink` failed on `at`.
    Io(PathBuf, io::Error),
}

/// What a walk found at the end of the path.
#[derive(Debug)]
pub(crate) struct Walked {
    /// The last component's metadata (links followed); `None` when the
    /// path does not exist (then its deepest existing folder was judged
    /// as one that will hold a folder of ours).
    pub(crate) meta: Option<Metadata>,
    /// When the path does not exist: its deepest existing folder, as the
    /// walk reached it (every link resolved, so a path of folders only),
    /// that folder's metadata, and the names still to make below it.
    pub(crate) missing: Option<Missing>,
}

/// The part of a path that does not exist yet, below the folder the walk
/// reached and judged.
#[derive(Debug)]
pub(crate) struct Missing {
    pub(crate) existing: PathBuf,
    pub(crate) existing_meta: Metadata,
    pub(crate) names: Vec<OsString>,
}

/// Our effective uid.
pub(crate) fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Resolve `path` component by component and judge each folder, link and
/// the end itself for a process running as `me`. `final_link`: whether the
/// path itself may be a link (followed, and judged as any other); else it
/// is refused with [`Why::FinalLink`]. A missing path is no error: what
/// exists of it is checked, and the caller creates the rest and walks
/// again.
pub(crate) fn walk(path: &Path, me: u32, final_link: bool) -> Result<Walked, Why> {
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        let cwd = std::env::current_dir().map_err(|e| Why::Io(PathBuf::from("."), e))?;
        cwd.join(path)
    };
    let mut queue: VecDeque<OsString> = names(&abs);
    let mut cur = PathBuf::from("/");
    let root = fs::symlink_metadata(&cur).map_err(|e| Why::Io(cur.clone(), e))?;
    judge(me, root.uid(), root.mode(), !queue.is_empty()).map_err(|flaw| Why::Flawed {
        at: cur.clone(),
        flaw,
        link: false,
    })?;
    let mut meta = root;
    let mut links = 0;
    // Whether the component being looked at is the path's own last one
    // (and not a piece of a link's target still to be walked).
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            cur.pop();
            meta = fs::symlink_metadata(&cur).map_err(|e| Why::Io(cur.clone(), e))?;
            // Judged on the way down as a folder above; as the path's own
            // end it is judged as the folder itself (a sticky one is not
            // enough then).
            if queue.is_empty() {
                judge(me, meta.uid(), meta.mode(), false).map_err(|flaw| Why::Flawed {
                    at: cur.clone(),
                    flaw,
                    link: false,
                })?;
            }
            continue;
        }
        let next = cur.join(&name);
        let last = queue.is_empty();
        let m = match fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut names = vec![name];
                names.extend(queue);
                return Ok(Walked {
                    meta: None,
                    missing: Some(Missing {
                        existing: cur,
                        existing_meta: meta,
                        names,
                    }),
                });
            }
            Err(e) => return Err(Why::Io(next, e)),
        };
        if m.file_type().is_symlink() {
            if last && !final_link {
                return Err(Why::FinalLink);
            }
            judge_link(me, m.uid()).map_err(|flaw| Why::Flawed {
                at: next.clone(),
                flaw,
                link: true,
            })?;
            links += 1;
            if links > MAX_LINKS {
                return Err(Why::Loop);
            }
            let target = fs::read_link(&next).map_err(|e| Why::Io(next.clone(), e))?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            for n in names(&target).into_iter().rev() {
                queue.push_front(n);
            }
            continue;
        }
        judge(me, m.uid(), m.mode(), !last).map_err(|flaw| Why::Flawed {
            at: next.clone(),
            flaw,
            link: false,
        })?;
        if !last && !m.is_dir() {
            return Err(Why::NotAFolder(next));
        }
        cur = next;
        meta = m;
    }
    Ok(Walked {
        meta: Some(meta),
        missing: None,
    })
}

/// A path's normal names, `..` kept (resolved against the physical folder
/// reached so far), `.` and the root dropped.
fn names(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// `uid 1000 (alice)`, or just the number when the user database has no name.
pub(crate) fn owner_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("uid {uid} ({})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// The words for a flaw found at `at` on the way to `path`.
pub(crate) fn describe(path: &Path, at: &Path, flaw: &Flaw, link: bool, me: u32) -> String {
    let trusted = if me == 0 {
        "root".to_owned()
    } else {
        format!("root or us (uid {me})")
    };
    let subject = if link {
        format!("the symbolic link {} on the way", at.display())
    } else if at == path {
        String::new()
    } else {
        format!("the folder {} above it", at.display())
    };
    let lead = if subject.is_empty() {
        String::new()
    } else {
        format!("{subject} ")
    };
    let consequence = if subject.is_empty() {
        "refusing to use it"
    } else {
        "whoever can change it can swap what lies below; refusing to use it"
    };
    match flaw {
        Flaw::Owner(uid) => format!(
            "{lead}is owned by {}, not by {trusted}; {consequence}",
            owner_name(*uid)
        ),
        Flaw::Writable(mode) => format!(
            "{lead}is writable by group or others (mode {mode:o}, owner {}){}; {consequence} \
             (run `chmod go-w {}`)",
            fs::symlink_metadata(at).map_or("unknown".into(), |m| owner_name(m.uid())),
            if mode & STICKY != 0 {
                ", and sticky is only enough above a folder of ours"
            } else {
                ""
            },
            at.display()
        ),
    }
}

// ------------------------------------------------------------------ folders

/// Why a folder of ours cannot be used. Maps to exit 78: nothing started.
#[derive(Debug)]
pub(crate) struct DirError {
    pub(crate) what: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) reason: String,
}

impl std::fmt::Display for DirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.what, self.path.display(), self.reason)
    }
}

impl From<DirError> for crate::exit::Fatal {
    fn from(e: DirError) -> Self {
        crate::exit::Fatal::config(e.to_string()).then(crate::exit::NOTHING_STARTED)
    }
}

impl From<DirError> for io::Error {
    fn from(e: DirError) -> Self {
        io::Error::other(e.to_string())
    }
}

/// Refuse a folder that another local user could tamper with: one that is
/// a symbolic link, not a folder, not ours, writable by group or others,
/// or below a folder (or link) someone else could change. A missing folder
/// is fine (`Ok(false)`) when what exists above it is: it is created later
/// by [`create_dir`], which checks again.
pub(crate) fn check_dir(what: &'static str, path: &Path) -> Result<bool, DirError> {
    check_walked(what, path).map(|w| w.missing.is_none())
}

/// [`check_dir`], with what the walk found.
fn check_walked(what: &'static str, path: &Path) -> Result<Walked, DirError> {
    let err = |reason: String| DirError {
        what,
        path: path.to_owned(),
        reason,
    };
    let me = euid();
    // A file or device where the folder goes is named as such first (its
    // mode means nothing as a folder's).
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir() && !m.file_type().is_symlink()) {
        return Err(err("exists and is not a folder".into()));
    }
    match walk(path, me, false) {
        Ok(Walked { meta: Some(m), .. }) if !m.is_dir() => {
            Err(err("exists and is not a folder".into()))
        }
        Ok(w) => Ok(w),
        Err(Why::FinalLink) => Err(err(
            "is a symbolic link; refusing to follow it (use the real path)".into(),
        )),
        Err(Why::Flawed { at, flaw, link }) => {
            // The folder itself keeps its short words.
            Err(err(describe(path, &at, &flaw, link, me)))
        }
        Err(Why::NotAFolder(at)) => {
            Err(err(format!("{} on the way is not a folder", at.display())))
        }
        Err(Why::Loop) => Err(err("too many symbolic links on the way".into())),
        Err(Why::Io(at, e)) => Err(err(format!("cannot inspect {}: {e}", at.display()))),
    }
}

/// Check, create a missing folder (and missing parents) with `mode`, then
/// check again: a link or someone else's folder planted in between is
/// still refused. The missing folders are made by descriptor
/// ([`create_missing`]), never through a path walked again.
pub(crate) fn create_dir(what: &'static str, path: &Path, mode: u32) -> Result<(), DirError> {
    let Some(missing) = check_walked(what, path)?.missing else {
        return Ok(());
    };
    create_missing(&missing, mode, euid()).map_err(|reason| DirError {
        what,
        path: path.to_owned(),
        reason,
    })?;
    check_dir(what, path).map(|_| ())
}

/// Make the folders `m` names below the deepest existing folder the walk
/// reached and judged, each with `mode`. That folder is opened once by its
/// resolved path (folders only, each root's or ours, none that another
/// user may rename) and must be the one judged; each missing folder is
/// made with `mkdirat` in the held descriptor of the folder above it, then
/// opened from it with `O_DIRECTORY | O_NOFOLLOW` and judged ([`judge`],
/// from `fstat`) before the next is made inside it. Nothing below is
/// resolved by path: a link planted where a missing folder goes (in a
/// sticky folder such as `/tmp`, by another user, between the check and
/// the creation) is refused, never followed, and nothing is made at its
/// target; a folder someone else made there in that moment is refused by
/// its owner. The reason, for a [`DirError`].
fn create_missing(m: &Missing, mode: u32, me: u32) -> Result<(), String> {
    let base = &m.existing;
    let fd = nix::fcntl::open(
        base,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        format!(
            "cannot open {} to create it there: {}",
            base.display(),
            nix_io(e)
        )
    })?;
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let opened = nix::sys::stat::fstat(fd.as_raw_fd())
        .map_err(|e| format!("cannot inspect {}: {}", base.display(), nix_io(e)))?;
    if !same(&opened, &m.existing_meta) {
        return Err(format!(
            "{} was replaced while the folders below it were being created; refusing to use it",
            base.display()
        ));
    }
    let mut held: Vec<(OwnedFd, PathBuf)> = vec![(fd, base.clone())];
    for (i, name) in m.names.iter().enumerate() {
        let last = i + 1 == m.names.len();
        if name == ".." {
            // Back up to a folder made (and held) here; above the existing
            // part it would be a walk by path again.
            if held.len() < 2 {
                return Err(
                    "cannot create it: `..` below a missing folder leads out of \
                            the folders made for it; use the real path"
                        .into(),
                );
            }
            held.pop();
            continue;
        }
        let Some((parent, parent_path)) = held.last() else {
            return Err("cannot create it: no folder to create it in".into());
        };
        let at = parent_path.join(name);
        match nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            name.as_os_str(),
            Mode::from_bits_truncate(mode as libc::mode_t),
        ) {
            // Made by someone else since the check: opened and judged below.
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(format!("cannot create {}: {}", at.display(), nix_io(e))),
        }
        let fd = nix::fcntl::openat(
            Some(parent.as_raw_fd()),
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => format!(
                "{} became a symbolic link or a file while it was being created (someone \
                 else can create names in {}); refusing to follow it",
                at.display(),
                parent_path.display()
            ),
            e => format!(
                "cannot open {} after creating it: {}",
                at.display(),
                nix_io(e)
            ),
        })?;
        // SAFETY: `openat` just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = nix::sys::stat::fstat(fd.as_raw_fd())
            .map_err(|e| format!("cannot inspect {}: {}", at.display(), nix_io(e)))?;
        // The types differ between platforms.
        #[allow(clippy::unnecessary_cast)]
        judge(me, st.st_uid as u32, st.st_mode as u32, !last).map_err(|flaw| {
            format!(
                "{} was made by someone else while it was being created: {}",
                at.display(),
                describe(&at, &at, &flaw, false, me)
            )
        })?;
        held.push((fd, at));
    }
    Ok(())
}

/// A checked folder held open for the supervisor's life; files in it are
/// reached only relative to it.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Whether `a` (from `fstat`/`fstatat`) and `b` are the same file.
// The casts are needed where `st_dev` is an `i32` (macOS).
#[allow(clippy::unnecessary_cast)]
pub(crate) fn same(a: &FileStat, b: &Metadata) -> bool {
    a.st_dev as u64 == b.dev() && a.st_ino as u64 == b.ino()
}

impl Dir {
    /// Check the folder (all the way up), create it with `mode` if it is
    /// missing, and open it without following a link; the folder opened
    /// must be the one checked.
    pub(crate) fn open(what: &'static str, path: &Path, mode: u32) -> Result<Dir, DirError> {
        create_dir(what, path, mode)?;
        let err = |reason: String| DirError {
            what,
            path: path.to_owned(),
            reason,
        };
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(format!("cannot open it: {}", nix_io(e))))?;
        // SAFETY: `open` just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let dir = Dir {
            fd,
            path: path.to_owned(),
        };
        // Checked, then opened: still the same folder?
        let checked =
            fs::symlink_metadata(path).map_err(|e| err(format!("cannot inspect it: {e}")))?;
        let opened = dir
            .stat()
            .map_err(|e| err(format!("cannot inspect it: {e}")))?;
        if !same(&opened, &checked) {
            return Err(err(
                "was replaced while being opened; refusing to use it".into()
            ));
        }
        Ok(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn stat(&self) -> io::Result<FileStat> {
        nix::sys::stat::fstat(self.fd.as_raw_fd()).map_err(nix_io)
    }

    /// The held folder was removed (no name is left for it).
    pub(crate) fn is_removed(&self) -> bool {
        self.stat().is_ok_and(|s| s.st_nlink == 0)
    }

    /// Whether the configured path still leads to the held folder (it may
    /// have been removed, moved, or replaced by a link or another folder).
    pub(crate) fn is_at_path(&self) -> bool {
        match (self.stat(), fs::symlink_metadata(&self.path)) {
            (Ok(s), Ok(m)) => s.st_nlink > 0 && same(&s, &m),
            _ => false,
        }
    }

    /// Open `name` in this folder, never through a link, close-on-exec.
    /// `flags` add to that (`O_CREAT`, `O_APPEND`, ...).
    pub(crate) fn open_file(&self, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<File> {
        open_at(self.fd.as_fd(), name, flags, mode)
    }

    /// `lstat` of `name` in this folder.
    pub(crate) fn stat_at(&self, name: &OsStr) -> io::Result<FileStat> {
        check_name(name)?;
        nix::sys::stat::fstatat(
            Some(self.fd.as_raw_fd()),
            name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(nix_io)
    }

    /// Rename `from` to `to`, both in this folder (links are renamed, never
    /// followed).
    pub(crate) fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rename_at(self.fd.as_fd(), from, to)
    }

    /// Remove the file `name` from this folder.
    pub(crate) fn unlink(&self, name: &OsStr) -> io::Result<()> {
        unlink_at(self.fd.as_fd(), name)
    }
}

/// Open `name` in the folder `dir`, never through a link, close-on-exec.
pub(crate) fn open_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: OFlag,
    mode: u32,
) -> io::Result<File> {
    check_name(name)?;
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode as libc::mode_t),
    )
    .map_err(nix_io)?;
    // SAFETY: `openat` just returned this descriptor; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Rename `from` to `to`, both in the folder `dir`.
pub(crate) fn rename_at(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    check_name(from)?;
    check_name(to)?;
    let fd = dir.as_raw_fd();
    nix::fcntl::renameat(Some(fd), from, Some(fd), to).map_err(nix_io)
}

/// Remove the file `name` from the folder `dir`.
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    check_name(name)?;
    nix::unistd::unlinkat(
        Some(dir.as_raw_fd()),
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    )
    .map_err(nix_io)
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Only plain names are reached relative to a held folder: no `/`, no
/// `..`, nothing that could lead out of it.
fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------ root's files

/// When we are root: `path` (a file root runs or reads) and every folder
/// above it, and every link on the way, must be root's and not writable by
/// group or others. `what` names it for people, `remedy` says what to do.
/// Nothing to check for any other user (they run what they own).
pub(crate) fn check_root_file(what: &str, path: &Path, remedy: &str) -> Result<(), String> {
    if euid() != 0 {
        return Ok(());
    }
    check_file_for(0, what, path, remedy)
}

/// [`check_root_file`] for a given uid (tests use another one).
pub(crate) fn check_file_for(me: u32, what: &str, path: &Path, remedy: &str) -> Result<(), String> {
    let head = format!("{what} {}", path.display());
    match walk(path, me, true) {
        Ok(Walked { meta: Some(_), .. }) => Ok(()),
        // Not there: whoever reports it missing says so.
        Ok(Walked { meta: None, .. }) => Ok(()),
        Err(Why::Flawed { at, flaw, link }) => {
            let who = if me == 0 { "root" } else { "this supervisor" };
            let subject = if link {
                format!("the symbolic link {} on the way", at.display())
            } else if at == path {
                "it".to_owned()
            } else {
                at.display().to_string()
            };
            let problem = match flaw {
                Flaw::Owner(uid) => format!("{subject} is owned by {}", owner_name(uid)),
                Flaw::Writable(mode) => format!(
                    "{subject} is writable by group or others (mode {mode:o}, owner {})",
                    fs::symlink_metadata(&at).map_or("unknown".into(), |m| owner_name(m.uid()))
                ),
            };
            Err(format!(
                "{head}: {problem}, so someone other than root could change what {who} \
                 runs or reads; {remedy}"
            ))
        }
        Err(Why::FinalLink) => Ok(()), // not asked for (links are followed)
        Err(Why::NotAFolder(at)) => Err(format!("{head}: {} is not a folder", at.display())),
        Err(Why::Loop) => Err(format!("{head}: too many symbolic links on the way")),
        Err(Why::Io(at, e)) => Err(format!("{head}: cannot inspect {}: {e}", at.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ME: u32 = 1000;
    const OTHER: u32 = 1001;

    #[test]
    fn the_rule_for_one_component() {
        // (owner, mode, above_ours) -> verdict, for a process running as ME.
        let table: &[(u32, u32, bool, Result<(), Flaw>)] = &[
            (0, 0o755, true, Ok(())),
            (0, 0o755, false, Ok(())),
            (ME, 0o700, false, Ok(())),
            (ME, 0o750, true, Ok(())),
            (OTHER, 0o755, true, Err(Flaw::Owner(OTHER))),
            (OTHER, 0o700, false, Err(Flaw::Owner(OTHER))),
            // /tmp: sticky and world-writable, fine above a folder of ours...
            (0, 0o1777, true, Ok(())),
            // ...not as the folder itself.
            (0, 0o1777, false, Err(Flaw::Writable(0o1777))),
            // Writable without the sticky bit: never.
            (0, 0o777, true, Err(Flaw::Writable(0o777))),
            (ME, 0o775, true, Err(Flaw::Writable(0o775))),
            (ME, 0o757, true, Err(Flaw::Writable(0o757))),
            (ME, 0o2770, false, Err(Flaw::Writable(0o2770))),
            // A sticky folder owned by someone else: they may rename anything.
            (OTHER, 0o1777, true, Err(Flaw::Owner(OTHER))),
            // Readable by all is fine.
            (ME, 0o755, false, Ok(())),
            (0, 0o4755, false, Ok(())),
        ];
        for (owner, mode, above, want) in table {
            assert_eq!(
                &judge(ME, *owner, *mode, *above),
                want,
                "owner {owner} mode {mode:o} above_ours {above}"
            );
        }
        // As root, only root is trusted.
        assert_eq!(judge(0, ME, 0o755, true), Err(Flaw::Owner(ME)));
        assert_eq!(judge(0, 0, 0o755, true), Ok(()));
        assert_eq!(judge_link(ME, 0), Ok(()));
        assert_eq!(judge_link(ME, ME), Ok(()));
        assert_eq!(judge_link(ME, OTHER), Err(Flaw::Owner(OTHER)));
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A temp dir under /tmp, ours, mode 0700.
    fn base() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_chain_is_judged_all_the_way_up() {
        let t = base();
        let me = euid();
        let a = t.path().join("a");
        let b = a.join("b");
        fs::create_dir_all(&b).unwrap();
        chmod(&a, 0o755);
        assert!(check_dir("state dir", &b).unwrap());
        // Missing: fine while what exists is.
        assert!(!check_dir("state dir", &b.join("c/d")).unwrap());
        // A writable folder above, not sticky: named.
        chmod(&a, 0o777);
        let e = check_dir("state dir", &b).unwrap_err().to_string();
        assert!(
            e.contains(&format!("the folder {} above it", a.display())),
            "{e}"
        );
        assert!(e.contains("writable by group or others"), "{e}");
        let e = check_dir("state dir", &b.join("c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&a.display().to_string()), "{e}");
        // Sticky: fine above a folder of ours, not as the folder itself.
        chmod(&a, 0o1777);
        assert!(check_dir("state dir", &b).unwrap());
        assert!(check_dir("state dir", &a).is_err());
        chmod(&a, 0o755);
        // A link above, in a folder of ours, to a folder of ours: followed.
        let l = t.path().join("l");
        std::os::unix::fs::symlink(&a, &l).unwrap();
        assert!(check_dir("state dir", &l.join("b")).unwrap());
        let w = walk(&l.join("b"), me, false).unwrap();
        assert_eq!(w.meta.unwrap().ino(), fs::metadata(&b).unwrap().ino());
        // ...but the target's chain counts: a writable folder above the target.
        chmod(&a, 0o777);
        let e = check_dir("state dir", &l.join("b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&a.display().to_string()), "{e}");
        chmod(&a, 0o755);
        // `..` is resolved physically.
        assert!(check_dir("state dir", &b.join("../b")).unwrap());
        // A path ending in `..` names the folder above, judged as the folder
        // itself: sticky and world-writable is fine above ours, not as it.
        chmod(&a, 0o1777);
        assert!(check_dir("state dir", &b).unwrap());
        let e = check_dir("state dir", &b.join(".."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        chmod(&a, 0o755);
        assert!(check_dir("state dir", &b.join("..")).unwrap());
        // The folder itself a link: refused as before.
        let e = check_dir("state dir", &l).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // A file on the way.
        fs::write(a.join("f"), "").unwrap();
        let e = check_dir("state dir", &a.join("f/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a folder"), "{e}");
        // A loop.
        std::os::unix::fs::symlink("loop", t.path().join("loop")).unwrap();
        let e = check_dir("state dir", &t.path().join("loop/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("too many"), "{e}");
    }

    #[test]
    fn others_folders_on_the_way_are_named_with_their_owner() {
        if euid() != 0 {
            eprintln!("skipped: only root can give a folder to another user");
            return;
        }
        let t = base();
        let a = t.path().join("a");
        let b = a.join("b");
        fs::create_dir_all(&b).unwrap();
        chmod(&a, 0o755);
        std::os::unix::fs::chown(&a, Some(65534), None).unwrap();
        let e = check_dir("log dir", &b).unwrap_err().to_string();
        assert!(
            e.contains(&a.display().to_string()) && e.contains("uid 65534"),
            "{e}"
        );
        // A link owned by another user, in a sticky folder of ours.
        std::os::unix::fs::chown(&a, Some(0), None).unwrap();
        let s = t.path().join("s");
        fs::create_dir(&s).unwrap();
        chmod(&s, 0o1777);
        std::os::unix::fs::symlink(&b, s.join("l")).unwrap();
        std::os::unix::fs::lchown(s.join("l"), Some(65534), None).unwrap();
        let e = check_dir("log dir", &s.join("l/x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("symbolic link") && e.contains("uid 65534"),
            "{e}"
        );
    }

    /// Issue 20's leftover E: between `check_dir` (the folder missing, a
    /// sticky folder above it) and the creation, another user plants a
    /// link where a missing folder goes. The creation (here called right
    /// after planting it, as the race would have it) must refuse and make
    /// nothing at the link's target; made by path (`create_dir_all`), an
    /// empty 0700 folder of ours appeared there.
    #[test]
    fn a_link_planted_where_a_missing_folder_goes_is_never_followed() {
        let t = base();
        let me = euid();
        let sticky = t.path().join("sticky");
        fs::create_dir(&sticky).unwrap();
        chmod(&sticky, 0o1777);
        let target = t.path().join("target");
        fs::create_dir(&target).unwrap();
        let state = sticky.join("a/b/state");
        // The check: missing, fine (what `create_dir` does first).
        let checked = || check_walked("state dir", &state).unwrap().missing.unwrap();
        let missing = checked();
        assert_eq!(missing.existing, sticky);
        assert_eq!(missing.names, ["a", "b", "state"]);
        // The race: the link appears after the check.
        std::os::unix::fs::symlink(&target, sticky.join("a")).unwrap();
        let e = create_missing(&missing, 0o700, me).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "{e}");
        // Through `create_dir`, the link is there at the check: refused
        // as before (a link of ours is followed and judged; its target
        // would be made: that is the walk's rule, not a race).
        fs::remove_file(sticky.join("a")).unwrap();
        // A file in its place: refused too.
        let missing = checked();
        fs::write(sticky.join("a"), "").unwrap();
        assert!(create_missing(&missing, 0o700, me).is_err());
        fs::remove_file(sticky.join("a")).unwrap();
        // A folder someone else made there in that moment: refused by its
        // owner (as root, given to nobody; otherwise judged for another
        // uid than ours, which only root could chown it to).
        let missing = checked();
        fs::create_dir(sticky.join("a")).unwrap();
        let judged_as = if me == 0 {
            std::os::unix::fs::chown(sticky.join("a"), Some(65534), None).unwrap();
            me
        } else {
            me + 1
        };
        let e = create_missing(&missing, 0o700, judged_as).unwrap_err();
        assert!(e.contains("owned by"), "{e}");
        assert!(!sticky.join("a/b").exists(), "nothing made inside it");
        fs::remove_dir(sticky.join("a")).unwrap();
        // The existing folder itself replaced after the check: refused.
        let inner = t.path().join("inner");
        fs::create_dir(&inner).unwrap();
        let missing = check_walked("state dir", &inner.join("x"))
            .unwrap()
            .missing
            .unwrap();
        fs::rename(&inner, t.path().join("inner.old")).unwrap();
        fs::create_dir(&inner).unwrap();
        let e = create_missing(&missing, 0o700, me).unwrap_err();
        assert!(e.contains("replaced"), "{e}");
        // Nothing planted: every missing folder is made, with the mode.
        create_dir("state dir", &state, 0o700).unwrap();
        for d in [sticky.join("a"), sticky.join("a/b"), state.clone()] {
            let m = fs::symlink_metadata(&d).unwrap();
            assert!(m.is_dir() && m.mode() & 0o777 == 0o700, "{}", d.display());
        }
        // `..` among the missing folders backs up to one made here.
        let odd = sticky.join("c/../d");
        create_dir("state dir", &odd, 0o700).unwrap();
        assert!(sticky.join("c").is_dir() && sticky.join("d").is_dir());
    }

    #[test]
    fn held_folders_are_never_written_through_a_link() {
        let t = base();
        let d = t.path().join("logs");
        let dir = Dir::open("log dir", &d, 0o750).unwrap();
        let f = dir
            .open_file(OsStr::new("a.log"), OFlag::O_WRONLY | OFlag::O_CREAT, 0o600)
            .unwrap();
        drop(f);
        assert!(dir.is_at_path());
        // Swap the folder for a link to another one.
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::rename(&d, t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &d).unwrap();
        assert!(!dir.is_at_path());
        assert!(!dir.is_removed());
        dir.open_file(OsStr::new("b.log"), OFlag::O_WRONLY | OFlag::O_CREAT, 0o600)
            .unwrap();
        dir.rename(OsStr::new("b.log"), OsStr::new("b.log.1"))
            .unwrap();
        assert!(t.path().join("moved/b.log.1").exists());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        // Names that could leave the folder are refused.
        for bad in ["", ".", "..", "../x", "a/b"] {
            assert!(dir.unlink(OsStr::new(bad)).is_err(), "{bad}");
        }
        // A link inside is never followed.
        std::os::unix::fs::symlink(elsewhere.join("t"), t.path().join("moved/l")).unwrap();
        assert!(dir
            .open_file(OsStr::new("l"), OFlag::O_WRONLY | OFlag::O_CREAT, 0o600)
            .is_err());
        assert!(!elsewhere.join("t").exists());
        // Opening the link path itself is refused.
        assert!(Dir::open("log dir", &d, 0o750).is_err());
        // Removed: known.
        fs::remove_dir_all(t.path().join("moved")).unwrap();
        assert!(dir.is_removed());
    }

    #[test]
    fn root_files_must_be_roots_all_the_way_up() {
        let t = base();
        let me = euid();
        let f = t.path().join("hook");
        fs::write(&f, "").unwrap();
        chmod(&f, 0o755);
        assert_eq!(check_file_for(me, "x", &f, "fix"), Ok(()));
        chmod(&f, 0o775);
        let e = check_file_for(me, "the alert program", &f, "fix").unwrap_err();
        assert!(e.contains("it is writable by group or others"), "{e}");
        chmod(&f, 0o755);
        // A link to it is followed and judged.
        let l = t.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert_eq!(check_file_for(me, "x", &l, "fix"), Ok(()));
        if me != 0 {
            eprintln!("skipped: only root can give a file to another user");
            return;
        }
        // Owned by another user: named, with the remedy.
        std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
        let e = check_file_for(0, "the alert program", &l, "install it elsewhere").unwrap_err();
        assert!(
            e.contains("uid 65534") && e.contains("install it elsewhere"),
            "{e}"
        );
        std::os::unix::fs::chown(&f, Some(0), None).unwrap();
        // A folder above it owned by another user.
        std::os::unix::fs::chown(t.path(), Some(65534), None).unwrap();
        let e = check_file_for(0, "the config", &f, "fix").unwrap_err();
        assert!(
            e.contains(&t.path().display().to_string()) && e.contains("uid 65534"),
            "{e}"
        );
        std::os::unix::fs::chown(t.path(), Some(0), None).unwrap();
    }
}
