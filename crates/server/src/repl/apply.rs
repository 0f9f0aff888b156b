//! Applying oplog entries: the `applyOps` command and a secondary's replication both come here.
//!
//! Each top-level entry is applied in its own engine write, in order, stopping at the first failure (nothing
//! after it is applied), with MongoDB's oplog-application semantics:
//! - `i`: inserts the document, or replaces the existing one with the same `_id` (oplog application turns
//!   inserts into upserts, so re-applying an entry neither fails nor duplicates);
//! - `u`: `o2._id` selects the document; `o` is a `$v: 2` diff (applied with
//!   [`tidemark_query::apply_oplog_diff`]), a modifier document (`$set`, `$unset`, ... optionally with the
//!   pre-5.0 `$v: 1`), or a replacement. A missing target does nothing (MongoDB 8.1 behaviour);
//! - `d`: deletes by `o._id` (a missing document is fine);
//! - `n`: nothing;
//! - `c` on `<db>.$cmd`: create (a `ui` becomes the new collection's UUID), drop, dropDatabase, createIndexes,
//!   dropIndexes (name, `"*"` or key pattern, and the legacy aliases), collMod (collection options and
//!   `index` changes: `expireAfterSeconds`, `hidden`, `prepareUnique`, `unique`, `forceNonUnique`),
//!   renameCollection (with `dropTarget`), and nested applyOps (applied within the same write).
//!
//! CRUD entries carrying `ui` are applied to the collection with that UUID when one exists (falling back to
//! `ns`). Document validation applies to `i`/`u` on the primary unless `bypassDocumentValidation` is set.
//!
//! In [`ApplyMode::Primary`] (the `applyOps` command) the engine's oplog writer records the resulting changes
//! as new entries. In [`ApplyMode::Secondary`] the changes are not re-derived: each entry is recorded
//! verbatim in `local.oplog.rs` in the same write (so a secondary's oplog matches its primary's, `ts`
//! included), and errors that only mean "already applied" (existing collection or index, missing index or
//! collection to drop) are ignored, so application is idempotent.

use bson::{Bson, Document, RawDocumentBuf, doc};
use tidemark_query::{Filter, Update};

use super::oplog::Oplog;
use crate::engine::collection::Collection;
use crate::engine::namespace::validate_db_name;
use crate::engine::{Catalog, Engine, Mutation, Namespace, WriteTxn, new_uuid};
use crate::error::{CommandError, CommandResult};

/// Who is applying the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// The `applyOps` command on a primary or standalone: changes are logged as new oplog entries.
    Primary,
    /// A secondary replaying its sync source: entries are recorded verbatim, re-application is harmless.
    Secondary,
}

/// Options of one application run.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Primary or secondary semantics.
    pub mode: ApplyMode,
    /// Skips collection validators for `i`/`u` (`applyOps.bypassDocumentValidation`).
    pub bypass_document_validation: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            mode: ApplyMode::Primary,
            bypass_document_validation: false,
        }
    }
}

/// A failed run: how many entries were applied before `error` stopped it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyFailure {
    /// Entries applied (all of them fully) before the failing one.
    pub applied: usize,
    /// Why the next entry failed.
    pub error: CommandError,
}

/// Applies `entries` in order, each in its own write; stops at the first failure.
pub fn apply_entries(
    engine: &Engine,
    oplog: &Oplog,
    entries: &[Document],
    options: &ApplyOptions,
) -> Result<usize, ApplyFailure> {
    for (i, e) in entries.iter().enumerate() {
        if let Err(error) = apply_entry(engine, oplog, e, options) {
            return Err(ApplyFailure { applied: i, error });
        }
    }
    Ok(entries.len())
}

/// Applies one entry atomically (one engine write; nested applyOps included).
pub fn apply_entry(engine: &Engine, oplog: &Oplog, entry: &Document, options: &ApplyOptions) -> CommandResult<()> {
    engine.write(|txn| {
        if options.mode == ApplyMode::Secondary {
            txn.unobserved();
        }
        apply_in(txn, entry, options, 0)?;
        if options.mode == ApplyMode::Secondary && oplog.is_enabled() {
            // An entry at or before the newest recorded one is being re-applied: it is already in the oplog.
            let newer = match entry.get_timestamp("ts") {
                Ok(ts) => {
                    let last = oplog.last_timestamp();
                    (ts.time, ts.increment) > (last.time, last.increment)
                }
                Err(_) => true,
            };
            if newer {
                oplog.append_verbatim(txn, entry)?;
            }
        }
        Ok(())
    })
}

/// Deepest nesting of applyOps accepted.
const MAX_NESTING: usize = 10;

fn get_str<'a>(entry: &'a Document, field: &str) -> CommandResult<&'a str> {
    match entry.get(field) {
        Some(Bson::String(s)) => Ok(s),
        Some(_) => Err(CommandError::type_mismatch(format!(
            "BSON field 'applyOps.{field}' is the wrong type, expected type 'string'"
        ))),
        None => Err(CommandError::missing_field(format!(
            "BSON field 'applyOps.{field}' is missing but a required field"
        ))),
    }
}

fn get_doc<'a>(entry: &'a Document, field: &str) -> CommandResult<&'a Document> {
    match entry.get(field) {
        Some(Bson::Document(d)) => Ok(d),
        Some(_) => Err(CommandError::type_mismatch(format!(
            "BSON field 'applyOps.{field}' is the wrong type, expected type 'object'"
        ))),
        None => Err(CommandError::no_such_key(format!(
            "Missing expected field '{field}' in oplog entry {entry}"
        ))),
    }
}

/// Applies one entry (and nested ones) inside an open write.
fn apply_in(txn: &mut WriteTxn<'_>, entry: &Document, options: &ApplyOptions, depth: usize) -> CommandResult<()> {
    let op = get_str(entry, "op")?;
    let ns = get_str(entry, "ns")?;
    match op {
        "n" => Ok(()),
        "i" | "u" | "d" => {
            let ns = crud_namespace(txn.catalog(), ns, entry)?;
            match op {
                "i" => apply_insert(txn, &ns, entry, options),
                "u" => apply_update(txn, &ns, entry, options),
                _ => apply_delete(txn, &ns, entry),
            }
        }
        "c" => apply_command(txn, ns, entry, options, depth),
        other => Err(CommandError::bad_value(format!(
            "Enumeration value '{other}' for field 'op' is not a valid value."
        ))),
    }
}

/// The namespace a CRUD entry targets: the collection with the entry's `ui` if one exists, else `ns`, which
/// must name an existing collection.
fn crud_namespace(cat: &Catalog, ns: &str, entry: &Document) -> CommandResult<Namespace> {
    if let Some(Bson::Binary(b)) = entry.get("ui")
        && let Ok(uuid) = <[u8; 16]>::try_from(b.bytes.as_slice())
        && let Some(found) = find_by_uuid(cat, &uuid)
    {
        return Ok(found);
    }
    let parsed = Namespace::parse(ns)?;
    match cat.collection(&parsed) {
        Some(c) if c.is_view() => Err(CommandError::command_not_supported_on_view(format!(
            "Namespace {parsed} is a view, not a collection"
        ))),
        Some(_) => Ok(parsed),
        None => Err(CommandError::namespace_not_found(format!(
            "Failed to apply operation due to missing collection ({parsed}): {entry}"
        ))),
    }
}

fn find_by_uuid(cat: &Catalog, uuid: &[u8; 16]) -> Option<Namespace> {
    for db in cat.database_names() {
        if let Some(d) = cat.database(&db) {
            for (name, c) in &d.collections {
                if &c.uuid == uuid {
                    return Some(Namespace {
                        db: db.clone(),
                        coll: name.clone(),
                    });
                }
            }
        }
    }
    None
}

fn encode(d: &Document, ns: &Namespace) -> CommandResult<RawDocumentBuf> {
    let raw = RawDocumentBuf::from_document(d)
        .map_err(|e| CommandError::bad_value(format!("cannot encode document for {ns}: {e}")))?;
    crate::commands::check_size(&raw)?;
    Ok(raw)
}

/// Checks a new document version against the collection's validator (MongoDB's strict/moderate levels and
/// error/warn actions).
fn validate(coll: &Collection, ns: &Namespace, new: &Document, old: Option<&Document>) -> CommandResult<()> {
    let Ok(v) = coll.options.get_document("validator") else {
        return Ok(());
    };
    let level = coll.options.get_str("validationLevel").unwrap_or("strict");
    if v.is_empty() || level == "off" {
        return Ok(());
    }
    let filter = Filter::parse(v).map_err(CommandError::from)?;
    if filter.matches(new) || (level == "moderate" && old.is_some_and(|o| !filter.matches(o))) {
        return Ok(());
    }
    if coll.options.get_str("validationAction") == Ok("warn") {
        tracing::warn!(namespace = %ns, "Document would fail validation");
        return Ok(());
    }
    let id = new.get("_id").cloned().unwrap_or(Bson::Null);
    Err(CommandError::document_validation_failure("Document failed validation")
        .with_extra(doc! { "errInfo": { "failingDocumentId": id } }))
}

fn must_validate(options: &ApplyOptions) -> bool {
    options.mode == ApplyMode::Primary && !options.bypass_document_validation
}

fn apply_insert(txn: &mut WriteTxn<'_>, ns: &Namespace, entry: &Document, options: &ApplyOptions) -> CommandResult<()> {
    let o = get_doc(entry, "o")?;
    let Some(id) = o.get("_id") else {
        return Err(CommandError::bad_value(format!(
            "insert oplog entry for {ns} has no _id: {entry}"
        )));
    };
    if must_validate(options)
        && let Some(coll) = txn.catalog().collection(ns)
    {
        let old = coll.find_id(id).and_then(|(_, raw)| raw.to_document().ok());
        validate(coll, ns, o, old.as_ref())?;
    }
    // Oplog application inserts as an upsert: an existing `_id` is replaced.
    txn.apply(Mutation::Upsert {
        ns: ns.clone(),
        doc: encode(o, ns)?,
    })
}

fn apply_update(txn: &mut WriteTxn<'_>, ns: &Namespace, entry: &Document, options: &ApplyOptions) -> CommandResult<()> {
    let o = get_doc(entry, "o")?;
    let o2 = get_doc(entry, "o2")?;
    let Some(id) = o2.get("_id") else {
        return Err(CommandError::no_such_key(format!(
            "Missing _id in 'o2' of update oplog entry for {ns}: {entry}"
        )));
    };
    let Some(coll) = txn.catalog().collection(ns) else {
        return Err(CommandError::namespace_not_found(format!("ns not found: {ns}")));
    };
    let Some((_, raw)) = coll.find_id(id) else {
        // Since MongoDB 8.1, applying an update whose document is missing does nothing.
        return Ok(());
    };
    let old = raw
        .to_document()
        .map_err(|e| CommandError::internal(format!("stored document in {ns} is invalid: {e}")))?;
    let mut new = old.clone();
    let first_key = o.keys().next().map(String::as_str);
    match (o.get("$v"), o.get_document("diff")) {
        (Some(v), Ok(diff)) if crate::commands::raw::as_i64(v) == Some(2) => {
            tidemark_query::apply_oplog_diff(&mut new, diff).map_err(CommandError::from)?;
        }
        _ if first_key.is_some_and(|k| k.starts_with('$')) => {
            let mut modifiers = o.clone();
            // Pre-5.0 entries may carry `$v: 1` next to the modifiers.
            modifiers.remove("$v");
            let update = Update::parse(&modifiers).map_err(CommandError::from)?;
            update.apply(&mut new, false).map_err(CommandError::from)?;
        }
        _ => {
            let mut replacement = doc! { "_id": id.clone() };
            for (k, v) in o {
                if k != "_id" {
                    replacement.insert(k.clone(), v.clone());
                }
            }
            new = replacement;
        }
    }
    if must_validate(options) {
        validate(coll, ns, &new, Some(&old))?;
    }
    let raw = encode(&new, ns)?;
    txn.apply(Mutation::Upsert {
        ns: ns.clone(),
        doc: raw,
    })
}

fn apply_delete(txn: &mut WriteTxn<'_>, ns: &Namespace, entry: &Document) -> CommandResult<()> {
    let o = get_doc(entry, "o")?;
    let Some(id) = o.get("_id") else {
        return Err(CommandError::no_such_key(format!(
            "Missing _id in delete oplog entry for {ns}: {entry}"
        )));
    };
    txn.apply(Mutation::Delete {
        ns: ns.clone(),
        id: id.clone(),
    })
}

/// Whether an error only says the command's effect is already there (ignored by secondaries).
fn already_applied(e: &CommandError) -> bool {
    matches!(e.code, 26 | 27 | 48 | 85 | 86)
}

/// The errors mongod accepts from a command entry in every application mode, `applyOps` included, so
/// that replaying an entry whose effect is already there succeeds (the `acceptableErrors` of
/// `kOpsMap` in mongod's `repl/oplog.cpp`): a `create` of a collection a fuzzy dump already restored,
/// a `drop` of one it never saw. 26 NamespaceNotFound, 27 IndexNotFound, 48 NamespaceExists,
/// 68 IndexAlreadyExists.
fn acceptable_error(command: &str, code: i32) -> bool {
    match command {
        "create" => code == 48,
        "createIndexes" | "commitIndexBuild" | "startIndexBuild" => matches!(code, 68 | 26),
        "abortIndexBuild" | "drop" | "dropDatabase" | "convertToCapped" | "emptycapped" => code == 26,
        "collMod" | "dropIndexes" | "deleteIndexes" | "dropIndex" | "deleteIndex" => matches!(code, 26 | 27),
        "renameCollection" => matches!(code, 26 | 48),
        _ => false,
    }
}

fn apply_command(
    txn: &mut WriteTxn<'_>,
    ns: &str,
    entry: &Document,
    options: &ApplyOptions,
    depth: usize,
) -> CommandResult<()> {
    let Some(db) = ns.strip_suffix(".$cmd") else {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid namespace '{ns}' for a command oplog entry: it must be '<db>.$cmd'"
        )));
    };
    validate_db_name(db)?;
    let o = get_doc(entry, "o")?;
    let Some((name, first)) = o.iter().next() else {
        return Err(CommandError::bad_value(format!(
            "Empty command object in oplog entry: {entry}"
        )));
    };
    // A closure, so that the early returns of the arms still go through the acceptable errors below.
    let mut apply = || -> CommandResult<()> {
        match name.as_str() {
            "create" => cmd_create(txn, db, first, o, entry),
            "drop" => {
                let ns = coll_ns(db, first, name)?;
                match txn.catalog().collection(&ns) {
                    Some(_) => txn.apply(Mutation::DropCollection { ns }),
                    None => Ok(()),
                }
            }
            "dropDatabase" => {
                if txn.catalog().database(db).is_some() {
                    txn.apply(Mutation::DropDatabase { db: db.to_string() })
                } else {
                    Ok(())
                }
            }
            "createIndexes" => {
                let ns = coll_ns(db, first, name)?;
                let mut spec = Document::new();
                for (k, v) in o.iter().skip(1) {
                    if k != "ns" {
                        spec.insert(k.clone(), v.clone());
                    }
                }
                create_index(txn, &ns, spec)
            }
            "commitIndexBuild" | "startIndexBuild" | "abortIndexBuild" if options.mode == ApplyMode::Primary => {
                Err(CommandError::new(
                    115,
                    "CommandNotSupported",
                    format!("Applying '{name}' through applyOps is not supported"),
                ))
            }
            "commitIndexBuild" => {
                let ns = coll_ns(db, first, name)?;
                for spec in o.get_array("indexes").map(Vec::as_slice).unwrap_or_default() {
                    if let Bson::Document(spec) = spec {
                        create_index(txn, &ns, spec.clone())?;
                    }
                }
                Ok(())
            }
            "startIndexBuild" | "abortIndexBuild" => Ok(()),
            "dropIndexes" | "deleteIndexes" | "dropIndex" | "deleteIndex" => {
                let ns = coll_ns(db, first, name)?;
                drop_indexes(txn, &ns, o.get("index"))
            }
            "collMod" => {
                let ns = coll_ns(db, first, name)?;
                coll_mod(txn, &ns, o)
            }
            "renameCollection" => {
                let Bson::String(from) = first else {
                    return Err(CommandError::type_mismatch(
                        "'renameCollection' must be a string namespace",
                    ));
                };
                let from = Namespace::parse(from)?;
                let to = match o.get("to") {
                    Some(Bson::String(s)) => Namespace::parse(s)?,
                    _ => {
                        return Err(CommandError::type_mismatch(
                            "renameCollection oplog entry needs a string 'to'",
                        ));
                    }
                };
                if txn.catalog().collection(&from).is_none() {
                    return Err(CommandError::namespace_not_found(format!(
                        "Source collection {from} does not exist"
                    )));
                }
                let drop_target = match o.get("dropTarget") {
                    None | Some(Bson::Null) | Some(Bson::Boolean(false)) => false,
                    Some(_) => true,
                };
                if txn.catalog().collection(&to).is_some() {
                    if !drop_target {
                        return Err(CommandError::namespace_exists(format!("target namespace exists: {to}")));
                    }
                    txn.apply(Mutation::DropCollection { ns: to.clone() })?;
                }
                txn.apply(Mutation::RenameCollection { from, to })
            }
            "applyOps" => {
                if depth >= MAX_NESTING {
                    return Err(CommandError::bad_value("applyOps nested too deeply"));
                }
                let Bson::Array(ops) = first else {
                    return Err(CommandError::type_mismatch(
                        "'applyOps' must be an array of oplog entries",
                    ));
                };
                for op in ops {
                    let Bson::Document(op) = op else {
                        return Err(CommandError::type_mismatch("'applyOps' entries must be objects"));
                    };
                    apply_in(txn, op, options, depth + 1)?;
                }
                Ok(())
            }
            other => Err(CommandError::bad_value(format!(
                "Unknown oplog command '{other}' in entry {entry}"
            ))),
        }
    };
    match apply() {
        Err(e) if acceptable_error(name, e.code) => Ok(()),
        Err(e) if options.mode == ApplyMode::Secondary && already_applied(&e) => Ok(()),
        r => r,
    }
}

fn coll_ns(db: &str, v: &Bson, cmd: &str) -> CommandResult<Namespace> {
    match v {
        Bson::String(c) => Namespace::new(db, c),
        _ => Err(CommandError::type_mismatch(format!(
            "'{cmd}' in a command oplog entry must be a collection name"
        ))),
    }
}

fn cmd_create(txn: &mut WriteTxn<'_>, db: &str, first: &Bson, o: &Document, entry: &Document) -> CommandResult<()> {
    let ns = coll_ns(db, first, "create")?;
    let mut options = Document::new();
    for (k, v) in o.iter().skip(1) {
        if !matches!(k.as_str(), "idIndex" | "recordIdsReplicated") {
            options.insert(k.clone(), v.clone());
        }
    }
    if let Some(Bson::Document(id_index)) = o.get("idIndex") {
        // Only non-default `_id` index options (a collation) are kept with the collection.
        if id_index.contains_key("collation") {
            options.insert("idIndex", id_index.clone());
        }
    }
    if options.contains_key("validator") {
        if !options.contains_key("validationLevel") {
            options.insert("validationLevel", "strict");
        }
        if !options.contains_key("validationAction") {
            options.insert("validationAction", "error");
        }
    }
    let uuid = match entry.get("ui") {
        Some(Bson::Binary(b)) => <[u8; 16]>::try_from(b.bytes.as_slice()).map_err(|_| {
            CommandError::bad_value(format!("'ui' of a create oplog entry must be a 16-byte UUID: {entry}"))
        })?,
        Some(_) => return Err(CommandError::type_mismatch("'ui' must be a UUID")),
        None => new_uuid(),
    };
    if let Some(existing) = txn.catalog().collection(&ns) {
        if existing.options == options {
            return Ok(());
        }
        return Err(CommandError::namespace_exists(format!(
            "Collection {ns} already exists."
        )));
    }
    txn.apply(Mutation::CreateCollection { ns, uuid, options })
}

fn create_index(txn: &mut WriteTxn<'_>, ns: &Namespace, spec: Document) -> CommandResult<()> {
    let Some(coll) = txn.catalog().collection(ns) else {
        return Err(CommandError::namespace_not_found(format!(
            "Failed to create index on missing collection {ns}"
        )));
    };
    let name = spec
        .get_str("name")
        .map_err(|_| CommandError::failed_to_parse(format!("index spec for {ns} requires a 'name' string")))?;
    if let Some(existing) = coll.indexes().iter().find(|i| i.name == name) {
        if same_key(
            &existing.key_pattern(),
            spec.get_document("key").unwrap_or(&Document::new()),
        ) {
            // The same index again (a re-applied entry, or a restore replacing the spec): keep the new options.
            if existing.spec != spec {
                let name = name.to_string();
                txn.apply(Mutation::DropIndex { ns: ns.clone(), name })?;
                return txn.apply(Mutation::CreateIndex { ns: ns.clone(), spec });
            }
            return Ok(());
        }
        return Err(CommandError::index_key_specs_conflict(format!(
            "An existing index has the same name as the requested index but a different key: {name}"
        )));
    }
    txn.apply(Mutation::CreateIndex { ns: ns.clone(), spec })
}

/// Whether two key patterns are the same index key (`{f: 1}` and `{f: 1.0}` are, as in mongod).
fn same_key(a: &Document, b: &Document) -> bool {
    tidemark_query::compare_documents(a, b) == std::cmp::Ordering::Equal
}

fn drop_indexes(txn: &mut WriteTxn<'_>, ns: &Namespace, index: Option<&Bson>) -> CommandResult<()> {
    let Some(coll) = txn.catalog().collection(ns) else {
        return Err(CommandError::namespace_not_found(format!("ns not found: {ns}")));
    };
    let names: Vec<String> = match index {
        Some(Bson::String(s)) if s == "*" => coll
            .indexes()
            .iter()
            .map(|i| i.name.clone())
            .filter(|n| n != "_id_")
            .collect(),
        Some(Bson::String(s)) => {
            if !coll.indexes().iter().any(|i| &i.name == s) {
                return Err(CommandError::index_not_found(format!(
                    "index not found with name [{s}]"
                )));
            }
            vec![s.clone()]
        }
        Some(Bson::Document(key)) => {
            let found: Vec<String> = coll
                .indexes()
                .iter()
                .filter(|i| same_key(&i.key_pattern(), key))
                .map(|i| i.name.clone())
                .collect();
            if found.len() != 1 {
                return Err(CommandError::index_not_found(format!(
                    "can't find exactly one index with key {key}"
                )));
            }
            found
        }
        _ => {
            return Err(CommandError::type_mismatch(
                "'index' must be a name, \"*\" or a key pattern",
            ));
        }
    };
    for name in names {
        if name == "_id_" {
            return Err(CommandError::invalid_options("cannot drop _id index"));
        }
        txn.apply(Mutation::DropIndex { ns: ns.clone(), name })?;
    }
    Ok(())
}

fn coll_mod(txn: &mut WriteTxn<'_>, ns: &Namespace, o: &Document) -> CommandResult<()> {
    let Some(coll) = txn.catalog().collection(ns) else {
        return Err(CommandError::namespace_not_found(format!("ns does not exist: {ns}")));
    };
    let mut options = coll.options.clone();
    let mut index_change = None;
    for (k, v) in o.iter().skip(1) {
        match k.as_str() {
            // Storage-engine leftovers that modern servers ignore.
            "noPadding" | "usePowerOf2Sizes" => {}
            "index" => {
                let Bson::Document(change) = v else {
                    return Err(CommandError::type_mismatch("'index' must be an object"));
                };
                index_change = Some(index_spec_change(coll, ns, change)?);
            }
            _ => {
                options.insert(k.clone(), v.clone());
            }
        }
    }
    if options != coll.options {
        txn.apply(Mutation::SetOptions {
            ns: ns.clone(),
            options,
        })?;
    }
    if let Some(spec) = index_change {
        txn.apply(Mutation::SetIndexSpec { ns: ns.clone(), spec })?;
    }
    Ok(())
}

/// The new spec of the index a collMod `index` change selects (by `name` or `keyPattern`).
fn index_spec_change(coll: &Collection, ns: &Namespace, change: &Document) -> CommandResult<Document> {
    let idx = match (change.get_str("name"), change.get_document("keyPattern")) {
        (Ok(name), _) => coll.indexes().iter().find(|i| i.name == name),
        (_, Ok(key)) => coll.indexes().iter().find(|i| same_key(&i.key_pattern(), key)),
        _ => {
            return Err(CommandError::invalid_options(
                "must specify either index name or key pattern for collMod",
            ));
        }
    };
    let idx = idx.ok_or_else(|| CommandError::index_not_found(format!("cannot find index {change} for ns {ns}")))?;
    let mut spec = idx.spec.clone();
    for (k, v) in change {
        match k.as_str() {
            "name" | "keyPattern" => {}
            "hidden" | "prepareUnique" => {
                if v == &Bson::Boolean(false) {
                    spec.remove(k);
                } else {
                    spec.insert(k.clone(), v.clone());
                }
            }
            "unique" => {
                spec.insert("unique", v.clone());
            }
            "forceNonUnique" => {
                spec.remove("unique");
            }
            "expireAfterSeconds" => {
                spec.insert(k.clone(), v.clone());
            }
            other => {
                return Err(CommandError::invalid_options(format!(
                    "unknown index option '{other}' in collMod"
                )));
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicI64;

    use bson::{Timestamp, doc};

    use super::*;
    use crate::repl::oplog::oplog_ns;

    fn setup() -> (Arc<Engine>, Arc<Oplog>) {
        let engine = Arc::new(Engine::new());
        let oplog = Arc::new(Oplog::new(1 << 20, Arc::new(AtomicI64::new(1))));
        engine.set_observer(Some(oplog.clone() as Arc<dyn crate::engine::WriteObserver>));
        oplog.enable(&engine).unwrap();
        (engine, oplog)
    }

    fn oplog_entries(engine: &Engine) -> Vec<Document> {
        engine.read(|cat| {
            cat.collection(&oplog_ns())
                .unwrap()
                .iter()
                .map(|(_, d)| d.to_document().unwrap())
                .collect()
        })
    }

    fn primary_entry(i: u32, op: &str, ns: &str, o: Document, o2: Option<Document>) -> Document {
        let mut e = doc! { "op": op, "ns": ns, "o": o };
        if let Some(o2) = o2 {
            e.insert("o2", o2);
        }
        e.insert(
            "ts",
            Timestamp {
                time: 2_000_000_000,
                increment: i,
            },
        );
        e.insert("t", 3_i64);
        e.insert("v", 2_i64);
        e
    }

    #[test]
    fn secondary_records_entries_verbatim_once_and_reapplies_harmlessly() {
        let (engine, oplog) = setup();
        let entries = vec![
            primary_entry(1, "c", "s.$cmd", doc! { "create": "c" }, None),
            primary_entry(2, "i", "s.c", doc! { "_id": 1, "a": 1 }, Some(doc! { "_id": 1 })),
            primary_entry(
                3,
                "u",
                "s.c",
                doc! { "$v": 2, "diff": { "u": { "a": 2 } } },
                Some(doc! { "_id": 1 }),
            ),
            primary_entry(
                4,
                "c",
                "s.$cmd",
                doc! { "createIndexes": "c", "v": 2, "key": { "a": 1 }, "name": "a_1" },
                None,
            ),
            primary_entry(5, "d", "s.c", doc! { "_id": 1 }, None),
            primary_entry(6, "n", "", doc! { "msg": "periodic noop" }, None),
        ];
        let options = ApplyOptions {
            mode: ApplyMode::Secondary,
            bypass_document_validation: false,
        };
        for _ in 0..2 {
            assert_eq!(apply_entries(&engine, &oplog, &entries, &options), Ok(6));
        }
        // The local oplog holds exactly the primary's entries (after the initiation of this test's oplog).
        let logged = oplog_entries(&engine);
        assert_eq!(
            logged, entries,
            "secondary oplog must equal the primary's entries, each once"
        );
        assert_eq!(
            oplog.last_timestamp(),
            Timestamp {
                time: 2_000_000_000,
                increment: 6
            }
        );
        let ns = Namespace::new("s", "c").unwrap();
        engine.read(|cat| {
            let c = cat.collection(&ns).unwrap();
            assert!(c.is_empty());
            assert_eq!(c.indexes().len(), 2);
        });
    }

    #[test]
    fn primary_application_is_logged_as_new_entries() {
        let (engine, oplog) = setup();
        let entries = vec![
            doc! { "op": "c", "ns": "p.$cmd", "o": { "create": "c" } },
            doc! { "op": "i", "ns": "p.c", "o": { "_id": 1, "a": 1 } },
            doc! { "op": "i", "ns": "p.c", "o": { "_id": 1, "a": 7 } },
        ];
        assert_eq!(
            apply_entries(&engine, &oplog, &entries, &ApplyOptions::default()),
            Ok(3)
        );
        let logged: Vec<(String, Document)> = oplog_entries(&engine)
            .into_iter()
            .map(|e| {
                (
                    e.get_str("op").unwrap().to_string(),
                    e.get_document("o").unwrap().clone(),
                )
            })
            .collect();
        // An insert of an existing _id is applied as a replacement, and logged as the update it was.
        assert_eq!(
            logged,
            vec![
                (
                    "c".to_string(),
                    doc! { "create": "c", "idIndex": { "v": 2, "key": { "_id": 1 }, "name": "_id_" } }
                ),
                ("i".to_string(), doc! { "_id": 1, "a": 1 }),
                ("u".to_string(), doc! { "$v": 2, "diff": { "u": { "a": 7 } } }),
            ]
        );
    }
}
