//! [`ArchiveReader`]: a pull-based demultiplexer for `--archive` streams.
//!
//! The real `mongorestore` pushes each body document into its namespace's consumer and blocks
//! until that consumer takes it, which is why it deadlocks when fewer restore workers than
//! interleaved namespaces exist. This reader instead hands back one [`ArchiveEventRef`] per call
//! on the caller's thread: nothing waits on anything, so it cannot deadlock, and every call
//! consumes at least four bytes or ends the stream, so it terminates on any input. Callers that
//! feed several workers dispatch the events themselves; [`max_open_namespaces`] tells them how
//! many namespaces were interleaved at once.
//!
//! Every structural rule of the format is checked, with the wording of the real tool's errors and
//! the byte offset of the fault:
//! - each position holds a terminator or a BSON document of 5 bytes to 16 MiB ending in NUL;
//! - a block starts with a namespace header, never a terminator; a clean end of input is legal
//!   only where a block would start;
//! - namespace headers contain only `db` (string), `collection` (non-empty string), `EOF` (bool)
//!   and `CRC` (int64) — like the Go decoder, absent fields take their zero value;
//! - a namespace must be announced by the prelude, must not reappear after its EOF block, and its
//!   EOF block's CRC must match the documents read (unless it is [muted](ArchiveReader::mute));
//! - no document may follow an EOF header inside its block;
//! - at the end, no namespace may be open and every prelude namespace must have been closed.
//!
//! [`max_open_namespaces`]: ArchiveReader::max_open_namespaces

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use bson::{RawBsonRef, RawDocument, RawDocumentBuf};

use super::prelude::{ArchiveHeader, PreludeEntry, ServerVersion};
use super::{ArchiveError, MAGIC_BYTES, Namespace, NamespaceCrc};
use crate::bson_stream::{MAX_DOCUMENT_SIZE, MIN_DOCUMENT_SIZE, read_full};

/// A namespace whose data blocks the archive contains (one per distinct data namespace of the
/// prelude).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataNamespace {
    /// Database and data collection as they appear in namespace headers.
    pub namespace: Namespace,
    /// Index in [`ArchiveReader::prelude`] of the (first) entry that announced it.
    pub prelude_index: usize,
}

/// One step of the stream, borrowing the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArchiveEventRef<'a> {
    /// A data segment begins (a namespace header with `EOF: false`).
    SegmentStart {
        /// Index into [`ArchiveReader::namespaces`].
        namespace: usize,
        /// Whether this is the namespace's first segment (the moment the real tool announces
        /// the namespace to its restore workers).
        first: bool,
    },
    /// A body document of the current segment. Not produced for muted namespaces.
    Document {
        /// Index into [`ArchiveReader::namespaces`].
        namespace: usize,
        /// The document, as stored.
        document: &'a RawDocument,
    },
    /// The namespace's EOF block: no more data will follow for it.
    NamespaceEnd {
        /// Index into [`ArchiveReader::namespaces`].
        namespace: usize,
        /// The CRC stored in the EOF header.
        crc: u64,
        /// Whether the CRC was verified (false for muted namespaces, as in the real tool).
        crc_checked: bool,
    },
}

/// One step of the stream, owning its document.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchiveEvent {
    /// See [`ArchiveEventRef::SegmentStart`].
    SegmentStart {
        /// Index into [`ArchiveReader::namespaces`].
        namespace: usize,
        /// Whether this is the namespace's first segment.
        first: bool,
    },
    /// See [`ArchiveEventRef::Document`].
    Document {
        /// Index into [`ArchiveReader::namespaces`].
        namespace: usize,
        /// The document, as stored.
        document: RawDocumentBuf,
    },
    /// See [`ArchiveEventRef::NamespaceEnd`].
    NamespaceEnd {
        /// Index into [`ArchiveReader::namespaces`].
        namespace: usize,
        /// The CRC stored in the EOF header.
        crc: u64,
        /// Whether the CRC was verified.
        crc_checked: bool,
    },
}

impl From<ArchiveEventRef<'_>> for ArchiveEvent {
    fn from(event: ArchiveEventRef<'_>) -> Self {
        match event {
            ArchiveEventRef::SegmentStart { namespace, first } => Self::SegmentStart { namespace, first },
            ArchiveEventRef::Document { namespace, document } => Self::Document {
                namespace,
                document: document.to_raw_document_buf(),
            },
            ArchiveEventRef::NamespaceEnd {
                namespace,
                crc,
                crc_checked,
            } => Self::NamespaceEnd {
                namespace,
                crc,
                crc_checked,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Unopened,
    Open,
    Closed,
}

#[derive(Debug)]
struct NamespaceState {
    status: Status,
    muted: bool,
    crc: NamespaceCrc,
    documents: u64,
    bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A block (namespace header) or a clean end of input is expected.
    BlockStart,
    /// Inside a data segment of this namespace: documents or a terminator.
    InSegment(usize),
    /// After an EOF header: only its terminator may follow.
    AfterEof,
    Done,
    Failed,
}

/// What one read at a document position found.
enum Unit {
    /// Clean end of input (no byte read).
    End,
    Terminator,
    /// A document, now in `buf`.
    Document,
}

/// A decoded namespace header.
struct NamespaceHeader {
    db: String,
    collection: String,
    eof: bool,
    crc: u64,
}

/// Reads an archive one event at a time. See the [module documentation](self).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tidemark_format::archive::{ArchiveEvent, ArchiveReader};
/// let bytes = std::fs::read(concat!(
///     env!("CARGO_MANIFEST_DIR"),
///     "/../../../shared/fixtures/mongo-tools/mongorestore/testdata/test.bar.archive"
/// ))?;
/// let mut reader = ArchiveReader::new(&bytes[..])?;
/// let mut documents = 0;
/// while let Some(event) = reader.next_event()? {
///     if let ArchiveEvent::Document { .. } = event {
///         documents += 1;
///     }
/// }
/// assert_eq!(documents, 2);
/// # Ok(()) }
/// ```
pub struct ArchiveReader<R> {
    input: BufReader<R>,
    offset: u64,
    header: ArchiveHeader,
    prelude: Vec<PreludeEntry>,
    prelude_has_type: bool,
    namespaces: Vec<DataNamespace>,
    states: Vec<NamespaceState>,
    lookup: HashMap<Namespace, usize>,
    state: State,
    open: usize,
    max_open: usize,
    buf: Vec<u8>,
    /// Length of the unit last read in place: it is still at the front of `input`'s buffer and
    /// is consumed by the next read (0 when the last unit was copied into `buf`).
    in_place: usize,
}

impl<R: Read> ArchiveReader<R> {
    /// Buffer size of the internal [`BufReader`].
    const BUFFER: usize = 1024 * 1024;

    /// Reads and checks the magic number and the prelude (header, collection metadata,
    /// terminator). Pass a buffered or unbuffered reader; it is buffered internally.
    ///
    /// # Errors
    /// [`ArchiveError::NotAnArchive`] for a wrong magic number; framing and prelude errors.
    pub fn new(input: R) -> Result<Self, ArchiveError> {
        let mut reader = Self {
            in_place: 0,
            input: BufReader::with_capacity(Self::BUFFER, input),
            offset: 0,
            header: ArchiveHeader::new(0, "", ""),
            prelude: Vec::new(),
            prelude_has_type: true,
            namespaces: Vec::new(),
            states: Vec::new(),
            lookup: HashMap::new(),
            state: State::BlockStart,
            open: 0,
            max_open: 0,
            buf: Vec::new(),
        };
        reader.read_prelude()?;
        Ok(reader)
    }

    fn read_prelude(&mut self) -> Result<(), ArchiveError> {
        let mut magic = [0u8; 4];
        let got = read_full(&mut self.input, &mut magic).map_err(|source| ArchiveError::Io { offset: 0, source })?;
        if got < magic.len() && magic[..got] == MAGIC_BYTES[..got] {
            return Err(ArchiveError::Corrupt {
                offset: 0,
                message: format!("I/O failure reading beginning of archive: unexpected EOF after {got} bytes"),
            });
        }
        if magic != MAGIC_BYTES {
            return Err(ArchiveError::NotAnArchive {
                found: magic[..got].to_vec(),
            });
        }
        self.offset = 4;

        let at = self.offset;
        match self.read_unit()? {
            Unit::End => {
                return Err(ArchiveError::Corrupt {
                    offset: at,
                    message: "archive ends before its prelude header".into(),
                });
            }
            Unit::Terminator => return Err(consecutive_terminators(at)),
            Unit::Document => {}
        }
        self.header = ArchiveHeader::from_document(self.current_document(at)?)
            .map_err(|message| ArchiveError::Prelude { offset: at, message })?;
        loop {
            let at = self.offset;
            match self.read_unit()? {
                Unit::Terminator => break,
                Unit::End => return Err(unexpected_eof(at, "inside the prelude")),
                Unit::Document => {
                    let doc = self.current_document(at)?;
                    let has_type = PreludeEntry::document_has_type(doc);
                    let entry = PreludeEntry::from_document(doc)
                        .map_err(|message| ArchiveError::Prelude { offset: at, message })?;
                    self.prelude_has_type &= has_type;
                    self.prelude.push(entry);
                }
            }
        }

        let version = ServerVersion::parse(&self.header.server_version);
        for (prelude_index, entry) in self.prelude.iter().enumerate() {
            let namespace = Namespace::new(entry.db.clone(), entry.data_collection(version));
            if self.lookup.contains_key(&namespace) {
                continue;
            }
            self.lookup.insert(namespace.clone(), self.namespaces.len());
            self.namespaces.push(DataNamespace {
                namespace,
                prelude_index,
            });
            self.states.push(NamespaceState {
                status: Status::Unopened,
                muted: false,
                crc: NamespaceCrc::new(),
                documents: 0,
                bytes: 0,
            });
        }
        Ok(())
    }

    /// The header document.
    #[must_use]
    pub fn header(&self) -> &ArchiveHeader {
        &self.header
    }

    /// The collection-metadata entries, in stream order.
    #[must_use]
    pub fn prelude(&self) -> &[PreludeEntry] {
        &self.prelude
    }

    /// Whether every collection-metadata document had a `type` field (false for archives of
    /// tools before 5.0); see [`PreludeEntry::to_document`].
    #[must_use]
    pub fn prelude_has_type(&self) -> bool {
        self.prelude_has_type
    }

    /// The data namespaces the archive must contain, in prelude order; event indexes point here.
    #[must_use]
    pub fn namespaces(&self) -> &[DataNamespace] {
        &self.namespaces
    }

    /// Index of the data namespace `db.collection` (for timeseries before 8.3, the
    /// `system.buckets.` collection).
    #[must_use]
    pub fn namespace_index(&self, db: &str, collection: &str) -> Option<usize> {
        self.lookup.get(&Namespace::new(db, collection)).copied()
    }

    /// Stops delivering documents of a namespace: they are still read and framed-checked, but not
    /// returned and not checksummed (its EOF CRC is not verified), as the real tool does for
    /// namespaces it skips. Segment and end events are still returned. Out-of-range indexes are
    /// ignored.
    pub fn mute(&mut self, namespace: usize) {
        if let Some(state) = self.states.get_mut(namespace) {
            state.muted = true;
        }
    }

    /// Byte offset of the next unread byte of the (uncompressed) archive.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Namespaces started but not yet closed.
    #[must_use]
    pub fn open_namespaces(&self) -> usize {
        self.open
    }

    /// The largest number of namespaces that were open at the same time so far. A restore that
    /// consumes namespaces on separate workers needs at least this many.
    #[must_use]
    pub fn max_open_namespaces(&self) -> usize {
        self.max_open
    }

    /// Documents and bytes read so far for a namespace (muted ones included).
    #[must_use]
    pub fn namespace_totals(&self, namespace: usize) -> Option<(u64, u64)> {
        self.states.get(namespace).map(|s| (s.documents, s.bytes))
    }

    /// Whether the whole stream has been read and validated.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Gives back the underlying reader (buffered, unread input is lost).
    pub fn into_inner(self) -> R {
        self.input.into_inner()
    }

    /// The next event, or `None` once the stream has ended and passed the end-of-stream checks.
    /// The returned document borrows the reader's buffer.
    ///
    /// # Errors
    /// Any structural error (see the [module documentation](self)); afterwards every call
    /// returns [`ArchiveError::Failed`].
    pub fn next_event_ref(&mut self) -> Result<Option<ArchiveEventRef<'_>>, ArchiveError> {
        match self.step() {
            Ok(Some(Step::Event(event))) => Ok(Some(event)),
            Ok(Some(Step::Document(namespace))) => {
                let bytes = self.unit_bytes();
                let document = RawDocument::from_bytes(bytes).map_err(|e| ArchiveError::Corrupt {
                    offset: self.offset.saturating_sub(bytes.len() as u64),
                    message: format!("invalid BSON document: {e}"),
                })?;
                Ok(Some(ArchiveEventRef::Document { namespace, document }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                if !matches!(e, ArchiveError::Failed(_)) {
                    self.state = State::Failed;
                }
                Err(e)
            }
        }
    }

    /// Like [`next_event_ref`](Self::next_event_ref), with an owned document.
    ///
    /// # Errors
    /// As [`next_event_ref`](Self::next_event_ref).
    pub fn next_event(&mut self) -> Result<Option<ArchiveEvent>, ArchiveError> {
        Ok(self.next_event_ref()?.map(ArchiveEvent::from))
    }

    /// Reads to the end, discarding documents, and returns the first error if any.
    ///
    /// # Errors
    /// As [`next_event_ref`](Self::next_event_ref).
    pub fn drain(&mut self) -> Result<(), ArchiveError> {
        while self.next_event_ref()?.is_some() {}
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Step>, ArchiveError> {
        loop {
            let at = self.offset;
            match self.state {
                State::Done => return Ok(None),
                State::Failed => return Err(ArchiveError::Failed("reader")),
                State::BlockStart => match self.read_unit()? {
                    Unit::End => {
                        self.check_complete(at)?;
                        self.state = State::Done;
                        return Ok(None);
                    }
                    Unit::Terminator => return Err(consecutive_terminators(at)),
                    Unit::Document => return self.namespace_header(at).map(Some),
                },
                State::AfterEof => match self.read_unit()? {
                    Unit::Terminator => self.state = State::BlockStart,
                    Unit::Document => return Err(ArchiveError::DataWithoutHeader { offset: at }),
                    Unit::End => return Err(unexpected_eof(at, "after an EOF namespace header")),
                },
                State::InSegment(index) => match self.read_unit()? {
                    Unit::Terminator => self.state = State::BlockStart,
                    Unit::End => return Err(unexpected_eof(at, "inside a data segment")),
                    Unit::Document => {
                        let bytes = if self.in_place > 0 {
                            &self.input.buffer()[..self.in_place]
                        } else {
                            &self.buf[..]
                        };
                        let state = &mut self.states[index];
                        state.documents += 1;
                        state.bytes += bytes.len() as u64;
                        if !state.muted {
                            state.crc.update(bytes);
                            return Ok(Some(Step::Document(index)));
                        }
                    }
                },
            }
        }
    }

    fn namespace_header(&mut self, at: u64) -> Result<Step, ArchiveError> {
        let header = decode_namespace_header(self.current_document(at)?)
            .map_err(|message| ArchiveError::BadNamespaceHeader { offset: at, message })?;
        let namespace = Namespace::new(header.db, header.collection);
        let Some(&index) = self.lookup.get(&namespace) else {
            return Err(ArchiveError::UnknownNamespace {
                offset: at,
                namespace: namespace.to_string(),
            });
        };
        let state = &mut self.states[index];
        let first = match state.status {
            Status::Closed => {
                return Err(ArchiveError::NamespaceClosed {
                    offset: at,
                    namespace: namespace.to_string(),
                });
            }
            Status::Unopened => {
                state.status = Status::Open;
                self.open += 1;
                self.max_open = self.max_open.max(self.open);
                true
            }
            Status::Open => false,
        };
        if !header.eof {
            self.state = State::InSegment(index);
            return Ok(Step::Event(ArchiveEventRef::SegmentStart {
                namespace: index,
                first,
            }));
        }
        state.status = Status::Closed;
        self.open -= 1;
        self.state = State::AfterEof;
        let crc_checked = !state.muted;
        if crc_checked {
            let computed = state.crc.value();
            if computed != header.crc {
                return Err(ArchiveError::CrcMismatch {
                    offset: at,
                    namespace: namespace.to_string(),
                    computed,
                    stored: header.crc,
                });
            }
        }
        Ok(Step::Event(ArchiveEventRef::NamespaceEnd {
            namespace: index,
            crc: header.crc,
            crc_checked,
        }))
    }

    fn check_complete(&self, at: u64) -> Result<(), ArchiveError> {
        let names = |wanted: Status| -> Vec<String> {
            self.states
                .iter()
                .zip(&self.namespaces)
                .filter(|(s, _)| s.status == wanted)
                .map(|(_, n)| n.namespace.to_string())
                .collect()
        };
        let open = names(Status::Open);
        if !open.is_empty() {
            return Err(ArchiveError::UnfinishedNamespaces {
                offset: at,
                namespaces: open,
            });
        }
        if let Some(namespace) = names(Status::Unopened).into_iter().next() {
            return Err(ArchiveError::MissingNamespace { offset: at, namespace });
        }
        Ok(())
    }

    /// The document just read by [`read_unit`](Self::read_unit).
    fn current_document(&self, at: u64) -> Result<&RawDocument, ArchiveError> {
        RawDocument::from_bytes(self.unit_bytes()).map_err(|e| ArchiveError::Corrupt {
            offset: at,
            message: format!("invalid BSON document: {e}"),
        })
    }

    /// Reads a terminator or a whole document (into `buf`) at a document position.
    fn read_unit(&mut self) -> Result<Unit, ArchiveError> {
        if let Some(unit) = self.read_unit_buffered()? {
            return Ok(unit);
        }
        self.read_unit_slow()
    }

    /// The bytes of the document read last: in place in the input buffer, or copied into `buf`.
    fn unit_bytes(&self) -> &[u8] {
        if self.in_place > 0 {
            &self.input.buffer()[..self.in_place]
        } else {
            &self.buf[..]
        }
    }

    /// The common case: the whole unit is already in the input buffer, so it is checked and
    /// handed out in place, without a copy; it is consumed at the next read.
    fn read_unit_buffered(&mut self) -> Result<Option<Unit>, ArchiveError> {
        let at = self.offset;
        self.input.consume(std::mem::take(&mut self.in_place));
        let buffered = match self.input.fill_buf() {
            Ok(b) => b,
            // The slow path retries interrupted reads.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(None),
            Err(source) => return Err(ArchiveError::Io { offset: at, source }),
        };
        let Some(prefix) = buffered.first_chunk::<4>() else {
            return Ok(None);
        };
        if *prefix == super::TERMINATOR {
            self.input.consume(4);
            self.offset += 4;
            return Ok(Some(Unit::Terminator));
        }
        let size = usize::try_from(u32::from_le_bytes(*prefix)).unwrap_or(usize::MAX);
        // Invalid lengths, truncation and a missing terminator get their errors from the slow
        // path, which reads the same bytes.
        if !(MIN_DOCUMENT_SIZE..=MAX_DOCUMENT_SIZE).contains(&size) || buffered.len() < size || buffered[size - 1] != 0
        {
            return Ok(None);
        }
        self.in_place = size;
        self.offset += size as u64;
        Ok(Some(Unit::Document))
    }

    fn read_unit_slow(&mut self) -> Result<Unit, ArchiveError> {
        let at = self.offset;
        let mut prefix = [0u8; 4];
        let got = read_full(&mut self.input, &mut prefix).map_err(|source| ArchiveError::Io { offset: at, source })?;
        if got == 0 {
            return Ok(Unit::End);
        }
        if got < prefix.len() {
            return Err(ArchiveError::Corrupt {
                offset: at,
                message: format!("I/O error reading length or terminator ( unexpected EOF: {got} of 4 bytes present )"),
            });
        }
        if prefix == super::TERMINATOR {
            self.offset += 4;
            return Ok(Unit::Terminator);
        }
        let declared = u32::from_le_bytes(prefix);
        let size = usize::try_from(declared)
            .ok()
            .filter(|s| (MIN_DOCUMENT_SIZE..=MAX_DOCUMENT_SIZE).contains(s))
            .ok_or_else(|| ArchiveError::Corrupt {
                offset: at,
                message: format!("{declared} is neither a valid bson length nor a archive terminator"),
            })?;
        self.buf.clear();
        self.buf.reserve(size);
        self.buf.extend_from_slice(&prefix);
        let body = size - 4;
        let read = (&mut self.input)
            .take(body as u64)
            .read_to_end(&mut self.buf)
            .map_err(|source| ArchiveError::Io { offset: at, source })?;
        if read < body {
            return Err(ArchiveError::Corrupt {
                offset: at,
                message: format!(
                    "read bson ( unexpected EOF: document declares {size} bytes, {} present )",
                    read + 4
                ),
            });
        }
        let last = self.buf[size - 1];
        if last != 0 {
            return Err(ArchiveError::Corrupt {
                offset: at,
                message: format!("bson (size: {size}, byte: {last}) doesn't end with a null byte"),
            });
        }
        self.offset += size as u64;
        Ok(Unit::Document)
    }
}

impl<R: Read> std::fmt::Debug for ArchiveReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("offset", &self.offset)
            .field("header", &self.header)
            .field("namespaces", &self.namespaces.len())
            .field("open", &self.open)
            .field("max_open", &self.max_open)
            .finish_non_exhaustive()
    }
}

/// What [`ArchiveReader::step`] produced; a document is borrowed from the buffer by the caller,
/// once the mutable borrow of the step has ended.
enum Step {
    Event(ArchiveEventRef<'static>),
    Document(usize),
}

/// Decodes a namespace header as strictly as the Go tools do: only the four known fields, each
/// with its exact type; absent fields keep their zero value; an empty collection is an error.
fn decode_namespace_header(doc: &RawDocument) -> Result<NamespaceHeader, String> {
    let mut header = NamespaceHeader {
        db: String::new(),
        collection: String::new(),
        eof: false,
        crc: 0,
    };
    for element in doc {
        let (key, value) =
            element.map_err(|e| format!("header bson doesn't unmarshal as a collection header ( {e} )"))?;
        let wrong_type = |expected: &str| {
            format!(
                "header bson doesn't unmarshal as a collection header ( `{key}` is BSON {:?} but expected {expected} )",
                value.element_type()
            )
        };
        match (key, value) {
            ("db", RawBsonRef::String(s)) => header.db = s.to_owned(),
            ("collection", RawBsonRef::String(s)) => header.collection = s.to_owned(),
            ("EOF", RawBsonRef::Boolean(b)) => header.eof = b,
            ("CRC", RawBsonRef::Int64(n)) => header.crc = u64::from_le_bytes(n.to_le_bytes()),
            ("db" | "collection", _) => return Err(wrong_type("string")),
            ("EOF", _) => return Err(wrong_type("bool")),
            ("CRC", _) => return Err(wrong_type("int64")),
            _ => {
                return Err(format!(
                    "header bson doesn't unmarshal as a collection header ( unknown BSON NamespaceHeader: `{key}` )"
                ));
            }
        }
    }
    if header.collection.is_empty() {
        return Err("collection header is missing a Collection".into());
    }
    Ok(header)
}

fn consecutive_terminators(offset: u64) -> ArchiveError {
    ArchiveError::Corrupt {
        offset,
        message: "consecutive terminators / headerless blocks are not allowed".into(),
    }
}

fn unexpected_eof(offset: u64, place: &str) -> ArchiveError {
    ArchiveError::Corrupt {
        offset,
        message: format!("unexpected EOF {place}"),
    }
}
