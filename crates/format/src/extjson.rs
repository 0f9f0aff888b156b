//! MongoDB Extended JSON v2 output, byte-identical to what the MongoDB Database Tools print.
//!
//! `bsondump` prints one document per line and `mongodump` writes `metadata.json` in canonical mode.
//! The `bson` crate's own Extended JSON goes through `serde_json`, whose number and string formatting
//! differs from the Go driver the real tools use (`1.0` vs `1`, exponent style, escaping of U+2028).
//! This module renders straight from raw BSON with the Go driver's rules so our output can be compared
//! byte for byte with theirs:
//! - doubles use Go's `strconv.FormatFloat(f, 'G', -1, 64)` (shortest round-trip digits, exponent form
//!   when the decimal exponent is below -4 or at least 6, written like `1E+06`), with `.0` appended to
//!   integral values;
//! - strings escape `"`, `\`, control characters and U+2028/U+2029, never HTML characters, and invalid
//!   UTF-8 becomes `\ufffd`;
//! - regular-expression options are sorted, binary subtypes are two lower-case hex digits;
//! - relaxed mode prints int32/int64/finite doubles as bare numbers and dates between years 1970 and
//!   9999 as RFC 3339 with milliseconds trimmed.
//!
//! Nesting is limited to [`MAX_DEPTH`] levels so hostile input cannot exhaust the stack.

use std::fmt::Write as _;

use bson::raw::{RawBsonRef, RawDocument};

/// Deepest nesting of documents and arrays rendered before giving up with an error.
pub const MAX_DEPTH: usize = 1024;

/// Which Extended JSON flavour to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Type-preserving: every number wrapped (`{"$numberInt":"1"}`), dates as `$numberLong`.
    Canonical,
    /// Human-friendly: plain JSON numbers and ISO-8601 dates where that loses nothing important.
    Relaxed,
}

/// Why a document could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The raw bytes are not valid BSON.
    #[error("invalid BSON: {0}")]
    InvalidBson(#[from] bson::raw::Error),
    /// Documents nested deeper than [`MAX_DEPTH`].
    #[error("document nesting exceeds {MAX_DEPTH} levels")]
    TooDeep,
}

/// Renders one document as a single line of compact Extended JSON (no trailing newline).
///
/// ```
/// use tidemark_format::extjson::{to_string, Mode};
/// let doc = bson::rawdoc! { "a": 1.0, "b": 2_i64 };
/// assert_eq!(to_string(&doc, Mode::Canonical).unwrap(), r#"{"a":{"$numberDouble":"1.0"},"b":{"$numberLong":"2"}}"#);
/// assert_eq!(to_string(&doc, Mode::Relaxed).unwrap(), r#"{"a":1.0,"b":2}"#);
/// ```
///
/// # Errors
/// Malformed BSON inside the document, or nesting deeper than [`MAX_DEPTH`].
pub fn to_string(doc: &RawDocument, mode: Mode) -> Result<String, RenderError> {
    let mut out = String::with_capacity(doc.as_bytes().len() * 2);
    write_document(&mut out, doc, mode, 0)?;
    Ok(out)
}

/// Appends the compact Extended JSON of `doc` to `out`.
///
/// # Errors
/// See [`to_string`].
pub fn write_to(out: &mut String, doc: &RawDocument, mode: Mode) -> Result<(), RenderError> {
    write_document(out, doc, mode, 0)
}

fn write_document(out: &mut String, doc: &RawDocument, mode: Mode, depth: usize) -> Result<(), RenderError> {
    if depth >= MAX_DEPTH {
        return Err(RenderError::TooDeep);
    }
    out.push('{');
    let mut first = true;
    for element in doc {
        let (key, value) = element?;
        if !first {
            out.push(',');
        }
        first = false;
        write_string(out, key);
        out.push(':');
        write_value(out, value, mode, depth)?;
    }
    out.push('}');
    Ok(())
}

fn write_value(out: &mut String, value: RawBsonRef<'_>, mode: Mode, depth: usize) -> Result<(), RenderError> {
    let canonical = mode == Mode::Canonical;
    match value {
        RawBsonRef::Double(f) => {
            let s = format_double(f);
            if canonical || !f.is_finite() {
                let _ = write!(out, r#"{{"$numberDouble":"{s}"}}"#);
            } else {
                out.push_str(&s);
            }
        }
        RawBsonRef::String(s) => write_string(out, s),
        RawBsonRef::Document(d) => write_document(out, d, mode, depth + 1)?,
        RawBsonRef::Array(a) => {
            if depth + 1 >= MAX_DEPTH {
                return Err(RenderError::TooDeep);
            }
            out.push('[');
            let mut first = true;
            for item in a {
                if !first {
                    out.push(',');
                }
                first = false;
                write_value(out, item?, mode, depth + 1)?;
            }
            out.push(']');
        }
        RawBsonRef::Binary(b) => {
            out.push_str(r#"{"$binary":{"base64":""#);
            out.push_str(&base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                b.bytes,
            ));
            let _ = write!(out, r#"","subType":"{:02x}"}}}}"#, u8::from(b.subtype));
        }
        RawBsonRef::Undefined => out.push_str(r#"{"$undefined":true}"#),
        RawBsonRef::ObjectId(oid) => {
            let _ = write!(out, r#"{{"$oid":"{}"}}"#, oid.to_hex());
        }
        RawBsonRef::Boolean(b) => out.push_str(if b { "true" } else { "false" }),
        RawBsonRef::DateTime(dt) => write_date(out, dt.timestamp_millis(), canonical),
        RawBsonRef::Null => out.push_str("null"),
        RawBsonRef::RegularExpression(re) => {
            let mut options: Vec<char> = re.options.chars().collect();
            options.sort_unstable();
            let options: String = options.into_iter().collect();
            out.push_str(r#"{"$regularExpression":{"pattern":"#);
            write_string(out, re.pattern);
            out.push_str(r#","options":"#);
            write_string(out, &options);
            out.push_str("}}");
        }
        RawBsonRef::DbPointer(p) => {
            // The raw accessor does not expose the parts; go through the owned form.
            let owned = bson::Bson::try_from(RawBsonRef::DbPointer(p))?;
            let ext = owned.into_canonical_extjson();
            let ns = ext["$dbPointer"]["$ref"].as_str().unwrap_or_default().to_owned();
            let id = ext["$dbPointer"]["$id"]["$oid"].as_str().unwrap_or_default().to_owned();
            // The Go writer copies the namespace without escaping; so do we.
            let _ = write!(out, r#"{{"$dbPointer":{{"$ref":"{ns}","$id":{{"$oid":"{id}"}}}}}}"#);
        }
        RawBsonRef::JavaScriptCode(code) => {
            out.push_str(r#"{"$code":"#);
            write_string(out, code);
            out.push('}');
        }
        RawBsonRef::Symbol(s) => {
            out.push_str(r#"{"$symbol":"#);
            write_string(out, s);
            out.push('}');
        }
        RawBsonRef::JavaScriptCodeWithScope(cws) => {
            out.push_str(r#"{"$code":"#);
            write_string(out, cws.code);
            out.push_str(r#","$scope":"#);
            write_document(out, cws.scope, mode, depth + 1)?;
            out.push('}');
        }
        RawBsonRef::Int32(i) => {
            if canonical {
                let _ = write!(out, r#"{{"$numberInt":"{i}"}}"#);
            } else {
                let _ = write!(out, "{i}");
            }
        }
        RawBsonRef::Timestamp(ts) => {
            let _ = write!(out, r#"{{"$timestamp":{{"t":{},"i":{}}}}}"#, ts.time, ts.increment);
        }
        RawBsonRef::Int64(i) => {
            if canonical {
                let _ = write!(out, r#"{{"$numberLong":"{i}"}}"#);
            } else {
                let _ = write!(out, "{i}");
            }
        }
        RawBsonRef::Decimal128(d) => {
            let _ = write!(out, r#"{{"$numberDecimal":"{d}"}}"#);
        }
        RawBsonRef::MaxKey => out.push_str(r#"{"$maxKey":1}"#),
        RawBsonRef::MinKey => out.push_str(r#"{"$minKey":1}"#),
    }
    Ok(())
}

fn write_date(out: &mut String, millis: i64, canonical: bool) {
    const MIN_ISO: i64 = 0; // 1970-01-01T00:00:00Z
    const MAX_ISO: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    if canonical || !(MIN_ISO..=MAX_ISO).contains(&millis) {
        let _ = write!(out, r#"{{"$date":{{"$numberLong":"{millis}"}}}}"#);
        return;
    }
    let dt = bson::DateTime::from_millis(millis);
    match dt.try_to_rfc3339_string() {
        Ok(s) => {
            // bson prints `...:SS.mmmZ` always; Go's layout `.999` trims trailing zeros (and the dot).
            let s = trim_millis(&s);
            let _ = write!(out, r#"{{"$date":"{s}"}}"#);
        }
        Err(_) => {
            let _ = write!(out, r#"{{"$date":{{"$numberLong":"{millis}"}}}}"#);
        }
    }
}

fn trim_millis(s: &str) -> String {
    let Some(body) = s.strip_suffix('Z') else {
        return s.to_owned();
    };
    match body.rsplit_once('.') {
        Some((head, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{head}Z")
            } else {
                format!("{head}.{frac}Z")
            }
        }
        None => s.to_owned(),
    }
}

/// Formats a double like Go's `strconv.FormatFloat(f, 'G', -1, 64)`, plus `.0` for integral values.
#[must_use]
pub fn format_double(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    // Go switches to exponent form when exp < -4 or exp >= 6 (the shortest-precision rule).
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let exp_sign = if exp < 0 { '-' } else { '+' };
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        return format!("{sign}{first}{dot}E{exp_sign}{:02}", exp.unsigned_abs());
    }
    let n_digits = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let body = if exp < 0 {
        let zeros = usize::try_from(-exp - 1).unwrap_or(0);
        format!("0.{}{digits}", "0".repeat(zeros))
    } else if exp + 1 >= n_digits {
        let zeros = usize::try_from(exp + 1 - n_digits).unwrap_or(0);
        format!("{digits}{}.0", "0".repeat(zeros))
    } else {
        let split = usize::try_from(exp + 1).unwrap_or(0);
        format!("{}.{}", &digits[..split], &digits[split..])
    };
    format!("{sign}{body}")
}

/// Writes a JSON string with the Go driver's escaping rules (HTML escaping off).
pub fn write_string(out: &mut String, s: &str) {
    write_go_string(out, s, false);
}

/// Writes a JSON string as Go writes them: `"`, `\`, control characters, U+2028 and U+2029
/// escaped; with `escape_html` (Go's `encoding/json` default, used for `prelude.json`) also `<`, `>`
/// and `&` as `\u003c`, `\u003e`, `\u0026`.
pub fn write_go_string(out: &mut String, s: &str, escape_html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' if escape_html => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Re-indents compact JSON like Go's `json.Indent(dst, src, "", "\t")`, which `bsondump --pretty` uses:
/// one element per line, tab indentation, `": "` after keys, empty objects and arrays kept as `{}`/`[]`.
#[must_use]
pub fn indent_tabs(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = compact.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push('\t');
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_follow_go_formatting() {
        // Values and expectations from Go's strconv.FormatFloat(f, 'G', -1, 64) semantics.
        let cases = [
            (1.0, "1.0"),
            (2.5, "2.5"),
            (4.01, "4.01"),
            (17.76, "17.76"),
            (-3.0, "-3.0"),
            (123_456.0, "123456.0"),
            (1_000_000.0, "1E+06"),
            (1_234_567.0, "1.234567E+06"),
            (0.0001, "0.0001"),
            (0.00001, "1E-05"),
            (1.5e-300, "1.5E-300"),
            (1e21, "1E+21"),
            (0.1, "0.1"),
            (f64::MAX, "1.7976931348623157E+308"),
        ];
        for (f, want) in cases {
            assert_eq!(format_double(f), want, "{f}");
        }
        assert_eq!(format_double(f64::NAN), "NaN");
        assert_eq!(format_double(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn strings_escape_like_go() {
        let mut out = String::new();
        write_string(&mut out, "a\"b\\c\n\u{1}<>&\u{2028}é");
        assert_eq!(out, r#""a\"b\\c\n\u0001<>&\u2028é""#);
    }

    #[test]
    fn relaxed_dates_trim_milliseconds() {
        let doc = bson::rawdoc! { "d": bson::DateTime::from_millis(1_415_909_689_584), "e": bson::DateTime::from_millis(0), "f": bson::DateTime::from_millis(-1) };
        assert_eq!(
            to_string(&doc, Mode::Relaxed).unwrap(),
            r#"{"d":{"$date":"2014-11-13T20:14:49.584Z"},"e":{"$date":"1970-01-01T00:00:00Z"},"f":{"$date":{"$numberLong":"-1"}}}"#
        );
    }

    #[test]
    fn pretty_matches_go_indent() {
        let compact = r#"{"a":{"b":[1,{}]},"c":[],"d":"x:,{"}"#;
        assert_eq!(
            indent_tabs(compact),
            "{\n\t\"a\": {\n\t\t\"b\": [\n\t\t\t1,\n\t\t\t{}\n\t\t]\n\t},\n\t\"c\": [],\n\t\"d\": \"x:,{\"\n}"
        );
    }
}
