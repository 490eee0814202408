//! The listeners' connection limits: `http.timeouts.*`, `http.maxconnections`
//! (Berth's own keys) and `http.draintimeout` (distribution's).
//!
//! ```yaml
//! http:
//!   draintimeout: 20s       # SIGTERM: in-flight requests get this long, then are cut
//!   maxconnections: 10000   # per replica; default derived from the file-descriptor limit
//!   timeouts:
//!     readheader: 30s       # from a request's first byte (or the connect) to its last header
//!     idle: 75s             # a keep-alive connection with no request in flight
//!     stall: 60s            # a request body (or a response write) that moves no byte
//! ```
//!
//! Durations are written with a unit (`500ms`, `30s`, `2m`); `0` turns a
//! timeout off. A bare number other than 0 is refused: Go would read it as
//! nanoseconds, which is never what was meant.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `http.timeouts.readheader` when not set: long for any real client (even
/// over a slow link a request head is one packet), short for a slowloris.
pub const DEFAULT_READ_HEADER: Duration = Duration::from_secs(30);
/// `http.timeouts.idle` when not set: above the 60 s idle timeout of AWS
/// load balancers and ingress-nginx's upstream keep-alive, so the proxy,
/// not Berth, closes a pooled connection (the other order races a request).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(75);
/// `http.timeouts.stall` when not set: a slow link still moves bytes every
/// few seconds; a minute of nothing is a client that has gone.
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);
/// `http.draintimeout` when not set: inside Kubernetes' default 30 s
/// termination grace period, with room for the webhook queue's own drain.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(20);

/// `http.timeouts`. Zero turns a timeout off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// From the connect (or a request's first byte on a kept-alive HTTP/1
    /// connection) until its headers are complete.
    #[serde(with = "duration")]
    pub readheader: Duration,
    /// How long a connection may have no request in flight.
    #[serde(with = "duration")]
    pub idle: Duration,
    /// How long a request body being read may deliver no byte, and a response
    /// may wait on a client that reads nothing.
    #[serde(with = "duration")]
    pub stall: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            readheader: DEFAULT_READ_HEADER,
            idle: DEFAULT_IDLE,
            stall: DEFAULT_STALL,
        }
    }
}

/// A duration as configuration text: `30s`, `1m 15s`, `0`.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected a duration such as \"30s\", got {other}"
                )))
            }
        };
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// `0` or a number with a unit.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if text.parse::<f64>() == Ok(0.0) {
            return Ok(Duration::ZERO);
        }
        if text.parse::<f64>().is_ok() {
            return Err(format!(
                "{text:?} has no unit: write e.g. \"{text}s\" (0 turns it off)"
            ));
        }
        humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration such as \"30s\": {e}"))
    }
}

/// `maxconnections` if set: at least one.
pub fn validate_max_connections(max: Option<usize>) -> Result<(), String> {
    match max {
        Some(0) => Err(
            "http.maxconnections: must be at least 1 (leave it out for the default, \
             derived from the file-descriptor limit)"
                .into(),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::duration::parse;
    use crate::config::Config;

    #[test]
    fn durations_need_a_unit_except_zero() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m 15s"), Ok(Duration::from_secs(75)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert!(parse("60").unwrap_err().contains("no unit"));
        assert!(parse("soon").is_err());
    }

    #[test]
    fn keys_and_defaults_from_yaml() {
        let base = "storage:\n  inmemory: {}\nhttp:\n  addr: 127.0.0.1:5000\n";
        let cfg = Config::from_yaml(base).unwrap();
        assert_eq!(cfg.http.draintimeout, super::DEFAULT_DRAIN);
        assert_eq!(cfg.http.maxconnections, None);
        assert_eq!(cfg.http.timeouts.readheader, super::DEFAULT_READ_HEADER);
        assert_eq!(cfg.http.timeouts.idle, super::DEFAULT_IDLE);
        assert_eq!(cfg.http.timeouts.stall, super::DEFAULT_STALL);

        let cfg = Config::from_yaml(&format!(
            "{base}  draintimeout: 60s\n  maxconnections: 500\n  timeouts:\n    readheader: 5s\n    idle: 0\n    stall: 2m\n"
        ))
        .unwrap();
        assert_eq!(cfg.http.draintimeout, Duration::from_secs(60));
        assert_eq!(cfg.http.maxconnections, Some(500));
        assert_eq!(cfg.http.timeouts.readheader, Duration::from_secs(5));
        assert_eq!(cfg.http.timeouts.idle, Duration::ZERO);
        assert_eq!(cfg.http.timeouts.stall, Duration::from_secs(120));

        for (yaml, key) in [
            ("  draintimeout: 60\n", "http.draintimeout"),
            ("  timeouts:\n    idle: forever\n", "http.timeouts.idle"),
            ("  timeouts:\n    headers: 5s\n", "http.timeouts"),
            ("  maxconnections: 0\n", "http.maxconnections"),
            ("  maxconnections: -3\n", "http.maxconnections"),
        ] {
            let e = Config::from_yaml(&format!("{base}{yaml}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }
}
