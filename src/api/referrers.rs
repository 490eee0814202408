//! `GET /v2/<name>/referrers/<digest>[?artifactType=][&n=][&last=]`: one page
//! of at most `referrers.maxentries` descriptors (and about 4 MiB), with a
//! `Link` to the next page when more follow, as the spec describes.

use axum::{
    extract::Request,
    http::{header, HeaderName, StatusCode},
    response::IntoResponse,
};

use super::{
    error::ApiResult,
    query_param,
    tags::{link_next, page_size},
    AppState,
};
use crate::registry::{digest::Digest, manifest::OCI_INDEX};

const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

pub async fn get(state: &AppState, name: &str, digest: &str, req: Request) -> ApiResult {
    let subject: Digest = digest.parse()?;
    let artifact_type = query_param(&req, "artifactType").filter(|t| !t.is_empty());
    let n = page_size(&req, state.registry.listing_limits().referrers)?;
    let last: Option<Digest> = query_param(&req, "last")
        .filter(|l| !l.is_empty())
        .map(|l| l.parse())
        .transpose()?;
    let page = state
        .registry
        .referrers(name, &subject, artifact_type.as_deref(), n, last.as_ref())
        .await?;
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OCI_INDEX)],
        page.index.to_string(),
    )
        .into_response();
    if artifact_type.is_some() {
        resp.headers_mut().insert(
            FILTERS_APPLIED,
            header::HeaderValue::from_static("artifactType"),
        );
    }
    if let Some(next) = &page.next {
        let (next, n) = (next.to_string(), n.to_string());
        let mut query = Vec::new();
        if let Some(t) = &artifact_type {
            query.push(("artifactType", t.as_str()));
        }
        if query_param(&req, "n").is_some() {
            query.push(("n", n.as_str()));
        }
        query.push(("last", next.as_str()));
        let path = format!("/v2/{name}/referrers/{digest}");
        if let Some(v) = link_next(state, &req, &path, &query) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}
