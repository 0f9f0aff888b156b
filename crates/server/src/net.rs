//! The network layer: accept loop and one task per connection.
//!
//! Each connection reads bytes into a buffer and lets `tidemark-wire` cut complete messages out of it. A
//! command runs on tokio's blocking pool (handlers may wait on the engine lock or a journal fsync) with the
//! connection's state moved in and back out, so one connection's commands run strictly in order. Replies
//! go back as OP_MSG, or as OP_REPLY for the legacy OP_QUERY handshake; a request that arrived compressed is
//! answered with the same compressor (never for the handshake and authentication commands, per the
//! compression specification). A malformed or oversized message closes that connection with a logged
//! reason; other connections are unaffected.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bson::{RawDocumentBuf, doc};
use bytes::BytesMut;
use tidemark_wire::{Compressor, FLAG_MORE_TO_COME, Message, OpMsg, OpQuery};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::commands::{ConnectionState, Ctx, Request, ServerState, Stats, dispatch};
use crate::error::CommandError;

/// Accepts connections until `shutdown` completes.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, shutdown: impl Future<Output = ()>) {
    // Replica set members run heartbeats and oplog fetching while they serve.
    crate::repl::sync::start(&state);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        handle_connection(stream, peer, state).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    state.topology.stop();
}

/// Decrements the open-connection gauge when a connection task ends, however it ends.
struct ConnectionGuard<'a>(&'a ServerState);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0
            .stats
            .connections_current
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves one client connection until it closes or sends something malformed.
pub async fn handle_connection(mut stream: TcpStream, peer: SocketAddr, state: Arc<ServerState>) {
    let _ = stream.set_nodelay(true);
    Stats::add(&state.stats.connections_current, 1);
    Stats::add(&state.stats.connections_total, 1);
    let _guard = ConnectionGuard(&state);
    let mut conn = ConnectionState {
        id: state.next_connection_id(),
        peer: Some(peer),
        ..ConnectionState::default()
    };
    tracing::debug!(%peer, connection = conn.id, "connection accepted");
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut next_request_id: i32 = 1;
    loop {
        loop {
            let decoded = match tidemark_wire::decode(&mut buf, state.config.max_message_size) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, connection = conn.id, error = %e, "closing connection: malformed message");
                    return;
                }
            };
            let request_id = decoded.header.request_id;
            let (reply_bytes, state_back) = match decoded.message {
                Message::Msg(msg) => {
                    let more_to_come = msg.flags & FLAG_MORE_TO_COME != 0;
                    let (reply, c, name) = run_blocking(&state, conn, op_msg_request(msg)).await;
                    conn = match c {
                        Some(c) => c,
                        None => return,
                    };
                    if more_to_come {
                        // Unacknowledged write (w: 0): the client expects no reply.
                        continue;
                    }
                    let compressor = decoded
                        .compressor
                        .filter(|_| tidemark_wire::is_compressible_command(&name));
                    let bytes = if compressor.is_none() && reply.as_bytes().len() >= UNCOPIED_BODY {
                        tidemark_wire::op_msg_body_prefix(next_request_id, request_id, reply.as_bytes().len())
                            .map(|prefix| Outgoing::Parts(prefix, reply))
                    } else {
                        encode_msg(next_request_id, request_id, reply, compressor.as_ref()).map(Outgoing::Whole)
                    };
                    (bytes, ())
                }
                Message::Query(q) => {
                    let (request, legacy_error) = op_query_request(&q);
                    let reply = match (request, legacy_error) {
                        (_, Some(err)) => err,
                        (request, None) => {
                            let (reply, c, _) = run_blocking(&state, conn, request).await;
                            conn = match c {
                                Some(c) => c,
                                None => return,
                            };
                            reply
                        }
                    };
                    let flags = if reply.get("$err").ok().flatten().is_some() {
                        2
                    } else {
                        0
                    };
                    let bytes = tidemark_wire::encode_op_reply(next_request_id, request_id, flags, 0, 0, &[reply]);
                    (Ok(Outgoing::Whole(bytes)), ())
                }
            };
            let () = state_back;
            next_request_id = next_request_id.wrapping_add(1);
            match reply_bytes {
                Ok(outgoing) => {
                    let written = match &outgoing {
                        Outgoing::Whole(bytes) => stream.write_all(bytes).await,
                        Outgoing::Parts(prefix, body) => match stream.write_all(prefix).await {
                            Ok(()) => stream.write_all(body.as_bytes()).await,
                            Err(e) => Err(e),
                        },
                    };
                    if let Err(e) = written {
                        tracing::debug!(%peer, error = %e, "write failed; closing connection");
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot encode reply; closing connection");
                    return;
                }
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => {
                tracing::debug!(%peer, connection = conn.id, "connection closed by client");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "read failed; closing connection");
                return;
            }
        }
    }
}

/// Reply bodies from this size on (cursor batches) are written after a prefix instead of being
/// copied into one message buffer first.
const UNCOPIED_BODY: usize = 64 * 1024;

/// A reply ready to be written.
enum Outgoing {
    /// A whole encoded message.
    Whole(Vec<u8>),
    /// The `OP_MSG` prefix, then the body's own bytes.
    Parts([u8; tidemark_wire::OP_MSG_BODY_PREFIX_LEN], RawDocumentBuf),
}

fn encode_msg(
    request_id: i32,
    response_to: i32,
    reply: RawDocumentBuf,
    compressor: Option<&Compressor>,
) -> Result<Vec<u8>, tidemark_wire::WireError> {
    tidemark_wire::encode_op_msg(request_id, response_to, &OpMsg::new(reply), compressor)
}

fn op_msg_request(msg: OpMsg) -> Result<Request, CommandError> {
    let sequences = msg.sequences.into_iter().map(|s| (s.identifier, s.documents)).collect();
    Request::from_raw(None, msg.body, sequences)
}

/// Turns an OP_QUERY into a command request; legacy (non-command) queries get an OP_REPLY `$err` at once.
fn op_query_request(q: &OpQuery) -> (Result<Request, CommandError>, Option<RawDocumentBuf>) {
    if !q.is_command() {
        let err = doc! { "$err": "Unsupported OP_QUERY command: find. The client driver may require an upgrade.", "code": 5739101, "ok": 0.0 };
        return (
            Err(CommandError::internal("legacy query")),
            RawDocumentBuf::from_document(&err).ok(),
        );
    }
    // Drivers may wrap the command as {$query: {...}, $readPreference: ...}.
    let body = match q.query.get_document("$query") {
        Ok(inner) => inner.to_raw_document_buf(),
        Err(_) => q.query.clone(),
    };
    let request = Request::from_raw(Some(q.database()), body, Vec::new());
    if let Ok(r) = &request
        && !matches!(r.name.as_str(), "hello" | "isMaster" | "ismaster")
    {
        let err = CommandError::new(
            352,
            "UnsupportedOpQueryCommand",
            format!(
                "Unsupported OP_QUERY command: {}. The client driver may require an upgrade.",
                r.name
            ),
        );
        return (Err(err.clone()), RawDocumentBuf::from_document(&err.to_document()).ok());
    }
    (request, None)
}

/// Runs one request on the blocking pool; returns the reply, the connection state (None if the handler
/// panicked, which ends the connection) and the command name.
async fn run_blocking(
    state: &Arc<ServerState>,
    mut conn: ConnectionState,
    request: Result<Request, CommandError>,
) -> (RawDocumentBuf, Option<ConnectionState>, String) {
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            let reply = RawDocumentBuf::from_document(&e.to_document()).unwrap_or_default();
            return (reply, Some(conn), String::new());
        }
    };
    let name = request.name.clone();
    let counted = matches!(
        name.as_str(),
        "find" | "insert" | "update" | "delete" | "getMore" | "count" | "distinct" | "aggregate"
    );
    if !counted {
        Stats::add(&state.stats.op_command, 1);
    }
    let state2 = Arc::clone(state);
    let joined = tokio::task::spawn_blocking(move || {
        let reply = {
            let mut ctx = Ctx {
                server: &state2,
                conn: &mut conn,
            };
            dispatch(&mut ctx, &request)
        };
        (reply, conn)
    })
    .await;
    match joined {
        Ok((reply, conn)) => (reply, Some(conn), name),
        Err(e) => {
            tracing::error!(command = %name, error = %e, "command handler failed; closing connection");
            (RawDocumentBuf::new(), None, name)
        }
    }
}
