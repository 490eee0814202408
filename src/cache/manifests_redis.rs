//! The manifest cache's shared tier in Redis (Berth's own keys, beside
//! distribution's blob-descriptor ones):
//!
//! - `berth::manifest::<digest>`: the manifest's bytes, expiring after
//!   `storage.cache.manifests.redisttl` (content is immutable by digest; the
//!   expiry only bounds Redis's memory);
//! - `berth::repository::<name>::manifests`: a hash, one field per manifest
//!   digest the repository links, and `_gen`, bumped by every invalidation;
//! - `berth::repository::<name>::tag::<tag>`: the tag's digest, expiring
//!   after `storage.cache.manifests.tagttl`.
//!
//! A link is filled only if `_gen` is still what the lookup that missed saw:
//! a delete on any replica between that lookup (which came before the
//! storage read of the link) and the fill makes the fill a no-op, so a
//! deleted manifest is never remembered as linked. One hash per repository
//! keeps the check and the write on one key (one slot on a cluster), so a
//! script can do both atomically.

use std::time::Duration;

use bytes::Bytes;

use super::redis::RedisCache;
use crate::registry::digest::Digest;

const GEN: &str = "_gen";

/// Link `ARGV[2]` if `_gen` is still `ARGV[1]` ("" for none yet).
const FILL_LINK: &str = "local g = redis.call('HGET', KEYS[1], '_gen') or '' \
    if g == ARGV[1] then redis.call('HSET', KEYS[1], ARGV[2], '1') return 1 end \
    return 0";

fn body_key(d: &Digest) -> String {
    format!("berth::manifest::{d}")
}

fn links_key(repo: &str) -> String {
    format!("berth::repository::{repo}::manifests")
}

fn tag_key(repo: &str, tag: &str) -> String {
    format!("berth::repository::{repo}::tag::{tag}")
}

/// Bytes from Redis are checked against their digest (a few microseconds
/// for a manifest): whatever wrote the key, a client never gets bytes that
/// are not the manifest it asked for; a mismatch is a miss.
fn verified(d: &Digest, body: Option<Vec<u8>>) -> Option<Bytes> {
    let body = Bytes::from(body?);
    if Digest::of(d.algorithm(), &body) == *d {
        Some(body)
    } else {
        tracing::warn!(digest = %d, "manifest cache (Redis) holds other bytes for this digest; ignored");
        None
    }
}

/// HMGET of a digest's field and `_gen`.
type LinkAndGeneration = (Option<String>, Option<String>);

/// What Redis said of a manifest in a repository.
pub(super) struct Found {
    pub linked: bool,
    /// The generation to fill the link under.
    pub generation: String,
    /// Asked for only when the caller has no copy of the bytes.
    pub body: Option<Bytes>,
}

pub(super) struct Shared {
    pub redis: RedisCache,
    /// Zero: bytes are not kept in Redis.
    pub body_ttl: Duration,
}

impl Shared {
    /// The repository's link (and generation), with the bytes when
    /// `want_body`: one round trip.
    pub async fn lookup(&self, repo: &str, d: &Digest, want_body: bool) -> Result<Found, String> {
        let mut links = redis::cmd("HMGET");
        links.arg(links_key(repo)).arg(d.to_string()).arg(GEN);
        let ((linked, generation), body): (LinkAndGeneration, Option<Vec<u8>>) =
            if want_body && !self.body_ttl.is_zero() {
                let mut get = redis::cmd("GET");
                get.arg(body_key(d));
                self.redis.query_both(links, get).await?
            } else {
                (self.redis.query(links).await?, None)
            };
        Ok(Found {
            linked: linked.is_some(),
            generation: generation.unwrap_or_default(),
            body: verified(d, body),
        })
    }

    /// The bytes alone (a GET by tag knows no repository link to check).
    pub async fn body(&self, d: &Digest) -> Result<Option<Bytes>, String> {
        if self.body_ttl.is_zero() {
            return Ok(None);
        }
        let mut get = redis::cmd("GET");
        get.arg(body_key(d));
        let body: Option<Vec<u8>> = self.redis.query(get).await?;
        Ok(verified(d, body))
    }

    fn set_body(&self, d: &Digest, body: &Bytes) -> redis::Cmd {
        let mut set = redis::cmd("SET");
        set.arg(body_key(d))
            .arg(body.as_ref())
            .arg("PX")
            .arg(self.body_ttl.as_millis().max(1) as u64);
        set
    }

    /// Remember the link (under `generation`) and/or the bytes: one round trip.
    pub async fn fill(
        &self,
        repo: &str,
        d: &Digest,
        link_under: Option<&str>,
        body: Option<&Bytes>,
    ) -> Result<(), String> {
        let body = body.filter(|_| !self.body_ttl.is_zero());
        let link = link_under.map(|generation| {
            let mut eval = redis::cmd("EVAL");
            eval.arg(FILL_LINK)
                .arg(1)
                .arg(links_key(repo))
                .arg(generation)
                .arg(d.to_string());
            eval
        });
        match (link, body) {
            (Some(link), Some(body)) => {
                let _: (i64, ()) = self.redis.query_both(link, self.set_body(d, body)).await?;
            }
            (Some(link), None) => {
                let _: i64 = self.redis.query(link).await?;
            }
            (None, Some(body)) => {
                let _: () = self.redis.query(self.set_body(d, body)).await?;
            }
            (None, None) => {}
        }
        Ok(())
    }

    pub async fn fill_body(&self, d: &Digest, body: &Bytes) -> Result<(), String> {
        if self.body_ttl.is_zero() {
            return Ok(());
        }
        self.redis.query(self.set_body(d, body)).await
    }

    /// Forget the link; the generation goes up first and atomically with
    /// it, so no fill that looked before this can land after it.
    pub async fn forget_link(&self, repo: &str, d: &Digest) -> Result<(), String> {
        let key = links_key(repo);
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HINCRBY")
            .arg(&key)
            .arg(GEN)
            .arg(1)
            .ignore()
            .cmd("HDEL")
            .arg(&key)
            .arg(d.to_string())
            .ignore();
        self.redis.query_pipe(p).await
    }

    pub async fn forget_body(&self, d: &Digest) -> Result<(), String> {
        let mut del = redis::cmd("DEL");
        del.arg(body_key(d));
        self.redis.query(del).await
    }

    pub async fn tag(&self, repo: &str, tag: &str) -> Result<Option<String>, String> {
        let mut get = redis::cmd("GET");
        get.arg(tag_key(repo, tag));
        self.redis.query(get).await
    }

    pub async fn fill_tag(
        &self,
        repo: &str,
        tag: &str,
        d: &Digest,
        ttl: Duration,
    ) -> Result<(), String> {
        let mut set = redis::cmd("SET");
        set.arg(tag_key(repo, tag))
            .arg(d.to_string())
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.redis.query(set).await
    }

    pub async fn forget_tag(&self, repo: &str, tag: &str) -> Result<(), String> {
        let mut del = redis::cmd("DEL");
        del.arg(tag_key(repo, tag));
        self.redis.query(del).await
    }
}
