//! The repository index behind `/v2/_catalog` (src/registry/index.rs): on a
//! storage distribution wrote, the catalog walks the tree until `berth index
//! rebuild` runs; then it pages from the index, in the same order, and
//! pushes keep the index current. On the filesystem and on S3 (s3s-fs).

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::{sha256, Client};
use crate::common::{s3::S3Server, Berth};
use crate::pagination::follow;

/// Names whose order trips byte-wise sorting: `-` and `.` sort before `/`.
const NAMES: &[&str] = &[
    "zeta",
    "alpha/one",
    "alpha/one/deeper",
    "alpha-beta",
    "alpha.gamma",
    "alpha/0",
    "alpha",
    "mid/x_y",
    "0/first",
];

/// The catalog's order (one path component at a time).
fn catalog_order(names: &[&str]) -> Vec<Value> {
    let mut v: Vec<&str> = names.to_vec();
    v.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    v.into_iter().map(|n| json!(n)).collect()
}

/// A repository as distribution lays it out: a manifest revision and a tag.
fn write_repository(root: &Path, name: &str) {
    let d = sha256(name.as_bytes());
    let repo = root.join("docker/registry/v2/repositories").join(name);
    let rev = repo.join("_manifests/revisions/sha256").join(&d[7..]);
    std::fs::create_dir_all(&rev).unwrap();
    std::fs::write(rev.join("link"), &d).unwrap();
    let tag = repo.join("_manifests/tags/latest/current");
    std::fs::create_dir_all(&tag).unwrap();
    std::fs::write(tag.join("link"), &d).unwrap();
}

/// `berth index rebuild` on a config; its stdout.
fn rebuild(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config.yml");
    std::fs::write(&f, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["index", "rebuild", "--config"])
        .arg(&f)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn catalog(c: &Client, n: usize) -> Vec<Value> {
    let (all, sizes) = follow(c, &format!("/v2/_catalog?n={n}"), "repositories").await;
    assert!(sizes.iter().all(|s| *s <= n), "{sizes:?}");
    all
}

/// `layout`: where the storage's `docker/registry/v2` tree is on disk.
async fn walk_then_index(layout: &Path, storage: &str) {
    for n in NAMES {
        write_repository(layout, n);
    }
    // Layer links only (a push whose manifest never came): not listed.
    let only = layout.join("docker/registry/v2/repositories/layers/only/_layers/sha256/ab");
    std::fs::create_dir_all(&only).unwrap();
    std::fs::write(only.join("link"), "sha256:ab").unwrap();
    let config = |addr: &str| {
        format!("version: 0.1\nlog:\n  level: info\nstorage:\n{storage}  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n")
    };
    let b = Berth::start_with(|_, addr| config(addr));
    let c = Client::new(&b);
    let mut want = catalog_order(NAMES);

    for n in [1, 2, 4, 100] {
        assert_eq!(catalog(&c, n).await, want, "walked, n={n}");
    }
    let hint = "run `berth index rebuild`";
    assert_eq!(b.logs().matches(hint).count(), 1, "{}", b.logs());

    let out = rebuild(&config("127.0.0.1:0"));
    assert!(
        out.contains(&format!(
            "repositories={} added={}",
            NAMES.len(),
            NAMES.len()
        )),
        "{out}"
    );
    let index = layout.join("docker/registry/v2/berth-index");
    assert!(index.join("complete").is_file());
    assert!(index.join("repositories/alpha!one!deeper").is_file());
    for n in [1, 2, 4, 100] {
        assert_eq!(catalog(&c, n).await, want, "from the index, n={n}");
    }

    // A push adds its repository, in order.
    c.push_image("alpha/one/new", "v1", "idx").await;
    want = catalog_order(&[NAMES, &["alpha/one/new"]].concat());
    for n in [1, 3] {
        assert_eq!(catalog(&c, n).await, want, "after a push, n={n}");
    }
    // The catalog reads the index, not the tree: a repository some other
    // program writes is listed once a rebuild adds it (README, Catalog).
    write_repository(layout, "late/comer");
    assert_eq!(catalog(&c, 100).await, want);
    let out = rebuild(&config("127.0.0.1:0"));
    assert!(out.contains("added=1 "), "{out}");
    want = catalog_order(&[NAMES, &["alpha/one/new", "late/comer"]].concat());
    assert_eq!(catalog(&c, 2).await, want);
    // Bad `n` is still the spec's error.
    let r = c.get("/v2/_catalog?n=x").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(b.logs().matches(hint).count(), 1);
}

#[tokio::test]
async fn catalog_on_the_filesystem_walks_until_rebuilt_then_pages_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let storage = format!("  filesystem:\n    rootdirectory: {root}\n");
    walk_then_index(dir.path(), &storage).await;
}

#[tokio::test]
async fn catalog_on_s3_walks_until_rebuilt_then_pages_from_the_index() {
    let s3 = S3Server::s3s_fs();
    // s3s-fs keeps the object `idx/<key>` of the bucket as a file there.
    let layout = s3.root.join(&s3.bucket).join("idx");
    walk_then_index(&layout, &s3.yaml("/idx")).await;
}

#[tokio::test]
async fn a_new_storage_starts_with_a_complete_index() {
    let b = Berth::start();
    let c = Client::new(&b);
    c.push_image("first/repo", "v1", "new").await;
    c.push_image("first", "v1", "new2").await;
    assert_eq!(
        catalog(&c, 1).await,
        catalog_order(&["first", "first/repo"])
    );
    let index = b.root.join("docker/registry/v2/berth-index");
    assert!(index.join("complete").is_file());
    assert!(index.join("repositories/first!repo").is_file());
    assert!(!b.logs().contains("berth index rebuild"), "{}", b.logs());
}
