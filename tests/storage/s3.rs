//! The S3 driver against three local S3 implementations (Garage, a store
//! run in production; s3s-fs, strict SigV4; moto): the shared suite,
//! resumption across replicas, presigned redirects, abandoned uploads,
//! distribution's key layout, request counts, and a push/pull through
//! `berth` itself.

use std::sync::Arc;

use berth::storage::{s3::S3Driver, testsuite, StorageDriver};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::common::{http::sha256, noise::xorshift_bytes, s3::S3Server, Berth};

pub(crate) const MIB: usize = 1024 * 1024;

/// Deterministic, incompressible bytes.
pub(crate) fn data(len: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(seed | 1, len)
}

pub(crate) fn driver(s: &S3Server, root: &str) -> S3Driver {
    S3Driver::new(&s.config(root), false).unwrap()
}

/// The JSON header line of an upload's state object.
async fn upload_state(d: &S3Driver, path: &str) -> serde_json::Value {
    let raw = d
        .get_content(&format!("{path}.berth-upload"))
        .await
        .expect("state object");
    let line = raw.split(|b| *b == b'\n').nth(1).unwrap();
    serde_json::from_slice(line).unwrap()
}

#[tokio::test]
async fn suite_on_s3s_fs() {
    let s = S3Server::s3s_fs();
    testsuite::run_all(&driver(&s, "/suite-root")).await;
}

#[tokio::test]
async fn suite_on_garage() {
    let s = S3Server::garage();
    testsuite::run_all(&driver(&s, "/suite-root")).await;
}

#[tokio::test]
async fn suite_on_moto() {
    let s = S3Server::moto();
    testsuite::run_all(&driver(&s, "")).await;
}

/// A chunked upload whose PATCHes land on alternating replicas, with chunks
/// below and above 5 MiB and a retried chunk, reads back byte for byte.
async fn resumed_across_replicas(s: &S3Server) {
    let (a, b) = (driver(s, "r"), driver(s, "r"));
    let replicas = [&a, &b];
    let path = "/docker/registry/v2/repositories/app/_uploads/u1/data";
    let body = data(30 * MIB, 7);
    let cuts = [MIB, 7 * MIB, 3 * MIB, 12 * MIB, 2 * MIB];
    let mut offset = 0usize;
    for (i, len) in cuts.iter().enumerate() {
        let d = replicas[i % 2];
        let mut w = d.writer(path, offset as u64).await.unwrap();
        // Two writes per chunk, as a request body arrives in pieces.
        let chunk = &body[offset..offset + len];
        w.write(Bytes::copy_from_slice(&chunk[..len / 3]))
            .await
            .unwrap();
        w.write(Bytes::copy_from_slice(&chunk[len / 3..]))
            .await
            .unwrap();
        offset = w.close().await.unwrap() as usize;
        assert_eq!(offset, body[..offset].len());
        // Parts never exceed chunksize and the tail stays under 5 MiB: a
        // writer never held more than one part.
        let state = upload_state(d, path).await;
        let parts = state["parts"].as_array().unwrap();
        let in_parts: u64 = parts.iter().map(|p| p["size"].as_u64().unwrap()).sum();
        assert!(parts
            .iter()
            .all(|p| p["size"].as_u64().unwrap() <= 10 * MIB as u64));
        assert!(offset as u64 - in_parts < 5 * MIB as u64, "tail {i}");
        if i == 1 {
            assert!(!parts.is_empty(), "8 MiB so far: one part");
        }
    }
    // A retried chunk: the same bytes again from the same offset, on the
    // other replica, after a chunk the first replica wrote (in the tail).
    let before = offset;
    let extra = &body[before..before + MIB];
    let mut w = a.writer(path, before as u64).await.unwrap();
    w.write(Bytes::copy_from_slice(extra)).await.unwrap();
    assert_eq!(w.close().await.unwrap() as usize, before + MIB);
    let mut w = b.writer(path, before as u64).await.unwrap();
    w.write(Bytes::copy_from_slice(extra)).await.unwrap();
    offset = w.close().await.unwrap() as usize;
    assert_eq!(offset, before + MIB);
    // Inside an uploaded part, truncation is refused and changes nothing.
    assert!(matches!(
        a.writer(path, 1).await.err(),
        Some(berth::storage::StorageError::InvalidOffset { .. })
    ));
    let mut w = a.writer(path, offset as u64).await.unwrap();
    w.write(Bytes::copy_from_slice(&body[offset..]))
        .await
        .unwrap();
    assert_eq!(w.commit().await.unwrap() as usize, body.len());
    assert!(
        a.get_content(&format!("{path}.berth-upload"))
            .await
            .unwrap_err()
            .is_not_found(),
        "commit removes the state"
    );

    // Streamed back in small pieces, never as one buffer.
    let mut stream = b.reader(path, 0, None).await.unwrap();
    let (mut h, mut n, mut pieces, mut largest) = (Sha256::new(), 0, 0, 0);
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        assert_eq!(&c[..], &body[n..n + c.len()], "bytes at {n}");
        h.update(&c);
        n += c.len();
        pieces += 1;
        largest = largest.max(c.len());
    }
    assert_eq!(n, body.len());
    assert_eq!(
        format!("sha256:{}", hex::encode(h.finalize())),
        sha256(&body)
    );
    assert!(
        pieces > 30 && largest <= 4 * MIB,
        "{pieces} pieces, largest {largest}"
    );
    // A range across a part boundary.
    let mut got = Vec::new();
    let mut r = a.reader(path, 8 * MIB as u64 - 10, Some(20)).await.unwrap();
    while let Some(c) = r.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, &body[8 * MIB - 10..8 * MIB + 10]);
}

#[tokio::test]
async fn resumed_across_replicas_on_s3s_fs() {
    resumed_across_replicas(&S3Server::s3s_fs()).await;
}

#[tokio::test]
async fn resumed_across_replicas_on_garage() {
    resumed_across_replicas(&S3Server::garage()).await;
}

#[tokio::test]
async fn resumed_across_replicas_on_moto() {
    resumed_across_replicas(&S3Server::moto()).await;
}

#[tokio::test]
async fn presigned_redirects_serve_the_bytes() {
    let s = S3Server::s3s_fs();
    let path = "/docker/registry/v2/blobs/sha256/ab/abcdef/data";
    let body = data(100_000, 3);
    let d = driver(&s, "");
    d.put_content(path, Bytes::from(body.clone()))
        .await
        .unwrap();
    let before = d.requests();
    let url = d.redirect_url(path, "GET").await.unwrap().expect("a URL");
    assert_eq!(d.requests(), before, "presigning sends nothing");
    assert!(url.starts_with(&s.endpoint), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let got = crate::common::http::get(&url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), body);
    // A tampered signature is refused: the server really checks it.
    let mut bad = url::Url::parse(&url).unwrap();
    let pairs: Vec<(String, String)> = bad
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "X-Amz-Signature" {
                let flipped = if v.starts_with('0') { "1" } else { "0" };
                format!("{flipped}{}", &v[1..])
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    bad.query_pairs_mut().clear().extend_pairs(pairs);
    assert_eq!(crate::common::http::get(bad).await.unwrap().status(), 403);

    // redirectendpoint: the public name in URLs, the private one for the API.
    let mut cfg = s.config("");
    cfg.redirectendpoint = s.endpoint.replace("127.0.0.1", "localhost");
    let public = S3Driver::new(&cfg, false).unwrap();
    let url = public.redirect_url(path, "GET").await.unwrap().unwrap();
    assert!(url.starts_with(&cfg.redirectendpoint), "{url}");
    let got = crate::common::http::get(&url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), body);

    // storage.redirect.disable
    let off = S3Driver::new(&s.config(""), true).unwrap();
    assert_eq!(off.redirect_url(path, "GET").await.unwrap(), None);
}

/// Deleting an upload's directory aborts its multipart upload.
async fn delete_aborts<F, Fut>(s: &S3Server, leftovers: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let d = driver(s, "");
    let dir = "/docker/registry/v2/repositories/app/_uploads/u2";
    let path = format!("{dir}/data");
    d.put_content(&format!("{dir}/startedat"), Bytes::from_static(b"now"))
        .await
        .unwrap();
    let mut w = d.writer(&path, 0).await.unwrap();
    w.write(Bytes::from(data(11 * MIB, 5))).await.unwrap();
    w.close().await.unwrap();
    let state = upload_state(&d, &path).await;
    let upload_id = state["upload_id"].as_str().unwrap().to_string();
    let raw = s.client();
    let parts = raw
        .list_parts()
        .bucket(&s.bucket)
        .key(&path[1..])
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();
    assert_eq!(parts.parts().len(), 1, "one 10 MiB part, 1 MiB in the tail");
    assert!(leftovers().await > 0);
    // The state object is hidden from listings.
    assert_eq!(d.list(dir).await.unwrap(), [format!("{dir}/startedat")]);

    d.delete(dir).await.unwrap();
    assert!(d.stat(dir).await.unwrap_err().is_not_found());
    match raw
        .list_parts()
        .bucket(&s.bucket)
        .key(&path[1..])
        .upload_id(&upload_id)
        .send()
        .await
    {
        Err(_) => {}
        Ok(p) => assert!(p.parts().is_empty(), "parts outlived the delete"),
    }
    assert_eq!(leftovers().await, 0, "the multipart upload is gone");
}

#[tokio::test]
async fn delete_aborts_abandoned_uploads_on_s3s_fs() {
    let s = S3Server::s3s_fs();
    delete_aborts(&s, || s.pending_parts()).await;
}

#[tokio::test]
async fn delete_aborts_abandoned_uploads_on_garage() {
    let s = S3Server::garage();
    delete_aborts(&s, || s.pending_parts()).await;
}

#[tokio::test]
async fn delete_aborts_abandoned_uploads_on_moto() {
    let s = S3Server::moto();
    let (client, bucket) = (s.client(), s.bucket.clone());
    // ListMultipartUploads, which moto implements (s3s-fs does not).
    let count = || async {
        let r = client
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        r.uploads().len()
    };
    delete_aborts(&s, count).await;
}

#[tokio::test]
async fn keys_are_distributions() {
    let s = S3Server::s3s_fs();
    let d = driver(&s, "/registry-root/");
    let path = "/docker/registry/v2/repositories/app/_layers/sha256/abc/link";
    d.put_content(path, Bytes::from_static(b"sha256:abc"))
        .await
        .unwrap();
    let on_disk = s
        .root
        .join(&s.bucket)
        .join("registry-root/docker/registry/v2/repositories/app/_layers/sha256/abc/link");
    assert_eq!(std::fs::read(on_disk).unwrap(), b"sha256:abc");
    // And what distribution wrote is read as it is.
    let theirs = s
        .root
        .join(&s.bucket)
        .join("registry-root/docker/registry/v2/repositories/old/_manifests/tags/v1/current");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("link"), b"sha256:def").unwrap();
    assert_eq!(
        d.get_content("/docker/registry/v2/repositories/old/_manifests/tags/v1/current/link")
            .await
            .unwrap(),
        "sha256:def"
    );
    assert_eq!(
        d.list("/docker/registry/v2/repositories").await.unwrap(),
        [
            "/docker/registry/v2/repositories/app",
            "/docker/registry/v2/repositories/old"
        ]
    );
}

#[tokio::test]
async fn round_trips_per_operation() {
    let s = S3Server::s3s_fs();
    let d = driver(&s, "");
    let count = |f: u64| d.requests() - f;
    let p = "/docker/registry/v2/blobs/sha256/aa/aabb/data";
    let r = d.requests();
    d.put_content(p, Bytes::from_static(b"blob")).await.unwrap();
    assert_eq!(count(r), 1, "put_content: one PutObject");
    let r = d.requests();
    assert_eq!(d.stat(p).await.unwrap().size, 4);
    assert_eq!(count(r), 1, "stat of an object: one HeadObject");
    let r = d.requests();
    d.get_content(p).await.unwrap();
    assert_eq!(count(r), 1, "get_content: one GetObject");
    let r = d.requests();
    assert!(d.stat("/docker/registry/v2/blobs").await.unwrap().is_dir);
    assert!(count(r) >= 2, "a directory: HEAD then one listing");
    // A small chunked upload: state GET + PUT per PATCH, then PutObject.
    let u = "/docker/registry/v2/repositories/a/_uploads/x/data";
    let r = d.requests();
    let mut w = d.writer(u, 0).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    w.close().await.unwrap();
    assert_eq!(count(r), 2, "first PATCH: state GET (missing) + state PUT");
    let r = d.requests();
    let mut w = d.writer(u, 3).await.unwrap();
    w.write(Bytes::from_static(b"def")).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(count(r), 3, "final PUT: state GET, PutObject, state DELETE");
    let r = d.requests();
    d.rename(u, p).await.unwrap();
    assert_eq!(count(r), 2, "rename after commit: CopyObject, DeleteObject");
    assert_eq!(d.get_content(p).await.unwrap(), "abcdef");
    let r = d.requests();
    d.rename(p, u).await.unwrap();
    assert_eq!(count(r), 3, "rename: HeadObject, CopyObject, DeleteObject");
    assert!(d.stat(p).await.unwrap_err().is_not_found());
}

// ---- through berth ------------------------------------------------------

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    base: String,
}

impl Client {
    pub(crate) fn new(base: String) -> Client {
        Client {
            http: crate::common::http::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base,
        }
    }

    pub(crate) fn url(&self, location: &str) -> String {
        if location.starts_with("http") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    /// POST `body` to `path`.
    pub(crate) async fn post(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A new upload session's Location.
    pub(crate) async fn start_upload(&self, name: &str) -> String {
        let r = self
            .post(&format!("/v2/{name}/blobs/uploads/"), vec![])
            .await;
        assert_eq!(r.status(), 202);
        r.headers()["location"].to_str().unwrap().to_string()
    }

    /// POST, one PATCH per chunk, then PUT with the digest.
    pub(crate) async fn push_blob(&self, name: &str, blob: &[u8], chunks: &[usize]) -> String {
        let digest = sha256(blob);
        let r = self
            .http
            .post(self.url(&format!("/v2/{name}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let mut loc = r.headers()["location"].to_str().unwrap().to_string();
        let mut offset = 0;
        for len in chunks {
            let r = self
                .http
                .patch(self.url(&loc))
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{offset}-{}", offset + len - 1))
                .body(blob[offset..offset + len].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "{:?}", r.text().await);
            loc = r.headers()["location"].to_str().unwrap().to_string();
            offset += len;
        }
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .http
            .put(self.url(&format!("{loc}{sep}digest={digest}")))
            .body(blob[offset..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        digest
    }

    async fn push_manifest(
        &self,
        name: &str,
        tag: &str,
        config: &str,
        layer: (&str, usize),
    ) -> Vec<u8> {
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.0, "size": layer.1}],
        }))
        .unwrap();
        let r = self
            .http
            .put(self.url(&format!("/v2/{name}/manifests/{tag}")))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        manifest
    }

    /// GET a blob: a redirect to S3 (followed with plain HTTP) or the bytes.
    pub(crate) async fn pull_blob(&self, name: &str, digest: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(self.url(&format!("/v2/{name}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 307 {
            let to = r.headers()["location"].to_str().unwrap().to_string();
            let body = crate::common::http::get(&to).await.unwrap();
            assert_eq!(body.status(), 200);
            return (status, body.bytes().await.unwrap().to_vec());
        }
        (status, r.bytes().await.unwrap().to_vec())
    }
}

#[tokio::test]
async fn berth_pushes_and_pulls_through_s3() {
    let s = S3Server::s3s_fs();
    let section = s.yaml("/berth");
    let berth = Berth::start_with(|_root, addr| {
        format!(
            "version: 0.1\nstorage:\n{section}  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n"
        )
    });
    let c = Client::new(berth.url(""));
    let layer = data(13 * MIB, 11);
    let layer_digest = c.push_blob("team/app", &layer, &[6 * MIB, 3 * MIB]).await;
    let config_digest = c.push_blob("team/app", b"{}", &[]).await;
    let manifest = c
        .push_manifest(
            "team/app",
            "v1",
            &config_digest,
            (&layer_digest, layer.len()),
        )
        .await;

    let r = c
        .http
        .get(c.url("/v2/team/app/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = c
        .http
        .head(c.url(&format!("/v2/team/app/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        layer.len().to_string().as_str()
    );
    let (status, got) = c.pull_blob("team/app", &layer_digest).await;
    assert_eq!(status, 307, "S3 serves blobs by redirect");
    assert!(got == layer, "layer bytes differ");
    // Stored where distribution would store it.
    let blob = s.root.join(&s.bucket).join(format!(
        "berth/docker/registry/v2/blobs/sha256/{}/{}/data",
        &layer_digest[7..9],
        &layer_digest[7..]
    ));
    assert_eq!(std::fs::metadata(blob).unwrap().len(), layer.len() as u64);
    let logs = berth.logs();
    assert!(!logs.contains("ERROR"), "{logs}");
}

/// The registry in-process on an S3 driver, to count S3 requests per API call.
#[tokio::test]
async fn requests_per_push_and_pull() {
    let s = S3Server::s3s_fs();
    let d = Arc::new(driver(&s, ""));
    let cfg = berth::config::Config::from_yaml("http:\n  secret: s\n").unwrap();
    let registry = berth::registry::Registry::new(d.clone(), b"s", true);
    let app = berth::api::router(&cfg, registry, None, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let c = Client::new(format!("http://{addr}"));

    let layer = data(12 * MIB, 13);
    let r0 = d.requests();
    let monolithic = c.push_blob("app", &layer, &[]).await;
    let mono = d.requests() - r0;
    let r0 = d.requests();
    let other = data(12 * MIB, 14);
    let chunked = c.push_blob("app", &other, &[12 * MIB]).await;
    let docker_style = d.requests() - r0;
    let r0 = d.requests();
    let config = c.push_blob("app", b"{}", &[]).await;
    let small = d.requests() - r0;
    let r0 = d.requests();
    c.push_manifest("app", "v1", &config, (&monolithic, layer.len()))
        .await;
    let manifest_put = d.requests() - r0;
    let r0 = d.requests();
    let (status, got) = c.pull_blob("app", &chunked).await;
    let pull = d.requests() - r0;
    assert_eq!(status, 307);
    assert!(got == other);
    eprintln!(
        "S3 requests: 12 MiB monolithic push {mono}, 12 MiB POST+PATCH+PUT push {docker_style}, \
         2-byte blob push {small}, manifest PUT {manifest_put}, blob GET (redirect) {pull}"
    );
    // The counts measured when this was written: a regression to listing or
    // re-reading shows up here (each is broken down in
    // s3_direct::requests_per_direct_push; they were 15, 19 and 12 before
    // blobs with a known digest were written in place).
    assert!(mono <= 9, "monolithic push: {mono}");
    assert!(docker_style <= 15, "chunked push: {docker_style}");
    assert!(small <= 6, "small push: {small}");
    assert!(pull <= 2, "blob GET: {pull}");
    server.abort();
}

/// `loc` with `digest=` added to its query.
pub(crate) fn with_digest(loc: &str, digest: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={digest}")
}

/// A response's status and first OCI error code.
pub(crate) async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let code = body["errors"][0]["code"].as_str().unwrap_or_default();
    (status, code.to_string())
}
