//! `notifications:` — distribution's webhook endpoints, with its keys:
//!
//! ```yaml
//! notifications:
//!   events:
//!     includereferences: true      # manifest events list the blobs/manifests they reference
//!   endpoints:
//!     - name: alistener
//!       disabled: false
//!       url: https://listener.example.com/event
//!       headers: {Authorization: [Bearer <token>]}
//!       timeout: 1s                  # per delivery attempt (default 1s)
//!       threshold: 10                # consecutive failures before the endpoint is "down" (default 10)
//!       backoff: 1s                  # wait between attempts (default 1s)
//!       ignoredmediatypes: [application/octet-stream]
//!       ignore: {mediatypes: [...], actions: [pull]}
//!       queuesizelimit: 1000         # Berth's (GitLab's fork's name): pending events kept per endpoint
//! ```
//!
//! Durations are Go's: `500ms`, `1s`, `1m30s`; a bare number is nanoseconds,
//! as Go's YAML decoding of a `time.Duration` reads it.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer, Serialize};

/// The actions an event can carry (distribution's).
pub const ACTIONS: [&str; 4] = ["push", "pull", "mount", "delete"];

/// Pending events kept per endpoint when `queuesizelimit` is not set.
pub const DEFAULT_QUEUE_SIZE: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    pub events: EventsConfig,
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Manifest events carry `target.references` (config, layers, child manifests).
    pub includereferences: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    pub name: String,
    pub disabled: bool,
    pub url: String,
    /// Sent with every request: `{Name: [value, ...]}`.
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(deserialize_with = "go_duration")]
    pub timeout: String,
    pub threshold: i64,
    #[serde(deserialize_with = "go_duration")]
    pub backoff: String,
    pub ignoredmediatypes: Vec<String>,
    pub ignore: IgnoreConfig,
    /// Berth's bound on pending events (distribution's queue is unbounded).
    /// Full: the oldest pending event is dropped. 0 means the default.
    pub queuesizelimit: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct IgnoreConfig {
    pub mediatypes: Vec<String>,
    pub actions: Vec<String>,
}

/// An endpoint's settings with distribution's defaults applied and checked.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub name: String,
    pub url: String,
    /// `url` for log lines: a password in it (sent as Basic auth) shows as `***`.
    pub url_for_logs: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub threshold: u32,
    pub backoff: Duration,
    /// `ignoredmediatypes` and `ignore.mediatypes` together, as distribution merges them.
    pub ignored_media_types: Vec<String>,
    pub ignored_actions: Vec<String>,
    pub queue_size: usize,
}

/// A string, or a number read as nanoseconds (Go's `time.Duration` in YAML).
fn go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => format!("{n}ns"),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "expected a duration such as \"500ms\", got {other}"
            )))
        }
    })
}

fn duration(key: &str, value: &str, default: Duration) -> Result<Duration, String> {
    let value = value.trim();
    if value.is_empty() || value == "0" || value == "0ns" {
        return Ok(default);
    }
    humantime::parse_duration(value).map_err(|e| format!("{key}: {value:?}: {e}"))
}

/// `url` with its password, if any, replaced by `***`.
fn without_password(mut url: url::Url) -> String {
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

impl NotificationsConfig {
    /// The endpoints that are not `disabled`, checked, with defaults applied.
    pub fn active_endpoints(&self) -> Result<Vec<EndpointSettings>, String> {
        let mut out: Vec<EndpointSettings> = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = format!("notifications.endpoints[{i}]");
            if e.name.is_empty() {
                return Err(format!("{key}.name: required"));
            }
            if e.disabled {
                continue;
            }
            let url = url::Url::parse(&e.url).map_err(|err| format!("{key}.url: {err}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("{key}.url: must be http or https"));
            }
            if out.iter().any(|o| o.name == e.name) {
                return Err(format!("{key}.name: {:?} is used twice", e.name));
            }
            let mut headers = Vec::new();
            for (name, values) in &e.headers {
                if http::HeaderName::try_from(name.as_str()).is_err() {
                    return Err(format!("{key}.headers: invalid header name {name:?}"));
                }
                for v in values {
                    if http::HeaderValue::try_from(v.as_str()).is_err() {
                        return Err(format!("{key}.headers.{name}: invalid value"));
                    }
                    headers.push((name.clone(), v.clone()));
                }
            }
            for a in &e.ignore.actions {
                if !ACTIONS.contains(&a.as_str()) {
                    return Err(format!(
                        "{key}.ignore.actions: {a:?} is not one of {}",
                        ACTIONS.join(", ")
                    ));
                }
            }
            if e.threshold < 0 {
                return Err(format!("{key}.threshold: must not be negative"));
            }
            let second = Duration::from_secs(1);
            out.push(EndpointSettings {
                name: e.name.clone(),
                url: e.url.clone(),
                url_for_logs: without_password(url),
                headers,
                timeout: duration(&format!("{key}.timeout"), &e.timeout, second)?,
                // distribution: a zero threshold means 10.
                threshold: if e.threshold == 0 {
                    10
                } else {
                    e.threshold.min(u32::MAX as i64) as u32
                },
                backoff: duration(&format!("{key}.backoff"), &e.backoff, second)?,
                ignored_media_types: e
                    .ignore
                    .mediatypes
                    .iter()
                    .chain(&e.ignoredmediatypes)
                    .cloned()
                    .collect(),
                ignored_actions: e.ignore.actions.clone(),
                queue_size: if e.queuesizelimit == 0 {
                    DEFAULT_QUEUE_SIZE
                } else {
                    e.queuesizelimit
                },
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "storage:\n  inmemory: {}\n";

    #[test]
    fn distributions_example_with_defaults() {
        let cfg = Config::from_yaml(&format!(
            "{BASE}notifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: alistener\n      url: https://mylistener.example.com/event\n      headers:\n        Authorization: [Bearer tok]\n      timeout: 500ms\n      threshold: 5\n      backoff: 1s\n    - name: off\n      disabled: true\n      url: ''\n    - name: plain\n      url: http://127.0.0.1:9/\n      timeout: 250000000\n      ignoredmediatypes: [application/octet-stream]\n      ignore:\n        mediatypes: [a/b]\n        actions: [pull]\n      queuesizelimit: 3\n"
        ))
        .unwrap();
        assert!(cfg.notifications.events.includereferences);
        let eps = cfg.notifications.active_endpoints().unwrap();
        assert_eq!(eps.len(), 2, "the disabled one is left out");
        assert_eq!(eps[0].timeout.as_millis(), 500);
        assert_eq!(eps[0].threshold, 5);
        assert_eq!(
            eps[0].headers,
            vec![("Authorization".into(), "Bearer tok".into())]
        );
        assert_eq!(eps[0].queue_size, super::DEFAULT_QUEUE_SIZE);
        assert_eq!(
            eps[1].timeout.as_millis(),
            250,
            "a bare number is nanoseconds"
        );
        assert_eq!(eps[1].threshold, 10, "distribution's default");
        assert_eq!(eps[1].backoff.as_secs(), 1);
        assert_eq!(
            eps[1].ignored_media_types,
            ["a/b", "application/octet-stream"]
        );
        assert_eq!(eps[1].ignored_actions, ["pull"]);
        assert_eq!(eps[1].queue_size, 3);
    }

    #[test]
    fn mistakes_name_the_key() {
        for (endpoint, key) in [
            ("url: http://x/", "notifications.endpoints[0].name"),
            (
                "name: a\n      url: ftp://x/",
                "notifications.endpoints[0].url",
            ),
            (
                "name: a\n      url: http://x/\n      timeout: soon",
                "notifications.endpoints[0].timeout",
            ),
            (
                "name: a\n      url: http://x/\n      ignore:\n        actions: [pul]",
                "notifications.endpoints[0].ignore.actions",
            ),
        ] {
            let e = Config::from_yaml(&format!(
                "{BASE}notifications:\n  endpoints:\n    - {endpoint}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
