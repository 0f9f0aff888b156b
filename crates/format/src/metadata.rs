//! `<collection>.metadata.json`: a collection's options, index specs, UUID and real name.
//!
//! Current mongodump writes one compact canonical Extended JSON object with no trailing newline,
//! keys in the order `options` (omitted when empty), `indexes` (always, `[]` when none), `uuid`
//! (32 lower-case hex digits, omitted when unknown), `collectionName` (always) and `type`
//! (omitted when empty). Older dumps differ: `"options":{}`, no `collectionName` or `type`,
//! relaxed or legacy Extended JSON (bare JSON numbers, `{"$binary":"…","$type":"00"}`), an `ns`
//! field in each index spec, pretty-printed text. A 0-byte file means "no metadata".
//!
//! Reading follows the Go driver that mongorestore uses: a bare JSON integer becomes int32 when
//! it fits and int64 otherwise, a number with a fraction or exponent becomes a double, and
//! wrapped values (`{"$numberInt":"2"}`, `{"$numberDecimal":"-1"}`, …) keep their exact type.
//! Options and index specs are kept as ordered [`Document`]s, so field order and numeric types
//! survive untouched. Unknown top-level keys are ignored, as mongorestore does.
//!
//! Writing renders through [`crate::extjson`] in canonical mode, which prints every value
//! exactly as the Go driver does, and then checks (as mongodump does) that the text parses back
//! to the same BSON.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bson::spec::BinarySubtype;
use bson::{Bson, Document, RawDocumentBuf};
use serde_json::{Map, Value};

use crate::extjson::{self, Mode};

/// Why metadata could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The file could not be opened or read (or gunzipped).
    #[error("error reading metadata from {}: {source}", path.display())]
    Io {
        /// The metadata file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The text is not valid JSON or not valid Extended JSON, or a field has the wrong type.
    #[error("error parsing metadata from {location}: {message}")]
    Parse {
        /// The file path, archive namespace or other description of where the text came from.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The metadata cannot be written as Extended JSON that reads back to the same BSON.
    #[error("error marshaling metadata json for collection {collection:?}: {message}")]
    Render {
        /// The collection name in the metadata.
        collection: String,
        /// What went wrong.
        message: String,
    },
}

/// One collection's metadata as stored in `<collection>.metadata.json` (and in archive preludes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    /// The `options` sub-document of the `listCollections` entry, verbatim. `None` when the key
    /// is absent; an empty document is never written (current mongodump omits it).
    pub options: Option<Document>,
    /// `listIndexes` documents in server order, verbatim (including legacy `ns` fields).
    pub indexes: Vec<Document>,
    /// Collection UUID as 32 lower-case hex digits; `None` when absent or empty.
    pub uuid: Option<String>,
    /// The real, unescaped collection name; `None` in older dumps that lack the key.
    pub collection_name: Option<String>,
    /// The `listCollections` `type` (`collection`, `view`, `timeseries`); `None` when absent.
    /// mongorestore ignores it (see [`Metadata::is_view`] and [`Metadata::is_timeseries`]).
    pub collection_type: Option<String>,
}

impl Metadata {
    /// Empty metadata for a collection (no options, no indexes, no UUID).
    pub fn new(collection_name: impl Into<String>) -> Self {
        Self {
            collection_name: Some(collection_name.into()),
            ..Self::default()
        }
    }

    /// Parses metadata text. Returns `Ok(None)` for empty input (a 0-byte file means "no
    /// metadata"). `location` names the source in error messages.
    ///
    /// ```
    /// use tidemark_format::metadata::Metadata;
    /// let m = Metadata::parse(br#"{"options":{},"indexes":[{"v":2,"key":{"_id":1},"name":"_id_","ns":"db1.c1"}]}"#, "c1")
    ///     .unwrap().unwrap();
    /// assert_eq!(m.indexes[0].get_i32("v").unwrap(), 2);
    /// assert_eq!(m.collection_name, None);
    /// assert!(Metadata::parse(b"", "empty").unwrap().is_none());
    /// ```
    ///
    /// # Errors
    /// [`MetadataError::Parse`] for invalid JSON, invalid Extended JSON wrappers, a top level
    /// that is not an object, or keys of the wrong type.
    pub fn parse(text: &[u8], location: &str) -> Result<Option<Self>, MetadataError> {
        if text.is_empty() {
            return Ok(None);
        }
        let parse_err = |message: String| MetadataError::Parse {
            location: location.to_owned(),
            message,
        };
        let value: Value = serde_json::from_slice(text).map_err(|e| parse_err(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(parse_err("the top level is not a JSON object".into()));
        };
        let mut meta = Self::default();
        for (key, value) in map {
            match key.as_str() {
                "options" => {
                    meta.options = match ext_value(value).map_err(parse_err)? {
                        Bson::Document(d) => Some(d),
                        Bson::Null => None,
                        other => {
                            return Err(parse_err(format!(
                                "options is {:?}, not a document",
                                other.element_type()
                            )));
                        }
                    }
                }
                "indexes" => {
                    meta.indexes = match ext_value(value).map_err(parse_err)? {
                        Bson::Array(items) => items
                            .into_iter()
                            .enumerate()
                            .map(|(i, item)| match item {
                                Bson::Document(d) => Ok(d),
                                other => Err(parse_err(format!(
                                    "indexes[{i}] is {:?}, not a document",
                                    other.element_type()
                                ))),
                            })
                            .collect::<Result<_, _>>()?,
                        Bson::Null => Vec::new(),
                        other => {
                            return Err(parse_err(format!(
                                "indexes is {:?}, not an array",
                                other.element_type()
                            )));
                        }
                    }
                }
                "uuid" => {
                    meta.uuid = string_field(value, "uuid")
                        .map_err(parse_err)?
                        .filter(|s| !s.is_empty())
                }
                "collectionName" => meta.collection_name = string_field(value, "collectionName").map_err(parse_err)?,
                // mongorestore ignores `type`; keep it only when it is a string.
                "type" => meta.collection_type = value.as_str().map(str::to_owned),
                _ => {}
            }
        }
        Ok(Some(meta))
    }

    /// Reads a metadata file, gunzipping it when `gzip` is set (as mongorestore does under
    /// `--gzip`). Returns `Ok(None)` for a 0-byte file.
    ///
    /// # Errors
    /// [`MetadataError::Io`] or [`MetadataError::Parse`], both naming the path.
    pub fn read_file(path: &Path, gzip: bool) -> Result<Option<Self>, MetadataError> {
        let io_err = |source| MetadataError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let mut text = Vec::new();
        if gzip {
            flate2::read::MultiGzDecoder::new(file)
                .read_to_end(&mut text)
                .map_err(io_err)?;
        } else {
            io::BufReader::new(file).read_to_end(&mut text).map_err(io_err)?;
        }
        Self::parse(&text, &path.display().to_string())
    }

    /// The metadata as one BSON document with current mongodump's key order
    /// (`options?`, `indexes`, `uuid?`, `collectionName`, `type?`).
    #[must_use]
    pub fn to_document(&self) -> Document {
        let mut doc = Document::new();
        if let Some(options) = self.options.as_ref().filter(|o| !o.is_empty()) {
            doc.insert("options", options.clone());
        }
        doc.insert(
            "indexes",
            self.indexes.iter().cloned().map(Bson::Document).collect::<Vec<_>>(),
        );
        if let Some(uuid) = self.uuid.as_ref().filter(|u| !u.is_empty()) {
            doc.insert("uuid", uuid.clone());
        }
        doc.insert("collectionName", self.collection_name.clone().unwrap_or_default());
        if let Some(kind) = self.collection_type.as_ref().filter(|t| !t.is_empty()) {
            doc.insert("type", kind.clone());
        }
        doc
    }

    /// The exact text current mongodump writes: compact canonical Extended JSON, no trailing
    /// newline. Like mongodump, the text is checked to parse back to identical BSON.
    ///
    /// ```
    /// use tidemark_format::metadata::Metadata;
    /// let mut m = Metadata::new("coll1");
    /// m.indexes.push(bson::doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" });
    /// m.collection_type = Some("collection".into());
    /// assert_eq!(m.to_json().unwrap(),
    ///     r#"{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],"collectionName":"coll1","type":"collection"}"#);
    /// ```
    ///
    /// # Errors
    /// [`MetadataError::Render`] when the document cannot be rendered or does not read back to
    /// the same BSON (for example an options key that looks like an Extended JSON wrapper).
    pub fn to_json(&self) -> Result<String, MetadataError> {
        let collection = self.collection_name.clone().unwrap_or_default();
        let render_err = |message: String| MetadataError::Render {
            collection: collection.clone(),
            message,
        };
        let raw = RawDocumentBuf::from_document(&self.to_document()).map_err(|e| render_err(e.to_string()))?;
        let text = extjson::to_string(&raw, Mode::Canonical).map_err(|e| render_err(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| render_err(e.to_string()))?;
        let back = match ext_value(value).map_err(&render_err)? {
            Bson::Document(d) => RawDocumentBuf::from_document(&d).map_err(|e| render_err(e.to_string()))?,
            _ => return Err(render_err("rendered text is not an object".into())),
        };
        if back.as_bytes() != raw.as_bytes() {
            return Err(render_err(
                "the Extended JSON does not round-trip to identical BSON".into(),
            ));
        }
        Ok(text)
    }

    /// Whether this is a view: mongorestore recreates a view when `options.viewOn` is present.
    #[must_use]
    pub fn is_view(&self) -> bool {
        self.options.as_ref().is_some_and(|o| o.contains_key("viewOn"))
    }

    /// Whether this is a timeseries collection: mongorestore decides by `options.timeseries`.
    #[must_use]
    pub fn is_timeseries(&self) -> bool {
        self.options.as_ref().is_some_and(|o| o.contains_key("timeseries"))
    }

    /// The index spec with this `name`, if any.
    #[must_use]
    pub fn index(&self, name: &str) -> Option<&Document> {
        self.indexes.iter().find(|i| i.get_str("name") == Ok(name))
    }

    /// The UUID as 16 bytes, when present and well formed (32 hex digits).
    #[must_use]
    pub fn uuid_bytes(&self) -> Option<[u8; 16]> {
        let hex = self.uuid.as_deref()?.as_bytes();
        if hex.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(out)
    }

    /// Sets the UUID from a `listCollections` `info.uuid` value (binary subtype 4, 16 bytes).
    /// Any other value clears it, as mongodump writes no UUID it cannot read.
    pub fn set_uuid_from_bson(&mut self, value: Option<&Bson>) {
        self.uuid = match value {
            Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid && b.bytes.len() == 16 => {
                Some(b.bytes.iter().map(|byte| format!("{byte:02x}")).collect())
            }
            _ => None,
        };
    }
}

/// A top-level key that must be a string (or null, which leaves it unset).
fn string_field(value: Value, key: &str) -> Result<Option<String>, String> {
    match value {
        Value::String(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        other => Err(format!("{key} must be a string, found {other}")),
    }
}

/// Converts parsed JSON to BSON the way the Go driver's Extended JSON reader does.
///
/// # Errors
/// The message of the first invalid Extended JSON wrapper.
pub fn ext_value(value: Value) -> Result<Bson, String> {
    Bson::try_from(normalize_legacy(value)).map_err(|e| e.to_string())
}

/// Rewrites the legacy and lenient forms the Go driver accepts but the `bson` crate does not
/// into their canonical spelling: `{"$binary":"<base64>","$type":"<hex>"}` and one-digit binary
/// subtypes.
fn normalize_legacy(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_legacy).collect()),
        Value::Object(map) => Value::Object(normalize_object(map)),
        other => other,
    }
}

fn normalize_object(map: Map<String, Value>) -> Map<String, Value> {
    if let Some(Value::String(_)) = map.get("$binary")
        && map.len() == 2
        && let Some(Value::String(subtype)) = map.get("$type")
    {
        let subtype = normalize_subtype(subtype);
        let mut map = map;
        let base64 = map.remove("$binary").unwrap_or(Value::Null);
        let mut body = Map::new();
        body.insert("base64".into(), base64);
        body.insert("subType".into(), Value::String(subtype));
        let mut out = Map::new();
        out.insert("$binary".into(), Value::Object(body));
        return out;
    }
    if map.len() == 1
        && let Some(Value::Object(body)) = map.get("$binary")
        && let Some(Value::String(subtype)) = body.get("subType")
    {
        let subtype = normalize_subtype(subtype);
        let mut body = body.clone();
        body.insert("subType".into(), Value::String(subtype));
        let mut out = Map::new();
        out.insert("$binary".into(), Value::Object(body));
        return out;
    }
    map.into_iter().map(|(k, v)| (k, normalize_legacy(v))).collect()
}

/// Go parses a binary subtype with `strconv.ParseUint(s, 16, 8)`, so `"0"` and `"00"` are equal;
/// the `bson` crate wants exactly two digits. Unparseable text is left for the crate to reject.
fn normalize_subtype(subtype: &str) -> String {
    match u8::from_str_radix(subtype, 16) {
        Ok(n) if !subtype.starts_with('+') => format!("{n:02x}"),
        _ => subtype.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_follow_the_go_scanner() {
        let m = Metadata::parse(
            br#"{"options":{"a":2,"b":3000000000,"c":1.0,"d":1e3},"indexes":[]}"#,
            "t",
        )
        .unwrap()
        .unwrap();
        let o = m.options.unwrap();
        assert_eq!(o.get("a"), Some(&Bson::Int32(2)));
        assert_eq!(o.get("b"), Some(&Bson::Int64(3_000_000_000)));
        assert_eq!(o.get("c"), Some(&Bson::Double(1.0)));
        assert_eq!(o.get("d"), Some(&Bson::Double(1000.0)));
    }

    #[test]
    fn legacy_binary_is_accepted() {
        let m = Metadata::parse(br#"{"options":{"x":{"$binary":"AQI=","$type":"0"}},"indexes":[]}"#, "t")
            .unwrap()
            .unwrap();
        match m.options.unwrap().get("x") {
            Some(Bson::Binary(b)) => {
                assert_eq!(b.bytes, vec![1, 2]);
                assert_eq!(b.subtype, BinarySubtype::Generic);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_types_are_errors_that_name_the_location() {
        for text in [
            &br#"[]"#[..],
            br#"{"indexes":5}"#,
            br#"{"uuid":5}"#,
            br#"{"indexes":[1]}"#,
            b"{",
        ] {
            let err = Metadata::parse(text, "db/c.metadata.json").unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("error parsing metadata from db/c.metadata.json: "),
                "{err}"
            );
        }
    }

    #[test]
    fn uuid_from_list_collections_binary() {
        let mut m = Metadata::new("c");
        let bin = bson::Binary {
            subtype: BinarySubtype::Uuid,
            bytes: (0u8..16).collect(),
        };
        m.set_uuid_from_bson(Some(&Bson::Binary(bin)));
        assert_eq!(m.uuid.as_deref(), Some("000102030405060708090a0b0c0d0e0f"));
        assert_eq!(m.uuid_bytes().unwrap()[15], 15);
    }

    #[test]
    fn extjson_lookalike_keys_fail_the_round_trip_check() {
        let mut m = Metadata::new("c");
        m.options = Some(bson::doc! { "x": { "$numberInt": "1" } });
        assert!(matches!(m.to_json(), Err(MetadataError::Render { .. })));
    }
}
