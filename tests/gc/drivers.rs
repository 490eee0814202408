//! The core scenario on every driver (S3 through s3s-fs, Azure through
//! Azurite), and the Redis blob-descriptor cache after a sweep.

use reqwest::StatusCode;

use super::common::{azurite::Azurite, redis::RedisServer, s3::S3Server, Berth};
use super::support::*;

/// Push an image and an orphan through a running Berth, collect with the
/// real binary on the same storage, check what is gone and what serves.
async fn core_scenario(storage: &str, extra: &str) -> Berth {
    let berth = Berth::start_with(|_root, addr| config(storage, extra, addr));
    let c = Client::new(berth.url(""));
    let repo = "team/app";
    let layer = noise(1, 70_000);
    let m = c.push_image(repo, "v1", b"{\"core\":1}", &[&layer]).await;
    let orphan = noise(2, 12_345);
    let orphan_digest = c.push_blob(repo, &orphan).await;
    assert_eq!(c.head_blob(repo, &orphan_digest).await, StatusCode::OK);

    let run = gc(
        &config(storage, extra, "127.0.0.1:0"),
        &["--grace-period", "0s"],
    );

    assert_eq!(run.count("blobs_deleted"), 1, "{}", run.stdout);
    assert_eq!(run.count("bytes_freed"), orphan.len() as u64);
    assert_eq!(run.count("blobs_marked"), 3, "config, layer, manifest");
    assert_eq!(
        c.head_blob(repo, &orphan_digest).await,
        StatusCode::NOT_FOUND,
        "{}",
        berth.logs()
    );
    assert_eq!(c.get_manifest(repo, "v1").await, (StatusCode::OK, m.body));
    assert_eq!(c.head_blob(repo, &digest(&layer)).await, StatusCode::OK);
    // Pushing the swept blob again works as for any missing blob.
    assert!(c.push_blob_like_docker(repo, &orphan).await);
    assert_eq!(c.head_blob(repo, &orphan_digest).await, StatusCode::OK);
    berth
}

#[tokio::test]
async fn collects_on_s3() {
    let s3 = S3Server::s3s_fs();
    core_scenario(&s3.yaml("/berth"), "").await;
}

#[tokio::test]
async fn collects_on_azure() {
    let az = Azurite::start();
    az.driver("registry", "").await; // creates the container
    core_scenario(&az.yaml("registry", "/berth"), "").await;
}

/// A Berth on the filesystem with Redis as its cache, and the config
/// sections a collector run on the same storage and Redis takes.
struct RedisBacked {
    // Fields drop in this order: the server first, Redis last.
    berth: Berth,
    storage: String,
    cache: String,
    /// The storage root, removed on drop.
    _dir: tempfile::TempDir,
    redis: RedisServer,
}

impl RedisBacked {
    fn start() -> RedisBacked {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let storage = filesystem(dir.path().to_str().unwrap());
        let cache = format!(
            "  cache:\n    blobdescriptor: redis\nredis:\n  addr: {}\n",
            redis.addr()
        );
        let berth = Berth::start_with(|_root, addr| config(&storage, &cache, addr));
        RedisBacked {
            redis,
            _dir: dir,
            storage,
            cache,
            berth,
        }
    }
}

#[tokio::test]
async fn redis_cache_never_answers_for_a_swept_blob() {
    let r = RedisBacked::start();
    let c = Client::new(r.berth.url(""));
    let repo = "cached/app";
    let orphan = noise(3, 999);
    let d = c.push_blob(repo, &orphan).await;
    assert_eq!(c.head_blob(repo, &d).await, StatusCode::OK);
    assert_eq!(r.redis.cli(&["EXISTS", &format!("blobs::{d}")]), "1");
    assert_eq!(
        r.redis
            .cli(&["SISMEMBER", &format!("repository::{repo}::blobs"), &d]),
        "1"
    );

    let run = gc(
        &config(&r.storage, &r.cache, "127.0.0.1:0"),
        &["-d", "--grace-period", "0s"],
    );
    assert_eq!(run.count("blobs_deleted"), 1);
    assert_eq!(
        r.redis.cli(&["EXISTS", &format!("blobs::{d}")]),
        "1",
        "a dry run clears nothing"
    );

    let run = gc(
        &config(&r.storage, &r.cache, "127.0.0.1:0"),
        &["--grace-period", "0s"],
    );
    assert_eq!(run.count("blobs_deleted"), 1, "{}", run.stdout);
    assert_eq!(r.redis.cli(&["EXISTS", &format!("blobs::{d}")]), "0");
    assert_eq!(
        r.redis
            .cli(&["SISMEMBER", &format!("repository::{repo}::blobs"), &d]),
        "0"
    );
    assert_eq!(c.head_blob(repo, &d).await, StatusCode::NOT_FOUND);
    assert!(c.push_blob_like_docker(repo, &orphan).await);
    assert_eq!(c.head_blob(repo, &d).await, StatusCode::OK);
}

/// The manifest cache in Redis: a replica that served an untagged manifest
/// by digest (its link and bytes in Redis) no longer serves it once the
/// collector removed it, and Redis keeps none of its entries.
#[tokio::test]
async fn redis_manifest_cache_never_answers_for_a_collected_manifest() {
    let r = RedisBacked::start();
    let c = Client::new(r.berth.url(""));
    let repo = "cached/untagged";
    let m = c
        .push_image(repo, "", b"{\"untagged\":1}", &[&noise(5, 777)])
        .await;
    for _ in 0..2 {
        assert_eq!(
            c.get_manifest(repo, &m.digest).await,
            (StatusCode::OK, m.body.clone())
        );
    }
    let links = format!("berth::repository::{repo}::manifests");
    let bytes = format!("berth::manifest::{}", m.digest);
    assert_eq!(r.redis.cli(&["HEXISTS", &links, &m.digest]), "1");
    assert_eq!(r.redis.cli(&["EXISTS", &bytes]), "1");

    let run = gc(
        &config(&r.storage, &r.cache, "127.0.0.1:0"),
        &["-m", "--grace-period", "0s"],
    );
    assert_eq!(run.count("manifests_deleted"), 1, "{}", run.stdout);
    assert_eq!(r.redis.cli(&["HEXISTS", &links, &m.digest]), "0");
    assert_eq!(r.redis.cli(&["EXISTS", &bytes]), "0");
    assert_eq!(
        c.get_manifest(repo, &m.digest).await.0,
        StatusCode::NOT_FOUND
    );
}

/// The collector must clear the Redis entries of what it deletes; if it
/// cannot reach Redis (down, or a wrong address in the CronJob's config) it
/// deletes nothing, rather than leave entries that tell every replica a
/// swept blob is there (docker would then skip the upload and push a
/// manifest whose layer is gone).
#[tokio::test]
async fn unreachable_redis_stops_the_collector_before_any_delete() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let storage = filesystem(dir.path().to_str().unwrap());
    let cache = |addr: String| {
        format!(
            "  cache:\n    blobdescriptor: redis\nredis:\n  addr: {addr}\n  dialtimeout: 200ms\n"
        )
    };
    let served = cache(redis.addr());
    let berth = Berth::start_with(|_root, addr| config(&storage, &served, addr));
    let c = Client::new(berth.url(""));
    let repo = "cached/app";
    let d = c.push_blob(repo, &noise(4, 888)).await;
    assert_eq!(c.head_blob(repo, &d).await, StatusCode::OK);
    assert_eq!(redis.cli(&["EXISTS", &format!("blobs::{d}")]), "1");
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);

    let (success, run) = gc_status(
        &config(&storage, &cache(dead_addr), "127.0.0.1:0"),
        &["--grace-period", "0s"],
    );

    assert!(!success, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("cache"), "{}", run.stderr);
    assert!(blob_file(dir.path(), &d).exists(), "nothing was deleted");
    assert_eq!(c.head_blob(repo, &d).await, StatusCode::OK);
}
