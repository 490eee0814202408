//! `GET /v2/` (the API version check), `GET /` (liveness: always 200, whatever
//! the auth) and `GET /health/storage` (readiness: can we reach storage?).

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Extension,
};

use super::AppState;
use crate::health::Health;

pub fn version_check() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

pub async fn root() -> Response {
    StatusCode::OK.into_response()
}

/// From the periodic `health.storagedriver` check when configured (cheap for
/// probes), else asked of storage now.
pub async fn storage_health(
    State(state): State<AppState>,
    checks: Option<Extension<Arc<Health>>>,
) -> Response {
    if let Some(Extension(health)) = checks.filter(|c| c.storage_checked()) {
        return super::health::storage(&health);
    }
    match state.registry.storage_health().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage unavailable: {e}"),
        )
            .into_response(),
    }
}
