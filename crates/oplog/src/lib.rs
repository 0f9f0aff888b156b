//! Oplog replay as mongorestore does it, without I/O: entries in, commands out.
//!
//! A point-in-time restore and `restore --oplogReplay` both need the same rules: which entries
//! are skipped, where `--oplogLimit` stops, how transactions are buffered and committed, how
//! nested `applyOps` are flattened, how index operations are folded into an index catalog that
//! is built only at the end, and how each remaining entry is re-encoded as
//! `{applyOps: [<entry>], bypassDocumentValidation: <bool>}`. Keeping them here, free of any
//! driver or file code, lets them be tested entry by entry against the real oplog fixtures.
//!
//! ```
//! use bson::{doc, Timestamp};
//! use tidemark_oplog::{IndexCatalog, ReplayOptions, Replayer};
//!
//! let mut replayer = Replayer::new(ReplayOptions::default(), IndexCatalog::new());
//! let entry = doc! {"ts": Timestamp { time: 1, increment: 1 }, "v": 2_i64, "op": "i",
//!                   "ns": "test.c", "o": {"_id": 1}, "wall": bson::DateTime::now()};
//! let step = replayer.push(tidemark_oplog::OplogEntry::from_document(&entry).unwrap()).unwrap();
//! let op = step.commands[0].get_array("applyOps").unwrap()[0].as_document().unwrap();
//! assert_eq!(op.keys().collect::<Vec<_>>(), ["ts", "t", "v", "op", "ns", "o"]);
//! ```

pub mod catalog;
pub mod entry;
pub mod error;
pub mod limit;
pub mod partition;
pub mod point;
pub mod replay;
pub mod selection;

pub use catalog::{CollectionIndexes, IndexBuildOptions, IndexCatalog, is_default_id_index};
pub use entry::{OplogEntry, apply_ops_command};
pub use error::{LimitParseError, OplogError, PointParseError};
pub use limit::parse_oplog_limit;
pub use partition::{MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, Partitioner, Work, is_isolated_entry};
pub use point::{PointForm, RestorePoint, parse_restore_point};
pub use replay::{ReplayOptions, Replayer, SkipReason, Step, is_transaction_entry, skip_reason};
pub use selection::{NamespaceMap, Routed, Selection};
