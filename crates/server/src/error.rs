//! Command errors as MongoDB reports them.
//!
//! Every failed command is answered with `{ok: 0.0, errmsg, code, codeName}`; drivers branch on the numeric
//! `code` (and sometimes on `codeName`), so each constructor here pins the code/name pair MongoDB uses
//! (see `src/mongo/base/error_codes.yml` in the MongoDB sources). Write errors (`writeErrors` entries) reuse
//! the same type for the code and message.

use bson::{Document, doc};

/// A command failure with MongoDB's numeric code, symbolic name and message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code_name} ({code}): {message}")]
pub struct CommandError {
    /// MongoDB's numeric error code (e.g. 26 for NamespaceNotFound).
    pub code: i32,
    /// MongoDB's symbolic code name (e.g. "NamespaceNotFound"); empty for location codes without a name.
    pub code_name: &'static str,
    /// Human-readable message, shaped like mongod's where drivers or users look at it.
    pub message: String,
    /// Extra fields merged into the error reply (e.g. `keyPattern`/`keyValue` for duplicate keys).
    pub extra: Option<Box<Document>>,
}

macro_rules! codes {
    ($($(#[$doc:meta])* $fn_name:ident = $code:literal, $name:literal;)*) => {
        impl CommandError {
            $(
                $(#[$doc])*
                pub fn $fn_name(message: impl Into<String>) -> Self {
                    Self::new($code, $name, message)
                }
            )*
        }
    };
}

codes! {
    /// InternalError (1): an invariant of the server was broken.
    internal = 1, "InternalError";
    /// BadValue (2).
    bad_value = 2, "BadValue";
    /// NoSuchKey (4).
    no_such_key = 4, "NoSuchKey";
    /// FailedToParse (9).
    failed_to_parse = 9, "FailedToParse";
    /// Unauthorized (13).
    unauthorized = 13, "Unauthorized";
    /// TypeMismatch (14).
    type_mismatch = 14, "TypeMismatch";
    /// IllegalOperation (20).
    illegal_operation = 20, "IllegalOperation";
    /// NamespaceNotFound (26).
    namespace_not_found = 26, "NamespaceNotFound";
    /// IndexNotFound (27).
    index_not_found = 27, "IndexNotFound";
    /// CursorNotFound (43).
    cursor_not_found = 43, "CursorNotFound";
    /// NamespaceExists (48).
    namespace_exists = 48, "NamespaceExists";
    /// InvalidOptions (72).
    invalid_options = 72, "InvalidOptions";
    /// InvalidNamespace (73).
    invalid_namespace = 73, "InvalidNamespace";
    /// IndexOptionsConflict (85).
    index_options_conflict = 85, "IndexOptionsConflict";
    /// IndexKeySpecsConflict (86).
    index_key_specs_conflict = 86, "IndexKeySpecsConflict";
    /// OperationFailed (96).
    operation_failed = 96, "OperationFailed";
    /// CannotCreateIndex (67).
    cannot_create_index = 67, "CannotCreateIndex";
    /// DocumentValidationFailure (121).
    document_validation_failure = 121, "DocumentValidationFailure";
    /// CommandNotSupportedOnView (166).
    command_not_supported_on_view = 166, "CommandNotSupportedOnView";
    /// InvalidViewDefinition (182).
    invalid_view_definition = 182, "InvalidViewDefinition";
    /// InvalidIndexSpecificationOption (197).
    invalid_index_specification_option = 197, "InvalidIndexSpecificationOption";
    /// DuplicateKey (11000).
    duplicate_key = 11000, "DuplicateKey";
    /// BSONObjectTooLarge (10334).
    bson_object_too_large = 10334, "BSONObjectTooLarge";
    /// Interrupted (11601).
    interrupted = 11601, "Interrupted";
    /// IDLUnknownField (40415): an unknown field in a command that rejects them.
    unknown_field = 40415, "IDLUnknownField";
    /// IDLFailedToParse / missing required field (40414).
    missing_field = 40414, "Location40414";
}

impl CommandError {
    /// Builds an error from its parts.
    pub fn new(code: i32, code_name: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            code_name,
            message: message.into(),
            extra: None,
        }
    }

    /// CommandNotFound (59) with mongod's message `no such command: 'name'`.
    pub fn command_not_found(name: &str) -> Self {
        Self::new(59, "CommandNotFound", format!("no such command: '{name}'"))
    }

    /// Attaches extra reply fields (merged after `codeName`).
    pub fn with_extra(mut self, extra: Document) -> Self {
        self.extra = Some(Box::new(extra));
        self
    }

    /// Renders the error reply document `{ok: 0.0, errmsg, code, codeName, ...extra}`.
    pub fn to_document(&self) -> Document {
        let mut d = doc! { "ok": 0.0, "errmsg": self.message.clone(), "code": self.code, "codeName": self.code_name };
        if let Some(extra) = &self.extra {
            for (k, v) in extra.iter() {
                d.insert(k.clone(), v.clone());
            }
        }
        d
    }

    /// Renders the error as a `writeErrors` entry for the operation at `index`.
    pub fn to_write_error(&self, index: usize) -> Document {
        let mut d = doc! { "index": i32::try_from(index).unwrap_or(i32::MAX), "code": self.code };
        if let Some(extra) = &self.extra {
            for (k, v) in extra.iter() {
                d.insert(k.clone(), v.clone());
            }
        }
        d.insert("errmsg", self.message.clone());
        d
    }
}

impl From<tidemark_query::QueryError> for CommandError {
    fn from(e: tidemark_query::QueryError) -> Self {
        Self::new(e.code, e.code_name, e.message)
    }
}

/// Result type of command handlers and engine operations.
pub type CommandResult<T> = Result<T, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_not_found_matches_mongod_shape() {
        let d = CommandError::command_not_found("frobnicate").to_document();
        assert_eq!(d.get_f64("ok").ok(), Some(0.0));
        assert_eq!(d.get_i32("code").ok(), Some(59));
        assert_eq!(d.get_str("codeName").ok(), Some("CommandNotFound"));
        assert_eq!(d.get_str("errmsg").ok(), Some("no such command: 'frobnicate'"));
    }
}
