//! Logical mutations: the unit the durability layer logs and the replication layer turns into oplog entries.
//!
//! Every change to data or catalog goes through [`crate::engine::Engine::write`], which applies mutations one
//! by one (each checked, e.g. for unique keys) and collects the ones that took effect into a [`WriteBatch`].
//! When the write finishes, the batch is handed to the [`crate::engine::Durability`] hook before the engine
//! lock is released; if that fails the batch is rolled back, so a batch is applied whole or not at all.

use bson::{Bson, Document, RawDocumentBuf};

use super::namespace::Namespace;

/// One logical change.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Mutation {
    /// Creates a collection (or view, when `options` has `viewOn`).
    CreateCollection {
        /// Namespace to create.
        ns: Namespace,
        /// The collection UUID (16 bytes).
        uuid: [u8; 16],
        /// Creation options as given (capped, size, max, validator, viewOn, pipeline, ...).
        options: Document,
    },
    /// Drops a collection or view with all its indexes.
    DropCollection {
        /// Namespace to drop.
        ns: Namespace,
    },
    /// Drops every collection of a database.
    DropDatabase {
        /// Database name.
        db: String,
    },
    /// Renames a collection (the target must not exist when this is applied).
    RenameCollection {
        /// Source namespace.
        from: Namespace,
        /// Target namespace.
        to: Namespace,
    },
    /// Replaces the stored creation options (collMod of validator, validationLevel, ...).
    SetOptions {
        /// Namespace.
        ns: Namespace,
        /// The full new options document.
        options: Document,
    },
    /// Creates an index from its full spec (`{v, key, name, ...}`).
    CreateIndex {
        /// Namespace.
        ns: Namespace,
        /// Index spec.
        spec: Document,
    },
    /// Replaces an index spec without rebuilding it (collMod `expireAfterSeconds`, `hidden`).
    SetIndexSpec {
        /// Namespace.
        ns: Namespace,
        /// New spec; its `name` selects the index.
        spec: Document,
    },
    /// Drops an index by name.
    DropIndex {
        /// Namespace.
        ns: Namespace,
        /// Index name.
        name: String,
    },
    /// Inserts a document (which has an `_id`).
    Insert {
        /// Namespace.
        ns: Namespace,
        /// The document, stored byte for byte.
        doc: RawDocumentBuf,
    },
    /// Replaces the document with this `_id` in place, or inserts it if none exists.
    Upsert {
        /// Namespace.
        ns: Namespace,
        /// The document; its `_id` selects the document replaced.
        doc: RawDocumentBuf,
    },
    /// Deletes the document with this `_id`.
    Delete {
        /// Namespace.
        ns: Namespace,
        /// The `_id` of the document deleted.
        id: Bson,
    },
}

impl Mutation {
    /// The namespace or database this mutation touches, as `db` or `db.coll`.
    pub fn target(&self) -> String {
        match self {
            Mutation::DropDatabase { db } => db.clone(),
            Mutation::CreateCollection { ns, .. }
            | Mutation::DropCollection { ns }
            | Mutation::SetOptions { ns, .. }
            | Mutation::CreateIndex { ns, .. }
            | Mutation::SetIndexSpec { ns, .. }
            | Mutation::DropIndex { ns, .. }
            | Mutation::Insert { ns, .. }
            | Mutation::Upsert { ns, .. }
            | Mutation::Delete { ns, .. } => ns.to_string(),
            Mutation::RenameCollection { from, .. } => from.to_string(),
        }
    }
}

/// Mutations applied atomically, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// The mutations.
    pub mutations: Vec<Mutation>,
}

impl WriteBatch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty()
    }
}
