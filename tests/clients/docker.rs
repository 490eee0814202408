//! The Docker engine against Berth: push a 3-layer image, pull it back by tag
//! and by digest, and push a second image that shares layers with the first.

use std::{collections::BTreeSet, fs, path::Path};

use super::{
    daemons::Dockerd,
    oci::tar,
    support::{http, stored_blobs, upload_leftovers},
};
use crate::common::Berth;

/// A locally built image.
pub struct Image {
    /// Local tag it was built as.
    pub tag: String,
    /// Image id (the config digest).
    pub id: String,
    /// Uncompressed layer digests (diff ids), base first.
    pub diff_ids: Vec<String>,
}

/// The base: `docker import` of a generated rootfs tar (one layer).
pub fn import_base(d: &Dockerd, work: &Path, tag: &str) {
    let rootfs = tar(&[
        ("etc/", b""),
        ("etc/os-release", b"NAME=berth-test\n"),
        ("bin/", b""),
        (
            "bin/placeholder",
            b"no shell here: images are built with COPY only\n",
        ),
    ]);
    let path = work.join("rootfs.tar");
    fs::write(&path, rootfs).unwrap();
    d.ok(&["import", path.to_str().unwrap(), tag]);
}

/// `docker build` FROM `base` adding one COPY layer per file in `files`
/// (written into a shared context, so equal files give equal layers).
pub fn build(d: &Dockerd, work: &Path, base: &str, tag: &str, files: &[(&str, &str)]) -> Image {
    let ctx = work.join("context");
    fs::create_dir_all(&ctx).unwrap();
    let mut dockerfile = format!("FROM {base}\n");
    for (name, content) in files {
        let path = ctx.join(name);
        // Rewriting identical content would change the mtime and so the layer.
        if fs::read_to_string(&path).ok().as_deref() != Some(content) {
            fs::write(&path, content).unwrap();
        }
        dockerfile += &format!("COPY {name} /data/{name}\n");
    }
    let df = ctx.join(format!("Dockerfile.{}", tag.replace([':', '/'], "_")));
    fs::write(&df, dockerfile).unwrap();
    d.ok(&[
        "build",
        "-f",
        df.to_str().unwrap(),
        "-t",
        tag,
        ctx.to_str().unwrap(),
    ]);
    Image {
        tag: tag.to_string(),
        id: d.inspect(tag, "{{.Id}}"),
        diff_ids: d
            .inspect(tag, "{{range .RootFS.Layers}}{{println .}}{{end}}")
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

/// `len` bytes of deterministic, poorly compressible hex text.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut s = String::with_capacity(len + 16);
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s += &format!("{x:016x}");
    }
    s.truncate(len);
    s
}

/// `docker push`; returns the manifest digest it reports and its output.
pub fn push(d: &Dockerd, reference: &str) -> (String, String) {
    let out = d.ok(&["push", reference]).all();
    let at = out
        .find("digest: sha256:")
        .unwrap_or_else(|| panic!("no digest in push output:\n{out}"));
    let digest = out[at + 8..at + 8 + 71].to_string();
    (digest, out)
}

/// The last status docker printed for a layer in push output, e.g.
/// "Pushed", "Layer already exists", "Mounted from t/img". Lines are keyed by
/// the first 12 hex digits of the layer's diff id.
pub fn layer_status(out: &str, diff_id: &str) -> String {
    let short = &diff_id.trim_start_matches("sha256:")[..12];
    out.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{short}: ")))
        .rfind(|s| *s != "Preparing" && *s != "Waiting" && !s.starts_with("Pushing"))
        .unwrap_or_else(|| panic!("no status for layer {short} in:\n{out}"))
        .to_string()
}

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
    let v = m.json();
    let mut set: BTreeSet<String> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    set.insert(v["config"]["digest"].as_str().unwrap().to_string());
    set.insert(digest.to_string());
    set
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

    // First push: every layer is new.
    let img = format!("{reg}/team/img");
    d.ok(&["tag", &one.tag, &format!("{img}:one")]);
    let (one_digest, out) = push(&d, &format!("{img}:one"));
    for l in &one.diff_ids {
        assert_eq!(layer_status(&out, l), "Pushed", "{out}");
    }
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

    // Second image, same repository: the shared layers are found in place.
    d.ok(&["tag", &two.tag, &format!("{img}:two")]);
    let (two_digest, out) = push(&d, &format!("{img}:two"));
    assert_eq!(layer_status(&out, &two.diff_ids[0]), "Layer already exists");
    assert_eq!(layer_status(&out, &two.diff_ids[1]), "Layer already exists");
    assert_eq!(layer_status(&out, &two.diff_ids[2]), "Pushed");

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
