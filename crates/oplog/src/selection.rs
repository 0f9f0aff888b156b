//! Namespace-aware replay: apply the oplog only to the selected namespaces, under their new names.
//!
//! mongorestore refuses `--oplogReplay` together with `--nsInclude`, `--nsExclude`,
//! `--nsFrom`/`--nsTo`, `--db` or `--collection`, because an oplog entry names its namespace in
//! several places (`ns`, the collection named by a command, both ends of a rename, the ops nested
//! in `applyOps` and in transactions) and replaying it unchanged would write outside the selection.
//! A point-in-time restore of one collection needs exactly that combination, so [`Selection`]
//! rewrites every entry before the ordinary replay rules see it. Given a map from a source
//! namespace to its destination (`None`: not selected), each entry that reaches the
//! non-transaction path (top-level entries, every op nested in `applyOps`, every op of a committed
//! transaction) is routed:
//!
//! - `i`, `u`, `d`: skipped when `ns` is not selected, else `ns` becomes the destination;
//! - commands naming one collection (`create`, `drop`, `createIndexes`, `commitIndexBuild`,
//!   `dropIndexes` and its aliases, `collMod`, `convertToCapped`, `emptycapped`, `dbCheck`):
//!   skipped when `<db>.<collection>` is not selected, else `ns` becomes `<destination db>.$cmd`
//!   and the collection name the destination collection. A view's `viewOn` is renamed too when its
//!   source maps into the view's destination database;
//! - `dropDatabase`: becomes one `drop` per selected collection of that database known to exist at
//!   that point (restored from the base, or created, inserted into or renamed in by the replayed
//!   oplog, and not dropped since). Unselected collections of the destination database are left
//!   alone; MongoDB logs a `drop` for every collection before `dropDatabase` anyway;
//! - `renameCollection` from `A` to `B`: both selected → a rename between the destinations; only
//!   `A` selected → the collection leaves the selection, so its destination is dropped; only `B`
//!   selected → an error ([`OplogError::RenameIntoSelection`]): the documents of `A` were never
//!   restored, and pretending otherwise would produce a wrong `B`; neither → skipped;
//! - `applyOps` is kept: its nested ops are routed one by one.
//!
//! Skip rules, transactions and the index catalog then work as without a selection, on
//! destination names.

use std::{collections::BTreeSet, fmt, sync::Arc};

use bson::{Bson, Document};

use crate::{entry::OplogEntry, error::OplogError};

/// Commands whose first value is the one collection they act on.
const COLLECTION_COMMANDS: [&str; 12] = [
    "create",
    "drop",
    "createIndexes",
    "commitIndexBuild",
    "dropIndexes",
    "deleteIndexes",
    "dropIndex",
    "deleteIndex",
    "collMod",
    "convertToCapped",
    "emptycapped",
    "dbCheck",
];

/// The map from a source namespace to its destination; `None` means not selected.
pub type NamespaceMap = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The selected namespaces of a replay and their destinations (see the module documentation).
#[derive(Clone)]
pub struct Selection {
    map: Arc<NamespaceMap>,
    /// Selected source namespaces that exist at the current point of the replay.
    live: BTreeSet<String>,
}

impl fmt::Debug for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selection")
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// What becomes of one entry under a selection.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// The entry touches no selected namespace.
    Skip,
    /// Apply these entries (usually the rewritten entry itself) instead.
    Apply(Vec<OplogEntry>),
}

fn split_ns(ns: &str) -> (&str, &str) {
    ns.split_once('.').unwrap_or((ns, ""))
}

impl Selection {
    /// A selection over `map`, where `existing` are the source namespaces already restored (the
    /// collections a `dropDatabase` must drop if the oplog does not drop them first).
    pub fn new(
        map: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
        existing: impl IntoIterator<Item = String>,
    ) -> Self {
        let map: Arc<NamespaceMap> = Arc::new(map);
        let live = existing.into_iter().filter(|ns| map(ns).is_some()).collect();
        Self { map, live }
    }

    /// The destination of a source namespace, `None` when it is not selected.
    #[must_use]
    pub fn destination(&self, ns: &str) -> Option<String> {
        (self.map)(ns)
    }

    /// Routes one entry of the non-transaction path.
    ///
    /// # Errors
    /// [`OplogError::RenameIntoSelection`] for a rename from an unselected into a selected
    /// namespace.
    pub fn route(&mut self, mut entry: OplogEntry) -> Result<Routed, OplogError> {
        match entry.op.as_str() {
            "i" | "u" | "d" => {
                let Some(destination) = self.destination(&entry.ns) else {
                    return Ok(Routed::Skip);
                };
                self.live.insert(entry.ns.clone());
                entry.ns = destination;
                Ok(Routed::Apply(vec![entry]))
            }
            "c" => self.route_command(entry),
            _ => Ok(Routed::Apply(vec![entry])),
        }
    }

    fn route_command(&mut self, mut entry: OplogEntry) -> Result<Routed, OplogError> {
        let Some((name, first)) = entry.o.iter().next().map(|(k, v)| (k.clone(), v.clone())) else {
            return Ok(Routed::Apply(vec![entry]));
        };
        let db = entry.db().to_owned();
        match (name.as_str(), first) {
            ("dropDatabase", _) => {
                let prefix = format!("{db}.");
                let dropped: Vec<String> = self.live.iter().filter(|ns| ns.starts_with(&prefix)).cloned().collect();
                let mut drops = Vec::with_capacity(dropped.len());
                for ns in dropped {
                    self.live.remove(&ns);
                    if let Some(destination) = self.destination(&ns) {
                        drops.push(command_on(&entry, &destination, "drop", Document::new()));
                    }
                }
                Ok(if drops.is_empty() {
                    Routed::Skip
                } else {
                    Routed::Apply(drops)
                })
            }
            ("renameCollection", Bson::String(from)) => {
                let Ok(to) = entry.o.get_str("to").map(str::to_owned) else {
                    return Ok(Routed::Apply(vec![entry]));
                };
                match (self.destination(&from), self.destination(&to)) {
                    (Some(from_dest), Some(to_dest)) => {
                        self.live.remove(&from);
                        self.live.insert(to);
                        entry.ns = format!("{}.$cmd", split_ns(&from_dest).0);
                        entry.o.insert("renameCollection", from_dest);
                        entry.o.insert("to", to_dest);
                        Ok(Routed::Apply(vec![entry]))
                    }
                    (Some(from_dest), None) => {
                        self.live.remove(&from);
                        Ok(Routed::Apply(vec![command_on(
                            &entry,
                            &from_dest,
                            "drop",
                            Document::new(),
                        )]))
                    }
                    (None, Some(_)) => Err(OplogError::RenameIntoSelection {
                        from_db: split_ns(&from).0.to_owned(),
                        from,
                        to,
                        time: entry.ts.time,
                        increment: entry.ts.increment,
                    }),
                    (None, None) => Ok(Routed::Skip),
                }
            }
            (command, Bson::String(collection)) if COLLECTION_COMMANDS.contains(&command) => {
                let source = format!("{db}.{collection}");
                let Some(destination) = self.destination(&source) else {
                    return Ok(Routed::Skip);
                };
                match command {
                    "create" => {
                        self.live.insert(source);
                    }
                    "drop" => {
                        self.live.remove(&source);
                    }
                    _ => {}
                }
                let (dest_db, dest_coll) = split_ns(&destination);
                if command == "create"
                    && let Ok(view_on) = entry.o.get_str("viewOn")
                    && let Some(view_dest) = self.destination(&format!("{db}.{view_on}"))
                    && let (view_db, view_coll) = split_ns(&view_dest)
                    && view_db == dest_db
                {
                    entry.o.insert("viewOn", view_coll.to_owned());
                }
                entry.ns = format!("{dest_db}.$cmd");
                entry.o.insert(command, dest_coll.to_owned());
                Ok(Routed::Apply(vec![entry]))
            }
            _ => Ok(Routed::Apply(vec![entry])),
        }
    }
}

/// A command entry `{<name>: <collection of destination>, ...rest}` on the destination's database,
/// with the time fields of `like`.
fn command_on(like: &OplogEntry, destination: &str, name: &str, rest: Document) -> OplogEntry {
    let (db, coll) = split_ns(destination);
    let mut o = Document::new();
    o.insert(name, coll.to_owned());
    o.extend(rest);
    OplogEntry {
        ts: like.ts,
        t: like.t,
        v: like.v,
        op: "c".into(),
        ns: format!("{db}.$cmd"),
        o,
        ..OplogEntry::empty()
    }
}
