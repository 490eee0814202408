//! Prometheus metrics on `http.debug.addr` against a real `berth` process:
//! pushes, pulls, a 404, a blob upload caught mid-stream, the
//! blob-descriptor cache, and authentication attempts (htpasswd, bearer
//! tokens, the built-in token server), each read back from `/metrics` with
//! exact counts and labels. Traces (OTLP to a real receiver), `log.fields`
//! and `health:` checks are in tests/observability/.

mod common;

#[path = "api/client.rs"]
mod client;

#[path = "observability/health.rs"]
mod health;
#[path = "observability/logs.rs"]
mod logs;
#[path = "observability/traces.rs"]
mod traces;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use base64::Engine;
use reqwest::{Method, StatusCode};

use client::{location, sha256, Client};
use common::{free_port, process::openssl, wait_for_port, Berth};

/// Berth with a filesystem root, the in-memory blob-descriptor cache, and
/// metrics on a second port; `extra` is appended at top level (YAML).
fn start(extra: &str) -> (Berth, String) {
    let debug = format!("127.0.0.1:{}", free_port());
    let b = {
        let debug = debug.clone();
        let extra = extra.to_string();
        Berth::start_with(move |root, addr| {
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: {addr}\n  secret: s\n  debug:\n    addr: {debug}\n{extra}"
            )
        })
    };
    // The debug listener is bound just before the main one starts serving.
    assert!(
        wait_for_port(&debug, Duration::from_secs(20)),
        "no debug listener on {debug}: {}",
        b.logs()
    );
    (b, debug)
}

/// `/metrics` as `series → value`, the series as exposed (`name{labels}`).
async fn scrape(debug: &str) -> BTreeMap<String, f64> {
    let r = crate::common::http::get(format!("http://{debug}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text()
        .await
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// The value of one series; missing is a failure, with what there was.
fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        let family = series.split('{').next().unwrap();
        let near: Vec<_> = m.keys().filter(|k| k.starts_with(family)).collect();
        panic!("no {series}; {family} has {near:#?}")
    })
}

fn requests(code: u16, handler: &str, method: &str) -> String {
    format!(
        "registry_http_requests_total{{code=\"{code}\",handler=\"{handler}\",method=\"{method}\"}}"
    )
}

#[tokio::test]
async fn push_pull_and_404_are_counted_by_route_template() {
    let (b, debug) = start("");
    let c = Client::new(&b);

    // Not on the registry's own port.
    let r = c.get("/metrics").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Push: two monolithic blobs (config, layer) and a manifest.
    let (manifest_digest, manifest) = c.push_image("obs/app", "v1", "one").await;
    let layer = b"layer-one".to_vec();
    let layer_digest = sha256(&layer);

    // A chunked blob upload: POST, two PATCHes, PUT.
    let chunks: [&[u8]; 2] = [b"first chunk ", b"and the second"];
    let whole: Vec<u8> = chunks.concat();
    let mut at = c.start_upload("obs/app").await;
    let mut offset = 0;
    for chunk in chunks {
        let r = c
            .req(Method::PATCH, &at)
            .header(
                "content-range",
                format!("{offset}-{}", offset + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        at = location(&r);
        offset += chunk.len();
    }
    let sep = if at.contains('?') { '&' } else { '?' };
    let r = c
        .req(Method::PUT, &format!("{at}{sep}digest={}", sha256(&whole)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Pull: the manifest by tag, the layer, and a HEAD of it.
    let r = c.get("/v2/obs/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = c.get(&format!("/v2/obs/app/blobs/{layer_digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), layer);
    let r = c.head(&format!("/v2/obs/app/blobs/{layer_digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);

    // A 404.
    let r = c.get("/v2/obs/app/manifests/missing").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let m = scrape(&debug).await;
    for (series, want) in [
        (requests(201, "blob_upload", "post"), 2.0),
        (requests(201, "manifest", "put"), 1.0),
        (requests(202, "blob_upload", "post"), 1.0),
        (requests(202, "blob_upload_chunk", "patch"), 2.0),
        (requests(201, "blob_upload_chunk", "put"), 1.0),
        (requests(200, "manifest", "get"), 1.0),
        (requests(200, "blob", "get"), 1.0),
        (requests(200, "blob", "head"), 1.0),
        (requests(404, "manifest", "get"), 1.0),
        (requests(404, "unknown", "get"), 1.0),
        (
            "registry_http_request_duration_seconds_count{handler=\"manifest\",method=\"put\"}"
                .into(),
            1.0,
        ),
        (
            "registry_http_request_duration_seconds_count{handler=\"manifest\",method=\"get\"}"
                .into(),
            2.0,
        ),
        // Bytes in, as read: the two chunks (the closing PUT has no body).
        (
            "registry_http_request_size_bytes_sum{handler=\"blob_upload_chunk\"}".into(),
            whole.len() as f64,
        ),
        (
            "registry_http_request_size_bytes_sum{handler=\"manifest\"}".into(),
            manifest.len() as f64,
        ),
        // Bytes out: the layer (the HEAD sends none).
        (
            "registry_http_response_size_bytes_sum{handler=\"blob\"}".into(),
            layer.len() as f64,
        ),
        (
            "registry_http_response_size_bytes_count{handler=\"blob\"}".into(),
            2.0,
        ),
        (
            "registry_http_in_flight_requests{handler=\"manifest\"}".into(),
            0.0,
        ),
        (
            "registry_http_in_flight_requests{handler=\"blob_upload_chunk\"}".into(),
            0.0,
        ),
        ("berth_uploads_in_flight".into(), 0.0),
    ] {
        assert_eq!(value(&m, &series), want, "{series}");
    }
    // No raw paths or digests as label values.
    for k in m.keys() {
        assert!(
            !k.contains("obs/app") && !k.contains("sha256") && !k.contains(&manifest_digest),
            "{k}"
        );
    }

    // Every storage operation the push and pull need went through the driver.
    for action in [
        "PutContent",
        "GetContent",
        "PutScratch",
        "Writer",
        "WriterClose",
        "WriterCommit",
        "Move",
        "Stat",
        "Reader",
    ] {
        let series = format!(
            "registry_storage_action_seconds_count{{action=\"{action}\",driver=\"filesystem\"}}"
        );
        assert!(value(&m, &series) > 0.0, "{series}");
    }

    // The cache: the pull's GET found the layer (remembered at push), and
    // the HEAD did too; the manifest push checked its blobs the same way.
    let hits = value(&m, "registry_storage_cache_requests_total{type=\"Hit\"}");
    let misses = value(&m, "registry_storage_cache_requests_total{type=\"Miss\"}");
    assert!(hits >= 2.0, "hits {hits}");
    assert_eq!(value(&m, "registry_storage_cache_errors_total"), 0.0);

    // A blob never pushed: a miss in the repository and in the global store.
    let absent = sha256(b"never pushed");
    let r = c.head(&format!("/v2/obs/app/blobs/{absent}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let m = scrape(&debug).await;
    assert_eq!(
        value(&m, "registry_storage_cache_requests_total{type=\"Miss\"}"),
        misses + 1.0
    );
    assert_eq!(value(&m, &requests(404, "blob", "head")), 1.0);
}

#[tokio::test]
async fn an_upload_is_in_flight_while_its_body_streams() {
    let (b, debug) = start("");
    let c = Client::new(&b);
    let at = c.start_upload("obs/stream").await;

    // A PATCH whose body the test feeds: the first part now, the rest later.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let patch = c
        .req(Method::PATCH, &at)
        .body(reqwest::Body::wrap_stream(body));
    let response = tokio::spawn(async move { patch.send().await.unwrap() });
    tx.send(b"part one, ".to_vec()).await.unwrap();

    // The server sees the request once its head arrives: wait (bounded) for
    // the scrape that shows it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = scrape(&debug).await;
        if m.get("berth_uploads_in_flight") == Some(&1.0) {
            break m;
        }
        assert!(Instant::now() < deadline, "upload never in flight: {m:#?}");
    };
    assert_eq!(
        value(
            &m,
            "registry_http_in_flight_requests{handler=\"blob_upload_chunk\"}"
        ),
        1.0
    );

    tx.send(b"part two".to_vec()).await.unwrap();
    drop(tx);
    let r = response.await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let m = scrape(&debug).await;
    assert_eq!(value(&m, "berth_uploads_in_flight"), 0.0);
    assert_eq!(
        value(
            &m,
            "registry_http_in_flight_requests{handler=\"blob_upload_chunk\"}"
        ),
        0.0
    );
    assert_eq!(value(&m, &requests(202, "blob_upload_chunk", "patch")), 1.0);
    assert_eq!(
        value(
            &m,
            "registry_http_request_size_bytes_sum{handler=\"blob_upload_chunk\"}"
        ),
        "part one, part two".len() as f64
    );
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn htpasswd_entry(user: &str, password: &str) -> String {
    common::htpasswd::entry(user, password, 4)
}

fn attempts(scheme: &str, result: &str) -> String {
    format!("berth_auth_attempts_total{{result=\"{result}\",scheme=\"{scheme}\"}}")
}

#[tokio::test]
async fn htpasswd_logins_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd_entry("alice", "s3cret")).unwrap();
    let (b, debug) = start(&format!(
        "auth:\n  htpasswd:\n    realm: r\n    path: {}\n",
        file.display()
    ));
    let http = crate::common::http::client();
    let v2 = b.url("/v2/");

    // No credentials: the usual first request, a challenge, not an attempt.
    let r = http.get(&v2).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for password in ["wrong", "also wrong"] {
        let r = http
            .get(&v2)
            .header("authorization", basic("alice", password))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = http
        .get(&v2)
        .header("authorization", basic("alice", "s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let m = scrape(&debug).await;
    assert_eq!(value(&m, &attempts("basic", "failure")), 2.0);
    assert_eq!(value(&m, &attempts("basic", "success")), 1.0);
    assert_eq!(value(&m, &requests(401, "base", "get")), 3.0);
    assert_eq!(value(&m, &requests(200, "base", "get")), 1.0);
}

#[tokio::test]
async fn token_server_and_bearer_attempts_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-out",
        &p("token.key"),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p("token.key"),
        "-subj",
        "/CN=obs",
        "-days",
        "2",
        "-out",
        &p("token.crt"),
    ]);
    std::fs::write(p("htpasswd"), htpasswd_entry("alice", "s3cret")).unwrap();
    let (b, debug) = start(&format!(
        "auth:\n  token:\n    realm: http://127.0.0.1/auth/token\n    service: obs\n    issuer: obs-issuer\n    rootcertbundle: {crt}\n\
         token_server:\n  issuer: obs-issuer\n  service: obs\n  signingkey: {key}\n  certificate: {crt}\n  htpasswd: {htpasswd}\n  acl:\n    - match: {{account: alice, name: \"alice/**\"}}\n      actions: [\"*\"]\n",
        crt = p("token.crt"),
        key = p("token.key"),
        htpasswd = p("htpasswd"),
    ));
    let http = crate::common::http::client();
    let token_url = |scope: &str| format!("{}?service=obs&scope={scope}", b.url("/auth/token"));

    // The token server: one bad password, then a good one.
    let r = http
        .get(token_url("repository:alice/app:pull"))
        .header("authorization", basic("alice", "nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .get(token_url("repository:alice/app:pull"))
        .header("authorization", basic("alice", "s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    // A scope the ACL grants nothing: the token lists it with no actions.
    let r = http
        .get(token_url("repository:bob/app:pull"))
        .header("authorization", basic("alice", "s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let bob_token = body["token"].as_str().unwrap().to_string();

    // The registry: a good token, a forged one, one without the access.
    let tags = b.url("/v2/alice/app/tags/list");
    let r = http.get(&tags).bearer_auth(&token).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "authorized, no such repo"
    );
    let r = http
        .get(&tags)
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .get(b.url("/v2/bob/app/tags/list"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let m = scrape(&debug).await;
    assert_eq!(value(&m, &attempts("token_server", "failure")), 1.0);
    assert_eq!(value(&m, &attempts("token_server", "success")), 2.0);
    assert_eq!(value(&m, &attempts("bearer", "success")), 1.0);
    assert_eq!(value(&m, &attempts("bearer", "failure")), 1.0);
    assert_eq!(value(&m, &attempts("bearer", "denied")), 1.0);
    assert_eq!(value(&m, &requests(200, "token", "get")), 2.0);
    assert_eq!(value(&m, &requests(401, "token", "get")), 1.0);
    assert_eq!(value(&m, &requests(404, "tags", "get")), 1.0);
    assert_eq!(value(&m, &requests(403, "tags", "get")), 1.0);
}

#[tokio::test]
async fn prometheus_off_means_no_debug_listener_metrics() {
    // `enabled: false`: the port stays free, nothing is served on it.
    let debug = format!("127.0.0.1:{}", free_port());
    let b = {
        let debug = debug.clone();
        Berth::start_with(move |root, addr| {
            format!(
                "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n  debug:\n    addr: {debug}\n    prometheus:\n      enabled: false\n"
            )
        })
    };
    // The main listener answers, so startup is over; the debug port was
    // never bound (binding it would have come first).
    let r = crate::common::http::get(b.url("/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        std::net::TcpListener::bind(&debug).is_ok(),
        "{debug} is in use"
    );
}

#[tokio::test]
async fn debug_addr_from_the_environment() {
    let debug = format!("127.0.0.1:{}", free_port());
    let b = Berth::start_with_env(
        |root, addr| {
            format!(
                "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n"
            )
        },
        &[("REGISTRY_HTTP_DEBUG_ADDR", &debug)],
    );
    assert!(
        wait_for_port(&debug, Duration::from_secs(20)),
        "{}",
        b.logs()
    );
    let r = crate::common::http::get(b.url("/v2/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m = scrape(&debug).await;
    assert_eq!(value(&m, &requests(200, "base", "get")), 1.0);
    // Only the configured path is served there.
    let r = crate::common::http::get(format!("http://{debug}/"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
