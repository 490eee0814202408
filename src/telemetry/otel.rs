//! OpenTelemetry traces: a span per HTTP request (its parent taken from the
//! W3C `traceparent` the client sent) and one per storage operation inside
//! it, exported over OTLP/HTTP by a batch processor on its own thread, so a
//! slow or dead collector never holds a request up (spans are dropped when
//! the processor's queue is full).
//!
//! Spans are only created when tracing is on ([`enabled`]): with it off, the
//! request path pays one atomic load.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{propagation::TextMapPropagator, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
    Resource,
};

use crate::config::observability::TracingConfig;

/// The tracing target of every span made for export; the log formatter
/// leaves these spans out so log lines keep their shape.
pub const TARGET: &str = "berth::trace";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported (set once at start).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Tracing is wanted when the config says so, or when the standard OTLP
/// endpoint variables are set — unless the SDK is disabled by
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
pub fn wanted(cfg: &TracingConfig) -> bool {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return false;
    }
    cfg.enabled
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
}

/// The provider exporting to the configured collector.
pub fn provider(cfg: &TracingConfig) -> Result<SdkTracerProvider, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if !cfg.endpoint.is_empty() {
        exporter = exporter.with_endpoint(traces_url(&cfg.endpoint));
    }
    if !cfg.headers.is_empty() {
        let headers: HashMap<String, String> = cfg.headers.clone().into_iter().collect();
        exporter = exporter.with_headers(headers);
    }
    if let Some(t) = cfg.timeout()? {
        exporter = exporter.with_timeout(t);
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("tracing: OTLP exporter: {e}"))?;

    let mut resource = Resource::builder();
    if !cfg.servicename.is_empty() {
        resource = resource.with_service_name(cfg.servicename.clone());
    } else if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("berth");
    }
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build());
    if let Some(ratio) = cfg.samplingratio {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))));
    }
    ENABLED.store(true, Ordering::Relaxed);
    Ok(builder.build())
}

/// The `tracing` layer feeding `provider`'s tracer.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Source locations, thread ids and busy/idle times would repeat the same
    // few values on every span; the attributes that matter are set per span.
    tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_tracer(provider.tracer("berth"))
}

/// `<base>/v1/traces`, as the OTLP/HTTP spec derives it from a base URL.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The span for one HTTP request, child of the client's `traceparent` when
/// it sent one. `route` is the path template (`/v2/{name}/blobs/{digest}`).
pub fn request_span<B>(req: &http::Request<B>, route: &str) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = route,
        url.path = req.uri().path(),
        user_agent.original = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent =
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(req.headers()));
    // Without a valid traceparent the extracted context is empty and the
    // span starts a new trace.
    let _ = span.set_parent(parent);
    span
}

/// Record the response status on a request span (5xx marks it an error).
pub fn record_status(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// The span for one storage-driver call, a child of the request's; none
/// outside a request (the purger's or GC marker's background calls would
/// otherwise each start a trace of their own).
pub fn storage_span(driver: &'static str, action: &'static str, path: &str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "storage",
        otel.name = %format_args!("storage.{action}"),
        otel.kind = "internal",
        storage.driver = driver,
        storage.action = action,
        storage.path = path,
    )
}
