//! Pushes *during* a collection, driven deterministically through the
//! library's phase hook: a collector and a "server" (its own `Registry` with
//! an in-memory cache) share one filesystem root, and the server pushes
//! between the collector's mark passes and between its re-check and sweep.

use std::{
    cell::RefCell,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::stream;

use berth::{
    cache::{inmemory::InMemoryCache, BlobDescriptorCache},
    registry::{
        digest::Digest,
        error::Code,
        gc::{watch, GcOptions, GcPhase},
        manifests::Reference,
        Registry,
    },
    storage::{filesystem::FilesystemDriver, Driver},
};

use super::support::{digest, image, noise, OCI_MANIFEST};

pub(super) async fn upload(r: &Registry, repo: &str, data: &[u8]) -> Digest {
    let d: Digest = digest(data).parse().unwrap();
    let state = r.start_upload(repo).await.unwrap();
    let body = Box::pin(stream::iter([Ok(Bytes::copy_from_slice(data))]));
    r.finish_upload(state, &d, None, body).await.unwrap();
    d
}

async fn put(r: &Registry, repo: &str, tag: &str, config: &[u8], layers: &[&[u8]]) {
    let m = image(config, layers, None);
    r.put_manifest(
        repo,
        &Reference::Tag(tag.into()),
        Some(OCI_MANIFEST),
        Bytes::from(m.body),
    )
    .await
    .unwrap();
}

/// Make everything under `root` look written two hours ago, so that with a
/// one-hour grace period it is old, and anything written during the run is
/// young by a wide margin (file times come from a coarse clock: a file
/// written just after `SystemTime::now()` may carry an earlier time).
pub(super) fn age_everything(root: &Path) {
    let then = SystemTime::now() - Duration::from_secs(2 * 3600);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let f = std::fs::File::options().write(true).open(&path).unwrap();
                f.set_modified(then).unwrap();
            }
        }
    }
}

pub(super) fn one_hour_grace() -> GcOptions {
    GcOptions {
        grace: Duration::from_secs(3600),
        notice: Duration::ZERO,
        ..GcOptions::default()
    }
}

pub(super) async fn exists(driver: &Driver, d: &Digest) -> bool {
    driver
        .stat(&berth::storage::layout::blob_data(d))
        .await
        .is_ok()
}

#[tokio::test]
async fn blobs_and_manifests_pushed_during_a_run_are_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let driver: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let collector = Registry::new(driver.clone(), b"s", true);
    let server = Registry::new(driver.clone(), b"s", true)
        .with_cache(BlobDescriptorCache::new(Arc::new(InMemoryCache::default())));

    // Old (aged below) and unreferenced when the run starts.
    let config = b"{\"during\":1}".to_vec();
    let relinked_by_manifest_early = noise(1, 1000);
    let relinked_by_manifest_late = noise(2, 1000);
    let reuploaded_late = noise(3, 1000);
    let garbage = noise(4, 1234);
    upload(&server, "app", &config).await;
    for b in [
        &relinked_by_manifest_early,
        &relinked_by_manifest_late,
        &reuploaded_late,
        &garbage,
    ] {
        upload(&server, "app", b).await;
    }
    let garbage_digest: Digest = digest(&garbage).parse().unwrap();
    // The server's cache knows the garbage blob.
    server.stat_blob("app", &garbage_digest).await.unwrap();
    let fresh = noise(5, 777);

    let phases = RefCell::new(Vec::new());
    age_everything(dir.path());
    let opts = one_hour_grace();
    let report = collector
        .garbage_collect_with(&opts, |phase| {
            phases.borrow_mut().push(phase.clone());
            let server = server.clone();
            let (config, early, late, reup, fresh) = (
                config.clone(),
                relinked_by_manifest_early.clone(),
                relinked_by_manifest_late.clone(),
                reuploaded_late.clone(),
                fresh.clone(),
            );
            async move {
                // What the server's poller would have seen by now.
                assert!(server.refresh_sweep_state().await, "sweep marker written");
                match phase {
                    // After pass 1: a new blob and a manifest reusing an old one.
                    GcPhase::Marked => {
                        upload(&server, "app", &fresh).await;
                        put(&server, "app", "early", &config, &[&early, &fresh]).await;
                    }
                    // After the re-mark: only the per-blob re-check can see these.
                    GcPhase::Rechecked => {
                        put(&server, "app", "late", &config, &[&late]).await;
                        upload(&server, "newly/created", &reup).await;
                    }
                    GcPhase::Deleting(_) | GcPhase::DeletingManifest { .. } => {}
                }
            }
        })
        .await
        .unwrap();

    assert_eq!(
        *phases.borrow(),
        [
            GcPhase::Marked,
            GcPhase::Rechecked,
            GcPhase::Deleting(garbage_digest.clone())
        ]
    );
    assert!(report.raced.is_empty(), "{report}");
    assert_eq!(report.blobs_deleted, 1, "{report}");
    assert_eq!(report.bytes_freed, garbage.len() as u64);
    assert_eq!(
        report.blobs_relinked, 2,
        "late manifest and re-upload: {report}"
    );
    for b in [
        &config,
        &relinked_by_manifest_early,
        &relinked_by_manifest_late,
        &reuploaded_late,
        &fresh,
    ] {
        let d: Digest = digest(b).parse().unwrap();
        assert!(exists(&driver, &d).await, "{d} survived the run");
    }
    for tag in ["early", "late"] {
        server
            .get_manifest("app", &Reference::Tag(tag.into()))
            .await
            .unwrap();
    }
    assert!(!exists(&driver, &garbage_digest).await);

    // The marker is gone; the server flushes and stops bypassing its cache,
    // which must not answer for the swept blob.
    assert!(driver
        .list(&watch::sweeps_dir())
        .await
        .map_or(true, |m| m.is_empty()));
    assert!(!server.refresh_sweep_state().await);
    let err = server.stat_blob("app", &garbage_digest).await.unwrap_err();
    assert_eq!(err.code, Code::BlobUnknown);
}

#[tokio::test]
async fn a_manifest_put_during_a_sweep_touches_what_it_references() {
    let dir = tempfile::tempdir().unwrap();
    let driver: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let server = Registry::new(driver.clone(), b"s", true);
    let config = b"{\"touch\":1}".to_vec();
    let layer = noise(9, 100);
    upload(&server, "app", &config).await;
    let layer_digest = upload(&server, "app", &layer).await;
    let link = berth::storage::layout::layer_link("app", &layer_digest);
    age_everything(dir.path());
    let before = driver.stat(&link).await.unwrap().modified;

    // No sweep: a PUT leaves the links alone.
    put(&server, "app", "one", &config, &[&layer]).await;
    assert_eq!(driver.stat(&link).await.unwrap().modified, before);

    driver
        .put_content(&watch::sweep_marker("test"), Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert!(server.refresh_sweep_state().await);
    put(&server, "app", "two", &config, &[&layer]).await;
    assert!(driver.stat(&link).await.unwrap().modified > before);
}

/// The window that remains (see the module documentation of `registry::gc`):
/// a reference landing after a blob's last re-check and before its delete is
/// not prevented, but it is reported, and the next push of the blob heals it.
#[tokio::test]
async fn a_reference_racing_the_delete_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let driver: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let collector = Registry::new(driver.clone(), b"s", true);
    let server = Registry::new(driver.clone(), b"s", true);
    let config = b"{\"race\":1}".to_vec();
    let layer = noise(8, 300);
    upload(&server, "app", &config).await;
    let layer_digest = upload(&server, "app", &layer).await;
    put(&server, "app", "keep", &config, &[]).await;

    age_everything(dir.path());
    let opts = one_hour_grace();
    let report = collector
        .garbage_collect_with(&opts, |phase| {
            let (server, config, layer) = (server.clone(), config.clone(), layer.clone());
            async move {
                if let GcPhase::Deleting(_) = phase {
                    assert!(server.refresh_sweep_state().await);
                    put(&server, "app", "racer", &config, &[&layer]).await;
                }
            }
        })
        .await
        .unwrap();

    assert_eq!(report.raced, vec![layer_digest.clone()], "{report}");
    assert!(
        !exists(&driver, &layer_digest).await,
        "the race lost the data"
    );
    upload(&server, "app", &layer).await;
    assert!(exists(&driver, &layer_digest).await, "a push heals it");
}

/// `--delete-untagged` and a push during the run: an old untagged manifest
/// tagged between the two mark passes stays, with its blobs; one nobody
/// tagged goes.
#[tokio::test]
async fn an_untagged_manifest_tagged_during_a_run_stays() {
    let dir = tempfile::tempdir().unwrap();
    let driver: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let collector = Registry::new(driver.clone(), b"s", true);
    let server = Registry::new(driver.clone(), b"s", true);
    let (config, revived_layer, lost_layer) = (b"{}".to_vec(), noise(1, 100), noise(2, 100));
    for b in [&config, &revived_layer, &lost_layer] {
        upload(&server, "app", b).await;
    }
    let revived = image(&config, &[&revived_layer], None);
    let lost = image(&config, &[&lost_layer], None);
    for m in [&revived, &lost] {
        let d = m.digest.parse().unwrap();
        server
            .put_manifest(
                "app",
                &Reference::Digest(d),
                Some(OCI_MANIFEST),
                Bytes::from(m.body.clone()),
            )
            .await
            .unwrap();
    }
    age_everything(dir.path());
    let opts = GcOptions {
        delete_untagged: true,
        ..one_hour_grace()
    };
    let report = collector
        .garbage_collect_with(&opts, |phase| {
            let server = server.clone();
            let body = revived.body.clone();
            async move {
                if phase == GcPhase::Marked {
                    server
                        .put_manifest(
                            "app",
                            &Reference::Tag("revived".into()),
                            Some(OCI_MANIFEST),
                            Bytes::from(body),
                        )
                        .await
                        .unwrap();
                }
            }
        })
        .await
        .unwrap();

    assert_eq!(report.manifests_deleted, 1, "{report}");
    let revived_digest: Digest = revived.digest.parse().unwrap();
    server
        .get_manifest("app", &Reference::Digest(revived_digest.clone()))
        .await
        .unwrap();
    assert!(exists(&driver, &revived_digest).await);
    assert!(exists(&driver, &digest(&revived_layer).parse().unwrap()).await);
    let lost_digest: Digest = lost.digest.parse().unwrap();
    assert!(server
        .get_manifest("app", &Reference::Digest(lost_digest.clone()))
        .await
        .is_err());
    assert!(!exists(&driver, &lost_digest).await);
    assert!(!exists(&driver, &digest(&lost_layer).parse().unwrap()).await);
}

/// Two collectors overlap (a CronJob whose run outlasts its schedule): the
/// one that ends first must not take down the announcement the other still
/// relies on (servers would stop touching and go back to their cache while
/// the other deletes).
#[tokio::test]
async fn overlapping_collectors_keep_the_sweep_announced_until_the_last_ends() {
    let dir = tempfile::tempdir().unwrap();
    let driver: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let first = Registry::new(driver.clone(), b"s", true);
    let second = Registry::new(driver.clone(), b"s", true);
    let server = Registry::new(driver.clone(), b"s", true);
    upload(&server, "app", &noise(1, 100)).await;

    let seen = RefCell::new(Vec::new());
    first
        .garbage_collect_with(&one_hour_grace(), |phase| {
            let (second, server) = (second.clone(), server.clone());
            let seen = &seen;
            async move {
                if phase == GcPhase::Marked {
                    second.garbage_collect(&one_hour_grace()).await.unwrap();
                }
                if phase == GcPhase::Rechecked {
                    let active = server.refresh_sweep_state().await;
                    seen.borrow_mut().push(active);
                }
            }
        })
        .await
        .unwrap();

    assert_eq!(*seen.borrow(), [true], "the first run was still announced");
    assert!(!server.refresh_sweep_state().await, "both ended");
}

/// Ctrl-C / SIGTERM cancels `opts.stop`: the run stops before its next
/// delete, deletes nothing more, and takes its sweep marker down.
#[tokio::test]
async fn a_stopped_run_deletes_nothing_more_and_ends_its_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let driver: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let registry = Registry::new(driver.clone(), b"s", true);
    let garbage = [
        upload(&registry, "app", &noise(21, 500)).await,
        upload(&registry, "app", &noise(22, 500)).await,
    ];
    age_everything(dir.path());
    let opts = one_hour_grace();
    let result = registry
        .garbage_collect_with(&opts, |phase| {
            // Stop as the first delete is about to happen.
            if matches!(phase, GcPhase::Deleting(_)) {
                opts.stop.cancel();
            }
            async {}
        })
        .await;
    let err = result.expect_err("a stopped run is an error");
    assert!(err.to_string().contains("interrupted"), "{err}");
    let left = {
        let mut n = 0;
        for d in &garbage {
            n += usize::from(exists(&driver, d).await);
        }
        n
    };
    assert_eq!(left, 1, "only the delete already under way happened");
    assert!(!registry.refresh_sweep_state().await, "marker removed");
}
