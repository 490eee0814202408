//! A deliberately small HTTP/1.1 client on hyper's connection API: one TCP
//! connection per [`Client`] with keep-alive (reconnecting when the server
//! closed it), no pool, and request bodies streamed as zero-copy slices.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use indicatif::ProgressBar;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;

use crate::data::{BlobData, STREAM_CHUNK};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request body: nothing, one buffer, or a range of a generated blob.
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Gen(GenBody),
}

pub struct GenBody {
    data: BlobData,
    pos: u64,
    end: u64,
    progress: Option<ProgressBar>,
    /// Set when the last byte has been handed to the connection.
    sent: Option<Arc<OnceLock<Instant>>>,
    /// Fed every byte as it goes out, as docker digests a layer while pushing it.
    hasher: Option<Arc<Mutex<Sha256>>>,
}

impl ReqBody {
    pub fn full(b: Bytes) -> Self {
        ReqBody::Full(Some(b))
    }

    /// Bytes `[start, end)` of `data`, counting progress as they go out.
    pub fn blob_range(
        data: &BlobData,
        start: u64,
        end: u64,
        progress: Option<ProgressBar>,
    ) -> Self {
        ReqBody::Gen(GenBody {
            data: data.clone(),
            pos: start,
            end,
            progress,
            sent: None,
            hasher: None,
        })
    }

    /// Feed every byte sent into `hasher` (the digest is known once the body
    /// has gone out, without a pass over the data before the request).
    pub fn hashing(mut self, hasher: &Arc<Mutex<Sha256>>) -> Self {
        if let ReqBody::Gen(g) = &mut self {
            g.hasher = Some(hasher.clone());
        }
        self
    }

    /// Record in `sent` when the last byte has been handed to the connection.
    pub fn mark_sent(mut self, sent: &Arc<OnceLock<Instant>>) -> Self {
        if let ReqBody::Gen(g) = &mut self {
            g.sent = Some(sent.clone());
        }
        self
    }

    pub fn len(&self) -> u64 {
        match self {
            ReqBody::Empty => 0,
            ReqBody::Full(b) => b.as_ref().map_or(0, |b| b.len() as u64),
            ReqBody::Gen(g) => g.end - g.pos,
        }
    }
}

impl HttpBody for ReqBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let frame = match self.get_mut() {
            ReqBody::Empty => None,
            ReqBody::Full(b) => b.take().filter(|b| !b.is_empty()).map(Frame::data),
            ReqBody::Gen(g) if g.pos >= g.end => None,
            ReqBody::Gen(g) => {
                let chunk = g.data.chunk_at(g.pos, (g.end - g.pos).min(STREAM_CHUNK));
                g.pos += chunk.len() as u64;
                if let Some(h) = &g.hasher {
                    h.lock().expect("hasher lock").update(&chunk);
                }
                if let Some(pb) = &g.progress {
                    pb.inc(chunk.len() as u64);
                }
                if g.pos >= g.end {
                    if let Some(sent) = &g.sent {
                        let _ = sent.set(Instant::now());
                    }
                }
                Some(Frame::data(chunk))
            }
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}

/// One keep-alive connection to `addr`.
pub struct Client {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<http1::SendRequest<ReqBody>>,
    /// Sent with every request (e.g. Authorization).
    always: Vec<(HeaderName, HeaderValue)>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).expect("socket address is a header"),
            sender: None,
            always: Vec::new(),
        }
    }

    /// Send `Host: <host>` (the authority of the registry's URL) instead of
    /// the socket address.
    pub fn with_host(mut self, host: &str) -> Result<Self> {
        self.host = HeaderValue::from_str(host)?;
        Ok(self)
    }

    /// Send `Authorization: <value>` with every request, if given.
    pub fn with_auth(mut self, value: Option<&str>) -> Self {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            self.always.push((header::AUTHORIZATION, v));
        }
        self
    }

    async fn connect(&mut self) -> Result<()> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| anyhow!("connect to {} timed out", self.addr))?
            .with_context(|| format!("connect to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Send one request; `path` is path and query. Content-Length always set.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, &str)],
        body: ReqBody,
    ) -> Result<Response<Incoming>> {
        let reusable = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().expect("connected");
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.host.clone());
        if body.len() > 0 || matches!(method, Method::PUT | Method::POST | Method::PATCH) {
            req = req.header(header::CONTENT_LENGTH, body.len());
        }
        for (name, value) in &self.always {
            req = req.header(name, value.clone());
        }
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        let req = req.body(body)?;
        sender
            .send_request(req)
            .await
            .with_context(|| format!("{method} {}", short(path)))
    }
}

fn short(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// An answer with another status than the one expected: the error
/// [`expect`] returns, which a caller that sorts failures by kind (`loadtest
/// chaos`) finds with `downcast_ref`.
#[derive(Debug)]
pub struct Unexpected {
    pub what: String,
    pub want: StatusCode,
    pub status: StatusCode,
    /// The body's start (an OCI error's JSON, nginx's HTML page, …).
    pub body: String,
    /// `Retry-After` in seconds, if the answer had one.
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}: {}",
            self.what,
            self.want,
            self.status,
            self.body.trim_end()
        )
    }
}

impl std::error::Error for Unexpected {}

/// The response if it has status `want`, else an [`Unexpected`] error with
/// the body's start.
pub async fn expect(
    resp: Response<Incoming>,
    want: StatusCode,
    what: &str,
) -> Result<Response<Incoming>> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok());
    let body = read_body(resp).await.unwrap_or_default();
    Err(Unexpected {
        what: what.to_string(),
        want,
        status,
        body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        retry_after,
    }
    .into())
}

/// The whole body (small responses only).
pub async fn read_body(resp: Response<Incoming>) -> Result<Bytes> {
    Ok(resp.into_body().collect().await?.to_bytes())
}

/// Read and discard the body, counting bytes (and progress).
pub async fn drain(resp: Response<Incoming>, progress: Option<&ProgressBar>) -> Result<u64> {
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
            if let Some(pb) = progress {
                pb.inc(data.len() as u64);
            }
        }
    }
    Ok(n)
}

/// Read the body, hashing it as it comes: its length and `sha256:<hex>`.
pub async fn digest_body(resp: Response<Incoming>) -> Result<(u64, String)> {
    let mut body = resp.into_body();
    let (mut n, mut h) = (0u64, Sha256::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
            h.update(&data);
        }
    }
    Ok((
        n,
        format!("sha256:{}", crate::data::hex(h.finalize().as_slice())),
    ))
}

/// The Location header as path-and-query (absolute URLs are stripped of
/// scheme and authority: every request goes to the same server anyway).
pub fn location(resp: &Response<Incoming>) -> Result<String> {
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .ok_or_else(|| anyhow!("response has no Location"))?
        .to_str()?;
    Ok(path_of(loc).to_string())
}

fn path_of(loc: &str) -> &str {
    match loc.find("://") {
        Some(i) => {
            let rest = &loc[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => loc,
    }
}

/// `http://127.0.0.1:<port>/path?query` → the address and path-and-query
/// (a redirect to a numeric loopback address; nothing is resolved).
pub fn split_url(url: &str) -> Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {}", short(url)))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("{authority:?} is not an IP address and port"))?;
    Ok((addr, path.to_string()))
}

/// `Authorization: Basic ...` for `user:password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Append `key=value` to a URL that may already have a query.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            path_of("http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=1"),
            "/v2/a/blobs/uploads/x?_state=1"
        );
        assert_eq!(path_of("/v2/a/blobs/uploads/x"), "/v2/a/blobs/uploads/x");
        assert_eq!(
            with_query("/u?a=1", "digest", "sha256:00"),
            "/u?a=1&digest=sha256:00"
        );
        assert_eq!(with_query("/u", "digest", "d"), "/u?digest=d");
        let (a, p) = split_url("http://127.0.0.1:9000/b/k?X-Amz-Signature=1").unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:9000");
        assert_eq!(p, "/b/k?X-Amz-Signature=1");
        assert!(split_url("https://127.0.0.1/x").is_err());
        assert_eq!(basic_auth("a", "b"), "Basic YTpi");
    }
}
