//! The driver's shared state and the S3 requests its operations are built from.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::SystemTime,
};

use aws_sdk_s3::{
    primitives::ByteStream as S3Body,
    types::{
        CompletedMultipartUpload, CompletedPart, Delete, ObjectCannedAcl, ObjectIdentifier,
        ServerSideEncryption, StorageClass,
    },
    Client,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::client::{collect, is_missing, map_err, once_unless_refused, resuming, status};
use crate::storage::{check_path, Result, StorageError};

pub(super) struct Inner {
    pub(super) client: Client,
    /// Signs redirect URLs for `redirectendpoint` (or the API endpoint).
    pub(super) presigner: Client,
    pub(super) bucket: String,
    /// `rootdirectory` without slashes at either end; may be empty.
    pub(super) root: String,
    pub(super) chunk_size: u64,
    /// Parts per upload: S3's 10,000 (lower only in tests).
    pub(super) max_parts: usize,
    pub(super) copy_chunk: u64,
    pub(super) copy_concurrency: usize,
    pub(super) copy_threshold: u64,
    /// How large reads are split into ranged GetObjects fetched ahead.
    pub(super) read_ahead: crate::storage::readahead::ReadAhead,
    pub(super) encryption: Option<(ServerSideEncryption, Option<String>)>,
    pub(super) storage_class: Option<StorageClass>,
    pub(super) acl: Option<ObjectCannedAcl>,
    pub(super) redirect: bool,
    pub(super) requests: Arc<AtomicU64>,
    /// Sizes of objects this driver just committed, so that the rename that
    /// follows a finished upload needs no HeadObject.
    pub(super) committed: Mutex<HashMap<String, u64>>,
    /// Writers' parts in flight, and aborts of dropped writers' multipart
    /// uploads, running in the background.
    pub(super) background: tokio_util::task::TaskTracker,
}

/// SSE, storage class and ACL, on every request that creates an object.
macro_rules! object_options {
    ($b:expr, $inner:expr) => {{
        let mut b = $b;
        if let Some((sse, key)) = &$inner.encryption {
            b = b.server_side_encryption(sse.clone());
            if let Some(k) = key {
                b = b.ssekms_key_id(k);
            }
        }
        if let Some(c) = &$inner.storage_class {
            b = b.storage_class(c.clone());
        }
        if let Some(acl) = &$inner.acl {
            b = b.acl(acl.clone());
        }
        b
    }};
}
pub(crate) use object_options;

impl Drop for Inner {
    fn drop(&mut self) {
        tracing::info!(
            bucket = %self.bucket,
            requests = self.requests.load(Ordering::Relaxed),
            "s3 driver closed"
        );
    }
}

/// Percent-encode a key for `x-amz-copy-source`, keeping its slashes.
pub(super) fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Inner {
    pub(super) fn key(&self, path: &str) -> Result<String> {
        check_path(path)?;
        Ok(match (self.root.is_empty(), path) {
            (true, "/") => String::new(),
            (true, _) => path[1..].to_string(),
            (false, "/") => self.root.clone(),
            (false, _) => format!("{}{path}", self.root),
        })
    }

    /// The prefix every key under the directory `path` starts with.
    pub(super) fn dir_prefix(&self, path: &str) -> Result<String> {
        let key = self.key(path)?;
        Ok(if key.is_empty() { key } else { key + "/" })
    }

    pub(super) fn path_of(&self, key: &str) -> String {
        if self.root.is_empty() {
            format!("/{key}")
        } else {
            key.strip_prefix(&self.root).unwrap_or(key).to_string()
        }
    }

    pub(super) fn remember_size(&self, key: &str, size: u64) {
        let mut m = self.committed.lock().unwrap();
        if m.len() >= 1024 {
            m.clear();
        }
        m.insert(key.to_string(), size);
    }

    pub(super) fn copy_source(&self, key: &str) -> String {
        format!("{}/{}", self.bucket, encode_key(key))
    }

    pub(super) async fn put(&self, key: &str, path: &str, body: Bytes) -> Result<()> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64)
            .body(S3Body::from(body));
        object_options!(req, self)
            .send()
            .await
            .map_err(|e| map_err("PutObject", path, e))?;
        Ok(())
    }

    pub(super) async fn get(&self, key: &str, path: &str) -> Result<Bytes> {
        let resp = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err("GetObject", path, e))?;
        collect(resuming(
            self.client.clone(),
            self.bucket.clone(),
            key.to_string(),
            0,
            resp,
        ))
        .await
    }

    /// Size of an object; `NotFound` when there is none.
    pub(super) async fn head(&self, key: &str, path: &str) -> Result<(u64, SystemTime)> {
        self.head_opt(key, path)
            .await?
            .ok_or_else(|| StorageError::NotFound(path.to_string()))
    }

    /// One HeadObject; `None` when the object is missing. A 5xx answer (file
    /// backed stores fail a HEAD of a key that is also a "directory") is
    /// settled by listing the key's level instead.
    pub(super) async fn head_opt(
        &self,
        key: &str,
        path: &str,
    ) -> Result<Option<(u64, SystemTime)>> {
        let e = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(r) => {
                return Ok(Some((
                    r.content_length().unwrap_or(0).max(0) as u64,
                    system_time(r.last_modified()),
                )))
            }
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => e,
        };
        let server_side = status(&e).is_some_and(|s| s >= 500);
        let err = map_err("HeadObject", path, e);
        if !server_side {
            return Err(err);
        }
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(key)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let Ok(page) = page else { return Err(err) };
            if let Some(o) = page.contents().iter().find(|o| o.key() == Some(key)) {
                let size = o.size().unwrap_or(0).max(0) as u64;
                return Ok(Some((size, system_time(o.last_modified()))));
            }
        }
        Ok(None)
    }

    /// Every key starting with `prefix`, all pages.
    pub(super) async fn list_all(&self, prefix: &str, path: &str) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err("ListObjectsV2", path, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
        }
        Ok(keys)
    }

    pub(super) async fn delete_keys(&self, keys: &[String], path: &str) -> Result<()> {
        if let [key] = keys {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| map_err("DeleteObject", path, e))?;
            return Ok(());
        }
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| StorageError::Backend(e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::Backend(e.to_string()))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| map_err("DeleteObjects", path, e))?;
            if let Some(err) = out.errors().first() {
                return Err(StorageError::Backend(format!(
                    "s3 DeleteObjects {path}: {} {}: {}",
                    err.key().unwrap_or_default(),
                    err.code().unwrap_or_default(),
                    err.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    pub(super) async fn abort(&self, key: &str, upload_id: &str) {
        let r = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = r {
            // Already completed or aborted: nothing left to clean.
            tracing::debug!(key, upload_id, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "s3 abort multipart upload");
        }
    }

    /// Copy in parts of `multipartcopychunksize`, up to
    /// `multipartcopymaxconcurrency` at once.
    pub(super) async fn multipart_copy(
        &self,
        src: &str,
        dst: &str,
        size: u64,
        path: &str,
    ) -> Result<()> {
        let created = object_options!(
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(dst),
            self
        )
        .customize()
        .config_override(once_unless_refused())
        .send()
        .await
        .map_err(|e| map_err("CreateMultipartUpload", path, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let ranges: Vec<(i32, u64, u64)> = (0..size.div_ceil(self.copy_chunk))
            .map(|i| {
                let start = i * self.copy_chunk;
                (i as i32 + 1, start, (start + self.copy_chunk).min(size) - 1)
            })
            .collect();
        let source = self.copy_source(src);
        let parts: Result<Vec<CompletedPart>> = futures::stream::iter(ranges)
            .map(|(n, start, end)| {
                let req = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(dst)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{end}"));
                async move {
                    let r = req
                        .send()
                        .await
                        .map_err(|e| map_err("UploadPartCopy", path, e))?;
                    let etag = r
                        .copy_part_result()
                        .and_then(|c| c.e_tag())
                        .unwrap_or_default();
                    Ok(CompletedPart::builder().part_number(n).e_tag(etag).build())
                }
            })
            .buffer_unordered(self.copy_concurrency)
            .try_collect()
            .await;
        let mut parts = match parts {
            Ok(p) => p,
            Err(e) => {
                self.abort(dst, &upload_id).await;
                return Err(e);
            }
        };
        parts.sort_by_key(|p| p.part_number());
        self.complete(dst, &upload_id, parts, path).await
    }

    pub(super) async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        path: &str,
    ) -> Result<()> {
        let r = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(once_unless_refused())
            .send()
            .await;
        if let Err(e) = r {
            self.abort(key, upload_id).await;
            return Err(map_err("CompleteMultipartUpload", path, e));
        }
        Ok(())
    }
}
