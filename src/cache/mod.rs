//! The blob-descriptor cache: digest → size (and media type), globally and per
//! repository, so a HEAD or a manifest's reference check needs no storage round
//! trip. The cache is an accelerator, never a source of truth: a cache that
//! errors or times out is treated as a miss, logged once, and counted.
//!
//! `storage.cache.blobdescriptor: inmemory` suits one replica; `redis` is
//! shared by a cluster, so a delete on one replica is seen by all.
//!
//! [`manifests`] is the other cache: manifest bytes, repository links and
//! tags (`storage.cache.manifests`), with the same rules.

pub mod inmemory;
pub mod manifests;
mod manifests_redis;
pub mod redis;

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use async_trait::async_trait;

use crate::registry::digest::Digest;

/// What the cache remembers of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub size: u64,
    pub media_type: String,
}

/// What the cache knows of a blob as seen from one repository: whether the
/// repository links it, and the global descriptor (a miss in the repository
/// may still spare the storage stat of the data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scoped {
    pub linked: bool,
    pub descriptor: Option<Descriptor>,
}

impl Scoped {
    /// The descriptor, if the repository links the blob.
    pub fn hit(self) -> Option<Descriptor> {
        self.descriptor.filter(|_| self.linked)
    }
}

/// A backend; errors are strings because callers only log and count them.
#[async_trait]
pub trait CacheBackend: Send + Sync {
    /// `repo` None: the global blob store.
    async fn get(&self, repo: Option<&str>, d: &Digest) -> Result<Option<Descriptor>, String>;
    /// The repository's link and the global descriptor together (Redis: one
    /// round trip).
    async fn get_scoped(&self, repo: &str, d: &Digest) -> Result<Scoped, String> {
        if let Some(desc) = self.get(Some(repo), d).await? {
            return Ok(Scoped {
                linked: true,
                descriptor: Some(desc),
            });
        }
        Ok(Scoped {
            linked: false,
            descriptor: self.get(None, d).await?,
        })
    }
    /// Remember `d`; with a `repo`, both the repository's link and the global
    /// descriptor (one call, as distribution's Redis cache does).
    async fn set(&self, repo: Option<&str>, d: &Digest, desc: &Descriptor) -> Result<(), String>;
    async fn clear(&self, repo: Option<&str>, d: &Digest) -> Result<(), String>;
    /// Forget everything this process holds (a garbage-collection sweep
    /// starts or ends). A shared backend keeps its entries: the collector
    /// clears the ones for the blobs it deletes.
    async fn flush(&self) -> Result<(), String> {
        Ok(())
    }
    fn name(&self) -> &'static str;
    /// Entries answer for a bounded time only (a replica's own short-lived
    /// memory): a fill that raced a delete is wrong for that time at most.
    fn expires(&self) -> bool {
        false
    }
}

/// Counters a metrics endpoint can read.
#[derive(Default, Debug)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
}

/// The cache as the registry uses it: failures become misses.
#[derive(Clone)]
pub struct BlobDescriptorCache {
    backend: Arc<dyn CacheBackend>,
    pub stats: Arc<CacheStats>,
    /// Log the first failure after a healthy spell, not every one.
    failing: Arc<AtomicBool>,
    /// A garbage-collection sweep is running: neither answer nor remember.
    bypass: Arc<AtomicBool>,
}

impl BlobDescriptorCache {
    /// See [`CacheBackend::expires`].
    pub fn expires(&self) -> bool {
        self.backend.expires()
    }

    pub fn new(backend: Arc<dyn CacheBackend>) -> Self {
        BlobDescriptorCache {
            backend,
            stats: Arc::default(),
            failing: Arc::default(),
            bypass: Arc::default(),
        }
    }

    fn failed(&self, op: &str, e: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(backend = self.backend.name(), op, error = %e, "blob-descriptor cache unavailable; serving from storage");
        }
    }

    fn recovered(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                backend = self.backend.name(),
                "blob-descriptor cache is back"
            );
        }
    }

    pub async fn get(&self, repo: Option<&str>, d: &Digest) -> Option<Descriptor> {
        if self.bypass.load(Ordering::SeqCst) {
            return None;
        }
        match self.backend.get(repo, d).await {
            Ok(Some(desc)) => {
                self.recovered();
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Some(desc)
            }
            Ok(None) => {
                self.recovered();
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                self.failed("get", &e);
                None
            }
        }
    }

    /// [`CacheBackend::get_scoped`]; counted as a hit when the repository
    /// links the blob.
    pub async fn get_scoped(&self, repo: &str, d: &Digest) -> Scoped {
        if self.bypass.load(Ordering::SeqCst) {
            return Scoped::default();
        }
        match self.backend.get_scoped(repo, d).await {
            Ok(s) => {
                self.recovered();
                let counter = if s.linked && s.descriptor.is_some() {
                    &self.stats.hits
                } else {
                    &self.stats.misses
                };
                counter.fetch_add(1, Ordering::Relaxed);
                s
            }
            Err(e) => {
                self.failed("get", &e);
                Scoped::default()
            }
        }
    }

    pub async fn set(&self, repo: Option<&str>, d: &Digest, desc: &Descriptor) {
        if self.bypass.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.backend.set(repo, d, desc).await {
            self.failed("set", &e);
        }
    }

    /// Forget a blob in `repo` (or globally). A failed clear is logged loudly:
    /// a stale entry could answer for a blob that is gone. Returns whether
    /// it succeeded (the garbage collector stops or fails on `false`).
    pub async fn clear(&self, repo: Option<&str>, d: &Digest) -> bool {
        match self.backend.clear(repo, d).await {
            Ok(()) => true,
            Err(e) => {
                self.failed("clear", &e);
                tracing::error!(digest = %d, repo = ?repo, error = %e, "could not invalidate a cache entry");
                false
            }
        }
    }

    /// Bypass the cache while a garbage-collection sweep runs, flushing what
    /// this process holds on both edges: an entry filled just before the
    /// sweep (or during it, by a request already past the bypass check) must
    /// not answer for a blob the sweep deleted.
    pub async fn set_bypass(&self, on: bool) {
        // Bypass before flushing when a sweep starts, flush before answering
        // again when it ends: no window where a stale entry can answer.
        if on {
            self.bypass.store(true, Ordering::SeqCst);
        }
        if let Err(e) = self.backend.flush().await {
            self.failed("flush", &e);
        }
        if !on {
            self.bypass.store(false, Ordering::SeqCst);
        }
    }
}
