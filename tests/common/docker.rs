//! What Docker-engine tests read out of a registry's answers.

use std::collections::BTreeSet;

/// The digests an image manifest (`manifest`, stored as `digest`)
/// references, its own included: what its push must have stored.
pub fn manifest_blobs(manifest: &serde_json::Value, digest: &str) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    set.insert(manifest["config"]["digest"].as_str().unwrap().to_string());
    set.insert(digest.to_string());
    set
}
