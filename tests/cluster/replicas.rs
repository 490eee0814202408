//! Replicas are interchangeable: an upload hops between them, what one
//! writes another reads at once, and a delete on one is seen by all (the
//! Redis blob-descriptor cache is shared, and invalidated for everyone).

use berth::storage::layout;
use reqwest::StatusCode;

use super::{
    client::{data, header, manifest, on, sha256, Client, MIB},
    harness::{Backend, Cluster, REPLICAS},
};

/// Driver path of a blob's data object.
pub fn blob_object(digest: &str) -> String {
    layout::blob_data(&digest.parse().unwrap())
}

/// Scenario 2: POST on replica 0, each PATCH on the next replica, the PUT on
/// yet another; the bytes come back whole through the balancer.
pub async fn chunked_upload_hops_replicas(backend: Backend) {
    let c = Cluster::start(backend, false);
    let client = Client::new();
    let repo = "hops/app";
    let blob = data(24 * MIB + 1234, 1);
    let digest = sha256(&blob);
    // Below S3's 5 MiB part minimum (kept as a tail in the state object),
    // reaching the 10 MiB part size, several parts in one request, a small
    // one; Azure stages 4 MiB blocks, so each also ends mid-block.
    let chunks = [3 * MIB, 7 * MIB, 11 * MIB, MIB + 1000];

    let mut url = client.start_upload(&c.replica(0), repo).await;
    let uuid = url.split("/uploads/").nth(1).unwrap()[..36].to_string();
    let mut offset = 0;
    for (i, len) in chunks.iter().enumerate() {
        let base = c.replica((i + 1) % REPLICAS);
        url = client
            .patch_ok(&on(&base, &url), offset, &blob[offset..offset + len], &base)
            .await;
        offset += len;
    }
    // PATCH i went to replica (i + 1) % 3; the PUT goes to the one after.
    let put_on = (chunks.len() + 1) % REPLICAS;

    // Status and a replayed chunk on another replica: the offset travels in
    // the signed state, so every replica agrees on it.
    let status = client
        .http
        .get(on(&c.replica(0), &url))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range"), format!("0-{}", offset - 1));
    assert_eq!(header(&status, "docker-upload-uuid"), uuid);
    let prev = offset - chunks[3];
    let replay = client
        .patch(&on(&c.replica(0), &url), prev, &blob[prev..offset])
        .await;
    assert_eq!(replay.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let r = client
        .finish(&on(&c.replica(put_on), &url), &digest, &blob[offset..])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", c.logs());
    assert_eq!(header(&r, "docker-content-digest"), digest);

    // Round-robin: three GETs through the balancer reach all three replicas.
    for _ in 0..REPLICAS {
        let (s, got) = client.get_blob(&c.balancer(), repo, &digest).await;
        assert_eq!(s, StatusCode::OK);
        assert!(got == blob, "blob differs ({} bytes)", got.len());
    }
    let gone = client
        .http
        .get(on(&c.replica(1), &url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        gone.status(),
        StatusCode::NOT_FOUND,
        "finished upload is gone"
    );
    assert_eq!(c.upload_leftovers(repo).await, Vec::<String>::new());
    assert_eq!(
        c.objects("/docker/registry/v2/blobs").await,
        vec![blob_object(&digest)]
    );
}

/// Scenario 3: a manifest pushed through one replica is served by another at
/// once, by tag and by digest; so is the tag moving to a new manifest.
pub async fn read_after_write_across_replicas(backend: Backend) {
    let c = Cluster::start(backend, false);
    let client = Client::new();
    let repo = "raw/app";
    for round in 0..REPLICAS {
        let (writer, reader) = (c.replica(round), c.replica((round + 2) % REPLICAS));
        let layer = data(256 * 1024 + round, 10 + round as u64);
        let config = format!(r#"{{"architecture":"amd64","os":"linux","round":{round}}}"#);
        client.push_blob(&writer, repo, &layer, &[]).await;
        client
            .push_blob(&writer, repo, config.as_bytes(), &[])
            .await;
        let m = manifest(config.as_bytes(), &[&layer]);
        let digest = sha256(&m);
        client.put_manifest(&writer, repo, "latest", &m).await;

        // No wait of any kind between the write and these reads.
        for reference in ["latest", digest.as_str()] {
            let (s, got_digest, body) = client.get_manifest(&reader, repo, reference).await;
            assert_eq!(s, StatusCode::OK, "{reference} in round {round}");
            assert_eq!(got_digest, digest, "{reference} in round {round}");
            assert!(body == m);
        }
        let (s, got) = client.get_blob(&reader, repo, &sha256(&layer)).await;
        assert_eq!(s, StatusCode::OK);
        assert!(got == layer);
        let tags: serde_json::Value = client
            .http
            .get(format!("{reader}/v2/{repo}/tags/list"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["latest"]));
    }
}

/// Scenario 6: the blob-descriptor cache is one Redis for all replicas. An
/// entry one replica wrote answers on the others, and a delete through one
/// replica is a 404 on every other at once.
pub async fn blob_delete_is_seen_by_every_replica(backend: Backend) {
    let c = Cluster::start(backend, false);
    let client = Client::new();
    let repo = "cache/app";
    let kept = data(100_000, 21);
    let doomed = data(100_000, 22);
    let (kept_d, doomed_d) = (sha256(&kept), sha256(&doomed));
    client.push_blob(&c.replica(0), repo, &kept, &[]).await;
    client
        .push_blob(&c.replica(0), repo, &doomed, &[40_000])
        .await;

    // Shared: drop `kept`'s link from the store behind Berth's back before
    // the other replicas ever looked at it; they still find it, which only
    // the entry replica 0 put in Redis explains.
    let link = layout::layer_link(repo, &kept_d.parse().unwrap());
    c.driver()
        .delete(link.trim_end_matches("/link"))
        .await
        .unwrap();
    for i in 0..REPLICAS {
        assert_eq!(
            client.head_blob(&c.replica(i), repo, &kept_d).await,
            StatusCode::OK,
            "replica {i} answers from Redis"
        );
        assert_eq!(
            client.head_blob(&c.replica(i), repo, &doomed_d).await,
            StatusCode::OK
        );
    }

    // Invalidated for all: delete through replica 0, 404 on the others.
    let r = client
        .http
        .delete(format!("{}/v2/{repo}/blobs/{doomed_d}", c.replica(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for i in 1..REPLICAS {
        assert_eq!(
            client.head_blob(&c.replica(i), repo, &doomed_d).await,
            StatusCode::NOT_FOUND,
            "HEAD on replica {i} right after the delete"
        );
        let (s, _) = client.get_blob(&c.replica(i), repo, &doomed_d).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "GET on replica {i}");
    }
    for _ in 0..REPLICAS {
        assert_eq!(
            client.head_blob(&c.balancer(), repo, &doomed_d).await,
            StatusCode::NOT_FOUND
        );
    }
    let members = c
        .redis
        .cli(&["smembers", &format!("repository::{repo}::blobs")]);
    assert!(
        members.contains(&kept_d) && !members.contains(&doomed_d),
        "{members}"
    );
    // A second delete, on another replica, finds nothing to delete.
    let r = client
        .http
        .delete(format!("{}/v2/{repo}/blobs/{doomed_d}", c.replica(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
