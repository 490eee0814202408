//! `proxy:` — distribution's pull-through cache: the whole registry mirrors
//! one upstream (`remoteurl`, with `username`/`password`). Berth adds
//! `tagttl` (how long a tag is served from the cache before it is checked
//! upstream again) and `timeout` (how long an upstream request may take to
//! answer). Parsing only: `crate::proxy` builds the mirror.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::compat::Tolerated;

/// `proxy.tagttl`: a tag is served from the cache this long after it was
/// last checked upstream (Docker Hub does not count the HEAD that checks
/// it against its pull limit).
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(60);
/// `proxy.timeout`: an upstream request with no answer (headers) by then
/// fails, and the client gets 503 with `Retry-After` (or the cached copy).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The upstream registry (`https://registry-1.docker.io`); the mirror
    /// is on when this is set.
    pub remoteurl: String,
    pub username: String,
    pub password: String,
    /// Berth's: see [`DEFAULT_TAG_TTL`]; `0s` checks on every pull.
    pub tagttl: String,
    /// Berth's: see [`DEFAULT_TIMEOUT`].
    pub timeout: String,
    /// Berth's: where blobs being fetched are spooled for the clients that
    /// read them meanwhile (default: the system's temporary directory).
    pub spooldir: String,
    // distribution's, warned or refused (see `compat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Tolerated,
}

/// What the mirror needs, checked.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub remote: String,
    pub credentials: Option<(String, String)>,
    pub tag_ttl: Duration,
    pub timeout: Duration,
    pub spool_dir: std::path::PathBuf,
}

impl ProxyConfig {
    /// `None` when no upstream is set (an ordinary registry).
    pub fn settings(&self) -> Result<Option<ProxySettings>, String> {
        let remote = self.remoteurl.trim().trim_end_matches('/');
        if remote.is_empty() {
            return Ok(None);
        }
        if !(remote.starts_with("http://") || remote.starts_with("https://")) {
            return Err(format!(
                "proxy.remoteurl: {remote:?} must start with https:// or http://"
            ));
        }
        if self.username.is_empty() != self.password.is_empty() {
            return Err("proxy.username and proxy.password must be given together".into());
        }
        let duration = |key: &str, v: &str, default: Duration| {
            if v.trim().is_empty() {
                return Ok(default);
            }
            humantime::parse_duration(v.trim()).map_err(|e| format!("proxy.{key}: {v:?}: {e}"))
        };
        let timeout = duration("timeout", &self.timeout, DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err("proxy.timeout: must be more than 0s".into());
        }
        Ok(Some(ProxySettings {
            remote: remote.to_string(),
            credentials: (!self.username.is_empty())
                .then(|| (self.username.clone(), self.password.clone())),
            tag_ttl: duration("tagttl", &self.tagttl, DEFAULT_TAG_TTL)?,
            timeout,
            spool_dir: if self.spooldir.trim().is_empty() {
                std::env::temp_dir()
            } else {
                self.spooldir.trim().into()
            },
        }))
    }
}
