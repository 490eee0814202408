//! What the mark phase must keep on roots Berth did not write itself or with
//! `--delete-untagged`: schema1 manifests from a distribution root, a manifest
//! whose bytes cannot be parsed, and the subject of a kept referrer.

use std::sync::Arc;

use bytes::Bytes;

use berth::{
    registry::{
        digest::Digest,
        gc::{GcOptions, GcPhase},
        manifests::Reference,
        Registry,
    },
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
            .list(&berth::registry::gc::watch::sweeps_dir())
            .await
            .map_or(true, |m| m.is_empty()),
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

/// `--delete-untagged` and a push during the manifest deletes: an old
/// untagged image tagged after both mark passes is spared by its own
/// re-check, and so must be its untagged signature, whichever of the two
/// comes up first.
#[tokio::test]
async fn a_manifest_tagged_during_the_deletes_keeps_its_referrers() {
    let (dir, driver, registry) = store();
    let put = |repo: &'static str, reference: Reference, body: Vec<u8>| {
        let registry = registry.clone();
        async move {
            registry
                .put_manifest(repo, &reference, Some(OCI_MANIFEST), Bytes::from(body))
                .await
                .unwrap();
        }
    };
    // Repository "a" sorts first: its lone untagged image is deleted first,
    // and the hook at that delete tags the image in "b".
    upload(&registry, "a", b"{}").await;
    let lone = image(b"{}", &[], None);
    put(
        "a",
        Reference::Digest(lone.digest.parse().unwrap()),
        lone.body.clone(),
    )
    .await;
    let layer = noise(4, 600);
    upload(&registry, "b", b"{\"b\":1}").await;
    upload(&registry, "b", &layer).await;
    upload(&registry, "b", b"{}").await;
    let subject = image(b"{\"b\":1}", &[&layer], None);
    let signature = image(b"{}", &[], Some(&subject));
    for m in [&subject, &signature] {
        put(
            "b",
            Reference::Digest(m.digest.parse().unwrap()),
            m.body.clone(),
        )
        .await;
    }
    age_everything(dir.path());
    let opts = GcOptions {
        delete_untagged: true,
        ..one_hour_grace()
    };

    let mut tagged = false;
    let report = registry
        .garbage_collect_with(&opts, |phase| {
            let first = !tagged && matches!(phase, GcPhase::DeletingManifest { .. });
            tagged |= first;
            let subject = subject.body.clone();
            async move {
                if first {
                    put("b", Reference::Tag("now-tagged".into()), subject).await;
                }
            }
        })
        .await
        .unwrap();

    assert!(tagged);
    assert_eq!(report.manifests_deleted, 1, "only the lone image: {report}");
    let signature_digest: Digest = signature.digest.parse().unwrap();
    registry
        .get_manifest("b", &Reference::Digest(signature_digest.clone()))
        .await
        .expect("the signature of the now-tagged image is still served");
    assert!(exists(&driver, &signature_digest).await);
    assert!(exists(&driver, &digest(&layer).parse().unwrap()).await);
}

/// A referrer pushed while a sweep runs (after both mark passes) keeps its
/// subject under the new rule only if the subject's re-check can see it: the
/// PUT touches the subject's revision link, as it does an index's children.
#[tokio::test]
async fn a_referrer_put_during_a_sweep_touches_its_subject() {
    let (dir, driver, registry) = store();
    upload(&registry, "app", b"{}").await;
    let subject = image(b"{}", &[], None);
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
    age_everything(dir.path());
    let link = layout::manifest_revision_link("app", &subject_digest);
    let before = driver.stat(&link).await.unwrap().modified;
    driver
        .put_content(
            &berth::registry::gc::watch::sweep_marker("test"),
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    assert!(registry.refresh_sweep_state().await);

    let signature = image(b"{}", &[], Some(&subject));
    registry
        .put_manifest(
            "app",
            &Reference::Digest(signature.digest.parse().unwrap()),
            Some(OCI_MANIFEST),
            Bytes::from(signature.body),
        )
        .await
        .unwrap();

    assert!(driver.stat(&link).await.unwrap().modified > before);
}

/// sha512 blobs and a manifest addressed by sha512: listed, marked and swept
/// like sha256 ones (`blobs/sha512/<xx>/<hex>`).
#[tokio::test]
async fn sha512_blobs_and_manifests_are_marked_and_swept() {
    use sha2::{Digest as _, Sha512};
    let sha512 = |data: &[u8]| -> Digest {
        format!("sha512:{}", hex::encode(Sha512::digest(data)))
            .parse()
            .unwrap()
    };
    let (dir, driver, registry) = store();
    let upload512 = |data: Vec<u8>| {
        let registry = registry.clone();
        async move {
            let d = sha512(&data);
            let state = registry.start_upload("app").await.unwrap();
            let body = Box::pin(futures::stream::iter([Ok(Bytes::from(data))]));
            registry.finish_upload(state, &d, None, body).await.unwrap();
            d
        }
    };
    let config = b"{\"sha512\":1}".to_vec();
    upload(&registry, "app", &config).await;
    let layer = noise(7, 640);
    let layer_digest = upload512(layer.clone()).await;
    let orphan = upload512(noise(8, 320)).await;
    let mut m: serde_json::Value = serde_json::from_slice(&image(&config, &[], None).body).unwrap();
    m["layers"] = serde_json::json!([{
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": layer_digest.to_string(),
        "size": layer.len(),
    }]);
    let body = serde_json::to_vec(&m).unwrap();
    let manifest_digest = sha512(&body);
    registry
        .put_manifest(
            "app",
            &Reference::Digest(manifest_digest.clone()),
            Some(OCI_MANIFEST),
            Bytes::from(body),
        )
        .await
        .unwrap();
    age_everything(dir.path());

    let report = registry.garbage_collect(&one_hour_grace()).await.unwrap();

    assert_eq!(report.blobs_deleted, 1, "{report}");
    assert!(
        !exists(&driver, &orphan).await,
        "the sha512 orphan is swept"
    );
    assert!(exists(&driver, &layer_digest).await);
    assert!(exists(&driver, &manifest_digest).await);
    registry
        .get_manifest("app", &Reference::Digest(manifest_digest))
        .await
        .unwrap();
}

/// A revision Berth cannot name (distribution also accepts sha384 manifests)
/// is a manifest whose references cannot be read: the run stops before any
/// delete instead of skipping it and sweeping its layers.
#[tokio::test]
async fn a_revision_with_an_unsupported_digest_stops_the_run() {
    let (dir, driver, registry) = store();
    let layer = upload(&registry, "app", &noise(5, 400)).await;
    let hex = "ab".repeat(48);
    driver
        .put_content(
            &format!(
                "{}/_manifests/revisions/sha384/{hex}/link",
                layout::repository("app")
            ),
            Bytes::from(format!("sha384:{hex}")),
        )
        .await
        .unwrap();
    age_everything(dir.path());

    let err = registry
        .garbage_collect(&one_hour_grace())
        .await
        .unwrap_err();

    assert!(err.to_string().contains("sha384"), "{err}");
    assert!(exists(&driver, &layer).await, "the layer survived");
}
