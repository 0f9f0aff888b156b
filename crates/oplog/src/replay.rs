//! The replay state machine: oplog entries in, `applyOps` commands out.
//!
//! [`Replayer::push`] implements mongorestore's `HandleOp` for one top-level entry, in order:
//! the skip rules (internal and most `config` namespaces, no-op and record-id ops, index-build
//! bookkeeping commands), the exclusive `--oplogLimit` stop, transaction buffering (commit
//! applies the buffered ops one by one, abort discards them), and finally the non-transaction
//! path: `ui` removal, folding index operations into the [`IndexCatalog`], flattening nested
//! `applyOps`, and re-encoding everything else as one `{applyOps: [entry]}` command. The caller
//! runs each returned command on `admin`, in order, and stops at the first failure.

use std::collections::HashMap;

use bson::{Bson, Document, RawDocument, Timestamp};

use crate::{
    catalog::IndexCatalog,
    entry::{OplogEntry, apply_ops_command, is_zero, ts_key},
    error::OplogError,
    selection::{Routed, Selection},
};

/// `config` collections whose oplog entries are replayed; every other `config.*` is skipped.
pub const KEPT_CONFIG_COLLECTIONS: [&str; 7] = [
    "chunks",
    "collections",
    "databases",
    "settings",
    "shards",
    "tags",
    "version",
];

/// Commands that replay knows (anything else is an error).
const KNOWN_COMMANDS: [&str; 17] = [
    "renameCollection",
    "dropDatabase",
    "applyOps",
    "dbCheck",
    "create",
    "convertToCapped",
    "emptycapped",
    "drop",
    "createIndexes",
    "deleteIndex",
    "deleteIndexes",
    "dropIndex",
    "dropIndexes",
    "collMod",
    "startIndexBuild",
    "abortIndexBuild",
    "commitIndexBuild",
];

/// Options of the replay (the relevant mongorestore flags).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ReplayOptions {
    /// `--oplogLimit`: replay only entries strictly before this timestamp.
    pub limit: Option<Timestamp>,
    /// `--preserveUUID`: keep `ui` in replayed entries.
    pub preserve_uuid: bool,
    /// `--bypassDocumentValidation`: the flag of every `applyOps` command.
    pub bypass_document_validation: bool,
}

impl ReplayOptions {
    /// Options with every field as given.
    #[must_use]
    pub fn new(limit: Option<Timestamp>, preserve_uuid: bool, bypass_document_validation: bool) -> Self {
        Self {
            limit,
            preserve_uuid,
            bypass_document_validation,
        }
    }
}

/// What the caller does after pushing one entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    /// Commands to run on `admin`, in order.
    pub commands: Vec<Document>,
    /// `true` when `--oplogLimit` was reached: ignore the rest of the oplog.
    pub stop: bool,
}

/// Why a top-level entry was skipped (for plans and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `ns` starts with `__mdb_internal`.
    InternalNamespace,
    /// A `config` collection outside [`KEPT_CONFIG_COLLECTIONS`].
    ConfigNamespace,
    /// `op` is `n`, `cd`, `ci`, `cu` or `km`.
    NoOp,
    /// `startIndexBuild`, `abortIndexBuild`, `setMultikeyMetadata` or `dropIdent`.
    IndexBookkeeping,
}

/// The skip rules 1–4 of mongorestore's `HandleOp`.
#[must_use]
pub fn skip_reason(entry: &OplogEntry) -> Option<SkipReason> {
    if entry.ns.starts_with("__mdb_internal") {
        return Some(SkipReason::InternalNamespace);
    }
    if let Some(rest) = entry.ns.strip_prefix("config.")
        && !KEPT_CONFIG_COLLECTIONS.contains(&rest)
    {
        return Some(SkipReason::ConfigNamespace);
    }
    if matches!(entry.op.as_str(), "n" | "cd" | "ci" | "cu" | "km") {
        return Some(SkipReason::NoOp);
    }
    if entry.op == "c"
        && matches!(
            entry.command_name(),
            Some("startIndexBuild" | "abortIndexBuild" | "setMultikeyMetadata" | "dropIdent")
        )
    {
        return Some(SkipReason::IndexBookkeeping);
    }
    None
}

/// Whether an entry belongs to a transaction (`common/txn/meta.go`): not a vectored insert,
/// `lsid` and `txnNumber` present, `op == "c"` and `o` holds `applyOps`, `commitTransaction` or
/// `abortTransaction`.
#[must_use]
pub fn is_transaction_entry(entry: &OplogEntry) -> bool {
    entry.multi_op_type != Some(1)
        && entry.lsid.is_some()
        && entry.txn_number.is_some()
        && entry.op == "c"
        && ["applyOps", "commitTransaction", "abortTransaction"]
            .iter()
            .any(|k| entry.o.contains_key(*k))
}

type TxnKey = (Vec<u8>, i64);

/// Oplog replay state: open transactions, the index catalog and the applied count.
#[derive(Debug, Default)]
pub struct Replayer {
    options: ReplayOptions,
    catalog: IndexCatalog,
    transactions: HashMap<TxnKey, Vec<OplogEntry>>,
    selection: Option<Selection>,
    applied: u64,
    skipped: u64,
    stopped: bool,
}

impl Replayer {
    /// A replayer that folds index operations into `catalog` (usually filled from metadata).
    #[must_use]
    pub fn new(options: ReplayOptions, catalog: IndexCatalog) -> Self {
        Self {
            options,
            catalog,
            ..Self::default()
        }
    }

    /// Applies the oplog only to the namespaces of `selection`, under their destination names
    /// (see [`crate::selection`]).
    #[must_use]
    pub fn with_selection(mut self, selection: Selection) -> Self {
        self.selection = Some(selection);
        self
    }

    /// Number of entries (top-level, nested or inside transactions) skipped because they touch no
    /// selected namespace.
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Number of entries applied or folded so far ("applied N oplog entries").
    #[must_use]
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Whether `--oplogLimit` has been reached.
    #[must_use]
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Number of transactions still open (they are discarded at the end).
    #[must_use]
    pub fn open_transactions(&self) -> usize {
        self.transactions.len()
    }

    /// The index catalog as edited by the replayed entries.
    #[must_use]
    pub fn catalog(&self) -> &IndexCatalog {
        &self.catalog
    }

    /// Ends the replay, returning the index catalog for the index phase.
    #[must_use]
    pub fn into_catalog(self) -> IndexCatalog {
        self.catalog
    }

    /// Handles one top-level oplog entry given as raw bytes.
    ///
    /// # Errors
    /// See [`OplogError`]; the caller must stop the replay.
    pub fn push_raw(&mut self, raw: &RawDocument) -> Result<Step, OplogError> {
        let entry = OplogEntry::from_raw(raw)?;
        self.push(entry)
    }

    /// Handles one top-level oplog entry.
    ///
    /// # Errors
    /// See [`OplogError`]; the caller must stop the replay.
    pub fn push(&mut self, entry: OplogEntry) -> Result<Step, OplogError> {
        let mut step = Step::default();
        if self.stopped {
            step.stop = true;
            return Ok(step);
        }
        self.handle_op(entry, false, &mut step)?;
        step.stop = self.stopped;
        Ok(step)
    }

    fn handle_op(&mut self, entry: OplogEntry, nested: bool, step: &mut Step) -> Result<(), OplogError> {
        if skip_reason(&entry).is_some() {
            return Ok(());
        }
        if let Some(limit) = self.options.limit
            && !(nested && is_zero(entry.ts))
            && ts_key(entry.ts) >= ts_key(limit)
        {
            if nested {
                return Err(OplogError::NestedLimit {
                    time: entry.ts.time,
                    increment: entry.ts.increment,
                });
            }
            self.stopped = true;
            return Ok(());
        }
        if is_transaction_entry(&entry) {
            return self.handle_transaction(entry, step);
        }
        self.handle_non_txn(entry, step)
    }

    fn handle_transaction(&mut self, entry: OplogEntry, step: &mut Step) -> Result<(), OplogError> {
        let lsid = entry
            .lsid
            .as_ref()
            .map(bson::to_vec)
            .transpose()
            .map_err(|e| OplogError::Transaction(e.to_string()))?;
        let key = (lsid.unwrap_or_default(), entry.txn_number.unwrap_or_default());
        if entry.o.contains_key("abortTransaction") {
            self.transactions.remove(&key);
            return Ok(());
        }
        if entry.o.contains_key("commitTransaction") {
            let ops = self.transactions.remove(&key).unwrap_or_default();
            return self.apply_all(ops, step);
        }
        let ops = match entry.o.get("applyOps") {
            Some(Bson::Array(ops)) => ops,
            _ => {
                return Err(OplogError::Transaction(format!(
                    "applyOps in {} is not an array",
                    entry.ns
                )));
            }
        };
        let mut inner = Vec::with_capacity(ops.len());
        for op in ops {
            let Bson::Document(op) = op else {
                return Err(OplogError::Transaction("an applyOps element is not a document".into()));
            };
            inner.push(inner_txn_op(op, &entry)?);
        }
        self.transactions.entry(key.clone()).or_default().extend(inner);
        let partial = entry.o.get_bool("partialTxn").unwrap_or(false);
        let prepare = entry.o.get_bool("prepare").unwrap_or(false);
        if !partial && !prepare {
            let ops = self.transactions.remove(&key).unwrap_or_default();
            self.apply_all(ops, step)?;
        }
        Ok(())
    }

    fn apply_all(&mut self, ops: Vec<OplogEntry>, step: &mut Step) -> Result<(), OplogError> {
        for op in ops {
            self.handle_non_txn(op, step)?;
        }
        Ok(())
    }

    fn handle_non_txn(&mut self, entry: OplogEntry, step: &mut Step) -> Result<(), OplogError> {
        let Some(selection) = &mut self.selection else {
            self.applied += 1;
            return self.apply_entry(entry, step);
        };
        match selection.route(entry)? {
            Routed::Skip => {
                self.skipped += 1;
                Ok(())
            }
            Routed::Apply(entries) => {
                self.applied += 1;
                entries.into_iter().try_for_each(|e| self.apply_entry(e, step))
            }
        }
    }

    /// The non-transaction path for an entry already routed by the selection.
    fn apply_entry(&mut self, mut entry: OplogEntry, step: &mut Step) -> Result<(), OplogError> {
        if !self.options.preserve_uuid {
            entry.ui = None;
        }
        if entry.op != "c" {
            step.commands
                .push(apply_ops_command(&entry, self.options.bypass_document_validation));
            return Ok(());
        }
        let Some(name) = entry.command_name().map(str::to_owned) else {
            return Err(OplogError::EmptyCommand { ns: entry.ns.clone() });
        };
        if name == "create" {
            entry.o.remove("recordIdsReplicated");
        }
        if name == "upgradeDowngradeViewlessTimeseries" {
            return Err(OplogError::TimeseriesConversion { ns: entry.ns.clone() });
        }
        if !KNOWN_COMMANDS.contains(&name.as_str()) {
            let entry_json = Bson::Document(entry.to_document()).into_relaxed_extjson().to_string();
            return Err(OplogError::UnknownCommand {
                name,
                entry: entry_json,
            });
        }
        let db = entry.db().to_owned();
        let target = |o: &Document, field: &str| o.get_str(field).ok().map(|c| format!("{db}.{c}"));
        match name.as_str() {
            "createIndexes" => {
                if let Some(ns) = target(&entry.o, "createIndexes") {
                    let mut spec = entry.o.clone();
                    spec.remove("createIndexes");
                    self.catalog.add_index(&ns, spec);
                }
            }
            "commitIndexBuild" => {
                if let Some(ns) = target(&entry.o, "commitIndexBuild")
                    && let Ok(indexes) = entry.o.get_array("indexes")
                {
                    for spec in indexes.iter().filter_map(Bson::as_document) {
                        self.catalog.add_index(&ns, spec.clone());
                    }
                }
            }
            "deleteIndex" | "deleteIndexes" | "dropIndex" | "dropIndexes" => {
                if let Some(ns) = target(&entry.o, &name) {
                    match entry.o.get("index") {
                        Some(Bson::String(s)) if s == "*" => self.catalog.drop_all_indexes(&ns),
                        Some(Bson::String(s)) => self.catalog.drop_index_by_name(&ns, s),
                        Some(Bson::Document(key)) => self.catalog.drop_index_by_key(&ns, key)?,
                        _ => {}
                    }
                }
            }
            "drop" => {
                if let Some(ns) = target(&entry.o, "drop") {
                    self.catalog.drop_collection(&ns);
                }
                step.commands
                    .push(apply_ops_command(&entry, self.options.bypass_document_validation));
            }
            "dropDatabase" => {
                self.catalog.drop_database(&db);
                step.commands
                    .push(apply_ops_command(&entry, self.options.bypass_document_validation));
            }
            "collMod" => {
                entry.o.remove("noPadding");
                entry.o.remove("usePowerOf2Sizes");
                if let Some(index) = entry.o.remove("index") {
                    let Bson::Document(index) = index else {
                        return Err(OplogError::Index(format!(
                            "collMod on {}: 'index' is not a document",
                            entry.ns
                        )));
                    };
                    if let Some(ns) = target(&entry.o, "collMod") {
                        self.catalog.coll_mod_index(&ns, &index)?;
                    }
                }
                if entry.o.len() > 1 {
                    step.commands
                        .push(apply_ops_command(&entry, self.options.bypass_document_validation));
                }
            }
            "renameCollection" => {
                // Indexes still to be built follow the collection (a point-in-time replay sees
                // renames; mongodump refuses them in its window).
                if let (Ok(from), Ok(to)) = (entry.o.get_str("renameCollection"), entry.o.get_str("to")) {
                    self.catalog.rename_collection(from, to);
                }
                step.commands
                    .push(apply_ops_command(&entry, self.options.bypass_document_validation));
            }
            "create" => {
                if let Some(ns) = target(&entry.o, "create") {
                    self.catalog.record_options(&ns, &entry.o);
                }
                step.commands
                    .push(apply_ops_command(&entry, self.options.bypass_document_validation));
            }
            "applyOps" => {
                let ops = match entry.o.get("applyOps") {
                    Some(Bson::Array(ops)) => ops.clone(),
                    _ => return Err(OplogError::Decode(format!("applyOps in {} is not an array", entry.ns))),
                };
                for op in ops {
                    let Bson::Document(op) = op else {
                        return Err(OplogError::Decode("an applyOps element is not a document".into()));
                    };
                    let nested = OplogEntry::from_document(&op)?;
                    self.handle_op(nested, true, step)?;
                }
            }
            _ => step
                .commands
                .push(apply_ops_command(&entry, self.options.bypass_document_validation)),
        }
        Ok(())
    }
}

/// A buffered transaction op: only `op`, `ns`, `o`, `o2`, `ui`, with `ts`/`t` of the carrying
/// entry and `v` 0.
fn inner_txn_op(op: &Document, outer: &OplogEntry) -> Result<OplogEntry, OplogError> {
    let bad = |what: &str| OplogError::Transaction(format!("{what} in a transaction op on {}", outer.ns));
    let o = match op.get("o") {
        Some(Bson::Document(d)) => d.clone(),
        None => Document::new(),
        Some(_) => return Err(bad("non-document 'o'")),
    };
    let ui = match op.get("ui") {
        Some(Bson::Binary(b)) => Some(b.clone()),
        None => None,
        Some(_) => return Err(bad("non-binary 'ui'")),
    };
    Ok(OplogEntry {
        ts: outer.ts,
        t: outer.t,
        v: 0,
        op: op.get_str("op").unwrap_or_default().to_owned(),
        ns: op.get_str("ns").unwrap_or_default().to_owned(),
        o,
        o2: op.get_document("o2").ok().cloned(),
        ui,
        ..OplogEntry::empty()
    })
}
