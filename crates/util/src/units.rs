//! Human units on the command line and in config files: `10s`, `250ms`,
//! `5m`, `1h`, `2d`; `1024`, `64KiB`, `16MiB`, `1GiB`.

use std::time::Duration;

/// A duration or size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number followed by a duration unit.
    #[error("`{0}` is not a duration (examples: 500ms, 10s, 5m, 1h, 2d)")]
    NotADuration(String),
    /// A unit other than ms, s, m, h, d.
    #[error("unknown duration unit `{unit}` in `{text}` (use ms, s, m, h or d)")]
    DurationUnit {
        /// The unit given.
        unit: String,
        /// The whole text.
        text: String,
    },
    /// Not a number followed by a size unit.
    #[error("`{0}` is not a size (examples: 1024, 64KiB, 16MiB)")]
    NotASize(String),
    /// A unit other than B, KiB, MiB, GiB.
    #[error("unknown size unit `{unit}` in `{text}` (use B, KiB, MiB or GiB)")]
    SizeUnit {
        /// The unit given.
        unit: String,
        /// The whole text.
        text: String,
    },
    /// The value overflows.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Parses a duration: a non-negative integer followed by `ms`, `s`, `m`, `h` or
/// `d`; a bare integer means seconds.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| UnitError::NotADuration(text.to_string()))?;
    let per_unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(UnitError::DurationUnit { unit: other.to_string(), text: text.to_string() }),
    };
    n.checked_mul(per_unit_ms).map(Duration::from_millis).ok_or_else(|| UnitError::TooLarge(text.to_string()))
}

/// Parses a byte size: an integer optionally followed by `B`, `KiB`, `MiB`,
/// `GiB` (also `K`, `M`, `G`, and `KB`/`MB`/`GB`, all powers of 1024).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_size(text: &str) -> Result<usize, UnitError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| UnitError::NotASize(text.to_string()))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(UnitError::SizeUnit { unit: other.to_string(), text: text.to_string() }),
    };
    n.checked_mul(mult).ok_or_else(|| UnitError::TooLarge(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "s", "-1s", "1.5s", "10y", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("x").is_err());
    }
}
