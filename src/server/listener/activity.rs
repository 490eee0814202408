//! What one connection is doing, and when it has done nothing for too long.
//!
//! [`Activity`] is fed from two sides: the socket ([`WatchedIo`] sees bytes
//! arrive and writes block) and the service (a request is in flight from the
//! moment its head is parsed until its response body is dropped). From that,
//! [`Activity::expired`] knows which clock runs:
//!
//! - no request in flight, and a request head has begun (the connect itself
//!   counts, as in Go's `ReadHeaderTimeout`): `readheader`;
//! - no request in flight otherwise: `idle`;
//! - requests in flight: only `stall`, for a response write the client does
//!   not take (a request body that stops is timed by
//!   [`StallBody`](super::bodies::StallBody), which knows when the handler is
//!   waiting for it).
//!
//! On HTTP/2 a frame between requests (a WINDOW_UPDATE, a PING) is not the
//! start of a request head, so after its first request an HTTP/2 connection
//! only has the idle clock; a request whose HEADERS never complete leaves it
//! idle, and so still closed.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

use super::Limits;

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// A request head (or the first one) did not complete in `readheader`.
    ReadHeader,
    /// No request in flight for `idle`.
    Idle,
    /// The client took none of a response for `stall`.
    WriteStall,
}

/// "Not set" for the millisecond stamps below.
const NONE: u64 = u64::MAX;

/// The connection's state, shared by its socket, its service and its
/// watchdog. Times are milliseconds since the connect.
pub(super) struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// When the last request in flight ended (or the connect).
    idle_since: AtomicU64,
    /// When the bytes of a request head began to arrive, while idle.
    head_since: AtomicU64,
    /// When a write to the socket last found it full and stayed so.
    write_blocked_since: AtomicU64,
    /// HTTP/2 (by ALPN or by its connection preface).
    h2: AtomicBool,
    /// Wakes the watchdog when a clock starts or stops.
    changed: Notify,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(NONE),
            h2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + std::time::Duration::from_millis(ms)
    }

    pub(super) fn mark_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    /// A request head was parsed: it is in flight until the guard is dropped
    /// (with its response body).
    pub(super) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(NONE, Ordering::SeqCst);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// Bytes came from the client.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0
            && !self.h2.load(Ordering::Relaxed)
            && self.head_since.load(Ordering::SeqCst) == NONE
        {
            self.head_since.store(self.now(), Ordering::SeqCst);
            self.changed.notify_one();
        }
    }

    fn write_blocked(&self, blocked: bool) {
        let was = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked && was == NONE {
            self.write_blocked_since
                .store(self.now(), Ordering::Relaxed);
        } else if !blocked && was != NONE {
            self.write_blocked_since.store(NONE, Ordering::Relaxed);
        }
    }

    /// Resolves when one of `limits`' clocks runs out.
    pub(super) async fn expired(&self, limits: &Limits) -> Expired {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read: no change is missed.
            notified.as_mut().enable();
            match self.next_deadline(limits) {
                Deadline::Passed(why) => return why,
                Deadline::At(when) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(when) => {}
                    }
                }
                Deadline::None => notified.await,
            }
        }
    }

    fn next_deadline(&self, limits: &Limits) -> Deadline {
        let now = self.now();
        let clock = |since: u64, limit: Option<std::time::Duration>, why: Expired| {
            let Some(limit) = limit else {
                return Deadline::None;
            };
            let end = since.saturating_add(limit.as_millis() as u64);
            if now >= end {
                Deadline::Passed(why)
            } else {
                Deadline::At(self.at(end))
            }
        };
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            let Some(stall) = limits.stall else {
                return Deadline::None;
            };
            return match self.write_blocked_since.load(Ordering::Relaxed) {
                // Nothing blocked now; look again in one stall period.
                NONE => Deadline::At(self.at(now) + stall),
                since => clock(since, Some(stall), Expired::WriteStall),
            };
        }
        let head = self.head_since.load(Ordering::SeqCst);
        if head != NONE && limits.read_header.is_some() {
            return clock(head, limits.read_header, Expired::ReadHeader);
        }
        clock(
            self.idle_since.load(Ordering::SeqCst),
            limits.idle,
            Expired::Idle,
        )
    }
}

enum Deadline {
    Passed(Expired),
    At(Instant),
    None,
}

/// A request in flight; dropped with its response body (or with the
/// response future, when the client goes away first).
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.idle_since.store(a.now(), Ordering::SeqCst);
            a.changed.notify_one();
        }
    }
}

/// The HTTP/2 connection preface, by which a plain-text HTTP/2 client
/// (h2c with prior knowledge) is told from an HTTP/1 one.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The raw socket (under TLS, if any), reporting to [`Activity`].
pub(super) struct WatchedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    /// How many bytes of [`H2_PREFACE`] the client has sent so far; `None`
    /// once it is known whether it did.
    preface: Option<usize>,
}

impl<T> WatchedIo<T> {
    pub(super) fn new(inner: T, activity: Arc<Activity>) -> Self {
        WatchedIo {
            inner,
            activity,
            preface: Some(0),
        }
    }

    fn sniff_preface(&mut self, bytes: &[u8]) {
        let Some(seen) = self.preface else { return };
        let want = &H2_PREFACE[seen..];
        let n = want.len().min(bytes.len());
        if bytes[..n] != want[..n] {
            self.preface = None;
        } else if seen + n == H2_PREFACE.len() {
            self.preface = None;
            self.activity.mark_h2();
        } else {
            self.preface = Some(seen + n);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.sniff_preface(&buf.filled()[before..]);
            self.activity.bytes_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            read_header: Some(Duration::from_secs(30)),
            idle: Some(Duration::from_secs(75)),
            stall: Some(Duration::from_secs(60)),
            max_connections: 1,
            drain: Duration::from_secs(1),
        }
    }

    fn clock(a: &Activity) -> Option<(u64, Option<Expired>)> {
        match a.next_deadline(&limits()) {
            Deadline::At(t) => Some(((t - a.start).as_secs(), None)),
            Deadline::Passed(why) => Some((0, Some(why))),
            Deadline::None => None,
        }
    }

    #[test]
    fn which_clock_runs() {
        let a = Arc::new(Activity::new());
        // Just connected: the header clock, from the connect.
        assert_eq!(clock(&a), Some((30, None)));
        let req = a.request_started();
        // In flight: only the stall check.
        assert_eq!(clock(&a), Some((60, None)));
        drop(req);
        // Between requests: idle, until a byte of the next head arrives.
        assert_eq!(clock(&a), Some((75, None)));
        a.bytes_read();
        assert_eq!(clock(&a), Some((30, None)));
        let req = a.request_started();
        a.bytes_read(); // its body: no header clock
        drop(req);
        assert_eq!(clock(&a), Some((75, None)));

        // HTTP/2: frames between requests leave the idle clock running.
        let h2 = Arc::new(Activity::new());
        let mut io = WatchedIo::new(tokio::io::empty(), h2.clone());
        io.sniff_preface(&H2_PREFACE[..5]);
        assert!(!h2.h2.load(Ordering::Relaxed));
        io.sniff_preface(&H2_PREFACE[5..]);
        assert!(h2.h2.load(Ordering::Relaxed));
        drop(h2.request_started());
        h2.bytes_read();
        assert_eq!(clock(&h2), Some((75, None)));

        let mut http1 = WatchedIo::new(tokio::io::empty(), Arc::new(Activity::new()));
        http1.sniff_preface(b"PUT / HTTP/1.1\r\n");
        assert_eq!(http1.preface, None);
        assert!(!http1.activity.h2.load(Ordering::Relaxed));
    }

    #[test]
    fn a_blocked_write_while_in_flight_is_a_stall() {
        let a = Arc::new(Activity::new());
        let _req = a.request_started();
        a.write_blocked(true);
        assert_eq!(clock(&a), Some((60, None)));
        a.write_blocked(false);
        a.write_blocked_since.store(0, Ordering::Relaxed);
        let no_stall = Limits {
            stall: Some(Duration::ZERO),
            ..limits()
        };
        assert!(matches!(
            a.next_deadline(&no_stall),
            Deadline::Passed(Expired::WriteStall)
        ));
    }
}
