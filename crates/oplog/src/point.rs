//! `--at`: the point a point-in-time restore reaches, and which oplog entries it includes.
//!
//! The oplog is totally ordered by `ts` (seconds, increment), so a restore point is an inclusive
//! upper bound on `ts`: every entry with `ts <= bound` is applied, nothing after it. A point is
//! written in one of two forms:
//!
//! - an oplog timestamp, `Timestamp(1795543392, 5)` or `1795543392,5`: the bound is exactly that
//!   timestamp (the entry at `Timestamp(1795543392, 5)` is applied, `Timestamp(1795543392, 6)` is
//!   not);
//! - an RFC 3339 time, `2026-11-24T18:03:12Z`, with an optional fraction and a `Z` or `±HH:MM`
//!   offset: the bound is `Timestamp(s, 4294967295)` where `s` is the time in whole Unix seconds,
//!   rounded down. The seconds of a `ts` are the wall-clock second in which the primary wrote the
//!   entry, and the increment only orders the entries of that second, so a time selects whole
//!   seconds: every entry written during the second `18:03:12` is applied (even with
//!   `18:03:12.100Z`), none written at `18:03:13` or later. For a cut inside a second, give a
//!   timestamp.
//!
//! mongorestore's `--oplogLimit` is exclusive instead; [`RestorePoint::exclusive_limit`] converts.

use std::fmt;

use bson::Timestamp;

use crate::error::PointParseError;

/// How a restore point was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointForm {
    /// An oplog timestamp.
    Timestamp,
    /// An RFC 3339 time (whole seconds are kept).
    Time,
}

/// A parsed `--at` value: the last oplog timestamp to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorePoint {
    /// Entries with `ts <= last` are applied.
    pub last: Timestamp,
    /// The form the point was given in.
    pub form: PointForm,
}

impl RestorePoint {
    /// A point at an exact oplog timestamp.
    #[must_use]
    pub fn at_timestamp(last: Timestamp) -> Self {
        Self {
            last,
            form: PointForm::Timestamp,
        }
    }

    /// Whether an entry at `ts` is applied.
    #[must_use]
    pub fn includes(&self, ts: Timestamp) -> bool {
        (ts.time, ts.increment) <= (self.last.time, self.last.increment)
    }

    /// The equivalent exclusive `--oplogLimit` (the next timestamp), or `None` when the point is
    /// the greatest timestamp (nothing is excluded).
    #[must_use]
    pub fn exclusive_limit(&self) -> Option<Timestamp> {
        let Timestamp { time, increment } = self.last;
        match increment.checked_add(1) {
            Some(increment) => Some(Timestamp { time, increment }),
            None => time.checked_add(1).map(|time| Timestamp { time, increment: 0 }),
        }
    }
}

impl fmt::Display for RestorePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Timestamp { time, increment } = self.last;
        match self.form {
            PointForm::Timestamp => write!(f, "Timestamp({time}, {increment})"),
            PointForm::Time => write!(f, "{} (Timestamp({time}, {increment}))", format_time(time)),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a timestamp's seconds.
#[must_use]
pub fn format_time(seconds: u32) -> String {
    let secs = i64::from(seconds);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses `--at`: `Timestamp(secs, inc)`, `secs,inc`, or an RFC 3339 time (see the module
/// documentation for what each includes).
///
/// ```
/// use tidemark_oplog::parse_restore_point;
/// let p = parse_restore_point("Timestamp(1795543392, 5)").unwrap();
/// assert_eq!((p.last.time, p.last.increment), (1795543392, 5));
/// let p = parse_restore_point("2026-11-24T18:03:12.250+01:00").unwrap();
/// assert_eq!((p.last.time, p.last.increment), (1795539792, u32::MAX));
/// assert!(parse_restore_point("yesterday").is_err());
/// ```
///
/// # Errors
/// [`PointParseError`] naming what is wrong with the text.
pub fn parse_restore_point(text: &str) -> Result<RestorePoint, PointParseError> {
    let trimmed = text.trim();
    let bad = |why: &str| PointParseError(format!("{why} in '{text}'"));
    if let Some(inner) = trimmed.strip_prefix("Timestamp(").and_then(|r| r.strip_suffix(')')) {
        return parse_pair(inner).map(RestorePoint::at_timestamp).map_err(|e| bad(&e));
    }
    if trimmed.contains(',') {
        return parse_pair(trimmed).map(RestorePoint::at_timestamp).map_err(|e| bad(&e));
    }
    if trimmed.len() >= 10 && trimmed.as_bytes().get(4) == Some(&b'-') {
        let seconds = parse_rfc3339(trimmed).map_err(|e| bad(&e))?;
        let time =
            u32::try_from(seconds).map_err(|_| bad("time outside the range of oplog timestamps (1970 to 2106)"))?;
        return Ok(RestorePoint {
            last: Timestamp {
                time,
                increment: u32::MAX,
            },
            form: PointForm::Time,
        });
    }
    Err(bad(
        "expected an RFC 3339 time (2026-11-24T18:03:12Z) or a timestamp (Timestamp(secs, inc) or secs,inc)",
    ))
}

fn parse_pair(text: &str) -> Result<Timestamp, String> {
    let mut parts = text.split(',');
    let (Some(secs), Some(inc), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("a timestamp has two parts, seconds and increment".into());
    };
    let time = secs
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("invalid timestamp seconds '{}'", secs.trim()))?;
    let increment = inc
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("invalid timestamp increment '{}'", inc.trim()))?;
    Ok(Timestamp { time, increment })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Whole Unix seconds (rounded down) of an RFC 3339 `date-time`.
fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let b = text.as_bytes();
    let digits = |from: usize, len: usize, what: &str| -> Result<i64, String> {
        let part = b.get(from..from + len).ok_or_else(|| format!("missing {what}"))?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(format!("invalid {what}"));
        }
        Ok(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let expect = |at: usize, chars: &[u8], what: &str| -> Result<(), String> {
        match b.get(at) {
            Some(c) if chars.contains(c) => Ok(()),
            _ => Err(format!("expected {what} at offset {at}")),
        }
    };
    let year = digits(0, 4, "year")?;
    expect(4, b"-", "'-'")?;
    let month = digits(5, 2, "month")?;
    expect(7, b"-", "'-'")?;
    let day = digits(8, 2, "day")?;
    expect(10, b"Tt ", "'T'")?;
    let hour = digits(11, 2, "hour")?;
    expect(13, b":", "':'")?;
    let minute = digits(14, 2, "minute")?;
    expect(16, b":", "':'")?;
    let second = digits(17, 2, "second")?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!("day {day} out of range for {year:04}-{month:02}"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("time of day {hour:02}:{minute:02}:{second:02} out of range"));
    }
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Err("empty fraction of a second".into());
        }
    }
    let offset = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let hours = digits(at + 1, 2, "offset hours")?;
            expect(at + 3, b":", "':' in the offset")?;
            let minutes = digits(at + 4, 2, "offset minutes")?;
            if hours > 23 || minutes > 59 {
                return Err("offset out of range".into());
            }
            let offset = hours * 3600 + minutes * 60;
            at += 6;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return Err("missing time zone ('Z' or an offset such as +01:00)".into()),
    };
    if at != b.len() {
        return Err(format!("unexpected text after the time zone at offset {at}"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(time: u32, increment: u32) -> Timestamp {
        Timestamp { time, increment }
    }

    #[test]
    fn timestamps_are_exact_inclusive_bounds() {
        for text in [
            "Timestamp(1795543392, 5)",
            "Timestamp(1795543392,5)",
            "1795543392,5",
            " 1795543392 , 5 ",
        ] {
            let p = parse_restore_point(text).unwrap();
            assert_eq!(p.last, ts(1_795_543_392, 5), "{text}");
            assert_eq!(p.form, PointForm::Timestamp);
        }
        let p = parse_restore_point("10,5").unwrap();
        assert!(p.includes(ts(10, 5)) && p.includes(ts(9, 99)) && !p.includes(ts(10, 6)));
        assert_eq!(p.exclusive_limit(), Some(ts(10, 6)));
        assert_eq!(
            parse_restore_point("10,4294967295").unwrap().exclusive_limit(),
            Some(ts(11, 0))
        );
        assert_eq!(
            parse_restore_point("4294967295,4294967295").unwrap().exclusive_limit(),
            None
        );
    }

    #[test]
    fn rfc3339_times_cover_their_whole_second() {
        // date -u -d 2026-11-24T18:03:12Z +%s
        let p = parse_restore_point("2026-11-24T18:03:12Z").unwrap();
        assert_eq!(p.last, ts(1_795_543_392, u32::MAX));
        assert_eq!(p.form, PointForm::Time);
        assert!(p.includes(ts(1_795_543_392, 123_456)) && !p.includes(ts(1_795_543_393, 0)));
        for (text, secs) in [
            ("2026-11-24T18:03:12.999999Z", 1_795_543_392),
            ("2026-11-24t18:03:12z", 1_795_543_392),
            ("2026-11-24 18:03:12Z", 1_795_543_392),
            ("2026-11-24T19:03:12+01:00", 1_795_543_392),
            ("2026-11-24T17:33:12.5-00:30", 1_795_543_392),
            ("1970-01-01T00:00:00Z", 0),
            ("2024-02-29T00:00:00Z", 1_709_164_800),
            ("2106-02-07T06:28:15Z", 4_294_967_295),
        ] {
            assert_eq!(parse_restore_point(text).unwrap().last.time, secs, "{text}");
        }
        assert_eq!(format_time(1_795_543_392), "2026-11-24T18:03:12Z");
    }

    #[test]
    fn bad_points_name_the_problem() {
        for (text, why) in [
            ("yesterday", "expected an RFC 3339 time"),
            ("2026-11-24T18:03:12", "missing time zone"),
            ("2026-13-01T00:00:00Z", "month 13 out of range"),
            ("2025-02-29T00:00:00Z", "day 29 out of range"),
            ("2026-11-24T24:00:00Z", "out of range"),
            ("2026-11-24T18:03:12.Z", "empty fraction"),
            ("2026-11-24T18:03:12Zjunk", "unexpected text"),
            ("1969-12-31T23:59:59Z", "outside the range"),
            ("Timestamp(1, 2, 3)", "two parts"),
            ("Timestamp(x, 2)", "invalid timestamp seconds 'x'"),
            ("1,-2", "invalid timestamp increment '-2'"),
            ("4294967296,0", "invalid timestamp seconds"),
        ] {
            let err = parse_restore_point(text).unwrap_err().to_string();
            assert!(err.starts_with("invalid --at value: "), "{err}");
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
        }
    }
}
