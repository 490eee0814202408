//! Webhook notifications and the audit log against a real `berth` process:
//! a receiver in the test (tests/notifications/receiver.rs) gets the events
//! of pushes, pulls, mounts and deletes in distribution's envelope; ignored
//! media types and actions are not sent; a failed delivery is retried; a dead
//! endpoint never blocks a push and shows in `/metrics` (down, pending, bounded
//! queue dropping the oldest); HTTPS endpoints are verified against the
//! system trust store; audit lines come out as JSON log lines; a SIGTERM with
//! undelivered events stops within the drain bound.

mod common;

#[path = "api/client.rs"]
mod client;
#[path = "notifications/distribution.rs"]
mod distribution;
#[path = "notifications/receiver.rs"]
mod receiver;

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use base64::Engine;
use reqwest::{header, Method, StatusCode};
use serde_json::Value;

use client::{image_manifest, location, sha256, Client, OCI_MANIFEST};
use common::{free_port, pki, wait_for_port, Berth};
use receiver::Receiver;

const ENVELOPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// Berth (filesystem, deletes on, JSON logs) with `endpoints` (YAML list
/// items) under `notifications.endpoints`, and `extra` at top level.
fn start(endpoints: &str, extra: &str) -> Berth {
    let (endpoints, extra) = (endpoints.to_string(), extra.to_string());
    Berth::start_with(move |root, addr| {
        format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: json\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: s\n{extra}notifications:\n  endpoints:\n{endpoints}"
        )
    })
}

/// One endpoint as a YAML list item; `more` is further keys, one per line.
fn endpoint(name: &str, url: &str, more: &[&str]) -> String {
    let mut s = format!("    - name: {name}\n      url: {url}\n");
    for line in more {
        s.push_str(&format!("      {line}\n"));
    }
    s
}

/// `auth.htpasswd` with `user:password` (bcrypt, as `htpasswd -B` writes it).
fn htpasswd(dir: &Path, user: &str, password: &str) -> String {
    let file = dir.join("htpasswd");
    let hash = bcrypt::hash(password, 5)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
    format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        file.display()
    )
}

/// A client sending Basic credentials on every request.
fn client_as(b: &Berth, user: &str, password: &str) -> Client {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut headers = header::HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Basic {token}").parse().unwrap(),
    );
    Client {
        base: format!("http://{}", b.addr),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .unwrap(),
    }
}

/// A chunked upload (POST, PATCH, PUT); returns the digest.
async fn chunked_push(c: &Client, name: &str, data: &[u8]) -> String {
    let at = c.start_upload(name).await;
    let r = c
        .req(Method::PATCH, &at)
        .header("content-range", format!("0-{}", data.len() - 1))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let at = location(&r);
    let d = sha256(data);
    let sep = if at.contains('?') { '&' } else { '?' };
    let r = c
        .req(Method::PUT, &format!("{at}{sep}digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    d
}

async fn send(c: &Client, method: Method, path: &str, expect: StatusCode) -> reqwest::Response {
    let r = c.req(method.clone(), path).send().await.unwrap();
    assert_eq!(r.status(), expect, "{method} {path}");
    r
}

#[tokio::test]
async fn push_pull_mount_and_delete_events_reach_the_receiver() {
    let mut rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hook = endpoint(
        "hook",
        &rx.url,
        &["headers:", "  X-Hook-Token: [abc]", "backoff: 100ms"],
    );
    let b = start(&hook, &htpasswd(dir.path(), "alice", "pw"));
    let c = client_as(&b, "alice", "pw");

    // Push: config and layer (monolithic POSTs), then the manifest by tag.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"layer bytes";
    let config_d = c.push_blob("team/app", config).await;
    let layer_d = c.push_blob("team/app", layer).await;
    let manifest = serde_json::to_vec(&image_manifest(
        &config_d,
        config.len(),
        &layer_d,
        layer.len(),
    ))
    .unwrap();
    let manifest_d = sha256(&manifest);
    let r = c
        .req(Method::PUT, "/v2/team/app/manifests/v1")
        .header("content-type", OCI_MANIFEST)
        .header("user-agent", "notify-test/1")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();

    let d = rx.next().await;
    assert_eq!(d.headers["content-type"], ENVELOPE);
    assert_eq!(d.headers["x-hook-token"], "abc");
    let e = d.event();
    assert_eq!(e["action"], "push");
    let t = &e["target"];
    assert_eq!(t["mediaType"], "application/octet-stream");
    assert_eq!(t["digest"], config_d);
    assert_eq!(t["size"], config.len());
    assert_eq!(t["length"], config.len());
    assert_eq!(t["repository"], "team/app");
    assert_eq!(
        t["url"],
        format!("http://{}/v2/team/app/blobs/{config_d}", b.addr)
    );
    assert_eq!(e["actor"]["name"], "alice");
    assert_eq!(e["request"]["method"], "POST");
    assert_eq!(e["request"]["host"], b.addr.as_str());
    let addr = e["request"]["addr"].as_str().unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(!e["id"].as_str().unwrap().is_empty());
    assert!(e["timestamp"].as_str().unwrap().ends_with('Z'), "{e}");
    let port = b.addr.rsplit_once(':').unwrap().1;
    assert!(
        e["source"]["addr"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{port}")),
        "{e}"
    );
    let instance = e["source"]["instanceID"].as_str().unwrap().to_string();
    assert!(!instance.is_empty());

    let e = rx.expect("push", "team/app").await;
    assert_eq!(e["target"]["digest"], layer_d);
    let e = rx.expect("push", "team/app").await;
    let t = &e["target"];
    assert_eq!(t["mediaType"], OCI_MANIFEST);
    assert_eq!(t["digest"], manifest_d);
    assert_eq!(t["size"], manifest.len());
    assert_eq!(t["tag"], "v1");
    assert_eq!(
        t["url"],
        format!("http://{}/v2/team/app/manifests/{manifest_d}", b.addr)
    );
    assert!(t.get("references").is_none(), "includereferences is off");
    assert_eq!(e["request"]["id"], request_id.as_str());
    assert_eq!(e["request"]["method"], "PUT");
    assert_eq!(e["request"]["useragent"], "notify-test/1");
    assert_eq!(e["source"]["instanceID"], instance.as_str());

    // HEADs are existence checks, not pulls: the next event is the GET's.
    send(
        &c,
        Method::HEAD,
        &format!("/v2/team/app/blobs/{layer_d}"),
        StatusCode::OK,
    )
    .await;
    send(
        &c,
        Method::HEAD,
        "/v2/team/app/manifests/v1",
        StatusCode::OK,
    )
    .await;
    let r = send(&c, Method::GET, "/v2/team/app/manifests/v1", StatusCode::OK).await;
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let e = rx.expect("pull", "team/app").await;
    assert_eq!(e["request"]["method"], "GET");
    assert_eq!(e["target"]["digest"], manifest_d);
    assert_eq!(e["target"]["tag"], "v1");
    let r = send(
        &c,
        Method::GET,
        &format!("/v2/team/app/blobs/{layer_d}"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), layer);
    let e = rx.expect("pull", "team/app").await;
    assert_eq!(e["target"]["digest"], layer_d);
    assert_eq!(e["target"]["size"], layer.len());

    // A chunked upload is one push, when its PUT completes it.
    let chunk_d = chunked_push(&c, "team/app", b"chunked blob").await;
    let e = rx.expect("push", "team/app").await;
    assert_eq!(e["target"]["digest"], chunk_d);
    assert_eq!(e["request"]["method"], "PUT");

    // A cross-repository mount is distribution's "mount".
    send(
        &c,
        Method::POST,
        &format!("/v2/other/app/blobs/uploads/?mount={layer_d}&from=team/app"),
        StatusCode::CREATED,
    )
    .await;
    let e = rx.expect("mount", "other/app").await;
    assert_eq!(e["target"]["fromRepository"], "team/app");
    assert_eq!(e["target"]["digest"], layer_d);

    // Deletes: a tag (no digest, as distribution), a manifest, a blob.
    send(
        &c,
        Method::DELETE,
        "/v2/team/app/manifests/v1",
        StatusCode::ACCEPTED,
    )
    .await;
    let e = rx.expect("delete", "team/app").await;
    assert_eq!(e["target"]["tag"], "v1");
    assert!(e["target"].get("digest").is_none(), "{e}");
    send(
        &c,
        Method::DELETE,
        &format!("/v2/team/app/manifests/{manifest_d}"),
        StatusCode::ACCEPTED,
    )
    .await;
    let e = rx.expect("delete", "team/app").await;
    assert_eq!(e["target"]["digest"], manifest_d);
    assert_eq!(e["actor"]["name"], "alice");
    send(
        &c,
        Method::DELETE,
        &format!("/v2/team/app/blobs/{layer_d}"),
        StatusCode::ACCEPTED,
    )
    .await;
    let e = rx.expect("delete", "team/app").await;
    assert_eq!(e["target"]["digest"], layer_d);

    // A failed request is no event: the next one is this blob's push.
    send(
        &c,
        Method::GET,
        "/v2/team/app/manifests/nope",
        StatusCode::NOT_FOUND,
    )
    .await;
    let last = c.push_blob("team/app", b"last").await;
    assert_eq!(
        rx.expect("push", "team/app").await["target"]["digest"],
        last
    );
}

#[tokio::test]
async fn ignored_media_types_and_actions_are_not_sent() {
    let mut all = Receiver::start().await;
    let mut filtered = Receiver::start().await;
    let endpoints = endpoint("all", &all.url, &[])
        + &endpoint(
            "filtered",
            &filtered.url,
            &[
                "ignoredmediatypes: [application/octet-stream]",
                "ignore:",
                "  actions: [pull]",
            ],
        );
    let b = start(&endpoints, "");
    let c = Client::new(&b);

    let (manifest_d, _) = c.push_image("f/app", "t", "s").await;
    send(&c, Method::GET, "/v2/f/app/manifests/t", StatusCode::OK).await;
    send(
        &c,
        Method::DELETE,
        "/v2/f/app/manifests/t",
        StatusCode::ACCEPTED,
    )
    .await;

    // Everything reaches "all": two blob pushes, the manifest, the pull, the delete.
    for action in ["push", "push", "push", "pull", "delete"] {
        let e = all.expect(action, "f/app").await;
        assert!(e["actor"].get("name").is_none(), "anonymous: {e}");
    }
    // "filtered" sees the manifest push first (no blob events), then the
    // delete (no pull): anything ignored would have come in between.
    let e = filtered.expect("push", "f/app").await;
    assert_eq!(e["target"]["digest"], manifest_d);
    assert_eq!(
        filtered.expect("delete", "f/app").await["target"]["tag"],
        "t"
    );
}

#[tokio::test]
async fn includereferences_lists_config_and_layers() {
    let mut rx = Receiver::start().await;
    // `notifications.events` sits beside `endpoints`, so this config is written out whole.
    let b = Berth::start_with({
        let url = rx.url.clone();
        move |root, addr| {
            format!(
                "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\nnotifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: hook\n      url: {url}\n      ignore:\n        mediatypes: [application/octet-stream]\n"
            )
        }
    });
    let c = Client::new(&b);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_d = c.push_blob("r/app", config).await;
    let layer_d = c.push_blob("r/app", b"l").await;
    let m = image_manifest(&config_d, config.len(), &layer_d, 1);
    assert_eq!(
        c.put_manifest("r/app", "1", OCI_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );
    let e = rx.expect("push", "r/app").await;
    let refs = e["target"]["references"].as_array().expect("references");
    let digests: Vec<&str> = refs.iter().map(|r| r["digest"].as_str().unwrap()).collect();
    assert_eq!(digests, [config_d.as_str(), layer_d.as_str()]);
    assert_eq!(refs[1]["size"], 1);
}

/// `/metrics` as `series → value`.
async fn scrape(debug: &str) -> BTreeMap<String, f64> {
    let text = reqwest::get(format!("http://{debug}/metrics"))
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

/// The JSON log lines of target `berth::audit`.
fn audit_lines(b: &Berth) -> Vec<Value> {
    b.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "berth::audit")
        .collect()
}

#[tokio::test]
async fn audit_lines_name_who_what_and_from_where() {
    let dir = tempfile::tempdir().unwrap();
    // No endpoints: the audit log does not depend on webhooks.
    let auth = htpasswd(dir.path(), "bob", "pw");
    let b = Berth::start_with(move |root, addr| {
        format!(
            "log:\n  formatter: json\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: s\n{auth}"
        )
    });
    let c = client_as(&b, "bob", "pw");
    let config = br#"{"os":"linux"}"#;
    let config_d = c.push_blob("audit/app", config).await;
    let layer_d = c.push_blob("audit/app", b"layer").await;
    let manifest =
        serde_json::to_vec(&image_manifest(&config_d, config.len(), &layer_d, 5)).unwrap();
    let manifest_d = sha256(&manifest);
    let r = c
        .req(Method::PUT, "/v2/audit/app/manifests/latest")
        .header("content-type", OCI_MANIFEST)
        .header("x-forwarded-for", "203.0.113.9")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let put_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    // Pulls are not audited.
    send(
        &c,
        Method::GET,
        "/v2/audit/app/manifests/latest",
        StatusCode::OK,
    )
    .await;
    let r = send(
        &c,
        Method::DELETE,
        &format!("/v2/audit/app/manifests/{manifest_d}"),
        StatusCode::ACCEPTED,
    )
    .await;
    let delete_id = r.headers()["x-request-id"].to_str().unwrap().to_string();

    // Written before the response: no waiting needed.
    let lines = audit_lines(&b);
    let summary: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_string(),
                l["digest"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("push".to_string(), config_d.clone()),
            ("push".to_string(), layer_d.clone()),
            ("push".to_string(), manifest_d.clone()),
            ("delete".to_string(), manifest_d.clone()),
            // The tag that pointed at it, as its own delete (distribution's events too).
            ("delete".to_string(), String::new()),
        ],
        "{lines:#?}"
    );
    let m = &lines[2];
    assert_eq!(m["message"], "audit");
    assert_eq!(m["repository"], "audit/app");
    assert_eq!(m["tag"], "latest");
    assert_eq!(m["media_type"], OCI_MANIFEST);
    assert_eq!(m["size"], manifest.len());
    assert_eq!(m["actor"], "bob");
    assert_eq!(m["request_id"], put_id.as_str());
    // The TCP peer is the client; the header is kept, as sent, beside it.
    assert!(
        m["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{m}"
    );
    assert_eq!(m["forwarded_for"], "203.0.113.9");
    assert!(lines[0].get("forwarded_for").is_none(), "{}", lines[0]);
    assert_eq!(lines[3]["request_id"], delete_id.as_str());
    assert_eq!(lines[3]["actor"], "bob");
    assert_eq!(lines[4]["tag"], "latest");
    assert_eq!(lines[4]["request_id"], delete_id.as_str());
}

#[tokio::test]
async fn anonymous_pushes_are_audited_as_anonymous_in_text_logs_too() {
    let b = Berth::start();
    let c = Client::new(&b);
    let d = c.push_blob("anon/app", b"x").await;
    let logs = b.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("berth::audit"))
        .unwrap_or_else(|| panic!("no audit line: {logs}"));
    assert!(line.contains("anonymous"), "{line}");
    assert!(line.contains(&d), "{line}");
    assert!(
        line.contains("action=\"push\"") || line.contains("action=push"),
        "{line}"
    );
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
    // SAFETY: a plain kill(2) on the child we spawned.
    assert_eq!(unsafe { libc::kill(b.child.id() as i32, libc::SIGTERM) }, 0);
    // Berth gives webhooks 5 s after the listener drained; allow generously more.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = b.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "berth did not stop: {}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
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
