//! Output files written front to back, as a stream, with direct I/O.
//!
//! [`OutputFile`] opens its file with `O_DIRECT` where the platform and filesystem allow it and
//! writes large aligned blocks from a background thread: the caller fills one buffer while earlier
//! ones are being written. The final partial block is written zero-padded and the file truncated to its real
//! length. Where direct I/O is refused (tmpfs on older kernels, some network filesystems, other
//! platforms) the same writer uses ordinary writes, so callers never need to care.
//!
//! Nothing reaches the file before a buffer is full or [`OutputFile::finish`] is called:
//! [`Write::flush`] cannot write a partial block and does nothing. A writer dropped without
//! `finish` leaves the file holding only the blocks written so far.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::{AlignedBuffer, BUFFER, Target, open};

/// Buffers a file may hold (16 MiB): enough for a whole archive segment of mongodump's 16 MiB to be
/// handed over while earlier blocks are still being written, so a writer holding the archive's
/// lock never waits for the disk.
const MAX_BUFFERS: usize = 8;

/// The background thread and the channels that pass buffers to it and back.
struct Writer {
    full: mpsc::SyncSender<AlignedBuffer>,
    empty: mpsc::Receiver<AlignedBuffer>,
    handle: JoinHandle<io::Result<Target>>,
}

/// A file written with direct I/O where possible (see the module documentation).
pub struct OutputFile {
    buffer: AlignedBuffer,
    /// The file until a first full buffer is handed to a writer thread (small files never start one).
    target: Option<Target>,
    writer: Option<Writer>,
    /// Buffers allocated so far (at most [`MAX_BUFFERS`]).
    buffers: usize,
    /// Bytes accepted from the caller.
    len: u64,
}

impl std::fmt::Debug for OutputFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFile")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl OutputFile {
    /// Creates (or truncates) `path`.
    ///
    /// # Errors
    /// The error of opening the file.
    pub fn create(path: &Path) -> io::Result<Self> {
        let buffer = AlignedBuffer::new(BUFFER);
        let mut target = open(path)?;
        target.direct &= buffer.is_aligned();
        Ok(OutputFile {
            target: Some(target),
            buffer,
            writer: None,
            buffers: 1,
            len: 0,
        })
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hands the full buffer to the writer thread (starting it on first use) and takes an empty one.
    fn hand_off(&mut self) -> io::Result<()> {
        if self.writer.is_none() {
            let mut target = self
                .target
                .take()
                .ok_or_else(|| io::Error::other("output file already finished"))?;
            let (full, full_rx) = mpsc::sync_channel::<AlignedBuffer>(MAX_BUFFERS);
            let (empty_tx, empty) = mpsc::channel();
            let handle = std::thread::Builder::new()
                .name("tidemark-output".into())
                .spawn(move || {
                    for buffer in full_rx {
                        target.write_block(buffer.filled(), buffer.len)?;
                        // The caller may have finished already; then the buffer is simply freed.
                        let _ = empty_tx.send(buffer);
                    }
                    Ok(target)
                })?;
            self.writer = Some(Writer { full, empty, handle });
        }
        let Some(writer) = &self.writer else {
            return Err(io::Error::other("output file already finished"));
        };
        let next = match writer.empty.try_recv() {
            Ok(buffer) => Some(buffer),
            Err(_) if self.buffers < MAX_BUFFERS => {
                self.buffers += 1;
                Some(AlignedBuffer::new(BUFFER))
            }
            // None: the thread stopped on an error.
            Err(_) => writer.empty.recv().ok(),
        };
        let Some(mut next) = next else {
            return Err(self.writer_error());
        };
        next.len = 0;
        let full = std::mem::replace(&mut self.buffer, next);
        let sent = self.writer.as_ref().is_some_and(|w| w.full.send(full).is_ok());
        if !sent {
            return Err(self.writer_error());
        }
        Ok(())
    }

    /// Stops the writer thread and returns its error.
    fn writer_error(&mut self) -> io::Error {
        match self.writer.take().map(|w| {
            drop(w.full);
            w.handle.join()
        }) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the output writer thread panicked"),
            _ => io::Error::other("the output writer thread stopped"),
        }
    }

    /// Writes what is left, truncates the file to its length and returns it.
    ///
    /// # Errors
    /// The first write error, here or in the writer thread.
    pub fn finish(mut self) -> io::Result<File> {
        let mut target = match self.writer.take() {
            Some(writer) => {
                drop(writer.full);
                writer
                    .handle
                    .join()
                    .map_err(|_| io::Error::other("the output writer thread panicked"))??
            }
            None => self
                .target
                .take()
                .ok_or_else(|| io::Error::other("output file already finished"))?,
        };
        if self.buffer.len > 0 {
            let tail = self.buffer.len;
            target.write_block(self.buffer.padded(), tail)?;
        }
        target.finish(self.len)
    }
}

impl Write for OutputFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buffer.is_full() {
            self.hand_off()?;
        }
        let n = self.buffer.fill(bytes);
        self.len += n as u64;
        Ok(n)
    }

    /// Does nothing: data reaches the file a full buffer at a time, and the rest on `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ALIGN;
    use crate::tests::pattern;

    #[test]
    fn files_of_every_shape_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            BUFFER - 1,
            BUFFER,
            BUFFER + 7,
            3 * BUFFER + 12_345,
        ] {
            let path = dir.path().join(format!("f{len}"));
            let data = pattern(len);
            let mut out = OutputFile::create(&path).unwrap();
            // Uneven pieces, as documents arrive.
            for piece in data.chunks(1000) {
                out.write_all(piece).unwrap();
            }
            assert_eq!(out.len(), len as u64);
            out.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "length {len}");
        }
    }

    #[test]
    fn an_existing_file_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 3 * BUFFER]).unwrap();
        let mut out = OutputFile::create(&path).unwrap();
        out.write_all(b"short").unwrap();
        out.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }

    #[cfg(unix)]
    #[test]
    fn a_pipe_gets_ordinary_writes_that_small_reads_see_whole() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let reader_path = fifo.clone();
        // Reads in pieces smaller than a buffer, as a consumer of `--archive=-` might.
        let reader = std::thread::spawn(move || {
            let mut file = std::fs::File::open(reader_path).unwrap();
            let mut all = Vec::new();
            let mut piece = [0u8; 1000];
            loop {
                let n = file.read(&mut piece).unwrap();
                if n == 0 {
                    break all;
                }
                all.extend_from_slice(&piece[..n]);
            }
        });
        let data = pattern(BUFFER * 2 + 5000);
        let mut out = OutputFile::create(&fifo).unwrap();
        out.write_all(&data).unwrap();
        out.finish().unwrap();
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn a_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(OutputFile::create(dir.path()).is_err());
    }
}
