//! Manifest parsing and validation: Docker schema2 manifests and manifest lists,
//! OCI image manifests and indexes, any artifactType, `subject` references.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    digest::Digest,
    error::{Code, Error, Result},
};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_SCHEMA1: [&str; 3] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
];

/// distribution's default limit; the spec lets registries refuse larger ones.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// Layers whose bytes may live elsewhere (`urls`), so need not be in the registry.
fn is_foreign_layer(media_type: &str) -> bool {
    media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
}

impl Descriptor {
    pub fn parsed_digest(&self) -> Result<Digest> {
        self.digest
            .parse()
            .map_err(|e| invalid(format!("descriptor digest {:?}: {e}", self.digest)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// What the registry needs to know of a manifest to store and serve it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub kind: Kind,
    /// Blobs that must be in the repository (config and layers, foreign ones excepted).
    pub blobs: Vec<Digest>,
    /// Child manifests (of an index) that must be in the repository.
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or an image manifest's config media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Map<String, Value>>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(Code::ManifestInvalid, msg)
}

/// Strip parameters from a Content-Type (`type; charset=…`).
pub fn bare_media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

impl Manifest {
    /// Parse and validate `body`, sent with `content_type` (if any).
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest> {
        let raw: RawManifest = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
        let header_type = content_type.map(bare_media_type).filter(|t| !t.is_empty());

        let declared = raw.media_type.as_deref();
        if let Some(t) = header_type.or(declared) {
            if DOCKER_SCHEMA1.contains(&t) && raw.schema_version != Some(Value::from(2)) {
                return Err(Error::new(
                    Code::ManifestInvalid,
                    "Docker schema1 manifests are not supported",
                ));
            }
        }
        if raw.schema_version != Some(Value::from(2)) {
            return Err(invalid("schemaVersion must be 2"));
        }
        let known = |t: &str| {
            [
                DOCKER_MANIFEST,
                DOCKER_MANIFEST_LIST,
                OCI_MANIFEST,
                OCI_INDEX,
            ]
            .contains(&t)
        };
        // A mediaType in the body must agree with the Content-Type it was sent with.
        if let (Some(h), Some(d)) = (header_type.filter(|t| known(t)), declared) {
            if h != d {
                return Err(invalid(format!(
                    "mediaType {d:?} does not match Content-Type {h:?}"
                )));
            }
        }
        let media_type = match (declared, header_type.filter(|t| known(t))) {
            (Some(d), _) if known(d) => d.to_string(),
            (Some(d), _) => return Err(invalid(format!("unsupported manifest mediaType {d:?}"))),
            (None, Some(h)) => h.to_string(),
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
            (None, None) if raw.config.is_some() => OCI_MANIFEST.to_string(),
            (None, None) => return Err(invalid("cannot tell the manifest's media type")),
        };

        let subject = raw
            .subject
            .as_ref()
            .map(Descriptor::parsed_digest)
            .transpose()?;
        if media_type == DOCKER_MANIFEST || media_type == OCI_MANIFEST {
            let config = raw
                .config
                .ok_or_else(|| invalid("image manifest has no config"))?;
            let layers = raw
                .layers
                .ok_or_else(|| invalid("image manifest has no layers"))?;
            if raw.manifests.is_some() {
                return Err(invalid("image manifest must not have manifests"));
            }
            let mut blobs = vec![config.parsed_digest()?];
            for l in &layers {
                let d = l.parsed_digest()?;
                let elsewhere = is_foreign_layer(&l.media_type)
                    && l.urls.as_ref().is_some_and(|u| !u.is_empty());
                if !elsewhere {
                    blobs.push(d);
                }
            }
            let artifact_type = raw
                .artifact_type
                .clone()
                .or(Some(config.media_type.clone()));
            Ok(Manifest {
                media_type,
                kind: Kind::Image,
                blobs,
                manifests: vec![],
                subject,
                artifact_type,
                annotations: raw.annotations,
            })
        } else {
            let children = raw
                .manifests
                .ok_or_else(|| invalid("index has no manifests"))?;
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("index must not have config or layers"));
            }
            let manifests = children
                .iter()
                .map(Descriptor::parsed_digest)
                .collect::<Result<_>>()?;
            Ok(Manifest {
                media_type,
                kind: Kind::Index,
                blobs: vec![],
                manifests,
                subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            })
        }
    }

    /// The media type of stored content, for serving it (no Content-Type then).
    pub fn media_type_of(body: &[u8]) -> String {
        Manifest::parse(body, None)
            .map(|m| m.media_type)
            .unwrap_or_else(|_| OCI_MANIFEST.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn oci_manifest_with_subject_and_foreign_layer() {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x.sig",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": d('a'), "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d('b'), "size": 1},
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                 "digest": d('c'), "size": 1, "urls": ["https://example.com/x"]}
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d('e'), "size": 9}
        });
        let m = Manifest::parse(body.to_string().as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.blobs.len(), 2, "foreign layer with urls is not required");
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(m.subject.unwrap().to_string(), d('e'));
    }

    #[test]
    fn rejects_mismatch_and_garbage() {
        let body = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        assert!(Manifest::parse(body.to_string().as_bytes(), Some(OCI_MANIFEST)).is_err());
        assert!(Manifest::parse(body.to_string().as_bytes(), Some(OCI_INDEX)).is_ok());
        assert!(Manifest::parse(b"not json", None).is_err());
        assert!(Manifest::parse(br#"{"schemaVersion":1}"#, None).is_err());
    }
}
