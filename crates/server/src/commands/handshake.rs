//! Handshake and server-information commands: `hello`/`isMaster`, `buildInfo`, `ping`, `getParameter`,
//! `serverStatus`, `hostInfo`, `getCmdLineOpts`, `whatsmyuri`, `getLog`, sessions (`startSession`,
//! `endSessions`, `refreshSessions`), `listCommands`.
//!
//! `hello` carries what drivers size their work by (`maxBsonObjectSize`, `maxMessageSizeBytes`,
//! `maxWriteBatchSize`, wire versions of MongoDB 7.0). A standalone reports no `topologyVersion`, so drivers
//! monitor it by polling; replica set members add the set's fields and a `topologyVersion`, and answer
//! awaitable hello (see [`crate::repl::topology`]). Compression is negotiated here: the
//! reply's `compression` lists the client's requested compressors that the wire layer supports, in the
//! client's order; the network layer then compresses replies with the first one.

use bson::{Bson, DateTime, Document, doc, spec::BinarySubtype};

use super::{AuthRequirement, Ctx, Registry, Reply, Request, ok, ok_with};
use crate::error::{CommandError, CommandResult};
use crate::{MAX_BSON_OBJECT_SIZE, MAX_MESSAGE_SIZE_BYTES, MAX_WIRE_VERSION, MAX_WRITE_BATCH_SIZE, MONGODB_VERSION};

/// Registers this group's commands.
pub fn register(r: &mut Registry) {
    use AuthRequirement::{Check, None};
    r.register("hello", hello, None);
    r.register("isMaster", is_master, None);
    r.alias("ismaster", "isMaster");
    r.register("buildInfo", build_info, None);
    r.alias("buildinfo", "buildInfo");
    r.register("ping", |_, _| Ok(ok()), None);
    r.register("getParameter", get_parameter, Check);
    r.register("serverStatus", server_status, Check);
    r.register("hostInfo", host_info, Check);
    r.register("getCmdLineOpts", get_cmd_line_opts, Check);
    r.register("whatsmyuri", whats_my_uri, None);
    r.register("getLog", get_log, Check);
    r.register("startSession", start_session, None);
    r.register("endSessions", |_, _| Ok(ok()), None);
    r.register("refreshSessions", |_, _| Ok(ok()), None);
    r.register("killAllSessions", |_, _| Ok(ok()), Check);
    r.register("listCommands", list_commands, None);
}

fn hello(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    handshake(ctx, req, "isWritablePrimary")
}

fn is_master(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    handshake(ctx, req, "ismaster")
}

/// Builds the `hello`/`isMaster` reply; `primary_field` is `isWritablePrimary` or `ismaster`.
fn handshake(ctx: &mut Ctx<'_>, req: &Request, primary_field: &str) -> CommandResult<Reply> {
    if let Some(client) = req.body.get("client") {
        if ctx.conn.handshake_done && ctx.conn.client_metadata.is_some() {
            return Err(CommandError::new(
                186,
                "ClientMetadataCannotBeMutated",
                "The client metadata document may only be sent in the first hello",
            ));
        }
        match client {
            Bson::Document(d) => ctx.conn.client_metadata = Some(d.clone()),
            _ => return Err(CommandError::type_mismatch("'client' field must be an object")),
        }
    }
    let mut reply = doc! {};
    if req.body.contains_key("helloOk") {
        reply.insert("helloOk", true);
    }
    reply.insert(primary_field, true);
    reply.insert(
        "maxBsonObjectSize",
        i32::try_from(MAX_BSON_OBJECT_SIZE).unwrap_or(i32::MAX),
    );
    reply.insert(
        "maxMessageSizeBytes",
        i32::try_from(MAX_MESSAGE_SIZE_BYTES).unwrap_or(i32::MAX),
    );
    reply.insert(
        "maxWriteBatchSize",
        i32::try_from(MAX_WRITE_BATCH_SIZE).unwrap_or(i32::MAX),
    );
    reply.insert("localTime", DateTime::now());
    reply.insert("logicalSessionTimeoutMinutes", 30);
    reply.insert("connectionId", ctx.conn.id);
    reply.insert("minWireVersion", 0);
    reply.insert("maxWireVersion", MAX_WIRE_VERSION);
    reply.insert("readOnly", ctx.server.config.read_only);
    if !ctx.conn.handshake_done {
        if let Some(Bson::Array(requested)) = req.body.get("compression") {
            let agreed: Vec<String> = requested
                .iter()
                .filter_map(|c| c.as_str())
                .filter(|c| tidemark_wire::Compressor::from_name(c).is_some())
                .map(str::to_string)
                .collect();
            ctx.conn.compressors = agreed;
        }
        ctx.conn.handshake_done = true;
    }
    if req.body.contains_key("compression") || !ctx.conn.compressors.is_empty() {
        let list: Vec<Bson> = ctx.conn.compressors.iter().cloned().map(Bson::String).collect();
        reply.insert("compression", list);
    }
    crate::auth::hello_hook(ctx, &req.body, &mut reply);
    // Replica set members: awaitable hello waits for a topology change, then the set's fields.
    ctx.server.topology.await_topology_change(&req.body);
    ctx.server
        .topology
        .hello_fields(&ctx.server.engine, primary_field, &mut reply);
    Ok(ok_with(reply))
}

fn build_info(_ctx: &mut Ctx<'_>, _req: &Request) -> CommandResult<Reply> {
    let parts: Vec<Bson> = MONGODB_VERSION
        .split('.')
        .map(|p| Bson::Int32(p.parse().unwrap_or(0)))
        .chain(std::iter::once(Bson::Int32(0)))
        .collect();
    Ok(ok_with(doc! {
        "version": MONGODB_VERSION,
        "gitVersion": "0000000000000000000000000000000000000000",
        "modules": [],
        "allocator": "system",
        "javascriptEngine": "none",
        "sysInfo": "deprecated",
        "versionArray": parts,
        "openssl": { "running": "disabled", "compiled": "disabled" },
        "buildEnvironment": { "distmod": "tidemark", "target_os": std::env::consts::OS, "target_arch": std::env::consts::ARCH },
        "bits": 64,
        "debug": false,
        "maxBsonObjectSize": i32::try_from(MAX_BSON_OBJECT_SIZE).unwrap_or(i32::MAX),
        "storageEngines": ["inMemory", "wiredTiger"],
    }))
}

fn known_parameters(ctx: &Ctx<'_>) -> Document {
    let _ = ctx;
    let mechs: Vec<Bson> = vec![Bson::String("SCRAM-SHA-1".into()), Bson::String("SCRAM-SHA-256".into())];
    doc! {
        "featureCompatibilityVersion": { "version": "7.0" },
        // Version 5 is the SCRAM user schema of MongoDB 3.0 and later (checked by mongorestore).
        "authSchemaVersion": 5,
        "authenticationMechanisms": mechs,
        "authSchemaVersion": crate::auth::users::AUTH_SCHEMA_VERSION,
        "maxBSONDepth": 100,
        "internalDocumentSourceCursorBatchSizeBytes": 4 * 1024 * 1024,
        "transactionLifetimeLimitSeconds": 60,
        "logLevel": 0,
        "quiet": false,
    }
}

fn get_parameter(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let all = known_parameters(ctx);
    let want_all = matches!(req.first_value(), Some(Bson::String(s)) if s == "*")
        || matches!(req.first_value(), Some(Bson::Document(d)) if d.get_bool("allParameters").unwrap_or(false));
    let mut out = Document::new();
    if want_all {
        out = all;
    } else {
        for (k, _) in req.body.iter().skip(1) {
            if k.starts_with('$') || k == "lsid" || k == "comment" {
                continue;
            }
            if let Some(v) = all.get(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        if out.is_empty() {
            return Err(CommandError::invalid_options("no option found to get"));
        }
    }
    Ok(ok_with(out))
}

fn server_status(ctx: &mut Ctx<'_>, _req: &Request) -> CommandResult<Reply> {
    let up = ctx.server.started.elapsed();
    let stats = &ctx.server.stats;
    let persistent = ctx.server.config.dbpath.is_some();
    let load = |a: &std::sync::atomic::AtomicI64| a.load(std::sync::atomic::Ordering::Relaxed);
    let (scanned, scanned_objects) = ctx.server.engine.metrics().snapshot();
    Ok(ok_with(doc! {
        "host": hostname(),
        "version": MONGODB_VERSION,
        "process": "mongod",
        "pid": i64::from(std::process::id()),
        "uptime": up.as_secs_f64().floor(),
        "uptimeMillis": i64::try_from(up.as_millis()).unwrap_or(i64::MAX),
        "uptimeEstimate": i64::try_from(up.as_secs()).unwrap_or(i64::MAX),
        "localTime": DateTime::now(),
        "connections": {
            "current": i32::try_from(load(&stats.connections_current)).unwrap_or(i32::MAX),
            "available": 1_000_000,
            "totalCreated": i32::try_from(load(&stats.connections_total)).unwrap_or(i32::MAX),
        },
        "opcounters": {
            "insert": load(&stats.op_insert),
            "query": load(&stats.op_query),
            "update": load(&stats.op_update),
            "delete": load(&stats.op_delete),
            "getmore": load(&stats.op_getmore),
            "command": load(&stats.op_command),
        },
        "storageEngine": {
            "name": if persistent { "wiredTiger" } else { "inMemory" },
            "supportsCommittedReads": true,
            "persistent": persistent,
            "readOnly": ctx.server.config.read_only,
        },
        "metrics": {
            "cursor": { "open": { "total": i64::try_from(ctx.server.cursors.len()).unwrap_or(i64::MAX) } },
            "queryExecutor": {
                "scanned": i64::try_from(scanned).unwrap_or(i64::MAX),
                "scannedObjects": i64::try_from(scanned_objects).unwrap_or(i64::MAX),
            },
        },
    }))
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn host_info(_ctx: &mut Ctx<'_>, _req: &Request) -> CommandResult<Reply> {
    Ok(ok_with(doc! {
        "system": { "currentTime": DateTime::now(), "hostname": hostname(), "cpuAddrSize": 64,
                    "numCores": i32::try_from(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).unwrap_or(1),
                    "cpuArch": std::env::consts::ARCH },
        "os": { "type": std::env::consts::OS, "name": std::env::consts::OS },
        "extra": {},
    }))
}

fn get_cmd_line_opts(ctx: &mut Ctx<'_>, _req: &Request) -> CommandResult<Reply> {
    let argv: Vec<Bson> = std::env::args().map(Bson::String).collect();
    let cfg = &ctx.server.config;
    let mut net = doc! { "bindIp": cfg.bind_ip.to_string(), "port": i32::from(cfg.port) };
    if cfg.max_message_size != MAX_MESSAGE_SIZE_BYTES {
        net.insert(
            "maxMessageSize",
            i64::try_from(cfg.max_message_size).unwrap_or(i64::MAX),
        );
    }
    let mut parsed = doc! { "net": net };
    if let Some(p) = &cfg.dbpath {
        parsed.insert(
            "storage",
            doc! { "dbPath": p.display().to_string(), "journal": { "enabled": !cfg.nojournal } },
        );
    }
    if cfg.auth {
        parsed.insert("security", doc! { "authorization": "enabled" });
    }
    if let Some(rs) = &cfg.repl_set {
        parsed.insert("replication", doc! { "replSet": rs.clone() });
    }
    Ok(ok_with(doc! { "argv": argv, "parsed": parsed }))
}

fn whats_my_uri(ctx: &mut Ctx<'_>, _req: &Request) -> CommandResult<Reply> {
    let you = ctx.conn.peer.map(|p| p.to_string()).unwrap_or_default();
    Ok(ok_with(doc! { "you": you }))
}

fn get_log(_ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    match req.first_value() {
        Some(Bson::String(s)) if s == "*" => Ok(ok_with(doc! { "names": ["global", "startupWarnings"] })),
        Some(Bson::String(s)) if s == "global" || s == "startupWarnings" => {
            Ok(ok_with(doc! { "totalLinesWritten": 0, "log": [] }))
        }
        Some(Bson::String(s)) => Err(CommandError::bad_value(format!("No log named '{s}'"))),
        _ => Err(CommandError::type_mismatch("Argument to getLog must be of type String")),
    }
}

fn start_session(_ctx: &mut Ctx<'_>, _req: &Request) -> CommandResult<Reply> {
    let id = bson::Binary {
        subtype: BinarySubtype::Uuid,
        bytes: crate::engine::new_uuid().to_vec(),
    };
    Ok(ok_with(doc! { "id": { "id": id }, "timeoutMinutes": 30 }))
}

fn list_commands(ctx: &mut Ctx<'_>, _req: &Request) -> CommandResult<Reply> {
    let mut names: Vec<&str> = ctx.server.registry.names().collect();
    names.sort_unstable();
    let mut commands = Document::new();
    for n in names {
        commands.insert(
            n,
            doc! { "help": "", "requiresAuth": true, "secondaryOk": true, "adminOnly": false },
        );
    }
    Ok(ok_with(doc! { "commands": commands }))
}
