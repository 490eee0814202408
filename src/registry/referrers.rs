//! The referrers API: manifests whose `subject` is a given digest, as an OCI index.

use serde_json::{json, Value};

use super::{
    digest::Digest,
    error::Result,
    manifest::{Manifest, OCI_INDEX},
    manifests::Reference,
    names::validate_name,
    Registry,
};
use crate::storage::layout;

impl Registry {
    /// The referrers of `subject` in `name` (optionally only one artifactType),
    /// as an OCI image index. An unknown subject has no referrers, not an error.
    pub async fn referrers(
        &self,
        name: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Value> {
        validate_name(name)?;
        let mut descriptors = Vec::new();
        let dir = layout::referrers_dir(name, subject);
        let algs = match self.driver.list(&dir).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => vec![],
            Err(e) => return Err(e.into()),
        };
        for alg_dir in algs {
            let hexes = match self.driver.list(&alg_dir).await {
                Ok(h) => h,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for hex_dir in hexes {
                let Ok(d) = format!(
                    "{}:{}",
                    layout::base_name(&alg_dir),
                    layout::base_name(&hex_dir)
                )
                .parse::<Digest>() else {
                    continue;
                };
                // A referrer deleted since the link was read is simply left out.
                let Ok(stored) = self.get_manifest(name, &Reference::Digest(d.clone())).await
                else {
                    continue;
                };
                let Ok(m) = Manifest::parse(&stored.body, None) else {
                    continue;
                };
                if artifact_type.is_some() && m.artifact_type.as_deref() != artifact_type {
                    continue;
                }
                let mut desc = json!({
                    "mediaType": m.media_type,
                    "digest": d.to_string(),
                    "size": stored.body.len(),
                });
                if let Some(t) = &m.artifact_type {
                    desc["artifactType"] = json!(t);
                }
                if let Some(a) = &m.annotations {
                    desc["annotations"] = json!(a);
                }
                descriptors.push(desc);
            }
        }
        Ok(json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": descriptors,
        }))
    }
}
