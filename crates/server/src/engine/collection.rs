//! One collection: documents in natural (insertion) order, the `_id` index and secondary indexes.
//!
//! Documents are kept as the exact bytes clients sent, in a `BTreeMap` keyed by a record id that only grows,
//! so iterating the map is natural order and a replaced document keeps its position (as in mongod). The
//! `_id` index maps [`Key`]s (MongoDB's BSON comparison order) to record ids. Secondary indexes keep their
//! spec exactly as created; unique ones also keep a key map used to reject duplicates (multikey, sparse and
//! partial rules applied), while other kinds are metadata only. Plain single-field ascending/descending
//! indexes (not sparse, partial, `_id`, or with a collation) also keep postings, key -> record ids with every
//! element of an array indexed (a missing field posts `null`, so every document is in them), and count the
//! documents that make them multikey. [`Collection::index_scan`] walks the `_id` index or such postings over
//! key ranges in either direction, which the query planner uses for equality, `$in` and range predicates and
//! for sorts on the indexed field; callers still apply the full filter to each document, so a scan only
//! needs to yield a superset of the matches. Capped collections remove their oldest documents after an
//! insert that exceeds `size` bytes or `max` documents.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;

use bson::{Bson, Document, RawDocument, RawDocumentBuf, doc};
use tidemark_query::Filter;

use super::key::{Key, path_values, raw_id};
use super::namespace::Namespace;
use crate::error::{CommandError, CommandResult};

/// The kind of collection, as `listCollections` reports it in `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectionKind {
    /// An ordinary (possibly capped or clustered) collection.
    Collection,
    /// A read-only view (`viewOn` + `pipeline`).
    View,
    /// A time series collection: holds no documents itself; its measurements live in the
    /// `system.buckets.<name>` collection (see [`crate::timeseries`]).
    Timeseries,
}

impl CollectionKind {
    /// The `type` string of `listCollections`.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionKind::Collection => "collection",
            CollectionKind::View => "view",
            CollectionKind::Timeseries => "timeseries",
        }
    }
}

/// A secondary (or `_id`) index.
pub struct Index {
    /// The spec as listed by `listIndexes` (`{v, key, name, ...options}`).
    pub spec: Document,
    /// Index name.
    pub name: String,
    /// Key pattern fields in order.
    pub fields: Vec<String>,
    /// Whether uniqueness is enforced.
    pub unique: bool,
    sparse: bool,
    partial: Option<Filter>,
    entries: BTreeMap<Vec<Key>, u64>,
    /// Key -> record ids, for indexes the query planner may scan (see the module documentation).
    postings: Option<BTreeMap<Key, BTreeSet<u64>>>,
    /// Documents whose indexed value is an array (or, for a dotted path, any document: arrays may hide
    /// anywhere on the path). While zero, every document has exactly one key, so bounds may be intersected
    /// and a walk in key order is a walk in sort order.
    multikey_docs: usize,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("spec", &self.spec)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Index {
    /// Builds an (empty) index from a full spec; `key` and `name` must be present.
    pub fn from_spec(spec: Document) -> CommandResult<Self> {
        let key = spec
            .get_document("key")
            .map_err(|_| CommandError::failed_to_parse("index spec requires a 'key' document"))?;
        let name = spec
            .get_str("name")
            .map_err(|_| CommandError::failed_to_parse("index spec requires a 'name' string"))?
            .to_string();
        let fields: Vec<String> = key.keys().cloned().collect();
        if fields.is_empty() {
            return Err(CommandError::cannot_create_index("Index keys cannot be empty."));
        }
        let unique = name != "_id_" && truthy(spec.get("unique"));
        let sparse = truthy(spec.get("sparse"));
        let partial = match spec.get("partialFilterExpression") {
            Some(Bson::Document(d)) => Some(Filter::parse(d).map_err(CommandError::from)?),
            Some(_) => return Err(CommandError::type_mismatch("partialFilterExpression must be an object")),
            None => None,
        };
        let plannable = fields.len() == 1
            && fields[0] != "_id"
            && !sparse
            && partial.is_none()
            && !spec.contains_key("collation")
            && key.values().all(|v| {
                matches!(v, Bson::Int32(1 | -1) | Bson::Int64(1 | -1)) || matches!(v, Bson::Double(d) if d.abs() == 1.0)
            });
        Ok(Self {
            spec,
            name,
            fields,
            unique,
            sparse,
            partial,
            entries: BTreeMap::new(),
            postings: plannable.then(BTreeMap::new),
            multikey_docs: 0,
        })
    }

    /// Adds `doc` (at `rec`) to the postings.
    fn post(&mut self, doc: &RawDocument, rec: u64) {
        let Some(postings) = self.postings.as_mut() else { return };
        let Some(field) = self.fields.first() else { return };
        let values = path_values(doc, field).unwrap_or_else(|| vec![Bson::Null]);
        for v in values {
            postings.entry(Key(v)).or_default().insert(rec);
        }
        if is_multikey(doc, field) {
            self.multikey_docs = self.multikey_docs.saturating_add(1);
        }
    }

    /// Removes `doc` (at `rec`) from the postings.
    fn unpost(&mut self, doc: &RawDocument, rec: u64) {
        let Some(postings) = self.postings.as_mut() else { return };
        let Some(field) = self.fields.first() else { return };
        if is_multikey(doc, field) {
            self.multikey_docs = self.multikey_docs.saturating_sub(1);
        }
        let values = path_values(doc, field).unwrap_or_else(|| vec![Bson::Null]);
        for v in values {
            let key = Key(v);
            if let Some(set) = postings.get_mut(&key) {
                set.remove(&rec);
                if set.is_empty() {
                    postings.remove(&key);
                }
            }
        }
    }

    /// The key pattern document.
    pub fn key_pattern(&self) -> Document {
        self.spec.get_document("key").cloned().unwrap_or_default()
    }

    /// Keys this document contributes (empty when sparse/partial rules exclude it).
    fn keys_for(&self, doc: &RawDocument) -> CommandResult<Vec<Vec<Key>>> {
        let mut per_field = Vec::with_capacity(self.fields.len());
        let mut any_present = false;
        let mut multi = 0;
        for f in &self.fields {
            match path_values(doc, f) {
                Some(vals) => {
                    any_present = true;
                    if vals.len() > 1 {
                        multi += 1;
                    }
                    per_field.push(vals);
                }
                None => per_field.push(vec![Bson::Null]),
            }
        }
        if self.sparse && !any_present {
            return Ok(Vec::new());
        }
        if let Some(filter) = &self.partial {
            let d = Document::try_from(doc).map_err(|e| CommandError::bad_value(format!("invalid document: {e}")))?;
            if !filter.matches(&d) {
                return Ok(Vec::new());
            }
        }
        if multi > 1 {
            return Err(CommandError::new(
                171,
                "CannotIndexParallelArrays",
                format!("cannot index parallel arrays [{}]", self.fields.join("] [")),
            ));
        }
        let mut keys: Vec<Vec<Key>> = vec![Vec::new()];
        for vals in per_field {
            let mut next = Vec::with_capacity(keys.len() * vals.len());
            for k in &keys {
                for v in &vals {
                    let mut k2 = k.clone();
                    k2.push(Key(v.clone()));
                    next.push(k2);
                }
            }
            keys = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// Whether `doc` may contribute several keys (or an array key) for `field`: its top-level value is an array,
/// or the path is dotted (conservatively, since any step may be an array).
fn is_multikey(doc: &RawDocument, field: &str) -> bool {
    field.contains('.') || matches!(doc.get(field), Ok(Some(bson::RawBsonRef::Array(_))))
}

/// Whether `BTreeMap::range` accepts these bounds (it panics on an inverted or empty exclusive range) and the
/// range is not empty.
pub fn valid_range(lo: Bound<&Key>, hi: Bound<&Key>) -> bool {
    match (lo, hi) {
        (Bound::Included(l), Bound::Included(h)) => l <= h,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => l < h,
        _ => true,
    }
}

/// Key ranges of an index scan: ascending, disjoint, each `(low, high)`.
pub type KeyRanges = Vec<(Bound<Key>, Bound<Key>)>;

fn truthy(v: Option<&Bson>) -> bool {
    match v {
        Some(Bson::Boolean(b)) => *b,
        Some(Bson::Int32(i)) => *i != 0,
        Some(Bson::Int64(i)) => *i != 0,
        Some(Bson::Double(f)) => *f != 0.0,
        _ => false,
    }
}

/// A collection or view.
pub struct Collection {
    /// Collection UUID.
    pub uuid: [u8; 16],
    /// Creation options as given (after collMod changes).
    pub options: Document,
    /// Collection, view or time series.
    pub kind: CollectionKind,
    records: BTreeMap<u64, RawDocumentBuf>,
    next_record: u64,
    id_index: BTreeMap<Key, u64>,
    indexes: Vec<Index>,
    data_size: u64,
    capped_size: Option<u64>,
    capped_max: Option<u64>,
}

impl fmt::Debug for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collection")
            .field("options", &self.options)
            .field("kind", &self.kind)
            .field("count", &self.records.len())
            .finish_non_exhaustive()
    }
}

/// The `_id` index spec mongod lists first for every collection.
pub fn id_index_spec() -> Document {
    doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }
}

impl Collection {
    /// Creates an empty collection `ns` from its creation options.
    pub fn new(ns: &Namespace, uuid: [u8; 16], options: Document) -> CommandResult<Self> {
        let kind = if options.contains_key("viewOn") {
            CollectionKind::View
        } else if options.contains_key("timeseries") && !crate::timeseries::is_buckets(ns) {
            CollectionKind::Timeseries
        } else {
            CollectionKind::Collection
        };
        let capped = truthy(options.get("capped"));
        let (capped_size, capped_max) = if capped {
            let size = options.get("size").and_then(crate::commands::raw::as_i64).unwrap_or(0);
            let size = u64::try_from(size).unwrap_or(0);
            // mongod rounds the size up to a multiple of 256 bytes.
            let size = size.div_ceil(256).saturating_mul(256).max(256);
            let max = options
                .get("max")
                .and_then(crate::commands::raw::as_i64)
                .and_then(|m| u64::try_from(m).ok())
                .filter(|m| *m > 0);
            (Some(size), max)
        } else {
            (None, None)
        };
        let mut indexes = Vec::new();
        // `autoIndexId: false` (kept by mongod in the `local` database, e.g. for `local.oplog.rs`) means no
        // `_id` index; such a collection also accepts documents without `_id`.
        let auto_index_id = !matches!(options.get("autoIndexId"), Some(Bson::Boolean(false)));
        if kind == CollectionKind::Collection && auto_index_id {
            let mut spec = id_index_spec();
            if let Some(Bson::Document(id_index)) = options.get("idIndex") {
                // Keep extra fields given by the client (e.g. collation) but never a different key or name.
                for (k, v) in id_index {
                    let simple =
                        k == "collation" && matches!(v, Bson::Document(c) if c.get_str("locale") == Ok("simple"));
                    if !simple && !matches!(k.as_str(), "key" | "name" | "v" | "ns") {
                        spec.insert(k.clone(), v.clone());
                    }
                }
            }
            if let Some(Bson::Document(ci)) = options.get("clusteredIndex") {
                // A clustered collection lists its clustered index instead of a plain `_id_` index.
                let mut c = doc! { "v": ci.get("v").cloned().unwrap_or(Bson::Int32(2)), "key": { "_id": 1 } };
                c.insert(
                    "name",
                    ci.get("name").cloned().unwrap_or_else(|| Bson::String("_id_".into())),
                );
                c.insert("unique", ci.get("unique").cloned().unwrap_or(Bson::Boolean(true)));
                c.insert("clustered", true);
                spec = c;
            }
            indexes.push(Index::from_spec(spec)?);
        }
        Ok(Self {
            uuid,
            options,
            kind,
            records: BTreeMap::new(),
            next_record: 1,
            id_index: BTreeMap::new(),
            indexes,
            data_size: 0,
            capped_size,
            capped_max,
        })
    }

    /// Whether this is a view.
    pub fn is_view(&self) -> bool {
        self.kind == CollectionKind::View
    }

    /// Whether this is a time series collection (its data lives in `system.buckets.<name>`).
    pub fn is_timeseries(&self) -> bool {
        self.kind == CollectionKind::Timeseries
    }

    /// Whether reads of this namespace run through a pipeline over another collection (views and time
    /// series collections), and plain document writes to it are refused.
    pub fn is_virtual(&self) -> bool {
        self.kind != CollectionKind::Collection
    }

    /// Whether the collection is capped.
    pub fn is_capped(&self) -> bool {
        self.capped_size.is_some()
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the collection holds no documents.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Total size of the stored documents in bytes.
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Documents in natural order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &RawDocumentBuf)> {
        self.records.iter().map(|(k, v)| (*k, v))
    }

    /// Documents after (`reverse == false`) or before (`reverse == true`) a record id, in scan order.
    pub fn scan_from(
        &self,
        after: Option<u64>,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = (u64, &RawDocumentBuf)> + '_> {
        use std::ops::Bound::{Excluded, Unbounded};
        match (after, reverse) {
            (None, false) => Box::new(self.records.iter().map(|(k, v)| (*k, v))),
            (None, true) => Box::new(self.records.iter().rev().map(|(k, v)| (*k, v))),
            (Some(a), false) => Box::new(self.records.range((Excluded(a), Unbounded)).map(|(k, v)| (*k, v))),
            (Some(a), true) => Box::new(self.records.range(..a).rev().map(|(k, v)| (*k, v))),
        }
    }

    /// Documents in `_id` order (MongoDB's comparison order), as an `_id` index scan returns them.
    pub fn iter_by_id(&self) -> impl Iterator<Item = &RawDocumentBuf> {
        self.id_index.values().filter_map(|rec| self.records.get(rec))
    }

    /// The record holding the document with this `_id`.
    pub fn find_id(&self, id: &Bson) -> Option<(u64, &RawDocumentBuf)> {
        let rec = *self.id_index.get(&Key(id.clone()))?;
        self.records.get(&rec).map(|d| (rec, d))
    }

    /// A document by record id.
    pub fn get(&self, record: u64) -> Option<&RawDocumentBuf> {
        self.records.get(&record)
    }

    /// Index specs in creation order (`_id_` first).
    pub fn index_specs(&self) -> Vec<Document> {
        self.indexes.iter().map(|i| i.spec.clone()).collect()
    }

    /// The indexes (`_id_` first).
    pub fn indexes(&self) -> &[Index] {
        &self.indexes
    }

    /// Number of indexes.
    pub fn indexes_len(&self) -> usize {
        self.indexes.len()
    }

    /// Whether documents must carry an `_id` (every collection except those created with `autoIndexId: false`).
    fn requires_id(&self) -> bool {
        self.indexes
            .first()
            .is_some_and(|i| i.fields.len() == 1 && i.fields[0] == "_id")
    }

    /// Checks `doc` (whose `_id` is `id`) against the unique indexes; returns its keys in each index (empty for
    /// the others).
    fn check_unique(
        &self,
        ns: &Namespace,
        doc: &RawDocument,
        id: Option<&Key>,
        own: Option<u64>,
    ) -> CommandResult<Vec<Vec<Vec<Key>>>> {
        match id {
            Some(Key(Bson::Array(_))) => return Err(CommandError::new(2, "BadValue", "can't use an array for _id")),
            Some(id) => {
                if let Some(rec) = self.id_index.get(id)
                    && Some(*rec) != own
                {
                    return Err(dup_key_error(ns, "_id_", &doc! {"_id": 1}, std::slice::from_ref(id)));
                }
            }
            None if self.requires_id() => {
                return Err(CommandError::internal(format!("document for {ns} has no _id")));
            }
            None => {}
        }
        let mut all = Vec::with_capacity(self.indexes.len());
        for idx in &self.indexes {
            if !idx.unique {
                all.push(Vec::new());
                continue;
            }
            let keys = idx.keys_for(doc)?;
            for k in &keys {
                if let Some(rec) = idx.entries.get(k)
                    && Some(*rec) != own
                {
                    return Err(dup_key_error(ns, &idx.name, &idx.key_pattern(), k));
                }
            }
            all.push(keys);
        }
        Ok(all)
    }

    /// Inserts a document with an `_id`, enforcing unique indexes; returns its record id.
    pub fn insert(&mut self, ns: &Namespace, doc: RawDocumentBuf) -> CommandResult<u64> {
        let rec = self.next_record;
        self.insert_at(ns, rec, doc)?;
        Ok(rec)
    }

    /// Inserts at a given record id (used to undo a delete).
    pub(crate) fn insert_at(&mut self, ns: &Namespace, rec: u64, doc: RawDocumentBuf) -> CommandResult<()> {
        if self.is_view() {
            return Err(CommandError::command_not_supported_on_view(format!(
                "Namespace {ns} is a view, not a collection"
            )));
        }
        let id = raw_id(&doc).map(Key);
        let keys = self.check_unique(ns, &doc, id.as_ref(), None)?;
        if let Some(id) = id {
            self.id_index.insert(id, rec);
        }
        for (idx, ks) in self.indexes.iter_mut().zip(keys) {
            for k in ks {
                idx.entries.insert(k, rec);
            }
            idx.post(&doc, rec);
        }
        self.data_size = self.data_size.saturating_add(len_u64(&doc));
        self.records.insert(rec, doc);
        self.next_record = self.next_record.max(rec.saturating_add(1));
        Ok(())
    }

    /// Replaces the document at `rec`, keeping its position; returns the old document.
    pub fn replace(&mut self, ns: &Namespace, rec: u64, doc: RawDocumentBuf) -> CommandResult<RawDocumentBuf> {
        let old_id = self.records.get(&rec).and_then(|d| raw_id(d));
        let new_id = raw_id(&doc).map(Key);
        if old_id.is_none() {
            return Err(CommandError::internal(format!("record {rec} missing in {ns}")));
        }
        let keys = self.check_unique(ns, &doc, new_id.as_ref(), Some(rec))?;
        let old = self
            .remove(rec)
            .ok_or_else(|| CommandError::internal(format!("record {rec} missing in {ns}")))?;
        debug_assert!(new_id.is_some());
        if let Some(id) = new_id {
            self.id_index.insert(id, rec);
        }
        for (idx, ks) in self.indexes.iter_mut().zip(keys) {
            for k in ks {
                idx.entries.insert(k, rec);
            }
            idx.post(&doc, rec);
        }
        self.data_size = self.data_size.saturating_add(len_u64(&doc));
        self.records.insert(rec, doc);
        Ok(old)
    }

    /// Removes the document at `rec`.
    pub fn remove(&mut self, rec: u64) -> Option<RawDocumentBuf> {
        let doc = self.records.remove(&rec)?;
        if let Some(id) = raw_id(&doc) {
            self.id_index.remove(&Key(id));
        }
        for idx in &mut self.indexes {
            idx.unpost(&doc, rec);
            if idx.unique
                && let Ok(keys) = idx.keys_for(&doc)
            {
                for k in keys {
                    if idx.entries.get(&k) == Some(&rec) {
                        idx.entries.remove(&k);
                    }
                }
            }
        }
        self.data_size = self.data_size.saturating_sub(len_u64(&doc));
        Some(doc)
    }

    /// Record ids a capped collection must remove (oldest first) after an insert, never `keep`.
    pub fn capped_excess(&self, keep: u64) -> Vec<u64> {
        let Some(size) = self.capped_size else {
            return Vec::new();
        };
        let mut count = self.records.len() as u64;
        let mut bytes = self.data_size;
        let mut out = Vec::new();
        for (rec, doc) in &self.records {
            let over = bytes > size || self.capped_max.is_some_and(|m| count > m);
            if !over || *rec == keep {
                break;
            }
            out.push(*rec);
            count -= 1;
            bytes = bytes.saturating_sub(len_u64(doc));
        }
        out
    }

    /// Adds an index, building it over existing documents (fails with 11000 on duplicates for unique ones).
    pub fn create_index(&mut self, ns: &Namespace, spec: Document) -> CommandResult<()> {
        let mut idx = Index::from_spec(spec)?;
        if idx.unique {
            for (rec, doc) in &self.records {
                for k in idx.keys_for(doc)? {
                    if idx.entries.contains_key(&k) {
                        return Err(dup_key_error(ns, &idx.name, &idx.key_pattern(), &k));
                    }
                    idx.entries.insert(k, *rec);
                }
            }
        }
        for (rec, doc) in &self.records {
            idx.post(doc, *rec);
        }
        self.indexes.push(idx);
        Ok(())
    }

    /// Whether the collection has its `_id` index (every collection but those created with `autoIndexId:
    /// false`).
    pub fn has_id_index(&self) -> bool {
        self.requires_id()
    }

    /// Whether `field` has an index that [`Collection::index_scan`] can walk: `_id`, or a plannable
    /// single-field index. `single_key` also asks that no document contributes more than one key (no arrays),
    /// which intersecting bounds and walking in sort order need.
    pub fn scannable(&self, field: &str, single_key: bool) -> bool {
        if field == "_id" {
            return self.has_id_index();
        }
        self.plannable_index(field)
            .is_some_and(|i| !single_key || (i.multikey_docs == 0 && !field.contains('.')))
    }

    fn plannable_index(&self, field: &str) -> Option<&Index> {
        self.indexes
            .iter()
            .find(|i| i.postings.is_some() && i.fields.first().is_some_and(|f| f == field))
    }

    /// Record ids from an index scan of `field` (`_id` or a plannable single-field index) over `ranges`
    /// (ascending, disjoint), in key order, descending when `reverse`; within one key (several documents of a
    /// secondary index) in ascending record order either way, as a stable sort of natural order puts them.
    /// A multikey index yields a document once per matching key. `None` when `field` has no such index.
    pub fn index_scan(
        &self,
        field: &str,
        ranges: KeyRanges,
        reverse: bool,
    ) -> Option<Box<dyn Iterator<Item = u64> + '_>> {
        let mut ranges: KeyRanges = ranges
            .into_iter()
            .filter(|(lo, hi)| valid_range(lo.as_ref(), hi.as_ref()))
            .collect();
        if reverse {
            ranges.reverse();
        }
        if field == "_id" {
            if !self.has_id_index() {
                return None;
            }
            let index = &self.id_index;
            return Some(Box::new(ranges.into_iter().flat_map(move |r| {
                let it = index.range::<Key, _>(r).map(|(_, rec)| *rec);
                if reverse {
                    Box::new(it.rev()) as Box<dyn Iterator<Item = u64>>
                } else {
                    Box::new(it)
                }
            })));
        }
        let postings = self.plannable_index(field)?.postings.as_ref()?;
        Some(Box::new(ranges.into_iter().flat_map(move |r| {
            let keys = postings.range::<Key, _>(r);
            if reverse {
                Box::new(keys.rev().flat_map(|(_, set)| set.iter().copied())) as Box<dyn Iterator<Item = u64>>
            } else {
                Box::new(keys.flat_map(|(_, set)| set.iter().copied()))
            }
        })))
    }

    /// Removes an index by name, returning it and its position.
    pub(crate) fn take_index(&mut self, name: &str) -> Option<(usize, Index)> {
        let pos = self.indexes.iter().position(|i| i.name == name)?;
        Some((pos, self.indexes.remove(pos)))
    }

    /// Puts an index back at a position (undo of a drop).
    pub(crate) fn restore_index(&mut self, pos: usize, idx: Index) {
        let pos = pos.min(self.indexes.len());
        self.indexes.insert(pos, idx);
    }

    /// Replaces an index spec in place, returning the old spec.
    pub(crate) fn set_index_spec(&mut self, spec: Document) -> CommandResult<Document> {
        let name = spec
            .get_str("name")
            .map_err(|_| CommandError::failed_to_parse("index spec without name"))?;
        let idx = self
            .indexes
            .iter_mut()
            .find(|i| i.name == name)
            .ok_or_else(|| CommandError::index_not_found(format!("cannot find index {name}")))?;
        Ok(std::mem::replace(&mut idx.spec, spec))
    }
}

fn len_u64(d: &RawDocumentBuf) -> u64 {
    d.as_bytes().len() as u64
}

/// Builds mongod's duplicate key error (code 11000) with `keyPattern` and `keyValue`.
pub fn dup_key_error(ns: &Namespace, index: &str, pattern: &Document, key: &[Key]) -> CommandError {
    let mut key_value = Document::new();
    let mut shown = Vec::new();
    for (field, k) in pattern.keys().zip(key) {
        key_value.insert(field.clone(), k.0.clone());
        shown.push(format!("{field}: {}", shell_repr(&k.0)));
    }
    let message = format!(
        "E11000 duplicate key error collection: {ns} index: {index} dup key: {{ {} }}",
        shown.join(", ")
    );
    CommandError::duplicate_key(message).with_extra(doc! { "keyPattern": pattern.clone(), "keyValue": key_value })
}

/// Renders a value roughly as mongod's `BSONObj::toString` does in error messages.
pub fn shell_repr(v: &Bson) -> String {
    match v {
        Bson::String(s) => format!("\"{s}\""),
        Bson::ObjectId(o) => format!("ObjectId('{o}')"),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(f) if f.fract() == 0.0 && f.is_finite() => format!("{f:.1}"),
        Bson::Double(f) => f.to_string(),
        Bson::Null => "null".to_string(),
        Bson::Undefined => "undefined".to_string(),
        Bson::Boolean(b) => b.to_string(),
        Bson::Document(d) => {
            let parts: Vec<String> = d.iter().map(|(k, v)| format!("{k}: {}", shell_repr(v))).collect();
            if parts.is_empty() {
                "{}".to_string()
            } else {
                format!("{{ {} }}", parts.join(", "))
            }
        }
        Bson::Array(a) => {
            let parts: Vec<String> = a.iter().map(shell_repr).collect();
            format!("[ {} ]", parts.join(", "))
        }
        other => other.to_string(),
    }
}
