//! A small registry client for the tests: raw HTTP plus helpers that push
//! blobs and manifests and check the spec's error bodies.
#![allow(dead_code)]

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};

use crate::common::Berth;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(b: &Berth) -> Client {
        Client {
            base: format!("http://{}", b.addr),
            http: crate::common::http::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn req(&self, method: Method, path_or_url: &str) -> reqwest::RequestBuilder {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        };
        self.http.request(method, url)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.unwrap()
    }

    pub async fn head(&self, path: &str) -> Response {
        self.req(Method::HEAD, path).send().await.unwrap()
    }

    /// Monolithic push; returns the digest.
    pub async fn push_blob(&self, name: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{name}/blobs/uploads/?digest={d}"),
            )
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "push blob: {}",
            r.text().await.unwrap()
        );
        d
    }

    /// Start an upload session; returns its Location.
    pub async fn start_upload(&self, name: &str) -> String {
        let r = self
            .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        location(&r)
    }

    pub async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        media_type: &str,
        body: &Value,
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{name}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// Push a config and one layer, then an OCI manifest for them under `tag`.
    /// Returns (manifest digest, manifest bytes).
    pub async fn push_image(&self, name: &str, tag: &str, seed: &str) -> (String, Vec<u8>) {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
        let layer = format!("layer-{seed}").into_bytes();
        let m = image_manifest(
            &self.push_blob(name, config.as_bytes()).await,
            config.len(),
            &self.push_blob(name, &layer).await,
            layer.len(),
        );
        let bytes = serde_json::to_vec(&m).unwrap();
        let r = self
            .req(Method::PUT, &format!("/v2/{name}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "push manifest: {}",
            r.text().await.unwrap()
        );
        (sha256(&bytes), bytes)
    }
}

pub fn image_manifest(config: &str, config_size: usize, layer: &str, layer_size: usize) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}]
    })
}

pub fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .unwrap()
        .to_string()
}

pub fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Assert the status, the spec's error code, and the version header.
pub async fn expect_error(r: Response, status: u16, code: &str) {
    assert_eq!(r.status().as_u16(), status, "status");
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        Some("registry/2.0"),
        "version header on errors"
    );
    let body: Value = r.json().await.expect("JSON error body");
    assert_eq!(body["errors"][0]["code"], code, "error code in {body}");
}

/// HEAD carries no body: check the status and the version header only.
pub fn expect_head_status(r: &Response, status: u16) {
    assert_eq!(r.status().as_u16(), status, "status");
    assert_eq!(
        header(r, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

/// Every file under the storage root, relative, sorted: "storage unchanged"
/// checks compare two of these.
pub fn snapshot(b: &Berth) -> Vec<String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&b.root, &b.root, &mut out);
    out.sort();
    out
}
