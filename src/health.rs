//! distribution's periodic health checks (`health:`): storage driver, file,
//! HTTP and TCP. Each runs on its own interval in the background; a check
//! turns failing after `threshold` consecutive failures and recovers on its
//! first success. Requests only read the last results (an atomic and a
//! lock-free-ish read), so a probe storm never becomes a storage storm.
//!
//! While any check fails, the API answers 503 (see `api::health`), as
//! distribution does, so a load balancer probing `/v2/` or
//! `/health/storage` takes the replica out; `GET /` stays 200 so liveness
//! probes do not restart a replica whose storage is down.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::task::JoinHandle;

use crate::{
    config::observability::{HealthConfig, Schedule},
    registry::Registry,
};

/// One check's name (distribution's: `storagedriver_<driver>`, the file
/// path, the URI, the address) and its current failure.
struct CheckState {
    name: String,
    /// `Some(reason)` while failing.
    failure: Mutex<Option<String>>,
    /// What clients read instead of the reason, when the reason is not
    /// theirs to read (the storage check's is a backend's text: bucket
    /// names, paths, SDK dumps). The log and `/debug/health` keep it whole.
    public_reason: Option<&'static str>,
}

/// The results every request consults.
pub struct Health {
    checks: Vec<Arc<CheckState>>,
    /// How many checks are failing (the hot path reads only this). Changed
    /// under the changing check's lock, on its transitions only, so it is
    /// exact: recomputing it from every check's state could store a stale
    /// "healthy" over another task's fresh failure.
    failing: AtomicUsize,
    /// Whether the storage driver is checked periodically (then
    /// `/health/storage` answers from here rather than asking storage).
    storage_checked: bool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        self.failing.load(Ordering::Relaxed) == 0
    }

    pub fn storage_checked(&self) -> bool {
        self.storage_checked
    }

    /// Failing checks as (name, reason), in configuration order: for the
    /// operator (the debug listener).
    pub fn failures(&self) -> Vec<(String, String)> {
        self.failures_shown(false)
    }

    /// Every check's name, in configuration order.
    pub fn check_names(&self) -> Vec<String> {
        self.checks.iter().map(|c| c.name.clone()).collect()
    }

    /// [`Health::failures`] as any client may read them: a reason that may
    /// carry a backend's text is replaced by a generic one.
    pub fn public_failures(&self) -> Vec<(String, String)> {
        self.failures_shown(true)
    }

    fn failures_shown(&self, public: bool) -> Vec<(String, String)> {
        self.checks
            .iter()
            .filter_map(|c| {
                let f = c.failure.lock().unwrap_or_else(|e| e.into_inner());
                let shown = |reason: &String| match c.public_reason {
                    Some(generic) if public => generic.to_string(),
                    _ => reason.clone(),
                };
                f.as_ref().map(|reason| (c.name.clone(), shown(reason)))
            })
            .collect()
    }

    /// Set one check's state (`Some(reason)`: failing) and the count the
    /// requests read; whether the check was failing before.
    fn set(&self, check: &CheckState, failure: Option<String>) -> bool {
        let mut f = check.failure.lock().unwrap_or_else(|e| e.into_inner());
        let was_failing = f.is_some();
        match (was_failing, failure.is_some()) {
            (false, true) => {
                self.failing.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.failing.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        *f = failure;
        was_failing
    }

    /// Stop the background checks.
    pub fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

type Probe = Box<dyn Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Start the configured checks; `None` when there are none. Each check runs
/// once before this returns and that round counts toward its `threshold`:
/// with `threshold: 1` a replica whose storage is down starts unready; with
/// more it starts ready, as distribution's (whose first check waits a whole
/// interval) does, and turns unready `threshold - 1` intervals later.
pub async fn start(cfg: &HealthConfig, registry: &Registry) -> Result<Option<Arc<Health>>, String> {
    // (name, schedule, probe, what clients read instead of its failure)
    let mut planned: Vec<(String, Schedule, Probe, Option<&'static str>)> = Vec::new();
    if cfg.storagedriver.enabled {
        let registry = registry.clone();
        planned.push((
            format!("storagedriver_{}", registry.driver_name()),
            cfg.storagedriver.schedule()?,
            Box::new(move || {
                let registry = registry.clone();
                Box::pin(async move { registry.storage_health().await.map_err(|e| e.to_string()) })
            }),
            Some("storage unavailable"),
        ));
    }
    for (i, c) in cfg.file.iter().enumerate() {
        let path = c.file.clone();
        planned.push((
            c.file.clone(),
            c.schedule(i)?,
            Box::new(move || {
                let path = path.clone();
                Box::pin(async move {
                    match tokio::fs::try_exists(&path).await {
                        Ok(false) => Ok(()),
                        Ok(true) => Err("file exists".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                })
            }),
            None,
        ));
    }
    for (i, c) in cfg.http.iter().enumerate() {
        let schedule = c.schedule(i)?;
        let client = reqwest::Client::builder()
            .timeout(schedule.timeout)
            .build()
            .map_err(|e| format!("health.http[{i}]: {e}"))?;
        let (uri, headers) = (c.uri.clone(), c.headers.clone());
        let want = c.statuscode.unwrap_or(200);
        planned.push((
            without_password(&c.uri),
            schedule,
            Box::new(move || {
                let mut req = client.get(&uri);
                for (k, vs) in &headers {
                    for v in vs {
                        req = req.header(k, v);
                    }
                }
                Box::pin(async move {
                    let got = req.send().await.map_err(|e| e.to_string())?.status();
                    if got.as_u16() == want {
                        Ok(())
                    } else {
                        Err(format!(
                            "downstream service returned unexpected status: {got}"
                        ))
                    }
                })
            }),
            None,
        ));
    }
    for (i, c) in cfg.tcp.iter().enumerate() {
        let schedule = c.schedule(i)?;
        let addr = c.addr.clone();
        planned.push((
            c.addr.clone(),
            schedule,
            Box::new(move || {
                let addr = addr.clone();
                Box::pin(async move {
                    match tokio::time::timeout(
                        schedule.timeout,
                        tokio::net::TcpStream::connect(&addr),
                    )
                    .await
                    {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(format!("connection to {addr} failed: {e}")),
                        Err(_) => Err(format!("connection to {addr} timed out")),
                    }
                })
            }),
            None,
        ));
    }
    if planned.is_empty() {
        return Ok(None);
    }

    let health = Arc::new(Health {
        checks: planned
            .iter()
            .map(|(name, _, _, public_reason)| {
                Arc::new(CheckState {
                    name: name.clone(),
                    failure: Mutex::new(None),
                    public_reason: *public_reason,
                })
            })
            .collect(),
        failing: AtomicUsize::new(0),
        storage_checked: cfg.storagedriver.enabled,
        tasks: Mutex::new(Vec::new()),
    });
    let mut tasks = Vec::new();
    for ((_, schedule, probe, _), state) in planned.into_iter().zip(health.checks.clone()) {
        let mut runner = Runner {
            state,
            schedule,
            probe,
            consecutive: 0,
        };
        runner.once(&health).await;
        let health = health.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(runner.schedule.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate: already ran.
            loop {
                tick.tick().await;
                runner.once(&health).await;
            }
        }));
    }
    *health.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
    Ok(Some(health))
}

/// An http check's name: its URI, with a password in it shown as `***`
/// (the name reaches logs and the 503 body every client can read).
fn without_password(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => uri.to_string(),
    }
}

struct Runner {
    state: Arc<CheckState>,
    schedule: Schedule,
    probe: Probe,
    consecutive: u32,
}

/// The longest any one check may take before it counts as failed.
const HANG_LIMIT: Duration = Duration::from_secs(30);

impl Runner {
    async fn once(&mut self, health: &Health) {
        // A check that hangs counts as failed once its interval is up, or
        // after HANG_LIMIT with a long interval (a storage stat stuck for an
        // hour must not keep the replica "healthy" that long).
        let bound = self
            .schedule
            .interval
            .min(HANG_LIMIT)
            .max(Duration::from_secs(1));
        let result = match tokio::time::timeout(bound, (self.probe)()).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(bound)
            )),
        };
        match result {
            Ok(()) => {
                self.consecutive = 0;
                if health.set(&self.state, None) {
                    tracing::info!(check = %self.state.name, "health check recovered");
                }
            }
            Err(reason) => {
                self.consecutive += 1;
                if self.consecutive >= self.schedule.threshold {
                    let was_failing = health.set(&self.state, Some(reason.clone()));
                    if !was_failing {
                        tracing::warn!(check = %self.state.name, error = %reason, "health check failing");
                    }
                }
            }
        }
    }
}

/// `berth healthcheck`: ask the Berth this configuration describes (on
/// loopback when it listens on every interface, or at `addr`) for
/// `/health/storage`. For container HEALTHCHECKs, which have no curl: the
/// configuration says the port, prefix and whether it is TLS. Over TLS the
/// certificate is not verified: the probe checks that this replica answers,
/// and its certificate rarely names the loopback address.
pub async fn probe(cfg: &crate::config::Config, addr: Option<&str>) -> Result<(), String> {
    let tls = cfg.http.tls.as_ref().is_some_and(|t| t.enabled());
    let addr = addr.map_or_else(|| cfg.http.bind_addr(), str::to_string);
    let host = match addr.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(loopback, a.port()).to_string()
        }
        Ok(a) => a.to_string(),
        Err(_) => addr,
    };
    let scheme = if tls { "https" } else { "http" };
    let prefix = cfg.http.prefix.trim_end_matches('/');
    let url = format!("{scheme}://{host}{prefix}/health/storage");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| e.to_string())?;
    let r = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        Err(format!("{url}: {status} {}", body.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(checks: usize) -> Health {
        Health {
            checks: (0..checks)
                .map(|i| {
                    Arc::new(CheckState {
                        name: format!("c{i}"),
                        failure: Mutex::new(None),
                        public_reason: None,
                    })
                })
                .collect(),
            failing: AtomicUsize::new(0),
            storage_checked: false,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Two checks' tasks update at the same moment, one turning failing and
    /// one recovering: the summary must end up "unhealthy", whatever the
    /// interleaving. (A recomputation from a stale read could overwrite the
    /// other task's fresh "unhealthy" and hide the failure until the next
    /// round.) Many rounds, each started together by a barrier.
    #[test]
    fn concurrent_updates_never_hide_a_failing_check() {
        let rounds = 5_000;
        let h = Arc::new(health(2));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let failing = {
            let (h, barrier) = (h.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut wrong = 0;
                for _ in 0..rounds {
                    h.set(&h.checks[0], None);
                    barrier.wait();
                    h.set(&h.checks[0], Some("down".into()));
                    barrier.wait();
                    if h.is_healthy() {
                        wrong += 1;
                    }
                    barrier.wait();
                }
                wrong
            })
        };
        for _ in 0..rounds {
            h.set(&h.checks[1], Some("down".into()));
            barrier.wait();
            h.set(&h.checks[1], None);
            barrier.wait();
            barrier.wait();
        }
        let wrong = failing.join().unwrap();
        assert_eq!(wrong, 0, "rounds where a failing check read as healthy");
    }
}
