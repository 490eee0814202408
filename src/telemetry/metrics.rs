//! Prometheus metrics, served on `http.debug.addr` at `http.debug.prometheus.path`.
//!
//! Names follow CNCF distribution where it has a metric for the same thing
//! (namespace `registry`), so its dashboards and alerts keep working;
//! Berth's own are under `berth_`. Everything lives in one [`Metrics`] value
//! with its own [`Registry`], built by `server::serve` and handed to the parts
//! that count (the HTTP layer, the storage decorator, the auth checks): no
//! global state, so several servers in one process never share counters.
//!
//! The hot path avoids label look-ups: the children for each (handler,
//! method) pair and each storage action are resolved once, on first use.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::Instant,
};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::cache::CacheStats;

/// The route template a request matched: the `handler` label. Bounded, so a
/// path never becomes a label value. The `/v2` names are distribution's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `GET /v2/`
    Base,
    Catalog,
    Tags,
    Manifest,
    Blob,
    /// `POST /v2/<name>/blobs/uploads/`
    BlobUpload,
    /// `/v2/<name>/blobs/uploads/<id>`
    BlobUploadChunk,
    Referrers,
    /// `GET /`, the load balancers' probe.
    Root,
    /// `/health/storage`
    Health,
    /// The built-in token server.
    Token,
    /// The web UI's pages, forms and assets (`/ui/…`).
    Ui,
    /// Anything else (a 404 from the fallback, an unparsable `/v2` path).
    Unknown,
}

impl Handler {
    const COUNT: usize = 13;

    pub fn name(self) -> &'static str {
        match self {
            Handler::Base => "base",
            Handler::Catalog => "catalog",
            Handler::Tags => "tags",
            Handler::Manifest => "manifest",
            Handler::Blob => "blob",
            Handler::BlobUpload => "blob_upload",
            Handler::BlobUploadChunk => "blob_upload_chunk",
            Handler::Referrers => "referrers",
            Handler::Root => "root",
            Handler::Health => "health",
            Handler::Token => "token",
            Handler::Ui => "ui",
            Handler::Unknown => "unknown",
        }
    }

    /// The path template, for trace span names (`http.route`).
    pub fn route(self) -> &'static str {
        match self {
            Handler::Base => "/v2/",
            Handler::Catalog => "/v2/_catalog",
            Handler::Tags => "/v2/{name}/tags/list",
            Handler::Manifest => "/v2/{name}/manifests/{reference}",
            Handler::Blob => "/v2/{name}/blobs/{digest}",
            Handler::BlobUpload => "/v2/{name}/blobs/uploads/",
            Handler::BlobUploadChunk => "/v2/{name}/blobs/uploads/{uuid}",
            Handler::Referrers => "/v2/{name}/referrers/{digest}",
            Handler::Root => "/",
            Handler::Health => "/health/storage",
            Handler::Token => "/token",
            Handler::Ui => "/ui/",
            Handler::Unknown => "unknown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The `method` label: lower case, as Go's promhttp writes it; anything
/// unusual is `other` (a client must not be able to invent label values).
const METHODS: [&str; 8] = [
    "get", "head", "put", "post", "patch", "delete", "options", "other",
];

fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::PUT => 2,
        http::Method::POST => 3,
        http::Method::PATCH => 4,
        http::Method::DELETE => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

/// One storage driver operation: the `action` label. The names are
/// distribution's method names; `PutScratch`, `WriterClose` and
/// `WriterCommit` are Berth's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageAction {
    GetContent,
    PutContent,
    PutScratch,
    /// Opening a read stream (the bytes are not timed: they stream).
    Reader,
    /// Opening a writer.
    Writer,
    WriterClose,
    WriterCommit,
    Stat,
    List,
    Move,
    Delete,
    RedirectURL,
}

impl StorageAction {
    const COUNT: usize = 12;

    pub fn name(self) -> &'static str {
        match self {
            StorageAction::GetContent => "GetContent",
            StorageAction::PutContent => "PutContent",
            StorageAction::PutScratch => "PutScratch",
            StorageAction::Reader => "Reader",
            StorageAction::Writer => "Writer",
            StorageAction::WriterClose => "WriterClose",
            StorageAction::WriterCommit => "WriterCommit",
            StorageAction::Stat => "Stat",
            StorageAction::List => "List",
            StorageAction::Move => "Move",
            StorageAction::Delete => "Delete",
            StorageAction::RedirectURL => "RedirectURL",
        }
    }
}

/// docker/go-metrics' HTTP duration buckets (seconds), as distribution uses.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
];

/// 1 KiB to 4 GiB, doubling (go-metrics' size buckets).
fn size_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1024.0, 2.0, 22).expect("static buckets")
}

/// The children one (handler, method) pair records into.
struct RouteChildren {
    duration: Histogram,
    request_size: Histogram,
    response_size: Histogram,
    in_flight: IntGauge,
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    request_size: HistogramVec,
    response_size: HistogramVec,
    in_flight: IntGaugeVec,
    storage_action: HistogramVec,
    uploads_in_flight: IntGauge,
    auth_attempts: IntCounterVec,
    /// `[handler][method]`, resolved on first use.
    routes: Vec<OnceLock<RouteChildren>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "Total number of HTTP requests made.")
                .namespace("registry"),
            &["code", "handler", "method"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "The HTTP request latencies in seconds, to the end of the response body.",
            )
            .namespace("registry")
            .buckets(DURATION_BUCKETS.to_vec()),
            &["handler", "method"],
        )
        .expect("valid metric");
        let request_size = HistogramVec::new(
            HistogramOpts::new(
                "http_request_size_bytes",
                "The HTTP request body sizes in bytes, as read.",
            )
            .namespace("registry")
            .buckets(size_buckets()),
            &["handler"],
        )
        .expect("valid metric");
        let response_size = HistogramVec::new(
            HistogramOpts::new(
                "http_response_size_bytes",
                "The HTTP response body sizes in bytes, as sent.",
            )
            .namespace("registry")
            .buckets(size_buckets()),
            &["handler"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new("http_in_flight_requests", "The in-flight HTTP requests.")
                .namespace("registry"),
            &["handler"],
        )
        .expect("valid metric");
        let storage_action = HistogramVec::new(
            HistogramOpts::new(
                "storage_action_seconds",
                "The number of seconds that the storage action takes.",
            )
            .namespace("registry"),
            &["driver", "action"],
        )
        .expect("valid metric");
        let uploads_in_flight = IntGauge::new(
            "berth_uploads_in_flight",
            "Blob upload requests (POST, PATCH, PUT with a body) whose body is streaming in.",
        )
        .expect("valid metric");
        let auth_attempts = IntCounterVec::new(
            Opts::new(
                "berth_auth_attempts_total",
                "Requests that presented credentials, by scheme (basic, bearer, token_server) \
                 and result (success, failure; denied: valid credentials without the access).",
            ),
            &["scheme", "result"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn Collector>,
            Box::new(duration.clone()),
            Box::new(request_size.clone()),
            Box::new(response_size.clone()),
            Box::new(in_flight.clone()),
            Box::new(storage_action.clone()),
            Box::new(uploads_in_flight.clone()),
            Box::new(auth_attempts.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            request_size,
            response_size,
            in_flight,
            storage_action,
            uploads_in_flight,
            auth_attempts,
            routes: (0..Handler::COUNT * METHODS.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec fails only on invalid metric data, which the
        // constructors above rule out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The Content-Type of [`render`](Self::render)'s output.
    pub fn content_type(&self) -> String {
        TextEncoder::new().format_type().to_string()
    }

    /// Expose the blob-descriptor cache's counters.
    pub fn register_cache(&self, stats: Arc<CacheStats>) {
        if let Err(e) = self
            .registry
            .register(Box::new(CacheCollector::new(stats, "storage")))
        {
            tracing::warn!(error = %e, "cache metrics not registered");
        }
    }

    /// Expose the manifest cache's counters
    /// (`registry_manifest_cache_requests_total{type}`,
    /// `registry_manifest_cache_errors_total`): a hit is a GET or HEAD by
    /// digest answered without storage.
    pub fn register_manifest_cache(&self, stats: Arc<CacheStats>) {
        if let Err(e) = self
            .registry
            .register(Box::new(CacheCollector::new(stats, "manifest")))
        {
            tracing::warn!(error = %e, "manifest cache metrics not registered");
        }
    }

    /// Expose a capability's own collectors (`what` names it in a warning).
    pub fn register_collectors(&self, what: &str, collectors: Vec<Box<dyn Collector>>) {
        for c in collectors {
            if let Err(e) = self.registry.register(c) {
                tracing::warn!(error = %e, "{what} metrics not registered");
            }
        }
    }

    /// Expose the webhook notification metrics (`notify::metrics`).
    pub fn register_notifications(&self, m: &crate::notify::metrics::NotifyMetrics) {
        for c in m.collectors() {
            if let Err(e) = self.registry.register(c) {
                tracing::warn!(error = %e, "notification metrics not registered");
            }
        }
    }

    /// Count a check of presented credentials.
    pub fn auth_attempt(&self, scheme: &str, result: &str) {
        self.auth_attempts
            .with_label_values(&[scheme, result])
            .inc();
    }

    /// Timers for one storage driver's operations.
    pub fn storage_timers(&self, driver: &'static str) -> StorageTimers {
        StorageTimers {
            vec: self.storage_action.clone(),
            driver,
            actions: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// A blob upload's body started streaming in; it stops counting when the
    /// guard is dropped.
    pub fn upload_started(&self) -> UploadGuard {
        self.uploads_in_flight.inc();
        UploadGuard(self.uploads_in_flight.clone())
    }

    fn route(&self, handler: Handler, method: usize) -> &RouteChildren {
        self.routes[handler.index() * METHODS.len() + method].get_or_init(|| {
            let (h, m) = (handler.name(), METHODS[method]);
            RouteChildren {
                duration: self.duration.with_label_values(&[h, m]),
                request_size: self.request_size.with_label_values(&[h]),
                response_size: self.response_size.with_label_values(&[h]),
                in_flight: self.in_flight.with_label_values(&[h]),
            }
        })
    }

    /// A request arrived: it is in flight until the returned value is
    /// finished (or dropped, if no response was ever made).
    pub fn request_started(self: &Arc<Self>, handler: Handler, method: &http::Method) -> InFlight {
        let method = method_index(method);
        self.route(handler, method).in_flight.inc();
        InFlight {
            metrics: self.clone(),
            handler,
            method,
            started: Instant::now(),
            done: false,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// One request being served; see [`Metrics::request_started`].
pub struct InFlight {
    metrics: Arc<Metrics>,
    handler: Handler,
    method: usize,
    started: Instant,
    done: bool,
}

impl InFlight {
    /// The response is complete (or abandoned by the client after its head
    /// was sent): count it under `code`.
    pub fn finish(mut self, code: http::StatusCode, request_bytes: u64, response_bytes: u64) {
        self.done = true;
        let route = self.metrics.route(self.handler, self.method);
        route.duration.observe(self.started.elapsed().as_secs_f64());
        route.request_size.observe(request_bytes as f64);
        route.response_size.observe(response_bytes as f64);
        self.metrics
            .requests
            .with_label_values(&[code.as_str(), self.handler.name(), METHODS[self.method]])
            .inc();
        route.in_flight.dec();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled before a response existed: no code to count it under.
            self.metrics
                .route(self.handler, self.method)
                .in_flight
                .dec();
        }
    }
}

/// Holds one count of `berth_uploads_in_flight`.
pub struct UploadGuard(IntGauge);

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `registry_storage_action_seconds` for one driver.
pub struct StorageTimers {
    vec: HistogramVec,
    driver: &'static str,
    actions: [OnceLock<Histogram>; StorageAction::COUNT],
}

impl StorageTimers {
    pub fn observe(&self, action: StorageAction, started: Instant) {
        self.actions[action as usize]
            .get_or_init(|| self.vec.with_label_values(&[self.driver, action.name()]))
            .observe(started.elapsed().as_secs_f64());
    }
}

/// distribution's `registry_storage_cache_requests_total{type="Hit"|"Miss"}`
/// and `registry_storage_cache_errors_total`, read from [`CacheStats`] at
/// scrape time (the cache keeps counting in plain atomics).
struct CacheCollector {
    stats: Arc<CacheStats>,
    /// `storage` (distribution's blob-descriptor cache names) or `manifest`.
    subsystem: &'static str,
    requests: IntCounterVec,
    errors: IntCounter,
    /// Warn once if a scrape cannot build the families.
    warned: AtomicBool,
}

impl CacheCollector {
    fn requests_opts(subsystem: &'static str) -> Opts {
        Opts::new(
            "cache_requests_total",
            "The number of cache requests received.",
        )
        .namespace("registry")
        .subsystem(subsystem)
    }

    fn errors_opts(subsystem: &'static str) -> Opts {
        Opts::new("cache_errors_total", "The number of cache request errors.")
            .namespace("registry")
            .subsystem(subsystem)
    }

    fn new(stats: Arc<CacheStats>, subsystem: &'static str) -> CacheCollector {
        CacheCollector {
            stats,
            subsystem,
            requests: IntCounterVec::new(Self::requests_opts(subsystem), &["type"])
                .expect("valid metric"),
            errors: IntCounter::with_opts(Self::errors_opts(subsystem)).expect("valid metric"),
            warned: AtomicBool::new(false),
        }
    }
}

impl Collector for CacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.requests.desc();
        d.extend(self.errors.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Fresh counters set to the atomics' values: a scrape reads, never resets.
        let built = (|| -> prometheus::Result<Vec<MetricFamily>> {
            let requests = IntCounterVec::new(Self::requests_opts(self.subsystem), &["type"])?;
            requests
                .with_label_values(&["Hit"])
                .inc_by(self.stats.hits.load(Ordering::Relaxed));
            requests
                .with_label_values(&["Miss"])
                .inc_by(self.stats.misses.load(Ordering::Relaxed));
            let errors = IntCounter::with_opts(Self::errors_opts(self.subsystem))?;
            errors.inc_by(self.stats.errors.load(Ordering::Relaxed));
            let mut out = requests.collect();
            out.extend(errors.collect());
            Ok(out)
        })();
        built.unwrap_or_else(|e| {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cache metrics unavailable");
            }
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_under_distributions_names() {
        let m = Arc::new(Metrics::new());
        let r = m.request_started(Handler::Manifest, &http::Method::PUT);
        assert!(m
            .render()
            .contains("registry_http_in_flight_requests{handler=\"manifest\"} 1"));
        r.finish(http::StatusCode::CREATED, 10, 0);
        // Dropped without a response: in flight, then not, and not counted.
        drop(m.request_started(Handler::Blob, &http::Method::GET));
        m.storage_timers("inmemory")
            .observe(StorageAction::Stat, Instant::now());
        let stats = Arc::new(CacheStats::default());
        stats.hits.fetch_add(2, Ordering::Relaxed);
        stats.errors.fetch_add(1, Ordering::Relaxed);
        m.register_cache(stats);
        let text = m.render();
        for line in [
            "registry_http_requests_total{code=\"201\",handler=\"manifest\",method=\"put\"} 1",
            "registry_http_request_duration_seconds_count{handler=\"manifest\",method=\"put\"} 1",
            "registry_http_request_size_bytes_sum{handler=\"manifest\"} 10",
            "registry_http_in_flight_requests{handler=\"manifest\"} 0",
            "registry_http_in_flight_requests{handler=\"blob\"} 0",
            "registry_storage_action_seconds_count{action=\"Stat\",driver=\"inmemory\"} 1",
            "registry_storage_cache_requests_total{type=\"Hit\"} 2",
            "registry_storage_cache_requests_total{type=\"Miss\"} 0",
            "registry_storage_cache_errors_total 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        let counted_blob = text
            .lines()
            .any(|l| l.starts_with("registry_http_requests_total") && l.contains("\"blob\""));
        assert!(!counted_blob, "{text}");
    }
}
