//! Raw-socket clients for the front-door tests (a client that misbehaves
//! has to be written by hand), and what `/proc` says about the server.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use crate::common::Berth;

/// Berth on the filesystem driver with `http` lines (indented two spaces,
/// under `http:`) added.
pub fn start(http: &str) -> Berth {
    Berth::start_with(|root, addr| config(root, addr, http))
}

pub fn config(root: &str, addr: &str, http: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n{http}"
    )
}

/// Raise this process's soft file-descriptor limit to at least `want`.
pub fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    assert!(
        lim.rlim_max >= want,
        "this test opens thousands of connections: it needs a hard RLIMIT_NOFILE of at least \
         {want} (ulimit -Hn is {})",
        lim.rlim_max
    );
    if lim.rlim_cur < want {
        lim.rlim_cur = want;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The descriptors `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// How a connection the test held ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The server closed it (EOF or reset); with whatever it had sent.
    Closed(String),
    /// Still open when the test stopped waiting.
    StillOpen(String),
}

/// Read until the server closes the connection, at most `limit`.
pub async fn read_until_closed<R: AsyncRead + Unpin>(r: &mut R, limit: Duration) -> Ended {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    let text = String::from_utf8_lossy(&got).into_owned();
    if closed {
        Ended::Closed(text)
    } else {
        Ended::StillOpen(text)
    }
}

/// Read one HTTP/1.1 response (head and a `Content-Length` body) and give
/// it as text; the connection stays open.
pub async fn read_response<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + length {
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(60), r.read(&mut buf))
            .await
            .expect("a response within a minute")
            .expect("reading a response");
        assert!(
            n > 0,
            "closed before a whole response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// `GET path` on `stream`, kept alive; the response as text.
pub async fn get<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: berth\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(stream).await
}

/// A slowloris: the head of a request, then one byte of a header value
/// every `every`, never finishing it. Counted in `open` while connected;
/// ends when the server closes the connection, or after `limit`.
pub async fn dribble<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    every: Duration,
    limit: Duration,
    open: Arc<AtomicUsize>,
) -> Ended {
    let (mut r, mut w) = tokio::io::split(stream);
    let head = b"GET /v2/ HTTP/1.1\r\nHost: berth\r\nX-Slow: ";
    if w.write_all(head).await.is_err() {
        return Ended::Closed("refused the first bytes".into());
    }
    open.fetch_add(1, Ordering::SeqCst);
    let writer = async {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if w.write_all(b"a").await.is_err() {
                // Closed: the reader sees it too.
                std::future::pending::<()>().await;
            }
        }
    };
    let ended = tokio::select! {
        ended = read_until_closed(&mut r, limit) => ended,
        _ = writer => unreachable!(),
    };
    open.fetch_sub(1, Ordering::SeqCst);
    ended
}

/// A keep-alive connection that makes one request, then nothing. Counted
/// in `open` once answered; ends when the server closes it, or after
/// `limit`. Gives the answer's status line and how the connection ended.
pub async fn idle_after_one_request(
    addr: &str,
    limit: Duration,
    open: Arc<AtomicUsize>,
) -> (String, Ended) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let answer = get(&mut s, "/v2/").await;
    open.fetch_add(1, Ordering::SeqCst);
    let ended = read_until_closed(&mut s, limit).await;
    open.fetch_sub(1, Ordering::SeqCst);
    (answer.lines().next().unwrap_or_default().to_string(), ended)
}

/// Wait (bounded) until `pid` has at most `max` descriptors open.
pub async fn wait_for_fds_at_most(pid: u32, max: usize, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let n = open_fds(pid);
        if n <= max || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
