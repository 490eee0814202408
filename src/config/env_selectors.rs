//! distribution's way of choosing a section from the environment by name:
//! `REGISTRY_AUTH=htpasswd` (its deploy guide's form, followed by
//! `REGISTRY_AUTH_HTPASSWD_REALM` and `_PATH`) and `REGISTRY_STORAGE=s3`.
//! distribution reads such a value as YAML — `auth: htpasswd`, a section with
//! no parameters yet — replacing what the file had there; the
//! `REGISTRY_<SECTION>_<NAME>_*` variables then fill it in.
//!
//! Also here: how a variable name becomes a key path. `_` separates the
//! levels, except inside the few keys whose own names hold one, so
//! `REGISTRY_TOKEN_SERVER_REALM` is `token_server.realm` and
//! `REGISTRY_STORAGE_AZURE_MAX_RETRIES` is `storage.azure.max_retries`.
//!
//! Here: the selected section is kept (with the file's parameters, if the file
//! chose the same one) and the file's other choices are dropped; for storage,
//! the shared keys (`delete`, `redirect`, `cache`, `maintenance`, …) stay.
//!
//! And which `REGISTRY_*` variables are read at all. distribution skips (with
//! a warning) any variable that names no key, and environments are full of
//! such names: Kubernetes gives every pod `REGISTRY_PORT`,
//! `REGISTRY_SERVICE_HOST`, `REGISTRY_PORT_5000_TCP_ADDR`, … for a Service
//! named `registry` in its namespace (`registry-redis` gives
//! `REGISTRY_REDIS_SERVICE_HOST`), and shells carry `REGISTRY_HOST` or
//! `REGISTRY_USER` for other tools. So a variable outside the sections Berth
//! reads is skipped with a warning naming it, service links with one warning
//! for all of them; inside a section (`REGISTRY_HTTP_SECRTE`) it is read, and
//! the strict parse refuses it as it would the same typo in the file.

use figment::{providers::Serialized, Figment};
use serde_json::{Map, Value};

use super::{ConfigError, TOP_LEVEL_KEYS};

/// (section, its env var, the names it can select)
const SELECTORS: [(&str, &str, &[&str]); 2] = [
    ("auth", "REGISTRY_AUTH", &["htpasswd", "token"]),
    (
        "storage",
        "REGISTRY_STORAGE",
        &["filesystem", "inmemory", "s3", "azure"],
    ),
];

/// The env var names (lower case, as figment's `Env` sees them after the
/// prefix) that select rather than set: the `Env` provider must skip them.
pub(super) const SELECTOR_KEYS: [&str; 2] = ["auth", "storage"];

/// Apply `REGISTRY_AUTH` / `REGISTRY_STORAGE` to the defaults-and-file
/// figment; unchanged when neither is set.
pub(super) fn apply(fig: Figment) -> Result<Figment, ConfigError> {
    let chosen: Vec<(&str, &[&str], String)> = SELECTORS
        .iter()
        .filter_map(|(section, var, names)| {
            let value = std::env::var(var).ok()?;
            let value = value.trim().to_string();
            Some(if names.contains(&value.as_str()) {
                Ok((*section, *names, value))
            } else {
                Err(ConfigError(format!(
                    "{var}: {value:?} is not one of {}",
                    names.join(", ")
                )))
            })
        })
        .collect::<Result<_, _>>()?;
    if chosen.is_empty() {
        return Ok(fig);
    }
    let mut merged: Value = fig
        .extract()
        .map_err(|e| ConfigError(e.to_string().replace('\n', " ")))?;
    for (section, names, name) in chosen {
        let root = merged.as_object_mut().expect("a config is a map");
        let entry = root
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let map = entry.as_object_mut().expect("made a map above");
        // Drop the file's other choices; keep shared keys and this choice.
        map.retain(|k, _| k == &name || !names.contains(&k.as_str()));
        let chosen = map.entry(name).or_insert_with(|| Value::Object(Map::new()));
        if chosen.is_null() {
            *chosen = Value::Object(Map::new());
        }
    }
    Ok(Figment::from(Serialized::defaults(merged)))
}

/// Keys whose names contain `_` (Berth's `token_server`; distribution's Azure
/// tuning keys), longest first so a longer name wins over a part of it.
const MULTI_WORD_KEYS: [&str; 5] = [
    "copy_status_poll_max_retry",
    "copy_status_poll_delay",
    "token_server",
    "max_retries",
    "retry_delay",
];

/// `token_server_realm` → `token_server.realm` (figment's `Env` hands the name
/// lower-cased, without the prefix).
pub(super) fn key_path(name: &str) -> String {
    const HELD: char = '\u{1}';
    let mut s = format!("_{}_", name.to_ascii_lowercase());
    for key in MULTI_WORD_KEYS {
        let held = key.replace('_', &HELD.to_string());
        s = s.replace(&format!("_{key}_"), &format!("_{held}_"));
    }
    s.trim_matches('_').replace('_', ".").replace(HELD, "_")
}

/// Shaped like a variable Kubernetes sets for a Service (`<SVC>_SERVICE_HOST`,
/// `<SVC>_SERVICE_PORT[_<NAME>]`, `<SVC>_PORT`, `<SVC>_PORT_<N>_<PROTO>[_ADDR|_PORT|_PROTO]`),
/// given lower-cased without `REGISTRY_`. No Berth key ends like these.
fn is_service_link(name: &str) -> bool {
    let tokens: Vec<&str> = name.split('_').collect();
    let protocol = |t: &str| matches!(t, "tcp" | "udp" | "sctp");
    (0..tokens.len()).any(|start| match &tokens[start..] {
        ["service", "host"] | ["port"] => true,
        ["service", "port", ..] => true,
        ["port", n, p] => n.parse::<u16>().is_ok() && protocol(p),
        ["port", n, p, "addr" | "port" | "proto"] => n.parse::<u16>().is_ok() && protocol(p),
        _ => false,
    })
}

/// What to do with one `REGISTRY_*` variable (name given lower-cased,
/// without the prefix).
#[derive(Debug, PartialEq, Eq)]
enum Variable {
    /// A selector (`REGISTRY_AUTH`, `REGISTRY_STORAGE`), see [`apply`].
    Selector,
    /// In a section Berth reads: parsed (strictly).
    Read,
    /// Names no section: skipped with a warning.
    Unknown,
    /// A Kubernetes service link: skipped, with one warning for all.
    ServiceLink,
}

fn classify(name: &str) -> Variable {
    if SELECTOR_KEYS.contains(&name) {
        return Variable::Selector;
    }
    if is_service_link(name) {
        return Variable::ServiceLink;
    }
    let path = key_path(name);
    let section = path.split('.').next().unwrap_or_default();
    if TOP_LEVEL_KEYS.contains(&section) {
        Variable::Read
    } else {
        Variable::Unknown
    }
}

/// The variables the `Env` provider must skip (lower-cased, without the
/// prefix, as it sees them) and the warnings that say so.
pub(super) fn unread_variables() -> (Vec<String>, Vec<String>) {
    let mut skipped = Vec::new();
    let mut unknown = Vec::new();
    let mut links = Vec::new();
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy().trim().to_string();
        let Some(name) = var
            .get(..9)
            .filter(|p| p.eq_ignore_ascii_case("REGISTRY_"))
            .map(|_| var[9..].to_ascii_lowercase())
        else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        match classify(&name) {
            Variable::Selector | Variable::Read => continue,
            Variable::Unknown => unknown.push(var.clone()),
            Variable::ServiceLink => links.push(var.clone()),
        }
        skipped.push(name);
    }
    unknown.sort();
    links.sort();
    let mut warnings: Vec<String> = unknown
        .iter()
        .map(|v| format!("{v}: names no configuration key; ignored"))
        .collect();
    if !links.is_empty() {
        warnings.push(format!(
            "{}: Kubernetes service links (a Service named registry or registry-*), not \
             configuration; ignored. `enableServiceLinks: false` on the pod leaves them out",
            links.join(", ")
        ));
    }
    (skipped, warnings)
}

#[cfg(test)]
mod tests {
    use super::{classify, key_path, Variable};

    #[test]
    fn service_links_and_strangers_are_told_apart() {
        for link in [
            "port",
            "service_host",
            "service_port",
            "service_port_http",
            "port_5000_tcp",
            "port_5000_tcp_addr",
            "port_5000_tcp_port",
            "port_5000_tcp_proto",
            "redis_service_host",
            "redis_master_port_6379_tcp_addr",
            "berth_port",
            "http_service_port_debug",
        ] {
            assert_eq!(classify(link), Variable::ServiceLink, "{link}");
        }
        for name in ["host", "user", "password", "image", "token_realm"] {
            assert_eq!(classify(name), Variable::Unknown, "{name}");
        }
        for key in [
            "http_secret",
            "http_secrte",
            "auth_token_service",
            "token_server_service",
            "storage_s3_bucket",
            "redis_addr",
            "log_level",
            "proxy_remoteurl",
            "health_storagedriver_enabled",
        ] {
            assert_eq!(classify(key), Variable::Read, "{key}");
        }
        assert_eq!(classify("auth"), Variable::Selector);
    }

    #[test]
    fn variable_names_become_key_paths() {
        assert_eq!(key_path("storage_delete_enabled"), "storage.delete.enabled");
        assert_eq!(key_path("token_server_realm"), "token_server.realm");
        assert_eq!(
            key_path("storage_azure_max_retries"),
            "storage.azure.max_retries"
        );
        assert_eq!(
            key_path("storage_azure_copy_status_poll_max_retry"),
            "storage.azure.copy_status_poll_max_retry"
        );
        assert_eq!(key_path("http_secret"), "http.secret");
    }
}
