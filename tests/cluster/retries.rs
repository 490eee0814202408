//! What a balancer makes routine: a chunk retried on another replica after
//! its answer was lost, and a read on one replica racing a delete on another.

use reqwest::StatusCode;

use super::{
    client::{data, on, sha256, Client, MIB},
    harness::{Backend, Cluster, REPLICAS},
};

/// Replica 1 stores a chunk but its 202 never reaches the client (nginx's
/// read timeout, a crash right after writing); the client sends the chunk
/// again from the last Location it did get, and nginx picks replica 2.
/// README: "A PATCH that dies midway is retried from the same Location and
/// overwrites the partial bytes."
pub async fn retried_chunk_after_a_lost_answer(backend: Backend) {
    let c = Cluster::start(backend, false);
    let client = Client::new();
    let repo = "lost/app";
    let blob = data(12 * MIB, 51);
    let digest = sha256(&blob);
    let (a, b) = (3 * MIB, 10 * MIB);
    let url = client.start_upload(&c.replica(0), repo).await;
    // A tail only (under S3's 5 MiB part minimum).
    let url = client.patch_ok(&url, 0, &blob[..a], &c.replica(0)).await;
    // Stored (on S3 as a full 10 MiB part), answer dropped.
    let _lost = client
        .patch_ok(&on(&c.replica(1), &url), a, &blob[a..b], &c.replica(1))
        .await;
    let retry = client.patch(&on(&c.replica(2), &url), a, &blob[a..b]).await;
    let status = retry.status();
    if backend == Backend::S3 && status == StatusCode::BAD_REQUEST {
        // S3 cannot cut back into an uploaded part: Berth says so with the
        // spec's error (never a 5xx), and a restarted upload succeeds.
        let body = retry.text().await.unwrap_or_default();
        assert!(body.contains("BLOB_UPLOAD_INVALID"), "{body}");
        let url = client.start_upload(&c.balancer(), repo).await;
        let r = client
            .finish(&on(&c.balancer(), &url), &digest, &blob)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    } else {
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "retried chunk: {}",
            retry.text().await.unwrap_or_default()
        );
        let url = super::client::header(&retry, "location");
        let r = client
            .finish(&on(&c.balancer(), &url), &digest, &blob[b..])
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let (s, got) = client.get_blob(&c.balancer(), repo, &digest).await;
    assert_eq!(s, StatusCode::OK);
    assert!(got == blob, "stored bytes differ");
}

/// A HEAD on replicas 1 and 2 (cold cache) racing a DELETE on replica 0:
/// once the DELETE has answered 202, the blob must be 404 everywhere.
pub async fn delete_racing_a_read(backend: Backend) {
    let c = Cluster::start(backend, false);
    let client = Client::new();
    let repo = "race/delete";
    for round in 0..30 {
        let blob = data(1000, 60 + round);
        let d = client.push_blob(&c.replica(0), repo, &blob, &[]).await;
        // Cold cache, as after a Redis restart or eviction.
        assert_eq!(c.redis.cli(&["flushall"]), "OK");
        let readers: Vec<_> = (1..REPLICAS)
            .map(|i| {
                let (client, base, d) = (client.clone(), c.replica(i), d.clone());
                tokio::spawn(async move {
                    for _ in 0..20 {
                        client.head_blob(&base, repo, &d).await;
                    }
                })
            })
            .collect();
        let r = client
            .http
            .delete(format!("{}/v2/{repo}/blobs/{d}", c.replica(0)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        for t in readers {
            t.await.unwrap();
        }
        for i in 0..REPLICAS {
            assert_eq!(
                client.head_blob(&c.replica(i), repo, &d).await,
                StatusCode::NOT_FOUND,
                "round {round}: replica {i} still serves the deleted blob (Redis: {})",
                c.redis
                    .cli(&["sismember", &format!("repository::{repo}::blobs"), &d])
            );
        }
    }
}
