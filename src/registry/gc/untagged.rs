//! `--delete-untagged`: removing the untagged manifests both mark passes
//! found deletable, each re-checked with its keepers just before its delete.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    time::SystemTime,
};

use super::{mark::Untagged, GcOptions, GcPhase};
use crate::registry::{digest::Digest, error::Result, Registry};
use crate::storage::layout;

impl Registry {
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
        opts: &GcOptions,
        marked: &mut HashSet<Digest>,
        hook: &mut F,
    ) -> Result<(usize, usize)>
    where
        F: FnMut(GcPhase) -> Fut,
        Fut: Future<Output = ()>,
    {
        let keepers = Keepers::of(&deletable);
        let (mut deleted, mut spared) = (0, 0);
        let dry_run = opts.dry_run;
        for m in &deletable {
            super::interrupted(opts)?;
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
        match self.driver.stat_object(&link).await {
            Ok(info) if info.modified >= cutoff => return Ok(false),
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(true),
            Err(e) => return Err(e.into()),
        }
        Ok(!self.tagged(&m.repo).await?.contains(&m.digest))
    }

    /// The revision, then its referrer-index entry and its tag-history
    /// entries; the bytes stay in the blob store for the blob sweep. The
    /// revision goes first: stopped half way (a storage error), what is left
    /// is entries readers skip (the referrers API lists only manifests it
    /// can resolve), never a served manifest missing from the referrers API.
    async fn remove_manifest(&self, m: &Untagged) -> Result<()> {
        // Gone already (another collector, a client's DELETE) is fine.
        self.delete_if_exists(&layout::manifest_revision_dir(&m.repo, &m.digest))
            .await?;
        // A failure is logged loudly; the entry stops answering once the
        // sweep has deleted the bytes (a linked digest whose bytes are gone
        // is unknown).
        self.manifests.forget_link(&m.repo, &m.digest).await;
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
        Ok(())
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
