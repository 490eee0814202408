//! What the pull-through cache tests share: mirrors on a filesystem root,
//! pulls as docker makes them, seeding an upstream with a blob, and reading
//! what reached the upstream (its access log) and the mirror's metrics.

use std::path::Path;

use crate::{common::Berth, support::*};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MIB: usize = 1024 * 1024;

/// A Berth on the filesystem root `root` whose config ends with `tail`:
/// the `proxy:` section's lines (indented by two), then any top-level
/// sections after them.
pub fn mirror_on(root: &Path, tail: &str) -> Berth {
    Berth::start_on_root_with(root, |root, addr| config(root, addr, tail))
}

/// [`mirror_on`] a fresh root of its own.
pub fn mirror(tail: &str) -> Berth {
    Berth::start_with(|root, addr| config(root, addr, tail))
}

fn config(root: &str, addr: &str, tail: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
         http:\n  addr: {addr}\n  secret: mirror\nproxy:\n{tail}"
    )
}

/// GET a manifest (OCI image manifests accepted), anonymously.
pub fn pull(base: &str, repo: &str, reference: &str) -> Resp {
    send(
        "GET",
        &format!("{base}/v2/{repo}/manifests/{reference}"),
        Auth::None,
        &[("accept", OCI_MANIFEST)],
        vec![],
    )
}

/// The manifest's blobs (config first), as digests.
pub fn blobs_of(manifest: &Resp) -> Vec<String> {
    let m = manifest.json();
    let mut v = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        v.push(l["digest"].as_str().unwrap().to_string());
    }
    v
}

/// Push `data` as one blob of `repo` (`POST ?digest=`); its digest.
pub fn push_blob(upstream: &Berth, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let put = send(
        "POST",
        &upstream.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")),
        Auth::None,
        &[("content-type", "application/octet-stream")],
        data.to_vec(),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    digest
}

/// GETs `b` has answered whose path contains `path` (its access log).
pub fn gets(b: &Berth, path: &str) -> usize {
    b.logs()
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(path))
        .count()
}

/// The sum of the series of `name` whose labels include every `labels` pair
/// (`k="v"`), in a Prometheus text exposition.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|kv| l.contains(kv)))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}
