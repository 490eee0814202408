//! Eviction (`proxy.ttl`): `berth garbage-collect` removes what the mirror
//! fetched and nobody pulled within the TTL (its tag, its manifest, the
//! blobs only it used), keeps what was pulled since, and a later pull of
//! the evicted image fetches it again.

use std::process::Command;

use crate::{
    common::{files_under, Berth},
    shared::pull,
    support::*,
};

/// Pull `repo:v1` and its blobs through `m`; its layer's digest.
fn pull_image(m: &Berth, repo: &str) -> String {
    let r = pull(&m.url(""), repo, "v1");
    assert_eq!(r.status, 200, "{repo}: {}", r.text());
    let m_json = r.json();
    for d in [&m_json["config"]["digest"], &m_json["layers"][0]["digest"]] {
        let d = d.as_str().unwrap();
        let b = get(&m.url(&format!("/v2/{repo}/blobs/{d}")), Auth::None);
        assert_eq!(b.status, 200, "{repo} {d}");
        assert_eq!(&sha256(&b.body), d);
    }
    m_json["layers"][0]["digest"].as_str().unwrap().to_string()
}

#[test]
fn garbage_collection_evicts_what_nobody_pulled_within_the_ttl() {
    let upstream = Berth::start();
    for repo in ["team/old", "team/new"] {
        assert_eq!(push_image(&upstream.url(""), repo, "v1", None).status, 201);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let config = |root: &str, addr: &str| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: m\n\
             proxy:\n  remoteurl: {}\n  ttl: 1h\n  tagttl: 0s\n",
            upstream.url("")
        )
    };
    let m = Berth::start_on_root_with(&root, config);
    let old_layer = pull_image(&m, "team/old");
    let new_layer = pull_image(&m, "team/new");

    // Everything the mirror stored is made two hours old; then `new` is
    // pulled again, which checks its tag upstream and so renews it.
    let aged = Command::new("find")
        .arg(&root)
        .args(["-exec", "touch", "-d", "2 hours ago", "{}", "+"])
        .status()
        .unwrap();
    assert!(aged.success());
    assert_eq!(pull_image(&m, "team/new"), new_layer);

    let cfg_path = dir.path().join("gc.yml");
    std::fs::write(&cfg_path, config(root.to_str().unwrap(), "127.0.0.1:0")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["garbage-collect", "--grace-period", "1h", "--config"])
        .arg(&cfg_path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("mirrored_tags_expired=1"), "{stdout}");

    let stored = |layer: &str| {
        let hex = layer.strip_prefix("sha256:").unwrap();
        files_under(&root)
            .iter()
            .any(|f| f.contains(hex) && f.ends_with("/data"))
    };
    assert!(
        !stored(&old_layer),
        "the unpulled image's layer is still stored"
    );
    assert!(stored(&new_layer), "the image pulled since was evicted");
    let tags = files_under(&root.join("docker/registry/v2/repositories/team/old/_manifests"));
    assert!(!tags.iter().any(|f| f.contains("/tags/v1")), "{tags:?}");

    // Evicted is not lost: the next pull fetches it again.
    assert_eq!(pull_image(&m, "team/old"), old_layer);
    assert!(stored(&old_layer));
}
