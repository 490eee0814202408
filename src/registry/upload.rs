//! Blob uploads: start, append chunks, report status, finish, cancel.
//!
//! The bytes go to `_uploads/<id>/data` (distribution's layout); everything else
//! about the upload travels in its signed [`UploadState`]. Finishing verifies the
//! digest, moves the data into the blob store and only then writes the
//! repository's link, so a reader never sees a partial blob.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use super::{
    blobs::BlobInfo,
    digest::{Algorithm, Digest},
    direct::pump,
    error::{Code, Error, Result},
    names::validate_name,
    upload_state::UploadState,
    Registry,
};
use crate::storage::{layout, ByteStream, FileWriter, Resume};

/// The bytes a chunk says it carries (`Content-Range: <start>-<end>`): never
/// empty, and its length fits in a u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    start: u64,
    len: u64,
}

impl ChunkRange {
    /// The inclusive range `start..=end`; `None` when `end < start` or its
    /// length does not fit (`0-18446744073709551615`).
    pub fn new(start: u64, end: u64) -> Option<ChunkRange> {
        let len = end.checked_sub(start)?.checked_add(1)?;
        Some(ChunkRange { start, len })
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// Bytes in the range (at least one).
    pub fn length(&self) -> u64 {
        self.len
    }

    /// The last byte (inclusive).
    pub fn end(&self) -> u64 {
        self.start + (self.len - 1)
    }
}

/// A chunk refused for not starting where the upload stands: 416 with the
/// stored Range, so the client knows where to resume.
fn out_of_order(stored: u64, message: String) -> Error {
    Error::new(Code::RangeInvalid, message)
        .with_detail(serde_json::json!({ "offset": stored }))
        .with_upload_offset(stored)
}

/// A token behind (or ahead of) what storage holds for its upload.
fn stale(state: &UploadState, stored: u64) -> Error {
    out_of_order(
        stored,
        format!(
            "this upload location is stale: it says {} bytes, the upload holds {stored}; \
             GET the upload for its current location",
            state.offset
        ),
    )
}

fn upload_unknown() -> Error {
    Error::new(Code::BlobUploadUnknown, "upload unknown to registry")
}

impl Registry {
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Begin an upload session in `name`.
    pub async fn start_upload(&self, name: &str) -> Result<UploadState> {
        validate_name(name)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        // distribution's purger reads this file; keep writing it for compatibility.
        let started = humantime::format_rfc3339(now).to_string();
        self.driver
            .put_scratch(&layout::upload_started_at(name, &id), Bytes::from(started))
            .await?;
        let mut state = UploadState::new(name, &id, secs);
        state.fresh = true;
        Ok(state)
    }

    /// The upload a client's token names, to write to: the token must be
    /// genuine and its offset what storage holds. A token behind (or ahead
    /// of) storage — an answer lost after its chunk was stored, an old
    /// Location — is refused with 416 and the stored Range, before any byte
    /// is written; the client asks for the status to resume (the spec's flow).
    ///
    /// A token past offset 0 is checked when its writer opens, from the same
    /// read that resumes it (see `write_chunk`): still before any byte of the
    /// body is read.
    pub async fn resume_upload(&self, name: &str, id: &str, token: &str) -> Result<UploadState> {
        validate_name(name)?;
        let mut state = UploadState::verify(token, &self.secret, name, id)?;
        if state.offset > 0 {
            return Ok(state);
        }
        let stored = self.stored_upload_size(name, id, true).await?;
        state.fresh = stored.is_none();
        match stored {
            Some(stored) if stored != 0 => Err(stale(&state, stored)),
            _ => Ok(state),
        }
    }

    /// The upload a client's token names, as storage holds it: the token's
    /// state when it agrees with storage, else the state at the stored size
    /// (so the status answers with a fresh Location the client can resume at).
    pub async fn upload_status(&self, name: &str, id: &str, token: &str) -> Result<UploadState> {
        let (state, stored) = self.verify_upload(name, id, token).await?;
        let stored = stored.unwrap_or(0);
        Ok(if stored == state.offset {
            state
        } else {
            state.moved_to(stored)
        })
    }

    /// A genuine token's state, and the bytes storage holds for its upload
    /// (`None`: nothing at all, not even an empty upload state).
    async fn verify_upload(
        &self,
        name: &str,
        id: &str,
        token: &str,
    ) -> Result<(UploadState, Option<u64>)> {
        validate_name(name)?;
        let state = UploadState::verify(token, &self.secret, name, id)?;
        let stored = self.stored_upload_size(name, id, false).await?;
        Ok((state, stored))
    }

    /// Bytes stored for an upload; `BLOB_UPLOAD_UNKNOWN` when it does not
    /// exist. One request once data is stored (its size says the upload
    /// exists); before that, the start marker says whether it does. A
    /// fresh upload's first PATCH or PUT, where both are usually needed, asks
    /// both at once (`fresh_likely`).
    async fn stored_upload_size(
        &self,
        name: &str,
        id: &str,
        fresh_likely: bool,
    ) -> Result<Option<u64>> {
        let data = layout::upload_data(name, id);
        let (size, started) = if fresh_likely {
            let (size, started) = tokio::join!(
                self.driver.stored_size(&data),
                self.require_started(name, id)
            );
            (size?, Some(started))
        } else {
            (self.driver.stored_size(&data).await?, None)
        };
        match (size, started) {
            (Some(size), _) => Ok(Some(size)),
            (None, Some(started)) => started.map(|()| None),
            (None, None) => self.require_started(name, id).await.map(|()| None),
        }
    }

    /// The upload was started and not cancelled (or purged): its start
    /// marker is there.
    async fn require_started(&self, name: &str, id: &str) -> Result<()> {
        match self
            .driver
            .stat_object(&layout::upload_started_at(name, id))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Err(upload_unknown()),
            Err(e) => Err(e.into()),
        }
    }

    /// Append a chunk at the state's offset. A chunk that does not start exactly
    /// there (a gap, or one already written) is refused with 416.
    pub async fn append_upload(
        &self,
        state: UploadState,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<UploadState> {
        let (mut state, writer, hasher) = self.write_chunk(state, range, body).await?;
        state.offset = writer.close().await?;
        match &hasher {
            Some(h) => state.set_hasher(h),
            None => state.hash.clear(),
        }
        Ok(state)
    }

    /// Write a chunk at the state's offset; the caller closes the writer (a
    /// PATCH) or commits it (the final PUT). Returns the state with its
    /// offset unchanged, the open writer and the upload's SHA-256 so far
    /// (when the state carries it).
    async fn write_chunk(
        &self,
        mut state: UploadState,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<(UploadState, Box<dyn FileWriter>, Option<Sha256>)> {
        if let Some(r) = range {
            if r.start() != state.offset {
                return Err(out_of_order(
                    state.offset,
                    format!(
                        "chunk {}-{} must start at offset {}",
                        r.start(),
                        r.end(),
                        state.offset
                    ),
                ));
            }
        }
        let mut hasher = state.hasher()?;
        let path = layout::upload_data(&state.name, &state.id);
        let opened = if std::mem::take(&mut state.fresh) {
            self.driver.fresh_writer(&path).await
        } else if state.offset == 0 {
            self.driver.writer(&path, 0).await
        } else {
            match self.driver.resume_writer(&path, state.offset).await {
                Ok(Resume::Writer(w)) => Ok(w),
                Ok(Resume::Elsewhere(Some(stored))) => return Err(stale(&state, stored)),
                Ok(Resume::Elsewhere(None)) => {
                    self.require_started(&state.name, &state.id).await?;
                    return Err(stale(&state, 0));
                }
                Err(e) => Err(e),
            }
        };
        let mut writer = match opened {
            Ok(w) => w,
            // The data no longer reaches this state's offset (it changed since
            // the check): the client has to start the upload again.
            Err(crate::storage::StorageError::InvalidOffset { .. }) => {
                return Err(Error::new(
                    Code::BlobUploadInvalid,
                    format!(
                        "the upload cannot resume at offset {}: its stored data changed; restart the upload",
                        state.offset
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let (written, refused) = pump(range, body, hasher.as_mut(), &mut writer).await?;
        if let Some(e) = refused {
            if written == 0 {
                return Err(e);
            }
            // Keep what arrived, on every driver alike, before answering: the
            // upload stands there now, and the client resumes from a status
            // (its Location is stale).
            return Err(match writer.close().await {
                Ok(size) => e.with_upload_offset(size),
                Err(kept) => {
                    tracing::warn!(error = %kept, "keeping a broken chunk's bytes failed");
                    e
                }
            });
        }
        Ok((state, writer, hasher))
    }

    /// Append the last chunk (if any), verify `expected`, and commit the blob.
    /// On a digest mismatch the upload is discarded and nothing is stored.
    /// An upload with nothing stored (a `POST` then one `PUT ?digest=`)
    /// goes straight to the blob's path where the driver allows it (see
    /// [`super::direct`]).
    pub async fn finish_upload(
        &self,
        state: UploadState,
        expected: &Digest,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<BlobInfo> {
        // Nothing stored at all (not even an empty upload state): nothing to
        // clean up beyond the start marker either.
        if state.fresh {
            if let Some(w) = self.staged_blob_writer(expected).await? {
                return self
                    .finish_direct(&state.name, Some(&state.id), expected, range, body, w)
                    .await;
            }
        }
        let (state, writer, hasher) = self.write_chunk(state, range, body).await?;
        let size = writer.size();
        let data = layout::upload_data(&state.name, &state.id);
        let blob = layout::blob_data(expected);
        let hashed = match (expected.algorithm(), hasher) {
            (Algorithm::Sha256, Some(h)) => Some(Digest::from_parts(
                Algorithm::Sha256,
                &hex::encode(h.finalize()),
            )?),
            _ => None,
        };
        // The upload's directory holds its start marker and committed data:
        // deleted by name, with no listing (on S3).
        let dir = layout::upload_dir(&state.name, &state.id);
        let all = [layout::UPLOAD_STARTED_AT, layout::UPLOAD_DATA];
        let left = if hashed.as_ref() == Some(expected)
            && self.stat_global_blob(expected).await?.is_none()
        {
            // Verified before anything is committed, and new: the writer puts
            // it in the blob store itself where it can (S3: a blob that fit
            // in its buffer, one PutObject instead of a PutObject, a copy and
            // a delete); otherwise it is committed and moved.
            if !writer.commit_to(&blob).await?.1 {
                self.driver.rename(&data, &blob).await?;
            }
            &all[..1]
        } else {
            writer.commit().await?;
            // Only SHA-256 runs alongside the upload, and only while the
            // client carries it; anything else costs one read of the data.
            let verified = hashed.is_some();
            let actual = match hashed {
                Some(d) => d,
                None => self.digest_of(&data, expected.algorithm()).await?,
            };
            if &actual != expected {
                self.driver.delete_known(&dir, &all).await?;
                return Err(Error::new(
                    Code::DigestInvalid,
                    format!("digest mismatch: content is {actual}, client said {expected}"),
                ));
            }
            // A verified SHA-256 reaches here only when the blob store has it.
            if !verified && self.stat_global_blob(expected).await?.is_none() {
                self.driver.rename(&data, &blob).await?;
                &all[..1]
            } else {
                &all[..]
            }
        };
        self.write_link(&layout::layer_link(&state.name, expected), expected)
            .await?;
        self.driver.delete_known(&dir, left).await?;
        let info = BlobInfo {
            digest: expected.clone(),
            size,
        };
        self.remember(Some(&state.name), &info).await;
        Ok(info)
    }

    /// The digest of stored data, read whole.
    async fn digest_of(&self, path: &str, algorithm: Algorithm) -> Result<Digest> {
        let mut h = algorithm.hasher();
        let mut r = self.driver.reader(path, 0, None).await?;
        while let Some(chunk) = r.next().await {
            h.update(&chunk.map_err(crate::storage::StorageError::from)?);
        }
        Ok(h.finish())
    }

    pub async fn cancel_upload(&self, state: &UploadState) -> Result<()> {
        match self
            .driver
            .delete(&layout::upload_dir(&state.name, &state.id))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Err(upload_unknown()),
            Err(e) => Err(e.into()),
        }
    }
}
