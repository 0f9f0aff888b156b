//! Errors raised while framing, parsing, compressing or encoding wire messages.
//!
//! Every variant names what was being read (a field, a section, a document) and, when the problem
//! is at a particular place, the byte offset from the start of the message, so a log line is
//! enough to locate the fault in a packet capture. Offsets inside an `OP_COMPRESSED` payload are
//! offsets into the decompressed message (16-byte header included), which is what the sender built.

/// Why a wire message could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The `messageLength` field is negative or smaller than the 16-byte standard header.
    #[error("messageLength {length} is invalid: a message is at least the 16-byte header")]
    InvalidMessageLength {
        /// The value read from the first four bytes.
        length: i32,
    },
    /// A length exceeds the allowed maximum (for example `messageLength` above
    /// `maxMessageSizeBytes`, or an encoded message that does not fit an int32).
    #[error("{what} is {size} bytes, above the maximum of {max} bytes")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// The size found or requested.
        size: u64,
        /// The limit in force.
        max: u64,
    },
    /// A field, section or document extends past the end of the bytes that contain it.
    #[error("{what} at offset {offset} is truncated: it needs {needed} bytes but only {available} remain")]
    Truncated {
        /// What was being read.
        what: String,
        /// Byte offset of the field from the start of the message.
        offset: usize,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes that were available.
        available: usize,
    },
    /// An `OP_MSG` section starts with a payload type other than 0 (body) or 1 (document sequence).
    #[error("OP_MSG section at offset {offset} has unknown payload type {kind} (only 0 and 1 are defined)")]
    BadSectionKind {
        /// The payload type byte.
        kind: u8,
        /// Byte offset of the payload type byte.
        offset: usize,
    },
    /// The CRC-32C carried by an `OP_MSG` does not match the message bytes.
    #[error("OP_MSG checksum mismatch: the message carries {found:#010x} but its CRC-32C is {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum found at the end of the message.
        found: u32,
        /// The checksum computed over the message.
        computed: u32,
    },
    /// The opcode is not one this crate decodes (`OP_QUERY`, `OP_COMPRESSED`, `OP_MSG`), or an
    /// `OP_COMPRESSED` wraps an opcode that cannot be wrapped.
    #[error("unsupported opCode {op_code} ({name}) {context}")]
    UnknownOpCode {
        /// The opcode found.
        op_code: i32,
        /// Its name in the wire protocol reference, or "unknown".
        name: &'static str,
        /// Where it was found.
        context: &'static str,
    },
    /// `OP_MSG` flagBits has a required bit (0-15) set that the protocol does not define.
    #[error("OP_MSG flagBits {flags:#010x} set undefined required bits {unknown:#06x}")]
    UnknownRequiredFlags {
        /// The whole flagBits field.
        flags: u32,
        /// The undefined required bits that are set.
        unknown: u32,
    },
    /// A structural rule of the message is broken (missing NUL terminator, invalid UTF-8,
    /// impossible length, trailing bytes, duplicate section ...).
    #[error("invalid {what} at offset {offset}: {reason}")]
    Malformed {
        /// What was being read.
        what: String,
        /// Byte offset from the start of the message.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A BSON document is framed correctly but its content is not valid BSON.
    #[error("invalid BSON in {what} at offset {offset}: {reason}")]
    InvalidDocument {
        /// Which document (body, `documents[3]` ...).
        what: String,
        /// Byte offset of the document from the start of the message.
        offset: usize,
        /// What the BSON validation reported.
        reason: String,
    },
    /// An `OP_COMPRESSED` uses a compressor this crate does not implement.
    #[error("OP_COMPRESSED compressorId {id} ({name}) is not supported; supported: 0 (noop), 2 (zlib), 3 (zstd)")]
    UnsupportedCompressor {
        /// The compressorId byte.
        id: u8,
        /// Its registered name, or "unknown".
        name: &'static str,
    },
    /// An `OP_COMPRESSED` payload could not be decompressed, or its size is not the declared one.
    #[error("{compressor} decompression of OP_COMPRESSED failed: {reason}")]
    Decompression {
        /// The compressor name.
        compressor: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// Compressing an outgoing message failed.
    #[error("{compressor} compression failed: {reason}")]
    Compression {
        /// The compressor name.
        compressor: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A value given to an encoder cannot be represented on the wire (for example a NUL byte in a
    /// cstring or a compression level outside the compressor's range).
    #[error("cannot encode {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: String,
        /// Why it is rejected.
        reason: String,
    },
}

impl WireError {
    /// Whether the error concerns the framing itself (`messageLength` below 16 or above the
    /// maximum). [`crate::decode`] leaves the buffer untouched in that case: the stream cannot be
    /// re-synchronised and the connection has to be closed. For every other decoding error the
    /// offending message has already been removed from the buffer.
    pub fn is_framing_error(&self) -> bool {
        matches!(
            self,
            WireError::InvalidMessageLength { .. }
                | WireError::TooLarge {
                    what: "messageLength",
                    ..
                }
        )
    }
}
