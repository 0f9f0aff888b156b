//! The archive prelude: the header document, one collection-metadata document per namespace, and
//! the rules that derive from them (server version parsing, where timeseries data lives).
//!
//! Writing is exact: fields in the order and with the BSON types the real `mongodump` uses
//! (`concurrent_collections` and `size` as int32, `size` as int64 only when it does not fit).
//! Reading is tolerant in the same way the real `mongorestore` is (it decodes into a Go struct):
//! unknown fields are ignored, missing fields take their zero value, numbers may be int32, int64
//! or an integral double, and `null` counts as missing.

pub use crate::version::ServerVersion;

use bson::{RawBsonRef, RawDocument, RawDocumentBuf};

/// The only archive format version that exists.
pub const ARCHIVE_FORMAT_VERSION: &str = "0.1";

/// Prefix of the collection that holds a timeseries collection's data on servers before 8.3.
pub const TIMESERIES_BUCKET_PREFIX: &str = "system.buckets.";

/// The first document of the prelude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// `--numParallelCollections` of the dumping tool; a restore must use at least this many
    /// workers, and a writer must never interleave more namespaces than this.
    pub concurrent_collections: i32,
    /// Archive format version, always [`ARCHIVE_FORMAT_VERSION`].
    pub version: String,
    /// `buildInfo.version` of the dumped server (for example `"7.0.16"`).
    pub server_version: String,
    /// Version string of the dumping tool.
    pub tool_version: String,
}

impl ArchiveHeader {
    /// A header for format version `"0.1"`.
    #[must_use]
    pub fn new(
        concurrent_collections: i32,
        server_version: impl Into<String>,
        tool_version: impl Into<String>,
    ) -> Self {
        Self {
            concurrent_collections,
            version: ARCHIVE_FORMAT_VERSION.to_owned(),
            server_version: server_version.into(),
            tool_version: tool_version.into(),
        }
    }

    /// The header as BSON, fields in the order `mongodump` writes them.
    #[must_use]
    pub fn to_document(&self) -> RawDocumentBuf {
        let mut doc = RawDocumentBuf::new();
        doc.append("concurrent_collections", self.concurrent_collections);
        doc.append("version", self.version.as_str());
        doc.append("server_version", self.server_version.as_str());
        doc.append("tool_version", self.tool_version.as_str());
        doc
    }

    /// Decodes a header document. Unknown fields are ignored and missing ones are empty or 0.
    ///
    /// # Errors
    /// A malformed element, or a known field of the wrong BSON type (the message names it).
    pub fn from_document(doc: &RawDocument) -> Result<Self, String> {
        let mut header = Self {
            concurrent_collections: 0,
            version: String::new(),
            server_version: String::new(),
            tool_version: String::new(),
        };
        for element in doc {
            let (key, value) = element.map_err(|e| format!("malformed header document: {e}"))?;
            match key {
                "concurrent_collections" => {
                    let n = integer_field(key, value)?;
                    header.concurrent_collections = i32::try_from(n)
                        .map_err(|_| format!("header field `{key}` value {n} does not fit in an int32"))?;
                }
                "version" => header.version = string_field(key, value)?,
                "server_version" => header.server_version = string_field(key, value)?,
                "tool_version" => header.tool_version = string_field(key, value)?,
                _ => {}
            }
        }
        Ok(header)
    }

    /// The parsed [`server_version`](Self::server_version), or `None` when it does not parse
    /// (the real `mongorestore` then refuses to list the archive).
    #[must_use]
    pub fn parsed_server_version(&self) -> Option<ServerVersion> {
        ServerVersion::parse(&self.server_version)
    }
}

/// One collection-metadata document of the prelude: a namespace the archive will contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreludeEntry {
    /// Database (`""` for the oplog).
    pub db: String,
    /// Collection: the logical name (for timeseries, not the buckets collection), `"oplog"` for
    /// the oplog, `"$admin.system.users"`-style names for per-database users and roles.
    pub collection: String,
    /// The exact text of `<collection>.metadata.json`, or `""` when there is none.
    pub metadata: String,
    /// Uncompressed size; current `mongodump` always writes 0. Only useful for progress.
    pub size: i64,
    /// `"collection"`, `"view"`, `"timeseries"` or `""` (oplog, users, roles, and every entry of
    /// archives from tools that did not write the field).
    pub type_: String,
}

impl PreludeEntry {
    /// An entry with `size` 0, as `mongodump` writes it.
    #[must_use]
    pub fn new(
        db: impl Into<String>,
        collection: impl Into<String>,
        metadata: impl Into<String>,
        type_: impl Into<String>,
    ) -> Self {
        Self {
            db: db.into(),
            collection: collection.into(),
            metadata: metadata.into(),
            size: 0,
            type_: type_.into(),
        }
    }

    /// The entry as BSON in `mongodump`'s field order. `size` is an int32 when it fits (Go `int`
    /// encoding), else an int64. Archives from tools before 5.0 have no `type` field; pass
    /// `with_type = false` to reproduce them.
    #[must_use]
    pub fn to_document(&self, with_type: bool) -> RawDocumentBuf {
        let mut doc = RawDocumentBuf::new();
        doc.append("db", self.db.as_str());
        doc.append("collection", self.collection.as_str());
        doc.append("metadata", self.metadata.as_str());
        match i32::try_from(self.size) {
            Ok(small) => doc.append("size", small),
            Err(_) => doc.append("size", self.size),
        }
        if with_type {
            doc.append("type", self.type_.as_str());
        }
        doc
    }

    /// Decodes a collection-metadata document. Unknown fields are ignored, a missing `type` is
    /// `""`, `size` may be int32, int64 or an integral double.
    ///
    /// # Errors
    /// A malformed element, or a known field of the wrong BSON type.
    pub fn from_document(doc: &RawDocument) -> Result<Self, String> {
        let mut entry = Self::new("", "", "", "");
        for element in doc {
            let (key, value) = element.map_err(|e| format!("malformed collection metadata document: {e}"))?;
            match key {
                "db" => entry.db = string_field(key, value)?,
                "collection" => entry.collection = string_field(key, value)?,
                "metadata" => entry.metadata = string_field(key, value)?,
                "size" => entry.size = integer_field(key, value)?,
                "type" => entry.type_ = string_field(key, value)?,
                _ => {}
            }
        }
        Ok(entry)
    }

    /// Whether the document this entry was decoded from would carry a `type` field; see
    /// [`to_document`](Self::to_document).
    #[must_use]
    pub fn document_has_type(doc: &RawDocument) -> bool {
        doc.iter().flatten().any(|(key, _)| key == "type")
    }

    /// The collection that holds this entry's data blocks in the archive (section 2.3 of the
    /// format notes): `system.buckets.<collection>` for timeseries collections dumped from a
    /// server before 8.3 or of unknown version, else `collection` itself.
    #[must_use]
    pub fn data_collection(&self, server_version: Option<ServerVersion>) -> String {
        data_collection(&self.collection, &self.type_, server_version)
    }
}

/// The collection that holds a namespace's data in an archive: timeseries collections
/// (`type_ == "timeseries"`) from servers older than 8.3, or of unparseable version, store their
/// data under `system.buckets.<collection>`; everything else under `collection`.
#[must_use]
pub fn data_collection(collection: &str, type_: &str, server_version: Option<ServerVersion>) -> String {
    let raw_data = server_version.is_some_and(ServerVersion::supports_raw_data);
    if type_ == "timeseries" && !raw_data {
        format!("{TIMESERIES_BUCKET_PREFIX}{collection}")
    } else {
        collection.to_owned()
    }
}

fn string_field(key: &str, value: RawBsonRef<'_>) -> Result<String, String> {
    match value {
        RawBsonRef::String(s) => Ok(s.to_owned()),
        RawBsonRef::Null => Ok(String::new()),
        other => Err(format!(
            "field `{key}` is BSON {:?} but expected a string",
            other.element_type()
        )),
    }
}

fn integer_field(key: &str, value: RawBsonRef<'_>) -> Result<i64, String> {
    match value {
        RawBsonRef::Int32(n) => Ok(i64::from(n)),
        RawBsonRef::Int64(n) => Ok(n),
        RawBsonRef::Null => Ok(0),
        // Integral and well inside the range where doubles represent integers exactly, so the
        // conversion cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        RawBsonRef::Double(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Ok(d as i64),
        other => Err(format!(
            "field `{key}` is BSON {:?} but expected an integer",
            other.element_type()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing_follows_the_tools() {
        let v = |s| ServerVersion::parse(s);
        assert_eq!(
            v("7.0.16"),
            Some(ServerVersion {
                major: 7,
                minor: 0,
                patch: 16
            })
        );
        assert_eq!(
            v("5.0.0-rc0"),
            Some(ServerVersion {
                major: 5,
                minor: 0,
                patch: 0
            })
        );
        assert_eq!(
            v("8.3.1+ent"),
            Some(ServerVersion {
                major: 8,
                minor: 3,
                patch: 1
            })
        );
        for bad in ["unknown", "", "3.4", "1.2.3.4", "a.b.c", "1..2", "-1.2.3"] {
            assert_eq!(v(bad), None, "{bad}");
        }
    }

    #[test]
    fn timeseries_data_namespace_depends_on_the_source_version() {
        let ts = PreludeEntry::new("db", "foo_ts", "", "timeseries");
        assert_eq!(
            ts.data_collection(ServerVersion::parse("5.0.0-rc0")),
            "system.buckets.foo_ts"
        );
        assert_eq!(
            ts.data_collection(ServerVersion::parse("8.2.9")),
            "system.buckets.foo_ts"
        );
        assert_eq!(ts.data_collection(None), "system.buckets.foo_ts");
        assert_eq!(ts.data_collection(ServerVersion::parse("8.3.0")), "foo_ts");
        let plain = PreludeEntry::new("db", "foo", "", "collection");
        assert_eq!(plain.data_collection(None), "foo");
    }

    #[test]
    fn prelude_entry_tolerates_types_and_unknown_fields() {
        let doc = bson::rawdoc! {"extra": 1, "db": "d", "collection": "c", "metadata": "{}", "size": 7_i64};
        let entry = PreludeEntry::from_document(&doc).unwrap();
        assert_eq!((entry.size, entry.type_.as_str()), (7, ""));
        let bad = bson::rawdoc! {"db": 1};
        assert!(PreludeEntry::from_document(&bad).unwrap_err().contains("`db`"));
    }
}
