//! Blobs whose digest is known before their first byte (`PUT ?digest=` on a
//! fresh upload, `POST ?digest=`), the way containerd, BuildKit and docker
//! with containerd push: on drivers that can stage an object in place (S3's
//! multipart upload on the blob's own key) the body streams straight to the
//! blob's path, is hashed on the way, and is made visible only when the
//! digest matches. No `_uploads` data, no commit copy; a mismatch, a broken
//! body or a dropped client leave nothing. A blob that is already stored is
//! not looked for first (clients HEAD before they push, so that request
//! would almost always be wasted): it is verified the same way and replaced
//! by the same bytes. Two pushes of one blob at once both succeed, whichever
//! commits last (on Azure the first commit discards the other's staged
//! blocks: that one finds the blob committed and takes it as its own).
//!
//! The request body is read by [`pump`], shared with the chunked path.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use super::{
    blobs::BlobInfo,
    digest::{Algorithm, Digest},
    error::{Code, Error, Result},
    names::validate_name,
    upload::ChunkRange,
    Registry,
};
use crate::storage::{self, layout, ByteStream, FileWriter, StagedWriter};

/// Where a request body's bytes go: an upload's resumable data (a PATCH, the
/// last chunk of a PUT), or a blob's own path, visible on `commit` only.
#[async_trait]
pub(super) trait Sink: Send {
    async fn put(&mut self, chunk: Bytes) -> storage::Result<()>;
}

#[async_trait]
impl Sink for Box<dyn FileWriter> {
    async fn put(&mut self, chunk: Bytes) -> storage::Result<()> {
        self.write(chunk).await
    }
}

#[async_trait]
impl Sink for Box<dyn StagedWriter> {
    async fn put(&mut self, chunk: Bytes) -> storage::Result<()> {
        self.write(chunk).await
    }
}

/// Read a request body into `sink`, hashing it, held to its Content-Range:
/// the bytes written and, when the body broke off or disagrees with the
/// range, the error to answer with (what arrived before is in `sink`). `Err`
/// is the sink's own failure.
pub(super) async fn pump(
    range: Option<ChunkRange>,
    mut body: ByteStream,
    mut hasher: Option<&mut Sha256>,
    sink: &mut dyn Sink,
) -> Result<(u64, Option<Error>)> {
    let mut written: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let e = Error::new(
                    Code::BlobUploadInvalid,
                    format!("reading request body: {e}"),
                )
                .with_status(400);
                return Ok((written, Some(e)));
            }
        };
        let total = written + chunk.len() as u64;
        // More than the Content-Range said: refused before it is written.
        if range.is_some_and(|r| total > r.length()) {
            return Ok((written, Some(range_mismatch(range, total))));
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&chunk);
        }
        sink.put(chunk).await?;
        written = total;
    }
    if range.is_some_and(|r| written != r.length()) {
        return Ok((written, Some(range_mismatch(range, written))));
    }
    Ok((written, None))
}

/// A body that does not carry what its Content-Range says.
fn range_mismatch(range: Option<ChunkRange>, sent: u64) -> Error {
    let r = range.expect("only checked against a range");
    Error::new(
        Code::SizeInvalid,
        format!(
            "Content-Range {}-{} announces {} bytes, the body has {}{sent}",
            r.start(),
            r.end(),
            r.length(),
            if sent > r.length() { "at least " } else { "" }
        ),
    )
}

impl Registry {
    /// `POST ?digest=`: a whole blob in one request. Straight to the blob's
    /// path where the driver allows it (no upload session at all), else
    /// through an upload session as `PUT ?digest=` goes.
    pub async fn push_blob(
        &self,
        name: &str,
        expected: &Digest,
        body: ByteStream,
    ) -> Result<BlobInfo> {
        validate_name(name)?;
        if let Some(w) = self.staged_blob_writer(expected).await? {
            return self
                .finish_direct(name, None, expected, None, body, w)
                .await;
        }
        let session = self.start_upload(name).await?;
        self.finish_upload(session, expected, None, body).await
    }

    /// Where a blob goes whose digest is known before its first byte: in
    /// place when the driver can stage it; `None` when it has to go through
    /// `_uploads` (a driver that cannot stage, or a digest other than
    /// SHA-256, which is not hashed while streaming).
    pub(super) async fn staged_blob_writer(
        &self,
        d: &Digest,
    ) -> Result<Option<Box<dyn StagedWriter>>> {
        if d.algorithm() != Algorithm::Sha256 {
            return Ok(None);
        }
        Ok(self.driver.staged_writer(&layout::blob_data(d)).await?)
    }

    /// Stream the body into `w`, verify it, and link the blob into
    /// `name`. `upload` is the session's id, whose start marker goes at the
    /// end (and on a mismatch, which ends the session as on the chunked path).
    pub(super) async fn finish_direct(
        &self,
        name: &str,
        upload: Option<&str>,
        expected: &Digest,
        range: Option<ChunkRange>,
        body: ByteStream,
        mut w: Box<dyn StagedWriter>,
    ) -> Result<BlobInfo> {
        let mut hasher = Sha256::new();
        let written = match pump(range, body, Some(&mut hasher), &mut w).await {
            Ok((n, None)) => n,
            // The session stays at offset 0: the client may send it again.
            Ok((_, Some(refused))) => {
                w.abort().await;
                return Err(refused);
            }
            Err(e) => {
                w.abort().await;
                return Err(e);
            }
        };
        let actual = Digest::from_parts(Algorithm::Sha256, &hex::encode(hasher.finalize()))?;
        if &actual != expected {
            w.abort().await;
            self.end_session(name, upload).await?;
            return Err(Error::new(
                Code::DigestInvalid,
                format!("digest mismatch: content is {actual}, client said {expected}"),
            ));
        }
        let size = match w.commit().await {
            Ok(size) => size,
            // Another push of this blob committed at its path first and
            // displaced ours (Azure: its Put Block List discarded our staged
            // blocks). Content-addressed, and verified by that push before it
            // committed: the blob there at our size is our blob.
            Err(storage::StorageError::Conflict { .. }) => {
                match self.driver.stat_object(&layout::blob_data(expected)).await {
                    Ok(info) if info.size == written => info.size,
                    // Not the upload conflict the spec's 416 is about: the
                    // other push's blob is gone or not ours (a sweep in
                    // between); nothing of ours stands and the session is
                    // kept, so the same PUT again is clean.
                    _ => {
                        return Err(Error::unavailable(format!(
                            "another push of {expected} displaced this one; push it again"
                        )));
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        debug_assert_eq!(size, written);
        self.write_link(&layout::layer_link(name, expected), expected)
            .await?;
        self.end_session(name, upload).await?;
        let info = BlobInfo {
            digest: expected.clone(),
            size,
        };
        self.remember(Some(name), &info).await;
        Ok(info)
    }

    /// Remove a session that wrote nothing under `_uploads` but its marker.
    async fn end_session(&self, name: &str, upload: Option<&str>) -> Result<()> {
        if let Some(id) = upload {
            self.driver
                .delete_known(&layout::upload_dir(name, id), &[layout::UPLOAD_STARTED_AT])
                .await?;
        }
        Ok(())
    }
}
