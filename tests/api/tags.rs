//! Tag listing and the catalog, with pagination and Link headers.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::{expect_error, header, Client};
use crate::common::Berth;

#[tokio::test]
async fn tags_paginate_with_link() {
    let b = Berth::start();
    let c = Client::new(&b);
    let (_, body) = c.push_image("tags/repo", "a", "t").await;
    let m: Value = serde_json::from_slice(&body).unwrap();
    for tag in ["d", "b", "c", "e"] {
        let r = c
            .put_manifest("tags/repo", tag, crate::client::OCI_MANIFEST, &m)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let all: Value = c.get("/v2/tags/repo/tags/list").await.json().await.unwrap();
    assert_eq!(
        all,
        json!({"name": "tags/repo", "tags": ["a", "b", "c", "d", "e"]})
    );

    let r = c.get("/v2/tags/repo/tags/list?n=2").await;
    let link = header(&r, "link").unwrap().to_string();
    assert!(
        link.contains("/v2/tags/repo/tags/list?n=2&last=b") && link.ends_with("rel=\"next\""),
        "{link}"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["a", "b"]));
    let r = c.get("/v2/tags/repo/tags/list?n=2&last=d").await;
    assert!(header(&r, "link").is_none(), "last page has no Link");
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["e"]));
    let r = c.get("/v2/tags/repo/tags/list?n=0").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    expect_error(
        c.get("/v2/tags/repo/tags/list?n=abc").await,
        400,
        "PAGINATION_NUMBER_INVALID",
    )
    .await;
    expect_error(
        c.get("/v2/tags/unknown/tags/list").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn catalog_lists_multilevel_names_in_pages() {
    let b = Berth::start();
    let c = Client::new(&b);
    for name in [
        "zeta",
        "alpha/one",
        "alpha/one/deeper",
        "alpha-two",
        "beta/x/y/z",
    ] {
        c.push_image(name, "v1", name).await;
    }
    // A repository with only blobs has no manifests: not in the catalog.
    c.push_blob("blobs/only", b"b").await;
    let all: Value = c.get("/v2/_catalog").await.json().await.unwrap();
    // Component order, as distribution walks the tree: "alpha/one/…" before "alpha-two".
    let expected = json!([
        "alpha/one",
        "alpha/one/deeper",
        "alpha-two",
        "beta/x/y/z",
        "zeta"
    ]);
    assert_eq!(all["repositories"], expected);
    let r = c.get("/v2/_catalog?n=2").await;
    let link = header(&r, "link").unwrap().to_string();
    assert!(
        link.contains("/v2/_catalog?n=2&last=alpha%2Fone%2Fdeeper"),
        "{link}"
    );
    let page: Value = r.json().await.unwrap();
    assert_eq!(
        page["repositories"],
        json!(["alpha/one", "alpha/one/deeper"])
    );
    let r = c.get("/v2/_catalog?n=2&last=alpha%2Fone%2Fdeeper").await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["repositories"], json!(["alpha-two", "beta/x/y/z"]));
}
