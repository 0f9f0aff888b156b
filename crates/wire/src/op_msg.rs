//! `OP_MSG` (opcode 2013): the message every modern driver and server exchange.
//!
//! Layout after the 16-byte header: `flagBits` (uint32), then sections until the end of the
//! message (or until the trailing CRC-32C when flag bit 0 `checksumPresent` is set). A section is
//! a payload-type byte followed by either one BSON document (type 0, the command body; exactly one
//! per message) or a document sequence (type 1: int32 size including itself, cstring identifier,
//! then BSON documents back to back filling the rest of the size). Identifiers are unique per
//! message. The checksum covers every byte of the message before it, header included.
//!
//! Decoding copies each document exactly once, from the received bytes into its own
//! [`RawDocumentBuf`]; nothing else is copied per document.

use std::collections::HashSet;

use bson::RawDocumentBuf;

use crate::reader::Reader;
use crate::{HEADER_LEN, WireError};

/// flagBits bit 0: a CRC-32C checksum follows the sections.
pub const FLAG_CHECKSUM_PRESENT: u32 = 1;
/// flagBits bit 1: the sender will send another message without waiting for a reply.
pub const FLAG_MORE_TO_COME: u32 = 1 << 1;
/// flagBits bit 16: the client accepts several replies (exhaust cursors, streaming `hello`).
pub const FLAG_EXHAUST_ALLOWED: u32 = 1 << 16;
/// Required bits (0-15) the protocol defines; any other set required bit is an error.
const KNOWN_REQUIRED_FLAGS: u32 = FLAG_CHECKSUM_PRESENT | FLAG_MORE_TO_COME;
const REQUIRED_FLAGS_MASK: u32 = 0xFFFF;

/// CRC-32C (Castagnoli), the `OP_MSG` checksum.
pub(crate) const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// A payload type 1 section: documents that stand for the command argument `identifier`.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentSequence {
    /// The command argument the documents belong to (`documents`, `updates`, `deletes` ...).
    pub identifier: String,
    /// The documents, in wire order.
    pub documents: Vec<RawDocumentBuf>,
}

/// A decoded `OP_MSG`.
#[derive(Debug, Clone, PartialEq)]
pub struct OpMsg {
    /// flagBits as received (see the `FLAG_*` constants). When encoding, bit 0 asks for a
    /// checksum to be appended.
    pub flags: u32,
    /// The payload type 0 section: the command document (or the reply document).
    pub body: RawDocumentBuf,
    /// The payload type 1 sections, in wire order.
    pub sequences: Vec<DocumentSequence>,
}

impl OpMsg {
    /// A message with only a body and no flags.
    pub fn new(body: RawDocumentBuf) -> Self {
        Self {
            flags: 0,
            body,
            sequences: Vec::new(),
        }
    }

    /// Whether flag bit 1 (`moreToCome`) is set: no reply is expected (requests) or more
    /// replies follow (responses).
    pub fn more_to_come(&self) -> bool {
        self.flags & FLAG_MORE_TO_COME != 0
    }

    /// Whether flag bit 16 (`exhaustAllowed`) is set.
    pub fn exhaust_allowed(&self) -> bool {
        self.flags & FLAG_EXHAUST_ALLOWED != 0
    }

    /// The document sequence with this identifier, if any.
    pub fn sequence(&self, identifier: &str) -> Option<&DocumentSequence> {
        self.sequences.iter().find(|s| s.identifier == identifier)
    }

    /// The command as the server sees it: the body with every document sequence appended as an
    /// array field named after its identifier (`{insert: "c", $db: "d", documents: [...]}`).
    ///
    /// Fails if the body already has a field with a sequence's identifier, if the body is not
    /// valid BSON, or if the result exceeds the int32 length of a BSON document.
    pub fn command_document(&self) -> Result<RawDocumentBuf, WireError> {
        if self.sequences.is_empty() {
            return Ok(self.body.clone());
        }
        for element in self.body.iter_elements() {
            let element = element.map_err(|e| WireError::InvalidDocument {
                what: "OP_MSG body".to_owned(),
                offset: 0,
                reason: e.to_string(),
            })?;
            if self.sequence(element.key()).is_some() {
                return Err(WireError::Malformed {
                    what: "OP_MSG".to_owned(),
                    offset: 0,
                    reason: format!(
                        "the body has a field {:?} and a document sequence with the same identifier",
                        element.key()
                    ),
                });
            }
        }
        let body = self.body.as_bytes();
        let mut out = Vec::with_capacity(encoded_len_hint(self));
        out.extend_from_slice(body.get(..body.len().saturating_sub(1)).unwrap_or_default());
        for seq in &self.sequences {
            if seq.identifier.as_bytes().contains(&0) {
                return Err(WireError::InvalidArgument {
                    what: format!("document sequence identifier {:?}", seq.identifier),
                    reason: "a BSON key cannot contain a NUL byte".to_owned(),
                });
            }
            out.push(0x04);
            out.extend_from_slice(seq.identifier.as_bytes());
            out.push(0);
            let array_start = out.len();
            out.extend_from_slice(&[0; 4]);
            for (index, doc) in seq.documents.iter().enumerate() {
                out.push(0x03);
                out.extend_from_slice(index.to_string().as_bytes());
                out.push(0);
                out.extend_from_slice(doc.as_bytes());
            }
            out.push(0);
            set_length(&mut out, array_start)?;
        }
        out.push(0);
        set_length(&mut out, 0)?;
        RawDocumentBuf::from_bytes(out).map_err(|e| WireError::InvalidDocument {
            what: "command document".to_owned(),
            offset: 0,
            reason: e.to_string(),
        })
    }
}

/// Writes the int32 length of the BSON document that starts at `start` and ends at `out.len()`.
fn set_length(out: &mut [u8], start: usize) -> Result<(), WireError> {
    let len = out.len().saturating_sub(start);
    let value = i32::try_from(len).map_err(|_| WireError::TooLarge {
        what: "command document",
        size: u64::try_from(len).unwrap_or(u64::MAX),
        max: u64::try_from(i32::MAX).unwrap_or(u64::MAX),
    })?;
    if let Some(slot) = out.get_mut(start..start.saturating_add(4)) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
    Ok(())
}

/// Parses an `OP_MSG` given the whole message (`frame`, header included).
pub(crate) fn parse(frame: &[u8]) -> Result<OpMsg, WireError> {
    let mut reader = Reader::new(frame.get(HEADER_LEN..).unwrap_or_default(), HEADER_LEN);
    let flags = reader.u32("OP_MSG flagBits")?;
    let unknown = flags & REQUIRED_FLAGS_MASK & !KNOWN_REQUIRED_FLAGS;
    if unknown != 0 {
        return Err(WireError::UnknownRequiredFlags { flags, unknown });
    }
    let mut sections_end = frame.len();
    if flags & FLAG_CHECKSUM_PRESENT != 0 {
        sections_end = verify_checksum(frame, reader.offset())?;
    }
    let sections = frame.get(reader.offset()..sections_end).unwrap_or_default();
    let mut reader = Reader::new(sections, reader.offset());

    let mut body: Option<RawDocumentBuf> = None;
    let mut sequences: Vec<DocumentSequence> = Vec::new();
    let mut identifiers: HashSet<&str> = HashSet::new();
    while reader.remaining() > 0 {
        let section_offset = reader.offset();
        match reader.u8("OP_MSG section payload type")? {
            0 => {
                let what = "OP_MSG body (payload type 0)";
                let (bytes, offset) = reader.document(what)?;
                if body.is_some() {
                    return Err(WireError::Malformed {
                        what: "OP_MSG section".to_owned(),
                        offset: section_offset,
                        reason: "second payload type 0 section; a message has exactly one body".to_owned(),
                    });
                }
                body = Some(to_raw(bytes, what, offset)?);
            }
            1 => {
                let (identifier, documents) = parse_sequence(&mut reader)?;
                if !identifiers.insert(identifier) {
                    return Err(WireError::Malformed {
                        what: "OP_MSG document sequence".to_owned(),
                        offset: section_offset,
                        reason: format!("identifier {identifier:?} appears twice; identifiers are unique per message"),
                    });
                }
                sequences.push(DocumentSequence {
                    identifier: identifier.to_owned(),
                    documents,
                });
            }
            kind => {
                return Err(WireError::BadSectionKind {
                    kind,
                    offset: section_offset,
                });
            }
        }
    }
    let body = body.ok_or_else(|| WireError::Malformed {
        what: "OP_MSG".to_owned(),
        offset: HEADER_LEN,
        reason: "no payload type 0 section (command body)".to_owned(),
    })?;
    Ok(OpMsg { flags, body, sequences })
}

/// Checks the trailing CRC-32C and returns the offset where it starts (the end of the sections).
fn verify_checksum(frame: &[u8], sections_start: usize) -> Result<usize, WireError> {
    let end = frame
        .len()
        .checked_sub(4)
        .filter(|&end| end >= sections_start)
        .ok_or_else(|| WireError::Truncated {
            what: "OP_MSG checksum".to_owned(),
            offset: sections_start,
            needed: 4,
            available: frame.len().saturating_sub(sections_start),
        })?;
    let (covered, tail) = frame.split_at(end);
    let found = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = CRC32C.checksum(covered);
    if found != computed {
        return Err(WireError::ChecksumMismatch { found, computed });
    }
    Ok(end)
}

/// Parses the rest of a payload type 1 section (after its type byte).
fn parse_sequence<'a>(reader: &mut Reader<'a>) -> Result<(&'a str, Vec<RawDocumentBuf>), WireError> {
    let offset = reader.offset();
    let size = reader.i32("OP_MSG document sequence size")?;
    let content_len = usize::try_from(size)
        .ok()
        .and_then(|s| s.checked_sub(4))
        .filter(|&l| l >= 1)
        .ok_or_else(|| WireError::Malformed {
            what: "OP_MSG document sequence".to_owned(),
            offset,
            reason: format!("size {size} is too small for the size field and an identifier"),
        })?;
    let content_offset = reader.offset();
    let content = reader.take(content_len, "OP_MSG document sequence")?;
    let mut inner = Reader::new(content, content_offset);
    let identifier = inner.cstring("OP_MSG document sequence identifier")?;
    // Grows with the documents actually parsed: a count guessed from the byte length could ask
    // for several times the message size.
    let mut documents = Vec::new();
    while inner.remaining() > 0 {
        // Named only if it is refused: formatting a name for every document would cost more than reading it.
        let what = SequenceDocument {
            index: documents.len(),
            identifier,
        };
        let (bytes, offset) = inner.document(&what)?;
        documents.push(to_raw(bytes, &what, offset)?);
    }
    Ok((identifier, documents))
}

/// How a document of a document sequence is named in errors.
struct SequenceDocument<'a> {
    index: usize,
    identifier: &'a str,
}

impl std::fmt::Display for SequenceDocument<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {} of sequence {:?}", self.index, self.identifier)
    }
}

/// Copies a validated document into its own buffer (the one copy per document).
pub(crate) fn to_raw(
    bytes: &[u8],
    what: &(impl std::fmt::Display + ?Sized),
    offset: usize,
) -> Result<RawDocumentBuf, WireError> {
    // Framing was checked by `Reader::document`, so this cannot fail; map the error anyway.
    RawDocumentBuf::from_bytes(bytes.to_vec()).map_err(|e| WireError::InvalidDocument {
        what: what.to_string(),
        offset,
        reason: e.to_string(),
    })
}

/// Appends the `OP_MSG` payload (flagBits and sections, no header, no checksum) to `out`.
pub(crate) fn write_payload(msg: &OpMsg, out: &mut Vec<u8>) -> Result<(), WireError> {
    out.extend_from_slice(&msg.flags.to_le_bytes());
    out.push(0);
    out.extend_from_slice(msg.body.as_bytes());
    for seq in &msg.sequences {
        if seq.identifier.as_bytes().contains(&0) {
            return Err(WireError::InvalidArgument {
                what: format!("document sequence identifier {:?}", seq.identifier),
                reason: "a cstring cannot contain a NUL byte".to_owned(),
            });
        }
        let size = seq
            .documents
            .iter()
            .try_fold(
                4usize.saturating_add(seq.identifier.len()).saturating_add(1),
                |acc, d| acc.checked_add(d.as_bytes().len()),
            )
            .and_then(|s| i32::try_from(s).ok())
            .ok_or_else(|| WireError::TooLarge {
                what: "OP_MSG document sequence",
                size: u64::MAX,
                max: u64::try_from(i32::MAX).unwrap_or(u64::MAX),
            })?;
        out.push(1);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(seq.identifier.as_bytes());
        out.push(0);
        for doc in &seq.documents {
            out.extend_from_slice(doc.as_bytes());
        }
    }
    Ok(())
}

/// Bytes `write_payload` will produce, plus room for header and checksum (a capacity hint).
pub(crate) fn encoded_len_hint(msg: &OpMsg) -> usize {
    let docs: usize = msg
        .sequences
        .iter()
        .map(|s| {
            s.documents
                .iter()
                .map(|d| d.as_bytes().len())
                .sum::<usize>()
                .saturating_add(s.identifier.len() + 6)
        })
        .fold(0usize, usize::saturating_add);
    docs.saturating_add(msg.body.as_bytes().len())
        .saturating_add(HEADER_LEN + 9)
}
