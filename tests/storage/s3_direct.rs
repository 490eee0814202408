//! Blobs whose digest comes first (`PUT ?digest=` on a fresh upload,
//! `POST ?digest=`) on S3: straight to the blob's key, and nothing left by a
//! wrong digest, a broken body or a dropped client; a first PATCH retried
//! after its answer was lost; S3 requests per push.

use std::sync::Arc;

use berth::{
    registry::Registry,
    storage::{s3::S3Driver, ByteStream, StorageDriver},
};
use bytes::Bytes;
use futures::StreamExt;

use crate::{
    common::{http::sha256, s3::S3Server},
    s3::{data, driver, error_code, with_digest, Client, MIB},
};

/// The registry in-process on an S3 driver, to look behind it.
struct Stack {
    s: S3Server,
    d: Arc<S3Driver>,
    registry: Registry,
    c: Client,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Stack {
    async fn start(s: S3Server) -> Stack {
        let d = Arc::new(driver(&s, ""));
        let cfg = berth::config::Config::from_yaml("http:\n  secret: s\n").unwrap();
        let registry = Registry::new(d.clone(), b"s", true);
        let app = berth::api::router(&cfg, registry.clone(), None, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let c = Client::new(format!("http://{addr}"));
        Stack {
            s,
            d,
            registry,
            c,
            server,
        }
    }

    /// Every key in the bucket.
    async fn keys(&self) -> Vec<String> {
        let r = self
            .s
            .client()
            .list_objects_v2()
            .bucket(&self.s.bucket)
            .send()
            .await
            .unwrap();
        let mut keys: Vec<String> = r
            .contents()
            .iter()
            .filter_map(|o| o.key().map(String::from))
            .collect();
        keys.sort();
        keys
    }

    /// Unfinished multipart uploads: Garage and moto list them; s3s-fs
    /// (which does not) keeps their parts as files, counted instead.
    async fn pending_uploads(&self) -> usize {
        if self.s.kind == "s3s-fs" {
            return self.s.pending_parts().await;
        }
        let r = self
            .s
            .client()
            .list_multipart_uploads()
            .bucket(&self.s.bucket)
            .send()
            .await
            .unwrap();
        r.uploads().len()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A wrong digest, on `PUT ?digest=` after POST and on `POST ?digest=`, with
/// a body of several parts: 400 DIGEST_INVALID, and the bucket is as empty
/// as before: no object, no multipart upload, no upload session.
async fn wrong_digest_leaves_nothing(s: S3Server) {
    let st = Stack::start(s).await;
    let body = data(12 * MIB, 21);
    let claimed = sha256(b"something else");
    let loc = st.c.start_upload("app").await;
    let r =
        st.c.http
            .put(st.c.url(&with_digest(&loc, &claimed)))
            .body(body.clone())
            .send()
            .await
            .unwrap();
    assert_eq!(error_code(r).await, (400, "DIGEST_INVALID".into()));
    assert_eq!(st.keys().await, Vec::<String>::new());
    assert_eq!(st.pending_uploads().await, 0);

    let r =
        st.c.post(&format!("/v2/app/blobs/uploads/?digest={claimed}"), body)
            .await;
    assert_eq!(error_code(r).await, (400, "DIGEST_INVALID".into()));
    assert_eq!(st.keys().await, Vec::<String>::new());
    assert_eq!(st.pending_uploads().await, 0);
}

#[tokio::test]
async fn wrong_digest_leaves_nothing_on_s3s_fs() {
    wrong_digest_leaves_nothing(S3Server::s3s_fs()).await;
}

#[tokio::test]
async fn wrong_digest_leaves_nothing_on_moto() {
    wrong_digest_leaves_nothing(S3Server::moto()).await;
}

/// 11 MiB (a part sent: a multipart upload exists), then either a broken
/// body or a body that never ends, whose request is then dropped (a client
/// gone mid-body: the server drops its handler).
fn body_of_11_mib(then_fail: bool) -> (ByteStream, tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let chunks = futures::stream::iter((0..11).map(|i| Ok(Bytes::from(data(MIB, 40 + i)))));
    let end = futures::stream::once(async move {
        let _ = tx.send(());
        if then_fail {
            Err(std::io::Error::other("connection reset"))
        } else {
            futures::future::pending().await
        }
    });
    (Box::pin(chunks.chain(end)), rx)
}

async fn broken_and_dropped_bodies_leave_nothing(s: S3Server) {
    let st = Stack::start(s).await;
    let digest: berth::registry::digest::Digest = sha256(b"never complete").parse().unwrap();

    let (body, _) = body_of_11_mib(true);
    let e = st
        .registry
        .push_blob("app", &digest, body)
        .await
        .unwrap_err();
    assert_eq!(e.code, berth::registry::error::Code::BlobUploadInvalid);
    assert_eq!(st.keys().await, Vec::<String>::new());
    assert_eq!(st.pending_uploads().await, 0, "aborted before answering");

    let (body, reached) = body_of_11_mib(false);
    let registry = st.registry.clone();
    let d = digest.clone();
    let push = tokio::spawn(async move { registry.push_blob("app", &d, body).await });
    reached.await.unwrap();
    // The part is in flight while the body waits: until it has landed.
    until("a part to be sent", || async {
        st.pending_uploads().await > 0
    })
    .await;
    push.abort();
    assert!(push.await.unwrap_err().is_cancelled());
    st.d.settled().await;
    assert_eq!(st.keys().await, Vec::<String>::new());
    assert_eq!(st.pending_uploads().await, 0, "the dropped writer aborted");
}

#[tokio::test]
async fn broken_and_dropped_bodies_leave_nothing_on_s3s_fs() {
    broken_and_dropped_bodies_leave_nothing(S3Server::s3s_fs()).await;
}

#[tokio::test]
async fn broken_and_dropped_bodies_leave_nothing_on_moto() {
    broken_and_dropped_bodies_leave_nothing(S3Server::moto()).await;
}

/// The session id and signed state of an upload Location.
fn id_and_token(c: &Client, loc: &str) -> (String, String) {
    let url = url::Url::parse(&c.url(loc)).unwrap();
    let id = url.path().rsplit('/').next().unwrap().to_string();
    let token = url.query_pairs().find(|(k, _)| k == "_state").unwrap().1;
    (id, token.into_owned())
}

/// A first PATCH retried from the POST's Location: after a first attempt
/// whose client went away mid-body (a part sent; the dropped writer aborts
/// its multipart upload, and the retry starts afresh), and after one whose
/// answer was lost (416 with the stored Range: the spec's resume flow, on
/// the recorded multipart upload). Each blob finishes byte-exact, and
/// afterwards only the blobs and their links are in the bucket.
async fn retried_first_patch(s: S3Server) {
    let st = Stack::start(s).await;
    let patch = |loc: &str, body: &[u8]| {
        st.c.http
            .patch(st.c.url(loc))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("0-{}", body.len() - 1))
            .body(body.to_vec())
            .send()
    };
    let put = |loc: &str, digest: &str, body: &[u8]| {
        st.c.http
            .put(st.c.url(&with_digest(loc, digest)))
            .body(body.to_vec())
            .send()
    };

    // Dropped mid-body.
    let blob = data(12 * MIB, 33);
    let first = 6 * MIB;
    let loc = st.c.start_upload("app").await;
    let (id, token) = id_and_token(&st.c, &loc);
    let session = st.registry.resume_upload("app", &id, &token).await.unwrap();
    let (body, reached) = body_of_11_mib(false);
    let registry = st.registry.clone();
    let append = tokio::spawn(async move { registry.append_upload(session, None, body).await });
    reached.await.unwrap();
    // The part is in flight while the body waits: until it has landed.
    until("a part to be sent", || async {
        st.pending_uploads().await > 0
    })
    .await;
    append.abort();
    assert!(append.await.unwrap_err().is_cancelled());
    st.d.settled().await;
    assert_eq!(st.pending_uploads().await, 0, "the dropped writer aborted");
    let r = patch(&loc, &blob[..first]).await.unwrap();
    assert_eq!(r.status(), 202);
    let next = r.headers()["location"].to_str().unwrap().to_string();
    let digest1 = sha256(&blob);
    let r = put(&next, &digest1, &blob[first..]).await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert!(
        st.c.pull_blob("app", &digest1).await.1 == blob,
        "bytes differ"
    );

    // Answer lost.
    let blob = data(12 * MIB, 31);
    let loc = st.c.start_upload("app").await;
    let lost = patch(&loc, &blob[..first]).await.unwrap();
    assert_eq!(lost.status(), 202);
    let r = patch(&loc, &blob[..first]).await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["range"], format!("0-{}", first - 1).as_str());
    assert_eq!(
        st.pending_uploads().await,
        1,
        "one multipart upload, one part"
    );
    let r = st.c.http.get(st.c.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let next = r.headers()["location"].to_str().unwrap().to_string();
    let digest2 = sha256(&blob);
    let r = put(&next, &digest2, &blob[first..]).await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert!(
        st.c.pull_blob("app", &digest2).await.1 == blob,
        "bytes differ"
    );

    assert_eq!(st.pending_uploads().await, 0);
    let mut expected = Vec::new();
    for d in [&digest1, &digest2] {
        let hex = &d[7..];
        expected.push(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ));
        expected.push(format!(
            "docker/registry/v2/repositories/app/_layers/sha256/{hex}/link"
        ));
    }
    expected.sort();
    assert_eq!(st.keys().await, expected);
}

#[tokio::test]
async fn retried_first_patch_on_s3s_fs() {
    retried_first_patch(S3Server::s3s_fs()).await;
}

#[tokio::test]
async fn retried_first_patch_on_moto() {
    retried_first_patch(S3Server::moto()).await;
}

/// S3 requests per push, counted by the driver: the figures in the README's
/// "S3 requests per operation". Exact, so that a regression shows.
#[tokio::test]
async fn requests_per_direct_push() {
    let st = Stack::start(S3Server::s3s_fs()).await;
    let d = st.d.clone();
    let count = |r0: u64| d.requests() - r0;

    let r0 = d.requests();
    let small = st.c.push_blob("app", b"{}", &[]).await;
    let small_put = count(r0);
    let r0 = d.requests();
    let tiny = b"ab".to_vec();
    let r =
        st.c.post(
            &format!("/v2/app/blobs/uploads/?digest={}", sha256(&tiny)),
            tiny,
        )
        .await;
    assert_eq!(r.status(), 201);
    let small_post = count(r0);
    let r0 = d.requests();
    let big = st.c.push_blob("app", &data(12 * MIB, 51), &[]).await;
    let big_put = count(r0);
    let r0 = d.requests();
    st.c.push_blob("app", &data(12 * MIB, 52), &[12 * MIB])
        .await;
    let chunked = count(r0);
    // docker's way: the whole layer in one PATCH, then an empty PUT.
    let layer = data(64 * 1024, 53);
    let r0 = d.requests();
    let small_chunked = st.c.push_blob("app", &layer, &[layer.len()]).await;
    let small_patch = count(r0);
    let r0 = d.requests();
    let head = |digest: String| {
        let url = st.c.url(&format!("/v2/app/blobs/{digest}"));
        st.c.http.head(url).send()
    };
    assert_eq!(head(big.clone()).await.unwrap().status(), 200);
    let head_present = count(r0);
    let r0 = d.requests();
    assert_eq!(head(sha256(b"absent")).await.unwrap().status(), 404);
    let head_missing = count(r0);
    eprintln!(
        "S3 requests: 2-byte POST+PUT {small_put}, 2-byte POST ?digest= {small_post}, \
         12 MiB POST+PUT {big_put}, 12 MiB POST+PATCH+PUT {chunked}, blob HEAD {head_present}, \
         blob HEAD missing {head_missing}, 64 KiB POST+PATCH+PUT {small_patch}"
    );
    assert!(!small.is_empty());
    // POST: startedat PUT. PUT: upload state GET and startedat HEAD (at
    // once), PutObject of the blob, link PUT, startedat DELETE.
    assert_eq!(small_put, 6);
    // PutObject of the blob, link PUT.
    assert_eq!(small_post, 2);
    // As 2 bytes, with CreateMultipartUpload, 2 UploadPart and
    // CompleteMultipartUpload for the PutObject.
    assert_eq!(big_put, 9);
    // POST 1; PATCH: state GET and startedat HEAD, CreateMultipartUpload,
    // UploadPart (10 MiB), state PUT (2 MiB tail); PUT: state GET (checks
    // the offset and resumes), UploadPart, Complete, state DELETE, blob
    // HEAD, CopyObject, DeleteObject, link PUT, startedat DELETE.
    assert_eq!(chunked, 15);
    // POST 1; PATCH: state GET and startedat HEAD, state PUT (the bytes
    // stay in it, under a part); PUT: state GET, blob HEAD (new), PutObject
    // of the blob from the state's bytes (no upload data object, no copy),
    // state DELETE, link PUT, startedat DELETE.
    assert_eq!(small_patch, 10);
    let (_, pulled) = st.c.pull_blob("app", &small_chunked).await;
    assert!(pulled == layer, "the blob reads back whole");
    assert_eq!(head_present, 2, "link GET, blob HEAD");
    assert_eq!(head_missing, 1, "link GET (missing)");

    // A missing object: `stat` also lists, to look for a directory.
    let missing = "/docker/registry/v2/blobs/sha256/00/00ab/data";
    let r0 = d.requests();
    assert!(d.stat_object(missing).await.unwrap_err().is_not_found());
    assert_eq!(count(r0), 1, "stat_object: one HeadObject");
    let r0 = d.requests();
    assert!(d.stat(missing).await.unwrap_err().is_not_found());
    assert_eq!(count(r0), 2, "stat: HeadObject, ListObjectsV2");
}

/// The chunked path's one server-side copy (upload data to blob), above
/// `multipartcopythresholdsize`: UploadPartCopy parts of
/// `multipartcopychunksize`, sent `multipartcopymaxconcurrency` at once, and
/// no HeadObject (the writer's commit told the size).
#[tokio::test]
async fn commit_copy_goes_in_parts_above_the_threshold() {
    let s = S3Server::s3s_fs();
    let cfg = berth::config::S3Config {
        multipartcopythresholdsize: 5 * MIB as u64,
        multipartcopychunksize: 5 * MIB as u64,
        ..s.config("")
    };
    let d = S3Driver::new(&cfg, false).unwrap();
    let body = data(12 * MIB + 3, 61);
    let (src, dst) = ("/up/data", "/blobs/data");
    let mut w = d.writer(src, 0).await.unwrap();
    w.write(Bytes::from(body.clone())).await.unwrap();
    w.commit().await.unwrap();
    let r0 = d.requests();
    d.rename(src, dst).await.unwrap();
    assert_eq!(
        d.requests() - r0,
        6,
        "CreateMultipartUpload, 3 UploadPartCopy, CompleteMultipartUpload, DeleteObject"
    );
    let mut got = Vec::new();
    let mut r = d.reader(dst, 0, None).await.unwrap();
    while let Some(c) = r.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert!(got == body, "copied bytes differ");
    assert!(d.stat(src).await.unwrap_err().is_not_found());
}

/// Polls `cond` (an observable state of the bucket) until it holds, at most
/// 20 s: what a dropped connection sets off on the server is not awaitable.
async fn until<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for {what}");
}

/// Through HTTP: a `PUT ?digest=` whose client goes away after 11 MiB of 12
/// (a part sent) leaves no blob and no multipart upload; the session stays
/// (its `startedat`), for the client to try again. (hyper ends the body with
/// an error, and the registry aborts before it answers; a handler dropped
/// instead is the case of `broken_and_dropped_bodies_leave_nothing`.)
async fn dropped_client_leaves_nothing(s: S3Server) {
    use tokio::io::AsyncWriteExt;
    let st = Stack::start(s).await;
    let loc = url::Url::parse(&st.c.url(&st.c.start_upload("app").await)).unwrap();
    let (id, _) = id_and_token(&st.c, loc.as_str());
    let target = format!(
        "{}?{}&digest={}",
        loc.path(),
        loc.query().unwrap(),
        sha256(b"never sent whole")
    );
    let addr = format!("{}:{}", loc.host_str().unwrap(), loc.port().unwrap());
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        12 * MIB
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&data(11 * MIB, 71)).await.unwrap();
    until("a part to be sent", || async {
        st.pending_uploads().await > 0
    })
    .await;
    drop(conn);
    until("the multipart upload to be aborted", || async {
        st.pending_uploads().await == 0
    })
    .await;
    let started = format!("docker/registry/v2/repositories/app/_uploads/{id}/startedat");
    assert_eq!(st.keys().await, [started]);
}

#[tokio::test]
async fn dropped_client_leaves_nothing_on_s3s_fs() {
    dropped_client_leaves_nothing(S3Server::s3s_fs()).await;
}

#[tokio::test]
async fn dropped_client_leaves_nothing_on_moto() {
    dropped_client_leaves_nothing(S3Server::moto()).await;
}
