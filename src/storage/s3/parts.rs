//! The parts of a writer's multipart upload that are on their way to the
//! store.
//!
//! Why this exists: a writer that awaited each UploadPart inside `write`
//! read nothing from its client while a part went out, and gave the store
//! one part at a time to work on. `loadtest s3` measured a 64 MiB
//! `PUT ?digest=` to Garage at 0.48x the speed of one PutObject, with Berth
//! at 0.4 cores and the store at 0.9. So a filled part is handed to a task of
//! its own and the writer fills the next one meanwhile, with up to
//! [`MAX_IN_FLIGHT`] parts in flight.
//!
//! - **Memory.** A part in flight owns a [`Reservation`] of the budget
//!   (`storage.uploadbuffers`) for all of its bytes, given back when its task
//!   ends; the writer keeps its 5 MiB base for the part it fills. The writer
//!   takes that room only with `try_reserve`: with none free it waits for its
//!   oldest part instead (today's one-at-a-time sending), so the budget still
//!   bounds every buffer and nobody waits for budget while holding some.
//! - **Order.** Part numbers are given when a part starts; results are taken
//!   oldest first, so the recorded parts stay in order. A part that failed
//!   fails the writer's next call that reaches it.
//! - **Tasks, not futures polled by `write`.** A request reads its body
//!   between two `write`s; a part's request (signing it, hashing its payload
//!   for SigV4 over plain HTTP, retrying) only progresses while polled, so it
//!   runs on a task, on whichever core is free. The tasks are tracked with
//!   the driver's background aborts, so `S3Driver::settled` waits for them.
//! - **Cancellation.** Dropping a [`Pipeline`] cancels its parts (a dropped
//!   request's part was always cancelled with it); a writer that must abort
//!   its upload first waits for them with [`Pipeline::finish`], since a part
//!   that lands after AbortMultipartUpload would be left behind.

use std::{collections::VecDeque, sync::Arc};

use aws_sdk_s3::primitives::ByteStream as S3Body;
use bytes::Bytes;
use tokio::task::JoinHandle;

use super::{client::map_err, inner::Inner, writer::Part};
use crate::storage::{budget::Reservation, Result, StorageError};

/// Parts in flight per writer. One already lets the next part fill while a
/// part goes out; more keep the store working on several parts at once.
/// Each costs a part of budget (up to `chunksize`) per writer, and only when
/// the budget has it free. `loadtest s3 --quick` on Garage, 64 MiB
/// `PUT ?digest=`, median of 3 runs on a busy 2-core machine: 125 MB/s one
/// part at a time, 169 with 1 in flight, 147 with 2, 172 with 3, 183 with
/// 4 — the runs were too noisy to tell 2..4 apart, so 3: room for the store
/// to overlap without holding 4 parts (40 MiB at the default `chunksize`) per
/// upload.
pub const MAX_IN_FLIGHT: usize = 3;

/// Where a part goes.
pub(super) struct Target<'a> {
    pub inner: &'a Arc<Inner>,
    pub key: &'a str,
    pub path: &'a str,
    pub upload_id: &'a str,
}

struct InFlight {
    n: i32,
    size: u64,
    task: JoinHandle<Result<String>>,
}

/// A writer's parts in flight, oldest first.
#[derive(Default)]
pub(super) struct Pipeline {
    queue: VecDeque<InFlight>,
    bytes: u64,
}

impl Pipeline {
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes in flight.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the oldest part has ended (its result is ready).
    pub(super) fn oldest_ended(&self) -> bool {
        self.queue.front().is_some_and(|p| p.task.is_finished())
    }

    /// Send `data` as part `n`; `room` is what it holds of the budget until
    /// it is answered.
    pub(super) fn start(&mut self, to: Target<'_>, n: i32, data: Bytes, room: Vec<Reservation>) {
        let size = data.len() as u64;
        let (inner, key, path, id) = (
            to.inner.clone(),
            to.key.to_string(),
            to.path.to_string(),
            to.upload_id.to_string(),
        );
        let send = async move {
            let _room = room;
            upload_part(&inner, &key, &path, &id, n, data).await
        };
        let task = tokio::spawn(to.inner.background.track_future(send));
        self.bytes += size;
        self.queue.push_back(InFlight { n, size, task });
    }

    /// The oldest part once it is answered; `None` with nothing in flight.
    /// Cancel-safe: the part stays here until its answer is taken.
    pub(super) async fn next(&mut self) -> Option<Result<Part>> {
        let oldest = self.queue.front_mut()?;
        let ended = (&mut oldest.task).await;
        let InFlight { n, size, .. } = self.queue.pop_front().expect("the part just awaited");
        self.bytes -= size;
        Some(match ended {
            Ok(Ok(etag)) => Ok(Part { n, size, etag }),
            Ok(Err(e)) => Err(e),
            // Panicked (it is only cancelled by dropping the pipeline).
            Err(e) => Err(StorageError::Backend(format!("s3 UploadPart {n}: {e}"))),
        })
    }

    /// Wait for every part to end, whatever its result.
    pub(super) async fn finish(mut self) {
        while self.next().await.is_some() {}
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for p in &self.queue {
            p.task.abort();
        }
    }
}

async fn upload_part(
    inner: &Inner,
    key: &str,
    path: &str,
    upload_id: &str,
    n: i32,
    data: Bytes,
) -> Result<String> {
    let size = data.len() as i64;
    let r = inner
        .client
        .upload_part()
        .bucket(&inner.bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(n)
        .content_length(size)
        .body(S3Body::from(data))
        .send()
        .await
        .map_err(|e| map_err("UploadPart", path, e))?;
    Ok(r.e_tag().unwrap_or_default().to_string())
}
