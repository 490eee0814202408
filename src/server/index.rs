//! Wiring for `berth index rebuild`: the configured driver, one rebuild.

use crate::{
    config::Config,
    registry::{index::IndexReport, Registry},
};

/// Add every repository of the configured storage to the repository index
/// and mark it complete; safe while servers run (it only adds).
pub async fn index_rebuild(cfg: &Config) -> anyhow::Result<IndexReport> {
    let driver = super::build_driver(cfg)?;
    let registry = Registry::new(driver, b"index-rebuild", false);
    registry
        .index()
        .rebuild()
        .await
        .map_err(|e| anyhow::anyhow!(e.cause.unwrap_or(e.message)))
}
