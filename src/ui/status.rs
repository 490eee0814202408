//! The status page: how this replica runs and how it is doing.

use std::sync::Arc;

use askama::Template;
use axum::{extract::State, http::request::Parts, response::Response};

use super::{
    pages::{render, Chrome},
    Ui,
};
use crate::{health::Health, registry::Registry};

/// What the status page shows that never changes.
pub struct StaticStatus {
    driver: &'static str,
    cache: String,
    auth: &'static str,
    mirrors: Vec<String>,
}

impl StaticStatus {
    pub fn new(cfg: &crate::config::Config, registry: &Registry) -> StaticStatus {
        // As `server::build_registry` picks them.
        let blobs = match cfg.storage.cache.blobdescriptor.as_str() {
            "redis" => "blob descriptors in Redis (shared by replicas)",
            "inmemory" => "blob descriptors in memory (a single replica)",
            _ => "blob links in memory for storage.cache.manifests.tagttl",
        };
        let manifests = match cfg.redis {
            Some(_) => "manifests in memory and in Redis",
            None => "manifests in memory",
        };
        let cache = format!("{blobs}; {manifests}");
        let auth = match (&cfg.auth, &cfg.token_server) {
            (None, _) => "none (everyone may pull, push and delete)",
            (Some(a), _) if a.htpasswd.is_some() => "htpasswd",
            (Some(_), Some(_)) => "bearer tokens from Berth's token server",
            (Some(_), None) => "bearer tokens from an outside token server",
        };
        let mirrors = cfg
            .proxy
            .as_ref()
            .and_then(|p| p.settings().ok().flatten())
            .map(|s| {
                s.mirrors
                    .iter()
                    .map(|m| {
                        let remote = without_credentials(&m.remote);
                        match m.prefix.as_str() {
                            "" => remote,
                            p => format!("{remote} (as {p}/)"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        StaticStatus {
            driver: registry.driver_name(),
            cache,
            auth,
            mirrors,
        }
    }
}

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    chrome: Chrome,
    version: &'static str,
    replica: String,
    driver: &'static str,
    storage_ok: bool,
    storage_health: String,
    cache: String,
    auth: &'static str,
    deletes: &'static str,
    mirrors: Vec<String>,
    checks: Vec<(String, String)>,
}

pub async fn status(State(ui): State<Arc<Ui>>, parts: Parts) -> Response {
    let visit = ui.visit(&parts);
    // How the registry is run (host name, mirrors, access control) is for
    // accounts, not for anonymous visitors, wherever there are accounts.
    if ui.gate.has_login() && visit.viewer.account.is_none() {
        return visit.to_login();
    }
    let health = parts.extensions.get::<Arc<Health>>().cloned();
    // The periodic check's last result when there is one (as
    // `/health/storage` answers), else asked of storage now.
    let (storage_ok, storage_health) = match health.as_ref().filter(|h| h.storage_checked()) {
        Some(h) => match h.is_healthy() {
            true => (true, "ok (periodic check)".to_string()),
            false => (false, "failing (periodic check)".to_string()),
        },
        None => match ui.registry.storage_health().await {
            Ok(()) => (true, "ok".to_string()),
            // The reason (a backend's text) goes to the log, as for
            // `/health/storage`.
            Err(e) => {
                tracing::warn!(cause = ?e.cause, "ui: storage health check failed");
                (false, "failing".to_string())
            }
        },
    };
    let checks = health
        .map(|h| {
            let failing = h.public_failures();
            h.check_names()
                .into_iter()
                .map(|name| {
                    let state = failing
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or("ok".to_string(), |(_, why)| format!("failing: {why}"));
                    (name, state)
                })
                .collect()
        })
        .unwrap_or_default();
    let deletes = match (ui.delete_enabled, ui.registry.check_writable().is_ok()) {
        (_, false) => "off (read-only maintenance mode)",
        (true, true) => "on (storage.delete.enabled)",
        (false, true) => "off (storage.delete.enabled is false)",
    };
    visit.finish(render(&StatusPage {
        chrome: visit.chrome("Status"),
        version: env!("CARGO_PKG_VERSION"),
        replica: hostname(),
        driver: ui.status.driver,
        storage_ok,
        storage_health,
        cache: ui.status.cache.clone(),
        auth: ui.status.auth,
        deletes,
        mirrors: ui.status.mirrors.clone(),
        checks,
    }))
}

/// A URL as it may be shown: without a user name or password in it.
fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
