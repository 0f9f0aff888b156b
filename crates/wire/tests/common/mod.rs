//! Byte-level builders that follow the layouts of the MongoDB wire protocol reference directly,
//! independently of the crate's encoders, so tests compare the crate against the documented
//! layout rather than against itself.

#![allow(dead_code)]

use bson::{Document, RawDocumentBuf};

/// `struct MsgHeader { int32 messageLength; int32 requestID; int32 responseTo; int32 opCode; }`
/// followed by `payload`.
pub fn message(request_id: i32, response_to: i32, op_code: i32, payload: &[u8]) -> Vec<u8> {
    let len = i32::try_from(16 + payload.len()).unwrap();
    let mut out = Vec::new();
    for v in [len, request_id, response_to, op_code] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// BSON bytes of a document, via the `bson` crate's serializer.
pub fn bson_bytes(doc: &Document) -> Vec<u8> {
    bson::to_vec(doc).unwrap()
}

/// The raw form of a document.
pub fn raw(doc: &Document) -> RawDocumentBuf {
    RawDocumentBuf::from_document(doc).unwrap()
}

/// Payload type 0 section: `uint8 0` then the document.
pub fn section_body(doc: &Document) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&bson_bytes(doc));
    out
}

/// Payload type 1 section: `uint8 1`, `int32 size` (including itself), `cstring identifier`,
/// then the documents back to back.
pub fn section_sequence(identifier: &str, docs: &[Document]) -> Vec<u8> {
    let mut content = Vec::new();
    content.extend_from_slice(identifier.as_bytes());
    content.push(0);
    for d in docs {
        content.extend_from_slice(&bson_bytes(d));
    }
    let mut out = vec![1u8];
    out.extend_from_slice(&i32::try_from(content.len() + 4).unwrap().to_le_bytes());
    out.extend_from_slice(&content);
    out
}

/// `OP_MSG`: header, `uint32 flagBits`, sections, and the CRC-32C when flag bit 0 is set.
pub fn op_msg(request_id: i32, flags: u32, sections: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = flags.to_le_bytes().to_vec();
    for s in sections {
        payload.extend_from_slice(s);
    }
    if flags & 1 != 0 {
        payload.extend_from_slice(&[0; 4]);
        let mut msg = message(request_id, 0, 2013, &payload);
        let end = msg.len() - 4;
        let crc = crc32c(&msg[..end]);
        msg[end..].copy_from_slice(&crc.to_le_bytes());
        msg
    } else {
        message(request_id, 0, 2013, &payload)
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit as in RFC 3720 appendix B.4,
/// written here independently of the `crc` crate the library uses.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `OP_COMPRESSED`: header, `int32 originalOpcode`, `int32 uncompressedSize`, `uint8 compressorId`,
/// compressed bytes.
pub fn op_compressed(
    request_id: i32,
    original_op_code: i32,
    uncompressed_size: i32,
    compressor_id: u8,
    compressed: &[u8],
) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&original_op_code.to_le_bytes());
    payload.extend_from_slice(&uncompressed_size.to_le_bytes());
    payload.push(compressor_id);
    payload.extend_from_slice(compressed);
    message(request_id, 0, 2012, &payload)
}
