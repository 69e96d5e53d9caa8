//! `supervisor logs` piece by piece: the last lines against the plain way,
//! and ticks of the follower across every kind of rotation.

use super::follow::*;
use super::last::*;
use super::*;
use crate::logs::numbered;
use std::fs;
use std::fs::OpenOptions;
use std::time::{Duration, SystemTime};

/// The last `n` lines of `data` the plain way.
fn reference(data: &[u8], n: u64) -> Vec<u8> {
    let mut starts: Vec<usize> = vec![0];
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && i + 1 < data.len() {
            starts.push(i + 1);
        }
    }
    if data.is_empty() || n == 0 {
        return Vec::new();
    }
    let lines = starts.len() as u64;
    let from = if n >= lines {
        0
    } else {
        starts[(lines - n) as usize]
    };
    data[from..].to_vec()
}

fn temp_file(data: &[u8]) -> (tempfile::TempDir, File) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    fs::write(&p, data).unwrap();
    let f = File::open(&p).unwrap();
    (dir, f)
}

#[test]
fn last_lines_match_the_plain_way_for_every_block_size() {
    let long = [b'x'; 300];
    let cases: &[&[u8]] = &[
        b"",
        b"a",
        b"a\n",
        b"\n",
        b"\n\n\n",
        b"a\nb",
        b"a\nb\n",
        b"a\n\nb\n\n",
        b"one\ntwo\nthree\nfour\nfive\n",
        b"bad \xff\xfe\n\xc3\x28 torn",
        &long,
    ];
    for data in cases {
        let (_dir, f) = temp_file(data);
        for want in [0, 1, 2, 3, 5, 100] {
            for block in [1, 2, 3, 7, BLOCK] {
                let mut buf = vec![0u8; block];
                let (start, got) = last_lines_start(&f, data.len() as u64, want, &mut buf).unwrap();
                let expect = reference(data, want);
                assert_eq!(
                    &data[start as usize..],
                    &expect[..],
                    "{data:?} want {want} block {block}"
                );
                let lines = memchr::memchr_iter(b'\n', &expect).count() as u64
                    + u64::from(expect.last().is_some_and(|&b| b != b'\n'));
                assert_eq!(got, lines, "{data:?} want {want} block {block}");
            }
        }
    }
}

#[test]
fn a_megabyte_line_costs_one_block() {
    let mut data = b"first\nsecond\n".to_vec();
    data.extend(std::iter::repeat_n(b'a', 1_000_000));
    let (_dir, f) = temp_file(&data);
    let mut buf = vec![0u8; BLOCK];
    assert_eq!(
        last_lines_start(&f, data.len() as u64, 1, &mut buf).unwrap(),
        (13, 1)
    );
    assert_eq!(
        last_lines_start(&f, data.len() as u64, 2, &mut buf).unwrap(),
        (6, 2)
    );
}

#[test]
fn a_shrunk_file_is_unexpected_eof() {
    let (_dir, f) = temp_file(b"a\nb\n");
    let mut buf = vec![0u8; BLOCK];
    let e = last_lines_start(&f, 10, 1, &mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

/// A log folder: `NAME` and its rotations, written the way the
/// supervisor and logrotate do.
struct Logs {
    dir: tempfile::TempDir,
}

impl Logs {
    fn new() -> Logs {
        Logs {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn name(&self) -> PathBuf {
        self.dir.path().join("child.log")
    }
    fn at(&self, k: u32) -> PathBuf {
        match k {
            0 => self.name(),
            k => numbered(&self.name(), k),
        }
    }
    fn write(&self, k: u32, data: &[u8]) {
        fs::write(self.at(k), data).unwrap();
    }
    fn append(&self, k: u32, data: &[u8]) {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.at(k))
            .unwrap()
            .write_all(data)
            .unwrap();
    }
    /// Our size rotation: `NAME.k` -> `NAME.(k+1)`, ..., `NAME` -> `NAME.1`.
    fn rotate(&self, max: u32) {
        let _ = fs::remove_file(self.at(max));
        for k in (0..max).rev() {
            let _ = fs::rename(self.at(k), self.at(k + 1));
        }
    }
    fn show(&self, want: u64) -> (Vec<u8>, Follower) {
        let mut out = Output::new(Vec::new());
        let f = show(&self.name(), want, MIN_SCAN, &mut out).unwrap();
        (out.w, f)
    }
}

/// Runs ticks until one is idle; what they printed.
fn ticks(f: &mut Follower) -> Vec<u8> {
    let mut out = Output::new(Vec::new());
    for _ in 0..100 {
        if f.step(&mut out).unwrap() == Step::Idle {
            return out.w;
        }
    }
    panic!("never idle");
}

#[test]
fn last_lines_span_the_rotated_files() {
    let logs = Logs::new();
    logs.write(2, b"1\n2\n");
    logs.write(1, b"3\n4\n");
    logs.write(0, b"5\n6\n");
    let table: &[(u64, &[u8])] = &[
        (0, b""),
        (1, b"6\n"),
        (2, b"5\n6\n"),
        (3, b"4\n5\n6\n"),
        (5, b"2\n3\n4\n5\n6\n"),
        (50, b"1\n2\n3\n4\n5\n6\n"),
    ];
    for &(want, expect) in table {
        assert_eq!(logs.show(want).0, expect, "-n {want}");
    }
    // Right after a rotation the current file is empty.
    logs.rotate(5);
    logs.write(0, b"");
    assert_eq!(logs.show(3).0, b"4\n5\n6\n");
    // Mid-rotation (renamed, not yet recreated) the previous one is newest.
    fs::remove_file(logs.at(0)).unwrap();
    assert_eq!(logs.show(2).0, b"5\n6\n");
}

#[test]
fn the_same_file_under_two_names_is_printed_once_and_a_torn_line_is_ended() {
    let logs = Logs::new();
    logs.write(0, b"new\n");
    // A rotation between opening NAME and NAME.1 shows NAME as NAME.1.
    fs::hard_link(logs.at(0), logs.at(1)).unwrap();
    logs.write(2, b"old torn");
    assert_eq!(logs.show(10).0, b"old torn\nnew\n");
}

#[test]
fn a_missing_log_is_not_found_and_a_folder_is_refused() {
    let logs = Logs::new();
    let mut out = Output::new(Vec::new());
    match show(&logs.name(), 5, MIN_SCAN, &mut out) {
        Err(Failure::Read(p, e)) => {
            assert_eq!(p, logs.name());
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
        }
        _ => panic!("want NotFound"),
    }
    fs::create_dir(logs.name()).unwrap();
    match show(&logs.name(), 5, MIN_SCAN, &mut out) {
        Err(Failure::Read(_, e)) => assert_eq!(e.to_string(), "not a regular file"),
        _ => panic!("want a refusal"),
    }
}

#[test]
fn follows_appends_and_size_rotation_one_or_several_at_a_time() {
    let logs = Logs::new();
    logs.write(0, b"a\n");
    let (shown, mut f) = logs.show(5);
    assert_eq!(shown, b"a\n");
    assert_eq!(ticks(&mut f), b"");
    logs.append(0, b"b\n");
    assert_eq!(ticks(&mut f), b"b\n");
    // Unread lines in the old file, then one rotation.
    logs.append(0, b"c\n");
    logs.rotate(5);
    logs.write(0, b"d\n");
    assert_eq!(ticks(&mut f), b"c\nd\n");
    // Three rotations between two ticks.
    logs.append(0, b"e\n");
    for line in [b"f\n", b"g\n", b"h\n"] {
        logs.rotate(5);
        logs.write(0, line);
    }
    assert_eq!(ticks(&mut f), b"e\nf\ng\nh\n");
}

#[test]
fn logrotate_create_waits_for_the_writer_to_move() {
    let logs = Logs::new();
    logs.write(0, b"a\n");
    let (_, mut f) = logs.show(0);
    let mut writer = OpenOptions::new().append(true).open(logs.at(0)).unwrap();
    // logrotate: rename, create an empty file, then SIGHUP later.
    fs::rename(logs.at(0), logs.at(1)).unwrap();
    logs.write(0, b"");
    writer.write_all(b"b\n").unwrap();
    assert_eq!(ticks(&mut f), b"b\n");
    writer.write_all(b"c\n").unwrap();
    assert_eq!(ticks(&mut f), b"c\n");
    // The supervisor reopened: old lines first, every one once.
    writer.write_all(b"d\n").unwrap();
    logs.append(0, b"e\n");
    assert_eq!(ticks(&mut f), b"d\ne\n");
    logs.append(0, b"f\n");
    assert_eq!(ticks(&mut f), b"f\n");
}

#[test]
fn deleted_or_renamed_with_a_date_and_recreated() {
    for how in ["delete", "dateext"] {
        let logs = Logs::new();
        logs.write(0, b"a\n");
        let (_, mut f) = logs.show(1);
        let mut writer = OpenOptions::new().append(true).open(logs.at(0)).unwrap();
        match how {
            "delete" => fs::remove_file(logs.at(0)).unwrap(),
            _ => fs::rename(logs.at(0), logs.dir.path().join("child.log-20260226")).unwrap(),
        }
        writer.write_all(b"b\n").unwrap();
        assert_eq!(ticks(&mut f), b"b\n", "{how}");
        logs.write(0, b"");
        writer.write_all(b"c\n").unwrap();
        assert_eq!(ticks(&mut f), b"c\n", "{how}");
        logs.append(0, b"d\n");
        assert_eq!(ticks(&mut f), b"d\n", "{how}");
    }
}

#[test]
fn copytruncate_takes_the_unread_rest_from_the_copy() {
    let logs = Logs::new();
    logs.write(0, b"line 1\n");
    let (_, mut f) = logs.show(1);
    // Written, copied and truncated between two ticks.
    logs.append(0, b"line 2\n");
    fs::copy(logs.at(0), logs.at(1)).unwrap();
    OpenOptions::new()
        .write(true)
        .open(logs.at(0))
        .unwrap()
        .set_len(0)
        .unwrap();
    logs.append(0, b"line 3\n");
    assert_eq!(ticks(&mut f), b"line 2\nline 3\n");
    // Truncated and written past the old position before a tick: the
    // bytes before the position changed.
    logs.append(0, b"line 4\n");
    assert_eq!(ticks(&mut f), b"line 4\n");
    fs::remove_file(logs.at(1)).unwrap();
    fs::write(logs.at(0), b"LINE 5 is longer than all before it\n").unwrap();
    assert_eq!(ticks(&mut f), b"LINE 5 is longer than all before it\n");
}

#[test]
fn a_rotated_file_deleted_while_read_continues_with_the_oldest_newer_one() {
    let logs = Logs::new();
    logs.write(0, b"a\n");
    let (_, mut f) = logs.show(1);
    // Renamed away with an empty successor: still ours, seen as NAME.1.
    logs.rotate(5);
    logs.write(0, b"");
    assert_eq!(ticks(&mut f), b"");
    assert_eq!(f.cur.index, 1);
    // Then many rotations delete it; what is left is newer.
    let t = SystemTime::now();
    let older = t - Duration::from_secs(60);
    let newer = t + Duration::from_secs(60);
    fs::remove_file(logs.at(1)).unwrap();
    fs::remove_file(logs.at(0)).unwrap();
    logs.write(3, b"old\n");
    logs.write(2, b"x\n");
    logs.write(1, b"y\n");
    logs.write(0, b"z\n");
    for (k, when) in [(3, older), (2, newer), (1, newer), (0, newer)] {
        File::options()
            .write(true)
            .open(logs.at(k))
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    assert_eq!(ticks(&mut f), b"x\ny\nz\n");
}

#[test]
fn a_signal_stops_a_long_first_print_between_blocks() {
    let logs = Logs::new();
    logs.write(0, b"a\nb\n");
    let mut out = Output::new(Vec::new());
    out.stop = Some(Arc::new(AtomicBool::new(true)));
    assert!(matches!(
        show(&logs.name(), 5, MIN_SCAN, &mut out),
        Err(Failure::Stopped)
    ));
    assert_eq!(out.w, b"");
}

#[test]
fn reasons_read_like_words() {
    let table = [
        (libc::ENOENT, "no such file or directory"),
        (libc::EACCES, "permission denied"),
    ];
    for (errno, want) in table {
        assert_eq!(reason(&io::Error::from_raw_os_error(errno)), want);
    }
    assert_eq!(
        reason(&io::Error::other("not a regular file")),
        "not a regular file"
    );
}

#[test]
fn a_terminal_gets_control_characters_escaped() {
    let mut out = Output::new(Vec::new());
    out.escape = true;
    // An OSC title, a clear screen, a carriage return, a C1 CSI split
    // across two blocks, and text that must stay as it is.
    out.put(b"\x1b]0;TITLE\x07\x1b[2J\rok \xc3\xa9\t\xc2")
        .unwrap();
    out.put(b"\x9b2J\xc2\xa0\n").unwrap();
    out.flush().unwrap();
    assert_eq!(
        String::from_utf8(out.w).unwrap(),
        "\\x1b]0;TITLE\\x07\\x1b[2J\\x0dok \u{e9}\t\\u{9b}2J\u{a0}\n"
    );
    // A pipe gets the bytes as they are.
    let mut raw = Output::new(Vec::new());
    raw.put(b"\x1b[2J\r").unwrap();
    assert_eq!(raw.w, b"\x1b[2J\r");
}
