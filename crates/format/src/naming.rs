//! File names in a dump directory: how collection names become file stems and back.
//!
//! mongodump names every data and metadata file after Go's `url.QueryEscape` of the collection
//! name: bytes `A-Z a-z 0-9 - _ . ~` are kept, a space becomes `+`, and every other byte
//! (each UTF-8 byte on its own) becomes `%XX` with upper-case hex. mongorestore undoes it with
//! `url.QueryUnescape`, where a malformed `%` sequence is an error. Database names are never
//! escaped; instead both tools validate them (at most 63 bytes, none of `/\. "$` or NUL) before
//! using them as directory names.
//!
//! An escaped name longer than [`MAX_STEM_LEN`] bytes is shortened so that the longest file name
//! (`<stem>.metadata.json.gz`) fits in 255 bytes: the first 208 escaped bytes, then `%24`, then
//! the unpadded URL-safe base64 of the SHA-1 of the raw name. A reader recognises such a stem
//! (it contains `%24` and is exactly 238 bytes long) and takes the real name from the
//! `collectionName` of the sibling metadata file ([`is_shortened_stem`]).

use std::fmt;

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Length, in bytes, of a shortened file stem (and the longest stem written unshortened).
pub const MAX_STEM_LEN: usize = 238;
/// Number of escaped bytes kept in front of `%24` in a shortened stem.
pub const SHORTENED_PREFIX_LEN: usize = 208;
/// The marker between the kept prefix and the hash in a shortened stem (an escaped `$`).
pub const SHORTENED_MARKER: &str = "%24";
/// Longest database name, in bytes.
pub const MAX_DB_NAME_LEN: usize = 63;
/// Characters a database name may not contain.
pub const INVALID_DB_CHARS: &[char] = &['/', '\\', '.', ' ', '"', '\0', '$'];
/// Characters a collection name may not contain.
pub const INVALID_COLLECTION_CHARS: &[char] = &['$', '\0'];
/// Prefix of the hidden buckets collection behind a timeseries collection.
pub const TIMESERIES_BUCKET_PREFIX: &str = "system.buckets.";

/// Why a name could not be unescaped or validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// A `%` not followed by two hex digits (Go reports `invalid URL escape "%zz"`).
    #[error("invalid URL escape {sequence:?} in file name {input:?}")]
    InvalidEscape {
        /// The whole input.
        input: String,
        /// The malformed sequence (at most 3 bytes, from the `%`).
        sequence: String,
    },
    /// The unescaped bytes are not UTF-8, so they cannot be a MongoDB name.
    #[error("file name {input:?} unescapes to bytes that are not valid UTF-8")]
    NotUtf8 {
        /// The whole input.
        input: String,
    },
    /// A database name longer than 63 bytes.
    #[error("db name '{name}' is longer than 63 characters")]
    DbNameTooLong {
        /// The name.
        name: String,
    },
    /// A database name containing one of `/\. "$` or NUL.
    #[error("illegal character '{character}' found in db name '{name}'")]
    DbNameIllegalChar {
        /// The name.
        name: String,
        /// The offending character.
        character: char,
    },
    /// An empty collection name.
    #[error("collection name cannot be an empty string")]
    EmptyCollectionName,
    /// A collection name containing `$` or NUL.
    #[error("illegal character '{character}' found in '{name}'")]
    CollectionNameIllegalChar {
        /// The name.
        name: String,
        /// The offending character.
        character: char,
    },
    /// A user collection name starting with `system.`.
    #[error("collection name '{name}' is not allowed to begin with 'system.'")]
    SystemCollectionName {
        /// The name.
        name: String,
    },
}

/// A database and collection name pair (`db.collection`).
///
/// The top-level `oplog.bson` of a dump has the namespace `"".oplog`, as in mongorestore.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Namespace {
    /// Database name.
    pub db: String,
    /// Collection name (unescaped).
    pub collection: String,
}

impl Namespace {
    /// A namespace from its two parts.
    pub fn new(db: impl Into<String>, collection: impl Into<String>) -> Self {
        Self {
            db: db.into(),
            collection: collection.into(),
        }
    }

    /// Splits `db.collection` at the first dot (a string without a dot is a bare database).
    #[must_use]
    pub fn parse(namespace: &str) -> Self {
        match namespace.split_once('.') {
            Some((db, collection)) => Self::new(db, collection),
            None => Self::new(namespace, ""),
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.collection)
    }
}

/// Go `url.QueryEscape`: keeps `A-Za-z0-9-_.~`, turns a space into `+`, and writes every other
/// byte as `%XX` (upper-case hex).
///
/// ```
/// use tidemark_format::naming::query_escape;
/// assert_eq!(query_escape("coll/three"), "coll%2Fthree");
/// assert_eq!(query_escape("cafés"), "caf%C3%A9s");
/// assert_eq!(query_escape("a b"), "a+b");
/// assert_eq!(query_escape("a+b"), "a%2Bb");
/// ```
#[must_use]
pub fn query_escape(name: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0F)]));
            }
        }
    }
    out
}

/// Go `url.QueryUnescape` to raw bytes: `+` becomes a space, `%XX` (either case) the byte XX,
/// everything else is kept. A `%` not followed by two hex digits is an error.
///
/// # Errors
/// [`NameError::InvalidEscape`] naming the input and the malformed sequence.
pub fn query_unescape_bytes(input: &str) -> Result<Vec<u8>, NameError> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    let end = (i + 3).min(bytes.len());
                    return Err(NameError::InvalidEscape {
                        input: input.to_owned(),
                        sequence: String::from_utf8_lossy(&bytes[i..end]).into_owned(),
                    });
                };
                out.push((hi << 4) | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// [`query_unescape_bytes`] for names, which must be UTF-8.
///
/// ```
/// use tidemark_format::naming::query_unescape;
/// assert_eq!(query_unescape("caf%C3%A9s").unwrap(), "cafés");
/// assert_eq!(query_unescape("a+b").unwrap(), "a b");
/// assert!(query_unescape("bad%zz").is_err());
/// ```
///
/// # Errors
/// [`NameError::InvalidEscape`], or [`NameError::NotUtf8`] when the bytes are not UTF-8.
pub fn query_unescape(input: &str) -> Result<String, NameError> {
    let bytes = query_unescape_bytes(input)?;
    String::from_utf8(bytes).map_err(|_| NameError::NotUtf8 {
        input: input.to_owned(),
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The file stem mongodump uses for a collection (without `.bson`/`.metadata.json`): the escaped
/// name, shortened when it is longer than [`MAX_STEM_LEN`] bytes.
///
/// ```
/// use tidemark_format::naming::file_stem;
/// let name = format!("aVery{}LongCollectionNameConsistingOfExactlyTwoHundredAndFortySevenCharacters",
///     "Very".repeat(43));
/// let stem = file_stem(&name);
/// assert_eq!(stem.len(), 238);
/// assert!(stem.ends_with("LongCollectionNameConsistingOfE%24xFO0VquRn7cg3QooSZD5sglTddU"));
/// ```
#[must_use]
pub fn file_stem(collection: &str) -> String {
    let escaped = query_escape(collection);
    if escaped.len() <= MAX_STEM_LEN {
        return escaped;
    }
    // The escaped string is ASCII, so any byte index is a char boundary.
    let mut stem = String::with_capacity(MAX_STEM_LEN);
    stem.push_str(&escaped[..SHORTENED_PREFIX_LEN]);
    stem.push_str(SHORTENED_MARKER);
    stem.push_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha1::digest(collection.as_bytes())));
    stem
}

/// Whether a file stem is a shortened one whose real name must be read from the sibling
/// metadata file's `collectionName` (it contains `%24` and is exactly 238 bytes long).
#[must_use]
pub fn is_shortened_stem(stem: &str) -> bool {
    stem.len() == MAX_STEM_LEN && stem.contains(SHORTENED_MARKER)
}

/// Database-name rule shared by both tools: at most 63 bytes and none of `/\. "$` or NUL.
///
/// # Errors
/// [`NameError::DbNameTooLong`] or [`NameError::DbNameIllegalChar`] (the first illegal character
/// in the order `/`, `\`, `.`, space, `"`, NUL, `$`, as the Go tools check them).
pub fn validate_db_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_DB_NAME_LEN {
        return Err(NameError::DbNameTooLong { name: name.to_owned() });
    }
    if let Some(&character) = INVALID_DB_CHARS.iter().find(|c| name.contains(**c)) {
        return Err(NameError::DbNameIllegalChar {
            name: name.to_owned(),
            character,
        });
    }
    Ok(())
}

/// Collection grammar shared by both tools (system collections allowed): not empty, no `$` or NUL.
///
/// # Errors
/// [`NameError::EmptyCollectionName`] or [`NameError::CollectionNameIllegalChar`].
pub fn validate_collection_grammar(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::EmptyCollectionName);
    }
    if let Some(&character) = INVALID_COLLECTION_CHARS.iter().find(|c| name.contains(**c)) {
        return Err(NameError::CollectionNameIllegalChar {
            name: name.to_owned(),
            character,
        });
    }
    Ok(())
}

/// Collection-name rule for user-chosen names: [`validate_collection_grammar`] and no `system.`
/// prefix.
///
/// # Errors
/// [`NameError::SystemCollectionName`] or those of [`validate_collection_grammar`].
pub fn validate_collection_name(name: &str) -> Result<(), NameError> {
    if name.starts_with("system.") {
        return Err(NameError::SystemCollectionName { name: name.to_owned() });
    }
    validate_collection_grammar(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go_query_escape() {
        assert_eq!(query_escape("$"), "%24");
        assert_eq!(query_escape("A-Za-z0-9-_.~"), "A-Za-z0-9-_.~");
        assert_eq!(query_escape("?&=;:@,/"), "%3F%26%3D%3B%3A%40%2C%2F");
        assert_eq!(query_escape("\u{0}\u{7f}"), "%00%7F");
    }

    #[test]
    fn unescape_errors_name_the_sequence() {
        let err = query_unescape("abc%4").unwrap_err();
        assert_eq!(
            err,
            NameError::InvalidEscape {
                input: "abc%4".into(),
                sequence: "%4".into()
            }
        );
        let err = query_unescape("%g0zz").unwrap_err();
        assert!(err.to_string().contains("\"%g0\""), "{err}");
        assert_eq!(query_unescape("%2b%2B+").unwrap(), "++ ");
        assert!(matches!(query_unescape("%FF"), Err(NameError::NotUtf8 { .. })));
    }

    #[test]
    fn db_and_collection_rules() {
        assert!(validate_db_name(&"a".repeat(63)).is_ok());
        assert!(matches!(
            validate_db_name(&"a".repeat(64)),
            Err(NameError::DbNameTooLong { .. })
        ));
        for bad in ["a/b", "a\\b", "a.b", "a b", "a\"b", "a\0b", "a$b"] {
            assert!(validate_db_name(bad).is_err(), "{bad}");
        }
        assert!(validate_collection_grammar("system.users").is_ok());
        assert!(validate_collection_name("system.users").is_err());
        assert!(validate_collection_name("a$b").is_err());
        assert!(validate_collection_name("").is_err());
        assert!(validate_collection_name("a.b c").is_ok());
    }

    #[test]
    fn namespace_splits_at_first_dot() {
        assert_eq!(Namespace::parse("db.a.b"), Namespace::new("db", "a.b"));
        assert_eq!(Namespace::parse("db"), Namespace::new("db", ""));
        assert_eq!(Namespace::new("x", "y.z").to_string(), "x.y.z");
    }
}
