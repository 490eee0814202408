//! Blobs as seen through a repository: a blob is visible in a repository only
//! through its `_layers` link, as in distribution.

use super::{
    digest::Digest,
    error::{Code, Error, Result},
    names::validate_name,
    Registry,
};
use crate::{
    cache::Descriptor,
    storage::{layout, ByteStream},
};

/// Blobs have no media type of their own at this level.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// Size and location of a blob a repository may serve.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

fn blob_unknown(d: &Digest) -> Error {
    Error::new(Code::BlobUnknown, format!("blob unknown to registry: {d}"))
}

impl Registry {
    /// The blob's size, if `name` links it and the data exists; in a
    /// mirrored repository, a blob missing here is fetched from upstream.
    pub async fn stat_blob(&self, name: &str, d: &Digest) -> Result<BlobInfo> {
        Ok(self.find_blob(name, d).await?.0)
    }

    /// [`stat_blob`](Self::stat_blob), and for a mirrored repository whether
    /// the blob was in the cache (`hit`) or fetched for this request
    /// (`miss`), as pull events say.
    pub async fn find_blob(
        &self,
        name: &str,
        d: &Digest,
    ) -> Result<(BlobInfo, Option<&'static str>)> {
        let found = self.stat_local_blob(name, d).await;
        match self.mirror_of(name) {
            None => Ok((found?, None)),
            Some(proxy) => match found {
                Err(e) if e.code == Code::BlobUnknown => {
                    Ok((proxy.fill_blob(self, name, d).await?, Some("miss")))
                }
                found => {
                    proxy.blob_hit(name);
                    Ok((found?, Some("hit")))
                }
            },
        }
    }

    async fn stat_local_blob(&self, name: &str, d: &Digest) -> Result<BlobInfo> {
        validate_name(name)?;
        // The repository's link and the global descriptor in one cache
        // round trip: a blob new to this repository (a mount, a push of a
        // layer another repository has) still needs no stat of its data.
        let mut known = None;
        if let Some(cache) = &self.cache {
            let scoped = cache.get_scoped(name, d).await;
            if scoped.linked {
                if let Some(desc) = scoped.descriptor {
                    return Ok(BlobInfo {
                        digest: d.clone(),
                        size: desc.size,
                    });
                }
            }
            known = scoped.descriptor;
        }
        // The link's path names its digest: that it exists is the answer.
        if !self.link_present(&layout::layer_link(name, d)).await? {
            return Err(blob_unknown(d));
        }
        let info = match known {
            Some(desc) => BlobInfo {
                digest: d.clone(),
                size: desc.size,
            },
            None => self
                .stat_blob_data(d)
                .await?
                .ok_or_else(|| blob_unknown(d))?,
        };
        if let Some(cache) = &self.cache {
            self.remember(Some(name), &info).await;
            // A delete may have run between our read of the link and our fill:
            // its invalidation would then precede our entry, which would answer
            // for a gone blob forever. Re-reading the link after the fill closes
            // that window: a delete that cleared before our fill had already
            // removed the link, so we see it gone here and clear our own entry.
            // An expiring entry answers for its TTL at most, as it would for
            // another replica's delete: no second read.
            if !cache.expires() && !self.link_present(&layout::layer_link(name, d)).await? {
                if let Some(cache) = &self.cache {
                    cache.clear(Some(name), d).await;
                    // The fill wrote the global descriptor too; the blob may
                    // be gone altogether (a GC sweep), so it goes as well.
                    cache.clear(None, d).await;
                }
                return Err(blob_unknown(d));
            }
        }
        Ok(info)
    }

    /// Tell the cache about a blob linked in `repo` (or in the global store).
    pub(crate) async fn remember(&self, repo: Option<&str>, info: &BlobInfo) {
        if let Some(cache) = &self.cache {
            let desc = Descriptor {
                size: info.size,
                media_type: BLOB_MEDIA_TYPE.into(),
            };
            // The backend records the global descriptor along with the repo's.
            cache.set(repo, &info.digest, &desc).await;
        }
    }

    /// The blob in the shared blob store, whichever repository it came from.
    pub(crate) async fn stat_global_blob(&self, d: &Digest) -> Result<Option<BlobInfo>> {
        if let Some(desc) = match &self.cache {
            Some(cache) => cache.get(None, d).await,
            None => None,
        } {
            return Ok(Some(BlobInfo {
                digest: d.clone(),
                size: desc.size,
            }));
        }
        self.stat_blob_data(d).await
    }

    /// The blob's data in storage, not asking the cache.
    async fn stat_blob_data(&self, d: &Digest) -> Result<Option<BlobInfo>> {
        match self.driver.stat_object(&layout::blob_data(d)).await {
            Ok(info) => Ok(Some(BlobInfo {
                digest: d.clone(),
                size: info.size,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stream `len` bytes (or to the end) of a blob from `offset`.
    pub async fn read_blob(&self, d: &Digest, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        // A mirrored blob still on its way from upstream: behind its fetch.
        if let Some(fill) = self.proxy.as_ref().and_then(|p| p.in_flight(d)) {
            return fill.reader(offset, len).await;
        }
        self.driver
            .reader(&layout::blob_data(d), offset, len)
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    blob_unknown(d)
                } else {
                    e.into()
                }
            })
    }

    /// A URL the client can fetch the blob from directly, if the driver offers one.
    pub async fn blob_redirect(&self, d: &Digest, method: &str) -> Result<Option<String>> {
        Ok(self
            .driver
            .redirect_url(&layout::blob_data(d), method)
            .await?)
    }

    /// Unlink a blob from a repository. The data stays until garbage collection,
    /// since other repositories may link it.
    pub async fn delete_blob(&self, name: &str, d: &Digest) -> Result<()> {
        validate_name(name)?;
        self.require_delete()?;
        let link = layout::layer_link(name, d);
        if self.read_link(&link).await?.is_none() {
            return Err(blob_unknown(d));
        }
        let dir = link.trim_end_matches("/link");
        self.delete_if_exists(dir).await?;
        if let Some(cache) = &self.cache {
            cache.clear(Some(name), d).await;
        }
        Ok(())
    }

    /// Link blob `d` into `name` if its data is stored (a mirror's fetch of
    /// it for another repository, or on another replica, already verified
    /// it): `None` when it is not stored.
    pub(crate) async fn link_stored_blob(
        &self,
        name: &str,
        d: &Digest,
    ) -> Result<Option<BlobInfo>> {
        let Some(info) = self.stat_blob_data(d).await? else {
            return Ok(None);
        };
        self.write_link(&layout::layer_link(name, d), d).await?;
        self.remember(Some(name), &info).await;
        Ok(Some(info))
    }

    /// Cross-repository mount: link a blob `from` links into `name`. `None` when
    /// it is not mountable, and the caller falls back to an upload session.
    pub async fn mount_blob(&self, name: &str, d: &Digest, from: &str) -> Result<Option<BlobInfo>> {
        validate_name(name)?;
        if validate_name(from).is_err() {
            return Ok(None);
        }
        let info = match self.stat_blob(from, d).await {
            Ok(info) => info,
            Err(e) if e.code == Code::BlobUnknown => return Ok(None),
            Err(e) => return Err(e),
        };
        self.write_link(&layout::layer_link(name, d), d).await?;
        self.remember(Some(name), &info).await;
        Ok(Some(info))
    }
}
