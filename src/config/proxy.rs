//! `proxy:` — the pull-through cache. distribution's form mirrors the whole
//! registry from one upstream (`remoteurl`, with `username`/`password`).
//! Berth's form, `mirrors:`, maps repository prefixes to upstreams
//! (`dockerhub/*` → Docker Hub, `ghcr/*` → ghcr.io), each with its own
//! account and tag TTL, and leaves every other repository an ordinary,
//! writable one. Berth adds `tagttl` (how long a tag is served from the
//! cache before it is checked upstream again), `timeout` (how long an
//! upstream request may take to answer) and `spooldir`. Parsing only:
//! `crate::proxy` builds the mirror.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::compat::Tolerated;

/// `tagttl`: a tag is served from the cache this long after it was last
/// checked upstream (Docker Hub does not count the HEAD that checks it
/// against its pull limit).
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(60);
/// `proxy.timeout`: an upstream request with no answer (headers) by then
/// fails, and the client gets 503 with `Retry-After` (or the cached copy).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `proxy.ttl` (distribution's default).
pub const DEFAULT_TTL: Duration = Duration::from_secs(168 * 3600);
/// `proxy.claimttl`: how long a replica's claim (in Redis) on fetching a
/// blob lasts unless renewed; a replica that dies mid-fetch holds the
/// other replicas' pulls of that blob up this long at most.
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// distribution's: the upstream registry
    /// (`https://registry-1.docker.io`); the whole registry mirrors it.
    pub remoteurl: String,
    pub username: String,
    pub password: String,
    /// Berth's: see [`DEFAULT_TAG_TTL`]; `0s` checks on every pull.
    pub tagttl: String,
    /// Berth's: upstreams by repository prefix (instead of `remoteurl`).
    pub mirrors: Vec<MirrorConfig>,
    /// Berth's: see [`DEFAULT_TIMEOUT`].
    pub timeout: String,
    /// Berth's: where blobs being fetched are spooled for the clients that
    /// read them meanwhile (default: the system's temporary directory).
    pub spooldir: String,
    /// Berth's: see [`DEFAULT_CLAIM_TTL`].
    pub claimttl: String,
    /// distribution's: what the cache fetched and nobody pulled for this
    /// long is removed by garbage collection ([`DEFAULT_TTL`]; `0` keeps
    /// everything).
    pub ttl: String,
    // distribution's, refused (see `compat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Tolerated,
}

/// One upstream of `proxy.mirrors`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    /// Repositories `<prefix>/<name>` are the upstream's `<name>`.
    pub prefix: String,
    pub remoteurl: String,
    pub username: String,
    pub password: String,
    pub tagttl: String,
}

/// One upstream, checked.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    /// Empty: every repository (distribution's form).
    pub prefix: String,
    pub remote: String,
    pub credentials: Option<(String, String)>,
    pub tag_ttl: Duration,
}

/// What the pull-through cache needs, checked.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub mirrors: Vec<MirrorSettings>,
    pub timeout: Duration,
    pub claim_ttl: Duration,
    /// `None`: nothing expires.
    pub ttl: Option<Duration>,
    pub spool_dir: PathBuf,
}

fn duration(key: &str, v: &str, default: Duration) -> Result<Duration, String> {
    if v.trim().is_empty() {
        return Ok(default);
    }
    humantime::parse_duration(v.trim()).map_err(|e| format!("{key}: {v:?}: {e}"))
}

fn mirror(
    key: &str,
    prefix: &str,
    remote: &str,
    username: &str,
    password: &str,
    tagttl: &str,
) -> Result<MirrorSettings, String> {
    let remote = remote.trim().trim_end_matches('/');
    if !(remote.starts_with("http://") || remote.starts_with("https://")) {
        return Err(format!(
            "{key}.remoteurl: {remote:?} must start with https:// or http://"
        ));
    }
    if username.is_empty() != password.is_empty() {
        return Err(format!(
            "{key}.username and {key}.password must be given together"
        ));
    }
    Ok(MirrorSettings {
        prefix: prefix.to_string(),
        remote: remote.to_string(),
        credentials: (!username.is_empty()).then(|| (username.to_string(), password.to_string())),
        tag_ttl: duration(&format!("{key}.tagttl"), tagttl, DEFAULT_TAG_TTL)?,
    })
}

/// Lower-case path components as repository names have them.
fn is_name_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        })
}

impl ProxyConfig {
    /// `None` when no upstream is set (an ordinary registry).
    pub fn settings(&self) -> Result<Option<ProxySettings>, String> {
        let mut mirrors = Vec::new();
        if !self.remoteurl.trim().is_empty() {
            if !self.mirrors.is_empty() {
                return Err(
                    "proxy.remoteurl and proxy.mirrors: one or the other (the whole registry \
                     mirrors remoteurl)"
                        .into(),
                );
            }
            mirrors.push(mirror(
                "proxy",
                "",
                &self.remoteurl,
                &self.username,
                &self.password,
                &self.tagttl,
            )?);
        }
        for (i, m) in self.mirrors.iter().enumerate() {
            let key = format!("proxy.mirrors[{i}]");
            let prefix = m.prefix.trim().trim_matches('/');
            if !is_name_path(prefix) {
                return Err(format!(
                    "{key}.prefix: {:?} must be a repository name path (e.g. dockerhub)",
                    m.prefix
                ));
            }
            if mirrors.iter().any(|o: &MirrorSettings| o.prefix == prefix) {
                return Err(format!("{key}.prefix: {prefix:?} is given twice"));
            }
            mirrors.push(mirror(
                &key,
                prefix,
                &m.remoteurl,
                &m.username,
                &m.password,
                &m.tagttl,
            )?);
        }
        if mirrors.is_empty() {
            return Ok(None);
        }
        let timeout = duration("proxy.timeout", &self.timeout, DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err("proxy.timeout: must be more than 0s".into());
        }
        let claim_ttl = duration("proxy.claimttl", &self.claimttl, DEFAULT_CLAIM_TTL)?;
        if claim_ttl < Duration::from_secs(1) {
            return Err("proxy.claimttl: must be at least 1s".into());
        }
        // distribution writes `0` (a Go duration of zero) for "never".
        let ttl = match self.ttl.trim() {
            "0" => Duration::ZERO,
            t => duration("proxy.ttl", t, DEFAULT_TTL)?,
        };
        Ok(Some(ProxySettings {
            mirrors,
            timeout,
            claim_ttl,
            ttl: (!ttl.is_zero()).then_some(ttl),
            spool_dir: if self.spooldir.trim().is_empty() {
                std::env::temp_dir()
            } else {
                self.spooldir.trim().into()
            },
        }))
    }
}
