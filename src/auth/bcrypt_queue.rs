//! The one queue every password check waits in: htpasswd logins on `/v2/`
//! and the token server's (its static users and its htpasswd file) share it.
//!
//! bcrypt is deliberately slow (~70 ms at cost 10), so checks run on the
//! blocking pool, one per core at a time — a flood of logins must not grow
//! the blocking pool to hundreds of threads that starve every other blocking
//! task. Those waiting for a core are bounded too (`http.loginqueue`): past
//! the bound a check is refused at once ([`Busy`], answered 429 with
//! Retry-After) instead of queueing without end while its client times out.
//!
//! Also here: how an unknown user is made to cost what a known one does.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

/// Cost of the stand-in hash when there are no entries to take it from.
pub const DEFAULT_COST: u32 = 10;

/// A full queue is reported at most this often (a flood would otherwise
/// write a line per refused request).
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What a refused client is told to wait: a queue of checks drains in
/// about (queue / cores) × a check's time, a second or so at the defaults.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The queue is full: the check was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks waiting; retry shortly")]
pub struct Busy;

pub struct BcryptQueue {
    /// Checks running at once.
    running: Arc<Semaphore>,
    /// Checks admitted at once, running or waiting.
    admitted: Arc<Semaphore>,
    queue: usize,
    /// Refusals since the last report, and when that was.
    refused: AtomicU64,
    reported: Mutex<Option<Instant>>,
}

impl BcryptQueue {
    /// One running check per core, `queue` more waiting.
    pub fn new(queue: usize) -> BcryptQueue {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BcryptQueue::with_slots(cores, queue)
    }

    pub fn with_slots(running: usize, queue: usize) -> BcryptQueue {
        let running = running.clamp(1, Semaphore::MAX_PERMITS);
        let admitted = running.saturating_add(queue).min(Semaphore::MAX_PERMITS);
        BcryptQueue {
            running: Arc::new(Semaphore::new(running)),
            admitted: Arc::new(Semaphore::new(admitted)),
            queue,
            refused: AtomicU64::new(0),
            reported: Mutex::new(None),
        }
    }

    fn refuse(&self) -> Busy {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut reported = self.reported.lock().unwrap();
        if reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            *reported = Some(Instant::now());
            self.refused.fetch_sub(refused, Ordering::Relaxed);
            tracing::warn!(
                refused,
                queue = self.queue,
                "password checks queue full (http.loginqueue): logins refused with 429"
            );
        }
        Busy
    }

    /// Takes every place, as checks in progress would, until dropped.
    #[cfg(test)]
    pub(crate) fn hold_for_test(&self) -> tokio::sync::OwnedSemaphorePermit {
        let n = self.admitted.available_permits() as u32;
        self.admitted.clone().try_acquire_many_owned(n).unwrap()
    }

    /// Does `password` match `hash`? Err when the queue is full.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, Busy> {
        // Both permits are owned and travel into the blocking task: a client
        // that hangs up mid-check frees its place only when bcrypt is done,
        // so disconnects cannot oversubscribe the cores.
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.refuse())?;
        // Never closed, so acquiring only waits.
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
        let (password, hash) = (password.to_string(), hash.to_string());
        Ok(tokio::task::spawn_blocking(move || {
            let _held = (admitted, running);
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false))
    }
}

/// The bcrypt crate reads `$2b$`; `$2y$` and `$2a$` are the same algorithm.
pub fn normalise(hash: &str) -> String {
    format!("$2b${}", hash.get(4..).unwrap_or(""))
}

/// A bcrypt hash as `htpasswd -B` or the `bcrypt` crate write it.
pub fn check_bcrypt(hash: &str) -> Result<(), String> {
    cost_of(hash).map(|_| ())
}

fn cost_of(hash: &str) -> Result<u32, String> {
    if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
        return Err("only bcrypt hashes are supported (htpasswd -B)".into());
    }
    normalise(hash)
        .parse::<bcrypt::HashParts>()
        .map(|p| p.get_cost())
        .map_err(|_| "malformed bcrypt hash".into())
}

/// The cost most entries use (the higher on a tie): what a check against a
/// user that does not exist must cost for the answer's timing to look like
/// most real users'. A single max would single out every cheaper entry.
pub fn typical_cost<'a>(hashes: impl IntoIterator<Item = &'a str>) -> u32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for cost in hashes.into_iter().filter_map(|h| cost_of(h).ok()) {
        *counts.entry(cost).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(cost, n)| (n, cost))
        .map_or(DEFAULT_COST, |(cost, _)| cost)
}

/// A valid bcrypt hash at `cost` that no password matches in practice (a
/// random password's, with a random salt): checking an unknown user against
/// it costs what checking a real entry of that cost does. Hashed at the
/// cheapest cost with the cost field then raised, so a reload with costly
/// entries does not stall.
pub fn stand_in(cost: u32) -> String {
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    let cheap = bcrypt::hash(hex::encode(secret), 4).expect("bcrypt at cost 4");
    // "$2b$04$<salt><digest>": only the two cost digits change.
    format!("$2b${:02}{}", cost.clamp(4, 31), &cheap[6..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_are_valid_hashes_at_the_asked_cost() {
        for cost in [4, 5, 10, 12] {
            let h = stand_in(cost);
            let parts: bcrypt::HashParts = h.parse().unwrap();
            assert_eq!(parts.get_cost(), cost, "{h}");
        }
        let h = stand_in(4);
        assert!(!bcrypt::verify("", &h).unwrap());
        assert!(!bcrypt::verify("dummy", &h).unwrap());
        assert_ne!(stand_in(4), h, "random each time");
    }

    #[test]
    fn typical_cost_is_the_most_common() {
        let h5 = bcrypt::hash("a", 5).unwrap().replacen("$2b$", "$2y$", 1);
        let h4 = bcrypt::hash("a", 4).unwrap();
        assert_eq!(typical_cost([h5.as_str(), h5.as_str(), h4.as_str()]), 5);
        assert_eq!(typical_cost([h5.as_str(), h4.as_str()]), 5, "tie: higher");
        assert_eq!(typical_cost([]), DEFAULT_COST);
        assert_eq!(typical_cost(["$apr1$x$y"]), DEFAULT_COST);
    }

    #[test]
    fn bcrypt_only() {
        assert!(check_bcrypt(&bcrypt::hash("x", 4).unwrap()).is_ok());
        assert!(check_bcrypt("$apr1$abc$def").is_err());
        assert!(check_bcrypt("$2y$04$short").is_err());
    }

    /// Past running + queue, a check is refused at once; the places come
    /// back when checks finish.
    #[tokio::test]
    async fn refuses_beyond_the_queue() {
        let q = BcryptQueue::with_slots(1, 1);
        // Hold both places as two checks in progress would.
        let first = q.admitted.clone().try_acquire_owned().unwrap();
        let second = q.admitted.clone().try_acquire_owned().unwrap();
        let h = bcrypt::hash("pw", 4).unwrap();
        assert_eq!(q.verify("pw", &h).await, Err(Busy));
        drop(first);
        assert_eq!(q.verify("pw", &h).await, Ok(true));
        assert_eq!(q.verify("nope", &h).await, Ok(false));
        drop(second);
        // A queue of 0: only the running places.
        let q = BcryptQueue::with_slots(1, 0);
        let running = q.admitted.clone().try_acquire_owned().unwrap();
        assert_eq!(q.verify("pw", &h).await, Err(Busy));
        drop(running);
        assert_eq!(q.verify("pw", &h).await, Ok(true));
    }
}
