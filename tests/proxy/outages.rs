//! An upstream that rate-limits, and a replica killed in the middle of a
//! fetch: what the mirror has is still served, 429 is passed on with its
//! `Retry-After`, and nothing half-fetched is ever stored.

use std::time::{Duration, Instant};

use crate::{
    common::{files_under, noise::xorshift_bytes, redis::RedisServer, Berth},
    gate::Gate,
    shared::{mirror_on, pull, push_blob, MIB},
    stub::Stub,
    support::*,
};

#[test]
fn a_rate_limiting_upstream_is_passed_on_and_the_cache_still_serves() {
    let upstream = Berth::start();
    let put = push_image(&upstream.url(""), "team/app", "v1", None);
    assert_eq!(put.status, 201);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let layer = {
        let m = mirror_on(&root, &format!("  remoteurl: {}\n", upstream.url("")));
        let r = pull(&m.url(""), "team/app", "v1");
        assert_eq!(r.status, 200);
        let layer = r.json()["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let b = get(&m.url(&format!("/v2/team/app/blobs/{layer}")), Auth::None);
        assert_eq!(b.status, 200);
        layer
    };
    // The same storage, mirroring an upstream that now refuses everyone
    // with 429, and checking tags on every pull.
    let limited = Stub::start("429 Too Many Requests", &[("Retry-After", "7")]);
    let m = mirror_on(
        &root,
        &format!("  remoteurl: {}\n  tagttl: 0s\n", limited.url()),
    );
    let r = pull(&m.url(""), "team/app", "v1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        put.header("docker-content-digest")
    );
    let b = get(&m.url(&format!("/v2/team/app/blobs/{layer}")), Auth::None);
    assert_eq!(b.status, 200);
    for path in [
        "/v2/team/other/manifests/v1".to_string(),
        format!("/v2/team/app/blobs/sha256:{}", "0".repeat(64)),
    ] {
        let r = get(&m.url(&path), Auth::None);
        assert_eq!(
            (r.status, r.error_code()),
            (429, "TOOMANYREQUESTS".into()),
            "{path}: {}",
            r.text()
        );
        assert_eq!(r.header("retry-after"), Some("7"), "{path}");
    }
}

#[test]
fn a_replica_killed_mid_fetch_leaves_nothing_and_the_next_pull_refills() {
    let upstream = Berth::start();
    let layer = xorshift_bytes(31, 8 * MIB);
    let digest = push_blob(&upstream, "kill/app", &layer);
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();
    let gate = Gate::start(&upstream.addr, MIB as u64);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    // The spools of this test's replicas, apart from every other test's.
    let spools = dir.path().join("spools");
    let proxy = format!(
        "  remoteurl: {}\n  claimttl: 2s\n  spooldir: {}\nredis:\n  addr: {}\n",
        gate.url(),
        spools.display(),
        redis.addr()
    );
    let mut doomed = mirror_on(&root, &proxy);
    let survivor = mirror_on(&root, &proxy);
    let url = format!("/v2/kill/app/blobs/{digest}");

    // The doomed replica starts the fetch (the gate holds it after 1 MiB)
    // and streams its beginning to a client ...
    let first = doomed.url(&url);
    let client = std::thread::spawn(move || {
        crate::common::http::exchange(crate::common::http::builder(), |c| c.get(&first))
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !doomed.logs().contains("proxy: fetching") {
        assert!(Instant::now() < deadline, "{}", doomed.logs());
        std::thread::yield_now();
    }
    // ... and dies.
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let cut = client.join().unwrap();
    assert!(
        !matches!(&cut, Ok(r) if r.status == 200 && r.body == layer),
        "a client of the killed replica got the whole blob"
    );
    let stored = || {
        files_under(&root)
            .iter()
            .any(|f| f.contains(&hex) && f.ends_with("/data"))
    };
    assert!(!stored(), "half a blob was stored");

    // The other replica takes over once the dead one's claim lapses.
    gate.open();
    let r = get(&survivor.url(&url), Auth::None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == layer);
    assert!(stored());

    // The killed replica's spool (its partial blob) outlived it; the next
    // replica to start sweeps it, and leaves the living one's alone.
    let spool_dirs = || {
        let mut names: Vec<String> = std::fs::read_dir(&spools)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = spool_dirs();
    assert_eq!(
        before.len(),
        2,
        "the survivor's and the killed one's: {before:?}"
    );
    let next = mirror_on(&root, &proxy);
    let after = spool_dirs();
    assert_eq!(
        after.len(),
        2,
        "the survivor's and the new one's: {after:?}"
    );
    assert_eq!(
        before.iter().filter(|d| after.contains(d)).count(),
        1,
        "exactly one of the two old ones was swept: {before:?} → {after:?}"
    );
    assert!(next
        .logs()
        .contains("removed the spools of processes that ended mid-fetch"));
}

#[test]
fn an_upstream_that_sends_too_much_is_cut_off_not_buffered() {
    // 64 MiB answers to every GET: a manifest, a tag list, a token would
    // each be that large if read whole.
    let flood = Stub::endless(
        "200 OK",
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        64 * MIB,
    );
    let dir = tempfile::tempdir().unwrap();
    let m = mirror_on(
        &dir.path().join("data"),
        &format!("  remoteurl: {}\n", flood.url()),
    );
    let r = get(&m.url("/v2/team/app/manifests/v1"), Auth::None);
    assert_eq!(
        (r.status, r.error_code()),
        (503, "UNAVAILABLE".into()),
        "{}",
        r.text()
    );
    // An unusable tag list is an upstream that cannot answer: the cached
    // tags, here none.
    let r = get(&m.url("/v2/team/app/tags/list"), Auth::None);
    assert_eq!((r.status, r.error_code()), (404, "NAME_UNKNOWN".into()));
}
