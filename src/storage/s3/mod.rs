//! S3 driver (Amazon S3 and compatible stores), on the AWS SDK.
//!
//! # Keys
//! A driver path `/docker/registry/v2/...` is the key
//! `<rootdirectory>/docker/registry/v2/...` (the root without its leading
//! slash), exactly as distribution's S3 driver stores it, so a bucket written
//! by distribution is served as it is. Directories are implied by the keys
//! beneath them.
//!
//! # Resumable writers: parts plus a durable tail
//! An upload's data is written through one S3 multipart upload on its key,
//! created when the first full part is ready. Every part but the last must be
//! at least 5 MiB, yet an upload's PATCH may end anywhere; so `close()`
//! uploads what it holds as a part when that is at least 5 MiB, and otherwise
//! keeps it in a small **state object** next to the data, `<key>.berth-upload`:
//! a header line (`BERTH-S3-UPLOAD 1`), one JSON line (the multipart upload id
//! and each part's number, size and ETag), then the tail bytes (< 5 MiB).
//!
//! `writer(path, offset)`, on any replica, reads that one object (a single GET:
//! no ListMultipartUploads / ListParts round trips), starts its buffer with the
//! tail and goes on numbering parts after the recorded ones. A writer's memory
//! is its buffer, reserved from the driver's [`BufferBudget`]: 5 MiB when it
//! opens (waiting for it, bounded), and for each part as much more, up to
//! `chunksize`, as is free at that moment — so under memory pressure parts
//! shrink towards 5 MiB rather than anyone waiting while holding memory. A
//! filled part goes out on a task of its own while the next one fills, a few
//! at a time, each holding budget of its own taken the same way ([`parts`]).
//! 10,000 parts is S3's limit: an upload that would need more ends with
//! `TooLarge`, its recorded state untouched. `commit()`
//! uploads the buffer as the last part and completes the multipart upload (or,
//! when no part was ever needed, writes the object with one PutObject), then
//! deletes the state object.
//!
//! Because the state is only rewritten by `close()`, a PATCH that failed
//! half-way leaves the previous state intact: its stray parts are overwritten
//! by the retry (same part numbers) or left out of the completion.
//!
//! Truncation (`offset` below the current size, a retried chunk) is exact when
//! `offset` falls in the tail or on a part boundary, and `offset == 0` starts
//! over; an offset inside an uploaded part is refused with `InvalidOffset`
//! (S3 cannot read back or shorten a part of an unfinished upload). Berth's
//! upload handler only resumes at the size the last PATCH reported, which is
//! always the recorded size. Resuming an already committed object copies its
//! first `offset` bytes server-side (UploadPartCopy) or, under 5 MiB, reads them.
//!
//! Abandoned uploads: deleting a path or directory aborts the multipart upload
//! named by every state object under it. An upload whose writer died between
//! creating the multipart upload and its first `close()` is recorded nowhere;
//! a bucket lifecycle rule `AbortIncompleteMultipartUpload` cleans those up.
//!
//! # Blobs written in place
//! A blob whose digest is known before its first byte (`PUT ?digest=` on a
//! fresh upload, `POST ?digest=`) needs no upload state and no commit copy:
//! [`StorageDriver::staged_writer`] is the same writer on the blob's own key,
//! with no state object, completed only once the registry has verified the
//! digest and aborted otherwise (or, when dropped, in the background:
//! [`S3Driver::settled`] waits for those aborts). Under one part it is one
//! PutObject after the verification, from the part buffer it already holds.
//!
//! # Requests
//! Every request is counted ([`S3Driver::requests`]); stat is one HeadObject
//! for an object (a ListObjectsV2 only when it is missing, to find a
//! directory; `stat_object`, for paths that cannot be directories, never
//! lists); rename is HeadObject + CopyObject (UploadPartCopy parts above
//! `multipartcopythresholdsize`, `multipartcopymaxconcurrency` at once) +
//! DeleteObject; `delete_known` is one DeleteObject(s) with no listing; a
//! `fresh_writer` does not read the state its caller just found missing, and
//! `resume_writer` reads it once to both check the caller's offset and go on.

mod client;
mod inner;
mod parts;
mod readahead;
mod writer;

pub use client::http_client;
pub use parts::MAX_IN_FLIGHT as PARTS_IN_FLIGHT;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use aws_sdk_s3::{
    presigning::PresigningConfig,
    types::{ObjectCannedAcl, ServerSideEncryption, StorageClass},
};
use bytes::Bytes;
use futures::StreamExt;

use self::{
    client::{map_err, status},
    inner::{object_options, system_time, Inner},
};
use super::{
    budget::BufferBudget, listing::PageCollector, ByteStream, FileInfo, FileWriter, ListPage,
    Result, Resume, StagedWriter, StorageDriver, StorageError,
};
use crate::config::{s3::MAX_SINGLE, S3Config};

pub(crate) use writer::STATE_SUFFIX;

/// How long a presigned redirect URL stays valid (distribution's figure).
const PRESIGN_TTL: Duration = Duration::from_secs(20 * 60);

pub struct S3Driver {
    inner: Arc<Inner>,
    /// Room for the writers' part buffers, shared by all of them.
    budget: BufferBudget,
}

impl S3Driver {
    /// A driver for `cfg`; `redirect_disabled` is `storage.redirect.disable`.
    /// No request is made here: credentials and connections come on first use.
    pub fn new(cfg: &S3Config, redirect_disabled: bool) -> std::result::Result<Self, String> {
        cfg.validate()?;
        let requests = Arc::new(AtomicU64::new(0));
        let endpoint = (!cfg.regionendpoint.is_empty()).then_some(cfg.regionendpoint.as_str());
        let client = client::build(cfg, endpoint, &requests);
        let presigner = if cfg.redirectendpoint.is_empty() {
            client.clone()
        } else {
            client::build(cfg, Some(&cfg.redirectendpoint), &requests)
        };
        let encryption = cfg.encrypt.then(|| {
            if cfg.keyid.is_empty() {
                (ServerSideEncryption::Aes256, None)
            } else {
                (ServerSideEncryption::AwsKms, Some(cfg.keyid.clone()))
            }
        });
        // STANDARD is S3's default: leaving it out suits stores that reject the header.
        let storage_class = match cfg.storageclass.as_str() {
            "" | "NONE" | "STANDARD" => None,
            c => Some(StorageClass::from(c)),
        };
        let acl = match cfg.objectacl.as_str() {
            "" | "private" => None,
            a => Some(ObjectCannedAcl::from(a)),
        };
        Ok(S3Driver {
            inner: Arc::new(Inner {
                client,
                presigner,
                bucket: cfg.bucket.clone(),
                root: cfg.root_prefix(),
                chunk_size: cfg.chunksize,
                max_parts: writer::MAX_PARTS,
                copy_chunk: cfg.multipartcopychunksize,
                copy_concurrency: cfg.multipartcopymaxconcurrency.min(1000) as usize,
                copy_threshold: cfg.multipartcopythresholdsize.min(MAX_SINGLE),
                read_ahead: crate::storage::readahead::ReadAhead {
                    threshold: cfg.readaheadthresholdsize,
                    chunk: cfg.readaheadchunksize,
                    ahead: cfg.readaheadmaxconcurrency as usize,
                },
                encryption,
                storage_class,
                acl,
                redirect: !redirect_disabled,
                requests,
                committed: Mutex::default(),
                background: Default::default(),
            }),
            budget: BufferBudget::default(),
        })
    }

    /// Take writers' part buffers from `budget` (`storage.uploadbuffers`)
    /// instead of a budget of the default size of its own.
    pub fn with_buffer_budget(mut self, budget: BufferBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Fewer parts per upload than S3's 10,000, so that tests reach the limit
    /// with little data. Call before the driver is used.
    #[doc(hidden)]
    pub fn with_part_limit(mut self, parts: usize) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_part_limit is called before the driver is shared")
            .max_parts = parts.clamp(1, writer::MAX_PARTS);
        self
    }

    /// HTTP requests sent to S3 so far (retries included; presigning is free).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Wait until the multipart uploads of writers dropped so far (requests
    /// cancelled mid-body) are aborted, and the parts in flight so far ended.
    pub async fn settled(&self) {
        let tasks = &self.inner.background;
        tasks.close();
        tasks.wait().await;
        tasks.reopen();
    }

    /// The key a driver path is stored under.
    pub fn key_for(&self, path: &str) -> Result<String> {
        self.inner.key(path)
    }
}

#[async_trait]
impl StorageDriver for S3Driver {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        let key = self.inner.key(path)?;
        self.inner.get(&key, path).await
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        let key = self.inner.key(path)?;
        self.inner.put(&key, path, content).await
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let inner = &self.inner;
        let key = inner.key(path)?;
        let empty = || Ok(futures::stream::empty().boxed());
        if len == Some(0) {
            let (size, _) = inner.head(&key, path).await?;
            return if offset <= size {
                empty()
            } else {
                Err(StorageError::InvalidOffset {
                    path: path.to_string(),
                    offset,
                })
            };
        }
        let plan = inner.read_ahead;
        let range = match len {
            None if offset == 0 => None,
            None => Some(format!("bytes={offset}-")),
            Some(l) => Some(format!(
                "bytes={offset}-{}",
                offset.saturating_add(plan.first_len(l)) - 1
            )),
        };
        let resp = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(&key)
            .set_range(range)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            // A range starting at (or past) the end: S3 answers 416.
            Err(e) if status(&e) == Some(416) => {
                let (size, _) = inner.head(&key, path).await?;
                return if offset == size {
                    empty()
                } else {
                    Err(StorageError::InvalidOffset {
                        path: path.to_string(),
                        offset,
                    })
                };
            }
            Err(e) => return Err(map_err("GetObject", path, e)),
        };
        Ok(match len {
            Some(l) if plan.splits(l) => readahead::stream(
                inner.clone(),
                self.budget.clone(),
                key,
                plan,
                offset,
                offset.saturating_add(l),
                resp,
            ),
            _ => client::resuming(
                inner.client.clone(),
                inner.bucket.clone(),
                key,
                offset,
                resp,
            ),
        })
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn FileWriter>> {
        writer::open(self.inner.clone(), &self.budget, path, offset).await
    }

    /// One read of the upload state, where `stored_size` + `writer` make two.
    async fn resume_writer(&self, path: &str, offset: u64) -> Result<Resume> {
        writer::resume(self.inner.clone(), &self.budget, path, offset).await
    }

    /// No upload state read: see [`writer::fresh`].
    async fn fresh_writer(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        writer::fresh(self.inner.clone(), &self.budget, path).await
    }

    /// A multipart upload on the object's own key (see [`writer::staged`]).
    async fn staged_writer(&self, path: &str) -> Result<Option<Box<dyn StagedWriter>>> {
        writer::staged(self.inner.clone(), &self.budget, path)
            .await
            .map(Some)
    }

    /// One HeadObject, no listing.
    async fn stat_object(&self, path: &str) -> Result<FileInfo> {
        let key = self.inner.key(path)?;
        let not_found = || StorageError::NotFound(path.to_string());
        if path == "/" {
            return Err(not_found());
        }
        let (size, modified) = self
            .inner
            .head_opt(&key, path)
            .await?
            .ok_or_else(not_found)?;
        Ok(FileInfo {
            path: path.to_string(),
            size,
            modified,
            is_dir: false,
        })
    }

    /// From the upload state object, where an unfinished object lives.
    async fn stored_size(&self, path: &str) -> Result<Option<u64>> {
        writer::stored_size(&self.inner, path).await
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let inner = &self.inner;
        let key = inner.key(path)?;
        if path != "/" {
            if let Some((size, modified)) = inner.head_opt(&key, path).await? {
                return Ok(FileInfo {
                    path: path.to_string(),
                    size,
                    modified,
                    is_dir: false,
                });
            }
        }
        let page = inner
            .client
            .list_objects_v2()
            .bucket(&inner.bucket)
            .prefix(inner.dir_prefix(path)?)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| map_err("ListObjectsV2", path, e))?;
        match page.contents().first() {
            Some(o) => Ok(FileInfo {
                path: path.to_string(),
                size: 0,
                modified: system_time(o.last_modified()),
                is_dir: true,
            }),
            None if path == "/" => Ok(FileInfo {
                path: path.to_string(),
                size: 0,
                modified: SystemTime::UNIX_EPOCH,
                is_dir: true,
            }),
            None => Err(StorageError::NotFound(path.to_string())),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let inner = &self.inner;
        let prefix = inner.dir_prefix(path)?;
        let mut pages = inner
            .client
            .list_objects_v2()
            .bucket(&inner.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut seen_any = false;
        let mut children = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err("ListObjectsV2", path, e))?;
            for key in page.contents().iter().filter_map(|o| o.key()) {
                seen_any = true;
                if key != prefix && !key.ends_with(STATE_SUFFIX) {
                    children.push(inner.path_of(key));
                }
            }
            for p in page.common_prefixes().iter().filter_map(|p| p.prefix()) {
                seen_any = true;
                children.push(inner.path_of(p.trim_end_matches('/')));
            }
        }
        if !seen_any && path != "/" {
            return Err(StorageError::NotFound(path.to_string()));
        }
        children.sort();
        children.dedup();
        Ok(children)
    }

    /// ListObjectsV2 from `StartAfter`, pages of 1,000, read only as far as
    /// the page needs (see [`super::listing`]); memory is one page of each.
    async fn list_page(&self, path: &str, after: Option<&str>, limit: usize) -> Result<ListPage> {
        let inner = &self.inner;
        let prefix = inner.dir_prefix(path)?;
        let mut page = PageCollector::new(after, limit);
        let mut token = None;
        let mut seen_any = false;
        loop {
            let resp = inner
                .client
                .list_objects_v2()
                .bucket(&inner.bucket)
                .prefix(&prefix)
                .delimiter("/")
                .set_start_after(after.map(|a| format!("{prefix}{a}")))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| map_err("ListObjectsV2", path, e))?;
            let objects = resp.contents().iter().filter_map(|o| o.key());
            let dirs = resp.common_prefixes().iter().filter_map(|p| p.prefix());
            let mut last_key: Option<&str> = None;
            for key in objects.chain(dirs) {
                seen_any = true;
                let rel = &key[prefix.len().min(key.len())..];
                last_key = last_key.max(Some(rel));
                let name = rel.trim_end_matches('/');
                if !name.is_empty() && !name.ends_with(STATE_SUFFIX) {
                    page.offer(name);
                }
            }
            let settled = last_key.is_some_and(|k| page.complete_after(k));
            token = resp.next_continuation_token().map(str::to_string);
            if settled || token.is_none() {
                break;
            }
        }
        if !seen_any && after.is_none() && path != "/" {
            return Err(StorageError::NotFound(path.to_string()));
        }
        Ok(page.finish())
    }

    async fn rename(&self, source: &str, dest: &str) -> Result<()> {
        let inner = &self.inner;
        let (src, dst) = (inner.key(source)?, inner.key(dest)?);
        let known = inner.committed.lock().unwrap().remove(&src);
        let size = match known {
            Some(size) => size,
            None => inner.head(&src, source).await?.0,
        };
        if size <= inner.copy_threshold {
            let req = inner
                .client
                .copy_object()
                .bucket(&inner.bucket)
                .key(&dst)
                .copy_source(inner.copy_source(&src));
            object_options!(req, inner)
                .send()
                .await
                .map_err(|e| map_err("CopyObject", source, e))?;
        } else {
            inner.multipart_copy(&src, &dst, size, source).await?;
        }
        inner.delete_keys(&[src], source).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let inner = &self.inner;
        let key = inner.key(path)?;
        let mut keys = inner.list_all(&inner.dir_prefix(path)?, path).await?;
        if keys.is_empty() && path != "/" {
            // Not a directory: an object, or an upload's state, or nothing.
            match inner.head(&key, path).await {
                Ok(_) => keys.push(key.clone()),
                Err(e) if e.is_not_found() => {
                    let state_key = format!("{key}{STATE_SUFFIX}");
                    if writer::abort_recorded(inner, &state_key, path).await? {
                        keys.push(state_key);
                    }
                }
                Err(e) => return Err(e),
            }
        } else {
            for state_key in keys.iter().filter(|k| k.ends_with(STATE_SUFFIX)) {
                writer::abort_recorded(inner, state_key, path).await?;
            }
        }
        if keys.is_empty() {
            return Err(StorageError::NotFound(path.to_string()));
        }
        inner.delete_keys(&keys, path).await
    }

    /// One DeleteObject (DeleteObjects for several): no listing of `dir`.
    async fn delete_known(&self, dir: &str, names: &[&str]) -> Result<()> {
        let inner = &self.inner;
        let keys = names
            .iter()
            .map(|n| inner.key(&format!("{dir}/{n}")))
            .collect::<Result<Vec<_>>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        inner.delete_keys(&keys, dir).await
    }

    async fn redirect_url(&self, path: &str, method: &str) -> Result<Option<String>> {
        let inner = &self.inner;
        if !inner.redirect {
            return Ok(None);
        }
        let key = inner.key(path)?;
        let cfg = PresigningConfig::expires_in(PRESIGN_TTL)
            .map_err(|e| StorageError::Backend(e.to_string()))?;
        let signed = match method {
            "GET" => inner
                .presigner
                .get_object()
                .bucket(&inner.bucket)
                .key(&key)
                .presigned(cfg)
                .await
                .map_err(|e| map_err("presign GetObject", path, e))?,
            "HEAD" => inner
                .presigner
                .head_object()
                .bucket(&inner.bucket)
                .key(&key)
                .presigned(cfg)
                .await
                .map_err(|e| map_err("presign HeadObject", path, e))?,
            _ => return Ok(None),
        };
        Ok(Some(signed.uri().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::{inner::encode_key, *};

    fn driver(root: &str) -> S3Driver {
        let cfg = S3Config {
            region: "us-east-1".into(),
            bucket: "b".into(),
            rootdirectory: root.into(),
            accesskey: "k".into(),
            secretkey: "s".into(),
            ..Default::default()
        };
        S3Driver::new(&cfg, false).unwrap()
    }

    #[test]
    fn keys_follow_distribution() {
        let d = driver("");
        assert_eq!(
            d.key_for("/docker/registry/v2/blobs").unwrap(),
            "docker/registry/v2/blobs"
        );
        assert_eq!(d.inner.dir_prefix("/").unwrap(), "");
        for root in ["/registry", "registry/", "/registry/"] {
            let d = driver(root);
            assert_eq!(
                d.key_for("/docker/registry/v2").unwrap(),
                "registry/docker/registry/v2"
            );
            assert_eq!(d.inner.dir_prefix("/").unwrap(), "registry/");
            assert_eq!(d.inner.path_of("registry/docker/x"), "/docker/x");
        }
        assert!(d.key_for("/a/../b").is_err());
    }

    #[test]
    fn copy_source_is_escaped() {
        assert_eq!(encode_key("a/b c+d"), "a/b%20c%2Bd");
    }
}
