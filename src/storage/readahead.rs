//! A large read as several ranged reads, the next ones fetched while the
//! current one streams to the client — for the object-store drivers (S3:
//! `storage/s3/readahead.rs`, Azure), where one read is one TCP stream and
//! runs at that one stream's speed (on AWS S3 about 100 MB/s, which is why
//! AWS advises byte-range fetches of 8-16 MiB in parallel).
//!
//! - **Which reads.** Only reads of at least `threshold` (a blob layer;
//!   never a manifest or a link) with a known length. The first `chunk`
//!   bytes stream straight from the driver's first read; every later chunk
//!   is its own ranged read, conditional on the first answer's ETag so that
//!   no byte of another version is spliced in ([`ChunkSource`]).
//! - **Memory.** A chunk fetched ahead is held whole (as the pieces its body
//!   came in: no copy), so it first takes its size from the driver's buffer
//!   budget (`storage.uploadbuffers`), only when that is free at once
//!   ([`BufferBudget::try_reserve`]): under memory pressure a chunk is
//!   streamed in its turn instead, as a single read would be. At most
//!   `ahead` chunks are ahead at a time, and the one being written to the
//!   client keeps its reservation until the next is taken.
//! - **Failures.** A chunk that fails for good ends the stream with an I/O
//!   error (the client sees a short body and retries).
//! - **Cancellation.** A client that goes away drops the stream, and with it
//!   the fetches ahead ([`RemoteHandle`] cancels its task when dropped).

use std::{collections::VecDeque, io, sync::Arc};

use bytes::Bytes;
use futures::{
    future::{BoxFuture, RemoteHandle},
    FutureExt, StreamExt, TryStreamExt,
};

use super::{
    budget::{BufferBudget, Reservation},
    ByteStream,
};

/// How a driver splits large reads (`readaheadthresholdsize`,
/// `readaheadchunksize`, `readaheadmaxconcurrency`).
#[derive(Clone, Copy, Debug)]
pub struct ReadAhead {
    pub threshold: u64,
    pub chunk: u64,
    pub ahead: usize,
}

impl ReadAhead {
    /// The length of the first read of a read of `len` bytes: all of them
    /// unless the read is split.
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

/// Where the chunks after the first come from: a ranged read of
/// `[start, end)` of the same version of the object.
pub trait ChunkSource: Send + Sync + 'static {
    fn open(&self, start: u64, end: u64) -> BoxFuture<'static, io::Result<ByteStream>>;
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
    src: Arc<dyn ChunkSource>,
    budget: BufferBudget,
    plan: ReadAhead,
    /// The body being sent, if it streams.
    current: Option<ByteStream>,
    /// The fetched chunk being handed out, and its room in the budget.
    pieces: VecDeque<Bytes>,
    held: Option<Reservation>,
    queue: VecDeque<Next>,
    /// Start of the first chunk not yet planned, and the read's end.
    next: u64,
    end: u64,
}

/// The stream of `[start, end)`, whose first chunk `head` (a read of
/// `[start, start + plan.first_len(end - start))`) is already answered.
pub fn stream(
    src: Arc<dyn ChunkSource>,
    budget: BufferBudget,
    plan: ReadAhead,
    start: u64,
    end: u64,
    head: ByteStream,
) -> ByteStream {
    let state = State {
        src,
        budget,
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
                        if item.is_err() {
                            st.stop();
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
                            st.stop();
                            return Some((Err(e), st));
                        }
                    }
                }
                Next::Later { start, end } => match st.src.open(start, end).await {
                    Ok(body) => {
                        st.held = None;
                        st.current = Some(body);
                    }
                    Err(e) => {
                        st.stop();
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
            let next = match self.budget.try_reserve(end - start) {
                Some(room) => {
                    let open = self.src.open(start, end);
                    let (fetch, data) =
                        async move { open.await?.try_collect().await }.remote_handle();
                    tokio::spawn(fetch);
                    Next::Fetched { data, room }
                }
                None => Next::Later { start, end },
            };
            self.queue.push_back(next);
        }
    }

    /// After a failure: nothing more is read.
    fn stop(&mut self) {
        self.queue.clear();
        self.next = self.end;
        self.current = None;
    }
}
