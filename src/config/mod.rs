//! Configuration in one place: embedded defaults, then a YAML file in CNCF
//! distribution's `config.yml` schema, then `REGISTRY_*` environment overrides
//! (`REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY` → `storage.filesystem.rootdirectory`),
//! merged by figment.

pub mod auth;
pub mod azure;
mod env_selectors;
pub mod listing;
pub mod notifications;
pub mod observability;
pub mod redis;
pub mod s3;
mod storage;
pub mod tls;
pub mod token_server;

use std::{collections::BTreeMap, path::Path};

use figment::{
    providers::{Env, Format, Serialized, Yaml},
    Figment,
};
use serde::{Deserialize, Serialize};

pub use storage::{FilesystemConfig, S3Config, StorageConfig, StorageDriverConfig};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Config {
    /// distribution's schema version ("0.1"); accepted and otherwise ignored.
    /// YAML reads distribution's unquoted `version: 0.1` as a number, so any
    /// scalar is taken.
    #[serde(default, deserialize_with = "scalar_string")]
    pub version: Option<String>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<auth::AuthConfig>,
    /// Berth's built-in token server (docker's token spec), served under `http.prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_server: Option<token_server::TokenServerConfig>,
    /// Webhook endpoints (distribution's `notifications:`), see [`notifications`].
    #[serde(default)]
    pub notifications: notifications::NotificationsConfig,
    /// Shared by the blob-descriptor cache (`storage.cache.blobdescriptor: redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<redis::RedisConfig>,
    /// OpenTelemetry traces (Berth's own section; OTEL_* env fills the rest).
    #[serde(default)]
    pub tracing: observability::TracingConfig,
    /// distribution's periodic health checks.
    #[serde(default)]
    pub health: observability::HealthConfig,
    /// Page caps of the listing endpoints (see [`listing`]).
    #[serde(default)]
    pub catalog: listing::CatalogConfig,
    #[serde(default)]
    pub tags: listing::TagsConfig,
    #[serde(default)]
    pub referrers: listing::ReferrersConfig,
}

/// A string, number or bool, as its string form.
fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(v) => Some(v.to_string()),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// error, warn, info, debug, trace
    pub level: String,
    /// "text" or "json" ("logstash" is taken as json)
    pub formatter: String,
    /// Static fields added to every log line.
    pub fields: BTreeMap<String, String>,
    pub accesslog: AccessLogConfig,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            formatter: "text".into(),
            fields: BTreeMap::new(),
            accesslog: AccessLogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AccessLogConfig {
    pub disabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// `host:port`; Go-style `:5000` means every interface.
    pub addr: String,
    /// Path prefix the registry is served under (e.g. `/registry`).
    pub prefix: String,
    /// External base URL (`https://registry.example.com`) for Location headers.
    pub host: String,
    /// Signs upload state; every replica of a cluster must share it.
    pub secret: String,
    /// Emit relative Location URLs instead of absolute ones.
    pub relativeurls: bool,
    /// Extra headers added to every response.
    pub headers: BTreeMap<String, Vec<String>>,
    /// `http.tls`: HTTPS (and mutual TLS, Let's Encrypt); see [`tls`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<tls::TlsConfig>,
    /// `http.debug`: a second, plain-HTTP listener for operators (metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<DebugConfig>,
}

/// distribution's `http.debug`: `addr` (empty: no debug listener) and
/// `prometheus.{enabled,path}`. Keep it on a loopback or internal address:
/// nothing on it is authenticated.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DebugConfig {
    pub addr: String,
    pub prometheus: PrometheusConfig,
}

impl DebugConfig {
    /// The socket address to bind, accepting Go's `:5001` form.
    pub fn bind_addr(&self) -> String {
        go_addr(&self.addr)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    /// On unless turned off, once `http.debug.addr` is set.
    pub enabled: bool,
    pub path: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            enabled: true,
            path: "/metrics".into(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:5000".into(),
            prefix: String::new(),
            host: String::new(),
            secret: String::new(),
            relativeurls: false,
            headers: BTreeMap::new(),
            tls: None,
            debug: None,
        }
    }
}

impl HttpConfig {
    /// The socket address to bind, accepting distribution's `:5000` form.
    pub fn bind_addr(&self) -> String {
        go_addr(&self.addr)
    }

    /// `http.debug` when it asks for Prometheus metrics on an address.
    pub fn metrics(&self) -> Option<&DebugConfig> {
        self.debug
            .as_ref()
            .filter(|d| !d.addr.is_empty() && d.prometheus.enabled)
    }
}

/// Go's `:port` (every interface) as a bindable address.
fn go_addr(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    }
}

/// A configuration error, rendered on one line naming the offending key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// `key: problem (where)`, with the key as the user wrote it: a dotted YAML
/// path, or the `REGISTRY_*` variable name.
fn describe(e: &figment::Error) -> String {
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let key = if from_env {
        format!("REGISTRY_{}", e.path.join("_").to_uppercase())
    } else {
        e.path.join(".")
    };
    let source = match &e.metadata {
        Some(m) => m
            .source
            .as_ref()
            .map_or(m.name.to_string(), |s| s.to_string()),
        None => "configuration".into(),
    };
    format!("{key}: {} (in {source})", e.kind)
}

impl Config {
    /// Load defaults, then `file` (if any), then `REGISTRY_*` env vars.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // figment treats a missing file as empty; a config named but unreadable is an error.
            std::fs::File::open(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            fig = fig.merge(Yaml::file_exact(path));
        }
        let fig = env_selectors::apply(fig)?;
        let env = Env::prefixed("REGISTRY_")
            .ignore(&env_selectors::SELECTOR_KEYS)
            .map(|key| env_selectors::key_path(key.as_str()).into());
        Self::extract(fig.merge(env))
    }

    /// Load from YAML text alone (no environment), for tests and tools.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Yaml::string(text)),
        )
    }

    fn extract(fig: Figment) -> Result<Config, ConfigError> {
        let cfg: Config = fig.extract().map_err(|e| {
            let msg = e
                .into_iter()
                .map(|e| describe(&e))
                .collect::<Vec<_>>()
                .join("; ");
            ConfigError(msg.replace('\n', " "))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.storage.driver().map_err(ConfigError)?;
        self.notifications.active_endpoints().map_err(ConfigError)?;
        if let Some(a) = &self.auth {
            a.validate().map_err(ConfigError)?;
        }
        if let Some(t) = &self.token_server {
            t.validate().map_err(ConfigError)?;
        }
        self.storage
            .maintenance
            .uploadpurging
            .durations()
            .map_err(ConfigError)?;
        match self.storage.cache.blobdescriptor.as_str() {
            "" | "inmemory" => {}
            "redis" => match &self.redis {
                Some(r) => r.validate().map_err(ConfigError)?,
                None => {
                    return Err(ConfigError(
                        "storage.cache.blobdescriptor: redis needs a redis: section".into(),
                    ))
                }
            },
            other => {
                return Err(ConfigError(format!(
                    "storage.cache.blobdescriptor: {other:?} is not one of inmemory, redis"
                )))
            }
        }
        if !matches!(self.log.formatter.as_str(), "text" | "json" | "logstash") {
            return Err(ConfigError(format!(
                "log.formatter: {:?} is not one of text, json, logstash",
                self.log.formatter
            )));
        }
        self.tracing.validate().map_err(ConfigError)?;
        self.health.validate().map_err(ConfigError)?;
        if !self.http.prefix.is_empty() && !self.http.prefix.starts_with('/') {
            return Err(ConfigError("http.prefix: must start with '/'".into()));
        }
        if let Some(tls) = &self.http.tls {
            tls.validate().map_err(ConfigError)?;
        }
        if let Some(d) = &self.http.debug {
            if !d.prometheus.path.starts_with('/') {
                return Err(ConfigError(
                    "http.debug.prometheus.path: must start with '/'".into(),
                ));
            }
            if !d.addr.is_empty() && d.bind_addr() == self.http.bind_addr() {
                return Err(ConfigError(
                    "http.debug.addr: must differ from http.addr".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn http_debug_as_distribution_writes_it() {
        let base = "storage:\n  inmemory: {}\nhttp:\n  addr: 127.0.0.1:5000\n";
        let cfg = Config::from_yaml(base).unwrap();
        assert!(cfg.http.metrics().is_none(), "off without http.debug");

        let cfg = Config::from_yaml(&format!("{base}  debug:\n    addr: :5001\n")).unwrap();
        let d = cfg.http.metrics().expect("on once debug.addr is set");
        assert_eq!(d.bind_addr(), "0.0.0.0:5001");
        assert_eq!(d.prometheus.path, "/metrics");

        let cfg = Config::from_yaml(&format!(
            "{base}  debug:\n    addr: 127.0.0.1:5001\n    prometheus:\n      enabled: true\n      path: /m\n"
        ))
        .unwrap();
        assert_eq!(cfg.http.metrics().unwrap().prometheus.path, "/m");

        let off = format!(
            "{base}  debug:\n    addr: 127.0.0.1:5001\n    prometheus:\n      enabled: false\n"
        );
        assert!(Config::from_yaml(&off).unwrap().http.metrics().is_none());
        let no_addr = format!("{base}  debug:\n    prometheus:\n      enabled: true\n");
        assert!(Config::from_yaml(&no_addr)
            .unwrap()
            .http
            .metrics()
            .is_none());

        let bad_path = format!(
            "{base}  debug:\n    addr: 127.0.0.1:5001\n    prometheus:\n      path: metrics\n"
        );
        let e = Config::from_yaml(&bad_path).unwrap_err().to_string();
        assert!(e.contains("http.debug.prometheus.path"), "{e}");
        let same = format!("{base}  debug:\n    addr: 127.0.0.1:5000\n");
        let e = Config::from_yaml(&same).unwrap_err().to_string();
        assert!(e.contains("http.debug.addr"), "{e}");
    }
}
