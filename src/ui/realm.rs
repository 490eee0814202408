//! The UI as a client of an outside token server (`auth.token.realm` that
//! is not this process's own): logging in asks the realm for a refresh
//! token (docker's `offline_token`), and every page asks it, with that
//! refresh token (or anonymously), for a token covering the repositories
//! on the page, whose `access` claim (checked with `auth.token`'s keys)
//! says what the account may do there — the realm's rules, applied by the
//! realm.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::HeaderMap;
use serde::Deserialize;

use crate::{
    auth::{
        client::ClientAddress,
        throttle::Throttle,
        token::{ResourceActions, TokenVerifier},
    },
    config::{auth::TokenConfig, Config},
};

/// Scopes asked for in one token request (docker_auth and Berth's token
/// server take 64).
const SCOPES_PER_REQUEST: usize = 50;

/// A token server's answer is a few KiB; more is refused.
const MAX_ANSWER: usize = 256 * 1024;

/// How long one token request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The UI's client id at the realm (docker's spec asks for one).
const CLIENT_ID: &str = "berth-ui";

pub struct Realm {
    cfg: TokenConfig,
    /// Where the realm is: `auth.token.realm`, or with `autoredirect` under
    /// `http.host` (never a request's Host: see `config::Config::validate`).
    url: String,
    http: reqwest::Client,
    /// Failed UI logins per client, as `/v2/` Basic logins are throttled:
    /// the realm sees every guess come from this registry's address.
    throttle: Throttle,
    clients: Arc<ClientAddress>,
}

/// Why the realm said no, or could not say.
#[derive(Debug)]
pub enum RealmError {
    /// 401: wrong credentials, or a refresh token no longer good.
    Refused(String),
    /// Too many failed logins from this client: retry after this long.
    Throttled(Duration),
    /// The realm could not be asked or answered nonsense: retryable.
    Unavailable(String),
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Who asks: an account's refresh token, a password (at login), or nobody.
pub enum Credential<'a> {
    Anonymous,
    Password(&'a str, &'a str),
    Refresh(&'a str),
}

impl Realm {
    pub fn new(cfg: &TokenConfig, config: &Config) -> Result<Realm, String> {
        crate::config::tls::install_default_provider();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("ui: token server client: {e}"))?;
        let url = if cfg.autoredirect {
            let path = match cfg.autoredirectpath.as_str() {
                "" => "/auth/token",
                p => p,
            };
            format!(
                "{}{}{path}",
                config.http.host.trim_end_matches('/'),
                config.http.prefix.trim_end_matches('/')
            )
        } else {
            cfg.realm.clone()
        };
        let logins = crate::auth::Logins::from_config(config)?;
        Ok(Realm {
            cfg: cfg.clone(),
            url,
            http,
            throttle: Throttle::new(&Default::default()),
            clients: logins.clients,
        })
    }

    /// Who a request comes from (`http.trustedproxies`).
    pub fn client(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        self.clients.resolve(headers, peer)
    }

    /// One token request for `scopes`; the token and the refresh token.
    async fn ask(
        &self,
        who: &Credential<'_>,
        scopes: &[String],
        offline: bool,
    ) -> Result<(String, Option<String>), RealmError> {
        let url = &self.url;
        let mut form: Vec<(&str, &str)> =
            vec![("service", &self.cfg.service), ("client_id", CLIENT_ID)];
        let joined = scopes.join(" ");
        if !scopes.is_empty() {
            form.push(("scope", &joined));
        }
        let request = match who {
            // OAuth2's refresh grant (docker's spec: POST, form-encoded).
            Credential::Refresh(rt) => {
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", rt));
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&form)
                    .finish();
                self.http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
            }
            // What docker does: GET with Basic credentials (or none).
            Credential::Password(..) | Credential::Anonymous => {
                if offline {
                    form.push(("offline_token", "true"));
                }
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&form)
                    .finish();
                let sep = if url.contains('?') { '&' } else { '?' };
                let mut r = self.http.get(format!("{url}{sep}{query}"));
                if let Credential::Password(user, password) = who {
                    r = r.basic_auth(user, Some(password));
                }
                r
            }
        };
        let resp = request
            .send()
            .await
            .map_err(|e| RealmError::Unavailable(format!("token server {url}: {e}")))?;
        let status = resp.status();
        let body = crate::outbound::read_capped(resp, MAX_ANSWER)
            .await
            .map_err(|e| RealmError::Unavailable(format!("token server {url}: {e}")))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(RealmError::Refused("invalid username or password".into()));
        }
        if !status.is_success() {
            return Err(RealmError::Unavailable(format!(
                "token server {url} answered {status}"
            )));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| RealmError::Unavailable(format!("token server {url}: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| RealmError::Unavailable(format!("token server {url}: no token")))?;
        Ok((token, answer.refresh_token))
    }

    /// A login: the account and its refresh token. A realm that issues no
    /// refresh token cannot back a UI session (every page asks again).
    pub async fn login(
        &self,
        verifier: &TokenVerifier,
        client: Option<IpAddr>,
        user: &str,
        password: &str,
    ) -> Result<(String, String), RealmError> {
        if let Some(ip) = client {
            self.throttle
                .check(ip, Instant::now())
                .map_err(RealmError::Throttled)?;
        }
        let who = Credential::Password(user, password);
        let (token, refresh) = match self.ask(&who, &[], true).await {
            Err(RealmError::Refused(why)) => {
                if let Some(ip) = client {
                    self.throttle.failure(ip, Instant::now());
                }
                return Err(RealmError::Refused(why));
            }
            other => other?,
        };
        let (account, _) = verifier
            .granted(&token)
            .map_err(|e| RealmError::Unavailable(format!("the token server's token: {e:?}")))?;
        if account.is_empty() {
            // The typed name would stand in audit lines for an account the
            // realm never named.
            return Err(RealmError::Unavailable(
                "the token server's token names no account (sub)".into(),
            ));
        }
        let refresh = refresh.ok_or_else(|| {
            RealmError::Unavailable(
                "the token server issued no refresh token (offline_token), which the UI's \
                 session needs"
                    .into(),
            )
        })?;
        Ok((account, refresh))
    }

    /// The actions granted on each repository of `names`, in order.
    pub async fn repository_actions(
        &self,
        verifier: &TokenVerifier,
        who: &Credential<'_>,
        names: &[String],
    ) -> Result<Vec<Vec<String>>, RealmError> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(SCOPES_PER_REQUEST) {
            let scopes: Vec<String> = chunk
                .iter()
                .map(|n| format!("repository:{n}:pull,delete"))
                .collect();
            let (token, _) = self.ask(who, &scopes, false).await?;
            let (_, access) = verifier
                .granted(&token)
                .map_err(|e| RealmError::Unavailable(format!("the token server's token: {e:?}")))?;
            out.extend(chunk.iter().map(|n| actions_on(&access, n)));
        }
        Ok(out)
    }
}

fn actions_on(access: &[ResourceActions], name: &str) -> Vec<String> {
    access
        .iter()
        .filter(|a| a.kind == "repository" && a.name == name)
        .flat_map(|a| a.actions.iter().cloned())
        .collect()
}
