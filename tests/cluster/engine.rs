//! Scenario 1: the Docker engine pushes and pulls multi-layer images through
//! the balancer, so one push's requests are spread over all three replicas.

use std::collections::BTreeSet;

use super::{
    harness::{Backend, Cluster, REPLICAS},
    replicas::blob_object,
};
use crate::{
    daemons::Dockerd,
    images::{build, import_base, noise, push_new_then_sharing},
    support::http,
};

const SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Digests a manifest references, the manifest's own included.
fn manifest_blobs(base: &str, repo: &str, digest: &str) -> BTreeSet<String> {
    let m = http(
        "GET",
        &format!("{base}/v2/{repo}/manifests/{digest}"),
        &[SCHEMA2],
    );
    assert_eq!(m.status, 200);
    crate::common::docker::manifest_blobs(&m.json(), digest)
}

/// The upstreams nginx logged for requests matching `method`.
fn upstreams(access_log: &str, method: &str) -> BTreeSet<String> {
    access_log
        .lines()
        .filter(|l| l.starts_with(&format!("{method} ")))
        .filter_map(|l| l.split("upstream=").nth(1))
        .map(str::to_string)
        .collect()
}

/// Redirects on (Berth's default): pulls fetch blobs from the store itself,
/// through URLs any replica signs.
pub fn docker_push_pull(backend: Backend) {
    let c = Cluster::start(backend, true);
    let d = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let img = format!("{}/team/img", c.nginx.addr);

    import_base(&d, work.path(), "cluster/base:1");
    // A layer over S3's 5 MiB part minimum even gzipped (hex text halves).
    let one = build(
        &d,
        work.path(),
        "cluster/base:1",
        "cluster/one:1",
        &[("a.txt", "layer a\n"), ("b.txt", &noise(12 << 20))],
    );
    let two = build(
        &d,
        work.path(),
        "cluster/base:1",
        "cluster/two:1",
        &[("a.txt", "layer a\n"), ("c.txt", "layer c\n")],
    );
    assert_eq!(one.diff_ids.len(), 3);
    assert_eq!(two.diff_ids[..2], one.diff_ids[..2]);

    let (one_digest, two_digest) = push_new_then_sharing(&d, &img, &one, &two);

    // The pushes really were spread: every replica took uploads.
    let log = c.nginx.access_log();
    let patched = upstreams(&log, "PATCH");
    let all: BTreeSet<String> = (0..REPLICAS)
        .map(|i| c.replica_addr(i).to_string())
        .collect();
    let used = &upstreams(&log, "POST") | &(&patched | &upstreams(&log, "PUT"));
    assert_eq!(used, all, "{log}");
    for i in 0..REPLICAS {
        let tags = http(
            "GET",
            &format!("{}/v2/team/img/tags/list", c.replica(i)),
            &[],
        );
        assert_eq!(
            tags.json()["tags"],
            serde_json::json!(["one", "two"]),
            "replica {i}"
        );
    }

    // Pull by tag, then by digest, into an empty engine.
    d.remove_all_images();
    let out = d.ok(&["pull", &format!("{img}:one")]).all();
    assert_eq!(out.matches("Pull complete").count(), 3, "{out}");
    assert!(out.contains(&format!("Digest: {one_digest}")), "{out}");
    assert_eq!(d.inspect(&format!("{img}:one"), "{{.Id}}"), one.id);
    // Blobs came from the store: Berth answered their GETs with redirects.
    let log = c.nginx.access_log();
    let redirected = log
        .lines()
        .filter(|l| l.starts_with("GET /v2/team/img/blobs/") && l.contains(" 307 "))
        .count();
    assert_eq!(redirected, 4, "config + 3 layers:\n{log}");
    d.remove_all_images();
    let by_digest = format!("{img}@{two_digest}");
    let out = d.ok(&["pull", &by_digest]).all();
    assert_eq!(out.matches("Pull complete").count(), 3, "{out}");
    assert_eq!(d.inspect(&by_digest, "{{.Id}}"), two.id);

    // The store holds exactly what the two manifests reference, once each,
    // and no upload leftovers (nor S3 upload state objects).
    let lb = c.balancer();
    let mut expected = manifest_blobs(&lb, "team/img", &one_digest);
    expected.extend(manifest_blobs(&lb, "team/img", &two_digest));
    assert_eq!(
        expected.len(),
        8,
        "2 manifests + 2 configs + 4 distinct layers"
    );
    let expected: Vec<String> = expected.iter().map(|d| blob_object(d)).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        rt.block_on(c.objects("/docker/registry/v2/blobs")),
        expected
    );
    let uploads = rt.block_on(c.upload_leftovers("team/img"));
    assert_eq!(uploads, Vec::<String>::new());
}
