//! Azure Blob Storage driver: blob names `<rootdirectory>/docker/registry/v2/...`
//! in one container, as distribution's azure driver stores them.
//!
//! # Library
//!
//! [`object_store`]'s Azure client (Apache Arrow; built here with ring, no
//! aws-lc, no OpenSSL) does the ordinary calls: Put Blob, ranged streaming Get
//! with resume, Get Properties, paginated List. It also owns authentication —
//! shared key, SAS, Entra ID client secret, workload and managed identity —
//! and the HTTP client. Not used: the frozen `azure_storage_blobs` crate
//! (OpenSSL, old reqwest, no longer maintained) and the official
//! `azure_storage_blob` 1.x (no shared-key auth, which distribution's
//! `accountname` + `accountkey` needs).
//!
//! # Writers: raw Put Block / Put Block List
//!
//! object_store's multipart API does stage Azure blocks, but it cannot resume
//! one: it hides Get Block List, and its Put Block List names every block
//! `<Uncommitted>`, so blocks committed by an earlier request can never be
//! committed again with more appended. A writer that any replica continues
//! needs exactly that, so [`rest`] sends those calls itself — signed by
//! object_store's `AzureAuthorizer` with the store's own credential provider,
//! over the same HTTP client options:
//!
//! - `writer(path, offset)` reads the committed block list (Get Block List).
//!   Blocks that end at or before `offset` are kept; if `offset` falls inside a
//!   block (a retried chunk) the kept part of that block, `[block start,
//!   offset)`, is read back from the blob and staged again as a new block, so
//!   every offset up to the size works. A blob that is not made of Berth's
//!   blocks (written by Put Blob, or by another tool with other block-id
//!   lengths) is re-staged from 0 the same way. `offset` past the size is
//!   `InvalidOffset`, and the blob is left untouched.
//! - `write` stages 4 MiB blocks (Put Block), one in flight while the next
//!   fills — memory reserved from the driver's [`BufferBudget`]: one block
//!   when the writer opens (bounded wait, else `Busy`), the second only when
//!   free at that moment (else the block is sent before the next fills).
//! - `close` stages the rest and commits kept + new blocks (Put Block List,
//!   `<Committed>` then `<Uncommitted>`), so the blob is readable at its
//!   current size and the next PATCH, on any replica, resumes from the
//!   committed list. `commit` is the same call: a committed list is durable.
//! - The commit is conditional on the ETag the writer started from (or on the
//!   blob not existing), so of two writers racing on one upload the second
//!   fails with `Conflict` (a 416 for its PATCH) instead of interleaving, and
//!   the blob stays exactly as the first left it.
//!
//! # Blobs written in place
//!
//! [`StorageDriver::staged_writer`] (a blob whose digest is known before its
//! first byte) is the same block writer on the blob's own name, committed by
//! one Put Block List of exactly its own blocks — one Put Blob from memory
//! when it never filled a block — once the registry has verified the digest;
//! how it stays invisible until then and what two of them at once do is in
//! [`staged`].
//!
//! # Requests
//!
//! Every HTTP request is counted ([`AzureDriver::requests`]), object_store's
//! and [`rest`]'s alike: the client both use comes from [`counting`].
//!
//! # Other calls
//!
//! `rename` is Copy Blob (waiting while Azure reports the copy pending, as
//! distribution does) then Delete Blob; `delete` removes the blob and every
//! blob under `path/`; `list` gives the direct children of all pages, sorted.
//! `redirect_url` (unless `storage.redirect.disable`) is a read-only SAS URL
//! for one blob, valid 20 minutes, as distribution's — object_store's
//! [`Signer`], no SAS code here: a service SAS with a shared key (signed
//! locally, no request); a user delegation SAS with an Entra ID token, whose
//! key object_store fetches valid 12 hours, caches, and renews once under 2
//! hours remain (longer than any SAS it signs), so redirects cost a request
//! only at a renewal. With a SAS credential there is none and Berth serves
//! the bytes; so it does, with a warning, if signing fails (say the
//! identity may not get a delegation key).

mod counting;
mod rest;
mod staged;
mod writer;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::{
    azure::{MicrosoftAzure, MicrosoftAzureBuilder},
    client::HttpConnector,
    list::{PaginatedListOptions, PaginatedListStore},
    path::Path as ObjectPath,
    signer::Signer,
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use self::{
    counting::CountingConnector,
    rest::{backend, Condition, Rest},
    staged::AzureStaged,
    writer::{AzureWriter, BLOCK_ID_LEN},
};
use super::{
    budget::BufferBudget,
    check_path,
    listing::PageCollector,
    readahead::{self, ChunkSource, ReadAhead},
    ByteStream, FileInfo, FileWriter, ListPage, Result, StagedWriter, StorageDriver, StorageError,
};
use crate::config::azure::{AzureAuth, AzureSettings};

/// Concurrent deletes when removing a directory tree.
const DELETE_CONCURRENCY: usize = 16;
/// Names per List Blobs request when listing one page of a directory.
const LIST_PAGE: usize = 1000;

pub struct AzureDriver {
    store: MicrosoftAzure,
    rest: Arc<Rest>,
    /// `rootdirectory` without slashes; "" for the container's root.
    root: String,
    copy_polls: u32,
    copy_delay: Duration,
    redirect: bool,
    /// Room for the writers' block buffers, shared by all of them.
    budget: BufferBudget,
    /// HTTP requests sent so far ([`counting`]).
    requests: Arc<AtomicU64>,
    /// How large reads are split into ranged Gets fetched ahead.
    read_ahead: ReadAhead,
}

/// How long a redirect URL stays valid (distribution's value).
const REDIRECT_VALIDITY: Duration = Duration::from_secs(20 * 60);

/// A missing blob is `NotFound`; a request that could not connect, broke
/// off or timed out (after object_store's own retries) is `Unavailable`, a
/// retryable 503; anything else a backend error.
fn map_err(path: &str, e: object_store::Error) -> StorageError {
    use object_store::client::{HttpError, HttpErrorKind};
    match e {
        object_store::Error::NotFound { .. } => return StorageError::NotFound(path.to_string()),
        // Only conditional requests fail so: another writer got there first.
        object_store::Error::Precondition { .. } => {
            return StorageError::Conflict {
                path: path.to_string(),
            }
        }
        _ => {}
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let transient = std::iter::from_fn(|| {
        let current = source?;
        source = current.source();
        Some(current)
    })
    .filter_map(|err| err.downcast_ref::<HttpError>())
    .any(|h| {
        matches!(
            h.kind(),
            HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted
        )
    });
    if transient {
        StorageError::Unavailable(format!("azure: {e}"))
    } else {
        StorageError::Backend(format!("azure: {e}"))
    }
}

impl AzureDriver {
    pub fn new(s: &AzureSettings) -> Result<AzureDriver> {
        let url = url::Url::parse(&s.service_url).map_err(|e| backend("serviceurl", e))?;
        let options = ClientOptions::new()
            .with_allow_http(url.scheme() == "http")
            .with_connect_timeout(Duration::from_secs(10))
            // Whole requests may be long (a slow client pulling a large layer
            // applies back-pressure); a stalled read is what fails.
            .with_timeout(Duration::from_secs(600))
            .with_read_timeout(Duration::from_secs(60));
        let mut retry = RetryConfig::default();
        if let Some(n) = s.max_retries {
            retry.max_retries = n as usize;
        }
        if let Some(d) = s.retry_delay {
            retry.backoff.init_backoff = d;
        }
        let builder = match &s.auth {
            // Ambient identity: AZURE_* variables, then managed identity.
            AzureAuth::Default => MicrosoftAzureBuilder::from_env(),
            _ => MicrosoftAzureBuilder::new(),
        };
        let requests = Arc::new(AtomicU64::new(0));
        let connector = CountingConnector(requests.clone());
        let builder = builder
            .with_http_connector(connector.clone())
            .with_account(&s.account)
            .with_container_name(&s.container)
            .with_endpoint(s.service_url.clone())
            .with_client_options(options.clone())
            .with_retry(retry);
        let builder = match &s.auth {
            AzureAuth::SharedKey { key } => builder.with_access_key(key),
            AzureAuth::ClientSecret {
                client_id,
                tenant_id,
                secret,
            } => builder.with_client_secret_authorization(client_id, secret, tenant_id),
            AzureAuth::Default => builder,
        };
        let store = builder.build().map_err(|e| backend("configuration", e))?;
        let http = connector
            .connect(&options)
            .map_err(|e| backend("http client", e))?;
        let mut container_url = url;
        container_url
            .path_segments_mut()
            .map_err(|_| backend("serviceurl", "cannot be a base URL"))?
            .pop_if_empty()
            .push(&s.container);
        let rest = Arc::new(Rest {
            http,
            credentials: store.credentials().clone(),
            account: s.account.clone(),
            container_url,
            tasks: Default::default(),
        });
        Ok(AzureDriver {
            store,
            rest,
            root: s.root.clone(),
            copy_polls: s.copy_poll_retries,
            copy_delay: s.copy_poll_delay,
            redirect: false,
            budget: BufferBudget::default(),
            requests,
            read_ahead: ReadAhead {
                threshold: s.read_ahead.0,
                chunk: s.read_ahead.1,
                ahead: s.read_ahead.2,
            },
        })
    }

    /// HTTP requests sent to Azure so far (each attempt of a retried call;
    /// signing a SAS locally is free).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Wait until the blocks that dropped writers were sending (requests
    /// cancelled mid-body) have stopped.
    pub async fn settled(&self) {
        let tasks = &self.rest.tasks;
        tasks.close();
        tasks.wait().await;
        tasks.reopen();
    }

    /// How many blocks are staged at `path` and not committed (what a staged
    /// writer sent and nobody committed: Azure discards them after 7 days or
    /// at the next commit there). For tests and diagnostics.
    pub async fn uncommitted_blocks(&self, path: &str) -> Result<usize> {
        let key = self.key(path)?;
        Ok(self.rest.uncommitted(&key).await?.map_or(0, |b| b.len()))
    }

    /// Take writers' block buffers from `budget` (`storage.uploadbuffers`)
    /// instead of a budget of the default size of its own.
    pub fn with_buffer_budget(mut self, budget: BufferBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Offer clients SAS URLs for blob reads (`storage.redirect.disable: false`).
    pub fn with_redirect(mut self, redirect: bool) -> Self {
        self.redirect = redirect;
        self
    }

    /// Create the container if it does not exist (tests, first runs against
    /// Azurite). Berth itself never calls this: like distribution, it expects
    /// the container to exist.
    pub async fn create_container(&self) -> Result<()> {
        self.rest.create_container().await
    }

    /// The blob name of an object path.
    fn key(&self, path: &str) -> Result<String> {
        check_path(path)?;
        if path == "/" {
            return Err(StorageError::InvalidPath(path.to_string()));
        }
        Ok(if self.root.is_empty() {
            path[1..].to_string()
        } else {
            format!("{}{path}", self.root)
        })
    }

    /// The name prefix of a directory path, without the trailing slash
    /// ("" for the container's root).
    fn dir_key(&self, path: &str) -> Result<String> {
        check_path(path)?;
        if path == "/" {
            Ok(self.root.clone())
        } else {
            self.key(path)
        }
    }

    fn object_path(key: &str) -> Result<ObjectPath> {
        ObjectPath::parse(key).map_err(|e| StorageError::InvalidPath(format!("{key}: {e}")))
    }

    /// The driver path of a blob name under the root.
    fn driver_path(&self, key: &str) -> String {
        if self.root.is_empty() {
            format!("/{key}")
        } else {
            key.strip_prefix(&self.root).unwrap_or(key).to_string()
        }
    }

    /// Stream `[offset, offset + len)` of an existing blob, optionally only
    /// while it still has `etag`.
    async fn get_range(
        &self,
        path: &str,
        key: &str,
        offset: u64,
        len: Option<u64>,
        etag: Option<String>,
    ) -> Result<ByteStream> {
        Ok(ranged_get(&self.store, path, key, offset, len, etag)
            .await?
            .0)
    }
}

/// A ranged Get of `[offset, offset + len)` (only while the blob has
/// `etag`, if given): its body and the ETag of the version it reads.
async fn ranged_get(
    store: &MicrosoftAzure,
    path: &str,
    key: &str,
    offset: u64,
    len: Option<u64>,
    etag: Option<String>,
) -> Result<(ByteStream, Option<String>)> {
    let range = match len {
        Some(l) => GetRange::Bounded(offset..offset + l),
        None => GetRange::Offset(offset),
    };
    let opts = GetOptions {
        range: Some(range),
        if_match: etag,
        ..Default::default()
    };
    let result = store
        .get_opts(&AzureDriver::object_path(key)?, opts)
        .await
        .map_err(|e| map_err(path, e))?;
    let version = result.meta.e_tag.clone();
    let body = result
        .into_stream()
        .map_err(|e| std::io::Error::other(format!("azure read: {e}")))
        .boxed();
    Ok((body, version))
}

/// The later chunks of one large read (see [`crate::storage::readahead`]):
/// ranged Gets of the version the first answer was.
struct Chunks {
    store: MicrosoftAzure,
    path: String,
    key: String,
    etag: Option<String>,
}

impl ChunkSource for Chunks {
    fn open(
        &self,
        start: u64,
        end: u64,
    ) -> futures::future::BoxFuture<'static, std::io::Result<ByteStream>> {
        let (store, path, key, etag) = (
            self.store.clone(),
            self.path.clone(),
            self.key.clone(),
            self.etag.clone(),
        );
        async move {
            ranged_get(&store, &path, &key, start, Some(end - start), etag)
                .await
                .map(|(body, _)| body)
                .map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e.to_string())
                })
        }
        .boxed()
    }
}

#[async_trait]
impl StorageDriver for AzureDriver {
    fn name(&self) -> &'static str {
        "azure"
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        let key = self.key(path)?;
        let result = self
            .store
            .get(&Self::object_path(&key)?)
            .await
            .map_err(|e| map_err(path, e))?;
        result.bytes().await.map_err(|e| map_err(path, e))
    }

    /// One Put Blob: atomic, durable when Azure answers.
    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        let key = self.key(path)?;
        self.store
            .put(&Self::object_path(&key)?, PutPayload::from_bytes(content))
            .await
            .map_err(|e| map_err(path, e))?;
        Ok(())
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let key = self.key(path)?;
        // A large read: the first chunk now, the rest fetched ahead.
        if let Some(l) = len.filter(|l| self.read_ahead.splits(*l)) {
            let first = self.read_ahead.first_len(l);
            match ranged_get(&self.store, path, &key, offset, Some(first), None).await {
                Ok((head, etag)) => {
                    let chunks = Arc::new(Chunks {
                        store: self.store.clone(),
                        path: path.to_string(),
                        key,
                        etag,
                    });
                    let end = offset.saturating_add(l);
                    return Ok(readahead::stream(
                        chunks,
                        self.budget.clone(),
                        self.read_ahead,
                        offset,
                        end,
                        head,
                    ));
                }
                Err(e) if e.is_not_found() => return Err(e),
                // A range past the end (416): decided below.
                Err(_) => {}
            }
        }
        if len != Some(0) {
            match self.get_range(path, &key, offset, len, None).await {
                Ok(s) => return Ok(s),
                Err(e) if e.is_not_found() => return Err(e),
                // Azure refuses a range starting at the end (416): decide below.
                Err(_) => {}
            }
        }
        let size = self.stat(path).await?.size;
        match offset.cmp(&size) {
            std::cmp::Ordering::Greater => Err(StorageError::InvalidOffset {
                path: path.to_string(),
                offset,
            }),
            _ if len == Some(0) || offset == size => Ok(futures::stream::empty().boxed()),
            // The object grew between the two calls: read again.
            _ => self.get_range(path, &key, offset, len, None).await,
        }
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn FileWriter>> {
        let key = self.key(path)?;
        // Room for one block first; `Busy` leaves the blob as it was.
        let room = self.budget.reserve(writer::BLOCK_SIZE as u64).await?;
        let (blocks, size, etag, exists) = match self.rest.block_list(&key).await? {
            Some(l) => match (l.size, l.etag) {
                (Some(size), Some(etag)) => (l.blocks, size, Some(etag), true),
                // Azure may leave these out for a blob without committed blocks.
                _ => {
                    let meta = self
                        .store
                        .head(&Self::object_path(&key)?)
                        .await
                        .map_err(|e| map_err(path, e))?;
                    (l.blocks, meta.size, meta.e_tag, true)
                }
            },
            None => (Vec::new(), 0, None, false),
        };
        if offset > size {
            return Err(StorageError::InvalidOffset {
                path: path.to_string(),
                offset,
            });
        }
        // Keep the committed blocks that end at or before `offset`, if the blob
        // is made of Berth's blocks; anything else is staged again from the blob.
        let ours = blocks.iter().all(|b| b.id.len() == BLOCK_ID_LEN)
            && blocks.iter().map(|b| b.size).sum::<u64>() == size;
        let mut kept = Vec::new();
        let mut at = 0;
        if ours {
            for b in &blocks {
                if at + b.size > offset {
                    break;
                }
                kept.push(b.id.clone());
                at += b.size;
            }
        }
        let condition = match (&etag, exists) {
            (_, false) => Condition::IfNoneMatch,
            (Some(e), true) => Condition::IfMatch(e.clone()),
            (None, true) => Condition::None,
        };
        let mut w = Box::new(AzureWriter::new(
            self.rest.clone(),
            key.clone(),
            kept,
            at,
            condition,
            (room, self.budget.clone()),
        ));
        if at < offset {
            let mut prefix = self
                .get_range(path, &key, at, Some(offset - at), etag)
                .await?;
            while let Some(chunk) = prefix.next().await {
                w.write(chunk?).await?;
            }
            if w.size() != offset {
                return Err(StorageError::Conflict {
                    path: path.to_string(),
                });
            }
        }
        Ok(w)
    }

    /// Blocks staged on the blob's own name, committed by one Put Block
    /// List (one Put Blob under a block) once verified (see [`staged`]).
    async fn staged_writer(&self, path: &str) -> Result<Option<Box<dyn StagedWriter>>> {
        let key = self.key(path)?;
        let room = self.budget.reserve(writer::BLOCK_SIZE as u64).await?;
        let w = AzureWriter::new(
            self.rest.clone(),
            key,
            Vec::new(),
            0,
            Condition::None,
            (room, self.budget.clone()),
        );
        Ok(Some(Box::new(AzureStaged(Box::new(w)))))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let dir = self.dir_key(path)?;
        if path != "/" {
            match self.store.head(&Self::object_path(&dir)?).await {
                Ok(meta) => {
                    return Ok(FileInfo {
                        path: path.to_string(),
                        size: meta.size,
                        modified: meta.last_modified.into(),
                        is_dir: false,
                    })
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map_err(path, e)),
            }
        }
        // A directory exists while some blob lies beneath it.
        let prefix = if dir.is_empty() {
            None
        } else {
            Some(format!("{dir}/"))
        };
        let page = self
            .store
            .list_paginated(
                prefix.as_deref(),
                PaginatedListOptions {
                    max_keys: Some(1),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| map_err(path, e))?;
        match page.result.objects.first() {
            Some(meta) => Ok(FileInfo {
                path: path.to_string(),
                size: 0,
                modified: meta.last_modified.into(),
                is_dir: true,
            }),
            None => Err(StorageError::NotFound(path.to_string())),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let dir = self.dir_key(path)?;
        let prefix = if dir.is_empty() {
            None
        } else {
            Some(Self::object_path(&dir)?)
        };
        // object_store follows every continuation token.
        let result = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| map_err(path, e))?;
        let mut out: Vec<String> = result
            .common_prefixes
            .iter()
            .chain(result.objects.iter().map(|o| &o.location))
            .map(|p| self.driver_path(p.as_ref()))
            .collect();
        if out.is_empty() {
            return Err(StorageError::NotFound(path.to_string()));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// List Blobs page by page (Azure has no start-after: pages before
    /// `after` are read and dropped), only as far as the page needs (see
    /// [`super::listing`]); memory is one page of each.
    async fn list_page(&self, path: &str, after: Option<&str>, limit: usize) -> Result<ListPage> {
        let dir = self.dir_key(path)?;
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut page = PageCollector::new(after, limit);
        let mut token = None;
        let mut seen_any = false;
        loop {
            let opts = PaginatedListOptions {
                delimiter: Some("/".into()),
                max_keys: Some(LIST_PAGE),
                page_token: token.take(),
                ..Default::default()
            };
            let resp = self
                .store
                .list_paginated((!prefix.is_empty()).then_some(prefix.as_str()), opts)
                .await
                .map_err(|e| map_err(path, e))?;
            let objects = resp.result.objects.iter().map(|o| o.location.to_string());
            let dirs = resp.result.common_prefixes.iter().map(|p| format!("{p}/"));
            let mut last_key: Option<String> = None;
            for key in objects.chain(dirs) {
                seen_any = true;
                let rel = key.get(prefix.len()..).unwrap_or_default().to_string();
                let name = rel.trim_end_matches('/');
                if !name.is_empty() {
                    page.offer(name);
                }
                if last_key.as_ref().is_none_or(|k| rel > *k) {
                    last_key = Some(rel);
                }
            }
            let settled = last_key.is_some_and(|k| page.complete_after(&k));
            token = resp.page_token;
            if settled || token.is_none() {
                break;
            }
        }
        if !seen_any {
            return Err(StorageError::NotFound(path.to_string()));
        }
        Ok(page.finish())
    }

    async fn rename(&self, source: &str, dest: &str) -> Result<()> {
        let (from, to) = (self.key(source)?, self.key(dest)?);
        if from == to {
            // Copying onto itself and then deleting the source would lose it.
            return self.stat(source).await.map(|_| ());
        }
        if !self
            .rest
            .copy(&from, &to, self.copy_polls, self.copy_delay)
            .await?
        {
            return Err(StorageError::NotFound(source.to_string()));
        }
        self.rest.delete(&from).await?;
        Ok(())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let dir = self.dir_key(path)?;
        let mut deleted = path != "/" && self.rest.delete(&dir).await?;
        let prefix = if dir.is_empty() {
            None
        } else {
            Some(Self::object_path(&dir)?)
        };
        let rest = &self.rest;
        let count = self
            .store
            .list(prefix.as_ref())
            .map_err(|e| map_err(path, e))
            .map(|meta| async move {
                let meta = meta?;
                rest.delete(meta.location.as_ref()).await
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_fold(0usize, |n, gone| async move { Ok(n + gone as usize) })
            .await?;
        deleted |= count > 0;
        if deleted {
            Ok(())
        } else {
            Err(StorageError::NotFound(path.to_string()))
        }
    }

    async fn redirect_url(&self, path: &str, method: &str) -> Result<Option<String>> {
        if !self.redirect || !matches!(method, "GET" | "HEAD") {
            return Ok(None);
        }
        let key = self.key(path)?;
        // A SAS credential cannot sign another SAS: serve the bytes, quietly
        // (the credential is cached, so asking costs no request).
        if let Ok(c) = self.rest.credentials.get_credential().await {
            if matches!(*c, object_store::azure::AzureCredential::SASToken(_)) {
                return Ok(None);
            }
        }
        match self
            .store
            .signed_url(
                http::Method::GET,
                &Self::object_path(&key)?,
                REDIRECT_VALIDITY,
            )
            .await
        {
            Ok(url) => Ok(Some(url.to_string())),
            Err(e) => {
                // Still a working pull, but not the one configured (an
                // identity without the Storage Blob Delegator role, say).
                tracing::warn!(error = %e, "azure: no redirect URL; serving the blob");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::azure::AzureConfig;

    fn settings(yaml_auth: &str) -> AzureSettings {
        // The driver's reqwest takes the process-default provider, which
        // `main` installs in the server.
        crate::config::tls::install_default_provider();
        let cfg: AzureConfig = serde_json::from_str(yaml_auth).unwrap();
        cfg.settings().unwrap()
    }

    /// Building needs no network, but does build the HTTPS client (which
    /// needs a TLS provider) and each credential provider.
    #[test]
    fn builds_for_every_auth_method() {
        for cfg in [
            r#"{"accountname":"a","container":"reg","accountkey":"a2V5"}"#,
            r#"{"accountname":"a","container":"reg","credentials":{"type":"client_secret","clientid":"c","tenantid":"t","secret":"s"}}"#,
            r#"{"accountname":"a","container":"reg","credentials":{"type":"default"}}"#,
        ] {
            let d = AzureDriver::new(&settings(cfg)).unwrap();
            assert_eq!(
                d.rest.blob_url("x/y z").as_str(),
                "https://a.blob.core.windows.net/reg/x/y%20z"
            );
        }
    }

    #[tokio::test]
    async fn redirects_only_when_enabled() {
        let cfg =
            r#"{"accountname":"a","container":"reg","accountkey":"a2V5","rootdirectory":"r"}"#;
        let d = AzureDriver::new(&settings(cfg)).unwrap();
        assert_eq!(d.redirect_url("/x/data", "GET").await.unwrap(), None);
        let d = d.with_redirect(true);
        let url = d.redirect_url("/x/data", "GET").await.unwrap().unwrap();
        assert!(
            url.starts_with("https://a.blob.core.windows.net/reg/r/x/data?")
                && url.contains("sp=r")
                && url.contains("sig="),
            "{url}"
        );
        assert_eq!(d.redirect_url("/x/data", "PUT").await.unwrap(), None);
    }

    #[test]
    fn names_under_the_root() {
        let d = AzureDriver::new(&settings(
            r#"{"accountname":"a","container":"reg","accountkey":"a2V5","rootdirectory":"/r/s/","serviceurl":"http://127.0.0.1:1/acct/"}"#,
        ))
        .unwrap();
        assert_eq!(d.key("/docker/x").unwrap(), "r/s/docker/x");
        assert_eq!(d.dir_key("/").unwrap(), "r/s");
        assert_eq!(d.driver_path("r/s/docker/x"), "/docker/x");
        assert!(d.key("/").is_err() && d.key("/a/../b").is_err());
        assert_eq!(
            d.rest.blob_url("r/s/docker/x").as_str(),
            "http://127.0.0.1:1/acct/reg/r/s/docker/x"
        );
        let bare = AzureDriver::new(&settings(
            r#"{"accountname":"a","container":"reg","accountkey":"a2V5"}"#,
        ))
        .unwrap();
        assert_eq!(bare.key("/docker/x").unwrap(), "docker/x");
        assert_eq!(bare.dir_key("/").unwrap(), "");
        assert_eq!(bare.driver_path("docker/x"), "/docker/x");
    }
}
