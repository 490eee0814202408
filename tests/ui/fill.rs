//! A registry worth looking at, filled through the API of an open Berth:
//! a multi-arch index, an image whose label and annotation carry XSS
//! attempts, a signature and an SBOM referring to it, and as many small
//! repositories as a test asks for.

use futures::{stream, StreamExt};
use serde_json::{json, Value};

use crate::common::http::sha256;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const SIGNATURE_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const SBOM_TYPE: &str = "application/spdx+json";

/// Planted in a config label and a manifest annotation: if any of it ever
/// runs, `window.__xss` is set (the browser test checks it never is).
pub const XSS_LABEL: &str = "<script>window.__xss=1</script>";
pub const XSS_ANNOTATION: &str = "\"><img src=x onerror=\"window.__xss=2\">";

pub struct Registry {
    pub base: String,
    client: reqwest::Client,
}

/// What [`Registry::standard`] made.
pub struct Standard {
    pub index_digest: String,
    pub image_digest: String,
    pub signature_digest: String,
    pub sbom_digest: String,
}

impl Registry {
    /// `base`: `http://host:port` of an open (no auth) Berth.
    pub fn new(base: &str) -> Registry {
        Registry {
            base: base.trim_end_matches('/').to_string(),
            client: crate::common::http::client(),
        }
    }

    /// A blob pushed in one request; its descriptor.
    pub async fn blob(&self, repo: &str, data: &[u8], media_type: &str) -> Value {
        let digest = sha256(data);
        let r = self
            .client
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?digest={digest}",
                self.base
            ))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "push blob to {repo}");
        json!({"mediaType": media_type, "digest": digest, "size": data.len()})
    }

    /// A blob that `from` has, linked into `repo` (cross-repository mount).
    pub async fn mount(&self, repo: &str, from: &str, desc: &Value) {
        let r = self
            .client
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?mount={}&from={from}",
                self.base,
                desc["digest"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "mount into {repo}");
    }

    pub async fn manifest(&self, repo: &str, reference: &str, body: &Value) -> String {
        let bytes = serde_json::to_vec(body).unwrap();
        let media_type = body["mediaType"].as_str().unwrap();
        let r = self
            .client
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "put manifest {repo}:{reference}");
        sha256(&bytes)
    }

    /// An image with one layer; `config` is merged into a linux/`arch` config.
    pub async fn image(&self, repo: &str, arch: &str, config: Value, annotations: Value) -> Value {
        let mut cfg = json!({
            "architecture": arch, "os": "linux", "created": "2026-11-30T12:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": []}, "config": config,
        });
        cfg["rootfs"]["diff_ids"] = json!([sha256(arch.as_bytes())]);
        let config = self
            .blob(
                repo,
                &serde_json::to_vec(&cfg).unwrap(),
                "application/vnd.oci.image.config.v1+json",
            )
            .await;
        let layer = self
            .blob(
                repo,
                format!("layer of {repo} for {arch}").repeat(40).as_bytes(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
            .await;
        let mut m = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config, "layers": [layer],
        });
        if annotations.is_object() {
            m["annotations"] = annotations;
        }
        m
    }

    /// An artifact (signature, SBOM) whose subject is `subject`.
    pub async fn referrer(
        &self,
        repo: &str,
        artifact_type: &str,
        subject: &Value,
        body: &[u8],
    ) -> String {
        let empty = self
            .blob(repo, b"{}", "application/vnd.oci.empty.v1+json")
            .await;
        let payload = self.blob(repo, body, artifact_type).await;
        let m = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": empty, "layers": [payload], "subject": subject,
            "annotations": {"org.opencontainers.image.created": "2026-12-01T00:00:00Z"},
        });
        let digest = sha256(&serde_json::to_vec(&m).unwrap());
        self.manifest(repo, &digest, &m).await
    }

    /// `apps/web:1.0` (an index of linux/amd64 and linux/arm64),
    /// `apps/api:v1` (an image with a signature and an SBOM, and XSS
    /// attempts in a label and an annotation).
    pub async fn standard(&self) -> Standard {
        let mut children = vec![];
        for arch in ["amd64", "arm64"] {
            let m = self
                .image("apps/web", arch, json!({"Cmd": ["nginx"]}), Value::Null)
                .await;
            let digest = self.manifest("apps/web", &format!("web-{arch}"), &m).await;
            let size = serde_json::to_vec(&m).unwrap().len();
            children.push(json!({
                "mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                "platform": {"os": "linux", "architecture": arch},
            }));
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
        let index_digest = self.manifest("apps/web", "1.0", &index).await;

        let image = self
            .image(
                "apps/api",
                "amd64",
                json!({
                    "Entrypoint": ["/usr/bin/api", "--serve"],
                    "Env": ["PATH=/usr/bin", "API_TOKEN=do-not-show-me"],
                    "Labels": {"org.opencontainers.image.title": "api", "evil": XSS_LABEL},
                }),
                json!({"org.example.note": XSS_ANNOTATION}),
            )
            .await;
        let image_digest = self.manifest("apps/api", "v1", &image).await;
        let subject = json!({
            "mediaType": OCI_MANIFEST, "digest": image_digest,
            "size": serde_json::to_vec(&image).unwrap().len(),
        });
        let signature_digest = self
            .referrer("apps/api", SIGNATURE_TYPE, &subject, b"signature payload")
            .await;
        let sbom_digest = self
            .referrer(
                "apps/api",
                SBOM_TYPE,
                &subject,
                br#"{"spdxVersion":"SPDX-2.3"}"#,
            )
            .await;
        Standard {
            index_digest,
            image_digest,
            signature_digest,
            sbom_digest,
        }
    }

    /// `team-a/app`, `public/app` and `other/secret`, tag `v1` each: what
    /// the access tests' ACL tells apart.
    pub async fn three_teams(&self) {
        for repo in ["team-a/app", "public/app", "other/secret"] {
            let m = self.image(repo, "amd64", json!({}), Value::Null).await;
            self.manifest(repo, "v1", &m).await;
        }
    }

    /// `count` repositories `<prefix>/repo-0000`… with one tag `v1` each,
    /// sharing one image's blobs (mounted, 3 requests a repository).
    pub async fn many(&self, prefix: &str, count: usize) {
        let seed = format!("{prefix}/repo-seed");
        let image = self.image(&seed, "amd64", json!({}), Value::Null).await;
        self.manifest(&seed, "v1", &image).await;
        let image = &image;
        let seed = &seed;
        stream::iter(0..count)
            .for_each_concurrent(16, |i| async move {
                let repo = format!("{prefix}/repo-{i:04}");
                self.mount(&repo, seed, &image["config"]).await;
                self.mount(&repo, seed, &image["layers"][0]).await;
                self.manifest(&repo, "v1", image).await;
            })
            .await;
    }

    /// `count` tags `t-0000`… on one image of `repo`.
    pub async fn tags(&self, repo: &str, count: usize) {
        let image = self.image(repo, "amd64", json!({}), Value::Null).await;
        let image = &image;
        stream::iter(0..count)
            .for_each_concurrent(16, |i| async move {
                self.manifest(repo, &format!("t-{i:04}"), image).await;
            })
            .await;
    }
}
