//! A large read as several ranged GetObjects, the next ones fetched while
//! the current one streams to the client.
//!
//! Why: one GetObject is one TCP stream, and a registry serving a layer
//! through itself (`storage.redirect.disable`, or a client that cannot
//! follow redirects) runs at that one stream's speed: on AWS S3 about
//! 100 MB/s a connection, which is why AWS advises byte-range fetches of
//! 8-16 MiB in parallel. On the test store (Garage, loopback) one stream
//! reached 890 MB/s and two ranged GETs at once 990 MB/s together; a 256 MiB
//! pull through Berth with one stream ran at 0.74-0.81x a GetObject alone
//! (nginx proxying the same GetObject: 0.8x), and with 3 chunks of 16 MiB
//! ahead at 0.85-0.92x (curl, runs interleaved on the 2-core machine).
//!
//! - **Which reads.** Only reads of at least `readaheadthresholdsize` (a
//!   blob layer; never a manifest or a link) with a known length. The first
//!   `readaheadchunksize` bytes stream straight from their GetObject as
//!   before; every later chunk is its own ranged GetObject, `If-Match` the
//!   first answer's ETag so that no byte of another version is spliced in.
//!   `readaheadmaxconcurrency: 0` turns splitting off.
//! - **Memory.** A chunk fetched ahead is held whole (as the pieces its
//!   body came in: no copy), so it first takes its size from the driver's
//!   buffer budget (`storage.uploadbuffers`), only when that is free at once
//!   ([`BufferBudget::try_reserve`]): under memory pressure a chunk is
//!   streamed in its turn instead, as a single GetObject would be. At most
//!   `readaheadmaxconcurrency` chunks are ahead at a time, and the one being
//!   written to the client keeps its reservation until the next is taken.
//! - **Failures.** Each ranged body resumes as any GetObject body does
//!   ([`resuming`]); a chunk that fails for good ends the stream with an I/O
//!   error (the client sees a short body and retries).
//! - **Cancellation.** A client that goes away drops the stream, and with it
//!   the fetches ahead ([`RemoteHandle`] cancels its task when dropped).

use std::{collections::VecDeque, io, sync::Arc};

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use bytes::Bytes;
use futures::{future::RemoteHandle, stream::BoxStream, FutureExt, StreamExt, TryStreamExt};

use super::{
    client::{map_err, resuming},
    inner::Inner,
};
use crate::storage::budget::{BufferBudget, Reservation};

/// How a driver splits large reads.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReadAhead {
    pub threshold: u64,
    pub chunk: u64,
    pub ahead: usize,
}

impl ReadAhead {
    /// The length of the first GetObject of a read of `len` bytes: all of
    /// them unless the read is split.
    pub fn first_len(&self, len: u64) -> u64 {
        if self.splits(len) {
            self.chunk
        } else {
            len
        }
    }

    pub fn splits(&self, len: u64) -> bool {
        self.ahead > 0 && len >= self.threshold && len > self.chunk
    }
}

/// Where the chunks come from.
struct Source {
    inner: Arc<Inner>,
    budget: BufferBudget,
    key: String,
    etag: Option<String>,
}

/// A chunk after the current one.
enum Next {
    /// Being fetched into memory, holding its room in the budget.
    Fetched {
        data: RemoteHandle<io::Result<Vec<Bytes>>>,
        room: Reservation,
    },
    /// To be streamed in its turn (no room was free when it was planned).
    Later { start: u64, end: u64 },
}

struct State {
    src: Arc<Source>,
    plan: ReadAhead,
    /// The body being sent, if it streams.
    current: Option<BoxStream<'static, io::Result<Bytes>>>,
    /// The fetched chunk being handed out, and its room in the budget.
    pieces: VecDeque<Bytes>,
    held: Option<Reservation>,
    queue: VecDeque<Next>,
    /// Start of the first chunk not yet planned, and the read's end.
    next: u64,
    end: u64,
}

/// The stream of `[start, end)` of `key`, whose first chunk `first` (a
/// GetObject of `[start, start + first_len)`) is already answered.
pub(super) fn stream(
    inner: Arc<Inner>,
    budget: BufferBudget,
    key: String,
    plan: ReadAhead,
    start: u64,
    end: u64,
    first: GetObjectOutput,
) -> BoxStream<'static, io::Result<Bytes>> {
    let etag = first.e_tag().map(str::to_string);
    let head = resuming(
        inner.client.clone(),
        inner.bucket.clone(),
        key.clone(),
        start,
        first,
    );
    let state = State {
        src: Arc::new(Source {
            inner,
            budget,
            key,
            etag,
        }),
        plan,
        current: Some(head),
        pieces: VecDeque::new(),
        held: None,
        queue: VecDeque::new(),
        next: start.saturating_add(plan.chunk).min(end),
        end,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            st.plan_ahead();
            if let Some(piece) = st.pieces.pop_front() {
                return Some((Ok(piece), st));
            }
            if let Some(body) = &mut st.current {
                match body.next().await {
                    Some(item) => {
                        let failed = item.is_err();
                        if failed {
                            st.queue.clear();
                            st.next = st.end;
                            st.current = None;
                        }
                        return Some((item, st));
                    }
                    None => st.current = None,
                }
            }
            match st.queue.pop_front()? {
                Next::Fetched { data, room } => {
                    st.held = Some(room);
                    match data.await {
                        Ok(pieces) => st.pieces = pieces.into(),
                        Err(e) => {
                            st.queue.clear();
                            st.next = st.end;
                            return Some((Err(e), st));
                        }
                    }
                }
                Next::Later { start, end } => match open(&st.src, start, end).await {
                    Ok(body) => {
                        st.held = None;
                        st.current = Some(body);
                    }
                    Err(e) => {
                        st.queue.clear();
                        st.next = st.end;
                        return Some((Err(e), st));
                    }
                },
            }
        }
    })
    .boxed()
}

impl State {
    /// Plan chunks until `ahead` are queued: fetched now when the budget
    /// has room for them, streamed in their turn otherwise.
    fn plan_ahead(&mut self) {
        while self.queue.len() < self.plan.ahead && self.next < self.end {
            let start = self.next;
            let end = start.saturating_add(self.plan.chunk).min(self.end);
            self.next = end;
            let next = match self.src.budget.try_reserve(end - start) {
                Some(room) => {
                    let src = self.src.clone();
                    let (fetch, data) =
                        async move { open(&src, start, end).await?.try_collect().await }
                            .remote_handle();
                    tokio::spawn(fetch);
                    Next::Fetched { data, room }
                }
                None => Next::Later { start, end },
            };
            self.queue.push_back(next);
        }
    }
}

/// A ranged GetObject of `[start, end)`, its body resuming on breaks.
async fn open(
    src: &Source,
    start: u64,
    end: u64,
) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
    let inner = &src.inner;
    let resp = inner
        .client
        .get_object()
        .bucket(&inner.bucket)
        .key(&src.key)
        .range(format!("bytes={start}-{}", end - 1))
        .set_if_match(src.etag.clone())
        .send()
        .await
        .map_err(|e| {
            let e = map_err("GetObject", &src.key, e);
            io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())
        })?;
    Ok(resuming(
        inner.client.clone(),
        inner.bucket.clone(),
        src.key.clone(),
        start,
        resp,
    ))
}
