//! Delivery: a refused event is sent again until accepted, a dead endpoint
//! never blocks a push and its queue stays bounded (seen in `/metrics`), a
//! password in an endpoint URL stays out of the logs, a SIGTERM with
//! undelivered events stops within the drain bound, HTTPS endpoints are
//! verified against the system trust store.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    client::Client,
    common::{free_port, pki, wait_for_port, Berth},
    endpoint,
    receiver::Receiver,
    start,
};

/// `/metrics` as `series → value`.
async fn scrape(debug: &str) -> BTreeMap<String, f64> {
    let text = crate::common::http::get(format!("http://{debug}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// Poll `/metrics` until every `(series, value)` holds, at most 20 s
/// (delivery is asynchronous: the counters move after the HTTP exchange).
async fn metrics_reach(debug: &str, want: &[(&str, f64)]) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(debug).await;
        if want.iter().all(|(s, v)| m.get(*s) == Some(v)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never reached {want:?}; notification series: {:#?}",
            m.iter()
                .filter(|(k, _)| k.contains("notifications"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Config text for `http.debug` on a free port; returns (yaml, addr).
fn debug_listener() -> (String, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    (format!("  debug:\n    addr: {addr}\n"), addr)
}

#[tokio::test]
async fn a_refused_event_is_sent_again_until_accepted() {
    let mut rx = Receiver::start().await;
    rx.fail_next(&[500, 503]);
    let (debug_yaml, debug) = debug_listener();
    let url = rx.url.clone();
    let b = Berth::start_with(move |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n{debug_yaml}notifications:\n  endpoints:\n    - name: flaky\n      url: {url}\n      backoff: 50ms\n      threshold: 5\n"
        )
    });
    assert!(wait_for_port(&debug, Duration::from_secs(20)));
    let c = Client::new(&b);
    let d = c.push_blob("retry/app", b"once").await;

    let first = rx.next().await;
    let second = rx.next().await;
    let third = rx.next().await;
    assert_eq!([first.status, second.status, third.status], [500, 503, 200]);
    let id = first.event()["id"].clone();
    for delivery in [&second, &third] {
        assert_eq!(delivery.event()["id"], id, "the same event, sent again");
        assert_eq!(delivery.event()["target"]["digest"], d);
    }
    let ep = "endpoint=\"flaky\"";
    metrics_reach(
        &debug,
        &[
            (&format!("registry_notifications_events_total{{{ep},type=\"Events\"}}"), 1.0),
            (&format!("registry_notifications_events_total{{{ep},type=\"Failures\"}}"), 2.0),
            (&format!("registry_notifications_events_total{{{ep},type=\"Successes\"}}"), 1.0),
            (&format!("registry_notifications_status_total{{code=\"500 Internal Server Error\",{ep}}}"), 1.0),
            (&format!("registry_notifications_status_total{{code=\"503 Service Unavailable\",{ep}}}"), 1.0),
            (&format!("registry_notifications_status_total{{code=\"200 OK\",{ep}}}"), 1.0),
            (&format!("registry_notifications_pending_total{{{ep}}}"), 0.0),
            (&format!("berth_notifications_endpoint_up{{{ep}}}"), 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_dead_endpoint_never_blocks_pushes_and_its_queue_stays_bounded() {
    // Nothing listens there.
    let dead = format!("http://127.0.0.1:{}/events", free_port());
    let (debug_yaml, debug) = debug_listener();
    let b = Berth::start_with(move |root, addr| {
        format!(
            "log:\n  formatter: json\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n{debug_yaml}notifications:\n  endpoints:\n    - name: dead\n      url: {dead}\n      timeout: 200ms\n      threshold: 2\n      backoff: 50ms\n      queuesizelimit: 3\n"
        )
    });
    assert!(wait_for_port(&debug, Duration::from_secs(20)));
    let c = Client::new(&b);
    // Three images: nine events (two blobs and a manifest each); every push succeeds.
    for i in 0..3 {
        c.push_image("dead/app", &format!("t{i}"), &format!("seed{i}"))
            .await;
    }
    let ep = "endpoint=\"dead\"";
    let m = metrics_reach(
        &debug,
        &[
            (
                &format!("registry_notifications_events_total{{{ep},type=\"Events\"}}"),
                9.0,
            ),
            (
                &format!("registry_notifications_pending_total{{{ep}}}"),
                3.0,
            ),
            (&format!("berth_notifications_dropped_total{{{ep}}}"), 6.0),
            (&format!("berth_notifications_endpoint_up{{{ep}}}"), 0.0),
        ],
    )
    .await;
    let errors = m[&format!("registry_notifications_events_total{{{ep},type=\"Errors\"}}")];
    assert!(
        errors >= 2.0,
        "at least threshold attempts failed: {errors}"
    );
    assert_eq!(
        m.get(&format!(
            "registry_notifications_events_total{{{ep},type=\"Successes\"}}"
        )),
        Some(&0.0)
    );
    // Each condition is logged once, not per event or attempt.
    let logs = b.logs();
    assert_eq!(
        logs.matches("queue full, dropping the oldest").count(),
        1,
        "{logs}"
    );
    assert_eq!(logs.matches("endpoint is down").count(), 1, "{logs}");
}

#[tokio::test]
async fn credentials_in_an_endpoint_url_never_reach_the_logs() {
    // distribution accepts `https://user:password@host/` (Go sends it as Basic
    // auth); the password must not show in the startup or "down" lines.
    let dead = format!("http://hook:s3cr3t-pw@127.0.0.1:{}/events", free_port());
    let b = start(
        &endpoint(
            "creds",
            &dead,
            &["timeout: 200ms", "threshold: 1", "backoff: 50ms"],
        ),
        "",
    );
    let c = Client::new(&b);
    c.push_image("creds/app", "t", "seed").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.logs().contains("endpoint is down") {
        assert!(Instant::now() < deadline, "never down: {}", b.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = b.logs();
    assert!(!logs.contains("s3cr3t-pw"), "{logs}");
    assert!(logs.contains("hook:***@127.0.0.1"), "{logs}");
}

#[tokio::test]
async fn sigterm_with_undelivered_events_stops_within_the_drain_bound() {
    let dead = format!("http://127.0.0.1:{}/events", free_port());
    let mut b = start(
        &endpoint("dead", &dead, &["timeout: 100ms", "backoff: 50ms"]),
        "",
    );
    let c = Client::new(&b);
    c.push_blob("stop/app", b"a").await;
    c.push_blob("stop/app", b"b").await;
    // Berth gives webhooks 5 s after the listener drained; allow generously more.
    let status = b.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {}", b.logs());
    let logs = b.logs();
    let lost = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "notifications: undelivered at shutdown")
        .unwrap_or_else(|| panic!("no shutdown line: {logs}"));
    assert_eq!(lost["lost"], 2);
    assert_eq!(lost["endpoint"], "dead");
}

#[tokio::test]
async fn https_endpoints_are_verified_against_the_system_trust_store() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::root("notify test CA");
    let leaf = ca.server(&["127.0.0.1"]);
    let mut rx = Receiver::start_tls(&leaf.cert_pem, &leaf.key_pem).await;
    // A second receiver whose CA Berth does not trust.
    let stranger = pki::Ca::root("stranger").server(&["127.0.0.1"]);
    let mut untrusted = Receiver::start_tls(&stranger.cert_pem, &stranger.key_pem).await;
    let ca_file = pki::write(dir.path(), "ca.pem", &ca.pem());
    let endpoints = endpoint("tls", &rx.url, &["backoff: 50ms"])
        + &endpoint(
            "untrusted",
            &untrusted.url,
            &["backoff: 50ms", "threshold: 1"],
        );
    let b = Berth::start_with_env(
        move |root, addr| {
            format!(
                "log:\n  formatter: json\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\nnotifications:\n  endpoints:\n{endpoints}"
            )
        },
        // As an operator adds a private CA: the system trust store, here by env.
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    );
    let c = Client::new(&b);
    let d = c.push_blob("tls/app", b"over tls").await;
    let e = rx.expect("push", "tls/app").await;
    assert_eq!(e["target"]["digest"], d);

    // The other endpoint goes down on its first attempt, for its certificate.
    let deadline = Instant::now() + Duration::from_secs(20);
    let down = loop {
        let found = b
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| {
                v["endpoint"] == "untrusted"
                    && v["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("endpoint is down")
            });
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "untrusted never down: {}",
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = down["error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert!(
        untrusted.try_next().is_none(),
        "a POST got past the handshake"
    );
}
