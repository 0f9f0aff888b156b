//! A deduplicating, encrypted backup repository that understands MongoDB snapshots.
//!
//! In the spirit of restic: content-defined chunks addressed by a keyed hash, compressed and sealed
//! into pack files, located through an index, and referenced by snapshot manifests written last
//! as the commit point. Unlike a file backup tool, a snapshot records MongoDB structure: replica
//! set members, namespaces with their metadata (options, indexes, UUID), document counts, a
//! content hash of each namespace's documents, the oplog window and the consistency timestamp.
//! The format is described in the crate's `README.md`.
//!
//! Main types: [`Repository`] (init/open, index, snapshots), [`SnapshotWriter`] /
//! [`NamespaceWriter`] (backup), [`SnapshotReader`] (restore, verification, export),
//! [`check`], [`forget`] (with [`forget::prune`]), [`copy`] and [`lock`]. Everything is async over the object
//! store; nothing prints; progress goes through [`Progress`]. [`import`] stores a mongodump
//! directory as a snapshot and [`export`] writes one back as a directory or archive.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use tidemark_repo::*;
//!
//! let storage = Storage::open("memory://", &StorageConfig::default()).await?;
//! let mut options = InitOptions::default();
//! options.kdf = KdfParams { m_cost: 64, t_cost: 1, p_cost: 1 }; // cheap for the example only
//! let repo = Repository::init(storage, Some("password"), &options).await?;
//!
//! let mut writer = SnapshotWriter::new(&repo, Arc::new(NoProgress)).await?;
//! let mut ns = writer.begin_namespace("shop.orders", NamespaceMetadata::default()).await?;
//! ns.write_document(&bson::rawdoc! { "_id": 1, "total": 9.5 }).await?;
//! ns.finish().await?;
//! let (id, stats) = writer.commit(CommitOptions::default()).await?;
//! assert_eq!(stats.documents, 1);
//!
//! let reader = SnapshotReader::open(&repo, &id).await?;
//! let (member, entry) = reader.find_namespace("shop.orders").unwrap();
//! let mut docs = reader.documents(member, entry);
//! assert_eq!(docs.next_document().await?.unwrap().get_i32("_id").ok(), Some(1));
//! assert!(docs.next_document().await?.is_none()); // count, size and content hash verified
//! # Ok::<(), RepoError>(()) }).unwrap();
//! ```

pub mod check;
pub mod chunk_list;
mod chunker;
pub mod compression;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod export;
pub mod forget;
pub mod import;
pub mod index;
pub mod lock;
mod many_hashes;
pub mod oplog_archive;
pub mod pack;
pub mod reader;
pub mod repository;
pub mod snapshot;
mod util;
pub mod writer;

pub use chunker::CutRule;
pub use crypto::{Cipher, Id, KdfParams};
pub use error::{RepoError, Result};
pub use reader::{DocumentStream, SnapshotReader};
pub use repository::{ChunkerParams, Config, InitOptions, Repository};
pub use snapshot::{OplogWindow, Snapshot, SnapshotStats, Timestamp};
pub use tidemark_storage::{ObjectMeta, Storage, StorageConfig, StorageError};
pub use util::rfc3339;
pub use writer::{
    CommitOptions, NamespaceMetadata, NamespaceWriter, NoProgress, OpenNamespace, Progress, SnapshotWriter,
};
