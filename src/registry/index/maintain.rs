//! Keeping the index whole: reading it all, `berth index rebuild`, and the
//! garbage collector's reconciliation (adds and checked removals).

use std::collections::HashSet;

use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};

use super::{entries_dir, entry, name_of, IndexReport, RepositoryIndex, AT_ONCE, READ_PAGE};
use crate::registry::{error::Result, names::validate_name};
use crate::storage::{layout, StorageError};

impl RepositoryIndex {
    /// Every name in the index, read a page at a time.
    pub async fn entries(&self) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = match self
                .driver
                .list_page(&entries_dir(), after.as_deref(), READ_PAGE)
                .await
            {
                Ok(p) => p,
                Err(e) if e.is_not_found() => return Ok(out),
                Err(e) => return Err(e.into()),
            };
            out.extend(page.names.iter().filter_map(|k| name_of(k)));
            if !page.more {
                return Ok(out);
            }
            after = page.names.last().cloned();
        }
    }

    /// Write the entry of `name` (known to have a revision).
    pub(crate) async fn add(&self, name: &str) -> Result<()> {
        self.driver
            .put_content(&entry(name), Bytes::from(name.to_string()))
            .await?;
        Ok(())
    }

    /// Remove the entry of `name` if its repository has no revision, then
    /// look again and write it back if one appeared meanwhile (see the module
    /// documentation). Returns whether it stays removed.
    pub(crate) async fn remove_if_empty(&self, name: &str) -> Result<bool> {
        if self.has_revisions(name).await? {
            return Ok(false);
        }
        match self.driver.delete(&entry(name)).await {
            Ok(()) => {}
            Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.known.lock().unwrap().remove(name);
        if self.has_revisions(name).await? {
            self.add(name).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Has the repository a manifest revision? Usually one listing
    /// (`revisions/sha256/`, one name); other algorithms are looked at only
    /// when that has none.
    pub async fn has_revisions(&self, name: &str) -> Result<bool> {
        let root = format!("{}/revisions", layout::manifests_root(name));
        if self.any_child(&format!("{root}/sha256")).await? {
            return Ok(true);
        }
        let algs = match self.driver.list(&root).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        for alg in algs.iter().filter(|a| layout::base_name(a) != "sha256") {
            if self.any_child(alg).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn any_child(&self, dir: &str) -> Result<bool> {
        match self.driver.list_page(dir, None, 1).await {
            Ok(p) => Ok(!p.names.is_empty()),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Garbage collection, with every server told a sweep runs: add the
    /// entries of `with_revisions` that are missing, remove those of
    /// repositories without a revision now (any entry outside
    /// `with_revisions`, and those of `emptied`, where manifests were just
    /// deleted), each re-checked; then mark the index complete.
    pub(crate) async fn reconcile(
        &self,
        with_revisions: &HashSet<String>,
        emptied: &HashSet<String>,
    ) -> Result<IndexReport> {
        let present = self.entries().await?;
        let mut report = IndexReport {
            repositories: with_revisions.len(),
            ..IndexReport::default()
        };
        let mut indexed = present.clone();
        for name in with_revisions.difference(&present) {
            self.add(name).await?;
            indexed.insert(name.clone());
            report.added += 1;
        }
        let doubtful = indexed
            .iter()
            .filter(|n| !with_revisions.contains(*n) || emptied.contains(*n));
        for name in doubtful {
            if self.remove_if_empty(name).await? {
                tracing::info!(repository = %name, "repository index: removed a repository with no manifest left");
                report.removed += 1;
            }
        }
        self.mark_complete().await?;
        Ok(report)
    }

    /// `berth index rebuild`: walk `repositories/` (a level at a time,
    /// [`AT_ONCE`] directories at once), add the entry of every repository
    /// with a revision that lacks one, then write the `complete` marker.
    /// Only adds: removing needs the sweep protocol (garbage collection), so
    /// this is safe while replicas serve.
    pub async fn rebuild(&self) -> Result<IndexReport> {
        let present = self.entries().await?;
        let mut report = IndexReport::default();
        let root = layout::repositories_root();
        // (directory, repository name it would be)
        let mut level: Vec<(String, String)> = vec![(root, String::new())];
        while !level.is_empty() {
            let listed: Vec<_> = level
                .into_iter()
                .map(|(dir, name)| async move {
                    match self.driver.list(&dir).await {
                        Ok(children) => Ok((dir, name, children)),
                        Err(e) if e.is_not_found() => Ok((dir, name, vec![])),
                        Err(e) => Err(e),
                    }
                })
                .collect();
            let listed: Vec<_> = stream::iter(listed)
                .buffer_unordered(AT_ONCE)
                .try_collect()
                .await?;
            let mut next = Vec::new();
            let mut candidates = Vec::new();
            for (dir, name, children) in listed {
                for child in children {
                    let base = layout::base_name(&child);
                    if base == "_manifests" {
                        candidates.push(name.clone());
                    } else if !base.starts_with('_') {
                        let child_name = if name.is_empty() {
                            base.to_string()
                        } else {
                            format!("{name}/{base}")
                        };
                        next.push((format!("{dir}/{base}"), child_name));
                    }
                }
            }
            let present = &present;
            // (has a revision, entry written), for each candidate.
            let probes: Vec<_> = candidates
                .into_iter()
                .filter(|n| validate_name(n).is_ok())
                .map(|n| async move {
                    if !self.has_revisions(&n).await? {
                        return Ok((false, false));
                    }
                    let missing = !present.contains(&n);
                    if missing {
                        self.add(&n).await?;
                    }
                    Ok::<_, crate::registry::error::Error>((true, missing))
                })
                .collect();
            let mut probes = stream::iter(probes).buffer_unordered(AT_ONCE);
            while let Some((has, added)) = probes.try_next().await? {
                report.repositories += usize::from(has);
                report.added += usize::from(added);
            }
            level = next;
        }
        self.mark_complete().await?;
        Ok(report)
    }
}
