//! The HTTP face of the `health:` checks (see [`crate::health`]): while any
//! check fails every request but the liveness probe `GET /` gets 503
//! UNAVAILABLE, as distribution's health handler does; `/health/storage`
//! answers from the periodic storage check when there is one.
//!
//! The checks reach the router as a request extension, inserted by the
//! server around the whole application (`server::router_for`): tests and
//! tools that build a router without checks simply have none.

use std::sync::Arc;

use axum::{
    extract::Request,
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::json;

use crate::health::Health;

pub fn apply(app: Router) -> Router {
    app.layer(middleware::from_fn(gate))
}

async fn gate(req: Request, next: Next) -> Response {
    // Inside `http.prefix` nesting the path is already relative to it.
    if req.uri().path() != "/" {
        if let Some(health) = req.extensions().get::<Arc<Health>>() {
            if !health.is_healthy() {
                return unavailable(health);
            }
        }
    }
    next.run(req).await
}

/// `/health/storage` with a periodic storage check: its last result.
pub fn storage(health: &Health) -> Response {
    if health.is_healthy() {
        (StatusCode::OK, "ok").into_response()
    } else {
        unavailable(health)
    }
}

fn failure_map(failures: Vec<(String, String)>) -> serde_json::Map<String, serde_json::Value> {
    failures
        .into_iter()
        .map(|(name, reason)| (name, reason.into()))
        .collect()
}

/// Names the failing checks, as distribution's does, but a storage
/// failure's text stays in the log (and on the debug listener).
fn unavailable(health: &Health) -> Response {
    let failures = failure_map(health.public_failures());
    let body = json!({ "errors": [{
        "code": "UNAVAILABLE",
        "message": "service unavailable",
        "detail": failures,
    }]});
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// distribution's `/debug/health`: `{}` and 200 when healthy, else the
/// failing checks by name and 503.
pub fn debug_report(health: &Health) -> Response {
    let failures = failure_map(health.failures());
    let status = if failures.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Object(failures).to_string(),
    )
        .into_response()
}
