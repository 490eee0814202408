//! The web UI at `<http.prefix>/ui/`: server-rendered pages (askama
//! templates in `templates/`, escaped by default) to browse repositories,
//! tags, images and their referrers, see the registry's status, and delete
//! where allowed. Assets are compiled in; pages load nothing from anywhere
//! else, and the Content-Security-Policy says so.
//!
//! Where things are: [`pages`] answers GETs, [`forms`] the POSTs (login,
//! logout, delete); [`viewer`] is the access rule, [`session`] the signed
//! cookie and CSRF tokens; [`browse`] reads through the registry layer.

mod browse;
mod forms;
mod pages;
mod realm;
pub mod session;
mod status;
pub mod viewer;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, OriginalUri, Request},
    http::{header, request::Parts, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};

use crate::{
    api::UrlBuilder,
    auth::{token_server::TokenServer, Authenticator},
    config::Config,
    notify::Notifier,
    registry::Registry,
};
use session::{Found, Session, Sessions};
use viewer::{Gate, Viewer, Visitor};

/// No script, style, image, frame or connection from anywhere but here;
/// no inline script at all (a tag or label that slips past escaping still
/// cannot run); forms post only here; no framing (clickjacking).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What every UI request shares.
pub struct Ui {
    registry: Registry,
    gate: Gate,
    sessions: Sessions,
    urls: Arc<UrlBuilder>,
    notifier: Arc<Notifier>,
    /// `<http.prefix>/ui`
    base: String,
    page_size: usize,
    scan_limit: usize,
    sort_limit: usize,
    delete_enabled: bool,
    /// For the status page.
    status: status::StaticStatus,
}

/// The UI's routes (relative: the caller nests them under `http.prefix`),
/// or None with `ui.enabled: false`; errors name the configuration key.
pub fn router(
    cfg: &Config,
    registry: Registry,
    auth: Option<Arc<Authenticator>>,
    token_server: Option<Arc<TokenServer>>,
    urls: Arc<UrlBuilder>,
    notifier: Arc<Notifier>,
) -> Result<Option<Router>, String> {
    if !cfg.ui.enabled {
        return Ok(None);
    }
    let prefix = cfg.http.prefix.trim_end_matches('/');
    let base = format!("{prefix}/ui");
    let secure =
        cfg.http.tls.as_ref().is_some_and(|t| t.enabled()) || cfg.http.host.starts_with("https://");
    let ui = Arc::new(Ui {
        sessions: Sessions::new(
            registry.secret(),
            cfg.ui.sessionttl,
            secure,
            format!("{base}/"),
        ),
        status: status::StaticStatus::new(cfg, &registry),
        gate: Gate::new(cfg, auth, token_server)?,
        registry,
        urls,
        notifier,
        base,
        page_size: cfg.ui.pagesize,
        scan_limit: cfg.ui.scanlimit,
        sort_limit: cfg.ui.sortlimit,
        delete_enabled: cfg.storage.delete.enabled,
    });
    let routes = Router::new()
        .route("/ui", get(|| async { Redirect::permanent("ui/") }))
        .route("/ui/", get(pages::repositories))
        .route("/ui/status", get(status::status))
        .route("/ui/login", get(pages::login).post(forms::login))
        .route("/ui/logout", post(forms::logout))
        .route(
            "/ui/r/{*rest}",
            get(pages::repository_area).post(forms::delete),
        )
        .route("/ui/static/{file}", get(pages::asset))
        .with_state(ui)
        .layer(middleware::from_fn(security_headers));
    Ok(Some(routes))
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show what one account may see: never from a shared cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// One request as the UI sees it: the session (fresh if there was none),
/// whether the cookie must be (re)sent, and the viewer it makes.
struct Visit<'a> {
    ui: &'a Ui,
    session: Session,
    /// Send Set-Cookie with the response.
    new_cookie: bool,
    /// The login this cookie carried has expired.
    expired: bool,
    viewer: Viewer<'a>,
    parts: &'a Parts,
}

impl Ui {
    fn visit<'a>(&'a self, parts: &'a Parts) -> Visit<'a> {
        let (session, new_cookie, expired) = match self.sessions.from_headers(&parts.headers) {
            Found::Valid(s) => (s, false, false),
            Found::Expired { was_logged_in } => {
                (self.sessions.start(None, None), true, was_logged_in)
            }
            Found::None => (self.sessions.start(None, None), true, false),
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let viewer = Viewer::new(
            &self.gate,
            Visitor {
                account: session.account.clone(),
                labels: session.labels.clone(),
                refresh: session.refresh.clone(),
                headers: &parts.headers,
                peer,
            },
            self.delete_enabled && self.registry.check_writable().is_ok(),
        );
        Visit {
            ui: self,
            session,
            new_cookie,
            expired,
            viewer,
            parts,
        }
    }
}

impl Visit<'_> {
    /// The chrome of every page.
    fn chrome(&self, title: impl Into<String>) -> pages::Chrome {
        pages::Chrome {
            title: title.into(),
            base: self.ui.base.clone(),
            account: self.session.account.clone(),
            csrf: self.ui.sessions.csrf_token(&self.session),
            has_login: self.ui.gate.has_login(),
            notice: None,
        }
    }

    /// `resp` with the session cookie, if it is new.
    fn finish(&self, mut resp: Response) -> Response {
        if self.new_cookie {
            if let Ok(v) = HeaderValue::from_str(&self.ui.sessions.set_cookie(&self.session)) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp
    }

    /// To the login form, coming back here after.
    fn to_login(&self) -> Response {
        self.to_login_after(self.expired)
    }

    /// To the login form (saying the session expired, if so), coming back
    /// here after; the session cookie is replaced by an anonymous one.
    fn to_login_after(&self, expired: bool) -> Response {
        // The path as the browser asked for it: `http.prefix` included.
        let uri = self
            .parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&self.parts.uri, |o| &o.0);
        let here = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut url = format!(
            "{}/login?next={}",
            self.ui.base,
            url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
        );
        if expired {
            url.push_str("&expired=1");
        }
        let mut resp = Redirect::to(&url).into_response();
        if self.new_cookie || expired {
            let fresh = match self.new_cookie {
                true => self.session.clone(),
                false => self.ui.sessions.start(None, None),
            };
            if let Ok(v) = HeaderValue::from_str(&self.ui.sessions.set_cookie(&fresh)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
        resp
    }

    /// The page when an outside token server could not say what the
    /// viewer may see: the login form when it no longer takes this login,
    /// else 503, retryable; never more than the viewer may see.
    fn undecided(&self, e: viewer::Undecided) -> Response {
        let why = match e {
            viewer::Undecided::LoginLapsed => {
                return self.to_login_after(true);
            }
            viewer::Undecided::Unreachable(why) => why,
        };
        tracing::warn!(reason = %why, "ui: the token server could not decide");
        let mut resp = self.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The token server cannot say what you may see right now; retry later.",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        resp
    }

    /// An error page with `status`.
    fn error(&self, status: StatusCode, message: &str) -> Response {
        let page = pages::ErrorPage {
            chrome: self.chrome(status.canonical_reason().unwrap_or("Error")),
            status: status.as_u16(),
            message: message.to_string(),
        };
        let mut resp = pages::render(&page);
        *resp.status_mut() = status;
        self.finish(resp)
    }
}
