//! Eviction from a pull-through cache (`proxy.ttl`, distribution's key):
//! what a mirror fetched and nobody pulled for `ttl` goes with the next
//! garbage collection, on every replica at once (distribution's proxy has a
//! per-process scheduler writing one state file, which a cluster cannot
//! share).
//!
//! Before marking, a tag of a mirrored repository whose current link was
//! last written more than `ttl` ago is removed: the mirror rewrites that
//! link whenever a pull checks the tag upstream (after `proxy.tagttl`), so
//! its age is the time since the tag was last pulled, give or take a tag
//! TTL. Marking then treats mirrored repositories as `--delete-untagged`
//! does, keeping what remaining tags reach and every revision fetched
//! within `ttl` (a manifest pulled by digest expires `ttl` after it was
//! fetched, as in distribution), and the sweep removes the blobs nothing
//! references any more. A pull of anything removed fetches it again.

use std::time::SystemTime;

use super::super::{error::Result, Registry};
use crate::storage::layout;

impl Registry {
    /// Remove the tags of mirrored repositories among `repositories` last
    /// checked upstream before `before` (only count them in a dry run).
    pub(super) async fn expire_mirrored_tags(
        &self,
        repositories: &[String],
        before: SystemTime,
        dry_run: bool,
    ) -> Result<usize> {
        let mut expired = 0;
        for repo in repositories {
            if self.mirror_of(repo).is_none() {
                continue;
            }
            for tag in self.tags(repo).await.unwrap_or_default() {
                let link = layout::tag_current_link(repo, &tag);
                let modified = match self.driver.stat_object(&link).await {
                    Ok(info) => info.modified,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                if modified >= before {
                    continue;
                }
                tracing::info!(
                    repository = repo,
                    tag,
                    "garbage collection: mirrored tag not pulled within proxy.ttl; removed"
                );
                expired += 1;
                if !dry_run {
                    self.delete_if_exists(&layout::tag_dir(repo, &tag)).await?;
                    self.manifests.forget_tag(repo, &tag).await;
                }
            }
        }
        Ok(expired)
    }
}
