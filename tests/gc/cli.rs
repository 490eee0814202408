//! `berth garbage-collect` on a filesystem root a running Berth was pushed to
//! over HTTP: what is swept, what is kept, dry runs, the grace period, and the
//! in-memory cache of the running server.

use reqwest::StatusCode;

use super::common::Berth;
use super::support::*;

fn serve(extra: &'static str) -> (Berth, Client, impl Fn(&Berth) -> String) {
    let berth = Berth::start_with(|root, addr| config(&filesystem(root), extra, addr));
    let client = Client::new(berth.url(""));
    let gc_config =
        move |b: &Berth| config(&filesystem(b.root.to_str().unwrap()), extra, "127.0.0.1:0");
    (berth, client, gc_config)
}

#[tokio::test]
async fn sweeps_unreferenced_blobs_and_keeps_everything_referenced() {
    let (berth, c, gc_config) = serve("");
    let repo = "team/app";
    let app = c
        .push_image(
            repo,
            "v1",
            b"{\"app\":1}",
            &[&noise(1, 3000), &noise(2, 2000)],
        )
        .await;
    // A multi-arch index: children pushed by digest (untagged), index tagged.
    let amd = c
        .push_image(repo, "", b"{\"arch\":\"amd64\"}", &[&noise(3, 1000)])
        .await;
    let arm = c
        .push_image(repo, "", b"{\"arch\":\"arm64\"}", &[&noise(4, 1000)])
        .await;
    let multi = index(&[&amd, &arm]);
    assert_eq!(
        c.put_manifest(repo, "multi", &multi).await,
        StatusCode::CREATED
    );
    // A signature referring to the tagged image, with a blob of its own.
    let sig_blob = noise(5, 500);
    c.push_blob(repo, b"{}").await;
    c.push_blob(repo, &sig_blob).await;
    let sig = image(b"{}", &[&sig_blob], Some(&app));
    assert_eq!(
        c.put_manifest(repo, &sig.digest, &sig).await,
        StatusCode::CREATED
    );
    // Uploaded, never referenced.
    let orphan = noise(6, 4321);
    let orphan_digest = c.push_blob(repo, &orphan).await;

    let run = gc(&gc_config(&berth), &["--grace-period", "0s"]);

    assert_eq!(run.count("blobs_deleted"), 1, "{}", run.stdout);
    assert_eq!(run.count("bytes_freed"), orphan.len() as u64);
    assert_eq!(run.count("manifests_deleted"), 0, "no manifest deleted");
    assert!(
        run.stderr.contains(&orphan_digest),
        "one log line per deletion: {}",
        run.stderr
    );
    assert!(!blob_file(&berth.root, &orphan_digest).exists());
    assert!(
        !layer_link_dir(&berth.root, repo, &orphan_digest).exists(),
        "the dangling _layers link goes too"
    );
    assert_eq!(
        c.head_blob(repo, &orphan_digest).await,
        StatusCode::NOT_FOUND
    );
    for m in [&app, &amd, &arm, &multi, &sig] {
        let (status, body) = c.get_manifest(repo, &m.digest).await;
        assert_eq!(status, StatusCode::OK, "{} kept", m.digest);
        assert_eq!(body, m.body);
        assert!(blob_file(&berth.root, &m.digest).exists());
    }
    for d in [
        digest(&noise(1, 3000)),
        digest(&noise(4, 1000)),
        digest(&sig_blob),
    ] {
        assert_eq!(c.head_blob(repo, &d).await, StatusCode::OK, "{d} kept");
    }
    assert_eq!(
        c.referrers(repo, &app.digest).await,
        vec![sig.digest.clone()]
    );
}

#[tokio::test]
async fn delete_untagged_keeps_index_children_and_referrers_of_kept_manifests() {
    let (berth, c, gc_config) = serve("");
    let repo = "team/app";
    let amd = c
        .push_image(repo, "", b"{\"arch\":\"amd64\"}", &[&noise(1, 1000)])
        .await;
    let arm = c
        .push_image(repo, "", b"{\"arch\":\"arm64\"}", &[&noise(2, 1000)])
        .await;
    let multi = index(&[&amd, &arm]);
    assert_eq!(
        c.put_manifest(repo, "latest", &multi).await,
        StatusCode::CREATED
    );
    let tagged = c
        .push_image(repo, "v1", b"{\"app\":1}", &[&noise(3, 1000)])
        .await;
    // An untagged SBOM of the tagged image, and a signature of that SBOM.
    c.push_blob(repo, b"{}").await;
    let sbom = image(b"{}", &[], Some(&tagged));
    assert_eq!(
        c.put_manifest(repo, &sbom.digest, &sbom).await,
        StatusCode::CREATED
    );
    let sbom_sig = image(b"{}", &[], Some(&sbom));
    assert_eq!(
        c.put_manifest(repo, &sbom_sig.digest, &sbom_sig).await,
        StatusCode::CREATED
    );
    // An untagged image nobody refers to, and a signature of it.
    let lone_layer = noise(4, 2222);
    let lone = c
        .push_image(repo, "", b"{\"lone\":1}", &[&lone_layer])
        .await;
    let lone_sig = image(b"{}", &[], Some(&lone));
    assert_eq!(
        c.put_manifest(repo, &lone_sig.digest, &lone_sig).await,
        StatusCode::CREATED
    );

    let run = gc(&gc_config(&berth), &["-m", "--grace-period", "0s"]);

    assert_eq!(run.count("manifests_deleted"), 2, "{}", run.stdout);
    for gone in [&lone, &lone_sig] {
        assert_eq!(
            c.get_manifest(repo, &gone.digest).await.0,
            StatusCode::NOT_FOUND
        );
        assert!(!blob_file(&berth.root, &gone.digest).exists());
    }
    assert!(!blob_file(&berth.root, &digest(&lone_layer)).exists());
    let refs_entry = berth.root.join(format!(
        "docker/registry/v2/repositories/{repo}/_refs/subjects/sha256/{}/sha256/{}",
        &lone.digest[7..],
        &lone_sig.digest[7..]
    ));
    assert!(
        !refs_entry.exists(),
        "the referrer-index entry goes with the manifest"
    );
    assert!(c.referrers(repo, &lone.digest).await.is_empty());
    for kept in [&amd, &arm, &multi, &tagged, &sbom, &sbom_sig] {
        assert_eq!(
            c.get_manifest(repo, &kept.digest).await.0,
            StatusCode::OK,
            "{} kept",
            kept.digest
        );
    }
    assert_eq!(
        c.head_blob(repo, &digest(&noise(2, 1000))).await,
        StatusCode::OK
    );
    assert_eq!(
        c.referrers(repo, &tagged.digest).await,
        vec![sbom.digest.clone()]
    );
    assert_eq!(c.referrers(repo, &sbom.digest).await, [sbom_sig.digest]);
}

#[tokio::test]
async fn dry_run_leaves_storage_byte_identical() {
    let (berth, c, gc_config) = serve("");
    let repo = "dry/run";
    c.push_image(repo, "v1", b"{\"a\":1}", &[&noise(1, 100)])
        .await;
    c.push_image(repo, "", b"{\"b\":1}", &[&noise(2, 200)])
        .await;
    let orphan = c.push_blob(repo, &noise(3, 300)).await;
    let before = snapshot(&berth.root);

    let run = gc(&gc_config(&berth), &["-d", "-m", "--grace-period", "0s"]);

    assert!(run.stdout.contains("dry run"), "{}", run.stdout);
    assert_eq!(run.count("manifests_deleted"), 1);
    // The untagged manifest, its config and layer, and the orphan.
    assert_eq!(run.count("blobs_deleted"), 4);
    assert!(run.stderr.contains(&orphan), "{}", run.stderr);
    assert!(before == snapshot(&berth.root), "dry run changed storage");
}

#[tokio::test]
async fn grace_period_keeps_young_blobs_and_untagged_manifests() {
    let (berth, c, gc_config) = serve("");
    let repo = "young/app";
    let untagged = c
        .push_image(repo, "", b"{\"young\":1}", &[&noise(1, 100)])
        .await;
    let orphan = c.push_blob(repo, &noise(2, 200)).await;

    // Default grace period: an hour.
    let run = gc(&gc_config(&berth), &["--delete-untagged"]);

    assert_eq!(run.count("blobs_deleted"), 0, "{}", run.stdout);
    assert_eq!(run.count("manifests_deleted"), 0);
    assert_eq!(run.count("young_blobs_kept"), 1, "the orphan is young");
    assert_eq!(c.head_blob(repo, &orphan).await, StatusCode::OK);
    assert_eq!(
        c.get_manifest(repo, &untagged.digest).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn inmemory_cache_never_answers_for_a_swept_blob_and_a_repush_works() {
    let (berth, c, gc_config) = serve("  cache:\n    blobdescriptor: inmemory\n");
    let repo = "cached/app";
    let config = b"{\"cached\":1}".to_vec();
    let layer = noise(7, 5000);
    let m = c.push_image(repo, "v1", &config, &[&layer]).await;
    let layer_digest = digest(&layer);
    // Fill the server's cache, then make the image garbage.
    assert_eq!(c.head_blob(repo, &layer_digest).await, StatusCode::OK);
    c.delete_manifest(repo, &m.digest).await;

    let run = gc(&gc_config(&berth), &["--grace-period", "0s"]);
    assert_eq!(run.count("blobs_deleted"), 3, "{}", run.stdout);

    assert_eq!(
        c.head_blob(repo, &layer_digest).await,
        StatusCode::NOT_FOUND,
        "the cache answered for a swept blob"
    );
    // docker push again: HEAD says missing, so it uploads, then the manifest.
    assert!(c.push_blob_like_docker(repo, &config).await);
    assert!(c.push_blob_like_docker(repo, &layer).await);
    assert_eq!(c.put_manifest(repo, "v1", &m).await, StatusCode::CREATED);
    assert_eq!(c.get_manifest(repo, "v1").await, (StatusCode::OK, m.body));
    assert_eq!(c.head_blob(repo, &layer_digest).await, StatusCode::OK);
    assert!(
        berth.logs().contains("garbage collection is sweeping"),
        "the server saw the sweep marker: {}",
        berth.logs()
    );
}
