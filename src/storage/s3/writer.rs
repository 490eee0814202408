//! The resumable writer: multipart parts plus a durable tail in a state
//! object (see the module documentation of [`super`]).

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::types::CompletedPart;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{
    client::{collect, map_err, once_unless_refused, resuming},
    inner::{object_options, Inner},
    parts::{Pipeline, Target, MAX_IN_FLIGHT},
};
use crate::{
    config::s3::{MAX_SINGLE, MIN_PART},
    storage::{
        budget::{BufferBudget, Reservation},
        FileWriter, Result, Resume, StagedWriter, StorageError,
    },
};

/// Appended to an object's key to name its upload state.
pub(crate) const STATE_SUFFIX: &str = ".berth-upload";
const MAGIC: &[u8] = b"BERTH-S3-UPLOAD 1\n";
/// S3's limit of parts per multipart upload.
pub(super) const MAX_PARTS: usize = 10_000;
/// Extra budget for a part beyond its 5 MiB is taken in steps of this size.
const EXTRA_STEP: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Part {
    pub n: i32,
    pub size: u64,
    pub etag: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Header {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upload_id: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

fn encode(h: &Header, tail: &[u8]) -> Bytes {
    let json = serde_json::to_vec(h).expect("header serializes");
    let mut out = BytesMut::with_capacity(MAGIC.len() + json.len() + 1 + tail.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n");
    out.extend_from_slice(tail);
    out.freeze()
}

fn decode(data: Bytes, path: &str) -> Result<(Header, Bytes)> {
    let bad = || StorageError::Backend(format!("s3 upload state of {path} is not readable"));
    let rest = data.strip_prefix(MAGIC).ok_or_else(bad)?;
    let nl = rest.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
    let header: Header = serde_json::from_slice(&rest[..nl]).map_err(|_| bad())?;
    let start = MAGIC.len() + nl + 1;
    Ok((header, data.slice(start..)))
}

/// Read the state object at `state_key`, if there is one.
async fn read_state(inner: &Inner, state_key: &str, path: &str) -> Result<Option<(Header, Bytes)>> {
    match inner.get(state_key, path).await {
        Ok(data) => decode(data, path).map(Some),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The size a writer at `path` would resume from: the recorded parts plus
/// the tail; `None` without an upload state (nothing closed yet, or
/// committed). One GetObject: an upload's first chunk pays one request more,
/// not two (no HeadObject for a committed object, which an upload's data
/// only is between its commit and its rename).
pub(super) async fn stored_size(inner: &Inner, path: &str) -> Result<Option<u64>> {
    let key = inner.key(path)?;
    let state = read_state(inner, &format!("{key}{STATE_SUFFIX}"), path).await?;
    Ok(state.map(|(header, tail)| {
        let parts: u64 = header.parts.iter().map(|p| p.size).sum();
        parts + tail.len() as u64
    }))
}

/// Abort the multipart upload a state object records. Whether the state existed.
pub(super) async fn abort_recorded(inner: &Inner, state_key: &str, path: &str) -> Result<bool> {
    let Some((header, _)) = read_state(inner, state_key, path).await? else {
        return Ok(false);
    };
    if let Some(id) = header.upload_id {
        let key = state_key.strip_suffix(STATE_SUFFIX).unwrap_or(state_key);
        inner.abort(key, &id).await;
    }
    Ok(true)
}

pub(super) struct S3Writer {
    inner: Arc<Inner>,
    path: String,
    key: String,
    upload_id: Option<String>,
    /// Parts answered by the store, in order.
    parts: Vec<Part>,
    parts_size: u64,
    /// Parts sent after those, not answered yet (see [`super::parts`]).
    inflight: Pipeline,
    /// The part being filled; allocated at its full size when it starts, so
    /// it never grows (and never holds more than its reservation).
    buf: BytesMut,
    /// The size of the part being filled (0: none started).
    target: usize,
    /// 5 MiB held for the writer's whole life: with it a writer can always
    /// finish a part without waiting for more (see [`crate::storage::budget`]).
    _base: Reservation,
    /// What the current part has beyond 5 MiB, when the budget had it free;
    /// it goes with the part when it is sent.
    extra: Option<Reservation>,
    budget: BufferBudget,
    /// A state object exists for this key (rewrite or delete it at the end).
    state_exists: bool,
    /// Anything to record at `close()`.
    dirty: bool,
    /// An upload this writer replaced (a restart at 0), aborted once the new
    /// state is recorded.
    stale_upload: Option<String>,
    /// This writer created `upload_id` and no state records it yet.
    unrecorded: bool,
    /// `commit` is sending the last part.
    finishing: bool,
}

fn invalid(path: &str, offset: u64) -> StorageError {
    StorageError::InvalidOffset {
        path: path.to_string(),
        offset,
    }
}

pub(super) async fn open(
    inner: Arc<Inner>,
    budget: &BufferBudget,
    path: &str,
    offset: u64,
) -> Result<Box<dyn FileWriter>> {
    let key = inner.key(path)?;
    // Room first (the state's tail is read into it); `Busy` leaves all as it was.
    let base = budget.reserve(MIN_PART).await?;
    let state = read_state(&inner, &format!("{key}{STATE_SUFFIX}"), path).await?;
    let mut w = S3Writer::new(inner, budget, path, key, base);
    w.state_exists = state.is_some();
    match state {
        Some((header, tail)) => w.continue_state(header, tail, offset)?,
        None if offset == 0 => {}
        None => {
            // Continuing an object already committed at this path.
            let (size, _) = match w.inner.head(&w.key, path).await {
                Err(e) if e.is_not_found() => return Err(invalid(path, offset)),
                other => other?,
            };
            if offset > size {
                return Err(invalid(path, offset));
            }
            if offset < MIN_PART {
                let body = w.read_prefix(offset).await?;
                w.begin_part();
                w.buf.extend_from_slice(&body);
            } else {
                w.copy_prefix(offset).await?;
            }
            w.dirty = true;
        }
    }
    Ok(Box::new(w))
}

/// A writer continuing the recorded upload exactly at `offset`, from one read
/// of its state; where the state says another size (or there is none),
/// that, and nothing is touched (see
/// [`crate::storage::StorageDriver::resume_writer`]).
pub(super) async fn resume(
    inner: Arc<Inner>,
    budget: &BufferBudget,
    path: &str,
    offset: u64,
) -> Result<Resume> {
    let key = inner.key(path)?;
    let base = budget.reserve(MIN_PART).await?;
    let Some((header, tail)) = read_state(&inner, &format!("{key}{STATE_SUFFIX}"), path).await?
    else {
        return Ok(Resume::Elsewhere(None));
    };
    let size = header.parts.iter().map(|p| p.size).sum::<u64>() + tail.len() as u64;
    if size != offset {
        return Ok(Resume::Elsewhere(Some(size)));
    }
    let mut w = S3Writer::new(inner, budget, path, key, base);
    w.state_exists = true;
    w.continue_state(header, tail, offset)?;
    Ok(Resume::Writer(Box::new(w)))
}

/// A writer at offset 0 where the caller has just seen no upload state (see
/// [`crate::storage::StorageDriver::fresh_writer`]): the state is not read
/// again.
pub(super) async fn fresh(
    inner: Arc<Inner>,
    budget: &BufferBudget,
    path: &str,
) -> Result<Box<dyn FileWriter>> {
    let key = inner.key(path)?;
    let base = budget.reserve(MIN_PART).await?;
    Ok(Box::new(S3Writer::new(inner, budget, path, key, base)))
}

/// A writer straight at `path`'s key with no upload state at all: parts of
/// one multipart upload, completed by `commit` (or one PutObject when it
/// never filled a part); aborted by `abort` or when dropped.
pub(super) async fn staged(
    inner: Arc<Inner>,
    budget: &BufferBudget,
    path: &str,
) -> Result<Box<dyn StagedWriter>> {
    let key = inner.key(path)?;
    let base = budget.reserve(MIN_PART).await?;
    Ok(Box::new(Staged(S3Writer::new(
        inner, budget, path, key, base,
    ))))
}

struct Staged(S3Writer);

#[async_trait]
impl StagedWriter for Staged {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        FileWriter::write(&mut self.0, chunk).await
    }

    fn size(&self) -> u64 {
        self.0.size()
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        Box::new(self.0).commit().await
    }

    async fn abort(mut self: Box<Self>) {
        let w = &mut self.0;
        // A part that lands after the abort would stay.
        std::mem::take(&mut w.inflight).finish().await;
        if let Some(id) = w.upload_id.take() {
            w.unrecorded = false;
            w.inner.abort(&w.key, &id).await;
        }
    }
}

impl S3Writer {
    fn new(
        inner: Arc<Inner>,
        budget: &BufferBudget,
        path: &str,
        key: String,
        base: Reservation,
    ) -> S3Writer {
        S3Writer {
            inner,
            path: path.to_string(),
            key,
            upload_id: None,
            parts: Vec::new(),
            parts_size: 0,
            inflight: Pipeline::default(),
            buf: BytesMut::new(),
            target: 0,
            _base: base,
            extra: None,
            budget: budget.clone(),
            state_exists: false,
            dirty: false,
            stale_upload: None,
            unrecorded: false,
            finishing: false,
        }
    }

    fn size(&self) -> u64 {
        self.parts_size + self.inflight.bytes() + self.buf.len() as u64
    }

    /// Take up the recorded upload at `offset` (at most its size): in the
    /// tail, on a part boundary, or from scratch at 0.
    fn continue_state(&mut self, header: Header, tail: Bytes, offset: u64) -> Result<()> {
        let parts_size: u64 = header.parts.iter().map(|p| p.size).sum();
        let size = parts_size + tail.len() as u64;
        if offset > size {
            return Err(invalid(&self.path, offset));
        }
        if offset == 0 {
            // Start over; the old upload goes once the new state is written.
            self.stale_upload = header.upload_id;
            self.dirty = size > 0;
            return Ok(());
        }
        self.upload_id = header.upload_id;
        self.parts = header.parts;
        self.parts_size = parts_size;
        if offset >= parts_size {
            self.begin_part();
            self.buf
                .extend_from_slice(&tail[..(offset - parts_size) as usize]);
        } else {
            // Only a part boundary can be cut to.
            let mut end = 0;
            let keep = self.parts.iter().position(|p| {
                end += p.size;
                end > offset
            });
            let keep = keep.unwrap_or(self.parts.len());
            let boundary: u64 = self.parts[..keep].iter().map(|p| p.size).sum();
            if boundary != offset {
                return Err(invalid(&self.path, offset));
            }
            self.parts.truncate(keep);
            self.parts_size = boundary;
        }
        self.dirty = offset != size;
        Ok(())
    }

    /// Start filling a part: 5 MiB, plus whatever of `chunksize - 5 MiB`
    /// the budget has free right now (smaller parts under memory pressure).
    fn begin_part(&mut self) {
        let chunk = self.inner.chunk_size;
        self.extra = None;
        self.extra = self
            .budget
            .try_reserve_up_to(chunk.saturating_sub(MIN_PART), EXTRA_STEP);
        let extra = self.extra.as_ref().map_or(0, Reservation::bytes);
        self.target = (MIN_PART + extra).min(chunk) as usize;
        // An empty buffer of this size is still there when the last part
        // went out straight from the caller's chunk.
        if !self.buf.is_empty() || self.buf.capacity() != self.target {
            self.buf = BytesMut::with_capacity(self.target);
        }
    }

    /// Send the buffer as a part.
    async fn flush_part(&mut self) -> Result<()> {
        let data = std::mem::take(&mut self.buf).freeze();
        self.send(data).await
    }

    fn state_key(&self) -> String {
        format!("{}{STATE_SUFFIX}", self.key)
    }

    async fn read_prefix(&self, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let inner = &self.inner;
        let resp = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(&self.key)
            .range(format!("bytes=0-{}", len - 1))
            .send()
            .await
            .map_err(|e| map_err("GetObject", &self.path, e))?;
        let (client, bucket) = (inner.client.clone(), inner.bucket.clone());
        collect(resuming(client, bucket, self.key.clone(), 0, resp)).await
    }

    /// The first `len` (≥ 5 MiB) bytes of the committed object, as parts
    /// copied server-side, each at least 5 MiB.
    async fn copy_prefix(&mut self, len: u64) -> Result<()> {
        let piece = self.inner.copy_chunk.min(MAX_SINGLE - MIN_PART);
        let mut start = 0;
        while start < len {
            let mut end = (start + piece).min(len);
            if len - end < MIN_PART {
                end = len;
            }
            let upload_id = self.ensure_upload().await?;
            let inner = &self.inner;
            let n = self.parts.len() as i32 + 1;
            debug_assert!(self.inflight.is_empty(), "copied before any part is sent");
            let r = inner
                .client
                .upload_part_copy()
                .bucket(&inner.bucket)
                .key(&self.key)
                .upload_id(upload_id)
                .part_number(n)
                .copy_source(inner.copy_source(&self.key))
                .copy_source_range(format!("bytes={start}-{}", end - 1))
                .send()
                .await
                .map_err(|e| map_err("UploadPartCopy", &self.path, e))?;
            let etag = r
                .copy_part_result()
                .and_then(|c| c.e_tag())
                .unwrap_or_default()
                .to_string();
            self.parts.push(Part {
                n,
                size: end - start,
                etag,
            });
            self.parts_size += end - start;
            start = end;
        }
        Ok(())
    }

    async fn ensure_upload(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let inner = &self.inner;
        let created = object_options!(
            inner
                .client
                .create_multipart_upload()
                .bucket(&inner.bucket)
                .key(&self.key),
            inner
        )
        .customize()
        .config_override(once_unless_refused())
        .send()
        .await
        .map_err(|e| map_err("CreateMultipartUpload", &self.path, e))?;
        let id = created
            .upload_id()
            .ok_or_else(|| StorageError::Backend("s3 CreateMultipartUpload: no upload id".into()))?
            .to_string();
        self.upload_id = Some(id.clone());
        self.unrecorded = true;
        Ok(id)
    }

    /// Send `data` as the next part, with the current part's extra room; the
    /// next `write` starts a new part. In flight when the budget has room for
    /// it beyond the writer's base (so that the base is free for the next
    /// part), after waiting for older parts up to [`MAX_IN_FLIGHT`]; without
    /// room, sent on the base's room and waited for. The last of S3's part
    /// numbers is kept for `commit`, so that an upload that reached the limit
    /// can still be finished with what its buffer holds.
    async fn send(&mut self, data: Bytes) -> Result<()> {
        let extra = self.extra.take();
        self.target = 0;
        let limit = self.inner.max_parts - usize::from(!self.finishing);
        if self.parts.len() + self.inflight.len() >= limit {
            // The recorded state is untouched: the upload resumes where the
            // last request left it, it just cannot grow past this.
            return Err(StorageError::TooLarge {
                path: self.path.clone(),
                reason: format!(
                    "S3 takes at most {} parts per object, here of at most {} bytes each; \
                     finish it with a last chunk that fits in one more part",
                    self.inner.max_parts, self.inner.chunk_size
                ),
            });
        }
        let upload_id = self.ensure_upload().await?;
        let n = (self.parts.len() + self.inflight.len()) as i32 + 1;
        let covered = extra.as_ref().map_or(0, Reservation::bytes);
        let mut room: Vec<Reservation> = extra.into_iter().collect();
        let need = (data.len() as u64).saturating_sub(covered);
        let own = loop {
            if self.inflight.len() < MAX_IN_FLIGHT {
                if let Some(r) = self.budget.try_reserve(need) {
                    break Some(r);
                }
            }
            if self.inflight.is_empty() {
                break None;
            }
            self.settle_one().await?;
        };
        let alone = own.is_none();
        room.extend(own);
        let to = Target {
            inner: &self.inner,
            key: &self.key,
            path: &self.path,
            upload_id: &upload_id,
        };
        self.inflight.start(to, n, data, room);
        if alone {
            self.settle_one().await?;
        }
        Ok(())
    }

    /// Take the oldest part's answer, waiting for it.
    async fn settle_one(&mut self) -> Result<()> {
        if let Some(part) = self.inflight.next().await {
            let part = part?;
            self.parts_size += part.size;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Wait for every part in flight.
    async fn settle(&mut self) -> Result<()> {
        while !self.inflight.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }

    async fn abort_stale(&mut self) {
        if let Some(id) = self.stale_upload.take() {
            if self.upload_id.as_deref() != Some(id.as_str()) {
                self.inner.abort(&self.key, &id).await;
            }
        }
    }
}

#[async_trait]
impl FileWriter for S3Writer {
    /// Buffers up to one part; whole parts of a large chunk go out uncopied.
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.dirty = true;
        // Parts answered meanwhile: a failure ends this write.
        while self.inflight.oldest_ended() {
            self.settle_one().await?;
        }
        while !chunk.is_empty() {
            if self.target == 0 {
                self.begin_part();
            }
            if self.buf.is_empty() && chunk.len() >= self.target {
                let data = chunk.split_to(self.target);
                self.send(data).await?;
                continue;
            }
            let take = (self.target - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(take));
            if self.buf.len() == self.target {
                self.flush_part().await?;
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        S3Writer::size(self)
    }

    async fn close(mut self: Box<Self>) -> Result<u64> {
        let size = self.size();
        if !self.dirty {
            return Ok(size);
        }
        if self.buf.len() as u64 >= MIN_PART {
            self.flush_part().await?;
        }
        self.settle().await?;
        let header = Header {
            upload_id: self.upload_id.clone(),
            parts: self.parts.clone(),
        };
        let state = encode(&header, &self.buf);
        let state_key = self.state_key();
        self.inner.put(&state_key, &self.path, state).await?;
        self.unrecorded = false;
        self.abort_stale().await;
        Ok(size)
    }

    async fn commit(mut self: Box<Self>) -> Result<u64> {
        let size = self.size();
        let data = self.buf.split().freeze();
        self.finishing = true;
        let sent = !self.parts.is_empty() || !self.inflight.is_empty();
        match self.upload_id.clone() {
            Some(id) if sent => {
                if !data.is_empty() {
                    self.send(data).await?;
                }
                self.settle().await?;
                let parts = self
                    .parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.n)
                            .e_tag(&p.etag)
                            .build()
                    })
                    .collect();
                self.unrecorded = false;
                self.inner
                    .complete(&self.key, &id, parts, &self.path)
                    .await?;
            }
            other => {
                self.inner.put(&self.key, &self.path, data).await?;
                if let Some(id) = other {
                    self.unrecorded = false;
                    self.inner.abort(&self.key, &id).await;
                }
            }
        }
        self.inner.remember_size(&self.key, size);
        self.forget_state().await?;
        Ok(size)
    }

    /// Bytes that all fit in the buffer (no part sent, no multipart upload
    /// begun: a blob under `chunksize` pushed by PATCH) go to `dest` in one
    /// PutObject; anything else completes here, as `commit`.
    async fn commit_to(mut self: Box<Self>, dest: &str) -> Result<(u64, bool)> {
        if self.upload_id.is_some() || !self.parts.is_empty() {
            return Ok((self.commit().await?, false));
        }
        let size = self.size();
        let dest_key = self.inner.key(dest)?;
        let data = self.buf.split().freeze();
        self.inner.put(&dest_key, dest, data).await?;
        self.forget_state().await?;
        Ok((size, true))
    }
}

impl S3Writer {
    /// Delete the state object, if any, and abort a replaced upload: the
    /// object is whole elsewhere now.
    async fn forget_state(&mut self) -> Result<()> {
        if self.state_exists {
            self.inner
                .delete_keys(&[self.state_key()], &self.path)
                .await?;
        }
        self.abort_stale().await;
        Ok(())
    }
}

impl Drop for S3Writer {
    /// A writer dropped mid-way (a failed PATCH) that started an upload no
    /// state records: abort it rather than leave its parts billed, once its
    /// parts in flight have ended (one that landed later would stay). Parts
    /// in flight of a recorded upload are cancelled, as a dropped request's
    /// part always was: the recorded state does not name them.
    fn drop(&mut self) {
        let parts = std::mem::take(&mut self.inflight);
        if !self.unrecorded {
            return;
        }
        let (Some(id), Ok(rt)) = (self.upload_id.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (inner, key) = (self.inner.clone(), self.key.clone());
        let abort = async move {
            parts.finish().await;
            inner.abort(&key, &id).await
        };
        rt.spawn(self.inner.background.track_future(abort));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let h = Header {
            upload_id: Some("u-1".into()),
            parts: vec![Part {
                n: 1,
                size: MIN_PART,
                etag: "\"abc\"".into(),
            }],
        };
        let data = encode(&h, b"tail\nwith newline");
        let (back, tail) = decode(data, "/p").unwrap();
        assert_eq!(back.upload_id.as_deref(), Some("u-1"));
        assert_eq!(back.parts, h.parts);
        assert_eq!(&tail[..], b"tail\nwith newline");
        assert!(decode(Bytes::from_static(b"garbage"), "/p").is_err());
    }
}
