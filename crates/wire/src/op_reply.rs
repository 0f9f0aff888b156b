//! `OP_REPLY` (opcode 1): the legacy reply, which a server sends in answer to `OP_QUERY` (in
//! practice, the handshake `isMaster`/`hello`).
//!
//! Layout after the 16-byte header: `responseFlags` (int32; bit 0 CursorNotFound, bit 1
//! QueryFailure, bit 3 AwaitCapable), `cursorID` (int64), `startingFrom` (int32),
//! `numberReturned` (int32), then `numberReturned` BSON documents.

use bson::RawDocumentBuf;

use crate::op_msg::to_raw;
use crate::reader::Reader;
use crate::{HEADER_LEN, MessageHeader, OP_REPLY, WireError, write_header};

/// responseFlags bit 1: the query failed and the single document is `{$err: ...}`.
pub const REPLY_FLAG_QUERY_FAILURE: u32 = 1 << 1;
/// responseFlags bit 3: the server supports the AwaitData query option (always set by servers).
pub const REPLY_FLAG_AWAIT_CAPABLE: u32 = 1 << 3;

/// A decoded `OP_REPLY` (what a client reads; servers only encode it).
#[derive(Debug, Clone, PartialEq)]
pub struct OpReply {
    /// responseFlags.
    pub response_flags: u32,
    /// cursorID; 0 when there is no open cursor.
    pub cursor_id: i64,
    /// Position of the first returned document in the cursor.
    pub starting_from: i32,
    /// The returned documents.
    pub documents: Vec<RawDocumentBuf>,
}

/// Encodes an `OP_REPLY`.
///
/// The signature cannot fail: callers keep replies far below 2 GiB (the server limits replies to
/// `maxMessageSizeBytes`). Should the total ever exceed `i32::MAX`, `messageLength` is written as
/// `i32::MAX`, which every receiver rejects instead of misreading.
pub fn encode_op_reply(
    request_id: i32,
    response_to: i32,
    response_flags: u32,
    cursor_id: i64,
    starting_from: i32,
    documents: &[RawDocumentBuf],
) -> Vec<u8> {
    let docs_len = documents
        .iter()
        .map(|d| d.as_bytes().len())
        .fold(0usize, usize::saturating_add);
    let mut out = Vec::with_capacity(docs_len.saturating_add(HEADER_LEN + 20));
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(&response_flags.to_le_bytes());
    out.extend_from_slice(&cursor_id.to_le_bytes());
    out.extend_from_slice(&starting_from.to_le_bytes());
    out.extend_from_slice(&i32::try_from(documents.len()).unwrap_or(i32::MAX).to_le_bytes());
    for doc in documents {
        out.extend_from_slice(doc.as_bytes());
    }
    if write_header(&mut out, request_id, response_to, OP_REPLY).is_err() {
        out[..4].copy_from_slice(&i32::MAX.to_le_bytes());
    }
    out
}

/// Decodes one complete `OP_REPLY` message (header included), as a client does after sending an
/// `OP_QUERY`. `numberReturned` must match the documents present.
pub fn decode_op_reply(message: &[u8]) -> Result<(MessageHeader, OpReply), WireError> {
    let header = crate::parse_header(message)?;
    if header.op_code != OP_REPLY {
        return Err(WireError::UnknownOpCode {
            op_code: header.op_code,
            name: crate::op_code_name(header.op_code),
            context: "where an OP_REPLY was expected",
        });
    }
    let declared = usize::try_from(header.message_length).unwrap_or(0);
    if declared != message.len() {
        return Err(WireError::Malformed {
            what: "OP_REPLY messageLength".to_owned(),
            offset: 0,
            reason: format!(
                "declares {} bytes but the message has {}",
                header.message_length,
                message.len()
            ),
        });
    }
    let mut reader = Reader::new(message.get(HEADER_LEN..).unwrap_or_default(), HEADER_LEN);
    let response_flags = reader.u32("OP_REPLY responseFlags")?;
    let cursor_id = reader.i64("OP_REPLY cursorID")?;
    let starting_from = reader.i32("OP_REPLY startingFrom")?;
    let count_offset = reader.offset();
    let number_returned = reader.i32("OP_REPLY numberReturned")?;
    let mut documents = Vec::new();
    while reader.remaining() > 0 {
        let what = format!("OP_REPLY document {}", documents.len());
        let (bytes, offset) = reader.document(&what)?;
        documents.push(to_raw(bytes, &what, offset)?);
    }
    if usize::try_from(number_returned).ok() != Some(documents.len()) {
        return Err(WireError::Malformed {
            what: "OP_REPLY numberReturned".to_owned(),
            offset: count_offset,
            reason: format!("declares {number_returned} documents but {} follow", documents.len()),
        });
    }
    Ok((
        header,
        OpReply {
            response_flags,
            cursor_id,
            starting_from,
            documents,
        },
    ))
}
