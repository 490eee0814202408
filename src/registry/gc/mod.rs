//! Online garbage collection (`berth garbage-collect`): mark every manifest of
//! every repository, sweep the blobs nothing references, while replicas keep
//! serving pushes.
//!
//! distribution's collector is stop-the-world: a blob uploaded or linked while
//! it runs may be deleted (its users report lost layers and lost multi-arch
//! children). Berth's protocol, in order:
//!
//! 1. **T0 and the grace period.** `cutoff = T0 − grace`. Only blobs whose data
//!    was last written before `cutoff` can be deleted; a push in progress (its
//!    layers uploaded, its manifest not yet) is younger than that. With
//!    `--delete-untagged`, only untagged manifests whose revision link is older
//!    than `cutoff` are removed, so the children of an index still being pushed
//!    (they arrive, untagged, before the index) are safe.
//! 2. **Announce.** With a blob-descriptor cache configured, first check it
//!    answers (the sweep must clear its entries; see step 6). The run writes
//!    a sweep marker of its own ([`watch::sweep_marker`], outside
//!    `repositories/` and `blobs/`). Servers look for any every
//!    [`watch::POLL_EVERY`]; while one exists they bypass and flush their
//!    blob-descriptor and manifest caches, and a manifest PUT rewrites
//!    ("touches") the repository links of every blob, child and subject it
//!    references before checking them, so their modification time says
//!    "referenced just now".
//! 3. **Mark** (pass 1), list the blobs, then wait until [`watch::NOTICE`] has
//!    passed since the announcement, so every server has seen the marker. A
//!    manifest whose bytes are there but do not parse, or a revision whose
//!    digest cannot be parsed, stops the run before anything is deleted: what
//!    it references is unknown.
//! 4. **Re-mark** (pass 2): the same walk again. Manifests written since pass 1
//!    are marked; only manifests deletable in both passes are deletable.
//! 5. **Delete untagged manifests**, each re-checked just before, together
//!    with its keepers (the indexes listing it, its subject, its referrers,
//!    transitively): all still old and untagged, else it is spared with its
//!    blobs, whichever of them was re-pushed or tagged.
//! 6. **Sweep**: for each unmarked old blob, re-check just before deleting it:
//!    its data still old, and no repository has a `_layers` link to it newer
//!    than `cutoff` (a finished upload, a mount, or a touch by a manifest PUT).
//!    Then delete the data, then the cache entries (global and per
//!    repository: once the data is gone no fill can bring them back), then the
//!    now-dangling old `_layers` links. A cache entry that cannot be cleared
//!    fails the run, naming the blob.
//!
//! 7. **Index** (between steps 5 and 6, so with every server told): the
//!    repository index gets an entry for every repository pass 2 found with
//!    a revision, and loses the entries of repositories left with none (see
//!    [`super::index`]); then it is marked complete.
//!
//! What remains: a reference that lands *between* step 6's re-check of a blob
//! and its delete (one storage round trip), or in a repository created since
//! the list of repositories was last refreshed (at most [`REPOS_REFRESH`] old),
//! is not seen. The collector looks again after deleting and logs such a blob
//! as an error (`raced` in the report), so it is never silent; a client's next
//! push of that blob heals it ([`GcPhase::Deleting`] lets a test land a
//! reference exactly there). The same holds for an untagged manifest between
//! its re-check and its delete. A server that does not see the marker within
//! [`watch::NOTICE`] (stalled) neither bypasses its in-memory cache nor
//! touches. Times are compared as the store records them: the grace period
//! must exceed its timestamp precision (S3: one second) and clock skew.

mod expire;
mod mark;
mod sweep;
mod untagged;
pub mod watch;

use std::{
    collections::HashSet,
    fmt,
    future::Future,
    time::{Duration, SystemTime},
};

use super::{
    digest::{Algorithm, Digest},
    error::{Error, Result},
    Registry,
};

/// How old the repository list used by the sweep's re-check may get.
pub const REPOS_REFRESH: Duration = Duration::from_secs(1);

/// What a run does.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report only: nothing in storage changes, no marker is written.
    pub dry_run: bool,
    /// Also remove manifests no tag points at (never an index's child or a
    /// referrer of a kept manifest, never one younger than the grace period).
    pub delete_untagged: bool,
    /// Blobs and untagged manifests younger than this are kept.
    pub grace: Duration,
    /// Wait this long after announcing the sweep before re-marking and deleting.
    pub notice: Duration,
    /// `proxy.ttl`: remove what mirrored repositories fetched (tags: last
    /// checked upstream) longer ago than this (see `expire`).
    pub expire_mirrored: Option<Duration>,
    /// Cancelled (Ctrl-C, a CronJob's SIGTERM): the run stops between two
    /// deletes — never between a blob's delete and its cache clears — ends
    /// its sweep and returns an error.
    pub stop: tokio_util::sync::CancellationToken,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            delete_untagged: false,
            grace: Duration::from_secs(3600),
            notice: watch::NOTICE,
            expire_mirrored: None,
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }
}

/// Where a run is, for [`Registry::garbage_collect_with`]'s hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcPhase {
    /// Pass 1 is done and the blobs are listed; pass 2 has not started.
    Marked,
    /// This untagged manifest passed its last re-check and is deleted next
    /// (`--delete-untagged`, not in a dry run).
    DeletingManifest { repository: String, digest: Digest },
    /// Both passes and the manifest deletes are done; no blob is deleted yet.
    Rechecked,
    /// This blob passed its last re-check and is deleted next (not in a dry
    /// run): the window the module documentation describes.
    Deleting(Digest),
}

/// What a run found and did (or, with `dry_run`, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: usize,
    pub manifests_marked: usize,
    /// Stored blobs (layers, configs, manifests) something references.
    pub blobs_marked: usize,
    pub manifests_deleted: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    /// Unreferenced but younger than the grace period.
    pub blobs_young: usize,
    /// Unreferenced at mark time, referenced again before their delete.
    pub blobs_relinked: usize,
    /// Referenced again while being deleted: logged as errors (see module doc).
    pub raced: Vec<Digest>,
    /// Deleted, but a blob-descriptor cache entry for it could not be
    /// cleared (Redis went away mid-run): the run fails, naming them.
    pub stale_cache: Vec<Digest>,
    /// Repository index entries written (missing) and removed (no
    /// manifest revision left); see [`super::index`].
    pub index_added: usize,
    pub index_removed: usize,
    /// Tags of mirrored repositories not pulled within `proxy.ttl`.
    pub tags_expired: usize,
}

/// One summary line, `key=value` so scripts can read it; with a dry run the
/// counts are what a real run would have deleted.
impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "repositories={} manifests_marked={} blobs_marked={} manifests_deleted={} blobs_deleted={} bytes_freed={} young_blobs_kept={} rereferenced_blobs_kept={} raced={} index_added={} index_removed={}",
            self.repositories,
            self.manifests_marked,
            self.blobs_marked,
            self.manifests_deleted,
            self.blobs_deleted,
            self.bytes_freed,
            self.blobs_young,
            self.blobs_relinked,
            self.raced.len(),
            self.index_added,
            self.index_removed,
        )?;
        if self.tags_expired > 0 {
            write!(f, " mirrored_tags_expired={}", self.tags_expired)?;
        }
        if self.dry_run {
            write!(f, " (dry run: nothing was deleted)")?;
        }
        Ok(())
    }
}

impl Registry {
    /// One garbage collection run.
    pub async fn garbage_collect(&self, opts: &GcOptions) -> Result<GcReport> {
        self.garbage_collect_with(opts, |_| async {}).await
    }

    /// [`garbage_collect`](Self::garbage_collect), calling `hook` at each
    /// [`GcPhase`] (tests push "during" a run through it, deterministically).
    pub async fn garbage_collect_with<F, Fut>(&self, opts: &GcOptions, hook: F) -> Result<GcReport>
    where
        F: FnMut(GcPhase) -> Fut,
        Fut: Future<Output = ()>,
    {
        let t0 = SystemTime::now();
        let cutoff = t0.checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let notice_until = tokio::time::Instant::now() + opts.notice;
        if opts.dry_run {
            return self.collect(opts, cutoff, None, hook).await;
        }
        self.check_cache_reachable().await?;
        self.announce_sweep(t0).await?;
        let result = self.collect(opts, cutoff, Some(notice_until), hook).await;
        if let Err(e) = self.end_sweep().await {
            tracing::error!(error = %e, "garbage collection: could not remove the sweep marker; servers keep bypassing their cache until it is removed");
        }
        match result {
            Ok(report) if !report.stale_cache.is_empty() => Err(Error::internal(format!(
                "garbage collection deleted blobs whose blob-descriptor cache entries it could not clear; servers may answer for them until their keys (blobs::<digest>, repository::<name>::blobs::<digest>) are deleted (and berth::manifest::<digest>): {}; {report}",
                report.stale_cache.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ))),
            other => other,
        }
    }

    /// The collector clears the shared cache's entries for what it deletes;
    /// a cache it cannot reach would keep telling replicas a swept blob is
    /// there, so it stops before deleting anything.
    async fn check_cache_reachable(&self) -> Result<()> {
        if !self.manifests.reachable().await {
            return Err(Error::internal(
                "garbage collection stopped before deleting anything: Redis (the manifest cache's shared tier) cannot be reached, and entries for swept manifests would stay behind",
            ));
        }
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        // Forgetting a digest nobody stores is harmless, and exercises the
        // very operation the sweep relies on.
        let probe = Digest::of(Algorithm::Sha256, b"berth garbage-collect cache probe");
        if cache.clear(None, &probe).await {
            Ok(())
        } else {
            Err(Error::internal(
                "garbage collection stopped before deleting anything: the blob-descriptor cache (storage.cache.blobdescriptor) cannot be reached, and entries for swept blobs would stay behind",
            ))
        }
    }

    async fn collect<F, Fut>(
        &self,
        opts: &GcOptions,
        cutoff: SystemTime,
        notice_until: Option<tokio::time::Instant>,
        mut hook: F,
    ) -> Result<GcReport>
    where
        F: FnMut(GcPhase) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        if let Some(ttl) = opts.expire_mirrored {
            let before = SystemTime::now()
                .checked_sub(ttl)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let repositories = self.repository_dirs().await?;
            report.tags_expired = self
                .expire_mirrored_tags(&repositories, before, opts.dry_run)
                .await?;
        }
        let first = self.mark(opts, cutoff).await?;
        let blobs = self.list_blobs().await?;
        hook(GcPhase::Marked).await;
        if let Some(t) = notice_until {
            tokio::select! {
                _ = tokio::time::sleep_until(t) => {}
                _ = opts.stop.cancelled() => {}
            }
        }
        interrupted(opts)?;
        let second = self.mark(opts, cutoff).await?;
        let mut marked: HashSet<Digest> = first.digests;
        marked.extend(second.digests);
        let deletable_before: HashSet<(&str, &Digest)> = first
            .deletable
            .iter()
            .map(|m| (m.repo.as_str(), &m.digest))
            .collect();
        let deletable: Vec<_> = second
            .deletable
            .into_iter()
            .filter(|m| deletable_before.contains(&(m.repo.as_str(), &m.digest)))
            .collect();
        let emptied: HashSet<String> = deletable.iter().map(|m| m.repo.clone()).collect();
        let (deleted, spared) = self
            .delete_manifests(deletable, cutoff, opts, &mut marked, &mut hook)
            .await?;
        if !opts.dry_run {
            interrupted(opts)?;
            let index = self
                .index
                .reconcile(&second.with_revisions, &emptied)
                .await?;
            report.index_added = index.added;
            report.index_removed = index.removed;
        }
        report.repositories = second.repositories.len();
        report.manifests_marked = second.manifests + spared;
        report.manifests_deleted = deleted;
        hook(GcPhase::Rechecked).await;

        let mut repos = sweep::RepoList::default();
        for blob in blobs {
            interrupted(opts)?;
            if marked.contains(&blob.digest) {
                report.blobs_marked += 1;
            } else if blob.modified >= cutoff {
                report.blobs_young += 1;
            } else if let Some(doomed) = self
                .recheck_blob(&blob, cutoff, &mut repos, &mut report)
                .await?
            {
                if !opts.dry_run {
                    hook(GcPhase::Deleting(blob.digest.clone())).await;
                }
                self.delete_blob_data(&blob, doomed, cutoff, opts.dry_run, &mut report)
                    .await?;
            }
        }
        Ok(report)
    }
}

/// Err once the run was asked to stop; checked between two deletes.
fn interrupted(opts: &GcOptions) -> Result<()> {
    if opts.stop.is_cancelled() {
        Err(Error::internal(
            "garbage collection interrupted; what was deleted so far stays deleted",
        ))
    } else {
        Ok(())
    }
}
