//! The resumable writer: a block blob grown by Put Block, made readable by
//! Put Block List at every `close` and `commit`.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::rest::{backend, Condition, Listed, Rest};
use crate::storage::{
    budget::{BufferBudget, Reservation},
    FileWriter, Result, StorageError,
};

/// Data is staged in blocks of this size (the last of each writer is shorter).
/// Azure allows 50,000 committed blocks per blob: 195 GiB at this size, less
/// when many small PATCHes each leave a short block. At most two blocks per
/// writer are in memory: the one filling, reserved from the driver's budget
/// when the writer opens, and the one being sent — only when the budget has
/// a second block free; otherwise the writer sends and then fills.
pub(super) const BLOCK_SIZE: usize = 4 * 1024 * 1024;

/// Every block id Berth writes has this encoded length (Azure requires one
/// length per blob): 48 raw bytes — 16 hex digits of the block's offset and a
/// random UUID — are 64 base64 characters without padding.
pub(super) const BLOCK_ID_LEN: usize = 64;

fn block_id(offset: u64) -> String {
    let raw = format!("{offset:016x}{}", uuid::Uuid::new_v4().simple());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

pub(super) struct AzureWriter {
    pub(super) rest: Arc<Rest>,
    pub(super) key: String,
    /// Committed blocks kept from before this writer (a prefix of the list).
    base: Vec<String>,
    /// Blocks this writer staged, in order.
    pub(super) staged: Vec<String>,
    buf: BytesMut,
    /// Offset of `buf`'s first byte.
    buf_offset: u64,
    inflight: Option<JoinHandle<Result<()>>>,
    condition: Condition,
    /// One block, for the buffer, held for the writer's life.
    _base: Reservation,
    budget: BufferBudget,
}

impl AzureWriter {
    pub fn new(
        rest: Arc<Rest>,
        key: String,
        base: Vec<String>,
        size: u64,
        condition: Condition,
        (room, budget): (Reservation, BufferBudget),
    ) -> AzureWriter {
        AzureWriter {
            rest,
            key,
            base,
            staged: Vec::new(),
            buf: BytesMut::new(),
            buf_offset: size,
            inflight: None,
            condition,
            _base: room,
            budget,
        }
    }

    /// Wait for the block being sent, if any.
    async fn settle(&mut self) -> Result<()> {
        if let Some(task) = self.inflight.take() {
            task.await
                .map_err(|e| backend("put block", format!("task failed: {e}")))??;
        }
        Ok(())
    }

    /// Send one block, while the caller goes on filling the next when the
    /// budget has room for both.
    async fn stage(&mut self, data: Bytes) -> Result<()> {
        self.settle().await?;
        let id = block_id(self.buf_offset);
        self.buf_offset += data.len() as u64;
        self.staged.push(id.clone());
        let (rest, key) = (self.rest.clone(), self.key.clone());
        match self.budget.try_reserve(data.len() as u64) {
            Some(room) => {
                self.inflight = Some(self.rest.tasks.spawn(async move {
                    let _room = room;
                    rest.put_block(&key, &id, data).await
                }));
                Ok(())
            }
            None => rest.put_block(&key, &id, data).await,
        }
    }

    /// Stage what is left in the buffer and wait for every block sent.
    pub(super) async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf).freeze();
            self.stage(rest).await?;
        }
        self.settle().await
    }

    /// The bytes that never filled a block, when no block was sent at all:
    /// the whole content so far, still in memory.
    pub(super) fn unsent(&mut self) -> Option<Bytes> {
        (self.staged.is_empty() && self.inflight.is_none() && self.buf_offset == 0)
            .then(|| std::mem::take(&mut self.buf).freeze())
    }

    /// Stop the block in flight, if any, and wait until it has stopped.
    pub(super) async fn cancel(&mut self) {
        if let Some(task) = self.inflight.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stage what is left and commit base + staged as the blob's content.
    async fn finish(mut self: Box<Self>) -> Result<u64> {
        self.flush().await?;
        let listed = self
            .rest
            .put_block_list(&self.key, &self.base, &self.staged, &self.condition)
            .await?;
        if listed != Listed::Committed {
            // Either another writer changed the blob since this one opened it
            // (and maybe discarded our blocks), or a retried Put Block List
            // of ours had already landed.
            let now = self.rest.block_list(&self.key).await?;
            let ours = self.base.iter().chain(&self.staged);
            let landed = now.is_some_and(|l| {
                l.blocks.len() == self.base.len() + self.staged.len()
                    && l.blocks.iter().map(|b| &b.id).eq(ours)
            });
            if !landed {
                // Our blocks stay uncommitted (Azure drops them): the blob
                // is exactly what the other writer made it.
                return Err(StorageError::Conflict {
                    path: self.key.clone(),
                });
            }
        }
        Ok(self.size())
    }
}

impl Drop for AzureWriter {
    /// A writer dropped mid-way (its request cancelled) stops the block it
    /// was sending: nobody will commit it.
    fn drop(&mut self) {
        if let Some(task) = self.inflight.take() {
            task.abort();
        }
    }
}

#[async_trait]
impl FileWriter for AzureWriter {
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        while !chunk.is_empty() {
            if self.buf.is_empty() && chunk.len() >= BLOCK_SIZE {
                // A large chunk goes out in block-sized slices without a copy.
                let block = chunk.split_to(BLOCK_SIZE);
                self.stage(block).await?;
                continue;
            }
            if self.buf.capacity() == 0 {
                // Whole block at once: a growing buffer would copy and overshoot.
                self.buf = BytesMut::with_capacity(BLOCK_SIZE);
            }
            let take = (BLOCK_SIZE - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(take));
            if self.buf.len() == BLOCK_SIZE {
                let block = std::mem::take(&mut self.buf).freeze();
                self.stage(block).await?;
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.buf_offset + self.buf.len() as u64
    }

    /// Stage and commit: the blob is readable at its current size, and any
    /// replica's `writer(path, size)` appends blocks to this committed list.
    async fn close(self: Box<Self>) -> Result<u64> {
        self.finish().await
    }

    /// The same as `close`: a committed block list is durable and whole.
    async fn commit(self: Box<Self>) -> Result<u64> {
        self.finish().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_one_length() {
        for offset in [0, 1, 4 << 20, u64::MAX] {
            let id = block_id(offset);
            assert_eq!(id.len(), BLOCK_ID_LEN);
            assert!(!id.contains('='));
        }
        assert_ne!(block_id(0), block_id(0), "ids are unique");
    }
}
