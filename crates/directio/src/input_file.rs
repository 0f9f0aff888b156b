//! Input files read front to back, as a stream, with direct I/O.
//!
//! A restore reads gigabytes of dump files once. Through the page cache, every block is first read
//! into a newly allocated cache page and then copied into the reader's memory; on a cold cache that
//! copy was the largest single cost of a directory restore (28% to 59% of the client's CPU in
//! profiles: freshly read pages are not in the CPU cache, and on a virtual machine freshly
//! allocated ones are not even mapped yet). [`InputFile`] opens its file with `O_DIRECT` where the
//! platform and the filesystem allow it, so the device writes straight into a few aligned buffers
//! that are used over and over, and reads them on a background thread: the disk works on the next
//! blocks while the caller parses the current one. Where direct I/O is refused (at open or at the
//! first read: tmpfs on older kernels, some network filesystems, other platforms, pipes) the same
//! reader uses ordinary reads, so callers never need to care.
//!
//! Direct reads are issued at aligned offsets for whole buffers; the end of the file comes back as
//! a short read, whatever its length. Each read asks for a whole buffer at the aligned offset at or
//! before the next byte wanted and skips the bytes before it, so a short read anywhere (a file
//! still growing, a filesystem that returns less) loses nothing. The reader implements
//! [`BufRead`]: callers that parse in place take bytes straight from the buffers, without a copy.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::{ALIGN, AlignedBuffer};

/// Size of each read: large enough that a direct read costs one request per MiB, small enough that
/// several files read at once stay within a few MiB each.
const READ_BUFFER: usize = 1 << 20;
/// Buffers a file may hold: one being parsed and up to two read ahead (a directory restore reads
/// four files at once).
const MAX_READ_BUFFERS: usize = 3;

/// The open file and where the next read starts.
struct Source {
    file: File,
    path: PathBuf,
    /// `O_DIRECT` is set on `file`.
    direct: bool,
    /// A regular file, read with positional reads (anything else is read in order with `read`).
    positional: bool,
    /// File offset of the next byte wanted.
    offset: u64,
}

impl Source {
    /// Reads the next bytes of the file into `buffer` (one read, at most its capacity). Returns
    /// where the new bytes start in [`AlignedBuffer::filled`]; no new bytes means the end of the file.
    fn fill(&mut self, buffer: &mut AlignedBuffer) -> io::Result<usize> {
        buffer.len = 0;
        loop {
            let (at, skip) = if self.direct {
                let at = self.offset / ALIGN as u64 * ALIGN as u64;
                (at, usize::try_from(self.offset - at).unwrap_or(0))
            } else {
                (self.offset, 0)
            };
            match self.read_at(buffer, at) {
                Ok(n) => {
                    let n = n.max(skip);
                    buffer.len = n;
                    self.offset += (n - skip) as u64;
                    return Ok(skip);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                    // Accepted at open, refused at read: continue without direct I/O (reads are
                    // positional: the new file needs no seek).
                    self.file = open_file(&self.path, false)?.0;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn read_at(&mut self, buffer: &mut AlignedBuffer, at: u64) -> io::Result<usize> {
        let space = buffer.space();
        #[cfg(unix)]
        if self.positional {
            use std::os::unix::fs::FileExt;
            return self.file.read_at(space, at);
        }
        let _ = at;
        self.file.read(space)
    }
}

/// Opens `path` for reading, with `O_DIRECT` if `direct` and the filesystem accepts it; returns
/// the file and whether it has `O_DIRECT`.
pub(crate) fn open_file(path: &Path, direct: bool) -> io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    if direct {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path) {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = direct;
    Ok((OpenOptions::new().read(true).open(path)?, false))
}

/// The background thread and the channels that pass buffers to it and back.
struct ReadAhead {
    full: mpsc::Receiver<io::Result<(AlignedBuffer, usize)>>,
    empty: mpsc::Sender<AlignedBuffer>,
    handle: Option<JoinHandle<()>>,
}

/// Where the next buffers come from.
enum Supply {
    /// Read on the caller's thread: until a first read fills a whole buffer (small files never
    /// start a thread).
    Inline(Source),
    /// Read ahead on a background thread.
    ReadAhead(ReadAhead),
    /// The end of the file was reached.
    Done,
    /// A read failed: the file cannot be read further (its end must not look reached).
    Failed,
}

/// A file read with direct I/O where possible (see the module documentation).
pub struct InputFile {
    buffer: AlignedBuffer,
    /// Bytes of `buffer.filled()` already handed out.
    consumed: usize,
    supply: Supply,
}

impl std::fmt::Debug for InputFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputFile").finish_non_exhaustive()
    }
}

impl InputFile {
    /// Opens `path` for reading, with `O_DIRECT` when it is a regular file and the platform and the
    /// filesystem accept it. Nothing is read before the first call that asks for bytes.
    ///
    /// # Errors
    /// The error of opening the file.
    pub fn open(path: &Path) -> io::Result<Self> {
        let buffer = AlignedBuffer::new(READ_BUFFER);
        let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
        let (file, direct) = open_file(path, regular && buffer.is_aligned())?;
        Ok(InputFile {
            buffer,
            consumed: 0,
            supply: Supply::Inline(Source {
                file,
                path: path.to_owned(),
                direct,
                positional: regular,
                offset: 0,
            }),
        })
    }

    /// Replaces the exhausted buffer with the next one; returns false at the end of the file.
    fn next_buffer(&mut self) -> io::Result<bool> {
        match &mut self.supply {
            Supply::Done => Ok(false),
            Supply::Failed => Err(io::Error::other("the file cannot be read after an earlier read error")),
            Supply::Inline(source) => {
                let filled = source.fill(&mut self.buffer);
                let Ok(skip) = filled else {
                    self.supply = Supply::Failed;
                    return filled.map(|_| false);
                };
                self.consumed = skip;
                if self.buffer.len == skip {
                    self.supply = Supply::Done;
                    return Ok(false);
                }
                if self.buffer.is_full()
                    && let Supply::Inline(source) = std::mem::replace(&mut self.supply, Supply::Done)
                {
                    self.supply = Supply::ReadAhead(start_read_ahead(source)?);
                }
                Ok(true)
            }
            Supply::ReadAhead(ahead) => match ahead.full.recv() {
                Ok(Ok((mut next, skip))) => {
                    std::mem::swap(&mut self.buffer, &mut next);
                    self.consumed = skip;
                    // The thread may have stopped at the end of the file; then the buffer is freed.
                    let _ = ahead.empty.send(next);
                    Ok(true)
                }
                Ok(Err(e)) => {
                    self.supply = Supply::Failed;
                    Err(e)
                }
                Err(mpsc::RecvError) => {
                    // The thread ended: the end of the file, or a panic.
                    let panicked = ahead.handle.take().is_some_and(|h| h.join().is_err());
                    if panicked {
                        self.supply = Supply::Failed;
                        return Err(io::Error::other("the read-ahead thread panicked"));
                    }
                    self.supply = Supply::Done;
                    Ok(false)
                }
            },
        }
    }
}

/// Starts the thread that reads the rest of the file into up to [`MAX_READ_BUFFERS`] buffers
/// (the caller holds one of them at any time).
fn start_read_ahead(mut source: Source) -> io::Result<ReadAhead> {
    let (full_tx, full) = mpsc::sync_channel(MAX_READ_BUFFERS);
    let (empty, empty_rx) = mpsc::channel::<AlignedBuffer>();
    let handle = std::thread::Builder::new()
        .name("tidemark-input".into())
        .spawn(move || {
            let mut allocated = 1;
            loop {
                let buffer = match empty_rx.try_recv() {
                    Ok(buffer) => Some(buffer),
                    Err(_) if allocated < MAX_READ_BUFFERS => {
                        allocated += 1;
                        Some(AlignedBuffer::new(READ_BUFFER))
                    }
                    // None: the reader was dropped.
                    Err(_) => empty_rx.recv().ok(),
                };
                let Some(mut buffer) = buffer else { return };
                match source.fill(&mut buffer) {
                    Ok(skip) if buffer.len == skip => return,
                    Ok(skip) => {
                        if full_tx.send(Ok((buffer, skip))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = full_tx.send(Err(e));
                        return;
                    }
                }
            }
        })?;
    Ok(ReadAhead {
        full,
        empty,
        handle: Some(handle),
    })
}

impl BufRead for InputFile {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.consumed >= self.buffer.len {
            if !self.next_buffer()? {
                return Ok(&[]);
            }
        }
        Ok(&self.buffer.filled()[self.consumed..])
    }

    fn consume(&mut self, amount: usize) {
        self.consumed = (self.consumed + amount).min(self.buffer.len);
    }
}

impl Read for InputFile {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::pattern;

    /// Reads `path` whole through `read` calls of `piece` bytes.
    fn read_in_pieces(path: &Path, piece: usize) -> Vec<u8> {
        let mut input = InputFile::open(path).unwrap();
        let mut all = Vec::new();
        let mut buf = vec![0u8; piece];
        loop {
            let n = input.read(&mut buf).unwrap();
            if n == 0 {
                break all;
            }
            all.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn files_of_every_shape_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            READ_BUFFER - 1,
            READ_BUFFER,
            READ_BUFFER + 1,
            2 * READ_BUFFER,
            MAX_READ_BUFFERS * READ_BUFFER + 3 * ALIGN,
            7 * READ_BUFFER + 12_345,
        ] {
            let path = dir.path().join(format!("f{len}"));
            let data = pattern(len);
            std::fs::write(&path, &data).unwrap();
            for piece in [1, 1000, ALIGN, READ_BUFFER + 17] {
                if len > 3 * READ_BUFFER && piece == 1 {
                    continue;
                }
                assert_eq!(read_in_pieces(&path, piece), data, "length {len}, reads of {piece}");
            }
            // In place, through the buffered interface, as the BSON stream reader takes it.
            let mut input = InputFile::open(&path).unwrap();
            let mut all = Vec::new();
            loop {
                let available = input.fill_buf().unwrap();
                if available.is_empty() {
                    break;
                }
                let n = available.len().min(777);
                all.extend_from_slice(&available[..n]);
                input.consume(n);
            }
            assert_eq!(all, data, "length {len}, in place");
            // Reading past the end keeps returning nothing.
            assert_eq!(input.read(&mut [0u8; 8]).unwrap(), 0);
        }
    }

    #[test]
    fn a_file_cut_short_while_open_ends_where_it_was_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(8 * READ_BUFFER);
        std::fs::write(&path, &data).unwrap();
        let mut input = InputFile::open(&path).unwrap();
        let mut first = vec![0u8; 1000];
        input.read_exact(&mut first).unwrap();
        // Truncated to a length that is not a multiple of the alignment, beyond what may have been
        // read ahead already.
        let cut = (MAX_READ_BUFFERS + 1) * READ_BUFFER + 4097;
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let mut rest = Vec::new();
        input.read_to_end(&mut rest).unwrap();
        first.extend_from_slice(&rest);
        // Whatever was read before the cut, the stream stops exactly at it.
        assert_eq!(first.len(), cut);
        assert_eq!(first, data[..cut]);
    }

    #[test]
    fn reads_continue_without_direct_io_from_an_unaligned_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(2 * READ_BUFFER + 99);
        std::fs::write(&path, &data).unwrap();
        let mut source = Source {
            file: File::open(&path).unwrap(),
            path: path.clone(),
            direct: false,
            positional: true,
            offset: 12_345,
        };
        let mut buffer = AlignedBuffer::new(READ_BUFFER);
        let skip = source.fill(&mut buffer).unwrap();
        assert_eq!(&buffer.filled()[skip..], &data[12_345..12_345 + READ_BUFFER]);
        // With direct I/O (where the filesystem takes it) the read starts at the aligned offset
        // before and skips the bytes before the one wanted.
        let Ok(mut input) = InputFile::open(&path) else { return };
        let Supply::Inline(source) = &mut input.supply else {
            unreachable!()
        };
        source.offset = 12_345;
        let skip = source.fill(&mut buffer).unwrap();
        assert_eq!(&buffer.filled()[skip..], &data[12_345..12_345 + buffer.len - skip]);
        assert!(buffer.len > skip);
    }

    #[test]
    fn direct_io_is_used_where_the_filesystem_takes_it_and_tmpfs_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(2 * READ_BUFFER + 4095);
        let mut dirs = vec![dir.path().to_owned()];
        let shm = Path::new("/dev/shm");
        let shm_dir = shm.is_dir().then(|| tempfile::tempdir_in(shm).ok()).flatten();
        dirs.extend(shm_dir.as_ref().map(|d| d.path().to_owned()));
        for dir in dirs {
            let path = dir.join("f");
            std::fs::write(&path, &data).unwrap();
            let input = InputFile::open(&path).unwrap();
            let Supply::Inline(source) = &input.supply else {
                unreachable!()
            };
            // Whatever the filesystem, the reader opened it as the kernel allows.
            assert_eq!(
                source.direct,
                cfg!(target_os = "linux") && open_file(&path, true).unwrap().1
            );
            assert_eq!(read_in_pieces(&path, 5000), data, "{}", dir.display());
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_pipe_is_read_with_ordinary_reads() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let data = pattern(3 * READ_BUFFER + 5000);
        let writer_data = data.clone();
        let writer_path = fifo.clone();
        // Written in small pieces, so that reads come back short.
        let writer = std::thread::spawn(move || {
            let mut file = OpenOptions::new().write(true).open(writer_path).unwrap();
            for piece in writer_data.chunks(10_000) {
                std::io::Write::write_all(&mut file, piece).unwrap();
            }
        });
        assert_eq!(read_in_pieces(&fifo, 4096), data);
        writer.join().unwrap();
    }

    #[test]
    fn a_missing_file_or_a_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(InputFile::open(&dir.path().join("missing")).is_err());
        // Opening a directory may succeed; reading it fails.
        if let Ok(mut input) = InputFile::open(dir.path()) {
            assert!(input.read(&mut [0u8; 16]).is_err());
            // An error stays an error: the end of the file must not look reached.
            assert!(input.read(&mut [0u8; 16]).is_err());
        }
    }

    #[test]
    fn dropping_a_reader_in_the_middle_stops_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, pattern(8 * READ_BUFFER)).unwrap();
        for _ in 0..20 {
            let mut input = InputFile::open(&path).unwrap();
            let mut first = [0u8; 10];
            input.read_exact(&mut first).unwrap();
            drop(input);
        }
    }
}
