//! The platform layer as this machine answers it: command lines shown on
//! one line, overlapping addresses, folder and socket names, the notify
//! socket, executables, our own start time and memory.

use super::*;
use crate::text::one_line;

#[test]
fn commands_are_shown_on_one_short_line() {
    let table = [
        (
            "python3 -c \nimport x\n\tx.run()",
            "python3 -c import x x.run()",
        ),
        ("a\u{7}b", "a b"),
        ("plain", "plain"),
    ];
    for (raw, want) in table {
        assert_eq!(one_line(raw, 400), want);
    }
    assert_eq!(one_line("abcdef", 3), "abc…");
}

#[test]
fn overlapping_addresses() {
    // (ours, ours dual-stack, theirs, theirs dual-stack, overlap)
    let table: [(&str, bool, &str, bool, bool); 18] = [
        ("127.0.0.1", false, "127.0.0.1", false, true),
        ("127.0.0.1", false, "0.0.0.0", false, true),
        ("0.0.0.0", false, "127.0.0.1", false, true),
        ("127.0.0.1", false, "127.0.0.2", false, false),
        ("127.0.0.1", false, "::", true, true),
        ("127.0.0.1", false, "::", false, false),
        ("0.0.0.0", false, "::", true, true),
        ("::", true, "10.0.0.1", false, true),
        ("::", false, "10.0.0.1", false, false),
        ("::1", false, "::", false, true),
        ("::1", false, "::1", false, true),
        ("::1", false, "127.0.0.1", false, false),
        ("::1", false, "0.0.0.0", false, false),
        ("::ffff:127.0.0.1", false, "127.0.0.1", false, true),
        ("::ffff:127.0.0.1", false, "0.0.0.0", false, true),
        ("127.0.0.1", false, "::ffff:0.0.0.0", false, true),
        ("::ffff:127.0.0.1", false, "::1", false, false),
        ("fe80::1", false, "fe80::2", false, false),
    ];
    for (a, ad, b, bd, want) in table {
        let got = addresses_overlap(a.parse().unwrap(), ad, b.parse().unwrap(), bd);
        assert_eq!(got, want, "{a} (dual {ad}) vs {b} (dual {bd})");
    }
}

#[test]
fn folder_names_are_stable() {
    // FNV-1a's published test vectors.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn the_same_end_written_plainly_or_v4_mapped() {
    let table = [
        ("127.0.0.1:80", "127.0.0.1:80", true),
        ("127.0.0.1:80", "[::ffff:127.0.0.1]:80", true),
        ("[::ffff:10.0.0.1]:9", "10.0.0.1:9", true),
        ("127.0.0.1:80", "127.0.0.1:81", false),
        ("127.0.0.1:80", "[::1]:80", false),
        ("[::1]:80", "[::1]:80", true),
    ];
    for (a, b, want) in table {
        assert_eq!(
            same_endpoint(a.parse().unwrap(), b.parse().unwrap()),
            want,
            "{a} {b}"
        );
    }
}

#[test]
fn where_the_notify_socket_file_goes() {
    let tmp = Path::new("/tmp");
    let short = Path::new("/srv/app/run");
    let long = PathBuf::from(format!("/Users/someone/{}/run", "deep/".repeat(20)));
    let private = |dir: &Path, me: u32| {
        tmp.join(format!(
            "supervisor-{me}-{:016x}",
            fnv1a(dir.as_os_str().as_encoded_bytes())
        ))
    };
    // (state dir, our uid, child uid, want private dir mode)
    let table: [(&Path, u32, Option<u32>, Option<u32>); 5] = [
        (short, 501, None, None),
        (short, 501, Some(501), None),
        (short, 0, Some(501), Some(0o711)),
        (&long, 501, None, Some(0o700)),
        (&long, 0, Some(70), Some(0o711)),
    ];
    for (state_dir, me, child, mode) in table {
        let got = notify_place(state_dir, tmp, me, child);
        let want = match mode {
            None => NotifyPlace {
                path: state_dir.join("notify.sock"),
                private_dir: None,
            },
            Some(mode) => NotifyPlace {
                path: private(state_dir, me).join("notify.sock"),
                private_dir: Some((private(state_dir, me), mode)),
            },
        };
        assert_eq!(got, want, "{state_dir:?} {me} {child:?}");
        assert!(fits_sun_path(&got.path), "{got:?}");
    }
}

#[test]
fn a_second_notify_socket_takes_the_other_name_in_the_same_folder() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("notify.sock");
    let second = dir.path().join("notify.2.sock");
    assert_eq!(sibling_name(&first), "notify.2.sock");
    assert_eq!(sibling_name(&second), "notify.sock");
    // A file of that name a killed supervisor left is replaced.
    std::fs::write(&second, b"stale").unwrap();
    let b = notify_sibling(&first, None).unwrap();
    assert_eq!(b.env_value, second.to_string_lossy());
    assert_eq!(b.cleanup, vec![second.clone()]);
    let meta = std::fs::symlink_metadata(&second).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // It hears what is sent to its file, and only that.
    let d = std::os::unix::net::UnixDatagram::unbound().unwrap();
    d.send_to(b"READY=1", &second).unwrap();
    let mut buf = [0u8; 64];
    let n = b.sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    // And back: the next handover's child takes the first name again,
    // owned by the child's user when it runs as another (as root).
    // SAFETY: geteuid cannot fail.
    let other = (unsafe { libc::geteuid() } == 0).then_some(65534);
    let again = notify_sibling(&second, other).unwrap();
    assert_eq!(again.env_value, first.to_string_lossy());
    if let Some(uid) = other {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::symlink_metadata(&first).unwrap().uid(), uid);
    }
}

/// The second socket's folder is reached by its path again, maybe days
/// after it was checked: a folder that is no longer a private one of ours
/// (a `/tmp` folder removed and made again by another user, a link in
/// its place, one others may write in) gets no socket, and nothing is
/// chmod-ed or chown-ed through it.
#[test]
fn a_second_notify_socket_goes_only_in_a_private_folder_of_ours() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let dir = base.path().join("private");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let serving = dir.join("notify.sock");
    let second = dir.join("notify.2.sock");
    let refused = |serving: &Path, me: u32| {
        let e = notify_sibling_as(serving, None, me)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("no longer a private folder"), "{e}");
    };
    // Another user's folder (judged as a uid that is neither its owner
    // nor root; as root the folder is root's, so pretend to be another).
    let other = if me == 0 { 4242 } else { me + 1 };
    if me != 0 {
        refused(&serving, other);
        assert!(std::fs::symlink_metadata(&second).is_err());
    }
    // Writable by others.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(&serving, me);
    assert!(std::fs::symlink_metadata(&second).is_err());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    // A link in the folder's place.
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    refused(&link.join("notify.sock"), me);
    assert!(std::fs::symlink_metadata(&second).is_err());
    // Ours and private: bound.
    let b = notify_sibling_as(&serving, None, me).unwrap();
    assert_eq!(b.env_value, second.to_string_lossy());
    // As root, a folder given to another user is refused too.
    if me == 0 {
        drop(b);
        std::fs::remove_file(&second).unwrap();
        std::os::unix::fs::chown(&dir, Some(other), None).unwrap();
        refused(&serving, me);
        assert!(std::fs::symlink_metadata(&second).is_err());
    }
}

#[test]
fn private_folders_must_be_ours() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let fresh = base.path().join("fresh");
    make_private_dir(&fresh, me, 0o700).unwrap();
    assert_eq!(mode(&fresh), 0o700);
    // Ours already, too open: tightened (or opened to a child's uid).
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o777)).unwrap();
    make_private_dir(&fresh, me, 0o711).unwrap();
    assert_eq!(mode(&fresh), 0o711);

    let planted_link = base.path().join("link");
    std::os::unix::fs::symlink(&fresh, &planted_link).unwrap();
    let e = make_private_dir(&planted_link, me, 0o700).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");

    let planted_file = base.path().join("file");
    std::fs::write(&planted_file, b"").unwrap();
    assert!(make_private_dir(&planted_file, me, 0o700).is_err());

    // Someone else's folder (uid 0 is us only when the test runs as
    // root; then pretend we are another uid).
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let e = make_private_dir(&theirs, me.wrapping_add(1), 0o700).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("not a folder of ours"), "{e}");
}

/// A pipe whose read end is passed in a datagram; once our own copy is
/// dropped, `closed_everywhere` tells whether the receiver closed its.
struct Probe {
    read: Option<std::io::PipeReader>,
    write: std::io::PipeWriter,
}

impl Probe {
    /// Close-on-exec, like every descriptor the supervisor makes: a
    /// process another test starts meanwhile must not keep the read end.
    fn new() -> Probe {
        let (read, write) = std::io::pipe().unwrap();
        Probe {
            read: Some(read),
            write,
        }
    }

    fn read_fd(&self) -> RawFd {
        self.read.as_ref().map_or(-1, |r| r.as_raw_fd())
    }

    fn closed_everywhere(&mut self) -> bool {
        use std::io::Write;
        self.read = None;
        // Rust ignores SIGPIPE, so a pipe without readers says EPIPE.
        matches!(self.write.write(b"x"), Err(e) if e.raw_os_error() == Some(libc::EPIPE))
    }
}

fn send_with_fds(to: &std::os::unix::net::UnixDatagram, payload: &[u8], fds: &[RawFd]) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(payload)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(to.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
}

#[test]
fn notify_datagrams_with_descriptors_are_read_and_the_descriptors_closed() {
    use std::os::fd::AsFd;
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
    #[cfg(target_os = "linux")]
    nix::sys::socket::setsockopt(&ours, nix::sys::socket::sockopt::PassCred, &true).unwrap();
    let mut buf = [0u8; 4097];

    // A plain message.
    send_with_fds(&theirs, b"READY=1", &[]);
    let d = recv_notify(ours.as_fd(), &mut buf).unwrap();
    assert_eq!(
        (&buf[..d.len], d.truncated, d.fds),
        (&b"READY=1"[..], false, 0)
    );
    if cfg!(target_os = "linux") {
        assert_eq!(d.sender, Some(std::process::id() as i32));
    }

    // Two pipes' read ends and a barrier's write end, as a client
    // passing descriptors and systemd-notify's sd_notify_barrier do.
    let mut probes: Vec<Probe> = (0..2).map(|_| Probe::new()).collect();
    let fds: Vec<RawFd> = probes.iter().map(Probe::read_fd).collect();
    send_with_fds(&theirs, b"READY=1\nSTATUS=two fds", &fds);
    let d = recv_notify(ours.as_fd(), &mut buf).unwrap();
    assert_eq!(&buf[..d.len], b"READY=1\nSTATUS=two fds");
    assert_eq!((d.fds, d.control_truncated), (2, false));
    for p in &mut probes {
        assert!(p.closed_everywhere(), "a passed descriptor is still open");
    }

    // As many descriptors as one datagram can carry (Linux SCM_MAX_FD).
    let mut many = Probe::new();
    let fds = vec![many.read_fd(); 253];
    send_with_fds(&theirs, b"FDSTORE=1", &fds);
    let d = recv_notify(ours.as_fd(), &mut buf).unwrap();
    assert_eq!((&buf[..d.len], d.fds), (&b"FDSTORE=1"[..], 253));
    assert!(many.closed_everywhere());

    // Larger than the buffer: cut, and said so. (XNU's datagram send
    // buffer is 2 KiB by default, which refuses 6,000 bytes with
    // EMSGSIZE on the sender's side: make room first.)
    nix::sys::socket::setsockopt(&theirs, nix::sys::socket::sockopt::SndBuf, &16384).unwrap();
    send_with_fds(&theirs, &[b'A'; 6000], &[]);
    let d = recv_notify(ours.as_fd(), &mut buf).unwrap();
    assert!(d.truncated);
    assert_eq!(d.len, buf.len());

    // Nothing queued: EAGAIN, and the socket still works after all that.
    let e = recv_notify(ours.as_fd(), &mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    send_with_fds(&theirs, b"WATCHDOG=1", &[]);
    let d = recv_notify(ours.as_fd(), &mut buf).unwrap();
    assert_eq!(&buf[..d.len], b"WATCHDOG=1");
}

#[test]
fn socket_paths_that_fit() {
    let room = if cfg!(target_os = "macos") { 104 } else { 108 };
    assert!(fits_sun_path(Path::new(&"a".repeat(room - 1))));
    assert!(!fits_sun_path(Path::new(&"a".repeat(room))));
}

#[test]
fn executables_are_compared_after_resolving_links() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("supervisor");
    std::fs::write(&real, b"").unwrap();
    let link = dir.path().join("bin-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, b"").unwrap();
    assert!(same_file_path(&link, &real));
    assert!(same_file_path(&real, &real));
    assert!(!same_file_path(&link, &other));
    // A path that no longer exists is compared as written.
    let gone = dir.path().join("gone");
    assert!(same_file_path(&gone, &gone));
    assert!(!same_file_path(&gone, &real));
}

#[test]
fn our_own_start_time_and_memory_are_known() {
    let me = std::process::id() as i32;
    assert!(process_start_time(me).is_some());
    assert!(resident_bytes(me).is_some_and(|b| b > 0));
    assert!(is_alive(me));
    assert!(!is_alive(0));
    assert!(boot_id().is_some_and(|b| !b.is_empty()));
    assert!(somaxconn().is_some_and(|n| n > 0));
}

#[cfg(target_os = "linux")]
#[test]
fn proc_locks_lines_name_the_holders_of_one_inode() {
    let text = "\
1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF
2: FLOCK  ADVISORY  WRITE 77 00:2f:1234 0 EOF
3: POSIX  ADVISORY  WRITE 99 fd:01:1234 0 EOF
4: -> FLOCK  ADVISORY  WRITE 5 fd:01:1234 0 EOF
5: FLOCK  ADVISORY  WRITE 6 fd:01:12345 0 EOF
6: FLOCK  ADVISORY  WRITE x fd:01:1234 0 EOF
7: FLOCK  ADVISORY  WRITE 8 fd:01:1234:9 0 EOF
garbage
";
    assert_eq!(
        imp::flock_lines(text, 1234),
        [(4242, (0xfd, 1)), (77, (0, 0x2f))]
    );
    assert!(imp::flock_lines(text, 1).is_empty());
}

#[cfg(target_os = "linux")]
#[test]
fn the_holder_of_our_own_lock_is_us() {
    let dir = std::env::temp_dir().join(format!("sup-flock-{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    let path = dir.join("lock");
    let file = std::fs::File::create(&path).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // Nobody (or, should another file system hold a lock on the same
    // inode number, "cannot tell"), never a holder.
    assert!(!matches!(flock_holder(fd), Some(Some(_))));
    file.try_lock().unwrap();
    assert_eq!(flock_holder(fd), Some(Some(std::process::id() as i32)));
    drop(file);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A local user who made the predictable `/tmp` folder first cannot keep
/// the notify socket from starting: a fresh private folder is used.
#[test]
fn a_squatted_notify_folder_is_passed_over() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (to give a folder to another user)");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let place = notify_place(state.path(), Path::new("/tmp"), 0, Some(65534));
    let (squat, _) = place.private_dir.clone().unwrap();
    std::fs::create_dir(&squat).unwrap();
    std::os::unix::fs::chown(&squat, Some(65534), Some(65534)).unwrap();
    let bound = bind_notify_file(state.path(), Some(65534));
    let _ = std::fs::remove_dir(&squat);
    let bound = bound.expect("a fresh folder instead of the squatted one");
    let path = PathBuf::from(&bound.env_value);
    assert!(
        !path.starts_with(&squat),
        "{path:?} is in the squatted folder"
    );
    assert!(path.exists(), "{path:?}");
    for p in &bound.cleanup {
        let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir(p));
    }
}
