//! What a balancer makes routine: a chunk retried on another replica after
//! its answer was lost, and a read on one replica racing a delete on another.

use reqwest::StatusCode;

use super::{
    client::{data, header, on, sha256, Client, MIB},
    harness::{Backend, Cluster, REPLICAS},
};

/// Replica 1 stores a chunk but its 202 never reaches the client (nginx's
/// read timeout, a crash right after writing); the client sends the chunk
/// again from the last Location it did get, and nginx picks replica 2.
/// README: "Stale Locations resume the spec's way": the retry is 416 with
/// the stored Range (nothing written), and GET on that Location, on yet
/// another replica, gives a fresh one to finish from.
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
    assert_eq!(retry.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&retry, "range"), format!("0-{}", b - 1));
    let body = retry.text().await.unwrap_or_default();
    assert!(body.contains("RANGE_INVALID"), "{body}");

    let status = client
        .http
        .get(on(&c.replica(0), &url))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range"), format!("0-{}", b - 1));
    let fresh = header(&status, "location");
    let r = client
        .finish(&on(&c.balancer(), &fresh), &digest, &blob[b..])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
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
