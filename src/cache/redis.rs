//! Redis (or Redis Cluster) backend, with distribution's key scheme:
//! `blobs::<digest>` (hash: digest, size, mediatype) and
//! `repository::<name>::blobs` (set of digests).
//!
//! Connecting is lazy and retried at most once a second, so Berth starts and
//! serves while Redis is down; every operation is bounded by a timeout.

use std::{
    sync::Mutex as StdMutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use redis::{
    aio::ConnectionLike, aio::ConnectionManager, cluster_async::ClusterConnection, AsyncCommands,
    FromRedisValue, RedisResult,
};
use tokio::sync::Mutex;

use super::{CacheBackend, Descriptor, Scoped};
use crate::{config::redis::RedisConfig, registry::digest::Digest};

const RECONNECT_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

pub struct RedisCache {
    cfg: RedisConfig,
    conn: Mutex<Option<Conn>>,
    last_attempt: StdMutex<Option<Instant>>,
    op_timeout: Duration,
    dial_timeout: Duration,
}

fn url(cfg: &RedisConfig, addr: &str) -> String {
    let auth = match (cfg.username.is_empty(), cfg.password.is_empty()) {
        (_, true) => String::new(),
        (true, false) => format!(":{}@", urlencode(&cfg.password)),
        (false, false) => format!("{}:{}@", urlencode(&cfg.username), urlencode(&cfg.password)),
    };
    format!("redis://{auth}{addr}/{}", cfg.db)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn blob_key(d: &Digest) -> String {
    format!("blobs::{d}")
}

fn repo_key(repo: &str) -> String {
    format!("repository::{repo}::blobs")
}

impl RedisCache {
    pub fn new(cfg: &RedisConfig) -> Result<RedisCache, String> {
        cfg.validate()?;
        Ok(RedisCache {
            op_timeout: cfg.op_timeout()?,
            dial_timeout: cfg.dial_timeout()?,
            cfg: cfg.clone(),
            conn: Mutex::new(None),
            last_attempt: StdMutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Conn, String> {
        let addrs = self.cfg.addresses();
        let fut = async {
            if addrs.len() > 1 {
                let urls: Vec<String> = addrs.iter().map(|a| url(&self.cfg, a)).collect();
                let client = redis::cluster::ClusterClient::new(urls).map_err(|e| e.to_string())?;
                client
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
                    .map_err(|e| e.to_string())
            } else {
                let client =
                    redis::Client::open(url(&self.cfg, &addrs[0])).map_err(|e| e.to_string())?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.dial_timeout))
                    .set_response_timeout(Some(self.op_timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(client, config)
                    .await
                    .map(Conn::Single)
                    .map_err(|e| e.to_string())
            }
        };
        tokio::time::timeout(self.dial_timeout, fut)
            .await
            .map_err(|_| "connect timed out".to_string())?
    }

    /// A connection, connecting lazily; fails fast between reconnect attempts.
    async fn conn(&self) -> Result<Conn, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        {
            let mut last = self.last_attempt.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                return Err("redis unreachable (waiting to reconnect)".into());
            }
            *last = Some(Instant::now());
        }
        let c = self.connect().await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    pub(super) async fn run<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        match tokio::time::timeout(self.op_timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("redis operation timed out".into()),
        }
    }
}

/// Run the same command code on either connection type.
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            Conn::Single(mut $c) => $body,
            Conn::Cluster(mut $c) => $body,
        }
    };
}

/// Two commands in one round trip: a pipeline on a single node; on a
/// cluster, whose keys may hash to different slots (a pipeline may not span
/// them), both in flight at once on the multiplexed connection.
pub(super) async fn both<A, B>(conn: Conn, a: redis::Cmd, b: redis::Cmd) -> RedisResult<(A, B)>
where
    A: FromRedisValue,
    B: FromRedisValue,
{
    match conn {
        Conn::Single(mut c) => {
            let mut p = redis::pipe();
            p.add_command(a).add_command(b);
            p.query_async(&mut c).await
        }
        Conn::Cluster(c) => {
            let (mut c1, mut c2) = (c.clone(), c);
            futures::try_join!(a.query_async(&mut c1), b.query_async(&mut c2))
        }
    }
}

fn hmget_descriptor(d: &Digest) -> redis::Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(blob_key(d)).arg("size").arg("mediatype");
    cmd
}

fn descriptor((size, media_type): (Option<u64>, Option<String>)) -> Option<Descriptor> {
    size.map(|size| Descriptor {
        size,
        media_type: media_type.unwrap_or_default(),
    })
}

/// The repository's membership and the global descriptor, in one round trip
/// (distribution asks one, then the other).
async fn lookup(conn: Conn, repo: &str, d: &Digest) -> RedisResult<Scoped> {
    let mut member = redis::cmd("SISMEMBER");
    member.arg(repo_key(repo)).arg(d.to_string());
    let (linked, desc): (bool, (Option<u64>, Option<String>)) =
        both(conn, member, hmget_descriptor(d)).await?;
    Ok(Scoped {
        linked,
        descriptor: descriptor(desc),
    })
}

/// The descriptor and the repository's membership, in one round trip.
async fn store(conn: Conn, repo: Option<&str>, d: &Digest, desc: &Descriptor) -> RedisResult<()> {
    let mut hset = redis::cmd("HSET");
    hset.arg(blob_key(d))
        .arg("digest")
        .arg(d.to_string())
        .arg("size")
        .arg(desc.size)
        .arg("mediatype")
        .arg(&desc.media_type);
    match repo {
        Some(repo) => {
            let mut sadd = redis::cmd("SADD");
            sadd.arg(repo_key(repo)).arg(d.to_string());
            let _: ((), ()) = both(conn, hset, sadd).await?;
            Ok(())
        }
        None => on_conn!(conn, |c| hset.query_async(&mut c).await),
    }
}

async fn forget<C: ConnectionLike + Send + Sync>(
    c: &mut C,
    repo: Option<&str>,
    d: &Digest,
) -> redis::RedisResult<()> {
    match repo {
        Some(repo) => c.srem(repo_key(repo), d.to_string()).await,
        None => c.del(blob_key(d)).await,
    }
}

/// Commands for the other caches of this module (the manifest cache), over
/// the same connection, timeouts and reconnect pacing.
impl RedisCache {
    pub(super) async fn query<T: FromRedisValue + Send>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, String> {
        self.run(|conn| async move { on_conn!(conn, |c| cmd.query_async(&mut c).await) })
            .await
    }

    /// Two commands in one round trip, see [`both`].
    pub(super) async fn query_both<A, B>(
        &self,
        a: redis::Cmd,
        b: redis::Cmd,
    ) -> Result<(A, B), String>
    where
        A: FromRedisValue + Send,
        B: FromRedisValue + Send,
    {
        self.run(|conn| both(conn, a, b)).await
    }

    /// A pipeline whose commands all name one key (one slot on a cluster).
    pub(super) async fn query_pipe<T: FromRedisValue + Send>(
        &self,
        p: redis::Pipeline,
    ) -> Result<T, String> {
        self.run(|conn| async move { on_conn!(conn, |c| p.query_async(&mut c).await) })
            .await
    }
}

impl RedisCache {
    /// Take a cluster-wide lock for `ttl` (SET NX PX): true if this caller holds it.
    pub async fn try_lock(&self, key: &str, ttl: std::time::Duration) -> Result<bool, String> {
        let owner = uuid::Uuid::new_v4().to_string();
        let ms = ttl.as_millis().max(1) as u64;
        self.run(|conn| async move {
            on_conn!(conn, |c| {
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await?;
                Ok(set.is_some())
            })
        })
        .await
    }
}

/// A lock its holder can renew and release without touching a later
/// holder's: the value is the holder's token, checked by a script.
impl RedisCache {
    /// Take `key` for `ttl` if nobody holds it: the holder's token.
    pub async fn lock_owned(
        &self,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, String> {
        let owner = uuid::Uuid::new_v4().to_string();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let set: Option<String> = self.query(cmd).await?;
        Ok(set.map(|_| owner))
    }

    /// Extend `owner`'s hold on `key` to `ttl` from now; false if it lost it.
    pub async fn renew_lock(
        &self,
        key: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, String> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
             return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
        )
        .arg(1)
        .arg(key)
        .arg(owner)
        .arg(ttl.as_millis().max(1) as u64);
        let n: i64 = self.query(cmd).await?;
        Ok(n == 1)
    }

    /// Release `key` if `owner` still holds it.
    pub async fn unlock(&self, key: &str, owner: &str) -> Result<(), String> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
             return redis.call('DEL', KEYS[1]) else return 0 end",
        )
        .arg(1)
        .arg(key)
        .arg(owner);
        let _: i64 = self.query(cmd).await?;
        Ok(())
    }
}

#[async_trait]
impl CacheBackend for RedisCache {
    async fn get(&self, repo: Option<&str>, d: &Digest) -> Result<Option<Descriptor>, String> {
        match repo {
            Some(repo) => Ok(self.get_scoped(repo, d).await?.hit()),
            None => {
                self.run(|conn| async move {
                    on_conn!(conn, |c| hmget_descriptor(d)
                        .query_async(&mut c)
                        .await
                        .map(descriptor))
                })
                .await
            }
        }
    }

    async fn get_scoped(&self, repo: &str, d: &Digest) -> Result<Scoped, String> {
        self.run(|conn| lookup(conn, repo, d)).await
    }

    async fn set(&self, repo: Option<&str>, d: &Digest, desc: &Descriptor) -> Result<(), String> {
        self.run(|conn| store(conn, repo, d, desc)).await
    }

    async fn clear(&self, repo: Option<&str>, d: &Digest) -> Result<(), String> {
        self.run(|conn| async move { on_conn!(conn, |c| forget(&mut c, repo, d).await) })
            .await
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
