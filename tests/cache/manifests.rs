//! The manifest cache, counted at the store: a warm GET or HEAD by digest
//! costs no storage request, a GET by tag one (none while the tag is
//! cached); entries are scoped by repository; pushes and deletes invalidate,
//! on every replica through Redis.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{free_port, http::client, redis::RedisServer, wait_for_port, Berth};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Berth on `root` (a fresh one if `None`) with metrics on a second port,
/// no upload purging (its walk would be counted), and `extra` YAML under
/// `storage.cache` and at top level.
fn start(root: Option<&std::path::Path>, cache: &str, top: &str) -> (Berth, String) {
    let debug = format!("127.0.0.1:{}", free_port());
    let (d, cache, top) = (debug.clone(), cache.to_string(), top.to_string());
    let config = move |root: &str, addr: &str| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n  cache:\n{cache}http:\n  addr: {addr}\n  secret: shared\n  debug:\n    addr: {d}\n{top}"
        )
    };
    let b = match root {
        Some(root) => Berth::start_on_root_with(root, config),
        None => Berth::start_with(config),
    };
    assert!(
        wait_for_port(&debug, Duration::from_secs(20)),
        "no debug listener: {}",
        b.logs()
    );
    (b, debug)
}

/// The debug listener's Prometheus exposition.
async fn metrics_text(debug: &str) -> String {
    client()
        .get(format!("http://{debug}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Storage operations the process made so far, but the sweep watcher's
/// once-a-second listing (no request path here lists).
async fn storage_requests(debug: &str) -> u64 {
    let text = metrics_text(debug).await;
    text.lines()
        .filter(|l| l.starts_with("registry_storage_action_seconds_count{"))
        .filter(|l| !l.contains("action=\"List\""))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

/// One series' value.
async fn metric(debug: &str, series: &str) -> u64 {
    let text = metrics_text(debug).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

async fn push_blob(b: &Berth, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = client()
        .post(b.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    d
}

/// A one-layer image whose layer says `what`; returns (digest, bytes).
pub(crate) async fn push_image(
    b: &Berth,
    repo: &str,
    reference: &str,
    what: &str,
) -> (String, Vec<u8>) {
    let config = push_blob(b, repo, b"{}").await;
    let layer = push_blob(b, repo, what.as_bytes()).await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": what.len()}],
    }))
    .unwrap();
    let r = client()
        .put(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", b.logs());
    (sha256(&body), body)
}

/// (status, Docker-Content-Digest, body).
pub(crate) async fn fetch(
    b: &Berth,
    method: Method,
    repo: &str,
    reference: &str,
) -> (StatusCode, String, Vec<u8>) {
    let r = client()
        .request(method, b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    let digest = r
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), digest, r.bytes().await.unwrap().to_vec())
}

async fn delete(b: &Berth, repo: &str, reference: &str) {
    let r = client()
        .delete(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// GETs and HEADs of `reference`, each checked; the storage requests they made.
async fn requests_for(b: &Berth, debug: &str, repo: &str, reference: &str, body: &[u8]) -> u64 {
    let before = storage_requests(debug).await;
    for _ in 0..5 {
        let (status, _, got) = fetch(b, Method::GET, repo, reference).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, body);
        let (status, _, _) = fetch(b, Method::HEAD, repo, reference).await;
        assert_eq!(status, StatusCode::OK);
    }
    storage_requests(debug).await - before
}

const SINGLE: &str = "    blobdescriptor: inmemory\n    manifests:\n      tagttl: 1h\n";

#[tokio::test]
async fn warm_manifest_get_by_digest_costs_no_storage_request() {
    let (b, debug) = start(None, SINGLE, "");
    let (d, body) = push_image(&b, "m/warm", "latest", "warm layer").await;
    // The first GET by digest reads the revision link (the bytes are kept
    // from the push); from then on nothing.
    let before = storage_requests(&debug).await;
    assert_eq!(fetch(&b, Method::GET, "m/warm", &d).await.2, body);
    assert_eq!(storage_requests(&debug).await - before, 1, "cold: the link");
    assert_eq!(requests_for(&b, &debug, "m/warm", &d, &body).await, 0);
    let hits = metric(
        &debug,
        "registry_manifest_cache_requests_total{type=\"Hit\"}",
    )
    .await;
    assert!(
        hits >= 10,
        "every warm GET and HEAD counted as a hit: {hits}"
    );
    // By tag: the tag link once, then the tag cache.
    assert_eq!(requests_for(&b, &debug, "m/warm", "latest", &body).await, 1);
    assert_eq!(requests_for(&b, &debug, "m/warm", "latest", &body).await, 0);
}

#[tokio::test]
async fn without_a_link_cache_a_get_by_digest_reads_the_link_only() {
    // No blob-descriptor cache, no Redis: replicas may share the storage
    // without telling each other of deletes, so the link is read every
    // time; the bytes still come from the cache. Tag TTL 0: the tag link too.
    let (b, debug) = start(None, "    manifests:\n      tagttl: 0s\n", "");
    let (d, body) = push_image(&b, "m/links", "v1", "links layer").await;
    assert_eq!(requests_for(&b, &debug, "m/links", &d, &body).await, 10);
    assert_eq!(requests_for(&b, &debug, "m/links", "v1", &body).await, 10);
    // size 0: nothing kept, every GET reads the bytes too (HEAD as well).
    let (b, debug) = start(
        None,
        "    blobdescriptor: inmemory\n    manifests:\n      size: 0\n      tagttl: 0s\n",
        "",
    );
    let (d, body) = push_image(&b, "m/links", "v1", "links layer").await;
    assert_eq!(requests_for(&b, &debug, "m/links", &d, &body).await, 20);
}

#[tokio::test]
async fn entries_are_scoped_by_repository_and_deletes_invalidate() {
    let (b, _debug) = start(None, SINGLE, "");
    let (d, body) = push_image(&b, "m/a", "v1", "scoped layer").await;
    assert_eq!(fetch(&b, Method::GET, "m/a", &d).await.2, body);
    // Cached for m/a; m/b has the blobs' bytes nowhere linked.
    assert_eq!(
        fetch(&b, Method::GET, "m/b", &d).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fetch(&b, Method::HEAD, "m/b", &d).await.0,
        StatusCode::NOT_FOUND
    );

    // Untag: the tag is gone at once (tag TTL 1h), the digest stays.
    assert_eq!(fetch(&b, Method::GET, "m/a", "v1").await.0, StatusCode::OK);
    delete(&b, "m/a", "v1").await;
    assert_eq!(
        fetch(&b, Method::GET, "m/a", "v1").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(fetch(&b, Method::GET, "m/a", &d).await.0, StatusCode::OK);
    // Delete by digest: gone, though its bytes were warm.
    delete(&b, "m/a", &d).await;
    assert_eq!(
        fetch(&b, Method::GET, "m/a", &d).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fetch(&b, Method::HEAD, "m/a", &d).await.0,
        StatusCode::NOT_FOUND
    );

    // A re-push of a tag on this replica is seen at once.
    let (d1, _) = push_image(&b, "m/a", "latest", "one").await;
    assert_eq!(fetch(&b, Method::GET, "m/a", "latest").await.1, d1);
    let (d2, _) = push_image(&b, "m/a", "latest", "two").await;
    assert_eq!(fetch(&b, Method::GET, "m/a", "latest").await.1, d2);
}

fn with_redis(raddr: &str, cache: &str) -> (String, String) {
    (
        format!("    blobdescriptor: redis\n{cache}"),
        format!("redis:\n  addr: {raddr}\n  readtimeout: 2s\n  writetimeout: 2s\n"),
    )
}

#[tokio::test]
async fn replicas_share_manifests_links_and_tags_through_redis() {
    let redis = RedisServer::start();
    let (cache, top) = with_redis(&redis.addr(), "    manifests:\n      tagttl: 1h\n");
    let (one, _) = start(None, &cache, &top);
    let (two, debug2) = start(Some(&one.root), &cache, &top);

    let (d, body) = push_image(&one, "m/shared", "latest", "shared layer").await;
    // Replica two's first GET by digest reads the link and the bytes and
    // fills Redis; its later ones, and replica one's, need no storage.
    assert_eq!(fetch(&two, Method::GET, "m/shared", &d).await.2, body);
    assert_eq!(
        redis.cli(&["hexists", "berth::repository::m/shared::manifests", &d]),
        "1"
    );
    assert_eq!(
        redis.cli(&["strlen", &format!("berth::manifest::{d}")]),
        body.len().to_string()
    );
    assert_eq!(requests_for(&two, &debug2, "m/shared", &d, &body).await, 0);
    // Another repository does not link it: not served from Redis either.
    assert_eq!(
        fetch(&two, Method::GET, "m/other", &d).await.0,
        StatusCode::NOT_FOUND
    );

    // Tag: filled by one GET, then no storage request on either replica.
    assert_eq!(fetch(&two, Method::GET, "m/shared", "latest").await.1, d);
    assert_eq!(
        requests_for(&two, &debug2, "m/shared", "latest", &body).await,
        0
    );
    // A push on replica one is seen by replica two at once (not after the
    // hour-long TTL): the push removed the tag's entry in Redis.
    let (d2, body2) = push_image(&one, "m/shared", "latest", "shared layer two").await;
    let (status, got, bytes) = fetch(&two, Method::GET, "m/shared", "latest").await;
    assert_eq!((status, got, bytes), (StatusCode::OK, d2.clone(), body2));

    // A delete on replica one reaches replica two, whose bytes were warm.
    delete(&one, "m/shared", &d).await;
    assert_eq!(
        fetch(&two, Method::GET, "m/shared", &d).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fetch(&two, Method::HEAD, "m/shared", &d).await.0,
        StatusCode::NOT_FOUND
    );
    delete(&one, "m/shared", "latest").await;
    assert_eq!(
        fetch(&two, Method::GET, "m/shared", "latest").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(!two.logs().contains("unavailable"), "{}", two.logs());
}

#[tokio::test]
async fn without_redis_another_replica_sees_a_pushed_tag_within_the_ttl() {
    let ttl = Duration::from_secs(2);
    let cache = "    manifests:\n      tagttl: 2s\n";
    let (one, _) = start(None, cache, "");
    let (two, _) = start(Some(&one.root), cache, "");
    let (d1, _) = push_image(&one, "m/ttl", "latest", "first").await;
    assert_eq!(fetch(&two, Method::GET, "m/ttl", "latest").await.1, d1);
    let (d2, _) = push_image(&one, "m/ttl", "latest", "second").await;
    let pushed = Instant::now();
    // Replica two may answer the old digest, never after the TTL: every
    // answer is checked, and once the TTL has passed it must be the new one.
    loop {
        let (status, got, _) = fetch(&two, Method::GET, "m/ttl", "latest").await;
        assert_eq!(status, StatusCode::OK);
        if pushed.elapsed() > ttl {
            assert_eq!(got, d2, "stale beyond the tag TTL");
            break;
        }
        assert!(got == d1 || got == d2, "{got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_redis_a_digest_is_trusted_for_the_ttl_then_read_again() {
    // Warm by digest: the link once per TTL, no request in between.
    let (b, debug) = start(None, "    manifests:\n      tagttl: 1h\n", "");
    let (d, body) = push_image(&b, "m/dttl", "v1", "digest ttl").await;
    assert_eq!(requests_for(&b, &debug, "m/dttl", &d, &body).await, 1);
    assert_eq!(requests_for(&b, &debug, "m/dttl", &d, &body).await, 0);
    // A delete here is seen at once.
    delete(&b, "m/dttl", &d).await;
    assert_eq!(
        fetch(&b, Method::GET, "m/dttl", &d).await.0,
        StatusCode::NOT_FOUND
    );

    // A delete on another replica: within the TTL at most.
    let ttl = Duration::from_secs(2);
    let cache = "    manifests:\n      tagttl: 2s\n";
    let (one, _) = start(None, cache, "");
    let (two, _) = start(Some(&one.root), cache, "");
    let (d, _) = push_image(&one, "m/dttl", "v1", "deleted elsewhere").await;
    assert_eq!(
        fetch(&two, Method::GET, "m/dttl", &d).await.0,
        StatusCode::OK
    );
    delete(&one, "m/dttl", &d).await;
    gone_within(ttl, || async {
        fetch(&two, Method::GET, "m/dttl", &d).await.0
    })
    .await;
}

/// Polls `status` (every answer 200 or 404) until `ttl` has passed since
/// the delete just made; from then on it must be 404.
async fn gone_within<F, Fut>(ttl: Duration, status: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let deleted = Instant::now();
    loop {
        let status = status().await;
        if deleted.elapsed() > ttl {
            assert_eq!(status, StatusCode::NOT_FOUND, "served beyond the TTL");
            break;
        }
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No `blobdescriptor` configured: a blob's link and size are trusted for
/// `tagttl` too. A warm HEAD needs no storage request; a blob DELETE here is
/// seen at once, one on another replica within the TTL.
#[tokio::test]
async fn without_a_blob_cache_a_blob_is_trusted_for_the_ttl() {
    let (b, debug) = start(None, "    manifests:\n      tagttl: 1h\n", "");
    let d = push_blob(&b, "b/ttl", b"a layer").await;
    let head = |b: &Berth, d: &str| client().head(b.url(&format!("/v2/b/ttl/blobs/{d}"))).send();
    assert_eq!(head(&b, &d).await.unwrap().status(), StatusCode::OK);
    let before = storage_requests(&debug).await;
    for _ in 0..5 {
        assert_eq!(head(&b, &d).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(storage_requests(&debug).await - before, 0, "warm HEADs");
    let del = client()
        .delete(b.url(&format!("/v2/b/ttl/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::ACCEPTED);
    assert_eq!(head(&b, &d).await.unwrap().status(), StatusCode::NOT_FOUND);

    let ttl = Duration::from_secs(2);
    let cache = "    manifests:\n      tagttl: 2s\n";
    let (one, _) = start(None, cache, "");
    let (two, _) = start(Some(&one.root), cache, "");
    let d = push_blob(&one, "b/ttl", b"another layer").await;
    assert_eq!(head(&two, &d).await.unwrap().status(), StatusCode::OK);
    let del = client()
        .delete(one.url(&format!("/v2/b/ttl/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::ACCEPTED);
    gone_within(ttl, || async { head(&two, &d).await.unwrap().status() }).await;
}

#[test]
fn manifest_cache_config_errors() {
    let check = |yaml: &str| crate::common::config_check(yaml, &[]);
    let (code, err) = check("storage:\n  cache:\n    manifests:\n      tagttl: soon\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("storage.cache.manifests.tagttl"), "{err}");
    let (code, err) = check("storage:\n  cache:\n    manifests:\n      sise: 10\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("sise"), "{err}");
    let (code, err) = check(
        "storage:\n  cache:\n    manifests:\n      size: \"1048576\"\n      tagttl: 0s\n      redisttl: 1h\n",
    );
    assert_eq!(code, Some(0), "{err}");
}
