//! Wiring: configuration → storage driver → registry → HTTP server.

mod acme;
mod tls;

use std::{future::Future, sync::Arc};

use anyhow::Context;
use rand::RngCore;
use tokio::net::TcpListener;

use crate::{
    api,
    auth::Authenticator,
    cache::{inmemory::InMemoryCache, redis::RedisCache, BlobDescriptorCache, CacheBackend},
    config::{Config, StorageDriverConfig},
    registry::Registry,
    storage::{filesystem::FilesystemDriver, inmemory::InMemoryDriver, Driver},
};

/// The storage driver a configuration selects.
pub fn build_driver(cfg: &Config) -> anyhow::Result<Driver> {
    let driver: Driver = match cfg.storage.driver().map_err(anyhow::Error::msg)? {
        StorageDriverConfig::Filesystem { root } => Arc::new(
            FilesystemDriver::new(&root)
                .with_context(|| format!("storage.filesystem.rootdirectory {root}"))?,
        ),
        StorageDriverConfig::InMemory => Arc::new(InMemoryDriver::new()),
        StorageDriverConfig::S3(s3) => Arc::new(
            crate::storage::s3::S3Driver::new(&s3, cfg.storage.redirect.disable)
                .map_err(anyhow::Error::msg)?,
        ),
        StorageDriverConfig::Azure(azure) => Arc::new(
            crate::storage::azure::AzureDriver::new(&azure)
                .context("storage.azure")?
                .with_redirect(!cfg.storage.redirect.disable),
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
fn blob_descriptor_cache(cfg: &Config) -> anyhow::Result<Option<BlobDescriptorCache>> {
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

/// The full application for a configuration.
pub fn app(cfg: &Config) -> anyhow::Result<axum::Router> {
    let registry = Registry::new(
        build_driver(cfg)?,
        &http_secret(cfg),
        cfg.storage.delete.enabled,
    );
    let registry = registry.read_only(cfg.storage.maintenance.readonly.enabled);
    let registry = match blob_descriptor_cache(cfg)? {
        Some(cache) => registry.with_cache(cache),
        None => registry,
    };
    let auth = match &cfg.auth {
        Some(a) => Authenticator::from_config(a).map_err(anyhow::Error::msg)?,
        None => None,
    };
    let token_server = crate::auth::token_server::router(cfg).map_err(anyhow::Error::msg)?;
    Ok(api::router(cfg, registry, auth, token_server))
}

/// Serve on `listener` until `shutdown` resolves, then drain in-flight requests.
pub async fn serve(
    cfg: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = app(cfg)?;
    tracing::info!(addr = %listener.local_addr()?, driver = ?cfg.storage.driver(), "berth listening");
    if let Some(tls_cfg) = cfg.http.tls.as_ref().filter(|t| t.enabled()) {
        return tls::serve(tls_cfg, listener, app, shutdown).await;
    }
    // The peer address: the token server throttles failed logins by client.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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
    tracing::info!("shutting down: draining in-flight requests");
}
