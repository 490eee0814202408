//! The per-connection service between hyper and the axum app: it hands the
//! app the peer address (`ConnectInfo`, for the token server's login
//! throttle), times request bodies that stop arriving, and keeps the
//! connection's [`Activity`] told which requests are in flight.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo};
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use tokio::time::{Instant, Sleep};

use super::activity::{Activity, InFlight};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub(super) struct ConnService {
    app: TowerToHyperService<axum::Router>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    stall: Option<Duration>,
}

impl ConnService {
    pub(super) fn new(
        app: TowerToHyperService<axum::Router>,
        peer: SocketAddr,
        activity: Arc<Activity>,
        stall: Option<Duration>,
    ) -> Self {
        ConnService {
            app,
            peer,
            activity,
            stall,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<InFlightBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_started();
        let stall = self.stall;
        let mut req = req.map(|body| Body::new(StallBody::new(body, stall)));
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let response = hyper::service::Service::call(&self.app, req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| InFlightBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until hyper
/// has sent it (or given up on it) and drops it.
pub(super) struct InFlightBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails when it delivers nothing for `limit` while
/// someone waits for it. The handler then answers (a blob upload with
/// BLOB_UPLOAD_INVALID, keeping what earlier chunks stored) and the
/// connection, its body unfinished, is closed.
pub(super) struct StallBody {
    body: Incoming,
    limit: Option<Duration>,
    /// Allocated at the first wait, then reset: one timer per body.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// Ended by the timer: nothing more is read.
    stalled: bool,
}

impl StallBody {
    fn new(body: Incoming, limit: Option<Duration>) -> Self {
        StallBody {
            body,
            limit,
            timer: None,
            waiting: false,
            stalled: false,
        }
    }
}

/// The error a stalled body ends with.
#[derive(Debug)]
pub(super) struct BodyStalled(Duration);

impl fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the client sent no data for {} (http.timeouts.stall)",
            humantime::format_duration(self.0)
        )
    }
}

impl std::error::Error for BodyStalled {}

impl http_body::Body for StallBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.stalled {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let Some(limit) = this.limit else {
            return Poll::Pending;
        };
        let deadline = Instant::now() + limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.waiting {
            timer.as_mut().reset(deadline);
            this.waiting = true;
        }
        if timer.as_mut().poll(cx).is_ready() {
            this.stalled = true;
            return Poll::Ready(Some(Err(Box::new(BodyStalled(limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.stalled || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
