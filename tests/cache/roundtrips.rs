//! Redis round trips, counted by a proxy between the cache and a real
//! redis-server, and the manifest cache's guard against a fill racing a
//! delete on another replica.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc,
};

use berth::{
    cache::{
        manifests::{ManifestCache, ManifestCacheSettings},
        redis::RedisCache,
        CacheBackend, Descriptor, Scoped,
    },
    config::redis::RedisConfig,
    digest::{Algorithm, Digest},
};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::common::redis::RedisServer;

/// A TCP proxy counting round trips: bytes from the client that follow the
/// server's last answer (or open the connection) start one. A pipeline is
/// one; commands that wait for each other's answers are one each.
struct TurnCounter {
    addr: String,
    turns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TurnCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TurnCounter {
    async fn start(upstream: String) -> TurnCounter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let turns = Arc::new(AtomicUsize::new(0));
        let counted = turns.clone();
        let task = tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let server = TcpStream::connect(&upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let client_spoke = Arc::new(AtomicBool::new(false));
                let (spoke, turns) = (client_spoke.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        if !spoke.swap(true, Ordering::SeqCst) {
                            turns.fetch_add(1, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        // Before the client can see the answer and speak again.
                        client_spoke.store(false, Ordering::SeqCst);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TurnCounter { addr, turns, task }
    }

    fn turns(&self) -> usize {
        self.turns.load(Ordering::SeqCst)
    }
}

fn config(addr: &str) -> RedisConfig {
    RedisConfig {
        addr: addr.to_string(),
        readtimeout: "5s".into(),
        writetimeout: "5s".into(),
        ..Default::default()
    }
}

/// Round trips `op` took.
async fn turns<T>(p: &TurnCounter, op: impl std::future::Future<Output = T>) -> (T, usize) {
    let before = p.turns();
    let v = op.await;
    (v, p.turns() - before)
}

#[tokio::test]
async fn blob_descriptor_lookups_and_fills_are_one_round_trip() {
    let redis = RedisServer::start();
    let proxy = TurnCounter::start(redis.addr()).await;
    let cache = RedisCache::new(&config(&proxy.addr)).unwrap();
    let d = Digest::of(Algorithm::Sha256, b"layer");
    let desc = Descriptor {
        size: 5,
        media_type: "application/octet-stream".into(),
    };
    // The first call connects (and the client may say hello): not counted.
    cache.get(None, &d).await.unwrap();

    let (r, n) = turns(&proxy, cache.set(Some("a"), &d, &desc)).await;
    r.unwrap();
    assert_eq!(n, 1, "descriptor and membership written together");
    let (r, n) = turns(&proxy, cache.get_scoped("a", &d)).await;
    assert_eq!(
        r.unwrap(),
        Scoped {
            linked: true,
            descriptor: Some(desc.clone())
        }
    );
    assert_eq!(n, 1, "membership and descriptor read together");
    let (r, n) = turns(&proxy, cache.get(Some("a"), &d)).await;
    assert_eq!(r.unwrap(), Some(desc.clone()));
    assert_eq!(n, 1);
    // Another repository: not linked there, and the global descriptor
    // comes with the answer (the registry then needs no stat of the data).
    let (r, n) = turns(&proxy, cache.get_scoped("b", &d)).await;
    assert_eq!(
        r.unwrap(),
        Scoped {
            linked: false,
            descriptor: Some(desc.clone())
        }
    );
    assert_eq!(n, 1);
    assert_eq!(
        redis.cli(&["sismember", "repository::a::blobs", &d.to_string()]),
        "1"
    );
    assert_eq!(redis.cli(&["hget", &format!("blobs::{d}"), "size"]), "5");
}

#[tokio::test]
async fn manifest_lookups_are_one_round_trip_and_a_fill_racing_a_delete_is_dropped() {
    let redis = RedisServer::start();
    let proxy = TurnCounter::start(redis.addr()).await;
    // Nothing in process (size 0): every answer comes from Redis.
    let settings = ManifestCacheSettings {
        size: 0,
        ..Default::default()
    };
    let one = ManifestCache::new(
        settings.clone(),
        Some(RedisCache::new(&config(&proxy.addr)).unwrap()),
    );
    let other_replica = ManifestCache::new(
        settings,
        Some(RedisCache::new(&config(&redis.addr())).unwrap()),
    );
    let body = Bytes::from_static(b"{\"schemaVersion\":2}");
    let d = Digest::of(Algorithm::Sha256, &body);
    one.lookup("r", &d).await; // connects

    // A miss, then (the link read from storage meanwhile) a delete on
    // another replica, then the fill: it must not land.
    let (look, n) = turns(&proxy, one.lookup("r", &d)).await;
    assert_eq!(n, 1, "link and bytes asked together");
    assert!(!look.linked && look.body.is_none());
    assert!(other_replica.forget_link("r", &d).await);
    let ((), n) = turns(&proxy, one.fill("r", &d, &body, look)).await;
    assert_eq!(n, 1, "link and bytes written together");
    let look = one.lookup("r", &d).await;
    assert!(!look.linked, "a fill that raced a delete was dropped");
    assert_eq!(
        look.body,
        Some(body.clone()),
        "the bytes are immutable: kept"
    );

    // Without a delete in between, the fill lands, and a warm lookup is
    // one round trip answering both.
    one.fill("r", &d, &body, look).await;
    let (look, n) = turns(&proxy, one.lookup("r", &d)).await;
    assert_eq!(n, 1);
    assert!(look.linked);
    assert_eq!(look.body, Some(body.clone()));
    // Scoped by repository.
    assert!(!one.lookup("s", &d).await.linked);

    // Bytes in Redis that are not the digest's are a miss, not an answer.
    redis.cli(&["set", &format!("berth::manifest::{d}"), "tampered"]);
    let look = one.lookup("r", &d).await;
    assert!(look.linked);
    assert_eq!(look.body, None);
}
