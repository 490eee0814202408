//! `ui:` — Berth's own section (distribution has no UI): the web UI served
//! at `<http.prefix>/ui/`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::connections::duration;

/// How long a UI login lasts, unless `ui.sessionttl` says otherwise: an
/// office day would be kinder, but a cookie nobody can revoke early should
/// not outlive a lunch break by much (Harbor's default is the same hour).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(3600);

/// Repositories per page of the repository list, by default.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// Catalog entries one repository-list request may look at while filtering
/// (by search text and by what the viewer may pull) before it stops and
/// offers a "more" link from where it got to; also the tags one repository
/// page lists.
pub const DEFAULT_SCAN_LIMIT: usize = 20_000;

/// Tags a repository page may sort by push time (one stat each).
pub const DEFAULT_SORT_LIMIT: usize = 2_000;

/// The longest `ui.sessionttl`: a month.
const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// On by default; `REGISTRY_UI_ENABLED=false` turns it off (`/ui/` is
    /// then a 404 like any unknown path).
    pub enabled: bool,
    /// Lifetime of a UI login (the session cookie's expiry).
    #[serde(with = "duration")]
    pub sessionttl: Duration,
    /// Repositories per page of the repository list (at most 500).
    pub pagesize: usize,
    /// Catalog entries one repository-list page may scan while filtering,
    /// and tags one repository page lists.
    pub scanlimit: usize,
    /// Tags one repository page may sort by push time.
    pub sortlimit: usize,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            sessionttl: DEFAULT_SESSION_TTL,
            pagesize: DEFAULT_PAGE_SIZE,
            scanlimit: DEFAULT_SCAN_LIMIT,
            sortlimit: DEFAULT_SORT_LIMIT,
        }
    }
}

impl UiConfig {
    /// Errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.sessionttl < Duration::from_secs(60) || self.sessionttl > MAX_SESSION_TTL {
            return Err("ui.sessionttl: must be between 1m and 30d".into());
        }
        if !(1..=500).contains(&self.pagesize) {
            return Err("ui.pagesize: must be between 1 and 500".into());
        }
        if self.scanlimit < self.pagesize {
            return Err("ui.scanlimit: must be at least ui.pagesize".into());
        }
        if self.sortlimit == 0 {
            return Err("ui.sortlimit: must be at least 1".into());
        }
        Ok(())
    }
}
