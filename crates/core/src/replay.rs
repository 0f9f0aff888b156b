//! Parallel execution of a replayed oplog: N workers, one per lane, with barriers.
//!
//! mongorestore runs every replayed entry as its own `applyOps` command, one after the other,
//! which leaves the server mostly idle. [`ParallelReplay`] takes the commands of each
//! [`tidemark_oplog::Step`], lets [`Partitioner`] split them into per-document lanes and barriers
//! (see `tidemark_oplog::partition`), and runs them:
//!
//! - each lane has one worker task with a bounded channel; a worker runs its lane's batched
//!   `applyOps` commands in order, so the entries of one document keep their order while
//!   independent documents are applied concurrently over the client's connection pool;
//! - a barrier first waits until every worker has finished everything sent before it (a sync
//!   message through each channel), then runs its commands in order from the caller's task;
//! - the first error stops the replay: workers skip whatever is still queued, and the caller
//!   gets the error with mongorestore's text (`error applying oplog: applyOps: ...`).
//!
//! Memory stays bounded: at most [`CHANNEL_DEPTH`] commands wait per lane, plus the one batch
//! per lane the partitioner is filling, each under 16 MiB and 1000 entries.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicBool, Ordering},
};

use std::{future::Future, pin::Pin};

use bson::{Document, RawDocumentBuf};
use mongodb::{Client, Database};
use tidemark_oplog::{Partitioner, Work};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};

use crate::error::{Error, Result};

/// A source of oplog entries read asynchronously (for example archived oplog slices of a backup
/// repository), replayed by the restore engine after the dump's own oplog
/// (see [`crate::restore::RestorePlan::continue_oplog`]).
pub trait OplogSource: Send {
    /// The next entry, in oplog order; `None` at the end.
    fn next_entry(&mut self) -> Pin<Box<dyn Future<Output = Result<Option<RawDocumentBuf>>> + Send + '_>>;
    /// What the source is, for plans and logs.
    fn describe(&self) -> String;
}

/// Upper bound of the default number of replay workers.
pub const MAX_DEFAULT_REPLAY_WORKERS: usize = 8;
/// Commands queued per lane before the reader waits.
pub const CHANNEL_DEPTH: usize = 4;

/// The default number of replay workers: the available cores, at most
/// [`MAX_DEFAULT_REPLAY_WORKERS`].
#[must_use]
pub fn default_replay_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, MAX_DEFAULT_REPLAY_WORKERS)
}

/// Marks, in `partitioner`, every existing collection whose entries must stay in one lane:
/// capped collections and collections with a default collation (see
/// [`Partitioner::serialize_namespace`]). Run it once the restored collections exist, before
/// the replay: it also covers collections that were already on the destination.
///
/// # Errors
/// A failed `listDatabases` or `listCollections`.
pub async fn serialize_existing_collections(client: &Client, partitioner: &mut Partitioner) -> Result<()> {
    let names = client.list_database_names().await.map_err(|source| Error::Mongo {
        context: "restore error: error listing databases before the oplog replay".into(),
        source: Box::new(source),
    })?;
    for db in names {
        let mut cursor = client
            .database(&db)
            .run_cursor_command(bson::doc! {"listCollections": 1})
            .await
            .map_err(|source| Error::Mongo {
                context: format!("restore error: error listing collections of {db} before the oplog replay"),
                source: Box::new(source),
            })?;
        while cursor.advance().await.map_err(|source| Error::Mongo {
            context: format!("restore error: error listing collections of {db} before the oplog replay"),
            source: Box::new(source),
        })? {
            let Ok(spec) = Document::try_from(cursor.current()) else {
                continue;
            };
            let (Ok(name), Ok(options)) = (spec.get_str("name"), spec.get_document("options")) else {
                continue;
            };
            if options.get_bool("capped") == Ok(true) || options.contains_key("collation") {
                partitioner.serialize_namespace(&format!("{db}.{name}"));
            }
        }
    }
    Ok(())
}

enum Message {
    Apply(Document),
    Sync(oneshot::Sender<()>),
}

#[derive(Default)]
struct Failure {
    failed: AtomicBool,
    first: Mutex<Option<mongodb::error::Error>>,
}

impl Failure {
    fn record(&self, error: mongodb::error::Error) {
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(error);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        if !self.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let first = self.first.lock().unwrap_or_else(PoisonError::into_inner).take();
        Err(first.map_or_else(
            || Error::Data("restore error: error applying oplog: applyOps: the replay stopped".into()),
            apply_error,
        ))
    }
}

fn apply_error(source: mongodb::error::Error) -> Error {
    Error::Mongo {
        context: "restore error: error applying oplog: applyOps".into(),
        source: Box::new(source),
    }
}

/// Runs replayed commands over parallel lanes (see the module documentation).
pub struct ParallelReplay {
    admin: Database,
    partitioner: Partitioner,
    senders: Vec<mpsc::Sender<Message>>,
    workers: JoinSet<()>,
    failure: Arc<Failure>,
    work: Vec<Work>,
}

impl std::fmt::Debug for ParallelReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelReplay")
            .field("lanes", &self.senders.len())
            .finish_non_exhaustive()
    }
}

impl ParallelReplay {
    /// Starts one worker per lane of `partitioner`, each running commands on `admin` through
    /// `client`. Must be called inside a Tokio runtime.
    #[must_use]
    pub fn new(client: &Client, partitioner: Partitioner) -> Self {
        let admin = client.database("admin");
        let failure = Arc::new(Failure::default());
        let mut workers = JoinSet::new();
        let mut senders = Vec::with_capacity(partitioner.lanes());
        for _ in 0..partitioner.lanes() {
            let (tx, mut rx) = mpsc::channel::<Message>(CHANNEL_DEPTH);
            senders.push(tx);
            let admin = admin.clone();
            let failure = failure.clone();
            workers.spawn(async move {
                while let Some(message) = rx.recv().await {
                    match message {
                        Message::Apply(command) => {
                            if failure.failed.load(Ordering::SeqCst) {
                                continue;
                            }
                            if let Err(e) = admin.run_command(command).await {
                                failure.record(e);
                            }
                        }
                        Message::Sync(done) => {
                            // The receiver only disappears when the caller gave up.
                            let _ = done.send(());
                        }
                    }
                }
            });
        }
        Self {
            admin,
            partitioner,
            senders,
            workers,
            failure,
            work: Vec::new(),
        }
    }

    /// Number of lanes (workers).
    #[must_use]
    pub fn lanes(&self) -> usize {
        self.senders.len()
    }

    /// Schedules the commands of one replayed step; `isolated` runs them as one barrier unit
    /// (a transaction: see [`tidemark_oplog::is_isolated_entry`]).
    ///
    /// # Errors
    /// The first `applyOps` failure of any lane or barrier, as mongorestore reports it.
    pub async fn push(&mut self, commands: Vec<Document>, isolated: bool) -> Result<()> {
        let mut work = std::mem::take(&mut self.work);
        self.partitioner.push(commands, isolated, &mut work);
        let result = self.run(&mut work).await;
        work.clear();
        self.work = work;
        result
    }

    /// Runs the lanes' last batches and waits for every worker.
    ///
    /// # Errors
    /// The first `applyOps` failure, as for [`ParallelReplay::push`].
    pub async fn finish(mut self) -> Result<()> {
        let mut work = Vec::new();
        self.partitioner.flush(&mut work);
        let result = match self.run(&mut work).await {
            Ok(()) => self.sync().await,
            Err(e) => Err(e),
        };
        self.senders.clear();
        while let Some(joined) = self.workers.join_next().await {
            if let Err(e) = joined
                && result.is_ok()
            {
                return Err(Error::Data(format!("oplog replay worker failed: {e}")));
            }
        }
        result
    }

    async fn run(&mut self, work: &mut Vec<Work>) -> Result<()> {
        for item in work.drain(..) {
            self.failure.check()?;
            match item {
                Work::Lane { lane, command, .. } => {
                    let sender = self
                        .senders
                        .get(lane)
                        .ok_or_else(|| Error::Data(format!("oplog replay lane {lane} does not exist")))?;
                    if sender.send(Message::Apply(command)).await.is_err() {
                        self.failure.check()?;
                        return Err(Error::Data(format!("oplog replay worker {lane} stopped")));
                    }
                }
                Work::Barrier { commands } => {
                    self.sync().await?;
                    for command in commands {
                        self.admin.run_command(command).await.map_err(apply_error)?;
                    }
                }
            }
        }
        self.failure.check()
    }

    /// Waits until every worker has run everything sent so far.
    async fn sync(&self) -> Result<()> {
        let mut waits = Vec::with_capacity(self.senders.len());
        for (lane, sender) in self.senders.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            if sender.send(Message::Sync(tx)).await.is_err() {
                self.failure.check()?;
                return Err(Error::Data(format!("oplog replay worker {lane} stopped")));
            }
            waits.push(rx);
        }
        for (lane, rx) in waits.into_iter().enumerate() {
            if rx.await.is_err() {
                self.failure.check()?;
                return Err(Error::Data(format!("oplog replay worker {lane} stopped")));
            }
        }
        self.failure.check()
    }
}
