//! Upload sessions: chunked, streamed, monolithic, sha512, status, cancel,
//! range enforcement, forged state, and replicas sharing only the secret.

use futures::stream;
use reqwest::{Body, Method, StatusCode};

use crate::client::{
    expect_error, expect_head_status, header, location, sha256, sha512, snapshot, Client,
};
use crate::common::Berth;

async fn patch(c: &Client, url: &str, start: usize, chunk: &[u8]) -> reqwest::Response {
    c.req(Method::PATCH, url)
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{}-{}", start, start + chunk.len() - 1),
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

#[tokio::test]
async fn chunked_upload_with_status_and_range_rules() {
    let b = Berth::start();
    let c = Client::new(&b);
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let url = c.start_upload("chunk/repo").await;

    let r = c.get(&url).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-0"));
    assert!(header(&r, "docker-upload-uuid").is_some());

    let r = patch(&c, &url, 0, &data[..1000]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some("0-999"));
    let url = location(&r);

    // A gap: refused with 416, nothing appended.
    expect_error(
        patch(&c, &url, 1500, &data[1500..2000]).await,
        416,
        "RANGE_INVALID",
    )
    .await;
    // A chunk already written: 416 too.
    expect_error(
        patch(&c, &url, 0, &data[..1000]).await,
        416,
        "RANGE_INVALID",
    )
    .await;

    let r = c.get(&url).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-999"));
    assert!(location(&r).contains("/v2/chunk/repo/blobs/uploads/"));

    let r = patch(&c, &url, 1000, &data[1000..2000]).await;
    let url = location(&r);
    // The final chunk travels with the PUT.
    let d = sha256(&data);
    let r = c
        .req(Method::PUT, &with_digest(&url, &d))
        .header("content-range", "2000-2999")
        .body(data[2000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), Some(d.as_str()));
    let got = c
        .get(&format!("/v2/chunk/repo/blobs/{d}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &data[..]);
    // The session is gone once committed.
    expect_error(c.get(&url).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(!snapshot(&b)
        .iter()
        .any(|p| p.contains("_uploads/") && p.ends_with("/data")));
}

#[tokio::test]
async fn streamed_patch_without_content_length() {
    let b = Berth::start();
    let c = Client::new(&b);
    let parts: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 10_000]).collect();
    let all: Vec<u8> = parts.concat();
    let url = c.start_upload("stream/repo").await;
    let body = Body::wrap_stream(stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>)));
    let r = c.req(Method::PATCH, &url).body(body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some("0-499999"));
    let d = sha256(&all);
    let r = c
        .req(Method::PUT, &with_digest(&location(&r), &d))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        c.head(&format!("/v2/stream/repo/blobs/{d}")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let b = Berth::start();
    let c = Client::new(&b);
    c.push_blob("mismatch/repo", b"unrelated").await;
    let before = snapshot(&b);
    let wrong = sha256(b"something else");
    let r = c
        .req(
            Method::POST,
            &format!("/v2/mismatch/repo/blobs/uploads/?digest={wrong}"),
        )
        .body("actual content")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(snapshot(&b), before);

    let url = c.start_upload("mismatch/repo").await;
    let r = patch(&c, &url, 0, b"chunk").await;
    let r = c
        .req(Method::PUT, &with_digest(&location(&r), &wrong))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(snapshot(&b), before, "the failed upload is discarded whole");
    expect_head_status(
        &c.head(&format!("/v2/mismatch/repo/blobs/{wrong}")).await,
        404,
    );
}

#[tokio::test]
async fn sha512_uploads() {
    let b = Berth::start();
    let c = Client::new(&b);
    let data = b"sha512 content".repeat(1000);
    let d = sha512(&data);
    let r = c
        .req(
            Method::POST,
            &format!("/v2/s512/repo/blobs/uploads/?digest={d}"),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(snapshot(&b)
        .iter()
        .any(|p| p.contains(&format!("blobs/sha512/{}", &d[7..9]))));
    let got = c
        .get(&format!("/v2/s512/repo/blobs/{d}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &data[..]);

    let url = c.start_upload("s512/repo").await;
    let r = patch(&c, &url, 0, &data[..5000]).await;
    let r = patch(&c, &location(&r), 5000, &data[5000..]).await;
    let r = c
        .req(Method::PUT, &with_digest(&location(&r), &d))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let bad = format!("sha512:{}", "0".repeat(128));
    let r = c
        .req(
            Method::POST,
            &format!("/v2/s512/repo/blobs/uploads/?digest={bad}"),
        )
        .body(data)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn forged_foreign_and_missing_state() {
    let b = Berth::start();
    let c = Client::new(&b);
    let url = c.start_upload("tok/repo").await;
    let before = snapshot(&b);
    let (base, token) = url.split_once("_state=").unwrap();
    let (payload, sig) = token.split_once('.').unwrap();

    let forged = format!("{base}_state={payload}x.{sig}");
    expect_error(
        patch(&c, &forged, 0, b"x").await,
        400,
        "BLOB_UPLOAD_INVALID",
    )
    .await;
    let unsigned = format!("{base}_state={payload}.");
    expect_error(
        patch(&c, &unsigned, 0, b"x").await,
        400,
        "BLOB_UPLOAD_INVALID",
    )
    .await;
    // The same token on another repository's path.
    let foreign = url.replace("/v2/tok/repo/", "/v2/tok/other/");
    expect_error(
        patch(&c, &foreign, 0, b"x").await,
        400,
        "BLOB_UPLOAD_INVALID",
    )
    .await;
    let missing = url.split('?').next().unwrap().to_string();
    expect_error(
        patch(&c, &missing, 0, b"x").await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_eq!(snapshot(&b), before, "refused requests touch nothing");

    // Another registry's secret: also refused.
    let other = Berth::start_with(|root, addr| {
        format!("storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: other-secret\n")
    });
    let moved = url.replace(&b.addr, &other.addr);
    expect_error(
        Client::new(&other).get(&moved).await,
        400,
        "BLOB_UPLOAD_INVALID",
    )
    .await;
}

#[tokio::test]
async fn cancel_upload() {
    let b = Berth::start();
    let c = Client::new(&b);
    let url = c.start_upload("cancel/repo").await;
    let r = patch(&c, &url, 0, b"partial").await;
    let url = location(&r);
    let r = c.req(Method::DELETE, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(c.get(&url).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(
        patch(&c, &url, 7, b"more").await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert!(!snapshot(&b).iter().any(|p| p.contains("_uploads")));
}

#[tokio::test]
async fn put_without_digest_is_refused() {
    let b = Berth::start();
    let c = Client::new(&b);
    let url = c.start_upload("nodigest/repo").await;
    expect_error(
        c.req(Method::PUT, &url).send().await.unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    let r = c
        .req(Method::PUT, &with_digest(&url, "sha256:short"))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
}

/// Two replicas share only storage and the secret: every request of one upload
/// alternates between them, and the running hash state travels in the URL.
#[tokio::test]
async fn upload_continues_on_another_replica() {
    let one = Berth::start();
    let root = one.root.to_str().unwrap().to_string();
    let two = Berth::start_on_root(std::path::Path::new(&root), &[]);
    let (c1, c2) = (Client::new(&one), Client::new(&two));
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();

    let url = c1.start_upload("cluster/repo").await;
    let r = patch(&c2, &url.replace(&one.addr, &two.addr), 0, &data[..1024]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = patch(
        &c1,
        &location(&r).replace(&two.addr, &one.addr),
        1024,
        &data[1024..3000],
    )
    .await;
    let r = patch(
        &c2,
        &location(&r).replace(&one.addr, &two.addr),
        3000,
        &data[3000..],
    )
    .await;
    let d = sha256(&data);
    let r = c1
        .req(
            Method::PUT,
            &with_digest(&location(&r).replace(&two.addr, &one.addr), &d),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c2
        .get(&format!("/v2/cluster/repo/blobs/{d}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &data[..]);
}
