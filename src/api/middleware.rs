//! The layer every response passes: the API version header (4xx and 5xx
//! included), `http.headers`, a request id, one access-log line, and (with
//! `http.debug`) the HTTP metrics.
//!
//! A request's metrics are recorded when its response body ends, so a
//! blob's duration and size cover the whole transfer; "ends" is when the last
//! byte the Content-Length announces is handed to hyper, before it reaches
//! the client, so a scrape that follows a response always counts it.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::Request,
    http::{header, HeaderName, HeaderValue, Method},
    middleware::{self, Next},
    response::Response,
    Router,
};
use http_body::{Frame, SizeHint};

use super::route::Route;
use crate::{
    config::Config,
    telemetry::{
        metrics::{Handler, InFlight, Metrics, UploadGuard},
        otel,
    },
};
use tracing::Instrument;

const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

struct LayerConfig {
    headers: Vec<(HeaderName, HeaderValue)>,
    access_log: bool,
    metrics: Option<Arc<Metrics>>,
    /// `http.prefix` without its trailing slash.
    prefix: String,
    /// The token server's path, if it runs.
    token_path: Option<String>,
}

pub fn apply(app: Router, cfg: &Config, metrics: Option<Arc<Metrics>>) -> Router {
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
        metrics,
        prefix: cfg.http.prefix.trim_end_matches('/').to_string(),
        token_path: cfg.token_server.as_ref().map(|t| t.path.clone()),
    });
    app.layer(middleware::from_fn(
        move |req: Request<Body>, next: Next| {
            let layer_cfg = layer_cfg.clone();
            async move { every_response(layer_cfg, req, next).await }
        },
    ))
}

async fn every_response(cfg: Arc<LayerConfig>, mut req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        // Text log lines print it bare: a space or quote in it could append
        // forged fields (`actor=…`) to the access and audit lines.
        .filter(|v| v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // Handlers put the same id into events and audit lines.
    req.extensions_mut()
        .insert(crate::notify::event::RequestId(request_id.clone()));
    let method = req.method().clone();
    // The path only: upload URLs carry signed state in the query.
    let path = req.uri().path().to_string();

    let handler = (cfg.metrics.is_some() || otel::enabled())
        .then(|| handler_of(&path, &cfg.prefix, cfg.token_path.as_deref()));
    let mut metered = None;
    let req = match (&cfg.metrics, handler) {
        (Some(m), Some(handler)) => {
            let in_flight = m.request_started(handler, &method);
            let (req, read) = count_request_body(req, m, handler);
            metered = Some((in_flight, read));
            req
        }
        _ => req,
    };

    let mut resp = match handler.filter(|_| otel::enabled()) {
        Some(handler) => {
            let span = otel::request_span(&req, handler.route());
            let resp = next.run(req).instrument(span.clone()).await;
            otel::record_status(&span, resp.status());
            resp
        }
        None => next.run(req).await,
    };

    let h = resp.headers_mut();
    for (name, value) in &cfg.headers {
        h.append(name.clone(), value.clone());
    }
    if let Ok(v) = HeaderValue::try_from(request_id.as_str()) {
        h.insert("x-request-id", v);
    }
    if cfg.access_log {
        // hyper writes Content-Length for a body of known size only later,
        // when it sends the head: take the size from the body then.
        let bytes = h
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| resp.body().size_hint().exact())
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
    match metered {
        Some((in_flight, read)) => meter_response(resp, &method, in_flight, read),
        None => resp,
    }
}

/// The `handler` label for a request path (under `http.prefix`).
fn handler_of(path: &str, prefix: &str, token_path: Option<&str>) -> Handler {
    let path = path.strip_prefix(prefix).unwrap_or(path);
    if path == "/v2" {
        return Handler::Base;
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        return Route::parse(rest).map_or(Handler::Unknown, |r| r.handler());
    }
    match path {
        "/" => Handler::Root,
        "/health/storage" => Handler::Health,
        p if Some(p) == token_path => Handler::Token,
        p if p == "/ui" || p.starts_with("/ui/") => Handler::Ui,
        _ => Handler::Unknown,
    }
}

/// Count the request body's bytes as the handler reads them (and, for a blob
/// upload, hold `berth_uploads_in_flight` while it streams in).
fn count_request_body(
    req: Request<Body>,
    metrics: &Metrics,
    handler: Handler,
) -> (Request<Body>, Option<Arc<AtomicU64>>) {
    if req.body().is_end_stream() {
        return (req, None);
    }
    let upload = matches!(handler, Handler::BlobUpload | Handler::BlobUploadChunk)
        && matches!(*req.method(), Method::POST | Method::PATCH | Method::PUT);
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    let req = req.map(|inner| {
        Body::new(CountedRequestBody {
            inner,
            read: counter,
            upload: upload.then(|| metrics.upload_started()),
        })
    });
    (req, Some(read))
}

struct CountedRequestBody {
    inner: Body,
    read: Arc<AtomicU64>,
    /// Released when the body ends or is dropped.
    upload: Option<UploadGuard>,
}

impl HttpBody for CountedRequestBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => self.upload = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Record the request now if its response has no body to send, else when
/// the body ends (or the client goes away).
fn meter_response(
    resp: Response,
    method: &Method,
    in_flight: InFlight,
    read: Option<Arc<AtomicU64>>,
) -> Response {
    let expected = if *method == Method::HEAD || resp.body().is_end_stream() {
        Some(0)
    } else {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| resp.body().size_hint().exact())
    };
    let status = resp.status();
    let mut meter = Meter {
        in_flight: Some(in_flight),
        status,
        read,
        sent: 0,
        expected,
    };
    if expected == Some(0) {
        meter.finish();
        return resp;
    }
    resp.map(|inner| Body::new(MeteredBody { inner, meter }))
}

/// What a response's metrics need once its body is done.
struct Meter {
    in_flight: Option<InFlight>,
    status: axum::http::StatusCode,
    read: Option<Arc<AtomicU64>>,
    sent: u64,
    /// Bytes the body will carry, when known.
    expected: Option<u64>,
}

impl Meter {
    fn finish(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            let read = self.read.as_ref().map_or(0, |r| r.load(Ordering::Relaxed));
            in_flight.finish(self.status, read, self.sent);
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        // The body was dropped before its end: the client went away mid-response.
        self.finish();
    }
}

struct MeteredBody {
    inner: Body,
    meter: Meter,
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.meter.sent += data.len() as u64;
                }
                // Before hyper has the last bytes: the client cannot have them yet.
                if self.meter.expected.is_some_and(|e| self.meter.sent >= e) {
                    self.meter.finish();
                }
            }
            Poll::Ready(_) => self.meter.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
