//! The sweep markers: how a `berth garbage-collect` process, which cannot
//! reach a running server's memory, tells every server that blobs are about
//! to go.
//!
//! Each collector writes its own file under `docker/registry/v2/gc/sweeps/`
//! (outside `repositories/` and `blobs/`, so distribution and the catalog
//! ignore it) and waits [`NOTICE`] before deleting; servers list that
//! directory every [`POLL_EVERY`]. While any marker exists a server bypasses
//! its blob-descriptor and manifest caches (flushing them when the sweep
//! starts and when it ends), so no cached entry can answer for a swept blob
//! or manifest, and a manifest PUT touches the links it relies on. One file per run, not one shared
//! file: overlapping runs (a CronJob outlasting its schedule) must not end
//! each other's announcement.

use std::{
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use bytes::Bytes;

use crate::registry::{error::Result, manifest::Manifest, Registry};
use crate::storage::layout;

/// How often servers look for the marker.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// How long the collector waits after writing the marker: a few polls.
pub const NOTICE: Duration = Duration::from_secs(3);

/// Where running collectors announce themselves, one file each.
pub fn sweeps_dir() -> String {
    format!("{}/gc/sweeps", layout::ROOT)
}

/// The marker of one run.
pub fn sweep_marker(run: &str) -> String {
    format!("{}/{run}", sweeps_dir())
}

impl Registry {
    /// Is a sweep running, as of the last look at the markers?
    pub fn sweep_active(&self) -> bool {
        self.sweeping.load(Ordering::SeqCst)
    }

    /// Look for markers once and act on a change: bypass and flush the
    /// cache while any sweep runs, flush it again when the last one ends. A
    /// storage error keeps the previous state. Returns whether one is running.
    pub async fn refresh_sweep_state(&self) -> bool {
        let active = match self.sweep_announced().await {
            Ok(active) => active,
            Err(e) => {
                tracing::debug!(error = %e, "could not look for the garbage-collection marker");
                return self.sweep_active();
            }
        };
        // The collector removes index entries while its marker exists:
        // forget what was seen present before saying the sweep ended, so
        // nothing seen before or during the removals is trusted after it.
        if self.sweeping.load(Ordering::SeqCst) != active {
            self.index.forget();
        }
        if self.sweeping.swap(active, Ordering::SeqCst) != active {
            if let Some(cache) = &self.cache {
                cache.set_bypass(active).await;
            }
            self.manifests.set_bypass(active);
            if active {
                tracing::info!("garbage collection is sweeping: blob-descriptor and manifest caches bypassed, manifest references touched");
            } else {
                tracing::info!("garbage collection sweep ended");
            }
        }
        active
    }

    /// Manifest PUT during a sweep: rewrite the repository's link to every blob
    /// and child the manifest references, and to its subject (a kept
    /// referrer keeps it under `--delete-untagged`) — only those that exist —
    /// so the collector's last re-check sees them as referenced now.
    pub(crate) async fn touch_references(&self, name: &str, m: &Manifest) -> Result<()> {
        for d in &m.blobs {
            let link = layout::layer_link(name, d);
            if self.read_link(&link).await?.as_ref() == Some(d) {
                self.write_link(&link, d).await?;
            }
        }
        for d in m.manifests.iter().chain(&m.subject) {
            let link = layout::manifest_revision_link(name, d);
            if self.read_link(&link).await?.as_ref() == Some(d) {
                self.write_link(&link, d).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn announce_sweep(&self, t0: SystemTime) -> Result<()> {
        if self.sweep_announced().await? {
            tracing::warn!("a garbage-collection marker already exists: another garbage-collect is running, or one was killed (its marker under gc/sweeps/ stays until deleted)");
        }
        let marker = sweep_marker(&uuid::Uuid::new_v4().to_string());
        let body = serde_json::json!({
            "started": humantime::format_rfc3339(t0).to_string(),
            "pid": std::process::id(),
        });
        // Recorded before it is written: an interrupt during the write must
        // still find it to remove (`end_sweep`), or servers would bypass
        // their cache until someone deletes it by hand.
        *self.own_sweep_marker.lock().unwrap() = Some(marker.clone());
        self.driver
            .put_content(&marker, Bytes::from(body.to_string()))
            .await?;
        Ok(())
    }

    /// Does any collector's marker exist?
    async fn sweep_announced(&self) -> Result<bool> {
        match self.driver.list(&sweeps_dir()).await {
            Ok(markers) => Ok(!markers.is_empty()),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove this registry's own sweep marker (the run ends; or it was
    /// interrupted, see `berth garbage-collect` on SIGINT/SIGTERM); other
    /// collectors' markers stay.
    pub async fn end_sweep(&self) -> Result<()> {
        let marker = self.own_sweep_marker.lock().unwrap().take();
        match marker {
            Some(m) => self.delete_if_exists(&m).await,
            None => Ok(()),
        }
    }
}

/// A server's watcher: look for markers every [`POLL_EVERY`] until aborted.
pub fn spawn_sweep_watch(registry: Registry) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            registry.refresh_sweep_state().await;
        }
    })
}
