//! distribution keys Berth has no behaviour for, in one table.
//!
//! Every section is strict (`deny_unknown_fields`): a key no one knows is an
//! error naming it. The keys here are distribution's and are known, but Berth
//! does not act on them. Each is one of two kinds:
//!
//! - **warned**: harmless to leave undone (a pool size, an error reporter, a
//!   logging detail). Accepted, with one startup warning each saying why.
//! - **refused**: leaving it undone would change what the registry lets
//!   through or how it behaves (a pull-through cache would become an open,
//!   writable registry; URL allow-lists and TLS settings would vanish). A
//!   configuration error until Berth implements it.
//!
//! The structs give these keys a slot of type [`Tolerated`] so that the
//! strict parse accepts them; this table says what to do with them. The README
//! ("Configuration") lists the same keys with the same reasons.

use figment::Figment;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The slot a distribution key in [`RULES`] takes in the config structs:
/// anything, read only to warn about or refuse.
pub type Tolerated = Option<Value>;

/// A distribution section Berth does not act on, with its keys as
/// [`Tolerated`] slots: strict like every section, so a typo in it is still
/// an error rather than a key that silently escapes its warning.
macro_rules! tolerated_section {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(#[serde(default, skip_serializing_if = "Option::is_none")]
            pub $field: Tolerated,)*
        }
    };
}

tolerated_section!(
    /// `middleware:` — lists of `{name, options, disabled}` per injection point.
    MiddlewareSection { registry, repository, storage }
);
tolerated_section!(
    /// `validation:` — manifest URL and index platform checks.
    ValidationSection { enabled, disabled, manifests }
);
tolerated_section!(
    /// `reporting:` — Bugsnag and New Relic.
    ReportingSection { bugsnag, newrelic }
);
tolerated_section!(
    /// `compatibility:` — schema1 (distribution 2.x).
    CompatibilitySection { schema1 }
);
tolerated_section!(
    /// `storage.tag:` — tag lookup concurrency.
    TagSection { concurrencylimit }
);
tolerated_section!(
    /// `redis.pool:` — distribution 2.x's connection pool.
    RedisPoolSection { maxidle, maxactive, idletimeout }
);
tolerated_section!(
    /// `http.http2:`
    Http2Section { disabled }
);
tolerated_section!(
    /// `http.h2c:`
    H2cSection { enabled }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Warn,
    Refuse,
}

/// When a present key counts.
#[derive(Debug, Clone, Copy)]
pub(super) enum When {
    /// Set to anything but null or an empty string, map or list.
    Present,
    /// A flag set to true (`true` or `"true"`).
    True,
    /// A flag set to false.
    False,
    /// A string other than these (compared lower-cased).
    NotOneOf(&'static [&'static str]),
    /// A list with an entry whose `disabled` is not true.
    AnyEnabled,
}

pub(super) struct Rule {
    /// Dotted YAML path; `[]` after a segment looks into every list element.
    pub path: &'static str,
    pub action: Action,
    pub when: When,
    pub why: &'static str,
}

const fn warn(path: &'static str, when: When, why: &'static str) -> Rule {
    Rule {
        path,
        action: Action::Warn,
        when,
        why,
    }
}

const fn refuse(path: &'static str, when: When, why: &'static str) -> Rule {
    Rule {
        path,
        action: Action::Refuse,
        when,
        why,
    }
}

use When::*;

const REDIS_POOL: &str =
    "Berth keeps one multiplexed connection per Redis node; there is no pool to size";
const REDIS_CLIENT: &str =
    "a go-redis client option; Berth's Redis client has its own retries and routing";
const REDIS_TLS: &str =
    "TLS to Redis is not supported yet; Berth would talk to Redis in plain text";
const REDIS_SENTINEL: &str =
    "Redis Sentinel is not supported; Berth would take the sentinels for Redis servers";
const MIDDLEWARE: &str = "middleware (cloudfront, redirect, ...) is not supported; requests \
     would skip what it does";
const S3_SDK: &str = "Berth's S3 client (the AWS SDK for Rust) uses its own default here";

/// Every distribution key Berth accepts without acting on it, or refuses.
pub(super) const RULES: &[Rule] = &[
    // Top level.
    refuse(
        "proxy.exec",
        Present,
        "credential helpers for the upstream are not supported yet; set proxy.username \
         and proxy.password",
    ),
    refuse("middleware.registry", AnyEnabled, MIDDLEWARE),
    refuse("middleware.repository", AnyEnabled, MIDDLEWARE),
    refuse("middleware.storage", AnyEnabled, MIDDLEWARE),
    refuse(
        "validation.manifests",
        Present,
        "manifest URL allow/deny lists and index platform checks are not enforced; \
         pushes they refuse would be accepted",
    ),
    warn(
        "validation.enabled",
        Present,
        "Berth does not validate foreign-layer URLs or index platforms",
    ),
    warn(
        "validation.disabled",
        Present,
        "Berth does not validate foreign-layer URLs or index platforms",
    ),
    refuse(
        "policy",
        Present,
        "repository classes are not enforced; manifests of any config type would be accepted",
    ),
    warn(
        "loglevel",
        Present,
        "deprecated in distribution; Berth reads log.level only",
    ),
    warn(
        "reporting.bugsnag",
        Present,
        "Bugsnag reporting is not built in; use the logs, metrics or traces",
    ),
    warn(
        "reporting.newrelic",
        Present,
        "New Relic reporting is not built in; use the logs, metrics or traces",
    ),
    warn(
        "compatibility.schema1",
        Present,
        "Docker schema1 manifests are refused whatever it says",
    ),
    // log
    refuse(
        "log.hooks",
        AnyEnabled,
        "log hooks (mail on error) are not supported; the alerts would never be sent",
    ),
    warn(
        "log.reportcaller",
        True,
        "Berth's log lines name the module (target), not the caller's file and line",
    ),
    // http
    refuse(
        "http.net",
        NotOneOf(&["", "tcp"]),
        "Berth listens on TCP only (no unix sockets, no tcp4/tcp6 restriction)",
    ),
    refuse(
        "http.tls.ciphersuites",
        Present,
        "cipher suites cannot be chosen yet; Berth would offer rustls' defaults instead",
    ),
    warn(
        "http.http2.disabled",
        True,
        "Berth always offers HTTP/2 (ALPN h2 over TLS, h2c with prior knowledge on plain HTTP)",
    ),
    warn(
        "http.h2c.enabled",
        False,
        "Berth always accepts h2c (HTTP/2 with prior knowledge) on plain HTTP",
    ),
    // storage
    warn(
        "storage.tag.concurrencylimit",
        Present,
        "Berth looks tags up one at a time when a manifest is deleted by digest",
    ),
    warn(
        "storage.cache.blobdescriptorsize",
        Present,
        "Berth's in-memory blob-descriptor cache has a fixed bound of 100000 entries",
    ),
    warn(
        "storage.filesystem.maxthreads",
        Present,
        "filesystem calls run on tokio's blocking pool (at most 512 threads)",
    ),
    warn(
        "storage.s3.loglevel",
        Present,
        "use log.level (or RUST_LOG=aws_sdk_s3=debug) for the S3 client's logs",
    ),
    warn("storage.s3.useragent", Present, S3_SDK),
    warn("storage.s3.usedualstack", True, S3_SDK),
    warn("storage.s3.accelerate", True, S3_SDK),
    warn("storage.s3.checksumdisabled", Present, S3_SDK),
    warn("storage.s3.checksumalgorithm", Present, S3_SDK),
    warn(
        "storage.s3.objectownership",
        Present,
        "Berth sends no ACL header unless objectacl names one other than private",
    ),
    // redis (2.x pool, 3.x go-redis options)
    warn("redis.pool", Present, REDIS_POOL),
    warn("redis.poolsize", Present, REDIS_POOL),
    warn("redis.maxidleconns", Present, REDIS_POOL),
    warn("redis.minidleconns", Present, REDIS_POOL),
    warn("redis.maxactiveconns", Present, REDIS_POOL),
    warn("redis.connmaxidletime", Present, REDIS_POOL),
    warn("redis.connmaxlifetime", Present, REDIS_POOL),
    warn("redis.pooltimeout", Present, REDIS_POOL),
    warn("redis.poolfifo", Present, REDIS_POOL),
    warn("redis.clientname", Present, REDIS_CLIENT),
    warn("redis.protocol", Present, REDIS_CLIENT),
    warn("redis.maxretries", Present, REDIS_CLIENT),
    warn("redis.minretrybackoff", Present, REDIS_CLIENT),
    warn("redis.maxretrybackoff", Present, REDIS_CLIENT),
    warn("redis.contexttimeoutenabled", Present, REDIS_CLIENT),
    warn("redis.maxredirects", Present, REDIS_CLIENT),
    warn("redis.readonly", Present, REDIS_CLIENT),
    warn("redis.routebylatency", Present, REDIS_CLIENT),
    warn("redis.routerandomly", Present, REDIS_CLIENT),
    refuse("redis.tls.enabled", True, REDIS_TLS),
    refuse("redis.tls.certificate", Present, REDIS_TLS),
    refuse("redis.tls.key", Present, REDIS_TLS),
    refuse("redis.tls.clientcas", Present, REDIS_TLS),
    refuse("redis.mastername", Present, REDIS_SENTINEL),
    refuse("redis.sentinelusername", Present, REDIS_SENTINEL),
    refuse("redis.sentinelpassword", Present, REDIS_SENTINEL),
    // health
    warn(
        "health.file[].threshold",
        Present,
        "a file check fails at once, as in distribution (which ignores it too)",
    ),
];

/// A rule that matched: the key as the user wrote it and why.
pub(super) struct Finding {
    pub key: String,
    pub action: Action,
    pub why: &'static str,
}

/// The rules that match `fig`'s merged configuration, in table order; keys
/// set from the environment are named by their `REGISTRY_*` variable.
pub(super) fn findings(fig: &Figment) -> Vec<Finding> {
    let Ok(root) = fig.extract::<Value>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rule in RULES {
        for (shown, source_path, value) in lookup(&root, rule.path) {
            if matches(rule.when, value) {
                // A section set from the environment is named by (one of)
                // the variables that set it: REGISTRY_PROXY_REMOTEURL.
                let key = if super::set_from_env(fig, &source_path) {
                    super::env_name(&format!("{shown}{}", first_leaf(value)))
                } else {
                    shown
                };
                out.push(Finding {
                    key,
                    action: rule.action,
                    why: rule.why,
                });
            }
        }
    }
    out
}

/// The values at `path`: (path shown with list indexes, the path up to the
/// first list, for the value's source, the value).
fn lookup<'v>(root: &'v Value, path: &str) -> Vec<(String, String, &'v Value)> {
    let mut found = vec![(String::new(), None::<String>, root)];
    for segment in path.split('.') {
        let (name, each) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        let mut next = Vec::new();
        for (shown, list_at, value) in found {
            let Some(child) = value.get(name) else {
                continue;
            };
            let shown = if shown.is_empty() {
                name.to_string()
            } else {
                format!("{shown}.{name}")
            };
            match (each, child) {
                (true, Value::Array(items)) => {
                    let list_at = list_at.or_else(|| Some(shown.clone()));
                    for (i, item) in items.iter().enumerate() {
                        next.push((format!("{shown}[{i}]"), list_at.clone(), item));
                    }
                }
                (true, _) => {}
                (false, child) => next.push((shown, list_at, child)),
            }
        }
        found = next;
    }
    found
        .into_iter()
        .map(|(shown, list_at, v)| (shown.clone(), list_at.unwrap_or(shown), v))
        .collect()
}

/// `.a.b` down to the first scalar in `v`, if it is a map.
fn first_leaf(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .next()
            .map(|(k, v)| format!(".{k}{}", first_leaf(v)))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.trim().to_ascii_lowercase().parse().ok(),
        _ => None,
    }
}

fn matches(when: When, v: &Value) -> bool {
    match when {
        Present => match v {
            Value::Null => false,
            Value::String(s) => !s.trim().is_empty(),
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        },
        True => flag(v) == Some(true),
        False => flag(v) == Some(false),
        NotOneOf(allowed) => match v {
            Value::Null => false,
            Value::String(s) => !allowed.contains(&s.trim().to_ascii_lowercase().as_str()),
            _ => true,
        },
        AnyEnabled => match v {
            Value::Array(items) => items
                .iter()
                .any(|h| h.get("disabled").and_then(flag) != Some(true)),
            Value::Null => false,
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A YAML document setting `path` to `value`, with what the section
    /// around it needs to parse.
    fn yaml_for(path: &str, value: &str) -> String {
        let mut out = String::new();
        let mut indent = String::new();
        let segments: Vec<&str> = path.split('.').collect();
        for (i, seg) in segments.iter().enumerate() {
            let last = i == segments.len() - 1;
            let (name, list) = match seg.strip_suffix("[]") {
                Some(n) => (n, true),
                None => (*seg, false),
            };
            if last {
                out.push_str(&format!("{indent}{name}: {value}\n"));
            } else if list {
                out.push_str(&format!("{indent}{name}:\n{indent}  - file: /x\n"));
                indent.push_str("    ");
            } else {
                out.push_str(&format!("{indent}{name}:\n"));
                indent.push_str("  ");
                if *seg == "s3" {
                    out.push_str(&format!("{indent}region: r\n{indent}bucket: b\n"));
                }
            }
        }
        out
    }

    fn triggering(rule: &Rule) -> &'static str {
        if rule.path == "redis.pool" {
            return "{maxidle: 16, maxactive: 64, idletimeout: 300s}";
        }
        match rule.when {
            Present => "7",
            True => "true",
            False => "false",
            NotOneOf(_) => "unix",
            AnyEnabled => "[{type: mail}]",
        }
    }

    /// Each rule's key parses (the structs have its slot), and then warns
    /// exactly once or is refused naming it.
    #[test]
    fn every_rule_is_reachable_and_named() {
        for rule in RULES {
            let yaml = yaml_for(rule.path, triggering(rule));
            let shown = rule.path.replace("[]", "[0]");
            match (rule.action, Config::from_yaml(&yaml)) {
                (Action::Warn, Ok(cfg)) => {
                    let about: Vec<_> = cfg
                        .warnings
                        .iter()
                        .filter(|w| w.starts_with(&format!("{shown}:")))
                        .collect();
                    assert_eq!(about.len(), 1, "{}: {:?}\n{yaml}", rule.path, cfg.warnings);
                    assert!(about[0].contains(rule.why), "{}", about[0]);
                }
                (Action::Refuse, Err(e)) => {
                    let e = e.to_string();
                    assert!(
                        e.starts_with(&format!("configuration error: {shown}: ")),
                        "{e}\n{yaml}"
                    );
                    assert!(e.contains(rule.why) && !e.contains('\n'), "{e}");
                }
                (_, other) => panic!("{}: {:?}\n{yaml}", rule.path, other.map(|c| c.warnings)),
            }
        }
    }

    /// Values that match what Berth does anyway pass without a word.
    #[test]
    fn matching_values_are_silent() {
        for yaml in [
            "http:\n  net: tcp\n",
            "http:\n  http2:\n    disabled: false\n",
            "http:\n  h2c:\n    enabled: true\n",
            "log:\n  reportcaller: false\n  hooks:\n    - type: mail\n      disabled: true\n",
            "proxy: {remoteurl: ''}\nmiddleware:\n  storage:\n    - name: redirect\n      disabled: true\n",
            "redis:\n  addr: r:6379\n  tls:\n    enabled: false\n",
        ] {
            let cfg = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert!(cfg.warnings.is_empty(), "{yaml}: {:?}", cfg.warnings);
        }
    }

    #[test]
    fn list_elements_are_named_by_index() {
        let cfg = Config::from_yaml(
            "health:\n  file:\n    - file: /a\n    - file: /b\n      threshold: 3\n",
        )
        .unwrap();
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].starts_with("health.file[1].threshold: "));
        let e = Config::from_yaml(
            "log:\n  hooks:\n    - type: mail\n      disabled: true\n    - type: mail\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("configuration error: log.hooks: "), "{e}");
    }
}
