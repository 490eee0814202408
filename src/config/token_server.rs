//! `token_server:` — Berth's built-in token server (docker's token auth
//! spec, what cesanta/docker_auth does), served on the registry's listener.
//! The behaviour lives in [`crate::auth::token_server`]; this is the schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::auth::ThrottleConfig;

/// Where the endpoint is served by default, under `http.prefix`. The same
/// default as `auth.token.autoredirectpath`, so the two meet without config.
pub const DEFAULT_PATH: &str = "/auth/token";

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenServerConfig {
    /// URL path of the endpoint (GET and POST), under `http.prefix`.
    #[serde(default = "default_path")]
    pub path: String,
    /// The `iss` of issued tokens (registries check it: `auth.token.issuer`).
    #[serde(default)]
    pub issuer: String,
    /// The only `service` this server issues tokens for (`auth.token.service`).
    #[serde(default)]
    pub service: String,
    /// PEM private key: RSA (PKCS#1 or PKCS#8) or ECDSA P-256 / P-384 (SEC1 or PKCS#8).
    #[serde(default)]
    pub signingkey: String,
    /// PEM certificate (chain) of `signingkey`, for the `x5c` header.
    #[serde(default)]
    pub certificate: String,
    /// Put `certificate` into each token's `x5c` header.
    #[serde(default)]
    pub x5c: bool,
    /// The `kid` header; empty: the libtrust key id of the public key.
    #[serde(default)]
    pub kid: String,
    /// Access token lifetime, seconds.
    #[serde(default = "default_expiration")]
    pub expiration: u64,
    /// Refresh token lifetime, seconds (`offline_token=true`, `access_type=offline`).
    #[serde(default = "default_refresh_expiration")]
    pub refreshexpiration: u64,
    /// An htpasswd file (bcrypt) of accounts.
    #[serde(default)]
    pub htpasswd: String,
    /// Static accounts: user → bcrypt hash. Checked before `htpasswd`.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Requests without credentials get tokens as account "" (subject to the ACL).
    #[serde(default)]
    pub anonymous: bool,
    /// Per-account labels for ACL matching: user → label → values.
    #[serde(default)]
    pub labels: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Rules, first match wins; no match denies.
    #[serde(default)]
    pub acl: Vec<AclRule>,
    /// Superseded by `http.trustedproxies` (shared with Basic logins on
    /// `/v2/`); still read when that is empty.
    #[serde(default)]
    pub trustedproxies: Vec<String>,
    #[serde(default)]
    pub throttle: ThrottleConfig,
    /// CI jobs logging in with their OIDC ID token as the password (see
    /// [`crate::auth::token_server::oidc`]): the issuers trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc: Vec<OidcIssuerConfig>,
    /// People logging in against a directory (see
    /// [`crate::auth::token_server::ldap`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConfig>,
}

/// `token_server.ldap`: an LDAP directory or Active Directory.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://host:636` or `ldap://host:389` (with `starttls`), tried in order.
    pub url: Vec<String>,
    pub starttls: bool,
    /// A PEM CA bundle trusted besides the system's. TLS is always verified.
    pub cafile: String,
    /// The service account that searches for users.
    pub binddn: String,
    pub bindpassword: String,
    /// Read once at start (a mounted secret), instead of `bindpassword`.
    pub bindpasswordfile: String,
    /// Where users are searched (subtree).
    pub basedn: String,
    /// `{username}` is replaced by the login name, escaped (RFC 4515):
    /// default `(uid={username})`; Active Directory: `(sAMAccountName={username})`.
    pub userfilter: String,
    /// The user entry's attribute listing its groups' DNs (default
    /// `memberOf`); each group's first RDN value becomes a label value.
    pub groupattribute: String,
    /// Or search groups under this DN with `groupfilter` (`{dn}` is the
    /// user's DN, escaped; default `(member={dn})`), naming them by `cn`.
    pub groupbasedn: String,
    pub groupfilter: String,
    /// The ACL label groups go under (default `group`).
    pub grouplabel: String,
    /// A directory request with no answer by then fails the login (503).
    pub timeout: String,
    /// A successful login is remembered this long (default `60s`; `0s` never).
    pub cachettl: String,
}

/// One trusted OIDC issuer (GitHub Actions, GitLab CI, …).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The tokens' `iss`, exactly (`https://token.actions.githubusercontent.com`).
    #[serde(default)]
    pub issuer: String,
    /// Accepted `aud` values: the token must name one of them.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Where the signing keys are: empty for OpenID discovery
    /// (`<issuer>/.well-known/openid-configuration`), else a JWKS URL or file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks: String,
    /// A PEM CA bundle trusted (besides the system's) for the issuer's HTTPS.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cafile: String,
    /// The claim whose value names the account (`repository`, `project_path`).
    #[serde(default = "default_oidc_account")]
    pub account: String,
    /// Put before the account name (`github:`), so CI identities never
    /// collide with people's accounts in the ACL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accountprefix: String,
    /// label → claim: the claims ACL rules match as labels (`ref`,
    /// `ref_protected`, `environment`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Slack for `exp`, `nbf` and `iat`, seconds.
    #[serde(default = "default_oidc_leeway")]
    pub leeway: u64,
    /// The issuer's keys are fetched again after this (default `1h`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keysmaxage: String,
    /// A token with an unknown `kid` fetches the keys again at most this
    /// often (default `10s`): key rotation works, random `kid`s cannot
    /// hammer the issuer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keysrefresh: String,
}

impl OidcIssuerConfig {
    /// (`keysmaxage`, `keysrefresh`), defaults applied.
    pub fn key_times(&self) -> Result<(std::time::Duration, std::time::Duration), String> {
        let parse = |v: &str, default: u64| {
            if v.trim().is_empty() {
                Ok(std::time::Duration::from_secs(default))
            } else {
                humantime::parse_duration(v.trim()).map_err(|e| format!("{v:?}: {e}"))
            }
        };
        Ok((
            parse(&self.keysmaxage, 3600)?,
            parse(&self.keysrefresh, 10)?,
        ))
    }
}

fn default_oidc_account() -> String {
    "sub".into()
}

fn default_oidc_leeway() -> u64 {
    60
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Every present key must match. Absent keys match anything.
    #[serde(rename = "match", default)]
    pub matches: AclMatch,
    /// Granted actions: pull, push, delete, "*". Empty: explicit deny.
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Patterns are globs (`*` within a path segment, `**` across `/`, `?`) or
/// `/regex/` (whole-value match); `${account}` and `${labels:NAME}` expand.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AclMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// An IP address or CIDR the client address must be in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// label → pattern; matches when any of the account's values does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_path() -> String {
    DEFAULT_PATH.into()
}

fn default_expiration() -> u64 {
    300
}

fn default_refresh_expiration() -> u64 {
    30 * 24 * 3600
}

/// Routes the registry itself serves at the root; the token path must not
/// shadow them (axum would refuse the overlap at start).
const RESERVED: [&str; 2] = ["/", "/health/storage"];

impl TokenServerConfig {
    /// The checks that need nothing but the values. Files, keys, hashes and
    /// ACL patterns are read and checked where they are used, when
    /// [`crate::auth::check`] builds the token server (`berth config check`
    /// and start-up do, and report one line naming the key, exit 2).
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.path;
        if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') {
            return Err(format!(
                "token_server.path: {p:?} must start with '/' and not end with one"
            ));
        }
        if RESERVED.contains(&p.as_str()) || p == "/v2" || p.starts_with("/v2/") {
            return Err(format!(
                "token_server.path: {p:?} is a registry route; use e.g. {DEFAULT_PATH}"
            ));
        }
        // axum reads `{}` as parameters and `*` as wildcards.
        if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c))
        {
            return Err(format!(
                "token_server.path: {p:?} may hold only letters, digits and / - _ . ~"
            ));
        }
        for (key, value) in [
            ("issuer", &self.issuer),
            ("service", &self.service),
            ("signingkey", &self.signingkey),
        ] {
            if value.is_empty() {
                return Err(format!("token_server.{key}: required"));
            }
        }
        if self.expiration == 0 {
            return Err("token_server.expiration: must be at least 1 (seconds)".into());
        }
        if self.refreshexpiration == 0 {
            return Err("token_server.refreshexpiration: must be at least 1 (seconds)".into());
        }
        if self.x5c && self.certificate.is_empty() {
            return Err("token_server.certificate: required with x5c: true".into());
        }
        for (i, o) in self.oidc.iter().enumerate() {
            let key = |k: &str| format!("token_server.oidc[{i}].{k}");
            if !o.issuer.starts_with("https://") {
                return Err(format!(
                    "{}: {:?} must be an https:// URL",
                    key("issuer"),
                    o.issuer
                ));
            }
            if o.audience.iter().all(|a| a.trim().is_empty()) {
                return Err(format!(
                    "{}: required (the aud your CI jobs request)",
                    key("audience")
                ));
            }
            if o.account.trim().is_empty() {
                return Err(format!("{}: required (a claim name)", key("account")));
            }
            o.key_times()
                .map_err(|e| format!("{}: {e}", key("keysmaxage / keysrefresh")))?;
            if o.jwks.starts_with("http://") {
                return Err(format!("{}: must be https:// or a file", key("jwks")));
            }
        }
        if let Some(l) = &self.ldap {
            l.validate()?;
        }
        if self.htpasswd.is_empty()
            && self.users.is_empty()
            && !self.anonymous
            && self.oidc.is_empty()
            && self.ldap.is_none()
        {
            return Err(
                "token_server: no accounts (set htpasswd, users, ldap, oidc or anonymous: true)"
                    .into(),
            );
        }
        for user in self.users.keys() {
            if user.is_empty() || user.contains(':') {
                return Err(format!(
                    "token_server.users: {user:?} is not a valid user name"
                ));
            }
        }
        Ok(())
    }
}

impl LdapConfig {
    /// (timeout, cache TTL), defaults applied.
    pub fn durations(&self) -> Result<(std::time::Duration, std::time::Duration), String> {
        let parse = |key: &str, v: &str, default: u64| {
            if v.trim().is_empty() {
                Ok(std::time::Duration::from_secs(default))
            } else {
                humantime::parse_duration(v.trim())
                    .map_err(|e| format!("token_server.ldap.{key}: {v:?}: {e}"))
            }
        };
        Ok((
            parse("timeout", &self.timeout, 10)?,
            parse("cachettl", &self.cachettl, 60)?,
        ))
    }

    fn validate(&self) -> Result<(), String> {
        if self.url.is_empty() {
            return Err("token_server.ldap.url: required (ldaps://host:636)".into());
        }
        for u in &self.url {
            let plain = u.starts_with("ldap://");
            if !plain && !u.starts_with("ldaps://") {
                return Err(format!(
                    "token_server.ldap.url: {u:?} must be ldaps:// or ldap://"
                ));
            }
            // Passwords never cross the network in clear text.
            if plain && !self.starttls {
                return Err(format!(
                    "token_server.ldap.url: {u:?} is plain LDAP; use ldaps:// or set starttls: true"
                ));
            }
        }
        if self.basedn.trim().is_empty() {
            return Err("token_server.ldap.basedn: required".into());
        }
        if !self.userfilter.is_empty() && !self.userfilter.contains("{username}") {
            return Err("token_server.ldap.userfilter: must contain {username}".into());
        }
        if self.binddn.is_empty()
            != (self.bindpassword.is_empty() && self.bindpasswordfile.is_empty())
        {
            return Err(
                "token_server.ldap.binddn: give it with bindpassword or bindpasswordfile".into(),
            );
        }
        let (timeout, _) = self.durations()?;
        if timeout.is_zero() {
            return Err("token_server.ldap.timeout: must be more than 0s".into());
        }
        Ok(())
    }
}
