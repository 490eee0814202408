//! `auth:` — distribution's `htpasswd` and `token` sections, and the
//! failed-login throttle both Basic logins on `/v2/` and the token server use.

use serde::{Deserialize, Serialize};

/// `http.loginqueue` when unset: password checks that may wait for a CPU.
pub const DEFAULT_LOGIN_QUEUE: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<HtpasswdConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdConfig {
    #[serde(default = "default_realm")]
    pub realm: String,
    pub path: String,
    /// Failed Basic logins on `/v2/`, per client address (Berth's own key).
    #[serde(default)]
    pub throttle: ThrottleConfig,
}

/// Failed logins from one client address are throttled: after `maxfailures`
/// failures (each less than `window` seconds after the previous one) further
/// attempts get 429 for 1 s, then 2 s, 4 s... at most `maxdelay` seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// 0 turns throttling off.
    pub maxfailures: u32,
    pub window: u64,
    pub maxdelay: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            maxfailures: 5,
            window: 300,
            maxdelay: 60,
        }
    }
}

fn default_realm() -> String {
    "Berth Registry".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Where clients get tokens (the token server's URL).
    pub realm: String,
    /// This registry's name: the `aud` every token must carry.
    pub service: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// PEM certificates whose keys (by `kid`, or as x5c roots) sign tokens.
    pub rootcertbundle: String,
    /// A JWKS file of signing keys (by `kid`).
    pub jwks: String,
    /// Accepted `alg`s; empty means every asymmetric one Berth knows.
    pub signingalgorithms: Vec<String>,
    /// Derive the realm from the request's host (`<scheme>://<host><autoredirectpath>`).
    pub autoredirect: bool,
    pub autoredirectpath: String,
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.htpasswd.is_some() && self.token.is_some() {
            return Err("auth: configure one of htpasswd or token, not both".into());
        }
        if let Some(h) = &self.htpasswd {
            if h.path.is_empty() {
                return Err("auth.htpasswd.path: required".into());
            }
        }
        if let Some(t) = &self.token {
            if t.realm.is_empty() && !t.autoredirect {
                return Err("auth.token.realm: required".into());
            }
            if t.service.is_empty() {
                return Err("auth.token.service: required".into());
            }
            if t.issuer.is_empty() {
                return Err("auth.token.issuer: required".into());
            }
            if t.rootcertbundle.is_empty() && t.jwks.is_empty() {
                return Err("auth.token.rootcertbundle: required (or auth.token.jwks)".into());
            }
        }
        Ok(())
    }
}
