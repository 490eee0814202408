//! `loadtest flood`: what a flood of slowloris and idle keep-alive
//! connections costs a normal client, and whether Berth's listener limits
//! (`http.timeouts.*`) clear it.
//!
//! Berth runs on a fresh filesystem root with `readheader` and `idle` set to
//! `--timeout`. A normal client (`--clients` keep-alive connections, each
//! pushing a small blob and pulling it back, over and over) runs for
//! `--duration` alone; then `--dribblers` connections start sending a
//! request head one byte a second and `--idlers` connections make one
//! request and go quiet, and once they are all open the normal client runs
//! again for as long. Printed: the normal client's round trips per second and
//! latency p50/p99 without and with the flood, Berth's RSS and descriptors,
//! and how many flood connections the server itself closed — with PASS/FAIL
//! lines for the targets.

use std::{
    cell::RefCell,
    fmt::Write as _,
    net::SocketAddr,
    rc::Rc,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

use crate::{
    data::{digest_of, random_bytes},
    http::{drain, expect, Client, ReqBody},
    progress::{note, phase, spinner},
    report::{num, table},
    rss::RssMonitor,
    servers::{free_port, spawn_registry, RegistryKind},
    setup,
    workloads::{percentile_ms, push_small},
    FloodArgs,
};

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// Targets: the client keeps at least this share of its throughput…
const MIN_THROUGHPUT_SHARE: f64 = 0.5;
/// …its p99 grows at most this much…
const MAX_P99_FACTOR: f64 = 4.0;
/// …and Berth's memory at most this much per flood connection.
const MAX_KIB_PER_CONNECTION: f64 = 64.0;

/// The settings after `--quick` and explicit options.
struct Settings {
    dribblers: usize,
    idlers: usize,
    clients: usize,
    duration: Duration,
    timeout: Duration,
    blob_size: usize,
}

impl Settings {
    fn from(a: &FloodArgs) -> Settings {
        let q = a.quick;
        let duration = Duration::from_secs_f64(a.duration.unwrap_or(if q { 3.0 } else { 10.0 }));
        Settings {
            dribblers: a.dribblers.unwrap_or(if q { 500 } else { 2_000 }),
            idlers: a.idlers.unwrap_or(if q { 500 } else { 2_000 }),
            clients: a.clients.max(1),
            duration,
            // The flood must outlive the measurement: opening it, then the
            // measurement, then some.
            timeout: Duration::from_secs_f64(a.timeout.unwrap_or(duration.as_secs_f64() + 15.0)),
            blob_size: a.blob_size.unwrap_or(64 << 10) as usize,
        }
    }
}

/// The normal client's figures for one phase.
#[derive(Clone, Copy, Default)]
struct Served {
    round_trips: usize,
    errors: usize,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
}

impl Served {
    fn per_sec(&self) -> f64 {
        self.round_trips as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `clients` loops of push-then-pull for `duration`.
async fn normal_client(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    blobs: Rc<Vec<(Bytes, String)>>,
) -> Served {
    let latencies = Rc::new(RefCell::new(Vec::new()));
    let errors = Rc::new(RefCell::new(Vec::<String>::new()));
    let t0 = Instant::now();
    let end = t0 + duration;
    let local = tokio::task::LocalSet::new();
    for i in 0..clients {
        let (blobs, latencies, errors) = (blobs.clone(), latencies.clone(), errors.clone());
        local.spawn_local(async move {
            let mut c = Client::new(addr);
            let mut n = i;
            while Instant::now() < end {
                let (data, digest) = &blobs[n % blobs.len()];
                n += clients;
                let t = Instant::now();
                match round_trip(&mut c, data, digest).await {
                    Ok(()) => latencies.borrow_mut().push(t.elapsed().as_micros() as u32),
                    Err(e) => errors.borrow_mut().push(format!("{e:#}")),
                }
            }
        });
    }
    local.await;
    let mut lat = latencies.take();
    lat.sort_unstable();
    let errors = errors.take();
    if let Some(first) = errors.first() {
        note(format!(
            "normal client: {} errors, first: {first}",
            errors.len()
        ));
    }
    Served {
        round_trips: lat.len(),
        errors: errors.len(),
        elapsed: t0.elapsed(),
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
    }
}

/// Push a blob (POST + PUT) and pull it back whole.
async fn round_trip(c: &mut Client, data: &Bytes, digest: &str) -> Result<()> {
    let repo = "loadtest/flood";
    push_small(c, repo, data, digest).await?;
    let path = format!("/v2/{repo}/blobs/{digest}");
    let resp = c.send(Method::GET, &path, &[], ReqBody::Empty).await?;
    let resp = expect(resp, StatusCode::OK, "GET blob").await?;
    let n = drain(resp, None).await?;
    if n != data.len() as u64 {
        bail!("GET blob: {n} bytes, expected {}", data.len());
    }
    Ok(())
}

/// How a flood connection ended.
enum Ended {
    ClosedByServer,
    StillOpen,
    Failed,
}

/// Read until the server closes, at most `limit`.
async fn wait_closed<R: tokio::io::AsyncRead + Unpin>(r: &mut R, limit: Duration) -> Ended {
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    match closed {
        Ok(()) => Ended::ClosedByServer,
        Err(_) => Ended::StillOpen,
    }
}

/// A slowloris: a request head, then a byte of a header value a second.
async fn dribbler(addr: SocketAddr, open: Arc<AtomicUsize>, limit: Duration) -> Ended {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return Ended::Failed;
    };
    let (mut r, mut w) = stream.into_split();
    if w.write_all(b"GET /v2/ HTTP/1.1\r\nHost: flood\r\nX-Slow: ")
        .await
        .is_err()
    {
        return Ended::Failed;
    }
    open.fetch_add(1, Ordering::SeqCst);
    let writer = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            if w.write_all(b"a").await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let ended = tokio::select! {
        e = wait_closed(&mut r, limit) => e,
        _ = writer => unreachable!(),
    };
    open.fetch_sub(1, Ordering::SeqCst);
    ended
}

/// One request on a keep-alive connection, then silence.
async fn idler(addr: SocketAddr, open: Arc<AtomicUsize>, limit: Duration) -> Ended {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return Ended::Failed;
    };
    if s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: flood\r\n\r\n")
        .await
        .is_err()
    {
        return Ended::Failed;
    }
    // The answer to /v2/ is small: its first read is all of it.
    let mut buf = [0u8; 1024];
    match s.read(&mut buf).await {
        Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200") => {}
        _ => return Ended::Failed,
    }
    open.fetch_add(1, Ordering::SeqCst);
    let ended = wait_closed(&mut s, limit).await;
    open.fetch_sub(1, Ordering::SeqCst);
    ended
}

/// Raise this process's soft descriptor limit to at least `want`.
fn raise_nofile(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_max < want {
        bail!(
            "the flood needs {want} descriptors; the hard limit is {} (ulimit -Hn): \
             use fewer --dribblers/--idlers",
            lim.rlim_max
        );
    }
    if lim.rlim_cur < want {
        lim.rlim_cur = want;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub async fn run(args: FloodArgs) -> Result<(String, bool)> {
    let s = Settings::from(&args);
    let flood = s.dribblers + s.idlers;
    raise_nofile((flood + s.clients) as u64 + 256)?;
    let berth_bin = setup::binaries(&args.bins, true).await?;
    let tmp = setup::work_dir("loadtest-flood-", args.workdir.as_deref())?;
    let dir = tmp.path().join("berth");
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let t = humantime_secs(s.timeout);
    let config = format!(
        "version: 0.1\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: {addr}\n  secret: loadtest-secret\n  \
         timeouts:\n    readheader: {t}\n    idle: {t}\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n",
        root.display()
    );
    let berth = spawn_registry(RegistryKind::Berth, &berth_bin, &dir, &config, addr, root)
        .await
        .context("starting berth")?;
    let pid = berth.proc.pid();
    let rss = RssMonitor::start();
    rss.watch("berth", pid);

    let blobs: Rc<Vec<(Bytes, String)>> = Rc::new(
        (0..256u64)
            .map(|i| {
                let data = random_bytes(0xf100d + i, s.blob_size);
                let d = digest_of(&data);
                (data, d)
            })
            .collect(),
    );
    // Warm-up: every blob stored once, connections made.
    let _ = normal_client(addr, s.clients, Duration::from_secs(1), blobs.clone()).await;

    phase(&format!(
        "normal client alone: {} connections, {:?}",
        s.clients, s.duration
    ));
    let alone = normal_client(addr, s.clients, s.duration, blobs.clone()).await;
    note(describe("alone", &alone));

    phase(&format!(
        "flood: {} slowloris + {} idle keep-alive connections (timeouts {t})",
        s.dribblers, s.idlers
    ));
    let rss_before = rss.current("berth");
    let fds_before = open_fds(pid);
    rss.window_start("berth");
    let open = Arc::new(AtomicUsize::new(0));
    let limit = s.timeout + Duration::from_secs(60);
    let mut conns = JoinSet::new();
    for _ in 0..s.dribblers {
        conns.spawn(dribbler(addr, open.clone(), limit));
    }
    for _ in 0..s.idlers {
        conns.spawn(idler(addr, open.clone(), limit));
    }
    let sp = spinner("opening the flood");
    let deadline = Instant::now() + s.timeout;
    while open.load(Ordering::SeqCst) < flood && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sp.finish_and_clear();
    let opened = open.load(Ordering::SeqCst);
    note(format!("{opened} of {flood} flood connections open"));
    let during = normal_client(addr, s.clients, s.duration, blobs.clone()).await;
    let open_after_measure = open.load(Ordering::SeqCst);
    let fds_during = open_fds(pid);
    note(describe("during the flood", &during));

    let sp = spinner("waiting for the server to close the flood");
    let (mut closed, mut still_open, mut failed) = (0usize, 0usize, 0usize);
    while let Some(joined) = conns.join_next().await {
        match joined {
            Ok(Ended::ClosedByServer) => closed += 1,
            Ok(Ended::StillOpen) => still_open += 1,
            Ok(Ended::Failed) | Err(_) => failed += 1,
        }
    }
    sp.finish_and_clear();
    let rss_peak = rss.window_end("berth");
    let fds_after = open_fds(pid);
    let after = normal_client(addr, s.clients, s.duration, blobs.clone()).await;
    note(describe("after the flood", &after));

    let mut out = String::new();
    let row = |label: &str, r: &Served| {
        vec![
            label.to_string(),
            num(Some(r.per_sec())),
            num(Some(r.p50_ms)),
            num(Some(r.p99_ms)),
            r.errors.to_string(),
        ]
    };
    let rows = vec![
        vec![
            "normal client (push + pull)".to_string(),
            "round trips/s".into(),
            "p50 ms".into(),
            "p99 ms".into(),
            "errors".into(),
        ],
        row("alone", &alone),
        row("during the flood", &during),
        row("after the flood", &after),
    ];
    let _ = writeln!(out, "{}", table(&rows));
    let _ = writeln!(
        out,
        "flood: {opened}/{flood} open at once ({open_after_measure} still open after the \
         measurement); closed by the server: {closed}, still open after {limit:?}: {still_open}, \
         failed to open: {failed}"
    );
    let growth_kib = rss_peak.saturating_sub(rss_before) as f64 / KIB;
    let _ = writeln!(
        out,
        "berth: VmRSS {:.1} MiB before, peak {:.1} MiB during ({:.1} KiB per flood connection); \
         descriptors {fds_before} before, {fds_during} during, {fds_after} after",
        rss_before as f64 / MIB,
        rss_peak as f64 / MIB,
        growth_kib / flood.max(1) as f64,
    );
    let _ = writeln!(out);

    let mut all_pass = true;
    let mut check = |ok: bool, line: String| {
        all_pass &= ok;
        let _ = writeln!(out, "{} {line}", if ok { "PASS" } else { "FAIL" });
    };
    let share = during.per_sec() / alone.per_sec().max(1e-9);
    check(
        share >= MIN_THROUGHPUT_SHARE,
        format!(
            "throughput during the flood: {} x alone (>= {MIN_THROUGHPUT_SHARE})",
            num(Some(share))
        ),
    );
    let p99_bound = alone.p99_ms * MAX_P99_FACTOR;
    check(
        during.p99_ms <= p99_bound,
        format!(
            "p99 during the flood: {} ms <= {} ms ({MAX_P99_FACTOR} x alone)",
            num(Some(during.p99_ms)),
            num(Some(p99_bound))
        ),
    );
    check(
        alone.errors + during.errors + after.errors == 0,
        format!(
            "normal client errors: {}",
            alone.errors + during.errors + after.errors
        ),
    );
    check(
        closed == flood,
        format!("flood connections closed by the server: {closed}/{flood}"),
    );
    let per_conn = growth_kib / flood.max(1) as f64;
    check(
        per_conn <= MAX_KIB_PER_CONNECTION,
        format!(
            "berth memory: {} KiB per flood connection (<= {MAX_KIB_PER_CONNECTION})",
            num(Some(per_conn))
        ),
    );
    drop(berth);
    let mut notes = Vec::new();
    setup::finish_work_dir(tmp, args.keep, &mut notes);
    for n in notes {
        let _ = writeln!(out, "- {n}");
    }
    Ok((out, !args.strict || all_pass))
}

fn describe(label: &str, r: &Served) -> String {
    format!(
        "{label}: {} round trips/s, p50 {} ms, p99 {} ms, {} errors",
        num(Some(r.per_sec())),
        num(Some(r.p50_ms)),
        num(Some(r.p99_ms)),
        r.errors
    )
}

/// Whole seconds as a duration a Berth config takes (`25s`).
fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}
