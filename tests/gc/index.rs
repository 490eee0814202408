//! Garbage collection keeps the repository index current: a repository left
//! without a manifest leaves the catalog, on the filesystem and on S3.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::common::{http, s3::S3Server, Berth};
use super::support::*;

async fn catalog(berth: &Berth) -> Value {
    let r = http::get(berth.url("/v2/_catalog")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["repositories"].clone()
}

async fn emptied_repository_leaves_the_catalog(storage: &str) {
    let berth = Berth::start_with(|_root, addr| config(storage, "", addr));
    let c = Client::new(berth.url(""));
    c.push_image("kept/app", "v1", b"{\"k\":1}", &[&noise(1, 100)])
        .await;
    // Pushed by digest only: untagged, so `--delete-untagged` removes it.
    c.push_image("gone/app", "", b"{\"g\":1}", &[&noise(2, 100)])
        .await;
    assert_eq!(catalog(&berth).await, json!(["gone/app", "kept/app"]));

    let cfg = config(storage, "", "127.0.0.1:0");
    let run = gc(&cfg, &["--delete-untagged", "--grace-period", "0s"]);
    assert_eq!(run.count("manifests_deleted"), 1, "{}", run.stdout);
    assert_eq!(run.count("index_removed"), 1, "{}", run.stdout);
    assert_eq!(run.count("index_added"), 0, "{}", run.stdout);
    assert_eq!(catalog(&berth).await, json!(["kept/app"]));

    // A later push brings it back, whatever the server remembered.
    c.push_image("gone/app", "v2", b"{\"g\":2}", &[&noise(3, 100)])
        .await;
    assert_eq!(catalog(&berth).await, json!(["gone/app", "kept/app"]));
    // A run with nothing to change changes nothing.
    let run = gc(&cfg, &["--grace-period", "0s"]);
    assert_eq!(run.count("index_removed"), 0, "{}", run.stdout);
    assert_eq!(run.count("index_added"), 0, "{}", run.stdout);
}

#[tokio::test]
async fn emptied_repository_leaves_the_catalog_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    emptied_repository_leaves_the_catalog(&filesystem(dir.path().to_str().unwrap())).await;
}

#[tokio::test]
async fn emptied_repository_leaves_the_catalog_on_s3() {
    let s3 = S3Server::s3s_fs();
    emptied_repository_leaves_the_catalog(&s3.yaml("/berth")).await;
}

/// A storage distribution wrote (no index): the first collection indexes it.
#[tokio::test]
async fn a_collection_indexes_a_storage_without_index() {
    let dir = tempfile::tempdir().unwrap();
    let storage = filesystem(dir.path().to_str().unwrap());
    {
        let berth = Berth::start_with(|_root, addr| config(&storage, "", addr));
        let c = Client::new(berth.url(""));
        c.push_image("one/app", "v1", b"{\"o\":1}", &[&noise(4, 10)])
            .await;
    }
    // As if distribution had written it: no index at all.
    std::fs::remove_dir_all(dir.path().join("docker/registry/v2/berth-index")).unwrap();
    let run = gc(&config(&storage, "", "127.0.0.1:0"), &["-d"]);
    assert_eq!(run.count("index_added"), 0, "a dry run writes nothing");
    assert!(!dir.path().join("docker/registry/v2/berth-index").exists());
    let run = gc(&config(&storage, "", "127.0.0.1:0"), &[]);
    assert_eq!(run.count("index_added"), 1, "{}", run.stdout);
    let index = dir.path().join("docker/registry/v2/berth-index");
    assert!(index.join("complete").is_file());
    assert!(index.join("repositories/one!app").is_file());
}
