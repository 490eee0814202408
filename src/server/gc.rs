//! Wiring for `berth garbage-collect`: the configured driver and (Redis)
//! cache around one collection, stopped cleanly by a signal.

use crate::{
    config::Config,
    registry::{
        gc::{GcOptions, GcReport},
        Registry,
    },
};

/// One collection on the configured storage; with a Redis blob-descriptor
/// cache, its entries for deleted blobs are cleared (an in-memory cache lives
/// in the servers: they bypass it while the sweep marker exists).
pub async fn garbage_collect(cfg: &Config, opts: &GcOptions) -> anyhow::Result<GcReport> {
    let driver = super::build_driver(cfg)?;
    let mut registry = Registry::new(driver, b"garbage-collect", true);
    // Only the shared tier matters here (the collector clears its entries
    // for what it deletes); nothing is cached in this process.
    if let Some(r) = &cfg.redis {
        use crate::cache::{manifests, redis::RedisCache};
        let settings = manifests::ManifestCacheSettings {
            size: 0,
            tag_ttl: std::time::Duration::ZERO,
            ..Default::default()
        };
        let redis = RedisCache::new(r).map_err(anyhow::Error::msg)?;
        registry =
            registry.with_manifest_cache(manifests::ManifestCache::new(settings, Some(redis)));
    }
    if cfg.storage.cache.blobdescriptor == "redis" {
        if let Some(cache) = super::blob_descriptor_cache(cfg)? {
            registry = registry.with_cache(cache);
        }
    }
    // A pull-through cache: which repositories are mirrored, and what
    // `proxy.ttl` lets expire (see `registry::gc::expire`).
    let mut opts = opts.clone();
    if let Some(settings) = cfg
        .proxy
        .as_ref()
        .map(|p| p.settings())
        .transpose()
        .map_err(anyhow::Error::msg)?
        .flatten()
    {
        let proxy = crate::proxy::ProxyCache::new(&settings)
            .map_err(|e| anyhow::anyhow!("proxy: {}", e.message))?;
        registry = registry.with_proxy(std::sync::Arc::new(proxy));
        opts.expire_mirrored = settings.ttl;
    }
    // Interrupted (Ctrl-C, a CronJob's SIGTERM): ask the run to stop between
    // two deletes (never inside one, which would leave a cache entry behind);
    // it takes its sweep marker down itself, so servers use their cache again.
    let stop = opts.stop.clone();
    let watcher = tokio::spawn(async move {
        super::stop_signal().await;
        tracing::warn!("garbage collection: stopping after the current delete");
        stop.cancel();
    });
    let result = registry.garbage_collect(&opts).await;
    watcher.abort();
    // What went wrong, without the spec's error code (it means nothing on a
    // terminal): the cause where there is one (the operator may read it).
    result.map_err(|e| anyhow::anyhow!(e.cause.unwrap_or(e.message)))
}
