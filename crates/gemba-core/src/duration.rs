//! Durations as operators write them in config files: `500ms`, `1s`, `2m`,
//! `1h30m`. Kept here rather than in a dependency because the grammar is
//! tiny and the error messages must name the offending text.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A [`Duration`] that parses from and prints to `1h2m3s400ms` style text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("empty duration".to_string());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "invalid duration {text:?}: expected a number, e.g. \"500ms\", \"2s\", \"1m30s\""
                ));
            }
            let value: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let part = match unit {
                "ms" => Duration::from_millis(value),
                "s" => Duration::from_secs(value),
                "m" => Duration::from_secs(value.saturating_mul(60)),
                "h" => Duration::from_secs(value.saturating_mul(3600)),
                "d" => Duration::from_secs(value.saturating_mul(86_400)),
                "" => {
                    return Err(format!(
                        "invalid duration {text:?}: missing unit (ms, s, m, h or d)"
                    ))
                }
                other => {
                    return Err(format!(
                        "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                    ))
                }
            };
            // Each part saturates; their sum must not overflow either
            // (a query string may say `18446744073709551615d9d`).
            total = total
                .checked_add(part)
                .ok_or_else(|| format!("invalid duration {text:?}: too long"))?;
        }
        Ok(HumanDuration(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{}", ms / size, unit)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        let d: HumanDuration = "1h30m2s5ms".parse().unwrap();
        assert_eq!(d.0, Duration::from_millis(5_402_005));
        assert_eq!(d.to_string(), "1h30m2s5ms");
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().to_string(),
            "250ms"
        );
    }

    #[test]
    fn a_sum_too_long_is_an_error_not_a_panic() {
        // Found by the `events` fuzz target through an event query.
        let err = "18446744073709551615d6744073709551615d"
            .parse::<HumanDuration>()
            .unwrap_err();
        assert!(err.contains("too long"), "{err}");
    }

    #[test]
    fn rejects_missing_or_unknown_units_by_name() {
        let err = "10".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("missing unit"), "{err}");
        let err = "10 weeks".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("unknown unit"), "{err}");
        assert!("ms".parse::<HumanDuration>().is_err());
    }
}
