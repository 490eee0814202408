//! Errors become the spec's JSON error bodies with the matching status.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

pub use crate::registry::error::{Code, Error};

/// Handlers return this; `?` works on registry errors directly.
pub type ApiResult = std::result::Result<Response, Error>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        render(self, None)
    }
}

/// The spec's error body for `e`. A server error is logged whole (cause and
/// request id included) and answered with its public message only, plus the
/// request id (`x-request-id`, set on every response, says the same) so a
/// user's report finds the log line.
pub fn render(e: Error, request_id: Option<&str>) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut message = e.message;
    if status.is_server_error() {
        tracing::error!(
            code = e.code.as_str(),
            status = status.as_u16(),
            message = %message,
            cause = e.cause.as_deref().unwrap_or(""),
            request_id = request_id.unwrap_or(""),
            "request failed"
        );
        if let Some(id) = request_id {
            message = format!("{message} (request id {id})");
        }
    }
    let mut entry = json!({ "code": e.code.as_str(), "message": message });
    if let Some(d) = e.detail {
        entry["detail"] = d;
    }
    let body = json!({ "errors": [entry] }).to_string();
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    let h = resp.headers_mut();
    if let Some(after) = e.retry_after {
        h.insert(header::RETRY_AFTER, after.as_secs().max(1).into());
    }
    if let Some(offset) = e.upload_offset {
        if let Ok(v) = header::HeaderValue::from_str(&upload_range(offset)) {
            h.insert(header::RANGE, v);
        }
    }
    resp
}

/// distribution's Range for an upload: the last byte stored, `0-0` when none.
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// 404 for paths outside the API (distribution answers with a bare 404 too).
pub fn not_found() -> Response {
    Error::new(Code::Unsupported, "no such API endpoint")
        .with_status(404)
        .into_response()
}

/// Methods an endpoint does not take.
pub fn method_not_allowed() -> Response {
    Error::new(Code::Unsupported, "method not allowed on this endpoint")
        .with_status(405)
        .into_response()
}

/// 401 with the challenge, or 403 DENIED; the body lists what was needed, as
/// distribution's does. 429 TOOMANYREQUESTS with Retry-After when the
/// credentials could not be checked yet.
pub fn denial_response(
    denial: crate::auth::Denial,
    need: &[crate::auth::access::Access],
) -> Response {
    let detail: Vec<serde_json::Value> = need
        .iter()
        .map(|a| json!({ "Type": a.kind, "Name": a.name, "Action": a.action }))
        .collect();
    match denial {
        crate::auth::Denial::Challenge { challenge, message } => {
            let mut resp = Error::new(Code::Unauthorized, message)
                .with_detail(json!(detail))
                .into_response();
            if let Ok(v) = header::HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            resp
        }
        crate::auth::Denial::Forbidden(message) => Error::new(Code::Denied, message)
            .with_detail(json!(detail))
            .into_response(),
        crate::auth::Denial::TooManyRequests {
            retry_after,
            message,
        } => {
            let mut resp = Error::new(Code::TooManyRequests, message).into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, retry_after.as_secs().max(1).into());
            resp
        }
    }
}
