//! The referrers API: manifests whose `subject` is a given digest, as an OCI
//! index — a page at a time, so a subject with many referrers never makes one
//! response (or one request's memory) grow without bound.

use futures::StreamExt;
use serde_json::{json, Value};

use super::{
    digest::Digest,
    error::Result,
    manifest::{Manifest, MAX_MANIFEST_SIZE, OCI_INDEX},
    manifests::Reference,
    names::validate_name,
    Registry,
};
use crate::storage::layout;

/// A page's descriptors stop growing past this many bytes of JSON (a client
/// may hold an index to the manifest size limit); one descriptor always fits.
const PAGE_BYTES: usize = MAX_MANIFEST_SIZE;
/// Referrer manifests read at once while building a page.
const READS_AT_ONCE: usize = 8;
/// With an `artifactType` filter, a page looks at no more than this many
/// times its size in referrers, and otherwise ends early with a `Link`.
const SCAN_FACTOR: usize = 8;

/// One page of referrers and where the next starts, if one follows.
pub struct ReferrersPage {
    pub index: Value,
    pub next: Option<Digest>,
}

impl Registry {
    /// Up to `n` referrers of `subject` in `name` after the referrer `last`
    /// (optionally only one artifactType), as an OCI image index. An unknown
    /// subject has no referrers, not an error.
    pub async fn referrers(
        &self,
        name: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
        n: usize,
        last: Option<&Digest>,
    ) -> Result<ReferrersPage> {
        validate_name(name)?;
        let n = n.max(1);
        let scan_cap = n.saturating_mul(SCAN_FACTOR);
        let dir = layout::referrers_dir(name, subject);
        // One directory per digest algorithm: a handful at most.
        let algs = match self.driver.list(&dir).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => vec![],
            Err(e) => return Err(e.into()),
        };
        let mut descriptors = Vec::new();
        let (mut bytes, mut scanned) = (0, 0);
        let mut next = None;
        'algs: for (i, alg_dir) in algs.iter().enumerate() {
            let alg = layout::base_name(alg_dir);
            let mut after = match last {
                None => None,
                Some(l) => match l.algorithm().to_string().as_str().cmp(alg) {
                    std::cmp::Ordering::Greater => continue,
                    std::cmp::Ordering::Equal => Some(l.hex().to_string()),
                    std::cmp::Ordering::Less => None,
                },
            };
            loop {
                let want = (scan_cap - scanned).clamp(1, 4 * READS_AT_ONCE);
                let page = match self.driver.list_page(alg_dir, after.as_deref(), want).await {
                    Ok(p) => p,
                    Err(e) if e.is_not_found() => break,
                    Err(e) => return Err(e.into()),
                };
                let digests: Vec<Digest> = page
                    .names
                    .iter()
                    .filter_map(|hex| format!("{alg}:{hex}").parse().ok())
                    .collect();
                let total = digests.len();
                // Futures collected first (not mapped in the stream): see
                // rust-lang/rust#102211 on Send inference for such streams.
                let reads: Vec<_> = digests
                    .into_iter()
                    .map(|d| async move {
                        let desc = self.referrer_descriptor(name, &d, artifact_type).await;
                        (d, desc)
                    })
                    .collect();
                let mut reads = futures::stream::iter(reads).buffered(READS_AT_ONCE);
                let mut done = 0;
                while let Some((d, desc)) = reads.next().await {
                    done += 1;
                    scanned += 1;
                    if let Some(desc) = desc {
                        bytes += desc.to_string().len();
                        descriptors.push(desc);
                    }
                    if descriptors.len() >= n || bytes >= PAGE_BYTES || scanned >= scan_cap {
                        let more = done < total || page.more || i + 1 < algs.len();
                        next = more.then_some(d);
                        break 'algs;
                    }
                }
                if !page.more {
                    break;
                }
                after = page.names.last().cloned();
            }
        }
        Ok(ReferrersPage {
            index: json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": descriptors,
            }),
            next,
        })
    }

    /// The descriptor of one referrer, if it is still there and matches.
    async fn referrer_descriptor(
        &self,
        name: &str,
        d: &Digest,
        artifact_type: Option<&str>,
    ) -> Option<Value> {
        // A referrer deleted since the link was read is simply left out.
        let stored = self
            .get_manifest(name, &Reference::Digest(d.clone()))
            .await
            .ok()?;
        let m = Manifest::parse(&stored.body, None).ok()?;
        if artifact_type.is_some() && m.artifact_type.as_deref() != artifact_type {
            return None;
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
        Some(desc)
    }
}
