//! The Docker engine against Berth: push a 3-layer image, pull it back by tag
//! and by digest, and push a second image that shares layers with the first.

use std::collections::BTreeSet;

// The builders moved to images.rs; other tests still import them from here.
pub use super::images::{build, import_base, push, Image};
use super::{
    daemons::Dockerd,
    images::{layer_status, noise, push_new_then_sharing},
    support::{http, stored_blobs, upload_leftovers},
};
use crate::common::Berth;

/// Digests a schema2 manifest in Berth references, the manifest included.
fn manifest_blobs(berth: &Berth, repo: &str, digest: &str) -> BTreeSet<String> {
    let m = http(
        "GET",
        &berth.url(&format!("/v2/{repo}/manifests/{digest}")),
        &["application/vnd.docker.distribution.manifest.v2+json"],
    );
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    crate::common::docker::manifest_blobs(&m.json(), digest)
}

#[test]
fn docker_push_pull_by_tag_and_digest_with_shared_layers() {
    let berth = Berth::start();
    let d = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let reg = &berth.addr;

    import_base(&d, work.path(), "berth-test/base:1");
    // One multi-MiB layer, so a push streams a body bigger than any single
    // buffer or default body limit on the way.
    let one = build(
        &d,
        work.path(),
        "berth-test/base:1",
        "berth-test/one:1",
        &[("a.txt", "layer a\n"), ("b.txt", &noise(8 << 20))],
    );
    assert_eq!(one.diff_ids.len(), 3, "base + 2 COPY layers");
    // Same base and same first COPY, a different second COPY: 2 shared layers.
    let two = build(
        &d,
        work.path(),
        "berth-test/base:1",
        "berth-test/two:1",
        &[("a.txt", "layer a\n"), ("c.txt", "layer c\n")],
    );
    assert_eq!(two.diff_ids[..2], one.diff_ids[..2]);
    assert_ne!(two.diff_ids[2], one.diff_ids[2]);

    // First push: every layer is new. Second image, same repository: the
    // shared layers are found in place.
    let img = format!("{reg}/team/img");
    let (one_digest, two_digest) = push_new_then_sharing(&d, &img, &one, &two);
    let head = http(
        "HEAD",
        &berth.url("/v2/team/img/manifests/one"),
        &["application/vnd.docker.distribution.manifest.v2+json"],
    );
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("docker-content-digest"),
        Some(one_digest.as_str())
    );

    // Another repository: docker mounts the layers it knows from team/img.
    d.ok(&["tag", &two.tag, &format!("{reg}/other/img:two")]);
    let (other_digest, out) = push(&d, &format!("{reg}/other/img:two"));
    assert_eq!(other_digest, two_digest, "same image, same manifest");
    for l in &two.diff_ids {
        assert_eq!(layer_status(&out, l), "Mounted from team/img", "{out}");
    }

    // Each blob is stored exactly once: the store holds precisely the union
    // of what the two manifests reference, nothing duplicated or left over.
    let mut expected = manifest_blobs(&berth, "team/img", &one_digest);
    expected.extend(manifest_blobs(&berth, "team/img", &two_digest));
    expected.extend(manifest_blobs(&berth, "other/img", &two_digest));
    assert_eq!(
        expected.len(),
        8,
        "2 manifests + 2 configs + 4 distinct layers"
    );
    assert_eq!(stored_blobs(&berth.root), expected);
    assert_eq!(
        upload_leftovers(&berth.root),
        Vec::<std::path::PathBuf>::new()
    );

    let tags = http("GET", &berth.url("/v2/team/img/tags/list"), &[]).json();
    assert_eq!(tags["tags"], serde_json::json!(["one", "two"]));

    // Pull by tag into an empty engine: all 3 layers come from Berth.
    d.remove_all_images();
    let out = d.ok(&["pull", &format!("{img}:one")]).all();
    assert_eq!(out.matches("Pull complete").count(), 3, "{out}");
    assert!(out.contains(&format!("Digest: {one_digest}")), "{out}");
    assert_eq!(d.inspect(&format!("{img}:one"), "{{.Id}}"), one.id);
    assert_eq!(
        d.inspect(&format!("{img}:one"), "{{range .RepoDigests}}{{.}}{{end}}"),
        format!("{img}@{one_digest}")
    );

    // Pull by digest, again from nothing.
    d.remove_all_images();
    let by_digest = format!("{img}@{two_digest}");
    let out = d.ok(&["pull", &by_digest]).all();
    assert_eq!(out.matches("Pull complete").count(), 3, "{out}");
    assert_eq!(d.inspect(&by_digest, "{{.Id}}"), two.id);
    assert_eq!(
        d.inspect(&by_digest, "{{range .RootFS.Layers}}{{println .}}{{end}}")
            .lines()
            .collect::<Vec<_>>(),
        two.diff_ids
    );

    // The mounted copy pulls too (its links alone make the blobs visible).
    let out = d.ok(&["pull", &format!("{reg}/other/img:two")]).all();
    assert!(out.contains(&format!("Digest: {two_digest}")), "{out}");
    assert_eq!(
        d.inspect(&format!("{reg}/other/img:two"), "{{.Id}}"),
        two.id
    );
}
