//! The mark phase: every manifest revision of every repository, and what each
//! one references — config, layers, index children, `subject`, an artifact's
//! `blobs` — read from the raw JSON so that nothing a manifest names is missed
//! (foreign layers included, unlike the push-time check).

use std::{
    collections::{HashMap, HashSet},
    time::SystemTime,
};

use futures::{stream, StreamExt, TryStreamExt};
use serde_json::Value;

use crate::registry::{
    digest::Digest,
    error::{Code, Error, Result},
    Registry,
};
use crate::storage::layout;

/// How many tag links [`Registry::tagged`] reads at once.
const TAG_READS_IN_FLIGHT: usize = 32;

/// What one manifest references.
#[derive(Debug, Clone, Default)]
pub(super) struct Refs {
    pub blobs: Vec<Digest>,
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
}

impl Refs {
    /// `None` when `body` is not a JSON manifest.
    pub fn parse(body: &[u8]) -> Option<Refs> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let digest_of = |d: &Value| d.get("digest")?.as_str()?.parse::<Digest>().ok();
        let each = |key: &str| -> Vec<Digest> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(digest_of).collect())
                .unwrap_or_default()
        };
        let mut blobs: Vec<Digest> = v.get("config").and_then(digest_of).into_iter().collect();
        blobs.extend(each("layers"));
        blobs.extend(each("blobs"));
        // Docker schema1, still in distribution 2.x roots Berth serves as
        // they are (it refuses new ones): layers are `fsLayers[].blobSum`.
        if let Some(layers) = v.get("fsLayers").and_then(Value::as_array) {
            blobs.extend(
                layers
                    .iter()
                    .filter_map(|l| l.get("blobSum")?.as_str()?.parse::<Digest>().ok()),
            );
        }
        Some(Refs {
            blobs,
            children: each("manifests"),
            subject: v.get("subject").and_then(digest_of),
        })
    }

    /// Every digest this manifest keeps alive.
    pub fn all(&self) -> impl Iterator<Item = &Digest> {
        self.blobs
            .iter()
            .chain(&self.children)
            .chain(self.subject.as_ref())
    }
}

/// An untagged manifest `--delete-untagged` may remove.
#[derive(Debug, Clone)]
pub(super) struct Untagged {
    pub repo: String,
    pub digest: Digest,
    pub refs: Option<Refs>,
}

/// The result of one mark pass.
pub(super) struct Marked {
    pub repositories: Vec<String>,
    /// Kept manifests and everything they reference.
    pub digests: HashSet<Digest>,
    pub manifests: usize,
    pub deletable: Vec<Untagged>,
    /// Repositories with at least one manifest revision (the catalog's).
    pub with_revisions: HashSet<String>,
}

/// A manifest revision and when its link was written.
struct Revision {
    digest: Digest,
    modified: SystemTime,
}

impl Registry {
    /// One pass over every repository.
    pub(super) async fn mark(&self, opts: &super::GcOptions, cutoff: SystemTime) -> Result<Marked> {
        let delete_untagged = opts.delete_untagged;
        // Mirrored repositories lose what was fetched before this (`expire`).
        let expiry = opts.expire_mirrored.map(|ttl| {
            SystemTime::now()
                .checked_sub(ttl)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        });
        let repositories = self.repository_dirs().await?;
        let mut marked = Marked {
            repositories: Vec::new(),
            digests: HashSet::new(),
            manifests: 0,
            deletable: Vec::new(),
            with_revisions: HashSet::new(),
        };
        for repo in &repositories {
            super::interrupted(opts)?;
            let (delete_untagged, young) = match expiry {
                Some(before) if self.mirror_of(repo).is_some() => (true, before.min(cutoff)),
                _ => (delete_untagged, cutoff),
            };
            self.mark_repository(repo, delete_untagged, young, &mut marked)
                .await?;
        }
        marked.repositories = repositories;
        Ok(marked)
    }

    async fn mark_repository(
        &self,
        repo: &str,
        delete_untagged: bool,
        // Untagged revisions written since are kept.
        young: SystemTime,
        marked: &mut Marked,
    ) -> Result<()> {
        let revisions = self.revisions(repo).await?;
        if !revisions.is_empty() {
            marked.with_revisions.insert(repo.to_string());
        }
        let mut refs: HashMap<Digest, Option<Refs>> = HashMap::new();
        for r in &revisions {
            let body = match self.driver.get_content(&layout::blob_data(&r.digest)).await {
                Ok(b) => Some(b),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            let parsed = match body.as_deref().map(Refs::parse) {
                Some(Some(refs)) => Some(refs),
                // Bytes gone (a half-deleted revision): nothing can be
                // pulled through it, so there is nothing left to protect.
                None => {
                    tracing::warn!(repository = repo, digest = %r.digest, "garbage collection: manifest bytes missing; revision kept as it is");
                    None
                }
                // Bytes there but not JSON: what they reference is unknown,
                // so any blob might be one of them. Stop before deleting.
                Some(None) => {
                    return Err(Error::internal(format!(
                        "garbage collection stopped before deleting anything: manifest {} in repository {repo} is not JSON, so what it references is unknown; repair or delete it (DELETE /v2/{repo}/manifests/{}) and run again",
                        r.digest, r.digest
                    )))
                }
            };
            refs.insert(r.digest.clone(), parsed);
        }
        let kept: HashSet<Digest> = if delete_untagged {
            // Roots: tagged, young (a push in progress), and any revision
            // whose bytes are missing (left as it is, never half-removed).
            let mut roots: HashSet<Digest> = self.tagged(repo).await?.into_iter().collect();
            for r in &revisions {
                if r.modified >= young || refs.get(&r.digest).is_some_and(Option::is_none) {
                    roots.insert(r.digest.clone());
                }
            }
            keep_closure(roots, &refs)
        } else {
            revisions.iter().map(|r| r.digest.clone()).collect()
        };
        for r in revisions {
            let manifest_refs = refs.remove(&r.digest).flatten();
            if kept.contains(&r.digest) {
                marked.manifests += 1;
                if let Some(m) = &manifest_refs {
                    marked.digests.extend(m.all().cloned());
                }
                marked.digests.insert(r.digest);
            } else {
                marked.deletable.push(Untagged {
                    repo: repo.to_string(),
                    digest: r.digest,
                    refs: manifest_refs,
                });
            }
        }
        Ok(())
    }

    /// Digests the repository's tags currently point at, their links read
    /// [`TAG_READS_IN_FLIGHT`] at a time (on S3, one round trip each; a
    /// repository with thousands of tags is read for every untagged
    /// manifest's re-check).
    pub(super) async fn tagged(&self, repo: &str) -> Result<Vec<Digest>> {
        let tags = match self.tags(repo).await {
            Ok(t) => t,
            Err(e) if e.code == Code::NameUnknown => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        stream::iter(tags)
            .map(|tag| async move { self.read_link(&layout::tag_current_link(repo, &tag)).await })
            .buffer_unordered(TAG_READS_IN_FLIGHT)
            .try_filter_map(|d| async move { Ok(d) })
            .try_collect()
            .await
    }

    /// `_manifests/revisions/<alg>/<hex>/link`, with the link's modification time.
    async fn revisions(&self, repo: &str) -> Result<Vec<Revision>> {
        let mut out = Vec::new();
        let root = format!("{}/revisions", layout::manifests_root(repo));
        for alg_dir in self.list_or_empty(&root).await? {
            for hex_dir in self.list_or_empty(&alg_dir).await? {
                let name = format!(
                    "{}:{}",
                    layout::base_name(&alg_dir),
                    layout::base_name(&hex_dir)
                );
                // A revision we cannot name (distribution also accepts
                // sha384) is a manifest we cannot read: skipping it would
                // sweep what it references.
                let Ok(digest) = name.parse::<Digest>() else {
                    return Err(Error::internal(format!(
                        "garbage collection stopped before deleting anything: repository {repo} has a manifest revision {name:?} Berth cannot read (unsupported digest), so what it references is unknown; delete it ({hex_dir}) and run again"
                    )));
                };
                match self.driver.stat_object(&format!("{hex_dir}/link")).await {
                    Ok(info) => out.push(Revision {
                        digest,
                        modified: info.modified,
                    }),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }

    /// Every repository with anything in it: unlike the catalog, one that has
    /// only layer links (a push whose manifest has not arrived) counts, since
    /// its links keep blobs and its cache entries must be cleared.
    pub(super) async fn repository_dirs(&self) -> Result<Vec<String>> {
        let root = layout::repositories_root();
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let mut is_repo = false;
            for child in self.list_or_empty(&dir).await? {
                match layout::base_name(&child) {
                    "_manifests" | "_layers" | "_uploads" | "_refs" => is_repo = true,
                    base if base.starts_with('_') => {}
                    _ => stack.push(child),
                }
            }
            if is_repo {
                found.push(dir[root.len() + 1..].to_string());
            }
        }
        found.sort();
        Ok(found)
    }

    pub(super) async fn list_or_empty(&self, dir: &str) -> Result<Vec<String>> {
        match self.driver.list(dir).await {
            Ok(c) => Ok(c),
            Err(e) if e.is_not_found() => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }
}

/// `roots`, their index children (recursively), the referrers (manifests
/// whose `subject` is kept) and the subjects of kept manifests, to a fixed
/// point: a signature of a signature stays, and a tagged (or young) signature
/// keeps the image it signs — its revision and layers, not only its bytes.
pub(super) fn keep_closure(
    roots: HashSet<Digest>,
    refs: &HashMap<Digest, Option<Refs>>,
) -> HashSet<Digest> {
    let mut kept = roots;
    loop {
        let mut added = Vec::new();
        for (d, r) in refs {
            let Some(r) = r else { continue };
            if kept.contains(d) {
                added.extend(
                    r.children
                        .iter()
                        .chain(&r.subject)
                        .filter(|c| !kept.contains(*c))
                        .cloned(),
                );
            } else if r.subject.as_ref().is_some_and(|s| kept.contains(s)) {
                added.push(d.clone());
            }
        }
        if added.is_empty() {
            return kept;
        }
        kept.extend(added);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn parses_every_reference() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "config": {"digest": d('a').to_string()},
            "layers": [{"digest": d('b').to_string()}, {"digest": "garbage"}],
            "blobs": [{"digest": d('c').to_string()}],
            "manifests": [{"digest": d('e').to_string()}],
            "subject": {"digest": d('f').to_string()}
        });
        let r = Refs::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.blobs, [d('a'), d('b'), d('c')]);
        assert_eq!(r.children, [d('e')]);
        assert_eq!(r.subject, Some(d('f')));
        assert!(Refs::parse(b"not json").is_none());
    }

    #[test]
    fn parses_schema1_layers() {
        let body = serde_json::json!({
            "schemaVersion": 1,
            "fsLayers": [{"blobSum": d('a').to_string()}, {"blobSum": d('b').to_string()}],
        });
        let r = Refs::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.blobs, [d('a'), d('b')]);
    }

    #[test]
    fn closure_keeps_the_subject_of_a_kept_referrer() {
        let sig = Refs {
            subject: Some(d('a')),
            ..Refs::default()
        };
        let refs: HashMap<Digest, Option<Refs>> = [
            (d('a'), Some(Refs::default())),
            (d('b'), Some(sig)),
            (d('c'), Some(Refs::default())),
        ]
        .into_iter()
        .collect();
        let kept = keep_closure([d('b')].into_iter().collect(), &refs);
        assert!(kept.contains(&d('a')) && !kept.contains(&d('c')));
    }

    #[test]
    fn closure_keeps_children_and_referrers_of_kept_only() {
        let index = Refs {
            children: vec![d('1'), d('2')],
            ..Refs::default()
        };
        let sig = |s| Refs {
            subject: Some(s),
            ..Refs::default()
        };
        let refs: HashMap<Digest, Option<Refs>> = [
            (d('a'), Some(index)),
            (d('1'), Some(Refs::default())),
            (d('2'), Some(Refs::default())),
            (d('b'), Some(sig(d('a')))),
            (d('c'), Some(sig(d('b')))),
            (d('d'), Some(Refs::default())),
            (d('e'), Some(sig(d('d')))),
        ]
        .into_iter()
        .collect();
        let kept = keep_closure([d('a')].into_iter().collect(), &refs);
        for k in ['a', '1', '2', 'b', 'c'] {
            assert!(kept.contains(&d(k)), "{k} kept");
        }
        assert!(!kept.contains(&d('d')) && !kept.contains(&d('e')));
    }
}
