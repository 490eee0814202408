//! Helpers for the garbage-collection tests: a small registry client, image
//! builders (images, indexes, referrers), running `berth garbage-collect`,
//! and snapshots of a storage root.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A manifest as pushed: its body and digest.
#[derive(Clone)]
pub struct Pushed {
    pub digest: String,
    pub body: Vec<u8>,
    pub media_type: &'static str,
}

impl Pushed {
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.body.len()})
    }
}

fn blob_descriptor(data: &[u8], media_type: &str) -> Value {
    json!({"mediaType": media_type, "digest": digest(data), "size": data.len()})
}

/// An OCI image manifest over `config` and `layers` (optionally a referrer of `subject`).
pub fn image(config: &[u8], layers: &[&[u8]], subject: Option<&Pushed>) -> Pushed {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": blob_descriptor(config, "application/vnd.oci.image.config.v1+json"),
        "layers": layers.iter().map(|l| blob_descriptor(l, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
    });
    if let Some(s) = subject {
        m["subject"] = s.descriptor();
        m["artifactType"] = json!("application/vnd.example.signature");
    }
    let body = serde_json::to_vec(&m).unwrap();
    Pushed {
        digest: digest(&body),
        body,
        media_type: OCI_MANIFEST,
    }
}

/// An OCI index over `children`.
pub fn index(children: &[&Pushed]) -> Pushed {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|c| c.descriptor()).collect::<Vec<_>>(),
    });
    let body = serde_json::to_vec(&m).unwrap();
    Pushed {
        digest: digest(&body),
        body,
        media_type: OCI_INDEX,
    }
}

/// The registry API, as a client (docker, oras) uses it.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: String) -> Client {
        Client {
            base,
            http: crate::common::http::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Upload a blob: POST a session, PUT the bytes with the digest (the
    /// two-step monolithic upload every registry, distribution 2.8 included,
    /// accepts).
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .http
            .put(format!("{location}{sep}digest={d}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "upload {d}");
        d
    }

    /// docker's way: HEAD first, upload only when missing. Returns whether
    /// it uploaded.
    pub async fn push_blob_like_docker(&self, repo: &str, data: &[u8]) -> bool {
        if self.head_blob(repo, &digest(data)).await == StatusCode::OK {
            return false;
        }
        self.push_blob(repo, data).await;
        true
    }

    pub async fn head_blob(&self, repo: &str, d: &str) -> StatusCode {
        self.http
            .head(self.url(&format!("/v2/{repo}/blobs/{d}")))
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, m: &Pushed) -> StatusCode {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", m.media_type)
            .body(m.body.clone())
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Push an image's blobs, then its manifest under `reference`.
    pub async fn push_image(
        &self,
        repo: &str,
        reference: &str,
        config: &[u8],
        layers: &[&[u8]],
    ) -> Pushed {
        self.push_blob(repo, config).await;
        for l in layers {
            self.push_blob(repo, l).await;
        }
        let m = image(config, layers, None);
        let reference = if reference.is_empty() {
            m.digest.clone()
        } else {
            reference.to_string()
        };
        assert_eq!(
            self.put_manifest(repo, &reference, &m).await,
            StatusCode::CREATED
        );
        m
    }

    /// GET a manifest: status and body.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> (StatusCode, Vec<u8>) {
        let r = self
            .http
            .get(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
            .send()
            .await
            .unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }

    pub async fn delete_manifest(&self, repo: &str, d: &str) {
        let r = self
            .http
            .delete(self.url(&format!("/v2/{repo}/manifests/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }

    /// Digests listed by the referrers API for `subject`.
    pub async fn referrers(&self, repo: &str, subject: &str) -> Vec<String> {
        let r = self
            .http
            .get(self.url(&format!("/v2/{repo}/referrers/{subject}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A config for `berth serve` and `berth garbage-collect` from a `storage:`
/// body (indented driver section) plus extra top-level YAML.
pub fn config(storage: &str, extra: &str, addr: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n{storage}  delete:\n    enabled: true\n{extra}http:\n  addr: {addr}\n  secret: test-secret\n"
    )
}

pub fn filesystem(root: &str) -> String {
    format!("  filesystem:\n    rootdirectory: {root}\n")
}

/// What one `berth garbage-collect` run printed.
pub struct GcRun {
    pub stdout: String,
    pub stderr: String,
}

impl GcRun {
    /// A `key=value` count from the summary line (the last line of stdout).
    pub fn count(&self, key: &str) -> u64 {
        let line = self.stdout.lines().last().unwrap_or_default();
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{key} not in {line:?}"))
            .parse()
            .unwrap()
    }
}

/// Run `berth garbage-collect --config <file> <args>`, which must succeed.
pub fn gc(config_text: &str, args: &[&str]) -> GcRun {
    let (success, run) = gc_status(config_text, args);
    assert!(
        success,
        "garbage-collect failed: {}\n{}",
        run.stdout, run.stderr
    );
    run
}

/// Run `berth garbage-collect --config <file> <args>`: did it exit 0, and
/// what it printed.
pub fn gc_status(config_text: &str, args: &[&str]) -> (bool, GcRun) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, config_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("garbage-collect")
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run berth garbage-collect");
    let run = GcRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (out.status.success(), run)
}

/// Every file under `root` with its bytes and modification time.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                out.insert(e.path(), (Vec::new(), meta.modified().unwrap()));
                stack.push(e.path());
            } else {
                out.insert(
                    e.path(),
                    (std::fs::read(e.path()).unwrap(), meta.modified().unwrap()),
                );
            }
        }
    }
    out
}

/// The data file of a blob under a filesystem root.
pub fn blob_file(root: &Path, d: &str) -> PathBuf {
    let hex = &d[7..];
    root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

pub fn layer_link_dir(root: &Path, repo: &str, d: &str) -> PathBuf {
    root.join(format!(
        "docker/registry/v2/repositories/{repo}/_layers/sha256/{}",
        &d[7..]
    ))
}

/// Distinct bytes of a given length.
pub fn noise(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
