//! The repository index behind `/v2/_catalog`: one small object per
//! repository, kept in the storage itself so every replica sees it and no
//! other service is needed.
//!
//! ```text
//! /docker/registry/v2/berth-index/repositories/<name, '/' written as '!'>
//! /docker/registry/v2/berth-index/complete
//! ```
//!
//! The key of `a/b` is `a!b`: `!` sorts below every byte a repository name
//! may hold (`[a-z0-9._-]`), so the keys' byte order is the catalog's order
//! (one path component at a time, [`super::catalog::repository_order`]) and
//! a catalog page is one listing from `last`'s key — on S3 one ListObjectsV2
//! with StartAfter. distribution ignores the prefix (it walks
//! `repositories/` and `blobs/` only).
//!
//! A repository is listed while it has a manifest revision. Writes, in an
//! order that lets the collector remove entries while pushes run:
//! - a manifest PUT writes its revision link, then the entry if it is
//!   missing. A replica remembers the names it has seen present, so a
//!   steady push costs no request; while a garbage-collection sweep runs
//!   (the only time entries are removed) it looks again every time, and it
//!   forgets them all when a sweep starts or ends.
//! - `berth garbage-collect` adds what is missing and removes an entry whose
//!   repository has no revision left: delete, then look again and write it
//!   back if a revision appeared meanwhile (a push writes its link before
//!   its entry, so either the push's entry lands after the delete, or the
//!   second look sees the link).
//! - `berth index rebuild` walks `repositories/` and adds what is missing,
//!   so a bucket distribution wrote is indexed in place, while serving.
//!
//! The `complete` marker says the index holds every repository: written at
//! the end of a rebuild or a garbage collection, and by `berth serve` at
//! start (or a catalog request) on a storage with no repository yet. Without it the catalog walks
//! `repositories/` as distribution does (and logs once that a rebuild makes
//! it fast).

mod maintain;

use std::{
    collections::HashSet,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

use bytes::Bytes;

use super::{catalog::Page, error::Result, names::validate_name};
use crate::storage::{layout, Driver};

/// Names a replica remembers as indexed; past this many it starts afresh
/// (a forgotten name costs one request on its next push).
const KNOWN_MAX: usize = 100_000;
/// Entries read per request when the whole index is read (GC, rebuild).
const READ_PAGE: usize = 1000;
/// Directories listed, and repositories probed, at once by a rebuild.
const AT_ONCE: usize = 16;

/// Stands for `/` in an entry's key; below `-`, `.`, `_`, digits, letters.
const SEPARATOR: char = '!';

pub fn entries_dir() -> String {
    format!("{}/berth-index/repositories", layout::ROOT)
}

pub fn complete_marker() -> String {
    format!("{}/berth-index/complete", layout::ROOT)
}

/// The entry key (a single path segment) of a repository name.
pub fn key_of(name: &str) -> String {
    name.replace('/', &SEPARATOR.to_string())
}

/// The repository an entry key stands for, if it is a valid name.
pub fn name_of(key: &str) -> Option<String> {
    let name = key.replace(SEPARATOR, "/");
    validate_name(&name).ok().map(|_| name)
}

/// Where a page after `last` starts. `last` need not be a repository name
/// (the walk takes any); past 256 bytes it compares with every name (at most
/// 255) as its first 256 bytes do, and stays within the store's key length.
fn cursor(last: &str) -> String {
    let mut end = last.len().min(256);
    while !last.is_char_boundary(end) {
        end += 1;
    }
    key_of(&last[..end])
}

fn entry(name: &str) -> String {
    format!("{}/{}", entries_dir(), key_of(name))
}

/// What a rebuild (or a garbage collection's reconciliation) did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexReport {
    /// Repositories with a manifest revision.
    pub repositories: usize,
    /// Entries written because they were missing.
    pub added: usize,
    /// Entries removed because their repository has no revision left.
    pub removed: usize,
}

impl fmt::Display for IndexReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "repositories={} added={} removed={}",
            self.repositories, self.added, self.removed
        )
    }
}

/// The index as one replica uses it. Registry holds one, shared by its clones.
pub struct RepositoryIndex {
    driver: Driver,
    /// Names seen present in the index (see the module documentation).
    known: Mutex<HashSet<String>>,
    /// The `complete` marker was seen; it is never removed.
    complete: AtomicBool,
    /// The walk fallback was logged.
    told: AtomicBool,
}

impl RepositoryIndex {
    pub fn new(driver: Driver) -> RepositoryIndex {
        RepositoryIndex {
            driver,
            known: Mutex::new(HashSet::new()),
            complete: AtomicBool::new(false),
            told: AtomicBool::new(false),
        }
    }

    /// A manifest revision of `name` was just written: make sure the entry
    /// exists. `sweeping`: a garbage collection may be removing entries, so
    /// what this replica remembers proves nothing.
    pub async fn note(&self, name: &str, sweeping: bool) -> Result<()> {
        if !sweeping && self.known.lock().unwrap().contains(name) {
            return Ok(());
        }
        let path = entry(name);
        match self.driver.stat(&path).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                self.driver
                    .put_content(&path, Bytes::from(name.to_string()))
                    .await?
            }
            Err(e) => return Err(e.into()),
        }
        let mut known = self.known.lock().unwrap();
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        known.insert(name.to_string());
        Ok(())
    }

    /// A sweep started or ended: entries may have been removed.
    pub fn forget(&self) {
        self.known.lock().unwrap().clear();
    }

    /// At most `n` repositories after `last`, from the index; `None` when
    /// the index is not known complete (the caller walks instead).
    pub async fn page(&self, n: usize, last: Option<&str>) -> Result<Option<Page>> {
        if !self.is_complete().await? {
            return Ok(None);
        }
        let after = last.map(cursor);
        let page = match self
            .driver
            .list_page(&entries_dir(), after.as_deref(), n)
            .await
        {
            Ok(p) => p,
            Err(e) if e.is_not_found() => {
                return Ok(Some(Page {
                    items: vec![],
                    more: false,
                }))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Some(Page {
            // A stray object under the prefix is no repository: left out.
            items: page.names.iter().filter_map(|k| name_of(k)).collect(),
            more: page.more,
        }))
    }

    /// Is the `complete` marker there? On a storage with no repository at
    /// all, this writes it: an empty index is a complete one. When the
    /// answer is no, says once in the log how to make the catalog fast.
    pub async fn is_complete(&self) -> Result<bool> {
        if self.complete.load(Ordering::Relaxed) {
            return Ok(true);
        }
        match self.driver.stat(&complete_marker()).await {
            Ok(_) => {
                self.complete.store(true, Ordering::Relaxed);
                return Ok(true);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let empty = match self
            .driver
            .list_page(&layout::repositories_root(), None, 1)
            .await
        {
            Ok(p) => p.names.is_empty(),
            Err(e) if e.is_not_found() => true,
            Err(e) => return Err(e.into()),
        };
        if empty {
            self.mark_complete().await?;
        } else if !self.told.swap(true, Ordering::Relaxed) {
            tracing::warn!("the catalog walks every repository: this storage has no complete repository index; run `berth index rebuild` once to make it fast");
        }
        Ok(empty)
    }

    pub(crate) async fn mark_complete(&self) -> Result<()> {
        let body = serde_json::json!({
            "written": humantime::format_rfc3339(std::time::SystemTime::now()).to_string(),
        });
        self.driver
            .put_content(&complete_marker(), Bytes::from(body.to_string()))
            .await?;
        self.complete.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{atomic::AtomicUsize, Arc};

    use async_trait::async_trait;

    use super::*;
    use crate::registry::catalog::repository_order;
    use crate::storage::{
        inmemory::InMemoryDriver, ByteStream, FileInfo, FileWriter, Result as StorageResult,
        StorageDriver,
    };

    /// An in-memory store that counts requests and, when the entry of
    /// `app` is deleted, lands a push to `app` right then (its revision
    /// link): the window between the collector's delete and its second look.
    #[derive(Default)]
    struct Store {
        inner: InMemoryDriver,
        calls: AtomicUsize,
        push_on_delete: AtomicBool,
    }

    impl Store {
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
        fn count(&self) {
            self.calls.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl StorageDriver for Store {
        fn name(&self) -> &'static str {
            "store"
        }
        async fn get_content(&self, path: &str) -> StorageResult<Bytes> {
            self.count();
            self.inner.get_content(path).await
        }
        async fn put_content(&self, path: &str, content: Bytes) -> StorageResult<()> {
            self.count();
            self.inner.put_content(path, content).await
        }
        async fn reader(&self, p: &str, o: u64, l: Option<u64>) -> StorageResult<ByteStream> {
            self.count();
            self.inner.reader(p, o, l).await
        }
        async fn writer(&self, p: &str, o: u64) -> StorageResult<Box<dyn FileWriter>> {
            self.count();
            self.inner.writer(p, o).await
        }
        async fn stat(&self, path: &str) -> StorageResult<FileInfo> {
            self.count();
            self.inner.stat(path).await
        }
        async fn list(&self, path: &str) -> StorageResult<Vec<String>> {
            self.count();
            self.inner.list(path).await
        }
        async fn rename(&self, s: &str, d: &str) -> StorageResult<()> {
            self.count();
            self.inner.rename(s, d).await
        }
        async fn delete(&self, path: &str) -> StorageResult<()> {
            self.count();
            self.inner.delete(path).await?;
            if path == entry("app") && self.push_on_delete.load(Ordering::SeqCst) {
                revision(&self.inner, "app").await;
            }
            Ok(())
        }
    }

    async fn revision(d: &InMemoryDriver, name: &str) {
        let link = format!("{}/revisions/sha256/ab/link", layout::manifests_root(name));
        d.put_content(&link, Bytes::from_static(b"sha256:ab"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_steady_push_costs_nothing_but_not_during_a_sweep() {
        let store = Arc::new(Store::default());
        let index = RepositoryIndex::new(store.clone());
        index.note("app", false).await.unwrap();
        assert_eq!(store.calls(), 2, "a new repository: HEAD, PUT");
        index.note("app", false).await.unwrap();
        assert_eq!(store.calls(), 2, "known: no request");
        index.note("app", true).await.unwrap();
        assert_eq!(store.calls(), 3, "sweeping: looked at again");
        index.forget();
        index.note("app", false).await.unwrap();
        assert_eq!(store.calls(), 4, "forgotten at a sweep's edge");
        assert_eq!(
            index.entries().await.unwrap(),
            HashSet::from(["app".into()])
        );
    }

    #[tokio::test]
    async fn a_push_landing_during_the_removal_keeps_its_entry() {
        let store = Arc::new(Store::default());
        let index = RepositoryIndex::new(store.clone());
        // Indexed, no revision left (all deleted): the collector removes it.
        index.add("app").await.unwrap();
        index.add("old").await.unwrap();
        store.push_on_delete.store(true, Ordering::SeqCst);
        let report = index
            .reconcile(&HashSet::new(), &HashSet::new())
            .await
            .unwrap();
        assert_eq!(report.removed, 1, "old is removed, app comes back");
        assert_eq!(
            index.entries().await.unwrap(),
            HashSet::from(["app".into()])
        );
        assert!(index.has_revisions("app").await.unwrap());
        assert!(
            index.page(10, None).await.unwrap().is_some(),
            "marked complete"
        );
    }

    #[test]
    fn key_order_is_catalog_order() {
        let mut names = vec![
            "a", "a/b", "a-c", "a.d", "a_e", "a/b/c", "a/0b", "a0", "0x/y", "z", "a--b", "a__b",
            "ab/c", "a/b-c", "a/b/c-d", "a/b.c",
        ];
        names.sort_by(|a, b| repository_order(a, b));
        let mut keys: Vec<String> = names.iter().map(|n| key_of(n)).collect();
        keys.sort();
        let back: Vec<String> = keys.iter().map(|k| name_of(k).unwrap()).collect();
        assert_eq!(back, names);
        assert_eq!(name_of("not!!valid"), None);
        assert_eq!(name_of("UPPER"), None);
    }
}
