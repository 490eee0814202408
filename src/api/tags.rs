//! Tag listing and the catalog, with `n`/`last` pagination and RFC 5988 Link
//! headers. Every page is capped (`tags.maxtags`, `catalog.maxentries`): a
//! request without `n`, or with a larger one, gets a capped page and a Link
//! to the next, as the spec lets a registry do.

use axum::{
    extract::Request,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use super::{error::ApiResult, query_param, AppState};
use crate::registry::{
    catalog::Page,
    error::{Code, Error},
};

/// `n`, if given, within `cap`.
pub(super) fn page_size(req: &Request, cap: usize) -> Result<usize, Error> {
    match query_param(req, "n") {
        None => Ok(cap),
        Some(n) if n.is_empty() => Ok(cap),
        Some(n) => n.parse::<usize>().map(|n| n.min(cap)).map_err(|_| {
            Error::new(
                Code::PaginationNumberInvalid,
                format!("invalid page size n={n:?}"),
            )
        }),
    }
}

/// `Link: <path?query>; rel="next"` (the URL built as Location URLs are).
pub(super) fn link_next(
    state: &AppState,
    req: &Request,
    path: &str,
    query: &[(&str, &str)],
) -> Option<header::HeaderValue> {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        q.append_pair(k, v);
    }
    let url = state
        .urls
        .build(req.headers(), &format!("{path}?{}", q.finish()));
    format!("<{url}>; rel=\"next\"").parse().ok()
}

/// Render a page with a `Link` header when more follow.
fn with_link(
    state: &AppState,
    req: &Request,
    path: &str,
    page: &Page,
    n: usize,
    body: serde_json::Value,
) -> Response {
    let mut resp = (StatusCode::OK, Json(body)).into_response();
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let n = n.to_string();
        if let Some(v) = link_next(state, req, path, &[("n", &n), ("last", last)]) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

pub async fn list(state: &AppState, name: &str, req: Request) -> ApiResult {
    let n = page_size(&req, state.registry.listing_limits().tags)?;
    let last = query_param(&req, "last").filter(|l| !l.is_empty());
    let page = state.registry.tags_page(name, n, last.as_deref()).await?;
    let body = json!({ "name": name, "tags": page.items });
    Ok(with_link(
        state,
        &req,
        &format!("/v2/{name}/tags/list"),
        &page,
        n,
        body,
    ))
}

pub async fn catalog(state: &AppState, req: Request) -> ApiResult {
    let n = page_size(&req, state.registry.listing_limits().catalog)?;
    let last = query_param(&req, "last").filter(|l| !l.is_empty());
    let page = state.registry.repositories_page(n, last.as_deref()).await?;
    let body = json!({ "repositories": page.items });
    Ok(with_link(state, &req, "/v2/_catalog", &page, n, body))
}
