//! Framing: finding one message in a stream buffer, dispatching on its opcode, unwrapping
//! `OP_COMPRESSED`, and encoding `OP_MSG` (optionally checksummed and compressed).
//!
//! An `OP_COMPRESSED` message carries `originalOpcode`, `uncompressedSize` (the size of the
//! original message without its 16-byte header), `compressorId` and the compressed bytes. Decoding
//! rebuilds the original message in memory (header with `messageLength = 16 + uncompressedSize`
//! and the original opcode, then the decompressed bytes) and parses it as if it had arrived
//! uncompressed, so offsets in errors and the `OP_MSG` checksum refer to the original message.

use bytes::{Buf, BytesMut};

use crate::compression::{
    COMPRESSOR_ID_NOOP, COMPRESSOR_ID_ZLIB, COMPRESSOR_ID_ZSTD, compressor_name, decompress_into,
};
use crate::op_msg::{self, CRC32C, FLAG_CHECKSUM_PRESENT};
use crate::reader::Reader;
use crate::{
    Compressor, HEADER_LEN, MessageHeader, OP_COMPRESSED, OP_MSG, OP_QUERY, OpMsg, OpQuery, WireError, op_code_name,
    op_query, parse_header, write_header,
};

/// A request message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An `OP_MSG`.
    Msg(OpMsg),
    /// A legacy `OP_QUERY`.
    Query(OpQuery),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The message header. For a message that arrived in `OP_COMPRESSED`, this is the header of
    /// the original message: `op_code` is the wrapped opcode and `message_length` is
    /// 16 + `uncompressedSize`; `request_id` and `response_to` are those on the wire.
    pub header: MessageHeader,
    /// The parsed message.
    pub message: Message,
    /// The compressor the message arrived with (`level: None`), so the reply can use the same
    /// one. `None` for uncompressed messages and for the noop compressor (id 0), whose reply may
    /// be sent uncompressed.
    pub compressor: Option<Compressor>,
}

/// Parses one complete message from the front of `buf`, removing it from the buffer.
///
/// Returns `Ok(None)` while the buffer holds less than one whole message (the buffer is left
/// as is; read more bytes and call again). `messageLength` is checked as soon as its four bytes
/// are present: below 16 or above `max_message_size` is an error, and the buffer is left
/// untouched since the stream cannot be re-synchronised. When the length is valid but the content
/// is not, the message is removed from the buffer before the error is returned, so a caller may
/// answer and keep reading.
pub fn decode(buf: &mut BytesMut, max_message_size: usize) -> Result<Option<Decoded>, WireError> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let length = check_length(i32::from_le_bytes([a, b, c, d]), max_message_size)?;
    if buf.len() < length {
        // Help the reader without committing memory to a length a peer merely announced.
        buf.reserve(length.saturating_sub(buf.len()).min(1 << 20));
        return Ok(None);
    }
    let result = decode_message(buf.get(..length).unwrap_or_default(), max_message_size);
    buf.advance(length);
    result.map(Some)
}

/// Parses one complete message (header included; `message.len()` must equal `messageLength`).
pub fn decode_message(message: &[u8], max_message_size: usize) -> Result<Decoded, WireError> {
    let header = parse_header(message)?;
    let length = check_length(header.message_length, max_message_size)?;
    if length != message.len() {
        return Err(WireError::Malformed {
            what: "messageLength".to_owned(),
            offset: 0,
            reason: format!("declares {length} bytes but {} were given", message.len()),
        });
    }
    match header.op_code {
        OP_COMPRESSED => decode_compressed(header, message, max_message_size),
        _ => Ok(Decoded {
            header,
            message: parse_uncompressed(header.op_code, message, "")?,
            compressor: None,
        }),
    }
}

fn check_length(length: i32, max_message_size: usize) -> Result<usize, WireError> {
    let len = usize::try_from(length)
        .ok()
        .filter(|&l| l >= HEADER_LEN)
        .ok_or(WireError::InvalidMessageLength { length })?;
    if len > max_message_size {
        return Err(WireError::TooLarge {
            what: "messageLength",
            size: u64::try_from(len).unwrap_or(u64::MAX),
            max: u64::try_from(max_message_size).unwrap_or(u64::MAX),
        });
    }
    Ok(len)
}

fn parse_uncompressed(op_code: i32, message: &[u8], context: &'static str) -> Result<Message, WireError> {
    match op_code {
        OP_MSG => op_msg::parse(message).map(Message::Msg),
        OP_QUERY => op_query::parse(message).map(Message::Query),
        other => Err(WireError::UnknownOpCode {
            op_code: other,
            name: op_code_name(other),
            context: if context.is_empty() {
                "(this server accepts OP_MSG, OP_QUERY and OP_COMPRESSED)"
            } else {
                context
            },
        }),
    }
}

fn decode_compressed(header: MessageHeader, message: &[u8], max_message_size: usize) -> Result<Decoded, WireError> {
    let mut reader = Reader::new(message.get(HEADER_LEN..).unwrap_or_default(), HEADER_LEN);
    let original = reader.i32("OP_COMPRESSED originalOpcode")?;
    let size_offset = reader.offset();
    let declared = reader.i32("OP_COMPRESSED uncompressedSize")?;
    let id = reader.u8("OP_COMPRESSED compressorId")?;
    if original != OP_MSG && original != OP_QUERY {
        return Err(WireError::UnknownOpCode {
            op_code: original,
            name: op_code_name(original),
            context: "as OP_COMPRESSED originalOpcode (OP_MSG or OP_QUERY expected)",
        });
    }
    let size = usize::try_from(declared).map_err(|_| WireError::Malformed {
        what: "OP_COMPRESSED uncompressedSize".to_owned(),
        offset: size_offset,
        reason: format!("{declared} is negative"),
    })?;
    let total = size
        .checked_add(HEADER_LEN)
        .filter(|&t| t <= max_message_size)
        .ok_or(WireError::TooLarge {
            what: "OP_COMPRESSED uncompressedSize plus header",
            size: u64::try_from(size).unwrap_or(u64::MAX).saturating_add(16),
            max: u64::try_from(max_message_size).unwrap_or(u64::MAX),
        })?;
    let compressor = match id {
        COMPRESSOR_ID_NOOP => None,
        COMPRESSOR_ID_ZLIB => Some(Compressor::Zlib { level: None }),
        COMPRESSOR_ID_ZSTD => Some(Compressor::Zstd { level: None }),
        other => {
            return Err(WireError::UnsupportedCompressor {
                id: other,
                name: compressor_name(other),
            });
        }
    };
    let inner_header = MessageHeader {
        message_length: i32::try_from(total).map_err(|_| WireError::TooLarge {
            what: "OP_COMPRESSED uncompressedSize plus header",
            size: u64::try_from(total).unwrap_or(u64::MAX),
            max: u64::try_from(i32::MAX).unwrap_or(u64::MAX),
        })?,
        op_code: original,
        ..header
    };
    // Capacity grows with the data actually produced, not with the declared size.
    let mut original_message =
        Vec::with_capacity(total.min(reader.remaining().saturating_mul(4).saturating_add(HEADER_LEN)));
    original_message.resize(HEADER_LEN, 0);
    decompress_into(id, reader.rest(), size, &mut original_message)?;
    write_header(&mut original_message, header.request_id, header.response_to, original)?;
    let message = parse_uncompressed(original, &original_message, "inside OP_COMPRESSED")?;
    Ok(Decoded {
        header: inner_header,
        message,
        compressor,
    })
}

/// Encodes an `OP_MSG`, wrapped in `OP_COMPRESSED` when `compressor` is given.
///
/// When `msg.flags` has bit 0 (`checksumPresent`) set, a CRC-32C over the whole message is
/// appended (computed on the uncompressed message, before any compression). Fails if a sequence
/// identifier contains a NUL byte, the message does not fit an int32 length, or the compression
/// level is out of range.
pub fn encode_op_msg(
    request_id: i32,
    response_to: i32,
    msg: &OpMsg,
    compressor: Option<&Compressor>,
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(op_msg::encoded_len_hint(msg));
    out.resize(HEADER_LEN, 0);
    op_msg::write_payload(msg, &mut out)?;
    let checksum = msg.flags & FLAG_CHECKSUM_PRESENT != 0;
    if checksum {
        out.extend_from_slice(&[0; 4]);
    }
    write_header(&mut out, request_id, response_to, OP_MSG)?;
    if checksum {
        let end = out.len().saturating_sub(4);
        let crc = CRC32C.checksum(out.get(..end).unwrap_or_default());
        if let Some(slot) = out.get_mut(end..) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
    }
    match compressor {
        None => Ok(out),
        Some(compressor) => compress_message(&out, OP_MSG, request_id, response_to, compressor),
    }
}

/// Length of the prefix [`op_msg_body_prefix`] returns.
pub const OP_MSG_BODY_PREFIX_LEN: usize = HEADER_LEN + 5;

/// The bytes that precede the body of an uncompressed, checksum-free `OP_MSG` that holds only a
/// body section (the header, zero flag bits and the section kind): sending them and then the body's
/// own bytes sends exactly what [`encode_op_msg`] encodes, without copying a large body (a cursor
/// batch of up to 16 MiB) into a new buffer first.
///
/// # Errors
/// [`WireError::TooLarge`] when the message does not fit an int32 length.
pub fn op_msg_body_prefix(
    request_id: i32,
    response_to: i32,
    body_len: usize,
) -> Result<[u8; OP_MSG_BODY_PREFIX_LEN], WireError> {
    let length = OP_MSG_BODY_PREFIX_LEN
        .checked_add(body_len)
        .and_then(|total| i32::try_from(total).ok())
        .ok_or_else(|| WireError::TooLarge {
            what: "encoded message",
            size: u64::try_from(body_len).unwrap_or(u64::MAX),
            max: u64::try_from(i32::MAX).unwrap_or(u64::MAX),
        })?;
    let mut prefix = [0u8; OP_MSG_BODY_PREFIX_LEN];
    for (slot, value) in prefix
        .chunks_exact_mut(4)
        .zip([length, request_id, response_to, OP_MSG])
    {
        slot.copy_from_slice(&value.to_le_bytes());
    }
    // Flag bits (4 bytes) and the body section's kind byte stay 0.
    Ok(prefix)
}

/// Wraps an encoded message (header included) in `OP_COMPRESSED`.
fn compress_message(
    message: &[u8],
    original_op_code: i32,
    request_id: i32,
    response_to: i32,
    compressor: &Compressor,
) -> Result<Vec<u8>, WireError> {
    let payload = message.get(HEADER_LEN..).unwrap_or_default();
    let uncompressed_size = i32::try_from(payload.len()).map_err(|_| WireError::TooLarge {
        what: "message to compress",
        size: u64::try_from(payload.len()).unwrap_or(u64::MAX),
        max: u64::try_from(i32::MAX).unwrap_or(u64::MAX),
    })?;
    let compressed = compressor.compress(payload)?;
    let mut out = Vec::with_capacity(compressed.len().saturating_add(HEADER_LEN + 9));
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(&original_op_code.to_le_bytes());
    out.extend_from_slice(&uncompressed_size.to_le_bytes());
    out.push(compressor.id());
    out.extend_from_slice(&compressed);
    write_header(&mut out, request_id, response_to, OP_COMPRESSED)?;
    Ok(out)
}

/// Whether a command may travel in `OP_COMPRESSED`. The compression specification forbids it for
/// the handshake and for authentication and user-management commands, whose replies must also be
/// sent uncompressed: `hello`, `isMaster`, `saslStart`, `saslContinue`, `getnonce`,
/// `authenticate`, `createUser`, `updateUser`, `copydbSaslStart`, `copydbgetnonce`, `copydb`
/// (compared case-insensitively, as drivers do).
pub fn is_compressible_command(command_name: &str) -> bool {
    const NEVER_COMPRESSED: [&str; 11] = [
        "hello",
        "ismaster",
        "saslstart",
        "saslcontinue",
        "getnonce",
        "authenticate",
        "createuser",
        "updateuser",
        "copydbsaslstart",
        "copydbgetnonce",
        "copydb",
    ];
    !NEVER_COMPRESSED
        .iter()
        .any(|name| name.eq_ignore_ascii_case(command_name))
}
