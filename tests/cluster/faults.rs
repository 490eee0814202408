//! Faults of the store survived: the three replicas reach Garage through
//! the fault-injecting proxy of tests/common/faults.rs. At 10 % failed
//! requests (503 SlowDown, 500 InternalError, connections reset mid-body,
//! in equal shares; as many again delayed), a docker push and pull of a
//! multi-layer image succeed and every byte read back is right; at 100 %,
//! once the retries are spent, a client gets 503 with Retry-After, never 500.

use crate::{
    common::faults::Faults,
    daemons::Dockerd,
    harness::{Backend, Cluster, Options},
    images::{build, import_base, noise, push},
    support::{http, send, sha256},
};

const SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Requests nginx answered with a 500: none may be.
fn server_errors(access_log: &str) -> Vec<&str> {
    access_log
        .lines()
        .filter(|l| l.split(' ').nth(2) == Some("500"))
        .collect()
}

pub fn docker_push_pull_at_ten_percent_faults() {
    // Redirects off: every pulled byte comes through a replica, which reads
    // it from the store through the proxy.
    let c = Cluster::start_with(
        Backend::S3,
        Options {
            redirect: false,
            faults: Some(Faults::mixed(0.10, 11)),
            maxretries: None,
        },
    );
    let d = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let img = format!("{}/faults/img", c.nginx.addr);
    import_base(&d, work.path(), "faults/base:1");
    // A layer over S3's 5 MiB part minimum (a multipart upload), and a small one.
    let one = build(
        &d,
        work.path(),
        "faults/base:1",
        "faults/one:1",
        &[("a.txt", "layer a\n"), ("b.txt", &noise(12 << 20))],
    );
    assert_eq!(one.diff_ids.len(), 3);
    d.ok(&["tag", &one.tag, &format!("{img}:one")]);
    let (digest, _) = push(&d, &format!("{img}:one"));

    // Into an empty engine, which checks every layer and the config
    // against their digests.
    d.remove_all_images();
    let by_digest = format!("{img}@{digest}");
    let out = d.ok(&["pull", &by_digest]).all();
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(d.inspect(&by_digest, "{{.Id}}"), one.id);

    // Every blob read back through the balancer hashes to its digest.
    let lb = c.balancer();
    let m = http(
        "GET",
        &format!("{lb}/v2/faults/img/manifests/{digest}"),
        &[SCHEMA2],
    );
    assert_eq!(m.status, 200);
    assert_eq!(sha256(&m.body), digest);
    let blobs = crate::common::docker::manifest_blobs(&m.json(), &digest);
    assert_eq!(blobs.len(), 5, "manifest, config and 3 layers");
    for b in blobs.iter().filter(|b| **b != digest) {
        let r = http("GET", &format!("{lb}/v2/faults/img/blobs/{b}"), &[]);
        assert_eq!(r.status, 200, "{b}");
        assert_eq!(&sha256(&r.body), b, "{} bytes", r.body.len());
    }

    let counts = c.proxy.as_ref().unwrap().counts.get();
    let [requests, slowdowns, internals, resets, delays] = counts;
    eprintln!(
        "fault proxy: {requests} requests, {slowdowns} SlowDown, {internals} \
         InternalError, {resets} resets, {delays} delayed"
    );
    assert!(
        slowdowns > 0 && internals > 0 && resets > 0 && delays > 0,
        "every kind of fault was injected: {counts:?}"
    );
    let log = c.nginx.access_log();
    let unavailable = log
        .lines()
        .filter(|l| l.split(' ').nth(2) == Some("503"))
        .count();
    let resumed = c.logs().matches("; resuming").count();
    eprintln!(
        "client-visible: {} requests, {unavailable} answered 503 (then retried by docker); \
         GetObject bodies resumed {resumed} times",
        log.lines().count()
    );
    assert_eq!(server_errors(&log), Vec::<&str>::new());
}

/// Every request the store fails (503, 500 or reset, a third each): Berth
/// retries once (`maxretries: 1`), then answers 503 with Retry-After.
pub fn exhausted_retries_answer_503() {
    let third = 1.0 / 3.0;
    let c = Cluster::start_with(
        Backend::S3,
        Options {
            redirect: true,
            faults: Some(Faults {
                slowdown: third,
                internal: third,
                reset: 1.0 - 2.0 * third,
                ..Faults::none(12)
            }),
            maxretries: Some(1),
        },
    );
    let lb = c.balancer();
    let blob = b"a blob the store never gets".to_vec();
    let digest = sha256(&blob);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(&config),
            "size": config.len(),
        },
        "layers": [],
    })
    .to_string();
    let oci = [("content-type", "application/vnd.oci.image.manifest.v1+json")];
    let octets = [("content-type", "application/octet-stream")];
    let start = send(
        "POST",
        &format!("{lb}/v2/f/app/blobs/uploads/"),
        &[],
        vec![],
    );
    assert_ne!(start.status, 500, "{}", start.text());
    let checks = [
        (
            "HEAD blob",
            http("HEAD", &format!("{lb}/v2/f/app/blobs/{digest}"), &[]),
        ),
        (
            "GET blob",
            http("GET", &format!("{lb}/v2/f/app/blobs/{digest}"), &[]),
        ),
        (
            "GET manifest by tag",
            http("GET", &format!("{lb}/v2/f/app/manifests/v1"), &[SCHEMA2]),
        ),
        (
            "GET tags",
            http("GET", &format!("{lb}/v2/f/app/tags/list"), &[]),
        ),
        (
            "GET catalog",
            http("GET", &format!("{lb}/v2/_catalog"), &[]),
        ),
        (
            "monolithic push",
            send(
                "POST",
                &format!("{lb}/v2/f/app/blobs/uploads/?digest={digest}"),
                &octets,
                blob.clone(),
            ),
        ),
        (
            "PUT manifest",
            send(
                "PUT",
                &format!("{lb}/v2/f/app/manifests/v1"),
                &oci,
                manifest.into_bytes(),
            ),
        ),
    ];
    for (what, r) in &checks {
        assert_eq!(r.status, 503, "{what}: {}\n{}", r.text(), c.logs());
        assert!(r.header("retry-after").is_some(), "{what}: no Retry-After");
    }
    if start.status == 202 {
        // A chunk into the upload the POST opened (it touched no storage).
        let loc = start.header("location").unwrap().to_string();
        let url = if loc.starts_with("http") {
            loc
        } else {
            format!("{lb}{loc}")
        };
        let r = send("PATCH", &url, &octets, blob.clone());
        assert_eq!(r.status, 503, "PATCH: {}", r.text());
        assert!(r.header("retry-after").is_some(), "PATCH: no Retry-After");
    }
    let [requests, ..] = c.proxy.as_ref().unwrap().counts.get();
    assert!(requests > 0);
    let log = c.nginx.access_log();
    assert_eq!(server_errors(&log), Vec::<&str>::new());
}
