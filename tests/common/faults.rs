//! A fault-injecting HTTP/1.1 proxy to put between Berth and its S3 store:
//! at set rates it answers 503 SlowDown or 500 InternalError (S3 XML error
//! bodies, the store never sees the request), breaks the connection
//! mid-body (half a request body reaches the store, or half a successful
//! response's body reaches Berth, then a TCP reset; a bodiless or failed
//! answer is cut before its head), and delays requests. It can also hold
//! requests at a gate until the test opens it, and counts how many of them
//! were in progress at once (to observe a client's concurrency without
//! timing anything). Each connection
//! draws from its own RNG seeded from the run's seed and the connection's
//! number, so a run's faults are reproducible up to the order in which
//! connections are opened. It runs on a thread of its own (usable from sync
//! and async tests alike) and stops on drop.
//!
//! Bodies are buffered whole (a part of at most `chunksize`): this is a test
//! harness, not a streaming proxy.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

/// Rates in [0, 1] per request. `slowdown + internal + reset` is the share of
/// requests that fail; `latency` of them (drawn separately) wait `delay`
/// first.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub slowdown: f64,
    pub internal: f64,
    pub reset: f64,
    pub latency: f64,
    pub delay: Duration,
    pub seed: u64,
    /// Only requests of this method suffer (None: all).
    pub only: Option<&'static str>,
    /// Requests whose first line contains this wait (their body read) until
    /// [`FaultProxy::open_gate`]; counted in `Counts::held` and `peak`.
    pub hold: Option<&'static str>,
}

impl Faults {
    /// No faults: set the ones wanted (`Faults { reset: 0.3, ..Faults::none(1) }`).
    pub fn none(seed: u64) -> Faults {
        Faults {
            slowdown: 0.0,
            internal: 0.0,
            reset: 0.0,
            latency: 0.0,
            delay: Duration::ZERO,
            seed,
            only: None,
            hold: None,
        }
    }

    /// `rate` of requests fail, in equal shares 503 SlowDown, 500
    /// InternalError and mid-body resets; as many again are delayed 50 ms.
    pub fn mixed(rate: f64, seed: u64) -> Faults {
        Faults {
            slowdown: rate / 3.0,
            internal: rate / 3.0,
            reset: rate / 3.0,
            latency: rate,
            delay: Duration::from_millis(50),
            seed,
            only: None,
            hold: None,
        }
    }
}

/// What the proxy did, for assertions that faults really were injected.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub slowdowns: AtomicU64,
    pub internals: AtomicU64,
    pub resets: AtomicU64,
    pub delays: AtomicU64,
    /// Requests matching `Faults::hold` waiting at the closed gate now.
    pub held: AtomicU64,
    /// The most requests matching `Faults::hold` in progress at once (from
    /// their body was read to their answer).
    pub peak: AtomicU64,
    matching: AtomicU64,
}

impl Counts {
    pub fn get(&self) -> [u64; 5] {
        [
            &self.requests,
            &self.slowdowns,
            &self.internals,
            &self.resets,
            &self.delays,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }

    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
}

/// A request matching `Faults::hold`, counted as in progress while it lives.
struct InProgress<'a>(&'a Counts);

impl<'a> InProgress<'a> {
    fn new(c: &'a Counts) -> Self {
        let now = c.matching.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak.fetch_max(now, Ordering::SeqCst);
        InProgress(c)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.matching.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct FaultProxy {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub counts: Arc<Counts>,
    gate: Arc<tokio::sync::watch::Sender<bool>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://host:port`) on a free port.
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap().to_string();
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let c = counts.clone();
        let gate = Arc::new(tokio::sync::watch::Sender::new(false));
        let g = gate.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                let accept = async {
                    for n in 0u64.. {
                        let Ok((conn, _)) = listener.accept().await else {
                            continue;
                        };
                        let rng = StdRng::seed_from_u64(
                            faults.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        );
                        let (up, c) = (upstream.clone(), c.clone());
                        let gate = g.subscribe();
                        tokio::spawn(async move {
                            let _ = serve(conn, &up, faults, rng, &c, gate).await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime ends every connection task.
        });
        FaultProxy {
            addr,
            counts,
            gate,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://<addr>`, to use as `regionendpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Let the held requests (and all later ones) through.
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request or response head: the first line and the headers, raw.
struct Head {
    raw: Vec<u8>,
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }
}

/// The next head on `r`; None at a clean end of the connection.
async fn read_head(r: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        if r.read_until(b'\n', &mut raw).await? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        if raw[before..] == *b"\r\n" || raw[before..] == *b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        raw,
        first,
        headers,
    }))
}

/// A body as framed on the wire (chunk sizes and trailers included), so it
/// can be passed on byte for byte. `to_close`: read until the peer closes.
async fn read_body(
    r: &mut (impl AsyncBufRead + Unpin),
    head: &Head,
    to_close: bool,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked() {
        loop {
            let start = body.len();
            r.read_until(b'\n', &mut body).await?;
            let line = String::from_utf8_lossy(&body[start..]).to_string();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let at = body.len();
                    if r.read_until(b'\n', &mut body).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    if body[at..] == *b"\r\n" {
                        return Ok(body);
                    }
                }
            }
            let at = body.len();
            body.resize(at + size + 2, 0);
            r.read_exact(&mut body[at..]).await?;
        }
    } else if let Some(n) = head.length() {
        body.resize(n, 0);
        r.read_exact(&mut body).await?;
    } else if to_close {
        r.read_to_end(&mut body).await?;
    }
    Ok(body)
}

/// An S3 error answer, as the store would send it.
fn s3_error(status: u16, reason: &str, code: &str, message: &str, head_only: bool) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>berth-fault-proxy</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         x-amz-request-id: berth-fault-proxy\r\nContent-Length: {}\r\n\r\n",
        if head_only { 0 } else { body.len() }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Close with a TCP reset rather than a FIN, as a crashed peer or a
/// middlebox timing out does.
fn reset(conn: TcpStream) {
    let _ = conn.set_zero_linger();
    drop(conn);
}

async fn serve(
    client: TcpStream,
    upstream: &str,
    f: Faults,
    mut rng: StdRng,
    counts: &Counts,
    mut gate: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let mut up: Option<BufReader<TcpStream>> = None;
    while let Some(mut req) = read_head(&mut client).await? {
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let method = req.first.split(' ').next().unwrap_or("").to_string();
        let head_only = method == "HEAD";
        // Answer `Expect: 100-continue` here: the body is read before the
        // fault is chosen, and the store is not asked to continue again.
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            client
                .get_mut()
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
            let text = String::from_utf8_lossy(&req.raw).to_string();
            req.raw = text
                .split_inclusive('\n')
                .filter(|l| !l.to_ascii_lowercase().starts_with("expect:"))
                .collect::<String>()
                .into_bytes();
        }
        let body = read_body(&mut client, &req, false).await?;
        let _in_progress = match f.hold {
            Some(h) if req.first.contains(h) => {
                let counted = InProgress::new(counts);
                counts.held.fetch_add(1, Ordering::SeqCst);
                let opened = gate.wait_for(|open| *open).await.is_ok();
                counts.held.fetch_sub(1, Ordering::SeqCst);
                if !opened {
                    return Ok(());
                }
                Some(counted)
            }
            _ => None,
        };
        let (delay, draw): (f64, f64) = (rng.random(), rng.random());
        // Both are drawn for every request, so that `only` does not shift
        // the sequence the others see.
        let hit = f.only.is_none_or(|m| m == method);
        let draw = if hit { draw } else { 1.0 };
        if hit && delay < f.latency {
            counts.delays.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(f.delay).await;
        }
        if draw < f.slowdown {
            counts.slowdowns.fetch_add(1, Ordering::Relaxed);
            let e = s3_error(
                503,
                "Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
                head_only,
            );
            client.get_mut().write_all(&e).await?;
            continue;
        }
        if draw < f.slowdown + f.internal {
            counts.internals.fetch_add(1, Ordering::Relaxed);
            let e = s3_error(
                500,
                "Internal Server Error",
                "InternalError",
                "We encountered an internal error. Please try again.",
                head_only,
            );
            client.get_mut().write_all(&e).await?;
            continue;
        }
        let broken = draw < f.slowdown + f.internal + f.reset;
        // A kept-alive connection the store has since closed is no fault
        // of ours: open a new one and send again.
        let mut resp = None;
        for _ in 0..2 {
            let fresh = up.is_none();
            if fresh {
                up = Some(BufReader::new(TcpStream::connect(upstream).await?));
            }
            let store = up.as_mut().unwrap();
            if broken && !body.is_empty() {
                break;
            }
            let sent = async {
                store.get_mut().write_all(&req.raw).await?;
                store.get_mut().write_all(&body).await?;
                read_head(store).await
            }
            .await;
            match sent {
                Ok(Some(h)) => {
                    resp = Some(h);
                    break;
                }
                _ if !fresh => up = None,
                Ok(None) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Err(e) => return Err(e),
            }
        }
        let store = up.as_mut().ok_or(std::io::ErrorKind::UnexpectedEof)?;
        if broken && !body.is_empty() {
            // Half the request reaches the store, which never acts on it.
            counts.resets.fetch_add(1, Ordering::Relaxed);
            store.get_mut().write_all(&req.raw).await?;
            store.get_mut().write_all(&body[..body.len() / 2]).await?;
            reset(up.take().unwrap().into_inner());
            reset(client.into_inner());
            return Ok(());
        }
        let resp = resp.ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let status: u16 = resp
            .first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let bodiless = head_only || status == 204 || status == 304 || status < 200;
        let to_close = resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || (!resp.chunked() && resp.length().is_none() && !bodiless);
        let rbody = if bodiless {
            Vec::new()
        } else {
            read_body(store, &resp, to_close).await?
        };
        if broken {
            // The store acted; a successful answer breaks off half-way
            // through its body. Any other (a 404 of a missing key, say)
            // breaks before its head: once its status is through, Berth has
            // the store's verdict and no fault is left to observe.
            counts.resets.fetch_add(1, Ordering::Relaxed);
            let c = client.get_mut();
            if !rbody.is_empty() && (200..300).contains(&status) {
                c.write_all(&resp.raw).await?;
                c.write_all(&rbody[..rbody.len() / 2]).await?;
                c.flush().await?;
            }
            reset(client.into_inner());
            return Ok(());
        }
        let c = client.get_mut();
        c.write_all(&resp.raw).await?;
        c.write_all(&rbody).await?;
        if to_close {
            return Ok(());
        }
    }
    Ok(())
}
