//! The HTTP layer (axum): where requests enter. Handlers are grouped by API
//! area, one file each; they parse HTTP, call [`Registry`] for the rules and
//! render responses. No storage access happens here.

mod base;
mod blobs;
pub mod error;
pub mod health;
mod manifests;
mod middleware;
mod ranges;
mod referrers;
pub mod route;
mod tags;
mod uploads;

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Method},
    response::Response,
    routing::{any, get},
    Router,
};

use crate::{
    auth::{AccessControl, Authenticator, Denial},
    config::Config,
    notify::{
        event::{RequestContext, RequestId},
        Notifier,
    },
    registry::Registry,
    telemetry::metrics::Metrics,
};
use error::{method_not_allowed, not_found};
use route::Route;

/// Shared state handed to every handler.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub urls: Arc<UrlBuilder>,
    /// None: no access control (the embedded default, for local use).
    pub auth: Option<Arc<Authenticator>>,
    /// None: no metrics (`http.debug` off).
    pub metrics: Option<Arc<Metrics>>,
    /// Webhook events and audit lines for pushes, pulls and deletes.
    pub notifier: Arc<Notifier>,
}

/// Builds the Location URLs clients follow: absolute by default (from
/// `http.host`, else X-Forwarded-Proto/Host, else Host), relative with
/// `http.relativeurls`, always under `http.prefix`.
pub struct UrlBuilder {
    host: String,
    prefix: String,
    relative: bool,
    /// Scheme when no X-Forwarded-Proto says otherwise: the listener's own.
    scheme: &'static str,
}

impl UrlBuilder {
    pub fn new(cfg: &Config) -> Self {
        UrlBuilder {
            host: cfg.http.host.trim_end_matches('/').to_string(),
            prefix: cfg.http.prefix.trim_end_matches('/').to_string(),
            relative: cfg.http.relativeurls,
            scheme: match &cfg.http.tls {
                Some(tls) if tls.enabled() => "https",
                _ => "http",
            },
        }
    }

    /// `path` starts with `/v2/`.
    pub fn build(&self, headers: &HeaderMap, path: &str) -> String {
        let path = format!("{}{path}", self.prefix);
        if self.relative {
            return path;
        }
        format!("{}{path}", self.origin(headers))
    }

    /// `<scheme>://<host>` as the client sees this registry (empty if unknown).
    pub fn origin(&self, headers: &HeaderMap) -> String {
        if !self.host.is_empty() {
            return self.host.clone();
        }
        let first = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match first("x-forwarded-host").or_else(|| first("host")) {
            Some(host) => {
                let proto = first("x-forwarded-proto").unwrap_or_else(|| self.scheme.into());
                format!("{proto}://{host}")
            }
            None => String::new(),
        }
    }
}

/// The whole application: API routes plus the layer every response passes.
/// `token_server` (the built-in token endpoint) sits beside the API, under
/// the same prefix and layer, outside the `/v2` access check.
pub fn router(
    cfg: &Config,
    registry: Registry,
    auth: Option<Authenticator>,
    token_server: Option<Router>,
) -> Router {
    let access = AccessControl {
        authenticator: auth,
        token_endpoint: token_server,
        token_server: None,
    };
    let notifier = Arc::new(Notifier::audit_only());
    router_with_notifier(cfg, registry, access, None, notifier)
        .expect("without access control the UI has nothing to build that can fail")
}

/// [`router`] with all of access control (the web UI asks the token server
/// too), counting into `metrics` and sending events through `notifier`.
/// Errors (the web UI's, naming its key) stop the start.
pub fn router_with_notifier(
    cfg: &Config,
    registry: Registry,
    access: AccessControl,
    metrics: Option<Arc<Metrics>>,
    notifier: Arc<Notifier>,
) -> Result<Router, String> {
    let auth = access.authenticator.map(Arc::new);
    let urls = Arc::new(UrlBuilder::new(cfg));
    let ui = crate::ui::router(
        cfg,
        registry.clone(),
        auth.clone(),
        access.token_server,
        urls.clone(),
        notifier.clone(),
    )?;
    let state = AppState {
        registry,
        urls,
        auth,
        metrics: metrics.clone(),
        notifier,
    };
    let api = Router::new()
        .route("/", get(base::root))
        .route("/health/storage", get(base::storage_health))
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*path}", any(dispatch))
        .fallback(|| async { not_found() })
        .with_state(state)
        .merge(access.token_endpoint.unwrap_or_default());
    let api = health::apply(api);
    // Outside the health gate: the status page is where an operator looks
    // when a check fails.
    let api = match ui {
        Some(ui) => api.merge(ui),
        None => api,
    };
    let prefix = cfg.http.prefix.trim_end_matches('/');
    let app = if prefix.is_empty() {
        api
    } else {
        Router::new().nest(prefix, api)
    };
    Ok(middleware::apply(app, cfg, metrics))
}

/// Let the request through (with the account name, when auth is on), or
/// answer it with a challenge or a denial.
/// No auth configured: everything is allowed (the embedded default).
/// (Takes the request's parts, not `&Request`: a body is not `Sync`.)
async fn check_access(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    peer: Option<std::net::SocketAddr>,
    mount_from: Option<String>,
    route: &Route,
) -> Result<Option<String>, Response> {
    let Some(auth) = &state.auth else {
        return Ok(None);
    };
    let need = route.required_access(method, mount_from.as_deref());
    // Where this registry is reachable, prefix included (for autoredirect realms).
    let origin = format!("{}{}", state.urls.origin(headers), state.urls.prefix);
    let result = auth.authorize(headers, &need, &origin, peer).await;
    if let Some(m) = &state.metrics {
        if auth.credentials_presented(headers) {
            let outcome = match &result {
                Ok(_) => Some("success"),
                Err(Denial::Challenge { .. }) => Some("failure"),
                Err(Denial::Forbidden(_)) => Some("denied"),
                // Throttled or queue full: the credentials were not checked.
                Err(Denial::TooManyRequests { .. }) => None,
            };
            if let Some(outcome) = outcome {
                m.auth_attempt(auth.scheme(), outcome);
            }
        }
    }
    result
        .map(Some)
        .map_err(|denial| error::denial_response(denial, &need))
}

/// Route a `/v2/...` request to its area's handler.
async fn dispatch(State(state): State<AppState>, req: Request<Body>) -> Response {
    let path = req.uri().path();
    let rest = path.find("/v2").map(|i| &path[i + 3..]).unwrap_or("");
    let rest = rest.strip_prefix('/').unwrap_or(rest).to_string();
    let Some(route) = Route::parse(&rest) else {
        return not_found();
    };
    let method = req.method().clone();
    // For a server error's body (and log line), after `req` is handed on.
    let request_id = req.extensions().get::<RequestId>().map(|id| id.0.clone());
    let mount_from = query_param(&req, "mount").and(query_param(&req, "from"));
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let actor = match check_access(&state, &method, req.headers(), peer, mount_from, &route).await {
        Ok(actor) => actor,
        Err(denied) => return denied,
    };
    // Who did it, from where, under which request id: for events and audit
    // lines; not built for requests that emit neither (blob HEADs, pulls
    // nobody listens to), which never read it.
    let ctx = if state.notifier.needs_context(&method) {
        RequestContext::from_request(&req, actor, state.urls.build(req.headers(), ""))
    } else {
        RequestContext::default()
    };
    if !matches!(method, Method::GET | Method::HEAD) {
        if let Err(e) = state.registry.check_writable() {
            return axum::response::IntoResponse::into_response(e);
        }
        if let Some(name) = route.repository() {
            if let Some(proxy) = state.registry.mirror_of(name) {
                return axum::response::IntoResponse::into_response(proxy.refuse_write(name));
            }
        }
    }
    let result = match (&method, route) {
        (&Method::GET | &Method::HEAD, Route::Base) => Ok(base::version_check()),
        (&Method::GET, Route::Catalog) => tags::catalog(&state, req).await,
        (&Method::GET, Route::Tags { name }) => tags::list(&state, &name, req).await,
        (&Method::GET | &Method::HEAD, Route::Blob { name, digest }) => {
            blobs::get(&state, &ctx, &name, &digest, req).await
        }
        (&Method::DELETE, Route::Blob { name, digest }) => {
            blobs::delete(&state, &ctx, &name, &digest).await
        }
        (&Method::POST, Route::UploadStart { name }) => {
            uploads::start(&state, &ctx, &name, req).await
        }
        (&Method::PATCH, Route::Upload { name, id }) => {
            uploads::patch(&state, &name, &id, req).await
        }
        (&Method::PUT, Route::Upload { name, id }) => {
            uploads::put(&state, &ctx, &name, &id, req).await
        }
        (&Method::GET, Route::Upload { name, id }) => {
            uploads::status(&state, &name, &id, req).await
        }
        (&Method::DELETE, Route::Upload { name, id }) => {
            uploads::cancel(&state, &name, &id, req).await
        }
        (&Method::GET | &Method::HEAD, Route::Manifest { name, reference }) => {
            manifests::get(&state, &ctx, &name, &reference, req).await
        }
        (&Method::PUT, Route::Manifest { name, reference }) => {
            manifests::put(&state, &ctx, &name, &reference, req).await
        }
        (&Method::DELETE, Route::Manifest { name, reference }) => {
            manifests::delete(&state, &ctx, &name, &reference).await
        }
        (&Method::GET, Route::Referrers { name, digest }) => {
            referrers::get(&state, &name, &digest, req).await
        }
        _ => return method_not_allowed(),
    };
    result.unwrap_or_else(|e| error::render(e, request_id.as_deref()))
}

/// A query parameter, percent-decoded.
pub(crate) fn query_param(req: &Request<Body>, key: &str) -> Option<String> {
    let q = req.uri().query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A header as a string, if present and valid UTF-8.
pub(crate) fn header_str<'a>(req: &'a Request<Body>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}
