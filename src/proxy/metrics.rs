//! The pull-through cache's counters, per upstream (its URL):
//! `registry_proxy_requests_total{upstream, kind, result}` (a manifest or
//! blob asked of a mirrored repository: `hit` from the cache, `miss`
//! fetched, `stale` served from the cache while the upstream failed),
//! `registry_proxy_upstream_requests_total{upstream, status}` (every request
//! Berth sent upstream, by answer: `200`, `401`, `429`, … or `error` for no
//! answer) and `registry_proxy_upstream_bytes_total{upstream}` (bodies
//! received).

use prometheus::{core::Collector, IntCounterVec, Opts};

#[derive(Clone)]
pub struct ProxyMetrics {
    requests: IntCounterVec,
    upstream_requests: IntCounterVec,
    upstream_bytes: IntCounterVec,
}

/// What a request to a mirrored repository was.
#[derive(Clone, Copy)]
pub enum Kind {
    Manifest,
    Blob,
}

#[derive(Clone, Copy)]
pub enum Outcome {
    Hit,
    Miss,
    Stale,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .namespace("registry")
                .subsystem("proxy")
        };
        ProxyMetrics {
            requests: IntCounterVec::new(
                opts(
                    "requests_total",
                    "Manifests and blobs asked of mirrored repositories, by result",
                ),
                &["upstream", "kind", "result"],
            )
            .expect("valid metric"),
            upstream_requests: IntCounterVec::new(
                opts(
                    "upstream_requests_total",
                    "Requests sent upstream, by answer",
                ),
                &["upstream", "status"],
            )
            .expect("valid metric"),
            upstream_bytes: IntCounterVec::new(
                opts("upstream_bytes_total", "Body bytes received from upstream"),
                &["upstream"],
            )
            .expect("valid metric"),
        }
    }
}

impl ProxyMetrics {
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.upstream_requests.clone()),
            Box::new(self.upstream_bytes.clone()),
        ]
    }

    pub fn served(&self, upstream: &str, kind: Kind, outcome: Outcome) {
        let kind = match kind {
            Kind::Manifest => "manifest",
            Kind::Blob => "blob",
        };
        let result = match outcome {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
        };
        self.requests
            .with_label_values(&[upstream, kind, result])
            .inc();
    }

    /// An upstream answer (`status`), or none (`None`).
    pub fn upstream_request(&self, upstream: &str, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.upstream_requests
            .with_label_values(&[upstream, &status])
            .inc();
    }

    pub fn upstream_bytes(&self, upstream: &str, n: u64) {
        self.upstream_bytes.with_label_values(&[upstream]).inc_by(n);
    }
}
