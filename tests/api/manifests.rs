//! Manifests: every supported type, negotiation, references that must exist,
//! size limit, subject/referrers, deletes.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{
    expect_error, header, image_manifest, sha256, snapshot, Client, DOCKER_LIST, DOCKER_MANIFEST,
    OCI_INDEX, OCI_MANIFEST,
};
use crate::common::Berth;

#[tokio::test]
async fn oci_manifest_by_tag_and_digest() {
    let b = Berth::start();
    let c = Client::new(&b);
    let (d, bytes) = c.push_image("img/repo", "v1", "a").await;
    for reference in ["v1", d.as_str()] {
        let r = c.get(&format!("/v2/img/repo/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), Some(OCI_MANIFEST));
        assert_eq!(header(&r, "docker-content-digest"), Some(d.as_str()));
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
        let r = c.head(&format!("/v2/img/repo/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "content-length"),
            Some(bytes.len().to_string().as_str())
        );
    }
    expect_error(
        c.get("/v2/img/repo/manifests/nope").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let zero = format!("sha256:{}", "0".repeat(64));
    expect_error(
        c.get(&format!("/v2/img/repo/manifests/{zero}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // A malformed reference names no manifest (see tests/api/errors.rs).
    expect_error(
        c.get("/v2/img/repo/manifests/sha256:zz").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        c.get("/v2/img/other/manifests/v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn content_negotiation() {
    let b = Berth::start();
    let c = Client::new(&b);
    c.push_image("neg/repo", "v1", "n").await;
    let get = |accept: &'static str| {
        c.req(Method::GET, "/v2/neg/repo/manifests/v1")
            .header("accept", accept)
            .send()
    };
    assert_eq!(get(OCI_MANIFEST).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("*/*").await.unwrap().status(), StatusCode::OK);
    let both = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json;q=0.9";
    assert_eq!(get(both).await.unwrap().status(), StatusCode::OK);
    expect_error(get(DOCKER_MANIFEST).await.unwrap(), 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn docker_schema2_and_manifest_list() {
    let b = Berth::start();
    let c = Client::new(&b);
    let cfg = c.push_blob("dock/repo", b"{\"os\":\"linux\"}").await;
    let layer = c.push_blob("dock/repo", b"layer").await;
    let m = json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 15},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 5},
            {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
             "digest": sha256(b"windows base layer elsewhere"), "size": 1000,
             "urls": ["https://mcr.microsoft.com/v2/windows/blobs/x"]}
        ]
    });
    let r = c
        .put_manifest("dock/repo", "amd64", DOCKER_MANIFEST, &m)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "foreign layers are accepted"
    );
    let md = header(&r, "docker-content-digest").unwrap().to_string();
    let list = json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": md, "size": 400,
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    });
    let r = c
        .put_manifest("dock/repo", "latest", DOCKER_LIST, &list)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get("/v2/dock/repo/manifests/latest").await;
    assert_eq!(header(&r, "content-type"), Some(DOCKER_LIST));
    let r = c.get("/v2/dock/repo/manifests/amd64").await;
    assert_eq!(header(&r, "content-type"), Some(DOCKER_MANIFEST));
}

#[tokio::test]
async fn references_must_exist() {
    let b = Berth::start();
    let c = Client::new(&b);
    let cfg = c.push_blob("refs/repo", b"{}").await;
    let before = snapshot(&b);
    let missing = sha256(b"never pushed");
    let r = c
        .put_manifest(
            "refs/repo",
            "v1",
            OCI_MANIFEST,
            &image_manifest(&cfg, 2, &missing, 12),
        )
        .await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 10}]});
    expect_error(
        c.put_manifest("refs/repo", "idx", OCI_INDEX, &index).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(snapshot(&b), before, "a refused manifest writes nothing");
    expect_error(
        c.get("/v2/refs/repo/manifests/v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn oci_index_and_artifacts() {
    let b = Berth::start();
    let c = Client::new(&b);
    let (a, _) = c.push_image("multi/repo", "amd64", "amd").await;
    let (m, _) = c.push_image("multi/repo", "arm64", "arm").await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": a, "size": 1, "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": m, "size": 1, "platform": {"architecture": "arm64", "os": "linux"}}]});
    let r = c
        .put_manifest("multi/repo", "latest", OCI_INDEX, &index)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get("/v2/multi/repo/manifests/latest").await;
    assert_eq!(header(&r, "content-type"), Some(OCI_INDEX));

    // An artifact: empty config, custom artifactType.
    let empty = c.push_blob("multi/repo", b"{}").await;
    let blob = c.push_blob("multi/repo", b"helm chart bytes").await;
    let art = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.cncf.helm.chart.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": blob, "size": 16}]});
    assert_eq!(
        c.put_manifest("multi/repo", "chart", OCI_MANIFEST, &art)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn invalid_manifests() {
    let b = Berth::start();
    let c = Client::new(&b);
    let before = snapshot(&b);
    let put_raw = |body: Vec<u8>, ct: &'static str, reference: &str| {
        c.req(Method::PUT, &format!("/v2/bad/repo/manifests/{reference}"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    expect_error(
        put_raw(b"not json".to_vec(), OCI_MANIFEST, "v1")
            .await
            .unwrap(),
        400,
        "MANIFEST_INVALID",
    )
    .await;
    let schema1 = br#"{"schemaVersion":1,"name":"bad/repo","tag":"v1","fsLayers":[]}"#.to_vec();
    let r = put_raw(
        schema1,
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "v1",
    )
    .await
    .unwrap();
    expect_error(r, 400, "MANIFEST_INVALID").await;
    let index =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}))
            .unwrap();
    expect_error(
        put_raw(index.clone(), OCI_MANIFEST, "v1").await.unwrap(),
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // Put by digest: the digest must be the content's.
    let wrong = sha256(b"other");
    expect_error(
        put_raw(index.clone(), OCI_INDEX, &wrong).await.unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    expect_error(
        put_raw(index, OCI_INDEX, "bad:tag!").await.unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    // Over the 4 MiB limit.
    let mut huge = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"x":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 4 * 1024 * 1024));
    huge.extend(br#""}}"#);
    expect_error(
        put_raw(huge, OCI_INDEX, "big").await.unwrap(),
        413,
        "MANIFEST_INVALID",
    )
    .await;
    assert_eq!(snapshot(&b), before);

    // A valid empty index by digest works.
    let ok =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}))
            .unwrap();
    let r = put_raw(ok.clone(), OCI_INDEX, &sha256(&ok)).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn subject_and_referrers() {
    let b = Berth::start();
    let c = Client::new(&b);
    let (subject, subject_bytes) = c.push_image("ref/repo", "v1", "base").await;
    let empty = c.push_blob("ref/repo", b"{}").await;
    let sig = c.push_blob("ref/repo", b"signature").await;
    let referrer = |artifact: &str| {
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sig, "size": 9}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_bytes.len()},
            "annotations": {"org.example.kind": artifact}})
    };
    let sig_m = referrer("application/vnd.example.signature");
    let sbom_m = referrer("application/vnd.example.sbom");
    let sig_d = sha256(&serde_json::to_vec(&sig_m).unwrap());
    let r = c
        .put_manifest("ref/repo", &sig_d, OCI_MANIFEST, &sig_m)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject"), Some(subject.as_str()));
    let r = c
        .put_manifest("ref/repo", "sbom", OCI_MANIFEST, &sbom_m)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = c.get(&format!("/v2/ref/repo/referrers/{subject}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), Some(OCI_INDEX));
    let index: Value = r.json().await.unwrap();
    let list = index["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().any(|d| d["digest"] == sig_d.as_str()
        && d["artifactType"] == "application/vnd.example.signature"
        && d["annotations"]["org.example.kind"] == "application/vnd.example.signature"));

    let r = c
        .get(&format!(
            "/v2/ref/repo/referrers/{subject}?artifactType=application/vnd.example.sbom"
        ))
        .await;
    assert_eq!(header(&r, "oci-filters-applied"), Some("artifactType"));
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );

    // Unknown subject: an empty index, not an error.
    let r = c
        .get(&format!("/v2/ref/repo/referrers/{}", sha256(b"nothing")))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    expect_error(
        c.get("/v2/ref/repo/referrers/sha256:bad").await,
        400,
        "DIGEST_INVALID",
    )
    .await;

    // Deleting a referrer removes it from the list.
    let r = c
        .req(Method::DELETE, &format!("/v2/ref/repo/manifests/{sig_d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let index: Value = c
        .get(&format!("/v2/ref/repo/referrers/{subject}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn delete_by_tag_untags_and_by_digest_removes() {
    let b = Berth::start();
    let c = Client::new(&b);
    let (d, _) = c.push_image("delm/repo", "v1", "x").await;
    let r = c
        .put_manifest(
            "delm/repo",
            "v2",
            OCI_MANIFEST,
            &serde_json::from_slice(
                &c.get("/v2/delm/repo/manifests/v1")
                    .await
                    .bytes()
                    .await
                    .unwrap(),
            )
            .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = c
        .req(Method::DELETE, "/v2/delm/repo/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "delete by tag untags");
    expect_error(
        c.get("/v2/delm/repo/manifests/v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        c.get(&format!("/v2/delm/repo/manifests/{d}"))
            .await
            .status(),
        StatusCode::OK
    );
    let tags: Value = c.get("/v2/delm/repo/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["v2"]));

    let r = c
        .req(Method::DELETE, &format!("/v2/delm/repo/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    expect_error(
        c.get(&format!("/v2/delm/repo/manifests/{d}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        c.get("/v2/delm/repo/manifests/v2").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let r = c
        .req(Method::DELETE, &format!("/v2/delm/repo/manifests/{d}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
}
