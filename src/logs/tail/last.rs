//! The last lines: found by reading backwards from the end in blocks, the
//! rotated files giving what the newest lacks, then printed oldest first.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::follow::{Current, Follower};
use super::{copy_range, open_log, reason, Failure, FileId, Output, BLOCK, CHECK};
use crate::logs::numbered;

/// Where the last `want` lines of `file[..end]` begin, and how many lines
/// that is: fewer than `want` when the file has fewer, and then from 0. A
/// last line without its newline counts. Reads backwards, `buf` at a time;
/// a file that shrank meanwhile is an `UnexpectedEof` error.
pub(super) fn last_lines_start(
    file: &File,
    end: u64,
    want: u64,
    buf: &mut [u8],
) -> io::Result<(u64, u64)> {
    if want == 0 || end == 0 {
        return Ok((end, 0));
    }
    let mut found = 0;
    let mut hi = end;
    let mut at_end = true;
    while hi > 0 {
        let lo = hi.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo)?;
        let mut search: &[u8] = chunk;
        if at_end {
            at_end = false;
            // The newline that ends the last line does not start another.
            if let Some(rest) = search.strip_suffix(b"\n") {
                search = rest;
            }
        }
        for i in memchr::memrchr_iter(b'\n', search) {
            found += 1;
            if found == want {
                return Ok((lo + i as u64 + 1, want));
            }
        }
        hi = lo;
    }
    Ok((0, found + 1))
}

/// A rotated file to print lines from, before the newest.
pub(super) struct Piece {
    file: File,
    path: PathBuf,
    start: u64,
    end: u64,
}

/// Prints the last `want` lines and returns the newest file positioned at
/// the end of what was printed, ready to follow.
pub(super) fn show<W: Write>(
    name: &Path,
    want: u64,
    scan: u32,
    out: &mut Output<W>,
) -> Result<Follower, Failure> {
    let mut buf = vec![0u8; BLOCK];
    let mut tries = 0;
    let (cur, start, older) = loop {
        match plan(name, want, &mut buf) {
            // A file shrank while we looked (copytruncate): look again.
            Err(Failure::Read(_, e)) if e.kind() == io::ErrorKind::UnexpectedEof && tries < 3 => {
                tries += 1
            }
            other => break other?,
        }
    };
    for p in older.iter().rev() {
        out.end_line()?;
        copy_range(&p.file, &p.path, p.start, p.end, &mut buf, out)?;
    }
    out.end_line()?;
    copy_range(&cur.file, &cur.path, start, cur.pos, &mut buf, out)?;
    out.flush()?;
    Ok(Follower {
        name: name.to_path_buf(),
        cur,
        scan,
        buf,
    })
}

/// Opens the newest file and finds where its last `want` lines start; the
/// rotated files give what it lacks, newest first.
pub(super) fn plan(
    name: &Path,
    want: u64,
    buf: &mut [u8],
) -> Result<(Current, u64, Vec<Piece>), Failure> {
    let (file, meta, path, index) = match open_log(name) {
        Ok((f, m)) => (f, m, name.to_path_buf(), 0),
        // Between a rotation's rename and the new file's creation the
        // previous file is the newest.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let prev = numbered(name, 1);
            match open_log(&prev) {
                Ok((f, m)) => (f, m, prev, 1),
                Err(_) => return Err(Failure::Read(name.into(), e)),
            }
        }
        Err(e) => return Err(Failure::Read(name.into(), e)),
    };
    let end = meta.len();
    let (start, got) =
        last_lines_start(&file, end, want, buf).map_err(|e| Failure::Read(path.clone(), e))?;
    let mut need = want - got;
    let mut ids = vec![FileId::of(&meta)];
    let mut older = Vec::new();
    let mut k = index;
    while need > 0 && k < u32::MAX {
        k += 1;
        let p = numbered(name, k);
        match open_log(&p) {
            Ok((f, m)) => {
                // The file we started from, if a rotation moved it meanwhile.
                if ids.contains(&FileId::of(&m)) {
                    continue;
                }
                ids.push(FileId::of(&m));
                let (s, got) = last_lines_start(&f, m.len(), need, buf)
                    .map_err(|e| Failure::Read(p.clone(), e))?;
                need -= got;
                older.push(Piece {
                    file: f,
                    path: p,
                    start: s,
                    end: m.len(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => {
                crate::say!(
                    "supervisor: warning: cannot read {}: {}; earlier lines are not shown",
                    p.display(),
                    reason(&e)
                );
                break;
            }
        }
    }
    let keep = end.min(CHECK as u64);
    let mut seen = vec![0u8; keep as usize];
    file.read_exact_at(&mut seen, end - keep)
        .map_err(|e| Failure::Read(path.clone(), e))?;
    let cur = Current {
        file,
        path,
        id: FileId::of(&meta),
        pos: end,
        seen,
        index,
    };
    Ok((cur, start, older))
}
