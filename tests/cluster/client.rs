//! A small registry client for the cluster scenarios: uploads whose every
//! request may go to a different base URL (a replica or the balancer), and
//! content checks. It asserts on status codes, so a scenario reads as steps.

use reqwest::{Response, StatusCode};
use sha2::{Digest as _, Sha256};

pub const MIB: usize = 1 << 20;
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `len` deterministic, incompressible bytes (xorshift), different per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An OCI image manifest for a config blob and layers.
pub fn manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|l| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": sha256(l), "size": l.len()})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": config.len()},
        "layers": layers,
    }))
    .unwrap()
}

/// The same Location, sent to another base (`http://host:port`): how a
/// client is moved between replicas, since Berth's Locations are absolute.
pub fn on(base: &str, location: &str) -> String {
    let at = location
        .find("/v2/")
        .unwrap_or_else(|| panic!("not a registry URL: {location}"));
    format!("{base}{}", &location[at..])
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
}

impl Client {
    /// Redirects are followed, so a blob GET gives the bytes whether Berth
    /// streams them or sends the client to the store.
    pub fn new() -> Client {
        Client {
            http: crate::common::http::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    /// POST an upload session; its Location, which must name `base`'s host
    /// (through nginx: the balancer, thanks to `Host $http_host`).
    pub async fn start_upload(&self, base: &str, repo: &str) -> String {
        let r = self
            .http
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "POST on {base}");
        location(&r, base)
    }

    /// PATCH one chunk at `offset`.
    pub async fn patch(&self, url: &str, offset: usize, chunk: &[u8]) -> Response {
        self.http
            .patch(url)
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{offset}-{}", offset + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// PATCH that must be accepted: checks Range, returns the next Location.
    pub async fn patch_ok(&self, url: &str, offset: usize, chunk: &[u8], base: &str) -> String {
        let r = self.patch(url, offset, chunk).await;
        let status = r.status();
        if status != StatusCode::ACCEPTED {
            panic!(
                "PATCH {url}: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        assert_eq!(
            header(&r, "range"),
            format!("0-{}", offset + chunk.len() - 1)
        );
        location(&r, base)
    }

    /// PUT `?digest=` with an optional last chunk; returns the response.
    pub async fn finish(&self, url: &str, digest: &str, last: &[u8]) -> Response {
        let sep = if url.contains('?') { '&' } else { '?' };
        self.http
            .put(format!("{url}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(last.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// A whole chunked upload through `base`: one PATCH per `chunks` entry,
    /// the rest in the PUT. Returns the digest.
    pub async fn push_blob(&self, base: &str, repo: &str, blob: &[u8], chunks: &[usize]) -> String {
        let mut url = self.start_upload(base, repo).await;
        let mut offset = 0;
        for &len in chunks {
            url = self
                .patch_ok(&url, offset, &blob[offset..offset + len], base)
                .await;
            offset += len;
        }
        let digest = sha256(blob);
        let r = self.finish(&url, &digest, &blob[offset..]).await;
        assert_eq!(r.status(), StatusCode::CREATED, "PUT on {base}");
        assert_eq!(header(&r, "docker-content-digest"), digest);
        digest
    }

    pub async fn put_manifest(&self, base: &str, repo: &str, reference: &str, body: &[u8]) {
        let r = self
            .http
            .put(format!("{base}/v2/{repo}/manifests/{reference}"))
            .header("content-type", OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "manifest PUT on {base}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// GET a manifest: status, Docker-Content-Digest, body.
    pub async fn get_manifest(
        &self,
        base: &str,
        repo: &str,
        reference: &str,
    ) -> (StatusCode, String, Vec<u8>) {
        let r = self
            .http
            .get(format!("{base}/v2/{repo}/manifests/{reference}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let digest = header(&r, "docker-content-digest");
        (status, digest, r.bytes().await.unwrap().to_vec())
    }

    /// GET a blob: status and body (errors reading the body are failures:
    /// a body cut short is exactly what must never happen).
    pub async fn get_blob(&self, base: &str, repo: &str, digest: &str) -> (StatusCode, Vec<u8>) {
        let r = self
            .http
            .get(format!("{base}/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.bytes().await.unwrap().to_vec())
    }

    pub async fn head_blob(&self, base: &str, repo: &str, digest: &str) -> StatusCode {
        self.http
            .head(format!("{base}/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap()
            .status()
    }
}

pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The Location of an upload response, checked to be absolute and to name
/// the host the request went to.
fn location(r: &Response, base: &str) -> String {
    let loc = header(r, "location");
    assert!(
        loc.starts_with(&format!("{base}/v2/")),
        "Location {loc:?} does not name {base}"
    );
    loc
}
