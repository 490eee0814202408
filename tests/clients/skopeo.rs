//! skopeo against Berth: a multi-arch OCI index in and out byte for byte,
//! inspect with platform selection, a conversion to Docker schema2, delete.

use std::{path::Path, time::Duration};

use serde_json::Value;

use super::{
    oci::{multi_arch, Layout, OCI_INDEX, REF_NAME},
    support::{http, require_tool, run_ok, upload_leftovers, Out, MANIFEST_TYPES},
};
use crate::common::Berth;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Run skopeo (must succeed). `--insecure-policy`: no host signature policy
/// applies to generated test images.
pub fn skopeo(args: &[&str]) -> Out {
    require_tool("skopeo", "skopeo");
    let mut cmd = std::process::Command::new("skopeo");
    cmd.arg("--insecure-policy").args(args);
    run_ok(&mut cmd, Duration::from_secs(180))
}

/// `skopeo copy --all` from an OCI layout to a plain-HTTP registry.
pub fn push_layout(dir: &Path, tag: &str, dest: &str) {
    let src = format!("oci:{}:{tag}", dir.display());
    skopeo(&["copy", "--all", "--dest-tls-verify=false", &src, dest]);
}

/// `skopeo copy --all` from a plain-HTTP registry into a new OCI layout.
pub fn pull_layout(src: &str, dir: &Path, tag: &str) -> Layout {
    let dest = format!("oci:{}:{tag}", dir.display());
    skopeo(&["copy", "--all", "--src-tls-verify=false", src, &dest]);
    Layout {
        dir: dir.to_path_buf(),
    }
}

fn inspect(reference: &str, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", "--tls-verify=false"];
    args.extend(extra);
    args.push(reference);
    serde_json::from_str(&skopeo(&args).stdout).unwrap()
}

#[test]
fn skopeo_multi_arch_index_round_trip_inspect_convert_delete() {
    let berth = Berth::start();
    let work = tempfile::tempdir().unwrap();
    let src = multi_arch(&work.path().join("src"), "v1", "skopeo");
    let repo = format!("docker://{}/multi/arch", berth.addr);

    push_layout(&src.layout.dir, "v1", &format!("{repo}:v1"));

    // Berth serves the index exactly as generated, by tag and by digest.
    let by_tag = http(
        "GET",
        &berth.url("/v2/multi/arch/manifests/v1"),
        &MANIFEST_TYPES,
    );
    assert_eq!(by_tag.status, 200);
    assert_eq!(by_tag.header("content-type"), Some(OCI_INDEX));
    assert_eq!(
        by_tag.header("docker-content-digest"),
        Some(src.index_digest.as_str())
    );
    assert_eq!(by_tag.body, src.index_bytes);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("{repo}:v1"),
    ]);
    assert_eq!(raw.stdout.as_bytes(), src.index_bytes.as_slice());
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("{repo}@{}", src.index_digest),
    ]);
    assert_eq!(raw.stdout.as_bytes(), src.index_bytes.as_slice());

    // Platform selection resolves the index to each platform's own image
    // (skopeo's "Digest" stays the digest of what the tag names: the index).
    for arch in ["amd64", "arm64"] {
        let img = src.image(arch);
        let v = inspect(
            &format!("{repo}:v1"),
            &["--override-arch", arch, "--override-os", "linux"],
        );
        assert_eq!(v["Digest"], src.index_digest.as_str(), "{arch}: {v}");
        assert_eq!(v["Architecture"], arch);
        assert_eq!(v["Os"], "linux");
        assert_eq!(v["Layers"], serde_json::json!([img.layer]));
        assert_eq!(v["RepoTags"], serde_json::json!(["v1"]));
        assert_eq!(v["Env"], serde_json::json!([format!("ARCH={arch}")]));
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("{repo}@{}", img.manifest),
        ]);
        assert_eq!(
            raw.stdout.as_bytes(),
            src.layout.blob(&img.manifest).as_slice()
        );
    }

    // Copy everything back out: the same blobs, byte for byte, and an
    // index.json naming the same index under the same tag.
    let out = pull_layout(&format!("{repo}:v1"), &work.path().join("out"), "v1");
    assert_eq!(out.blobs(), src.layout.blobs());
    let entry = &out.index()["manifests"][0];
    assert_eq!(entry["digest"], src.index_digest.as_str());
    assert_eq!(entry["mediaType"], OCI_INDEX);
    assert_eq!(entry["annotations"][REF_NAME], "v1");

    // The whole index converted to a Docker manifest list on the way in:
    // new manifests, the same layer blobs.
    let list = format!("docker://{}/multi/list:v1", berth.addr);
    skopeo(&[
        "copy",
        "--all",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.layout.dir.display()),
        &list,
    ]);
    let m = http(
        "GET",
        &berth.url("/v2/multi/list/manifests/v1"),
        &MANIFEST_TYPES,
    );
    assert_eq!(m.status, 200);
    assert_eq!(m.header("content-type"), Some(DOCKER_LIST));
    let v = m.json();
    assert_eq!(v["mediaType"], DOCKER_LIST);
    for (entry, img) in v["manifests"].as_array().unwrap().iter().zip(&src.images) {
        assert_eq!(entry["platform"]["architecture"], img.arch.as_str());
        let child = http(
            "GET",
            &berth.url(&format!(
                "/v2/multi/list/manifests/{}",
                entry["digest"].as_str().unwrap()
            )),
            &MANIFEST_TYPES,
        );
        assert_eq!(child.status, 200);
        assert_eq!(child.header("content-type"), Some(DOCKER_MANIFEST));
        assert_eq!(child.json()["layers"][0]["digest"], img.layer.as_str());
    }
    let v = inspect(&list, &["--override-arch", "arm64"]);
    assert_eq!(v["Architecture"], "arm64");
    assert_eq!(v["Layers"], serde_json::json!([src.image("arm64").layer]));

    // Registry to registry within Berth (skopeo may mount blobs across
    // repositories): the copy keeps every digest.
    let mirror = format!("docker://{}/multi/mirror:v1", berth.addr);
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("{repo}:v1"),
        &mirror,
    ]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &mirror]);
    assert_eq!(raw.stdout.as_bytes(), src.index_bytes.as_slice());
    assert!(upload_leftovers(&berth.root).is_empty());

    let tags: Value =
        serde_json::from_str(&skopeo(&["list-tags", "--tls-verify=false", &repo]).stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));

    // Delete the index (skopeo resolves the tag, then DELETEs by digest).
    skopeo(&["delete", "--tls-verify=false", &format!("{repo}:v1")]);
    for reference in ["v1", src.index_digest.as_str()] {
        let r = http(
            "GET",
            &berth.url(&format!("/v2/multi/arch/manifests/{reference}")),
            &MANIFEST_TYPES,
        );
        assert_eq!(r.status, 404, "{reference} after delete");
        assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
    }
    let tags = http("GET", &berth.url("/v2/multi/arch/tags/list"), &[]);
    assert_eq!(tags.status, 200);
    assert_eq!(tags.json()["tags"].as_array().map_or(0, Vec::len), 0);
    // As in distribution, deleting an index leaves its platform manifests.
    let child = http(
        "GET",
        &berth.url(&format!(
            "/v2/multi/arch/manifests/{}",
            src.image("amd64").manifest
        )),
        &MANIFEST_TYPES,
    );
    assert_eq!(child.status, 200);
    // Copies in other repositories are untouched.
    for path in [
        "/v2/multi/list/manifests/v1",
        "/v2/multi/mirror/manifests/v1",
    ] {
        assert_eq!(http("HEAD", &berth.url(path), &MANIFEST_TYPES).status, 200);
    }
}
