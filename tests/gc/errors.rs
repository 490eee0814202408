//! A storage error in the middle of a sweep: the run stops, and what it had
//! already deleted must not be answered for by a blob-descriptor cache.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use async_trait::async_trait;
use bytes::Bytes;

use berth::{
    cache::{inmemory::InMemoryCache, BlobDescriptorCache, CacheBackend, Descriptor},
    registry::{digest::Digest, error::Code, gc::GcOptions, manifests::Reference, Registry},
    storage::{
        filesystem::FilesystemDriver, ByteStream, Driver, FileInfo, FileWriter, Result,
        StorageDriver, StorageError,
    },
};

use super::online::{age_everything, exists, one_hour_grace, upload};
use super::support::{image, noise, Pushed, OCI_MANIFEST};

/// The real filesystem driver, except that deleting an existing path the
/// predicate picks fails (a storage outage, a permission error): an error
/// injected half way through one blob's or one manifest's removal.
struct DeletesFail(Driver, fn(&str) -> bool);

#[async_trait]
impl StorageDriver for DeletesFail {
    fn name(&self) -> &'static str {
        "deletes-fail"
    }
    async fn get_content(&self, path: &str) -> Result<Bytes> {
        self.0.get_content(path).await
    }
    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        self.0.put_content(path, content).await
    }
    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        self.0.reader(path, offset, len).await
    }
    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn FileWriter>> {
        self.0.writer(path, offset).await
    }
    async fn stat(&self, path: &str) -> Result<FileInfo> {
        self.0.stat(path).await
    }
    async fn list(&self, path: &str) -> Result<Vec<String>> {
        self.0.list(path).await
    }
    async fn rename(&self, source: &str, dest: &str) -> Result<()> {
        self.0.rename(source, dest).await
    }
    async fn delete(&self, path: &str) -> Result<()> {
        if self.1(path) && self.0.stat(path).await.is_ok() {
            return Err(StorageError::Backend("injected: delete refused".into()));
        }
        self.0.delete(path).await
    }
}

/// The cache is shared by the collector and a server, as Redis is.
#[tokio::test]
async fn a_failed_link_delete_still_clears_the_swept_blobs_cache_entries() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let cache = BlobDescriptorCache::new(Arc::new(InMemoryCache::default()));
    let server = Registry::new(fs.clone(), b"s", true).with_cache(cache.clone());
    let orphan = upload(&server, "app", &noise(6, 512)).await;
    server.stat_blob("app", &orphan).await.unwrap(); // fills the cache
    age_everything(dir.path());
    let link_deletes_fail = DeletesFail(fs.clone(), |p| p.contains("/_layers/"));
    let collector =
        Registry::new(Arc::new(link_deletes_fail), b"s", true).with_cache(cache.clone());

    let err = collector
        .garbage_collect(&one_hour_grace())
        .await
        .unwrap_err();

    assert!(err.to_string().contains("injected"), "{err}");
    assert!(!exists(&fs, &orphan).await, "the data was deleted");
    let answer = server.stat_blob("app", &orphan).await;
    assert_eq!(
        answer.map_err(|e| e.code).unwrap_err(),
        Code::BlobUnknown,
        "the cache answered for a blob the failed run had deleted"
    );
}

/// A shared cache that answers the collector's first clear (its check that
/// the cache is reachable) and fails every clear after: Redis going away
/// in the middle of a run.
#[derive(Default)]
struct GoesAwayAfterFirstClear {
    inner: InMemoryCache,
    clears: AtomicUsize,
}

#[async_trait]
impl CacheBackend for GoesAwayAfterFirstClear {
    async fn get(
        &self,
        repo: Option<&str>,
        d: &Digest,
    ) -> std::result::Result<Option<Descriptor>, String> {
        self.inner.get(repo, d).await
    }
    async fn set(
        &self,
        repo: Option<&str>,
        d: &Digest,
        desc: &Descriptor,
    ) -> std::result::Result<(), String> {
        self.inner.set(repo, d, desc).await
    }
    async fn clear(&self, repo: Option<&str>, d: &Digest) -> std::result::Result<(), String> {
        if self.clears.fetch_add(1, Ordering::SeqCst) == 0 {
            return self.inner.clear(repo, d).await;
        }
        Err("injected: connection reset".into())
    }
    fn name(&self) -> &'static str {
        "goes-away"
    }
}

/// The entry it could not clear makes the run fail, naming the blob, instead
/// of a clean summary over a cache that still answers for it.
#[tokio::test]
async fn a_cache_clear_failing_mid_run_fails_the_run_and_names_the_blob() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let cache = BlobDescriptorCache::new(Arc::new(GoesAwayAfterFirstClear::default()));
    let registry = Registry::new(fs.clone(), b"s", true).with_cache(cache);
    let orphan = upload(&registry, "app", &noise(9, 256)).await;
    age_everything(dir.path());

    let err = registry
        .garbage_collect(&one_hour_grace())
        .await
        .unwrap_err();

    assert!(!exists(&fs, &orphan).await, "the sweep went on");
    assert!(err.to_string().contains(&orphan.to_string()), "{err}");
}

/// `--delete-untagged` stopped half way through removing a signature: if the
/// signature is still served, the referrers API must still list it (cosign
/// and notation find signatures there). Its tag-history entry is what fails.
#[tokio::test]
async fn a_failed_manifest_removal_leaves_no_served_manifest_unlisted() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let registry = Registry::new(fs.clone(), b"s", true);
    upload(&registry, "app", b"{}").await;
    upload(&registry, "app", b"{\"x\":1}").await;
    let put = |reference: Reference, m: &Pushed| {
        let (registry, body) = (registry.clone(), m.body.clone());
        async move {
            registry
                .put_manifest("app", &reference, Some(OCI_MANIFEST), Bytes::from(body))
                .await
                .unwrap();
        }
    };
    // An untagged image and its signature, which was tagged once: the tag
    // moved on, leaving a tag-history entry for the signature.
    let subject = image(b"{}", &[], None);
    put(Reference::Digest(subject.digest.parse().unwrap()), &subject).await;
    let signature = image(b"{}", &[], Some(&subject));
    put(Reference::Tag("sig".into()), &signature).await;
    put(
        Reference::Tag("sig".into()),
        &image(b"{\"x\":1}", &[], None),
    )
    .await;
    age_everything(dir.path());
    let history_deletes_fail = DeletesFail(fs.clone(), |p| p.contains("/_manifests/tags/"));
    let collector = Registry::new(Arc::new(history_deletes_fail), b"s", true);
    let opts = GcOptions {
        delete_untagged: true,
        ..one_hour_grace()
    };

    collector.garbage_collect(&opts).await.unwrap_err();

    let signature_digest: Digest = signature.digest.parse().unwrap();
    let served = registry
        .get_manifest("app", &Reference::Digest(signature_digest))
        .await
        .is_ok();
    let listed = registry
        .referrers("app", &subject.digest.parse().unwrap(), None, 1000, None)
        .await
        .unwrap()
        .index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["digest"] == signature.digest.as_str());
    assert!(!served || listed, "served: {served}, listed: {listed}");
}
