//! `GET /v2/<name>/referrers/<digest>[?artifactType=]`

use axum::{
    extract::Request,
    http::{header, HeaderName, StatusCode},
    response::IntoResponse,
};

use super::{error::ApiResult, query_param, AppState};
use crate::registry::{digest::Digest, manifest::OCI_INDEX};

const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

pub async fn get(state: &AppState, name: &str, digest: &str, req: Request) -> ApiResult {
    let subject: Digest = digest.parse()?;
    let artifact_type = query_param(&req, "artifactType").filter(|t| !t.is_empty());
    let index = state
        .registry
        .referrers(name, &subject, artifact_type.as_deref())
        .await?;
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OCI_INDEX)],
        index.to_string(),
    )
        .into_response();
    if artifact_type.is_some() {
        resp.headers_mut().insert(
            FILTERS_APPLIED,
            header::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
