//! `tracing:` (Berth's own: OpenTelemetry traces over OTLP/HTTP) and `health:`
//! (distribution's periodic checks: storagedriver, file, http, tcp).

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

/// OpenTelemetry traces. Off unless `enabled` or an OTLP endpoint is given in
/// the standard environment (`OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). What this section leaves empty is
/// taken from the OTEL_* variables by the OpenTelemetry SDK itself.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    pub enabled: bool,
    /// OTLP/HTTP base URL (`http://collector:4318`); `/v1/traces` is appended
    /// unless the URL already ends with it.
    pub endpoint: String,
    /// `service.name` (default: `OTEL_SERVICE_NAME`, else "berth").
    pub servicename: String,
    /// Fraction of new traces sampled, 0.0–1.0 (default: `OTEL_TRACES_SAMPLER`,
    /// else all). A sampled parent (`traceparent`) is always followed.
    pub samplingratio: Option<f64>,
    /// Extra headers on every export (e.g. an API key).
    pub headers: BTreeMap<String, String>,
    /// Per-export timeout, e.g. "10s" (default: the SDK's).
    pub timeout: String,
}

impl TracingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.samplingratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("tracing.samplingratio: {r} is not within 0.0–1.0"));
            }
        }
        let url_like =
            self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://");
        if !self.endpoint.is_empty() && !url_like {
            return Err(format!(
                "tracing.endpoint: {:?} must be an http:// or https:// URL",
                self.endpoint
            ));
        }
        self.timeout()?;
        Ok(())
    }

    pub fn timeout(&self) -> Result<Option<Duration>, String> {
        optional_duration("tracing.timeout", &self.timeout)
    }
}

/// distribution's `health:` section. Each check runs every `interval` and is
/// failing after `threshold` consecutive failures; the first success clears it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    pub storagedriver: StorageDriverCheck,
    /// Unhealthy while the file exists (an operator's drain switch).
    pub file: Vec<FileCheck>,
    /// Unhealthy unless `uri` answers `statuscode` (default 200).
    pub http: Vec<HttpCheck>,
    /// Unhealthy unless a TCP connection to `addr` opens.
    pub tcp: Vec<TcpCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageDriverCheck {
    pub enabled: bool,
    pub interval: String,
    pub threshold: u32,
}

impl Default for StorageDriverCheck {
    fn default() -> Self {
        // distribution's defaults.
        StorageDriverCheck {
            enabled: false,
            interval: "10s".into(),
            threshold: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FileCheck {
    pub file: String,
    pub interval: String,
    /// In distribution's schema but not used there either; warned (see `compat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: super::compat::Tolerated,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HttpCheck {
    pub uri: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub statuscode: Option<u16>,
    pub timeout: String,
    pub interval: String,
    pub threshold: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TcpCheck {
    pub addr: String,
    pub timeout: String,
    pub interval: String,
    pub threshold: u32,
}

/// distribution's default interval and timeout for every check.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Interval, threshold (at least 1) and timeout of one check, validated.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub interval: Duration,
    pub threshold: u32,
    pub timeout: Duration,
}

impl Schedule {
    fn parse(key: &str, interval: &str, threshold: u32, timeout: &str) -> Result<Self, String> {
        let interval =
            optional_duration(&format!("{key}.interval"), interval)?.unwrap_or(DEFAULT_INTERVAL);
        if interval.is_zero() {
            return Err(format!("{key}.interval: must be positive"));
        }
        Ok(Schedule {
            interval,
            threshold: threshold.max(1),
            timeout: optional_duration(&format!("{key}.timeout"), timeout)?
                .unwrap_or(DEFAULT_TIMEOUT),
        })
    }
}

impl HealthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.storagedriver.enabled {
            self.storagedriver.schedule()?;
        }
        for (i, c) in self.file.iter().enumerate() {
            if c.file.is_empty() {
                return Err(format!("health.file[{i}].file: required"));
            }
            c.schedule(i)?;
        }
        for (i, c) in self.http.iter().enumerate() {
            if !(c.uri.starts_with("http://") || c.uri.starts_with("https://")) {
                return Err(format!(
                    "health.http[{i}].uri: {:?} is not an http(s) URL",
                    c.uri
                ));
            }
            c.schedule(i)?;
        }
        for (i, c) in self.tcp.iter().enumerate() {
            if c.addr.is_empty() {
                return Err(format!("health.tcp[{i}].addr: required"));
            }
            c.schedule(i)?;
        }
        Ok(())
    }
}

impl StorageDriverCheck {
    pub fn schedule(&self) -> Result<Schedule, String> {
        Schedule::parse("health.storagedriver", &self.interval, self.threshold, "")
    }
}

impl FileCheck {
    pub fn schedule(&self, i: usize) -> Result<Schedule, String> {
        // distribution fails a file check at once: no threshold.
        Schedule::parse(&format!("health.file[{i}]"), &self.interval, 1, "")
    }
}

impl HttpCheck {
    pub fn schedule(&self, i: usize) -> Result<Schedule, String> {
        Schedule::parse(
            &format!("health.http[{i}]"),
            &self.interval,
            self.threshold,
            &self.timeout,
        )
    }
}

impl TcpCheck {
    pub fn schedule(&self, i: usize) -> Result<Schedule, String> {
        Schedule::parse(
            &format!("health.tcp[{i}]"),
            &self.interval,
            self.threshold,
            &self.timeout,
        )
    }
}

fn optional_duration(key: &str, value: &str) -> Result<Option<Duration>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    humantime::parse_duration(value)
        .map(Some)
        .map_err(|e| format!("{key}: {value:?}: {e}"))
}
