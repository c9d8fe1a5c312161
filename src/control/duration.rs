//! Durations as written in the config file: `"15m"`, `"10s"`, `"500ms"`,
//! `"2h"`, `"1m30s"`.
//!
//! A duration is one or more `<digits><unit>` parts, units `h`, `m`, `s`,
//! `ms`, from the largest to the smallest, each at most once. No sign, no
//! fraction, no spaces. Zero is a valid duration here; the config loader
//! rejects it where a timeout must be positive.

use std::time::Duration;

/// Units from the largest to the smallest, with their length in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// The longest duration accepted: a year. Timeouts are added to the
/// director's clock in milliseconds; far longer ones could only overflow
/// it, and no IPVS or keepalived timeout is longer.
pub const MAX_DURATION: Duration = Duration::from_secs(8760 * 3600);

/// Parses a duration such as `"1m30s"`; the error is a sentence for the user.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration; expected e.g. \"10s\", \"500ms\", \"15m\"".to_owned());
    }
    if s.starts_with('-') {
        return Err(format!("duration \"{s}\" is negative"));
    }
    let mut rest = s;
    let mut total_ms: u64 = 0;
    // Index into UNITS of the last unit used; the next one must be smaller.
    let mut last: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration \"{s}\"; expected a number and a unit (h, m, s, ms), e.g. \"1m30s\""
            ));
        }
        let (number, tail) = rest.split_at(digits);
        let letters = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(letters);
        if unit.is_empty() && !tail.is_empty() {
            return Err(format!(
                "invalid duration \"{s}\"; expected a number and a unit (h, m, s, ms), e.g. \"1m30s\""
            ));
        }
        if unit.is_empty() {
            return Err(format!(
                "duration \"{s}\" has no unit; write e.g. \"{number}s\" (units: h, m, s, ms)"
            ));
        }
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!(
                "unknown unit `{unit}` in duration \"{s}\"; expected h, m, s or ms"
            ));
        };
        if last.is_some_and(|l| index <= l) {
            return Err(format!(
                "invalid duration \"{s}\"; units must go from the largest to the smallest, each once"
            ));
        }
        last = Some(index);
        let overflow = || format!("duration \"{s}\" is too large");
        let n: u64 = number.parse().map_err(|_| overflow())?;
        let ms = n.checked_mul(UNITS[index].1).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(ms).ok_or_else(overflow)?;
        rest = tail;
    }
    let d = Duration::from_millis(total_ms);
    if d > MAX_DURATION {
        return Err(format!(
            "duration \"{s}\" is too large; the longest is 8760h (a year)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("15m", Duration::from_secs(15 * 60)),
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2h", Duration::from_secs(2 * 3600)),
            ("1m30s", Duration::from_secs(90)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("0s", Duration::ZERO),
            ("007s", Duration::from_secs(7)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_forms_with_a_reason() {
        let cases = [
            ("", "empty duration"),
            ("-5s", "is negative"),
            ("10", "has no unit"),
            ("10d", "unknown unit `d`"),
            ("10 s", "invalid duration"),
            ("1.5s", "invalid duration"),
            ("s", "invalid duration"),
            ("30s1m", "largest to the smallest"),
            ("1s1s", "largest to the smallest"),
            ("99999999999999999999s", "too large"),
            ("18446744073709551615h", "too large"),
            ("5124095576030h1h", "largest to the smallest"),
        ];
        for (text, want) in cases {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn rejects_a_sum_that_overflows() {
        // 5124095576030 h is just below u64::MAX ms; adding the minutes overflows.
        let err = parse_duration("5124095576030h999999999m").unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn a_year_is_the_longest_duration() {
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        for text in ["8760h1ms", "5124095576030h", "99999999h"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("the longest is 8760h"), "{text}: {err}");
        }
    }
}
