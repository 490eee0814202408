//! Webhook notifications and the audit log against a real `berth` process:
//! a receiver in the test (tests/notifications/receiver.rs) gets the events
//! of pushes, pulls, mounts and deletes in distribution's envelope; ignored
//! media types and actions are not sent; includereferences lists what a
//! manifest points at. Delivery (retries, a dead endpoint, shutdown, HTTPS)
//! is in tests/notifications/delivery.rs, audit lines in audit.rs, the
//! side-by-side comparison with distribution 2.8 in distribution.rs.

mod common;

#[path = "notifications/audit.rs"]
mod audit;
#[path = "api/client.rs"]
mod client;
#[path = "notifications/delivery.rs"]
mod delivery;
#[path = "notifications/distribution.rs"]
mod distribution;
#[path = "notifications/receiver.rs"]
mod receiver;

use std::path::Path;

use base64::Engine;
use reqwest::{header, Method, StatusCode};

use client::{image_manifest, location, sha256, Client, OCI_MANIFEST};
use common::Berth;
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
        http: crate::common::http::builder()
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
    // A GET's context is built when an endpoint takes pulls (a HEAD's never is).
    assert_eq!(e["actor"]["name"], "alice");
    assert_eq!(e["request"]["host"], b.addr.as_str());
    assert!(
        e["target"]["url"].as_str().unwrap().starts_with("http://"),
        "{e}"
    );
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
