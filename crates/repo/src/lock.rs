//! Repository locks.
//!
//! Backups, restores, checks and copies take a *shared* lock; forget and prune take an
//! *exclusive* one. A lock is an object `locks/<random id>` holding the holder's host, pid, mode
//! and last refresh time. Acquiring writes the lock, then lists all locks and backs off (deleting
//! its own) if a conflicting live lock exists, so two racing writers cannot both win. Long
//! operations call [`Lock::refresh`]; a lock not refreshed for [`STALE_AFTER_SECS`], or held by a
//! process that no longer exists on this same host, is stale and ignored (and removed by
//! [`remove_stale_locks`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Storage;
use crate::crypto::Id;
use crate::error::{RepoError, Result};
use crate::util::{hostname, now_unix, rfc3339};

/// A lock older than this (seconds since last refresh) is stale.
pub const STALE_AFTER_SECS: i64 = 30 * 60;
/// Holders refresh at least this often.
pub const REFRESH_EVERY_SECS: i64 = 5 * 60;

/// Contents of a lock object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Exclusive or shared.
    pub exclusive: bool,
    /// Last refresh, seconds since the epoch.
    pub time: i64,
}

impl LockInfo {
    /// Whether the lock can be ignored.
    pub fn is_stale(&self, now: i64) -> bool {
        if now.saturating_sub(self.time) > STALE_AFTER_SECS {
            return true;
        }
        // Same host: a holder whose process is gone is stale (Linux /proc check).
        self.host == hostname()
            && std::path::Path::new("/proc/self").exists()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// A held lock. Release it with [`Lock::release`]; dropping it leaves the object behind (like a crash),
/// which becomes stale.
#[derive(Debug)]
pub struct Lock {
    storage: Storage,
    key: String,
    info: LockInfo,
}

async fn read_lock(storage: &Storage, key: &str) -> Result<Option<LockInfo>> {
    match storage.get(key).await {
        Ok(raw) => Ok(serde_json::from_slice(&raw).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn conflicting(storage: &Storage, own: &str, exclusive: bool) -> Result<Option<(String, LockInfo)>> {
    let now = now_unix();
    for meta in storage.list("locks/").await? {
        if meta.key == own {
            continue;
        }
        let Some(info) = read_lock(storage, &meta.key).await? else {
            continue;
        };
        if info.is_stale(now) {
            continue;
        }
        if exclusive || info.exclusive {
            return Ok(Some((meta.key, info)));
        }
    }
    Ok(None)
}

impl Lock {
    /// Takes a lock, failing with [`RepoError::Locked`] when a live conflicting lock exists.
    pub async fn acquire(storage: &Storage, exclusive: bool) -> Result<Lock> {
        let locked = |key: String, info: LockInfo| RepoError::Locked {
            mode: if info.exclusive { "exclusively" } else { "shared" },
            holder: format!("{} (pid {})", info.host, info.pid),
            time: rfc3339(info.time),
            key,
        };
        if let Some((key, info)) = conflicting(storage, "", exclusive).await? {
            return Err(locked(key, info));
        }
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            exclusive,
            time: now_unix(),
        };
        let key = format!("locks/{}", Id::random());
        let lock = Lock {
            storage: storage.clone(),
            key,
            info,
        };
        lock.write().await?;
        if let Some((key, info)) = conflicting(storage, &lock.key, exclusive).await? {
            storage.delete(&lock.key).await?;
            return Err(locked(key, info));
        }
        Ok(lock)
    }

    async fn write(&self) -> Result<()> {
        let json = serde_json::to_vec(&self.info).map_err(|e| RepoError::Usage(e.to_string()))?;
        self.storage.put(&self.key, Bytes::from(json)).await?;
        Ok(())
    }

    /// Rewrites the lock with the current time if the last refresh is older than [`REFRESH_EVERY_SECS`].
    pub async fn refresh(&mut self) -> Result<()> {
        let now = now_unix();
        if now.saturating_sub(self.info.time) >= REFRESH_EVERY_SECS {
            self.info.time = now;
            self.write().await?;
        }
        Ok(())
    }

    /// Runs `work` while the lock is refreshed in the background (checked every minute, written
    /// every [`REFRESH_EVERY_SECS`]), then releases the lock. For long reads (restores, exports,
    /// checks, copies) that have no natural place to call [`Lock::refresh`]. Returns the work's
    /// output and the release's result. A failed refresh is retried at the next check; if storage
    /// stays unreachable, the work fails on its own reads.
    pub async fn hold_during<T>(mut self, work: impl Future<Output = T>) -> (T, Result<()>) {
        let mut work = std::pin::pin!(work);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let out = loop {
            tokio::select! {
                out = &mut work => break out,
                _ = tick.tick() => {
                    // Retried at the next tick; see above.
                    let _ = self.refresh().await;
                }
            }
        };
        (out, self.release().await)
    }

    /// The lock object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Deletes the lock object.
    pub async fn release(self) -> Result<()> {
        self.storage.delete(&self.key).await?;
        Ok(())
    }
}

/// Lists all locks with their contents.
pub async fn list_locks(storage: &Storage) -> Result<Vec<(String, LockInfo)>> {
    let mut out = Vec::new();
    for meta in storage.list("locks/").await? {
        if let Some(info) = read_lock(storage, &meta.key).await? {
            out.push((meta.key, info));
        }
    }
    Ok(out)
}

/// Deletes stale locks (or all when `all`), returning the keys removed.
pub async fn remove_stale_locks(storage: &Storage, all: bool) -> Result<Vec<String>> {
    let now = now_unix();
    let mut removed = Vec::new();
    for meta in storage.list("locks/").await? {
        let stale = match read_lock(storage, &meta.key).await? {
            Some(info) => info.is_stale(now),
            None => true,
        };
        if all || stale {
            storage.delete(&meta.key).await?;
            removed.push(meta.key);
        }
    }
    Ok(removed)
}
