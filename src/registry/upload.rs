//! Blob uploads: start, append chunks, report status, finish, cancel.
//!
//! The bytes go to `_uploads/<id>/data` (distribution's layout); everything else
//! about the upload travels in its signed [`UploadState`]. Finishing verifies the
//! digest, moves the data into the blob store and only then writes the
//! repository's link, so a reader never sees a partial blob.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use sha2::Digest as _;

use super::{
    blobs::BlobInfo,
    digest::{Algorithm, Digest},
    error::{Code, Error, Result},
    names::validate_name,
    upload_state::UploadState,
    Registry,
};
use crate::storage::{layout, ByteStream};

/// An inclusive byte range from a `Content-Range: <start>-<end>` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
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
        Ok(UploadState::new(name, &id, secs))
    }

    /// Check a client's token and that the upload still exists.
    pub async fn resume_upload(&self, name: &str, id: &str, token: &str) -> Result<UploadState> {
        validate_name(name)?;
        let state = UploadState::verify(token, &self.secret, name, id)?;
        match self.driver.stat(&layout::upload_started_at(name, id)).await {
            Ok(_) => Ok(state),
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
        self.write_chunk(state, range, body, false).await
    }

    /// Write a chunk; `last` commits the upload's data as one whole object.
    async fn write_chunk(
        &self,
        mut state: UploadState,
        range: Option<ChunkRange>,
        mut body: ByteStream,
        last: bool,
    ) -> Result<UploadState> {
        if let Some(r) = range {
            if r.start != state.offset || r.end < r.start {
                return Err(Error::new(
                    Code::RangeInvalid,
                    format!("chunk must start at offset {}", state.offset),
                )
                .with_detail(serde_json::json!({ "offset": state.offset })));
            }
        }
        let mut hasher = state.hasher()?;
        let path = layout::upload_data(&state.name, &state.id);
        let mut writer = match self.driver.writer(&path, state.offset).await {
            Ok(w) => w,
            // The data already runs past this state and the driver cannot cut it
            // back (an S3 part is immutable): a chunk was stored but its answer
            // lost. The client has to start the upload again.
            Err(crate::storage::StorageError::InvalidOffset { .. }) => {
                return Err(Error::new(
                    Code::BlobUploadInvalid,
                    format!(
                        "the upload cannot resume at offset {}: more data was stored after it; restart the upload",
                        state.offset
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Error::new(
                    Code::BlobUploadInvalid,
                    format!("reading request body: {e}"),
                )
                .with_status(400)
            })?;
            hasher.update(&chunk);
            writer.write(chunk).await?;
        }
        let size = if last {
            writer.commit().await?
        } else {
            writer.close().await?
        };
        let written = size - state.offset;
        if let Some(r) = range {
            if written != r.end - r.start + 1 {
                return Err(Error::new(
                    Code::RangeInvalid,
                    format!(
                        "Content-Range {}-{} does not match {written} bytes sent",
                        r.start, r.end
                    ),
                ));
            }
        }
        state.offset = size;
        state.set_hasher(&hasher);
        Ok(state)
    }

    /// Append the last chunk (if any), verify `expected`, and commit the blob.
    /// On a digest mismatch the upload is discarded and nothing is stored.
    pub async fn finish_upload(
        &self,
        state: UploadState,
        expected: &Digest,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<BlobInfo> {
        let state = self.write_chunk(state, range, body, true).await?;
        let data = layout::upload_data(&state.name, &state.id);
        let actual = match expected.algorithm() {
            Algorithm::Sha256 => {
                let h = state.hasher()?;
                Digest::from_parts(Algorithm::Sha256, &hex::encode(h.finalize()))?
            }
            // Only SHA-256 runs alongside the upload; other digests cost one read.
            other => {
                let mut h = other.hasher();
                let mut r = self.driver.reader(&data, 0, None).await?;
                while let Some(chunk) = r.next().await {
                    h.update(&chunk.map_err(crate::storage::StorageError::from)?);
                }
                h.finish()
            }
        };
        if &actual != expected {
            self.delete_if_exists(&layout::upload_dir(&state.name, &state.id))
                .await?;
            return Err(Error::new(
                Code::DigestInvalid,
                format!("digest mismatch: content is {actual}, client said {expected}"),
            ));
        }
        if self.stat_global_blob(expected).await?.is_none() {
            self.driver
                .rename(&data, &layout::blob_data(expected))
                .await?;
        }
        self.write_link(&layout::layer_link(&state.name, expected), expected)
            .await?;
        self.delete_if_exists(&layout::upload_dir(&state.name, &state.id))
            .await?;
        let info = BlobInfo {
            digest: expected.clone(),
            size: state.offset,
        };
        self.remember(Some(&state.name), &info).await;
        Ok(info)
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
