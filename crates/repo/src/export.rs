//! Export of a snapshot member as a mongodump-compatible directory or archive.
//!
//! The dump layout and archive framing are produced by `tidemark-format` ([`DumpWriter`],
//! [`ArchiveWriter`]); this module only feeds them the verified document streams and the
//! `metadata.json` texts kept verbatim in the manifest, so the export is what mongodump would have
//! written (the real mongorestore can restore it). An archive interleaves up to
//! [`ARCHIVE_PARALLEL`] namespaces, as `mongodump -j` does. The oplog goes last, as mongodump writes it.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

use tidemark_format::archive::{ArchiveHeader, ArchiveWriter, PreludeEntry};
use tidemark_format::directory::DumpWriter;

use crate::error::{RepoError, Result};
use crate::reader::{DocumentStream, SnapshotReader};
use crate::snapshot::Member;

/// Namespaces an archive export reads at once, their segments interleaved as those of
/// `mongodump --archive -j 4` are: a restore from the archive then inserts into as many collections
/// at once, where one namespace after another kept it to one.
pub const ARCHIVE_PARALLEL: usize = 4;
/// Bytes of a namespace an archive export writes before turning to the next open one.
const ARCHIVE_TURN_BYTES: usize = 1 << 20;

/// Tool version written into exported preludes and archive headers.
pub const TOOL_VERSION: &str = concat!("tidemark ", env!("CARGO_PKG_VERSION"));

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Namespaces written.
    pub namespaces: u64,
    /// Documents written (oplog entries included).
    pub documents: u64,
}

fn pick_member<'a>(reader: &'a SnapshotReader, member: Option<&str>) -> Result<&'a Member> {
    let members = reader.members();
    match member {
        Some(name) => members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| RepoError::Usage(format!("snapshot {} has no member {name:?}", reader.id()))),
        None if members.len() == 1 => Ok(&members[0]),
        None => Err(RepoError::Usage(format!(
            "snapshot {} has {} members ({}); choose one",
            reader.id(),
            members.len(),
            members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn server_version(member: &Member) -> &str {
    if member.server_version.is_empty() {
        "0.0.0"
    } else {
        &member.server_version
    }
}

/// Writes a member of a snapshot as a dump directory (`gzip` like `mongodump --gzip`).
pub async fn export_directory(
    reader: &SnapshotReader,
    member: Option<&str>,
    root: &Path,
    gzip: bool,
) -> Result<ExportStats> {
    let member = pick_member(reader, member)?;
    let err = |e: tidemark_format::directory::DirectoryError| RepoError::Export {
        path: root.display().to_string(),
        message: e.to_string(),
    };
    let dump = DumpWriter::new(root, gzip);
    let mut stats = ExportStats::default();
    for ns in &member.namespaces {
        if let Some(text) = &ns.metadata_json {
            dump.write_metadata_text(&ns.db, &ns.collection, text).map_err(err)?;
        }
        if ns.kind != "view" || ns.data.documents > 0 {
            // Timeseries data is the buckets collection's documents, stored under the
            // `system.buckets.<name>` file as mongodump writes it.
            let mut file = if ns.kind == "timeseries" {
                dump.create_timeseries_buckets(&ns.db, &ns.collection)
            } else {
                dump.create_collection(&ns.db, &ns.collection)
            }
            .map_err(err)?;
            let mut docs = reader.documents(member, ns);
            while let Some(doc) = docs.next_document_ref().await? {
                file.write_document(doc).map_err(err)?;
                stats.documents += 1;
            }
            file.finish().map_err(err)?;
        }
        stats.namespaces += 1;
    }
    if member.oplog.is_some() {
        let mut file = dump.create_oplog().map_err(err)?;
        let mut docs = reader.oplog(member);
        while let Some(doc) = docs.next_document_ref().await? {
            file.write_document(doc).map_err(err)?;
            stats.documents += 1;
        }
        file.finish().map_err(err)?;
    }
    if stats.namespaces > 0 || member.oplog.is_some() {
        std::fs::create_dir_all(root).map_err(|e| RepoError::Export {
            path: root.display().to_string(),
            message: e.to_string(),
        })?;
        dump.write_prelude(None, server_version(member), TOOL_VERSION)
            .map_err(err)?;
    }
    Ok(stats)
}

/// Writes a member of a snapshot as a `mongodump --archive` stream; returns the output.
pub async fn export_archive<W: Write>(
    reader: &SnapshotReader,
    member: Option<&str>,
    out: W,
) -> Result<(W, ExportStats)> {
    let member = pick_member(reader, member)?;
    let err = |e: tidemark_format::archive::ArchiveError| RepoError::Export {
        path: "archive".into(),
        message: e.to_string(),
    };
    let parallel = ARCHIVE_PARALLEL.min(member.namespaces.len()).max(1);
    let header = ArchiveHeader::new(
        i32::try_from(parallel).unwrap_or(1),
        server_version(member),
        TOOL_VERSION,
    );
    let mut entries: Vec<PreludeEntry> = member
        .namespaces
        .iter()
        .map(|ns| {
            PreludeEntry::new(
                &ns.db,
                &ns.collection,
                ns.metadata_json.clone().unwrap_or_default(),
                &ns.kind,
            )
        })
        .collect();
    if member.oplog.is_some() {
        entries.push(PreludeEntry::new("", "oplog", "", ""));
    }
    let mut writer = ArchiveWriter::new(out, &header, &entries).map_err(err)?;
    let mut stats = ExportStats::default();
    // Up to `parallel` namespaces are open, each reading ahead on its own task; they take turns of
    // about `ARCHIVE_TURN_BYTES`, in a fixed order, so the same snapshot always gives the same bytes.
    let mut waiting = member.namespaces.iter();
    let mut open: VecDeque<(usize, DocumentStream)> = VecDeque::with_capacity(parallel);
    loop {
        while open.len() < parallel
            && let Some(ns) = waiting.next()
        {
            let index = writer
                .namespace_index(&ns.db, &ns.collection)
                .or_else(|| writer.namespace_index(&ns.db, &format!("system.buckets.{}", ns.collection)))
                .ok_or_else(|| RepoError::Export {
                    path: "archive".into(),
                    message: format!("no slot for {}", ns.name()),
                })?;
            open.push_back((index, reader.documents(member, ns)));
        }
        let Some((index, mut docs)) = open.pop_front() else {
            break;
        };
        let mut turn = 0usize;
        let mut ended = false;
        while turn < ARCHIVE_TURN_BYTES {
            let Some(doc) = docs.next_document_ref().await? else {
                ended = true;
                break;
            };
            writer.write_document(index, doc).map_err(err)?;
            stats.documents += 1;
            turn += doc.as_bytes().len();
        }
        if ended {
            writer.close_namespace(index).map_err(err)?;
            stats.namespaces += 1;
        } else {
            open.push_back((index, docs));
        }
    }
    if member.oplog.is_some() {
        let index = writer.namespace_index("", "oplog").ok_or_else(|| RepoError::Export {
            path: "archive".into(),
            message: "no slot for the oplog".into(),
        })?;
        let mut docs = reader.oplog(member);
        while let Some(doc) = docs.next_document_ref().await? {
            writer.write_document(index, doc).map_err(err)?;
            stats.documents += 1;
        }
        writer.close_namespace(index).map_err(err)?;
    }
    let out = writer.finish().map_err(err)?;
    Ok((out, stats))
}
