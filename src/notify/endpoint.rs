//! One webhook endpoint: a bounded queue that request handlers push into
//! without waiting, and one worker that POSTs its events in order.
//!
//! Delivery: the worker sends the oldest pending event; a 2xx/3xx answer
//! (distribution's rule) removes it, anything else is retried after
//! `backoff`. After `threshold` consecutive failures the endpoint is "down":
//! logged once, `berth_notifications_endpoint_up` 0, and still retried every
//! `backoff` until an attempt succeeds (logged once too). An event leaves the
//! queue only when delivered or dropped: a full queue drops its oldest event —
//! possibly the one being retried — so a dead endpoint costs at most
//! `queuesizelimit` events of memory, and when it comes back it gets the most
//! recent ones. (distribution retries before `threshold` without waiting and
//! never drops: its queue grows without limit.)

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{event::EVENTS_MEDIA_TYPE, metrics::EndpointMetrics};
use crate::config::notifications::EndpointSettings;

/// The queue one endpoint's worker drains.
pub struct Queue {
    pub settings: EndpointSettings,
    state: Mutex<QueueState>,
    wake: Notify,
    metrics: EndpointMetrics,
}

#[derive(Default)]
struct QueueState {
    /// (sequence number, envelope body): the number tells the worker whether
    /// the event it just sent is still the one at the front.
    items: VecDeque<(u64, Bytes)>,
    next_seq: u64,
    /// "queue full" was logged and the queue has not emptied since.
    full_logged: bool,
}

impl Queue {
    pub fn new(settings: EndpointSettings, metrics: EndpointMetrics) -> Queue {
        Queue {
            settings,
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            metrics,
        }
    }

    /// Never waits on the network: a lock held for a few pointer moves.
    pub fn push(&self, body: Bytes) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.items.len() >= self.settings.queue_size {
            s.items.pop_front();
            if !s.full_logged {
                s.full_logged = true;
                tracing::warn!(
                    endpoint = %self.settings.name,
                    queuesizelimit = self.settings.queue_size,
                    "notifications: queue full, dropping the oldest events \
                     (counted in berth_notifications_dropped_total; logged once until it drains)"
                );
            }
            self.metrics.dropped.inc();
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        s.items.push_back((seq, body));
        self.metrics.pending.set(s.items.len() as i64);
        self.metrics.queued.inc();
        drop(s);
        self.wake.notify_one();
    }

    fn front(&self) -> Option<(u64, Bytes)> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.items.front().cloned()
    }

    /// The event `seq` was delivered: remove it unless the bound already did.
    fn delivered(&self, seq: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.items.front().is_some_and(|(front, _)| *front == seq) {
            s.items.pop_front();
        }
        if s.items.is_empty() {
            s.full_logged = false;
        }
        self.metrics.pending.set(s.items.len() as i64);
    }

    pub fn pending(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .items
            .len()
    }

    /// Count what shutdown leaves undelivered.
    pub fn abandon(&self) -> usize {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = s.items.len();
        s.items.clear();
        self.metrics.dropped.inc_by(n as u64);
        self.metrics.pending.set(0);
        n
    }
}

/// Deliver `queue`'s events until `closing` is cancelled and the queue is
/// empty (the caller bounds how long it waits for that).
pub async fn run(
    queue: std::sync::Arc<Queue>,
    client: reqwest::Client,
    closing: CancellationToken,
) {
    let s = &queue.settings;
    let mut failures: u32 = 0;
    let mut down = false;
    loop {
        let Some((seq, body)) = queue.front() else {
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = closing.cancelled() => return,
            }
        };
        match attempt(&client, s, body, &queue.metrics).await {
            Ok(()) => {
                queue.delivered(seq);
                failures = 0;
                if down {
                    down = false;
                    queue.metrics.up.set(1);
                    tracing::info!(endpoint = %s.name, url = %s.url_for_logs, "notifications: endpoint is accepting events again");
                }
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                if failures >= s.threshold && !down {
                    down = true;
                    tracing::warn!(
                        endpoint = %s.name,
                        url = %s.url_for_logs,
                        failures,
                        error = %why,
                        backoff = ?s.backoff,
                        "notifications: endpoint is down; retrying every backoff (logged once until it recovers)"
                    );
                    // After the line: whoever sees the gauge can find the log.
                    queue.metrics.up.set(0);
                } else {
                    tracing::debug!(endpoint = %s.name, error = %why, "notifications: attempt failed");
                }
                // Not interrupted by `closing`: the caller's drain deadline bounds it.
                tokio::time::sleep(s.backoff).await;
            }
        }
    }
}

/// One POST of one envelope.
async fn attempt(
    client: &reqwest::Client,
    s: &EndpointSettings,
    body: Bytes,
    metrics: &EndpointMetrics,
) -> Result<(), String> {
    let mut req = client
        .post(&s.url)
        .timeout(s.timeout)
        .header(http::header::CONTENT_TYPE, EVENTS_MEDIA_TYPE);
    for (name, value) in &s.headers {
        req = req.header(name, value);
    }
    match req.body(body).send().await {
        Ok(resp) => {
            let code = resp.status();
            metrics.status(code);
            if code.is_success() || code.is_redirection() {
                metrics.successes.inc();
                Ok(())
            } else {
                metrics.failures.inc();
                Err(format!("response status {code}"))
            }
        }
        Err(e) => {
            metrics.errors.inc();
            Err(error_chain(&e))
        }
    }
}

/// reqwest's message plus its causes ("error sending request" alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// The client every endpoint shares (connections pooled per host).
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("notifications: HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::metrics::NotifyMetrics;

    fn settings(queue_size: usize) -> EndpointSettings {
        EndpointSettings {
            name: "t".into(),
            url: "http://127.0.0.1:9/".into(),
            url_for_logs: "http://127.0.0.1:9/".into(),
            headers: vec![],
            timeout: Duration::from_secs(1),
            threshold: 3,
            backoff: Duration::from_secs(1),
            ignored_media_types: vec![],
            ignored_actions: vec![],
            queue_size,
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let m = NotifyMetrics::new();
        let q = Queue::new(settings(2), m.endpoint("t"));
        for body in ["a", "b", "c"] {
            q.push(Bytes::from(body));
        }
        assert_eq!(q.pending(), 2);
        let (seq, body) = q.front().unwrap();
        assert_eq!(body, "b");
        assert_eq!(m.endpoint("t").dropped.get(), 1);
        assert_eq!(m.endpoint("t").pending.get(), 2);
        // "b" is dropped while being sent: its delivery must not remove "c".
        q.push(Bytes::from("d"));
        q.delivered(seq);
        assert_eq!(q.front().unwrap().1, "c");
    }
}
