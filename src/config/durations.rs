//! Durations as Prometheus users write them (`500ms`, `10s`, `1m30s`), read and written.

use std::time::Duration;

use super::validate;

/// Parses a Prometheus-style duration: one or more `<number><unit>` with units ms, s, m, h.
/// Our own, because the crates that parse durations (humantime) take another grammar
/// (`1.5s`, `2 days`, `1month`) than the one Prometheus users write.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (use e.g. 500ms, 10s, 1m30s)");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("invalid duration {text:?}: must be greater than zero"));
    }
    Ok(total)
}

/// Parses a probe timeout (as `check --timeout` takes it): a duration within the range a
/// module's `timeout` accepts.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    validate::duration_in(Some(text), Duration::ZERO, validate::TIMEOUT_RANGE)
}

/// Formats a duration the way the config writes it.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}
