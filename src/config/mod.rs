//! Configuration in one place: embedded defaults, then a YAML file in CNCF
//! distribution's `config.yml` schema, then `REGISTRY_*` environment overrides
//! (`REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY` → `storage.filesystem.rootdirectory`),
//! merged by figment.
//!
//! Every section is strict: an unknown key is an error naming it (exit code
//! 2). distribution's keys that Berth does not act on are in [`compat`]:
//! accepted with a warning, or refused while their absence would change what
//! the registry does. A `REGISTRY_*` variable that names no key is skipped
//! with a warning unless it is in a section Berth reads (then it is an
//! error, as a typo in the file would be); see [`env_selectors`].

pub mod auth;
pub mod azure;
pub mod compat;
pub mod connections;
mod env_selectors;
pub mod listing;
pub mod notifications;
pub mod observability;
pub mod proxy;
pub mod redis;
pub mod s3;
mod storage;
pub mod tls;
pub mod token_server;
pub mod ui;

use std::{collections::BTreeMap, path::Path};

use figment::{
    providers::{Env, Format, Serialized, Yaml},
    Figment, Metadata,
};
use serde::{Deserialize, Serialize};

use compat::Tolerated;

pub use storage::{
    FilesystemConfig, ManifestCacheConfig, S3Config, StorageConfig, StorageDriverConfig,
    DEFAULT_MANIFEST_CACHE_SIZE,
};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
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
    /// distribution's pull-through cache (see [`proxy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<proxy::ProxyConfig>,
    // distribution's sections Berth does not act on (see `compat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middleware: Option<compat::MiddlewareSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<compat::ValidationSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Tolerated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglevel: Tolerated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting: Option<compat::ReportingSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<compat::CompatibilitySection>,
    /// One line each, for the log at start: distribution keys accepted but not
    /// acted on, and `REGISTRY_*` variables that name no key. Filled by [`Config::load`].
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Page caps of the listing endpoints (see [`listing`]).
    #[serde(default)]
    pub catalog: listing::CatalogConfig,
    #[serde(default)]
    pub tags: listing::TagsConfig,
    #[serde(default)]
    pub referrers: listing::ReferrersConfig,
    /// The web UI at `<http.prefix>/ui/` (Berth's own section).
    #[serde(default)]
    pub ui: ui::UiConfig,
}

/// The top-level keys, as `REGISTRY_<KEY>_...` variables start (`token_server`
/// holds its own `_`). A unit test keeps it equal to [`Config`]'s fields.
pub(crate) const TOP_LEVEL_KEYS: [&str; 21] = [
    "version",
    "log",
    "storage",
    "http",
    "auth",
    "token_server",
    "notifications",
    "redis",
    "tracing",
    "health",
    "proxy",
    "middleware",
    "validation",
    "policy",
    "loglevel",
    "reporting",
    "compatibility",
    "catalog",
    "tags",
    "referrers",
    "ui",
];

/// A string, number or bool, as its string form.
fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(v) => Some(v.to_string()),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug (distribution's), or trace; any case.
    #[serde(deserialize_with = "log_level")]
    pub level: String,
    /// "text" or "json" ("logstash" is taken as json)
    pub formatter: String,
    /// Static fields added to every log line.
    pub fields: BTreeMap<String, String>,
    pub accesslog: AccessLogConfig,
    // distribution's, not acted on (see `compat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reportcaller: Tolerated,
}

/// The levels `log.level` takes: distribution's four, and trace.
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// `log.level`, lower-cased as distribution takes it; empty means info. A
/// typo is an error: tracing would read it as a module name and log nothing.
fn log_level<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let given = Option::<String>::deserialize(d)?.unwrap_or_default();
    let level = given.trim().to_ascii_lowercase();
    if level.is_empty() {
        return Ok("info".into());
    }
    if LOG_LEVELS.contains(&level.as_str()) {
        Ok(level)
    } else {
        Err(serde::de::Error::custom(format!(
            "{given:?} is not one of {}",
            LOG_LEVELS.join(", ")
        )))
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            formatter: "text".into(),
            fields: BTreeMap::new(),
            accesslog: AccessLogConfig::default(),
            hooks: None,
            reportcaller: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogConfig {
    pub disabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port`; Go-style `:5000` means every interface.
    pub addr: String,
    // distribution's, not acted on or refused (see `compat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Tolerated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2: Option<compat::Http2Section>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2c: Option<compat::H2cSection>,
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
    /// Peers (IPs or CIDRs) whose X-Forwarded-For names the client that
    /// failed logins are counted against (`/v2/` Basic auth and the token
    /// server). Empty: the TCP peer is the client.
    #[serde(deserialize_with = "tls::one_or_many")]
    pub trustedproxies: Vec<String>,
    /// Password checks (bcrypt) that may wait for a CPU, beyond the one per
    /// core running; more get 429 with Retry-After.
    pub loginqueue: usize,
    /// distribution's `http.draintimeout`: after SIGTERM, how long in-flight
    /// requests may take before their connections are closed.
    #[serde(with = "connections::duration")]
    pub draintimeout: std::time::Duration,
    /// Open connections per listener before new ones are refused; unset:
    /// derived from the file-descriptor limit (see [`connections`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxconnections: Option<usize>,
    /// `http.timeouts`: header read, idle keep-alive and stall timeouts.
    pub timeouts: connections::TimeoutsConfig,
}

/// distribution's `http.debug`: `addr` (empty: no debug listener) and
/// `prometheus.{enabled,path}`. Keep it on a loopback or internal address:
/// nothing on it is authenticated.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
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
#[serde(default, deny_unknown_fields)]
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
            net: None,
            http2: None,
            h2c: None,
            prefix: String::new(),
            host: String::new(),
            secret: String::new(),
            relativeurls: false,
            headers: BTreeMap::new(),
            tls: None,
            debug: None,
            trustedproxies: Vec::new(),
            loginqueue: auth::DEFAULT_LOGIN_QUEUE,
            draintimeout: connections::DEFAULT_DRAIN,
            maxconnections: None,
            timeouts: connections::TimeoutsConfig::default(),
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

/// Whether a value came from a `REGISTRY_*` variable.
fn from_env(metadata: Option<&Metadata>) -> bool {
    metadata.is_some_and(|m| m.name.contains("environment"))
}

/// Whether the value at `path` (a dotted path of maps) was set by a
/// `REGISTRY_*` variable.
fn set_from_env(fig: &Figment, path: &str) -> bool {
    from_env(fig.find_metadata(path))
}

/// The `REGISTRY_*` variable for a dotted key path.
fn env_name(path: &str) -> String {
    format!("REGISTRY_{}", path.replace('.', "_").to_uppercase())
}

/// A key path as YAML shows it: dotted, list elements as `[i]`.
fn yaml_path(segments: &[String]) -> String {
    let mut key = String::new();
    for segment in segments {
        if !key.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

/// `key: problem (in where)`, with the key as the user wrote it: a dotted
/// YAML path, or the `REGISTRY_*` variable name.
fn describe(e: &figment::Error) -> String {
    let env = from_env(e.metadata.as_ref());
    let key = if env {
        format!("REGISTRY_{}", e.path.join("_").to_uppercase())
    } else {
        yaml_path(&e.path)
    };
    let problem = match &e.kind {
        figment::error::Kind::UnknownField(_, known) => {
            let section = match e.path.len() {
                0 | 1 => "the top level".to_string(),
                n => yaml_path(&e.path[..n - 1]),
            };
            if known.is_empty() {
                format!("unknown key ({section} takes none)")
            } else {
                format!("unknown key ({section} takes: {})", known.join(", "))
            }
        }
        kind => kind.to_string(),
    };
    // The file when there is one; a value merged in code (defaults, or the
    // file and a REGISTRY_AUTH / REGISTRY_STORAGE choice) has no place to show.
    let source = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        _ if env => "the environment".to_string(),
        Some(figment::Source::File(path)) => path.display().to_string(),
        _ => "configuration".into(),
    };
    format!("{key}: {problem} (in {source})")
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
        let (skipped, env_warnings) = env_selectors::unread_variables();
        let env = Env::prefixed("REGISTRY_")
            .ignore(&env_selectors::SELECTOR_KEYS)
            .filter(move |key| !skipped.iter().any(|s| s.as_str() == key))
            .map(|key| env_selectors::key_path(key.as_str()).into());
        let mut cfg = Self::extract(fig.merge(env))?;
        cfg.warnings.splice(0..0, env_warnings);
        Ok(cfg)
    }

    /// Load from YAML text alone (no environment), for tests and tools.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Yaml::string(text)),
        )
    }

    fn extract(fig: Figment) -> Result<Config, ConfigError> {
        let mut cfg: Config = fig.extract().map_err(|e| {
            let msg = e
                .into_iter()
                .map(|e| describe(&e))
                .collect::<Vec<_>>()
                .join("; ");
            ConfigError(msg.replace('\n', " "))
        })?;
        let findings = compat::findings(&fig);
        if let Some(f) = findings.iter().find(|f| f.action == compat::Action::Refuse) {
            return Err(ConfigError(format!("{}: {}", f.key, f.why)));
        }
        cfg.storage.cache.resolve_aliases();
        cfg.validate()?;
        cfg.warnings = findings
            .iter()
            .map(|f| format!("{}: accepted, not acted on: {}", f.key, f.why))
            .collect();
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
        self.storage
            .cache
            .manifests
            .settings()
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
        if let Some(p) = &self.proxy {
            p.settings().map_err(ConfigError)?;
        }
        self.tracing.validate().map_err(ConfigError)?;
        self.ui.validate().map_err(ConfigError)?;
        // The UI asks an outside realm from the server: never at a URL a
        // request's Host header made up.
        let outside_autoredirect = self.token_server.is_none()
            && self
                .auth
                .as_ref()
                .and_then(|a| a.token.as_ref())
                .is_some_and(|t| t.autoredirect);
        if self.ui.enabled && outside_autoredirect && self.http.host.is_empty() {
            return Err(ConfigError(
                "ui: with auth.token.autoredirect and no token_server, the web UI needs \
                 http.host (the URL clients use) to find the token server; set it, or \
                 ui.enabled: false"
                    .into(),
            ));
        }
        self.health.validate().map_err(ConfigError)?;
        if !self.http.prefix.is_empty() && !self.http.prefix.starts_with('/') {
            return Err(ConfigError("http.prefix: must start with '/'".into()));
        }
        connections::validate_max_connections(self.http.maxconnections).map_err(ConfigError)?;
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

    /// The environment filter's list of sections is the struct's.
    #[test]
    fn top_level_keys_are_configs_fields() {
        use figment::{
            providers::{Format, Yaml},
            Figment,
        };
        let e = Figment::from(Yaml::string("typo: 1"))
            .extract::<Config>()
            .unwrap_err();
        let figment::error::Kind::UnknownField(_, known) = e.kind else {
            panic!("{e}");
        };
        let mut known = known.to_vec();
        let mut listed = super::TOP_LEVEL_KEYS.to_vec();
        known.sort();
        listed.sort();
        assert_eq!(known, listed);
    }

    #[test]
    fn log_levels_as_distribution_takes_them() {
        for (given, level) in [
            ("debug", "debug"),
            ("WARN", "warn"),
            ("Info", "info"),
            ("error", "error"),
            ("trace", "trace"),
            ("''", "info"),
        ] {
            let cfg = Config::from_yaml(&format!("log:\n  level: {given}\n")).unwrap();
            assert_eq!(cfg.log.level, level);
        }
        for typo in ["inf", "warning", "verbose", "debug,foo=trace"] {
            let e = Config::from_yaml(&format!("log:\n  level: {typo}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("configuration error: log.level: "), "{e}");
            assert!(e.contains("error, warn, info, debug, trace"), "{e}");
        }
    }

    /// The configs the repository ships parse strictly, with nothing refused
    /// or warned. (Full `config check` of the Helm and kustomize renderings is
    /// in tests/deploy.rs; these also name files that exist only in a pod.)
    #[test]
    fn shipped_configs_are_strictly_valid() {
        use figment::{
            providers::{Format, Yaml},
            Figment,
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![
            root.join("deploy/docker/config.yml"),
            root.join("deploy/compose/token/config.yml"),
        ];
        for dir in ["k8s/base", "k8s/overlays/s3", "k8s/overlays/azure"] {
            files.push(root.join(dir).join("config.yml"));
        }
        for f in std::fs::read_dir(root.join("tests/fixtures/token-server")).unwrap() {
            files.push(f.unwrap().path());
        }
        for file in files {
            let fig = Figment::from(Yaml::file_exact(&file));
            if let Err(e) = fig.extract::<Config>() {
                panic!("{}: {}", file.display(), super::describe(&e));
            }
            let findings: Vec<_> = super::compat::findings(&fig)
                .into_iter()
                .map(|f| f.key)
                .collect();
            assert!(findings.is_empty(), "{}: {findings:?}", file.display());
        }
    }

    #[test]
    fn layerinfo_stands_for_blobdescriptor() {
        let cfg = Config::from_yaml("storage:\n  cache:\n    layerinfo: inmemory\n").unwrap();
        assert_eq!(cfg.storage.cache.blobdescriptor, "inmemory");
        let e = Config::from_yaml("storage:\n  cache:\n    layerinfo: redis\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a redis: section"), "{e}");
    }

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
