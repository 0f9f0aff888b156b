//! `--oplogLimit <seconds>[:<increment>]`.

use bson::Timestamp;

use crate::error::LimitParseError;

/// Parses mongorestore's `--oplogLimit` syntax: `<seconds>[:<increment>]`, both unsigned 32-bit;
/// `"123"` and `"123:"` mean increment 0.
///
/// ```
/// use tidemark_oplog::parse_oplog_limit;
/// let ts = parse_oplog_limit("1614088897:3").unwrap();
/// assert_eq!((ts.time, ts.increment), (1614088897, 3));
/// assert_eq!(parse_oplog_limit("123:").unwrap().increment, 0);
/// assert!(parse_oplog_limit("123.123").is_err());
/// ```
///
/// # Errors
/// [`LimitParseError`] for anything else (`"1:1:1"`, `":"`, `""`, `"cats"`, out of range).
pub fn parse_oplog_limit(text: &str) -> Result<Timestamp, LimitParseError> {
    let bad = |why: &str| LimitParseError(format!("{why} in '{text}'"));
    let mut parts = text.split(':');
    let seconds = parts.next().unwrap_or_default();
    let increment = parts.next();
    if parts.next().is_some() {
        return Err(bad("too many ':' separators"));
    }
    let time: u32 = seconds.parse().map_err(|_| bad("invalid seconds value"))?;
    let increment: u32 = match increment {
        None | Some("") => 0,
        Some(i) => i.parse().map_err(|_| bad("invalid increment value"))?,
    };
    Ok(Timestamp { time, increment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples() {
        assert_eq!(
            parse_oplog_limit("123").unwrap(),
            Timestamp {
                time: 123,
                increment: 0
            }
        );
        assert_eq!(
            parse_oplog_limit("123:").unwrap(),
            Timestamp {
                time: 123,
                increment: 0
            }
        );
        assert_eq!(parse_oplog_limit("4294967295:4294967295").unwrap().increment, u32::MAX);
        for bad in ["1:1:1", "123.123", ":", "", "cats", "4294967296", "-1"] {
            let err = parse_oplog_limit(bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("error parsing timestamp argument to --oplogLimit: "),
                "{bad}"
            );
        }
    }
}
