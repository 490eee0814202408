//! `loadtest s3`: registries on S3.
//!
//! 1. **matrix** — on Garage (a store run in production; `--store s3s-fs`
//!    for s3s-fs, objects as files, SigV4 checked strictly): Berth with one
//!    process and with `--replicas` processes behind nginx round-robin, each
//!    without and with Redis as blob-descriptor cache; distribution x1 is
//!    tried on the same store. Large blob push (monolithic, chunked) and pull,
//!    small blob pushes, blob HEAD and manifest GET rates, and the same
//!    requests straight to the store; the targets (ratios of Berth x1
//!    to the store alone) as PASS/FAIL lines. Redirects are off so that blob
//!    data flows through the registry.
//! 2. **moto** — Berth and distribution side by side on moto (in memory),
//!    where distribution works, with the same workloads at a smaller size.
//! 3. **count** — S3 requests per registry operation and per docker
//!    push/pull, counted by an nginx in front of the store (see `s3count`).
//! 4. **budget** — hundreds of concurrent uploads under a small
//!    `storage.uploadbuffers.budget`: Berth's peak RSS within the budget
//!    plus a constant, as a PASS/FAIL line (see `s3budget`).
//!
//! Each part starts its own store and stops it at its end, so its CPU note
//! covers it; every deployment is stopped before the next one starts.

use std::{fmt::Write as _, path::Path, rc::Rc, time::Duration};

use anyhow::{bail, Result};
use http::Method;

use crate::{
    blobload::BlobLoad,
    compare::{keep, median, run_load},
    cpu,
    data::{random_bytes, BlobData, PATTERN_LEN},
    deploy::{deploy, DeploySpec, Deployment},
    progress::{bytes_bar, count_bar, note, phase, spinner},
    report::{num, table},
    s3budget, s3count, s3ref,
    servers::RegistryKind,
    setup,
    stores::{find_garage, find_moto, S3Store, StoreKind},
    workloads::{self, mb_per_s, LoadResult, LoadSpec},
    S3Args, S3Part,
};

/// Sizes and durations after `--quick` and explicit options are applied.
pub struct Settings {
    pub blob_size: u64,
    pub moto_blob_size: u64,
    pub load: BlobLoad,
    pub pulls: usize,
    pub replicas: usize,
    pub layer_size: u64,
    pub parts: Vec<S3Part>,
}

impl Settings {
    fn from(a: &S3Args) -> Result<Settings> {
        let q = a.common.quick;
        let load = BlobLoad::from(&a.blob_load, q)?;
        if a.replicas < 2 || a.replicas > 16 {
            bail!("--replicas must be in 2..=16");
        }
        Ok(Settings {
            load,
            blob_size: a.blob_size.unwrap_or(if q { 64 << 20 } else { 256 << 20 }),
            moto_blob_size: a
                .moto_blob_size
                .unwrap_or(if q { 16 << 20 } else { 64 << 20 }),
            // Three even in quick mode: one sample of a 64 MiB pull swings ±15 %.
            pulls: a.pulls.unwrap_or(3).max(1),
            replicas: a.replicas,
            layer_size: a.layer_size.unwrap_or(if q { 2 << 20 } else { 12 << 20 }),
            parts: a.only.clone(),
        })
    }

    fn runs(&self, p: S3Part) -> bool {
        self.parts.is_empty() || self.parts.contains(&p)
    }
}

/// What one deployment achieved; `None` where a step failed or did not run.
#[derive(Default)]
struct Figures {
    label: String,
    push_mono: Option<workloads::PushTiming>,
    push_chunked: Option<workloads::PushTiming>,
    pull: Option<f64>,
    small: Option<workloads::SmallResult>,
    head: Option<LoadResult>,
    get: Option<LoadResult>,
    /// Manifest GET by digest, after the load's warm-up (registries only).
    get_digest: Option<LoadResult>,
    /// (registries, store) cores during: monolithic push, small blobs, HEAD, GET.
    cpu: [Option<(f64, f64)>; 4],
}

/// CPU of the registry processes and of the store over a phase.
struct CpuWatch {
    regs: Vec<u32>,
    store: u32,
    at: (f64, f64),
    t0: std::time::Instant,
}

impl CpuWatch {
    fn start(regs: Vec<u32>, store: u32) -> CpuWatch {
        CpuWatch {
            at: (
                cpu::processes_seconds(&regs),
                cpu::processes_seconds(&[store]),
            ),
            regs,
            store,
            t0: std::time::Instant::now(),
        }
    }

    /// (registries, store) in cores (CPU seconds per second).
    fn cores(&self) -> (f64, f64) {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-3);
        (
            (cpu::processes_seconds(&self.regs) - self.at.0) / wall,
            (cpu::processes_seconds(&[self.store]) - self.at.1) / wall,
        )
    }
}

/// The large test blobs of one size.
struct Blobs {
    size: u64,
    mono: (BlobData, String),
    chunked: (BlobData, String),
}

impl Blobs {
    fn new(pattern: &bytes::Bytes, size: u64) -> Blobs {
        let sp = spinner(format!(
            "sha256 of the {} MiB test blobs (streaming pass)",
            size >> 20
        ));
        let mono = BlobData::new(pattern, 1, size);
        let chunked = BlobData::new(pattern, 2, size);
        let b = Blobs {
            size,
            mono: (mono.clone(), mono.digest()),
            chunked: (chunked.clone(), chunked.digest()),
        };
        sp.finish_and_clear();
        b
    }
}

type SmallBlobs = Rc<Vec<(bytes::Bytes, String)>>;

/// Every workload against one deployment. A failed large push ends it (the
/// store or registry cannot take blobs); other failures are noted.
async fn measure(
    s: &Settings,
    dep: &mut Deployment,
    store_pid: u32,
    blobs: &Blobs,
    small: &SmallBlobs,
    notes: &mut Vec<String>,
) -> Figures {
    let label = dep.label.clone();
    let addr = dep.addr;
    let mut fig = Figures {
        label: label.clone(),
        ..Default::default()
    };
    let size = blobs.size;

    let watch = || CpuWatch::start(dep.pids(), store_pid);
    let pb = bytes_bar(size, format!("{label}: push monolithic"));
    let w = watch();
    let r =
        workloads::push_monolithic(addr, "loadtest/big", &blobs.mono.0, &blobs.mono.1, &pb).await;
    fig.cpu[0] = Some(w.cores());
    pb.finish_and_clear();
    let Some(t) = keep(notes, &format!("{label} monolithic push"), r) else {
        return fig;
    };
    note(format!(
        "{label}: push monolithic {:.0} MB/s ({:.2} s; 201 came {:.2} s after the last byte)",
        mb_per_s(size, t.total),
        t.total.as_secs_f64(),
        t.tail.as_secs_f64()
    ));
    fig.push_mono = Some(t);

    let pb = bytes_bar(size, format!("{label}: push chunked"));
    let r = workloads::push_chunked(
        addr,
        "loadtest/chunked",
        &blobs.chunked.0,
        &blobs.chunked.1,
        s.load.chunk_size,
        &pb,
    )
    .await;
    pb.finish_and_clear();
    if let Some(t) = keep(notes, &format!("{label} chunked push"), r) {
        note(format!(
            "{label}: push chunked {:.0} MB/s ({:.2} s; closing PUT {:.2} s)",
            mb_per_s(size, t.total),
            t.total.as_secs_f64(),
            t.tail.as_secs_f64()
        ));
        fig.push_chunked = Some(t);
    }

    let path = format!("/v2/loadtest/big/blobs/{}", blobs.mono.1);
    let mut rates = Vec::new();
    for i in 1..=s.pulls {
        let pb = bytes_bar(size, format!("{label}: pull {i}/{}", s.pulls));
        let r = workloads::pull_follow(addr, &path, size, &pb).await;
        pb.finish_and_clear();
        let Some((d, from)) = keep(notes, &format!("{label} pull"), r) else {
            break;
        };
        if let Some(from) = from {
            notes.push(format!("{label}: pull was redirected to {from}"));
        }
        rates.push(mb_per_s(size, d));
    }
    fig.pull = median(rates.clone());
    if let Some(m) = fig.pull {
        note(format!(
            "{label}: pull {m:.0} MB/s (median of {})",
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let pb = count_bar(small.len() as u64, format!("{label}: small blobs"));
    let w = watch();
    let r = workloads::push_small_blobs(
        addr,
        "loadtest/small",
        small.clone(),
        s.load.small_concurrency,
        &pb,
    )
    .await;
    fig.cpu[1] = Some(w.cores());
    pb.finish_and_clear();
    if let Some(r) = keep(notes, &format!("{label} small blobs"), r) {
        note(format!(
            "{label}: {:.0} small blobs/s, p50 {:.2} ms, p99 {:.2} ms",
            r.per_sec(),
            r.p50_ms,
            r.p99_ms
        ));
        fig.small = Some(r);
    }

    let t = keep(
        notes,
        &format!("{label} manifest setup"),
        workloads::setup_manifest(addr, "loadtest/app", None).await,
    );
    if let Some(t) = t {
        let head = LoadSpec::new(
            Method::HEAD,
            t.blob_path,
            s.load.connections,
            s.load.warmup,
            s.load.duration,
        );
        let w = watch();
        fig.head = run_load(addr, &head, &label, "blob HEAD", notes).await;
        fig.cpu[2] = Some(w.cores());
        let get = LoadSpec::new(
            Method::GET,
            t.manifest_path,
            s.load.connections,
            s.load.warmup,
            s.load.duration,
        )
        .header(http::header::ACCEPT, workloads::MANIFEST_ACCEPT);
        let w = watch();
        fig.get = run_load(addr, &get, &label, "manifest GET", notes).await;
        fig.cpu[3] = Some(w.cores());
        let by_digest = LoadSpec::new(
            Method::GET,
            t.manifest_digest_path,
            s.load.connections,
            s.load.warmup,
            s.load.duration,
        )
        .header(http::header::ACCEPT, workloads::MANIFEST_ACCEPT);
        fig.get_digest = run_load(
            addr,
            &by_digest,
            &label,
            "manifest GET by digest, warm",
            notes,
        )
        .await;
    }
    if let Err(e) = dep.check_running() {
        notes.push(format!("{label}: a process died: {e:#}"));
    }
    fig
}

/// The same kinds of requests straight to the store (see `s3ref`).
async fn store_alone(
    s: &Settings,
    store: &S3Store,
    blobs: &Blobs,
    small: &SmallBlobs,
    notes: &mut Vec<String>,
) -> Figures {
    let label = format!("{} alone", store.kind.label());
    let mut fig = Figures {
        label: label.clone(),
        ..Default::default()
    };
    let st = s3ref::Store {
        addr: store.addr,
        bucket: crate::stores::BUCKET.into(),
        access: crate::stores::ACCESS_KEY.into(),
        secret: crate::stores::SECRET_KEY.into(),
    };
    let size = blobs.size;
    let watch = || CpuWatch::start(Vec::new(), store.proc.pid());
    let pb = bytes_bar(size, format!("{label}: PutObject"));
    let w = watch();
    let r = st.put_big("alone/big", &blobs.mono.0, &pb).await;
    fig.cpu[0] = Some(w.cores());
    pb.finish_and_clear();
    let Some(t) = keep(notes, &format!("{label} PutObject"), r) else {
        return fig;
    };
    note(format!(
        "{label}: PutObject {:.0} MB/s",
        mb_per_s(size, t.total)
    ));
    fig.push_mono = Some(t);
    let mut rates = Vec::new();
    for i in 1..=s.pulls {
        let pb = bytes_bar(size, format!("{label}: GetObject {i}/{}", s.pulls));
        let r = st.get_big("alone/big", size, &pb).await;
        pb.finish_and_clear();
        let Some(d) = keep(notes, &format!("{label} GetObject"), r) else {
            break;
        };
        rates.push(mb_per_s(size, d));
    }
    fig.pull = median(rates);
    if let Some(v) = fig.pull {
        note(format!("{label}: GetObject {v:.0} MB/s"));
    }
    let pb = count_bar(small.len() as u64, format!("{label}: small PutObject"));
    let w = watch();
    let r = st
        .put_small("alone/small", small.clone(), s.load.small_concurrency, &pb)
        .await;
    fig.cpu[1] = Some(w.cores());
    pb.finish_and_clear();
    if let Some(r) = keep(notes, &format!("{label} small PutObject"), r) {
        note(format!(
            "{label}: {:.0} small PutObject/s, p50 {:.2} ms, p99 {:.2} ms",
            r.per_sec(),
            r.p50_ms,
            r.p99_ms
        ));
        fig.small = Some(r);
    }
    let put = st.put_one("alone/object", random_bytes(3, 4096)).await;
    if keep(notes, &format!("{label} PutObject 4 KiB"), put).is_some() {
        for (method, what) in [
            (Method::HEAD, "HeadObject"),
            (Method::GET, "GetObject 4 KiB"),
        ] {
            let total = (s.load.warmup + s.load.duration).as_millis() as u64;
            let pb = count_bar(total, format!("{label}: {what} (ms)"));
            let w = watch();
            let r = st
                .load(
                    method.clone(),
                    "alone/object",
                    s.load.connections,
                    s.load.warmup,
                    s.load.duration,
                    &pb,
                )
                .await;
            fig.cpu[if method == Method::HEAD { 2 } else { 3 }] = Some(w.cores());
            pb.finish_and_clear();
            if let Some(r) = keep(notes, &format!("{label} {what}"), r) {
                note(format!(
                    "{label}: {what} {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                    r.rps, r.p50_ms, r.p99_ms, r.errors
                ));
                if method == Method::HEAD {
                    fig.head = Some(r);
                } else {
                    fig.get = Some(r);
                }
            }
        }
    }
    if let (Some(h), Some(g), StoreKind::S3sFs) = (fig.head, fig.get, store.kind) {
        if g.p99_ms > 30.0 && g.p99_ms > 3.0 * h.p99_ms {
            notes.push(format!(
                "{label}: GetObject 4 KiB p99 {:.1} ms against HeadObject p99 {:.1} ms: s3s-fs writes a \
                 response's head and body separately without TCP_NODELAY, so a small GetObject often \
                 waits ~40 ms for the reader's delayed ACK; registry requests that read small objects \
                 (links, manifests) inherit these stalls (S3 itself does not)",
                g.p99_ms, h.p99_ms
            ));
        }
    }
    store.remove_root("alone");
    fig
}

/// The deployments of one part, each started, measured and stopped in turn.
#[allow(clippy::too_many_arguments)]
async fn run_part(
    s: &Settings,
    specs: &[DeploySpec],
    store: &S3Store,
    berth: &Path,
    registry: &Path,
    dir: &Path,
    root_prefix: &str,
    blobs: &Blobs,
    small: &SmallBlobs,
    notes: &mut Vec<String>,
) -> Vec<Figures> {
    let mut figs = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let root = format!("{root_prefix}{}", i + 1);
        let bin = match spec.kind {
            RegistryKind::Berth => berth,
            RegistryKind::Distribution => registry,
        };
        phase(&format!(
            "{} on {} (root /{root})",
            spec.label(),
            store.kind.label()
        ));
        let sp = spinner(format!("starting {}", spec.label()));
        let started = deploy(*spec, bin, dir, &store.endpoint(), &root).await;
        sp.finish_and_clear();
        let Some(mut dep) = keep(notes, &format!("{} start", spec.label()), started) else {
            figs.push(Figures {
                label: spec.label(),
                ..Default::default()
            });
            continue;
        };
        note(format!(
            "{} on {} (pids {:?})",
            dep.label,
            dep.addr,
            dep.pids()
        ));
        let fig = measure(s, &mut dep, store.proc.pid(), blobs, small, notes).await;
        if fig.push_mono.is_none() && store.kind == StoreKind::S3sFs {
            let missing = store.unimplemented_ops();
            if !missing.is_empty() {
                let msg = format!(
                    "{}: cannot store blobs on s3s-fs, which answers 501 for: {} \
                     (distribution 2.8 reopens every upload's writer with ListMultipartUploads)",
                    dep.label,
                    missing.join("; ")
                );
                note(&msg);
                notes.push(msg);
            }
        }
        figs.push(fig);
        drop(dep);
        store.remove_root(&root);
    }
    figs
}

fn mb(size: u64, t: Option<workloads::PushTiming>) -> Option<f64> {
    t.map(|t| mb_per_s(size, t.total))
}

fn lat(l: Option<LoadResult>) -> String {
    l.map_or("-".into(), |l| format!("{:.1}/{:.1}", l.p50_ms, l.p99_ms))
}

/// Rows = metrics, one column per deployment.
fn render_figures(s: &Settings, size: u64, figs: &[Figures]) -> String {
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("metric".to_string())
        .chain(figs.iter().map(|f| f.label.clone()))
        .collect()];
    let mut row = |name: String, f: &dyn Fn(&Figures) -> String| {
        rows.push(std::iter::once(name).chain(figs.iter().map(f)).collect());
    };
    row(
        format!("push {:.0} MiB monolithic (MB/s)", mib(size)),
        &|f| num(mb(size, f.push_mono)),
    );
    row(
        format!(
            "push {:.0} MiB chunked {:.0} MiB (MB/s)",
            mib(size),
            mib(s.load.chunk_size)
        ),
        &|f| num(mb(size, f.push_chunked)),
    );
    row(
        format!("pull {:.0} MiB (MB/s)", mib(size)),
        &|f| num(f.pull),
    );
    row(
        format!(
            "small blobs {}x{} B, c={} (blobs/s)",
            s.load.small_blobs, s.load.small_size, s.load.small_concurrency
        ),
        &|f| num(f.small.as_ref().map(|r| r.per_sec())),
    );
    row(
        format!("blob HEAD c={} (req/s)", s.load.connections),
        &|f| num(f.head.map(|l| l.rps)),
    );
    row(
        format!("manifest GET c={} (req/s)", s.load.connections),
        &|f| num(f.get.map(|l| l.rps)),
    );
    row(
        format!(
            "manifest GET by digest, warm c={} (req/s)",
            s.load.connections
        ),
        &|f| num(f.get_digest.map(|l| l.rps)),
    );
    row("  monolithic: 201 after last byte (s)".into(), &|f| {
        num(f.push_mono.map(|t| t.tail.as_secs_f64()))
    });
    row("  chunked: closing PUT (s)".into(), &|f| {
        num(f.push_chunked.map(|t| t.tail.as_secs_f64()))
    });
    row("  small blob push p50/p99 (ms)".into(), &|f| {
        f.small
            .as_ref()
            .map_or("-".into(), |r| format!("{:.1}/{:.1}", r.p50_ms, r.p99_ms))
    });
    row("  blob HEAD p50/p99 (ms)".into(), &|f| lat(f.head));
    row("  manifest GET p50/p99 (ms)".into(), &|f| lat(f.get));
    for (i, what) in [
        "monolithic push",
        "small blobs",
        "blob HEAD",
        "manifest GET",
    ]
    .iter()
    .enumerate()
    {
        row(format!("  CPU in {what}: registry+store (cores)"), &|f| {
            f.cpu[i].map_or("-".into(), |(r, st)| format!("{r:.2}+{st:.2}"))
        });
    }
    row("  HEAD/GET errors".into(), &|f| {
        let e = |l: Option<LoadResult>| l.map_or("-".into(), |l| l.errors.to_string());
        format!("{}/{}", e(f.head), e(f.get))
    });
    table(&rows)
}

/// The binary given for a store on the command line, if any.
fn store_bin(args: &S3Args, kind: StoreKind) -> Option<&Path> {
    match kind {
        StoreKind::Garage => args.garage.as_deref(),
        StoreKind::Moto => args.moto.as_deref(),
        StoreKind::S3sFs => args.s3s_fs.as_deref(),
    }
}

/// Issue 11's targets for one Berth process (redirects off, no Redis)
/// against the same requests straight to the store.
fn store_targets(berth: &Figures, alone: &Figures, nginx: Option<LoadResult>) -> Vec<String> {
    let ratio = |b: Option<f64>, a: Option<f64>| b.zip(a).map(|(b, a)| b / a.max(1e-9));
    let blob = |f: &Figures| {
        (
            f.push_mono.map(|t| t.total.as_secs_f64()),
            f.push_chunked.map(|t| t.total.as_secs_f64()),
        )
    };
    let ((mono_b, chunked_b), (mono_a, _)) = (blob(berth), blob(alone));
    // Throughput ratios are inverse time ratios for the same blob.
    let inv = |b: Option<f64>, a: Option<f64>| ratio(a, b);
    let lines = [
        ("push PUT ?digest=", inv(mono_b, mono_a), 0.6, "PutObject"),
        ("push chunked", inv(chunked_b, mono_a), 0.35, "PutObject"),
        ("pull", ratio(berth.pull, alone.pull), 0.9, "GetObject"),
        (
            "1000 small blobs",
            ratio(
                berth.small.as_ref().map(|r| r.per_sec()),
                alone.small.as_ref().map(|r| r.per_sec()),
            ),
            0.3,
            "small PutObjects",
        ),
        (
            "blob HEAD",
            ratio(berth.head.map(|l| l.rps), alone.head.map(|l| l.rps)),
            0.5,
            "HeadObject",
        ),
    ];
    let mut out: Vec<String> = lines
        .iter()
        .map(|(name, v, bound, what)| {
            crate::report::target_line(
                name,
                *v,
                Some(*bound),
                "x",
                format!("{} / {what} alone", berth.label),
                false,
            )
        })
        .collect();
    out.push(crate::report::target_line(
        "manifest GET by digest, warm",
        ratio(berth.get_digest.map(|l| l.rps), nginx.map(|l| l.rps)),
        Some(0.3),
        "x",
        format!("{} / nginx 1 KiB GET, as on the filesystem", berth.label),
        false,
    ));
    out
}

/// The reference for a warm manifest GET by digest: nginx serving a 1 KiB
/// file with the same load, started and stopped here so that it shares the
/// machine with nothing else.
async fn nginx_small_get(s: &Settings, dir: &Path, notes: &mut Vec<String>) -> Option<LoadResult> {
    let nginx = keep(notes, "nginx start", crate::servers::start_nginx(dir).await)?;
    let get = LoadSpec::new(
        Method::GET,
        "/small.bin",
        s.load.connections,
        s.load.warmup,
        s.load.duration,
    );
    let r = run_load(nginx.addr, &get, "nginx", "1 KiB GET", notes).await;
    if let Some(r) = r {
        note(format!(
            "nginx: 1 KiB GET {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            r.rps, r.p50_ms, r.p99_ms
        ));
    }
    r
}

/// A part's CPU note, taken once its processes are all stopped.
fn cpu_note(what: &str, start: &cpu::CpuSnapshot, started: std::time::Instant) -> String {
    format!(
        "{what}: {}",
        cpu::summary(start, &cpu::snapshot(), started.elapsed().as_secs_f64())
    )
}

pub async fn run(args: S3Args) -> Result<String> {
    let s = Settings::from(&args)?;
    let c = &args.common;
    let mut notes = Vec::new();
    let berth = setup::binaries(&c.bins, c.berth_only).await?;
    let with_dist = !c.berth_only;
    let tmp = setup::work_dir("loadtest-s3-", c.workdir.as_deref())?;
    let dir = tmp.path().to_path_buf();
    let run_start = cpu::snapshot();
    let run_started = std::time::Instant::now();

    let pattern = random_bytes(1, PATTERN_LEN);
    let small: SmallBlobs = Rc::new(workloads::small_blobs(
        s.load.small_blobs,
        s.load.small_size as usize,
        7,
    ));
    let mut out = String::new();
    // The matrix's PASS/FAIL lines, printed after the request counts'.
    let mut targets: Vec<String> = Vec::new();
    let header = |out: &mut String, title: &str| {
        let _ = writeln!(out, "\n{title}");
    };

    if s.runs(S3Part::Matrix) {
        let start = cpu::snapshot();
        let started = std::time::Instant::now();
        let kind = args.store.unwrap_or(if find_garage().is_some() {
            StoreKind::Garage
        } else {
            StoreKind::S3sFs
        });
        let label = kind.label();
        phase(&format!("matrix: {label}"));
        let store = S3Store::start(kind, store_bin(&args, kind), &dir).await;
        if let Some(store) = keep(&mut notes, &format!("{label} start"), store) {
            note(format!(
                "{label} on {} (pid {})",
                store.addr,
                store.proc.pid()
            ));
            let blobs = Blobs::new(&pattern, s.blob_size);
            let mut specs = vec![
                DeploySpec::new(RegistryKind::Berth, 1, false, false),
                DeploySpec::new(RegistryKind::Berth, 1, true, false),
                DeploySpec::new(RegistryKind::Berth, s.replicas, false, false),
                DeploySpec::new(RegistryKind::Berth, s.replicas, true, false),
            ];
            if with_dist {
                specs.push(DeploySpec::new(RegistryKind::Distribution, 1, false, false));
            }
            phase(&format!(
                "{label} alone (SigV4 requests straight to the store)"
            ));
            let alone = store_alone(&s, &store, &blobs, &small, &mut notes).await;
            let nginx = nginx_small_get(&s, &dir, &mut notes).await;
            let mut figs = run_part(
                &s,
                &specs,
                &store,
                &berth,
                &c.bins.registry_bin,
                &dir,
                "m",
                &blobs,
                &small,
                &mut notes,
            )
            .await;
            drop(store);
            if kind == StoreKind::S3sFs {
                notes.push(
                    "s3s-fs 0.14 answers ListObjectsV2 by walking every file of the bucket, so each list \
                     costs more as blobs accumulate (S3 lists by prefix from an index)"
                        .into(),
                );
            }
            header(
                &mut out,
                &format!(
                    "Registries on {label} (on this machine's disk; redirects off: blob data through the registry; \
                     xN = N processes behind nginx round-robin; \"{label} alone\" = the same requests straight \
                     to the store: PutObject, GetObject, PutObject 4 KiB, HeadObject, GetObject 4 KiB; \
                     MB = 10^6 bytes; load phases {:.0} s)",
                    s.load.duration.as_secs_f64()
                ),
            );
            targets = store_targets(&figs[0], &alone, nginx);
            figs.push(alone);
            out.push_str(&render_figures(&s, s.blob_size, &figs));
        }
        notes.push(cpu_note("matrix", &start, started));
    }

    if s.runs(S3Part::Moto) {
        let start = cpu::snapshot();
        let started = std::time::Instant::now();
        phase("side by side on moto");
        let store = S3Store::start(StoreKind::Moto, args.moto.as_deref(), &dir).await;
        if let Some(store) = keep(&mut notes, "moto start", store) {
            note(format!("moto on {} (pid {})", store.addr, store.proc.pid()));
            let blobs = Blobs::new(&pattern, s.moto_blob_size);
            let mut specs = vec![
                DeploySpec::new(RegistryKind::Berth, 1, false, false),
                DeploySpec::new(RegistryKind::Berth, 1, true, false),
            ];
            if with_dist {
                specs.push(DeploySpec::new(RegistryKind::Distribution, 1, false, false));
                specs.push(DeploySpec::new(RegistryKind::Distribution, 1, true, false));
            }
            let figs = run_part(
                &s,
                &specs,
                &store,
                &berth,
                &c.bins.registry_bin,
                &dir,
                "o",
                &blobs,
                &small,
                &mut notes,
            )
            .await;
            drop(store);
            header(
                &mut out,
                "Berth and distribution on moto (in memory, Python: the store is the bottleneck; \
                 redirects off)",
            );
            out.push_str(&render_figures(&s, s.moto_blob_size, &figs));
        }
        notes.push(cpu_note("moto", &start, started));
    }

    if s.runs(S3Part::Count) {
        let start = cpu::snapshot();
        let started = std::time::Instant::now();
        let kind = args.count_store.unwrap_or(if find_garage().is_some() {
            StoreKind::Garage
        } else if find_moto().is_some() {
            StoreKind::Moto
        } else {
            StoreKind::S3sFs
        });
        let store_bin = store_bin(&args, kind);
        let counts = s3count::run(
            &s3count::CountSettings {
                blob_size: s.moto_blob_size,
                chunk_size: s.load.chunk_size,
                small_size: s.load.small_size,
                samples: 20,
                replicas: s.replicas,
                layer_size: s.layer_size,
                docker: !args.no_docker,
                dockerd_timeout: Duration::from_secs(args.dockerd_timeout),
                with_dist,
            },
            kind,
            store_bin,
            &berth,
            &c.bins.registry_bin,
            &dir,
            &pattern,
            &mut notes,
        )
        .await;
        if let Some(text) = keep(&mut notes, "request counts", counts) {
            out.push_str(&text);
        }
        notes.push(cpu_note("count", &start, started));
    }

    if s.runs(S3Part::Budget) {
        let start = cpu::snapshot();
        let started = std::time::Instant::now();
        let settings = s3budget::BudgetSettings::new(c.quick);
        let r = s3budget::run(
            &settings,
            &berth,
            args.s3s_fs.as_deref(),
            &dir,
            &pattern,
            &mut notes,
        )
        .await;
        if let Some(text) = keep(&mut notes, "upload buffer budget", r) {
            out.push_str(&text);
        }
        notes.push(cpu_note("budget", &start, started));
    }

    if !targets.is_empty() {
        let _ = writeln!(
            out,
            "\nTargets (Berth x1 without Redis, to the store alone in the same run)"
        );
        for t in &targets {
            let _ = writeln!(out, "{t}");
        }
    }
    setup::finish_work_dir(tmp, c.keep, &mut notes);
    notes.push(cpu_note("whole run", &run_start, run_started));
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes");
        for n in &notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    Ok(out)
}
