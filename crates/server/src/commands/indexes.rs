//! Index commands: `createIndexes`, `listIndexes`, `dropIndexes`.
//!
//! Specs are stored as `{v, key, name, ...options}` with the client's key order and option value types kept,
//! and listed with `_id_` first. Unique indexes are enforced (building one over duplicate data fails with
//! 11000); every other index kind (text, 2dsphere, hashed, TTL, wildcard...) is kept as metadata so that it
//! survives a dump and restore exactly. Text and `2dsphere` specs are first put in the form mongod stores and
//! lists (text fields folded into `_fts`/`_ftsx` with `weights` and the text options; `2dsphereIndexVersion`),
//! so that `listIndexes`, dumps and oplog entries carry what a real server would report.

use bson::{Bson, Document, RawDocumentBuf, doc};

use super::admin::{ensure_collection, request_ns, view_error, write_concern_j};
use super::{AuthRequirement, Ctx, Registry, Reply, Request, ok_with};
use crate::cursor::{Cursor, CursorSource};
use crate::engine::{Collection, Mutation};
use crate::error::{CommandError, CommandResult};

/// Registers this group's commands.
pub fn register(r: &mut Registry) {
    use AuthRequirement::Check;
    r.register("createIndexes", create_indexes, Check);
    r.register("listIndexes", list_indexes, Check);
    r.register("dropIndexes", drop_indexes, Check);
    r.alias("deleteIndexes", "dropIndexes");
}

/// Validates a client index spec and puts it in stored form `{v, key, name, ...}`.
pub fn normalize_spec(spec: &Document) -> CommandResult<Document> {
    let key = match spec.get("key") {
        Some(Bson::Document(k)) => k.clone(),
        Some(_) => return Err(CommandError::type_mismatch("The field 'key' must be an object")),
        None => {
            return Err(CommandError::failed_to_parse(
                "The 'key' field is a required property of an index specification",
            ));
        }
    };
    if key.is_empty() {
        return Err(CommandError::cannot_create_index("Index keys cannot be empty."));
    }
    for (field, v) in &key {
        let valid = match v {
            Bson::Int32(i) => *i != 0,
            Bson::Int64(i) => *i != 0,
            Bson::Double(f) => *f != 0.0 && f.is_finite(),
            Bson::Decimal128(_) => true,
            Bson::String(s) => matches!(
                s.as_str(),
                "text" | "2d" | "2dsphere" | "hashed" | "geoHaystack" | "columnstore"
            ),
            _ => false,
        };
        if !valid || field.is_empty() {
            return Err(CommandError::cannot_create_index(format!(
                "Values in the index key pattern can only be numbers or strings, and numbers must be non-zero; \
                 invalid key pattern field '{field}': {v}"
            )));
        }
    }
    let name = match spec.get("name") {
        Some(Bson::String(n)) if !n.is_empty() => n.clone(),
        Some(Bson::String(_)) => return Err(CommandError::cannot_create_index("index name cannot be empty")),
        Some(_) => return Err(CommandError::type_mismatch("The field 'name' must be a string")),
        None => {
            return Err(CommandError::failed_to_parse(
                "The 'name' field is a required property of an index specification",
            ));
        }
    };
    if name == "*" {
        return Err(CommandError::bad_value("The index name '*' is not valid"));
    }
    let mut out = doc! { "v": spec.get("v").cloned().unwrap_or(Bson::Int32(2)), "key": key, "name": name };
    for (k, v) in spec {
        if !matches!(k.as_str(), "v" | "key" | "name" | "ns") {
            out.insert(k.clone(), v.clone());
        }
    }
    if is_simple_collation(out.get("collation")) {
        // The simple collation is the default; mongod does not store it in the index spec.
        out.remove("collation");
    }
    if let Some(u) = out.get("unique")
        && !matches!(u, Bson::Boolean(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))
    {
        return Err(CommandError::type_mismatch("The field 'unique' must be a boolean"));
    }
    let out = expand_text_spec(out)?;
    Ok(expand_2dsphere_spec(out))
}

/// Puts a text index spec in the form mongod stores and lists: the text fields of the key pattern become
/// `_fts: "text", _ftsx: 1` (at the place of the first one), and `weights` (every text field, weight 1 unless
/// given, sorted by field name), `default_language` ("english"), `language_override` ("language") and
/// `textIndexVersion` (3) are appended after the other options. A spec already in that form (as found in a
/// dump's metadata or an oplog entry) only gets the options it lacks.
fn expand_text_spec(spec: Document) -> CommandResult<Document> {
    const TRAILING: [&str; 4] = ["weights", "default_language", "language_override", "textIndexVersion"];
    let Ok(key) = spec.get_document("key") else {
        return Ok(spec);
    };
    let is_text = |v: &Bson| matches!(v, Bson::String(s) if s == "text");
    let already = key.contains_key("_fts");
    if !already && !key.values().any(is_text) {
        return Ok(spec);
    }
    let mut weights = std::collections::BTreeMap::new();
    match spec.get("weights") {
        None => {}
        Some(Bson::Document(given)) => {
            for (field, w) in given {
                let w = match w {
                    Bson::Int32(i) => Bson::Int32(*i),
                    Bson::Int64(i) => i32::try_from(*i).map_or(Bson::Int64(*i), Bson::Int32),
                    Bson::Double(f) => Bson::Double(*f),
                    _ => {
                        return Err(CommandError::cannot_create_index(format!(
                            "weight for text index needs numeric type: field '{field}' has {w}"
                        )));
                    }
                };
                weights.insert(field.clone(), w);
            }
        }
        Some(other) => {
            return Err(CommandError::type_mismatch(format!(
                "text index option 'weights' must be an object, not {other}"
            )));
        }
    }
    let mut new_key = Document::new();
    for (field, v) in key {
        if is_text(v) && !already {
            weights.entry(field.clone()).or_insert(Bson::Int32(1));
            if !new_key.contains_key("_fts") {
                new_key.insert("_fts", "text");
                new_key.insert("_ftsx", 1_i32);
            }
        } else {
            new_key.insert(field.clone(), v.clone());
        }
    }
    let mut out = Document::new();
    for (k, v) in &spec {
        if k == "key" {
            out.insert("key", new_key.clone());
        } else if !TRAILING.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    // A stored-form spec without weights keeps none: its text fields are no longer known.
    if !already || spec.contains_key("weights") {
        out.insert("weights", weights.into_iter().collect::<Document>());
    }
    out.insert(
        "default_language",
        spec.get("default_language")
            .cloned()
            .unwrap_or_else(|| Bson::from("english")),
    );
    out.insert(
        "language_override",
        spec.get("language_override")
            .cloned()
            .unwrap_or_else(|| Bson::from("language")),
    );
    out.insert(
        "textIndexVersion",
        spec.get("textIndexVersion").cloned().unwrap_or(Bson::Int32(3)),
    );
    Ok(out)
}

/// mongod records the version of a new `2dsphere` index in the spec it stores and lists
/// (`2dsphereIndexVersion: 3`) unless the client gave one.
fn expand_2dsphere_spec(mut spec: Document) -> Document {
    let has_2dsphere = spec
        .get_document("key")
        .is_ok_and(|k| k.values().any(|v| matches!(v, Bson::String(s) if s == "2dsphere")));
    if has_2dsphere && !spec.contains_key("2dsphereIndexVersion") {
        spec.insert("2dsphereIndexVersion", 3_i32);
    }
    spec
}

/// Whether a collation value is `{locale: "simple"}` (the binary comparison mongod uses by default).
pub fn is_simple_collation(v: Option<&Bson>) -> bool {
    matches!(v, Some(Bson::Document(c)) if c.get_str("locale") == Ok("simple"))
}

/// Options that make two specs with the same key pattern the same index.
fn same_options(a: &Document, b: &Document) -> bool {
    let strip = |d: &Document| {
        let mut d = d.clone();
        d.remove("v");
        d.remove("name");
        d
    };
    strip(a) == strip(b)
}

fn create_indexes(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let specs = match req.body.get("indexes") {
        Some(Bson::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|s| match s {
                Bson::Document(d) => normalize_spec(d),
                _ => Err(CommandError::type_mismatch("The 'indexes' array must contain objects")),
            })
            .collect::<CommandResult<Vec<_>>>()?,
        Some(Bson::Array(_)) => return Err(CommandError::bad_value("Must specify at least one index to create")),
        Some(_) => {
            return Err(CommandError::type_mismatch(
                "BSON field 'createIndexes.indexes' must be an array",
            ));
        }
        None => {
            return Err(CommandError::missing_field(
                "BSON field 'createIndexes.indexes' is missing but a required field",
            ));
        }
    };
    let j = write_concern_j(&req.body);
    let reply = ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        // Indexes of a time series collection live on its buckets, with translated keys.
        let (ns, specs) = match crate::timeseries::options_of(txn.catalog(), &ns)? {
            Some(opts) => (
                crate::timeseries::buckets_ns(&ns)?,
                specs
                    .iter()
                    .map(|s| crate::timeseries::buckets_index_spec(&opts, s))
                    .collect::<CommandResult<Vec<_>>>()?,
            ),
            None => (ns.clone(), specs),
        };
        let created_automatically = txn.catalog().collection(&ns).is_none();
        ensure_collection(txn, &ns)?;
        let before = txn.catalog().collection(&ns).map_or(0, |c| c.indexes().len());
        let mut created = 0;
        for spec in specs {
            let coll = txn
                .catalog()
                .collection(&ns)
                .ok_or_else(|| CommandError::internal("collection vanished"))?;
            if coll.is_virtual() {
                return Err(view_error(&ns));
            }
            let name = spec.get_str("name").unwrap_or_default();
            let key = spec.get_document("key").cloned().unwrap_or_default();
            if let Some(existing) = coll.indexes().iter().find(|i| i.name == name) {
                if existing.key_pattern() == key && (name == "_id_" || same_options(&existing.spec, &spec)) {
                    continue;
                }
                if existing.key_pattern() == key {
                    return Err(CommandError::index_options_conflict(format!(
                        "An existing index has the same name as the requested index. When index names are not \
                         specified, they are auto generated and can cause conflicts. Please refer to our \
                         documentation. Requested index: {spec}, existing index: {}",
                        existing.spec
                    )));
                }
                return Err(CommandError::index_key_specs_conflict(format!(
                    "An existing index has the same name as the requested index. When index names are not \
                     specified, they are auto generated and can cause conflicts. Please refer to our \
                     documentation. Requested index: {spec}, existing index: {}",
                    existing.spec
                )));
            }
            if let Some(existing) = coll
                .indexes()
                .iter()
                .find(|i| i.key_pattern() == key && same_options(&i.spec, &spec))
            {
                return Err(CommandError::index_options_conflict(format!(
                    "Index already exists with a different name: {}",
                    existing.name
                )));
            }
            txn.apply(Mutation::CreateIndex { ns: ns.clone(), spec })?;
            created += 1;
        }
        let after = txn.catalog().collection(&ns).map_or(0, Collection::indexes_len);
        let mut reply = doc! {
            "numIndexesBefore": i32::try_from(before).unwrap_or(i32::MAX),
            "numIndexesAfter": i32::try_from(after).unwrap_or(i32::MAX),
            "createdCollectionAutomatically": created_automatically,
        };
        if created == 0 {
            reply.insert("note", "all indexes already exist");
        }
        Ok(reply)
    })?;
    Ok(ok_with(reply))
}

fn list_indexes(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let batch_size = super::crud::batch_size_arg(&req.body, "cursor")?;
    let specs = ctx.server.engine.read(|cat| match cat.collection(&ns) {
        None => Err(CommandError::namespace_not_found(format!("ns does not exist: {ns}"))),
        Some(c) if c.is_view() => Err(CommandError::command_not_supported_on_view(format!(
            "Namespace {ns} is a view, not a collection"
        ))),
        Some(c) if c.is_timeseries() => {
            // The buckets' indexes as the user created them (the clustered `_id` is not listed).
            let buckets = crate::timeseries::buckets_ns(&ns)?;
            Ok(cat.collection(&buckets).map_or_else(Vec::new, |b| {
                b.index_specs()
                    .iter()
                    .filter(|s| s.get_str("name") != Ok("_id_"))
                    .map(crate::timeseries::user_index_spec)
                    .collect()
            }))
        }
        Some(c) => Ok(c.index_specs()),
    })?;
    let mut docs = std::collections::VecDeque::new();
    for s in specs {
        docs.push_back(
            RawDocumentBuf::from_document(&s).map_err(|e| CommandError::internal(format!("encode spec: {e}")))?,
        );
    }
    let cursor = Cursor {
        ns: format!("{}.$cmd.listIndexes.{}", ns.db, ns.coll),
        db: ns.db.clone(),
        collection: format!("$cmd.listIndexes.{}", ns.coll),
        source: CursorSource::Buffered(docs),
    };
    super::crud::first_batch(ctx, cursor, batch_size, false)
}

fn drop_indexes(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let target =
        req.body.get("index").cloned().ok_or_else(|| {
            CommandError::missing_field("BSON field 'dropIndexes.index' is missing but a required field")
        })?;
    let j = write_concern_j(&req.body);
    let (was, all) = ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        // A time series collection's indexes are those of its buckets; a key pattern names the user's key.
        let (ns, target) = match txn.catalog().collection(&ns) {
            Some(c) if c.is_timeseries() => {
                let buckets = crate::timeseries::buckets_ns(&ns)?;
                let target = match (&target, txn.catalog().collection(&buckets)) {
                    (Bson::Document(k), Some(b)) => b
                        .index_specs()
                        .iter()
                        .map(crate::timeseries::user_index_spec)
                        .find(|s| s.get_document("key").is_ok_and(|key| key == k))
                        .and_then(|s| s.get_str("name").ok().map(|n| Bson::String(n.to_string())))
                        .unwrap_or_else(|| target.clone()),
                    _ => target.clone(),
                };
                (buckets, target)
            }
            _ => (ns.clone(), target.clone()),
        };
        let coll = match txn.catalog().collection(&ns) {
            None => return Err(CommandError::namespace_not_found(format!("ns not found {ns}"))),
            Some(c) if c.is_virtual() => return Err(view_error(&ns)),
            Some(c) => c,
        };
        let was = coll.indexes().len();
        let mut names: Vec<String> = Vec::new();
        let mut all = false;
        match &target {
            Bson::String(s) if s == "*" => {
                all = true;
                names = coll.indexes().iter().skip(1).map(|i| i.name.clone()).collect();
            }
            Bson::String(s) => names.push(s.clone()),
            Bson::Array(a) => {
                for v in a {
                    match v {
                        Bson::String(s) if s != "*" => names.push(s.clone()),
                        _ => {
                            return Err(CommandError::type_mismatch(
                                "dropIndexes 'index' array must contain index names",
                            ));
                        }
                    }
                }
            }
            Bson::Document(k) => match coll.indexes().iter().find(|i| &i.key_pattern() == k) {
                Some(i) => names.push(i.name.clone()),
                None => {
                    return Err(CommandError::index_not_found(format!(
                        "can't find index with key: {}",
                        crate::engine::collection::shell_repr(&Bson::Document(k.clone()))
                    )));
                }
            },
            _ => {
                return Err(CommandError::type_mismatch(
                    "dropIndexes 'index' must be a string, object or array",
                ));
            }
        }
        for n in &names {
            if n == "_id_" {
                return Err(CommandError::invalid_options("cannot drop _id index"));
            }
            if !coll.indexes().iter().any(|i| &i.name == n) {
                return Err(CommandError::index_not_found(format!(
                    "index not found with name [{n}]"
                )));
            }
        }
        for n in names {
            txn.apply(Mutation::DropIndex {
                ns: ns.clone(),
                name: n,
            })?;
        }
        Ok((was, all))
    })?;
    let mut reply = doc! { "nIndexesWas": i32::try_from(was).unwrap_or(i32::MAX) };
    if all {
        reply.insert("msg", "non-_id indexes dropped for collection");
    }
    Ok(ok_with(reply))
}
