//! The UI's state-changing requests (POST): log in, log out, delete.
//! Each must carry the session's CSRF token, and an `Origin` header, when
//! the browser sends one, must be this registry's.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{ConnectInfo, Path, Request, State},
    http::{header, request::Parts, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
};

use super::{
    pages::{self, Area, LoginPage},
    realm::RealmError,
    viewer::Gate,
    Ui, Visit,
};
use crate::{
    auth::{Authenticator, Denial},
    notify::event::RequestContext,
    registry::manifests::Reference,
};

/// Browsers keep cookies up to 4096 bytes, name and attributes included.
const MAX_COOKIE: usize = 4000;

/// A form body larger than this is refused (a login is a few hundred bytes).
const MAX_FORM: usize = 16 * 1024;

/// The fields of a posted form.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The request's head and its form, or the page refusing it.
async fn read_form(req: Request) -> Result<(Parts, Form), (Parts, StatusCode, &'static str)> {
    let (parts, body) = req.into_parts();
    let form_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err((parts, StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected a form"));
    }
    match axum::body::to_bytes(Body::new(body), MAX_FORM).await {
        Ok(bytes) => {
            let fields = url::form_urlencoded::parse(&bytes).into_owned().collect();
            Ok((parts, Form(fields)))
        }
        Err(_) => Err((parts, StatusCode::PAYLOAD_TOO_LARGE, "form too large")),
    }
}

/// A posted form that passed the CSRF checks, with the request's head; or
/// the page refusing it.
async fn posted(ui: &Ui, req: Request) -> Result<(Parts, Form), Response> {
    match read_form(req).await {
        Ok((parts, form)) => match ui.visit(&parts).forged(&form) {
            Some(refused) => Err(refused),
            None => Ok((parts, form)),
        },
        Err((parts, status, why)) => Err(ui.visit(&parts).error(status, why)),
    }
}

impl Visit<'_> {
    /// Refuse a post that another site could have made: no CSRF token of
    /// this session, or an `Origin` that is not ours.
    fn forged(&self, form: &Form) -> Option<Response> {
        let token_ok = form
            .get("csrf")
            .is_some_and(|t| self.ui.sessions.csrf_ok(&self.session, t));
        // Browsers say where a request comes from (Fetch Metadata): another
        // site's page is refused whatever it carries. (Comparing Origin to
        // our host breaks behind proxies that rewrite Host.)
        let origin_ok = !matches!(
            self.parts
                .headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok()),
            Some("cross-site" | "same-site")
        );
        if token_ok && origin_ok && !self.new_cookie {
            return None;
        }
        tracing::warn!(
            path = %self.parts.uri.path(),
            token_ok,
            origin_ok,
            "ui: form refused (CSRF check)"
        );
        Some(self.error(
            StatusCode::FORBIDDEN,
            "This form is stale or did not come from this registry's pages; reload the page and try again.",
        ))
    }
}

pub async fn login(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    let (parts, form) = match read_form(req).await {
        Ok(p) => p,
        Err((parts, status, why)) => return ui.visit(&parts).error(status, why),
    };
    let visit = ui.visit(&parts);
    let user = form.get("username").unwrap_or("").to_string();
    let password = form.get("password").unwrap_or("");
    let next = pages::safe_next(&ui.base, form.get("next").unwrap_or(""));
    if let Some(refused) = visit.forged(&form) {
        if !visit.new_cookie {
            return refused;
        }
        // A form from a session that has ended since (a tab left open):
        // a fresh form, with a fresh token, not a dead end.
        return login_form_again(
            &ui,
            &visit,
            next,
            user,
            StatusCode::FORBIDDEN,
            None,
            "This form expired; log in again.".into(),
        );
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let outcome = match &ui.gate {
        Gate::Htpasswd(auth) => match &**auth {
            Authenticator::Htpasswd(basic) => basic
                .check_password(user.clone(), password, &parts.headers, peer)
                .await
                .map(|account| (account, None, None))
                .map_err(|denial| match denial {
                    Denial::TooManyRequests {
                        retry_after,
                        message,
                    } => (StatusCode::TOO_MANY_REQUESTS, message, Some(retry_after)),
                    Denial::Challenge { message, .. } | Denial::Forbidden(message) => {
                        (StatusCode::UNAUTHORIZED, message, None)
                    }
                }),
            Authenticator::Token { .. } => unreachable!("the gate holds htpasswd"),
        },
        Gate::TokenServer(ts) => {
            let client = ts.client_ip(&parts.headers, peer);
            ts.check_login(&user, password, client)
                .await
                .map(|c| (c.account, c.labels, None))
                .map_err(|r| {
                    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNAUTHORIZED);
                    (status, r.message, r.retry_after.map(Duration::from_secs))
                })
        }
        Gate::Realm(auth, realm) => {
            let Authenticator::Token { verifier, .. } = &**auth else {
                unreachable!("a realm gate holds token auth")
            };
            let client = realm.client(&parts.headers, peer);
            match realm.login(verifier, client, &user, password).await {
                Ok((account, refresh)) => Ok((account, None, Some(refresh))),
                Err(RealmError::Refused(why)) => Err((StatusCode::UNAUTHORIZED, why, None)),
                Err(RealmError::Throttled(wait)) => Err((
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins from this address; retry later".into(),
                    Some(wait),
                )),
                Err(RealmError::Unavailable(why)) => {
                    tracing::warn!(reason = %why, "ui: login through the token server failed");
                    Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the token server cannot log you in right now; retry later".into(),
                        Some(Duration::from_secs(5)),
                    ))
                }
            }
        }
        Gate::Open => return visit.error(StatusCode::NOT_FOUND, "there is no login here"),
    };
    match outcome {
        Ok((account, labels, refresh)) => {
            tracing::info!(account = crate::auth::loggable(&account), "ui: login");
            // A new session, so a nonce planted before the login (session
            // fixation) is worth nothing after it.
            let mut session = ui.sessions.start(Some(account), labels);
            session.refresh = refresh;
            let cookie = ui.sessions.set_cookie(&session);
            if cookie.len() > MAX_COOKIE {
                // Browsers drop larger cookies without a word: the login
                // would seem to work and lead straight back here.
                tracing::warn!(bytes = cookie.len(), "ui: session too large for a cookie");
                return visit.error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "This account's directory groups do not fit in a session cookie; \
                     log in with docker instead, or ask for fewer groups.",
                );
            }
            let mut resp = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err((status, message, retry_after)) => {
            login_form_again(&ui, &visit, next, user, status, retry_after, message)
        }
    }
}

/// The login form once more, saying why.
fn login_form_again(
    ui: &Ui,
    visit: &Visit<'_>,
    next: String,
    username: String,
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
) -> Response {
    let page = LoginPage {
        chrome: visit.chrome("Log in"),
        error: Some(message),
        next,
        username,
        via_token_server: matches!(ui.gate, Gate::TokenServer(_)),
    };
    let mut resp = pages::render(&page);
    *resp.status_mut() = status;
    if let Some(wait) = retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    visit.finish(resp)
}

pub async fn logout(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    let logged_in = matches!(
        ui.sessions.from_headers(req.headers()),
        super::session::Found::Valid(ref s) if s.account.is_some()
    );
    // Logging out a session that has ended needs no check: nothing changes.
    if logged_in {
        if let Err(refused) = posted(&ui, req).await {
            return refused;
        }
    }
    let mut resp = Redirect::to(&format!("{}/login", ui.base)).into_response();
    if let Ok(v) = HeaderValue::from_str(&ui.sessions.clear_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/r/<name>/-/delete` with `tag` or `digest`: what `DELETE
/// /v2/<name>/manifests/<reference>` does, with the same events.
pub async fn delete(State(ui): State<Arc<Ui>>, Path(rest): Path<String>, req: Request) -> Response {
    let (parts, form) = match posted(&ui, req).await {
        Ok(posted) => posted,
        Err(refused) => return refused,
    };
    let visit = ui.visit(&parts);
    if visit.viewer.must_log_in() {
        return visit.to_login();
    }
    let Some(Area::Delete(name)) = Area::parse(&rest) else {
        return visit.error(StatusCode::NOT_FOUND, "no such page");
    };
    let rights = match visit.viewer.rights(&name).await {
        Ok(r) => r,
        Err(e) => return visit.undecided(e),
    };
    if !rights.pull {
        return visit.error(StatusCode::NOT_FOUND, "repository not found");
    }
    if !rights.delete {
        return visit.error(StatusCode::FORBIDDEN, "you may not delete here");
    }
    if let Err(e) = ui.registry.check_writable() {
        return pages::registry_error(&visit, e);
    }
    if let Some(proxy) = ui.registry.mirror_of(&name) {
        return pages::registry_error(&visit, proxy.refuse_write(&name));
    }
    let reference = match (form.get("tag"), form.get("digest")) {
        (Some(t), None) => Reference::parse(t)
            .ok()
            .filter(|r| matches!(r, Reference::Tag(_))),
        (None, Some(d)) => Reference::parse(d)
            .ok()
            .filter(|r| matches!(r, Reference::Digest(_))),
        _ => None,
    };
    let Some(reference) = reference else {
        return visit.error(StatusCode::BAD_REQUEST, "name a tag or a digest");
    };
    match ui.registry.delete_manifest(&name, &reference).await {
        Ok(untagged) => {
            let ctx = RequestContext::from_request(
                &Request::from_parts(parts.clone(), Body::empty()),
                visit.session.account.clone(),
                ui.urls.build(&parts.headers, ""),
            );
            match &reference {
                Reference::Tag(tag) => ui.notifier.tag_deleted(&ctx, &name, tag),
                Reference::Digest(d) => ui.notifier.manifest_deleted(&ctx, &name, d, &untagged),
            }
            tracing::info!(
                account = ?visit.session.account.as_deref().map(crate::auth::loggable),
                repository = %name,
                "ui: deleted"
            );
            visit.finish(Redirect::to(&format!("{}/r/{name}", ui.base)).into_response())
        }
        Err(e) => pages::registry_error(&visit, e),
    }
}
