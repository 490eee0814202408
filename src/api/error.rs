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
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = self.code.as_str(), message = %self.message, "request failed");
        }
        let mut entry = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = self.detail {
            entry["detail"] = d;
        }
        let body = json!({ "errors": [entry] }).to_string();
        let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
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
/// distribution's does.
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
    }
}
