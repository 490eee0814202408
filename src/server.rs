//! Wiring: configuration → storage driver → registry → HTTP server.

mod acme;
mod gc;
mod index;
mod listener;
mod purger;
mod tls;

pub use gc::garbage_collect;
pub use index::index_rebuild;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{extract::State, http::header, response::IntoResponse, routing::get};
use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api,
    cache::{inmemory::InMemoryCache, redis::RedisCache, BlobDescriptorCache, CacheBackend},
    config::{Config, StorageDriverConfig},
    notify::Notifier,
    registry::Registry,
    storage::{
        filesystem::FilesystemDriver, inmemory::InMemoryDriver, instrumented::InstrumentedDriver,
        Driver,
    },
    telemetry::metrics::Metrics,
};

/// The storage driver a configuration selects.
pub fn build_driver(cfg: &Config) -> anyhow::Result<Driver> {
    let budget = cfg
        .storage
        .upload_buffer_budget()
        .map_err(anyhow::Error::msg)?;
    let driver: Driver = match cfg.storage.driver().map_err(anyhow::Error::msg)? {
        StorageDriverConfig::Filesystem { root } => Arc::new(
            FilesystemDriver::new(&root)
                .with_context(|| format!("storage.filesystem.rootdirectory {root}"))?,
        ),
        StorageDriverConfig::InMemory => Arc::new(InMemoryDriver::new()),
        StorageDriverConfig::S3(s3) => Arc::new(
            crate::storage::s3::S3Driver::new(&s3, cfg.storage.redirect.disable)
                .map_err(anyhow::Error::msg)?
                .with_buffer_budget(budget),
        ),
        StorageDriverConfig::Azure(azure) => Arc::new(
            crate::storage::azure::AzureDriver::new(&azure)
                .context("storage.azure")?
                .with_redirect(!cfg.storage.redirect.disable)
                .with_buffer_budget(budget),
        ),
    };
    Ok(driver)
}

/// `http.secret`, or a random one with a warning: upload URLs signed by one
/// replica would not verify on another.
fn http_secret(cfg: &Config) -> Vec<u8> {
    if !cfg.http.secret.is_empty() {
        return cfg.http.secret.as_bytes().to_vec();
    }
    tracing::warn!(
        "http.secret is not set: generated a random one. Only ONE replica is safe; \
         set http.secret (REGISTRY_HTTP_SECRET) to the same value on every replica"
    );
    let mut secret = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// `storage.cache.blobdescriptor`, if configured.
pub fn blob_descriptor_cache(cfg: &Config) -> anyhow::Result<Option<BlobDescriptorCache>> {
    let backend: Arc<dyn CacheBackend> = match cfg.storage.cache.blobdescriptor.as_str() {
        "inmemory" => Arc::new(InMemoryCache::default()),
        "redis" => {
            let r = cfg
                .redis
                .as_ref()
                .context("storage.cache.blobdescriptor: redis needs a redis: section")?;
            Arc::new(RedisCache::new(r).map_err(anyhow::Error::msg)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(BlobDescriptorCache::new(backend)))
}

/// With no `blobdescriptor` configured: what this replica read of a blob (its
/// repository's link, its size) trusted for `storage.cache.manifests.tagttl`,
/// like a tag or a manifest's link (deletes here forget it at once; one on
/// another replica is seen within the TTL; garbage-collection sweeps flush
/// it). `tagttl: 0s`: none, every HEAD and GET reads the link and stats the
/// data.
fn replica_cache(cfg: &Config) -> anyhow::Result<Option<BlobDescriptorCache>> {
    let (_, ttl, _) = cfg
        .storage
        .cache
        .manifests
        .settings()
        .map_err(anyhow::Error::msg)?;
    Ok((!ttl.is_zero()).then(|| BlobDescriptorCache::new(Arc::new(InMemoryCache::expiring(ttl)))))
}

/// `storage.cache.manifests`, with Redis as its shared tier when `redis:` is
/// configured; without it, links in process until invalidated for a declared
/// single replica (`blobdescriptor: inmemory`), else for `tagttl`.
pub fn manifest_cache(cfg: &Config) -> anyhow::Result<crate::cache::manifests::ManifestCache> {
    use crate::cache::manifests::{ManifestCache, ManifestCacheSettings};
    let (size, tag_ttl, redis_ttl) = cfg
        .storage
        .cache
        .manifests
        .settings()
        .map_err(anyhow::Error::msg)?;
    let redis = match &cfg.redis {
        Some(r) => Some(RedisCache::new(r).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let settings = ManifestCacheSettings {
        size,
        tag_ttl,
        redis_ttl,
        local_links: cfg.storage.cache.blobdescriptor == "inmemory",
    };
    Ok(ManifestCache::new(settings, redis))
}

/// The full application for a configuration.
pub fn app(cfg: &Config) -> anyhow::Result<axum::Router> {
    app_with_metrics(cfg, None)
}

/// [`app`], counting into `metrics`: HTTP requests, storage operations (the
/// driver is wrapped in [`InstrumentedDriver`]), the blob-descriptor cache
/// and authentication attempts.
pub fn app_with_metrics(
    cfg: &Config,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<axum::Router> {
    let registry = build_registry(cfg, &metrics)?;
    // Webhook workers need a runtime and a shutdown: only `serve` runs them.
    router_for(cfg, registry, metrics, Arc::new(Notifier::audit_only()))
}

/// Storage driver, cache and maintenance settings as one [`Registry`].
pub fn build_registry(cfg: &Config, metrics: &Option<Arc<Metrics>>) -> anyhow::Result<Registry> {
    let driver = build_driver(cfg)?;
    let driver = InstrumentedDriver::wrap(driver, metrics.as_deref());
    let registry = Registry::new(driver, &http_secret(cfg), cfg.storage.delete.enabled);
    let registry = registry
        .read_only(cfg.storage.maintenance.readonly.enabled)
        .with_listing_limits(crate::registry::catalog::ListingLimits::from_config(cfg));
    let manifests = manifest_cache(cfg)?;
    if let Some(m) = &metrics {
        m.register_manifest_cache(manifests.stats());
    }
    let registry = registry.with_manifest_cache(manifests);
    let proxy = cfg.proxy.as_ref().map(|p| p.settings()).transpose();
    let registry = match proxy.map_err(anyhow::Error::msg)?.flatten() {
        Some(settings) => {
            let mut proxy = crate::proxy::ProxyCache::new(&settings)
                .map_err(|e| anyhow::anyhow!("proxy: {}", e.message))?;
            // With Redis, one upstream fetch per blob in the whole cluster.
            if let Some(r) = &cfg.redis {
                proxy = proxy.with_lock(Arc::new(RedisCache::new(r).map_err(anyhow::Error::msg)?));
            }
            for m in &settings.mirrors {
                tracing::info!(
                    prefix = %m.prefix,
                    upstream = %m.remote,
                    "pull-through cache of {}",
                    m.remote
                );
            }
            if let Some(m) = &metrics {
                m.register_collectors("proxy", proxy.metrics().collectors());
            }
            registry.with_proxy(Arc::new(proxy))
        }
        None => registry,
    };
    let registry = match blob_descriptor_cache(cfg)?.or(replica_cache(cfg)?) {
        Some(cache) => {
            if let Some(m) = &metrics {
                m.register_cache(cache.stats.clone());
            }
            registry.with_cache(cache)
        }
        None => registry,
    };
    Ok(registry)
}

/// The HTTP application around a registry: access control, token server, API.
fn router_for(
    cfg: &Config,
    registry: Registry,
    metrics: Option<Arc<Metrics>>,
    notifier: Arc<Notifier>,
) -> anyhow::Result<axum::Router> {
    let access = crate::auth::build(cfg, metrics.clone()).map_err(anyhow::Error::msg)?;
    api::router_with_notifier(cfg, registry, access, metrics, notifier).map_err(anyhow::Error::msg)
}

/// How long `serve` waits for the storage to say whether the repository
/// index is complete before it listens anyway (the catalog asks again).
const INDEX_CHECK: Duration = Duration::from_secs(10);

/// How long the debug listener may take to finish its scrapes once the
/// main listener has drained.
const DEBUG_DRAIN: Duration = Duration::from_secs(5);

/// How long, past [`DEBUG_DRAIN`], the debug listener's task may take to
/// end before it is aborted.
const DEBUG_STOP: Duration = Duration::from_secs(1);

/// How long queued webhook events may take to go out once the main listener
/// has drained; what is left is dropped and counted.
const NOTIFY_DRAIN: Duration = Duration::from_secs(5);

/// Serve on `listener` until `shutdown` resolves, then drain in-flight
/// requests for at most `http.draintimeout`. With `http.debug.addr` (and
/// `prometheus.enabled`), metrics are served on that second listener too,
/// until the main one has stopped. Both have the limits of
/// [`listener::Limits`].
pub async fn serve(
    cfg: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (metrics, debug) = match cfg.http.metrics() {
        Some(d) => {
            let addr = d.bind_addr();
            let debug_listener = TcpListener::bind(&addr)
                .await
                .with_context(|| format!("http.debug.addr {addr}"))?;
            let metrics = Arc::new(Metrics::new());
            (Some(metrics.clone()), Some((debug_listener, metrics)))
        }
        None => (None, None),
    };
    let registry = build_registry(cfg, &metrics)?;
    // Before listening: on a brand-new storage this marks the (empty)
    // repository index complete before the first push makes it non-empty.
    match tokio::time::timeout(INDEX_CHECK, registry.index().is_complete()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not look for the repository index"),
        Err(_) => tracing::warn!("the storage did not answer the repository index check in time"),
    }
    let purger = purger::spawn(cfg, registry.clone())?;
    let sweep_watch = crate::registry::gc::watch::spawn_sweep_watch(registry.clone());
    let notifier = Arc::new(Notifier::start(cfg).map_err(anyhow::Error::msg)?);
    if let Some(m) = &metrics {
        m.register_notifications(notifier.metrics());
    }
    let health = crate::health::start(&cfg.health, &registry)
        .await
        .map_err(anyhow::Error::msg)?;
    let app = router_for(cfg, registry, metrics, notifier.clone())?;
    // The checks' results reach the API as a request extension (api::health).
    let app = match &health {
        Some(h) => app.layer(axum::Extension(h.clone())),
        None => app,
    };
    let limits = listener::Limits::from_config(&cfg.http);
    let stop_debug = CancellationToken::new();
    let debug_task = match debug {
        Some((debug_listener, metrics)) => {
            let path = cfg
                .http
                .metrics()
                .map_or_else(String::new, |d| d.prometheus.path.clone());
            tracing::info!(addr = %debug_listener.local_addr()?, path = %path, "metrics listening");
            Some(tokio::spawn(serve_metrics(
                debug_listener,
                path,
                metrics,
                health.clone(),
                limits.for_debug(DEBUG_DRAIN),
                stop_debug.clone().cancelled_owned(),
            )))
        }
        None => None,
    };
    let result = serve_app(cfg, listener, app, limits, shutdown).await;
    // The webhook queue and the debug listener drain side by side: the whole
    // shutdown takes at most http.draintimeout + DEBUG_DRAIN + DEBUG_STOP.
    stop_debug.cancel();
    let debug_stopped = async {
        if let Some(mut task) = debug_task {
            if tokio::time::timeout(DEBUG_DRAIN + DEBUG_STOP, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    };
    tokio::join!(notifier.shutdown(NOTIFY_DRAIN), debug_stopped);
    if let Some(p) = purger {
        p.abort();
    }
    sweep_watch.abort();
    if let Some(h) = &health {
        h.stop();
    }
    result
}

async fn serve_app(
    cfg: &Config,
    listener: TcpListener,
    app: axum::Router,
    limits: listener::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let storage = cfg.storage.driver().map_or_else(|e| e, |d| d.describe());
    crate::auth::warn_if_plaintext(cfg, listener.local_addr()?);
    let app = app.layer(axum::middleware::map_request(host_from_authority));
    let tls = match cfg.http.tls.as_ref().filter(|t| t.enabled()) {
        Some(tls_cfg) => Some(tls::start(tls_cfg)?),
        None => None,
    };
    tracing::info!(
        max_connections = limits.max_connections,
        read_header_timeout = ?limits.read_header,
        idle_timeout = ?limits.idle,
        stall_timeout = ?limits.stall,
        drain_timeout = ?limits.drain,
        "connection limits"
    );
    tracing::info!(addr = %listener.local_addr()?, storage = %storage, "berth listening");
    let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
    listener::serve("main", listener, acceptor, app, limits, shutdown).await;
    Ok(())
}

/// HTTP/2 (over TLS, or h2c in plain HTTP) sends the host as `:authority`,
/// which hyper puts in the URI and not in a Host header; absolute Location
/// URLs are built from Host, so give them one (as Go's net/http does with
/// `r.Host`).
async fn host_from_authority(mut req: axum::extract::Request) -> axum::extract::Request {
    if !req.headers().contains_key(header::HOST) {
        let authority = req.uri().authority().map(|a| a.as_str().to_string());
        if let Some(value) = authority.and_then(|a| header::HeaderValue::from_str(&a).ok()) {
            req.headers_mut().insert(header::HOST, value);
        }
    }
    req
}

/// The debug listener: `GET <path>` is the Prometheus text exposition,
/// anything else 404. Plain HTTP, no auth, like distribution's.
async fn serve_metrics(
    listener: TcpListener,
    path: String,
    metrics: Arc<Metrics>,
    health: Option<Arc<crate::health::Health>>,
    limits: listener::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    async fn scrape(State(m): State<Arc<Metrics>>) -> axum::response::Response {
        ([(header::CONTENT_TYPE, m.content_type())], m.render()).into_response()
    }
    let mut app = axum::Router::new()
        .route(&path, get(scrape))
        .with_state(metrics);
    if let Some(h) = health {
        app = app.route(
            "/debug/health",
            get(move || async move { api::health::debug_report(&h) }),
        );
    }
    listener::serve("debug", listener, None, app, limits, shutdown).await
}

/// Resolves on SIGINT or SIGTERM, saying the server drains.
pub async fn shutdown_signal() {
    stop_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
