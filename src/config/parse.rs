//! The value parsers that several settings share: durations, sizes,
//! secrets and retentions. A leaf: it imports nothing of the crate.

use std::time::Duration;

use secrecy::SecretString;

/// Holds a password (or a URL that may contain one) so that `Debug` shows
/// `[REDACTED]`.
pub(super) fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

pub(super) fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|err| format!("{err} (expected a duration such as 500ms, 30s, 5m, 1h)"))
}

/// A duration above zero: a zero timeout would close every connection.
pub(super) fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    let duration = parse_duration(raw)?;
    if duration.is_zero() {
        return Err("must be above 0".into());
    }
    Ok(duration)
}

/// Bytes, or a number with KiB/MiB (×1024) or KB/MB (×1000).
pub(super) fn parse_size(raw: &str) -> Result<usize, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let value: usize = digits
        .parse()
        .map_err(|_| "expected a size such as 1048576, 512KiB or 1MiB".to_string())?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "kb" => 1000,
        "m" | "mib" => 1024 * 1024,
        "mb" => 1_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?}; use KiB, MiB, KB or MB"
            ));
        }
    };
    value
        .checked_mul(multiplier)
        .filter(|v| *v > 0)
        .ok_or_else(|| "size must be positive and fit in memory".to_string())
}

/// `EVENTS_RETENTION`: `off`, or how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Retention(pub(super) Option<Duration>);

pub(super) fn parse_retention(raw: &str) -> Result<Retention, String> {
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(Retention(None));
    }
    match parse_duration(raw)? {
        d if d < Duration::from_secs(1) => {
            Err(format!("{raw:?} is too short: at least 1s, or off"))
        }
        d if d > Duration::from_secs(100 * 365 * 86_400) => {
            Err(format!("{raw:?} is too long: at most 100 years, or off"))
        }
        d => Ok(Retention(Some(d))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_their_docs_say() {
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1GiB").is_err());
    }
}
