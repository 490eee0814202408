//! Page caps of the listing endpoints: distribution's `catalog.maxentries`
//! and `tags.maxtags`, and Berth's `referrers.maxentries`. A request asking
//! for more (or for no particular number) gets at most this many entries and
//! a `Link` header to the next page, so no listing is built whole in memory.

use serde::{Deserialize, Serialize};

/// The page cap when none is configured (distribution's catalog default).
pub const DEFAULT_PAGE: usize = 1000;

/// `catalog:` — `maxentries`, the largest `/v2/_catalog` page.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// 0 or absent: [`DEFAULT_PAGE`] (as distribution's).
    pub maxentries: i64,
}

/// `tags:` — `maxtags`, the largest `/v2/<name>/tags/list` page.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TagsConfig {
    /// 0 or absent: [`DEFAULT_PAGE`]. (distribution's 0 means no cap and
    /// refuses `n` above the cap; Berth always caps and answers a larger `n`
    /// with a capped page and a `Link` to the next.)
    pub maxtags: i64,
}

/// `referrers:` — `maxentries`, the most descriptors in one referrers page.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReferrersConfig {
    /// 0 or absent: [`DEFAULT_PAGE`].
    pub maxentries: i64,
}

/// A configured cap, or the default for 0 and negative values.
pub fn page_cap(configured: i64) -> usize {
    if configured > 0 {
        configured as usize
    } else {
        DEFAULT_PAGE
    }
}
