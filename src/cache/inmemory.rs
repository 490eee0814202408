//! A bounded in-process cache, for a single replica.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;

use super::{CacheBackend, Descriptor};
use crate::registry::digest::Digest;

/// Entries kept before the map is simply emptied (descriptors are tiny).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct InMemoryCache {
    entries: Mutex<HashMap<(Option<String>, Digest), Descriptor>>,
}

#[async_trait]
impl CacheBackend for InMemoryCache {
    async fn get(&self, repo: Option<&str>, d: &Digest) -> Result<Option<Descriptor>, String> {
        let key = (repo.map(str::to_string), d.clone());
        Ok(self.entries.lock().unwrap().get(&key).cloned())
    }

    async fn set(&self, repo: Option<&str>, d: &Digest, desc: &Descriptor) -> Result<(), String> {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        if repo.is_some() {
            entries.insert((None, d.clone()), desc.clone());
        }
        entries.insert((repo.map(str::to_string), d.clone()), desc.clone());
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
}
