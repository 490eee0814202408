//! The pages (GET): repository list, repository, manifest, delete
//! confirmation, login form, status; and the compiled-in assets.

use std::sync::Arc;

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    http::{header, request::Parts, StatusCode},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;

use super::{
    browse::{self, ListError, ManifestDetail, RepoRow, TagLimits, TagPage, TagRow, TagSort},
    session::Purpose,
    viewer::{Gate, Rights},
    Ui, Visit,
};
use crate::registry::{
    error::Error,
    manifests::Reference,
    names::{is_valid_tag, validate_name},
    Registry,
};

/// What every page's frame shows.
pub struct Chrome {
    pub title: String,
    /// `<http.prefix>/ui`
    pub base: String,
    pub account: Option<String>,
    pub csrf: String,
    pub has_login: bool,
    pub notice: Option<String>,
}

/// The query string's fields; what does not parse is left at its default.
fn query_of<T: serde::de::DeserializeOwned + Default>(parts: &Parts) -> T {
    Query::<T>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "ui: template failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `1.2 MB`: decimal units, as docker prints sizes.
pub fn size_text(bytes: &u64) -> String {
    let b = *bytes as f64;
    match *bytes {
        n if n < 1000 => format!("{n} B"),
        n if n < 1_000_000 => format!("{:.1} kB", b / 1e3),
        n if n < 1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

impl TagRow {
    pub fn short_digest(&self) -> &str {
        let hex = self.digest.split_once(':').map_or("", |(_, h)| h);
        &self.digest[..self.digest.len() - hex.len() + hex.len().min(12)]
    }

    /// image, index, or the media type when it is neither.
    pub fn kind(&self) -> &str {
        match self.media_type.as_str() {
            crate::registry::manifest::OCI_INDEX
            | crate::registry::manifest::DOCKER_MANIFEST_LIST => "index",
            crate::registry::manifest::OCI_MANIFEST
            | crate::registry::manifest::DOCKER_MANIFEST => "image",
            other => other,
        }
    }

    pub fn size_text(&self) -> String {
        self.size.as_ref().map_or_else(|| "?".into(), size_text)
    }

    /// UTC, to the second.
    pub fn pushed_text(&self) -> String {
        self.pushed.map_or_else(String::new, |t| {
            humantime::format_rfc3339_seconds(t)
                .to_string()
                .replace('T', " ")
                .replace('Z', " UTC")
        })
    }
}

#[derive(Template)]
#[template(path = "repositories.html")]
struct RepositoriesPage {
    chrome: Chrome,
    q: String,
    n: usize,
    rows: Vec<RepoRow>,
    next: Option<String>,
    cut_short: bool,
    scan_limit: usize,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    q: String,
    /// Start after this repository (a name the viewer typed or saw).
    last: Option<String>,
    /// Start where the previous page's scan stopped (sealed: it may be a
    /// repository the viewer may not see).
    after: Option<String>,
    n: Option<usize>,
}

pub async fn repositories(State(ui): State<Arc<Ui>>, parts: Parts) -> Response {
    let visit = ui.visit(&parts);
    if visit.viewer.must_log_in() {
        return visit.to_login();
    }
    let query: ListQuery = query_of(&parts);
    let n = query.n.unwrap_or(ui.page_size).clamp(1, ui.page_size);
    let q = query.q.trim().to_string();
    let cursor = match query.after {
        Some(sealed) => ui
            .sessions
            .open(Purpose::Cursor, &sealed)
            .and_then(|b| String::from_utf8(b).ok()),
        None => query.last,
    };
    let scan_limit = ui.gate.scan_limit(ui.scan_limit);
    let page = browse::repositories(
        &ui.registry,
        &q,
        n,
        cursor.filter(|l| validate_name(l).is_ok()),
        scan_limit,
        &visit.viewer,
    )
    .await;
    let page = match page {
        Ok(p) => p,
        Err(ListError::Registry(e)) => return registry_error(&visit, e),
        Err(ListError::Undecided(e)) => return visit.undecided(e),
    };
    let mut chrome = visit.chrome("Repositories");
    if visit.expired {
        chrome.notice = Some("Your session expired; log in again to see more.".into());
    }
    let next = page
        .next
        .map(|name| ui.sessions.seal(Purpose::Cursor, name.as_bytes()));
    visit.finish(render(&RepositoriesPage {
        chrome,
        q,
        n,
        rows: page.rows,
        next,
        cut_short: page.cut_short,
        scan_limit,
    }))
}

/// `chrome` with `notice`, if any.
fn with_notice(mut chrome: Chrome, notice: Option<&str>) -> Chrome {
    if let Some(n) = notice {
        chrome.notice = Some(n.to_string());
    }
    chrome
}

/// A registry error as a page: its status, the message clients would read.
pub(super) fn registry_error(visit: &Visit, e: Error) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(code = e.code.as_str(), cause = ?e.cause, "ui: registry error");
    }
    let mut resp = visit.error(status, &e.message);
    if let Some(after) = e.retry_after {
        let secs = after.as_secs().max(1);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
    }
    resp
}

#[derive(Template)]
#[template(path = "repository.html")]
struct RepositoryPage {
    chrome: Chrome,
    name: String,
    host: String,
    q: String,
    sort: &'static str,
    sorts: [(&'static str, &'static str); 4],
    page: TagPage,
    rights: Rights,
}

#[derive(Template)]
#[template(path = "manifest.html")]
struct ManifestPage {
    chrome: Chrome,
    name: String,
    host: String,
    tag: Option<String>,
    m: ManifestDetail,
    rights: Rights,
}

impl ManifestPage {
    fn size_text(&self, bytes: &u64) -> String {
        size_text(bytes)
    }

    fn size_or_unknown(&self, bytes: &Option<u64>) -> String {
        bytes.as_ref().map_or_else(|| "?".into(), size_text)
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    name: String,
    what: &'static str,
    target: String,
    is_manifest: bool,
    back: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AreaQuery {
    q: String,
    sort: String,
    page: Option<usize>,
    tag: Option<String>,
    digest: Option<String>,
}

/// What a path under `/ui/r/` names. Repository names cannot have a `-`
/// component (each starts with a letter or digit), so `/-/` ends the name.
pub enum Area {
    Repository(String),
    Tag(String, String),
    Manifest(String, String),
    Delete(String),
}

impl Area {
    pub fn parse(rest: &str) -> Option<Area> {
        let (name, what) = match rest.split_once("/-/") {
            Some((name, what)) => (name, Some(what)),
            None => (rest.trim_end_matches('/'), None),
        };
        validate_name(name).ok()?;
        let name = name.to_string();
        Some(match what.map(|w| w.split_once('/').unwrap_or((w, ""))) {
            None => Area::Repository(name),
            Some(("tag", tag)) if is_valid_tag(tag) => Area::Tag(name, tag.into()),
            Some(("manifest", d)) if d.parse::<crate::digest::Digest>().is_ok() => {
                Area::Manifest(name, d.into())
            }
            Some(("delete", "")) => Area::Delete(name),
            _ => return None,
        })
    }
}

/// The registry's address as `docker pull` wants it (`host:port/`).
fn pull_host(ui: &Ui, parts: &Parts) -> String {
    let origin = ui.urls.origin(&parts.headers);
    let host = origin.split_once("://").map_or(origin.as_str(), |(_, h)| h);
    if host.is_empty() {
        String::new()
    } else {
        format!("{host}/")
    }
}

pub async fn repository_area(
    State(ui): State<Arc<Ui>>,
    Path(rest): Path<String>,
    parts: Parts,
) -> Response {
    let visit = ui.visit(&parts);
    if visit.viewer.must_log_in() {
        return visit.to_login();
    }
    let Some(area) = Area::parse(&rest) else {
        return visit.error(StatusCode::NOT_FOUND, "no such page");
    };
    let query: AreaQuery = query_of(&parts);
    let name = match &area {
        Area::Repository(n) | Area::Tag(n, _) | Area::Manifest(n, _) | Area::Delete(n) => n.clone(),
    };
    let mut rights = match visit.viewer.rights(&name).await {
        Ok(r) => r,
        Err(e) => return visit.undecided(e),
    };
    // A mirrored repository is the upstream's: nothing is deleted here.
    rights.delete &= ui.registry.mirror_of(&name).is_none();
    if !rights.pull {
        // Not "forbidden": whether it exists is not this viewer's to know.
        return visit.error(StatusCode::NOT_FOUND, "repository not found");
    }
    let host = pull_host(&ui, &parts);
    match area {
        Area::Repository(name) => {
            let sort = TagSort::parse(&query.sort);
            let page = browse::tags(
                &ui.registry,
                &name,
                query.q.trim(),
                sort,
                query.page.unwrap_or(1),
                100,
                TagLimits {
                    listed: ui.scan_limit,
                    time_sorted: ui.sort_limit,
                },
            )
            .await;
            match page {
                Ok(page) => visit.finish(render(&RepositoryPage {
                    chrome: with_notice(
                        visit.chrome(name.clone()),
                        if page.time_sort_refused {
                            Some(
                                "Too many tags to sort by push time (ui.sortlimit): shown by \
                                 name; filter them first.",
                            )
                        } else if page.truncated {
                            Some("Only the first tags are listed (ui.scanlimit).")
                        } else {
                            None
                        },
                    ),
                    name,
                    host,
                    q: query.q.trim().to_string(),
                    sort: sort.as_str(),
                    sorts: [
                        ("name", "Name A–Z"),
                        ("-name", "Name Z–A"),
                        ("pushed", "Newest first"),
                        ("-pushed", "Oldest first"),
                    ],
                    page,
                    rights,
                })),
                Err(e) => registry_error(&visit, e),
            }
        }
        Area::Tag(name, tag) => {
            let reference = Reference::Tag(tag);
            manifest_page(&visit, &ui.registry, name, host, reference, rights).await
        }
        Area::Manifest(name, digest) => match Reference::parse(&digest) {
            Ok(reference) => {
                manifest_page(&visit, &ui.registry, name, host, reference, rights).await
            }
            Err(e) => registry_error(&visit, e),
        },
        Area::Delete(name) => {
            if !rights.delete {
                return visit.error(StatusCode::FORBIDDEN, "you may not delete here");
            }
            let (what, target, is_manifest) = match (query.tag, query.digest) {
                (Some(t), None) if is_valid_tag(&t) => ("tag", t, false),
                (None, Some(d)) if d.parse::<crate::digest::Digest>().is_ok() => {
                    ("manifest", d, true)
                }
                _ => return visit.error(StatusCode::BAD_REQUEST, "name a tag or a digest"),
            };
            let back = format!("{}/r/{name}", ui.base);
            visit.finish(render(&ConfirmPage {
                chrome: visit.chrome(format!("Delete {what}")),
                name,
                what,
                target,
                is_manifest,
                back,
            }))
        }
    }
}

/// A manifest's page, by tag or digest.
async fn manifest_page(
    visit: &Visit<'_>,
    registry: &Registry,
    name: String,
    host: String,
    reference: Reference,
    rights: Rights,
) -> Response {
    let tag = match &reference {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    };
    match browse::manifest(registry, &name, &reference).await {
        Ok(m) => {
            let title = match &tag {
                Some(t) => format!("{name}:{t}"),
                None => format!("{name}@{}", m.digest),
            };
            visit.finish(render(&ManifestPage {
                chrome: visit.chrome(title),
                name,
                host,
                tag,
                m,
                rights,
            }))
        }
        Err(e) => registry_error(visit, e),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub error: Option<String>,
    pub next: String,
    pub username: String,
    pub via_token_server: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginQuery {
    next: String,
    expired: Option<String>,
}

pub async fn login(State(ui): State<Arc<Ui>>, parts: Parts) -> Response {
    let visit = ui.visit(&parts);
    let query: LoginQuery = query_of(&parts);
    if !ui.gate.has_login() {
        return visit.error(
            StatusCode::NOT_FOUND,
            "This registry has no access control: there is nothing to log in to.",
        );
    }
    let mut chrome = visit.chrome("Log in");
    if query.expired.is_some() || visit.expired {
        chrome.notice = Some("Your session expired; log in again.".into());
    }
    visit.finish(render(&LoginPage {
        chrome,
        error: None,
        next: safe_next(&ui.base, &query.next),
        username: String::new(),
        via_token_server: matches!(ui.gate, Gate::TokenServer(_)),
    }))
}

/// Where to go after logging in: a UI path of ours, never another site.
pub fn safe_next(base: &str, next: &str) -> String {
    let ours = next.starts_with(&format!("{base}/"))
        && !next.contains("//")
        && !next.contains('\\')
        && next.chars().all(|c| c.is_ascii_graphic());
    if ours {
        next.to_string()
    } else {
        format!("{base}/")
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub message: String,
}

/// The compiled-in stylesheet and script. They change with the binary, so
/// a day of caching is safe enough and spares a request per page.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "ui.css" => (include_str!("assets/ui.css"), "text/css; charset=utf-8"),
        "ui.js" => (
            include_str!("assets/ui.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn paths_name_what_they_show() {
        assert!(matches!(Area::parse("a/b/"), Some(Area::Repository(n)) if n == "a/b"));
        assert!(
            matches!(Area::parse("a/b/-/tag/v1"), Some(Area::Tag(n, t)) if n == "a/b" && t == "v1")
        );
        assert!(matches!(Area::parse("a/-/delete"), Some(Area::Delete(n)) if n == "a"));
        for bad in [
            "",
            "-",
            "a/-/tag/",
            "a/-/tag/v1/x",
            "a/../b",
            "A",
            "a/-/manifest/sha256:zz",
            "a\n/b",
            "a/-/-/tag/v1",
        ] {
            assert!(Area::parse(bad).is_none(), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any path is read without a panic, and what it names is a valid
        /// repository (and tag).
        #[test]
        fn any_path_parses_safely(rest in "\\PC{0,120}|[a-z0-9/_.-]{0,60}(/-/(tag|manifest|delete)/[ -~]{0,40})?") {
            match Area::parse(&rest) {
                Some(Area::Repository(n)) | Some(Area::Delete(n)) | Some(Area::Manifest(n, _)) => {
                    prop_assert!(validate_name(&n).is_ok());
                }
                Some(Area::Tag(n, t)) => {
                    prop_assert!(validate_name(&n).is_ok() && is_valid_tag(&t));
                }
                None => {}
            }
        }
    }
}
