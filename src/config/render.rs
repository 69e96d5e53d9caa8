//! Values written back as TOML (`check-config`'s resolved config, walked
//! by [`super::keys::to_toml`]): built as `toml_edit` values, so quoting
//! and escaping are TOML's own, and [`super::Config::parse`] reads the
//! text back to an equal config.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml_edit::{Array, InlineTable, Value};

use super::{Limit, LimitUnit, Resource};

pub(super) fn text(s: &str) -> Value {
    Value::from(s)
}

pub(super) fn path(p: &Path) -> Value {
    text(&p.to_string_lossy())
}

pub(super) fn int(n: impl Into<i64>) -> Value {
    Value::from(n.into())
}

/// The way humantime reads it back: `"1m 30s"`.
pub(super) fn duration(d: Duration) -> Value {
    text(&humantime::format_duration(d).to_string())
}

/// A whole number of GiB, MiB or KiB as such (`"10MiB"`), anything else
/// in bytes: exact either way.
pub(super) fn size(bytes: u64) -> Value {
    let unit = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        .into_iter()
        .find(|(unit, _)| bytes > 0 && bytes.is_multiple_of(*unit));
    match (unit, i64::try_from(bytes)) {
        (Some((unit, name)), _) => text(&format!("{}{name}", bytes / unit)),
        (None, Ok(n)) => Value::from(n),
        // Loaded values fit in a TOML integer; this is for completeness.
        (None, Err(_)) => text(&bytes.to_string()),
    }
}

pub(super) fn array<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|s| text(s.as_ref()))
            .collect::<Array>(),
    )
}

pub(super) fn table(map: &BTreeMap<String, String>) -> Value {
    Value::InlineTable(
        map.iter()
            .map(|(k, v)| (k.as_str(), text(v)))
            .collect::<InlineTable>(),
    )
}

pub(super) fn limit(resource: Resource, limit: &Limit) -> Value {
    match (limit, resource.unit()) {
        (Limit::Unlimited, _) => text("unlimited"),
        (Limit::Value(n), LimitUnit::Bytes) => size(*n),
        (Limit::Value(n), LimitUnit::Count | LimitUnit::Seconds) => match i64::try_from(*n) {
            Ok(n) => Value::from(n),
            Err(_) => text(&n.to_string()),
        },
    }
}
