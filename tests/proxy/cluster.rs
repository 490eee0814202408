//! Three mirror replicas on one storage root with Redis: twenty clients
//! pulling the same missing blob through all of them at once cause one
//! upstream fetch, and every client gets the blob byte-exact.

use std::time::{Duration, Instant};

use crate::{
    common::{free_port, noise::xorshift_bytes, redis::RedisServer, wait_for_port, Berth},
    gate::Gate,
    shared::{gets, metric, push_blob, MIB},
    support::*,
};

/// Blob requests a replica has taken (its miss counter).
fn misses(debug: &str) -> f64 {
    let text = get(&format!("http://{debug}/metrics"), Auth::None).text();
    metric(
        &text,
        "registry_proxy_requests_total",
        &["kind=\"blob\"", "result=\"miss\""],
    )
}

#[test]
fn twenty_clients_on_three_replicas_cause_one_upstream_fetch() {
    let upstream = Berth::start();
    let layer = xorshift_bytes(21, 8 * MIB);
    let digest = push_blob(&upstream, "fleet/app", &layer);
    // The upstream's answers stop after 1 MiB, so every client asks while
    // the one fetch is under way.
    let gate = Gate::start(&upstream.addr, MIB as u64);
    let redis = RedisServer::start();
    let shared = tempfile::tempdir().unwrap();
    let root = shared.path().join("data");
    let replicas: Vec<(Berth, String)> = (0..3)
        .map(|_| {
            let debug = format!("127.0.0.1:{}", free_port());
            let b = Berth::start_on_root_with(&root, |root, addr| {
                format!(
                    "storage:\n  filesystem:\n    rootdirectory: {root}\n\
                     http:\n  addr: {addr}\n  secret: shared\n  debug:\n    addr: {debug}\n\
                     redis:\n  addr: {}\nproxy:\n  remoteurl: {}\n",
                    redis.addr(),
                    gate.url()
                )
            });
            assert!(wait_for_port(&debug, Duration::from_secs(20)));
            (b, debug)
        })
        .collect();

    let clients: Vec<_> = (0..20)
        .map(|i| {
            let url = replicas[i % 3]
                .0
                .url(&format!("/v2/fleet/app/blobs/{digest}"));
            std::thread::spawn(move || get(&url, Auth::None))
        })
        .collect();
    // Every client's request has reached a replica (bounded wait on what
    // the replicas report, not on time).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: f64 = replicas.iter().map(|(_, d)| misses(d)).sum();
        if seen >= 20.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {seen} of 20 requests arrived"
        );
        std::thread::yield_now();
    }
    gate.open();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.body == layer, "a client got other bytes");
    }
    let fetches = gets(&upstream, &format!("/v2/fleet/app/blobs/{digest}"));
    assert_eq!(fetches, 1, "upstream GETs of the blob");
}
