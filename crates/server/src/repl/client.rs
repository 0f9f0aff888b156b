//! A minimal internal client that members use to talk to each other (heartbeats, oplog fetching, position
//! updates): one TCP connection, one OP_MSG command at a time, framed and parsed by `tidemark-wire`.
//!
//! Members need no handshake with each other (this server answers commands on a fresh connection), so the
//! client is a few lines over the wire codec rather than a full driver with its own monitoring; every call has
//! a timeout so a dead peer never stalls the caller.

use std::time::Duration;

use bson::{Document, RawDocumentBuf};
use bytes::BytesMut;
use tidemark_wire::{Message, OpMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Errors of the internal client, naming the peer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("{host}: {source}")]
    Io {
        /// Peer.
        host: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The peer did not answer in time.
    #[error("{host}: no reply within {timeout:?}")]
    Timeout {
        /// Peer.
        host: String,
        /// The limit.
        timeout: Duration,
    },
    /// The reply could not be decoded.
    #[error("{host}: malformed reply: {message}")]
    Protocol {
        /// Peer.
        host: String,
        /// What was wrong.
        message: String,
    },
    /// The command failed (`ok: 0`).
    #[error("{host}: command failed: {code_name} ({code}): {errmsg}")]
    Command {
        /// Peer.
        host: String,
        /// Error code.
        code: i32,
        /// Code name.
        code_name: String,
        /// Message.
        errmsg: String,
    },
}

/// One connection to another member.
#[derive(Debug)]
pub struct PeerConnection {
    host: String,
    stream: TcpStream,
    buf: BytesMut,
    next_id: i32,
}

impl PeerConnection {
    /// Connects to `host` (`host:port`) within `timeout`.
    pub async fn connect(host: &str, timeout: Duration) -> Result<Self, ClientError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(host)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ClientError::Io {
                    host: host.to_string(),
                    source,
                });
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    host: host.to_string(),
                    timeout,
                });
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(Self {
            host: host.to_string(),
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            next_id: 1,
        })
    }

    /// The peer's `host:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Runs `command` against database `db` and returns the reply; `ok: 0` replies become
    /// [`ClientError::Command`].
    pub async fn run(&mut self, db: &str, mut command: Document, timeout: Duration) -> Result<Document, ClientError> {
        command.insert("$db", db);
        let proto = |message: String| ClientError::Protocol {
            host: self.host.clone(),
            message,
        };
        let raw = RawDocumentBuf::from_document(&command).map_err(|e| proto(format!("cannot encode command: {e}")))?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = tidemark_wire::encode_op_msg(id, 0, &OpMsg::new(raw), None)
            .map_err(|e| proto(format!("cannot encode message: {e}")))?;
        let host = self.host.clone();
        let exchange = async {
            self.stream.write_all(&bytes).await.map_err(|source| ClientError::Io {
                host: host.clone(),
                source,
            })?;
            loop {
                match tidemark_wire::decode(&mut self.buf, crate::MAX_MESSAGE_SIZE_BYTES) {
                    Ok(Some(decoded)) => return Ok(decoded),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(ClientError::Protocol {
                            host: host.clone(),
                            message: e.to_string(),
                        });
                    }
                }
                let n = self
                    .stream
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|source| ClientError::Io {
                        host: host.clone(),
                        source,
                    })?;
                if n == 0 {
                    return Err(ClientError::Io {
                        host: host.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"),
                    });
                }
            }
        };
        let decoded = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Timeout {
                    host: self.host.clone(),
                    timeout,
                });
            }
        };
        let Message::Msg(msg) = decoded.message else {
            return Err(ClientError::Protocol {
                host: self.host.clone(),
                message: "reply is not OP_MSG".into(),
            });
        };
        let reply = msg.body.to_document().map_err(|e| ClientError::Protocol {
            host: self.host.clone(),
            message: format!("invalid BSON: {e}"),
        })?;
        let ok = match reply.get("ok") {
            Some(bson::Bson::Double(f)) => *f == 1.0,
            Some(bson::Bson::Int32(i)) => *i == 1,
            Some(bson::Bson::Int64(i)) => *i == 1,
            Some(bson::Bson::Boolean(b)) => *b,
            _ => false,
        };
        if !ok {
            return Err(ClientError::Command {
                host: self.host.clone(),
                code: reply.get_i32("code").unwrap_or(0),
                code_name: reply.get_str("codeName").unwrap_or_default().to_string(),
                errmsg: reply.get_str("errmsg").unwrap_or_default().to_string(),
            });
        }
        Ok(reply)
    }
}
