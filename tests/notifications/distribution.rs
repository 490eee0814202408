//! The same `notifications:` config and the same requests against CNCF
//! distribution 2.8 (Debian's `docker-registry`) and Berth: the events must
//! have the same envelope type, the same fields and the same values, except
//! the one deliberate difference (distribution reports HEADs as pulls).

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{
    chunked_push,
    client::{image_manifest, sha256, Client, OCI_MANIFEST},
    common::{distribution::Distribution, Berth},
    receiver::Receiver,
    send, ENVELOPE,
};

/// distribution's config file, which Berth reads as it is.
fn config(root: &str, addr: &str, hook: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: side-by-side\nnotifications:\n  endpoints:\n    - name: hook\n      url: {hook}\n      timeout: 1s\n      threshold: 5\n      backoff: 100ms\n"
    )
}

/// One scenario, the same requests for either registry; ends with a push to
/// `end/marker` so the reader knows when the events are all in.
async fn scenario(c: &Client) {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_d = put_upload(c, "side/app", config).await;
    let layer = b"side by side layer";
    let layer_d = chunked_push(c, "side/app", layer).await;
    let manifest = serde_json::to_vec(&image_manifest(
        &config_d,
        config.len(),
        &layer_d,
        layer.len(),
    ))
    .unwrap();
    let r = c
        .req(Method::PUT, "/v2/side/app/manifests/v1")
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest_d = sha256(&manifest);
    send(
        c,
        Method::HEAD,
        &format!("/v2/side/app/blobs/{layer_d}"),
        StatusCode::OK,
    )
    .await;
    manifest_request(c, Method::HEAD).await;
    manifest_request(c, Method::GET).await;
    send(
        c,
        Method::GET,
        &format!("/v2/side/app/blobs/{layer_d}"),
        StatusCode::OK,
    )
    .await;
    send(
        c,
        Method::POST,
        &format!("/v2/copy/app/blobs/uploads/?mount={layer_d}&from=side/app"),
        StatusCode::CREATED,
    )
    .await;
    send(
        c,
        Method::DELETE,
        &format!("/v2/side/app/manifests/{manifest_d}"),
        StatusCode::ACCEPTED,
    )
    .await;
    send(
        c,
        Method::DELETE,
        &format!("/v2/side/app/blobs/{config_d}"),
        StatusCode::ACCEPTED,
    )
    .await;
    put_upload(c, "end/marker", b"end").await;
}

/// The manifest by tag, asking for OCI (distribution 2.8 answers 404 without).
async fn manifest_request(c: &Client, method: Method) {
    let r = c
        .req(method.clone(), "/v2/side/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{method} manifest");
}

/// POST, then the whole blob in the PUT (distribution 2.8 has no one-request POST upload).
async fn put_upload(c: &Client, name: &str, data: &[u8]) -> String {
    let at = c.start_upload(name).await;
    let d = sha256(data);
    let sep = if at.contains('?') { '&' } else { '?' };
    let r = c
        .req(Method::PUT, &format!("{at}{sep}digest={d}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    d
}

/// Every event up to the marker's push, checking the envelope type.
async fn collect(rx: &mut Receiver) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let d = rx.next().await;
        assert_eq!(d.headers["content-type"], ENVELOPE);
        let e = d.event().clone();
        if e["target"]["repository"] == "end/marker" {
            return events;
        }
        events.push(e);
    }
}

/// The keys of an object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// What must match: field names at every level, and the values that do not
/// depend on which server, port or moment produced the event.
fn comparable(e: &Value) -> Value {
    let mut target = e["target"].clone();
    if let Some(url) = target["url"].as_str() {
        // Same path, each registry's own host.
        let path = url.split_once("/v2/").map(|(_, p)| format!("/v2/{p}"));
        target["url"] = path.into();
    }
    serde_json::json!({
        "keys": keys(e),
        "action": e["action"],
        "target": target,
        "request": {"keys": keys(&e["request"]), "method": e["request"]["method"]},
        "actor": e["actor"],
        "source": keys(&e["source"]),
    })
}

#[tokio::test]
async fn berth_sends_what_distribution_2_8_sends_for_the_same_requests() {
    let mut from_distribution = Receiver::start().await;
    let d = Distribution::start(|dir, addr| {
        config(
            dir.join("root").to_str().unwrap(),
            addr,
            &from_distribution.url,
        )
    });
    let mut from_berth = Receiver::start().await;
    let berth_hook = from_berth.url.clone();
    let b = Berth::start_with(move |root, addr| config(root, addr, &berth_hook));

    let client = |addr: &str| Client {
        base: format!("http://{addr}"),
        http: crate::common::http::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    scenario(&client(&d.addr)).await;
    scenario(&client(&b.addr)).await;
    let theirs = collect(&mut from_distribution).await;
    let ours = collect(&mut from_berth).await;

    // distribution reports the two HEADs as pulls; Berth, by design, does not.
    let (heads, theirs): (Vec<Value>, Vec<Value>) = theirs
        .into_iter()
        .partition(|e| e["request"]["method"] == "HEAD");
    assert_eq!(heads.len(), 2, "{heads:#?}");
    assert!(heads.iter().all(|e| e["action"] == "pull"), "{heads:#?}");

    let theirs: Vec<Value> = theirs.iter().map(comparable).collect();
    let ours: Vec<Value> = ours.iter().map(comparable).collect();
    assert_eq!(
        serde_json::to_string_pretty(&ours).unwrap(),
        serde_json::to_string_pretty(&theirs).unwrap(),
        "left: Berth, right: distribution 2.8"
    );
    assert_eq!(ours.len(), 9);
}
