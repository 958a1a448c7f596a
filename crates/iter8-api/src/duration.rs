//! The one duration grammar of iter8: every duration field of the CRDs and every duration flag
//! of the controller, the analytics service and the CLI is written this way.
//!
//! Whole numbers with a unit, concatenated: `30s`, `5m`, `1h30m`, `250ms` (units `ms`, `s`,
//! `m`, `h`), the subset of Go's `time.ParseDuration` (so of `kubectl` and Flagger) that a CRD
//! pattern can state exactly: [`PATTERN`] accepts a string exactly when [`parse`] does.
//! humantime was weighed and not used: it also accepts `1M` (a month of 30.44 days), `2y`,
//! `3 weeks` and spaces, which no Kubernetes pattern would mirror, so fields and flags would
//! again disagree.

use std::time::Duration;

/// The OpenAPI pattern of a duration, as the CRDs and the chart's values schema state it.
pub const PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// A string that is not a duration of [`PATTERN`]'s grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a duration: use whole numbers with units ms, s, m or h, e.g. 30s, 1m30s, 250ms"
)]
pub struct DurationError {
    /// The refused text.
    pub text: String,
}

/// Parses a duration of [`PATTERN`]'s grammar.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_duration(text).ok_or_else(|| DurationError {
        text: text.to_string(),
    })
}

/// Parses a duration of [`PATTERN`]'s grammar; `None` otherwise.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let value: u32 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return None;
        };
        total = total.checked_add(unit.checked_mul(value)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_crd_pattern() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for refused in [
            "5x", "5", "s", "", " 5s", "5s ", "1.5s", "-1s", "+1s", "5 s", "1d",
        ] {
            assert_eq!(parse_duration(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn a_refused_duration_says_what_is_accepted() {
        let err = parse("1.5s").expect_err("refused");
        assert_eq!(
            err.to_string(),
            r#""1.5s" is not a duration: use whole numbers with units ms, s, m or h, e.g. 30s, 1m30s, 250ms"#
        );
    }
}
