//! The layer every response passes: the API version header (4xx and 5xx
//! included), `http.headers`, a request id, and one access-log line.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::{self, Next},
    response::Response,
    Router,
};

use crate::config::Config;

const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

struct LayerConfig {
    headers: Vec<(HeaderName, HeaderValue)>,
    access_log: bool,
}

pub fn apply(app: Router, cfg: &Config) -> Router {
    let mut headers = vec![(
        HeaderName::from_static(API_VERSION.0),
        HeaderValue::from_static(API_VERSION.1),
    )];
    for (name, values) in &cfg.http.headers {
        let Ok(name) = HeaderName::try_from(name.as_str()) else {
            tracing::warn!(header = %name, "http.headers: invalid header name, skipped");
            continue;
        };
        for v in values {
            match HeaderValue::try_from(v.as_str()) {
                Ok(v) => headers.push((name.clone(), v)),
                Err(_) => tracing::warn!(header = %name, "http.headers: invalid value, skipped"),
            }
        }
    }
    let layer_cfg = Arc::new(LayerConfig {
        headers,
        access_log: !cfg.log.accesslog.disabled,
    });
    app.layer(middleware::from_fn(
        move |req: Request<Body>, next: Next| {
            let layer_cfg = layer_cfg.clone();
            async move { every_response(layer_cfg, req, next).await }
        },
    ))
}

async fn every_response(cfg: Arc<LayerConfig>, req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    // The path only: upload URLs carry signed state in the query.
    let path = req.uri().path().to_string();

    let mut resp = next.run(req).await;

    let h = resp.headers_mut();
    for (name, value) in &cfg.headers {
        h.append(name.clone(), value.clone());
    }
    if let Ok(v) = HeaderValue::try_from(request_id.as_str()) {
        h.insert("x-request-id", v);
    }
    if cfg.access_log {
        let bytes = h
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        tracing::info!(
            target: "berth::access",
            method = %method,
            path = %path,
            status = resp.status().as_u16(),
            bytes,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            request_id = %request_id,
            "request"
        );
    }
    resp
}
