//! Limits of the S3 and Azure writers as clients meet them, through the
//! registry's HTTP API served in-process on a real store: the upload buffer
//! budget (`storage.uploadbuffers`) — back-pressure, then 503 with
//! Retry-After — S3's part limit, and two PATCHes racing on one Azure upload.
//! Each refused request leaves the upload as it was, and it finishes intact.

use std::{sync::Arc, time::Duration};

use berth::storage::{budget::BufferBudget, s3::S3Driver, StorageDriver};
use bytes::Bytes;
use futures::{channel::mpsc, SinkExt};

use crate::common::{azurite::Azurite, http::sha256, noise::xorshift_bytes, s3::S3Server};

const MIB: usize = 1024 * 1024;

fn data(len: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(seed | 1, len)
}

/// The registry's router on `driver`, on a port of its own.
struct Served {
    base: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Feed = mpsc::Sender<Result<Bytes, std::io::Error>>;

async fn serve(driver: Arc<dyn StorageDriver>) -> Served {
    let cfg = berth::config::Config::from_yaml("http:\n  secret: s\n").unwrap();
    let registry = berth::registry::Registry::new(driver, b"s", true);
    let app = berth::api::router(&cfg, registry, None, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served {
        base,
        http: crate::common::http::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        task,
    }
}

impl Served {
    fn url(&self, location: &str) -> String {
        if location.starts_with("http") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    async fn start_upload(&self, name: &str) -> String {
        let r = self
            .http
            .post(self.url(&format!("/v2/{name}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.headers()["location"].to_str().unwrap().to_string()
    }

    fn patch(&self, location: &str, body: reqwest::Body) -> reqwest::RequestBuilder {
        self.http
            .patch(self.url(location))
            .header("content-type", "application/octet-stream")
            .body(body)
    }

    /// A PATCH whose body is sent piece by piece through the returned feed.
    fn streamed_patch(&self, location: &str) -> (Feed, tokio::task::JoinHandle<reqwest::Response>) {
        let (tx, rx) = mpsc::channel(4);
        let req = self.patch(location, reqwest::Body::wrap_stream(rx));
        (tx, tokio::spawn(async move { req.send().await.unwrap() }))
    }

    async fn finish(&self, location: &str, digest: &str, body: Vec<u8>) -> reqwest::Response {
        let sep = if location.contains('?') { '&' } else { '?' };
        self.http
            .put(self.url(&format!("{location}{sep}digest={digest}")))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn blob(&self, name: &str, digest: &str) -> Vec<u8> {
        let r = self
            .http
            .get(self.url(&format!("/v2/{name}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap().to_vec()
    }

    /// POST + PUT with the whole blob, retried while the answer is 503
    /// (bounded); every 503 must carry Retry-After.
    async fn push_retrying(&self, name: &str, blob: &[u8]) -> (String, usize) {
        let digest = sha256(blob);
        for refused in 0..20 {
            let loc = self.start_upload(name).await;
            let r = self.finish(&loc, &digest, blob.to_vec()).await;
            match r.status().as_u16() {
                201 => return (digest, refused),
                503 => {
                    let secs: u64 = r.headers()["retry-after"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert!(secs >= 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                s => panic!("push: {s} {:?}", r.text().await),
            }
        }
        panic!("pushed {name} 20 times, refused every time");
    }
}

async fn send(feed: &mut Feed, bytes: &[u8]) {
    feed.send(Ok(Bytes::copy_from_slice(bytes))).await.unwrap();
}

/// Until `cond` holds (a writer has opened on the server), at most 20 s.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn s3_driver(s: &S3Server, root: &str, chunk: usize) -> S3Driver {
    let cfg = berth::config::S3Config {
        chunksize: chunk as u64,
        ..s.config(root)
    };
    // Redirects off: blob GETs answer with the bytes.
    S3Driver::new(&cfg, true).unwrap()
}

/// A budget of exactly one writer: while one PATCH streams, another is
/// refused with 503 + Retry-After before its body is read, and the refused
/// upload later resumes from where it was and finishes intact.
#[tokio::test]
async fn a_spent_budget_is_a_clean_503_and_the_upload_resumes() {
    let s = S3Server::s3s_fs();
    let budget = BufferBudget::new(5 * MIB as u64, Duration::from_millis(300));
    let d = s3_driver(&s, "b1", 5 * MIB).with_buffer_budget(budget.clone());
    let app = serve(Arc::new(d)).await;
    let (one, two) = (data(3 * MIB, 1), data(64 * 1024, 2));

    let loc1 = app.start_upload("app").await;
    let loc2 = app.start_upload("app").await;
    let (mut feed, first) = app.streamed_patch(&loc1);
    send(&mut feed, &one[..MIB]).await;
    until("the first PATCH to hold the budget", || {
        budget.available() == 0
    })
    .await;

    let r = app.patch(&loc2, two.clone().into()).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(error_code(&r.text().await.unwrap()), "UNAVAILABLE");

    // The first goes on as if nothing happened.
    send(&mut feed, &one[MIB..]).await;
    drop(feed);
    let r = first.await.unwrap();
    assert_eq!(r.status(), 202);
    let loc1 = r.headers()["location"].to_str().unwrap().to_string();
    let d1 = sha256(&one);
    assert_eq!(app.finish(&loc1, &d1, vec![]).await.status(), 201);

    // The refused upload is where it was: offset 0, same Location.
    let r = app.http.get(app.url(&loc2)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-0");
    let r = app.patch(&loc2, two.clone().into()).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc2 = r.headers()["location"].to_str().unwrap().to_string();
    let d2 = sha256(&two);
    assert_eq!(app.finish(&loc2, &d2, vec![]).await.status(), 201);

    assert!(app.blob("app", &d1).await == one);
    assert!(app.blob("app", &d2).await == two);
    assert!(budget.high_water() <= 5 * MIB as u64);
    assert_eq!(budget.available(), 5 * MIB as u64, "all given back");
}

/// Ten concurrent 7 MiB uploads with a 10 MiB chunksize would each buffer
/// their whole blob (70 MiB); with a 16 MiB budget they wait their turn (or
/// are told to retry) and every blob arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_share_the_budget() {
    let s = S3Server::s3s_fs();
    let budget = BufferBudget::new(16 * MIB as u64, Duration::from_secs(60));
    let d = s3_driver(&s, "b2", 10 * MIB).with_buffer_budget(budget.clone());
    let app = Arc::new(serve(Arc::new(d)).await);
    let blobs: Vec<Vec<u8>> = (0..10).map(|i| data(7 * MIB, 100 + i)).collect();
    let pushes = blobs.iter().cloned().map(|blob| {
        let app = app.clone();
        tokio::spawn(async move { app.push_retrying("many", &blob).await })
    });
    let results = futures::future::join_all(pushes).await;
    for (blob, r) in blobs.iter().zip(results) {
        let (digest, _refused) = r.unwrap();
        assert!(app.blob("many", &digest).await == *blob, "{digest}");
    }
    let peak = budget.high_water();
    assert!(peak <= 16 * MIB as u64, "reserved {peak} at once");
    assert!(
        peak >= 10 * MIB as u64,
        "parts grew to chunksize with room: {peak}"
    );
    assert_eq!(budget.available(), 16 * MIB as u64, "all given back");
}

/// With the part limit lowered to 3 (S3's is 10,000), a PATCH that would
/// need a third part during the upload is 400 BLOB_UPLOAD_INVALID; the
/// upload keeps its 12 MiB and is finished with a last small chunk.
#[tokio::test]
async fn past_the_part_limit_is_a_client_error_and_the_upload_still_finishes() {
    let s = S3Server::s3s_fs();
    let d = s3_driver(&s, "p", 5 * MIB).with_part_limit(3);
    let app = serve(Arc::new(d)).await;
    let blob = data(16 * MIB, 9);
    let mut loc = app.start_upload("big").await;
    for (start, len) in [(0, 6 * MIB), (6 * MIB, 6 * MIB)] {
        let r = app
            .patch(&loc, blob[start..start + len].to_vec().into())
            .header("content-range", format!("{start}-{}", start + len - 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        loc = r.headers()["location"].to_str().unwrap().to_string();
    }
    let r = app
        .patch(&loc, blob[12 * MIB..].to_vec().into())
        .header("content-range", format!("{}-{}", 12 * MIB, 16 * MIB - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&r.text().await.unwrap()), "BLOB_UPLOAD_INVALID");

    let r = app.http.get(app.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["range"].to_str().unwrap(),
        format!("0-{}", 12 * MIB - 1)
    );
    let whole = &blob[..13 * MIB];
    let digest = sha256(whole);
    let r = app
        .finish(&loc, &digest, blob[12 * MIB..13 * MIB].to_vec())
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert!(app.blob("big", &digest).await == whole);
}

/// Two PATCHes of one Azure upload at once, both from offset 0: the first to
/// finish is kept; the second is 416 RANGE_INVALID and changes nothing; the
/// upload goes on from the first's Location.
#[tokio::test]
async fn racing_patches_on_azure_one_wins_the_other_is_416() {
    let az = Azurite::start();
    let budget = BufferBudget::new(64 * MIB as u64, Duration::from_secs(5));
    let d = az
        .driver("races", "r")
        .await
        .with_buffer_budget(budget.clone());
    let app = serve(Arc::new(d)).await;
    let total = budget.total();
    let (a, b, c) = (data(2 * MIB, 21), data(2 * MIB, 22), data(MIB, 23));

    let loc = app.start_upload("race").await;
    let (mut feed_a, patch_a) = app.streamed_patch(&loc);
    send(&mut feed_a, &a[..MIB]).await;
    until("writer A to open", || {
        budget.available() <= total - 4 * MIB as u64
    })
    .await;
    let (mut feed_b, patch_b) = app.streamed_patch(&loc);
    send(&mut feed_b, &b[..MIB]).await;
    until("writer B to open", || {
        budget.available() <= total - 8 * MIB as u64
    })
    .await;

    send(&mut feed_a, &a[MIB..]).await;
    drop(feed_a);
    let r = patch_a.await.unwrap();
    assert_eq!(r.status(), 202);
    let loc_a = r.headers()["location"].to_str().unwrap().to_string();

    send(&mut feed_b, &b[MIB..]).await;
    drop(feed_b);
    let r = patch_b.await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(error_code(&r.text().await.unwrap()), "RANGE_INVALID");

    let r = app.http.get(app.url(&loc_a)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["range"].to_str().unwrap(),
        format!("0-{}", 2 * MIB - 1)
    );
    let whole = [a, c.clone()].concat();
    let digest = sha256(&whole);
    let r = app.finish(&loc_a, &digest, c).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert!(app.blob("race", &digest).await == whole);
    assert_eq!(budget.available(), total, "all given back");
}
