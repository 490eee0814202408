//! Manifests of mirrored repositories: by digest fetched once and kept; by
//! tag served from the cache for the mirror's `tagttl`, then checked with
//! a HEAD upstream, and served stale while the upstream cannot answer.

use std::time::{Duration, Instant};

use super::{metrics::Outcome, ProxyCache, Route};
use crate::{
    digest::Digest,
    registry::{
        error::{Code, Error, Result},
        manifests::{Reference, StoredManifest},
        Registry,
    },
};

/// Tag checks remembered before the stale ones are swept.
const CHECKED_SWEEP_AT: usize = 100_000;

impl ProxyCache {
    pub(super) async fn manifest_by_tag(
        &self,
        reg: &Registry,
        route: &Route,
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
            .is_some_and(|at| at.elapsed() < route.tag_ttl);
        let local = match reg.local_manifest(name, reference).await {
            Ok(m) => Some(m),
            Err(e) if e.code == Code::ManifestUnknown => None,
            Err(e) => return Err(e),
        };
        if let (true, Some(m)) = (fresh, &local) {
            self.count(route, Outcome::Hit);
            return Ok(m.clone());
        }
        let upstream = match route.upstream.manifest_digest(&route.remote, tag).await {
            Ok(Some(d)) => d,
            // No digest in the HEAD's answer: the manifest itself tells.
            Ok(None) => {
                let m = route.upstream.manifest(&route.remote, tag).await?;
                let d = Digest::of(crate::digest::Algorithm::Sha256, &m.body);
                if local.as_ref().is_none_or(|l| l.digest != d) {
                    self.count(route, Outcome::Miss);
                    let stored = self
                        .store_manifest(reg, name, reference, &d, m.body, m.content_type)
                        .await?;
                    self.mark_checked(key, route.tag_ttl);
                    return Ok(stored);
                }
                d
            }
            Err(e) if e.code == Code::ManifestUnknown => return Err(e),
            Err(e) => {
                return match local {
                    Some(m) => {
                        self.count(route, Outcome::Stale);
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
            Some(m) if m.digest == upstream => {
                self.count(route, Outcome::Hit);
                // Checked just now: the tag's age is what eviction reads.
                if let Err(e) = reg.refresh_tag(name, tag, &upstream).await {
                    tracing::warn!(
                        repository = name,
                        tag,
                        "proxy: refreshing the tag: {}",
                        e.message
                    );
                }
                m
            }
            _ => {
                self.count(route, Outcome::Miss);
                // Moved or new: its bytes by digest (maybe already here
                // under another tag), then the tag.
                let by_digest = Reference::Digest(upstream.clone());
                let m = match reg.local_manifest(name, &by_digest).await {
                    Ok(m) => m,
                    Err(e) if e.code == Code::ManifestUnknown => {
                        let r = route
                            .upstream
                            .manifest(&route.remote, &upstream.to_string())
                            .await?;
                        check_digest(&upstream, &r.body)?;
                        StoredManifest {
                            digest: upstream.clone(),
                            media_type: String::new(),
                            body: r.body,
                            cache: None,
                        }
                    }
                    Err(e) => return Err(e),
                };
                self.store_manifest(reg, name, reference, &upstream, m.body, None)
                    .await?
            }
        };
        self.mark_checked(key, route.tag_ttl);
        Ok(stored)
    }

    /// Remember that a tag was found current upstream just now; entries
    /// past their TTL go when the map grows large (memory stays bounded by
    /// the tags pulled within a TTL).
    fn mark_checked(&self, key: (String, String), ttl: Duration) {
        let mut checked = self.checked.lock().unwrap();
        if checked.len() >= CHECKED_SWEEP_AT {
            checked.retain(|_, at| at.elapsed() < ttl);
        }
        checked.insert(key, Instant::now());
    }

    pub(super) async fn fetch_manifest(
        &self,
        reg: &Registry,
        route: &Route,
        name: &str,
        reference: &Reference,
        d: &Digest,
    ) -> Result<StoredManifest> {
        let m = route
            .upstream
            .manifest(&route.remote, &d.to_string())
            .await?;
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
            cache: Some("miss"),
        })
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
