//! Listing: a repository's tags and the registry's catalog, both paginated
//! lexically with `n`/`last` as the spec describes — one page at a time, in
//! memory bounded by the page size whatever the number of tags or
//! repositories (the storage driver lists directories page by page too).

use std::{collections::VecDeque, time::SystemTime};

use super::{
    error::{Code, Error, Result},
    names::validate_name,
    Registry,
};
use crate::storage::{layout, StorageError};

/// One page of a sorted listing and whether more follow.
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// The largest page each listing endpoint answers with (`catalog.maxentries`,
/// `tags.maxtags`, `referrers.maxentries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingLimits {
    pub catalog: usize,
    pub tags: usize,
    pub referrers: usize,
}

impl Default for ListingLimits {
    fn default() -> Self {
        let d = crate::config::listing::DEFAULT_PAGE;
        ListingLimits {
            catalog: d,
            tags: d,
            referrers: d,
        }
    }
}

impl ListingLimits {
    pub fn from_config(cfg: &crate::config::Config) -> ListingLimits {
        use crate::config::listing::page_cap;
        ListingLimits {
            catalog: page_cap(cfg.catalog.maxentries),
            tags: page_cap(cfg.tags.maxtags),
            referrers: page_cap(cfg.referrers.maxentries),
        }
    }
}

/// Children read per storage call while walking the repository tree.
const WALK_PAGE: usize = 1000;

/// Repository order: one path component at a time, as distribution walks its
/// tree (`a`, `a/b`, `a-c` — not byte order, where `-` sorts before `/`), so a
/// `last` cursor from distribution continues correctly here.
pub fn repository_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// A directory being walked: its children come a page at a time.
struct Frame {
    dir: String,
    /// The repository name this directory would be ("" for the root).
    name: String,
    /// Children already read but not yet visited.
    pending: VecDeque<String>,
    /// The last child read (where the next page starts).
    after: Option<String>,
    /// Children have been read at least once / more remain in storage.
    opened: bool,
    more: bool,
    /// Reached by the walk (not a directory on the way to `last`, which is
    /// not listed again).
    fresh: bool,
}

impl Frame {
    fn new(dir: String, name: String, after: Option<String>, fresh: bool) -> Frame {
        Frame {
            dir,
            name,
            pending: VecDeque::new(),
            after,
            opened: false,
            more: true,
            fresh,
        }
    }
}

impl Registry {
    /// All tags of a repository, sorted. NAME_UNKNOWN if the repository does
    /// not exist. Holds every tag: for the registry's own walks (garbage
    /// collection, deletes), not for answering clients — see [`Self::tags_page`].
    pub async fn tags(&self, name: &str) -> Result<Vec<String>> {
        validate_name(name)?;
        match self.driver.list(&layout::tags_root(name)).await {
            Ok(paths) => Ok(paths
                .iter()
                .map(|p| layout::base_name(p).to_string())
                .collect()),
            Err(e) if e.is_not_found() => self.no_tags(name).await.map(|_| vec![]),
            Err(e) => Err(e.into()),
        }
    }

    /// At most `n` tags after `last`, in lexical order.
    pub async fn tags_page(&self, name: &str, n: usize, last: Option<&str>) -> Result<Page> {
        validate_name(name)?;
        // A mirrored repository's tags are the upstream's, while it answers.
        if let Some(proxy) = self.mirror_of(name) {
            if let Some(page) = proxy.tags_page(name, n, last).await? {
                return Ok(page);
            }
        }
        self.local_tags_page(name, n, last).await
    }

    /// At most `n` tags after `last` as storage has them (a mirror's too:
    /// never asked upstream).
    pub(crate) async fn local_tags_page(
        &self,
        name: &str,
        n: usize,
        last: Option<&str>,
    ) -> Result<Page> {
        match self
            .driver
            .list_page(&layout::tags_root(name), last, n)
            .await
        {
            Ok(page) => {
                if page.names.is_empty() && !page.more {
                    // Drivers that list from a point cannot tell an empty
                    // tail from a missing repository.
                    self.no_tags(name).await?;
                }
                Ok(Page {
                    items: page.names,
                    more: page.more,
                })
            }
            Err(e) if e.is_not_found() => self.no_tags(name).await.map(|_| Page {
                items: vec![],
                more: false,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// When `tag` was last pointed where it points (its link's modification
    /// time), if the store keeps one; None for an unknown tag.
    pub async fn tag_pushed_at(&self, name: &str, tag: &str) -> Result<Option<SystemTime>> {
        validate_name(name)?;
        match self.driver.stat(&layout::tag_current_link(name, tag)).await {
            Ok(info) => Ok(Some(info.modified).filter(|t| *t > SystemTime::UNIX_EPOCH)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A repository without tags is fine; one that does not exist is NAME_UNKNOWN.
    async fn no_tags(&self, name: &str) -> Result<()> {
        if self.repository_exists(name).await? {
            Ok(())
        } else {
            Err(Error::new(
                Code::NameUnknown,
                format!("repository name not known to registry: {name}"),
            ))
        }
    }

    /// At most `n` repositories after `last` in [`repository_order`]: from
    /// the repository index ([`super::index`]) in one listing when it is
    /// complete, else by [`Self::walk_repositories_page`].
    pub async fn repositories_page(&self, n: usize, last: Option<&str>) -> Result<Page> {
        match self.index.page(n, last).await? {
            Some(page) => Ok(page),
            None => self.walk_repositories_page(n, last).await,
        }
    }

    /// At most `n` repositories (directories holding `_manifests`) after
    /// `last` in [`repository_order`], as distribution finds them: every
    /// request walks the tree up to the page's end. The tree is walked depth first in
    /// name order — which is that order — starting right after `last` and
    /// stopping as soon as the page is full, with one page of children per
    /// directory level in memory.
    pub async fn walk_repositories_page(&self, n: usize, last: Option<&str>) -> Result<Page> {
        let root = layout::repositories_root();
        let mut stack = vec![];
        match last.filter(|l| validate_name(l).is_ok()) {
            // Resume inside the tree: each directory on the way to `last`
            // continues after the component that leads there; `last`'s own
            // children (which come after it) are read from their start.
            Some(last) => {
                let parts: Vec<&str> = last.split('/').collect();
                stack.push(Frame::new(
                    root.clone(),
                    String::new(),
                    Some(parts[0].to_string()),
                    false,
                ));
                for i in 0..parts.len() {
                    let name = parts[..=i].join("/");
                    let after = parts.get(i + 1).map(|s| s.to_string());
                    stack.push(Frame::new(format!("{root}/{name}"), name, after, false));
                }
            }
            None => stack.push(Frame::new(root.clone(), String::new(), None, false)),
        }
        let after_last = |name: &str| last.is_none_or(|l| repository_order(name, l).is_gt());
        let mut found = Vec::new();
        while found.len() <= n {
            let Some(frame) = stack.last_mut() else { break };
            if let Some(child) = frame.pending.pop_front() {
                // `_manifests`, `_layers`, `_uploads`: a repository's own data.
                if !child.starts_with('_') {
                    let name = if frame.name.is_empty() {
                        child.clone()
                    } else {
                        format!("{}/{child}", frame.name)
                    };
                    let dir = format!("{}/{child}", frame.dir);
                    stack.push(Frame::new(dir, name, None, true));
                }
                continue;
            }
            if frame.opened && !frame.more {
                stack.pop();
                continue;
            }
            let page = match self
                .driver
                .list_page(&frame.dir, frame.after.as_deref(), WALK_PAGE)
                .await
            {
                Ok(p) => p,
                Err(e) if e.is_not_found() => {
                    stack.pop();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !frame.opened && frame.fresh && after_last(&frame.name) {
                // The directory itself comes before its children.
                if self.holds_manifests(&frame.dir, &page).await? {
                    found.push(frame.name.clone());
                }
            }
            frame.opened = true;
            frame.more = page.more;
            frame.after = page.names.last().cloned().or(frame.after.take());
            frame.pending = page.names.into();
        }
        let more = found.len() > n;
        found.truncate(n);
        Ok(Page { items: found, more })
    }

    /// Whether a directory is a repository, given the first page of its
    /// children (`_manifests` is on it unless a thousand children sort first).
    async fn holds_manifests(&self, dir: &str, first: &crate::storage::ListPage) -> Result<bool> {
        const MARK: &str = "_manifests";
        if first.names.iter().any(|c| c == MARK) {
            return Ok(true);
        }
        let beyond = first.names.last().is_none_or(|c| c.as_str() > MARK);
        if beyond || !first.more {
            return Ok(false);
        }
        match self.driver.stat(&format!("{dir}/{MARK}")).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::storage::{inmemory::InMemoryDriver, StorageDriver};

    async fn registry_with(repos: &[&str], tags: &[(&str, &str)]) -> Registry {
        let driver = Arc::new(InMemoryDriver::new());
        let link = Bytes::from_static(b"sha256:00");
        for r in repos {
            let p = format!(
                "{}/{r}/_manifests/revisions/x/link",
                layout::repositories_root()
            );
            driver.put_content(&p, link.clone()).await.unwrap();
        }
        for (r, t) in tags {
            let p = format!("{}/current/link", layout::tag_dir(r, t));
            driver.put_content(&p, link.clone()).await.unwrap();
        }
        Registry::new(driver, b"secret", false)
    }

    async fn all_pages(reg: &Registry, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let p = reg.repositories_page(n, last.as_deref()).await.unwrap();
            assert!(p.items.len() <= n);
            out.extend(p.items.clone());
            if !p.more {
                return out;
            }
            last = p.items.last().cloned();
        }
    }

    #[tokio::test]
    async fn repositories_in_component_order_page_by_page() {
        let repos = ["a.d", "a-c", "a/b/c", "a", "a/b", "0x/y", "z", "a/0b"];
        let reg = registry_with(&repos, &[]).await;
        let want = ["0x/y", "a", "a/0b", "a/b", "a/b/c", "a-c", "a.d", "z"];
        for n in 1..=9 {
            assert_eq!(all_pages(&reg, n).await, want, "n={n}");
        }
        let p = reg.repositories_page(2, Some("a/b/c")).await.unwrap();
        assert_eq!(p.items, ["a-c", "a.d"]);
        assert!(p.more);
        // A cursor that names no repository still continues in order.
        let p = reg.repositories_page(10, Some("a/bb")).await.unwrap();
        assert_eq!(p.items, ["a-c", "a.d", "z"]);
        assert!(!p.more);
    }

    #[tokio::test]
    async fn the_index_pages_as_the_walk_does() {
        let repos = ["a.d", "a-c", "a/b/c", "a", "a/b", "0x/y", "z", "a/0b"];
        let reg = registry_with(&repos, &[]).await;
        let walked = all_pages(&reg, 100).await;
        assert!(reg.index().page(10, None).await.unwrap().is_none());
        let report = reg.index().rebuild().await.unwrap();
        assert_eq!((report.repositories, report.added), (8, 8));
        assert!(reg.index().page(10, None).await.unwrap().is_some());
        for n in 1..=9 {
            assert_eq!(all_pages(&reg, n).await, walked, "n={n}");
        }
        for last in ["a/b/c", "a/bb", "0", "a", "zz", "A", "a/B", "-", ""] {
            for n in [1, 3] {
                let walk = reg.walk_repositories_page(n, Some(last)).await.unwrap();
                let index = reg.repositories_page(n, Some(last)).await.unwrap();
                assert_eq!(
                    (walk.items, walk.more),
                    (index.items, index.more),
                    "last={last} n={n}"
                );
            }
        }
        // A second rebuild finds nothing to add.
        assert_eq!(reg.index().rebuild().await.unwrap().added, 0);
    }

    #[tokio::test]
    async fn empty_storage_starts_with_a_complete_index() {
        let reg = registry_with(&[], &[]).await;
        let p = reg.index().page(10, None).await.unwrap().unwrap();
        assert!(p.items.is_empty() && !p.more);
        reg.driver()
            .stat(&crate::registry::index::complete_marker())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn tags_page_by_page() {
        let tags: Vec<(&str, &str)> = ["v1", "v1.0", "v1-rc", "latest", "1.0"]
            .iter()
            .map(|t| ("app", *t))
            .collect();
        let reg = registry_with(&["app", "empty"], &tags).await;
        let p = reg.tags_page("app", 2, None).await.unwrap();
        assert_eq!(p.items, ["1.0", "latest"]);
        assert!(p.more);
        let p = reg.tags_page("app", 2, Some("latest")).await.unwrap();
        assert_eq!(p.items, ["v1", "v1-rc"]);
        let p = reg.tags_page("app", 2, Some("v1-rc")).await.unwrap();
        assert_eq!(p.items, ["v1.0"]);
        assert!(!p.more);
        let p = reg.tags_page("empty", 2, None).await.unwrap();
        assert!(p.items.is_empty() && !p.more);
        let e = reg.tags_page("nope", 2, None).await.err().unwrap();
        assert_eq!(e.code, Code::NameUnknown);
        let e = reg.tags_page("nope", 2, Some("a")).await.err().unwrap();
        assert_eq!(e.code, Code::NameUnknown);
    }
}
