//! Namespaces whose documents are still arriving: queries on them wait instead of seeing a partial
//! collection.
//!
//! A server that starts serving before its data is in place (`tidemark serve` exposing a backup)
//! creates every collection with its options and indexes first, so `listCollections` and
//! `listIndexes` answer at once, and registers the collections still being filled with a
//! [`LoadGate`]. Reads that look at documents (`find`, `count`, `distinct`, `aggregate`, the
//! statistics and hash commands) wait until their collection is complete; a command whose
//! collections cannot be told in advance (a view, `aggregate: 1`, a pipeline with `$lookup`,
//! `$unionWith` or `$graphLookup`, a database-wide command) waits for the whole database, and
//! `usersInfo`/`rolesInfo` wait for the `admin` database, where users and roles are kept. A
//! loader asks [`LoadGate::next`] what to load, which hands out the namespaces somebody is waiting
//! for first, and reports [`LoadGate::loaded`] or [`LoadGate::failed`]; a failed namespace makes
//! its readers fail with the loader's message instead of waiting forever.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, PoisonError};

use bson::{Bson, Document};

use crate::error::{CommandError, CommandResult};

/// Commands that read documents, so must wait for their collection.
const DOCUMENT_READS: &[&str] = &[
    "find",
    "count",
    "distinct",
    "aggregate",
    "collStats",
    "dbStats",
    "dbHash",
    "validate",
];

/// Pipeline stages that read other collections.
const FOREIGN_STAGES: &[&str] = &["$lookup", "$unionWith", "$graphLookup"];

/// State of one namespace under the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending,
    Loaded,
    Failed(String),
}

#[derive(Debug, Default)]
struct Inner {
    /// `db.collection` → state, for every collection the loader fills.
    namespaces: BTreeMap<String, State>,
    /// Pending namespaces not yet handed to a loader, in loading order.
    queue: VecDeque<String>,
}

/// The namespaces being loaded and the readers waiting for them.
#[derive(Debug, Default)]
pub struct LoadGate {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl LoadGate {
    /// A gate over `namespaces` (`db.collection`), to be loaded in this order unless a reader asks
    /// for one sooner.
    pub fn new(namespaces: impl IntoIterator<Item = String>) -> Self {
        let mut inner = Inner::default();
        for ns in namespaces {
            if inner.namespaces.insert(ns.clone(), State::Pending).is_none() {
                inner.queue.push_back(ns);
            }
        }
        Self {
            inner: Mutex::new(inner),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next namespace to load (one a reader waits for, else the next in order); `None` when
    /// every namespace has been handed out.
    pub fn next(&self) -> Option<String> {
        self.lock().queue.pop_front()
    }

    /// Marks `ns` complete and wakes its readers.
    pub fn loaded(&self, ns: &str) {
        self.set(ns, State::Loaded);
    }

    /// Marks `ns` as impossible to load; its readers fail with `message`.
    pub fn failed(&self, ns: &str, message: impl Into<String>) {
        self.set(ns, State::Failed(message.into()));
    }

    fn set(&self, ns: &str, state: State) {
        let mut inner = self.lock();
        inner.queue.retain(|q| q != ns);
        inner.namespaces.insert(ns.to_owned(), state);
        drop(inner);
        self.changed.notify_all();
    }

    /// `(loaded, total)` namespaces (failed ones count as done).
    pub fn progress(&self) -> (usize, usize) {
        let inner = self.lock();
        let done = inner.namespaces.values().filter(|s| **s != State::Pending).count();
        (done, inner.namespaces.len())
    }

    /// Blocks until every namespace `command` on `db` reads is complete; fails if one of them could
    /// not be loaded.
    pub fn wait_for_command(&self, command: &str, db: &str, body: &Document) -> CommandResult<()> {
        // Users and roles of every database live in admin's system collections.
        if matches!(command, "usersInfo" | "rolesInfo") {
            return self.wait_for_command("find", "admin", &Document::new());
        }
        if !DOCUMENT_READS.contains(&command) {
            return Ok(());
        }
        let collection = body.get(command).and_then(Bson::as_str);
        let foreign = body.get_array("pipeline").is_ok_and(|p| {
            p.iter()
                .filter_map(Bson::as_document)
                .any(|s| FOREIGN_STAGES.iter().any(|f| s.contains_key(*f)))
        });
        let ns = collection.map(|c| format!("{db}.{c}"));
        let mut inner = self.lock();
        let single = match &ns {
            Some(ns) if !foreign && inner.namespaces.contains_key(ns) => Some(ns.clone()),
            _ => None,
        };
        let prefix = format!("{db}.");
        let wanted = |name: &str| match &single {
            Some(ns) => name == ns,
            None => name.starts_with(&prefix),
        };
        // Readers go first: move what they wait for to the front of the queue.
        let mut front: Vec<String> = inner.queue.iter().filter(|q| wanted(q)).cloned().collect();
        if !front.is_empty() {
            inner.queue.retain(|q| !wanted(q));
            while let Some(ns) = front.pop() {
                inner.queue.push_front(ns);
            }
        }
        loop {
            let mut pending = false;
            for (name, state) in inner.namespaces.iter().filter(|(name, _)| wanted(name)) {
                match state {
                    State::Pending => pending = true,
                    State::Loaded => {}
                    State::Failed(message) => {
                        return Err(CommandError::operation_failed(format!(
                            "{name} could not be loaded: {message}"
                        )));
                    }
                }
            }
            if !pending {
                return Ok(());
            }
            inner = self.changed.wait(inner).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bson::doc;

    use super::*;

    #[test]
    fn readers_wait_and_jump_the_queue() {
        let gate = Arc::new(LoadGate::new(["a.x".to_owned(), "a.y".to_owned(), "b.z".to_owned()]));
        gate.wait_for_command("listCollections", "a", &doc! {"listCollections": 1})
            .unwrap();
        let reader = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.wait_for_command("find", "b", &doc! {"find": "z"}))
        };
        // The reader's namespace is handed out first.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!reader.is_finished());
        assert_eq!(gate.next().as_deref(), Some("b.z"));
        gate.loaded("b.z");
        reader.join().unwrap().unwrap();
        assert_eq!(gate.next().as_deref(), Some("a.x"));
        gate.loaded("a.x");
        gate.failed("a.y", "chunk missing");
        let e = gate
            .wait_for_command("aggregate", "a", &doc! {"aggregate": 1, "pipeline": []})
            .unwrap_err();
        assert!(e.message.contains("a.y could not be loaded: chunk missing"), "{e:?}");
        assert_eq!(gate.progress(), (3, 3));
    }
}
