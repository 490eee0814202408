//! `storage.azure` — distribution's Azure driver parameters, same keys.
//!
//! ```yaml
//! storage:
//!   azure:
//!     accountname: myaccount
//!     accountkey: base64key==        # shared key; or `credentials:` below
//!     container: registry
//!     realm: core.windows.net        # endpoint https://<accountname>.blob.<realm>
//!     serviceurl: http://127.0.0.1:10000/devstoreaccount1   # overrides the endpoint (Azurite)
//!     rootdirectory: /some/prefix
//!     credentials:
//!       type: client_secret          # client_secret | shared_key | default
//!       clientid: ...
//!       tenantid: ...
//!       secret: ...
//! ```
//!
//! As in distribution, a non-empty `accountkey` selects shared-key auth whatever
//! `credentials.type` says; without one, `client_secret` uses the service
//! principal and anything else the ambient identity (`default`: `AZURE_*`
//! variables, workload identity, then managed identity).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    #[serde(default, deserialize_with = "null_is_empty")]
    pub accountname: String,
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub accountkey: String,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub container: String,
    /// Endpoint suffix; distribution's default is `core.windows.net`.
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub realm: String,
    /// Full endpoint URL, replacing `https://<accountname>.blob.<realm>`.
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub serviceurl: String,
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub rootdirectory: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AzureCredentials>,
    /// How often `rename` polls a server-side copy Azure left pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_status_poll_max_retry: Option<u32>,
    /// First delay between those polls (Go duration, e.g. `100ms`); grows linearly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_status_poll_delay: Option<String>,
    /// Retries of a failed request (object_store's default: 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Initial backoff between those retries (e.g. `100ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
    /// distribution's connection-string form; not supported (named in the error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectionstring: Option<String>,
    /// Berth's, as `storage.s3`'s: reads of at least this many bytes are
    /// ranged Gets of `readaheadchunksize`, up to `readaheadmaxconcurrency`
    /// ahead of the one being sent (0: one Get per read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readaheadthresholdsize: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readaheadchunksize: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readaheadmaxconcurrency: Option<u64>,
}

/// A key written with no value (`rootdirectory:`) is empty, as in distribution.
fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AzureCredentials {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub clientid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenantid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
}

/// How the driver authenticates, decided from the keys above. Its `Debug`
/// names the method only: keys and secrets never reach a log.
#[derive(Clone, PartialEq)]
pub enum AzureAuth {
    SharedKey {
        key: String,
    },
    ClientSecret {
        client_id: String,
        tenant_id: String,
        secret: String,
    },
    /// `AZURE_*` environment (client secret, workload identity, SAS, token),
    /// then the managed identity endpoint.
    Default,
}

/// A validated `storage.azure` section, ready for the driver.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureSettings {
    pub account: String,
    pub container: String,
    /// Endpoint without a trailing slash; blob URLs are `<service_url>/<container>/<name>`.
    pub service_url: String,
    /// `rootdirectory` without leading or trailing slashes ("" for none).
    pub root: String,
    pub auth: AzureAuth,
    pub copy_poll_retries: u32,
    pub copy_poll_delay: std::time::Duration,
    pub max_retries: Option<u32>,
    pub retry_delay: Option<std::time::Duration>,
    /// Large reads: (threshold, chunk size, chunks ahead).
    pub read_ahead: (u64, u64, usize),
}

impl std::fmt::Debug for AzureAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AzureAuth::SharedKey { .. } => f.write_str("SharedKey(<redacted>)"),
            AzureAuth::ClientSecret {
                client_id,
                tenant_id,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("client_id", client_id)
                .field("tenant_id", tenant_id)
                .finish_non_exhaustive(),
            AzureAuth::Default => f.write_str("Default"),
        }
    }
}

const DEFAULT_REALM: &str = "core.windows.net";

fn duration(key: &str, value: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("storage.azure.{key}: {value:?} is not a duration ({e})"))
}

impl AzureConfig {
    /// Check every key; errors are one line naming the key.
    pub fn settings(&self) -> Result<AzureSettings, String> {
        if self.connectionstring.is_some() {
            return Err(
                "storage.azure.connectionstring: not supported; use accountname, \
                        accountkey and serviceurl"
                    .into(),
            );
        }
        if self.accountname.is_empty() {
            return Err("storage.azure.accountname: required".into());
        }
        if self.container.is_empty() {
            return Err("storage.azure.container: required".into());
        }
        // Azure's container naming rules: 3-63 of [a-z0-9-], no leading, trailing or double '-'.
        let c = &self.container;
        let valid = (3..=63).contains(&c.len())
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
            && !c.contains("--");
        if !valid {
            return Err(format!(
                "storage.azure.container: {c:?} is not a valid container name \
                 (3-63 characters of a-z, 0-9 and single '-')"
            ));
        }
        let realm = if self.realm.is_empty() {
            DEFAULT_REALM
        } else {
            &self.realm
        };
        let service_url = if self.serviceurl.is_empty() {
            format!("https://{}.blob.{realm}", self.accountname)
        } else {
            self.serviceurl.trim_end_matches('/').to_string()
        };
        match url::Url::parse(&service_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                let key = if self.serviceurl.is_empty() {
                    "realm"
                } else {
                    "serviceurl"
                };
                return Err(format!(
                    "storage.azure.{key}: {service_url:?} is not an http(s) URL"
                ));
            }
        }
        let root = self.rootdirectory.trim_matches('/').to_string();
        if !root.is_empty()
            && root
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(format!(
                "storage.azure.rootdirectory: {:?} has an empty, '.' or '..' segment",
                self.rootdirectory
            ));
        }
        let creds = self.credentials.clone().unwrap_or_default();
        let auth = if !self.accountkey.is_empty() {
            if base64::engine::general_purpose::STANDARD
                .decode(self.accountkey.trim())
                .is_err()
            {
                return Err("storage.azure.accountkey: not base64".into());
            }
            AzureAuth::SharedKey {
                key: self.accountkey.trim().to_string(),
            }
        } else {
            match creds.kind.as_str() {
                "shared_key" => {
                    return Err(
                        "storage.azure.accountkey: required with credentials.type shared_key"
                            .into(),
                    )
                }
                "client_secret" => {
                    for (key, value) in [
                        ("clientid", &creds.clientid),
                        ("tenantid", &creds.tenantid),
                        ("secret", &creds.secret),
                    ] {
                        if value.is_empty() {
                            return Err(format!(
                                "storage.azure.credentials.{key}: required with type client_secret"
                            ));
                        }
                    }
                    AzureAuth::ClientSecret {
                        client_id: creds.clientid.clone(),
                        tenant_id: creds.tenantid.clone(),
                        secret: creds.secret.clone(),
                    }
                }
                "" | "default" => AzureAuth::Default,
                other => {
                    return Err(format!(
                        "storage.azure.credentials.type: {other:?} is not one of \
                         client_secret, shared_key, default"
                    ))
                }
            }
        };
        Ok(AzureSettings {
            account: self.accountname.clone(),
            container: self.container.clone(),
            service_url,
            root,
            auth,
            copy_poll_retries: self.copy_status_poll_max_retry.unwrap_or(5),
            copy_poll_delay: match &self.copy_status_poll_delay {
                Some(d) => duration("copy_status_poll_delay", d)?,
                None => std::time::Duration::from_millis(100),
            },
            max_retries: self.max_retries,
            retry_delay: self
                .retry_delay
                .as_deref()
                .map(|d| duration("retry_delay", d))
                .transpose()?,
            read_ahead: self.read_ahead()?,
        })
    }
}

impl AzureConfig {
    /// The read-ahead keys, defaults (those of `storage.s3`) applied.
    fn read_ahead(&self) -> Result<(u64, u64, usize), String> {
        use super::s3::{check_read_ahead, READ_AHEAD, READ_AHEAD_CHUNK, READ_AHEAD_THRESHOLD};
        let chunk = self.readaheadchunksize.unwrap_or(READ_AHEAD_CHUNK);
        let ahead = self.readaheadmaxconcurrency.unwrap_or(READ_AHEAD);
        check_read_ahead("storage.azure", chunk, ahead)?;
        Ok((
            self.readaheadthresholdsize.unwrap_or(READ_AHEAD_THRESHOLD),
            chunk,
            ahead as usize,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, StorageDriverConfig};

    /// Through the whole loader, as `berth config check` sees it.
    fn cfg(azure: &str) -> Result<AzureSettings, String> {
        let indented: String = azure.lines().map(|l| format!("    {l}\n")).collect();
        let c = Config::from_yaml(&format!("storage:\n  azure:\n{indented}"))
            .map_err(|e| e.to_string())?;
        match c.storage.driver().unwrap() {
            StorageDriverConfig::Azure(s) => Ok(*s),
            other => panic!("{other:?}"),
        }
    }

    fn err(azure: &str, key: &str) {
        let e = cfg(azure).unwrap_err();
        assert!(
            e.starts_with(&format!("configuration error: {key}")),
            "{e} should name {key}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn shared_key_with_defaults() {
        let s = cfg("accountname: acct\naccountkey: a2V5\ncontainer: reg\nrootdirectory: /x/y/")
            .unwrap();
        assert_eq!(s.service_url, "https://acct.blob.core.windows.net");
        assert_eq!(s.root, "x/y");
        assert_eq!(s.auth, AzureAuth::SharedKey { key: "a2V5".into() });
        assert_eq!(s.copy_poll_retries, 5);
        // The server logs its storage: the key must not be in any rendering.
        let shown = format!(
            "{s:?} {}",
            StorageDriverConfig::Azure(Box::new(s.clone())).describe()
        );
        assert!(!shown.contains("a2V5"), "{shown}");
        assert!(shown.contains("acct"), "{shown}");
    }

    #[test]
    fn realm_serviceurl_and_credentials() {
        let s = cfg("accountname: a\ncontainer: reg\nrealm: core.chinacloudapi.cn\nrootdirectory:")
            .unwrap();
        assert_eq!(s.root, "");
        assert_eq!(s.service_url, "https://a.blob.core.chinacloudapi.cn");
        assert_eq!(s.auth, AzureAuth::Default);
        let s = cfg("accountname: a\ncontainer: reg\nserviceurl: http://127.0.0.1:1/devstoreaccount1/\ncredentials:\n  type: client_secret\n  clientid: c\n  tenantid: t\n  secret: s").unwrap();
        assert_eq!(s.service_url, "http://127.0.0.1:1/devstoreaccount1");
        assert!(matches!(s.auth, AzureAuth::ClientSecret { .. }));
        assert!(!format!("{s:?}").contains("secret: \"s\""), "{s:?}");
    }

    #[test]
    fn errors_name_the_key() {
        err("container: reg", "storage.azure.accountname:");
        err("accountname: a", "storage.azure.container:");
        err(
            "accountname: a\ncontainer: Bad_Name",
            "storage.azure.container:",
        );
        err(
            "accountname: a\ncontainer: reg\naccountkey: '%%%'",
            "storage.azure.accountkey:",
        );
        err(
            "accountname: a\ncontainer: reg\ncredentials:\n  type: shared_key",
            "storage.azure.accountkey:",
        );
        err(
            "accountname: a\ncontainer: reg\ncredentials:\n  type: client_secret\n  clientid: c",
            "storage.azure.credentials.tenantid:",
        );
        err(
            "accountname: a\ncontainer: reg\ncredentials:\n  type: magic",
            "storage.azure.credentials.type:",
        );
        err(
            "accountname: a\ncontainer: reg\nserviceurl: 'not a url'",
            "storage.azure.serviceurl:",
        );
        err(
            "accountname: a\ncontainer: reg\nrootdirectory: a//b",
            "storage.azure.rootdirectory:",
        );
        err(
            "accountname: a\ncontainer: reg\ncopy_status_poll_delay: soon",
            "storage.azure.copy_status_poll_delay:",
        );
        err(
            "accountname: a\ncontainer: reg\nconnectionstring: x",
            "storage.azure.connectionstring:",
        );
        err("accountname: a\ncontainer: reg\nbogus: 1", "storage.azure");
        err(
            "accountname: a\ncontainer: reg\nmax_retries: many",
            "storage.azure.max_retries",
        );
    }

    #[test]
    fn one_driver_only() {
        let e = Config::from_yaml(
            "storage:\n  inmemory:\n  azure:\n    accountname: a\n    container: reg\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("more than one driver"), "{e}");
    }
}
