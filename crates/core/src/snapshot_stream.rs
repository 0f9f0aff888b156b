//! A backup snapshot as the restore engine's archive input, with nothing staged on disk.
//!
//! A thread exports the snapshot as a mongodump archive into an OS pipe whose read end is the
//! engine's [`RestoreSource::Stream`](crate::restore::RestoreSource::Stream). Memory stays bounded
//! by the pipe and the buffers on either side, and the chunks are verified (decrypted,
//! authenticated, counted and hashed per namespace) as they stream. The export runs on its own
//! thread and runtime because the pipe blocks, and the engine reads it synchronously; the
//! runtime has workers of its own, on which each namespace's chunks are read ahead (see
//! `tidemark_repo::reader`) while the export waits on the pipe.
//!
//! When the repository cannot deliver a namespace the engine only sees a truncated archive, so
//! [`SnapshotStream::finish`] returns the export's own error, which names the snapshot and
//! namespace; a broken pipe only means the engine stopped reading (and reports why itself).

use std::{
    io::{BufWriter, Write},
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

/// Pipe and output buffer size of the snapshot stream.
const STREAM_BUFFER: usize = 1 << 20;

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
        let (reader, writer) =
            std::io::pipe().map_err(io_error("error creating a pipe for the snapshot stream", "pipe"))?;
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
                        let out = BufWriter::with_capacity(STREAM_BUFFER, writer);
                        let (out, stats) = export_archive(&snapshot, member.as_deref(), out).await?;
                        out.into_inner()
                            .map_err(std::io::IntoInnerError::into_error)
                            .and_then(|mut pipe| pipe.flush())
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
