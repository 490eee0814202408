//! The upload purger's schedule: one pass every `interval`, the first at
//! start. With Redis configured, replicas take a lock per pass so only one of
//! them walks the storage; without it each replica purges (deletes are
//! idempotent, only the walking is repeated).

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::{cache::redis::RedisCache, config::Config, registry::Registry};

const LOCK_KEY: &str = "berth::uploadpurging::lock";

/// Start the purger if `storage.maintenance.uploadpurging.enabled`.
pub fn spawn(cfg: &Config, registry: Registry) -> anyhow::Result<Option<JoinHandle<()>>> {
    let p = &cfg.storage.maintenance.uploadpurging;
    if !p.enabled || cfg.storage.maintenance.readonly.enabled {
        return Ok(None);
    }
    let (age, interval) = p.durations().map_err(anyhow::Error::msg)?;
    let dry_run = p.dryrun;
    let lock = match &cfg.redis {
        Some(r) => Some(RedisCache::new(r).map_err(anyhow::Error::msg)?),
        None => None,
    };
    tracing::info!(age = ?age, interval = ?interval, dry_run, cluster_lock = lock.is_some(), "upload purging enabled");
    Ok(Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            if let Some(lock) = &lock {
                // Slightly shorter than the interval, so the next pass can take it.
                let ttl = interval
                    .saturating_sub(interval / 10)
                    .max(Duration::from_millis(100));
                match lock.try_lock(LOCK_KEY, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!("upload purging: another replica holds this round");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "upload purging: Redis lock unavailable; purging anyway")
                    }
                }
            }
            match registry.purge_uploads(age, dry_run).await {
                Ok(r) => tracing::info!(
                    examined = r.examined,
                    purged = r.purged,
                    dry_run,
                    "upload purging pass"
                ),
                Err(e) => tracing::warn!(error = %e, "upload purging pass failed"),
            }
        }
    })))
}
