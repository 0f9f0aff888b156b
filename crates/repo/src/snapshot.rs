//! The snapshot manifest: the commit point of a backup.
//!
//! A manifest (`snapshots/<id>`, sealed JSON) is written last, after every pack and index object
//! it depends on; a crash before that leaves only unreferenced packs that `prune` removes. Its id
//! is the BLAKE3 of its sealed bytes' plaintext, so it cannot be confused with another.
//!
//! Shape: snapshot → members (one per replica set: a plain replica set, or each shard and the
//! config server of a sharded cluster, all cut at one cluster-wide consistency timestamp) →
//! namespaces (metadata, counts, content hash, chunk-list blobs), the member's oplog window, and an
//! optional tree of files (block-level copies of a data directory, contents as chunk-list blobs).
//! Chunk ids themselves live in chunk-list blobs ([`crate::chunk_list`]), so a manifest stays
//! small and an unchanged stream costs a handful of ids.

use serde::{Deserialize, Serialize};

use crate::crypto::Id;

/// Manifest format version written by this crate.
pub const MANIFEST_VERSION: u32 = 3;

/// A BSON timestamp (`t` seconds, `i` increment), as in the oplog's `ts` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub t: u32,
    /// Ordinal within the second.
    pub i: u32,
}

impl From<bson::Timestamp> for Timestamp {
    fn from(ts: bson::Timestamp) -> Self {
        Timestamp {
            t: ts.time,
            i: ts.increment,
        }
    }
}

impl From<Timestamp> for bson::Timestamp {
    fn from(ts: Timestamp) -> Self {
        bson::Timestamp {
            time: ts.t,
            increment: ts.i,
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Timestamp({}, {})", self.t, self.i)
    }
}

/// First and last oplog entry timestamps covered by a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OplogWindow {
    /// Timestamp of the first entry.
    pub first: Timestamp,
    /// Timestamp of the last entry.
    pub last: Timestamp,
}

/// A stream of raw BSON documents (or file contents) stored as content-defined chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataStream {
    /// Number of documents.
    pub documents: u64,
    /// Total bytes of the documents.
    pub bytes: u64,
    /// BLAKE3 (unkeyed) of the concatenated raw documents.
    pub content_hash: Id,
    /// Chunk-list blob ids, in order: the chunk ids they list, in order, are the chunks whose
    /// plaintexts concatenate to the stream (see [`crate::chunk_list`]). With
    /// [`DataStream::list_levels`] above zero, these are lists of lists.
    pub chunk_lists: Vec<Id>,
    /// Levels of lists of lists above the chunk lists in [`DataStream::chunk_lists`] (0: they
    /// are chunk lists; absent in manifests of version 2).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub list_levels: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One namespace of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceEntry {
    /// Database name.
    pub db: String,
    /// Collection name.
    pub collection: String,
    /// `collection`, `view` or `timeseries` (from the metadata `type`).
    pub kind: String,
    /// The exact `metadata.json` text as the dump produced it (re-emitted on export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_json: Option<String>,
    /// Collection options as canonical Extended JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
    /// Index specifications as canonical Extended JSON.
    #[serde(default)]
    pub indexes: Vec<serde_json::Value>,
    /// Collection UUID (hex), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The documents.
    pub data: DataStream,
}

impl NamespaceEntry {
    /// `db.collection`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.db, self.collection)
    }
}

/// The oplog captured with a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OplogEntry {
    /// First/last timestamps, when any entry was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<OplogWindow>,
    /// The oplog entries.
    pub data: DataStream,
}

/// Kind of a file-tree node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// Regular file; contents in `data`.
    File,
    /// Directory.
    Dir,
    /// Symbolic link; target in `target`.
    Symlink,
}

/// One node of a file tree (block-level copy of a data directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileNode {
    /// '/'-separated path relative to the tree root.
    pub path: String,
    /// Node kind.
    pub kind: FileKind,
    /// Unix mode bits.
    #[serde(default)]
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    #[serde(default)]
    pub mtime: i64,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// File contents (regular files only); `documents` is 0 for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataStream>,
}

/// One replica set (or standalone server) in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Replica set name (or shard id); empty for a standalone.
    pub name: String,
    /// `replset`, `shard`, `config` or `standalone`.
    pub role: String,
    /// `buildInfo.version` of the server the member was dumped from (empty when unknown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_version: String,
    /// Namespaces, in the order they were written.
    pub namespaces: Vec<NamespaceEntry>,
    /// Oplog captured during the dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog: Option<OplogEntry>,
    /// File tree (block-level backup), empty for logical backups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileNode>,
}

/// Sizes of a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Plaintext bytes of all streams (documents, oplog, files).
    pub total_bytes: u64,
    /// Documents in all namespaces (oplog excluded).
    pub documents: u64,
    /// Plaintext bytes of chunks that were new to the repository.
    pub new_bytes: u64,
    /// Plaintext bytes of chunks already present (deduplicated).
    pub deduplicated_bytes: u64,
    /// Bytes added to storage (packs, compressed and sealed).
    pub added_bytes: u64,
    /// Number of new blobs.
    pub new_blobs: u64,
}

/// A snapshot manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Manifest format version.
    pub version: u32,
    /// Creation time, seconds since the epoch.
    pub time: i64,
    /// Nanoseconds within `time`'s second (orders snapshots taken in the same second).
    #[serde(default)]
    pub time_nanos: u32,
    /// Host that ran the backup.
    pub host: String,
    /// Host or cluster label chosen by the user (groups snapshots for `forget`).
    pub label: String,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Cluster-wide timestamp at which every member is consistent (oplog replayed up to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_ts: Option<Timestamp>,
    /// Replica sets captured.
    pub members: Vec<Member>,
    /// Sizes.
    pub stats: SnapshotStats,
}

impl Snapshot {
    /// Every data stream of the snapshot, with the name errors use for it (`db.collection`,
    /// `oplog` or `file <path>`, prefixed by `member/` for a named member).
    pub fn streams(&self) -> Vec<(String, &DataStream)> {
        let mut out = Vec::new();
        for m in &self.members {
            let name = |what: String| member_label(&m.name, &what);
            out.extend(m.namespaces.iter().map(|ns| (name(ns.name()), &ns.data)));
            out.extend(m.oplog.iter().map(|o| (name("oplog".into()), &o.data)));
            out.extend(
                m.files
                    .iter()
                    .filter_map(|f| f.data.as_ref().map(|d| (name(format!("file {}", f.path)), d))),
            );
        }
        out
    }

    /// [`Snapshot::streams`], mutable (to rewrite chunk lists).
    pub fn streams_mut(&mut self) -> Vec<(String, &mut DataStream)> {
        let mut out = Vec::new();
        for m in &mut self.members {
            let member = m.name.clone();
            let name = |what: String| member_label(&member, &what);
            out.extend(m.namespaces.iter_mut().map(|ns| (name(ns.name()), &mut ns.data)));
            out.extend(m.oplog.iter_mut().map(|o| (name("oplog".into()), &mut o.data)));
            out.extend(
                m.files
                    .iter_mut()
                    .filter_map(|f| f.data.as_mut().map(|d| (name(format!("file {}", f.path)), d))),
            );
        }
        out
    }

    /// Number of namespaces over all members.
    pub fn namespace_count(&self) -> usize {
        self.members.iter().map(|m| m.namespaces.len()).sum()
    }
}

/// `what` prefixed by `member/` unless the member is unnamed.
pub(crate) fn member_label(member: &str, what: &str) -> String {
    if member.is_empty() {
        what.to_owned()
    } else {
        format!("{member}/{what}")
    }
}
