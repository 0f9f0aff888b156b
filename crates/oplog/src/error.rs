//! Errors of oplog replay. Messages follow mongorestore's wording where it has one, so scripts
//! matching the real tool's output keep working.

/// Why an oplog entry could not be replayed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OplogError {
    /// The entry is not a valid oplog document.
    #[error("error reading oplog: {0}")]
    Decode(String),
    /// A `c` entry whose `o` is empty.
    #[error("empty object value for oplog command on namespace {ns}")]
    EmptyCommand {
        /// The entry's namespace.
        ns: String,
    },
    /// A command that mongorestore does not know how to replay.
    #[error("unknown oplog command name {name}: {entry}")]
    UnknownCommand {
        /// The command name (first key of `o`).
        name: String,
        /// The entry, as relaxed Extended JSON.
        entry: String,
    },
    /// A timeseries format conversion between 8.x and 9.0 inside the replayed window.
    #[error(
        "the oplog contains an upgradeDowngradeViewlessTimeseries entry on {ns}: the replayed window crosses a timeseries format conversion, which cannot be replayed"
    )]
    TimeseriesConversion {
        /// The entry's namespace.
        ns: String,
    },
    /// A nested `applyOps` op with a timestamp at or past `--oplogLimit`.
    #[error("error applying oplog: nested applyOps entry at {time}:{increment} reached the oplog limit")]
    NestedLimit {
        /// Seconds of the nested entry's `ts`.
        time: u32,
        /// Increment of the nested entry's `ts`.
        increment: u32,
    },
    /// A malformed index operation (drop by key matching several indexes, bad collMod index).
    #[error("{0}")]
    Index(String),
    /// A malformed transaction entry.
    #[error("error handling transaction oplog entry: {0}")]
    Transaction(String),
    /// A collection renamed from an unselected namespace into a selected one: its contents are
    /// not part of the restore, so the selected namespace cannot be reproduced.
    #[error(
        "renameCollection at Timestamp({time}, {increment}) moves {from}, which is not selected, into the selected namespace {to}: its documents are not part of this restore; select {from} as well (for example --nsInclude '{from_db}.*')"
    )]
    RenameIntoSelection {
        /// The unselected source namespace.
        from: String,
        /// The selected target namespace.
        to: String,
        /// Database of `from`.
        from_db: String,
        /// Seconds of the entry's `ts`.
        time: u32,
        /// Increment of the entry's `ts`.
        increment: u32,
    },
}

/// A bad `--oplogLimit` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error parsing timestamp argument to --oplogLimit: {0}")]
pub struct LimitParseError(pub String);

/// A bad `--at` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --at value: {0}")]
pub struct PointParseError(pub String);
