//! The pull-through cache (`proxy:`): the whole registry mirrors one
//! upstream (distribution's form), or repositories under a prefix mirror
//! theirs (`proxy.mirrors`, Berth's form: `dockerhub/library/alpine` is
//! Docker Hub's `library/alpine`; a one-part Docker Hub name gets its
//! `library/`). What the mirror has it serves from storage, in
//! the normal layout (so GC, backup and every replica treat it like pushed
//! content); what it lacks it fetches once, verifies against its digest
//! and stores before serving.
//!
//! - **Manifests by digest** are immutable: fetched on a miss, verified,
//!   stored without checking that their blobs are here yet (those come on
//!   their own pulls), never asked for again.
//! - **Tags** are served from the cache for `proxy.tagttl` after they were
//!   last checked, then checked with a HEAD upstream (Docker Hub does not
//!   count it against its pull limit): the same digest costs nothing more,
//!   a moved tag is fetched by its new digest. Checks are per replica.
//! - **Blobs** missing here are fetched by one task per blob and replica,
//!   into storage through the registry's digest-verified direct write while
//!   clients read behind the fetch (see [`fill`]): wrong bytes never enter
//!   the cache.
//! - **Upstream down or rate-limiting**: whatever the cache has is served
//!   (tags past their TTL too), with a warning; what it lacks is a 503 (or
//!   the upstream's 429, `Retry-After` passed on).
//! - **Writes** (pushes, deletes, mounts) are refused with 405
//!   `UNSUPPORTED`, as distribution's proxy does.
//!
//! [`ProxyCache`] is held by the [`Registry`], whose manifest and blob
//! lookups call into it; it calls back into the registry for storage.

pub mod auth;
mod fill;
mod manifests;
pub mod metrics;
mod spool_dir;
pub mod upstream;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    cache::redis::RedisCache,
    config::proxy::ProxySettings,
    digest::Digest,
    registry::{
        blobs::BlobInfo,
        error::{Code, Error, Result},
        manifests::{Reference, StoredManifest},
        Registry,
    },
};
use fill::Fill;
use metrics::{Kind, Outcome, ProxyMetrics};
use upstream::Upstream;

/// Fetches under way by digest, each with its number.
type Fills = HashMap<Digest, (u64, Arc<Fill>)>;

/// Docker Hub's hosts: a one-part name there is an official image under
/// `library/`.
const DOCKER_HUB: [&str; 3] = ["registry-1.docker.io", "docker.io", "index.docker.io"];

/// One upstream and the repositories it serves.
struct Mirror {
    /// Empty: every repository.
    prefix: String,
    upstream: Arc<Upstream>,
    tag_ttl: Duration,
    docker_hub: bool,
}

/// Where a mirrored repository comes from.
pub(crate) struct Route {
    upstream: Arc<Upstream>,
    /// The repository's name upstream.
    remote: String,
    tag_ttl: Duration,
}

pub struct ProxyCache {
    mirrors: Vec<Mirror>,
    /// When each (repository, tag) was last found current upstream.
    checked: Mutex<HashMap<(String, String), Instant>>,
    /// Blob fetches under way on this replica, each with a number so that
    /// a fetch that ends removes itself and not a later one.
    fills: Arc<Mutex<Fills>>,
    next_fill: std::sync::atomic::AtomicU64,
    /// Where fetches spool what clients read before it is stored: this
    /// process's own directory under `proxy.spooldir`.
    spool_dir: spool_dir::SpoolDir,
    metrics: ProxyMetrics,
    /// Redis, when configured: one fetch of a blob in the whole cluster.
    lock: Option<Arc<RedisCache>>,
    /// How long a claim on a fetch lasts unless renewed (`proxy.claimttl`).
    claim_ttl: Duration,
}

impl ProxyCache {
    pub fn new(s: &ProxySettings) -> Result<ProxyCache> {
        let metrics = ProxyMetrics::default();
        let mut mirrors = Vec::new();
        for m in &s.mirrors {
            let upstream =
                Upstream::new(&m.remote, m.credentials.clone(), s.timeout, metrics.clone())?;
            let host = reqwest::Url::parse(&m.remote)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
            mirrors.push(Mirror {
                prefix: m.prefix.clone(),
                upstream: Arc::new(upstream),
                tag_ttl: m.tag_ttl,
                docker_hub: host.is_some_and(|h| DOCKER_HUB.contains(&h.as_str())),
            });
        }
        // Longest prefix first, so the most specific mirror wins.
        mirrors.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        let spool_dir = spool_dir::SpoolDir::claim(&s.spool_dir).map_err(|e| {
            Error::new(
                Code::Unavailable,
                format!(
                    "proxy.spooldir: cannot claim a spool directory under {}: {e}",
                    s.spool_dir.display()
                ),
            )
        })?;
        Ok(ProxyCache {
            mirrors,
            checked: Mutex::default(),
            fills: Arc::default(),
            next_fill: Default::default(),
            spool_dir,
            metrics,
            lock: None,
            claim_ttl: s.claim_ttl,
        })
    }

    /// Coordinate fetches across replicas through `redis`.
    pub fn with_lock(mut self, redis: Arc<RedisCache>) -> Self {
        self.lock = Some(redis);
        self
    }

    /// The counters to expose (see [`metrics`]).
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// Count a manifest request of a mirrored repository.
    fn count(&self, route: &Route, outcome: Outcome) {
        self.metrics
            .served(route.upstream.url(), Kind::Manifest, outcome);
    }

    /// Count a blob of mirrored `name` served from the cache.
    pub fn blob_hit(&self, name: &str) {
        if let Some((m, _)) = self.mirror_for(name) {
            self.metrics
                .served(m.upstream.url(), Kind::Blob, Outcome::Hit);
        }
    }

    /// The mirror serving `name` and the rest of the name after its
    /// prefix, if it is mirrored (no allocation: asked on every request).
    fn mirror_for<'a>(&self, name: &'a str) -> Option<(&Mirror, &'a str)> {
        self.mirrors.iter().find_map(|m| {
            let rest = if m.prefix.is_empty() {
                name
            } else {
                name.strip_prefix(m.prefix.as_str())?.strip_prefix('/')?
            };
            (!rest.is_empty()).then_some((m, rest))
        })
    }

    /// Where `name` comes from, if it is mirrored.
    fn route(&self, name: &str) -> Option<Route> {
        let (m, rest) = self.mirror_for(name)?;
        let remote = if m.docker_hub && !rest.contains('/') {
            format!("library/{rest}")
        } else {
            rest.to_string()
        };
        Some(Route {
            upstream: m.upstream.clone(),
            remote,
            tag_ttl: m.tag_ttl,
        })
    }

    /// Whether `name` is mirrored.
    pub fn mirrors(&self, name: &str) -> bool {
        self.mirror_for(name).is_some()
    }

    /// The refusal of a write to mirrored `name`.
    pub fn refuse_write(&self, name: &str) -> Error {
        let from = self
            .route(name)
            .map(|r| format!("{} of {}", r.remote, r.upstream.url()))
            .unwrap_or_default();
        Error::new(
            Code::Unsupported,
            format!(
                "{name} is a pull-through cache ({from}): pushes and deletes are not supported"
            ),
        )
    }

    /// A manifest of mirrored `name`.
    pub async fn manifest(
        &self,
        reg: &Registry,
        name: &str,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let route = self.route(name).ok_or_else(|| not_mirrored(name))?;
        let found = match reference {
            Reference::Digest(d) => match reg.local_manifest(name, reference).await {
                Err(e) if e.code == Code::ManifestUnknown => {
                    self.count(&route, Outcome::Miss);
                    self.fetch_manifest(reg, &route, name, reference, d).await
                }
                found => {
                    self.count(&route, Outcome::Hit);
                    found
                }
            },
            Reference::Tag(tag) => {
                self.manifest_by_tag(reg, &route, name, tag, reference)
                    .await
            }
        };
        // Not fetched for this request: served from the cache.
        found.map(|mut m| {
            m.cache.get_or_insert("hit");
            m
        })
    }

    /// The upstream's page of `name`'s tags, as distribution's proxy lists
    /// them; `None` (list what is cached) while the upstream cannot answer.
    pub async fn tags_page(
        &self,
        name: &str,
        n: usize,
        last: Option<&str>,
    ) -> Result<Option<crate::registry::catalog::Page>> {
        let route = self.route(name).ok_or_else(|| not_mirrored(name))?;
        match route.upstream.tags(&route.remote, n, last).await {
            Ok((items, more)) => Ok(Some(crate::registry::catalog::Page {
                items: items.into_iter().take(n).collect(),
                more,
            })),
            Err(e) if e.code == Code::NameUnknown => Err(e),
            Err(e) => {
                tracing::warn!(
                    repository = name,
                    code = e.code.as_str(),
                    "proxy: upstream tag list unavailable, listing the cached tags"
                );
                Ok(None)
            }
        }
    }

    /// Blob `d` of mirrored `name`, missing here: its size as soon as the
    /// upstream says it, the fetch running on. One fetch per blob on this
    /// replica, whoever asks; with Redis, one in the cluster: a replica that
    /// finds another's fetch under way waits for the blob to be stored (its
    /// clients get their answer then, not while it streams), and takes over
    /// if that replica's lock lapses (it died).
    pub async fn fill_blob(&self, reg: &Registry, name: &str, d: &Digest) -> Result<BlobInfo> {
        let route = self.route(name).ok_or_else(|| not_mirrored(name))?;
        self.metrics
            .served(route.upstream.url(), Kind::Blob, Outcome::Miss);
        let mut wait = Duration::from_millis(50);
        loop {
            if let Some(fill) = self.in_flight(d) {
                return sized(d, &fill).await;
            }
            // Fetched meanwhile (for another repository, or by another replica).
            if let Some(info) = reg.link_stored_blob(name, d).await? {
                return Ok(info);
            }
            let hold = match &self.lock {
                None => None,
                Some(redis) => match redis.lock_owned(&fill_key(d), self.claim_ttl).await {
                    Ok(Some(owner)) => Some((redis.clone(), owner)),
                    Ok(None) => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    Err(e) => {
                        // Without the lock, at worst a second upstream fetch.
                        tracing::warn!("proxy: fill lock for {d}: {e}; fetching anyway");
                        None
                    }
                },
            };
            let fill = self.fill(reg, &route, name, d, hold)?;
            return sized(d, &fill).await;
        }
    }

    /// The fetch of `d` under way on this replica, if any: reads of the blob
    /// follow it until it is stored.
    pub fn in_flight(&self, d: &Digest) -> Option<Arc<Fill>> {
        self.fills.lock().unwrap().get(d).map(|(_, f)| f.clone())
    }

    /// Start (or join) this replica's fetch of `d`; `hold` is the cluster
    /// lock taken for it, renewed while it runs and released when it ends.
    fn fill(
        &self,
        reg: &Registry,
        route: &Route,
        name: &str,
        d: &Digest,
        hold: Option<(Arc<RedisCache>, String)>,
    ) -> Result<Arc<Fill>> {
        let mut fills = self.fills.lock().unwrap();
        if let Some((_, f)) = fills.get(d) {
            // Joined a fetch of ours after all: the claim is not needed.
            if let Some((redis, owner)) = hold {
                let key = fill_key(d);
                tokio::spawn(async move { redis.unlock(&key, &owner).await });
            }
            return Ok(f.clone());
        }
        let id = self
            .next_fill
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(repository = name, digest = %d, "proxy: fetching a blob from upstream");
        let upstream = route.upstream.clone();
        let (repo, digest) = (route.remote.clone(), d.clone());
        let fetch = async move { upstream.blob(&repo, &digest).await };
        let (registry, key) = (self.fills.clone(), d.clone());
        let (ended, ended_rx) = tokio::sync::oneshot::channel::<()>();
        let done = move || {
            let mut fills = registry.lock().unwrap();
            if fills.get(&key).is_some_and(|(n, _)| *n == id) {
                fills.remove(&key);
            }
            let _ = ended.send(());
        };
        let f = Fill::start(
            reg.clone(),
            name.to_string(),
            d.clone(),
            self.spool_dir.path(),
            fetch,
            done,
        )?;
        if let Some((redis, owner)) = hold {
            let claim = Claim {
                redis,
                key: fill_key(d),
                owner,
                ttl: self.claim_ttl,
            };
            tokio::spawn(claim.hold_until(ended_rx));
        }
        fills.insert(d.clone(), (id, f.clone()));
        Ok(f)
    }
}

fn fill_key(d: &Digest) -> String {
    format!("berth:proxy:fill:{d}")
}

/// A replica's claim in Redis on fetching one blob.
struct Claim {
    redis: Arc<RedisCache>,
    key: String,
    owner: String,
    ttl: Duration,
}

impl Claim {
    /// Renew the claim until the fetch ends, then release it.
    async fn hold_until(self, mut ended: tokio::sync::oneshot::Receiver<()>) {
        let Claim {
            redis,
            key,
            owner,
            ttl,
        } = self;
        loop {
            tokio::select! {
                _ = &mut ended => break,
                _ = tokio::time::sleep(ttl / 3) => {
                    match redis.renew_lock(&key, &owner, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("proxy: lost the claim on {key}; another replica may fetch too");
                            return;
                        }
                        Err(e) => tracing::warn!("proxy: renewing {key}: {e}"),
                    }
                }
            }
        }
        if let Err(e) = redis.unlock(&key, &owner).await {
            tracing::warn!("proxy: releasing {key}: {e}");
        }
    }
}

async fn sized(d: &Digest, fill: &Fill) -> Result<BlobInfo> {
    Ok(BlobInfo {
        digest: d.clone(),
        size: fill.size().await?,
    })
}

fn not_mirrored(name: &str) -> Error {
    Error::new(Code::NameUnknown, format!("{name} is not mirrored"))
}
