//! The two forms of the token endpoint:
//! - GET `?service=&scope=&account=&offline_token=&client_id=` with Basic
//!   credentials (or none, for anonymous) → `{token, access_token, expires_in,
//!   issued_at, refresh_token?}` (docker's token spec);
//! - POST `application/x-www-form-urlencoded` OAuth2, `grant_type=password`
//!   or `refresh_token` → `{access_token, token_type, expires_in, scope,
//!   issued_at, refresh_token?}` (what `docker login` uses).
//!
//! Errors are the registry's JSON error bodies (docker prints their message),
//! with the RFC 6749 `error` field alongside for OAuth2 clients.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header, request::Parts, Extensions, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};

use super::{scope, Identity, Issued, Refusal, TokenServer};
use crate::auth::bcrypt_queue;

/// POST bodies larger than this are refused: a form holds a few fields.
const MAX_FORM: usize = 16 * 1024;

/// Refusals are whole responses, boxed: a Response is large to move around.
type Result<T> = std::result::Result<T, Box<Response>>;

fn error(status: StatusCode, code: &str, oauth: &str, message: &str) -> Response {
    let body = json!({
        "errors": [{ "code": code, "message": message }],
        "error": oauth,
        "error_description": message,
    });
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn bad_request(message: &str) -> Box<Response> {
    // distribution's UNSUPPORTED: "... or invalid set of parameters".
    Box::new(error(
        StatusCode::BAD_REQUEST,
        "UNSUPPORTED",
        "invalid_request",
        message,
    ))
}

fn unauthorized(ts: &TokenServer, message: &str) -> Box<Response> {
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "invalid_grant",
        message,
    );
    let realm = ts.issuer.replace('"', "'");
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    Box::new(resp)
}

/// 429 with Retry-After (whole seconds, rounded up); `why` may say `{secs}`.
fn too_many(wait: Duration, why: &str) -> Box<Response> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOOMANYREQUESTS",
        "temporarily_unavailable",
        &why.replace("{secs}", &secs.to_string()),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    Box::new(resp)
}

/// The login cannot be checked right now (an OIDC issuer's keys or the
/// directory out of reach): never an "allow", a retryable refusal.
fn unavailable(why: &str) -> Box<Response> {
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "temporarily_unavailable",
        why,
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(5u64));
    Box::new(resp)
}

fn internal(e: String) -> Box<Response> {
    tracing::error!(error = %e, "token server: cannot issue a token");
    Box::new(error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "server_error",
        "cannot issue a token",
    ))
}

fn token_response(body: Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            // RFC 6749 5.1: tokens must not be cached.
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Client-chosen text for a log field or a message: bounded (and, recorded
/// as a `&str`, quoted and escaped by the log formatters).
fn truncated(s: &str) -> &str {
    crate::auth::loggable(s)
}

/// Decoded `k=v` pairs of a query string or form body.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(s: &[u8]) -> Params {
        Params(url::form_urlencoded::parse(s).into_owned().collect())
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn scopes(&self) -> Result<Vec<scope::Scope>> {
        scope::parse_all(
            self.0
                .iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.as_str()),
        )
        .map_err(|e| bad_request(&e))
    }
}

impl TokenServer {
    fn check_service(&self, p: &Params) -> Result<()> {
        match p.one("service") {
            None => Err(bad_request("service is required")),
            Some(s) if s == self.service => Ok(()),
            Some(s) => Err(bad_request(&format!(
                "this token server does not issue tokens for service {:?}",
                truncated(s)
            ))),
        }
    }

    /// Count and log a failed login, feeding the throttle.
    fn failed(&self, account: &str, client: Option<IpAddr>, why: &str) {
        self.attempt(false);
        let total = self.failed_logins.fetch_add(1, Ordering::Relaxed) + 1;
        let recent = client.map(|ip| self.throttle.failure(ip, Instant::now()));
        tracing::warn!(
            account = truncated(account),
            client = ?client,
            failures_from_client = ?recent,
            failed_logins_total = total,
            reason = why,
            "token server: failed login"
        );
    }

    /// Refused while the client is throttled; its credentials are not even checked.
    fn throttled(&self, account: &str, client: Option<IpAddr>) -> Result<()> {
        let Some(ip) = client else { return Ok(()) };
        self.throttle.check(ip, Instant::now()).map_err(|wait| {
            tracing::warn!(account = truncated(account), client = %ip, "token server: throttled");
            too_many(
                wait,
                "too many failed logins from this address; retry in {secs} s",
            )
        })
    }

    pub(super) async fn login(
        &self,
        user: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Login> {
        self.throttled(user, client)?;
        if let Some(oidc) = self.oidc.as_ref().filter(|o| o.claims(password)) {
            let verdict = oidc.verify(password).await;
            return self.outside(verdict, "oidc", user, client);
        }
        // Local accounts first (none configured: no bcrypt stand-in to pay).
        let local = match self.accounts.is_empty() {
            true => Ok(false),
            false => self.accounts.verify(user, password).await,
        };
        match local {
            Ok(true) => {
                self.attempt(true);
                return Ok(Login::account(user));
            }
            Ok(false) => {}
            Err(busy) => return Err(too_many(bcrypt_queue::RETRY_AFTER, &busy.to_string())),
        }
        if let Some(directory) = &self.directory {
            let verdict = directory.login(user, password).await.map(|mut id| {
                // The account's configured labels, and its groups.
                let mut labels = self.labels.get(&id.account).cloned().unwrap_or_default();
                labels.append(&mut id.labels);
                id.labels = labels;
                id
            });
            return self.outside(verdict, "ldap", user, client);
        }
        self.failed(user, client, "invalid username or password");
        Err(unauthorized(self, "invalid username or password"))
    }

    /// The answer to a login someone else checked (`via`: `oidc`, a CI
    /// job's ID token; `ldap`, a directory): the identity, with no refresh
    /// token; a failed login; or, when it could not be checked, 503.
    fn outside(
        &self,
        verdict: std::result::Result<Identity, Refusal>,
        via: &'static str,
        user: &str,
        client: Option<IpAddr>,
    ) -> Result<Login> {
        let (refused, unreachable) = match via {
            "oidc" => (
                "invalid ID token",
                "the ID token's issuer cannot be reached; retry later",
            ),
            _ => (
                "invalid username or password",
                "the directory cannot be reached; retry later",
            ),
        };
        match verdict {
            Ok(id) => {
                self.attempt(true);
                tracing::info!(account = %id.account, labels = ?id.labels, via, "token server: login");
                Ok(Login {
                    account: id.account,
                    via,
                    labels: Some(id.labels),
                    refreshable: false,
                })
            }
            Err(Refusal::Invalid(why)) => {
                self.failed(user, client, &format!("{via}: {why}"));
                Err(unauthorized(self, refused))
            }
            Err(Refusal::Unavailable(why)) => {
                tracing::warn!(reason = why, via, "token server: login cannot be checked");
                Err(unavailable(unreachable))
            }
        }
    }
}

/// Who logged in.
pub(super) struct Login {
    pub(super) account: String,
    /// How: `basic` (a password), `oidc`, `ldap`, `refresh_token`, `anonymous`.
    via: &'static str,
    /// From an ID token's claims; `None`: the account's configured labels.
    pub(super) labels: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Refresh tokens are never issued for ID-token logins.
    refreshable: bool,
}

impl Login {
    fn account(name: &str) -> Login {
        Login {
            account: name.to_string(),
            via: "basic",
            labels: None,
            refreshable: true,
        }
    }
}

fn peer(ext: &Extensions) -> Option<SocketAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Basic credentials; None without an Authorization header.
fn credentials(ts: &TokenServer, headers: &HeaderMap) -> Result<Option<(String, String)>> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    crate::auth::basic_credentials(headers)
        .map(Some)
        .ok_or_else(|| unauthorized(ts, "credentials must be HTTP Basic"))
}

pub(super) async fn get(State(ts): State<Arc<TokenServer>>, req: Request<Body>) -> Response {
    // Only the head is needed (a Body is not Sync, so no &Request across awaits).
    let (head, _) = req.into_parts();
    get_token(&ts, &head).await.unwrap_or_else(|e| *e)
}

async fn get_token(ts: &TokenServer, req: &Parts) -> Result<Response> {
    let client = ts.clients.resolve(&req.headers, peer(&req.extensions));
    let p = Params::parse(req.uri.query().unwrap_or("").as_bytes());
    ts.check_service(&p)?;
    let scopes = p.scopes()?;
    let (user, login) = match credentials(ts, &req.headers)? {
        Some((user, password)) => {
            let login = ts.login(&user, &password, client).await?;
            (user, login)
        }
        None if ts.anonymous => (String::new(), Login::account("")),
        None => return Err(unauthorized(ts, "authentication required")),
    };
    // `account` is the login name given (an ID token's account is its own).
    if p.one("account").is_some_and(|a| a != user) {
        return Err(bad_request("account does not match the credentials"));
    }
    let offline =
        p.one("offline_token") == Some("true") && !login.account.is_empty() && login.refreshable;
    let via = if login.account.is_empty() {
        "anonymous"
    } else {
        login.via
    };
    let issued = ts
        .issue(
            &login.account,
            login.labels.as_ref(),
            &scopes,
            client,
            offline,
            via,
        )
        .await
        .map_err(internal)?;
    let mut body = json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
    });
    if let Some(r) = issued.refresh_token {
        body["refresh_token"] = r.into();
    }
    Ok(token_response(body))
}

pub(super) async fn post(State(ts): State<Arc<TokenServer>>, req: Request<Body>) -> Response {
    post_token(&ts, req).await.unwrap_or_else(|e| *e)
}

async fn post_token(ts: &TokenServer, req: Request<Body>) -> Result<Response> {
    let client = ts.clients.resolve(req.headers(), peer(req.extensions()));
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(bad_request(
            "expected an application/x-www-form-urlencoded body",
        ));
    }
    let body = axum::body::to_bytes(req.into_body(), MAX_FORM)
        .await
        .map_err(|_| bad_request("form body too large or unreadable"))?;
    let p = Params::parse(&body);
    ts.check_service(&p)?;
    let scopes = p.scopes()?;
    let grant = p.one("grant_type").unwrap_or_default();
    let login = match p.one("grant_type") {
        Some("password") => {
            let (Some(user), Some(password)) = (p.one("username"), p.one("password")) else {
                return Err(bad_request("username and password are required"));
            };
            ts.login(user, password, client).await?
        }
        Some("refresh_token") => {
            let Some(token) = p.one("refresh_token") else {
                return Err(bad_request("refresh_token is required"));
            };
            ts.throttled("(refresh token)", client)?;
            match ts.refresh_account(token) {
                Ok(account) => {
                    ts.attempt(true);
                    Login {
                        via: "refresh_token",
                        ..Login::account(&account)
                    }
                }
                Err(why) => {
                    ts.failed("(refresh token)", client, &why);
                    return Err(unauthorized(ts, "invalid or revoked refresh token"));
                }
            }
        }
        Some(other) => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "unsupported_grant_type",
                &format!("unsupported grant_type {:?}", truncated(other)),
            )))
        }
        None => return Err(bad_request("grant_type is required")),
    };
    let offline = p.one("access_type") == Some("offline") && login.refreshable;
    // A password grant says so; a refresh grant or an ID token, what it was.
    let via = match login.via {
        "basic" => grant,
        other => other,
    };
    let Issued {
        token,
        refresh_token,
        expires_in,
        issued_at,
        scope,
    } = ts
        .issue(
            &login.account,
            login.labels.as_ref(),
            &scopes,
            client,
            offline,
            via,
        )
        .await
        .map_err(internal)?;
    let mut body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scope,
        "issued_at": issued_at,
    });
    if let Some(r) = refresh_token {
        body["refresh_token"] = r.into();
    }
    Ok(token_response(body))
}

/// Property tests: any query string or form body (the `scope=` values with
/// it) is read without a panic, and a refusal is a 400.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn any_query_or_form_reads_or_is_a_400(
            raw in prop::collection::vec(any::<u8>(), 0..300),
            scopes in prop::collection::vec("[a-z()]{0,12}:[ -~]{0,20}:[a-z*,]{0,12}", 0..4),
        ) {
            // Arbitrary bytes, then well-shaped scopes appended percent-encoded.
            let mut body = raw.clone();
            for s in &scopes {
                body.extend_from_slice(b"&");
                body.extend(url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("scope", s)
                    .finish()
                    .into_bytes());
            }
            let p = Params::parse(&body);
            match p.scopes() {
                Ok(all) => prop_assert!(all.len() <= scope::MAX_SCOPES),
                Err(resp) => prop_assert_eq!(resp.status(), StatusCode::BAD_REQUEST),
            }
        }
    }
}
