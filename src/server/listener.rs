//! The accept loop every listener shares (plain HTTP, HTTPS, the debug
//! listener): HTTP/1.1 and HTTP/2 (h2 by ALPN, h2c by prior knowledge)
//! through hyper-util's auto builder, with bounds on everything a client
//! can hold:
//!
//! - a cap on open connections (`http.maxconnections`); beyond it a new
//!   connection has its request answered `503` with `Connection: close`
//!   (plain HTTP) or is closed (TLS: an answer would cost a handshake) —
//!   never queued;
//! - `http.timeouts.readheader`, `idle` and `stall`, kept per connection by
//!   a watchdog ([`activity`]) and on request bodies ([`service`]);
//! - a TLS handshake timeout;
//! - on shutdown, a drain bounded by `http.draintimeout`, after which the
//!   connections still open are closed.
//!
//! hyper's own `header_read_timeout` is not used: it also runs while an
//! HTTP/1 connection waits idle for its next request, which would make the
//! idle timeout the header timeout.

mod activity;
mod fds;
mod service;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::HttpConfig;
use activity::{Activity, Expired, WatchedIo};
use service::ConnService;

/// A TLS handshake must finish in this long (axum-server's default, kept).
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Connections the debug (metrics) listener keeps open: scrapers and
/// probes need few, and a flood there must not take the main listener's
/// descriptors.
const DEBUG_MAX_CONNECTIONS: usize = 64;

/// An idle connection asked to close gracefully (an HTTP/2 GOAWAY) is
/// dropped if it has not closed after this long.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Refusals (503 answers over the cap) being written at once; beyond this,
/// an excess connection is simply closed.
const MAX_REFUSALS: usize = 64;

/// How long a refusal may take: the client's request read, the 503 sent.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// After an accept error (e.g. EMFILE), wait this long before the next try.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Repeated warnings (cap reached, accept failing) at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One listener's bounds, from `http.*`. A zero timeout is `None` (off).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub read_header: Option<Duration>,
    pub idle: Option<Duration>,
    pub stall: Option<Duration>,
    pub max_connections: usize,
    pub drain: Duration,
}

impl Limits {
    /// The main listener's limits. Raises the process's descriptor limit
    /// and derives the default connection cap from it.
    pub(super) fn from_config(http: &HttpConfig) -> Limits {
        let on = |d: Duration| Some(d).filter(|d| !d.is_zero());
        let nofile = fds::raise_nofile_limit();
        let room = fds::connections_for(nofile);
        let max_connections = match http.maxconnections {
            Some(max) => {
                if max > room {
                    tracing::warn!(
                        max,
                        nofile,
                        "http.maxconnections is above what the file-descriptor limit leaves room \
                         for: near the cap, accepting may fail (EMFILE) until connections close"
                    );
                }
                max
            }
            None => room,
        };
        Limits {
            read_header: on(http.timeouts.readheader),
            idle: on(http.timeouts.idle),
            stall: on(http.timeouts.stall),
            max_connections,
            drain: http.draintimeout,
        }
    }

    /// The debug listener's: the same timeouts, its own small cap.
    pub(super) fn for_debug(&self, drain: Duration) -> Limits {
        Limits {
            max_connections: DEBUG_MAX_CONNECTIONS.min(self.max_connections),
            drain,
            ..*self
        }
    }
}

/// What every connection of one listener shares.
struct Shared {
    name: &'static str,
    builder: auto::Builder<TokioExecutor>,
    app: TowerToHyperService<axum::Router>,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    /// Cancelled at shutdown: finish the request in flight, then close.
    drain: CancellationToken,
    /// Cancelled when the drain time is up: close now.
    cut: CancellationToken,
}

/// Serve `app` on `listener` (over TLS with `tls`) until `shutdown`
/// resolves, then drain for at most `limits.drain`.
pub(super) async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Timeouts are the watchdog's (see the module comment).
    builder.http1().header_read_timeout(None).keep_alive(true);
    let shared = Arc::new(Shared {
        name,
        builder,
        app: TowerToHyperService::new(app),
        tls,
        limits,
        drain: CancellationToken::new(),
        cut: CancellationToken::new(),
    });
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let connections = TaskTracker::new();
    let mut warned: Option<Instant> = None;
    let mut warn_now = || {
        let due = warned.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if due {
            warned = Some(Instant::now());
        }
        due
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of descriptors or memory: existing connections
                    // go on; accepting resumes once some have closed.
                    if warn_now() {
                        tracing::warn!(listener = name, error = %e, "accept failed; retrying");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                connections.spawn(connection(shared.clone(), stream, peer, permit));
            }
            Err(_) => {
                if warn_now() {
                    tracing::warn!(
                        listener = name,
                        max = limits.max_connections,
                        "connection limit reached: refusing new connections (http.maxconnections)"
                    );
                }
                refuse(&shared, stream, &refusals);
            }
        }
    }
    // New connections are refused by the kernel from here on.
    drop(listener);
    connections.close();
    shared.drain.cancel();
    let open = connections.len();
    if open > 0 {
        tracing::info!(listener = name, connections = open, drain = ?limits.drain, "draining connections");
    }
    if tokio::time::timeout(limits.drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            connections = connections.len(),
            "http.draintimeout passed: closing the connections still open"
        );
        shared.cut.cancel();
        connections.wait().await;
    }
}

/// Accept errors that concern only the connection being accepted.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    )
}

/// One accepted connection, holding its `permit` until it closes.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = WatchedIo::new(stream, activity.clone());
    let service = ConnService::new(
        shared.app.clone(),
        peer,
        activity.clone(),
        shared.limits.stall,
    );
    let Some(acceptor) = &shared.tls else {
        return drive(&shared, io, service, &activity, peer).await;
    };
    let handshake = tokio::select! {
        r = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(io)) => r,
        _ = shared.drain.cancelled() => return,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    match tls.get_ref().1.alpn_protocol() {
        // tls-alpn-01: the validation is the handshake itself.
        Some(p) if p == rustls_acme::acme::ACME_TLS_ALPN_NAME => return,
        Some(b"h2") => activity.mark_h2(),
        _ => {}
    }
    drive(&shared, tls, service, &activity, peer).await
}

/// Serve HTTP on `io` until the client or a bound ends it.
async fn drive<I>(
    shared: &Shared,
    io: I,
    service: ConnService,
    activity: &Activity,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let watchdog = activity.expired(&shared.limits);
    tokio::pin!(watchdog);
    let mut closing: Option<Instant> = None;
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(listener = shared.name, %peer, error = %e, "connection ended");
                }
                return;
            }
            why = &mut watchdog, if closing.is_none() => {
                tracing::debug!(listener = shared.name, %peer, reason = ?why, "closing connection");
                if why != Expired::Idle {
                    return;
                }
                // Nothing in flight: let HTTP/2 say GOAWAY.
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + CLOSE_GRACE);
            }
            _ = shared.drain.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = shared.cut.cancelled() => return,
            _ = tokio::time::sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => return,
        }
    }
}

/// Turn away a connection over the cap. On plain HTTP hyper reads its
/// request and answers [`unavailable`] (answering before the request would
/// be an unsolicited response, which clients reject); on TLS (an answer
/// would cost a handshake), or when many refusals are already in progress,
/// it is just closed.
fn refuse(shared: &Arc<Shared>, stream: TcpStream, refusals: &Arc<Semaphore>) {
    if shared.tls.is_some() {
        return;
    }
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let service = hyper::service::service_fn(|_request| async {
            Ok::<_, std::convert::Infallible>(unavailable())
        });
        let conn = shared
            .builder
            .serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(REFUSAL_LINGER, conn).await;
    });
}

/// The answer over the cap: 503 `UNAVAILABLE`, retry in a second, and the
/// connection closed after it.
fn unavailable() -> http::Response<axum::body::Body> {
    let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"too many connections: retry","detail":null}]}"#;
    http::Response::builder()
        .status(http::StatusCode::SERVICE_UNAVAILABLE)
        .header(http::header::CONNECTION, "close")
        .header(http::header::RETRY_AFTER, "1")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body))
        .expect("a static response")
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_refusal_is_a_registry_error_to_retry() {
        let r = super::unavailable();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["connection"], "close");
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["errors"][0]["code"], "UNAVAILABLE");
    }
}
