//! Framing a child's output: a byte stream from one pipe becomes
//! `TS out[PID]: payload` lines, whatever the bytes are.

use super::{Stream, MAX_LINE};

/// Turns a byte stream from one child pipe into framed lines:
/// `TS out[PID]: payload\n`, where TS is UTC RFC 3339 with milliseconds.
/// Payload bytes are copied untouched (invalid UTF-8, a trailing `\r`).
/// Lines longer than [`MAX_LINE`] become pieces of at most `MAX_LINE`
/// bytes; pieces after the first read `TS out[PID]+ payload\n`.
pub(crate) struct Framer {
    /// ` out[PID]`, the part of the prefix after the timestamp.
    tag: Vec<u8>,
    /// `TS out[PID]` for the current chunk.
    head: Vec<u8>,
    /// `TS out[PID]: `, the whole prefix of a line, for [`Seg::Line`].
    line_head: Vec<u8>,
    /// The incomplete last line, at most `MAX_LINE` bytes.
    carry: Vec<u8>,
    /// The current line already produced a piece.
    continued: bool,
}

impl Framer {
    pub(crate) fn new(stream: Stream, pid: u32) -> Framer {
        Framer {
            tag: format!(" {}[{}]", stream.tag(), pid).into_bytes(),
            head: Vec::with_capacity(64),
            line_head: Vec::with_capacity(64),
            carry: Vec::new(),
            continued: false,
        }
    }

    /// Frames every complete line in `chunk` (joined with the carried
    /// partial line) into `out` and carries the incomplete rest. Returns
    /// the number of lines appended to `out`.
    /// (The copying framer: [`Framer::frame_segs`] is tested against it.)
    #[cfg(test)]
    pub(crate) fn frame(&mut self, chunk: &[u8], ts: &str, out: &mut Vec<u8>) -> u64 {
        self.set_head(ts);
        let mut lines = 0;
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            lines += self.end_line(&rest[..nl], out);
            rest = &rest[nl + 1..];
        }
        while self.carry.len() + rest.len() > MAX_LINE {
            lines += self.emit_full_piece(&mut rest, out);
        }
        self.carry.extend_from_slice(rest);
        lines
    }

    /// At end of input: frames the partial last line, if any, adding `\n`.
    pub(crate) fn finish(&mut self, ts: &str, out: &mut Vec<u8>) -> u64 {
        if self.carry.is_empty() {
            return 0;
        }
        self.set_head(ts);
        self.end_line(&[], out)
    }

    /// A partial line has gone quiet (a prompt with no newline): frames
    /// what is held back as a line now, with the time its last bytes came;
    /// the rest of that line, when it comes, continues as a `+` piece.
    pub(crate) fn flush_partial(&mut self, out: &mut Vec<u8>) -> u64 {
        if self.carry.is_empty() {
            return 0;
        }
        emit(out, &self.head, self.continued, &self.carry, &[]);
        self.carry.clear();
        self.continued = true;
        1
    }

    /// Whether an incomplete line is held back.
    pub(crate) fn has_partial(&self) -> bool {
        !self.carry.is_empty()
    }

    /// Bytes of the incomplete line held back.
    #[cfg(test)]
    fn carried(&self) -> usize {
        self.carry.len()
    }

    fn set_head(&mut self, ts: &str) {
        self.head.clear();
        self.head.extend_from_slice(ts.as_bytes());
        self.head.extend_from_slice(&self.tag);
        self.line_head.clear();
        self.line_head.extend_from_slice(&self.head);
        self.line_head.extend_from_slice(b": ");
    }

    /// `TS out[PID]: ` of the last chunk framed: what [`Seg::Line`]s start
    /// with.
    pub(crate) fn line_head(&self) -> &[u8] {
        &self.line_head
    }

    /// [`Framer::frame`] without copying the payload: `segs` gets each
    /// line as its prefix and its bytes with their newline ([`Seg::Line`])
    /// straight from `chunk` (at `base + offset` in the caller's buffer),
    /// to be written with `writev`. Only lines joined with a carried
    /// partial line, or cut into pieces, are framed by copying, into
    /// `spill` ([`Seg::Spill`]). The same bytes as `frame`; returns the
    /// number of lines.
    pub(crate) fn frame_segs(
        &mut self,
        chunk: &[u8],
        base: usize,
        ts: &str,
        segs: &mut Vec<Seg>,
        spill: &mut Vec<u8>,
    ) -> u64 {
        self.set_head(ts);
        let mut lines = 0;
        let mut pos = 0;
        // Whole lines are gathered in a small array and appended to `segs`
        // a batch at a time: one call per batch, not one per line, whatever
        // the optimizer inlines (the static build is optimized for size).
        let mut batch = [Seg::Line(0, 0); 64];
        let mut held = 0;
        while let Some(i) = memchr::memchr(b'\n', &chunk[pos..]) {
            let nl = pos + i;
            if self.carry.is_empty() && !self.continued && nl - pos <= MAX_LINE {
                batch[held] = Seg::Line(base + pos, base + nl + 1);
                held += 1;
                if held == batch.len() {
                    segs.extend_from_slice(&batch);
                    held = 0;
                }
                lines += 1;
            } else {
                segs.extend_from_slice(&batch[..held]);
                held = 0;
                let start = spill.len();
                lines += self.end_line(&chunk[pos..nl], spill);
                segs.push(Seg::Spill(start, spill.len()));
            }
            pos = nl + 1;
        }
        segs.extend_from_slice(&batch[..held]);
        let mut rest = &chunk[pos..];
        if self.carry.len() + rest.len() > MAX_LINE {
            let start = spill.len();
            while self.carry.len() + rest.len() > MAX_LINE {
                lines += self.emit_full_piece(&mut rest, spill);
            }
            segs.push(Seg::Spill(start, spill.len()));
        }
        self.carry.extend_from_slice(rest);
        lines
    }

    /// Ends the current line with `seg` as its last bytes.
    fn end_line(&mut self, mut seg: &[u8], out: &mut Vec<u8>) -> u64 {
        let mut lines = 1;
        while self.carry.len() + seg.len() > MAX_LINE {
            lines += self.emit_full_piece(&mut seg, out);
        }
        emit(out, &self.head, self.continued, &self.carry, seg);
        self.carry.clear();
        self.continued = false;
        lines
    }

    /// Emits `MAX_LINE` bytes from the carry and the front of `seg`.
    fn emit_full_piece(&mut self, seg: &mut &[u8], out: &mut Vec<u8>) -> u64 {
        let take = MAX_LINE - self.carry.len();
        emit(out, &self.head, self.continued, &self.carry, &seg[..take]);
        self.carry.clear();
        *seg = &seg[take..];
        self.continued = true;
        1
    }
}

/// A piece of framed output, by where its bytes are: see
/// [`Framer::frame_segs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg {
    /// The framer's [`Framer::line_head`], then `start..end` of the
    /// caller's read buffer (a line and its newline): two `iovec`s.
    Line(usize, usize),
    /// `start..end` of the spill buffer (whole framed lines).
    Spill(usize, usize),
}

fn emit(out: &mut Vec<u8>, head: &[u8], continued: bool, a: &[u8], b: &[u8]) {
    out.reserve(head.len() + 3 + a.len() + b.len());
    out.extend_from_slice(head);
    out.extend_from_slice(if continued { b"+ " } else { b": " });
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-11-26T08:00:00.123Z";

    fn frame_all(chunks: &[&[u8]], eof: bool) -> (Vec<u8>, u64, usize) {
        let mut f = Framer::new(Stream::Stdout, 42);
        let mut out = Vec::new();
        let mut lines = 0;
        for c in chunks {
            lines += f.frame(c, TS, &mut out);
        }
        if eof {
            lines += f.finish(TS, &mut out);
        }
        (out, lines, f.carried())
    }

    fn line(sep: &str, payload: &[u8]) -> Vec<u8> {
        let mut v = format!("{TS} out[42]{sep} ").into_bytes();
        v.extend_from_slice(payload);
        v.push(b'\n');
        v
    }

    struct Case {
        name: &'static str,
        chunks: &'static [&'static [u8]],
        eof: bool,
        want: &'static [(&'static str, &'static [u8])],
        carried: usize,
    }

    #[test]
    fn a_quiet_partial_line_is_flushed_and_its_rest_continues() {
        let mut f = Framer::new(Stream::Stdout, 42);
        let mut out = Vec::new();
        assert_eq!(f.frame(b"done\nPassword: ", TS, &mut out), 1);
        assert!(f.has_partial());
        assert_eq!(f.flush_partial(&mut out), 1);
        assert!(!f.has_partial());
        assert_eq!(f.flush_partial(&mut out), 0, "nothing twice");
        assert_eq!(f.frame(b"ok\nnext\n", TS, &mut out), 2);
        let want = [
            line(":", b"done"),
            line(":", b"Password: "),
            line("+", b"ok"),
            line(":", b"next"),
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
    }

    #[test]
    fn framing_table() {
        #[rustfmt::skip]
        let cases = [
            Case { name: "normal", chunks: &[b"hello\nworld\n"], eof: false,
                   want: &[(":", b"hello"), (":", b"world")], carried: 0 },
            Case { name: "empty line", chunks: &[b"\n"], eof: false,
                   want: &[(":", b"")], carried: 0 },
            Case { name: "no newline carried", chunks: &[b"abc"], eof: false,
                   want: &[], carried: 3 },
            Case { name: "carry joined", chunks: &[b"ab", b"c\nd"], eof: false,
                   want: &[(":", b"abc")], carried: 1 },
            Case { name: "partial flushed at eof", chunks: &[b"a\nb"], eof: true,
                   want: &[(":", b"a"), (":", b"b")], carried: 0 },
            Case { name: "crlf kept", chunks: &[b"dos\r\n"], eof: false,
                   want: &[(":", b"dos\r")], carried: 0 },
            Case { name: "invalid utf-8", chunks: &[b"\xff\xfe\x00x\n"], eof: false,
                   want: &[(":", b"\xff\xfe\x00x")], carried: 0 },
            Case { name: "nothing at eof", chunks: &[], eof: true,
                   want: &[], carried: 0 },
        ];
        for c in cases {
            let (out, lines, left) = frame_all(c.chunks, c.eof);
            let expect: Vec<u8> = c.want.iter().flat_map(|(s, p)| line(s, p)).collect();
            assert_eq!(out, expect, "{}", c.name);
            assert_eq!(lines, c.want.len() as u64, "{}", c.name);
            assert_eq!(left, c.carried, "{}", c.name);
        }
    }

    #[test]
    fn framing_long_lines() {
        let max = vec![b'a'; MAX_LINE];
        let mut over = max.clone();
        over.push(b'b');
        // (name, input, expected pieces as (separator, payload length))
        type Pieces = &'static [(&'static str, usize)];
        let cases: [(&str, Vec<u8>, Pieces); 3] = [
            (
                "exactly 64 KiB",
                [&max[..], b"\n"].concat(),
                &[(":", MAX_LINE)],
            ),
            (
                "64 KiB + 1",
                [&over[..], b"\n"].concat(),
                &[(":", MAX_LINE), ("+", 1)],
            ),
            (
                "2 x 64 KiB",
                [&max[..], &max[..], b"\n"].concat(),
                &[(":", MAX_LINE), ("+", MAX_LINE)],
            ),
        ];
        for (name, input, want) in cases {
            // Fed whole and byte-split at an awkward place: same output.
            for split in [input.len(), 1000] {
                let (a, b) = input.split_at(split);
                let (out, lines, left) = frame_all(&[a, b], false);
                let mut expect = Vec::new();
                let mut at = 0;
                for (sep, len) in want {
                    expect.extend(line(sep, &input[at..at + len]));
                    at += len;
                }
                assert_eq!(out, expect, "{name} split {split}");
                assert_eq!(lines, want.len() as u64, "{name}");
                assert_eq!(left, 0, "{name}");
            }
        }
    }

    #[test]
    fn framing_megabyte_without_newline() {
        let total = 16 * MAX_LINE + 100;
        let data: Vec<u8> = (0..total).map(|i| b'a' + (i % 26) as u8).collect();
        let mut f = Framer::new(Stream::Stderr, 7);
        let mut out = Vec::new();
        let mut lines = 0;
        for c in data.chunks(super::super::reader::READ_BUF - 3) {
            lines += f.frame(c, TS, &mut out);
            assert!(f.carried() <= MAX_LINE);
        }
        assert_eq!(lines, 16);
        assert_eq!(f.carried(), 100);
        lines += f.finish(TS, &mut out);
        assert_eq!(lines, 17);
        let mut joined = Vec::new();
        for (i, l) in out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let sep = if i == 0 { ": " } else { "+ " };
            let head = format!("{TS} err[7]{sep}");
            assert!(l.starts_with(head.as_bytes()), "piece {i}");
            let payload = &l[head.len()..];
            assert_eq!(payload.len(), if i < 16 { MAX_LINE } else { 100 });
            joined.extend_from_slice(payload);
        }
        assert_eq!(joined, data);
    }

    /// `frame_segs` gives the very bytes and line counts of `frame`,
    /// whatever the lines' lengths and however the stream is cut.
    #[test]
    fn segments_are_the_framed_bytes() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let mut stream = Vec::new();
            while stream.len() < 300_000 {
                let len = match next(10) {
                    0 => MAX_LINE + next(3) as usize - 1,
                    1 => 3 * MAX_LINE + next(100) as usize,
                    2 => 0,
                    _ => next(300) as usize,
                };
                stream.extend((0..len).map(|i| b'a' + (i % 26) as u8));
                if next(50) != 0 {
                    stream.push(b'\n');
                }
            }
            let (mut a, mut b) = (
                Framer::new(Stream::Stderr, 7),
                Framer::new(Stream::Stderr, 7),
            );
            let (mut want, mut got) = (Vec::new(), Vec::new());
            let (mut want_lines, mut got_lines) = (0, 0);
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let cut = (1 + next(70_000) as usize).min(rest.len());
                let (chunk, more) = rest.split_at(cut);
                want_lines += a.frame(chunk, TS, &mut want);
                let (mut segs, mut spill) = (Vec::new(), Vec::new());
                let base = next(5) as usize;
                let mut buf = vec![0u8; base];
                buf.extend_from_slice(chunk);
                got_lines += b.frame_segs(chunk, base, TS, &mut segs, &mut spill);
                for s in segs {
                    match s {
                        Seg::Line(x, y) => {
                            got.extend_from_slice(b.line_head());
                            got.extend_from_slice(&buf[x..y]);
                        }
                        Seg::Spill(x, y) => got.extend_from_slice(&spill[x..y]),
                    }
                }
                rest = more;
            }
            want_lines += a.finish(TS, &mut want);
            got_lines += b.finish(TS, &mut got);
            assert_eq!(want_lines, got_lines, "round {round}");
            assert!(want == got, "round {round}: the bytes differ");
        }
    }
}
