//! Blob GET/HEAD/DELETE, ranges, digests, mounts.

use reqwest::{Method, StatusCode};

use crate::client::{expect_error, expect_head_status, header, sha256, snapshot, Client};
use crate::common::Berth;

#[tokio::test]
async fn version_check_and_unknown_paths() {
    let b = Berth::start();
    let c = Client::new(&b);
    let r = c.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let r = c.get("/v2/a/unknown-area").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let r = c
        .req(Method::POST, "/v2/a/manifests/latest")
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "UNSUPPORTED").await;
}

#[tokio::test]
async fn get_head_and_ranges() {
    let b = Berth::start();
    let c = Client::new(&b);
    let data: Vec<u8> = (0..100u8).collect();
    let d = c.push_blob("ranges/repo", &data).await;
    let path = format!("/v2/ranges/repo/blobs/{d}");

    let r = c.head(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), Some("100"));
    assert_eq!(header(&r, "docker-content-digest"), Some(d.as_str()));

    let r = c.get(&path).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    let r = c
        .req(Method::GET, &path)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), Some("bytes 10-19/100"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);

    let r = c
        .req(Method::GET, &path)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[95..]);

    let r = c
        .req(Method::GET, &path)
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-range"), Some("bytes */100"));
    expect_error(r, 416, "RANGE_INVALID").await;
}

#[tokio::test]
async fn unknown_and_invalid_digests() {
    let b = Berth::start();
    let c = Client::new(&b);
    c.push_blob("dig/repo", b"x").await;
    let zero = format!("sha256:{}", "0".repeat(64));
    expect_error(
        c.get(&format!("/v2/dig/repo/blobs/{zero}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    for bad in [
        "sha256:xyz",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nocolon",
        "sha256:",
        &format!("sha256:{}", "A".repeat(64)),
    ] {
        expect_error(
            c.get(&format!("/v2/dig/repo/blobs/{bad}")).await,
            400,
            "DIGEST_INVALID",
        )
        .await;
    }
    let before = snapshot(&b);
    let r = c
        .req(Method::POST, "/v2/dig/repo/blobs/uploads/?digest=md5:abc")
        .body("data")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(snapshot(&b), before, "a refused upload writes nothing");
}

#[tokio::test]
async fn blob_in_one_repository_is_not_visible_in_another() {
    let b = Berth::start();
    let c = Client::new(&b);
    let d = c.push_blob("owner/a", b"private").await;
    expect_head_status(&c.head(&format!("/v2/owner/b/blobs/{d}")).await, 404);
}

#[tokio::test]
async fn delete_unlinks_blob() {
    let b = Berth::start();
    let c = Client::new(&b);
    let d = c.push_blob("del/repo", b"bye").await;
    let path = format!("/v2/del/repo/blobs/{d}");
    let r = c.req(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    expect_head_status(&c.head(&path).await, 404);
    let r = c.req(Method::DELETE, &path).send().await.unwrap();
    expect_error(r, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn delete_refused_when_disabled() {
    let b = Berth::start_with(|root, addr| {
        format!("storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n")
    });
    let c = Client::new(&b);
    let d = c.push_blob("nodel/repo", b"keep").await;
    let before = snapshot(&b);
    let r = c
        .req(Method::DELETE, &format!("/v2/nodel/repo/blobs/{d}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "UNSUPPORTED").await;
    let (m, _) = c.push_image("nodel/repo", "t", "s").await;
    let r = c
        .req(Method::DELETE, &format!("/v2/nodel/repo/manifests/{m}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "UNSUPPORTED").await;
    assert!(snapshot(&b).len() > before.len());
    assert_eq!(
        c.head(&format!("/v2/nodel/repo/blobs/{d}")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn cross_repository_mount() {
    let b = Berth::start();
    let c = Client::new(&b);
    let d = c.push_blob("src/repo", b"shared layer").await;
    let r = c
        .req(
            Method::POST,
            &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), Some(d.as_str()));
    assert!(header(&r, "location")
        .unwrap()
        .ends_with(&format!("/v2/dst/repo/blobs/{d}")));
    assert_eq!(
        c.head(&format!("/v2/dst/repo/blobs/{d}")).await.status(),
        StatusCode::OK
    );

    // Not mountable (source lacks it): fall back to an upload session.
    let other = sha256(b"not there");
    let r = c
        .req(
            Method::POST,
            &format!("/v2/dst/repo/blobs/uploads/?mount={other}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location")
        .unwrap()
        .contains("/v2/dst/repo/blobs/uploads/"));
    let r = c
        .req(
            Method::POST,
            "/v2/dst/repo/blobs/uploads/?mount=sha256:bad&from=src/repo",
        )
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
}
