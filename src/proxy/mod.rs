//! The pull-through cache (distribution's `proxy:`): the whole registry
//! mirrors one upstream. What the mirror has it serves from storage, in
//! the normal layout (so GC, backup and every replica treat it like pushed
//! content); what it lacks it fetches once, verifies against its digest
//! and stores before serving.
//!
//! - **Manifests by digest** are immutable: fetched on a miss, verified,
//!   stored without checking that their blobs are here yet (those come on
//!   their own pulls), never asked for again.
//! - **Tags** are served from the cache for `proxy.tagttl` after they were
//!   last checked, then checked with a HEAD upstream (Docker Hub does not
//!   count it against its pull limit): the same digest costs nothing more,
//!   a moved tag is fetched by its new digest. Checks are per replica.
//! - **Blobs** missing here are fetched by one task per blob and replica
//!   (every client pulling it meanwhile waits for that one fetch, and a
//!   client that leaves does not stop it), streamed into storage through
//!   the registry's digest-verified direct write: wrong bytes never enter
//!   the cache.
//! - **Upstream down or rate-limiting**: whatever the cache has is served
//!   (tags past their TTL too), with a warning; what it lacks is a 503 (or
//!   the upstream's 429, `Retry-After` passed on).
//! - **Writes** (pushes, deletes, mounts) are refused with 405
//!   `UNSUPPORTED`, as distribution's proxy does.
//!
//! [`ProxyCache`] is held by the [`Registry`], whose manifest and blob
//! lookups call into it; it calls back into the registry for storage.

pub mod auth;
mod fill;
pub mod upstream;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    config::proxy::ProxySettings,
    digest::Digest,
    registry::{
        blobs::BlobInfo,
        error::{Code, Error, Result},
        manifests::{Reference, StoredManifest},
        Registry,
    },
};
use upstream::Upstream;

use fill::Fill;

/// Fetches under way by digest, each with its number.
type Fills = HashMap<Digest, (u64, Arc<Fill>)>;

pub struct ProxyCache {
    upstream: Arc<Upstream>,
    tag_ttl: Duration,
    /// When each (repository, tag) was last found current upstream.
    checked: Mutex<HashMap<(String, String), Instant>>,
    /// Blob fetches under way on this replica, each with a number so that
    /// a fetch that ends removes itself and not a later one.
    fills: Arc<Mutex<Fills>>,
    next_fill: std::sync::atomic::AtomicU64,
    /// Where fetches spool what clients read before it is stored.
    spool_dir: std::path::PathBuf,
}

impl ProxyCache {
    pub fn new(s: &ProxySettings) -> Result<ProxyCache> {
        Ok(ProxyCache {
            upstream: Arc::new(Upstream::new(s)?),
            tag_ttl: s.tag_ttl,
            checked: Mutex::default(),
            fills: Arc::default(),
            next_fill: Default::default(),
            spool_dir: s.spool_dir.clone(),
        })
    }

    /// Whether `name` is mirrored (in distribution's form, every repository).
    pub fn mirrors(&self, _name: &str) -> bool {
        true
    }

    /// The refusal of a write to a mirrored repository.
    pub fn refuse_write(&self) -> Error {
        Error::new(
            Code::Unsupported,
            format!(
                "this registry is a pull-through cache of {}: pushes and deletes are not \
                 supported",
                self.upstream.url()
            ),
        )
    }

    /// A manifest of a mirrored repository.
    pub async fn manifest(
        &self,
        reg: &Registry,
        name: &str,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        match reference {
            Reference::Digest(d) => match reg.local_manifest(name, reference).await {
                Err(e) if e.code == Code::ManifestUnknown => {
                    self.fetch_manifest(reg, name, reference, d).await
                }
                found => found,
            },
            Reference::Tag(tag) => self.manifest_by_tag(reg, name, tag, reference).await,
        }
    }

    async fn manifest_by_tag(
        &self,
        reg: &Registry,
        name: &str,
        tag: &str,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let key = (name.to_string(), tag.to_string());
        let fresh = self
            .checked
            .lock()
            .unwrap()
            .get(&key)
            .is_some_and(|at| at.elapsed() < self.tag_ttl);
        let local = match reg.local_manifest(name, reference).await {
            Ok(m) => Some(m),
            Err(e) if e.code == Code::ManifestUnknown => None,
            Err(e) => return Err(e),
        };
        if let (true, Some(m)) = (fresh, &local) {
            return Ok(m.clone());
        }
        let upstream = match self.upstream.manifest_digest(name, tag).await {
            Ok(Some(d)) => d,
            // No digest in the HEAD's answer: the manifest itself tells.
            Ok(None) => {
                let m = self.upstream.manifest(name, tag).await?;
                let d = Digest::of(crate::digest::Algorithm::Sha256, &m.body);
                if local.as_ref().is_none_or(|l| l.digest != d) {
                    let stored = self
                        .store_manifest(reg, name, reference, &d, m.body, m.content_type)
                        .await?;
                    self.checked.lock().unwrap().insert(key, Instant::now());
                    return Ok(stored);
                }
                d
            }
            Err(e) if e.code == Code::ManifestUnknown => return Err(e),
            Err(e) => {
                return match local {
                    Some(m) => {
                        tracing::warn!(
                            repository = name,
                            tag,
                            code = e.code.as_str(),
                            "proxy: upstream unreachable, serving the cached tag"
                        );
                        Ok(m)
                    }
                    None => Err(e),
                }
            }
        };
        let stored = match local {
            Some(m) if m.digest == upstream => m,
            _ => {
                // Moved or new: its bytes by digest (maybe already here
                // under another tag), then the tag.
                let by_digest = Reference::Digest(upstream.clone());
                let m = match reg.local_manifest(name, &by_digest).await {
                    Ok(m) => m,
                    Err(e) if e.code == Code::ManifestUnknown => {
                        let r = self.upstream.manifest(name, &upstream.to_string()).await?;
                        check_digest(&upstream, &r.body)?;
                        StoredManifest {
                            digest: upstream.clone(),
                            media_type: String::new(),
                            body: r.body,
                        }
                    }
                    Err(e) => return Err(e),
                };
                self.store_manifest(reg, name, reference, &upstream, m.body, None)
                    .await?
            }
        };
        self.checked.lock().unwrap().insert(key, Instant::now());
        Ok(stored)
    }

    async fn fetch_manifest(
        &self,
        reg: &Registry,
        name: &str,
        reference: &Reference,
        d: &Digest,
    ) -> Result<StoredManifest> {
        let m = self.upstream.manifest(name, &d.to_string()).await?;
        check_digest(d, &m.body)?;
        self.store_manifest(reg, name, reference, d, m.body, m.content_type)
            .await
    }

    async fn store_manifest(
        &self,
        reg: &Registry,
        name: &str,
        reference: &Reference,
        d: &Digest,
        body: bytes::Bytes,
        content_type: Option<String>,
    ) -> Result<StoredManifest> {
        reg.store_fetched_manifest(name, reference, content_type.as_deref(), body.clone())
            .await?;
        tracing::info!(repository = name, digest = %d, ?reference, "proxy: cached a manifest");
        Ok(StoredManifest {
            digest: d.clone(),
            media_type: crate::registry::manifest::Manifest::media_type_of(&body),
            body,
        })
    }

    /// Blob `d` of mirrored `name`, missing here: its size as soon as the
    /// upstream says it, the fetch running on (one per blob on this
    /// replica, whoever asks).
    pub async fn fill_blob(&self, reg: &Registry, name: &str, d: &Digest) -> Result<BlobInfo> {
        let fill = self.fill(reg, name, d)?;
        let size = fill.size().await?;
        Ok(BlobInfo {
            digest: d.clone(),
            size,
        })
    }

    /// The fetch of `d` under way on this replica, if any: reads of the blob
    /// follow it until it is stored.
    pub fn in_flight(&self, d: &Digest) -> Option<Arc<Fill>> {
        self.fills.lock().unwrap().get(d).map(|(_, f)| f.clone())
    }

    fn fill(&self, reg: &Registry, name: &str, d: &Digest) -> Result<Arc<Fill>> {
        let mut fills = self.fills.lock().unwrap();
        if let Some((_, f)) = fills.get(d) {
            return Ok(f.clone());
        }
        let id = self
            .next_fill
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let upstream = self.upstream.clone();
        let (repo, digest) = (name.to_string(), d.clone());
        let fetch = async move { upstream.blob(&repo, &digest).await };
        let (registry, key) = (self.fills.clone(), d.clone());
        let done = move || {
            let mut fills = registry.lock().unwrap();
            if fills.get(&key).is_some_and(|(n, _)| *n == id) {
                fills.remove(&key);
            }
        };
        let f = Fill::start(
            reg.clone(),
            name.to_string(),
            d.clone(),
            &self.spool_dir,
            fetch,
            done,
        )?;
        fills.insert(d.clone(), (id, f.clone()));
        Ok(f)
    }
}

/// Bytes the upstream sent for `d` must hash to it.
fn check_digest(d: &Digest, body: &[u8]) -> Result<()> {
    let actual = Digest::of(d.algorithm(), body);
    if &actual == d {
        Ok(())
    } else {
        Err(Error::new(
            Code::Unavailable,
            format!("the upstream registry sent a manifest that is not {d} ({actual})"),
        )
        .with_retry_after(Duration::from_secs(5)))
    }
}
