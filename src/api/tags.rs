//! Tag listing and the catalog, with `n`/`last` pagination and RFC 5988 Link headers.

use axum::{
    extract::Request,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use super::{error::ApiResult, query_param, AppState};
use crate::registry::{
    catalog::{paginate, paginate_by, repository_order, Page},
    error::{Code, Error},
};

/// The most entries one catalog page returns, as distribution's default.
const MAX_CATALOG_ENTRIES: usize = 1000;

fn page_size(req: &Request) -> Result<Option<usize>, Error> {
    match query_param(req, "n") {
        None => Ok(None),
        Some(n) if n.is_empty() => Ok(None),
        Some(n) => n.parse().map(Some).map_err(|_| {
            Error::new(
                Code::PaginationNumberInvalid,
                format!("invalid page size n={n:?}"),
            )
        }),
    }
}

/// Render a page with a `Link: <...>; rel="next"` header when more follow.
fn with_link(
    state: &AppState,
    req: &Request,
    path: &str,
    page: &Page,
    n: Option<usize>,
    body: serde_json::Value,
) -> Response {
    let mut resp = (StatusCode::OK, Json(body)).into_response();
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &n.unwrap_or(page.items.len()).to_string())
            .append_pair("last", last)
            .finish();
        let url = state.urls.build(req.headers(), &format!("{path}?{query}"));
        if let Ok(v) = format!("<{url}>; rel=\"next\"").parse() {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

pub async fn list(state: &AppState, name: &str, req: Request) -> ApiResult {
    let n = page_size(&req)?;
    let last = query_param(&req, "last");
    let tags = state.registry.tags(name).await?;
    let page = paginate(tags, n, last.as_deref());
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
    let n = Some(
        page_size(&req)?
            .unwrap_or(MAX_CATALOG_ENTRIES)
            .min(MAX_CATALOG_ENTRIES),
    );
    let last = query_param(&req, "last");
    let repos = state.registry.repositories().await?;
    let page = paginate_by(repos, n, last.as_deref(), repository_order);
    let body = json!({ "repositories": page.items });
    Ok(with_link(state, &req, "/v2/_catalog", &page, n, body))
}
