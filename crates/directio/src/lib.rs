//! Files written and read with direct I/O.
//!
//! Dumps and backup repositories write gigabytes once and do not read them back. Through the page
//! cache, every byte is first copied into a newly allocated cache page — at GB/s that copy is most
//! of the CPU time of a dump or of a backup to local disk (on a 2-core VM, writing 256 MiB costs
//! 0.68 s of kernel CPU buffered against 0.04 s with `O_DIRECT`) — and the writes then push the
//! database host's working set out of the cache. Restores read those gigabytes once, and pay the
//! same copy the other way. This crate writes and reads files with `O_DIRECT` where the platform
//! and the filesystem allow it, and with ordinary writes and reads where they do not (tmpfs on
//! older kernels, some network filesystems, other platforms, pipes), so callers never need to care:
//!
//! - [`OutputFile`]: a file written front to back as a stream (dump files, archives), through
//!   aligned buffers handed to background threads (with direct I/O, several, each writing whole
//!   buffers at their offsets, so that the device has several writes in flight);
//! - [`write_file`]: a whole object held in memory (a repository pack), written straight from the
//!   caller's memory when it is aligned, as large allocations are;
//! - [`InputFile`]: a file read front to back as a stream (dump files, archives), into aligned
//!   buffers filled ahead by a background thread, parsed in place through [`std::io::BufRead`];
//! - [`read_range`]: a range of a file read at once (the frames of a repository pack), into a
//!   buffer the caller reuses.
//!
//! Direct I/O needs offsets, lengths and memory aligned to the device's logical block size; the
//! last, partial block is written zero-padded and the file then truncated to its real length, and
//! read as the short read it is.

mod input_file;
mod output_file;
mod range;

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use input_file::InputFile;
pub use output_file::OutputFile;
pub use range::{DIRECT_MIN, read_range};

/// Alignment of direct I/O offsets, lengths and memory: the largest logical block size in use.
const ALIGN: usize = 4096;
/// Size of the buffers of an [`OutputFile`], and the largest bounce buffer of [`write_file`].
const BUFFER: usize = 2 << 20;

/// A buffer whose usable part starts on an [`ALIGN`] boundary.
struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
    capacity: usize,
}

impl AlignedBuffer {
    /// A buffer of `capacity` bytes (a multiple of [`ALIGN`]).
    fn new(capacity: usize) -> Self {
        let storage = vec![0u8; capacity + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuffer {
            storage,
            start,
            len: 0,
            capacity,
        }
    }

    /// Whether direct I/O can use this buffer (`align_offset` may decline to align).
    fn is_aligned(&self) -> bool {
        self.start < ALIGN
    }

    fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// Copies as much of `bytes` as fits; returns how much.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.capacity - self.len);
        let at = self.start + self.len;
        self.storage[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    fn filled(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The whole aligned capacity, for a read to fill from the start.
    fn space(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.capacity]
    }

    /// The filled bytes zero-padded to a multiple of [`ALIGN`], for the last direct write.
    fn padded(&mut self) -> &[u8] {
        let end = self.start + self.len.next_multiple_of(ALIGN);
        self.storage[self.start + self.len..end].fill(0);
        &self.storage[self.start..end]
    }
}

/// The open file and how it is written.
struct Target {
    file: File,
    path: PathBuf,
    direct: bool,
    /// Bytes written to the file so far (always a multiple of [`ALIGN`] while `direct`).
    offset: u64,
}

impl Target {
    /// Writes one block: `padded` holds `logical` bytes of data, zero-padded to a multiple of
    /// [`ALIGN`]. Direct writes send it whole (the caller truncates the padding away); ordinary ones
    /// only the data. Falls back to ordinary writes when the filesystem refuses direct I/O.
    fn write_block(&mut self, padded: &[u8], logical: usize) -> io::Result<()> {
        if self.direct {
            match self.file.write_all(padded) {
                Ok(()) => {
                    self.offset += padded.len() as u64;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    // Accepted at open, refused at write: continue without direct I/O.
                    let mut file = OpenOptions::new().write(true).open(&self.path)?;
                    file.seek(SeekFrom::Start(self.offset))?;
                    self.file = file;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all(&padded[..logical])?;
        self.offset += logical as u64;
        Ok(())
    }

    /// Writes one block at `offset`, from any thread (files opened with direct I/O, whose writer
    /// threads each write whole blocks at their own offsets); `padded` and `logical` as for
    /// [`write_block`](Self::write_block). A block the filesystem refuses to take directly is
    /// written through an ordinary handle instead.
    fn write_block_at(&self, padded: &[u8], logical: usize, offset: u64) -> io::Result<()> {
        match write_all_at(&self.file, padded, offset) {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                let file = OpenOptions::new().write(true).open(&self.path)?;
                write_all_at(&file, &padded[..logical], offset)
            }
            other => other,
        }
    }

    /// Sets the length of a file written at offsets (cutting the zero padding of its last block).
    fn finish_at(self, len: u64) -> io::Result<File> {
        self.file.set_len(len)?;
        Ok(self.file)
    }

    /// Cuts the zero padding of a last direct write off (`len`: the bytes of data written).
    fn finish(self, len: u64) -> io::Result<File> {
        if self.direct && self.offset != len {
            self.file.set_len(len)?;
        }
        Ok(self.file)
    }
}

/// Writes all of `bytes` at `offset` of `file` (`pwrite`).
#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

/// Positional writes are only used with direct I/O, which only Linux gets.
#[cfg(not(unix))]
fn write_all_at(_file: &File, _bytes: &[u8], _offset: u64) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "positional writes"))
}

/// Opens `path` for writing (created or truncated), with `O_DIRECT` when it is (or will be) a
/// regular file and the platform and the filesystem accept it. Never for anything else: on a pipe
/// (`--archive=/dev/stdout`, a FIFO) `O_DIRECT` means packet mode, where a reader's short read
/// silently drops the rest of a write.
fn open(path: &Path) -> io::Result<Target> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    let regular = match std::fs::metadata(path) {
        Ok(meta) => meta.is_file(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(_) => false,
    };
    let target = |file, direct| Target {
        file,
        path: path.to_owned(),
        direct,
        offset: 0,
    };
    #[cfg(target_os = "linux")]
    if regular {
        use std::os::unix::fs::OpenOptionsExt;
        let mut direct = options.clone();
        direct.custom_flags(libc::O_DIRECT);
        match direct.open(path) {
            Ok(file) => return Ok(target(file, true)),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = regular;
    Ok(target(options.open(path)?, false))
}

/// Writes `data` as the whole content of `path` (created or truncated) and returns the open file,
/// not yet synced.
///
/// With direct I/O, the aligned part of `data` goes to the disk straight from the caller's memory
/// when `data` starts on an [`ALIGN`] boundary (allocations of a few MiB do with the usual
/// allocators); otherwise, and for the last partial block, it passes through an aligned buffer.
///
/// # Errors
/// The error of opening or writing the file.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<File> {
    let mut target = open(path)?;
    let mut rest = data;
    if target.direct && data.as_ptr().align_offset(ALIGN) == 0 {
        let body = data.len() / ALIGN * ALIGN;
        target.write_block(&data[..body], body)?;
        rest = &data[body..];
    }
    if !rest.is_empty() {
        if target.direct {
            let mut buffer = AlignedBuffer::new(rest.len().min(BUFFER).next_multiple_of(ALIGN));
            target.direct &= buffer.is_aligned();
            while !rest.is_empty() {
                buffer.len = 0;
                let n = buffer.fill(rest);
                rest = &rest[n..];
                target.write_block(buffer.padded(), n)?;
            }
        } else {
            target.write_block(rest, rest.len())?;
        }
    }
    target.finish(data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes that differ from their neighbours, so a misplaced block shows.
    pub(crate) fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| u8::try_from(i % 251).unwrap_or(0)).collect()
    }

    #[test]
    fn whole_buffers_of_every_shape_and_alignment_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // A page-aligned source (as large allocations are) and sources starting off a boundary.
        let source = AlignedBuffer::new(3 * BUFFER + 2 * ALIGN);
        assert!(source.is_aligned());
        let data = pattern(3 * BUFFER + ALIGN);
        for skew in [0, 1, 512] {
            for len in [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, BUFFER + 7, 3 * BUFFER] {
                let mut buffer = AlignedBuffer::new(source.capacity);
                buffer.len = skew;
                buffer.fill(&data[..len]);
                let bytes = &buffer.filled()[skew..];
                let path = dir.path().join(format!("f{skew}-{len}"));
                // An existing, longer file is replaced.
                std::fs::write(&path, vec![9u8; len + 3 * ALIGN]).unwrap();
                let file = write_file(&path, bytes).unwrap();
                assert_eq!(file.metadata().unwrap().len(), len as u64);
                assert_eq!(std::fs::read(&path).unwrap(), &data[..len], "skew {skew}, length {len}");
            }
        }
    }

    #[test]
    fn a_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_file(dir.path(), b"x").is_err());
    }
}
