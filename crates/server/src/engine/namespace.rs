//! Database and collection names, validated with mongod's rules.
//!
//! mongod rejects database names that are empty, longer than 63 bytes or contain any of `/\. "$` or NUL, and
//! collection names that are empty, contain `$` or NUL, or start with `.`; the full `db.coll` namespace may not
//! exceed 255 bytes. All of these fail with InvalidNamespace (73).

use std::fmt;

use crate::error::{CommandError, CommandResult};

/// Longest database name mongod accepts, in bytes.
pub const MAX_DB_NAME_LEN: usize = 63;
/// Longest full namespace (`db.coll`) mongod accepts, in bytes.
pub const MAX_NS_LEN: usize = 255;

/// A validated `db.collection` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    /// Database name.
    pub db: String,
    /// Collection name (may contain dots).
    pub coll: String,
}

impl Namespace {
    /// Validates and builds a namespace.
    pub fn new(db: &str, coll: &str) -> CommandResult<Self> {
        validate_db_name(db)?;
        let full_len = db.len() + 1 + coll.len();
        if coll.is_empty()
            || coll.contains('$')
            || coll.contains('\0')
            || coll.starts_with('.')
            || full_len > MAX_NS_LEN
        {
            return Err(CommandError::invalid_namespace(format!(
                "Invalid namespace specified '{db}.{coll}'"
            )));
        }
        Ok(Self {
            db: db.to_string(),
            coll: coll.to_string(),
        })
    }

    /// Parses `db.coll` (the database is everything before the first dot).
    pub fn parse(full: &str) -> CommandResult<Self> {
        match full.split_once('.') {
            Some((db, coll)) => Self::new(db, coll),
            None => Err(CommandError::invalid_namespace(format!(
                "Invalid namespace specified '{full}'"
            ))),
        }
    }

    /// Whether this is a `system.*` collection.
    pub fn is_system(&self) -> bool {
        self.coll.starts_with("system.")
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// Checks a database name against mongod's rules.
pub fn validate_db_name(db: &str) -> CommandResult<()> {
    if db.is_empty()
        || db.len() > MAX_DB_NAME_LEN
        || db
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'))
    {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid database name: '{db}'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mongod_namespace_rules() {
        assert!(Namespace::new("test", "c").is_ok());
        assert!(Namespace::new("test", "a.b.c").is_ok());
        for bad_db in ["", "a/b", "a\\b", "a.b", "a b", "a\"b", "a$b", "a\0b", &"x".repeat(64)] {
            assert_eq!(Namespace::new(bad_db, "c").unwrap_err().code, 73, "{bad_db:?}");
        }
        for bad_coll in ["", "a$b", "a\0b", ".a"] {
            assert_eq!(Namespace::new("db", bad_coll).unwrap_err().code, 73, "{bad_coll:?}");
        }
        assert_eq!(Namespace::new("db", &"c".repeat(253)).unwrap_err().code, 73);
        assert_eq!(Namespace::parse("db.a.b").unwrap().coll, "a.b");
    }
}
