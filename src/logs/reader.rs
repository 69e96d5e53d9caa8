//! Reading the children's output: one thread for every pipe.
//!
//! A child hands its stdout and stderr to whatever it starts, and helpers
//! that detach (`setsid`, a double fork) may keep them open long after it
//! died: a session manager's sessions outlive it on purpose. One thread per
//! pipe would then pile up with every restart. Instead one thread polls
//! all open pipes, reads what is there in large chunks, frames it and
//! writes it to the sink; a pipe is dropped at its end of file. A slow disk
//! blocks only this thread, which back-pressures the children through their
//! pipes; the control loop never waits on a log.
//!
//! At exit, [`Readers::finish`] takes what is buffered in the pipes now
//! (a dead child's last lines are all there) and returns: it never waits
//! for writers that are still alive.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::framer::{Framer, Seg};
use super::{LogSink, Stream};

/// Bytes read from a child pipe at once.
pub(super) const READ_BUF: usize = 64 * 1024;
/// A read chunk is framed in slices of this size so that a chunk made of
/// tiny lines (each grows by a ~45-byte prefix) cannot inflate the output
/// buffer: it holds at most `FLUSH_AT` + `SLICE` empty lines framed + one
/// `MAX_LINE` piece, under 400 KiB.
const SLICE: usize = 4 * 1024;
/// Hand the output buffer to the sink once it holds this much.
const FLUSH_AT: usize = 128 * 1024;
/// Hand the framed lines to the sink once there are this many (two
/// pieces a line: its prefix and its bytes), written `IOV_MAX` pieces at
/// a time.
const FLUSH_SEGS: usize = 2048;
/// Pieces per `writev`: Linux's and macOS's `IOV_MAX`.
const IOV_MAX: usize = 1024;
/// Lines whose room is kept between reads: more than a read of ordinary
/// lines needs.
const KEEP_SEGS: usize = 2 * FLUSH_SEGS;
/// The thread only polls, reads, frames and writes: a small stack will do.
const STACK: usize = 128 * 1024;

/// The pipes of at most this many earlier children are read: detached
/// helpers (`setsid sleep 100000 &`) keep a dead child's pipes open, and
/// a child restarted again and again would otherwise pile up descriptors
/// until every spawn failed. Past it the oldest child's pipes are closed,
/// with one log line.
pub(super) const EARLIER_CHILDREN: usize = 16;

/// A partial line (no newline yet: a prompt, a progress bar) is written
/// once its pipe has been quiet this long.
const PARTIAL_QUIET: Duration = Duration::from_secs(1);

/// One child pipe being read.
struct Pipe {
    file: File,
    framer: Framer,
    stream: Stream,
    pid: u32,
    /// When bytes last came (for a partial line's quiet time).
    last_read: Instant,
}

impl Pipe {
    /// When its partial line, if any, is due to be written.
    fn partial_due(&self) -> Option<Instant> {
        self.framer
            .has_partial()
            .then(|| self.last_read + PARTIAL_QUIET)
    }
}

/// A child pipe handed over (across `reload`): the descriptor, which stream
/// of which child it carries.
pub(crate) struct Handed {
    pub(crate) file: File,
    pub(crate) stream: Stream,
    pub(crate) pid: u32,
}

/// Bytes read from the children's pipes, per stream, since the supervisor
/// image started. The reader thread adds to
/// them once per read; `/metrics` and the state record read them.
#[derive(Debug, Default)]
pub(crate) struct LogCounts {
    stdout: AtomicU64,
    stderr: AtomicU64,
}

impl LogCounts {
    fn add(&self, stream: Stream, n: usize) {
        let counter = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// (stdout, stderr)
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.stdout.load(Ordering::Relaxed),
            self.stderr.load(Ordering::Relaxed),
        )
    }
}

/// What the control loop hands the reader thread.
struct Shared {
    /// Pipes to start reading.
    new: Mutex<Vec<Pipe>>,
    /// Read what is buffered now, then stop.
    finish: AtomicBool,
    /// ... and give the pipes back instead of closing them.
    detach: AtomicBool,
}

/// The reader thread and the way to talk to it.
pub(crate) struct Readers {
    shared: Arc<Shared>,
    /// Writing a byte here wakes the thread from `poll`.
    wake: UnixStream,
    thread: Option<JoinHandle<Vec<Handed>>>,
}

impl Readers {
    pub(crate) fn start(sink: Arc<LogSink>, counts: Arc<LogCounts>) -> io::Result<Readers> {
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            new: Mutex::new(Vec::new()),
            finish: AtomicBool::new(false),
            detach: AtomicBool::new(false),
        });
        let theirs = shared.clone();
        let thread = thread::Builder::new()
            .name("log-reader".into())
            .stack_size(STACK)
            .spawn(move || run(&theirs, woken, &sink, &counts))?;
        Ok(Readers {
            shared,
            wake,
            thread: Some(thread),
        })
    }

    /// Read `file` (a child's stdout or stderr) until its end.
    pub(crate) fn add(&self, file: File, stream: Stream, pid: u32) {
        self.shared
            .new
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Pipe {
                file,
                framer: Framer::new(stream, pid),
                stream,
                pid,
                last_read: Instant::now(),
            });
        self.poke();
    }

    /// Stop reading and give the pipes back, having written what they hold
    /// now (partial lines end where they are): the supervisor is about to
    /// re-execute itself and hands them to its new image.
    pub(crate) fn detach(mut self) -> Vec<Handed> {
        self.shared.detach.store(true, Ordering::Release);
        self.shared.finish.store(true, Ordering::Release);
        self.poke();
        let mut pipes = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(pipes)) => pipes,
            _ => Vec::new(),
        };
        // Added after the thread stopped looking: handed over unread.
        let late = std::mem::take(
            &mut *self
                .shared
                .new
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        pipes.extend(late.into_iter().map(|p| Handed {
            file: p.file,
            stream: p.stream,
            pid: p.pid,
        }));
        pipes
    }

    /// Write what the pipes hold now (and the partial lines), then stop the
    /// thread; gives up after `within` if writers keep it busy.
    pub(crate) fn finish(mut self, within: Duration) {
        self.shared.finish.store(true, Ordering::Release);
        self.poke();
        let deadline = Instant::now() + within;
        if let Some(t) = self.thread.take() {
            let mut pause = Duration::from_millis(1);
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }

    fn poke(&self) {
        // A full socket buffer means a wake-up is pending already.
        let _ = (&self.wake).write(&[1]);
    }
}

fn run(shared: &Shared, mut woken: UnixStream, sink: &LogSink, counts: &LogCounts) -> Vec<Handed> {
    let mut pipes: Vec<Pipe> = Vec::new();
    let mut bufs = Bufs::new();
    loop {
        let finishing = shared.finish.load(Ordering::Acquire);
        pipes.extend(
            shared
                .new
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..),
        );
        for pid in over_the_bound(&pipes) {
            set_timestamp(&mut bufs.ts);
            for mut p in extract(&mut pipes, pid) {
                let lines = p.framer.finish(&bufs.ts, &mut bufs.out);
                sink.write_batch(&bufs.out, lines);
                bufs.out.clear();
            }
            tracing::warn!(
                "closed the output pipes of earlier child {pid}: something it started still \
                 holds them, and only the {EARLIER_CHILDREN} latest earlier children's are kept; \
                 what it writes there is lost"
            );
        }
        let ready = match wait(&woken, &pipes, finishing) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot wait for the child's output: {e}; it is lost from now on");
                return Vec::new();
            }
        };
        if ready.woken {
            let mut sink_bytes = [0u8; 64];
            while matches!(woken.read(&mut sink_bytes), Ok(n) if n > 0) {}
        }
        if finishing && !ready.pipes.contains(&true) {
            // Nothing more is buffered: end every partial line and stop.
            set_timestamp(&mut bufs.ts);
            for p in &mut pipes {
                let lines = p.framer.finish(&bufs.ts, &mut bufs.out);
                sink.write_batch(&bufs.out, lines);
                bufs.out.clear();
            }
            if !shared.detach.load(Ordering::Acquire) {
                return Vec::new();
            }
            return pipes
                .into_iter()
                .map(|p| Handed {
                    file: p.file,
                    stream: p.stream,
                    pid: p.pid,
                })
                .collect();
        }
        let mut ended = Vec::new();
        for (i, p) in pipes.iter_mut().enumerate() {
            if !ready.pipes.get(i).copied().unwrap_or(false) {
                continue;
            }
            if !read_once(p, &mut bufs, sink, counts) {
                ended.push(i);
            }
        }
        // Partial lines that went quiet are written now.
        let now = Instant::now();
        for p in &mut pipes {
            if p.partial_due().is_some_and(|due| due <= now) {
                let lines = p.framer.flush_partial(&mut bufs.out);
                sink.write_batch(&bufs.out, lines);
                bufs.out.clear();
            }
        }
        for i in ended.into_iter().rev() {
            let mut p = pipes.remove(i);
            set_timestamp(&mut bufs.ts);
            let lines = p.framer.finish(&bufs.ts, &mut bufs.out);
            sink.write_batch(&bufs.out, lines);
            bufs.out.clear();
        }
    }
}

/// The earlier children whose pipes are past [`EARLIER_CHILDREN`], oldest
/// first. `pipes` are in the order they were added, the latest child's
/// last (pipes only leave, at their end, in order).
fn over_the_bound(pipes: &[Pipe]) -> Vec<u32> {
    let mut children: Vec<u32> = Vec::new();
    for p in pipes {
        if !children.contains(&p.pid) {
            children.push(p.pid);
        }
    }
    // The latest child is not an earlier one.
    let earlier = children.len().saturating_sub(1);
    children
        .into_iter()
        .take(earlier.saturating_sub(EARLIER_CHILDREN))
        .collect()
}

/// Take `pid`'s pipes out of `pipes`, keeping the order of the rest.
fn extract(pipes: &mut Vec<Pipe>, pid: u32) -> Vec<Pipe> {
    let (theirs, rest) = std::mem::take(pipes)
        .into_iter()
        .partition(|p| p.pid == pid);
    *pipes = rest;
    theirs
}

/// Which descriptors are readable (or at their end).
struct Ready {
    woken: bool,
    pipes: Vec<bool>,
}

/// Wait until the wake-up socket or a pipe is readable; with `finishing`,
/// only look.
fn wait(woken: &UnixStream, pipes: &[Pipe], finishing: bool) -> io::Result<Ready> {
    let mut fds: Vec<PollFd> = std::iter::once(woken.as_fd())
        .chain(pipes.iter().map(|p| p.file.as_fd()))
        .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    // No wake-up unless a partial line waits for its quiet time to pass.
    let timeout = match finishing {
        true => PollTimeout::ZERO,
        false => match pipes.iter().filter_map(Pipe::partial_due).min() {
            None => PollTimeout::NONE,
            Some(due) => {
                let ms = due
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .saturating_add(1);
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
        },
    };
    loop {
        match poll(&mut fds, timeout) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let readable = |fd: &PollFd| {
        fd.revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
        })
    };
    Ok(Ready {
        woken: readable(&fds[0]),
        pipes: fds[1..].iter().map(readable).collect(),
    })
}

/// The reader thread's buffers, kept from one read to the next: nothing
/// is allocated per read (musl's allocator maps and unmaps a block of this
/// size each time, which cost the static build half its log throughput).
struct Bufs {
    /// What a pipe read lands in.
    buf: Vec<u8>,
    /// Lines framed by copying ([`Seg::Spill`]), and every line at a pipe's
    /// end.
    out: Vec<u8>,
    /// The pieces of the lines framed from `buf`, for `writev`.
    segs: Vec<Seg>,
    /// The time stamp of the chunk being framed.
    ts: String,
}

impl Bufs {
    fn new() -> Bufs {
        Bufs {
            buf: vec![0u8; READ_BUF],
            out: Vec::with_capacity(FLUSH_AT),
            segs: Vec::new(),
            ts: String::with_capacity(32),
        }
    }
}

/// One read from a readable pipe, framed and written. False at its end.
fn read_once(p: &mut Pipe, bufs: &mut Bufs, sink: &LogSink, counts: &LogCounts) -> bool {
    let Bufs { buf, out, segs, ts } = bufs;
    let n = loop {
        match p.file.read(buf) {
            Ok(0) => return false,
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) => {
                tracing::warn!("cannot read a child's output: {e}; its further output is lost");
                return false;
            }
        }
    };
    counts.add(p.stream, n);
    p.last_read = Instant::now();
    set_timestamp(ts);
    // Each line goes out as its prefix and its bytes where they were read,
    // with `writev`: no copy of the payload in between (the copy costs
    // most with musl's `memcpy`). Only lines joined across reads, or cut
    // into pieces, are copied, into `out`.
    let data = &buf[..n];
    segs.clear();
    out.clear();
    let mut lines = 0;
    for (i, part) in data.chunks(SLICE).enumerate() {
        lines += p.framer.frame_segs(part, i * SLICE, ts, segs, out);
        if segs.len() >= FLUSH_SEGS || out.len() >= FLUSH_AT {
            write_segs(data, p.framer.line_head(), segs, out, lines, sink);
            segs.clear();
            out.clear();
            lines = 0;
        }
    }
    write_segs(data, p.framer.line_head(), segs, out, lines, sink);
    segs.clear();
    out.clear();
    // A flood of empty lines grows the list of pieces to a few hundred
    // KiB: not kept for the quiet hours after it.
    segs.shrink_to(KEEP_SEGS);
    true
}

/// Writes framed lines, at most `IOV_MAX` pieces a `writev`; `lines` (for
/// the dropped count, should the log be unwritable) go with the last
/// call. The `iovec`s are built on the stack (16 KiB), not allocated.
fn write_segs(data: &[u8], head: &[u8], segs: &[Seg], spill: &[u8], lines: u64, sink: &LogSink) {
    let mut iov = [IoSlice::new(&[]); IOV_MAX];
    let (mut n, mut len) = (0, 0);
    for s in segs {
        if n + 2 > IOV_MAX {
            sink.write_parts(&mut iov[..n], len, 0);
            (n, len) = (0, 0);
        }
        match *s {
            Seg::Line(a, b) => {
                iov[n] = IoSlice::new(head);
                iov[n + 1] = IoSlice::new(&data[a..b]);
                n += 2;
                len += head.len() + (b - a);
            }
            Seg::Spill(a, b) => {
                iov[n] = IoSlice::new(&spill[a..b]);
                n += 1;
                len += b - a;
            }
        }
    }
    sink.write_parts(&mut iov[..n], len, lines);
}

fn set_timestamp(ts: &mut String) {
    use std::fmt::Write as _;
    ts.clear();
    let _ = write!(
        ts,
        "{}",
        humantime::format_rfc3339_millis(SystemTime::now())
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::path::Path;

    #[test]
    fn only_the_latest_earlier_childrens_pipes_are_kept() {
        let pipe = |pid: u32, stream: Stream| Pipe {
            file: File::open("/dev/null").unwrap(),
            framer: Framer::new(stream, pid),
            stream,
            pid,
            last_read: Instant::now(),
        };
        // Children 1..=20, two pipes each, 20 the latest; child 3's stdout
        // ended already.
        let mut pipes: Vec<Pipe> = (1..=20u32)
            .flat_map(|pid| [pipe(pid, Stream::Stdout), pipe(pid, Stream::Stderr)])
            .filter(|p| !(p.pid == 3 && p.stream == Stream::Stdout))
            .collect();
        // 19 earlier children, 16 kept: the 3 oldest go.
        let over = over_the_bound(&pipes);
        assert_eq!(over, [1, 2, 3]);
        for pid in over {
            assert!(!extract(&mut pipes, pid).is_empty());
        }
        assert_eq!(pipes.first().map(|p| p.pid), Some(4));
        assert_eq!(pipes.len(), 2 * 17);
        assert!(over_the_bound(&pipes).is_empty());
        assert!(over_the_bound(&pipes[..0]).is_empty());
    }

    fn read(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap_or_default()
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lines and copied pieces, more than one `writev` holds, reach the
    /// file whole and in order.
    #[test]
    fn pieces_beyond_one_writev_arrive_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("child.log");
        let sink = LogSink::new(path.clone(), crate::logs::Perms::PRIVATE, 10 << 20, 2);
        let data: Vec<u8> = (0..3000)
            .flat_map(|i| format!("{i:04}\n").into_bytes())
            .collect();
        let spill = b"copied\n".to_vec();
        let mut segs = Vec::new();
        let mut want = Vec::new();
        for i in 0..3000 {
            segs.push(Seg::Line(5 * i, 5 * i + 5));
            want.extend_from_slice(b"H: ");
            want.extend_from_slice(&data[5 * i..5 * i + 5]);
            if i % 7 == 0 {
                segs.push(Seg::Spill(0, spill.len()));
                want.extend_from_slice(&spill);
            }
        }
        write_segs(&data, b"H: ", &segs, &spill, 3000, &sink);
        assert!(read(&path) == want, "the bytes differ");
    }

    /// The buffers a read frames with are the same from one read to the
    /// next (no allocation per read: musl's allocator maps and unmaps each
    /// one), and a flood of empty lines leaves them no bigger than
    /// [`KEEP_SEGS`].
    #[test]
    fn reads_reuse_their_buffers_and_a_flood_leaves_them_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("child.log");
        let sink = LogSink::new(path.clone(), crate::logs::Perms::PRIVATE, 10 << 20, 2);
        let counts = LogCounts::default();
        let (r, mut w) = io::pipe().unwrap();
        let mut p = Pipe {
            file: File::from(OwnedFd::from(r)),
            framer: Framer::new(Stream::Stdout, 9),
            stream: Stream::Stdout,
            pid: 9,
            last_read: Instant::now(),
        };
        let mut bufs = Bufs::new();
        let mut line = [b'x'; 100];
        line[99] = b'\n';
        let lines = line.repeat(600); // one read's worth, within the pipe
        let mut seen = None;
        for _ in 0..3 {
            w.write_all(&lines).unwrap();
            assert!(read_once(&mut p, &mut bufs, &sink, &counts));
            let now = (
                bufs.buf.as_ptr(),
                bufs.segs.as_ptr(),
                bufs.segs.capacity(),
                bufs.out.as_ptr(),
            );
            assert!(seen.is_none_or(|s| s == now), "a buffer was allocated anew");
            seen = Some(now);
        }
        // 64 KiB of empty lines: 2 pieces each.
        for _ in 0..4 {
            w.write_all(&[b'\n'; 16 * 1024]).unwrap();
        }
        assert!(read_once(&mut p, &mut bufs, &sink, &counts));
        assert!(
            bufs.segs.capacity() <= KEEP_SEGS,
            "{}",
            bufs.segs.capacity()
        );
        assert!(bufs.segs.is_empty() && bufs.out.is_empty());
        let data = read(&path);
        let got = data.split(|&b| b == b'\n').count() - 1;
        assert_eq!(got, 3 * 600 + 64 * 1024);
        let want = [b"out[9]: ".as_slice(), &line].concat();
        let first = data.split(|&b| b == b'\n').next().unwrap();
        assert!(first.ends_with(&want[..want.len() - 1]));
        assert_eq!(counts.get().0, (3 * lines.len() + 64 * 1024) as u64);
    }

    /// A prompt (no newline) from a child that then waits is logged after
    /// a quiet second, not when the child exits; the rest of its line
    /// continues as a `+` piece.
    #[test]
    fn a_quiet_partial_line_is_written_while_the_pipe_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("child.log");
        let sink = LogSink::new(path.clone(), crate::logs::Perms::PRIVATE, 10 << 20, 2);
        let readers = Readers::start(sink, Arc::new(LogCounts::default())).unwrap();
        let (r, mut w) = io::pipe().unwrap();
        readers.add(File::from(OwnedFd::from(r)), Stream::Stdout, 7);
        let wrote = Instant::now();
        w.write_all(b"Password: ").unwrap();
        wait_for("the prompt in the log", || {
            read(&path).ends_with(b"out[7]: Password: \n")
        });
        assert!(
            wrote.elapsed() >= PARTIAL_QUIET,
            "not before the quiet time: a line may be on its way"
        );
        w.write_all(b"typed\n").unwrap();
        wait_for("the rest", || read(&path).ends_with(b"out[7]+ typed\n"));
        drop(w);
    }

    #[test]
    fn frames_pipes_until_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("child.log");
        let sink = LogSink::new(path.clone(), crate::logs::Perms::PRIVATE, 10 << 20, 2);
        let counts = Arc::new(LogCounts::default());
        let readers = Readers::start(sink, counts.clone()).unwrap();
        let (r, mut w) = io::pipe().unwrap();
        readers.add(File::from(OwnedFd::from(r)), Stream::Stderr, 4243);
        let many: Vec<u8> = b"\n".repeat(100_000); // tiny lines: batches stay bounded
        w.write_all(b"first\r\n").unwrap();
        w.write_all(&many).unwrap();
        w.write_all(b"no newline at the end").unwrap();
        drop(w);
        wait_for("the last line", || {
            read(&path).ends_with(b": no newline at the end\n")
        });
        let data = read(&path);
        let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 100_003); // + the empty rest after the last '\n'
        for l in &lines[..lines.len() - 1] {
            let s = std::str::from_utf8(l).unwrap();
            let (ts, rest) = s.split_once(' ').unwrap();
            humantime::parse_rfc3339(ts).unwrap();
            assert!(rest.starts_with("err[4243]: "), "{s}");
        }
        assert!(lines[0].ends_with(b"err[4243]: first\r"));
        // Every byte the child wrote, counted on its stream.
        assert_eq!(
            counts.get(),
            (0, (7 + 100_000 + "no newline at the end".len()) as u64)
        );
        readers.finish(Duration::from_secs(5));
    }

    #[test]
    fn finishing_takes_what_is_buffered_and_never_waits_for_live_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("child.log");
        let sink = LogSink::new(path.clone(), crate::logs::Perms::PRIVATE, 10 << 20, 2);
        let readers = Readers::start(sink, Arc::default()).unwrap();
        // Many pipes, one thread: a writer that never closes its end
        // (a detached helper) and the dead child's pipe with a last line.
        let mut keep = Vec::new();
        for pid in 0..50 {
            let (r, w) = io::pipe().unwrap();
            readers.add(File::from(OwnedFd::from(r)), Stream::Stdout, pid);
            keep.push(w);
        }
        let (r, mut w) = io::pipe().unwrap();
        readers.add(File::from(OwnedFd::from(r)), Stream::Stdout, 77);
        w.write_all(b"last words, no newline").unwrap();
        drop(w);
        // (Among the 16 latest earlier children's: older ones are closed.)
        keep[40].write_all(b"a helper's partial").unwrap();
        let started = Instant::now();
        readers.finish(Duration::from_secs(10));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited for live writers"
        );
        let data = String::from_utf8(read(&path)).unwrap();
        assert!(data.contains("out[77]: last words, no newline\n"), "{data}");
        assert!(data.contains("out[40]: a helper's partial\n"), "{data}");
    }
}
