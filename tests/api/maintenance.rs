//! storage.maintenance.uploadpurging: abandoned uploads are removed, fresh
//! ones kept; dry runs only report.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::client::Client;
use crate::common::Berth;

/// An upload abandoned long ago, written as distribution would have left it.
fn plant_old_upload(root: &std::path::Path, repo: &str, id: &str) -> std::path::PathBuf {
    let dir = root.join(format!(
        "docker/registry/v2/repositories/{repo}/_uploads/{id}"
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("startedat"), "2020-01-02T03:04:05Z").unwrap();
    std::fs::write(dir.join("data"), b"partial").unwrap();
    dir
}

fn config(root: &str, addr: &str, dryrun: bool) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {root}\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1h\n      interval: 200ms\n      dryrun: {dryrun}\nhttp:\n  addr: {addr}\n  secret: s\n"
    )
}

/// Poll `cond` for at most 20 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn abandoned_uploads_are_purged_fresh_ones_kept() {
    let root = tempfile::tempdir().unwrap();
    let old = plant_old_upload(root.path(), "purge/repo", "old-upload");
    let b = Berth::start_on_root_with(root.path(), |root, addr| config(root, addr, false));
    eventually("the old upload is removed", || !old.exists()).await;

    let c = Client::new(&b);
    let url = c.start_upload("purge/repo").await;
    let passes = |b: &Berth| b.logs().matches("upload purging pass").count();
    let seen = passes(&b);
    eventually("two more purge passes", || passes(&b) >= seen + 2).await;
    assert_eq!(
        c.get(&url).await.status(),
        StatusCode::NO_CONTENT,
        "a fresh upload survives"
    );
}

#[tokio::test]
async fn dry_run_only_reports() {
    let root = tempfile::tempdir().unwrap();
    let old = plant_old_upload(root.path(), "dry/repo", "old-upload");
    let b = Berth::start_on_root_with(root.path(), |root, addr| config(root, addr, true));
    eventually("a dry-run report", || b.logs().contains("would remove")).await;
    assert!(old.join("data").exists(), "dry run removes nothing");
}
