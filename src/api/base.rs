//! `GET /v2/` (the API version check), `GET /` (liveness: always 200, whatever
//! the auth) and `GET /health/storage` (readiness: can we reach storage?).

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Extension,
};

use super::{
    error::{render, Code, Error},
    AppState,
};
use crate::{health::Health, notify::event::RequestId};

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
/// probes), else asked of storage now. Unauthenticated: why storage failed
/// goes to the log, under the request id the answer names.
pub async fn storage_health(
    State(state): State<AppState>,
    checks: Option<Extension<Arc<Health>>>,
    request_id: Option<Extension<RequestId>>,
) -> Response {
    if let Some(Extension(health)) = checks.filter(|c| c.storage_checked()) {
        return super::health::storage(&health);
    }
    match state.registry.storage_health().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            let mut unavailable =
                Error::new(Code::Unavailable, "storage unavailable").with_cause(e.to_string());
            unavailable.retry_after = e.retry_after;
            render(
                unavailable,
                request_id.as_ref().map(|Extension(id)| id.0.as_str()),
            )
        }
    }
}
