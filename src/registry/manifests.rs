//! Storing, serving and deleting manifests by tag or digest.
//!
//! Write order makes every step safe to interrupt: the manifest's bytes go into
//! the blob store first, then the revision link, then tags and referrer links —
//! a reader following links only ever finds complete content.

use bytes::Bytes;
use futures::{future, StreamExt, TryStreamExt};

use super::{
    digest::{Algorithm, Digest},
    error::{Code, Error, Result},
    manifest::{Manifest, MAX_MANIFEST_SIZE},
    names::{is_valid_tag, validate_name},
    Registry,
};
use crate::storage::layout;

/// A manifest reference from a URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else if is_valid_tag(s) {
            Ok(Reference::Tag(s.to_string()))
        } else {
            Err(Error::new(
                Code::ManifestInvalid,
                format!("invalid tag {:?}", s.chars().take(200).collect::<String>()),
            ))
        }
    }
}

/// A stored manifest as served to clients.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
    /// A mirrored repository's: `hit` (from the cache) or `miss` (fetched
    /// from upstream for this request); `None` elsewhere.
    pub cache: Option<&'static str>,
}

/// What a successful PUT reports.
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// Storage calls one manifest PUT makes at once to check its references: an
/// index of tens of thousands of entries must not become as many calls in
/// flight (on S3, each is a request; on a filesystem, a file descriptor).
const REFERENCE_CHECKS_AT_ONCE: usize = 16;

fn manifest_unknown(r: impl std::fmt::Display) -> Error {
    Error::new(Code::ManifestUnknown, format!("manifest unknown: {r}"))
}

impl Registry {
    pub async fn put_manifest(
        &self,
        name: &str,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest> {
        self.store_manifest(name, reference, content_type, body, true)
            .await
    }

    /// A manifest a pull-through cache fetched: stored like a pushed one,
    /// but its blobs are not here yet (each comes on its own pull), so
    /// they are not checked (distribution's `SkipLayerVerification`).
    pub(crate) async fn store_fetched_manifest(
        &self,
        name: &str,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest> {
        self.store_manifest(name, reference, content_type, body, false)
            .await
    }

    async fn store_manifest(
        &self,
        name: &str,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        check_references: bool,
    ) -> Result<PutManifest> {
        validate_name(name)?;
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(too_large());
        }
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &body);
                if &actual != d {
                    return Err(Error::new(
                        Code::DigestInvalid,
                        format!("manifest digest is {actual}, not {d}"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        let manifest = Manifest::parse(&body, content_type)?;
        if check_references {
            self.check_references(name, &manifest).await?;
        }

        self.driver
            .put_content(&layout::blob_data(&digest), body.clone())
            .await?;
        // Immutable by digest: the pull that follows a push needs no read.
        self.manifests.fill_body(&digest, &body, false).await;
        self.write_link(&layout::manifest_revision_link(name, &digest), &digest)
            .await?;
        // After the link, never before: see `index` on garbage collection.
        self.index.note(name, self.sweep_active()).await?;
        if let Some(subject) = &manifest.subject {
            self.write_link(&layout::referrer_link(name, subject, &digest), &digest)
                .await?;
        }
        if let Reference::Tag(tag) = reference {
            self.write_link(&layout::tag_index_link(name, tag, &digest), &digest)
                .await?;
            self.write_link(&layout::tag_current_link(name, tag), &digest)
                .await?;
            self.manifests.forget_tag(name, tag).await;
        }
        Ok(PutManifest {
            digest,
            subject: manifest.subject,
        })
    }

    /// Rewrite `tag`'s current link (to `d`, as it is): a mirror records
    /// that it checked the tag upstream, for eviction (`proxy.ttl`).
    pub(crate) async fn refresh_tag(&self, name: &str, tag: &str, d: &Digest) -> Result<()> {
        self.write_link(&layout::tag_current_link(name, tag), d)
            .await
    }

    /// Every blob and child manifest must already be in the repository.
    /// Checked [`REFERENCE_CHECKS_AT_ONCE`] at a time, stopping at the first
    /// missing one (the checks still running are dropped).
    async fn check_references(&self, name: &str, m: &Manifest) -> Result<()> {
        // A garbage collector may be about to delete an old blob this manifest
        // brings back into use: make its links say so before checking them.
        if self.sweep_active() {
            self.touch_references(name, m).await?;
        }
        // Collected first: a stream holding these closures trips rustc's
        // Send inference for the handler future (rust-lang/rust#102211).
        let blob_checks: Vec<_> = m
            .blobs
            .iter()
            .map(|d| async move {
                match self.stat_blob(name, d).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code == Code::BlobUnknown => Err(Error::new(
                        Code::ManifestBlobUnknown,
                        format!("manifest references unknown blob {d}"),
                    )
                    .with_detail(serde_json::json!({ "digest": d.to_string() }))),
                    Err(e) => Err(e),
                }
            })
            .collect();
        let manifest_checks: Vec<_> = m
            .manifests
            .iter()
            .map(|d| async move {
                if self.manifest_exists(name, d).await? {
                    Ok(())
                } else {
                    Err(Error::new(
                        Code::ManifestBlobUnknown,
                        format!("index references unknown manifest {d}"),
                    )
                    .with_detail(serde_json::json!({ "digest": d.to_string() })))
                }
            })
            .collect();
        futures::stream::iter(blob_checks)
            .buffer_unordered(REFERENCE_CHECKS_AT_ONCE)
            .try_for_each(|()| future::ok(()))
            .await?;
        futures::stream::iter(manifest_checks)
            .buffer_unordered(REFERENCE_CHECKS_AT_ONCE)
            .try_for_each(|()| future::ok(()))
            .await
    }

    async fn manifest_exists(&self, name: &str, d: &Digest) -> Result<bool> {
        // Linked and its bytes known: both checks below, answered.
        let look = self.manifests.lookup(name, d).await;
        if look.linked && look.body.is_some() {
            return Ok(true);
        }
        Ok(self
            .read_link(&layout::manifest_revision_link(name, d))
            .await?
            .as_ref()
            == Some(d)
            && self.stat_global_blob(d).await?.is_some())
    }

    /// Resolve a reference to the digest it names in this repository.
    pub async fn resolve(&self, name: &str, reference: &Reference) -> Result<Digest> {
        validate_name(name)?;
        match reference {
            Reference::Tag(tag) => self
                .read_link(&layout::tag_current_link(name, tag))
                .await?
                .ok_or_else(|| manifest_unknown(tag)),
            Reference::Digest(d) => match self
                .read_link(&layout::manifest_revision_link(name, d))
                .await?
            {
                Some(linked) if &linked == d => Ok(linked),
                _ => Err(manifest_unknown(d)),
            },
        }
    }

    /// By digest: no storage request when the cache knows the repository
    /// links it and has its bytes. By tag: the tag link (none while the tag
    /// cache holds it), then the bytes as by digest.
    /// In a mirrored repository, through the pull-through cache.
    pub async fn get_manifest(&self, name: &str, reference: &Reference) -> Result<StoredManifest> {
        match self.mirror_of(name) {
            Some(proxy) => {
                validate_name(name)?;
                proxy.manifest(self, name, reference).await
            }
            None => self.local_manifest(name, reference).await,
        }
    }

    /// What storage has for `reference`, mirrored or not.
    pub(crate) async fn local_manifest(
        &self,
        name: &str,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        validate_name(name)?;
        let (digest, body) = match reference {
            Reference::Digest(d) => (d.clone(), self.manifest_by_digest(name, d).await?),
            Reference::Tag(tag) => {
                let digest = match self.manifests.tag(name, tag).await {
                    Some(d) => d,
                    None => {
                        let d = self
                            .read_link(&layout::tag_current_link(name, tag))
                            .await?
                            .ok_or_else(|| manifest_unknown(tag))?;
                        self.manifests.fill_tag(name, tag, &d).await;
                        d
                    }
                };
                let body = match self.manifests.body(&digest).await {
                    Some(b) => b,
                    None => {
                        let b = self.manifest_bytes(&digest).await?;
                        self.manifests.fill_body(&digest, &b, true).await;
                        b
                    }
                };
                (digest, body)
            }
        };
        Ok(StoredManifest {
            media_type: Manifest::media_type_of(&body),
            digest,
            body,
            cache: None,
        })
    }

    /// The repository's revision link (unless the cache knows it), then the
    /// bytes (unless the cache has them).
    async fn manifest_by_digest(&self, name: &str, d: &Digest) -> Result<Bytes> {
        let look = self.manifests.lookup(name, d).await;
        if !look.linked {
            match self
                .read_link(&layout::manifest_revision_link(name, d))
                .await?
            {
                Some(linked) if &linked == d => {}
                _ => return Err(manifest_unknown(d)),
            }
        } else if let Some(body) = &look.body {
            return Ok(body.clone());
        }
        let body = match &look.body {
            Some(b) => b.clone(),
            None => self.manifest_bytes(d).await?,
        };
        self.manifests.fill(name, d, &body, look).await;
        Ok(body)
    }

    async fn manifest_bytes(&self, d: &Digest) -> Result<Bytes> {
        match self.driver.get_content(&layout::blob_data(d)).await {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => Err(manifest_unknown(d)),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete by digest: the revision, every tag pointing at it and its referrer
    /// link. Delete by tag: untag only (202), the manifest stays by digest.
    /// Returns the tags removed (for the events distribution sends for them).
    pub async fn delete_manifest(&self, name: &str, reference: &Reference) -> Result<Vec<String>> {
        validate_name(name)?;
        self.require_delete()?;
        match reference {
            Reference::Tag(tag) => {
                if self
                    .read_link(&layout::tag_current_link(name, tag))
                    .await?
                    .is_none()
                {
                    return Err(manifest_unknown(tag));
                }
                self.delete_if_exists(&layout::tag_dir(name, tag)).await?;
                self.manifests.forget_tag(name, tag).await;
                Ok(vec![tag.clone()])
            }
            Reference::Digest(d) => {
                let stored = self.get_manifest(name, reference).await?;
                let mut untagged = Vec::new();
                for tag in self.tags(name).await.unwrap_or_default() {
                    if self
                        .read_link(&layout::tag_current_link(name, &tag))
                        .await?
                        .as_ref()
                        == Some(d)
                    {
                        self.delete_if_exists(&layout::tag_dir(name, &tag)).await?;
                        self.manifests.forget_tag(name, &tag).await;
                        untagged.push(tag);
                    }
                }
                if let Ok(Some(subject)) = Manifest::parse(&stored.body, None).map(|m| m.subject) {
                    let link = layout::referrer_link(name, &subject, d);
                    self.delete_if_exists(link.trim_end_matches("/link"))
                        .await?;
                }
                self.delete_if_exists(&layout::manifest_revision_dir(name, d))
                    .await?;
                self.manifests.forget_link(name, d).await;
                Ok(untagged)
            }
        }
    }
}

fn too_large() -> Error {
    Error::new(
        Code::ManifestInvalid,
        format!("manifest exceeds the {MAX_MANIFEST_SIZE}-byte limit"),
    )
    .with_status(413)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use async_trait::async_trait;

    use super::*;
    use crate::{
        registry::manifest::{OCI_INDEX, OCI_MANIFEST},
        storage::{
            inmemory::InMemoryDriver, ByteStream, FileInfo, FileWriter, Result as StorageResult,
            StorageDriver,
        },
    };

    /// An in-memory driver that counts reads, and how many run at once
    /// (each read yields a few times, so that concurrent ones overlap).
    #[derive(Default)]
    struct Counting {
        inner: InMemoryDriver,
        reads: AtomicUsize,
        in_flight: AtomicUsize,
        peak: AtomicUsize,
    }

    #[async_trait]
    impl StorageDriver for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn get_content(&self, path: &str) -> StorageResult<Bytes> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.inner.get_content(path).await
        }
        async fn put_content(&self, path: &str, content: Bytes) -> StorageResult<()> {
            self.inner.put_content(path, content).await
        }
        async fn reader(&self, p: &str, o: u64, l: Option<u64>) -> StorageResult<ByteStream> {
            self.inner.reader(p, o, l).await
        }
        async fn writer(&self, p: &str, o: u64) -> StorageResult<Box<dyn FileWriter>> {
            self.inner.writer(p, o).await
        }
        async fn stat(&self, path: &str) -> StorageResult<FileInfo> {
            self.inner.stat(path).await
        }
        async fn list(&self, path: &str) -> StorageResult<Vec<String>> {
            self.inner.list(path).await
        }
        async fn rename(&self, s: &str, d: &str) -> StorageResult<()> {
            self.inner.rename(s, d).await
        }
        async fn delete(&self, path: &str) -> StorageResult<()> {
            self.inner.delete(path).await
        }
    }

    /// An index of `n` child manifests, all stored except those in `missing`.
    async fn index_of(driver: &Counting, n: usize, missing: &[usize]) -> Bytes {
        let mut children = Vec::new();
        for i in 0..n {
            let d = Digest::of(Algorithm::Sha256, format!("child {i}").as_bytes());
            if !missing.contains(&i) {
                let link = Bytes::from(d.to_string());
                driver
                    .put_content(&layout::manifest_revision_link("app", &d), link)
                    .await
                    .unwrap();
                driver
                    .put_content(&layout::blob_data(&d), Bytes::from_static(b"{}"))
                    .await
                    .unwrap();
            }
            children.push(
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": 2}),
            );
        }
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
        Bytes::from(index.to_string())
    }

    #[tokio::test]
    async fn reference_checks_run_a_few_at_a_time() {
        let driver = Arc::new(Counting::default());
        let body = index_of(&driver, 200, &[]).await;
        let reg = Registry::new(driver.clone(), b"s", false);
        let tag = Reference::Tag("t".into());
        reg.put_manifest("app", &tag, Some(OCI_INDEX), body)
            .await
            .unwrap();
        let peak = driver.peak.load(Ordering::SeqCst);
        assert!(peak <= REFERENCE_CHECKS_AT_ONCE, "{peak} reads at once");
        assert!(peak > 1, "checks overlap: {peak}");
        assert!(driver.reads.load(Ordering::SeqCst) >= 200);
    }

    #[tokio::test]
    async fn reference_checks_stop_at_the_first_missing() {
        let driver = Arc::new(Counting::default());
        let body = index_of(&driver, 2000, &[0]).await;
        let reg = Registry::new(driver.clone(), b"s", false);
        let tag = Reference::Tag("t".into());
        let e = reg
            .put_manifest("app", &tag, Some(OCI_INDEX), body)
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, Code::ManifestBlobUnknown);
        let reads = driver.reads.load(Ordering::SeqCst);
        assert!(
            reads < 100,
            "{reads} reads for an index whose first child is missing"
        );
        // Nothing was stored for the refused index.
        assert!(reg.tags("app").await.unwrap_or_default().is_empty());
    }

    #[tokio::test]
    async fn the_manifest_cache_is_bypassed_and_flushed_while_a_sweep_runs() {
        use crate::cache::manifests::{ManifestCache, ManifestCacheSettings};
        let driver = Arc::new(Counting::default());
        let settings = ManifestCacheSettings {
            local_links: true,
            ..Default::default()
        };
        let reg = Registry::new(driver.clone(), b"s", true)
            .with_manifest_cache(ManifestCache::new(settings, None));
        let body = index_of(&driver, 0, &[]).await;
        let d = Digest::of(Algorithm::Sha256, &body);
        let by_digest = Reference::Digest(d.clone());
        reg.put_manifest("app", &by_digest, Some(OCI_INDEX), body.clone())
            .await
            .unwrap();
        let reads = || driver.reads.load(Ordering::SeqCst);
        let get = || async {
            let before = reads();
            let m = reg.get_manifest("app", &by_digest).await.unwrap();
            assert_eq!(m.body, body);
            reads() - before
        };
        assert_eq!(
            get().await,
            1,
            "the link (the bytes are kept from the push)"
        );
        assert_eq!(get().await, 0, "warm");

        let marker = crate::registry::gc::watch::sweep_marker("run");
        driver
            .put_content(&marker, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert!(reg.refresh_sweep_state().await);
        assert_eq!(get().await, 2, "bypassed: link and bytes");
        assert_eq!(get().await, 2, "and nothing remembered while sweeping");

        driver.delete(&marker).await.unwrap();
        assert!(!reg.refresh_sweep_state().await);
        assert_eq!(get().await, 2, "flushed when the sweep ended");
        assert_eq!(get().await, 0);
    }
}
