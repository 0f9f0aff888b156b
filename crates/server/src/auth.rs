//! Authentication (SCRAM) and authorization (roles and privileges), as mongod does them under `--auth`.
//!
//! Why this exists: backups of secured deployments carry `admin.system.users`/`system.roles`, and restore
//! drills must prove that those users can log in again with the official drivers and tools. So users are kept
//! in exactly mongod's document shape ([`users`]), clients authenticate with SCRAM-SHA-1/SCRAM-SHA-256
//! ([`scram`], driven by the SASL commands in [`sasl`], including speculative authentication inside `hello`),
//! and every command is checked against the privileges of the connection's user ([`privileges`]).
//!
//! How it fits the server: each connection owns an [`AuthState`]. The command dispatcher calls [`authorize`]
//! before handlers registered with [`crate::commands::AuthRequirement::Check`] when the server runs with
//! `--auth`; the check reads the user's current roles from the engine on every call, so `grantRolesToUser`,
//! `dropUser` or a restore of `admin.system.users` take effect at once on every connection, as in mongod.
//! The user-management commands ([`user_commands`]) are registered by [`register`]; they check their own
//! privileges because the localhost exception (creating the first user over a loopback connection while no
//! user or role exists) depends on the connection's peer address.

pub mod privileges;
pub mod sasl;
pub mod scram;
pub mod user_commands;
pub mod users;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bson::{Bson, Document};

use crate::commands::{AuthRequirement, Ctx, Registry};
use crate::engine::Engine;
use crate::error::{CommandError, CommandResult};
use privileges::{Requirement, Target, allowed, required_privileges};
pub use sasl::hello_hook;
pub use users::{RoleName, UserName};

/// Authentication state of one connection.
#[derive(Debug, Default)]
pub struct AuthState {
    /// Users this connection authenticated as (mongod allows one at a time; kept as a list for `logout`).
    users: Vec<UserName>,
    /// The engine holding `admin.system.users`, attached on the first authentication.
    engine: Option<Arc<Engine>>,
    /// The SASL conversation in progress, if any.
    conversation: Option<sasl::Conversation>,
    /// Last conversation id handed out.
    last_conversation_id: i32,
    /// Whether the peer connected over a loopback interface (learnt at the handshake, see [`hello_hook`]).
    peer_is_local: bool,
    /// Whether the connection authenticated as the internal `__system` user with the key file.
    internal: bool,
}

impl AuthState {
    /// The authenticated users of this connection.
    pub fn users(&self) -> &[UserName] {
        &self.users
    }

    /// Whether the connection is another member authenticated as `__system` with the key file (every
    /// privilege).
    pub fn is_internal(&self) -> bool {
        self.internal && self.users.iter().any(crate::keyfile::InternalKey::is_system_user)
    }

    /// Marks the connection as authenticated with the key file (see [`crate::keyfile`]).
    pub fn set_internal(&mut self, internal: bool) {
        self.internal = internal;
    }

    /// Whether at least one user is authenticated.
    pub fn is_authenticated(&self) -> bool {
        !self.users.is_empty()
    }

    /// Records a successful authentication (replacing any earlier user: one user per connection).
    pub fn set_authenticated(&mut self, user: UserName, engine: Arc<Engine>) {
        self.users.retain(|u| u == &user);
        if self.users.is_empty() {
            self.users.push(user);
        }
        self.engine = Some(engine);
    }

    /// Records what the localhost exception needs to know about the connection: whether the peer is a loopback
    /// address (or an in-process caller), and where users are stored.
    pub fn observe_connection(&mut self, peer: Option<std::net::SocketAddr>, engine: &Arc<Engine>) {
        self.peer_is_local = peer.is_none_or(|p| p.ip().is_loopback());
        if self.engine.is_none() {
            self.engine = Some(Arc::clone(engine));
        }
    }

    /// Whether the localhost exception is open for this connection: nobody authenticated, a loopback peer, and
    /// no user or role defined yet.
    pub fn localhost_exception(&self) -> bool {
        !self.is_authenticated()
            && self.peer_is_local
            && self.engine.as_ref().is_some_and(|e| !e.read(users::any_user_or_role))
    }

    /// Logs out every user authenticated on `db` (the `logout` command).
    pub fn logout(&mut self, db: &str) {
        self.users.retain(|u| u.db != db);
        self.conversation = None;
    }

    /// The roles and privileges the authenticated users hold right now.
    pub fn resolved(&self) -> users::Resolved {
        let Some(engine) = &self.engine else {
            return users::Resolved::default();
        };
        engine.read(|catalog| {
            let mut roles = Vec::new();
            for u in &self.users {
                if let Some(d) = users::find_user(catalog, u) {
                    roles.extend(users::roles_of(&d));
                }
            }
            users::resolve(catalog, &roles)
        })
    }
}

/// Registers the SASL and user-management commands with the dispatcher.
pub fn register(registry: &mut Registry) {
    registry.register("saslStart", sasl::sasl_start, AuthRequirement::None);
    registry.register("saslContinue", sasl::sasl_continue, AuthRequirement::None);
    registry.register("logout", sasl::logout, AuthRequirement::None);
    registry.register("connectionStatus", sasl::connection_status, AuthRequirement::None);
    user_commands::register(registry);
}

/// Largest rendering of a command body in an Unauthorized message (mongod's messages are not meant to carry
/// megabytes of inserted documents either).
const MAX_RENDERED_COMMAND: usize = 2048;

/// Renders a value as mongod's `BSONObj::toString` does in Unauthorized messages (`{ find: "c", lsid: { id:
/// UUID("...") }, $db: "app" }`).
fn render(v: &Bson, out: &mut String) {
    match v {
        Bson::Document(d) => {
            if d.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{ ");
            for (i, (k, v)) in d.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push_str(": ");
                render(v, out);
            }
            out.push_str(" }");
        }
        Bson::Array(items) => {
            out.push_str("[ ");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(v, out);
            }
            out.push_str(" ]");
        }
        Bson::Binary(b) if b.subtype == bson::spec::BinarySubtype::Uuid && b.bytes.len() == 16 => {
            match uuid::Uuid::from_slice(&b.bytes) {
                Ok(u) => out.push_str(&format!("UUID(\"{u}\")")),
                Err(_) => out.push_str(&crate::engine::collection::shell_repr(v)),
            }
        }
        other => out.push_str(&crate::engine::collection::shell_repr(other)),
    }
}

fn render_command(body: &Document) -> String {
    let mut s = String::new();
    render(&Bson::Document(body.clone()), &mut s);
    if s.len() > MAX_RENDERED_COMMAND {
        let mut cut = MAX_RENDERED_COMMAND;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" ... }");
    }
    s
}

/// Checks that the connection may run `command` (its registered name) on `db` with `body`.
///
/// Errors are Unauthorized (13) with mongod's messages: `command <name> requires authentication` when nobody is
/// logged in, `not authorized on <db> to execute command { ... }` when the user lacks a privilege.
pub fn authorize(state: &AuthState, command: &str, db: &str, body: &Document) -> CommandResult<()> {
    let requirement = required_privileges(command, db, body);
    if requirement == Requirement::Nothing || state.is_internal() {
        return Ok(());
    }
    if !state.is_authenticated() {
        // The localhost exception also lets the first connection initiate a replica set (manual: "Localhost
        // Exception"); createUser/createRole apply it in their handlers, which also check the database.
        if command == "replSetInitiate" && state.localhost_exception() {
            return Ok(());
        }
        return Err(CommandError::unauthorized(format!(
            "command {command} requires authentication"
        )));
    }
    let needed = match requirement {
        Requirement::Nothing | Requirement::Authenticated => return Ok(()),
        Requirement::Actions(v) => v,
        Requirement::SelfOr { users, own, other } => {
            let about_self = users
                .iter()
                .all(|(u, d)| state.users.iter().any(|a| &a.user == u && &a.db == d));
            if about_self { own } else { other }
        }
    };
    let resolved = state.resolved();
    if needed
        .iter()
        .all(|(target, action)| allowed(&resolved.privileges, target, action))
    {
        Ok(())
    } else {
        Err(CommandError::unauthorized(format!(
            "not authorized on {db} to execute command {}",
            render_command(body)
        )))
    }
}

/// [`authorize`] for handlers that check their own privileges: a no-op without `--auth`.
pub fn check(ctx: &Ctx<'_>, command: &str, db: &str, body: &Document) -> CommandResult<()> {
    if !ctx.server.config.auth {
        return Ok(());
    }
    authorize(&ctx.conn.auth, command, db, body)
}

/// Whether the authenticated users of `state` may perform `action` on `target` (for handlers that filter
/// their output, e.g. `listDatabases` with `authorizedDatabases`).
pub fn is_allowed(state: &AuthState, target: &Target, action: &str) -> bool {
    state.is_internal() || allowed(&state.resolved().privileges, target, action)
}

/// Which databases `listDatabases` shows a connection (mongod 4.0.6+ semantics of `authorizedDatabases`).
#[derive(Debug, Clone)]
pub struct DatabaseFilter {
    all: bool,
    privileges: Vec<privileges::Privilege>,
}

impl DatabaseFilter {
    /// Whether `db` is listed.
    pub fn allows(&self, db: &str) -> bool {
        use privileges::Resource;
        self.all
            || self.privileges.iter().any(|p| match &p.resource {
                Resource::AnyResource | Resource::AnyNormal => true,
                Resource::Database(d) | Resource::Collection(d, _) => d == db,
                Resource::Cluster | Resource::CollectionInAnyDb(_) => false,
            })
    }
}

/// The `listDatabases` visibility rule: without `--auth`, or for users holding the cluster `listDatabases`
/// action (unless `authorizedDatabases: true`), every database; otherwise only the databases the user has some
/// privilege on. `authorizedDatabases: false` without the `listDatabases` action is Unauthorized (13).
/// Must not be called while holding the engine lock.
pub fn list_databases_filter(ctx: &Ctx<'_>, body: &Document) -> CommandResult<DatabaseFilter> {
    if !ctx.server.config.auth {
        return Ok(DatabaseFilter {
            all: true,
            privileges: Vec::new(),
        });
    }
    let requested = crate::commands::get_bool(body, "authorizedDatabases")?;
    let resolved = ctx.conn.auth.resolved();
    let has_action = allowed(&resolved.privileges, &Target::Cluster, "listDatabases");
    match (requested, has_action) {
        (Some(false), false) => Err(CommandError::unauthorized(format!(
            "not authorized on admin to execute command {}",
            render_command(body)
        ))),
        (Some(true), _) | (None, false) => Ok(DatabaseFilter {
            all: false,
            privileges: resolved.privileges,
        }),
        (_, true) => Ok(DatabaseFilter {
            all: true,
            privileges: Vec::new(),
        }),
    }
}
