//! Values with a unit or a range: durations, sizes, resource limits, the
//! umask and bounded integers. Pure functions like [`super::values`]; the
//! messages say the bound and, for a number without a unit, what to write.

use std::time::Duration;

use toml_edit::{Item, Value};

use super::values::{kind, Parsed};
use super::{Limit, LimitUnit, Resource};

pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);

/// An integer from `lo` to `hi`, converted to the field's type.
pub(super) fn int_in<T: TryFrom<i64>>(item: &Item, lo: i64, hi: i64) -> Parsed<T> {
    match item.as_integer() {
        Some(i) if (lo..=hi).contains(&i) => {
            T::try_from(i).map_err(|_| format!("{i} is out of range"))
        }
        Some(i) => Err(format!("{i} is out of range; must be {lo} to {hi}")),
        None => Err(format!("must be an integer, not {}", kind(item))),
    }
}

/// `n word` or `n words`.
pub(super) fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A duration string like `"10s"` or `"1m 30s"`, at most `max`.
pub(super) fn duration(item: &Item, max: Duration) -> Parsed<Duration> {
    let negative = "a duration cannot be negative";
    let s = match item.as_value() {
        Some(Value::String(s)) => s.value(),
        Some(Value::Integer(i)) if *i.value() < 0 => {
            return Err(format!(r#"{}: {negative}; write e.g. "10s""#, i.value()))
        }
        Some(Value::Integer(i)) => {
            return Err(format!(
                r#"a bare number needs a unit, e.g. "{}s""#,
                i.value()
            ))
        }
        Some(Value::Float(f)) => {
            let f = *f.value();
            return Err(if !f.is_finite() {
                format!(r#"{f} is not a duration; write e.g. "10s""#)
            } else if f.is_sign_negative() {
                format!(r#"{f}: {negative}; write e.g. "10s""#)
            } else {
                format!(r#"a bare number needs a unit, e.g. "{f}s""#)
            });
        }
        _ => {
            return Err(format!(
                r#"must be a duration like "10s", not {}"#,
                kind(item)
            ))
        }
    };
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(r#"{s:?}: {negative}; write e.g. "10s""#));
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        if t.parse::<f64>().is_ok() {
            format!(r#"{s:?} needs a unit, e.g. "{t}s""#)
        } else {
            format!(r#"{s:?} is not a duration ({e}); write e.g. "250ms", "10s", "5m""#)
        }
    })?;
    if d > max {
        return Err(format!(
            "{s:?} is too long; at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// A [`duration`] that must be more than 0; `why` says what 0 would do.
pub(super) fn positive(item: &Item, max: Duration, why: &str) -> Parsed<Duration> {
    match duration(item, max)? {
        d if d.is_zero() => Err(format!("must be more than 0: {why}")),
        d => Ok(d),
    }
}

/// A size: a number of bytes, or a string like `"10MiB"`.
pub(super) fn size(item: &Item) -> Parsed<u64> {
    match item.as_value() {
        Some(Value::Integer(i)) => {
            let i = *i.value();
            u64::try_from(i).map_err(|_| format!("{i} is negative; a size cannot be"))
        }
        Some(Value::String(s)) => parse_size(s.value()),
        _ => Err(format!(
            r#"must be a size like "10MiB" or a number of bytes, not {}"#,
            kind(item)
        )),
    }
}

/// `"10MiB"`, `"500 KB"`, `"1.5GiB"`, `"4096"`. Decimal and binary units are
/// both accepted; the bare letters K/M/G/T are refused as ambiguous.
pub(super) fn parse_size(s: &str) -> Parsed<u64> {
    let not_a_size =
        || format!(r#"{s:?} is not a size; write e.g. "10MiB", "500KB" or a number of bytes"#);
    let too_large = || format!("{s:?} is too large");
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("{s:?} is negative; a size cannot be"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at_checked(split).ok_or_else(not_a_size)?;
    let unit = unit.trim().to_ascii_uppercase();
    let multiplier: u128 = match unit.as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KIB" => 1 << 10,
        "MB" => 1_000_000,
        "MIB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GIB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "TIB" => 1 << 40,
        "K" | "M" | "G" | "T" => {
            return Err(format!(
                r#"{s:?}: "{unit}" is ambiguous; write "{unit}B" (powers of 1000) or "{unit}iB" (powers of 1024)"#
            ))
        }
        _ => return Err(not_a_size()),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(not_a_size());
    }
    // u128 integer arithmetic is exact; 18 fraction digits are finer than
    // any byte count needs.
    let frac = frac.get(..frac.len().min(18)).unwrap_or("");
    let value = |d: &str| match d {
        "" => Ok(0),
        d => d.parse::<u128>().map_err(|_| too_large()),
    };
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = value(whole)?
        .checked_mul(multiplier)
        .and_then(|w| w.checked_add(value(frac).ok()? * multiplier / scale))
        .ok_or_else(too_large)?;
    // TOML integers are i64; staying within keeps `to_toml` round-trippable.
    i64::try_from(bytes)
        .ok()
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(too_large)
}

/// A size of at least `min` bytes; `why` says what less would do.
pub(super) fn size_at_least(item: &Item, min: u64, why: &str) -> Parsed<u64> {
    match size(item)? {
        n if n < min => Err(format!(
            "{} is too small; at least {}: {why}",
            plural(n, "byte"),
            plural(min, "byte")
        )),
        n => Ok(n),
    }
}

/// An octal umask string like `"022"` or `"0027"`.
pub(super) fn umask(item: &Item) -> Parsed<u32> {
    let s =
        match item.as_value() {
            Some(Value::String(s)) => s.value(),
            Some(Value::Integer(_)) => return Err(
                r#"write it as an octal string like "022": a TOML number would be read as decimal"#
                    .into(),
            ),
            _ => {
                return Err(format!(
                    r#"must be an octal string like "022", not {}"#,
                    kind(item)
                ))
            }
        };
    let octal = !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(s, 8) {
        Ok(mask) if octal && mask <= 0o777 => Ok(mask),
        _ => Err(format!(
            r#"{s:?} is not a umask; write up to 3 octal digits (0-7) after an optional 0, e.g. "022" or "0027""#
        )),
    }
}

/// A `[child.limits]` value: a number in the resource's unit (sizes may be
/// strings like "64MiB", cpu seconds a duration like "10m"), or
/// `"unlimited"`.
pub(super) fn limit(item: &Item, resource: Resource) -> Parsed<Limit> {
    if item.as_str() == Some("unlimited") {
        return Ok(Limit::Unlimited);
    }
    let unit = resource.unit();
    let n = match (unit, item.as_value()) {
        (LimitUnit::Bytes, _) => size(item)?,
        (_, Some(Value::Integer(i))) => {
            let i = *i.value();
            u64::try_from(i).map_err(|_| format!("{i} is negative; a limit cannot be"))?
        }
        (LimitUnit::Seconds, Some(Value::String(_))) => {
            let d = duration(item, Duration::MAX)?;
            if d.subsec_nanos() != 0 {
                return Err("CPU time is limited in whole seconds".into());
            }
            d.as_secs()
        }
        (LimitUnit::Count, _) => {
            return Err(format!(
                r#"must be a number or "unlimited", not {}"#,
                kind(item)
            ))
        }
        (LimitUnit::Seconds, _) => {
            return Err(format!(
                r#"must be a number of seconds, a duration like "10m" or "unlimited", not {}"#,
                kind(item)
            ))
        }
    };
    let floor = match resource {
        // fds 0-3 (stdin, stdout, stderr, the socket) are there at exec.
        Resource::Nofile => Some((4, "the child starts with fds 0-3 open")),
        Resource::Nproc => Some((1, "the child itself is a process")),
        Resource::Cpu => Some((1, "0 seconds would kill the child at once")),
        Resource::Data | Resource::Stack => Some((1, "the child could not run")),
        Resource::Core | Resource::Fsize | Resource::Memlock => None,
    };
    match floor {
        Some((min, why)) if n < min => Err(format!("{n} is too small; at least {min}: {why}")),
        // TOML integers are i64; staying within keeps `to_toml` round-trippable.
        _ if i64::try_from(n).is_err() => Err(format!("{n} is too large")),
        _ => Ok(Limit::Value(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::item;

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("10MiB", 10_485_760),
            ("10MB", 10_000_000),
            ("500KB", 500_000),
            ("500 kib", 512_000),
            ("1.5GiB", 1_610_612_736),
            (".5 MiB", 524_288),
            ("4096", 4096),
            ("4096B", 4096),
            ("2TB", 2_000_000_000_000),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "MiB",
            "10M",
            "1.2.3MB",
            "-5MB",
            "inf",
            "NaN",
            "1e9",
            "10 XB",
            "99999999999999TiB",
            "9999999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    /// (TOML value, the message must contain this, and must not contain that).
    const MESSAGES: &[(&str, &str, &str)] = &[
        ("-1", "cannot be negative", "e.g. \"-1"),
        ("\"-1s\"", "cannot be negative", "e.g. \"-1"),
        ("-1.5", "cannot be negative", "e.g. \"-1"),
        ("10", "needs a unit, e.g. \"10s\"", "negative"),
        ("1.5", "needs a unit, e.g. \"1.5s\"", "negative"),
        ("\"10\"", "needs a unit, e.g. \"10s\"", "negative"),
        ("nan", "is not a duration", "needs a unit"),
        ("-0.0", "cannot be negative", "e.g. \"-"),
        ("\"soon\"", "is not a duration", "negative"),
        ("\"2h\"", "too long; at most 1h", "negative"),
        (
            "true",
            "must be a duration like \"10s\", not a boolean",
            "negative",
        ),
    ];

    #[test]
    fn duration_messages() {
        for (text, want, not) in MESSAGES {
            let e = duration(&item(text), HOUR).unwrap_err();
            assert!(e.contains(want) && !e.contains(not), "{text}: {e}");
        }
        assert_eq!(
            duration(&item("\"1m 30s\""), HOUR),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(duration(&item("\"0s\""), HOUR), Ok(Duration::ZERO));
        let e = positive(&item("\"0s\""), HOUR, "a tight loop").unwrap_err();
        assert_eq!(e, "must be more than 0: a tight loop");
    }

    #[test]
    fn umasks() {
        for (text, want) in [
            ("\"022\"", Ok(0o22)),
            ("\"0027\"", Ok(0o27)),
            ("\"0\"", Ok(0)),
            ("\"777\"", Ok(0o777)),
            ("\"0777\"", Ok(0o777)),
            ("\"1000\"", Err("not a umask")),
            ("\"08\"", Err("not a umask")),
            ("\"\"", Err("not a umask")),
            ("\"+22\"", Err("not a umask")),
            ("\"00022\"", Err("not a umask")),
            ("22", Err("decimal")),
            ("true", Err("not a boolean")),
        ] {
            match (umask(&item(text)), want) {
                (Ok(m), Ok(w)) => assert_eq!(m, w, "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn limits() {
        use Limit::{Unlimited, Value as V};
        use Resource::*;
        for (resource, text, want) in [
            (Nofile, "8192", Ok(V(8192))),
            (Nofile, "\"unlimited\"", Ok(Unlimited)),
            (Nofile, "4", Ok(V(4))),
            (Nofile, "3", Err("at least 4")),
            (Nofile, "\"8192\"", Err("must be a number")),
            (Nofile, "-1", Err("negative")),
            (Nproc, "0", Err("at least 1")),
            (Cpu, "60", Ok(V(60))),
            (Cpu, "\"10m\"", Ok(V(600))),
            (Cpu, "\"1.5s\"", Err("whole seconds")),
            (Cpu, "0", Err("kill the child at once")),
            (Core, "0", Ok(V(0))),
            (Core, "\"1MiB\"", Ok(V(1 << 20))),
            (Stack, "\"8MiB\"", Ok(V(8 << 20))),
            (Stack, "0", Err("at least 1")),
            (Data, "\"Unlimited\"", Err("not a size")),
            (Memlock, "true", Err("must be a size")),
        ] {
            match (limit(&item(text), resource), want) {
                (Ok(l), Ok(w)) => assert_eq!(l, w, "{resource:?} {text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{resource:?} {text}: {e}"),
                (got, _) => panic!("{resource:?} {text}: {got:?}"),
            }
        }
    }

    #[test]
    fn small_sizes_say_the_minimum_in_words() {
        let e = size_at_least(&item("1"), 4096, "x").unwrap_err();
        assert_eq!(e, "1 byte is too small; at least 4096 bytes: x");
        let e = size_at_least(&item("2"), 4096, "x").unwrap_err();
        assert!(e.starts_with("2 bytes is too small"), "{e}");
        assert_eq!(size_at_least(&item("\"4KiB\""), 4096, "x"), Ok(4096));
    }
}
