//! The error type shared by every part of the query language.
//!
//! MongoDB reports query-language failures as command errors carrying a numeric `code`, a
//! `codeName` and a human-readable `errmsg`; drivers and tools branch on the code. [`QueryError`]
//! carries exactly those three things so the server can put them on the wire unchanged. The codes
//! used here are the ones MongoDB itself returns for the same mistakes (see
//! <https://www.mongodb.com/docs/manual/reference/error-codes/>); "Location" codes are the
//! numbered assertion sites MongoDB reports for errors without a named code.

/// A query-language error with MongoDB's code, code name and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code_name}, code {code})")]
pub struct QueryError {
    /// MongoDB's numeric error code (`code` in a command reply).
    pub code: i32,
    /// MongoDB's name for the code (`codeName` in a command reply).
    pub code_name: &'static str,
    /// The message (`errmsg` in a command reply).
    pub message: String,
}

/// `BadValue`: an argument has an unacceptable value.
pub const BAD_VALUE: i32 = 2;
/// `FailedToParse`: a specification could not be parsed.
pub const FAILED_TO_PARSE: i32 = 9;
/// `TypeMismatch`: a value has the wrong BSON type.
pub const TYPE_MISMATCH: i32 = 14;
/// `PathNotViable`: an update path cannot be created in the document.
pub const PATH_NOT_VIABLE: i32 = 28;
/// `ConflictingUpdateOperators`: two update operators touch overlapping paths.
pub const CONFLICTING_UPDATE_OPERATORS: i32 = 40;
/// `ImmutableField`: an update would change `_id`.
pub const IMMUTABLE_FIELD: i32 = 66;
/// `InvalidPipelineOperator`: an unknown aggregation expression operator.
pub const INVALID_PIPELINE_OPERATOR: i32 = 168;
/// `Overflow`: arithmetic overflowed the result type.
pub const OVERFLOW: i32 = 15;
/// `NotImplemented`-style refusal for features this implementation does not provide.
pub const NOT_IMPLEMENTED: i32 = 238;

impl QueryError {
    /// Builds an error with the given code; the code name is MongoDB's name for that code.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        QueryError {
            code,
            code_name: code_name(code),
            message: message.into(),
        }
    }

    /// `BadValue` (2).
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(BAD_VALUE, message)
    }

    /// `FailedToParse` (9).
    pub fn failed_to_parse(message: impl Into<String>) -> Self {
        Self::new(FAILED_TO_PARSE, message)
    }

    /// `TypeMismatch` (14).
    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::new(TYPE_MISMATCH, message)
    }
}

/// MongoDB's code name for the codes this crate produces.
fn code_name(code: i32) -> &'static str {
    match code {
        BAD_VALUE => "BadValue",
        FAILED_TO_PARSE => "FailedToParse",
        TYPE_MISMATCH => "TypeMismatch",
        OVERFLOW => "Overflow",
        PATH_NOT_VIABLE => "PathNotViable",
        CONFLICTING_UPDATE_OPERATORS => "ConflictingUpdateOperators",
        IMMUTABLE_FIELD => "ImmutableField",
        INVALID_PIPELINE_OPERATOR => "InvalidPipelineOperator",
        NOT_IMPLEMENTED => "NotImplemented",
        52 => "DollarPrefixedFieldName",
        56 => "EmptyFieldName",
        15947 => "Location15947",
        15957 => "Location15957",
        15959 => "Location15959",
        15969 => "Location15969",
        15972 => "Location15972",
        15981 => "Location15981",
        15983 => "Location15983",
        15998 => "Location15998",
        16020 => "Location16020",
        16410 => "Location16410",
        16608 => "Location16608",
        16702 => "Location16702",
        16872 => "Location16872",
        17080 => "Location17080",
        17124 => "Location17124",
        17276 => "Location17276",
        28808 => "Location28808",
        28809 => "Location28809",
        28810 => "Location28810",
        28811 => "Location28811",
        28822 => "Location28822",
        31002 => "Location31002",
        31120 => "Location31120",
        31252 => "Location31252",
        40228 => "Location40228",
        40231 => "Location40231",
        40238 => "Location40238",
        40272 => "Location40272",
        51075 => "Location51075",
        51270 => "Location51270",
        51272 => "Location51272",
        15952 => "Location15952",
        40148 => "Location40148",
        40169 => "Location40169",
        40170 => "Location40170",
        40171 => "Location40171",
        40600 => "Location40600",
        15955 => "Location15955",
        15956 => "Location15956",
        15958 => "Location15958",
        15973 => "Location15973",
        15974 => "Location15974",
        15975 => "Location15975",
        15976 => "Location15976",
        16554 => "Location16554",
        28812 => "Location28812",
        28818 => "Location28818",
        31249 => "Location31249",
        31250 => "Location31250",
        31253 => "Location31253",
        31254 => "Location31254",
        40156 => "Location40156",
        40157 => "Location40157",
        40158 => "Location40158",
        40160 => "Location40160",
        40234 => "Location40234",
        40235 => "Location40235",
        40236 => "Location40236",
        40323 => "Location40323",
        40324 => "Location40324",
        40352 => "Location40352",
        51108 => "Location51108",
        51091 => "Location51091",
        _ => "UnknownError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_follow_mongodb_error_codes() {
        // https://www.mongodb.com/docs/manual/reference/error-codes/
        assert_eq!(QueryError::bad_value("x").code_name, "BadValue");
        assert_eq!(QueryError::new(66, "x").code_name, "ImmutableField");
        assert_eq!(QueryError::new(40, "x").code_name, "ConflictingUpdateOperators");
        assert_eq!(QueryError::new(40324, "x").code_name, "Location40324");
        assert_eq!(
            QueryError::bad_value("unknown operator: $foo").to_string(),
            "unknown operator: $foo (BadValue, code 2)"
        );
    }
}
