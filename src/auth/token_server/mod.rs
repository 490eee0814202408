//! Berth's built-in token server: docker's token authentication spec (the
//! part cesanta/docker_auth implements), on the registry's own listener.
//!
//! A client that got a `Bearer realm=…,service=…,scope=…` challenge asks here
//! (GET with Basic credentials, or the OAuth2 POST form) and gets a JWT
//! signed with `token_server.signingkey`, listing for each requested scope
//! the actions the ACL grants. Scopes granted nothing are still listed, with
//! no actions: Berth's verifier then answers 403 DENIED ("you may not")
//! instead of 401 insufficient_scope ("get another token"), which would only
//! send docker round the same loop.
//!
//! No state is shared between replicas: refresh tokens are JWTs signed with
//! the same key for a different audience, checked against the account's
//! current password hash when used (see [`accounts`]).

pub mod accounts;
pub mod acl;
mod handlers;
pub mod keys;
pub mod ldap;
mod matchers;
pub mod oidc;
pub mod scope;
pub mod viewer;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{routing::get, Router};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{client::ClientAddress, throttle::Throttle, Logins},
    config::{token_server::TokenServerConfig, Config},
    telemetry::metrics::Metrics,
};
use accounts::Accounts;
use acl::{Acl, Subject};
use keys::SigningKey;
use scope::Scope;

/// `nbf` is back-dated this much: replicas' and registries' clocks differ.
const NOT_BEFORE_SKEW: u64 = 10;

pub struct TokenServer {
    issuer: String,
    service: String,
    expiration: u64,
    refresh_expiration: u64,
    anonymous: bool,
    labels: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    key: Arc<SigningKey>,
    accounts: Accounts,
    /// Trusted OIDC issuers, for CI jobs' ID tokens (`token_server.oidc`).
    oidc: Option<oidc::Oidc>,
    /// A directory people log in against (`token_server.ldap`).
    directory: Option<ldap::Directory>,
    acl: Acl,
    throttle: Throttle,
    /// Who a request comes from (`http.trustedproxies`), shared with `/v2/`.
    clients: Arc<ClientAddress>,
    /// Failed logins since start, for the log lines.
    failed_logins: AtomicU64,
    /// `berth_auth_attempts_total{scheme="token_server"}`, with `http.debug`.
    metrics: Option<Arc<Metrics>>,
}

/// One `access` entry of an issued token.
#[derive(Debug, Clone, Serialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<String>,
    name: String,
    actions: Vec<String>,
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct RefreshClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    /// The account's credential fingerprint when issued.
    cfp: String,
}

/// Who an outside login (a directory, a CI job's ID token) stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    /// What the ACL matches as labels (groups, claims).
    pub labels: BTreeMap<String, Vec<String>>,
}

/// Why an outside login did not succeed.
#[derive(Debug)]
pub enum Refusal {
    /// Not good (unknown user, wrong password, a bad token): 401; the
    /// reason goes to the log.
    Invalid(String),
    /// The directory or issuer could not answer: 503, retryable, never an
    /// allow.
    Unavailable(String),
}

/// What a token request yields.
pub struct Issued {
    pub token: String,
    pub refresh_token: Option<String>,
    pub expires_in: u64,
    /// RFC 3339.
    pub issued_at: String,
    /// The granted scopes, OAuth2 style (space-separated).
    pub scope: String,
}

/// The token endpoint for `cfg.token_server`, if configured, and the server
/// behind it (the web UI asks it too). The endpoint's path is relative: the
/// caller mounts it under `http.prefix` with the API. Logins are counted
/// into `metrics`, if given.
pub fn router(
    cfg: &Config,
    logins: &Logins,
    metrics: Option<Arc<Metrics>>,
) -> Result<Option<(Router, Arc<TokenServer>)>, String> {
    let Some(ts_cfg) = &cfg.token_server else {
        return Ok(None);
    };
    let mut ts = TokenServer::new(ts_cfg, logins)?;
    ts.metrics = metrics;
    let ts = Arc::new(ts);
    tracing::info!(
        path = %ts_cfg.path,
        alg = ?ts.key.alg,
        kid = %ts.key.kid,
        service = %ts.service,
        "token server on"
    );
    let endpoint = Router::new()
        .route(&ts_cfg.path, get(handlers::get).post(handlers::post))
        .with_state(ts.clone());
    Ok(Some((endpoint, ts)))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenServer {
    /// Reads the key, certificate and htpasswd file and compiles the ACL;
    /// errors name the key.
    pub fn new(cfg: &TokenServerConfig, logins: &Logins) -> Result<TokenServer, String> {
        cfg.validate()?;
        Ok(TokenServer {
            issuer: cfg.issuer.clone(),
            service: cfg.service.clone(),
            expiration: cfg.expiration,
            refresh_expiration: cfg.refreshexpiration,
            anonymous: cfg.anonymous,
            labels: cfg.labels.clone(),
            key: Arc::new(SigningKey::load(cfg)?),
            accounts: Accounts::new(cfg, logins.queue.clone())?,
            oidc: oidc::Oidc::new(&cfg.oidc)?,
            directory: ldap::Directory::new(cfg.ldap.as_ref())?,
            acl: Acl::compile(&cfg.acl)?,
            throttle: Throttle::new(&cfg.throttle),
            clients: logins.clients.clone(),
            failed_logins: AtomicU64::new(0),
            metrics: None,
        })
    }

    /// Count a checked login (password or refresh token).
    fn attempt(&self, success: bool) {
        if let Some(m) = &self.metrics {
            m.auth_attempt("token_server", if success { "success" } else { "failure" });
        }
    }

    /// Refresh tokens' audience: never a registry's `service`, so a refresh
    /// token is no access token and the other way round.
    fn refresh_audience(&self) -> String {
        format!("berth-refresh-token:{}", self.service)
    }

    /// Who the ACL sees: `account` with `labels` (an ID token's claims, a
    /// directory's groups) or else the account's configured ones.
    fn subject<'a>(
        &'a self,
        account: &'a str,
        labels: Option<&'a BTreeMap<String, Vec<String>>>,
        ip: Option<IpAddr>,
    ) -> Subject<'a> {
        static NONE: BTreeMap<String, Vec<String>> = BTreeMap::new();
        Subject {
            account,
            labels: labels.unwrap_or_else(|| self.labels.get(account).unwrap_or(&NONE)),
            ip,
        }
    }

    /// The access entries `account` gets for `scopes`, matched with
    /// `labels` (an ID token's claims) or else the account's configured ones.
    fn grant(
        &self,
        account: &str,
        labels: Option<&BTreeMap<String, Vec<String>>>,
        scopes: &[Scope],
        ip: Option<IpAddr>,
    ) -> Vec<Entry> {
        let who = self.subject(account, labels, ip);
        scopes
            .iter()
            .map(|s| {
                let decision = self.acl.decide(&who, &s.kind, &s.name);
                let actions = decision
                    .as_ref()
                    .map(|d| acl::grant(&s.actions, d.actions))
                    .unwrap_or_default();
                tracing::debug!(
                    account,
                    scope = %s.render(&s.actions),
                    rule = ?decision.as_ref().map(|d| d.index),
                    comment = ?decision.as_ref().and_then(|d| d.comment),
                    granted = ?actions,
                    "acl"
                );
                Entry {
                    kind: s.kind.clone(),
                    class: s.class.clone(),
                    name: s.name.clone(),
                    actions,
                }
            })
            .collect()
    }

    /// Sign an access token (and a refresh token if `offline`) for `account`,
    /// who authenticated `via` (basic, anonymous, password, refresh_token, oidc).
    async fn issue(
        &self,
        account: &str,
        labels: Option<&BTreeMap<String, Vec<String>>>,
        scopes: &[Scope],
        ip: Option<IpAddr>,
        offline: bool,
        via: &str,
    ) -> Result<Issued, String> {
        let access = self.grant(account, labels, scopes, ip);
        let scope = scopes
            .iter()
            .zip(&access)
            .filter(|(_, e)| !e.actions.is_empty())
            .map(|(s, e)| s.render(&e.actions))
            .collect::<Vec<_>>()
            .join(" ");
        let iat = unix_now();
        let claims = serde_json::to_value(AccessClaims {
            iss: &self.issuer,
            sub: account,
            aud: &self.service,
            exp: iat + self.expiration,
            nbf: iat.saturating_sub(NOT_BEFORE_SKEW),
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        })
        .map_err(|e| e.to_string())?;
        let refresh = match offline {
            true => Some(self.refresh_claims(account, iat)?),
            false => None,
        };
        // RSA signing costs milliseconds of CPU: off the async workers.
        let key = self.key.clone();
        let (token, refresh_token) = tokio::task::spawn_blocking(move || {
            let token = key.sign(&claims)?;
            let refresh = refresh.map(|r| key.sign(&r)).transpose()?;
            Ok::<_, String>((token, refresh))
        })
        .await
        .map_err(|e| e.to_string())??;
        tracing::info!(
            account,
            client = ?ip,
            via = %via,
            scope = %scope,
            refresh = refresh_token.is_some(),
            "token issued"
        );
        Ok(Issued {
            token,
            refresh_token,
            expires_in: self.expiration,
            issued_at: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(iat))
                .to_string(),
            scope,
        })
    }

    fn refresh_claims(&self, account: &str, iat: u64) -> Result<RefreshClaims, String> {
        let cfp = self
            .accounts
            .fingerprint(account)
            .ok_or_else(|| format!("no refresh token for {account:?}: not a known account"))?;
        Ok(RefreshClaims {
            iss: self.issuer.clone(),
            sub: account.to_string(),
            aud: self.refresh_audience(),
            exp: iat + self.refresh_expiration,
            nbf: iat.saturating_sub(NOT_BEFORE_SKEW),
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            cfp,
        })
    }

    /// The account a refresh token stands for, if it is ours, unexpired, and
    /// the account's password has not changed since.
    fn refresh_account(&self, token: &str) -> Result<String, String> {
        let claims: RefreshClaims = self
            .key
            .verify(token, &self.issuer, &self.refresh_audience())
            .map_err(|e| format!("invalid refresh token: {e}"))?;
        match self.accounts.fingerprint(&claims.sub) {
            Some(f) if f == claims.cfp => Ok(claims.sub),
            _ => Err(format!(
                "refresh token of {:?} revoked: account removed or password changed",
                claims.sub
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, kp.serialize_pem()).unwrap();
        let cfg = TokenServerConfig {
            path: "/auth/token".into(),
            issuer: "iss".into(),
            service: "svc".into(),
            signingkey: key.display().to_string(),
            expiration: 300,
            refreshexpiration: 3600,
            anonymous: true,
            ..Default::default()
        };
        let logins = Logins {
            queue: Arc::new(crate::auth::bcrypt_queue::BcryptQueue::new(8)),
            clients: Arc::default(),
        };
        TokenServer::new(&cfg, &logins).unwrap()
    }

    #[tokio::test]
    async fn refresh_tokens_are_not_access_tokens() {
        let ts = server();
        // No static users: an anonymous-only server issues no refresh tokens.
        assert!(ts
            .issue("", None, &[], None, true, "anonymous")
            .await
            .is_err());
        let issued = ts
            .issue("", None, &[], None, false, "anonymous")
            .await
            .unwrap();
        assert!(ts.refresh_account(&issued.token).is_err(), "wrong audience");
    }
}
