//! The rotating writer and the sink: size rotation, copytruncate, reopening
//! after a rename or deletion, refused links, dropped lines counted and
//! reported, and tracing writing through the sink.

use super::*;
use std::fs::{self, OpenOptions};

#[test]
fn stderr_lines_each_start_with_supervisor() {
    let table: [(&[u8], &[u8]); 4] = [
        (b"", b""),
        (
            b"WARN child 7 exited\n",
            b"supervisor: WARN child 7 exited\n",
        ),
        (b"no newline", b"supervisor: no newline\n"),
        (
            b"alert said:\n  two\n",
            b"supervisor: alert said:\nsupervisor:   two\n",
        ),
    ];
    for (input, want) in table {
        assert_eq!(
            prefixed(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

fn numbered_lines(from: usize, to: usize) -> Vec<u8> {
    (from..to)
        .flat_map(|i| format!("line {i:07}\n").into_bytes())
        .collect()
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

/// Files `NAME.n` that exist, for n in 1..=10.
fn rotated(p: &Path) -> Vec<u32> {
    (1..=10).filter(|&n| numbered(p, n).exists()).collect()
}

#[test]
fn rotation_keeps_a_contiguous_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("child.log");
    let cap = 256 * 1024;
    let mut f = RotatingFile::open(path.clone(), cap, 3).unwrap();
    let per_line = 13; // "line 0000000\n"
    let total = 5_000_000 / per_line;
    // Mostly small batches, and a few larger than the cap.
    let mut i = 0;
    for size in [1000, 30_000, 1000].iter().cycle() {
        let end = (i + size).min(total);
        f.write_batch(&numbered_lines(i, end)).unwrap();
        i = end;
        if i == total {
            break;
        }
    }
    assert_eq!(rotated(&path), vec![1, 2, 3]);
    let mut all = Vec::new();
    for p in [
        numbered(&path, 3),
        numbered(&path, 2),
        numbered(&path, 1),
        path.clone(),
    ] {
        let data = read(&p);
        assert!(data.len() as u64 <= cap, "{p:?} has {} bytes", data.len());
        if p != path {
            // Filled up to the last whole line that fit.
            assert!(data.len() as u64 > cap - per_line as u64, "{p:?}");
        }
        assert!(data.ends_with(b"\n"), "{p:?}");
        all.extend(data);
    }
    assert_eq!(f.size(), read(&path).len() as u64);
    let first: usize = std::str::from_utf8(&all[5..12]).unwrap().parse().unwrap();
    assert_eq!(all, numbered_lines(first, total));
}

#[test]
fn max_files_one_and_zero() {
    for max_files in [1, 0] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut f = RotatingFile::open(path.clone(), 100, max_files).unwrap();
        for i in 0..50 {
            f.write_batch(&numbered_lines(i, i + 1)).unwrap();
        }
        let want: Vec<u32> = (1..=max_files).collect();
        assert_eq!(rotated(&path), want);
        // 7 lines of 13 bytes fit in 100: files hold 0..7, 7..14, ...
        assert_eq!(read(&path), numbered_lines(49, 50));
        if max_files == 1 {
            assert_eq!(read(&numbered(&path, 1)), numbered_lines(42, 49));
        }
    }
}

#[test]
fn over_long_line_goes_alone_into_a_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    let mut f = RotatingFile::open(path.clone(), 100, 5).unwrap();
    let long = [&[b'z'; 300][..], b"\n"].concat();
    f.write_batch(b"a\n").unwrap();
    f.write_batch(&[&long[..], b"b\n"].concat()).unwrap();
    f.write_batch(b"c\n").unwrap();
    assert_eq!(read(&numbered(&path, 2)), b"a\n");
    assert_eq!(read(&numbered(&path, 1)), long);
    assert_eq!(read(&path), b"b\nc\n");
}

#[test]
fn reopen_after_rename_creates_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    let old = dir.path().join("x.log.old");
    let mut f = RotatingFile::open(path.clone(), 1000, 2).unwrap();
    f.write_batch(b"one\n").unwrap();
    fs::rename(&path, &old).unwrap();
    f.write_batch(b"two\n").unwrap(); // still the moved file
    f.reopen().unwrap();
    f.write_batch(b"three\n").unwrap();
    assert_eq!(read(&old), b"one\ntwo\n");
    assert_eq!(read(&path), b"three\n");
    assert_eq!(f.size(), 6);
}

#[test]
fn copytruncate_leaves_no_hole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    let mut f = RotatingFile::open(path.clone(), 1000, 2).unwrap();
    f.write_batch(&[b'a'; 900]).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let batch = [&[b'b'; 199][..], b"\n"].concat();
    f.write_batch(&batch).unwrap();
    assert_eq!(read(&path), batch, "appended at the new end, no NULs");
    assert_eq!(f.size(), 200, "size recounted instead of rotating");
    assert!(rotated(&path).is_empty());
}

#[test]
fn refuses_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    std::os::unix::fs::symlink(dir.path().join("target"), &path).unwrap();
    assert!(RotatingFile::open(path, 1000, 2).is_err());
    assert!(!dir.path().join("target").exists());
}

fn notice_count(line: &[u8]) -> u64 {
    let s = std::str::from_utf8(line).unwrap();
    let rest = s.split_once(" supervisor: ").unwrap().1;
    humantime::parse_rfc3339(s.split_once(' ').unwrap().0).unwrap();
    assert!(rest.contains(" could not be written ("), "{s}");
    rest.split_once(' ').unwrap().0.parse().unwrap()
}

#[test]
fn sink_drops_while_the_file_cannot_be_opened_and_says_so_after() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let path = logs.join("child.log");
    // A plain file where the folder should be: opening fails (ENOTDIR),
    // lines are dropped and counted, nothing panics.
    fs::write(&logs, "").unwrap();
    let sink = LogSink::new(path.clone(), Perms::PRIVATE, 1000, 2);
    sink.write_batch(b"lost 1\nlost 2\n", 2);
    assert_eq!(sink.dropped(), 2);
    fs::remove_file(&logs).unwrap();
    fs::create_dir(&logs).unwrap();
    sink.reopen();
    sink.write_batch(b"kept 1\n", 1);
    let data = read(&path);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    assert_eq!(notice_count(lines[0]), 2);
    assert_eq!(lines[1], b"kept 1");
    assert_eq!(sink.dropped(), 0);

    // The folder turns into a file under an open log: writes still land
    // in the unlinked file; the reopen fails, and later lines are counted.
    fs::remove_dir_all(&logs).unwrap();
    sink.write_batch(b"into the void\n", 1);
    fs::write(&logs, "").unwrap();
    sink.reopen();
    for _ in 0..3 {
        sink.write_batch(b"a\nb\n", 2);
    }
    assert_eq!(sink.dropped(), 6);
    fs::remove_file(&logs).unwrap();
    fs::create_dir(&logs).unwrap();
    sink.reopen();
    sink.write_batch(b"back\n", 1);
    let data = read(&path);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    assert_eq!(notice_count(lines[0]), 6);
    assert_eq!(lines[1..], [&b"back"[..], b""]);
}

#[test]
fn a_log_deleted_under_the_writer_is_noticed_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let path = logs.join("child.log");
    fs::create_dir(&logs).unwrap();
    let sink = LogSink::new(path.clone(), Perms::PRIVATE, 1000, 2);
    sink.write_batch(b"before\n", 1);
    fs::remove_dir_all(&logs).unwrap();
    // Pretend the last check was long ago.
    sink.lock().last_link_check = Some(Instant::now() - RETRY_EVERY);
    sink.write_batch(b"after\n", 1);
    assert_eq!(read(&path), b"after\n");
}

#[test]
fn a_removed_log_folder_is_recreated_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let path = logs.join("child.log");
    fs::create_dir(&logs).unwrap();
    let sink = LogSink::new(path.clone(), Perms::PRIVATE, 1000, 2);
    sink.write_batch(b"before\n", 1);
    fs::remove_dir_all(&logs).unwrap();
    sink.reopen();
    sink.write_batch(b"after\n", 1);
    assert_eq!(read(&path), b"after\n");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&logs).unwrap().permissions())
        & 0o777;
    assert_eq!(mode, 0o750);
    assert_eq!(sink.dropped(), 0);
}

#[test]
fn sink_notice_after_a_torn_line_starts_a_new_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    let sink = LogSink::new(path.clone(), Perms::PRIVATE, 1000, 2);
    sink.write_batch(b"whole\n", 1);
    // What a write cut short by a full disk leaves, then a failure.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"tor")
        .unwrap();
    sink.lock().dropped = 3;
    sink.reopen();
    sink.write_batch(b"next\n", 1);
    let data = read(&path);
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    assert_eq!(lines[..2], [&b"whole"[..], b"tor"]);
    assert_eq!(notice_count(lines[2]), 3);
    assert_eq!(lines[3..], [&b"next"[..], b""]);
}

#[test]
fn sink_reopen_never_waits_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    let old = dir.path().join("x.log.1");
    let sink = LogSink::new(path.clone(), Perms::PRIVATE, 1000, 2);
    sink.write_batch(b"one\n", 1);
    fs::rename(&path, &old).unwrap();
    {
        let _busy = sink.inner.lock().unwrap();
        sink.reopen(); // returns at once
        assert!(sink.reopen_pending.load(Ordering::Acquire));
    }
    sink.write_batch(b"two\n", 1);
    assert!(!sink.reopen_pending.load(Ordering::Acquire));
    assert_eq!(read(&old), b"one\n");
    assert_eq!(read(&path), b"two\n");
}

#[test]
fn tracing_writes_through_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.log");
    let sink = LogSink::new(path.clone(), Perms::PRIVATE, 1000, 2);
    let subscriber = tracing_subscriber::fmt()
        .with_writer(SinkWriter(sink.clone()))
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("child started");
        tracing::warn!(pid = 42, "child exited");
    });
    {
        let make = SinkWriter(sink);
        let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&make);
        w.write_all(b"partial").unwrap();
    }
    let data = String::from_utf8(read(&path)).unwrap();
    let lines: Vec<&str> = data.lines().collect();
    assert_eq!(lines.len(), 3, "{data}");
    assert!(lines[0].ends_with("child started"), "{data}");
    assert!(
        lines[1].contains("child exited") && lines[1].contains("pid=42"),
        "{data}"
    );
    assert_eq!(lines[2], "partial");
}

#[test]
fn a_log_folder_swapped_for_a_link_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let moved = dir.path().join("moved");
    let target = dir.path().join("target");
    fs::create_dir(&target).unwrap();
    let path = logs.join("child.log");
    let sink = LogSink::new(path.clone(), Perms::PRIVATE, 100, 2);
    sink.write_batch(b"before\n", 1);
    fs::rename(&logs, &moved).unwrap();
    std::os::unix::fs::symlink(&target, &logs).unwrap();
    sink.lock().last_link_check = Some(Instant::now() - RETRY_EVERY);
    // Past max_bytes, so it rotates; then a reopen (SIGHUP).
    for i in 0..20 {
        sink.write_batch(format!("line {i:02}\n").as_bytes(), 1);
    }
    sink.reopen();
    sink.write_batch(b"after reopen\n", 1);
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        0,
        "written through the link"
    );
    let all: String = [
        moved.join("child.log.2"),
        moved.join("child.log.1"),
        moved.join("child.log"),
    ]
    .iter()
    .filter_map(|p| fs::read_to_string(p).ok())
    .collect();
    assert!(
        all.contains("no longer leads to the folder opened at start"),
        "{all}"
    );
    assert!(
        all.contains("line 19\n") && all.ends_with("after reopen\n"),
        "{all}"
    );
}

#[test]
fn log_files_get_the_mode_and_group_asked_for() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    fs::write(&path, "older, loose\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let sink = LogSink::new(path.clone(), Perms::PRIVATE, 1000, 2);
    sink.write_batch(b"one\n", 1);
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    drop(sink);
    let gid = nix::unistd::getegid().as_raw();
    let sink = LogSink::new(path.clone(), Perms::readable_by(Some(gid)), 1000, 2);
    sink.write_batch(b"two\n", 1);
    let m = fs::metadata(&path).unwrap();
    assert_eq!((m.mode() & 0o7777, m.gid()), (0o640, gid));
}
