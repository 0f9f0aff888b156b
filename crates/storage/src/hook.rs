//! A pass-through opendal service with hooks on the calls that reach the store.
//!
//! opendal layers must forward a dozen operations and wrap the readers, writers, listers and deleters they
//! return. Two layers of this crate need the same forwarding with a little behaviour added: fault injection
//! (fail, stall or corrupt some calls) and the marking of transient errors before the retry layer hides
//! which errors were transient. [`HookService`] does the forwarding once and calls a [`Hook`] before each
//! data-plane call (`stat`, reading, each written chunk and the commit of a write, each listing step, each
//! deletion), on each error, and on each buffer of data read.

use std::future::Future;

use opendal::raw::{
    OpCompose, OpCopy, OpCreateDir, OpDelete, OpList, OpPresign, OpRead, OpRename, OpRestore, OpStat, OpWrite,
    RpCreateDir, RpPresign, RpRead, RpRename, RpRestore, RpStat, Service, ServiceInfo, Servicer, oio,
};
use opendal::{Buffer, BytesRange, Capability, Error, Metadata, OperationContext, Result};

/// Behaviour added around the calls of a [`HookService`].
pub(crate) trait Hook: Clone + Send + Sync + std::fmt::Debug + Unpin + 'static {
    /// Runs before a call reaches the store; an error replaces the call.
    fn before(&self, what: &'static str) -> impl Future<Output = Result<()>> + Send {
        let _ = what;
        async { Ok(()) }
    }

    /// Sees (and may alter) each buffer of data read.
    fn after_read(&self, buf: Buffer) -> Buffer {
        buf
    }

    /// Sees (and may alter) each error.
    fn on_error(&self, err: Error) -> Error {
        err
    }
}

/// The service below, with a hook around its calls.
#[derive(Debug)]
pub(crate) struct HookService<H> {
    inner: Servicer,
    hook: H,
}

impl<H: Hook> HookService<H> {
    pub(crate) fn new(inner: Servicer, hook: H) -> HookService<H> {
        HookService { inner, hook }
    }

    fn wrap<T>(&self, result: Result<T>) -> Result<Hooked<T, H>> {
        match result {
            Ok(inner) => Ok(Hooked {
                inner,
                hook: self.hook.clone(),
            }),
            Err(e) => Err(self.hook.on_error(e)),
        }
    }
}

impl<H: Hook> Service for HookService<H> {
    type Reader = Hooked<oio::Reader, H>;
    type Writer = Hooked<oio::Writer, H>;
    type Lister = Hooked<oio::Lister, H>;
    type Deleter = Hooked<oio::Deleter, H>;
    type Copier = oio::Copier;
    type Composer = oio::Composer;

    fn info(&self) -> ServiceInfo {
        self.inner.info()
    }

    fn capability(&self) -> Capability {
        self.inner.capability()
    }

    async fn create_dir(&self, ctx: &OperationContext, path: &str, args: OpCreateDir) -> Result<RpCreateDir> {
        self.inner
            .create_dir(ctx, path, args)
            .await
            .map_err(|e| self.hook.on_error(e))
    }

    async fn stat(&self, ctx: &OperationContext, path: &str, args: OpStat) -> Result<RpStat> {
        self.hook.before("stat").await.map_err(|e| self.hook.on_error(e))?;
        self.inner
            .stat(ctx, path, args)
            .await
            .map_err(|e| self.hook.on_error(e))
    }

    fn read(&self, ctx: &OperationContext, path: &str, args: OpRead) -> Result<Self::Reader> {
        self.wrap(self.inner.read(ctx, path, args))
    }

    fn write(&self, ctx: &OperationContext, path: &str, args: OpWrite) -> Result<Self::Writer> {
        self.wrap(self.inner.write(ctx, path, args))
    }

    fn delete(&self, ctx: &OperationContext) -> Result<Self::Deleter> {
        self.wrap(self.inner.delete(ctx))
    }

    fn list(&self, ctx: &OperationContext, path: &str, args: OpList) -> Result<Self::Lister> {
        self.wrap(self.inner.list(ctx, path, args))
    }

    fn copy(&self, ctx: &OperationContext, from: &str, to: &str, args: OpCopy) -> Result<Self::Copier> {
        self.inner.copy(ctx, from, to, args).map_err(|e| self.hook.on_error(e))
    }

    fn compose(&self, ctx: &OperationContext, to: &str, args: OpCompose) -> Result<Self::Composer> {
        self.inner.compose(ctx, to, args).map_err(|e| self.hook.on_error(e))
    }

    async fn rename(&self, ctx: &OperationContext, from: &str, to: &str, args: OpRename) -> Result<RpRename> {
        self.inner
            .rename(ctx, from, to, args)
            .await
            .map_err(|e| self.hook.on_error(e))
    }

    async fn restore(&self, ctx: &OperationContext, path: &str, args: OpRestore) -> Result<RpRestore> {
        self.inner
            .restore(ctx, path, args)
            .await
            .map_err(|e| self.hook.on_error(e))
    }

    async fn presign(&self, ctx: &OperationContext, path: &str, args: OpPresign) -> Result<RpPresign> {
        self.inner
            .presign(ctx, path, args)
            .await
            .map_err(|e| self.hook.on_error(e))
    }
}

/// A reader, writer, lister, deleter or read stream with a hook around its calls.
pub(crate) struct Hooked<T, H> {
    inner: T,
    hook: H,
}

impl<T, H: Hook> Hooked<T, H> {
    async fn before(&self, what: &'static str) -> Result<()> {
        self.hook.before(what).await.map_err(|e| self.hook.on_error(e))
    }
}

impl<T: oio::Read, H: Hook> oio::Read for Hooked<T, H> {
    async fn open(&self, range: BytesRange) -> Result<(RpRead, Box<dyn oio::ReadStreamDyn>)> {
        self.before("read").await?;
        let (rp, stream) = self.inner.open(range).await.map_err(|e| self.hook.on_error(e))?;
        Ok((
            rp,
            Box::new(Hooked {
                inner: stream,
                hook: self.hook.clone(),
            }),
        ))
    }

    async fn read(&self, range: BytesRange) -> Result<(RpRead, Buffer)> {
        self.before("read").await?;
        let (rp, buf) = self.inner.read(range).await.map_err(|e| self.hook.on_error(e))?;
        Ok((rp, self.hook.after_read(buf)))
    }
}

impl<H: Hook> oio::ReadStream for Hooked<Box<dyn oio::ReadStreamDyn>, H> {
    async fn read(&mut self) -> Result<Buffer> {
        let buf = self.inner.read().await.map_err(|e| self.hook.on_error(e))?;
        Ok(self.hook.after_read(buf))
    }
}

impl<T: oio::Write, H: Hook> oio::Write for Hooked<T, H> {
    async fn write(&mut self, bs: Buffer) -> Result<()> {
        self.before("write").await?;
        self.inner.write(bs).await.map_err(|e| self.hook.on_error(e))
    }

    async fn close(&mut self) -> Result<Metadata> {
        self.before("write commit").await?;
        self.inner.close().await.map_err(|e| self.hook.on_error(e))
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await.map_err(|e| self.hook.on_error(e))
    }
}

impl<T: oio::List, H: Hook> oio::List for Hooked<T, H> {
    async fn next(&mut self) -> Result<Option<oio::Entry>> {
        self.before("list").await?;
        self.inner.next().await.map_err(|e| self.hook.on_error(e))
    }
}

impl<T: oio::Delete, H: Hook> oio::Delete for Hooked<T, H> {
    async fn delete(&mut self, path: &str, args: OpDelete) -> Result<()> {
        self.before("delete").await?;
        self.inner.delete(path, args).await.map_err(|e| self.hook.on_error(e))
    }

    async fn close(&mut self) -> Result<()> {
        self.inner.close().await.map_err(|e| self.hook.on_error(e))
    }
}

/// Tags temporary errors so they can still be recognised after the retry layer above has marked every
/// error it returns as "persistent", and stops the retrying of local I/O errors that cannot go away.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransientMarker;

/// Context key of the tag added by [`TransientMarker`].
const TRANSIENT_TAG: &str = "tidemark_transient";

/// Whether `err` comes from a local I/O error that retrying cannot fix. opendal treats every I/O error it
/// does not classify as temporary; a directory where a file is expected, a full or read-only disk are not.
fn is_permanent_io_error(err: &Error) -> bool {
    use std::io::ErrorKind as Io;
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                Io::IsADirectory
                    | Io::NotADirectory
                    | Io::DirectoryNotEmpty
                    | Io::StorageFull
                    | Io::QuotaExceeded
                    | Io::ReadOnlyFilesystem
                    | Io::FileTooLarge
                    | Io::InvalidFilename
                    | Io::InvalidInput
                    | Io::InvalidData
                    | Io::NotSeekable
                    | Io::CrossesDevices
                    | Io::TooManyLinks
            );
        }
        source = e.source();
    }
    false
}

impl Hook for TransientMarker {
    fn on_error(&self, err: Error) -> Error {
        if err.is_temporary() && is_permanent_io_error(&err) {
            return err.set_permanent();
        }
        if err.is_temporary() || err.kind() == opendal::ErrorKind::RateLimited {
            err.with_context(TRANSIENT_TAG, "true")
        } else {
            err
        }
    }
}

impl opendal::raw::Layer for TransientMarker {
    fn apply_service(&self, inner: Servicer) -> Servicer {
        std::sync::Arc::new(HookService::new(inner, *self))
    }
}

/// Whether `err` was temporary when it reached the retry layer (or is temporary now).
pub(crate) fn was_transient(err: &Error) -> bool {
    err.is_temporary() || err.to_string().contains(&format!("{TRANSIENT_TAG}: true"))
}
