//! 2,000 slowloris connections and 2,000 idle keep-alives at once, while a
//! normal client pushes and pulls: it is served throughout, the flood is
//! closed by the server's timeouts, and the server's memory and descriptors
//! stay bounded.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use rand::RngCore;
use reqwest::{Method, StatusCode};
use tokio::{net::TcpStream, task::JoinSet};

use super::support::{self, Ended};
use crate::client::{image_manifest, location, sha256, Client, OCI_MANIFEST};

const DRIBBLERS: usize = 2_000;
const IDLERS: usize = 2_000;

/// Long enough for all 4,000 to be open at once on a busy machine; the test
/// waits for each to be closed, so it takes about this long.
const TIMEOUT: &str = "15s";

/// How long the test waits for the server to close a flood connection
/// before calling it a failure (far above the timeout: no timing claim).
const LIMIT: Duration = Duration::from_secs(180);

/// What the normal client did during the flood.
#[derive(Default, Debug)]
struct Served {
    operations: usize,
    /// Operations that completed while at least 90% of the flood was open.
    at_peak: usize,
}

/// Push a blob in two chunks, pull it back, push a manifest for it and
/// pull that: every answer as the spec says.
async fn push_and_pull(c: &Client, n: usize) {
    let repo = format!("flood/app{}", n % 4);
    let mut layer = vec![0u8; 96 * 1024];
    rand::rng().fill_bytes(&mut layer);
    let digest = sha256(&layer);
    let start = c.start_upload(&repo).await;
    let (first, second) = layer.split_at(layer.len() / 2);
    let r = c
        .req(Method::PATCH, &start)
        .header("content-type", "application/octet-stream")
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let next = location(&r);
    let sep = if next.contains('?') { '&' } else { '?' };
    let r = c
        .req(Method::PUT, &format!("{next}{sep}digest={digest}"))
        .body(second.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let pulled = c.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(pulled.status(), StatusCode::OK);
    assert_eq!(pulled.bytes().await.unwrap(), layer);

    let config = format!("{{\"n\":{n}}}");
    let config_digest = c.push_blob(&repo, config.as_bytes()).await;
    let manifest = image_manifest(&config_digest, config.len(), &digest, layer.len());
    let tag = format!("t{n}");
    let r = c.put_manifest(&repo, &tag, OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .req(Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_served_through_a_flood_of_slowloris_and_idle_connections() {
    support::raise_nofile(((DRIBBLERS + IDLERS) * 2 + 1_000) as u64);
    let berth = support::start(&format!(
        "  timeouts:\n    readheader: {TIMEOUT}\n    idle: {TIMEOUT}\n"
    ));
    let pid = berth.child.id();
    let client = Client::new(&berth);
    // Warm up (first allocations, the storage tree) before the baseline.
    push_and_pull(&client, 0).await;
    let fds_before = support::open_fds(pid);
    let rss_before = support::status_kib(pid, "VmRSS");

    let open = Arc::new(AtomicUsize::new(0));
    let mut flood = JoinSet::new();
    for _ in 0..DRIBBLERS {
        let (addr, open) = (berth.addr.clone(), open.clone());
        flood.spawn(async move {
            let stream = TcpStream::connect(&addr).await.unwrap();
            let ended = support::dribble(stream, Duration::from_secs(1), LIMIT, open).await;
            ("slowloris", ended)
        });
    }
    for _ in 0..IDLERS {
        let (addr, open) = (berth.addr.clone(), open.clone());
        flood.spawn(async move {
            let (status, ended) = support::idle_after_one_request(&addr, LIMIT, open).await;
            assert_eq!(status, "HTTP/1.1 200 OK");
            ("idle keep-alive", ended)
        });
    }

    let done = Arc::new(AtomicBool::new(false));
    let normal = {
        let (done, open) = (done.clone(), open.clone());
        let peak = (DRIBBLERS + IDLERS) * 9 / 10;
        tokio::spawn(async move {
            let mut served = Served::default();
            while !done.load(Ordering::SeqCst) {
                served.operations += 1;
                push_and_pull(&client, served.operations).await;
                if open.load(Ordering::SeqCst) >= peak {
                    served.at_peak += 1;
                }
            }
            served
        })
    };
    let rss_peak = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(Ordering::SeqCst) {
                peak = peak.max(support::status_kib(pid, "VmRSS"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };

    let mut closed = 0;
    while let Some(joined) = flood.join_next().await {
        let (kind, ended) = joined.unwrap();
        match ended {
            // A slowloris never gets an answer (its head never ends); an
            // idle connection got its one answer earlier.
            Ended::Closed(extra) => assert!(extra.is_empty(), "{kind} was sent {extra:?}"),
            Ended::StillOpen(_) => panic!(
                "a {kind} connection was still open after {LIMIT:?}:\n{}",
                berth.logs()
            ),
        }
        closed += 1;
    }
    done.store(true, Ordering::SeqCst);
    let served = normal.await.unwrap();
    let rss_peak = rss_peak.await.unwrap();
    assert_eq!(closed, DRIBBLERS + IDLERS);
    assert!(
        served.at_peak > 0,
        "the normal client completed no push and pull while the flood was at its peak: {served:?}"
    );

    // The server let go of every flood connection, and its memory stayed
    // within 64 KiB per connection (hyper's buffers and the task: about 23
    // KiB measured with a debug build).
    let fds_after = support::wait_for_fds_at_most(pid, fds_before + 8, LIMIT).await;
    assert!(
        fds_after <= fds_before + 8,
        "descriptors: {fds_before} before the flood, {fds_after} after it"
    );
    let per_connection_kib = 64;
    let bound = rss_before + ((DRIBBLERS + IDLERS) * per_connection_kib) as u64 + 32 * 1024;
    assert!(
        rss_peak <= bound,
        "VmRSS peaked at {rss_peak} KiB during the flood: from {rss_before} KiB, more than \
         {per_connection_kib} KiB a connection"
    );
    eprintln!(
        "flood: {served:?}; VmRSS {rss_before} KiB before, {rss_peak} KiB at peak; \
         descriptors {fds_before} before, {fds_after} after"
    );
}
