//! A bounded in-process cache: for a single replica (`blobdescriptor:
//! inmemory`, entries kept until invalidated), or, with no cache configured,
//! for any replica with entries trusted for a short TTL (`expiring`), since
//! another replica's delete cannot reach this one.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{CacheBackend, Descriptor};
use crate::registry::digest::Digest;

/// Entries kept before the map is simply emptied (descriptors are tiny).
const MAX_ENTRIES: usize = 100_000;

type Key = (Option<String>, Digest);

#[derive(Default)]
pub struct InMemoryCache {
    /// Each with the instant it stops being trusted, if any.
    entries: Mutex<HashMap<Key, (Descriptor, Option<Instant>)>>,
    ttl: Option<Duration>,
}

impl InMemoryCache {
    /// Entries answer for `ttl` after they were filled, then are read again.
    pub fn expiring(ttl: Duration) -> Self {
        InMemoryCache {
            entries: Mutex::default(),
            ttl: Some(ttl),
        }
    }
}

#[async_trait]
impl CacheBackend for InMemoryCache {
    async fn get(&self, repo: Option<&str>, d: &Digest) -> Result<Option<Descriptor>, String> {
        let key = (repo.map(str::to_string), d.clone());
        let mut entries = self.entries.lock().unwrap();
        match entries.get(&key) {
            Some((_, Some(until))) if Instant::now() >= *until => {
                entries.remove(&key);
                Ok(None)
            }
            found => Ok(found.map(|(desc, _)| desc.clone())),
        }
    }

    async fn set(&self, repo: Option<&str>, d: &Digest, desc: &Descriptor) -> Result<(), String> {
        // A TTL past the clock's range: not kept rather than a panic.
        let until = match self.ttl {
            Some(ttl) => match Instant::now().checked_add(ttl) {
                Some(at) => Some(at),
                None => return Ok(()),
            },
            None => None,
        };
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        if repo.is_some() {
            entries.insert((None, d.clone()), (desc.clone(), until));
        }
        entries.insert((repo.map(str::to_string), d.clone()), (desc.clone(), until));
        Ok(())
    }

    async fn clear(&self, repo: Option<&str>, d: &Digest) -> Result<(), String> {
        self.entries
            .lock()
            .unwrap()
            .remove(&(repo.map(str::to_string), d.clone()));
        Ok(())
    }

    async fn flush(&self) -> Result<(), String> {
        self.entries.lock().unwrap().clear();
        Ok(())
    }

    fn name(&self) -> &'static str {
        "inmemory"
    }

    fn expires(&self) -> bool {
        self.ttl.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;

    #[tokio::test]
    async fn expiring_entries_answer_for_the_ttl_only() {
        let d = Digest::of(Algorithm::Sha256, b"layer");
        let desc = Descriptor {
            size: 5,
            media_type: "application/octet-stream".into(),
        };
        let c = InMemoryCache::expiring(Duration::from_secs(3600));
        c.set(Some("r"), &d, &desc).await.unwrap();
        assert_eq!(c.get(Some("r"), &d).await.unwrap(), Some(desc.clone()));
        assert_eq!(c.get(None, &d).await.unwrap(), Some(desc.clone()));
        c.clear(Some("r"), &d).await.unwrap();
        assert_eq!(c.get(Some("r"), &d).await.unwrap(), None, "a delete here");

        let c = InMemoryCache::expiring(Duration::from_millis(1));
        c.set(Some("r"), &d, &desc).await.unwrap();
        let until = Instant::now() + Duration::from_millis(1);
        while Instant::now() <= until {
            std::hint::spin_loop();
        }
        assert_eq!(c.get(Some("r"), &d).await.unwrap(), None, "expired");
        assert_eq!(c.get(None, &d).await.unwrap(), None, "expired");
    }
}
