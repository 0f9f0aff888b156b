//! A backup of a server: the dump engine's output stored as a snapshot, with nothing in between.
//!
//! The dump runs as `dump` does (several collections at once, large ones as `_id` ranges, the
//! oplog read concurrently with `--oplog`), but to [`DumpTarget::Documents`]: each batch the
//! server sends is handed through a bounded channel, as is, to the repository's
//! [`DumpImport`], which cuts, hashes, compresses, encrypts and packs it while the next batches
//! are read. Nothing is serialized as an archive, checksummed, piped and parsed back, and memory
//! stays bounded by the channel and the writer's batches.

use std::sync::Arc;

use mongodb::Client;
use tidemark_repo::SnapshotWriter;
use tidemark_repo::import::{DumpImport, ImportStats};

use crate::dump::{DocumentOutput, DumpEvent, DumpOptions, DumpSummary, DumpTarget, plan_dump, run_dump};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Batches (about 1 MiB each) in the channel between the dump and the repository, besides the one
/// each side holds: enough for the cursors to keep reading while the repository's side waits for
/// a pack upload or a batch being encoded (with 4, a backup took half again as long).
const BATCHES_IN_FLIGHT: usize = 16;

/// Names the dump in the repository's errors.
const ORIGIN: &str = "from the dump engine";

/// Dumps the server as `options` say (their target is replaced) into the writer's current member.
///
/// # Errors
/// The dump's error (a server or planning failure) or the repository's; when one side stops
/// because the other failed, the cause is returned.
pub async fn dump_into_snapshot(
    client: &Client,
    mut options: DumpOptions,
    writer: &mut SnapshotWriter,
    progress: Arc<dyn Progress>,
) -> Result<(DumpSummary, ImportStats)> {
    let (sender, receiver) = tokio::sync::mpsc::channel(BATCHES_IN_FLIGHT);
    options.target = DumpTarget::Documents(DocumentOutput::new(sender));
    let dump = async move {
        let plan = plan_dump(client, &options, progress.as_ref()).await?;
        progress.expect(plan.collections.iter().filter_map(|c| c.estimated_count).sum());
        let summary = run_dump(client, &plan, &options, progress).await;
        // The receiver sees the end once the last sender (the one in the options) is gone.
        drop(options);
        summary
    };
    let (dumped, imported) = tokio::join!(dump, import_events(writer, receiver));
    match (dumped, imported) {
        (Ok(summary), Ok(stats)) => Ok((summary, stats)),
        // The repository stopped taking batches (it failed, and says why).
        (Err(Error::ReceiverGone), Err(e)) => Err(e),
        // A failed dump explains an import that saw a truncated stream better than the import.
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}

/// Stores the events of a dump in the writer's current member.
async fn import_events(
    writer: &mut SnapshotWriter,
    mut events: tokio::sync::mpsc::Receiver<DumpEvent>,
) -> Result<ImportStats> {
    let Some(first) = events.recv().await else {
        // The dump failed before it started (and reports why).
        return Ok(ImportStats::default());
    };
    let DumpEvent::Prelude {
        server_version,
        entries,
    } = first
    else {
        return Err(Error::Data(format!(
            "backup {ORIGIN}: the dump did not start with its prelude"
        )));
    };
    let mut import = DumpImport::new(writer, &server_version, entries, ORIGIN);
    while let Some(event) = events.recv().await {
        match event {
            DumpEvent::Batch { namespace, batch } => {
                import.start(namespace).await?;
                let documents = batch
                    .doc_slices()
                    .map_err(|e| Error::Data(format!("backup {ORIGIN}: {e}")))?;
                for element in documents {
                    // The dump checked that every element is a document.
                    let document = element
                        .ok()
                        .and_then(|value| value.as_document())
                        .ok_or_else(|| Error::Data(format!("backup {ORIGIN}: a batch element is not a document")))?;
                    import.document(namespace, document).await?;
                }
            }
            DumpEvent::Document { namespace, document } => {
                import.start(namespace).await?;
                import.document(namespace, &document).await?;
            }
            DumpEvent::End { namespace } => import.end(namespace).await?,
            DumpEvent::Prelude { .. } => {
                return Err(Error::Data(format!("backup {ORIGIN}: a second prelude")));
            }
        }
    }
    Ok(import.finish().await?)
}
