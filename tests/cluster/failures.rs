//! Races and crashes: several clients pushing the same content at once, and
//! a replica SIGKILLed while a chunk streams into it.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use berth::storage::layout;
use bytes::Bytes;
use reqwest::StatusCode;

use super::{
    client::{data, header, manifest, on, sha256, Client, MIB},
    harness::{Backend, Cluster, REPLICAS},
    replicas::blob_object,
};

const CLIENTS: usize = 4;

/// Scenario 4: four clients push the same three blobs (chunked) and the same
/// manifest through the balancer at once. All succeed, the content is right,
/// and the store holds one object per digest and no upload leftovers.
pub async fn concurrent_pushes_of_the_same_layers(backend: Backend) {
    let c = Cluster::start(backend, false);
    let lb = c.balancer();
    let repo = "race/app";
    // One multipart-sized layer (S3 parts, several Azure blocks), one
    // small layer, one config blob.
    let big = Arc::new(data(12 * MIB, 31));
    let small = Arc::new(data(MIB + 17, 32));
    let config: Arc<Vec<u8>> = Arc::new(br#"{"architecture":"amd64","os":"linux"}"#.to_vec());
    let m = Arc::new(manifest(&config, &[&big, &small]));
    let start = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (lb, big, small, config, m, start) = (
                lb.clone(),
                big.clone(),
                small.clone(),
                config.clone(),
                m.clone(),
                start.clone(),
            );
            tokio::spawn(async move {
                let client = Client::new();
                start.wait().await;
                tokio::join!(
                    client.push_blob(&lb, repo, &big, &[5 * MIB, 5 * MIB]),
                    client.push_blob(&lb, repo, &small, &[MIB]),
                    client.push_blob(&lb, repo, &config, &[]),
                );
                client.put_manifest(&lb, repo, "v1", &m).await;
            })
        })
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            panic!("a client failed: {e}\n{}", c.logs());
        }
    }

    let client = Client::new();
    for _ in 0..REPLICAS {
        let (s, digest, body) = client.get_manifest(&lb, repo, "v1").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(digest, sha256(&m));
        assert!(body == *m);
        for blob in [&big, &small, &config] {
            let (s, got) = client.get_blob(&lb, repo, &sha256(blob)).await;
            assert_eq!(s, StatusCode::OK);
            assert!(got == **blob, "blob of {} bytes differs", blob.len());
        }
    }

    // Exactly one object per digest, each holding exactly its content.
    let mut expected: Vec<String> = [&big, &small, &config, &m]
        .iter()
        .map(|b| blob_object(&sha256(b)))
        .collect();
    expected.sort();
    assert_eq!(c.objects("/docker/registry/v2/blobs").await, expected);
    let d = c.driver();
    for path in &expected {
        let content = d.get_content(path).await.unwrap();
        assert!(
            path.contains(&sha256(&content)[7..]),
            "{path} holds other bytes"
        );
    }
    assert_eq!(c.upload_leftovers(repo).await, Vec::<String>::new());
    assert_eq!(
        c.objects(&format!("{}/_layers", layout::repository(repo)))
            .await
            .len(),
        3,
        "one link per blob"
    );
}

/// Scenario 5: replica 0 is SIGKILLed while a chunk streams into it. The
/// client resumes from its last good Location through the balancer, another
/// restarts from scratch; both succeed, and no GET of the digest ever sees
/// anything but 404 or the exact bytes.
pub async fn replica_killed_mid_push(backend: Backend) {
    let mut c = Cluster::start(backend, false);
    let client = Client::new();
    let lb = c.balancer();
    let repo = "crash/app";
    let victim = 0;
    let blob = Arc::new(data(24 * MIB, 41));
    let digest = sha256(&blob);

    // Watch the digest through the balancer for the whole scenario.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (client, lb, digest, blob, stop) = (
            client.clone(),
            lb.clone(),
            digest.clone(),
            blob.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let (mut missing, mut whole) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let (s, got) = client.get_blob(&lb, repo, &digest).await;
                match s {
                    StatusCode::NOT_FOUND => missing += 1,
                    StatusCode::OK if got == *blob => whole += 1,
                    StatusCode::OK => panic!("served {} wrong bytes", got.len()),
                    other => panic!("GET through the balancer: {other}"),
                }
                // Pacing, not synchronisation: leave CPU to the upload.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (missing, whole)
        })
    };

    // The first chunk lands whole on the victim: the last good Location.
    let first = 6 * MIB;
    let url = client.start_upload(&c.replica(victim), repo).await;
    let good = client
        .patch_ok(&url, 0, &blob[..first], &c.replica(victim))
        .await;

    // The second chunk streams from a channel, so it is still in flight
    // (its body never ends) when the victim dies.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let inflight = tokio::spawn(
        client
            .http
            .patch(&good)
            .header("content-range", format!("{first}-{}", blob.len() - 1))
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    // Feed it until the victim has provably written part of it: on S3 a
    // new multipart part (the second, unrecorded in the upload's state); on
    // Azure 12 MiB, three 4 MiB blocks' worth, most of it read by then.
    let parts_before = c.s3_parts().await;
    let mut sent = first; // bytes of the blob handed to the victim
    for piece in blob[first..first + 16 * MIB].chunks(256 * 1024) {
        // Bounded: a victim that stopped reading must fail the test, not hang it.
        tokio::time::timeout(
            Duration::from_secs(30),
            tx.send(Ok(Bytes::copy_from_slice(piece))),
        )
        .await
        .expect("the victim stopped reading the chunk")
        .unwrap();
        sent += piece.len();
        let written = match parts_before {
            Some(n) => c.s3_parts().await.unwrap() > n,
            None => sent >= first + 12 * MIB,
        };
        if written {
            break;
        }
    }
    if let Some(n) = parts_before {
        // Past the last piece, wait (bounded) for the part to land.
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.s3_parts().await.unwrap() <= n {
            assert!(Instant::now() < deadline, "no new part after {sent} bytes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    c.kill(victim);
    drop(tx);
    let r = inflight.await.unwrap();
    assert!(r.is_err(), "the in-flight PATCH cannot succeed: {r:?}");

    // nginx routes around the dead replica: every request answered, and its
    // error log shows it did try the dead one.
    for _ in 0..2 * REPLICAS {
        let r = client.http.get(format!("{lb}/v2/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let errors = c.nginx.error_log();
    assert!(errors.contains(c.replica_addr(victim)), "{errors}");
    for i in (0..REPLICAS).filter(|&i| i != victim) {
        let r = client
            .http
            .get(format!("{}/v2/", c.replica(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "replica {i} still serves");
    }

    // Retry both ways at once: resume where the victim last acknowledged,
    // on whichever replica nginx picks, and restart from scratch.
    let resume = async {
        let url = on(&lb, &good);
        let status = client.http.get(&url).send().await.unwrap();
        assert_eq!(status.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&status, "range"), format!("0-{}", first - 1));
        let url = client.patch_ok(&url, first, &blob[first..], &lb).await;
        let r = client.finish(&url, &digest, &[]).await;
        assert_eq!(r.status(), StatusCode::CREATED, "resumed upload");
    };
    let restart = client.push_blob(&lb, repo, &blob, &[10 * MIB]);
    tokio::join!(resume, restart);

    stop.store(true, Ordering::Relaxed);
    let (missing, whole) = watcher.await.unwrap();
    assert!(missing > 0, "the watcher saw the blob before it was pushed");
    for _ in 0..REPLICAS {
        let (s, got) = client.get_blob(&lb, repo, &digest).await;
        assert_eq!(s, StatusCode::OK);
        assert!(got == *blob);
    }
    assert_eq!(c.upload_leftovers(repo).await, Vec::<String>::new());
    assert_eq!(
        c.objects("/docker/registry/v2/blobs").await,
        vec![blob_object(&digest)]
    );
    // The stray part the victim uploaded was overwritten by the resume and
    // completed with it: no multipart upload is left behind in the store.
    if let Some(n) = c.s3_parts().await {
        assert_eq!(n, 0, "multipart parts left in the store");
    }
    eprintln!(
        "watcher: {missing} × 404, {whole} × whole blob; {sent} of {} bytes handed to the victim",
        blob.len()
    );
}
