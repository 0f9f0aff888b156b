//! The SASL commands (`saslStart`, `saslContinue`), speculative authentication in `hello`, `logout` and
//! `connectionStatus`.
//!
//! A SCRAM login is a SASL conversation driven by the client:
//! `saslStart {mechanism, payload: BinData(0, client-first), options: {skipEmptyExchange: true}}` →
//! `{conversationId, done: false, payload: server-first}`, then `saslContinue {conversationId, payload:
//! client-final}` → `{done: true, payload: "v=<server signature>"}`. Without `skipEmptyExchange` the server
//! answers `done: false` there and the client sends one more empty `saslContinue`, answered `done: true`
//! (the older four-message form that drivers must still accept). Drivers usually fold the `saslStart` into the
//! connection handshake: `hello {speculativeAuthenticate: {saslStart: 1, mechanism, payload, db, options}}`,
//! answered with a `speculativeAuthenticate` field holding the `saslStart` reply, or no field at all if it
//! failed (the driver then reports the failure through an ordinary conversation). `hello {saslSupportedMechs:
//! "<db>.<user>"}` lists the mechanisms that user has credentials for, which is how drivers pick
//! SCRAM-SHA-256 over SCRAM-SHA-1. Every failure of the proof, or an unknown user, is AuthenticationFailed
//! (18) "Authentication failed.", so the error does not reveal whether the user exists.

use bson::{Binary, Bson, Document, doc, spec::BinarySubtype};

use super::scram::{ClientFirst, Mechanism, ScramError, ScramServer};
use super::users::{self, UserName};
use crate::commands::{Ctx, Reply, Request, get_bool, ok_with};
use crate::error::{CommandError, CommandResult};

/// A conversation waiting for the client's next message.
#[derive(Debug, Clone)]
pub struct Conversation {
    id: i32,
    user: UserName,
    server: ScramServer,
    skip_empty_exchange: bool,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the client-final message with the proof.
    ClientFinal,
    /// Proof accepted, server signature sent; waiting for the client's empty message.
    EmptyExchange,
}

fn auth_failed() -> CommandError {
    CommandError::new(18, "AuthenticationFailed", "Authentication failed.")
}

fn mechanism_unavailable(message: String) -> CommandError {
    CommandError::new(334, "MechanismUnavailable", message)
}

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

/// The `payload` of a SASL command: BinData (any subtype), or a base64 string as legacy shells send.
fn payload(body: &Document, command: &str) -> CommandResult<Vec<u8>> {
    use base64::Engine as _;
    match body.get("payload") {
        Some(Bson::Binary(b)) => Ok(b.bytes.clone()),
        Some(Bson::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| CommandError::bad_value(format!("{command}: payload string is not valid base64"))),
        Some(_) => Err(CommandError::type_mismatch(format!(
            "BSON field '{command}.payload' is the wrong type, expected types '[string, binData']"
        ))),
        None => Err(CommandError::missing_field(format!(
            "BSON field '{command}.payload' is missing but a required field"
        ))),
    }
}

/// Runs the server side of `saslStart` (also used for speculative authentication); returns the reply fields
/// `{conversationId, done, payload}`.
fn start(ctx: &mut Ctx<'_>, db: &str, body: &Document) -> CommandResult<Document> {
    let mechanism_name = match body.get("mechanism") {
        Some(Bson::String(s)) => s.clone(),
        Some(_) => {
            return Err(CommandError::type_mismatch(
                "BSON field 'saslStart.mechanism' is the wrong type, expected type 'string'",
            ));
        }
        None => {
            return Err(CommandError::missing_field(
                "BSON field 'saslStart.mechanism' is missing but a required field",
            ));
        }
    };
    let Some(mechanism) = Mechanism::from_name(&mechanism_name) else {
        return Err(mechanism_unavailable(format!(
            "Received authentication for mechanism {mechanism_name} which is not enabled"
        )));
    };
    let skip_empty_exchange = match body.get("options") {
        Some(Bson::Document(o)) => get_bool(o, "skipEmptyExchange")?.unwrap_or(false),
        _ => false,
    };
    let client_first = ClientFirst::parse(&payload(body, "saslStart")?).map_err(|e| match e {
        ScramError::Malformed(m) => CommandError::bad_value(m),
        _ => auth_failed(),
    })?;
    let user = UserName::new(client_first.user.clone(), db);
    ctx.conn.auth.conversation = None;
    if crate::keyfile::InternalKey::is_system_user(&user)
        && let Some(key) = &ctx.server.internal_key
    {
        // The internal user's credentials come from the key file, never from system.users.
        let Some(credential) = key.credential(mechanism) else {
            return Err(auth_failed());
        };
        let (server, server_first) = ScramServer::start(client_first, credential);
        let id = ctx.conn.auth.last_conversation_id.checked_add(1).unwrap_or(1);
        ctx.conn.auth.last_conversation_id = id;
        ctx.conn.auth.conversation = Some(Conversation {
            id,
            user,
            server,
            skip_empty_exchange,
            stage: Stage::ClientFinal,
        });
        return Ok(doc! { "conversationId": id, "done": false, "payload": binary(server_first) });
    }
    let user_doc = ctx.server.engine.read(|catalog| users::find_user(catalog, &user));
    let Some(user_doc) = user_doc else {
        tracing::info!(user = %user, mechanism = %mechanism, "authentication failed: user not found");
        return Err(auth_failed());
    };
    let Some(credential) = users::credential_of(&user_doc, mechanism) else {
        return Err(mechanism_unavailable(format!(
            "Unable to use {mechanism} based authentication for user without any {mechanism} credentials registered"
        )));
    };
    let (server, server_first) = ScramServer::start(client_first, credential);
    let id = ctx.conn.auth.last_conversation_id.checked_add(1).unwrap_or(1);
    ctx.conn.auth.last_conversation_id = id;
    ctx.conn.auth.conversation = Some(Conversation {
        id,
        user,
        server,
        skip_empty_exchange,
        stage: Stage::ClientFinal,
    });
    Ok(doc! { "conversationId": id, "done": false, "payload": binary(server_first) })
}

/// `saslStart`.
pub fn sasl_start(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let db = req.db.clone();
    let reply = start(ctx, &db, &req.body)?;
    Ok(ok_with(reply))
}

/// `saslContinue`.
pub fn sasl_continue(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let id = match req.body.get("conversationId") {
        Some(v) => crate::commands::raw::as_i64(v)
            .ok_or_else(|| CommandError::type_mismatch("BSON field 'saslContinue.conversationId' is the wrong type"))?,
        None => {
            return Err(CommandError::missing_field(
                "BSON field 'saslContinue.conversationId' is missing but a required field",
            ));
        }
    };
    let message = payload(&req.body, "saslContinue")?;
    let Some(conv) = ctx.conn.auth.conversation.take() else {
        return Err(CommandError::new(17, "ProtocolError", "No SASL session state found"));
    };
    if i64::from(conv.id) != id {
        return Err(CommandError::new(
            17,
            "ProtocolError",
            "Requested conversation id is not the active conversation",
        ));
    }
    if conv.user.db != req.db {
        return Err(CommandError::new(
            17,
            "ProtocolError",
            "Attempt to switch database target during SASL authentication.",
        ));
    }
    match conv.stage {
        Stage::ClientFinal => {
            let server_final = match conv.server.finish(&message) {
                Ok(v) => v,
                Err(e) => {
                    tracing::info!(user = %conv.user, error = %e, "authentication failed");
                    return Err(auth_failed());
                }
            };
            if conv.skip_empty_exchange {
                finish(ctx, &conv.user);
                Ok(ok_with(
                    doc! { "conversationId": conv.id, "done": true, "payload": binary(server_final) },
                ))
            } else {
                let reply = doc! { "conversationId": conv.id, "done": false, "payload": binary(server_final) };
                ctx.conn.auth.conversation = Some(Conversation {
                    stage: Stage::EmptyExchange,
                    ..conv
                });
                Ok(ok_with(reply))
            }
        }
        Stage::EmptyExchange => {
            if !message.is_empty() {
                return Err(CommandError::bad_value("SCRAM final client message must be empty"));
            }
            finish(ctx, &conv.user);
            Ok(ok_with(
                doc! { "conversationId": conv.id, "done": true, "payload": binary(Vec::new()) },
            ))
        }
    }
}

fn finish(ctx: &mut Ctx<'_>, user: &UserName) {
    tracing::info!(user = %user, "successfully authenticated");
    ctx.conn.auth.set_authenticated(user.clone(), ctx.server.engine.clone());
    let internal = ctx.server.internal_key.is_some() && crate::keyfile::InternalKey::is_system_user(user);
    ctx.conn.auth.set_internal(internal);
}

/// Adds the authentication fields of a `hello`/`isMaster` reply: `saslSupportedMechs` for the user named in
/// the request, and `speculativeAuthenticate` with the first SCRAM step. Also records the peer for the
/// localhost exception. The handshake handler calls this with
/// the request body and its reply under construction.
pub fn hello_hook(ctx: &mut Ctx<'_>, body: &Document, reply: &mut Document) {
    let peer = ctx.conn.peer;
    ctx.conn.auth.observe_connection(peer, &ctx.server.engine);
    if let Some(Bson::String(name)) = body.get("saslSupportedMechs")
        && let Some((db, user)) = name.split_once('.')
    {
        let user = UserName::new(user, db);
        let mechs = ctx
            .server
            .engine
            .read(|catalog| users::find_user(catalog, &user).map(|d| users::mechanisms_of(&d)));
        if let Some(mechs) = mechs {
            reply.insert(
                "saslSupportedMechs",
                mechs
                    .iter()
                    .map(|m| Bson::String(m.name().to_string()))
                    .collect::<Vec<_>>(),
            );
        }
    }
    if let Some(Bson::Document(spec)) = body.get("speculativeAuthenticate")
        && spec.contains_key("saslStart")
    {
        let db = spec.get_str("db").unwrap_or("admin").to_string();
        match start(ctx, &db, spec) {
            Ok(r) => {
                reply.insert("speculativeAuthenticate", r);
            }
            Err(e) => tracing::debug!(error = %e, "speculative authentication failed"),
        }
    }
}

/// `logout`: forgets the users authenticated on the command's database.
pub fn logout(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    ctx.conn.auth.logout(&req.db);
    Ok(ok_with(Document::new()))
}

/// `connectionStatus`: the connection's users and roles (and privileges with `showPrivileges: true`).
pub fn connection_status(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let show_privileges = get_bool(&req.body, "showPrivileges")?.unwrap_or(false);
    let state = &ctx.conn.auth;
    let resolved = state.resolved();
    let users: Vec<Bson> = state.users().iter().map(|u| Bson::Document(u.to_document())).collect();
    let roles: Vec<Bson> = resolved.roles.iter().map(|r| Bson::Document(r.to_document())).collect();
    let mut info = doc! { "authenticatedUsers": users, "authenticatedUserRoles": roles };
    if show_privileges {
        let privs: Vec<Bson> = resolved
            .privileges
            .iter()
            .map(|p| Bson::Document(p.to_document()))
            .collect();
        info.insert("authenticatedUserPrivileges", privs);
    }
    Ok(ok_with(doc! { "authInfo": info }))
}
