//! Export of a snapshot member as a mongodump-compatible directory or archive.
//!
//! The dump layout and archive framing are produced by `tidemark-format` ([`DumpWriter`],
//! [`ArchiveWriter`]); this module only feeds them the verified document streams and the
//! `metadata.json` texts kept verbatim in the manifest, so the export is what mongodump would have
//! written (the real mongorestore can restore it). The oplog goes last, as mongodump writes it.

use std::io::Write;
use std::path::Path;

use tidemark_format::archive::{ArchiveHeader, ArchiveWriter, PreludeEntry};
use tidemark_format::directory::DumpWriter;

use crate::error::{RepoError, Result};
use crate::reader::SnapshotReader;
use crate::snapshot::Member;

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
    let header = ArchiveHeader::new(1, server_version(member), TOOL_VERSION);
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
    for ns in &member.namespaces {
        let index = writer
            .namespace_index(&ns.db, &ns.collection)
            .or_else(|| writer.namespace_index(&ns.db, &format!("system.buckets.{}", ns.collection)))
            .ok_or_else(|| RepoError::Export {
                path: "archive".into(),
                message: format!("no slot for {}", ns.name()),
            })?;
        let mut docs = reader.documents(member, ns);
        while let Some(doc) = docs.next_document_ref().await? {
            writer.write_document(index, doc).map_err(err)?;
            stats.documents += 1;
        }
        writer.close_namespace(index).map_err(err)?;
        stats.namespaces += 1;
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
