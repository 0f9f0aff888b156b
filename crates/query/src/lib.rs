//! MongoDB's query language over BSON documents.
//!
//! This crate gives the server and the restore filter one implementation of the parts of the
//! MongoDB query language that operate on single documents, built from MongoDB's documented
//! behaviour:
//!
//! * [`compare_values`]: the BSON comparison and sort order used by every other part;
//! * [`Filter`]: query predicates (`find` filters, `$match`, `$pull` conditions);
//! * [`SortSpec`]: sort specifications, including MongoDB's array sort keys;
//! * [`Projection`]: `find` projections;
//! * [`Update`]: update operator documents and replacement documents, and
//!   [`apply_oplog_diff`] for the `$v: 2` delta format of oplog updates;
//! * [`Pipeline`]: a subset of the aggregation pipeline.
//!
//! Errors are [`QueryError`]s carrying MongoDB's own error codes and messages, so the server can
//! return them to clients unchanged.
//!
//! Not provided (rejected with a clear error rather than answered wrongly): `$where`, `$text`,
//! geospatial operators, the `$slice`/`$elemMatch`/`$meta` projection operators, and aggregation
//! stages that need other collections or server state (`$lookup`, `$out`, `$merge`, ...), which
//! belong to the server.
//!
//! Everything works on typed [`bson::Document`]s: each piece is parsed once (validating the
//! specification the way MongoDB does) and then applied to any number of documents.
//!
//! ```
//! use bson::doc;
//! use tidemark_query::{Filter, Pipeline, Projection, SortSpec, Update};
//!
//! let filter = Filter::parse(&doc! {"tags": "red", "qty": {"$gte": 10}})?;
//! assert!(filter.matches(&doc! {"_id": 1, "tags": ["blank", "red"], "qty": 15}));
//!
//! let mut doc = doc! {"_id": 1, "qty": 15};
//! let changed = Update::parse(&doc! {"$inc": {"qty": -5}, "$set": {"item.name": "pen"}})?.apply(&mut doc, false)?;
//! assert!(changed);
//! assert_eq!(doc, doc! {"_id": 1, "qty": 10, "item": {"name": "pen"}});
//!
//! assert_eq!(Projection::parse(&doc! {"qty": 1, "_id": 0})?.apply(&doc), doc! {"qty": 10});
//! let sort = SortSpec::parse(&doc! {"qty": -1})?;
//! assert!(sort.compare(&doc, &doc! {"qty": 3}).is_lt());
//!
//! let counted = Pipeline::parse(&[doc! {"$match": {"qty": {"$gt": 5}}}, doc! {"$count": "n"}])?
//!     .run(vec![doc.clone(), doc! {"qty": 1}].into_iter())?;
//! assert_eq!(counted, vec![doc! {"n": 1}]);
//! # Ok::<(), tidemark_query::QueryError>(())
//! ```

mod compare;
pub mod error;
mod expr;
mod filter;
mod path;
mod pipeline;
mod projection;
mod schema;
mod sort;
mod update;

pub use compare::{canonical_type, compare_documents, compare_values, identical_documents, identical_values};
pub use error::QueryError;
pub use expr::bson_type_name;
pub use filter::Filter;
pub use path::{array_index, lookup_path, path_candidates, path_values, split_path};
pub use pipeline::Pipeline;
pub use projection::Projection;
pub use sort::SortSpec;
pub use update::{Update, apply_oplog_diff};
