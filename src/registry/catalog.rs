//! Listing: a repository's tags and the registry's catalog, both paginated
//! lexically with `n`/`last` as the spec describes.

use super::{
    error::{Code, Error, Result},
    names::validate_name,
    Registry,
};
use crate::storage::layout;

/// One page of a sorted listing and whether more follow.
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// Repository order: one path component at a time, as distribution walks its
/// tree (`a`, `a/b`, `a-c` — not byte order, where `-` sorts before `/`), so a
/// `last` cursor from distribution continues correctly here.
pub fn repository_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Entries strictly after `last` in `order`, at most `n` of them.
pub fn paginate_by(
    mut all: Vec<String>,
    n: Option<usize>,
    last: Option<&str>,
    order: fn(&str, &str) -> std::cmp::Ordering,
) -> Page {
    all.sort_by(|a, b| order(a, b));
    let start = last.map_or(0, |l| all.partition_point(|x| order(x, l).is_le()));
    let rest = &all[start..];
    let take = n.unwrap_or(rest.len()).min(rest.len());
    Page {
        items: rest[..take].to_vec(),
        more: take < rest.len(),
    }
}

/// [`paginate_by`] in plain lexical order (tags).
pub fn paginate(all: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    paginate_by(all, n, last, |a, b| a.cmp(b))
}

impl Registry {
    /// All tags of a repository, sorted. NAME_UNKNOWN if the repository does not exist.
    pub async fn tags(&self, name: &str) -> Result<Vec<String>> {
        validate_name(name)?;
        match self.driver.list(&layout::tags_root(name)).await {
            Ok(paths) => Ok(paths
                .iter()
                .map(|p| layout::base_name(p).to_string())
                .collect()),
            Err(e) if e.is_not_found() => {
                if self.repository_exists(name).await? {
                    Ok(vec![])
                } else {
                    Err(Error::new(
                        Code::NameUnknown,
                        format!("repository name not known to registry: {name}"),
                    ))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every repository (a directory holding `_manifests`), sorted.
    pub async fn repositories(&self) -> Result<Vec<String>> {
        let root = layout::repositories_root();
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let children = match self.driver.list(&dir).await {
                Ok(c) => c,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for child in children {
                let base = layout::base_name(&child);
                if base == "_manifests" {
                    found.push(dir[root.len() + 1..].to_string());
                } else if !base.starts_with('_') {
                    stack.push(child);
                }
            }
        }
        found.sort_by(|a, b| repository_order(a, b));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::{paginate, paginate_by, repository_order};

    #[test]
    fn pages() {
        let all: Vec<String> = ["c", "a", "b", "d"].iter().map(|s| s.to_string()).collect();
        let p = paginate(all.clone(), Some(2), None);
        assert_eq!(p.items, ["a", "b"]);
        assert!(p.more);
        let p = paginate(all.clone(), Some(2), Some("b"));
        assert_eq!(p.items, ["c", "d"]);
        assert!(!p.more);
        assert!(paginate(all, Some(0), None).items.is_empty());
    }

    #[test]
    fn repositories_in_component_order() {
        let all: Vec<String> = ["a.d", "a-c", "a/b/c", "a", "a/b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = paginate_by(all.clone(), None, None, repository_order);
        assert_eq!(p.items, ["a", "a/b", "a/b/c", "a-c", "a.d"]);
        let p = paginate_by(all, Some(2), Some("a/b/c"), repository_order);
        assert_eq!(p.items, ["a-c", "a.d"]);
    }
}
