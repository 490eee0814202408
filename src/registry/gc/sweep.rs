//! The blob sweep: every unmarked old blob, re-checked just before it is
//! deleted (untagged manifests go first, in `untagged`).

use std::time::{Instant, SystemTime};

use futures::{stream, StreamExt, TryStreamExt};

use super::{GcReport, REPOS_REFRESH};
use crate::registry::{digest::Digest, error::Result, Registry};
use crate::storage::layout;

/// How many `_layers` links a blob's re-check stats at once.
const LINK_STATS_IN_FLIGHT: usize = 32;

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
                    match self.driver.stat_object(&layout::blob_data(&digest)).await {
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

    /// The `_layers` links to `d` in `repos`, stat'ed [`LINK_STATS_IN_FLIGHT`]
    /// at a time: one after the other, the first repository's answer would be
    /// as old as the whole walk by the time the blob is deleted (on S3, one
    /// round trip per repository), and the re-check would not be "just before".
    async fn layer_links(&self, repos: &[String], d: &Digest, cutoff: SystemTime) -> Result<Links> {
        let mut links = Links {
            fresh: false,
            old: Vec::new(),
        };
        let stats = stream::iter(repos)
            .map(|repo| async move {
                let link = layout::layer_link(repo, d);
                match self.driver.stat_object(&link).await {
                    Ok(info) => Ok(Some((repo, link, info.modified))),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(LINK_STATS_IN_FLIGHT);
        futures::pin_mut!(stats);
        while let Some(found) = stats.try_next().await? {
            let Some((repo, link, modified)) = found else {
                continue;
            };
            if modified >= cutoff {
                links.fresh = true;
                return Ok(links);
            }
            links
                .old
                .push((repo.clone(), link.trim_end_matches("/link").to_string()));
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
        match self.driver.stat_object(&layout::blob_data(d)).await {
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
        // The manifest cache's copy in Redis (in-process copies were
        // flushed when the sweep was announced).
        if !self.manifests.forget_body(d).await && !report.stale_cache.contains(d) {
            report.stale_cache.push(d.clone());
        }
        for (repo, dir) in &doomed.old_links {
            // Leave a link that was refreshed meanwhile: that is the race below.
            match self.driver.stat_object(&format!("{dir}/link")).await {
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
}
