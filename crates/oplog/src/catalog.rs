//! The index catalog: which indexes each restored collection gets, built after data and oplog.
//!
//! mongorestore never builds indexes as it reads them. Indexes from metadata files fill a
//! catalog; index operations found in the oplog (`createIndexes`, `commitIndexBuild`,
//! `dropIndexes` and aliases, index-level `collMod`, `drop`, `dropDatabase`) edit the same
//! catalog instead of being applied; and only at the very end is one `createIndexes` command
//! sent per collection. This is why a dump whose data violates a unique index that the oplog
//! later fixes restores cleanly.
//!
//! [`IndexCatalog::create_indexes_commands`] applies the spec reshaping of mongorestore
//! (`RestoreIndexesForNamespace`): the default `_id` index is removed (it is created with the
//! collection), `2dsphereIndexVersion: 1` is added to 2dsphere indexes lacking it, the optional
//! legacy conversions run, an explicit simple collation is added unless the collection's default
//! collation is known to be simple, `ns` is set and `v` removed.

use std::collections::BTreeMap;

use bson::{Bson, Document};

use crate::error::OplogError;

/// Indexes and collation knowledge for one collection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectionIndexes {
    /// Index specs in catalog order (`key` and `partialFilterExpression` keep their field order).
    pub indexes: Vec<Document>,
    /// `Some(true)` when the collection's default collation is known to be simple.
    pub simple_collation: Option<bool>,
}

/// Options of the final index build.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct IndexBuildOptions {
    /// `--keepIndexVersion`: keep `v` in the specs.
    pub keep_index_version: bool,
    /// `--convertLegacyIndexes`: normalise legacy key values and drop duplicate keys.
    pub convert_legacy_indexes: bool,
    /// `--fixDottedHashIndex`: a dotted key with value `"hashed"` becomes 1.
    pub fix_dotted_hash_index: bool,
}

impl IndexBuildOptions {
    /// Options with every flag set as given.
    #[must_use]
    pub fn new(keep_index_version: bool, convert_legacy_indexes: bool, fix_dotted_hash_index: bool) -> Self {
        Self {
            keep_index_version,
            convert_legacy_indexes,
            fix_dotted_hash_index,
        }
    }
}

/// Index catalog keyed by namespace `db.coll`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexCatalog {
    collections: BTreeMap<String, CollectionIndexes>,
}

fn index_name(spec: &Document) -> Option<&str> {
    spec.get_str("name").ok()
}

fn as_f64(value: &Bson) -> Option<f64> {
    match value {
        Bson::Int32(v) => Some(f64::from(*v)),
        #[allow(clippy::cast_precision_loss)]
        Bson::Int64(v) => Some(*v as f64),
        Bson::Double(v) => Some(*v),
        Bson::Decimal128(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

fn is_simple_collation(options: &Document) -> bool {
    match options.get_document("collation") {
        Ok(c) => c.get_str("locale") == Ok("simple"),
        Err(_) => !options.contains_key("collation"),
    }
}

impl IndexCatalog {
    /// An empty catalog.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The catalog entry of a namespace, if any.
    #[must_use]
    pub fn get(&self, ns: &str) -> Option<&CollectionIndexes> {
        self.collections.get(ns)
    }

    /// Every namespace in the catalog, sorted.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.collections.keys().map(String::as_str)
    }

    /// Makes sure a namespace has an entry (so the index phase visits it).
    pub fn ensure(&mut self, ns: &str) -> &mut CollectionIndexes {
        self.collections.entry(ns.to_owned()).or_default()
    }

    /// Records the collection options of `ns` (metadata `options` or an oplog `create`): whether
    /// its default collation is simple.
    pub fn record_options(&mut self, ns: &str, options: &Document) {
        self.ensure(ns).simple_collation = Some(is_simple_collation(options));
    }

    /// Adds an index spec, replacing an index with the same name. Specs without a string `name`
    /// are dropped, as mongorestore does.
    pub fn add_index(&mut self, ns: &str, spec: Document) {
        let Some(name) = index_name(&spec).map(str::to_owned) else {
            return;
        };
        let entry = self.ensure(ns);
        if let Some(existing) = entry.indexes.iter_mut().find(|s| index_name(s) == Some(name.as_str())) {
            *existing = spec;
        } else {
            entry.indexes.push(spec);
        }
    }

    /// Removes every index of a namespace except `_id_` (`dropIndexes: "*"`).
    pub fn drop_all_indexes(&mut self, ns: &str) {
        if let Some(entry) = self.collections.get_mut(ns) {
            entry.indexes.retain(|s| index_name(s) == Some("_id_"));
        }
    }

    /// Removes an index by name.
    pub fn drop_index_by_name(&mut self, ns: &str, name: &str) {
        if let Some(entry) = self.collections.get_mut(ns) {
            entry.indexes.retain(|s| index_name(s) != Some(name));
        }
    }

    /// Removes the index whose key equals `key` exactly.
    ///
    /// # Errors
    /// [`OplogError::Index`] when more than one index has that key.
    pub fn drop_index_by_key(&mut self, ns: &str, key: &Document) -> Result<(), OplogError> {
        if let Some(entry) = self.collections.get_mut(ns) {
            let matches = entry
                .indexes
                .iter()
                .filter(|s| s.get_document("key").ok() == Some(key))
                .count();
            if matches > 1 {
                return Err(OplogError::Index(format!("more than one index with key {key} on {ns}")));
            }
            entry.indexes.retain(|s| s.get_document("key").ok() != Some(key));
        }
        Ok(())
    }

    /// Forgets a collection (oplog `drop`).
    pub fn drop_collection(&mut self, ns: &str) {
        self.collections.remove(ns);
    }

    /// Moves a collection's indexes and options to its new name (oplog `renameCollection`); the
    /// target's entry, if any, is replaced (a rename with `dropTarget`).
    pub fn rename_collection(&mut self, from: &str, to: &str) {
        self.collections.remove(to);
        if let Some(entry) = self.collections.remove(from) {
            self.collections.insert(to.to_owned(), entry);
        }
    }

    /// Forgets every collection of a database (oplog `dropDatabase`).
    pub fn drop_database(&mut self, db: &str) {
        let prefix = format!("{db}.");
        self.collections.retain(|ns, _| !ns.starts_with(&prefix));
    }

    /// Applies the `index` sub-document of a `collMod` to the catalog: finds the index by `name`
    /// or `keyPattern` (exactly one of them) and copies `expireAfterSeconds`, `hidden`,
    /// `prepareUnique`, `unique` (which removes `forceNonUnique`) and `forceNonUnique` (which
    /// removes `unique`).
    ///
    /// # Errors
    /// [`OplogError::Index`] for a missing or ambiguous selector, a non-boolean flag or an
    /// unknown option.
    pub fn coll_mod_index(&mut self, ns: &str, index: &Document) -> Result<(), OplogError> {
        let name = index.get("name");
        let key = index.get("keyPattern");
        let selector_error = || {
            OplogError::Index(format!(
                "collMod on {ns}: index must have exactly one of 'name' and 'keyPattern': {index}"
            ))
        };
        let entry = self.ensure(ns);
        let found = match (name, key) {
            (Some(Bson::String(name)), None) => entry.indexes.iter_mut().find(|s| index_name(s) == Some(name.as_str())),
            (None, Some(Bson::Document(key))) => entry
                .indexes
                .iter_mut()
                .find(|s| s.get_document("key").ok() == Some(key)),
            _ => return Err(selector_error()),
        };
        let Some(spec) = found else {
            // The index is not in the catalog (it may exist on the target already): nothing to fold.
            return Ok(());
        };
        for (field, value) in index {
            match field.as_str() {
                "name" | "keyPattern" => {}
                "expireAfterSeconds" | "hidden" | "prepareUnique" => {
                    spec.insert(field.clone(), value.clone());
                }
                "unique" | "forceNonUnique" => {
                    let Bson::Boolean(flag) = value else {
                        return Err(OplogError::Index(format!(
                            "collMod on {ns}: '{field}' must be a boolean"
                        )));
                    };
                    spec.insert(field.clone(), *flag);
                    if *flag {
                        spec.remove(if field == "unique" { "forceNonUnique" } else { "unique" });
                    }
                }
                other => {
                    return Err(OplogError::Index(format!(
                        "collMod on {ns}: unknown index option '{other}'"
                    )));
                }
            }
        }
        Ok(())
    }

    /// One `createIndexes` command per namespace with indexes left to build (after removing the
    /// default `_id` index), as `(db, collection, command)`.
    ///
    /// # Errors
    /// [`OplogError::Index`] when a namespace has two default `_id` indexes.
    pub fn create_indexes_commands(
        &self,
        options: IndexBuildOptions,
    ) -> Result<Vec<(String, String, Document)>, OplogError> {
        let mut out = Vec::new();
        for (ns, entry) in &self.collections {
            let Some((db, coll)) = ns.split_once('.') else {
                continue;
            };
            let specs = shape_specs(ns, entry, options)?;
            if specs.is_empty() {
                continue;
            }
            let mut cmd = Document::new();
            cmd.insert("createIndexes", coll);
            cmd.insert("indexes", specs.into_iter().map(Bson::Document).collect::<Vec<_>>());
            cmd.insert("ignoreUnknownIndexOptions", true);
            out.push((db.to_owned(), coll.to_owned(), cmd));
        }
        Ok(out)
    }
}

/// Whether an index is the default `_id` index: key exactly `{_id: 1}` (any numeric type equal to
/// 1, or `""`), without `partialFilterExpression`.
#[must_use]
pub fn is_default_id_index(spec: &Document) -> bool {
    if spec.contains_key("partialFilterExpression") {
        return false;
    }
    let Ok(key) = spec.get_document("key") else {
        return false;
    };
    if key.len() != 1 {
        return false;
    }
    match key.get("_id") {
        Some(Bson::String(s)) => s.is_empty(),
        Some(v) => as_f64(v).is_some_and(|f| (f - 1.0).abs() < 1e-9),
        None => false,
    }
}

fn convert_legacy_value(value: &Bson) -> Bson {
    match value {
        Bson::String(s) if !s.is_empty() => value.clone(),
        v => match as_f64(v) {
            Some(f) if f.abs() >= 1e-9 => value.clone(),
            Some(f) if f != 0.0 => Bson::Int32(if f > 0.0 { 1 } else { -1 }),
            _ => Bson::Int32(1),
        },
    }
}

fn keys_equal(a: &Document, b: &Document) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (as_f64(va), as_f64(vb)) {
                    (Some(x), Some(y)) => (x - y).abs() < 1e-9,
                    _ => va == vb,
                }
        })
}

fn shape_specs(ns: &str, entry: &CollectionIndexes, options: IndexBuildOptions) -> Result<Vec<Document>, OplogError> {
    let mut id_indexes = 0;
    let mut out: Vec<Document> = Vec::new();
    for spec in &entry.indexes {
        if is_default_id_index(spec) {
            id_indexes += 1;
            if id_indexes > 1 {
                return Err(OplogError::Index(format!("duplicate _id index found on {ns}")));
            }
            continue;
        }
        let mut spec = spec.clone();
        let mut key = spec.get_document("key").cloned().unwrap_or_default();
        if options.convert_legacy_indexes {
            key = key.iter().map(|(k, v)| (k.clone(), convert_legacy_value(v))).collect();
        }
        if options.fix_dotted_hash_index {
            key = key
                .iter()
                .map(|(k, v)| match v {
                    Bson::String(s) if s == "hashed" && k.contains('.') => (k.clone(), Bson::Int32(1)),
                    _ => (k.clone(), v.clone()),
                })
                .collect();
        }
        if options.convert_legacy_indexes
            && out
                .iter()
                .any(|prev| prev.get_document("key").is_ok_and(|k| keys_equal(k, &key)))
        {
            continue;
        }
        let is_2dsphere = key.values().any(|v| matches!(v, Bson::String(s) if s == "2dsphere"));
        spec.insert("key", key);
        if is_2dsphere && !spec.contains_key("2dsphereIndexVersion") {
            spec.insert("2dsphereIndexVersion", 1);
        }
        if !spec.contains_key("collation") && entry.simple_collation != Some(true) {
            let mut collation = Document::new();
            collation.insert("locale", "simple");
            spec.insert("collation", collation);
        }
        let is_v1 = spec.get("v").and_then(as_f64).is_some_and(|v| (v - 1.0).abs() < 1e-9);
        if is_v1
            && spec
                .get_document("collation")
                .is_ok_and(|c| c.get_str("locale") == Ok("simple"))
        {
            spec.remove("collation");
        }
        spec.insert("ns", ns);
        if !options.keep_index_version {
            spec.remove("v");
        }
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn default_id_index_detection_follows_legacy_normalisation() {
        assert!(is_default_id_index(&doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}));
        assert!(is_default_id_index(&doc! {"key": {"_id": 1.0}, "name": "x"}));
        assert!(is_default_id_index(&doc! {"key": {"_id": ""}, "name": "x"}));
        assert!(!is_default_id_index(&doc! {"key": {"_id": -1}, "name": "x"}));
        assert!(!is_default_id_index(
            &doc! {"key": {"_id": 1}, "name": "x", "partialFilterExpression": {"a": 1}}
        ));
        assert!(!is_default_id_index(&doc! {"key": {"_id": "hashed"}, "name": "x"}));
    }

    #[test]
    fn legacy_conversion_deduplicates_keys() {
        // The duplicate_index_key fixture: {foo:""}, {foo:1.0}, {foo:1}, {foo:2} → two indexes left.
        let mut catalog = IndexCatalog::new();
        catalog.record_options("indextest.d", &doc! {});
        for (name, value) in [("_id_", Bson::Int32(1)), ("foo_", Bson::String(String::new()))] {
            let field = if name == "_id_" { "_id" } else { "foo" };
            catalog.add_index("indextest.d", doc! {"v": 1, "key": {field: value}, "name": name});
        }
        catalog.add_index("indextest.d", doc! {"v": 1, "key": {"foo": 1.0}, "name": "foo_1.0"});
        catalog.add_index("indextest.d", doc! {"v": 1, "key": {"foo": 1}, "name": "foo_1"});
        catalog.add_index("indextest.d", doc! {"v": 1, "key": {"foo": 2}, "name": "foo_2"});
        let cmds = catalog
            .create_indexes_commands(IndexBuildOptions::new(false, true, false))
            .unwrap();
        let indexes = cmds[0].2.get_array("indexes").unwrap();
        assert_eq!(indexes.len(), 2);
        let first = indexes[0].as_document().unwrap();
        assert_eq!(first.get_document("key").unwrap(), &doc! {"foo": 1});
        assert!(!first.contains_key("v"));
        assert_eq!(first.get_str("ns").unwrap(), "indextest.d");
    }

    #[test]
    fn simple_collation_added_unless_known_simple() {
        let mut catalog = IndexCatalog::new();
        catalog.add_index("a.b", doc! {"v": 2, "key": {"x": 1}, "name": "x_1"});
        catalog.record_options("c.d", &doc! {"collation": {"locale": "en_US"}});
        catalog.add_index("c.d", doc! {"v": 2, "key": {"x": 1}, "name": "x_1"});
        catalog.record_options("e.f", &doc! {});
        catalog.add_index("e.f", doc! {"v": 2, "key": {"x": 1}, "name": "x_1"});
        let cmds = catalog.create_indexes_commands(IndexBuildOptions::default()).unwrap();
        let collation = |i: usize| {
            cmds[i].2.get_array("indexes").unwrap()[0]
                .as_document()
                .unwrap()
                .get("collation")
                .cloned()
        };
        assert_eq!(collation(0), Some(Bson::Document(doc! {"locale": "simple"})));
        assert_eq!(collation(1), Some(Bson::Document(doc! {"locale": "simple"})));
        assert_eq!(collation(2), None);
    }

    #[test]
    fn fix_dotted_hash_index() {
        let mut catalog = IndexCatalog::new();
        catalog.record_options("t.h", &doc! {});
        catalog.add_index("t.h", doc! {"v": 2, "key": {"a.b": "hashed"}, "name": "a.b_hashed"});
        catalog.add_index("t.h", doc! {"v": 2, "key": {"b": "hashed"}, "name": "b_hashed"});
        let cmds = catalog
            .create_indexes_commands(IndexBuildOptions::new(false, false, true))
            .unwrap();
        let idx = cmds[0].2.get_array("indexes").unwrap();
        assert_eq!(
            idx[0].as_document().unwrap().get_document("key").unwrap(),
            &doc! {"a.b": 1}
        );
        assert_eq!(
            idx[1].as_document().unwrap().get_document("key").unwrap(),
            &doc! {"b": "hashed"}
        );
    }

    #[test]
    fn coll_mod_index_rules() {
        let mut catalog = IndexCatalog::new();
        catalog.add_index("t.c", doc! {"key": {"a": 1}, "name": "a_1", "unique": true});
        catalog
            .coll_mod_index("t.c", &doc! {"name": "a_1", "forceNonUnique": true})
            .unwrap();
        let spec = &catalog.get("t.c").unwrap().indexes[0];
        assert!(!spec.contains_key("unique"));
        assert_eq!(spec.get_bool("forceNonUnique"), Ok(true));
        assert!(
            catalog
                .coll_mod_index("t.c", &doc! {"name": "a_1", "keyPattern": {"a": 1}})
                .is_err()
        );
        assert!(
            catalog
                .coll_mod_index("t.c", &doc! {"name": "a_1", "bogus": 1})
                .is_err()
        );
        assert!(
            catalog
                .coll_mod_index("t.c", &doc! {"name": "a_1", "unique": 1})
                .is_err()
        );
    }
}
