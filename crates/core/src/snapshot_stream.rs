//! A backup snapshot as the restore engine's archive input, with nothing staged on disk.
//!
//! A thread exports the snapshot as a mongodump archive into a pipe whose read end is the
//! engine's [`RestoreSource::Stream`](crate::restore::RestoreSource::Stream). The pipe is made of
//! buffers handed over through a bounded channel ([`buffer_pipe`]): an OS pipe cost a copy into the
//! kernel and another out of it, and a wakeup per 64 KiB. Memory stays bounded by the buffers in
//! the channel and on either side, and the chunks are verified (decrypted,
//! authenticated, counted and hashed per namespace) as they stream. The export runs on its own
//! thread and runtime because the pipe blocks, and the engine reads it synchronously; the
//! runtime has workers of its own, on which each namespace's chunks are read ahead (see
//! `tidemark_repo::reader`) while the export waits on the pipe.
//!
//! When the repository cannot deliver a namespace the engine only sees a truncated archive, so
//! [`SnapshotStream::finish`] returns the export's own error, which names the snapshot and
//! namespace; a broken pipe only means the engine stopped reading (and reports why itself).

use std::{
    io::{Read, Write},
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

use tidemark_repo::{
    SnapshotReader,
    export::{ExportStats, export_archive},
    lock::Lock,
};

use crate::{
    error::{Error, Result, io_error},
    restore::ArchiveStream,
};

/// Size of the buffers of the snapshot stream.
const STREAM_BUFFER: usize = 1 << 20;
/// Full buffers waiting for the engine (besides the one it reads and the one being written).
const STREAM_BUFFERS: usize = 2;

/// The writing end of a [`buffer_pipe`]: fills a buffer and hands it over when full or flushed.
struct PipeWriter {
    full: SyncSender<Vec<u8>>,
    /// Buffers the reader is done with, reused (a fresh one costs a page fault per 4 KiB).
    empty: Receiver<Vec<u8>>,
    buffer: Vec<u8>,
}

/// The reading end of a [`buffer_pipe`]; the end of the stream once the writer is gone.
struct PipeReader {
    full: Receiver<Vec<u8>>,
    empty: SyncSender<Vec<u8>>,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already read.
    read: usize,
}

/// An in-process pipe of [`STREAM_BUFFER`]-byte buffers, at most [`STREAM_BUFFERS`] in the channel.
/// Writes fail with [`std::io::ErrorKind::BrokenPipe`] once the reader is gone, as an OS pipe's do.
fn buffer_pipe() -> (PipeReader, PipeWriter) {
    let (full_tx, full_rx) = sync_channel(STREAM_BUFFERS);
    let (empty_tx, empty_rx) = sync_channel(STREAM_BUFFERS + 2);
    (
        PipeReader {
            full: full_rx,
            empty: empty_tx,
            buffer: Vec::new(),
            read: 0,
        },
        PipeWriter {
            full: full_tx,
            empty: empty_rx,
            buffer: Vec::with_capacity(STREAM_BUFFER),
        },
    )
}

impl PipeWriter {
    /// Hands the current buffer over (if it holds anything) and takes an empty one.
    fn hand_over(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let next = match self.empty.try_recv() {
            Ok(mut reused) => {
                reused.clear();
                reused
            }
            Err(_) => Vec::with_capacity(STREAM_BUFFER),
        };
        let full = std::mem::replace(&mut self.buffer, next);
        self.full
            .send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the restore stopped reading"))
    }
}

impl Write for PipeWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buffer.len() >= STREAM_BUFFER {
            self.hand_over()?;
        }
        let n = bytes.len().min(STREAM_BUFFER - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.hand_over()
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.read == self.buffer.len() {
            let Ok(next) = self.full.recv() else {
                return Ok(0);
            };
            let done = std::mem::replace(&mut self.buffer, next);
            self.read = 0;
            // The writer may be gone, or have enough buffers: then this one is dropped.
            let _ = self.empty.try_send(done);
        }
        let n = out.len().min(self.buffer.len() - self.read);
        out[..n].copy_from_slice(&self.buffer[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

/// The thread exporting a snapshot into the restore engine's archive stream.
#[derive(Debug)]
pub struct SnapshotStream {
    thread: JoinHandle<Result<ExportStats>>,
}

impl SnapshotStream {
    /// Starts exporting `member` of an opened snapshot (`None`: its only member) as an archive
    /// into a pipe; returns the engine's end of the pipe.
    ///
    /// With `lock`, the repository lock is kept refreshed while the export runs and released at
    /// its end (a caller that holds a lock around more than the export passes `None`).
    ///
    /// # Errors
    /// [`Error::Io`] when the pipe or the thread cannot be created.
    pub fn start(
        snapshot: SnapshotReader,
        member: Option<String>,
        lock: Option<Lock>,
    ) -> Result<(ArchiveStream, Self)> {
        let (reader, writer) = buffer_pipe();
        let thread = std::thread::Builder::new()
            .name("snapshot-export".into())
            .spawn(move || -> Result<ExportStats> {
                // Two workers: while this thread's writes wait for the engine to drain the pipe,
                // the streams' read-ahead tasks go on fetching and decoding chunks.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("snapshot-read")
                    .enable_all()
                    .build()
                    .map_err(io_error("error starting the snapshot export runtime", "runtime"))?;
                runtime.block_on(async move {
                    let export = async {
                        let (mut out, stats) = export_archive(&snapshot, member.as_deref(), writer).await?;
                        out.flush()
                            .map_err(io_error("error writing the snapshot stream", "pipe"))?;
                        Ok(stats)
                    };
                    match lock {
                        Some(lock) => {
                            let (exported, released) = lock.hold_during(export).await;
                            let stats = exported?;
                            released?;
                            Ok(stats)
                        }
                        None => export.await,
                    }
                })
            })
            .map_err(io_error("error starting the snapshot export thread", "thread"))?;
        Ok((ArchiveStream::new(reader), Self { thread }))
    }

    /// Waits for the export. Its error explains a failed restore better than the engine's (a
    /// truncated archive); `Ok(None)` means the engine stopped reading early (a broken pipe),
    /// so the engine's own error is the one to report.
    ///
    /// # Errors
    /// The export's error.
    pub fn finish(self) -> Result<Option<ExportStats>> {
        match self.thread.join() {
            Ok(Ok(stats)) => Ok(Some(stats)),
            Ok(Err(e)) if is_broken_pipe(&e) => Ok(None),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Data("the snapshot export thread panicked".into())),
        }
    }
}

/// Whether `error` or one of its causes is a broken pipe.
fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes come out as they went in, whatever the sizes of the writes and reads, across buffers
    /// and with the writer on another thread; the reader sees the end once the writer is gone.
    #[test]
    fn the_buffer_pipe_delivers_every_byte_in_order() {
        let data: Vec<u8> = (0..5 * STREAM_BUFFER + 12_345)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let (mut reader, mut writer) = buffer_pipe();
        let sent = data.clone();
        let writing = std::thread::spawn(move || {
            let mut at = 0;
            for size in [1, 7, STREAM_BUFFER, 3, STREAM_BUFFER * 2 + 5].into_iter().cycle() {
                if at == sent.len() {
                    break;
                }
                let end = (at + size).min(sent.len());
                writer.write_all(&sent[at..end]).unwrap();
                at = end;
            }
            writer.flush().unwrap();
        });
        let mut got = Vec::new();
        let mut piece = vec![0u8; 100_003];
        loop {
            let n = reader.read(&mut piece).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        writing.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
    }

    /// Once the reader is gone, writing fails as with an OS pipe, which the export reports as the
    /// engine having stopped reading.
    #[test]
    fn writing_after_the_reader_is_gone_is_a_broken_pipe() {
        let (reader, mut writer) = buffer_pipe();
        drop(reader);
        let err = writer
            .write_all(&vec![0u8; STREAM_BUFFER * 2])
            .and_then(|()| writer.flush())
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&err));
    }
}
