//! The staged writer ([`StorageDriver::staged_writer`]): a blob whose digest
//! is known before its first byte (`PUT ?digest=`, `POST ?digest=`), written
//! as blocks on its final name and committed only once the registry has
//! verified it — no upload data, no Copy Blob, no Delete Blob.
//!
//! It is its own type beside the resumable [`AzureWriter`], whose buffering
//! and Put Block it reuses, because it ends differently: nothing committed
//! before it to keep, no condition on an ETag (it replaces whatever is at
//! the name, as the contract says), a blob under one block goes up in one
//! Put Blob from memory, and a commit whose blocks another writer's commit
//! discarded is told apart from a retried one of its own that landed.
//!
//! Nothing is visible before the commit: Azure keeps staged (uncommitted)
//! blocks apart from a blob's committed list, so a blob already at the name
//! reads as it was, and a name with only staged blocks has no blob (Get Blob
//! Properties answers 404, List Blobs leaves it out). Aborting, or dropping
//! the writer (its request cancelled mid-body), therefore has nothing to
//! undo on the server, only the block in flight to stop: Azure discards
//! uncommitted blocks 7 days after the last Put Block at the name, or at the
//! next Put Block List or Put Blob there, whichever comes first.
//!
//! Two writers of one name at once (two clients pushing the same blob) each
//! stage blocks under ids of their own (a random UUID in every id), so they
//! never commit each other's bytes. But the first Put Block List discards
//! the blocks the other has staged so far, whose own commit then fails
//! (InvalidBlockList): `commit` says `Conflict`, and the registry, which
//! knows the name is content-addressed and the other push verified, finds
//! the blob there at the size it expected and answers as if it had written
//! it ([`crate::registry`]'s `finish_direct`).
//!
//! [`StorageDriver::staged_writer`]: crate::storage::StorageDriver::staged_writer

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    rest::{Condition, Listed},
    writer::AzureWriter,
};
use crate::storage::{FileWriter, Result, StagedWriter, StorageError};

/// A resumable writer at offset 0 of a name it only ever stages blocks on.
pub(super) struct AzureStaged(pub(super) Box<AzureWriter>);

#[async_trait]
impl StagedWriter for AzureStaged {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.0.write(chunk).await
    }

    fn size(&self) -> u64 {
        self.0.size()
    }

    /// Under one block: one Put Blob of the buffer. Otherwise the rest is
    /// staged and exactly this writer's blocks become the blob (one Put
    /// Block List). An empty blob is an empty Put Blob.
    async fn commit(mut self: Box<Self>) -> Result<u64> {
        let w = &mut self.0;
        let size = w.size();
        if let Some(data) = w.unsent() {
            w.rest.put_blob(&w.key, data).await?;
            return Ok(size);
        }
        w.flush().await?;
        match w
            .rest
            .put_block_list(&w.key, &[], &w.staged, &Condition::None)
            .await?
        {
            Listed::Committed => Ok(size),
            // Our blocks are no longer staged: a retried Put Block List of
            // ours landed (the blob is exactly our list), or another commit
            // at this name discarded them (the blob is someone else's).
            _ => {
                let now = w.rest.block_list(&w.key).await?;
                let ours = now.is_some_and(|l| l.blocks.iter().map(|b| &b.id).eq(&w.staged));
                if ours {
                    Ok(size)
                } else {
                    Err(StorageError::Conflict {
                        path: w.key.clone(),
                    })
                }
            }
        }
    }

    /// Stop the block in flight; the staged ones are left to Azure to
    /// discard (see the module's comment), never committed.
    async fn abort(mut self: Box<Self>) {
        self.0.cancel().await;
    }
}
