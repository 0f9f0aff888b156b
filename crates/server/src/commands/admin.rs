//! Database and collection administration: `create`, `drop`, `dropDatabase`, `renameCollection`, `collMod`,
//! `listCollections`, `listDatabases`, `dbStats`, `collStats`.
//!
//! Catalog changes go through the engine's write choke point as [`Mutation`]s. Options given to `create`
//! are stored as given (except mongod's normalisations: a capped `size` rounded up to a multiple of 256,
//! default `validationLevel`/`validationAction` added next to a `validator`), and `listCollections` renders
//! entries exactly in mongod's shape: `{name, type, options, info: {readOnly, uuid}, idIndex}`.

use bson::{Binary, Bson, Document, RawDocumentBuf, doc, spec::BinarySubtype};
use tidemark_query::Filter;

use super::{AuthRequirement, Ctx, Registry, Reply, Request, get_bool, get_doc, ok, ok_with};
use crate::cursor::{Cursor, CursorSource};
use crate::engine::collection::{CollectionKind, id_index_spec};
use crate::engine::namespace::validate_db_name;
use crate::engine::{Catalog, Collection, Mutation, Namespace, WriteTxn, new_uuid};
use crate::error::{CommandError, CommandResult};
use crate::timeseries::TimeseriesOptions;

/// Registers this group's commands.
pub fn register(r: &mut Registry) {
    use AuthRequirement::Check;
    r.register("create", create, Check);
    r.register("drop", drop_collection, Check);
    r.register("dropDatabase", drop_database, Check);
    r.register("renameCollection", rename_collection, Check);
    r.register("collMod", coll_mod, Check);
    r.register("listCollections", list_collections, Check);
    r.register("listDatabases", list_databases, Check);
    r.register("dbStats", db_stats, Check);
    r.register("collStats", coll_stats, Check);
    r.register("dbHash", db_hash, Check);
    r.alias("dbhash", "dbHash");
    r.register("validate", validate, Check);
}

/// Arguments every command may carry that are not options of the command itself.
pub fn is_generic_arg(key: &str) -> bool {
    key.starts_with('$')
        || matches!(
            key,
            "lsid"
                | "txnNumber"
                | "autocommit"
                | "startTransaction"
                | "writeConcern"
                | "readConcern"
                | "comment"
                | "maxTimeMS"
                | "apiVersion"
                | "apiStrict"
                | "apiDeprecationErrors"
                | "readPreference"
                | "clientOperationKey"
        )
}

/// The namespace of a collection-level command (`{<cmd>: "<coll>", $db: "<db>"}`).
pub fn request_ns(req: &Request) -> CommandResult<Namespace> {
    Namespace::new(&req.db, &req.collection()?)
}

/// BSON binary UUID of a collection.
pub fn uuid_bson(uuid: &[u8; 16]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: uuid.to_vec(),
    })
}

/// Creates the collection if it does not exist (implicit creation on first write); fails on views.
pub fn ensure_collection(txn: &mut WriteTxn<'_>, ns: &Namespace) -> CommandResult<()> {
    match txn.catalog().collection(ns) {
        Some(c) if c.is_virtual() => Err(refused_write_error(ns, c)),
        Some(_) => Ok(()),
        None => txn.apply(Mutation::CreateCollection {
            ns: ns.clone(),
            uuid: new_uuid(),
            options: Document::new(),
        }),
    }
}

/// The error for a document write to a view or time series collection: CommandNotSupportedOnView (166),
/// naming what a time series collection does take (inserts and deletes of measurements).
pub fn refused_write_error(ns: &Namespace, coll: &Collection) -> CommandError {
    if coll.is_timeseries() {
        CommandError::command_not_supported_on_view(format!(
            "Namespace {ns} is a time-series collection: only inserts, deletes and reads of measurements are supported"
        ))
    } else {
        view_error(ns)
    }
}

/// CommandNotSupportedOnView (166) for writes to a view.
pub fn view_error(ns: &Namespace) -> CommandError {
    CommandError::command_not_supported_on_view(format!("Namespace {ns} is a view, not a collection"))
}

/// Normalises `create` options as mongod stores them.
fn normalize_options(mut options: Document) -> CommandResult<Document> {
    if super::indexes::is_simple_collation(options.get("collation")) {
        // The simple collation is the default; mongod does not store it.
        options.remove("collation");
    }
    let capped = get_bool(&options, "capped")?.unwrap_or(false);
    if capped {
        let size = match options.get("size") {
            Some(v) => super::raw::as_i64(v)
                .ok_or_else(|| CommandError::type_mismatch("BSON field 'create.size' must be a number"))?,
            None => {
                return Err(CommandError::invalid_options(
                    "the 'size' field is required when 'capped' is true",
                ));
            }
        };
        if size <= 0 {
            return Err(CommandError::invalid_options("the 'size' field must be positive"));
        }
        let rounded = size.saturating_add(255) / 256 * 256;
        options.insert("capped", true);
        // mongod appends the size with appendNumber: an int when it fits, else a long.
        options.insert("size", i32::try_from(rounded).map_or(Bson::Int64(rounded), Bson::Int32));
    } else if options.contains_key("capped") {
        options.insert("capped", false);
        options.remove("capped");
    }
    if let Some(v) = options.get("validator") {
        let Bson::Document(v) = v else {
            return Err(CommandError::type_mismatch(
                "BSON field 'create.validator' must be an object",
            ));
        };
        Filter::parse(v).map_err(CommandError::from)?;
        if !options.contains_key("validationLevel") {
            options.insert("validationLevel", "strict");
        }
        if !options.contains_key("validationAction") {
            options.insert("validationAction", "error");
        }
    }
    check_validation_settings(&options)?;
    Ok(options)
}

fn check_validation_settings(options: &Document) -> CommandResult<()> {
    if let Some(l) = options.get("validationLevel")
        && !matches!(l.as_str(), Some("off" | "strict" | "moderate"))
    {
        return Err(CommandError::bad_value(format!(
            "Enumeration value '{l}' for field 'validationLevel' is not a valid value."
        )));
    }
    if let Some(a) = options.get("validationAction")
        && !matches!(a.as_str(), Some("error" | "warn"))
    {
        return Err(CommandError::bad_value(format!(
            "Enumeration value '{a}' for field 'validationAction' is not a valid value."
        )));
    }
    Ok(())
}

fn create(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let mut options = Document::new();
    for (k, v) in req.body.iter().skip(1) {
        if !is_generic_arg(k) {
            options.insert(k.clone(), v.clone());
        }
    }
    if let Some(view_on) = options.get("viewOn") {
        let Bson::String(target) = view_on else {
            return Err(CommandError::type_mismatch(
                "BSON field 'create.viewOn' must be a string",
            ));
        };
        if target.is_empty() {
            return Err(CommandError::bad_value("'viewOn' cannot be empty"));
        }
        Namespace::new(&ns.db, target)?;
        match options.get("pipeline") {
            None => {
                options.insert("pipeline", Bson::Array(Vec::new()));
            }
            Some(Bson::Array(stages)) => {
                for s in stages {
                    if !matches!(s, Bson::Document(_)) {
                        return Err(CommandError::type_mismatch("'pipeline' must be an array of objects"));
                    }
                }
            }
            Some(_) => {
                return Err(CommandError::type_mismatch(
                    "BSON field 'create.pipeline' must be an array",
                ));
            }
        }
    } else if options.contains_key("pipeline") {
        return Err(CommandError::bad_value(
            "'pipeline' requires 'viewOn' to also be specified",
        ));
    }
    if options.contains_key("timeseries") {
        return create_timeseries(ctx, req, &ns, options);
    }
    let options = normalize_options(options)?;
    let j = write_concern_j(&req.body);
    ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        if let Some(existing) = txn.catalog().collection(&ns) {
            if existing.options == options {
                return Ok(());
            }
            return Err(CommandError::namespace_exists(format!(
                "Collection {ns} already exists."
            )));
        }
        txn.apply(Mutation::CreateCollection {
            ns: ns.clone(),
            uuid: new_uuid(),
            options: options.clone(),
        })?;
        Ok(())
    })?;
    Ok(ok())
}

/// `create` of a time series collection: the user-visible `<name>` (options `{timeseries,
/// expireAfterSeconds?}`) and its `system.buckets.<name>` (clustered by `_id`, same options), in one write.
fn create_timeseries(ctx: &mut Ctx<'_>, req: &Request, ns: &Namespace, options: Document) -> CommandResult<Reply> {
    let spec = TimeseriesOptions::validate_create(ns, &options)?;
    let mut view_options = doc! { "timeseries": spec.clone() };
    let mut bucket_options = doc! { "clusteredIndex": true, "timeseries": spec };
    if let Some(e) = options.get("expireAfterSeconds") {
        let secs = super::raw::as_i64(e).unwrap_or(0);
        view_options.insert("expireAfterSeconds", secs);
        bucket_options.insert("expireAfterSeconds", secs);
    }
    let buckets = crate::timeseries::buckets_ns(ns)?;
    let j = write_concern_j(&req.body);
    ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        if let Some(existing) = txn.catalog().collection(ns) {
            if existing.is_timeseries() && existing.options == view_options {
                return Ok(());
            }
            return Err(CommandError::namespace_exists(format!(
                "A timeseries collection already exists. NS: {ns}"
            )));
        }
        if txn.catalog().collection(&buckets).is_some() {
            return Err(CommandError::namespace_exists(format!(
                "Collection {buckets} already exists."
            )));
        }
        txn.apply(Mutation::CreateCollection {
            ns: buckets.clone(),
            uuid: new_uuid(),
            options: bucket_options.clone(),
        })?;
        txn.apply(Mutation::CreateCollection {
            ns: ns.clone(),
            uuid: new_uuid(),
            options: view_options.clone(),
        })?;
        // With a metaField, mongod (since 6.3) also creates the `{<metaField>: 1, <timeField>: 1}` index.
        let opts =
            TimeseriesOptions::from_document(view_options.get_document("timeseries").unwrap_or(&Document::new()))?;
        if let Some(spec) = crate::timeseries::default_index_spec(&opts) {
            txn.apply(Mutation::CreateIndex {
                ns: buckets.clone(),
                spec: crate::timeseries::buckets_index_spec(&opts, &spec)?,
            })?;
        }
        Ok(())
    })?;
    Ok(ok())
}

/// Whether the command's write concern asks for journaled durability (`j: true`, or `w: "majority"` which
/// implies it on a journaled server).
pub fn write_concern_j(body: &Document) -> bool {
    match body.get("writeConcern") {
        Some(Bson::Document(wc)) => {
            matches!(wc.get("j"), Some(Bson::Boolean(true)))
                || matches!(wc.get("fsync"), Some(Bson::Boolean(true)))
                || matches!(wc.get("w"), Some(Bson::String(s)) if s == "majority")
        }
        _ => false,
    }
}

fn drop_collection(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let j = write_concern_j(&req.body);
    let n_indexes = ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        let coll = txn.catalog().collection(&ns);
        let n = coll.map(|c| c.indexes().len());
        // Dropping a time series collection drops its buckets with it.
        if coll.is_some_and(Collection::is_timeseries) {
            let buckets = crate::timeseries::buckets_ns(&ns)?;
            if txn.catalog().collection(&buckets).is_some() {
                txn.apply(Mutation::DropCollection { ns: buckets })?;
            }
        }
        if n.is_some() {
            txn.apply(Mutation::DropCollection { ns: ns.clone() })?;
        }
        Ok(n)
    })?;
    // Since MongoDB 7.0, dropping a missing collection succeeds.
    match n_indexes {
        Some(n) => Ok(ok_with(
            doc! { "nIndexesWas": i32::try_from(n).unwrap_or(i32::MAX), "ns": ns.to_string() },
        )),
        None => Ok(ok()),
    }
}

fn drop_database(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    validate_db_name(&req.db)?;
    let db = req.db.clone();
    let j = write_concern_j(&req.body);
    let existed = ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        let existed = txn.catalog().database(&db).is_some();
        if existed {
            txn.apply(Mutation::DropDatabase { db: db.clone() })?;
        }
        Ok(existed)
    })?;
    if existed {
        Ok(ok_with(doc! { "dropped": req.db.clone() }))
    } else {
        Ok(ok())
    }
}

fn rename_collection(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    if req.db != "admin" {
        return Err(CommandError::unauthorized(
            "renameCollection may only be run against the admin database.",
        ));
    }
    let from = match req.first_value() {
        Some(Bson::String(s)) => Namespace::parse(s)?,
        _ => {
            return Err(CommandError::type_mismatch(
                "BSON field 'renameCollection' must be a string",
            ));
        }
    };
    let to = match req.body.get("to") {
        Some(Bson::String(s)) => Namespace::parse(s)?,
        Some(_) => return Err(CommandError::type_mismatch("BSON field 'to' must be a string")),
        None => {
            return Err(CommandError::missing_field(
                "BSON field 'renameCollection.to' is missing but a required field",
            ));
        }
    };
    let drop_target = get_bool(&req.body, "dropTarget")?.unwrap_or(false);
    let j = write_concern_j(&req.body);
    ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        let source = txn
            .catalog()
            .collection(&from)
            .ok_or_else(|| CommandError::namespace_not_found(format!("Source collection {from} does not exist")))?;
        if source.is_view() {
            return Err(CommandError::command_not_supported_on_view(format!(
                "cannot rename view: {from}"
            )));
        }
        // A time series collection and its buckets move only together, which mongod does not allow either.
        if source.is_timeseries() || crate::timeseries::is_buckets(&from) || crate::timeseries::is_buckets(&to) {
            return Err(CommandError::illegal_operation(format!(
                "Renaming a time-series collection or its buckets is not allowed: {from}"
            )));
        }
        if from == to {
            return Err(CommandError::illegal_operation("Can't rename a collection to itself"));
        }
        if txn.catalog().collection(&to).is_some() {
            if !drop_target {
                return Err(CommandError::namespace_exists("target namespace exists"));
            }
            txn.apply(Mutation::DropCollection { ns: to.clone() })?;
        }
        txn.apply(Mutation::RenameCollection {
            from: from.clone(),
            to: to.clone(),
        })
    })?;
    Ok(ok())
}

fn coll_mod(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let j = write_concern_j(&req.body);
    let body = req.body.clone();
    let reply = ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        let coll = txn
            .catalog()
            .collection(&ns)
            .ok_or_else(|| CommandError::namespace_not_found(format!("ns does not exist: {ns}")))?;
        let mut options = coll.options.clone();
        let mut reply = Document::new();
        let mut index_change: Option<Document> = None;
        for (k, v) in body.iter().skip(1) {
            if is_generic_arg(k) {
                continue;
            }
            match k.as_str() {
                "validator"
                | "validationLevel"
                | "validationAction"
                | "viewOn"
                | "pipeline"
                | "expireAfterSeconds"
                | "changeStreamPreAndPostImages" => {
                    if k == "validator" {
                        let Bson::Document(vd) = v else {
                            return Err(CommandError::type_mismatch("'validator' must be an object"));
                        };
                        Filter::parse(vd).map_err(CommandError::from)?;
                    }
                    options.insert(k.clone(), v.clone());
                }
                "index" => {
                    let Bson::Document(spec) = v else {
                        return Err(CommandError::type_mismatch("'index' must be an object"));
                    };
                    let (new_spec, changes) = coll_mod_index(coll, spec)?;
                    reply.extend(changes);
                    index_change = Some(new_spec);
                }
                other => {
                    return Err(CommandError::invalid_options(format!(
                        "unknown option to collMod: {other}"
                    )));
                }
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
        check_validation_settings(&options)?;
        if options != coll.options {
            txn.apply(Mutation::SetOptions {
                ns: ns.clone(),
                options,
            })?;
        }
        if let Some(spec) = index_change {
            txn.apply(Mutation::SetIndexSpec { ns: ns.clone(), spec })?;
        }
        Ok(reply)
    })?;
    Ok(ok_with(reply))
}

/// Applies a collMod `index` change (TTL `expireAfterSeconds`, `hidden`) to an index spec.
fn coll_mod_index(coll: &Collection, change: &Document) -> CommandResult<(Document, Document)> {
    let idx = if let Ok(name) = change.get_str("name") {
        coll.indexes().iter().find(|i| i.name == name)
    } else if let Ok(key) = change.get_document("keyPattern") {
        coll.indexes().iter().find(|i| &i.key_pattern() == key)
    } else {
        return Err(CommandError::invalid_options(
            "must specify either index name or key pattern for collMod",
        ));
    };
    let idx = idx.ok_or_else(|| CommandError::index_not_found(format!("cannot find index {change} for ns")))?;
    let mut spec = idx.spec.clone();
    let mut reply = Document::new();
    if let Some(v) = change.get("expireAfterSeconds") {
        if !spec.contains_key("expireAfterSeconds") {
            return Err(CommandError::invalid_options("no expireAfterSeconds field to update"));
        }
        if let Some(old) = spec.get("expireAfterSeconds") {
            reply.insert("expireAfterSeconds_old", old.clone());
        }
        reply.insert("expireAfterSeconds_new", v.clone());
        spec.insert("expireAfterSeconds", v.clone());
    }
    if let Some(v) = change.get("hidden") {
        let Bson::Boolean(h) = v else {
            return Err(CommandError::type_mismatch("'hidden' must be a boolean"));
        };
        if idx.name == "_id_" {
            return Err(CommandError::bad_value("can't hide _id index"));
        }
        let old = spec.get_bool("hidden").unwrap_or(false);
        reply.insert("hidden_old", old);
        reply.insert("hidden_new", *h);
        if *h {
            spec.insert("hidden", true);
        } else {
            spec.remove("hidden");
        }
    }
    Ok((spec, reply))
}

/// A `listCollections` entry in mongod's shape.
pub fn collection_entry(name: &str, coll: &Collection, name_only: bool) -> Document {
    let mut d = doc! { "name": name, "type": coll.kind.as_str() };
    if name_only {
        return d;
    }
    // `idIndex` given to `create` shapes the `_id` index; mongod reports it as the top-level
    // `idIndex` field below, never inside `options`.
    let mut options = coll.options.clone();
    options.remove("idIndex");
    d.insert("options", options);
    let mut info = doc! { "readOnly": coll.is_view() };
    if coll.kind == CollectionKind::Collection {
        info.insert("uuid", uuid_bson(&coll.uuid));
    }
    d.insert("info", info);
    if coll.kind == CollectionKind::Collection && !coll.options.contains_key("clusteredIndex") {
        let spec = coll
            .indexes()
            .first()
            .map(|i| i.spec.clone())
            .unwrap_or_else(id_index_spec);
        d.insert("idIndex", spec);
    }
    d
}

fn list_collections(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    validate_db_name(&req.db)?;
    let filter = get_doc(&req.body, "filter")?
        .map(|f| Filter::parse(f).map_err(CommandError::from))
        .transpose()?;
    let name_only = get_bool(&req.body, "nameOnly")?.unwrap_or(false);
    let batch_size = super::crud::batch_size_arg(&req.body, "cursor")?;
    let entries: Vec<Document> = ctx.server.engine.read(|cat: &Catalog| {
        let Some(db) = cat.database(&req.db) else {
            return Vec::new();
        };
        db.collections
            .iter()
            .map(|(name, coll)| collection_entry(name, coll, false))
            .collect()
    });
    // authorizedCollections (with nameOnly) lists only collections the user holds privileges on.
    let authorized_only = ctx.server.config.auth
        && name_only
        && get_bool(&req.body, "authorizedCollections")?.unwrap_or(false)
        && !crate::auth::is_allowed(
            &ctx.conn.auth,
            &crate::auth::privileges::Target::Database(req.db.clone()),
            "listCollections",
        );
    let mut docs = Vec::new();
    for e in entries {
        if let Some(f) = &filter
            && !f.matches(&e)
        {
            continue;
        }
        if authorized_only {
            let name = e.get_str("name").unwrap_or_default().to_string();
            let target = crate::auth::privileges::Target::Collection(req.db.clone(), name);
            if !["find", "insert", "update", "remove", "collStats"]
                .iter()
                .any(|a| crate::auth::is_allowed(&ctx.conn.auth, &target, a))
            {
                continue;
            }
        }
        let e = if name_only {
            doc! { "name": e.get("name").cloned().unwrap_or(Bson::Null), "type": e.get("type").cloned().unwrap_or(Bson::Null) }
        } else {
            e
        };
        docs.push(
            RawDocumentBuf::from_document(&e).map_err(|err| CommandError::internal(format!("encode entry: {err}")))?,
        );
    }
    let cursor = Cursor {
        ns: format!("{}.$cmd.listCollections", req.db),
        db: req.db.clone(),
        collection: "$cmd.listCollections".into(),
        source: CursorSource::Buffered(docs.into()),
    };
    super::crud::first_batch(ctx, cursor, batch_size, false)
}

fn db_sizes(coll: &Collection) -> (u64, u64, u64) {
    // (documents, data bytes, index count)
    (coll.len() as u64, coll.data_size(), coll.indexes().len() as u64)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn list_databases(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let name_only = get_bool(&req.body, "nameOnly")?.unwrap_or(false);
    let filter = get_doc(&req.body, "filter")?
        .map(|f| Filter::parse(f).map_err(CommandError::from))
        .transpose()?;
    let visible = crate::auth::list_databases_filter(ctx, &req.body)?;
    let infos: Vec<(String, u64, bool)> = ctx.server.engine.read(|cat| {
        cat.database_names()
            .into_iter()
            .map(|name| {
                let size: u64 = cat
                    .database(&name)
                    .map(|d| d.collections.values().map(|c| c.data_size()).sum())
                    .unwrap_or(0);
                // mongod reports on-disk sizes; an in-memory store reports the data size, rounded to 4 KiB
                // pages like a storage engine allocation, so a non-empty database never reports 0.
                let on_disk = size.div_ceil(4096).saturating_mul(4096).max(4096);
                (name, on_disk, size == 0)
            })
            .collect()
    });
    // With --auth, users without the cluster-wide listDatabases privilege (or asking for
    // authorizedDatabases: true) see only the databases they hold privileges on, as in mongod.
    let authorized_only = ctx.server.config.auth
        && match get_bool(&req.body, "authorizedDatabases")? {
            Some(b) => b,
            None => !crate::auth::is_allowed(
                &ctx.conn.auth,
                &crate::auth::privileges::Target::Cluster,
                "listDatabases",
            ),
        };
    let mut dbs = Vec::new();
    let mut total = 0u64;
    for (name, size, empty) in infos {
        if authorized_only {
            let target = crate::auth::privileges::Target::Database(name.clone());
            let visible = ["find", "insert", "listCollections", "dbStats"]
                .iter()
                .any(|a| crate::auth::is_allowed(&ctx.conn.auth, &target, a));
            if !visible {
                continue;
            }
        }
        if !visible.allows(&name) {
            continue;
        }
        let entry = if name_only {
            doc! { "name": name }
        } else {
            doc! { "name": name, "sizeOnDisk": i64_of(size), "empty": empty }
        };
        if let Some(f) = &filter
            && !f.matches(&entry)
        {
            continue;
        }
        total = total.saturating_add(size);
        dbs.push(Bson::Document(entry));
    }
    if name_only {
        Ok(ok_with(doc! { "databases": dbs }))
    } else {
        Ok(ok_with(
            doc! { "databases": dbs, "totalSize": i64_of(total), "totalSizeMb": i64_of(total / (1024 * 1024)) },
        ))
    }
}

fn scale_arg(body: &Document) -> CommandResult<u64> {
    match super::get_i64(body, "scale")? {
        None => Ok(1),
        Some(s) if s >= 1 => Ok(u64::try_from(s).unwrap_or(1)),
        Some(_) => Err(CommandError::bad_value("Scale factor must be greater than zero")),
    }
}

fn db_stats(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    validate_db_name(&req.db)?;
    let scale = scale_arg(&req.body)?;
    let (collections, views, objects, data, indexes) = ctx.server.engine.read(|cat| {
        let mut t = (0u64, 0u64, 0u64, 0u64, 0u64);
        if let Some(db) = cat.database(&req.db) {
            for c in db.collections.values() {
                if c.is_view() {
                    t.1 += 1;
                    continue;
                }
                let (n, d, i) = db_sizes(c);
                t.0 += 1;
                t.2 += n;
                t.3 += d;
                t.4 += i;
            }
        }
        t
    });
    let avg = if objects > 0 { data as f64 / objects as f64 } else { 0.0 };
    let storage = data.div_ceil(4096) * 4096;
    Ok(ok_with(doc! {
        "db": req.db.clone(),
        "collections": i64_of(collections),
        "views": i64_of(views),
        "objects": i64_of(objects),
        "avgObjSize": avg,
        "dataSize": (data / scale) as f64,
        "storageSize": (storage / scale) as f64,
        "indexes": i64_of(indexes),
        "indexSize": 0.0,
        "totalSize": (storage / scale) as f64,
        "scaleFactor": i64_of(scale),
        "fsUsedSize": 0.0,
        "fsTotalSize": 0.0,
    }))
}

fn coll_stats(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let scale = scale_arg(&req.body)?;
    let info = ctx.server.engine.read(|cat| {
        cat.collection(&ns).map(|c| {
            let names: Vec<String> = c.indexes().iter().map(|i| i.name.clone()).collect();
            (
                c.is_view(),
                c.len() as u64,
                c.data_size(),
                names,
                c.is_capped(),
                c.options.clone(),
            )
        })
    });
    let Some((is_view, count, size, index_names, capped, options)) = info else {
        return Err(CommandError::namespace_not_found(format!(
            "Collection [{ns}] not found."
        )));
    };
    if is_view {
        return Err(CommandError::command_not_supported_on_view(format!(
            "Namespace {ns} is a view, not a collection"
        )));
    }
    let mut index_sizes = Document::new();
    for n in &index_names {
        index_sizes.insert(n.clone(), 0_i64);
    }
    let mut d = doc! {
        "ns": ns.to_string(),
        "size": i64_of(size / scale),
        "count": i64_of(count),
        "storageSize": i64_of(size.div_ceil(4096) * 4096 / scale),
        "totalIndexSize": 0_i64,
        "totalSize": i64_of(size.div_ceil(4096) * 4096 / scale),
        "indexSizes": index_sizes,
        "scaleFactor": i64_of(scale),
        "nindexes": i64::try_from(index_names.len()).unwrap_or(i64::MAX),
        "capped": capped,
    };
    if let Some(avg) = size.checked_div(count) {
        d.insert("avgObjSize", i64_of(avg));
    }
    if capped {
        if let Some(m) = options.get("max") {
            d.insert("max", m.clone());
        }
        if let Some(s) = options.get("size") {
            d.insert("maxSize", s.clone());
        }
    }
    Ok(ok_with(d))
}

/// `dbHash`: an MD5 per collection over its documents' bytes in `_id` order, and an MD5 over those hashes
/// (collections in name order), as mongod computes it to compare replicas and restores.
fn db_hash(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    use md5::{Digest, Md5};
    validate_db_name(&req.db)?;
    let only: Option<Vec<String>> = match req.body.get("collections") {
        None => None,
        Some(Bson::Array(a)) => Some(
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| CommandError::type_mismatch("'collections' must be an array of strings"))
                })
                .collect::<CommandResult<_>>()?,
        ),
        Some(_) => return Err(CommandError::type_mismatch("'collections' must be an array of strings")),
    };
    let started = std::time::Instant::now();
    let (collections, capped, uuids, md5) = ctx.server.engine.read(|cat| {
        let mut collections = Document::new();
        let mut capped = Vec::new();
        let mut uuids = Document::new();
        let mut global = Md5::new();
        if let Some(db) = cat.database(&req.db) {
            for (name, coll) in &db.collections {
                if coll.is_view() || name == "system.profile" {
                    continue;
                }
                if only.as_ref().is_some_and(|o| !o.contains(name)) {
                    continue;
                }
                let mut h = Md5::new();
                for d in coll.iter_by_id() {
                    h.update(d.as_bytes());
                }
                let hex = hex(&h.finalize());
                global.update(hex.as_bytes());
                collections.insert(name.clone(), hex);
                if coll.is_capped() {
                    capped.push(Bson::String(name.clone()));
                }
                uuids.insert(name.clone(), uuid_bson(&coll.uuid));
            }
        }
        (collections, capped, uuids, hex(&global.finalize()))
    });
    Ok(ok_with(doc! {
        "host": format!("{}:{}", ctx.server.config.bind_ip, ctx.server.config.port),
        "collections": collections,
        "capped": capped,
        "uuids": uuids,
        "md5": md5,
        "timeMillis": i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
    }))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `validate`: checks that every stored document decodes and that the `_id` index covers every document.
fn validate(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let report = ctx.server.engine.read(|cat| -> CommandResult<Document> {
        let coll = cat.collection(&ns).ok_or_else(|| {
            CommandError::namespace_not_found(format!("Collection '{ns}' does not exist to validate."))
        })?;
        if coll.is_view() {
            return Err(CommandError::command_not_supported_on_view(format!(
                "Cannot validate a view: {ns}"
            )));
        }
        let mut invalid = 0i64;
        for (_, d) in coll.iter() {
            if Document::try_from(d.as_ref()).is_err() {
                invalid += 1;
            }
        }
        let records = i64::try_from(coll.len()).unwrap_or(i64::MAX);
        let by_id = i64::try_from(coll.iter_by_id().count()).unwrap_or(i64::MAX);
        let mut errors = Vec::new();
        if by_id != records {
            errors.push(Bson::String(format!(
                "_id index has {by_id} entries for {records} records"
            )));
        }
        let mut keys = Document::new();
        for idx in coll.indexes() {
            keys.insert(idx.name.clone(), if idx.name == "_id_" { by_id } else { records });
        }
        Ok(doc! {
            "ns": ns.to_string(),
            "uuid": uuid_bson(&coll.uuid),
            "nInvalidDocuments": invalid,
            "nNonCompliantDocuments": 0,
            "nrecords": records,
            "nIndexes": i64::try_from(coll.indexes().len()).unwrap_or(i64::MAX),
            "keysPerIndex": keys,
            "valid": errors.is_empty() && invalid == 0,
            "repaired": false,
            "warnings": [],
            "errors": errors,
            "extraIndexEntries": [],
            "missingIndexEntries": [],
            "corruptRecords": [],
        })
    })?;
    Ok(ok_with(report))
}
