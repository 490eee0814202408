//! Access control: who may do what. The HTTP layer asks [`Authenticator`]
//! about each request with the accesses its route needs ([`access`]); the answer
//! is an identity or a denial that `api` renders as a challenge (401) or 403.

pub mod access;
pub mod htpasswd;
pub mod throttle;
pub mod token;
pub mod token_server;

use axum::http::HeaderMap;
use base64::{engine::general_purpose::STANDARD, Engine};

use crate::config::auth::{AuthConfig, TokenConfig};
use access::{scope_string, Access};
use htpasswd::Htpasswd;
use token::{TokenRejection, TokenVerifier};

/// Why a request was not let through.
#[derive(Debug)]
pub enum Denial {
    /// 401: authenticate (again). `challenge` is the WWW-Authenticate value.
    Challenge { challenge: String, message: String },
    /// 403: authenticated, and not allowed.
    Forbidden(String),
}

pub enum Authenticator {
    Htpasswd {
        realm: String,
        users: Htpasswd,
    },
    Token {
        cfg: TokenConfig,
        verifier: TokenVerifier,
    },
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
    pub fn from_config(cfg: &AuthConfig) -> Result<Option<Authenticator>, String> {
        if let Some(h) = &cfg.htpasswd {
            let users = Htpasswd::load(&h.path).map_err(|e| format!("auth.htpasswd.path: {e}"))?;
            return Ok(Some(Authenticator::Htpasswd {
                realm: h.realm.clone(),
                users,
            }));
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
            Authenticator::Htpasswd { .. } => "basic",
            Authenticator::Token { .. } => "bearer",
        }
    }

    /// Whether the request carries credentials of this authenticator's kind
    /// (a request without is the usual first step, not a failed attempt).
    pub fn credentials_presented(&self, headers: &HeaderMap) -> bool {
        match self {
            Authenticator::Htpasswd { .. } => basic_credentials(headers).is_some(),
            Authenticator::Token { .. } => bearer_token(headers).is_some(),
        }
    }

    /// Let the request through (returning the account name) or deny it.
    /// `origin` is `<scheme>://<host>` of the request, for `autoredirect`.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        need: &[Access],
        origin: &str,
    ) -> Result<String, Denial> {
        match self {
            Authenticator::Htpasswd { realm, users } => {
                let challenge = format!("Basic realm=\"{realm}\"");
                let Some((user, password)) = basic_credentials(headers) else {
                    return Err(Denial::Challenge {
                        challenge,
                        message: "authentication required".into(),
                    });
                };
                if users.verify(&user, &password).await {
                    Ok(user)
                } else {
                    tracing::warn!(user = %user, "failed login");
                    Err(Denial::Challenge {
                        challenge,
                        message: "invalid username or password".into(),
                    })
                }
            }
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
                        tracing::warn!(reason = %why, "token refused");
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
