//! What one catalog page costs among 10,000 repositories on S3, counted in
//! HTTP requests the S3 driver sends (s3s-fs): the page comes from the
//! repository index in one ListObjectsV2 (after one HEAD for the index's
//! `complete` marker, once per process), where walking the tree costs a
//! listing per directory.

use std::{sync::Arc, time::Instant};

use berth::registry::Registry;
use berth::storage::{filesystem::FilesystemDriver, s3::S3Driver};
use serde_json::Value;

use crate::common::{http, s3::S3Server};

const REPOSITORIES: usize = 10_000;

#[tokio::test]
async fn a_catalog_page_among_10000_repositories_costs_at_most_3_requests() {
    let shm = std::path::Path::new("/dev/shm");
    let s3 = if shm.is_dir() {
        S3Server::s3s_fs_in(shm)
    } else {
        S3Server::s3s_fs()
    };
    // s3s-fs serves the files under <root>/<bucket>/ as the bucket's objects:
    // the layout is written there directly, as distribution would have.
    let fs_root = s3.root.join(&s3.bucket).join("many");
    let repos = fs_root.join("docker/registry/v2/repositories");
    let link = format!("sha256:{}", "ab".repeat(32));
    let started = Instant::now();
    for i in 0..REPOSITORIES {
        let rev = repos
            .join(format!("team{:02}/app-{i:05}", i % 100))
            .join("_manifests/revisions/sha256")
            .join(&link[7..]);
        std::fs::create_dir_all(&rev).unwrap();
        std::fs::write(rev.join("link"), &link).unwrap();
    }
    eprintln!(
        "layout of {REPOSITORIES} repositories written: {:?}",
        started.elapsed()
    );
    // Indexed through the filesystem driver on the same files: a rebuild
    // through s3s-fs, which walks the whole bucket for every listing, would
    // take long; the S3 path of a rebuild is tested in tests/api.
    let on_fs = Registry::new(
        Arc::new(FilesystemDriver::new(&fs_root).unwrap()),
        b"s",
        false,
    );
    let started = Instant::now();
    let report = on_fs.index().rebuild().await.unwrap();
    assert_eq!(
        (report.repositories, report.added),
        (REPOSITORIES, REPOSITORIES)
    );
    eprintln!(
        "index rebuild of {REPOSITORIES} repositories on the filesystem: {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let page = on_fs.repositories_page(100, None).await.unwrap();
    eprintln!(
        "_catalog?n=100 from the index on the filesystem driver: {:?}",
        started.elapsed()
    );
    assert_eq!(page.items.len(), 100);

    let d = Arc::new(S3Driver::new(&s3.config("/many"), false).unwrap());
    let registry = Registry::new(d.clone(), b"s", false);
    let cfg = berth::config::Config::from_yaml("http:\n  secret: s\n").unwrap();
    let app = berth::api::router(&cfg, registry, None, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    let mut last: Option<String> = None;
    for page in 0..3 {
        let url = match &last {
            None => format!("http://{addr}/v2/_catalog?n=100"),
            Some(l) => format!("http://{addr}/v2/_catalog?n=100&last={l}"),
        };
        let before = d.requests();
        let started = Instant::now();
        let r = http::get(url).await.unwrap();
        let took = started.elapsed();
        let requests = d.requests() - before;
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("link"), "more pages follow");
        let body: Value = r.json().await.unwrap();
        let got: Vec<String> = body["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        eprintln!("_catalog?n=100 page {page}: {requests} S3 requests, {took:?}");
        assert!(requests <= 3, "page {page}: {requests} S3 requests");
        let walked = on_fs
            .walk_repositories_page(100, last.as_deref())
            .await
            .unwrap();
        assert_eq!(got, walked.items, "page {page} as the walk finds it");
        // Jump to the middle for the last page.
        last = if page == 0 {
            got.last().cloned()
        } else {
            Some("team50/app-05000".into())
        };
    }
    server.abort();
    eprintln!("pages checked: {:?}", started.elapsed());

    // What the same first page costs walking the tree (as distribution
    // does, and Berth on storage not yet indexed): a listing per directory.
    let registry = Registry::new(d.clone(), b"s", false);
    let (before, started) = (d.requests(), Instant::now());
    let walked = registry.walk_repositories_page(100, None).await.unwrap();
    let requests = d.requests() - before;
    eprintln!(
        "walking for the first page: {requests} S3 requests, {:?}",
        started.elapsed()
    );
    assert_eq!(walked.items.len(), 100);
    assert!(requests > 100, "{requests}");
}
