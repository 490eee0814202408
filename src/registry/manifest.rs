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

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::json;

        fn digest() -> impl Strategy<Value = String> {
            // From bytes, not a regex: many times cheaper to generate.
            any::<[u8; 32]>().prop_map(|b| format!("sha256:{}", hex::encode(b)))
        }

        fn descriptor(media_type: &'static str) -> impl Strategy<Value = Value> {
            (digest(), any::<u32>()).prop_map(
                move |(d, size)| json!({"mediaType": media_type, "digest": d, "size": size}),
            )
        }

        /// A layer, sometimes foreign (with urls: not required in the registry).
        fn layer() -> impl Strategy<Value = (Value, bool)> {
            (
                descriptor("application/vnd.oci.image.layer.v1.tar+gzip"),
                any::<bool>(),
            )
                .prop_map(|(mut l, foreign)| {
                    if foreign {
                        l["mediaType"] =
                            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into();
                        l["urls"] = json!(["https://example.com/layer"]);
                    }
                    (l, foreign)
                })
        }

        /// Any JSON value, nested a little.
        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                ".{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    proptest::collection::btree_map(
                        prop_oneof![
                            Just("schemaVersion".to_string()),
                            Just("mediaType".to_string()),
                            Just("config".to_string()),
                            Just("layers".to_string()),
                            Just("manifests".to_string()),
                            Just("subject".to_string()),
                            Just("digest".to_string()),
                            Just("size".to_string()),
                            ".{0,8}",
                        ],
                        inner,
                        0..6,
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn image() -> impl Strategy<Value = (Value, usize)> {
            (
                descriptor("application/vnd.oci.image.config.v1+json"),
                proptest::collection::vec(layer(), 0..8),
                proptest::option::of(descriptor(OCI_MANIFEST)),
            )
                .prop_map(|(config, layers, subject)| {
                    let required = 1 + layers.iter().filter(|(_, foreign)| !foreign).count();
                    let mut m = json!({
                        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                        "layers": layers.into_iter().map(|(l, _)| l).collect::<Vec<_>>(),
                    });
                    if let Some(s) = subject {
                        m["subject"] = s;
                    }
                    (m, required)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// Any bytes: a manifest or MANIFEST_INVALID, never a panic.
            #[test]
            fn any_bytes_parse_or_are_invalid(body in proptest::collection::vec(any::<u8>(), 0..256), ct in proptest::option::of(prop_oneof![Just(OCI_MANIFEST), Just(OCI_INDEX), Just(DOCKER_MANIFEST), Just("application/json"), Just("text/plain; x=y")])) {
                if let Err(e) = Manifest::parse(&body, ct) {
                    prop_assert_eq!(e.code, Code::ManifestInvalid);
                }
            }

            /// Any JSON: the same.
            #[test]
            fn any_json_parses_or_is_invalid(v in json_value()) {
                if let Err(e) = Manifest::parse(v.to_string().as_bytes(), None) {
                    prop_assert_eq!(e.code, Code::ManifestInvalid);
                }
            }

            /// A well-formed image manifest is taken, requiring exactly its
            /// config and its non-foreign layers.
            #[test]
            fn images_require_their_blobs((m, required) in image()) {
                let parsed = Manifest::parse(m.to_string().as_bytes(), Some(OCI_MANIFEST)).unwrap();
                prop_assert_eq!(parsed.kind, Kind::Image);
                prop_assert_eq!(parsed.blobs.len(), required);
                prop_assert_eq!(parsed.blobs[0].to_string(), m["config"]["digest"].as_str().unwrap());
                prop_assert_eq!(parsed.subject.map(|d| d.to_string()), m["subject"]["digest"].as_str().map(str::to_string));
            }

            /// One field of a good manifest replaced by anything: still an
            /// answer, never a panic.
            #[test]
            fn damaged_images_parse_or_are_invalid((mut m, _) in image(), field in prop_oneof![Just("schemaVersion"), Just("mediaType"), Just("config"), Just("layers"), Just("subject"), Just("manifests")], v in json_value()) {
                m[field] = v;
                if let Err(e) = Manifest::parse(m.to_string().as_bytes(), Some(OCI_MANIFEST)) {
                    prop_assert_eq!(e.code, Code::ManifestInvalid);
                }
            }

            /// An index requires each child it lists.
            #[test]
            fn indexes_require_their_children(children in proptest::collection::vec(descriptor(OCI_MANIFEST), 0..10)) {
                let n = children.len();
                let m = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
                let parsed = Manifest::parse(m.to_string().as_bytes(), None).unwrap();
                prop_assert_eq!(parsed.kind, Kind::Index);
                prop_assert_eq!(parsed.manifests.len(), n);
                prop_assert!(parsed.blobs.is_empty());
            }
        }
    }
}
