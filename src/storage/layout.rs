//! CNCF distribution's on-storage layout (its `registry/storage/paths.go`), in one
//! place, so that an existing distribution root is served as it is.
//!
//! ```text
//! /docker/registry/v2/blobs/<alg>/<hex[0..2]>/<hex>/data
//! /docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link
//! /docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
//! /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
//! /docker/registry/v2/repositories/<name>/_uploads/<id>/{data,startedat}
//! ```
//!
//! Berth adds one directory distribution does not have, for the referrers API:
//! `repositories/<name>/_refs/subjects/<alg>/<hex>/<alg>/<hex>/link`
//! (subject digest, then referrer digest). distribution ignores it.

use crate::digest::Digest;

pub const ROOT: &str = "/docker/registry/v2";

pub fn blobs_root() -> String {
    format!("{ROOT}/blobs")
}

pub fn blob_dir(d: &Digest) -> String {
    let hex = d.hex();
    format!("{ROOT}/blobs/{}/{}/{}", d.algorithm(), &hex[..2], hex)
}

pub fn blob_data(d: &Digest) -> String {
    format!("{}/data", blob_dir(d))
}

pub fn repositories_root() -> String {
    format!("{ROOT}/repositories")
}

pub fn repository(name: &str) -> String {
    format!("{ROOT}/repositories/{name}")
}

pub fn layer_link(name: &str, d: &Digest) -> String {
    format!(
        "{ROOT}/repositories/{name}/_layers/{}/{}/link",
        d.algorithm(),
        d.hex()
    )
}

pub fn manifests_root(name: &str) -> String {
    format!("{ROOT}/repositories/{name}/_manifests")
}

pub fn manifest_revision_link(name: &str, d: &Digest) -> String {
    format!(
        "{ROOT}/repositories/{name}/_manifests/revisions/{}/{}/link",
        d.algorithm(),
        d.hex()
    )
}

pub fn manifest_revision_dir(name: &str, d: &Digest) -> String {
    format!(
        "{ROOT}/repositories/{name}/_manifests/revisions/{}/{}",
        d.algorithm(),
        d.hex()
    )
}

pub fn tags_root(name: &str) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags")
}

pub fn tag_dir(name: &str, tag: &str) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags/{tag}")
}

pub fn tag_current_link(name: &str, tag: &str) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags/{tag}/current/link")
}

pub fn tag_index_link(name: &str, tag: &str, d: &Digest) -> String {
    format!(
        "{ROOT}/repositories/{name}/_manifests/tags/{tag}/index/{}/{}/link",
        d.algorithm(),
        d.hex()
    )
}

pub fn upload_dir(name: &str, id: &str) -> String {
    format!("{ROOT}/repositories/{name}/_uploads/{id}")
}

/// The objects an upload's directory holds: its data, its start marker.
pub const UPLOAD_DATA: &str = "data";
pub const UPLOAD_STARTED_AT: &str = "startedat";

pub fn upload_data(name: &str, id: &str) -> String {
    format!("{}/{UPLOAD_DATA}", upload_dir(name, id))
}

pub fn upload_started_at(name: &str, id: &str) -> String {
    format!("{}/{UPLOAD_STARTED_AT}", upload_dir(name, id))
}

pub fn referrers_dir(name: &str, subject: &Digest) -> String {
    format!(
        "{ROOT}/repositories/{name}/_refs/subjects/{}/{}",
        subject.algorithm(),
        subject.hex()
    )
}

pub fn referrer_link(name: &str, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}/{}/{}/link",
        referrers_dir(name, subject),
        referrer.algorithm(),
        referrer.hex()
    )
}

/// The last path segment.
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
