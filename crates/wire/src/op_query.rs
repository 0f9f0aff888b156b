//! `OP_QUERY` (opcode 2004): the legacy query message, still sent by drivers for the first
//! handshake message (`isMaster`/`hello` to `admin.$cmd`) when no Stable API version is declared.
//!
//! Layout after the 16-byte header: `flags` (int32), `fullCollectionName` (cstring,
//! `"<db>.<collection>"`, `"admin.$cmd"` for commands), `numberToSkip` (int32), `numberToReturn`
//! (int32), `query` (document), then optionally `returnFieldsSelector` (document) filling the rest
//! of the message.

use bson::RawDocumentBuf;

use crate::op_msg::to_raw;
use crate::reader::Reader;
use crate::{HEADER_LEN, OP_QUERY, WireError, write_header};

/// A decoded `OP_QUERY`.
#[derive(Debug, Clone, PartialEq)]
pub struct OpQuery {
    /// Query flags as a bit vector (bit 2 SecondaryOk, bit 4 NoCursorTimeout, bit 5 AwaitData,
    /// bit 6 Exhaust, bit 7 Partial).
    pub flags: u32,
    /// `"<db>.<collection>"`; commands go to `"<db>.$cmd"`.
    pub full_collection_name: String,
    /// Documents to skip.
    pub number_to_skip: i32,
    /// Batch size hint; drivers send -1 for commands (return one document, close the cursor).
    pub number_to_return: i32,
    /// The query or command document.
    pub query: RawDocumentBuf,
    /// Optional projection.
    pub return_fields_selector: Option<RawDocumentBuf>,
}

impl OpQuery {
    /// The database part of `full_collection_name` (everything before the first dot).
    pub fn database(&self) -> &str {
        self.full_collection_name
            .split_once('.')
            .map_or(self.full_collection_name.as_str(), |(db, _)| db)
    }

    /// Whether the message targets a command namespace (`<db>.$cmd`).
    pub fn is_command(&self) -> bool {
        self.full_collection_name
            .split_once('.')
            .is_some_and(|(_, coll)| coll == "$cmd")
    }
}

/// Parses the `OP_QUERY` fields given the whole message (`frame`, header included).
pub(crate) fn parse(frame: &[u8]) -> Result<OpQuery, WireError> {
    let mut reader = Reader::new(frame.get(HEADER_LEN..).unwrap_or_default(), HEADER_LEN);
    let flags = reader.u32("OP_QUERY flags")?;
    let full_collection_name = reader.cstring("OP_QUERY fullCollectionName")?.to_owned();
    let number_to_skip = reader.i32("OP_QUERY numberToSkip")?;
    let number_to_return = reader.i32("OP_QUERY numberToReturn")?;
    let what = "OP_QUERY query";
    let (bytes, offset) = reader.document(what)?;
    let query = to_raw(bytes, what, offset)?;
    let return_fields_selector = if reader.remaining() > 0 {
        let what = "OP_QUERY returnFieldsSelector";
        let (bytes, offset) = reader.document(what)?;
        Some(to_raw(bytes, what, offset)?)
    } else {
        None
    };
    if reader.remaining() > 0 {
        return Err(WireError::Malformed {
            what: "OP_QUERY".to_owned(),
            offset: reader.offset(),
            reason: format!("{} bytes after returnFieldsSelector", reader.remaining()),
        });
    }
    Ok(OpQuery {
        flags,
        full_collection_name,
        number_to_skip,
        number_to_return,
        query,
        return_fields_selector,
    })
}

/// Encodes an `OP_QUERY` (as drivers do for the legacy handshake). Fails if the collection name
/// contains a NUL byte or the message does not fit an int32 length.
pub fn encode_op_query(request_id: i32, query: &OpQuery) -> Result<Vec<u8>, WireError> {
    if query.full_collection_name.as_bytes().contains(&0) {
        return Err(WireError::InvalidArgument {
            what: format!("fullCollectionName {:?}", query.full_collection_name),
            reason: "a cstring cannot contain a NUL byte".to_owned(),
        });
    }
    let mut out = vec![0u8; HEADER_LEN];
    out.extend_from_slice(&query.flags.to_le_bytes());
    out.extend_from_slice(query.full_collection_name.as_bytes());
    out.push(0);
    out.extend_from_slice(&query.number_to_skip.to_le_bytes());
    out.extend_from_slice(&query.number_to_return.to_le_bytes());
    out.extend_from_slice(query.query.as_bytes());
    if let Some(fields) = &query.return_fields_selector {
        out.extend_from_slice(fields.as_bytes());
    }
    write_header(&mut out, request_id, 0, OP_QUERY)?;
    Ok(out)
}
