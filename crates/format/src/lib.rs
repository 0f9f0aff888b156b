//! Readers and writers for the files that `mongodump` writes and `mongorestore` reads.
//!
//! Everything here is exact to the real MongoDB Database Tools (see `shared/docs/FORMATS.md`
//! in the project's documentation): a dump written by this crate restores with the real
//! `mongorestore`, and every dump the real `mongodump` writes reads here.
//!
//! The crate is synchronous and streaming: documents travel as raw BSON bytes
//! ([`bson::RawDocumentBuf`]) from reader to writer and are never re-encoded, so field order and
//! types survive byte for byte, and memory use does not depend on collection size.
//!
//! Main pieces:
//! - [`bson_stream`]: length-checked reading and writing of concatenated BSON documents
//!   (`.bson`, `.bin`, `oplog.bson`).
//! - [`metadata`]: `<collection>.metadata.json` in every form real dumps contain.
//! - [`naming`]: file-name escaping (Go's `url.QueryEscape`) and the 238-byte long-name rule.
//! - [`directory`]: the dump directory layout, `prelude.json`, gzip variants.
//! - [`extjson`]: Extended JSON output byte-identical to the Go tools (`bsondump`, metadata).
//! - [`inspect`]: what a dump holds (namespaces, counts, sizes, indexes, oplog window), verified.
//! - [`convert`]: lossless directory ⇄ archive conversion.
//! - [`archive`]: the `--archive` stream format with its per-namespace CRC-64/XZ.

pub mod archive;
pub mod bson_stream;
pub mod convert;
pub mod directory;
pub mod extjson;
pub mod inspect;
pub mod metadata;
pub mod naming;
pub mod parallel_gzip;
pub mod version;
