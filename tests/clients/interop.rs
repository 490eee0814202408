//! CNCF distribution and Berth on one storage root, both ways round: what one
//! wrote, the other serves with the same catalog, tags and digests, and
//! clients pull it back intact. This is the proof that the on-disk layout is
//! the same, not merely similar.

use std::path::Path;

use serde_json::json;

use super::{
    daemons::{Distribution, Dockerd},
    docker::{build, import_base, push, Image},
    oci::{descriptor, multi_arch, MultiArch, OCI_MANIFEST},
    skopeo::{pull_layout, push_layout, skopeo},
    support::{http, listing, send, stored_blobs, Listing, MANIFEST_TYPES},
};
use crate::common::Berth;

/// What was pushed into the first registry.
struct Pushed {
    docker: Image,
    docker_digest: String,
    multi: MultiArch,
    listing: Listing,
}

/// Push a Docker-built image (two tags), a multi-arch OCI index and a
/// schema2 conversion into the registry at `addr`, then record its listing.
fn fill(d: &Dockerd, work: &Path, addr: &str, salt: &str) -> Pushed {
    import_base(d, work, "interop/base:1");
    let docker = build(
        d,
        work,
        "interop/base:1",
        "interop/app:1",
        &[("one.txt", salt), ("two.txt", "second layer\n")],
    );
    let app = format!("{addr}/interop/app");
    d.ok(&["tag", &docker.tag, &format!("{app}:1")]);
    d.ok(&["tag", &docker.tag, &format!("{app}:latest")]);
    let (docker_digest, _) = push(d, &format!("{app}:1"));
    let (again, _) = push(d, &format!("{app}:latest"));
    assert_eq!(again, docker_digest);

    let multi = multi_arch(&work.join("src"), "v1", salt);
    push_layout(
        &multi.layout.dir,
        "v1",
        &format!("docker://{addr}/interop/nested/multi:v1"),
    );
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--override-arch",
        "amd64",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", multi.layout.dir.display()),
        &format!("docker://{addr}/interop/s2:amd64"),
    ]);

    let listing = listing(addr);
    assert_eq!(
        listing.catalog,
        ["interop/app", "interop/nested/multi", "interop/s2"]
    );
    assert_eq!(listing.tags["interop/app"], ["1", "latest"]);
    assert_eq!(
        listing.digests["interop/nested/multi:v1"].0,
        multi.index_digest
    );
    Pushed {
        docker,
        docker_digest,
        multi,
        listing,
    }
}

/// The second registry, on the same root, must show and serve it all.
fn check(d: &Dockerd, work: &Path, addr: &str, pushed: &Pushed) {
    assert_eq!(
        listing(addr),
        pushed.listing,
        "listing differs across servers"
    );

    let out = pull_layout(
        &format!("docker://{addr}/interop/nested/multi:v1"),
        &work.join("out"),
        "v1",
    );
    assert_eq!(out.blobs(), pushed.multi.layout.blobs());

    let app = format!("{addr}/interop/app");
    d.remove_all_images();
    let log = d.ok(&["pull", &format!("{app}:1")]).all();
    assert_eq!(log.matches("Pull complete").count(), 3, "{log}");
    assert_eq!(d.inspect(&format!("{app}:1"), "{{.Id}}"), pushed.docker.id);
    d.remove_all_images();
    let by_digest = format!("{app}@{}", pushed.docker_digest);
    d.ok(&["pull", &by_digest]);
    assert_eq!(d.inspect(&by_digest, "{{.Id}}"), pushed.docker.id);

    // The engine resolves the skopeo-pushed OCI index to linux/amd64 and
    // unpacks the generated layer (its diff id is checked against the config).
    let multi = format!("{addr}/interop/nested/multi:v1");
    d.ok(&["pull", "--platform", "linux/amd64", &multi]);
    assert_eq!(
        d.inspect(&multi, "{{.Id}}"),
        pushed.multi.image("amd64").config
    );
    assert_eq!(d.inspect(&multi, "{{.Architecture}}"), "amd64");
}

/// Push over HTTP an untagged OCI artifact whose `subject` is the amd64
/// manifest of `pushed.multi`. Berth records it for the referrers API under
/// `_refs/`, a directory distribution does not know and must not trip over.
/// Returns the artifact manifest's digest and bytes.
fn push_referrer(berth: &Berth, repo: &str, pushed: &Pushed) -> (String, Vec<u8>) {
    let blob = |data: &[u8]| {
        let d = descriptor("application/octet-stream", data);
        let url = berth.url(&format!(
            "/v2/{repo}/blobs/uploads/?digest={}",
            d["digest"].as_str().unwrap()
        ));
        let r = send(
            "POST",
            &url,
            &[("content-type", "application/octet-stream")],
            data.to_vec(),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    };
    blob(b"{}");
    blob(b"a detached signature\n");
    let subject = &pushed.multi.image("amd64").manifest;
    let subject_bytes = pushed.multi.layout.blob(subject);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": descriptor("application/vnd.oci.empty.v1+json", b"{}"),
        "layers": [descriptor("application/vnd.example.signature.v1", b"a detached signature\n")],
        "subject": descriptor(OCI_MANIFEST, &subject_bytes),
    })
    .to_string()
    .into_bytes();
    let digest = descriptor(OCI_MANIFEST, &manifest)["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let r = send(
        "PUT",
        &berth.url(&format!("/v2/{repo}/manifests/{digest}")),
        &[("content-type", OCI_MANIFEST)],
        manifest.clone(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("oci-subject"), Some(subject.as_str()));
    let refs = http(
        "GET",
        &berth.url(&format!("/v2/{repo}/referrers/{subject}")),
        &[],
    )
    .json();
    assert_eq!(refs["manifests"][0]["digest"], digest.as_str(), "{refs}");
    (digest, manifest)
}

#[test]
fn distribution_root_is_served_by_berth() {
    let d = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");

    let dist = Distribution::start(&root);
    let pushed = fill(&d, work.path(), &dist.addr, "written by distribution\n");
    drop(dist);

    let berth = Berth::start_on_root(&root, &[]);
    check(&d, work.path(), &berth.addr, &pushed);
    // Whatever order distribution's directory listing gave, Berth answers
    // in lexical order, as the OCI spec requires.
    let tags = http("GET", &berth.url("/v2/interop/app/tags/list"), &[]).json();
    assert_eq!(tags["tags"], json!(["1", "latest"]));
}

#[test]
fn berth_root_is_served_by_distribution() {
    let d = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");

    let berth = Berth::start_on_root(&root, &[]);
    let pushed = fill(&d, work.path(), &berth.addr, "written by berth\n");
    let repo = "interop/nested/multi";
    let (artifact, artifact_bytes) = push_referrer(&berth, repo, &pushed);
    drop(berth);

    // distribution's offline garbage collector reads every repository and
    // manifest Berth wrote: it must find all blobs referenced, delete none.
    let before = stored_blobs(&root);
    let gc = Distribution::garbage_collect(&root);
    assert_eq!(stored_blobs(&root), before, "gc removed blobs:\n{gc}");
    assert!(
        gc.contains("0 blobs and 0 manifests eligible for deletion"),
        "{gc}"
    );

    let dist = Distribution::start(&root);
    check(&d, work.path(), &dist.addr, &pushed);
    let got = http(
        "GET",
        &format!("http://{}/v2/{repo}/manifests/{artifact}", dist.addr),
        &MANIFEST_TYPES,
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.body, artifact_bytes);
    assert!(
        !dist.logs().contains("level=error"),
        "distribution logged errors:\n{}",
        dist.logs()
    );
}

/// Every catalog page, following `n`/`last` as a client does.
fn catalog_pages(addr: &str, n: usize) -> Vec<Vec<String>> {
    let mut pages = vec![];
    let mut last = String::new();
    for _ in 0..20 {
        let url = format!("http://{addr}/v2/_catalog?n={n}&last={last}");
        let r = http("GET", &url, &[]);
        assert_eq!(r.status, 200);
        let page: Vec<String> = serde_json::from_value(r.json()["repositories"].clone()).unwrap();
        if page.is_empty() {
            return pages;
        }
        last = page.last().unwrap().clone();
        pages.push(page);
    }
    panic!("catalog of {addr} did not end in 20 pages: {pages:?}");
}

/// distribution orders repository names path component by component
/// (`a`, `a/b`, `a-c`: its storage walk order), not byte by byte (`a`,
/// `a-c`, `a/b`), and `last` continues in that order. On the same root
/// Berth must list, and page, the same.
#[test]
fn catalog_order_and_pages_match_distribution() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let multi = multi_arch(&work.path().join("src"), "v1", "catalog order");
    let dist = Distribution::start(&root);
    for repo in ["a/b", "a-c", "a", "a/b/c", "a.d"] {
        skopeo(&[
            "copy",
            "--override-arch",
            "arm64",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", multi.layout.dir.display()),
            &format!("docker://{}/{repo}:v1", dist.addr),
        ]);
    }
    let expected = listing(&dist.addr).catalog;
    let expected_pages = catalog_pages(&dist.addr, 2);
    drop(dist);

    let berth = Berth::start_on_root(&root, &[]);
    assert_eq!(listing(&berth.addr).catalog, expected);
    assert_eq!(catalog_pages(&berth.addr, 2), expected_pages);

    // Indexed in place, while serving: the same pages, from the index.
    let cfg = work.path().join("index.yml");
    let storage = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n",
        root.display()
    );
    std::fs::write(&cfg, storage).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["index", "rebuild", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("repositories=5 added=5"), "{stdout}");
    assert!(root
        .join("docker/registry/v2/berth-index/complete")
        .is_file());
    assert_eq!(listing(&berth.addr).catalog, expected);
    assert_eq!(catalog_pages(&berth.addr, 2), expected_pages);
}
