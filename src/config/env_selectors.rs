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

use figment::{providers::Serialized, Figment};
use serde_json::{Map, Value};

use super::ConfigError;

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

#[cfg(test)]
mod tests {
    use super::key_path;

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
