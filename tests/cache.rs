//! The blob-descriptor cache: in-memory and Redis (single node and cluster),
//! shared between replicas, invalidated by deletes, and never a reason for a
//! pull to fail.

mod common;

#[path = "cache/manifests.rs"]
mod manifests;
#[path = "cache/roundtrips.rs"]
mod roundtrips;

use common::{
    redis::{RedisCluster, RedisServer},
    Berth,
};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn config(root: &str, addr: &str, cache: &str) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: {cache}\nhttp:\n  addr: {addr}\n  secret: shared\n"
    )
}

async fn push(b: &Berth, repo: &str, data: &[u8]) -> String {
    let d = digest(data);
    let r = crate::common::http::client()
        .post(b.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    d
}

async fn head(b: &Berth, repo: &str, d: &str) -> StatusCode {
    crate::common::http::client()
        .head(b.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .status()
}

async fn delete(b: &Berth, repo: &str, d: &str) {
    let r = crate::common::http::client()
        .delete(b.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// Remove a repository's link behind Berth's back: only a cache can still answer.
fn unlink_on_disk(b: &Berth, repo: &str, d: &str) {
    let dir = b.root.join(format!(
        "docker/registry/v2/repositories/{repo}/_layers/sha256/{}",
        &d[7..]
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn inmemory_cache_answers_and_deletes_invalidate() {
    let b = Berth::start_with(|root, addr| config(root, addr, "inmemory"));
    let d = push(&b, "c/mem", b"cached").await;
    assert_eq!(head(&b, "c/mem", &d).await, StatusCode::OK);
    unlink_on_disk(&b, "c/mem", &d);
    assert_eq!(
        head(&b, "c/mem", &d).await,
        StatusCode::OK,
        "served from the cache"
    );

    let d2 = push(&b, "c/mem", b"deleted").await;
    assert_eq!(head(&b, "c/mem", &d2).await, StatusCode::OK);
    delete(&b, "c/mem", &d2).await;
    assert_eq!(
        head(&b, "c/mem", &d2).await,
        StatusCode::NOT_FOUND,
        "a delete invalidates"
    );
}

#[tokio::test]
async fn redis_cache_is_shared_by_replicas() {
    let redis = RedisServer::start();
    let raddr = redis.addr();
    let with_redis = move |root: &str, addr: &str| {
        format!(
            "{}redis:\n  addr: {raddr}\n  db: 0\n  dialtimeout: 2s\n  readtimeout: 500ms\n",
            config(root, addr, "redis")
        )
    };
    let one = Berth::start_with(with_redis.clone());
    let two = Berth::start_on_root_with(&one.root, with_redis);

    let d = push(&one, "c/shared", b"layer bytes").await;
    assert_eq!(
        redis.cli(&["hget", &format!("blobs::{d}"), "size"]),
        "11",
        "distribution's key scheme"
    );
    assert_eq!(
        redis.cli(&["sismember", "repository::c/shared::blobs", &d]),
        "1"
    );

    unlink_on_disk(&one, "c/shared", &d);
    assert_eq!(
        head(&two, "c/shared", &d).await,
        StatusCode::OK,
        "replica two answers from Redis"
    );

    let d2 = push(&one, "c/shared", b"to delete").await;
    assert_eq!(head(&two, "c/shared", &d2).await, StatusCode::OK);
    delete(&one, "c/shared", &d2).await;
    assert_eq!(
        head(&two, "c/shared", &d2).await,
        StatusCode::NOT_FOUND,
        "a delete on one replica reaches all"
    );
}

#[tokio::test]
async fn pulls_survive_redis_going_away() {
    let redis = RedisServer::start();
    let (port, raddr) = (redis.port, redis.addr());
    let b = Berth::start_with(move |root, addr| {
        format!(
            "{}redis:\n  addr: {raddr}\n  readtimeout: 200ms\n",
            config(root, addr, "redis")
        )
    });
    let d = push(&b, "c/down", b"survives").await;
    let (m, body) = manifests::push_image(&b, "c/down", "v1", "manifest layer").await;
    let get = |reference: String| {
        let b = &b;
        async move { manifests::fetch(b, reqwest::Method::GET, "c/down", &reference).await }
    };
    assert_eq!(get(m.clone()).await.2, body, "fills Redis");
    drop(redis);
    for reference in [m.clone(), "v1".to_string()] {
        let (status, digest, got) = get(reference).await;
        assert_eq!(
            (status, digest, got),
            (StatusCode::OK, m.clone(), body.clone())
        );
    }
    // A tag pushed while Redis is down (its invalidation fails, loudly) is
    // still served right: entries are only ever filled from storage.
    let (m2, body2) = manifests::push_image(&b, "c/down", "v1", "pushed while down").await;
    let (status, digest, got) = get("v1".to_string()).await;
    assert_eq!((status, digest, got), (StatusCode::OK, m2, body2));
    for _ in 0..5 {
        assert_eq!(
            head(&b, "c/down", &d).await,
            StatusCode::OK,
            "served from storage"
        );
    }
    let d2 = push(&b, "c/down", b"pushed while redis is down").await;
    let got = crate::common::http::get(b.url(&format!("/v2/c/down/blobs/{d2}")))
        .await
        .unwrap();
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        b"pushed while redis is down"
    );
    let logs = b.logs();
    assert_eq!(
        logs.matches("blob-descriptor cache unavailable").count(),
        1,
        "logged once: {logs}"
    );
    assert_eq!(
        logs.matches("manifest cache (Redis) unavailable").count(),
        1,
        "logged once: {logs}"
    );

    // Redis back on the same port: the cache is used again.
    let redis = RedisServer::start_on(port, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        assert_eq!(head(&b, "c/down", &d).await, StatusCode::OK);
        if redis.cli(&["exists", &format!("blobs::{d}")]) == "1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cache never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn redis_cluster() {
    let cluster = RedisCluster::start();
    let addrs = cluster.addrs().join(", ");
    // What is under test is routing, not speed: a budget far above the
    // default 250 ms, so a loaded machine's scheduling stall is not a miss.
    let b = Berth::start_with(move |root, addr| {
        format!(
            "{}redis:\n  addrs: [{addrs}]\n  readtimeout: 5s\n  writetimeout: 5s\n",
            config(root, addr, "redis")
        )
    });
    let mut digests = Vec::new();
    for i in 0..10 {
        digests.push(push(&b, "c/cluster", format!("blob {i}").as_bytes()).await);
    }
    // A write the cluster refused or answered too late (a node not yet
    // serving answers CLUSTERDOWN) is logged and dropped by design: the HEAD
    // below would then find nothing. Say so here rather than as a 404 there.
    let logs = b.logs();
    assert!(
        !logs.contains("blob-descriptor cache unavailable"),
        "every cache write reached the cluster: {logs}"
    );
    for d in &digests {
        assert_eq!(
            cluster.nodes[0].cli(&["hget", &format!("blobs::{d}"), "size"]),
            "6"
        );
        unlink_on_disk(&b, "c/cluster", d);
        assert_eq!(
            head(&b, "c/cluster", d).await,
            StatusCode::OK,
            "answered from the cluster: {}",
            b.logs()
        );
    }
    // The manifest cache's keys hash to different slots (the repository's
    // links, the bytes): a lookup and a fill still work on a cluster.
    let (m, body) = manifests::push_image(&b, "c/cluster", "v1", "cluster layer").await;
    for _ in 0..2 {
        let (status, _, got) = manifests::fetch(&b, reqwest::Method::GET, "c/cluster", &m).await;
        assert_eq!((status, got), (StatusCode::OK, body.clone()));
    }
    assert_eq!(
        cluster.nodes[0].cli(&["hexists", "berth::repository::c/cluster::manifests", &m]),
        "1"
    );
    assert!(!b.logs().contains("unavailable"), "{}", b.logs());
}

#[test]
fn redis_config_errors() {
    let check = |yaml: &str| crate::common::config_check(yaml, &[]);
    let (code, err) = check("storage:\n  cache:\n    blobdescriptor: redis\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("redis"), "{err}");
    let (code, err) = check("storage:\n  cache:\n    blobdescriptor: memcached\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("storage.cache.blobdescriptor"), "{err}");
    let (code, err) = check("storage:\n  cache:\n    blobdescriptor: redis\nredis:\n  addr: 127.0.0.1:1\n  readtimeout: soon\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("redis.readtimeout"), "{err}");
    let (code, _) = check("storage:\n  cache:\n    blobdescriptor: redis\nredis:\n  addrs: [127.0.0.1:1, 127.0.0.1:2]\n  username: u\n  password: p\n  poolsize: 10\n");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn upload_purging_takes_a_cluster_lock_in_redis() {
    let redis = RedisServer::start();
    let raddr = redis.addr();
    let b = Berth::start_with(move |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1h\n      interval: 10s\nhttp:\n  addr: {addr}\n  secret: s\nredis:\n  addr: {raddr}\n"
        )
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while redis.cli(&["exists", "berth::uploadpurging::lock"]) != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "no purge lock in Redis: {}",
            b.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ttl: i64 = redis
        .cli(&["pttl", "berth::uploadpurging::lock"])
        .parse()
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 10_000,
        "the lock expires before the next pass: {ttl}"
    );
    // A second replica in the same round finds the lock taken and skips.
    let raddr = redis.addr();
    let two = Berth::start_on_root_with(&b.root, move |root, addr| {
        format!(
            "log:\n  level: debug\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1h\n      interval: 10s\nhttp:\n  addr: {addr}\n  secret: s\nredis:\n  addr: {raddr}\n"
        )
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !two.logs().contains("another replica holds this round") {
        assert!(
            std::time::Instant::now() < deadline,
            "second replica did not skip: {}",
            two.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !two.logs().contains("upload purging pass"),
        "only the lock holder walks storage"
    );
}
