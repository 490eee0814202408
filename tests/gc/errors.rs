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
    registry::{digest::Digest, error::Code, Registry},
    storage::{
        filesystem::FilesystemDriver, ByteStream, Driver, FileInfo, FileWriter, Result,
        StorageDriver, StorageError,
    },
};

use super::online::{age_everything, exists, one_hour_grace, upload};
use super::support::noise;

/// The real filesystem driver, except that deleting a repository's `_layers`
/// link fails (a storage outage, a permission error) — an error injected
/// where the sweep is half way through one blob.
struct LinkDeletesFail(Driver);

#[async_trait]
impl StorageDriver for LinkDeletesFail {
    fn name(&self) -> &'static str {
        "link-deletes-fail"
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
        if path.contains("/_layers/") {
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
    let collector =
        Registry::new(Arc::new(LinkDeletesFail(fs.clone())), b"s", true).with_cache(cache.clone());

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
