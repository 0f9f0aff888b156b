//! Command dispatch: the registry mapping command names to handlers, and the request/reply types every
//! handler shares.
//!
//! A command arrives as the first field of an OP_MSG body (or of an OP_QUERY on `db.$cmd`). The registry looks
//! that name up exactly as mongod does (names are case-sensitive; aliases such as `isMaster`/`ismaster` are
//! separate entries pointing at the same handler). Unknown names produce CommandNotFound (59), never a silent
//! success. Handlers are plain synchronous functions: the network layer runs them on tokio's blocking pool,
//! so they may wait on the engine lock or a journal fsync.
//!
//! Handlers get a [`Ctx`] (shared server state plus this connection's state, including its
//! [`crate::auth::AuthState`]) and a [`Request`] (database, command name, parsed body, raw body and any
//! OP_MSG kind-1 document sequences). They answer with a [`Reply`]: either a typed document or a raw document
//! built without re-encoding (cursor batches stream stored bytes straight into the reply).

pub mod admin;
pub mod apply_ops;
pub mod crud;
pub mod handshake;
pub mod indexes;
pub mod raw;
pub mod replset;
pub mod transactions;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use bson::{Bson, Document, RawDocument, RawDocumentBuf, doc};

use crate::auth::AuthState;
use crate::config::ServerConfig;
use crate::cursor::CursorManager;
use crate::engine::Engine;
use crate::error::{CommandError, CommandResult};

/// One command invocation as received from a client.
#[derive(Debug, Clone)]
pub struct Request {
    /// Target database (`$db` of OP_MSG, or the prefix of `db.$cmd` for OP_QUERY).
    pub db: String,
    /// Command name: the first key of the body, exactly as sent.
    pub name: String,
    /// The command body, parsed (document sequences are NOT merged here; see [`Request::documents`]).
    pub body: Document,
    /// The command body as received.
    pub raw: RawDocumentBuf,
    /// OP_MSG kind-1 sections: `(identifier, documents)`. [`Request::documents`] moves the documents out.
    pub sequences: Vec<(String, RefCell<Vec<RawDocumentBuf>>)>,
}

impl Request {
    /// Builds a request from a raw body and document sequences, taking the command name from the first key.
    pub fn from_raw(
        db: Option<&str>,
        raw: RawDocumentBuf,
        sequences: Vec<(String, Vec<RawDocumentBuf>)>,
    ) -> CommandResult<Self> {
        let body = raw
            .to_document()
            .map_err(|e| CommandError::failed_to_parse(format!("invalid BSON in command body: {e}")))?;
        let name = body
            .keys()
            .next()
            .cloned()
            .ok_or_else(|| CommandError::failed_to_parse("empty command document"))?;
        let db = match db {
            Some(d) => d.to_string(),
            None => match body.get("$db") {
                Some(Bson::String(s)) => s.clone(),
                Some(_) => return Err(CommandError::type_mismatch("$db must be a string")),
                None => return Err(CommandError::failed_to_parse("OP_MSG requests require a $db argument")),
            },
        };
        Ok(Self {
            db,
            name,
            body,
            raw,
            sequences: sequences
                .into_iter()
                .map(|(id, docs)| (id, RefCell::new(docs)))
                .collect(),
        })
    }

    /// Builds a request from a typed body (used by tests and internal callers).
    pub fn from_document(db: &str, body: Document) -> CommandResult<Self> {
        let raw = RawDocumentBuf::from_document(&body)
            .map_err(|e| CommandError::bad_value(format!("cannot encode command body: {e}")))?;
        Self::from_raw(Some(db), raw, Vec::new())
    }

    /// The documents of a write command's array argument (`documents`, `updates`, `deletes`): from the kind-1
    /// sequence of that name if present (moved out of the request, so a second call finds it empty), else
    /// borrowed from the body's array. A document is copied once, where it is stored.
    pub fn documents(&self, field: &str) -> CommandResult<Vec<Cow<'_, RawDocument>>> {
        let mut out = Vec::new();
        let mut found = false;
        for (id, docs) in &self.sequences {
            if id == field {
                found = true;
                out.extend(docs.take().into_iter().map(Cow::Owned));
            }
        }
        match self.raw.get(field) {
            Ok(Some(bson::RawBsonRef::Array(arr))) => {
                if found {
                    return Err(CommandError::bad_value(format!(
                        "'{field}' is given both in the command body and as a document sequence"
                    )));
                }
                found = true;
                for item in arr {
                    match item {
                        Ok(bson::RawBsonRef::Document(d)) => out.push(Cow::Borrowed(d)),
                        Ok(_) => {
                            return Err(CommandError::type_mismatch(format!(
                                "BSON field '{}.{field}' is the wrong type, expected an array of objects",
                                self.name
                            )));
                        }
                        Err(e) => return Err(CommandError::failed_to_parse(format!("invalid BSON in '{field}': {e}"))),
                    }
                }
            }
            Ok(Some(_)) => {
                return Err(CommandError::type_mismatch(format!(
                    "BSON field '{}.{field}' is the wrong type, expected type 'array'",
                    self.name
                )));
            }
            Ok(None) => {}
            Err(e) => return Err(CommandError::failed_to_parse(format!("invalid BSON in '{field}': {e}"))),
        }
        if !found {
            return Err(CommandError::missing_field(format!(
                "BSON field '{}.{field}' is missing but a required field",
                self.name
            )));
        }
        Ok(out)
    }

    /// The value of the command's first field (usually the collection name).
    pub fn first_value(&self) -> Option<&Bson> {
        self.body.get(&self.name)
    }

    /// The collection name given as the command's first value, checked to be a string.
    pub fn collection(&self) -> CommandResult<String> {
        match self.first_value() {
            Some(Bson::String(s)) => Ok(s.clone()),
            Some(other) => Err(CommandError::invalid_namespace(format!(
                "collection name has invalid type {}",
                crate::commands::raw::type_name(other)
            ))),
            None => Err(CommandError::invalid_namespace("collection name missing")),
        }
    }
}

/// A handler's successful answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A typed document (must contain `ok`).
    Doc(Document),
    /// A document already encoded (must contain `ok`).
    Raw(RawDocumentBuf),
}

impl From<Document> for Reply {
    fn from(d: Document) -> Self {
        Reply::Doc(d)
    }
}

impl From<RawDocumentBuf> for Reply {
    fn from(d: RawDocumentBuf) -> Self {
        Reply::Raw(d)
    }
}

impl Reply {
    /// Encodes the reply as raw BSON.
    pub fn into_raw(self) -> CommandResult<RawDocumentBuf> {
        match self {
            Reply::Raw(r) => Ok(r),
            Reply::Doc(d) => RawDocumentBuf::from_document(&d)
                .map_err(|e| CommandError::internal(format!("cannot encode reply: {e}"))),
        }
    }

    /// The reply as a typed document (decoding raw replies).
    pub fn into_document(self) -> CommandResult<Document> {
        match self {
            Reply::Doc(d) => Ok(d),
            Reply::Raw(r) => r
                .to_document()
                .map_err(|e| CommandError::internal(format!("cannot decode reply: {e}"))),
        }
    }
}

/// State shared by all connections of one server.
pub struct ServerState {
    /// The storage engine.
    pub engine: Arc<Engine>,
    /// Open cursors.
    pub cursors: CursorManager,
    /// Startup configuration.
    pub config: ServerConfig,
    /// Command handlers by name.
    pub registry: Registry,
    /// When the server started (for `serverStatus.uptime`).
    pub started: Instant,
    /// Counters reported by `serverStatus`.
    pub stats: Stats,
    /// The persistent store when running with `--dbpath` (journal, checkpoints); `None` in memory.
    pub storage: Option<Arc<crate::storage::Storage>>,
    /// Replica set topology: configuration, member state, read/write rules (inert without `--replSet`).
    pub topology: Arc<crate::repl::topology::ReplCoordinator>,
    /// Oplog writer, term and primary flag shared with replication (see [`crate::repl::ReplState`]).
    pub repl: Arc<crate::repl::ReplState>,
    /// The replica set's shared key (`--keyFile`), for internal authentication as `__system`.
    pub internal_key: Option<Arc<crate::keyfile::InternalKey>>,
    /// Collections still being filled by a loader; reads on them wait (see [`crate::loading`]).
    pub loading: Option<Arc<crate::loading::LoadGate>>,
    next_connection_id: AtomicI64,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServerState {
    /// Creates the shared state over an engine, registering every built-in command.
    pub fn new(mut config: ServerConfig, engine: Arc<Engine>) -> Self {
        // A key file implies --auth, as in mongod. An unusable key file is reported by `main` before this point;
        // here it only disables internal authentication.
        let internal_key = config
            .key_file
            .as_deref()
            .and_then(|p| match crate::keyfile::InternalKey::load(p) {
                Ok(k) => Some(Arc::new(k)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot use the key file");
                    None
                }
            });
        config.auth |= config.key_file.is_some();
        let mut registry = Registry::default();
        handshake::register(&mut registry);
        admin::register(&mut registry);
        crud::register(&mut registry);
        indexes::register(&mut registry);
        crate::auth::register(&mut registry);
        crate::storage::fsync::register(&mut registry);
        replset::register(&mut registry);
        apply_ops::register(&mut registry);
        transactions::register(&mut registry);
        let repl = crate::repl::ReplState::new(&config, &engine);
        let topology = Arc::new(crate::repl::topology::ReplCoordinator::new(
            config.repl_set.clone(),
            format!("{}:{}", config.bind_ip, config.port),
        ));
        topology.attach(Arc::clone(&repl));
        // Read-only: the TTL monitor's deletions would be writes.
        if !config.read_only {
            crate::ttl::spawn_monitor(
                Arc::downgrade(&engine),
                Arc::downgrade(&repl),
                config.ttl_monitor_interval,
            );
        }
        Self {
            topology,
            repl,
            engine,
            cursors: CursorManager::default(),
            config,
            registry,
            started: Instant::now(),
            stats: Stats::default(),
            storage: None,
            internal_key,
            loading: None,
            next_connection_id: AtomicI64::new(1),
        }
    }

    /// Makes reads wait for the collections `gate` lists until a loader has filled them.
    pub fn with_load_gate(mut self, gate: Arc<crate::loading::LoadGate>) -> Self {
        self.loading = Some(gate);
        self
    }

    /// Runs a command on behalf of the server itself (a loader filling a read-only server): no
    /// authentication, authorization, read-only or replica-set checks, no write concern.
    pub fn run_internal(&self, request: &Request) -> CommandResult<Document> {
        let spec = *self
            .registry
            .get(&request.name)
            .ok_or_else(|| CommandError::command_not_found(&request.name))?;
        let mut conn = ConnectionState::default();
        let mut ctx = Ctx {
            server: self,
            conn: &mut conn,
        };
        let reply = (spec.handler)(&mut ctx, request)?.into_document()?;
        // Write commands report per-document failures in `writeErrors` with `ok: 1`.
        if let Ok(errors) = reply.get_array("writeErrors")
            && let Some(Bson::Document(first)) = errors.first()
        {
            let code = first.get_i32("code").unwrap_or(1);
            return Err(CommandError::new(
                code,
                "",
                format!(
                    "{} of the documents failed, the first with: {}",
                    errors.len(),
                    first.get_str("errmsg").unwrap_or("")
                ),
            ));
        }
        Ok(reply)
    }

    /// Attaches the persistence layer (for `fsync` and shutdown checkpoints).
    pub fn with_storage(mut self, storage: Arc<crate::storage::Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Allocates the next connection id (reported by `hello.connectionId`).
    pub fn next_connection_id(&self) -> i64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Server-wide counters (`serverStatus.connections`, `serverStatus.opcounters`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Open connections.
    pub connections_current: AtomicI64,
    /// Connections accepted since start.
    pub connections_total: AtomicI64,
    /// Documents inserted.
    pub op_insert: AtomicI64,
    /// Queries (`find`, `count`, `distinct`, `aggregate`).
    pub op_query: AtomicI64,
    /// Update statements.
    pub op_update: AtomicI64,
    /// Delete statements.
    pub op_delete: AtomicI64,
    /// `getMore` commands.
    pub op_getmore: AtomicI64,
    /// Other commands.
    pub op_command: AtomicI64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicI64, n: usize) {
        counter.fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

/// Per-connection state.
#[derive(Debug, Default)]
pub struct ConnectionState {
    /// Connection id as reported in `hello`.
    pub id: i64,
    /// Authenticated principals of this connection.
    pub auth: AuthState,
    /// Client metadata sent in the first `hello` (`client` field).
    pub client_metadata: Option<Document>,
    /// Compressors both sides agreed on, in the client's order of preference.
    pub compressors: Vec<String>,
    /// Whether the first hello has been seen (client metadata can only be set once).
    pub handshake_done: bool,
    /// Remote address, for logs.
    pub peer: Option<std::net::SocketAddr>,
}

/// What a handler can see: the server and its own connection.
pub struct Ctx<'a> {
    /// Shared server state.
    pub server: &'a ServerState,
    /// This connection's state.
    pub conn: &'a mut ConnectionState,
}

/// A command handler.
pub type Handler = fn(&mut Ctx<'_>, &Request) -> CommandResult<Reply>;

/// How a command interacts with authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequirement {
    /// Runs without authentication (handshake, `ping`, SASL conversation...).
    None,
    /// Requires [`crate::auth::authorize`] to accept the caller.
    Check,
}

/// A registered command.
#[derive(Clone, Copy)]
pub struct CommandSpec {
    /// Canonical name (for aliases, the name the alias points to).
    pub name: &'static str,
    /// The handler.
    pub handler: Handler,
    /// Whether authorization is checked before running it when `--auth` is on.
    pub auth: AuthRequirement,
}

/// Command names to handlers.
#[derive(Default)]
pub struct Registry {
    map: HashMap<String, CommandSpec>,
}

impl Registry {
    /// Registers `handler` under `name` (replacing any previous handler of that name).
    pub fn register(&mut self, name: &'static str, handler: Handler, auth: AuthRequirement) {
        self.map.insert(name.to_string(), CommandSpec { name, handler, auth });
    }

    /// Registers `alias` as another name for `canonical`'s handler.
    pub fn alias(&mut self, alias: &'static str, canonical: &'static str) {
        if let Some(spec) = self.map.get(canonical).copied() {
            self.map.insert(alias.to_string(), spec);
        }
    }

    /// Looks a command up by the exact name sent by the client.
    pub fn get(&self, name: &str) -> Option<&CommandSpec> {
        self.map.get(name)
    }

    /// All registered names (for `listCommands`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}

/// Runs one command: looks it up, checks authorization when enabled, and renders errors as `{ok: 0}`.
pub fn dispatch(ctx: &mut Ctx<'_>, request: &Request) -> RawDocumentBuf {
    let result = run(ctx, request).and_then(Reply::into_raw);
    match result {
        Ok(raw) => raw,
        Err(e) => RawDocumentBuf::from_document(&e.to_document()).unwrap_or_else(|_| {
            // The error message itself could not be encoded (e.g. too large): fall back to a fixed reply.
            let mut r = RawDocumentBuf::new();
            r.append("ok", 0.0);
            r.append("errmsg", "error reply could not be encoded");
            r.append("code", 1);
            r.append("codeName", "InternalError");
            r
        }),
    }
}

fn run(ctx: &mut Ctx<'_>, request: &Request) -> CommandResult<Reply> {
    let spec = *ctx
        .server
        .registry
        .get(&request.name)
        .ok_or_else(|| CommandError::command_not_found(&request.name))?;
    if request.body.contains_key("txnNumber") && ctx.server.config.repl_set.is_none() {
        // A standalone mongod refuses retryable writes and transactions.
        return Err(CommandError::illegal_operation(
            "Transaction numbers are only allowed on a replica set member or mongos",
        ));
    }
    if spec.name == "commitTransaction" || spec.name == "abortTransaction" {
        return (spec.handler)(ctx, request);
    }
    transactions::check(&request.body)?;
    if ctx.server.config.read_only {
        crate::readonly::check(spec.name, &request.body)?;
    }
    if ctx.server.config.auth && spec.auth == AuthRequirement::Check {
        crate::auth::authorize(&ctx.conn.auth, spec.name, &request.db, &request.body)?;
    }
    if let Some(storage) = &ctx.server.storage {
        // Like mongod, `j: true` is refused up front when there is no journal.
        crate::storage::fsync::validate_journal_write_concern(&request.body, storage.journal_enabled())?;
    }
    ctx.server
        .topology
        .check_command(&request.name, &request.db, &request.body)?;
    if let Some(gate) = &ctx.server.loading {
        gate.wait_for_command(spec.name, &request.db, &request.body)?;
    }
    let reply = (spec.handler)(ctx, request)?;
    crate::repl::write_concern::apply(ctx.server, request, reply)
}

/// `{ok: 1.0}` merged after the given fields.
pub fn ok_with(mut d: Document) -> Reply {
    d.insert("ok", 1.0);
    Reply::Doc(d)
}

/// `{ok: 1.0}`.
pub fn ok() -> Reply {
    Reply::Doc(doc! { "ok": 1.0 })
}

/// Reads an optional boolean-ish option (bool or number), as mongod accepts for most flags.
pub fn get_bool(body: &Document, key: &str) -> CommandResult<Option<bool>> {
    match body.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Boolean(b)) => Ok(Some(*b)),
        Some(Bson::Int32(i)) => Ok(Some(*i != 0)),
        Some(Bson::Int64(i)) => Ok(Some(*i != 0)),
        Some(Bson::Double(f)) => Ok(Some(*f != 0.0)),
        Some(other) => Err(CommandError::type_mismatch(format!(
            "BSON field '{key}' is the wrong type '{}', expected types '[bool, long, int, decimal, double']",
            raw::type_name(other)
        ))),
    }
}

/// Reads an optional integer option (any numeric type with an integral value).
pub fn get_i64(body: &Document, key: &str) -> CommandResult<Option<i64>> {
    match body.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(v) => raw::as_i64(v).map(Some).ok_or_else(|| {
            CommandError::type_mismatch(format!(
                "BSON field '{key}' is the wrong type '{}', expected a number",
                raw::type_name(v)
            ))
        }),
    }
}

/// Reads an optional sub-document option.
pub fn get_doc<'a>(body: &'a Document, key: &str) -> CommandResult<Option<&'a Document>> {
    match body.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d)),
        Some(other) => Err(CommandError::type_mismatch(format!(
            "BSON field '{key}' is the wrong type '{}', expected type 'object'",
            raw::type_name(other)
        ))),
    }
}

/// Whether a raw document is at most 16 MiB, the BSON user document limit.
pub fn check_size(doc: &RawDocument) -> CommandResult<()> {
    let len = doc.as_bytes().len();
    if len > crate::MAX_BSON_OBJECT_SIZE {
        return Err(CommandError::bson_object_too_large(format!(
            "object to insert too large. size in bytes: {len}, max size: {}",
            crate::MAX_BSON_OBJECT_SIZE
        )));
    }
    Ok(())
}
