//! Where the problems of a config go: each with its position in the file
//! (`FILE:LINE:COL: key `k`: what is wrong`), all reported at once in file
//! order; [`Sub`], through which a key's parser reports what is wrong
//! below it; and [`Found`], the keys that were in the file, for the rules
//! between keys.

use std::fmt::Display;
use std::ops::Range;
use std::path::Path;

use super::ConfigError;

/// The problems found so far, each with its byte offset for sorting.
pub(super) struct Problems<'t> {
    text: &'t str,
    file: String,
    list: Vec<(Option<usize>, String)>,
    /// Where each line starts, made at the first problem with a position:
    /// finding a line is then a binary search, so a file with a problem
    /// on each of its 90,000 lines is reported in linear time (counting
    /// lines from the start for each one took 26 s).
    line_starts: Option<Vec<usize>>,
    /// Bytes read to place problems (for the test that the work stays
    /// linear in the file's size).
    scanned: usize,
}

impl<'t> Problems<'t> {
    pub(super) fn new(text: &'t str, path: &Path) -> Self {
        Problems {
            text,
            file: path.display().to_string(),
            list: Vec::new(),
            line_starts: None,
            scanned: 0,
        }
    }

    /// Byte offset → 1-based line and column (in characters), as
    /// [`line_col`] says, from the line index.
    fn position(&mut self, offset: usize) -> (usize, usize) {
        let text = self.text;
        let starts = self.line_starts.get_or_insert_with(|| {
            self.scanned += text.len();
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1; // never below 0: offset 0 is always a boundary
        }
        // The number of lines starting at or before `end` (at least one).
        let line = starts.partition_point(|s| *s <= end);
        let start = starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        self.scanned += end - start;
        let col = text.get(start..end).unwrap_or("").chars().count() + 1;
        (line, col)
    }

    /// Whether none was found.
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `FILE:LINE:COL: key `key`: msg`.
    pub(super) fn report(&mut self, span: Option<Range<usize>>, key: &str, msg: impl Display) {
        // Keys may be quoted TOML strings holding anything; keep one line.
        self.raw(span, &format!("key `{}`: {msg}", key.escape_debug()));
    }

    /// `FILE:LINE:COL: msg`.
    pub(super) fn raw(&mut self, span: Option<Range<usize>>, msg: &str) {
        let problem = match &span {
            Some(span) => {
                let (line, col) = self.position(span.start);
                format!("{}:{line}:{col}: {msg}", self.file)
            }
            None => format!("{}: {msg}", self.file),
        };
        self.list.push((span.map(|s| s.start), problem));
    }

    pub(super) fn into_error(mut self) -> ConfigError {
        // File order reads best; problems without a position last.
        self.list.sort_by_key(|(at, _)| at.unwrap_or(usize::MAX));
        ConfigError {
            problems: self.list.into_iter().map(|(_, p)| p).collect(),
        }
    }
}

/// Where a parser reports problems below its key (`child.command[1]`,
/// `child.env.A`) or, for the rules between keys, about any key.
pub(super) struct Sub<'p, 't> {
    key: &'p str,
    problems: &'p mut Problems<'t>,
    /// A problem was reported through it.
    pub(super) failed: bool,
}

impl<'p, 't> Sub<'p, 't> {
    pub(super) fn new(key: &'p str, problems: &'p mut Problems<'t>) -> Self {
        Sub {
            key,
            problems,
            failed: false,
        }
    }

    /// A problem at `span`, naming this key followed by `suffix`.
    pub(super) fn report(&mut self, span: Option<Range<usize>>, suffix: &str, msg: impl Display) {
        self.failed = true;
        let key = format!("{}{suffix}", self.key);
        self.problems.report(span, &key, msg);
    }
}

/// A key that was in the file, and whether its value was accepted.
pub(super) struct Seen {
    pub(super) section: &'static str,
    pub(super) name: &'static str,
    pub(super) span: Option<Range<usize>>,
    pub(super) ok: bool,
}

/// The keys that were in the file, for the rules between keys.
pub(super) struct Found<'a>(pub(super) &'a [Seen]);

impl Found<'_> {
    fn get(&self, section: &str, name: &str) -> Option<&Seen> {
        self.0
            .iter()
            .find(|s| s.section == section && s.name == name)
    }

    /// Whether `section.name` was in the file.
    pub(super) fn present(&self, section: &str, name: &str) -> bool {
        self.get(section, name).is_some()
    }

    /// Where `section.name`'s value is (its key for a dotted table).
    pub(super) fn span(&self, section: &str, name: &str) -> Option<Range<usize>> {
        self.get(section, name).and_then(|s| s.span.clone())
    }

    /// False when `section.name` was in the file with a bad value (a
    /// problem was reported already; a rule using it would only add noise).
    pub(super) fn ok(&self, section: &str, name: &str) -> bool {
        self.get(section, name).is_none_or(|s| s.ok)
    }

    /// The names of the keys of `section` that were in the file, in file
    /// order.
    pub(super) fn in_section<'s>(
        &'s self,
        section: &'s str,
    ) -> impl Iterator<Item = &'static str> + 's {
        self.0
            .iter()
            .filter(move |s| s.section == section)
            .map(|s| s.name)
    }
}

/// Byte offset → 1-based line and column (in characters).
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1; // never below 0: offset 0 is always a boundary
    }
    let before = text.get(..end).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_index_places_problems_as_counting_from_the_start_does() {
        let text = "a = 1\n\n[t\u{e9}]\nx = \"\u{e9}\u{e9}\"\r\nlast";
        let mut p = Problems::new(text, Path::new("/c.toml"));
        for offset in (0..=text.len() + 3).rev() {
            assert_eq!(
                p.position(offset),
                line_col(text, offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn ninety_thousand_unknown_tables_cost_linear_work() {
        // Each unknown table is a problem: the bytes read to place them
        // all stay within a small multiple of the file's size (counting
        // lines from the start for each read ~n²/2 lines).
        for n in [30_000usize, 90_000] {
            let text: String = (0..n).map(|i| format!("[t{i}]\nx = 1\n")).collect();
            let mut p = Problems::new(&text, Path::new("/c.toml"));
            let mut at = 0;
            for line in text.split_inclusive('\n') {
                p.raw(Some(at..at + 1), "unknown");
                at += line.len();
            }
            assert!(
                p.scanned <= 3 * text.len(),
                "{n} tables: {} bytes read for a {}-byte file",
                p.scanned,
                text.len()
            );
        }
    }
}
