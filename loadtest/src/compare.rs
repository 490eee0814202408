//! The `compare` run: build Berth, measure the reference figures, start the
//! servers on fresh roots, run each workload against Berth then distribution
//! (then nginx where it gives the reference), and collect a [`Report`].
//! A workload that fails for one server is noted and the run goes on.

use std::{net::SocketAddr, path::Path, rc::Rc, time::Duration};

use anyhow::Result;
use http::Method;

use crate::{
    blobload::BlobLoad,
    cpu,
    data::{random_bytes, BlobData, PATTERN_LEN},
    docker, progress,
    progress::{bytes_bar, count_bar, note, phase, spinner},
    reference,
    report::{References, RegistryFigures, Report, Small},
    rss::RssMonitor,
    servers::{self, Nginx, RegistryKind, RegistryServer},
    setup,
    workloads::{self, mb_per_s, LoadResult, LoadSpec},
    CompareArgs, Workload,
};

/// Sizes and durations after `--quick` and explicit options are applied.
struct Settings {
    blob_size: u64,
    load: BlobLoad,
    pulls: usize,
    layer_size: u64,
    only: Vec<Workload>,
}

impl Settings {
    fn from(a: &CompareArgs) -> Result<Settings> {
        let q = a.quick;
        let load = BlobLoad::from(&a.blob_load, q)?;
        Ok(Settings {
            load,
            blob_size: a.blob_size.unwrap_or(if q { 128 << 20 } else { 1 << 30 }),
            pulls: a.pulls.unwrap_or(if q { 2 } else { 3 }).max(1),
            layer_size: a.layer_size.unwrap_or(if q { 2 << 20 } else { 12 << 20 }),
            only: a.only.clone(),
        })
    }

    /// Is `w` part of this run? (`--only`; `pull` needs the monolithic push.)
    fn runs(&self, w: Workload) -> bool {
        self.only.is_empty()
            || self.only.contains(&w)
            || (w == Workload::Push && self.only.contains(&Workload::Pull))
    }
}

/// Log a failed step as a note and carry on with `None`.
pub(crate) fn keep<T>(notes: &mut Vec<String>, what: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let msg = format!("{what} failed: {e:#}");
            note(&msg);
            notes.push(msg);
            None
        }
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// The large-blob workloads against one registry.
async fn large_blobs(
    s: &Settings,
    reg: &RegistryServer,
    mono: &(BlobData, String),
    chunked: &(BlobData, String),
    rss: &RssMonitor,
    notes: &mut Vec<String>,
    fig: &mut RegistryFigures,
) {
    let label = reg.label();
    let size = s.blob_size;
    rss.window_start(label);

    if s.runs(Workload::Push) {
        let pb = bytes_bar(size, format!("{label}: push monolithic"));
        let r = workloads::push_monolithic(reg.addr, "loadtest/big", &mono.0, &mono.1, &pb).await;
        pb.finish_and_clear();
        if let Some(t) = keep(notes, &format!("{label} monolithic push"), r) {
            let v = mb_per_s(size, t.total);
            fig.push_mono = Some(v);
            note(format!(
                "{label}: push monolithic {v:.0} MB/s ({:.2} s; 201 came {:.2} s after the last byte was sent)",
                t.total.as_secs_f64(),
                t.tail.as_secs_f64()
            ));
        }
    }

    if s.runs(Workload::Chunked) {
        let pb = bytes_bar(size, format!("{label}: push chunked"));
        let r = workloads::push_chunked(
            reg.addr,
            "loadtest/chunked",
            &chunked.0,
            &chunked.1,
            s.load.chunk_size,
            &pb,
        )
        .await;
        pb.finish_and_clear();
        if let Some(t) = keep(notes, &format!("{label} chunked push"), r) {
            let v = mb_per_s(size, t.total);
            fig.push_chunked = Some(v);
            note(format!(
                "{label}: push chunked {v:.0} MB/s ({:.2} s; the closing PUT took {:.2} s)",
                t.total.as_secs_f64(),
                t.tail.as_secs_f64()
            ));
        }
    }

    if fig.push_mono.is_some() && s.runs(Workload::Pull) {
        let path = format!("/v2/loadtest/big/blobs/{}", mono.1);
        fig.pull = pull_n(s, reg.addr, &path, label, notes).await;
    }
    fig.rss_big = rss.window_end(label);
    note(format!(
        "{label}: peak RSS during large transfers {:.1} MiB",
        fig.rss_big as f64 / 1048576.0
    ));
}

/// GET `path` `s.pulls` times; the median MB/s.
async fn pull_n(
    s: &Settings,
    addr: SocketAddr,
    path: &str,
    label: &str,
    notes: &mut Vec<String>,
) -> Option<f64> {
    let mut rates = Vec::new();
    for i in 1..=s.pulls {
        let pb = bytes_bar(s.blob_size, format!("{label}: pull {i}/{}", s.pulls));
        let r = workloads::pull(addr, path, s.blob_size, &pb).await;
        pb.finish_and_clear();
        let d = keep(notes, &format!("{label} pull"), r)?;
        rates.push(mb_per_s(s.blob_size, d));
    }
    let m = median(rates.clone());
    note(format!(
        "{label}: pull {} MB/s (median of {})",
        m.map_or("-".into(), |v| format!("{v:.0}")),
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    m
}

/// The same blob file for nginx: a hard link to a registry's copy (no
/// second GiB on disk), else written out from the generator.
fn place_blob_for_nginx(
    nginx: &Nginx,
    reg: Option<&RegistryServer>,
    blob: &(BlobData, String),
) -> Result<()> {
    let dest = nginx.www.join("blob.bin");
    let _ = std::fs::remove_file(&dest);
    if let Some(reg) = reg {
        if std::fs::hard_link(reg.blob_path(&blob.1), &dest).is_ok() {
            return Ok(());
        }
    }
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&dest)?);
    let mut res = Ok(());
    blob.0.for_each_chunk(|c| {
        if res.is_ok() {
            res = f.write_all(c);
        }
    });
    res?;
    f.flush()?;
    Ok(())
}

pub(crate) async fn run_load(
    addr: SocketAddr,
    spec: &LoadSpec,
    label: &str,
    what: &str,
    notes: &mut Vec<String>,
) -> Option<LoadResult> {
    let total = (spec.warmup + spec.duration).as_millis() as u64;
    let pb = progress::count_bar(total, format!("{label}: {what} (ms)"));
    let r = workloads::load(addr, spec, &pb).await;
    pb.finish_and_clear();
    let r = keep(notes, &format!("{label} {what}"), r)?;
    note(format!(
        "{label}: {what} {:.0} req/s ({} requests), p50 {:.2} ms, p99 {:.2} ms, {} errors",
        r.rps, r.requests, r.p50_ms, r.p99_ms, r.errors
    ));
    Some(r)
}

async fn large_phase(
    s: &Settings,
    regs: &[&RegistryServer],
    figs: &mut [RegistryFigures],
    nginx: Option<&Nginx>,
    rss: &RssMonitor,
    refs: &mut References,
    notes: &mut Vec<String>,
) {
    phase(&format!("large blob: {} MiB", s.blob_size >> 20));
    let pattern = random_bytes(1, PATTERN_LEN);
    let sp = spinner("sha256 of the test blobs (streaming pass)");
    let mono = BlobData::new(&pattern, 1, s.blob_size);
    let mono = (mono.clone(), mono.digest());
    let chunked = BlobData::new(&pattern, 2, s.blob_size);
    let chunked = (chunked.clone(), chunked.digest());
    sp.finish_and_clear();
    for (reg, fig) in regs.iter().zip(figs.iter_mut()) {
        large_blobs(s, reg, &mono, &chunked, rss, notes, fig).await;
    }
    if let (Some(n), true) = (nginx, s.runs(Workload::Pull)) {
        let placed = place_blob_for_nginx(n, regs.first().copied(), &mono);
        if keep(notes, "placing the blob for nginx", placed).is_some() {
            refs.nginx_sendfile = pull_n(s, n.addr, "/blob.bin", "nginx", notes).await;
        }
    }
}

async fn small_phase(
    s: &Settings,
    regs: &[&RegistryServer],
    figs: &mut [RegistryFigures],
    notes: &mut Vec<String>,
) {
    phase(&format!(
        "small blobs: {} x {} B, {} clients",
        s.load.small_blobs, s.load.small_size, s.load.small_concurrency
    ));
    let blobs = Rc::new(workloads::small_blobs(
        s.load.small_blobs,
        s.load.small_size as usize,
        7,
    ));
    for (reg, fig) in regs.iter().zip(figs.iter_mut()) {
        let label = reg.label();
        let pb = count_bar(s.load.small_blobs as u64, format!("{label}: small blobs"));
        let r = workloads::push_small_blobs(
            reg.addr,
            "loadtest/small",
            blobs.clone(),
            s.load.small_concurrency,
            &pb,
        )
        .await;
        pb.finish_and_clear();
        if let Some(r) = keep(notes, &format!("{label} small blobs"), r) {
            note(format!(
                "{label}: {:.0} blobs/s, p50 {:.2} ms, p99 {:.2} ms",
                r.per_sec(),
                r.p50_ms,
                r.p99_ms
            ));
            fig.small = Some(Small {
                per_sec: r.per_sec(),
                p50_ms: r.p50_ms,
                p99_ms: r.p99_ms,
            });
        }
    }
}

async fn rate_phase(
    s: &Settings,
    regs: &[&RegistryServer],
    figs: &mut [RegistryFigures],
    nginx: Option<&Nginx>,
    refs: &mut References,
    notes: &mut Vec<String>,
) {
    phase(&format!(
        "request rate: {} connections, {:.0} s each",
        s.load.connections,
        s.load.duration.as_secs_f64()
    ));
    let spec = |method: Method, path: String| {
        LoadSpec::new(
            method,
            path,
            s.load.connections,
            s.load.warmup,
            s.load.duration,
        )
    };
    for (reg, fig) in regs.iter().zip(figs.iter_mut()) {
        let label = reg.label();
        let Some(t) = keep(
            notes,
            &format!("{label} manifest setup"),
            workloads::setup_manifest(reg.addr, "loadtest/app", None).await,
        ) else {
            continue;
        };
        let head = spec(Method::HEAD, t.blob_path);
        fig.head = run_load(reg.addr, &head, label, "blob HEAD", notes).await;
        let get = spec(Method::GET, t.manifest_path)
            .header(http::header::ACCEPT, workloads::MANIFEST_ACCEPT);
        fig.get = run_load(reg.addr, &get, label, "manifest GET", notes).await;
    }
    if let Some(n) = nginx {
        let get = spec(Method::GET, "/small.bin".into());
        refs.nginx_get = run_load(n.addr, &get, "nginx", "1 KiB GET", notes).await;
        let head = spec(Method::HEAD, "/small.bin".into());
        refs.nginx_head = run_load(n.addr, &head, "nginx", "1 KiB HEAD", notes).await;
    }
}

/// The docker workload; the image's payload size if it was built.
async fn docker_phase(
    s: &Settings,
    dir: &Path,
    timeout: Duration,
    regs: &[&RegistryServer],
    figs: &mut [RegistryFigures],
    notes: &mut Vec<String>,
) -> Option<u64> {
    phase("docker push/pull (private dockerd, vfs)");
    let sp = spinner("starting dockerd");
    let started = servers::start_dockerd(dir, timeout).await;
    sp.finish_and_clear();
    let mut dockerd = match started {
        Ok(d) => d,
        Err(e) => {
            let msg = format!("dockerd could not start, docker figures skipped: {e:#}");
            note(&msg);
            notes.push(msg);
            return None;
        }
    };
    let sp = spinner("building the image (docker import + docker build)");
    let built = docker::build_image(&dockerd, dir, s.layer_size as usize).await;
    sp.finish_and_clear();
    let bytes = keep(notes, "docker image build", built);
    if bytes.is_some() {
        let targets: Vec<(&'static str, SocketAddr)> =
            regs.iter().map(|r| (r.label(), r.addr)).collect();
        let sp = spinner("docker push and pull");
        let results = docker::push_pull(&dockerd, &targets).await;
        sp.finish_and_clear();
        for ((label, r), fig) in results.into_iter().zip(figs.iter_mut()) {
            fig.docker = keep(notes, &format!("{label} docker push/pull"), r);
        }
    }
    let sp = spinner("stopping dockerd");
    dockerd.proc.stop();
    sp.finish_and_clear();
    bytes
}

pub async fn run(args: CompareArgs) -> Result<Report> {
    let s = Settings::from(&args)?;
    let mut notes = Vec::new();

    let berth_bin = setup::binaries(&args.bins, args.berth_only).await?;
    // After the build: cargo's CPU is not the run's.
    let cpu_start = cpu::snapshot();
    let started = std::time::Instant::now();
    let tmp = setup::work_dir("loadtest-", args.workdir.as_deref())?;
    let dir = tmp.path().to_path_buf();

    // Reference figures first, while nothing else runs.
    phase("reference figures");
    let mut refs = References {
        sha_rust: reference::sha256_rust(Duration::from_millis(if args.quick {
            300
        } else {
            1000
        })),
        ..Default::default()
    };
    note(format!(
        "sha256 (sha2 crate, 1 core): {:.0} MB/s",
        refs.sha_rust
    ));
    refs.sha_openssl = keep(
        &mut notes,
        "openssl speed",
        reference::sha256_openssl(1).await,
    );
    if let Some(v) = refs.sha_openssl {
        note(format!("sha256 (openssl -evp, 1 core): {v:.0} MB/s"));
    }
    let sp = spinner(format!("dd {} MiB conv=fdatasync", s.blob_size >> 20));
    let r = reference::disk_synced_write(&dir, (s.blob_size >> 20).max(1)).await;
    sp.finish_and_clear();
    refs.disk = keep(&mut notes, "dd", r);
    if let Some(v) = refs.disk {
        note(format!("disk synced write: {v:.0} MB/s"));
    }

    phase("starting servers");
    let rss = RssMonitor::start();
    let berth = servers::start_registry(RegistryKind::Berth, &berth_bin, &dir).await?;
    rss.watch(berth.label(), berth.proc.pid());
    note(format!(
        "berth on {} (pid {})",
        berth.addr,
        berth.proc.pid()
    ));
    let dist = if args.berth_only {
        None
    } else {
        let d = servers::start_registry(RegistryKind::Distribution, &args.bins.registry_bin, &dir)
            .await?;
        rss.watch(d.label(), d.proc.pid());
        note(format!("distribution on {} (pid {})", d.addr, d.proc.pid()));
        Some(d)
    };
    let nginx = keep(&mut notes, "nginx start", servers::start_nginx(&dir).await);
    if let Some(n) = &nginx {
        note(format!("nginx on {} (pid {})", n.addr, n.proc.pid()));
    }
    let regs: Vec<&RegistryServer> = std::iter::once(&berth).chain(dist.as_ref()).collect();
    let mut figs: Vec<RegistryFigures> = regs
        .iter()
        .map(|r| RegistryFigures {
            label: r.label(),
            ..Default::default()
        })
        .collect();

    let large = [Workload::Push, Workload::Chunked, Workload::Pull];
    if large.iter().any(|w| s.runs(*w)) {
        large_phase(
            &s,
            &regs,
            &mut figs,
            nginx.as_ref(),
            &rss,
            &mut refs,
            &mut notes,
        )
        .await;
    }
    if s.runs(Workload::Small) {
        small_phase(&s, &regs, &mut figs, &mut notes).await;
    }
    if s.runs(Workload::Rate) {
        rate_phase(&s, &regs, &mut figs, nginx.as_ref(), &mut refs, &mut notes).await;
    }
    let mut image_bytes = None;
    if args.no_docker || !s.runs(Workload::Docker) {
        notes.push("docker push/pull skipped".into());
    } else {
        let timeout = Duration::from_secs(args.dockerd_timeout);
        image_bytes = docker_phase(&s, &dir, timeout, &regs, &mut figs, &mut notes).await;
    }

    // The disk again: other work on the machine can slow it at either end.
    let sp = spinner("dd again (disk reference at the end)");
    let r = reference::disk_synced_write(&dir, (s.blob_size >> 20).max(1)).await;
    sp.finish_and_clear();
    refs.disk_end = keep(&mut notes, "dd (end)", r);
    if let Some(v) = refs.disk_end {
        note(format!("disk synced write (end): {v:.0} MB/s"));
    }

    for fig in figs.iter_mut() {
        fig.rss_peak = rss.peak(fig.label);
        note(format!(
            "{}: peak RSS {:.1} MiB (now {:.1} MiB)",
            fig.label,
            fig.rss_peak as f64 / 1048576.0,
            rss.current(fig.label) as f64 / 1048576.0
        ));
    }
    drop(regs);
    drop(nginx);
    drop(dist);
    drop(berth);
    drop(rss);
    setup::finish_work_dir(tmp, args.keep, &mut notes);

    notes.push(cpu::summary(
        &cpu_start,
        &cpu::snapshot(),
        started.elapsed().as_secs_f64(),
    ));
    let mut figs = figs.into_iter();
    Ok(Report {
        blob_size: s.blob_size,
        chunk_size: s.load.chunk_size,
        small_count: s.load.small_blobs,
        small_size: s.load.small_size,
        small_concurrency: s.load.small_concurrency,
        connections: s.load.connections,
        duration_s: s.load.duration.as_secs_f64(),
        image_bytes,
        berth: figs.next().expect("berth figures"),
        dist: figs.next(),
        refs,
        notes,
    })
}
