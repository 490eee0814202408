//! `GET /v2/` (the API version check) and `GET /` (liveness for load balancers).

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};

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
