//! Words for people: durations, signal names, how a child ended, a handover
//! in progress. Shared by the driver's log lines, `status` and the health
//! probes, so they all say the same thing the same way.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::policy::ExitKind;

/// "SIGTERM", or "signal 77" for a number with no name here.
pub(crate) fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// "exited with code 1", "was killed by SIGKILL".
pub(crate) fn describe_exit(kind: ExitKind) -> String {
    match kind {
        ExitKind::Code(c) => format!("exited with code {c}"),
        ExitKind::Signal(0) => "is gone (reaped elsewhere)".into(),
        ExitKind::Signal(s) => format!("was killed by {}", signal_name(s)),
    }
}

/// Text from someone else (a process's command line, the child's
/// `STATUS=`) made safe to show a person: on one line, every control
/// character (C0, DEL, C1: terminal escapes, carriage returns) and run of
/// whitespace made one space, cut at `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.join(" ");
    match joined.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// "250ms", "4s", "1m 30s": humantime, rounded to what people read.
pub(crate) fn human(d: Duration) -> String {
    let d = if d >= Duration::from_secs(10) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

/// How long a child lived, as the tail of "child N exited ...": "after 4s",
/// but "12 ms after it started" under a second and "right after it
/// started" under a millisecond (not "after 0s" or "after 1ms", which read
/// like a clock that was not read).
pub(crate) fn lived(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        "right after it started".into()
    } else if d < Duration::from_secs(1) {
        format!("{} ms after it started", d.as_millis())
    } else {
        format!("after {}", human(d))
    }
}

/// A handover in words, as `status` shows it and a refused `restart`
/// says it: `phase` is the record's ("starting" or "draining"), `new` the
/// new child once spawned, `old` the child being replaced.
pub(crate) fn handover(phase: &str, new: Option<i32>, old: i32) -> String {
    match phase {
        "draining" => format!("draining old child {old}"),
        _ => {
            let new = new.map_or("?".into(), |p| p.to_string());
            format!("starting new child {new} (old {old} serving)")
        }
    }
}

/// `n` and the noun, singular or plural: "1 byte", "3 restarts".
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        let table = [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(4_000), "4s"),
            (Duration::from_millis(9_999), "9s 999ms"),
            (Duration::from_millis(90_400), "1m 30s"),
        ];
        for (d, want) in table {
            assert_eq!(human(d), want);
        }
        for (d, want) in [
            (Duration::ZERO, "right after it started"),
            (Duration::from_micros(900), "right after it started"),
            (Duration::from_micros(1_500), "1 ms after it started"),
            (Duration::from_millis(999), "999 ms after it started"),
            (Duration::from_millis(1_000), "after 1s"),
            (Duration::from_millis(61_500), "after 1m 1s"),
        ] {
            assert_eq!(lived(d), want, "{d:?}");
        }
        assert_eq!(describe_exit(ExitKind::Code(3)), "exited with code 3");
        assert_eq!(describe_exit(ExitKind::Signal(9)), "was killed by SIGKILL");
        assert_eq!(signal_name(1000), "signal 1000");
        assert_eq!(count(1, "restart"), "1 restart");
        assert_eq!(count(0, "restart"), "0 restarts");
        // Terminal escapes, a carriage return and C1 controls never survive.
        assert_eq!(
            one_line(
                "\u{1b}]0;TITLE\u{7}\u{1b}[2J\u{1b}[31mRED\rFAKE\u{9b}2J LINE\n",
                400
            ),
            "]0;TITLE [2J [31mRED FAKE 2J LINE"
        );
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn a_handover_in_words() {
        assert_eq!(
            handover("starting", Some(1234), 1200),
            "starting new child 1234 (old 1200 serving)"
        );
        // Not spawned yet (a record written between the two steps).
        assert_eq!(
            handover("starting", None, 1200),
            "starting new child ? (old 1200 serving)"
        );
        assert_eq!(
            handover("draining", Some(1234), 1200),
            "draining old child 1200"
        );
    }
}
