//! Events: webhook notifications (distribution's `notifications:`) and the
//! audit log.
//!
//! A handler that completed a push, pull or delete makes one call on
//! [`Notifier`] (the methods mirror distribution's listener: `blob_pushed`,
//! `manifest_pulled`, `tag_deleted`, …). That call writes the audit line
//! (pushes, mounts, deletes), builds the event once, serialises its envelope
//! once, and hands the bytes to every endpoint that does not ignore the
//! event's action or media type. Handlers never wait on delivery: each
//! endpoint has a bounded queue and its own worker ([`endpoint`]).

pub mod audit;
pub mod endpoint;
pub mod event;
pub mod metrics;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    registry::{digest::Digest, manifests::StoredManifest},
};
use endpoint::Queue;
use event::{Action, Envelope, Event, RequestContext, Source, Target, BLOB_MEDIA_TYPE};
use metrics::NotifyMetrics;

pub struct Notifier {
    queues: Vec<Arc<Queue>>,
    source: Source,
    include_references: bool,
    metrics: NotifyMetrics,
    closing: CancellationToken,
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Notifier {
    /// No endpoints: audit lines only.
    pub fn audit_only() -> Notifier {
        Notifier {
            queues: Vec::new(),
            source: Source::default(),
            include_references: false,
            metrics: NotifyMetrics::new(),
            closing: CancellationToken::new(),
            workers: Default::default(),
        }
    }

    /// The configured endpoints, each with its worker running (needs a tokio
    /// runtime).
    pub fn start(cfg: &Config) -> Result<Notifier, String> {
        let settings = cfg.notifications.active_endpoints()?;
        let mut n = Notifier::audit_only();
        n.include_references = cfg.notifications.events.includereferences;
        n.source = Source {
            addr: format!("{}:{}", hostname(), port_of(&cfg.http.bind_addr())),
            instance_id: uuid::Uuid::new_v4().to_string(),
        };
        if settings.is_empty() {
            return Ok(n);
        }
        let client = endpoint::client()?;
        let mut workers = Vec::new();
        for s in settings {
            tracing::info!(
                endpoint = %s.name,
                url = %s.url_for_logs,
                timeout = ?s.timeout,
                threshold = s.threshold,
                backoff = ?s.backoff,
                queuesizelimit = s.queue_size,
                "notifications: configuring endpoint"
            );
            let queue = Arc::new(Queue::new(s.clone(), n.metrics.endpoint(&s.name)));
            workers.push(tokio::spawn(endpoint::run(
                queue.clone(),
                client.clone(),
                n.closing.clone(),
            )));
            n.queues.push(queue);
        }
        n.workers = std::sync::Mutex::new(workers);
        Ok(n)
    }

    pub fn metrics(&self) -> &NotifyMetrics {
        &self.metrics
    }

    /// Stop taking new work and deliver what is queued, for at most `wait`;
    /// what is left is dropped (counted, logged).
    pub async fn shutdown(&self, wait: Duration) {
        self.closing.cancel();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        if workers.is_empty() {
            return;
        }
        let aborts: Vec<_> = workers.iter().map(|w| w.abort_handle()).collect();
        if tokio::time::timeout(wait, futures::future::join_all(workers))
            .await
            .is_err()
        {
            aborts.iter().for_each(|a| a.abort());
        }
        for q in &self.queues {
            let lost = q.abandon();
            if lost > 0 {
                tracing::warn!(endpoint = %q.settings.name, lost, "notifications: undelivered at shutdown");
            }
        }
    }

    /// Whether a request with this method can emit an event or audit line,
    /// i.e. whether `api` must build its [`RequestContext`]. HEAD and PATCH
    /// never do, and a GET only when an endpoint takes pulls: blob HEADs and
    /// pulls are the hot path and skip the context's dozen allocations.
    pub fn needs_context(&self, method: &http::Method) -> bool {
        match *method {
            http::Method::HEAD | http::Method::PATCH => false,
            http::Method::GET => self.wants_pulls(),
            _ => true,
        }
    }

    fn wants_pulls(&self) -> bool {
        self.queues
            .iter()
            .any(|q| !q.settings.ignored_actions.iter().any(|a| a == "pull"))
    }

    fn publish(&self, ctx: &RequestContext, action: Action, target: Target) {
        if action != Action::Pull {
            audit::record(action, &target, ctx);
        }
        let media_type = target.media_type.as_deref().unwrap_or("");
        let takers: Vec<&Arc<Queue>> = self
            .queues
            .iter()
            .filter(|q| {
                let s = &q.settings;
                !s.ignored_actions.iter().any(|a| a == action.as_str())
                    && !s.ignored_media_types.iter().any(|m| m == media_type)
            })
            .collect();
        if takers.is_empty() {
            return;
        }
        let event = Event::new(action, target, ctx, &self.source);
        let body = match serde_json::to_vec_pretty(&Envelope {
            events: std::slice::from_ref(&event),
        }) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "notifications: event not serialisable");
                return;
            }
        };
        for q in takers {
            q.push(body.clone());
        }
    }

    fn blob_target(ctx: &RequestContext, repo: &str, digest: &Digest, size: u64) -> Target {
        Target {
            media_type: Some(BLOB_MEDIA_TYPE.into()),
            digest: Some(digest.to_string()),
            size: Some(size),
            length: Some(size),
            repository: repo.into(),
            url: Some(format!("{}/v2/{repo}/blobs/{digest}", ctx.url_base)),
            ..Default::default()
        }
    }

    fn manifest_target(
        &self,
        ctx: &RequestContext,
        repo: &str,
        digest: &Digest,
        media_type: &str,
        body: &[u8],
        tag: Option<&str>,
    ) -> Target {
        Target {
            media_type: Some(media_type.into()),
            digest: Some(digest.to_string()),
            size: Some(body.len() as u64),
            length: Some(body.len() as u64),
            repository: repo.into(),
            url: Some(format!("{}/v2/{repo}/manifests/{digest}", ctx.url_base)),
            tag: tag.map(str::to_string),
            references: self.include_references.then(|| event::references(body)),
            ..Default::default()
        }
    }

    /// An upload completed (PUT, or a monolithic POST).
    pub fn blob_pushed(&self, ctx: &RequestContext, repo: &str, digest: &Digest, size: u64) {
        self.publish(
            ctx,
            Action::Push,
            Self::blob_target(ctx, repo, digest, size),
        );
    }

    /// A cross-repository mount linked the blob (distribution's `mount`).
    pub fn blob_mounted(
        &self,
        ctx: &RequestContext,
        repo: &str,
        digest: &Digest,
        size: u64,
        from: &str,
    ) {
        let mut target = Self::blob_target(ctx, repo, digest, size);
        target.from_repository = Some(from.into());
        self.publish(ctx, Action::Mount, target);
    }

    /// A blob GET was answered (HEAD is an existence check, not a pull).
    /// `cache`: for a mirrored repository, `hit` or `miss` (see [`Target`]).
    pub fn blob_pulled(
        &self,
        ctx: &RequestContext,
        repo: &str,
        digest: &Digest,
        size: u64,
        cache: Option<&str>,
    ) {
        if self.wants_pulls() {
            let target = Target {
                cache: cache.map(str::to_string),
                ..Self::blob_target(ctx, repo, digest, size)
            };
            self.publish(ctx, Action::Pull, target);
        }
    }

    pub fn blob_deleted(&self, ctx: &RequestContext, repo: &str, digest: &Digest) {
        let target = Target {
            digest: Some(digest.to_string()),
            repository: repo.into(),
            ..Default::default()
        };
        self.publish(ctx, Action::Delete, target);
    }

    pub fn manifest_pushed(
        &self,
        ctx: &RequestContext,
        repo: &str,
        digest: &Digest,
        media_type: &str,
        body: &[u8],
        tag: Option<&str>,
    ) {
        let target = self.manifest_target(ctx, repo, digest, media_type, body, tag);
        self.publish(ctx, Action::Push, target);
    }

    /// A manifest GET was answered (not HEAD).
    pub fn manifest_pulled(
        &self,
        ctx: &RequestContext,
        repo: &str,
        m: &StoredManifest,
        tag: Option<&str>,
    ) {
        if self.wants_pulls() {
            let target = Target {
                cache: m.cache.map(str::to_string),
                ..self.manifest_target(ctx, repo, &m.digest, &m.media_type, &m.body, tag)
            };
            self.publish(ctx, Action::Pull, target);
        }
    }

    /// Deleted by digest: the revision, then each tag that pointed at it
    /// (`untagged`), as distribution reports them.
    pub fn manifest_deleted(
        &self,
        ctx: &RequestContext,
        repo: &str,
        digest: &Digest,
        untagged: &[String],
    ) {
        let target = Target {
            digest: Some(digest.to_string()),
            repository: repo.into(),
            ..Default::default()
        };
        self.publish(ctx, Action::Delete, target);
        for tag in untagged {
            self.tag_deleted(ctx, repo, tag);
        }
    }

    /// Deleted by tag: an untag, as distribution reports it (no digest).
    pub fn tag_deleted(&self, ctx: &RequestContext, repo: &str, tag: &str) {
        let target = Target {
            repository: repo.into(),
            tag: Some(tag.into()),
            ..Default::default()
        };
        self.publish(ctx, Action::Delete, target);
    }
}

/// This machine's name, for `source.addr` (as distribution's `os.Hostname()`).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success (POSIX truncates silently; we stop at the first NUL).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or("", |(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::notifications::EndpointSettings;

    fn with_endpoint(ignored_actions: &[&str]) -> Notifier {
        let mut n = Notifier::audit_only();
        let s = EndpointSettings {
            name: "e".into(),
            url: "http://127.0.0.1:9/".into(),
            url_for_logs: "http://127.0.0.1:9/".into(),
            headers: vec![],
            timeout: Duration::from_secs(1),
            threshold: 1,
            backoff: Duration::from_secs(1),
            ignored_media_types: vec![],
            ignored_actions: ignored_actions.iter().map(|a| a.to_string()).collect(),
            queue_size: 1,
        };
        n.queues
            .push(Arc::new(Queue::new(s, n.metrics.endpoint("e"))));
        n
    }

    #[test]
    fn only_requests_that_can_emit_build_a_context() {
        use http::Method;
        let audit_only = Notifier::audit_only();
        for m in [Method::HEAD, Method::GET, Method::PATCH] {
            assert!(!audit_only.needs_context(&m), "{m}");
        }
        // Pushes, mounts and deletes are audited even without endpoints.
        for m in [Method::PUT, Method::POST, Method::DELETE] {
            assert!(audit_only.needs_context(&m), "{m}");
        }
        assert!(with_endpoint(&[]).needs_context(&Method::GET));
        assert!(!with_endpoint(&[]).needs_context(&Method::HEAD));
        assert!(!with_endpoint(&["pull"]).needs_context(&Method::GET));
    }
}
