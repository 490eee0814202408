//! The manifest cache: a manifest is immutable by digest, so its bytes can
//! be kept — in process (least recently used out first, bounded in bytes by
//! `storage.cache.manifests.size`) and, with a `redis:` section, in Redis
//! (see [`super::manifests_redis`]) — and a warm GET or HEAD by digest needs
//! no storage request.
//!
//! What may change is whether a repository links a digest (a delete) and
//! which digest a tag names (a push). The link is scoped by repository as
//! the blob-descriptor cache's is: remembered only after the repository's
//! link was read, forgotten by a delete, never answering for a repository
//! that does not link the digest. It is kept in Redis when there is one
//! (every replica's deletes reach it), in process with
//! `storage.cache.blobdescriptor: inmemory` and no Redis (one replica, as
//! that setting already declares), and otherwise in process for `tagttl`
//! like a tag: a delete on this replica forgets it at once, one on another
//! replica is seen within the TTL (as a tag pushed there is), and a warm
//! GET by digest reads the link once per TTL rather than on every request.
//!
//! A tag's digest is trusted for `tagttl`: in Redis when there is one (a
//! push or delete on any replica removes it), else in process (a push or
//! delete on this replica removes it; other replicas see it within the TTL).
//!
//! Like the blob-descriptor cache this is an accelerator: an error is a
//! miss, logged once. While a garbage-collection sweep runs it neither
//! answers nor remembers, and its in-process entries are flushed when the
//! sweep starts and when it ends.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use lru::LruCache;

use super::{manifests_redis::Shared, redis::RedisCache, CacheStats};
use crate::registry::digest::Digest;

/// How an entry is charged against the byte bound beyond its own bytes
/// (the map's node, the key's digest and strings).
const ENTRY_OVERHEAD: usize = 128;

#[derive(Debug, Clone)]
pub struct ManifestCacheSettings {
    /// In-process bytes (manifests, links, tags); 0: nothing in process.
    pub size: u64,
    /// Zero: every GET by tag reads the tag link.
    pub tag_ttl: Duration,
    /// Zero: bytes are not kept in Redis.
    pub redis_ttl: Duration,
    /// Links may be remembered in process until invalidated (a declared
    /// single replica, no Redis); otherwise, without Redis, for `tag_ttl`.
    pub local_links: bool,
}

impl Default for ManifestCacheSettings {
    fn default() -> Self {
        ManifestCacheSettings {
            size: crate::config::DEFAULT_MANIFEST_CACHE_SIZE,
            tag_ttl: Duration::from_secs(5),
            redis_ttl: Duration::from_secs(24 * 3600),
            local_links: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Body(Digest),
    Link(String, Digest),
    Tag(String, String),
}

enum Value {
    Body(Bytes),
    /// Trusted until the instant, if any.
    Link(Option<Instant>),
    Tag(Digest, Instant),
}

/// Where links may be remembered in process, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalLinks {
    /// Redis holds them (or `tagttl` is zero: never in process).
    No,
    /// Until invalidated: one replica (`blobdescriptor: inmemory`).
    Always,
    /// For `tagttl`: replicas without a shared tier.
    For(Duration),
}

fn charge(k: &Key, v: &Value) -> usize {
    let key = match k {
        Key::Body(_) => 0,
        Key::Link(r, _) => r.len(),
        Key::Tag(r, t) => r.len() + t.len(),
    };
    let value = match v {
        Value::Body(b) => b.len(),
        _ => 0,
    };
    ENTRY_OVERHEAD + key + value
}

/// The in-process tier: one LRU for bytes, links and tags, bounded in bytes.
struct Local {
    lru: LruCache<Key, Value>,
    bytes: usize,
    max: usize,
}

impl Local {
    fn put(&mut self, k: Key, v: Value) {
        let c = charge(&k, &v);
        if c > self.max {
            return;
        }
        if let Some((old_k, old_v)) = self.lru.push(k, v) {
            self.bytes -= charge(&old_k, &old_v);
        }
        self.bytes += c;
        while self.bytes > self.max {
            match self.lru.pop_lru() {
                Some((k, v)) => self.bytes -= charge(&k, &v),
                None => break,
            }
        }
    }

    fn remove(&mut self, k: &Key) {
        if let Some(v) = self.lru.pop(k) {
            self.bytes -= charge(k, &v);
        }
    }

    fn clear(&mut self) {
        self.lru.clear();
        self.bytes = 0;
    }
}

/// What a lookup by digest found; handed back to [`ManifestCache::fill`]
/// once storage has answered the rest.
pub struct DigestLookup {
    /// The repository links the digest (as of a read of the link).
    pub linked: bool,
    pub body: Option<Bytes>,
    /// Where the lookup found nothing, so the fill knows what to write.
    had_local_body: bool,
    had_shared_body: bool,
    /// The invalidation counters seen before storage was read; `None`: do
    /// not fill (bypassed, or Redis did not answer).
    epoch: Option<u64>,
    generation: Option<String>,
}

/// The cache a [`Registry`](crate::registry::Registry) holds; cheap to clone.
#[derive(Clone)]
pub struct ManifestCache {
    inner: Arc<Inner>,
}

struct Inner {
    local: Mutex<Local>,
    shared: Option<Shared>,
    tag_ttl: Duration,
    local_links: LocalLinks,
    bypass: AtomicBool,
    /// Bumped by every in-process invalidation of a link: a fill that
    /// looked before it is dropped (see [`ManifestCache::fill`]).
    epoch: AtomicU64,
    failing: AtomicBool,
    stats: Arc<CacheStats>,
}

impl ManifestCache {
    /// `redis`: the shared tier (links and tags live there, not in process).
    pub fn new(settings: ManifestCacheSettings, redis: Option<RedisCache>) -> Self {
        let shared = redis.map(|redis| Shared {
            redis,
            body_ttl: settings.redis_ttl,
        });
        ManifestCache {
            inner: Arc::new(Inner {
                local: Mutex::new(Local {
                    lru: LruCache::unbounded(),
                    bytes: 0,
                    max: usize::try_from(settings.size).unwrap_or(usize::MAX),
                }),
                local_links: match (&shared, settings.local_links) {
                    (Some(_), _) => LocalLinks::No,
                    (None, true) => LocalLinks::Always,
                    (None, false) if settings.tag_ttl.is_zero() => LocalLinks::No,
                    (None, false) => LocalLinks::For(settings.tag_ttl),
                },
                shared,
                tag_ttl: settings.tag_ttl,
                bypass: AtomicBool::new(false),
                epoch: AtomicU64::new(0),
                failing: AtomicBool::new(false),
                stats: Arc::default(),
            }),
        }
    }

    /// Hits (a GET or HEAD answered without storage), misses, errors.
    pub fn stats(&self) -> Arc<CacheStats> {
        self.inner.stats.clone()
    }

    fn bypassed(&self) -> bool {
        self.inner.bypass.load(Ordering::SeqCst)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.inner.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn local_body(&self, d: &Digest) -> Option<Bytes> {
        match self.local().lru.get(&Key::Body(d.clone())) {
            Some(Value::Body(b)) => Some(b.clone()),
            _ => None,
        }
    }

    fn failed(&self, op: &str, e: &str) {
        self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
        if !self.inner.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(op, error = %e, "manifest cache (Redis) unavailable; serving from storage");
        }
    }

    fn ok<T>(&self, r: Result<T, String>, op: &str) -> Option<T> {
        match r {
            Ok(v) => {
                if self.inner.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("manifest cache (Redis) is back");
                }
                Some(v)
            }
            Err(e) => {
                self.failed(op, &e);
                None
            }
        }
    }

    fn count(&self, hit: bool) {
        let c = if hit {
            &self.inner.stats.hits
        } else {
            &self.inner.stats.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Is `d` linked in `repo`, and its bytes: at most one Redis round trip.
    pub async fn lookup(&self, repo: &str, d: &Digest) -> DigestLookup {
        let mut look = DigestLookup {
            linked: false,
            body: None,
            had_local_body: false,
            had_shared_body: false,
            epoch: None,
            generation: None,
        };
        if self.bypassed() {
            return look;
        }
        // Read before anything else: an invalidation from here on stops the fill.
        look.epoch = Some(self.inner.epoch.load(Ordering::SeqCst));
        look.body = self.local_body(d);
        look.had_local_body = look.body.is_some();
        match &self.inner.shared {
            Some(shared) => {
                let found = shared.lookup(repo, d, look.body.is_none()).await;
                if let Some(found) = self.ok(found, "lookup") {
                    look.linked = found.linked;
                    look.generation = Some(found.generation);
                    if found.body.is_some() {
                        look.had_shared_body = true;
                        look.body = found.body;
                    }
                }
            }
            None if self.inner.local_links != LocalLinks::No => {
                let key = Key::Link(repo.to_string(), d.clone());
                let mut local = self.local();
                look.linked = match local.lru.get(&key) {
                    Some(Value::Link(None)) => true,
                    Some(Value::Link(Some(until))) if Instant::now() < *until => true,
                    Some(_) => {
                        local.remove(&key);
                        false
                    }
                    None => false,
                };
            }
            None => {}
        }
        self.count(look.linked && look.body.is_some());
        look
    }

    /// Remember what `look` lacked: the link (read from storage after the
    /// lookup) and the bytes.
    pub async fn fill(&self, repo: &str, d: &Digest, body: &Bytes, look: DigestLookup) {
        let Some(epoch) = look.epoch else { return };
        if self.bypassed() {
            return;
        }
        {
            let mut local = self.local();
            if !look.had_local_body {
                local.put(Key::Body(d.clone()), Value::Body(body.clone()));
            }
            // Under the lock that invalidations take after bumping the
            // epoch: either it is seen changed here, or the removal follows.
            let until = match self.inner.local_links {
                LocalLinks::No => None,
                LocalLinks::Always => Some(None),
                // A TTL past the clock's range is not cached rather than a panic.
                LocalLinks::For(ttl) => Instant::now().checked_add(ttl).map(Some),
            };
            if let Some(until) =
                until.filter(|_| !look.linked && self.inner.epoch.load(Ordering::SeqCst) == epoch)
            {
                local.put(Key::Link(repo.to_string(), d.clone()), Value::Link(until));
            }
        }
        if let Some(shared) = &self.inner.shared {
            let link_under = look.generation.as_deref().filter(|_| !look.linked);
            let body = (!look.had_shared_body).then_some(body);
            let r = shared.fill(repo, d, link_under, body).await;
            self.ok(r, "fill");
        }
    }

    /// The bytes of `d` whatever repository asks (a GET by tag, whose tag
    /// link already says the repository has it).
    pub async fn body(&self, d: &Digest) -> Option<Bytes> {
        if self.bypassed() {
            return None;
        }
        if let Some(b) = self.local_body(d) {
            return Some(b);
        }
        let shared = self.inner.shared.as_ref()?;
        let body = self.ok(shared.body(d).await, "body").flatten()?;
        if !self.bypassed() {
            self.local()
                .put(Key::Body(d.clone()), Value::Body(body.clone()));
        }
        Some(body)
    }

    /// Remember bytes read from storage (or just pushed): content is
    /// immutable by digest, so no link or generation is involved.
    pub async fn fill_body(&self, d: &Digest, body: &Bytes, shared_too: bool) {
        if self.bypassed() {
            return;
        }
        self.local()
            .put(Key::Body(d.clone()), Value::Body(body.clone()));
        if let (true, Some(shared)) = (shared_too, &self.inner.shared) {
            let r = shared.fill_body(d, body).await;
            self.ok(r, "fill");
        }
    }

    /// The digest `tag` names in `repo`, if known and not older than the TTL.
    pub async fn tag(&self, repo: &str, tag: &str) -> Option<Digest> {
        if self.bypassed() || self.inner.tag_ttl.is_zero() {
            return None;
        }
        if let Some(shared) = &self.inner.shared {
            let d = self.ok(shared.tag(repo, tag).await, "tag").flatten()?;
            return d.parse().ok();
        }
        let key = Key::Tag(repo.to_string(), tag.to_string());
        let mut local = self.local();
        let found = match local.lru.get(&key) {
            Some(Value::Tag(d, until)) => Some((d.clone(), *until)),
            _ => None,
        };
        match found {
            Some((d, until)) if Instant::now() < until => Some(d),
            Some(_) => {
                local.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remember a tag's digest for the TTL. A push racing this fill can
    /// leave the older digest here: for the TTL at most, never longer.
    pub async fn fill_tag(&self, repo: &str, tag: &str, d: &Digest) {
        let ttl = self.inner.tag_ttl;
        if self.bypassed() || ttl.is_zero() {
            return;
        }
        if let Some(shared) = &self.inner.shared {
            let r = shared.fill_tag(repo, tag, d, ttl).await;
            self.ok(r, "fill");
            return;
        }
        // A TTL past the clock's range is not cached rather than a panic.
        if let Some(until) = Instant::now().checked_add(ttl) {
            self.local().put(
                Key::Tag(repo.to_string(), tag.to_string()),
                Value::Tag(d.clone(), until),
            );
        }
    }

    /// A tag was pushed or deleted. Returns whether Redis (if any) took it.
    pub async fn forget_tag(&self, repo: &str, tag: &str) -> bool {
        self.local()
            .remove(&Key::Tag(repo.to_string(), tag.to_string()));
        match &self.inner.shared {
            Some(shared) => self.invalidated(shared.forget_tag(repo, tag).await, repo, tag),
            None => true,
        }
    }

    /// `repo` no longer links `d` (a delete, or garbage collection).
    pub async fn forget_link(&self, repo: &str, d: &Digest) -> bool {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.local().remove(&Key::Link(repo.to_string(), d.clone()));
        match &self.inner.shared {
            Some(shared) => self.invalidated(shared.forget_link(repo, d).await, repo, d),
            None => true,
        }
    }

    /// The bytes are gone from storage (a garbage-collection sweep).
    pub async fn forget_body(&self, d: &Digest) -> bool {
        self.local().remove(&Key::Body(d.clone()));
        match &self.inner.shared {
            Some(shared) => self.invalidated(shared.forget_body(d).await, "", d),
            None => true,
        }
    }

    /// A failed invalidation is logged loudly: the entry may answer until it
    /// expires (bytes, tags) or is deleted by hand (links).
    fn invalidated(&self, r: Result<(), String>, repo: &str, what: impl std::fmt::Display) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                self.failed("invalidate", &e);
                tracing::error!(repository = repo, entry = %what, error = %e, "could not invalidate a manifest cache entry");
                false
            }
        }
    }

    /// Can the shared tier be reached (garbage collection asks before
    /// deleting anything)? True without one.
    pub async fn reachable(&self) -> bool {
        match &self.inner.shared {
            Some(shared) => {
                let probe = Digest::of(
                    crate::registry::digest::Algorithm::Sha256,
                    b"berth garbage-collect manifest cache probe",
                );
                shared.forget_body(&probe).await.is_ok()
            }
            None => true,
        }
    }

    /// A garbage-collection sweep starts (`on`) or ends: bypass while it
    /// runs, flushing the in-process tier on both edges (as the
    /// blob-descriptor cache does, and in the same order).
    pub fn set_bypass(&self, on: bool) {
        if on {
            self.inner.bypass.store(true, Ordering::SeqCst);
        }
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.local().clear();
        if !on {
            self.inner.bypass.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;

    fn single_replica(size: u64) -> ManifestCache {
        ManifestCache::new(
            ManifestCacheSettings {
                size,
                local_links: true,
                ..Default::default()
            },
            None,
        )
    }

    fn manifest(i: usize) -> (Digest, Bytes) {
        let body = Bytes::from(format!("{{\"schemaVersion\":2,\"n\":{i:04}}}"));
        (Digest::of(Algorithm::Sha256, &body), body)
    }

    #[tokio::test]
    async fn a_fill_that_raced_a_delete_is_dropped() {
        let c = single_replica(1 << 20);
        let (d, body) = manifest(0);
        let look = c.lookup("r", &d).await;
        assert!(!look.linked);
        // The delete lands between the lookup (before the link was read)
        // and the fill.
        c.forget_link("r", &d).await;
        c.fill("r", &d, &body, look).await;
        let look = c.lookup("r", &d).await;
        assert!(!look.linked);
        assert_eq!(look.body.as_ref(), Some(&body), "the bytes are kept");
        c.fill("r", &d, &body, look).await;
        assert!(c.lookup("r", &d).await.linked);
        assert!(!c.lookup("other", &d).await.linked, "scoped by repository");
    }

    #[tokio::test]
    async fn the_byte_bound_holds_and_the_least_recently_used_go_first() {
        let one = charge(&Key::Body(manifest(0).0), &Value::Body(manifest(0).1));
        let c = single_replica((one * 10) as u64);
        for i in 0..10 {
            let (d, body) = manifest(i);
            c.fill_body(&d, &body, false).await;
        }
        // Touch the first, then add five more: the next five oldest go.
        assert!(c.body(&manifest(0).0).await.is_some());
        for i in 10..15 {
            let (d, body) = manifest(i);
            c.fill_body(&d, &body, false).await;
        }
        assert!(c.local().bytes <= one * 10);
        assert!(c.body(&manifest(0).0).await.is_some(), "recently used");
        for i in 1..6 {
            assert!(c.body(&manifest(i).0).await.is_none(), "{i} evicted");
        }
        for i in 6..15 {
            assert!(c.body(&manifest(i).0).await.is_some(), "{i} kept");
        }
        // Larger than the whole bound: not kept, nothing evicted for it.
        let big = Bytes::from(vec![b' '; one * 11]);
        let big_d = Digest::of(Algorithm::Sha256, &big);
        c.fill_body(&big_d, &big, false).await;
        assert!(c.body(&big_d).await.is_none());
        assert!(c.body(&manifest(14).0).await.is_some());
    }

    /// No Redis and no `inmemory` declaration: a link is trusted for the
    /// tag TTL, forgotten at once by a delete here, and gone after the TTL.
    #[tokio::test]
    async fn links_without_a_shared_tier_last_the_tag_ttl() {
        let replica = |ttl| {
            ManifestCache::new(
                ManifestCacheSettings {
                    tag_ttl: ttl,
                    ..Default::default()
                },
                None,
            )
        };
        let (d, body) = manifest(0);
        let c = replica(Duration::from_secs(3600));
        let look = c.lookup("r", &d).await;
        c.fill("r", &d, &body, look).await;
        let look = c.lookup("r", &d).await;
        assert!(
            look.linked && look.body.is_some(),
            "warm: no storage request"
        );
        c.forget_link("r", &d).await;
        assert!(!c.lookup("r", &d).await.linked, "a delete here forgets it");

        let c = replica(Duration::from_millis(1));
        let look = c.lookup("r", &d).await;
        c.fill("r", &d, &body, look).await;
        let until = Instant::now() + Duration::from_millis(1);
        while Instant::now() <= until {
            std::hint::spin_loop();
        }
        assert!(
            !c.lookup("r", &d).await.linked,
            "expired: read the link again"
        );

        let c = replica(Duration::ZERO);
        let look = c.lookup("r", &d).await;
        c.fill("r", &d, &body, look).await;
        assert!(!c.lookup("r", &d).await.linked, "tagttl 0: never trusted");
    }

    #[tokio::test]
    async fn tags_expire_and_are_forgotten() {
        let c = ManifestCache::new(
            ManifestCacheSettings {
                tag_ttl: Duration::from_millis(1),
                ..Default::default()
            },
            None,
        );
        let (d, _) = manifest(0);
        c.fill_tag("r", "latest", &d).await;
        let until = Instant::now() + Duration::from_millis(1);
        while Instant::now() <= until {
            std::hint::spin_loop();
        }
        assert_eq!(c.tag("r", "latest").await, None, "expired");

        let c = single_replica(1 << 20);
        c.fill_tag("r", "latest", &d).await;
        assert_eq!(c.tag("r", "latest").await, Some(d.clone()));
        assert_eq!(c.tag("s", "latest").await, None);
        c.forget_tag("r", "latest").await;
        assert_eq!(c.tag("r", "latest").await, None);
    }
}
