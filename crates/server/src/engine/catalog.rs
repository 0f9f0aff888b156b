//! The catalog: databases, their collections, and how each [`Mutation`] changes them.
//!
//! `Catalog::apply` checks a mutation against the current state (namespace exists or not, unique keys),
//! applies it, and records how to undo it, so a write that fails half way (or whose journal write fails) can
//! be rolled back to exactly the previous state. Capped-collection inserts also remove the oldest documents;
//! those removals are reported as extra `Delete` mutations so the logged batch says exactly what changed.

use std::collections::BTreeMap;

use bson::{Bson, Document, RawDocumentBuf};

use super::batch::Mutation;
use super::collection::{Collection, Index};
use super::key::raw_id;
use super::namespace::Namespace;
use crate::error::{CommandError, CommandResult};

/// The collections of one database.
#[derive(Debug, Default)]
pub struct Database {
    /// Collections and views by name.
    pub collections: BTreeMap<String, Collection>,
}

/// All databases.
#[derive(Debug, Default)]
pub struct Catalog {
    dbs: BTreeMap<String, Database>,
}

/// The mutations a write has applied, which become its [`crate::engine::WriteBatch`]. They are kept only when
/// the batch is logged (see [`crate::engine::Durability::keeps_batches`]); otherwise they are only counted, so
/// that a server without a journal stores an inserted document without also copying it into a batch that
/// nobody reads.
#[derive(Debug)]
pub(crate) struct Applied {
    kept: Option<Vec<Mutation>>,
    count: usize,
}

impl Applied {
    /// An empty record that keeps the mutations or only counts them.
    pub(crate) fn new(keep: bool) -> Self {
        Self {
            kept: keep.then(Vec::new),
            count: 0,
        }
    }

    /// Whether the mutations are kept (and so must be given to [`Applied::record`]).
    pub(crate) fn keeps(&self) -> bool {
        self.kept.is_some()
    }

    /// Records one applied mutation: `m` is the mutation when [`Applied::keeps`], and may be `None` otherwise.
    pub(crate) fn record(&mut self, m: Option<Mutation>) {
        self.count += 1;
        if let (Some(kept), Some(m)) = (self.kept.as_mut(), m) {
            kept.push(m);
        }
    }

    /// Number of mutations applied.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing was applied.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Forgets the mutations recorded after the first `len`.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.count = self.count.min(len);
        if let Some(kept) = self.kept.as_mut() {
            kept.truncate(len);
        }
    }

    /// The kept mutations (none when they were only counted); the record is empty afterwards.
    pub(crate) fn take(&mut self) -> Vec<Mutation> {
        self.count = 0;
        self.kept.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

/// How to reverse one applied step.
pub(crate) enum Undo {
    RemoveRecord(Namespace, u64),
    RestoreRecord(Namespace, u64, bson::RawDocumentBuf),
    ReplaceRecord(Namespace, u64, bson::RawDocumentBuf),
    RemoveCollection(Namespace),
    RestoreCollection(Namespace, Box<Collection>),
    RestoreDatabase(String, Database),
    Rename(Namespace, Namespace),
    SetOptions(Namespace, Document),
    DropIndex(Namespace, String),
    RestoreIndex(Namespace, usize, Box<Index>),
    SetIndexSpec(Namespace, Document),
}

impl Catalog {
    /// Database names with at least one collection.
    pub fn database_names(&self) -> Vec<String> {
        self.dbs
            .iter()
            .filter(|(_, d)| !d.collections.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A database, if it has collections.
    pub fn database(&self, db: &str) -> Option<&Database> {
        self.dbs.get(db).filter(|d| !d.collections.is_empty())
    }

    /// A collection or view.
    pub fn collection(&self, ns: &Namespace) -> Option<&Collection> {
        self.dbs.get(&ns.db)?.collections.get(&ns.coll)
    }

    fn collection_mut(&mut self, ns: &Namespace) -> CommandResult<&mut Collection> {
        self.dbs
            .get_mut(&ns.db)
            .and_then(|d| d.collections.get_mut(&ns.coll))
            .ok_or_else(|| CommandError::namespace_not_found(format!("ns not found: {ns}")))
    }

    /// Applies one mutation; pushes undo steps and records the mutations that actually took effect.
    pub(crate) fn apply(&mut self, m: Mutation, undo: &mut Vec<Undo>, applied: &mut Applied) -> CommandResult<()> {
        if let Mutation::Insert { ns, doc } = m {
            return self.insert(ns, doc, undo, applied);
        }
        match &m {
            Mutation::CreateCollection { ns, uuid, options } => {
                if self.collection(ns).is_some() {
                    return Err(CommandError::namespace_exists(format!(
                        "Collection {ns} already exists."
                    )));
                }
                let coll = Collection::new(ns, *uuid, options.clone())?;
                self.dbs
                    .entry(ns.db.clone())
                    .or_default()
                    .collections
                    .insert(ns.coll.clone(), coll);
                undo.push(Undo::RemoveCollection(ns.clone()));
            }
            Mutation::DropCollection { ns } => {
                let coll = self
                    .dbs
                    .get_mut(&ns.db)
                    .and_then(|d| d.collections.remove(&ns.coll))
                    .ok_or_else(|| CommandError::namespace_not_found(format!("ns not found: {ns}")))?;
                undo.push(Undo::RestoreCollection(ns.clone(), Box::new(coll)));
            }
            Mutation::DropDatabase { db } => {
                if let Some(d) = self.dbs.remove(db) {
                    undo.push(Undo::RestoreDatabase(db.clone(), d));
                }
            }
            Mutation::RenameCollection { from, to } => {
                if self.collection(to).is_some() {
                    return Err(CommandError::namespace_exists(format!("target namespace exists: {to}")));
                }
                let coll = self
                    .dbs
                    .get_mut(&from.db)
                    .and_then(|d| d.collections.remove(&from.coll))
                    .ok_or_else(|| {
                        CommandError::namespace_not_found(format!("Source collection {from} does not exist"))
                    })?;
                self.dbs
                    .entry(to.db.clone())
                    .or_default()
                    .collections
                    .insert(to.coll.clone(), coll);
                undo.push(Undo::Rename(to.clone(), from.clone()));
            }
            Mutation::SetOptions { ns, options } => {
                let coll = self.collection_mut(ns)?;
                let old = std::mem::replace(&mut coll.options, options.clone());
                undo.push(Undo::SetOptions(ns.clone(), old));
            }
            Mutation::CreateIndex { ns, spec } => {
                let name = spec.get_str("name").unwrap_or_default().to_string();
                self.collection_mut(ns)?.create_index(ns, spec.clone())?;
                undo.push(Undo::DropIndex(ns.clone(), name));
            }
            Mutation::SetIndexSpec { ns, spec } => {
                let old = self.collection_mut(ns)?.set_index_spec(spec.clone())?;
                undo.push(Undo::SetIndexSpec(ns.clone(), old));
            }
            Mutation::DropIndex { ns, name } => {
                let (pos, idx) = self
                    .collection_mut(ns)?
                    .take_index(name)
                    .ok_or_else(|| CommandError::index_not_found(format!("index not found with name [{name}]")))?;
                undo.push(Undo::RestoreIndex(ns.clone(), pos, Box::new(idx)));
            }
            Mutation::Insert { .. } => unreachable!("inserts are applied by Catalog::insert"),
            Mutation::Upsert { ns, doc } => {
                let id = raw_id(doc).ok_or_else(|| CommandError::bad_value(format!("document for {ns} has no _id")))?;
                let coll = self.collection_mut(ns)?;
                match coll.find_id(&id).map(|(rec, _)| rec) {
                    Some(rec) => {
                        let old = coll.replace(ns, rec, doc.clone())?;
                        undo.push(Undo::ReplaceRecord(ns.clone(), rec, old));
                    }
                    None => {
                        let rec = coll.insert(ns, doc.clone())?;
                        undo.push(Undo::RemoveRecord(ns.clone(), rec));
                    }
                }
            }
            Mutation::Delete { ns, id } => {
                let coll = self.collection_mut(ns)?;
                if let Some(rec) = coll.find_id(id).map(|(rec, _)| rec)
                    && let Some(d) = coll.remove(rec)
                {
                    undo.push(Undo::RestoreRecord(ns.clone(), rec, d));
                } else {
                    return Ok(());
                }
            }
        }
        applied.record(Some(m));
        Ok(())
    }

    /// Applies [`Mutation::Insert`]: the document moves into the collection, and is copied only when the
    /// applied mutations are kept.
    fn insert(
        &mut self,
        ns: Namespace,
        doc: RawDocumentBuf,
        undo: &mut Vec<Undo>,
        applied: &mut Applied,
    ) -> CommandResult<()> {
        let kept = applied.keeps().then(|| doc.clone());
        let coll = self.collection_mut(&ns)?;
        let rec = coll.insert(&ns, doc)?;
        undo.push(Undo::RemoveRecord(ns.clone(), rec));
        let excess = coll.capped_excess(rec);
        applied.record(kept.map(|doc| Mutation::Insert { ns: ns.clone(), doc }));
        for old in excess {
            if let Some(d) = coll.remove(old) {
                let id = raw_id(&d).unwrap_or(Bson::Null);
                undo.push(Undo::RestoreRecord(ns.clone(), old, d));
                applied.record(Some(Mutation::Delete { ns: ns.clone(), id }));
            }
        }
        Ok(())
    }

    /// Reverses one step (steps must be undone in reverse order of application).
    pub(crate) fn undo(&mut self, u: Undo) {
        match u {
            Undo::RemoveRecord(ns, rec) => {
                if let Ok(c) = self.collection_mut(&ns) {
                    c.remove(rec);
                }
            }
            Undo::RestoreRecord(ns, rec, doc) => {
                if let Ok(c) = self.collection_mut(&ns) {
                    let _ = c.insert_at(&ns, rec, doc);
                }
            }
            Undo::ReplaceRecord(ns, rec, doc) => {
                if let Ok(c) = self.collection_mut(&ns) {
                    let _ = c.replace(&ns, rec, doc);
                }
            }
            Undo::RemoveCollection(ns) => {
                if let Some(d) = self.dbs.get_mut(&ns.db) {
                    d.collections.remove(&ns.coll);
                }
            }
            Undo::RestoreCollection(ns, c) => {
                self.dbs.entry(ns.db).or_default().collections.insert(ns.coll, *c);
            }
            Undo::RestoreDatabase(db, d) => {
                self.dbs.insert(db, d);
            }
            Undo::Rename(from, to) => {
                if let Some(c) = self
                    .dbs
                    .get_mut(&from.db)
                    .and_then(|d| d.collections.remove(&from.coll))
                {
                    self.dbs.entry(to.db).or_default().collections.insert(to.coll, c);
                }
            }
            Undo::SetOptions(ns, old) => {
                if let Ok(c) = self.collection_mut(&ns) {
                    c.options = old;
                }
            }
            Undo::DropIndex(ns, name) => {
                if let Ok(c) = self.collection_mut(&ns) {
                    c.take_index(&name);
                }
            }
            Undo::RestoreIndex(ns, pos, idx) => {
                if let Ok(c) = self.collection_mut(&ns) {
                    c.restore_index(pos, *idx);
                }
            }
            Undo::SetIndexSpec(ns, old) => {
                if let Ok(c) = self.collection_mut(&ns) {
                    let _ = c.set_index_spec(old);
                }
            }
        }
    }
}
