//! The registry's own rules — names, digests, uploads, manifests, tags,
//! referrers — with no HTTP and no storage details. Handlers in `api` call these;
//! these call a [`StorageDriver`](crate::storage::StorageDriver) through the
//! paths in [`storage::layout`](crate::storage::layout).

pub mod blobs;
pub mod catalog;
mod direct;
/// Digests are a leaf of their own (storage paths use them too).
pub use crate::digest;
pub mod error;
pub mod gc;
pub mod index;
pub mod manifest;
pub mod manifests;
pub mod names;
pub mod purge;
pub mod referrers;
pub mod upload;
pub mod upload_state;

use bytes::Bytes;

use crate::cache::{manifests::ManifestCache, BlobDescriptorCache};
use crate::storage::{Driver, StorageError};
use digest::Digest;
use error::{Code, Error, Result};

/// Shared, cheap to clone: everything a request needs to apply the rules.
#[derive(Clone)]
pub struct Registry {
    driver: Driver,
    secret: std::sync::Arc<[u8]>,
    delete_enabled: bool,
    read_only: bool,
    cache: Option<BlobDescriptorCache>,
    /// Manifest bytes, links and tags (see [`crate::cache::manifests`]).
    manifests: ManifestCache,
    /// A garbage-collection sweep is running (see [`gc::watch`]).
    sweeping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The sweep marker this registry's own collection wrote, if one runs.
    own_sweep_marker: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Page caps of the catalog, tags and referrers listings.
    limits: catalog::ListingLimits,
    /// The repository index behind the catalog.
    index: std::sync::Arc<index::RepositoryIndex>,
    /// The upstream this registry mirrors (`proxy:`), if it is a cache.
    proxy: Option<std::sync::Arc<crate::proxy::ProxyCache>>,
}

impl Registry {
    pub fn new(driver: Driver, secret: &[u8], delete_enabled: bool) -> Self {
        Registry {
            secret: secret.into(),
            delete_enabled,
            read_only: false,
            cache: None,
            manifests: ManifestCache::new(Default::default(), None),
            sweeping: Default::default(),
            own_sweep_marker: Default::default(),
            limits: Default::default(),
            index: std::sync::Arc::new(index::RepositoryIndex::new(driver.clone())),
            proxy: None,
            driver,
        }
    }

    /// Page caps for the listings (`catalog.maxentries`, `tags.maxtags`,
    /// `referrers.maxentries`).
    pub fn with_listing_limits(mut self, limits: catalog::ListingLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn listing_limits(&self) -> catalog::ListingLimits {
        self.limits
    }

    /// Maintenance mode: refuse every write (`storage.maintenance.readonly`).
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Writes are refused while in read-only maintenance mode.
    pub fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::new(
                Code::Unsupported,
                "the registry is in read-only maintenance mode; writes are refused",
            ))
        } else {
            Ok(())
        }
    }

    /// Mirror an upstream registry (`proxy:`): see [`crate::proxy`].
    pub fn with_proxy(mut self, proxy: std::sync::Arc<crate::proxy::ProxyCache>) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The pull-through cache `name` is served by, if it is mirrored.
    pub fn mirror_of(&self, name: &str) -> Option<&crate::proxy::ProxyCache> {
        self.proxy.as_deref().filter(|p| p.mirrors(name))
    }

    /// Answer blob lookups from a blob-descriptor cache first.
    pub fn with_cache(mut self, cache: BlobDescriptorCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Serve manifests through `cache` (the default: in process only, with
    /// the default size and tag TTL, links not cached).
    pub fn with_manifest_cache(mut self, cache: ManifestCache) -> Self {
        self.manifests = cache;
        self
    }

    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// The repository index (`berth index rebuild`, the catalog).
    pub fn index(&self) -> &index::RepositoryIndex {
        &self.index
    }

    fn require_delete(&self) -> Result<()> {
        if self.delete_enabled {
            Ok(())
        } else {
            Err(Error::new(
                Code::Unsupported,
                "deletes are disabled (storage.delete.enabled)",
            ))
        }
    }

    /// The storage driver's name (`filesystem`, `s3`, …).
    pub fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    /// Can the storage backend be reached? (An empty root is healthy.)
    pub async fn storage_health(&self) -> Result<()> {
        match self.driver.stat(crate::storage::layout::ROOT).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Read a link file (`sha256:<hex>`); `None` when it does not exist.
    async fn read_link(&self, path: &str) -> Result<Option<Digest>> {
        match self.driver.get_content(path).await {
            Ok(b) => {
                let s = std::str::from_utf8(&b)
                    .map_err(|_| Error::internal(format!("corrupt link {path}")))?;
                let d = s
                    .trim()
                    .parse()
                    .map_err(|_| Error::internal(format!("corrupt link {path}")))?;
                Ok(Some(d))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a content-addressed link (one whose path names the digest
    /// it holds, like a layer link) exists: one HeadObject on S3, where
    /// reading it would be a GetObject of a few bytes, the request object
    /// stores answer slowest (a small body often waits on a delayed ACK).
    async fn link_present(&self, path: &str) -> Result<bool> {
        match self.driver.stat_object(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_link(&self, path: &str, d: &Digest) -> Result<()> {
        Ok(self
            .driver
            .put_content(path, Bytes::from(d.to_string()))
            .await?)
    }

    /// Delete, treating an already-missing path as done.
    async fn delete_if_exists(&self, path: &str) -> Result<()> {
        match self.driver.delete(path).await {
            Ok(()) => Ok(()),
            Err(StorageError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Does the repository exist at all (has it any manifests or layers)?
    async fn repository_exists(&self, name: &str) -> Result<bool> {
        match self
            .driver
            .stat(&crate::storage::layout::repository(name))
            .await
        {
            Ok(i) => Ok(i.is_dir),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
