//! Access control: who may do what. The HTTP layer asks [`Authenticator`]
//! about each request with the accesses its route needs ([`access`]); the answer
//! is an identity or a denial that `api` renders as a challenge (401), 403,
//! or 429 (throttled, or too many password checks waiting).
//!
//! [`build`] makes everything authentication needs from the configuration —
//! files read, keys parsed, patterns compiled — and is what `berth config
//! check` runs too, so a bad file is a configuration error naming its key.

pub mod access;
mod basic;
pub mod bcrypt_queue;
pub mod client;
pub mod htpasswd;
pub mod throttle;
pub mod token;
pub mod token_server;
mod x5c;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use axum::{http::HeaderMap, Router};
use base64::{engine::general_purpose::STANDARD, Engine};

use crate::{
    config::{auth::TokenConfig, Config},
    telemetry::metrics::Metrics,
};
use access::{scope_string, Access};
use basic::BasicAuth;
use bcrypt_queue::BcryptQueue;
use client::ClientAddress;
use token::{TokenRejection, TokenVerifier};

/// Why a request was not let through.
#[derive(Debug)]
pub enum Denial {
    /// 401: authenticate (again). `challenge` is the WWW-Authenticate value.
    Challenge { challenge: String, message: String },
    /// 403: authenticated, and not allowed.
    Forbidden(String),
    /// 429 with Retry-After: too many failed logins from this client, or
    /// too many password checks waiting; the credentials were not checked.
    TooManyRequests {
        retry_after: Duration,
        message: String,
    },
}

pub enum Authenticator {
    Htpasswd(BasicAuth),
    Token {
        cfg: TokenConfig,
        verifier: TokenVerifier,
    },
}

/// What every login of the process shares: the one bcrypt queue and the
/// rule for telling clients apart (`http.trustedproxies`).
pub struct Logins {
    pub queue: Arc<BcryptQueue>,
    pub clients: Arc<ClientAddress>,
}

impl Logins {
    pub fn from_config(cfg: &Config) -> Result<Logins, String> {
        let legacy = cfg
            .token_server
            .as_ref()
            .map_or(&[][..], |t| &t.trustedproxies[..]);
        let clients = match (cfg.http.trustedproxies.is_empty(), legacy.is_empty()) {
            (_, true) => ClientAddress::new("http.trustedproxies", &cfg.http.trustedproxies)?,
            (true, false) => ClientAddress::new("token_server.trustedproxies", legacy)?,
            (false, false) => {
                return Err("token_server.trustedproxies: replaced by http.trustedproxies \
                            (shared with Basic logins); set only that one"
                    .into())
            }
        };
        Ok(Logins {
            queue: Arc::new(BcryptQueue::new(cfg.http.loginqueue)),
            clients: Arc::new(clients),
        })
    }
}

/// The `/v2/` authenticator and the token endpoint (its path relative: the
/// caller mounts it under `http.prefix`), as configured; errors name the
/// configuration key. Token server logins are counted into `metrics`.
pub fn build(
    cfg: &Config,
    metrics: Option<Arc<Metrics>>,
) -> Result<(Option<Authenticator>, Option<Router>), String> {
    let logins = Logins::from_config(cfg)?;
    let auth = match &cfg.auth {
        Some(a) => Authenticator::from_config(a, &logins)?,
        None => None,
    };
    let token_server = token_server::router(cfg, &logins, metrics)?;
    Ok((auth, token_server))
}

/// Build everything [`build`] does and throw it away: the checks of `berth
/// config check` and start-up that need files and keys.
pub fn check(cfg: &Config) -> Result<(), String> {
    build(cfg, None).map(|_| ())
}

/// Client-chosen names (users, accounts) as a log field: bounded. Recorded
/// as a `&str`, they are quoted and escaped by both formatters (text: Rust
/// string syntax, so CR/LF cannot start a forged line; JSON: a string) —
/// never log one with `%`, which writes it raw.
pub(crate) fn loggable(name: &str) -> &str {
    const MAX_LOGGED: usize = 128;
    match name.char_indices().nth(MAX_LOGGED) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

/// Why credentials would cross the network in clear from `addr`, if so:
/// authentication is on, the listener is plain HTTP on a non-loopback
/// address, and `http.host` does not say TLS ends in front of it.
pub fn plaintext_exposure(cfg: &Config, addr: SocketAddr) -> Option<&'static str> {
    let basic = cfg.auth.as_ref().is_some_and(|a| a.htpasswd.is_some())
        || cfg.token_server.is_some();
    let bearer = cfg.auth.as_ref().is_some_and(|a| a.token.is_some());
    let tls = cfg.http.tls.as_ref().is_some_and(|t| t.enabled());
    let terminated_in_front = cfg.http.host.starts_with("https://");
    if tls || terminated_in_front || addr.ip().is_loopback() {
        return None;
    }
    match (basic, bearer) {
        (true, _) => Some("Basic credentials (passwords)"),
        (false, true) => Some("bearer tokens"),
        (false, false) => None,
    }
}

/// One warning at start when [`plaintext_exposure`] says so.
pub fn warn_if_plaintext(cfg: &Config, addr: SocketAddr) {
    if let Some(what) = plaintext_exposure(cfg, addr) {
        tracing::warn!(
            addr = %addr,
            "{what} would travel over plain HTTP on a non-loopback address: serve TLS \
             (http.tls), or listen on loopback behind a TLS proxy; if TLS ends at a proxy \
             in front, set http.host to the https:// URL clients use"
        );
    }
}

/// `Basic <base64(user:password)>` → (user, password).
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || rest.len() > 4096 {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

impl Authenticator {
    /// The configured authenticator, if any; errors name the config key.
    pub fn from_config(
        cfg: &crate::config::auth::AuthConfig,
        logins: &Logins,
    ) -> Result<Option<Authenticator>, String> {
        if let Some(h) = &cfg.htpasswd {
            return Ok(Some(Authenticator::Htpasswd(BasicAuth::new(h, logins)?)));
        }
        if let Some(t) = &cfg.token {
            return Ok(Some(Authenticator::Token {
                cfg: t.clone(),
                verifier: TokenVerifier::new(t)?,
            }));
        }
        Ok(None)
    }

    /// The `scheme` label of `berth_auth_attempts_total`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Authenticator::Htpasswd(_) => "basic",
            Authenticator::Token { .. } => "bearer",
        }
    }

    /// Whether the request carries credentials of this authenticator's kind
    /// (a request without is the usual first step, not a failed attempt).
    pub fn credentials_presented(&self, headers: &HeaderMap) -> bool {
        match self {
            Authenticator::Htpasswd(_) => basic_credentials(headers).is_some(),
            Authenticator::Token { .. } => bearer_token(headers).is_some(),
        }
    }

    /// Let the request through (returning the account name) or deny it.
    /// `origin` is `<scheme>://<host>` of the request, for `autoredirect`;
    /// `peer` the TCP peer, for the failed-login throttle.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        need: &[Access],
        origin: &str,
        peer: Option<SocketAddr>,
    ) -> Result<String, Denial> {
        match self {
            Authenticator::Htpasswd(basic) => basic.authorize(headers, peer).await,
            Authenticator::Token { cfg, verifier } => {
                let realm = if cfg.autoredirect {
                    let path = if cfg.autoredirectpath.is_empty() {
                        "/auth/token"
                    } else {
                        &cfg.autoredirectpath
                    };
                    format!("{origin}{path}")
                } else {
                    cfg.realm.clone()
                };
                let mut challenge = format!("Bearer realm=\"{realm}\",service=\"{}\"", cfg.service);
                if !need.is_empty() {
                    challenge.push_str(&format!(",scope=\"{}\"", scope_string(need)));
                }
                let Some(token) = bearer_token(headers) else {
                    return Err(Denial::Challenge {
                        challenge,
                        message: "authentication required".into(),
                    });
                };
                match verifier.verify(token, need) {
                    Ok(sub) => Ok(sub),
                    Err(TokenRejection::Invalid(why)) => {
                        tracing::warn!(reason = why.as_str(), "token refused");
                        Err(Denial::Challenge {
                            challenge: format!("{challenge},error=\"invalid_token\""),
                            message: why,
                        })
                    }
                    Err(TokenRejection::InsufficientScope) => Err(Denial::Challenge {
                        challenge: format!("{challenge},error=\"insufficient_scope\""),
                        message: "insufficient scope".into(),
                    }),
                    Err(TokenRejection::Denied(why)) => Err(Denial::Forbidden(why)),
                }
            }
        }
    }
}
