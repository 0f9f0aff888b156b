//! Progress reporting through a trait, so the library never prints.
//!
//! The CLI implements [`Progress`] with progress bars (or JSON, or nothing); tests use
//! [`NoProgress`]. Calls come from several tasks at once, hence `Send + Sync`.

/// Receives progress events of a dump or restore.
pub trait Progress: Send + Sync {
    /// A namespace starts; `total` is its expected document count when known.
    fn start(&self, namespace: &str, total: Option<u64>) {
        let _ = (namespace, total);
    }
    /// `documents` more documents of `namespace` were processed.
    fn advance(&self, namespace: &str, documents: u64) {
        let _ = (namespace, documents);
    }
    /// A namespace is done.
    fn finish(&self, namespace: &str) {
        let _ = namespace;
    }
    /// The whole job is expected to process about `documents` documents (for a total and an ETA).
    fn expect(&self, documents: u64) {
        let _ = documents;
    }
    /// A log line for the user (what was skipped and why, phases, warnings).
    fn log(&self, message: &str) {
        let _ = message;
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
