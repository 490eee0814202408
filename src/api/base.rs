//! `GET /v2/` (the API version check), `GET /` (liveness: always 200, whatever
//! the auth) and `GET /health/storage` (readiness: can we reach storage?).

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};

use super::AppState;

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

pub async fn storage_health(State(state): State<AppState>) -> Response {
    match state.registry.storage_health().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage unavailable: {e}"),
        )
            .into_response(),
    }
}
