//! What the mark phase must keep on roots Berth did not write itself or with
//! `--delete-untagged`: schema1 manifests from a distribution root, a manifest
//! whose bytes cannot be parsed, and the subject of a kept referrer.

use std::sync::Arc;

use bytes::Bytes;

use berth::{
    registry::{digest::Digest, gc::GcOptions, manifests::Reference, Registry},
    storage::{filesystem::FilesystemDriver, layout, Driver},
};

use super::online::{age_everything, exists, one_hour_grace, upload};
use super::support::{digest, image, noise, OCI_MANIFEST};

fn store() -> (tempfile::TempDir, Driver, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let driver: Driver = Arc::new(FilesystemDriver::new(dir.path()).unwrap());
    let registry = Registry::new(driver.clone(), b"s", true);
    (dir, driver, registry)
}

/// Store a manifest the way distribution did (bytes, revision link, tag),
/// bypassing Berth's push-time validation.
async fn store_manifest(driver: &Driver, repo: &str, tag: &str, body: &[u8]) -> Digest {
    let d: Digest = digest(body).parse().unwrap();
    let link = Bytes::from(d.to_string());
    driver
        .put_content(&layout::blob_data(&d), Bytes::copy_from_slice(body))
        .await
        .unwrap();
    driver
        .put_content(&layout::manifest_revision_link(repo, &d), link.clone())
        .await
        .unwrap();
    driver
        .put_content(&layout::tag_current_link(repo, tag), link)
        .await
        .unwrap();
    d
}

/// distribution 2.x roots still hold Docker schema1 manifests (Berth refuses
/// new ones): their layers are `fsLayers[].blobSum`.
#[tokio::test]
async fn schema1_layers_are_marked() {
    let (dir, driver, registry) = store();
    let layer = upload(&registry, "legacy/app", &noise(1, 700)).await;
    let body = serde_json::json!({
        "schemaVersion": 1,
        "name": "legacy/app",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": layer.to_string()}],
        "history": [{"v1Compatibility": "{}"}],
    });
    let manifest = store_manifest(&driver, "legacy/app", "v1", body.to_string().as_bytes()).await;
    age_everything(dir.path());

    let report = registry.garbage_collect(&one_hour_grace()).await.unwrap();

    assert_eq!(report.blobs_deleted, 0, "{report}");
    assert!(exists(&driver, &layer).await, "the schema1 layer survived");
    assert!(exists(&driver, &manifest).await);
}

/// A manifest whose bytes are there but do not parse references something
/// nobody can name: the run must stop before sweeping, not sweep around it.
#[tokio::test]
async fn an_unparseable_manifest_stops_the_run_before_any_delete() {
    let (dir, driver, registry) = store();
    let config = b"{\"c\":1}".to_vec();
    let layer = noise(2, 900);
    upload(&registry, "app", &config).await;
    let layer_digest = upload(&registry, "app", &layer).await;
    let m = image(&config, &[&layer], None);
    // Truncated, as a disk or a hand edit might leave it.
    store_manifest(&driver, "app", "v1", &m.body[..m.body.len() / 2]).await;
    age_everything(dir.path());

    let err = registry
        .garbage_collect(&one_hour_grace())
        .await
        .unwrap_err();

    assert!(
        err.to_string().contains("app"),
        "names the repository: {err}"
    );
    assert!(exists(&driver, &layer_digest).await, "the layer survived");
    assert!(exists(&driver, &digest(&config).parse().unwrap()).await);
    assert!(
        driver
            .stat(&berth::registry::gc::watch::sweep_marker())
            .await
            .is_err(),
        "the marker is taken down after the error"
    );
}

/// `--delete-untagged`: a tagged signature keeps the untagged image it signs
/// (its revision and its layers), not only the image's bytes.
#[tokio::test]
async fn delete_untagged_keeps_the_subject_of_a_kept_referrer() {
    let (dir, driver, registry) = store();
    let (config, layer) = (b"{\"s\":1}".to_vec(), noise(3, 800));
    upload(&registry, "app", &config).await;
    let layer_digest = upload(&registry, "app", &layer).await;
    upload(&registry, "app", b"{}").await;
    let subject = image(&config, &[&layer], None);
    let subject_digest: Digest = subject.digest.parse().unwrap();
    registry
        .put_manifest(
            "app",
            &Reference::Digest(subject_digest.clone()),
            Some(OCI_MANIFEST),
            Bytes::from(subject.body.clone()),
        )
        .await
        .unwrap();
    let signature = image(b"{}", &[], Some(&subject));
    registry
        .put_manifest(
            "app",
            &Reference::Tag("signed".into()),
            Some(OCI_MANIFEST),
            Bytes::from(signature.body),
        )
        .await
        .unwrap();
    age_everything(dir.path());
    let opts = GcOptions {
        delete_untagged: true,
        ..one_hour_grace()
    };

    let report = registry.garbage_collect(&opts).await.unwrap();

    assert_eq!(report.manifests_deleted, 0, "{report}");
    assert_eq!(report.blobs_deleted, 0, "{report}");
    registry
        .get_manifest("app", &Reference::Digest(subject_digest))
        .await
        .expect("the signed image is still served");
    assert!(exists(&driver, &layer_digest).await, "its layer survived");
}
