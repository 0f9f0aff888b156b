//! MongoDB wire protocol framing, without I/O: bytes in, messages out, and back.
//!
//! A MongoDB connection carries length-prefixed messages. Every message starts with a 16-byte
//! header (`messageLength`, `requestID`, `responseTo`, `opCode`, all little-endian int32). This
//! crate understands the opcodes a server meets today:
//!
//! * [`OP_MSG`] (2013): every command and reply ([`OpMsg`], body plus document sequences);
//! * [`OP_QUERY`] (2004): only the legacy handshake `isMaster` of drivers without a Stable API
//!   version ([`OpQuery`]), answered with [`OP_REPLY`] (1) built by [`encode_op_reply`];
//! * [`OP_COMPRESSED`] (2012): any of the above compressed with zlib or zstd ([`Compressor`]),
//!   unwrapped transparently by [`decode`].
//!
//! Also here: [`OpMsg::command_document`] (body and document sequences merged the way the server
//! reads them), [`decode_op_reply`] (for clients and tests), [`encode_op_query`], and
//! [`is_compressible_command`] (the commands the compression specification never compresses).
//!
//! [`decode`] follows the usual streaming shape: it looks at a [`bytes::BytesMut`] that a
//! connection task fills from its socket and returns `Ok(None)` until one whole message is there,
//! then removes exactly that message from the buffer and returns it parsed. Nothing is read from
//! the wire that has not been checked against the bytes actually present and against the
//! configured maximum message size, so hostile input yields a [`WireError`] that names the field
//! and byte offset at fault, never a panic or an oversized allocation.
//!
//! ```
//! use bytes::BytesMut;
//! use tidemark_wire::{DEFAULT_MAX_MESSAGE_SIZE, Message, OpMsg, decode, encode_op_msg};
//!
//! let request = OpMsg::new(bson::rawdoc! { "ping": 1, "$db": "admin" });
//! let bytes = encode_op_msg(7, 0, &request, None).unwrap();
//! let mut buf = BytesMut::from(&bytes[..5]);
//! assert!(decode(&mut buf, DEFAULT_MAX_MESSAGE_SIZE).unwrap().is_none()); // incomplete
//! buf.extend_from_slice(&bytes[5..]);
//! let decoded = decode(&mut buf, DEFAULT_MAX_MESSAGE_SIZE).unwrap().unwrap();
//! assert_eq!(decoded.header.request_id, 7);
//! assert!(matches!(decoded.message, Message::Msg(msg) if msg == request));
//! assert!(buf.is_empty());
//! ```

mod codec;
mod compression;
mod elements;
mod error;
mod op_msg;
mod op_query;
mod op_reply;
mod reader;

pub use codec::{
    Decoded, Message, OP_MSG_BODY_PREFIX_LEN, decode, decode_message, encode_op_msg, is_compressible_command,
    op_msg_body_prefix,
};
pub use compression::{COMPRESSOR_ID_NOOP, COMPRESSOR_ID_SNAPPY, COMPRESSOR_ID_ZLIB, COMPRESSOR_ID_ZSTD, Compressor};
pub use elements::{Element, TopLevel};
pub use error::WireError;
pub use op_msg::{DocumentSequence, FLAG_CHECKSUM_PRESENT, FLAG_EXHAUST_ALLOWED, FLAG_MORE_TO_COME, OpMsg};
pub use op_query::{OpQuery, encode_op_query};
pub use op_reply::{OpReply, REPLY_FLAG_AWAIT_CAPABLE, REPLY_FLAG_QUERY_FAILURE, decode_op_reply, encode_op_reply};
pub use reader::MAX_BSON_DEPTH;

/// Opcode of the legacy reply to `OP_QUERY`.
pub const OP_REPLY: i32 = 1;
/// Opcode of the legacy query (used for the first handshake message).
pub const OP_QUERY: i32 = 2004;
/// Opcode of a compressed message wrapping another opcode.
pub const OP_COMPRESSED: i32 = 2012;
/// Opcode of the extensible message used for all commands and replies.
pub const OP_MSG: i32 = 2013;

/// Length of the standard message header.
pub const HEADER_LEN: usize = 16;
/// `maxMessageSizeBytes` that MongoDB servers advertise in `hello` (48 000 000).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 48_000_000;

/// The standard header that starts every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Total message size in bytes, header included.
    pub message_length: i32,
    /// Identifier chosen by the sender.
    pub request_id: i32,
    /// `requestID` of the message this one answers (0 for requests).
    pub response_to: i32,
    /// Message type.
    pub op_code: i32,
}

/// Name of an opcode in the wire protocol reference, for messages.
pub fn op_code_name(op_code: i32) -> &'static str {
    match op_code {
        OP_REPLY => "OP_REPLY",
        2001 => "OP_UPDATE",
        2002 => "OP_INSERT",
        2003 => "reserved",
        OP_QUERY => "OP_QUERY",
        2005 => "OP_GET_MORE",
        2006 => "OP_DELETE",
        2007 => "OP_KILL_CURSORS",
        2010 => "OP_COMMAND",
        2011 => "OP_COMMANDREPLY",
        OP_COMPRESSED => "OP_COMPRESSED",
        OP_MSG => "OP_MSG",
        _ => "unknown",
    }
}

/// Reads the 16-byte header at the start of `message`.
pub fn parse_header(message: &[u8]) -> Result<MessageHeader, WireError> {
    let mut reader = reader::Reader::new(message, 0);
    Ok(MessageHeader {
        message_length: reader.i32("messageLength")?,
        request_id: reader.i32("requestID")?,
        response_to: reader.i32("responseTo")?,
        op_code: reader.i32("opCode")?,
    })
}

/// Fills the first 16 bytes of `out` (already reserved) with a header whose length is `out.len()`.
pub(crate) fn write_header(out: &mut [u8], request_id: i32, response_to: i32, op_code: i32) -> Result<(), WireError> {
    let length = i32::try_from(out.len()).map_err(|_| WireError::TooLarge {
        what: "encoded message",
        size: u64::try_from(out.len()).unwrap_or(u64::MAX),
        max: u64::try_from(i32::MAX).unwrap_or(u64::MAX),
    })?;
    let Some(header) = out.get_mut(..HEADER_LEN) else {
        return Err(WireError::InvalidArgument {
            what: "message buffer".to_owned(),
            reason: "shorter than the 16-byte header".to_owned(),
        });
    };
    for (slot, value) in header
        .chunks_exact_mut(4)
        .zip([length, request_id, response_to, op_code])
    {
        slot.copy_from_slice(&value.to_le_bytes());
    }
    Ok(())
}
