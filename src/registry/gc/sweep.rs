//! The sweep: untagged manifests (with `--delete-untagged`), then unmarked
//! blobs, each re-checked just before it is deleted.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    time::{Instant, SystemTime},
};

use super::{mark::Untagged, GcPhase, GcReport, REPOS_REFRESH};
use crate::registry::{digest::Digest, error::Result, Registry};
use crate::storage::layout;

/// A stored blob: `blobs/<alg>/<xx>/<hex>/data`.
#[derive(Debug, Clone)]
pub(super) struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

/// The repositories the re-check looks in: listed when the sweep starts and
/// again whenever older than [`REPOS_REFRESH`] (a repository created since the
/// mark passes may link a candidate).
#[derive(Default)]
pub(super) struct RepoList {
    names: Vec<String>,
    at: Option<Instant>,
}

impl RepoList {
    async fn current(&mut self, registry: &Registry) -> Result<&[String]> {
        if self.at.is_none_or(|t| t.elapsed() >= REPOS_REFRESH) {
            self.names = registry.repository_dirs().await?;
            self.at = Some(Instant::now());
        }
        Ok(&self.names)
    }
}

/// A blob that passed its re-check: the links to remove after it, and the
/// repositories whose cache entries to clear.
pub(super) struct Doomed {
    old_links: Vec<(String, String)>,
    repos: Vec<String>,
}

/// What the `_layers` links to one blob say.
struct Links {
    /// Some repository linked it at or after the cutoff.
    fresh: bool,
    /// Links older than the cutoff: `(repository, link directory)`.
    old: Vec<(String, String)>,
}

impl Registry {
    /// Every blob in the store, with its size and modification time.
    pub(super) async fn list_blobs(&self) -> Result<Vec<StoredBlob>> {
        let mut out = Vec::new();
        for alg_dir in self.list_or_empty(&layout::blobs_root()).await? {
            for prefix_dir in self.list_or_empty(&alg_dir).await? {
                for hex_dir in self.list_or_empty(&prefix_dir).await? {
                    let Ok(digest) = format!(
                        "{}:{}",
                        layout::base_name(&alg_dir),
                        layout::base_name(&hex_dir)
                    )
                    .parse::<Digest>() else {
                        continue;
                    };
                    match self.driver.stat(&layout::blob_data(&digest)).await {
                        Ok(info) => out.push(StoredBlob {
                            digest,
                            size: info.size,
                            modified: info.modified,
                        }),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(out)
    }

    async fn layer_links(&self, repos: &[String], d: &Digest, cutoff: SystemTime) -> Result<Links> {
        let mut links = Links {
            fresh: false,
            old: Vec::new(),
        };
        for repo in repos {
            let link = layout::layer_link(repo, d);
            match self.driver.stat(&link).await {
                Ok(info) if info.modified >= cutoff => {
                    links.fresh = true;
                    return Ok(links);
                }
                Ok(_) => links
                    .old
                    .push((repo.clone(), link.trim_end_matches("/link").to_string())),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(links)
    }

    /// Re-check one unmarked, old blob just before its delete: `None` keeps it.
    pub(super) async fn recheck_blob(
        &self,
        blob: &StoredBlob,
        cutoff: SystemTime,
        repos: &mut RepoList,
        report: &mut GcReport,
    ) -> Result<Option<Doomed>> {
        let d = &blob.digest;
        // Rewritten since it was listed (a re-upload or a manifest PUT)?
        match self.driver.stat(&layout::blob_data(d)).await {
            Ok(info) if info.modified >= cutoff => {
                report.blobs_relinked += 1;
                return Ok(None);
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let repos = repos.current(self).await?.to_vec();
        let links = self.layer_links(&repos, d, cutoff).await?;
        if links.fresh {
            tracing::info!(digest = %d, "garbage collection: blob referenced again during the run; kept");
            report.blobs_relinked += 1;
            return Ok(None);
        }
        Ok(Some(Doomed {
            old_links: links.old,
            repos,
        }))
    }

    /// Delete a re-checked blob: data, then its cache entries, then its old
    /// `_layers` links; then look once more for a reference that raced the delete.
    pub(super) async fn delete_blob_data(
        &self,
        blob: &StoredBlob,
        doomed: Doomed,
        cutoff: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        let d = &blob.digest;
        report.blobs_deleted += 1;
        report.bytes_freed += blob.size;
        if dry_run {
            tracing::info!(digest = %d, size = blob.size, "garbage collection (dry run): blob eligible for deletion");
            return Ok(());
        }
        self.delete_if_exists(&layout::blob_dir(d)).await?;
        tracing::info!(digest = %d, size = blob.size, "garbage collection: deleted blob");
        // Clear the cache as soon as the data is gone, before the link
        // deletes that may fail and stop the run: a stale entry would tell
        // clients the blob is there. Once the data is gone no fill can bring
        // an entry back (a fill stats the data first).
        if let Some(cache) = &self.cache {
            let mut cleared = cache.clear(None, d).await;
            for repo in &doomed.repos {
                cleared &= cache.clear(Some(repo), d).await;
            }
            if !cleared {
                report.stale_cache.push(d.clone());
            }
        }
        for (repo, dir) in &doomed.old_links {
            // Leave a link that was refreshed meanwhile: that is the race below.
            match self.driver.stat(&format!("{dir}/link")).await {
                Ok(info) if info.modified < cutoff => {
                    self.delete_if_exists(dir).await?;
                    tracing::info!(repository = %repo, digest = %d, "garbage collection: removed dangling layer link");
                }
                _ => {}
            }
        }
        if self.layer_links(&doomed.repos, d, cutoff).await?.fresh {
            tracing::error!(digest = %d, "garbage collection: blob was referenced again while it was being deleted; it must be pushed again");
            report.raced.push(d.clone());
        }
        Ok(())
    }

    /// Delete the untagged manifests both passes found deletable. Each is
    /// re-checked right before its delete together with its keepers (see
    /// [`Keepers`]): if any of them was tagged or rewritten since the marks,
    /// it is spared and what it references joins `marked`. Checking the
    /// keepers at each manifest's own turn, not once up front, is what spares
    /// a signature whose image is tagged while the deletes run, whichever of
    /// the two comes first. Returns (deleted, spared).
    pub(super) async fn delete_manifests<F, Fut>(
        &self,
        deletable: Vec<Untagged>,
        cutoff: SystemTime,
        dry_run: bool,
        marked: &mut HashSet<Digest>,
        hook: &mut F,
    ) -> Result<(usize, usize)>
    where
        F: FnMut(GcPhase) -> Fut,
        Fut: Future<Output = ()>,
    {
        let keepers = Keepers::of(&deletable);
        let (mut deleted, mut spared) = (0, 0);
        for m in &deletable {
            if !self.deletable_now(m, &keepers, cutoff).await? {
                spared += 1;
                marked.insert(m.digest.clone());
                if let Some(r) = &m.refs {
                    marked.extend(r.all().cloned());
                }
                continue;
            }
            deleted += 1;
            if dry_run {
                tracing::info!(repository = %m.repo, digest = %m.digest, "garbage collection (dry run): untagged manifest eligible for deletion");
            } else {
                hook(GcPhase::DeletingManifest {
                    repository: m.repo.clone(),
                    digest: m.digest.clone(),
                })
                .await;
                self.remove_manifest(m).await?;
                tracing::info!(repository = %m.repo, digest = %m.digest, "garbage collection: deleted untagged manifest");
            }
        }
        Ok((deleted, spared))
    }

    /// `m` and every keeper of it, transitively, still deletable? A subject
    /// that was no revision at mark time but is one now (pushed after its
    /// referrer, as OCI allows) keeps `m` too.
    async fn deletable_now(
        &self,
        m: &Untagged,
        keepers: &Keepers<'_>,
        cutoff: SystemTime,
    ) -> Result<bool> {
        let mut seen: HashSet<&Digest> = HashSet::from([&m.digest]);
        let mut queue = vec![m];
        while let Some(n) = queue.pop() {
            if !self.still_deletable(n, cutoff).await? {
                return Ok(false);
            }
            for k in keepers.direct(n) {
                match keepers.listed(&m.repo, k) {
                    Some(listed) if seen.insert(k) => queue.push(listed),
                    Some(_) => {}
                    None => {
                        let link = layout::manifest_revision_link(&m.repo, k);
                        if seen.insert(k) && self.read_link(&link).await?.is_some() {
                            return Ok(false);
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Still old and still untagged?
    async fn still_deletable(&self, m: &Untagged, cutoff: SystemTime) -> Result<bool> {
        let link = layout::manifest_revision_link(&m.repo, &m.digest);
        match self.driver.stat(&link).await {
            Ok(info) if info.modified >= cutoff => return Ok(false),
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(true),
            Err(e) => return Err(e.into()),
        }
        Ok(!self.tagged(&m.repo).await?.contains(&m.digest))
    }

    /// The revision, its referrer-index entry and its tag-history entries;
    /// the bytes stay in the blob store for the blob sweep.
    async fn remove_manifest(&self, m: &Untagged) -> Result<()> {
        if let Some(subject) = m.refs.as_ref().and_then(|r| r.subject.as_ref()) {
            let link = layout::referrer_link(&m.repo, subject, &m.digest);
            self.delete_if_exists(link.trim_end_matches("/link"))
                .await?;
        }
        for tag in self.tags(&m.repo).await.unwrap_or_default() {
            let link = layout::tag_index_link(&m.repo, &tag, &m.digest);
            self.delete_if_exists(link.trim_end_matches("/link"))
                .await?;
        }
        // Gone already (another collector, a client's DELETE) is fine.
        self.delete_if_exists(&layout::manifest_revision_dir(&m.repo, &m.digest))
            .await
    }
}

/// What keeps a deletable manifest when it is kept itself, per repository:
/// the indexes listing it and its referrers (manifests whose `subject` it
/// is), plus its own subject — the reverse of `mark::keep_closure`'s rules.
pub(super) struct Keepers<'a> {
    by_digest: HashMap<(&'a str, &'a Digest), &'a Untagged>,
    /// (repository, digest) → manifests of the deletable set that keep it.
    parents: HashMap<(&'a str, &'a Digest), Vec<&'a Digest>>,
}

impl<'a> Keepers<'a> {
    pub fn of(deletable: &'a [Untagged]) -> Keepers<'a> {
        let mut parents: HashMap<(&str, &Digest), Vec<&Digest>> = HashMap::new();
        for m in deletable {
            let Some(r) = &m.refs else { continue };
            for child in r.children.iter().chain(&r.subject) {
                parents
                    .entry((m.repo.as_str(), child))
                    .or_default()
                    .push(&m.digest);
            }
        }
        Keepers {
            by_digest: deletable
                .iter()
                .map(|m| ((m.repo.as_str(), &m.digest), m))
                .collect(),
            parents,
        }
    }

    /// The direct keepers of `m`: its parents, and its own subject.
    fn direct(&self, m: &'a Untagged) -> impl Iterator<Item = &'a Digest> + '_ {
        let parents = self
            .parents
            .get(&(m.repo.as_str(), &m.digest))
            .into_iter()
            .flatten()
            .copied();
        parents.chain(m.refs.as_ref().and_then(|r| r.subject.as_ref()))
    }

    /// `d` in the deletable set of `repo`, if it is there.
    fn listed(&self, repo: &str, d: &Digest) -> Option<&'a Untagged> {
        self.by_digest.get(&(repo, d)).copied()
    }
}
