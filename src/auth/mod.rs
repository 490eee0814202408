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

use std::{net::SocketAddr, sync::Arc, time::Duration};

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
                return Err(
                    "token_server.trustedproxies: replaced by http.trustedproxies \
                            (shared with Basic logins); set only that one"
                        .into(),
                )
            }
        };
        Ok(Logins {
            queue: Arc::new(BcryptQueue::new(cfg.http.loginqueue)),
            clients: Arc::new(clients),
        })
    }
}

/// Access control as configured: what [`build`] makes.
#[derive(Default)]
pub struct AccessControl {
    /// Checks `/v2/` requests; None: no access control.
    pub authenticator: Option<Authenticator>,
    /// The token endpoint (its path relative: the caller mounts it under
    /// `http.prefix`), when Berth's own token server runs.
    pub token_endpoint: Option<Router>,
    /// That token server, for the web UI's logins and ACL decisions.
    pub token_server: Option<Arc<token_server::TokenServer>>,
}

/// Everything access control needs, as configured; errors name the
/// configuration key. Token server logins are counted into `metrics`.
pub fn build(cfg: &Config, metrics: Option<Arc<Metrics>>) -> Result<AccessControl, String> {
    let logins = Logins::from_config(cfg)?;
    // The token server first: its key also signs what `auth.token` checks,
    // so a missing key is reported as the key's problem.
    let (token_endpoint, token_server) = token_server::router(cfg, &logins, metrics)?.unzip();
    let authenticator = match &cfg.auth {
        Some(a) => Authenticator::from_config(a, &logins)?,
        None => None,
    };
    Ok(AccessControl {
        authenticator,
        token_endpoint,
        token_server,
    })
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
    let basic =
        cfg.auth.as_ref().is_some_and(|a| a.htpasswd.is_some()) || cfg.token_server.is_some();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(&format!("storage:\n  inmemory: {{}}\n{yaml}")).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plaintext_is_flagged_only_where_credentials_cross_a_network() {
        let htpasswd = "auth:\n  htpasswd:\n    path: /x\n";
        let token = "auth:\n  token:\n    realm: r\n    service: s\n    issuer: i\n    jwks: /j\n";
        let public = addr("0.0.0.0:5000");
        assert_eq!(
            plaintext_exposure(&config(htpasswd), public),
            Some("Basic credentials (passwords)")
        );
        assert_eq!(
            plaintext_exposure(&config(token), addr("10.1.2.3:5000")),
            Some("bearer tokens")
        );
        assert_eq!(plaintext_exposure(&config(""), public), None, "no auth");
        assert_eq!(
            plaintext_exposure(&config(htpasswd), addr("127.0.0.1:5000")),
            None
        );
        assert_eq!(
            plaintext_exposure(&config(htpasswd), addr("[::1]:5000")),
            None
        );
        let behind_tls = format!("http:\n  host: https://registry.example.com\n{htpasswd}");
        assert_eq!(plaintext_exposure(&config(&behind_tls), public), None);
    }

    #[test]
    fn trusted_proxies_are_one_setting() {
        let yaml = |http: &str, ts: &str| {
            format!(
                "http:\n  addr: 127.0.0.1:5000\n{http}token_server:\n  issuer: i\n  service: s\n  \
                 signingkey: /k\n  anonymous: true\n{ts}"
            )
        };
        let peer = Some(addr("10.0.0.1:1"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
        let client = |y: String| {
            Logins::from_config(&config(&y))
                .map(|l| l.clients.resolve(&h, peer).unwrap().to_string())
        };
        let shared = client(yaml("  trustedproxies: [10.0.0.0/8]\n", ""));
        assert_eq!(shared.unwrap(), "198.51.100.1");
        // The token server's old key still works alone...
        let legacy = client(yaml("", "  trustedproxies: [10.0.0.0/8]\n"));
        assert_eq!(legacy.unwrap(), "198.51.100.1");
        // ...but not beside the new one, and bad entries name their key.
        let both = client(yaml(
            "  trustedproxies: [10.0.0.0/8]\n",
            "  trustedproxies: [10.0.0.0/8]\n",
        ));
        assert!(both.unwrap_err().starts_with("token_server.trustedproxies"));
        let bad = client(yaml("  trustedproxies: proxy\n", ""));
        assert!(bad.unwrap_err().starts_with("http.trustedproxies: "));
        assert_eq!(client(yaml("", "")).unwrap(), "10.0.0.1", "none trusted");
    }

    /// `/v2/` Basic logins and the token server's wait in one queue: with
    /// it full, both refuse without checking.
    #[tokio::test]
    async fn one_bcrypt_queue_for_every_login() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, format!("alice:{hash}\n")).unwrap();
        let queue = Arc::new(BcryptQueue::with_slots(1, 0));
        let logins = Logins {
            queue: queue.clone(),
            clients: Arc::default(),
        };
        let cfg = config(&format!(
            "auth:\n  htpasswd:\n    path: {}\n    throttle:\n      maxfailures: 0\n",
            file.display()
        ));
        let basic = BasicAuth::new(
            cfg.auth.as_ref().unwrap().htpasswd.as_ref().unwrap(),
            &logins,
        )
        .unwrap();
        let ts_cfg = crate::config::token_server::TokenServerConfig {
            users: [("bob".to_string(), hash)].into(),
            ..Default::default()
        };
        let accounts = token_server::accounts::Accounts::new(&ts_cfg, queue.clone()).unwrap();
        let mut headers = HeaderMap::new();
        let creds = STANDARD.encode("alice:pw");
        headers.insert("authorization", format!("Basic {creds}").parse().unwrap());

        let held = queue.hold_for_test();
        let denied = basic.authorize(&headers, None).await;
        assert!(
            matches!(denied, Err(Denial::TooManyRequests { .. })),
            "{denied:?}"
        );
        assert_eq!(accounts.verify("bob", "pw").await, Err(bcrypt_queue::Busy));
        drop(held);
        assert_eq!(basic.authorize(&headers, None).await.unwrap(), "alice");
        assert_eq!(accounts.verify("bob", "pw").await, Ok(true));
    }

    #[test]
    fn loggable_names_are_bounded() {
        assert_eq!(loggable("alice"), "alice");
        assert_eq!(loggable(&"é".repeat(500)).chars().count(), 128);
    }
}

/// Property test: any Authorization header is read without a panic, and
/// Basic credentials round-trip.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn any_authorization_header_is_read_safely(value in "[ -~]{0,200}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = value.parse() {
                h.insert("authorization", v);
            }
            let _ = basic_credentials(&h);
            let _ = bearer_token(&h);
        }

        #[test]
        fn basic_credentials_round_trip(user in "[^:]{0,40}", password in "\\PC{0,40}") {
            let mut h = HeaderMap::new();
            let v = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
            h.insert("authorization", v.parse().unwrap());
            prop_assert_eq!(basic_credentials(&h), Some((user, password)));
        }
    }
}
