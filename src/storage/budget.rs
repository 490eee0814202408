//! One replica's memory budget for upload buffers (`storage.uploadbuffers`).
//!
//! The S3 and Azure writers hold an upload's bytes in memory until they make
//! a part or a block of them. Unchecked, that is a part per upload in flight:
//! 500 concurrent uploads with a 100 MiB `chunksize` would ask for 50 GB. So
//! every such buffer is reserved here first, from one budget that all
//! writers of a driver share:
//!
//! - A writer reserves the **least it needs to make progress** when it opens
//!   (one S3 part of 5 MiB, one Azure block of 4 MiB), waiting at most
//!   `storage.uploadbuffers.wait` for it. When the wait runs out the writer is
//!   not opened: the request ends with 503 and `Retry-After` before a byte of
//!   its body was read, and the upload stays as it was (resumable).
//! - Anything more (a part up to `chunksize`, a second Azure block in flight
//!   while the next one fills) is only taken when it is free right now; when
//!   it is not, the writer makes smaller parts or stops overlapping. A writer
//!   therefore never waits while holding budget, and writers can never block
//!   each other for good.
//!
//! Reservations are counted in KiB (the semaphore's unit); the waiting queue
//! is first come, first served.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Result, StorageError};

/// The default budget, `storage.uploadbuffers.budget`: 512 MiB.
pub const DEFAULT_BUDGET: u64 = 512 << 20;
/// The default wait for room, `storage.uploadbuffers.wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// What a refused request is told to wait before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

const UNIT: u64 = 1024;

fn units(bytes: u64) -> u32 {
    bytes.div_ceil(UNIT).min(u32::MAX as u64) as u32
}

/// A shared budget; cloning shares it.
#[derive(Clone, Debug)]
pub struct BufferBudget {
    sem: Arc<Semaphore>,
    total: u64,
    wait: Duration,
    /// The most ever reserved at once (for tests and benchmarks).
    high_water: Arc<AtomicU64>,
}

/// Bytes taken from a budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.permit.num_permits() as u64 * UNIT
    }
}

impl Default for BufferBudget {
    fn default() -> Self {
        BufferBudget::new(DEFAULT_BUDGET, DEFAULT_WAIT)
    }
}

impl BufferBudget {
    /// `total` bytes; a reservation waits at most `wait` for room.
    pub fn new(total: u64, wait: Duration) -> BufferBudget {
        let permits = units(total).min(Semaphore::MAX_PERMITS as u32);
        BufferBudget {
            sem: Arc::new(Semaphore::new(permits as usize)),
            total: permits as u64 * UNIT,
            wait,
            high_water: Arc::default(),
        }
    }

    /// The most that was ever reserved at one time.
    pub fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }

    fn taken(&self, permit: OwnedSemaphorePermit) -> Reservation {
        let in_use = self.total - self.available();
        self.high_water.fetch_max(in_use, Ordering::Relaxed);
        Reservation { permit }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes not reserved at the moment.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    /// `bytes` (at most the whole budget), waiting for room at most the
    /// configured time; `Busy` after that.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation> {
        let n = units(bytes.min(self.total));
        match tokio::time::timeout(self.wait, self.sem.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(self.taken(permit)),
            // Timed out (the semaphore is never closed).
            _ => {
                tracing::warn!(
                    wanted = bytes,
                    budget = self.total,
                    waited = ?self.wait,
                    "upload buffer budget spent: refusing an upload request"
                );
                Err(StorageError::Busy {
                    retry_after: RETRY_AFTER,
                })
            }
        }
    }

    /// `bytes` if they are free now (and nobody is waiting for them).
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let permit = self.sem.clone().try_acquire_many_owned(units(bytes)).ok()?;
        Some(self.taken(permit))
    }

    /// Up to `bytes`, in whole `step`s, of what is free now; `None` if not
    /// even one step is.
    pub fn try_reserve_up_to(&self, bytes: u64, step: u64) -> Option<Reservation> {
        let step = step.max(UNIT);
        let mut want = bytes.min(self.available()) / step * step;
        while want >= step {
            if let Some(r) = self.try_reserve(want) {
                return Some(r);
            }
            // Someone took some in between: ask for less.
            want = want
                .saturating_sub(step)
                .min(self.available() / step * step);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_come_back_when_dropped() {
        let b = BufferBudget::new(10 << 20, Duration::from_millis(20));
        let r = b.reserve(6 << 20).await.unwrap();
        assert_eq!(r.bytes(), 6 << 20);
        assert_eq!(b.available(), 4 << 20);
        assert!(b.try_reserve(5 << 20).is_none());
        let e = b.reserve(5 << 20).await.unwrap_err();
        assert!(matches!(e, StorageError::Busy { .. }), "{e}");
        drop(r);
        assert_eq!(b.available(), 10 << 20);
        assert_eq!(b.high_water(), 6 << 20);
        assert!(b.try_reserve(5 << 20).is_some());
    }

    #[tokio::test]
    async fn waiting_ends_when_room_is_given_back() {
        let b = BufferBudget::new(8 << 20, Duration::from_secs(30));
        let first = b.reserve(8 << 20).await.unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.reserve(4 << 20).await.map(|r| r.bytes()) });
        tokio::task::yield_now().await;
        drop(first);
        assert_eq!(waiter.await.unwrap().unwrap(), 4 << 20);
    }

    #[tokio::test]
    async fn partial_extras_in_whole_steps() {
        let b = BufferBudget::new(12 << 20, Duration::from_millis(10));
        let _held = b.reserve(5 << 20).await.unwrap();
        let r = b.try_reserve_up_to(20 << 20, 1 << 20).unwrap();
        assert_eq!(r.bytes(), 7 << 20);
        assert!(b.try_reserve_up_to(1 << 20, 1 << 20).is_none());
    }

    #[tokio::test]
    async fn more_than_the_budget_asks_for_all_of_it() {
        let b = BufferBudget::new(4 << 20, Duration::from_millis(10));
        assert_eq!(b.reserve(u64::MAX).await.unwrap().bytes(), 4 << 20);
    }
}
