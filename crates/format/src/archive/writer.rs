//! Writing archives: [`ArchiveWriter`] (one thread) and [`SharedArchiveWriter`] with
//! per-namespace [`NamespaceWriter`] handles (several producer threads).
//!
//! The output follows `mongodump`'s multiplexer exactly:
//! - the prelude (magic, header, one metadata document per entry, terminator) is written first;
//! - a buffer of documents for namespace N starts with a namespace header (`EOF: false, CRC: 0`)
//!   only when the previous buffer belonged to another namespace, and that other segment is
//!   first closed with a terminator; consecutive buffers of one namespace share a segment;
//! - closing a namespace writes a terminator if any segment is open, then the EOF header
//!   (`EOF: true`, CRC-64/XZ of all its documents as int64 bit pattern) and a terminator. A
//!   namespace closed without data still gets one empty segment first, as `mongodump` writes
//!   for empty collections and views.
//!
//! The rules a reader relies on are enforced rather than trusted: every prelude namespace is
//! closed exactly once and never reopened ([`ArchiveWriter::finish`] fails otherwise), documents
//! must be well-framed BSON of at most 16 MiB, and no more than the header's
//! `concurrent_collections` namespaces may be open (started and not closed) at once, because the
//! real `mongorestore` deadlocks beyond that. Opening one more is an
//! [`ArchiveError::TooManyOpenNamespaces`].
//!
//! Ordering that only the caller knows is the caller's job: the real `mongorestore` reads users,
//! roles and `admin.system.version` (and legacy `system.indexes`) from a cache that is complete only
//! if those namespaces are written, and closed, before any other namespace's data; the oplog
//! comes last.
//!
//! With several producers, each [`NamespaceWriter`] gathers its namespace's documents privately
//! (16 MiB by default, like `mongodump`); only handing a full buffer to the output takes the shared
//! lock, so the interleaving looks like `mongodump`'s.
//!
//! The checksum is computed while a segment is copied to the output, not before: the documents go
//! through a small staging buffer (a few hundred KiB, so it stays in the CPU cache), and the CRC
//! runs over each filled staging buffer. A segment's documents sit in up to 16 MiB of held server
//! replies that have left the cache by then; checksumming them where they are costs a second pass
//! over memory, in document-sized calls that are several times slower than the same bytes in one
//! call.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use bson::{RawDocument, RawDocumentBuf};

use super::prelude::{ArchiveHeader, PreludeEntry, ServerVersion};
use super::{ArchiveError, MAGIC_BYTES, Namespace, NamespaceCrc, SEGMENT_BUFFER_SIZE, TERMINATOR};
use crate::bson_stream::{MAX_DOCUMENT_SIZE, MIN_DOCUMENT_SIZE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not started.
    Unopened,
    /// Reserved by a [`NamespaceWriter`], no segment written yet (counts as open).
    Claimed,
    /// At least one segment written, not closed.
    Open,
    Closed,
}

#[derive(Debug)]
struct State {
    status: Status,
    crc: NamespaceCrc,
    documents: u64,
    /// Written through a [`NamespaceWriter`], which keeps the CRC itself.
    handle: bool,
}

/// Writes an archive from a single thread. See the [module documentation](self).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tidemark_format::archive::{ArchiveHeader, ArchiveReader, ArchiveWriter, PreludeEntry};
/// let header = ArchiveHeader::new(4, "7.0.16", "tidemark");
/// let entries = [PreludeEntry::new("test", "foo", r#"{"indexes":[]}"#, "collection")];
/// let mut writer = ArchiveWriter::new(Vec::new(), &header, &entries)?;
/// let foo = writer.namespace_index("test", "foo").unwrap();
/// writer.write_document(foo, &bson::rawdoc! {"_id": 1})?;
/// writer.close_namespace(foo)?;
/// let bytes = writer.finish()?;
/// ArchiveReader::new(&bytes[..])?.drain()?;
/// # Ok(()) }
/// ```
pub struct ArchiveWriter<W: Write> {
    out: W,
    written: u64,
    limit: usize,
    namespaces: Vec<Namespace>,
    states: Vec<State>,
    lookup: HashMap<Namespace, usize>,
    current: Option<usize>,
    active: usize,
    max_active: usize,
    failed: bool,
    /// Where documents are gathered and checksummed on their way to the output (see the module
    /// documentation); empty between segments.
    staging: Vec<u8>,
}

/// Size of [`ArchiveWriter`]'s staging buffer: small enough to stay in a core's cache between the
/// copy into it, the checksum and the copy out, large enough that the checksum runs at full speed.
const STAGING_SIZE: usize = 256 * 1024;

impl<W: Write> ArchiveWriter<W> {
    /// Writes the magic number and the prelude, with a `type` field in every metadata document
    /// (current `mongodump`).
    ///
    /// # Errors
    /// See [`with_prelude_style`](Self::with_prelude_style).
    pub fn new(out: W, header: &ArchiveHeader, entries: &[PreludeEntry]) -> Result<Self, ArchiveError> {
        Self::with_prelude_style(out, header, entries, true)
    }

    /// Like [`new`](Self::new); `with_type = false` omits the metadata `type` field as tools
    /// before 5.0 did (only to reproduce such archives).
    ///
    /// # Errors
    /// [`ArchiveError::InvalidWrite`] when `concurrent_collections < 1`, the server version does
    /// not parse as `X.Y.Z` (the real `mongorestore` could not list the archive), an entry has an
    /// empty collection, two entries share a data namespace, or a prelude document exceeds
    /// 16 MiB; I/O errors.
    pub fn with_prelude_style(
        out: W,
        header: &ArchiveHeader,
        entries: &[PreludeEntry],
        with_type: bool,
    ) -> Result<Self, ArchiveError> {
        let limit = usize::try_from(header.concurrent_collections)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                invalid(format!(
                    "concurrent_collections must be at least 1, not {}",
                    header.concurrent_collections
                ))
            })?;
        let version = ServerVersion::parse(&header.server_version).ok_or_else(|| {
            invalid(format!(
                "server_version {:?} does not parse as X.Y.Z; mongorestore could not read the archive",
                header.server_version
            ))
        })?;
        let mut writer = Self {
            out,
            written: 0,
            limit,
            namespaces: Vec::with_capacity(entries.len()),
            states: Vec::with_capacity(entries.len()),
            lookup: HashMap::with_capacity(entries.len()),
            current: None,
            active: 0,
            max_active: 0,
            failed: false,
            staging: Vec::new(),
        };
        for entry in entries {
            if entry.collection.is_empty() {
                return Err(invalid(format!(
                    "prelude entry for database {:?} has an empty collection name",
                    entry.db
                )));
            }
            let namespace = Namespace::new(entry.db.clone(), entry.data_collection(Some(version)));
            if writer.lookup.contains_key(&namespace) {
                return Err(invalid(format!("namespace `{namespace}` appears twice in the prelude")));
            }
            writer.lookup.insert(namespace.clone(), writer.namespaces.len());
            writer.namespaces.push(namespace);
            writer.states.push(State {
                status: Status::Unopened,
                crc: NamespaceCrc::new(),
                documents: 0,
                handle: false,
            });
        }

        let mut prelude = Vec::new();
        prelude.extend_from_slice(&MAGIC_BYTES);
        append_checked(&mut prelude, &header.to_document(), "the archive header")?;
        for entry in entries {
            let what = format!("the prelude entry for `{}.{}`", entry.db, entry.collection);
            append_checked(&mut prelude, &entry.to_document(with_type), &what)?;
        }
        prelude.extend_from_slice(&TERMINATOR);
        writer.emit(&prelude)?;
        Ok(writer)
    }

    /// The data namespaces in prelude order (for timeseries before 8.3, the `system.buckets.`
    /// collection); indexes into this slice identify namespaces in every other method.
    #[must_use]
    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    /// Index of a data namespace.
    #[must_use]
    pub fn namespace_index(&self, db: &str, collection: &str) -> Option<usize> {
        self.lookup.get(&Namespace::new(db, collection)).copied()
    }

    /// Bytes written so far.
    #[must_use]
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Namespaces currently open (started or reserved by a handle, and not closed).
    #[must_use]
    pub fn open_namespaces(&self) -> usize {
        self.active
    }

    /// The largest number of namespaces open at once so far.
    #[must_use]
    pub fn max_open_namespaces(&self) -> usize {
        self.max_active
    }

    /// Documents written so far for a namespace.
    #[must_use]
    pub fn documents_written(&self, namespace: usize) -> Option<u64> {
        self.states.get(namespace).map(|s| s.documents)
    }

    /// Appends one document to a namespace, opening a segment if the previous output belonged
    /// to another namespace.
    ///
    /// # Errors
    /// Unknown index, closed namespace, too many open namespaces, document over 16 MiB, I/O.
    pub fn write_document(&mut self, namespace: usize, document: &RawDocument) -> Result<(), ArchiveError> {
        self.write_documents(namespace, document.as_bytes())
    }

    /// Appends a buffer of concatenated documents to a namespace as one unit. The framing of each
    /// document is checked (length 5 bytes to 16 MiB, exact concatenation, trailing NUL). An
    /// empty buffer still starts a segment when the namespace differs from the previous one,
    /// as `mongodump` does with an empty final buffer.
    ///
    /// # Errors
    /// As [`write_document`](Self::write_document), plus framing errors.
    pub fn write_documents(&mut self, namespace: usize, documents: &[u8]) -> Result<(), ArchiveError> {
        self.check_direct(namespace)?;
        let count = count_documents(documents)?;
        self.emit_segment(namespace, documents)?;
        let state = &mut self.states[namespace];
        state.crc.update(documents);
        state.documents += count;
        Ok(())
    }

    /// Writes the namespace's EOF block with the CRC of everything written for it (after an empty
    /// segment if nothing was).
    ///
    /// # Errors
    /// Unknown index, already closed, too many open namespaces (for a namespace never started),
    /// I/O.
    pub fn close_namespace(&mut self, namespace: usize) -> Result<(), ArchiveError> {
        self.check_direct(namespace)?;
        let crc = self.states[namespace].crc.value();
        self.close_with_crc(namespace, crc)
    }

    /// Checks that every prelude namespace was closed, flushes, and returns the output.
    ///
    /// # Errors
    /// [`ArchiveError::NotFinished`] naming the namespaces left open or never written; I/O.
    pub fn finish(mut self) -> Result<W, ArchiveError> {
        if self.failed {
            return Err(ArchiveError::Failed("writer"));
        }
        let unfinished: Vec<String> = self
            .states
            .iter()
            .zip(&self.namespaces)
            .filter(|(s, _)| s.status != Status::Closed)
            .map(|(_, n)| n.to_string())
            .collect();
        if !unfinished.is_empty() {
            return Err(ArchiveError::NotFinished(unfinished));
        }
        let offset = self.written;
        self.out.flush().map_err(|source| ArchiveError::Io { offset, source })?;
        Ok(self.out)
    }

    fn check_usable(&self, namespace: usize) -> Result<(), ArchiveError> {
        if self.failed {
            return Err(ArchiveError::Failed("writer"));
        }
        let state = self
            .states
            .get(namespace)
            .ok_or_else(|| ArchiveError::UnknownNamespace {
                offset: 0,
                namespace: format!("#{namespace} (the prelude has {} namespaces)", self.namespaces.len()),
            })?;
        if state.status == Status::Closed {
            return Err(ArchiveError::NamespaceClosed {
                offset: 0,
                namespace: self.namespaces[namespace].to_string(),
            });
        }
        Ok(())
    }

    /// [`check_usable`](Self::check_usable), and not owned by a [`NamespaceWriter`].
    fn check_direct(&self, namespace: usize) -> Result<(), ArchiveError> {
        self.check_usable(namespace)?;
        if self.states[namespace].handle {
            return Err(invalid(format!(
                "namespace `{}` is written by a NamespaceWriter; write it through that handle",
                self.namespaces[namespace]
            )));
        }
        Ok(())
    }

    /// Counts one more open namespace, or fails if that exceeds the limit.
    fn activate(&mut self, namespace: usize) -> Result<(), ArchiveError> {
        let open = self.active + 1;
        if open > self.limit {
            return Err(ArchiveError::TooManyOpenNamespaces {
                namespace: self.namespaces[namespace].to_string(),
                open,
                limit: self.limit,
            });
        }
        self.active = open;
        self.max_active = self.max_active.max(open);
        Ok(())
    }

    /// Reserves a slot for a namespace that a handle will write.
    fn claim(&mut self, namespace: usize) -> Result<(), ArchiveError> {
        self.check_usable(namespace)?;
        if self.states[namespace].status != Status::Unopened {
            return Err(invalid(format!(
                "namespace `{}` was already started",
                self.namespaces[namespace]
            )));
        }
        self.activate(namespace)?;
        self.states[namespace].status = Status::Claimed;
        self.states[namespace].handle = true;
        Ok(())
    }

    /// Writes `parts` (already-validated documents, in order) in a segment of `namespace` and adds
    /// them to `crc`, through the staging buffer.
    fn emit_segment_checksummed<'a>(
        &mut self,
        namespace: usize,
        parts: impl IntoIterator<Item = &'a [u8]>,
        crc: &mut NamespaceCrc,
    ) -> Result<(), ArchiveError> {
        self.emit_segment(namespace, &[])?;
        let mut staging = std::mem::take(&mut self.staging);
        let mut result = Ok(());
        for part in parts {
            if !staging.is_empty() && staging.len() + part.len() > STAGING_SIZE {
                result = self.emit_checksummed(&staging, crc);
                staging.clear();
                if result.is_err() {
                    break;
                }
            }
            if part.len() >= STAGING_SIZE {
                // A document as large as the staging buffer gains nothing from the copy.
                result = self.emit_checksummed(part, crc);
                if result.is_err() {
                    break;
                }
            } else {
                if staging.capacity() == 0 {
                    staging.reserve_exact(STAGING_SIZE);
                }
                staging.extend_from_slice(part);
            }
        }
        if result.is_ok() && !staging.is_empty() {
            result = self.emit_checksummed(&staging, crc);
        }
        staging.clear();
        self.staging = staging;
        result
    }

    fn emit_checksummed(&mut self, bytes: &[u8], crc: &mut NamespaceCrc) -> Result<(), ArchiveError> {
        crc.update(bytes);
        self.emit(bytes)
    }

    /// Writes `bytes` (already-validated documents) in a segment of `namespace`.
    fn emit_segment(&mut self, namespace: usize, bytes: &[u8]) -> Result<(), ArchiveError> {
        if self.current != Some(namespace) {
            match self.states[namespace].status {
                Status::Unopened => self.activate(namespace)?,
                Status::Claimed | Status::Open => {}
                Status::Closed => {
                    return Err(ArchiveError::NamespaceClosed {
                        offset: 0,
                        namespace: self.namespaces[namespace].to_string(),
                    });
                }
            }
            self.states[namespace].status = Status::Open;
            let mut header = Vec::with_capacity(128);
            if self.current.is_some() {
                header.extend_from_slice(&TERMINATOR);
            }
            header.extend_from_slice(namespace_header(&self.namespaces[namespace], false, 0).as_bytes());
            self.emit(&header)?;
            self.current = Some(namespace);
        }
        self.emit(bytes)
    }

    fn close_with_crc(&mut self, namespace: usize, crc: u64) -> Result<(), ArchiveError> {
        if matches!(self.states[namespace].status, Status::Unopened | Status::Claimed) {
            self.emit_segment(namespace, &[])?;
        }
        let mut block = Vec::with_capacity(128);
        if self.current.is_some() {
            block.extend_from_slice(&TERMINATOR);
        }
        block.extend_from_slice(namespace_header(&self.namespaces[namespace], true, crc).as_bytes());
        block.extend_from_slice(&TERMINATOR);
        self.emit(&block)?;
        self.current = None;
        self.states[namespace].status = Status::Closed;
        self.active -= 1;
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        if self.failed {
            return Err(ArchiveError::Failed("writer"));
        }
        let offset = self.written;
        if let Err(source) = self.out.write_all(bytes) {
            self.failed = true;
            return Err(ArchiveError::Io { offset, source });
        }
        self.written += bytes.len() as u64;
        Ok(())
    }
}

impl<W: Write> std::fmt::Debug for ArchiveWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("written", &self.written)
            .field("namespaces", &self.namespaces.len())
            .field("open", &self.active)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// An [`ArchiveWriter`] shared by several producer threads, each writing one namespace through a
/// [`NamespaceWriter`]. See the [module documentation](self).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tidemark_format::archive::{ArchiveHeader, ArchiveWriter, PreludeEntry, SharedArchiveWriter};
/// let header = ArchiveHeader::new(2, "7.0.16", "tidemark");
/// let entries = [PreludeEntry::new("db", "a", "", "collection"), PreludeEntry::new("db", "b", "", "collection")];
/// let shared = SharedArchiveWriter::new(ArchiveWriter::new(Vec::new(), &header, &entries)?);
/// std::thread::scope(|scope| -> Result<(), tidemark_format::archive::ArchiveError> {
///     let mut handles = Vec::new();
///     for index in 0..2 {
///         let mut ns = shared.namespace_writer(index)?;
///         handles.push(scope.spawn(move || {
///             ns.write_document(&bson::rawdoc! {"_id": 1})?;
///             ns.finish()
///         }));
///     }
///     for handle in handles {
///         handle.join().expect("producer thread")?;
///     }
///     Ok(())
/// })?;
/// let bytes = shared.finish()?;
/// # assert!(!bytes.is_empty());
/// # Ok(()) }
/// ```
pub struct SharedArchiveWriter<W: Write> {
    inner: Arc<Mutex<ArchiveWriter<W>>>,
}

impl<W: Write> Clone for SharedArchiveWriter<W> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<W: Write> std::fmt::Debug for SharedArchiveWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedArchiveWriter").finish_non_exhaustive()
    }
}

impl<W: Write> SharedArchiveWriter<W> {
    /// Shares a writer whose prelude has been written.
    #[must_use]
    pub fn new(writer: ArchiveWriter<W>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(writer)),
        }
    }

    /// A handle that writes namespace `namespace` with `mongodump`'s 16 MiB buffer. The handle
    /// occupies one of the `concurrent_collections` slots from now until it is finished.
    ///
    /// # Errors
    /// Unknown index, namespace already started or closed, no free slot.
    pub fn namespace_writer(&self, namespace: usize) -> Result<NamespaceWriter<W>, ArchiveError> {
        self.namespace_writer_with_buffer(namespace, SEGMENT_BUFFER_SIZE)
    }

    /// Like [`namespace_writer`](Self::namespace_writer) with another buffer size (documents larger
    /// than the buffer are handed over alone).
    ///
    /// # Errors
    /// As [`namespace_writer`](Self::namespace_writer).
    pub fn namespace_writer_with_buffer(
        &self,
        namespace: usize,
        buffer_size: usize,
    ) -> Result<NamespaceWriter<W>, ArchiveError> {
        lock(&self.inner)?.claim(namespace)?;
        Ok(NamespaceWriter {
            shared: Arc::clone(&self.inner),
            namespace,
            capacity: buffer_size,
            buf: Vec::new(),
            pieces: Vec::new(),
            pending: 0,
            crc: NamespaceCrc::new(),
            documents: 0,
        })
    }

    /// Runs `f` with exclusive access to the writer (for example to write users and roles before
    /// any handle is created, or to look namespaces up).
    ///
    /// # Errors
    /// [`ArchiveError::Failed`] if a thread panicked while writing.
    pub fn with_writer<T>(&self, f: impl FnOnce(&mut ArchiveWriter<W>) -> T) -> Result<T, ArchiveError> {
        Ok(f(&mut *lock(&self.inner)?))
    }

    /// Finishes the archive ([`ArchiveWriter::finish`]).
    ///
    /// # Errors
    /// [`ArchiveError::InvalidWrite`] while handles or clones are still alive;
    /// otherwise as [`ArchiveWriter::finish`].
    pub fn finish(self) -> Result<W, ArchiveError> {
        let mutex = Arc::try_unwrap(self.inner)
            .map_err(|_| invalid("cannot finish the archive while namespace writers are still alive".into()))?;
        mutex.into_inner().map_err(|_| ArchiveError::Failed("writer"))?.finish()
    }
}

/// Writes one namespace of a [`SharedArchiveWriter`] from any thread (it is `Send` when the
/// output is). Documents are buffered and checksummed here; full buffers are handed to the
/// shared output. Call [`finish`](Self::finish) to flush and write the EOF block; a handle dropped
/// without it leaves its namespace unclosed, so the archive cannot be finished.
pub struct NamespaceWriter<W: Write> {
    shared: Arc<Mutex<ArchiveWriter<W>>>,
    namespace: usize,
    capacity: usize,
    /// Documents copied in by [`NamespaceWriter::write_document`].
    buf: Vec<u8>,
    /// The segment being gathered, in order: a range of `buf`, or documents of held bytes.
    pieces: Vec<Piece>,
    /// Bytes in `pieces`.
    pending: usize,
    crc: NamespaceCrc,
    documents: u64,
}

/// Bytes a [`NamespaceWriter`] keeps instead of copying the documents they hold (typically a server
/// reply the documents are part of), until the segment they belong to is handed to the output.
pub type HeldBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Part of a segment being gathered.
enum Piece {
    /// A range of the writer's own buffer.
    Copied(std::ops::Range<usize>),
    /// Documents inside held bytes (one entry per reply, however many documents it holds).
    Held(HeldBytes, Vec<std::ops::Range<usize>>),
}

impl Piece {
    /// The documents of the piece, in order (`buf`: the writer's own buffer).
    fn parts<'a>(&'a self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (bytes, ranges): (&[u8], &[std::ops::Range<usize>]) = match self {
            Piece::Copied(range) => (buf, std::slice::from_ref(range)),
            Piece::Held(held, ranges) => ((**held).as_ref(), ranges),
        };
        // Every range was checked against its bytes when the piece was added.
        ranges
            .iter()
            .map(move |range| bytes.get(range.clone()).unwrap_or_default())
    }
}

impl<W: Write> std::fmt::Debug for NamespaceWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceWriter")
            .field("namespace", &self.namespace)
            .field("buffered", &self.pending)
            .field("documents", &self.documents)
            .finish_non_exhaustive()
    }
}

impl<W: Write> NamespaceWriter<W> {
    /// Index of the namespace this handle writes.
    #[must_use]
    pub fn namespace(&self) -> usize {
        self.namespace
    }

    /// Documents accepted so far.
    #[must_use]
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Appends one document (copied into the writer's buffer).
    ///
    /// # Errors
    /// Document over 16 MiB; errors of handing a full buffer over (I/O).
    pub fn write_document(&mut self, document: &RawDocument) -> Result<(), ArchiveError> {
        let bytes = document.as_bytes();
        self.make_room(bytes.len())?;
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.capacity.min(1 << 20));
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        match self.pieces.last_mut() {
            Some(Piece::Copied(range)) if range.end == start => range.end = self.buf.len(),
            _ => self.pieces.push(Piece::Copied(start..self.buf.len())),
        }
        self.pending += bytes.len();
        self.documents += 1;
        Ok(())
    }

    /// Appends the documents at `ranges` of `held` (each range one well-framed document), keeping
    /// `held` until their segment is handed to the output instead of copying them: the archive is
    /// byte for byte what [`write_document`](Self::write_document) of each would give, with one copy
    /// fewer of every document.
    ///
    /// # Errors
    /// A range outside `held` or not one framed document of at most 16 MiB (nothing of it is
    /// written); errors of handing a full buffer over (I/O).
    pub fn write_held(
        &mut self,
        held: &HeldBytes,
        ranges: impl IntoIterator<Item = std::ops::Range<usize>>,
    ) -> Result<(), ArchiveError> {
        let bytes = (**held).as_ref();
        // The documents of `held` accepted since its last piece was pushed.
        let mut taken = Vec::new();
        let mut result = Ok(());
        for range in ranges {
            let Some(document) = bytes.get(range.clone()) else {
                result = Err(invalid(format!(
                    "document range {range:?} is outside the {} held bytes",
                    bytes.len()
                )));
                break;
            };
            match count_documents(document) {
                Ok(1) => {}
                Ok(_) => {
                    result = Err(invalid(format!(
                        "held bytes {range:?} are not exactly one BSON document"
                    )));
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            if let Err(e) = check_size(document.len()) {
                result = Err(e);
                break;
            }
            if self.segment_full(document.len()) {
                if !taken.is_empty() {
                    self.pieces
                        .push(Piece::Held(Arc::clone(held), std::mem::take(&mut taken)));
                }
                if let Err(e) = self.flush() {
                    result = Err(e);
                    break;
                }
            }
            taken.push(range);
            self.pending += document.len();
            self.documents += 1;
        }
        if !taken.is_empty() {
            self.pieces.push(Piece::Held(Arc::clone(held), taken));
        }
        result
    }

    /// Checks a document's size and hands the segment over first if the document does not fit.
    fn make_room(&mut self, len: usize) -> Result<(), ArchiveError> {
        check_size(len)?;
        if self.segment_full(len) {
            self.flush()?;
        }
        Ok(())
    }

    /// Whether a document of `len` bytes no longer fits in the segment being gathered.
    fn segment_full(&self, len: usize) -> bool {
        self.pending > 0 && self.pending + len > self.capacity
    }

    /// Appends one document given as bytes (framing checked).
    ///
    /// # Errors
    /// Not exactly one well-framed document; as [`write_document`](Self::write_document).
    pub fn write_bson(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        if count_documents(bytes)? != 1 {
            return Err(invalid(format!(
                "expected exactly one BSON document, got {} bytes holding several",
                bytes.len()
            )));
        }
        let document = RawDocument::from_bytes(bytes).map_err(|e| invalid(format!("invalid BSON document: {e}")))?;
        self.write_document(document)
    }

    /// Hands the buffered documents to the output now.
    ///
    /// # Errors
    /// I/O errors, or a failed shared writer.
    pub fn flush(&mut self) -> Result<(), ArchiveError> {
        let shared = Arc::clone(&self.shared);
        let mut writer = lock(&shared)?;
        self.hand_over(&mut writer)
    }

    /// Writes the gathered segment to the locked output, adding it to the namespace's checksum.
    fn hand_over(&mut self, writer: &mut ArchiveWriter<W>) -> Result<(), ArchiveError> {
        let buf = &self.buf;
        let parts = self.pieces.iter().flat_map(|piece| piece.parts(buf));
        writer.emit_segment_checksummed(self.namespace, parts, &mut self.crc)?;
        self.buf.clear();
        self.pieces.clear();
        self.pending = 0;
        Ok(())
    }

    /// Flushes the remaining documents (an empty segment if there are none, as `mongodump` does)
    /// and writes the namespace's EOF block.
    ///
    /// # Errors
    /// I/O errors, or a failed shared writer.
    pub fn finish(mut self) -> Result<(), ArchiveError> {
        let shared = Arc::clone(&self.shared);
        let mut writer = lock(&shared)?;
        self.hand_over(&mut writer)?;
        writer.states[self.namespace].documents = self.documents;
        writer.close_with_crc(self.namespace, self.crc.value())?;
        drop(writer);
        self.buf = Vec::new();
        Ok(())
    }
}

/// Refuses a document larger than an archive may hold.
fn check_size(len: usize) -> Result<(), ArchiveError> {
    if len > MAX_DOCUMENT_SIZE {
        return Err(invalid(format!(
            "document of {len} bytes is larger than the archive maximum of {MAX_DOCUMENT_SIZE} bytes"
        )));
    }
    Ok(())
}

fn lock<W: Write>(shared: &Mutex<ArchiveWriter<W>>) -> Result<MutexGuard<'_, ArchiveWriter<W>>, ArchiveError> {
    shared.lock().map_err(|_| ArchiveError::Failed("writer"))
}

fn invalid(message: String) -> ArchiveError {
    ArchiveError::InvalidWrite(message)
}

/// A namespace header document: exactly `db`, `collection`, `EOF`, `CRC` (int64 bit pattern).
fn namespace_header(namespace: &Namespace, eof: bool, crc: u64) -> RawDocumentBuf {
    let mut doc = RawDocumentBuf::new();
    doc.append("db", namespace.db.as_str());
    doc.append("collection", namespace.collection.as_str());
    doc.append("EOF", eof);
    doc.append("CRC", i64::from_le_bytes(crc.to_le_bytes()));
    doc
}

fn append_checked(out: &mut Vec<u8>, doc: &RawDocument, what: &str) -> Result<(), ArchiveError> {
    let len = doc.as_bytes().len();
    if len > MAX_DOCUMENT_SIZE {
        return Err(invalid(format!(
            "{what} is {len} bytes, more than the archive maximum of {MAX_DOCUMENT_SIZE}"
        )));
    }
    out.extend_from_slice(doc.as_bytes());
    Ok(())
}

/// Checks that `bytes` is an exact concatenation of framed documents and counts them.
fn count_documents(bytes: &[u8]) -> Result<u64, ArchiveError> {
    let mut at = 0usize;
    let mut count = 0u64;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let prefix: [u8; 4] = rest.get(..4).and_then(|p| p.try_into().ok()).ok_or_else(|| {
            invalid(format!(
                "{} stray bytes after the last document at buffer offset {at}",
                rest.len()
            ))
        })?;
        let declared = u32::from_le_bytes(prefix);
        let size = usize::try_from(declared)
            .ok()
            .filter(|s| (MIN_DOCUMENT_SIZE..=MAX_DOCUMENT_SIZE).contains(s))
            .ok_or_else(|| invalid(format!("invalid BSON length {declared} at buffer offset {at}")))?;
        if size > rest.len() {
            return Err(invalid(format!(
                "document at buffer offset {at} declares {size} bytes but only {} remain",
                rest.len()
            )));
        }
        if rest[size - 1] != 0 {
            return Err(invalid(format!(
                "document at buffer offset {at} doesn't end with a null byte"
            )));
        }
        at += size;
        count += 1;
    }
    Ok(count)
}
