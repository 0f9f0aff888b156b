//! Continuous oplog archiving: the engine behind `tidemark oplog follow`.
//!
//! Snapshots restore to their consistency timestamp; restoring to any later moment needs the oplog
//! in between. The follower tails one member's `local.oplog.rs` with a tailable `awaitData` cursor
//! and stores what it reads as slices in a repository ([`tidemark_repo::oplog_archive`]), sealing one
//! every few seconds or megabytes so that the recovery point is never far behind.
//!
//! Choices, and why:
//! - **Which member.** A hidden member, else a secondary, else the primary (never an arbiter or a
//!   delayed member): archiving should not load the members that serve the application. The member
//!   is read over a direct connection and picked again when it stops being a healthy primary or
//!   secondary, or the connection fails; a change of primary needs nothing else.
//! - **Only majority-committed entries.** MongoDB can roll back entries a majority has not applied;
//!   an archive must never hold them. `tidemark-server` accepts `readConcern` but does not honour it
//!   on `find`, so the follower uses the majority optime each member reports in
//!   `hello.lastWrite.majorityOpTime` (documented by MongoDB for replica set members): entries are
//!   held back until their `ts` is at or below it.
//! - **No gap, no duplicate.** On start (and on every reconnection) the follower resumes after the
//!   last entry it archived, which it must find again in the source oplog with the same optime
//!   (`ts` and term `t`); the new slice records it as `continues_from`. If the oplog has rolled past
//!   it, the next slice records the gap instead, the gap is reported as an event, and the summary
//!   lists it (so a one-shot run can fail). With no earlier slice, it starts from the newest base
//!   snapshot's consistency timestamp, else from the newest committed entry ("now").
//! - **Crash safety.** A slice's manifest is written last; a follower killed mid-slice loses only
//!   the unsealed entries, which it reads again from the source on restart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bson::{Document, RawDocument, RawDocumentBuf, doc};
use mongodb::options::{ClientOptions, CursorType, FindOptions, ReadPreference, SelectionCriteria, ServerAddress};
use mongodb::{Client, Cursor};
use tidemark_repo::lock::Lock;
use tidemark_repo::oplog_archive::{self, OplogGap, SliceInfo, SliceStart, SliceWriter};
use tidemark_repo::{Repository, Timestamp};

use crate::connection::{ConnectionOptions, client_options};
use crate::error::{Error, MongoContext, Result};

/// Options of [`follow`].
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// How to reach the replica set.
    pub connection: ConnectionOptions,
    /// Seal the open slice after this long (since its first entry).
    pub seal_interval: Duration,
    /// Seal the open slice once it holds this many bytes.
    pub seal_size: u64,
    /// Archive what is committed now, seal, and return.
    pub once: bool,
    /// Longest wait for new entries before the follower looks at its member and the stop flag again.
    pub poll: Duration,
    /// How often a [`FollowEvent::Status`] is reported.
    pub status_every: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            connection: ConnectionOptions::default(),
            seal_interval: Duration::from_secs(5),
            seal_size: 16 * 1024 * 1024,
            once: false,
            poll: Duration::from_millis(500),
            status_every: Duration::from_secs(1),
        }
    }
}

/// The role of the member being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRole {
    /// A hidden secondary.
    Hidden,
    /// A visible secondary.
    Secondary,
    /// The primary.
    Primary,
}

impl MemberRole {
    /// `hidden`, `secondary` or `primary`.
    pub fn name(self) -> &'static str {
        match self {
            MemberRole::Hidden => "hidden",
            MemberRole::Secondary => "secondary",
            MemberRole::Primary => "primary",
        }
    }
}

/// Progress of a running follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowStatus {
    /// Replica set name.
    pub replica_set: String,
    /// Member being read (`host:port`).
    pub member: String,
    /// Entries archived by this run (sealed or in the open slice).
    pub entries: u64,
    /// Slices sealed by this run.
    pub slices: u64,
    /// `ts` of the last entry archived (by this run or before it).
    pub last: Option<Timestamp>,
    /// The member's majority commit point.
    pub majority: Option<Timestamp>,
    /// Seconds between the majority commit point and the last entry archived.
    pub lag_secs: u64,
    /// Entries in the open slice, not yet sealed.
    pub unsealed: u64,
}

/// What the follower reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowEvent {
    /// The replica set and where archiving resumes.
    Started {
        /// Replica set name.
        replica_set: String,
        /// Where the first slice continues from.
        start: SliceStart,
    },
    /// A member was picked for reading.
    Member {
        /// `host:port`.
        host: String,
        /// Its role.
        role: MemberRole,
    },
    /// The resume point is no longer in the source oplog: entries after it are lost.
    Gap {
        /// `ts` of the last entry archived.
        after: Timestamp,
        /// `ts` of the oldest entry the source still has.
        oldest: Timestamp,
    },
    /// A slice was sealed.
    Sealed(SliceInfo),
    /// Reading failed; the follower picks a member again.
    Retrying {
        /// Why.
        message: String,
    },
    /// Periodic progress (every [`FollowOptions::status_every`]).
    Status(FollowStatus),
}

/// What a follower run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowSummary {
    /// Replica set name.
    pub replica_set: String,
    /// Entries archived.
    pub entries: u64,
    /// Slices sealed.
    pub slices: u64,
    /// Bytes archived.
    pub bytes: u64,
    /// `ts` of the last entry archived (by this run or before it).
    pub last: Option<Timestamp>,
    /// Gaps recorded by this run.
    pub gaps: Vec<OplogGap>,
}

/// Bytes of entries read but not yet majority-committed that the follower keeps in memory.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Consecutive failed attempts to read before a one-shot run gives up.
const ONCE_ATTEMPTS: u32 = 10;

fn ts_of(entry: &RawDocument) -> Result<Timestamp> {
    entry
        .get_timestamp("ts")
        .map(Timestamp::from)
        .map_err(|e| Error::Data(format!("oplog entry without a timestamp `ts`: {e}")))
}

/// The optime (`ts`, term `t`) that identifies an oplog entry.
fn optime_of(entry: &RawDocument) -> Result<(Timestamp, Option<i64>)> {
    Ok((ts_of(entry)?, entry.get_i64("t").ok()))
}

/// The last archived entry: where the next slice continues from.
#[derive(Debug, Clone)]
struct ResumePoint {
    ts: Timestamp,
    /// Term of that entry, when known (it is not for a snapshot's consistency timestamp).
    term: Option<i64>,
}

/// Archives the oplog of the replica set at `options.connection` into `repo` until `stop` is set
/// (or, with `once`, until everything committed at the start is archived). The open slice is
/// sealed before returning. Holds a shared repository lock throughout.
///
/// # Errors
/// Connection failures on a one-shot run, repository failures, a source that has diverged from
/// the archive (the last archived entry exists with another term), and invalid oplog entries.
pub async fn follow(
    repo: &Repository,
    options: &FollowOptions,
    stop: Arc<AtomicBool>,
    on_event: &mut (dyn FnMut(FollowEvent) + Send),
) -> Result<FollowSummary> {
    let base = client_options(&options.connection, "tidemark oplog follow").await?;
    // Discovery (set name, members) works on any member: no need to wait for a primary.
    let mut discovery = base.clone();
    discovery.selection_criteria = Some(SelectionCriteria::ReadPreference(ReadPreference::PrimaryPreferred {
        options: None,
    }));
    discovery.server_selection_timeout = Some(Duration::from_secs(10));
    let cluster = Client::with_options(discovery).context(|| "error creating the client".to_owned())?;
    let hello = cluster
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .context(|| "error running hello".to_owned())?;
    let replica_set = hello
        .get_str("setName")
        .map_err(|_| Error::Options("oplog follow needs a replica set member: the server reports no setName".into()))?
        .to_owned();
    let mut lock = Lock::acquire(repo.storage(), false).await?;
    let mut follower = Follower {
        repo: repo.clone(),
        options: options.clone(),
        base,
        cluster,
        replica_set: replica_set.clone(),
        resume: None,
        next_start: SliceStart::Fresh,
        writer: None,
        slice_opened: Instant::now(),
        summary: FollowSummary {
            replica_set,
            ..FollowSummary::default()
        },
        majority: None,
        member: String::new(),
        stop,
    };
    let result = follower.run(&mut lock, on_event).await;
    // Seal what was archived even when reading failed: those entries are committed and verified.
    let sealed = follower.seal(on_event).await;
    lock.release().await?;
    result?;
    sealed?;
    follower.summary.last = follower.resume.as_ref().map(|r| r.ts);
    Ok(follower.summary)
}

struct Follower {
    repo: Repository,
    options: FollowOptions,
    base: ClientOptions,
    cluster: Client,
    replica_set: String,
    /// The last entry archived (in a sealed slice or the open one).
    resume: Option<ResumePoint>,
    /// How the next slice starts.
    next_start: SliceStart,
    writer: Option<SliceWriter>,
    slice_opened: Instant,
    summary: FollowSummary,
    majority: Option<Timestamp>,
    member: String,
    stop: Arc<AtomicBool>,
}

/// Why a reading session ended.
enum SessionEnd {
    /// Stop requested, or a one-shot run is complete.
    Done,
    /// Pick a member again (member gone, cursor lost, error).
    Repick,
}

impl Follower {
    async fn run(&mut self, lock: &mut Lock, on_event: &mut (dyn FnMut(FollowEvent) + Send)) -> Result<()> {
        self.find_resume_point().await?;
        if self.resume.is_some() {
            on_event(FollowEvent::Started {
                replica_set: self.replica_set.clone(),
                start: self.next_start,
            });
        }
        // Consecutive sessions that archived nothing: a one-shot run gives up after a few.
        let mut fruitless = 0u32;
        let mut once_target: Option<Timestamp> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let before = self.summary.entries;
            let outcome = match self.pick_member(on_event).await {
                Ok((client, host)) => {
                    self.member = host;
                    self.session(&client, lock, &mut once_target, on_event).await
                }
                Err(e) => Err(e),
            };
            let message = match outcome {
                Ok(SessionEnd::Done) => return Ok(()),
                Ok(SessionEnd::Repick) => None,
                Err(Error::Mongo { context, source }) => Some(format!("{context}: {source}")),
                Err(e) => return Err(e),
            };
            fruitless = if self.summary.entries > before {
                0
            } else {
                fruitless + 1
            };
            if self.options.once && fruitless >= ONCE_ATTEMPTS {
                return Err(Error::Data(format!(
                    "giving up after {fruitless} attempts to read the oplog of {}{}",
                    self.replica_set,
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                )));
            }
            if let Some(message) = message {
                on_event(FollowEvent::Retrying { message });
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(())
    }

    /// The last sealed entry of this set, else the newest base snapshot's consistency timestamp.
    async fn find_resume_point(&mut self) -> Result<()> {
        if let Some(last) = oplog_archive::last_slice(&self.repo, &self.replica_set).await? {
            // Read the slice (verified) to learn the term of its last entry.
            let mut stream = oplog_archive::slice_entries(&self.repo, &last);
            let mut term = None;
            while let Some(entry) = stream.next_document().await? {
                term = entry.get_i64("t").ok();
            }
            self.resume = Some(ResumePoint { ts: last.last, term });
            self.next_start = SliceStart::ContinuesFrom(last.last);
            return Ok(());
        }
        let timeline = oplog_archive::pitr_timeline(&self.repo).await?;
        let newest_base = timeline
            .windows
            .iter()
            .filter(|w| w.replica_set == self.replica_set)
            .map(|w| w.from)
            .max();
        let newest_base = match newest_base {
            Some(ts) => Some(ts),
            // No slice yet: a backup that recorded no set name stands for this set.
            None => self
                .repo
                .snapshots()
                .await?
                .iter()
                .filter(|(_, s)| s.members.len() == 1 && s.members[0].name.is_empty())
                .filter_map(|(_, s)| s.consistency_ts)
                .max(),
        };
        if let Some(ts) = newest_base {
            self.resume = Some(ResumePoint { ts, term: None });
            self.next_start = SliceStart::ContinuesFrom(ts);
        }
        Ok(())
    }

    fn direct_client(&self, host: &str) -> Result<Client> {
        let mut opts = self.base.clone();
        opts.hosts = vec![ServerAddress::parse(host).map_err(|e| Error::Options(format!("member host {host}: {e}")))?];
        opts.direct_connection = Some(true);
        opts.repl_set_name = None;
        opts.server_selection_timeout = Some(Duration::from_secs(2));
        opts.connect_timeout = Some(Duration::from_secs(2));
        Client::with_options(opts).context(|| format!("error creating a client for {host}"))
    }

    /// Member hosts of the set: from `replSetGetConfig` (which lists hidden members), else from
    /// `hello` (hosts and passives).
    async fn member_hosts(&self) -> Result<Vec<String>> {
        let admin = self.cluster.database("admin");
        if let Ok(reply) = admin.run_command(doc! {"replSetGetConfig": 1}).await
            && let Ok(members) = reply.get_document("config").and_then(|c| c.get_array("members"))
        {
            let hosts: Vec<String> = members
                .iter()
                .filter_map(|m| m.as_document())
                .filter(|m| !m.get_bool("arbiterOnly").unwrap_or(false))
                .filter_map(|m| m.get_str("host").ok().map(str::to_owned))
                .collect();
            if !hosts.is_empty() {
                return Ok(hosts);
            }
        }
        let hello = admin
            .run_command(doc! {"hello": 1})
            .await
            .context(|| "error running hello".to_owned())?;
        let mut hosts = Vec::new();
        for key in ["hosts", "passives"] {
            if let Ok(list) = hello.get_array(key) {
                hosts.extend(list.iter().filter_map(|h| h.as_str().map(str::to_owned)));
            }
        }
        if hosts.is_empty() {
            hosts.extend(self.base.hosts.iter().map(ToString::to_string));
        }
        Ok(hosts)
    }

    /// Picks the member to read: hidden, else secondary, else primary; never delayed.
    async fn pick_member(&self, on_event: &mut (dyn FnMut(FollowEvent) + Send)) -> Result<(Client, String)> {
        let mut best: Option<(MemberRole, Client, String)> = None;
        for host in self.member_hosts().await? {
            let Ok(client) = self.direct_client(&host) else {
                continue;
            };
            let Ok(hello) = client.database("admin").run_command(doc! {"hello": 1}).await else {
                continue;
            };
            let Some(role) = role_of(&hello, &self.replica_set) else {
                continue;
            };
            if best.as_ref().is_none_or(|(r, _, _)| role_rank(role) < role_rank(*r)) {
                best = Some((role, client, host));
            }
        }
        let Some((role, client, host)) = best else {
            return Err(Error::Mongo {
                context: format!("no member of replica set {} can be read", self.replica_set),
                source: Box::new(mongodb::error::Error::custom("no healthy primary or secondary")),
            });
        };
        on_event(FollowEvent::Member {
            host: host.clone(),
            role,
        });
        Ok((client, host))
    }

    /// The member's majority commit point (`hello.lastWrite.majorityOpTime.ts`) and whether it is
    /// still a readable member of the set.
    async fn member_state(&self, client: &Client) -> Result<(Option<Timestamp>, bool)> {
        let hello = client
            .database("admin")
            .run_command(doc! {"hello": 1})
            .await
            .context(|| format!("error running hello on {}", self.member))?;
        let majority = hello
            .get_document("lastWrite")
            .and_then(|w| w.get_document("majorityOpTime"))
            .and_then(|o| o.get_timestamp("ts"))
            .ok()
            .map(Timestamp::from);
        Ok((majority, role_of(&hello, &self.replica_set).is_some()))
    }

    /// One reading session on one member.
    async fn session(
        &mut self,
        client: &Client,
        lock: &mut Lock,
        once_target: &mut Option<Timestamp>,
        on_event: &mut (dyn FnMut(FollowEvent) + Send),
    ) -> Result<SessionEnd> {
        let oplog = client.database("local").collection::<RawDocumentBuf>("oplog.rs");
        let (majority, _) = self.member_state(client).await?;
        self.majority = majority.or(self.majority);
        if self.options.once && once_target.is_none() {
            *once_target = Some(majority.unwrap_or(Timestamp { t: 0, i: 0 }));
        }
        let Some(resume) = self.resume.clone() else {
            // Nothing archived and no base snapshot: the archive starts with the newest committed
            // entry (stored, so that the next run resumes from it).
            let Some(majority) = self.majority else {
                return Ok(SessionEnd::Repick);
            };
            let newest = oplog
                .find_one(doc! {"ts": {"$lte": bson::Timestamp::from(majority)}})
                .sort(doc! {"$natural": -1})
                .await
                .context(|| format!("error reading the oplog of {}", self.member))?;
            let Some(newest) = newest else {
                return Ok(SessionEnd::Repick);
            };
            let from = ts_of(&newest)?;
            on_event(FollowEvent::Started {
                replica_set: self.replica_set.clone(),
                start: SliceStart::Fresh,
            });
            let cursor = self
                .tailable(&oplog, doc! {"ts": {"$gte": bson::Timestamp::from(from)}})
                .await?;
            return self.tail(client, cursor, lock, *once_target, on_event).await;
        };
        if once_target.is_some_and(|target| resume.ts >= target) {
            return Ok(SessionEnd::Done);
        }

        let mut cursor = self
            .tailable(&oplog, doc! {"ts": {"$gte": bson::Timestamp::from(resume.ts)}})
            .await?;
        let first = self.next_entry(&mut cursor).await?;
        match &first {
            Some(Ok(entry)) if ts_of(entry)? == resume.ts => {
                let (_, term) = optime_of(entry)?;
                if let (Some(want), Some(got)) = (resume.term, term)
                    && want != got
                {
                    return Err(Error::Data(format!(
                        "the oplog of {} has diverged from the archive: its entry at {} has term {got}, the archived one term {want}",
                        self.member, resume.ts
                    )));
                }
            }
            _ => {
                // The resume entry is not there: the oplog rolled past it, or this member is behind.
                let oldest = oplog
                    .find_one(doc! {})
                    .sort(doc! {"$natural": 1})
                    .await
                    .context(|| format!("error reading the oplog of {}", self.member))?;
                let oldest = oldest.as_deref().map(ts_of).transpose()?;
                match oldest {
                    Some(oldest) if oldest > resume.ts => {
                        on_event(FollowEvent::Gap {
                            after: resume.ts,
                            oldest,
                        });
                        self.seal(on_event).await?;
                        self.next_start = SliceStart::GapAfter(resume.ts);
                        // Read everything the member still has.
                        drop(cursor);
                        cursor = self.tailable(&oplog, doc! {}).await?;
                    }
                    _ => {
                        // Behind (or empty): wait and look again, maybe on another member.
                        if let Some(Ok(entry)) = &first
                            && ts_of(entry)? > resume.ts
                        {
                            return Err(Error::Data(format!(
                                "the oplog of {} has no entry at {} although it holds older ones: it has diverged from the archive",
                                self.member, resume.ts
                            )));
                        }
                        tokio::time::sleep(self.options.poll).await;
                        return Ok(SessionEnd::Repick);
                    }
                }
            }
        }
        self.tail(client, cursor, lock, *once_target, on_event).await
    }

    /// A tailable `awaitData` cursor on the oplog from `filter`.
    async fn tailable(
        &self,
        oplog: &mongodb::Collection<RawDocumentBuf>,
        filter: Document,
    ) -> Result<Cursor<RawDocumentBuf>> {
        let options = FindOptions::builder()
            .cursor_type(CursorType::TailableAwait)
            .max_await_time(self.options.poll)
            .no_cursor_timeout(true)
            .build();
        oplog
            .find(filter)
            .with_options(options)
            .await
            .context(|| format!("error opening a tailable cursor on the oplog of {}", self.member))
    }

    /// Reads one entry, waiting at most about `poll`: `None` when nothing came in time,
    /// `Some(Err(()))` when the server closed the cursor.
    async fn next_entry(
        &self,
        cursor: &mut Cursor<RawDocumentBuf>,
    ) -> Result<Option<std::result::Result<RawDocumentBuf, ()>>> {
        match tokio::time::timeout(self.options.poll + Duration::from_millis(100), cursor.advance()).await {
            Err(_) => Ok(None),
            Ok(Ok(true)) => Ok(Some(Ok(cursor.current().to_owned()))),
            Ok(Ok(false)) => Ok(Some(Err(()))),
            Ok(Err(e)) => Err(Error::Mongo {
                context: format!("error reading the oplog of {}", self.member),
                source: Box::new(e),
            }),
        }
    }

    async fn tail(
        &mut self,
        client: &Client,
        mut cursor: Cursor<RawDocumentBuf>,
        lock: &mut Lock,
        once_target: Option<Timestamp>,
        on_event: &mut (dyn FnMut(FollowEvent) + Send),
    ) -> Result<SessionEnd> {
        let mut pending: VecDeque<RawDocumentBuf> = VecDeque::new();
        let mut pending_bytes = 0usize;
        let mut last_majority_poll = Instant::now();
        let mut last_status = Instant::now();
        let mut last_health = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(SessionEnd::Done);
            }
            // While the majority point stalls (secondaries down), entries wait in memory; past a
            // bound, reading pauses instead (the cursor keeps its place in the oplog).
            let read = if pending_bytes >= MAX_PENDING_BYTES {
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            } else {
                self.next_entry(&mut cursor).await?
            };
            let idle = match read {
                Some(Ok(entry)) => {
                    let ts = ts_of(&entry)?;
                    if self.resume.as_ref().is_some_and(|r| ts <= r.ts) {
                        // The resume entry itself (or older, after a gap reopen that re-reads).
                        continue;
                    }
                    pending_bytes += entry.as_bytes().len();
                    pending.push_back(entry);
                    false
                }
                Some(Err(())) => {
                    on_event(FollowEvent::Retrying {
                        message: format!("the oplog cursor on {} was closed", self.member),
                    });
                    return Ok(SessionEnd::Repick);
                }
                None => true,
            };
            let blocked = pending
                .front()
                .map(|e| ts_of(e))
                .transpose()?
                .is_some_and(|ts| self.majority.is_none_or(|m| ts > m));
            if (blocked && (idle || last_majority_poll.elapsed() >= Duration::from_millis(10)))
                || last_health.elapsed() >= Duration::from_secs(2)
            {
                let (majority, healthy) = self.member_state(client).await?;
                last_majority_poll = Instant::now();
                if last_health.elapsed() >= Duration::from_secs(2) {
                    last_health = Instant::now();
                    if !healthy {
                        on_event(FollowEvent::Retrying {
                            message: format!("{} is no longer a readable member of {}", self.member, self.replica_set),
                        });
                        return Ok(SessionEnd::Repick);
                    }
                }
                if majority > self.majority {
                    self.majority = majority;
                }
            }
            while let Some(front) = pending.front() {
                let ts = ts_of(front)?;
                if self.majority.is_none_or(|m| ts > m) {
                    break;
                }
                if once_target.is_some_and(|target| ts > target) {
                    break;
                }
                let entry = pending
                    .pop_front()
                    .ok_or_else(|| Error::Data("pending entry vanished".into()))?;
                pending_bytes -= entry.as_bytes().len();
                self.archive(&entry).await?;
            }
            if let Some(writer) = &self.writer
                && (writer.bytes() >= self.options.seal_size
                    || self.slice_opened.elapsed() >= self.options.seal_interval)
            {
                self.seal(on_event).await?;
            }
            // Rewrites the lock only every few minutes; an idle follower must keep it live too.
            lock.refresh().await?;
            if last_status.elapsed() >= self.options.status_every {
                last_status = Instant::now();
                on_event(FollowEvent::Status(self.status()));
            }
            if let Some(target) = once_target {
                // Done once the target is archived, or an entry past it was read (nothing before it is left).
                let past = pending
                    .front()
                    .map(|e| ts_of(e))
                    .transpose()?
                    .is_some_and(|ts| ts > target);
                if past || self.resume.as_ref().is_some_and(|r| r.ts >= target) {
                    return Ok(SessionEnd::Done);
                }
            }
        }
    }

    async fn archive(&mut self, entry: &RawDocument) -> Result<()> {
        if self.writer.is_none() {
            self.writer = Some(SliceWriter::new(&self.repo, &self.replica_set, self.next_start));
            self.slice_opened = Instant::now();
        }
        let (ts, term) = optime_of(entry)?;
        if let Some(writer) = &mut self.writer {
            writer.write_entry(entry).await?;
        }
        self.resume = Some(ResumePoint { ts, term });
        self.summary.entries += 1;
        self.summary.bytes += entry.as_bytes().len() as u64;
        Ok(())
    }

    /// Seals the open slice, if any.
    async fn seal(&mut self, on_event: &mut (dyn FnMut(FollowEvent) + Send)) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        if let Some(info) = writer.seal().await? {
            self.summary.slices += 1;
            if let Some(gap) = &info.gap {
                self.summary.gaps.push(gap.clone());
            }
            self.next_start = SliceStart::ContinuesFrom(info.last);
            on_event(FollowEvent::Sealed(info));
        }
        Ok(())
    }

    fn status(&self) -> FollowStatus {
        let last = self.resume.as_ref().map(|r| r.ts);
        let lag_secs = match (self.majority, last) {
            (Some(m), Some(l)) if m > l => u64::from(m.t.saturating_sub(l.t)),
            _ => 0,
        };
        FollowStatus {
            replica_set: self.replica_set.clone(),
            member: self.member.clone(),
            entries: self.summary.entries,
            slices: self.summary.slices,
            last,
            majority: self.majority,
            lag_secs,
            unsealed: self.writer.as_ref().map_or(0, SliceWriter::entries),
        }
    }
}

/// The role of a member from its own `hello`, if it is a readable member of `set` (primary or
/// secondary, not delayed, not an arbiter).
fn role_of(hello: &Document, set: &str) -> Option<MemberRole> {
    if hello.get_str("setName").ok() != Some(set)
        || hello.get_bool("arbiterOnly").unwrap_or(false)
        || hello
            .get("secondaryDelaySecs")
            .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
            .is_some_and(|d| d > 0)
    {
        return None;
    }
    let primary = hello
        .get_bool("isWritablePrimary")
        .or_else(|_| hello.get_bool("ismaster"))
        .unwrap_or(false);
    if primary {
        Some(MemberRole::Primary)
    } else if hello.get_bool("secondary").unwrap_or(false) {
        Some(if hello.get_bool("hidden").unwrap_or(false) {
            MemberRole::Hidden
        } else {
            MemberRole::Secondary
        })
    } else {
        None
    }
}

fn role_rank(role: MemberRole) -> u8 {
    match role {
        MemberRole::Hidden => 0,
        MemberRole::Secondary => 1,
        MemberRole::Primary => 2,
    }
}
