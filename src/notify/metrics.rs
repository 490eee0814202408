//! Notification metrics under distribution's names (its go-metrics
//! namespace `registry`, subsystem `notifications`), plus two of Berth's own.
//! They exist whether or not `http.debug` serves them, so delivery code never
//! branches on it.

use prometheus::{core::Collector, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

#[derive(Clone)]
pub struct NotifyMetrics {
    /// `type`: Events (queued), Successes, Failures (a non-2xx/3xx answer),
    /// Errors (no answer: connect error, timeout), per attempt as distribution.
    events: IntCounterVec,
    /// distribution's name for the pending gauge (go-metrics adds `_total`).
    pending: IntGaugeVec,
    /// `code` as Go prints it: `200 OK`.
    status: IntCounterVec,
    dropped: IntCounterVec,
    up: IntGaugeVec,
}

/// One endpoint's children, resolved once.
#[derive(Clone)]
pub struct EndpointMetrics {
    family: NotifyMetrics,
    endpoint: String,
    pub queued: IntCounter,
    pub successes: IntCounter,
    pub failures: IntCounter,
    pub errors: IntCounter,
    pub pending: IntGauge,
    pub dropped: IntCounter,
    pub up: IntGauge,
}

impl NotifyMetrics {
    pub fn new() -> NotifyMetrics {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .namespace("registry")
                .subsystem("notifications")
        };
        NotifyMetrics {
            events: IntCounterVec::new(
                opts("events_total", "The number of total events"),
                &["type", "endpoint"],
            )
            .expect("valid metric"),
            pending: IntGaugeVec::new(
                opts("pending_total", "The gauge of pending events in queue"),
                &["endpoint"],
            )
            .expect("valid metric"),
            status: IntCounterVec::new(
                opts("status_total", "The number of status code"),
                &["code", "endpoint"],
            )
            .expect("valid metric"),
            dropped: IntCounterVec::new(
                Opts::new(
                    "berth_notifications_dropped_total",
                    "Events dropped undelivered: the endpoint's queue was full \
                     (queuesizelimit, oldest dropped) or the registry stopped.",
                ),
                &["endpoint"],
            )
            .expect("valid metric"),
            up: IntGaugeVec::new(
                Opts::new(
                    "berth_notifications_endpoint_up",
                    "1 while the endpoint accepts events; 0 after `threshold` \
                     consecutive failed attempts, until one succeeds.",
                ),
                &["endpoint"],
            )
            .expect("valid metric"),
        }
    }

    /// What `telemetry::metrics` registers for `/metrics`.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.events.clone()),
            Box::new(self.pending.clone()),
            Box::new(self.status.clone()),
            Box::new(self.dropped.clone()),
            Box::new(self.up.clone()),
        ]
    }

    pub fn endpoint(&self, name: &str) -> EndpointMetrics {
        let events = |t: &str| self.events.with_label_values(&[t, name]);
        let m = EndpointMetrics {
            family: self.clone(),
            endpoint: name.to_string(),
            queued: events("Events"),
            successes: events("Successes"),
            failures: events("Failures"),
            errors: events("Errors"),
            pending: self.pending.with_label_values(&[name]),
            dropped: self.dropped.with_label_values(&[name]),
            up: self.up.with_label_values(&[name]),
        };
        m.up.set(1);
        m
    }
}

impl Default for NotifyMetrics {
    fn default() -> Self {
        NotifyMetrics::new()
    }
}

impl EndpointMetrics {
    /// Count an HTTP answer under distribution's `code` label.
    pub fn status(&self, code: http::StatusCode) {
        let label = format!(
            "{} {}",
            code.as_u16(),
            code.canonical_reason().unwrap_or("")
        );
        self.family
            .status
            .with_label_values(&[label.trim_end(), &self.endpoint])
            .inc();
    }
}
