//! Errors that are right and leak nothing: storage failures answered with a
//! generic message and the request id (503 + Retry-After when a retry may
//! help), client mistakes answered 4xx before storage is touched, malformed
//! Range headers ignored, invalid manifest references unknown, and stale
//! upload Locations resumed the spec's way — on the filesystem and on S3.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::client::{expect_error, expect_head_status, header, location, sha256, Client};
use crate::common::{s3::S3Server, Berth};

/// Every file under `root` with its bytes: "storage unchanged" compares two.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let key = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(key, std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

async fn patch(c: &Client, url: &str, start: usize, chunk: &[u8]) -> reqwest::Response {
    c.req(Method::PATCH, url)
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{}-{}", start, start + (chunk.len() - 1)),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

fn with_digest(url: &str, d: &str) -> String {
    format!(
        "{url}{}digest={d}",
        if url.contains('?') { '&' } else { '?' }
    )
}

/// A 5xx error body: its code, and a message that names the request id (the
/// one in `X-Request-Id`) and none of `secrets`.
async fn expect_server_error(r: reqwest::Response, status: u16, code: &str, secrets: &[&str]) {
    assert_eq!(r.status().as_u16(), status, "status");
    let id = header(&r, "x-request-id")
        .expect("x-request-id")
        .to_string();
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(body["errors"][0]["code"], code, "{text}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(&format!("(request id {id})")), "{message}");
    for secret in secrets {
        assert!(!text.contains(secret), "{secret:?} leaked: {text}");
    }
}

/// The filesystem root turns into a plain file: every storage call fails
/// with ENOTDIR, which is no reason to retry — 500 UNKNOWN, generic, with
/// the request id; the path and the OS error go to the log under that id.
/// `/health/storage` (no periodic check) says as little. Storage is as it
/// was once the root comes back.
#[tokio::test]
async fn a_storage_failure_is_a_generic_500_with_the_request_id() {
    let b = Berth::start();
    let c = Client::new(&b);
    c.push_image("broken/repo", "v1", "a").await;
    let before = tree(&b.root);
    let root = b.root.display().to_string();

    let aside = b.root.with_extension("aside");
    std::fs::rename(&b.root, &aside).unwrap();
    std::fs::write(&b.root, b"not a directory").unwrap();
    let secrets = [
        root.as_str(),
        "Not a directory",
        "os error",
        "/docker/registry",
    ];

    let r = c
        .req(Method::GET, "/v2/broken/repo/manifests/v1")
        .header("x-request-id", "errors-test-manifest")
        .send()
        .await
        .unwrap();
    expect_server_error(r, 500, "UNKNOWN", &secrets).await;
    let r = c
        .req(Method::POST, "/v2/broken/repo/blobs/uploads/")
        .send()
        .await
        .unwrap();
    expect_server_error(r, 500, "UNKNOWN", &secrets).await;
    let r = c.get("/health/storage").await;
    expect_server_error(r, 503, "UNAVAILABLE", &secrets).await;

    let logs = b.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("request failed") && l.contains("errors-test-manifest"))
        .unwrap_or_else(|| panic!("no error line with the request id: {logs}"));
    assert!(
        line.contains("Not a directory"),
        "the log keeps the cause: {line}"
    );

    std::fs::remove_file(&b.root).unwrap();
    std::fs::rename(&aside, &b.root).unwrap();
    assert_eq!(tree(&b.root), before, "failed requests wrote nothing");
    assert_eq!(
        c.get("/v2/broken/repo/manifests/v1").await.status(),
        StatusCode::OK
    );
}

/// With the periodic storage check, the 503 every client reads names the
/// check but not the backend's text; the debug listener's report, for the
/// operator, keeps it.
#[tokio::test]
async fn the_storage_health_check_says_nothing_of_the_backend() {
    let debug = format!("127.0.0.1:{}", crate::common::free_port());
    let b = Berth::start_with(|root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n  debug:\n    addr: {debug}\nhealth:\n  storagedriver:\n    enabled: true\n    interval: 100ms\n    threshold: 1\n"
        )
    });
    assert!(crate::common::wait_for_port(
        &debug,
        Duration::from_secs(20)
    ));
    std::fs::create_dir_all(&b.root).unwrap();
    std::fs::rename(&b.root, b.root.with_extension("aside")).unwrap();
    std::fs::write(&b.root, b"not a directory").unwrap();

    // Bounded: the check runs every 100ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let r = crate::common::http::get(b.url("/health/storage"))
            .await
            .unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r.text().await.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "storage never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["errors"][0]["detail"]["storagedriver_filesystem"], "storage unavailable",
        "{body}"
    );
    assert!(!body.contains("Not a directory"), "{body}");
    let r = text_of(&format!("http://{debug}/debug/health")).await;
    assert!(r.contains("Not a directory"), "{r}");
}

async fn text_of(url: &str) -> String {
    crate::common::http::get(url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// S3 goes away: no connection is a failure a retry may cure — 503
/// UNAVAILABLE with Retry-After, saying nothing of the bucket, the endpoint
/// or the key; the log has them.
#[tokio::test]
async fn an_unreachable_s3_is_a_503_with_retry_after() {
    let s3 = S3Server::s3s_fs();
    let endpoint = s3.endpoint.clone();
    // tagttl 0s: no per-replica memory of the pushed blob, so the GET and
    // HEAD below go to the store (a warm entry would answer without it).
    let b = Berth::start_with(|_root, addr| {
        format!(
            "storage:\n{}  cache:\n    manifests:\n      tagttl: 0s\nhttp:\n  addr: {addr}\n  secret: s\n",
            s3.yaml("/hidden-root-7q")
        )
    });
    let c = Client::new(&b);
    let d = c.push_blob("s3gone/repo", b"bytes on s3").await;
    drop(s3);

    let secrets = [
        endpoint.as_str(),
        "hidden-root-7q",
        "127.0.0.1",
        "GetObject",
        "HeadObject",
        "/docker/registry",
    ];
    let r = c.get(&format!("/v2/s3gone/repo/blobs/{d}")).await;
    assert_eq!(header(&r, "retry-after"), Some("5"));
    expect_server_error(r, 503, "UNAVAILABLE", &secrets).await;
    let r = c.head(&format!("/v2/s3gone/repo/blobs/{d}")).await;
    expect_head_status(&r, 503);
    assert_eq!(header(&r, "retry-after"), Some("5"));
    let r = c.get("/health/storage").await;
    expect_server_error(r, 503, "UNAVAILABLE", &secrets).await;
    let logs = b.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("request failed") && l.contains("s3 HeadObject")),
        "the log keeps the cause: {logs}"
    );
}

/// One raw HTTP/1.1 exchange: `head` then `body` as bytes, and the answer
/// read to its end (bounded by a read timeout). `cut`: close the write side
/// after the body, as a client that goes away mid-body does (else send
/// `Connection: close` in `head`: hyper drops a pending answer when a
/// client half-closes after a complete request).
fn raw_exchange(addr: &str, head: &str, body: &[u8], cut: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    if cut {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A manifest body that breaks off is the client's fault (400
/// MANIFEST_INVALID), one too large is 413; neither touches storage.
#[tokio::test]
async fn broken_and_oversized_manifest_bodies() {
    let b = Berth::start();
    let c = Client::new(&b);
    c.push_image("body/repo", "v1", "a").await;
    let before = tree(&b.root);
    let addr = b.addr.clone();
    let put = move |extra: &str| {
        format!(
            "PUT /v2/body/repo/manifests/v2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n{extra}\r\n"
        )
    };
    let (cut, chunked, huge) = tokio::task::spawn_blocking(move || {
        (
            // Announces 1000 bytes, sends 20 and stops.
            raw_exchange(
                &addr,
                &put("Content-Length: 1000\r\n"),
                b"{\"schemaVersion\": 2,",
                true,
            ),
            // A chunked body whose second chunk size is not a number.
            raw_exchange(
                &addr,
                &put("Transfer-Encoding: chunked\r\n"),
                b"14\r\n{\"schemaVersion\": 2,\r\nzz\r\n",
                true,
            ),
            raw_exchange(
                &addr,
                &put("Content-Length: 4194305\r\nConnection: close\r\n"),
                &vec![b' '; 4194305],
                false,
            ),
        )
    })
    .await
    .unwrap();
    for answer in [&cut, &chunked] {
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("MANIFEST_INVALID"), "{answer}");
    }
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    assert!(huge.contains("MANIFEST_INVALID"), "{huge}");
    assert_eq!(tree(&b.root), before);
    expect_error(
        c.get("/v2/body/repo/manifests/v2").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

/// Content-Range mistakes: a range near u64::MAX, one that does not start at
/// the upload's offset, one the Content-Length disagrees with — each the
/// spec's error before any byte is written.
#[tokio::test]
async fn content_range_mistakes_are_refused_before_writing() {
    let b = Berth::start();
    let c = Client::new(&b);
    let url = c.start_upload("crange/repo").await;
    let r = patch(&c, &url, 0, b"0123456789").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let url = location(&r);
    let before = tree(&b.root);

    for (range, status, code) in [
        // Starts right, but 3 bytes are not what it announces.
        ("10-18446744073709551615", 400, "SIZE_INVALID"),
        // Longer than any u64 can say.
        ("0-18446744073709551615", 416, "RANGE_INVALID"),
        ("10-18446744073709551616", 416, "RANGE_INVALID"),
        ("12-9", 416, "RANGE_INVALID"),
        ("+10-12", 400, "BLOB_UPLOAD_INVALID"),
        ("ten-twelve", 400, "BLOB_UPLOAD_INVALID"),
    ] {
        let r = c
            .req(Method::PATCH, &url)
            .header("content-range", range)
            .body(b"abc".to_vec())
            .send()
            .await
            .unwrap();
        expect_error(r, status, code).await;
        assert_eq!(tree(&b.root), before, "{range}");
    }
    // A gap (the last byte a u64 can name, too), and a chunk already
    // written: 416 with where the upload stands.
    for start in [usize::MAX, 11, 0] {
        let r = patch(&c, &url, start, b"a").await;
        assert_eq!(header(&r, "range"), Some("0-9"));
        expect_error(r, 416, "RANGE_INVALID").await;
    }
    // The body's length disagrees with its range.
    let r = c
        .req(Method::PATCH, &url)
        .header("content-range", "10-19")
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "SIZE_INVALID").await;
    assert_eq!(tree(&b.root), before);

    // The upload goes on as if nothing happened.
    let r = patch(&c, &url, 10, b"abc").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let d = sha256(b"0123456789abc");
    let r = c
        .req(Method::PUT, &with_digest(&location(&r), &d))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// RFC 9110: a Range a server does not understand is ignored (200, the whole
/// blob); a well-formed one that misses the blob is 416.
#[tokio::test]
async fn a_malformed_range_is_ignored() {
    let b = Berth::start();
    let c = Client::new(&b);
    let data: Vec<u8> = (0..100u8).collect();
    let d = c.push_blob("range/repo", &data).await;
    let path = format!("/v2/range/repo/blobs/{d}");
    for ignored in [
        "bytes=5-2",
        "bytes=a-b",
        "bytes=+1-2",
        "bytes=0-1,5-6",
        "lines=0-1",
        "bytes",
        "bytes=--1",
    ] {
        let r = c
            .req(Method::GET, &path)
            .header("range", ignored)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{ignored}");
        assert_eq!(header(&r, "content-range"), None);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..], "{ignored}");
    }
    let r = c
        .req(Method::GET, &path)
        .header("range", "bytes=98-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), Some("bytes 98-99/100"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[98..]);
    for unsatisfiable in ["bytes=100-", "bytes=99999999999999999999999-", "bytes=-0"] {
        let r = c
            .req(Method::GET, &path)
            .header("range", unsatisfiable)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-range"), Some("bytes */100"));
        expect_error(r, 416, "RANGE_INVALID").await;
    }
}

/// A reference that cannot name a manifest is an unknown manifest (404),
/// on GET and HEAD alike.
#[tokio::test]
async fn an_invalid_manifest_reference_is_unknown() {
    let b = Berth::start();
    let c = Client::new(&b);
    c.push_image("refs/repo", "v1", "a").await;
    for bad in [
        "-leading-dash",
        ".hidden",
        &"t".repeat(129),
        "sha256:short",
        "sha256:ZZ",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "a:b:c",
        "%20",
    ] {
        let path = format!("/v2/refs/repo/manifests/{bad}");
        expect_error(c.get(&path).await, 404, "MANIFEST_UNKNOWN").await;
        expect_head_status(&c.head(&path).await, 404);
    }
}

/// The spec's resume flow for a stale Location (its offset behind what is
/// stored: a chunk's answer was lost): PATCH and PUT on it are 416 with the
/// real Range and write nothing; GET on it is 204 with the real Range and a
/// fresh Location, from which the upload goes on and completes.
async fn stale_location_resumes(b: &Berth, store: &Path) {
    let c = Client::new(b);
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 253) as u8).collect();
    let d = sha256(&data);
    let first = c.start_upload("stale/repo").await;
    let r = patch(&c, &first, 0, &data[..1000]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let second = location(&r);
    let r = patch(&c, &second, 1000, &data[1000..2000]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let current = location(&r);
    let before = tree(store);

    // The client never saw that answer: it retries with `second`.
    let r = patch(&c, &second, 1000, &data[1000..2000]).await;
    assert_eq!(header(&r, "range"), Some("0-1999"));
    expect_error(r, 416, "RANGE_INVALID").await;
    let r = c
        .req(Method::PUT, &with_digest(&second, &d))
        .body(data[1000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "range"), Some("0-1999"));
    expect_error(r, 416, "RANGE_INVALID").await;
    let r = patch(&c, &first, 0, &data[..1000]).await;
    assert_eq!(header(&r, "range"), Some("0-1999"));
    expect_error(r, 416, "RANGE_INVALID").await;
    assert_eq!(tree(store), before, "refused chunks wrote nothing");

    let r = c.get(&current).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-1999"));
    let r = c.get(&second).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-1999"));
    let fresh = location(&r);
    assert_ne!(fresh, second);
    assert_eq!(tree(store), before, "a status writes nothing");

    let r = patch(&c, &fresh, 2000, &data[2000..]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some("0-2999"));
    let r = c
        .req(Method::PUT, &with_digest(&location(&r), &d))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c.get(&format!("/v2/stale/repo/blobs/{d}")).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..]);

    // The same flow cannot cheat the digest: a resumed upload is checked
    // against the bytes stored.
    let url = c.start_upload("stale/repo").await;
    let r = patch(&c, &url, 0, b"aaaa").await;
    let _lost = location(&r);
    let r = c.get(&url).await;
    let fresh = location(&r);
    let r = c
        .req(Method::PUT, &with_digest(&fresh, &sha256(b"bbbb")))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
}

/// A PATCH whose body breaks off keeps what arrived, before it answers: the
/// Location it came with is then stale (416 with the stored Range), and GET
/// gives a fresh one to go on from. The blob ends up exactly right.
async fn interrupted_chunk_resumes_where_storage_stands(b: &Berth) {
    let c = Client::new(b);
    let data: Vec<u8> = (0..7096u32).map(|i| (i % 249) as u8).collect();
    let url = c.start_upload("broken/chunk").await;
    let path = url.strip_prefix(&c.base).unwrap().to_string();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        b.addr,
        data.len()
    );
    let (addr, sent) = (b.addr.clone(), data[..4096].to_vec());
    let answer = tokio::task::spawn_blocking(move || raw_exchange(&addr, &head, &sent, true))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("BLOB_UPLOAD_INVALID"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("range: 0-4095"),
        "{answer}"
    );

    let r = patch(&c, &url, 0, &data).await;
    assert_eq!(header(&r, "range"), Some("0-4095"));
    expect_error(r, 416, "RANGE_INVALID").await;
    let r = c.get(&url).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-4095"));
    let r = patch(&c, &location(&r), 4096, &data[4096..]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some("0-7095"));
    let d = sha256(&data);
    let r = c
        .req(Method::PUT, &with_digest(&location(&r), &d))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c.get(&format!("/v2/broken/chunk/blobs/{d}")).await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..]);
}

#[tokio::test]
async fn a_stale_location_resumes_on_the_filesystem() {
    let b = Berth::start();
    let root = b.root.clone();
    stale_location_resumes(&b, &root).await;
    interrupted_chunk_resumes_where_storage_stands(&b).await;
}

/// On S3 the stored size comes from the upload state object.
#[tokio::test]
async fn a_stale_location_resumes_on_s3() {
    let s3 = S3Server::s3s_fs();
    let b = Berth::start_with(|_root, addr| {
        format!(
            "storage:\n{}  redirect:\n    disable: true\nhttp:\n  addr: {addr}\n  secret: s\n",
            s3.yaml("/stale")
        )
    });
    stale_location_resumes(&b, &s3.root).await;
    interrupted_chunk_resumes_where_storage_stands(&b).await;
}
