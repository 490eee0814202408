//! S3 requests per registry operation, counted at the store's side: nginx
//! proxies every request to the S3 server and writes one access-log line per
//! request (`method status "uri" "x-amz-copy-source"`). The registries are
//! configured with that nginx as their endpoint, so presigned redirect URLs
//! point at it too and a redirected blob GET is counted like any other.
//!
//! The deployments share the store, each under its own root directory (a
//! token like `cnt3` that appears in every key and list prefix), and the
//! operations run one at a time: the lines logged between the start of an
//! operation and a quiet moment after it are that operation's requests, but
//! for lines naming another deployment's root (reported, not counted; lines
//! naming no root, like DeleteObjects whose keys are in the body, count).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use bytes::Bytes;
use http::{header, Method, StatusCode};

use crate::{
    compare::keep,
    data::{digest_of, random_bytes, BlobData},
    deploy::{deploy, DeploySpec, Deployment},
    docker,
    http::{drain, Client, ReqBody},
    progress::{bytes_bar, note, phase, spinner},
    servers::{self, start_proxy, RegistryKind},
    stores::{S3Store, StoreKind},
    workloads::{self, TestImage, MANIFEST_ACCEPT},
};

pub struct CountSettings {
    pub blob_size: u64,
    pub chunk_size: u64,
    pub small_size: u64,
    /// Repetitions of the cheap operations (the figure is the mean).
    pub samples: usize,
    pub replicas: usize,
    pub layer_size: u64,
    pub docker: bool,
    pub dockerd_timeout: Duration,
    pub with_dist: bool,
}

/// The S3 operation a logged request was.
pub fn classify(method: &str, uri: &str, copy_source: bool) -> &'static str {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let has = |k: &str| query.split('&').any(|kv| kv.split('=').next() == Some(k));
    let bucket_only = path.trim_matches('/').split('/').count() <= 1;
    match method {
        "HEAD" if bucket_only => "HeadBucket",
        "HEAD" => "HeadObject",
        "GET" if has("list-type") => "ListObjectsV2",
        "GET" if has("uploads") => "ListMultipartUploads",
        "GET" if has("uploadId") => "ListParts",
        "GET" if bucket_only => "ListObjects",
        "GET" => "GetObject",
        "PUT" if has("partNumber") && copy_source => "UploadPartCopy",
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" if copy_source => "CopyObject",
        "PUT" if bucket_only => "CreateBucket",
        "PUT" => "PutObject",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "POST" if has("delete") => "DeleteObjects",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        _ => "other",
    }
}

/// One access-log line: (method, status, uri, copy source given).
fn parse_line(line: &str) -> Option<(&str, u16, &str, bool)> {
    let (method, rest) = line.split_once(' ')?;
    let (status, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('"')?;
    let (uri, rest) = rest.split_once('"')?;
    let copy = rest.trim().trim_matches('"');
    Some((
        method,
        status.parse().ok()?,
        uri,
        !copy.is_empty() && copy != "-",
    ))
}

/// Requests of one operation (summed over its repetitions).
/// What a sweep-marker poll's listing URI carries (`prefix=…/gc/sweeps/`).
const SWEEP_POLL: &str = "gc%2Fsweeps%2F";

#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub total: usize,
    /// Per S3 operation: (requests, of which answered >= 400).
    pub by_op: BTreeMap<&'static str, (usize, usize)>,
    /// Lines in the window that named another deployment's root.
    pub stray: usize,
    /// A server's poll for garbage-collection sweep markers (a listing of
    /// `gc/sweeps/`, once a second per replica whatever it is doing): not
    /// the operation's, so not in `total`.
    pub background: usize,
}

impl Tally {
    fn add_line(&mut self, line: &str, root: &str, roots: &[String]) {
        let Some((method, status, uri, copy)) = parse_line(line) else {
            return;
        };
        if uri.contains(SWEEP_POLL) {
            self.background += 1;
            return;
        }
        // Bucket-level requests (DeleteObjects: the keys are in the body)
        // name no root: they belong to the operation running now.
        if !uri.contains(root) && roots.iter().any(|r| uri.contains(r.as_str())) {
            self.stray += 1;
            return;
        }
        self.total += 1;
        let e = self.by_op.entry(classify(method, uri, copy)).or_default();
        e.0 += 1;
        if status >= 400 {
            e.1 += 1;
        }
    }

    /// `HeadObject 2 (404: 1), PutObject 1`, divided by `n`.
    pub fn breakdown(&self, n: usize) -> String {
        if self.by_op.is_empty() {
            return "none".into();
        }
        self.by_op
            .iter()
            .map(|(op, (c, err))| {
                let mut s = format!("{op} {}", per(*c, n));
                if *err > 0 {
                    let _ = write!(s, " ({} failed)", per(*err, n));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `c / n`, as an integer when it is one.
fn per(c: usize, n: usize) -> String {
    let n = n.max(1);
    if c.is_multiple_of(n) {
        (c / n).to_string()
    } else {
        format!("{:.1}", c as f64 / n as f64)
    }
}

struct Counter {
    log: PathBuf,
    roots: Vec<String>,
}

impl Counter {
    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn mark(&self) -> usize {
        self.lines().len()
    }

    /// Wait until the log has been quiet for 300 ms (at most 5 s), then tally
    /// the lines after `mark` for `root`.
    async fn since(&self, mark: usize, root: &str) -> Tally {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.mark();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.mark();
            if now == last || Instant::now() >= deadline {
                break;
            }
            last = now;
        }
        let mut t = Tally::default();
        for line in self.lines().iter().skip(mark) {
            t.add_line(line, root, &self.roots);
        }
        t
    }
}

/// One row of the result: an operation, how often it was done, and its tally
/// per deployment.
struct Row {
    name: String,
    n: usize,
    cells: Vec<Option<Tally>>,
}

/// HEAD `path` expecting `want`; a redirect is followed (with HEAD, as
/// docker does: distribution redirects blob HEADs to the store too).
async fn head(c: &mut Client, path: &str, accept: bool, want: StatusCode) -> Result<()> {
    let h = [(header::ACCEPT, MANIFEST_ACCEPT)];
    let headers: &[(header::HeaderName, &str)] = if accept { &h } else { &[] };
    let resp = c.send(Method::HEAD, path, headers, ReqBody::Empty).await?;
    let mut status = resp.status();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    drain(resp, None).await?;
    if status.is_redirection() {
        let url =
            location.ok_or_else(|| anyhow::anyhow!("HEAD {path}: redirect without Location"))?;
        let (to, rest) = crate::http::split_url(&url)?;
        let resp = Client::new(to)
            .send(Method::HEAD, &rest, &[], ReqBody::Empty)
            .await?;
        status = resp.status();
        drain(resp, None).await?;
    }
    if status != want {
        bail!("HEAD {path}: {status}, expected {want}");
    }
    Ok(())
}

/// The registry operations counted, in order; each returns how often it ran.
const OPS: usize = 10;

fn op_names(s: &CountSettings) -> [String; OPS] {
    let mib = s.blob_size >> 20;
    let chunks = s.blob_size.div_ceil(s.chunk_size);
    [
        format!("small blob push {} B: POST + PUT", s.small_size),
        "blob HEAD, absent (404)".into(),
        "blob HEAD, present (redirect followed)".into(),
        format!("monolithic push {mib} MiB: POST + PUT"),
        format!("chunked push {mib} MiB: POST + {chunks} PATCH + PUT"),
        format!("blob GET {mib} MiB (redirect followed)"),
        "manifest PUT (blobs present)".into(),
        "manifest GET by tag".into(),
        "manifest HEAD by tag".into(),
        "manifest GET by digest, warm".into(),
    ]
}

/// Run operation `i` against `addr`; how many times it was done.
async fn run_op(
    i: usize,
    s: &CountSettings,
    addr: SocketAddr,
    big: &[(BlobData, String); 2],
    img: &TestImage,
) -> Result<usize> {
    let repo = "loadtest/count";
    let mut c = Client::new(addr);
    let n = s.samples;
    match i {
        0 => {
            for k in 0..n {
                let data: Bytes = random_bytes(77_000 + k as u64, s.small_size as usize);
                workloads::push_small(&mut c, repo, &data, &digest_of(&data)).await?;
            }
            Ok(n)
        }
        1 => {
            for k in 0..n {
                let d = digest_of(&random_bytes(88_000 + k as u64, 64));
                head(
                    &mut c,
                    &format!("/v2/{repo}/blobs/{d}"),
                    false,
                    StatusCode::NOT_FOUND,
                )
                .await?;
            }
            Ok(n)
        }
        2 => {
            let d = digest_of(&random_bytes(77_000, s.small_size as usize));
            for _ in 0..n {
                head(
                    &mut c,
                    &format!("/v2/{repo}/blobs/{d}"),
                    false,
                    StatusCode::OK,
                )
                .await?;
            }
            Ok(n)
        }
        3 => {
            let pb = bytes_bar(s.blob_size, "push monolithic");
            let r = workloads::push_monolithic(addr, repo, &big[0].0, &big[0].1, &pb).await;
            pb.finish_and_clear();
            r.map(|_| 1)
        }
        4 => {
            let pb = bytes_bar(s.blob_size, "push chunked");
            let r =
                workloads::push_chunked(addr, repo, &big[1].0, &big[1].1, s.chunk_size, &pb).await;
            pb.finish_and_clear();
            r.map(|_| 1)
        }
        5 => {
            let pb = bytes_bar(s.blob_size, "pull");
            let path = format!("/v2/{repo}/blobs/{}", big[0].1);
            let r = workloads::pull_follow(addr, &path, s.blob_size, &pb).await;
            pb.finish_and_clear();
            r.map(|_| 1)
        }
        6 => {
            workloads::put_manifest(&mut c, repo, "v1", &img.manifest).await?;
            Ok(1)
        }
        7 => {
            for _ in 0..n {
                workloads::get_manifest(&mut c, &format!("/v2/{repo}/manifests/v1")).await?;
            }
            Ok(n)
        }
        8 => {
            for _ in 0..n {
                head(
                    &mut c,
                    &format!("/v2/{repo}/manifests/v1"),
                    true,
                    StatusCode::OK,
                )
                .await?;
            }
            Ok(n)
        }
        9 => {
            let path = format!("/v2/{repo}/manifests/{}", digest_of(&img.manifest));
            for _ in 0..n {
                workloads::get_manifest(&mut c, &path).await?;
            }
            Ok(n)
        }
        _ => unreachable!("{OPS} operations"),
    }
}

/// Count the operations and the docker workload on every deployment; the
/// rendered tables.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    s: &CountSettings,
    kind: StoreKind,
    store_bin: Option<&Path>,
    berth: &Path,
    registry: &Path,
    dir: &Path,
    pattern: &Bytes,
    notes: &mut Vec<String>,
) -> Result<String> {
    phase(&format!(
        "S3 requests per operation ({} behind a counting nginx)",
        kind.label()
    ));
    let store = S3Store::start(kind, store_bin, dir).await?;
    let proxy = start_proxy(dir, "nginx-s3-counter", &[store.addr], true, "/").await?;
    note(format!(
        "{} on {}, counted by nginx on {}",
        kind.label(),
        store.addr,
        proxy.addr
    ));
    let endpoint = format!("http://{}", proxy.addr);
    let mut specs = vec![
        DeploySpec::new(RegistryKind::Berth, 1, false, true),
        DeploySpec::new(RegistryKind::Berth, 1, true, true),
        DeploySpec::new(RegistryKind::Berth, s.replicas, true, true),
    ];
    if s.with_dist {
        specs.push(DeploySpec::new(RegistryKind::Distribution, 1, false, true));
        specs.push(DeploySpec::new(RegistryKind::Distribution, 1, true, true));
    }
    let roots: Vec<String> = (1..=specs.len()).map(|i| format!("cnt{i}")).collect();
    let counter = Counter {
        log: proxy
            .access_log
            .clone()
            .expect("counting proxy logs requests"),
        roots: roots.clone(),
    };

    // All deployments run at once (docker pushes to each, then pulls from each).
    let mut deps: Vec<Option<Deployment>> = Vec::new();
    for (spec, root) in specs.iter().zip(&roots) {
        let bin = match spec.kind {
            RegistryKind::Berth => berth,
            RegistryKind::Distribution => registry,
        };
        let sp = spinner(format!("starting {}", spec.label()));
        let d = deploy(*spec, bin, dir, &endpoint, root).await;
        sp.finish_and_clear();
        deps.push(keep(notes, &format!("{} start (count)", spec.label()), d));
    }
    let labels: Vec<String> = specs.iter().map(|s| s.label()).collect();

    let big = [
        BlobData::new(pattern, 11, s.blob_size),
        BlobData::new(pattern, 12, s.blob_size),
    ];
    let sp = spinner("sha256 of the count blobs");
    let big = big.map(|b| {
        let d = b.digest();
        (b, d)
    });
    sp.finish_and_clear();
    let img = TestImage::new(5)?;

    let names = op_names(s);
    let mut rows: Vec<Row> = names
        .iter()
        .map(|n| Row {
            name: n.clone(),
            n: s.samples,
            cells: vec![None; specs.len()],
        })
        .collect();
    for (j, dep) in deps.iter().enumerate() {
        let Some(dep) = dep else { continue };
        let mut c = Client::new(dep.addr);
        // The manifest's blobs, uncounted.
        let pre = async {
            workloads::push_small(&mut c, "loadtest/count", &img.config, &img.config_digest)
                .await?;
            workloads::push_small(&mut c, "loadtest/count", &img.layer, &img.layer_digest).await
        }
        .await;
        if keep(notes, &format!("{} image blobs (count)", dep.label), pre).is_none() {
            continue;
        }
        for (i, row) in rows.iter_mut().enumerate() {
            // "warm": one uncounted GET first (a registry with a cache
            // fills it; one without reads the store as on every GET).
            if i == 9 {
                let path = format!("/v2/loadtest/count/manifests/{}", digest_of(&img.manifest));
                let warm = workloads::get_manifest(&mut c, &path).await;
                keep(notes, &format!("{} manifest warm-up", dep.label), warm);
            }
            let mark = counter.mark();
            let r = run_op(i, s, dep.addr, &big, &img).await;
            let tally = counter.since(mark, &dep.root).await;
            if let Some(n) = keep(notes, &format!("{}: {}", dep.label, row.name), r) {
                row.n = n;
                note(format!(
                    "{}: {}: {} S3 requests per operation ({})",
                    dep.label,
                    row.name,
                    per(tally.total, n),
                    tally.breakdown(n)
                ));
                row.cells[j] = Some(tally);
            }
        }
    }

    if s.docker {
        docker_counts(s, dir, &deps, &counter, &mut rows, notes).await;
    }

    let stray: usize = rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .map(|t| t.stray)
        .sum();
    if stray > 0 {
        notes.push(format!(
            "{stray} S3 requests during the counted operations named another deployment's root (not counted)"
        ));
    }
    for (d, label) in deps.iter_mut().zip(&labels) {
        if let Some(d) = d {
            if let Err(e) = d.check_running() {
                notes.push(format!("{label} (count): a process died: {e:#}"));
            }
        }
    }
    drop(deps);
    drop(proxy);
    drop(store);
    Ok(render(kind, &labels, &rows))
}

async fn docker_counts(
    s: &CountSettings,
    dir: &Path,
    deps: &[Option<Deployment>],
    counter: &Counter,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let sp = spinner("starting dockerd");
    let started = servers::start_dockerd(dir, s.dockerd_timeout).await;
    sp.finish_and_clear();
    let Some(mut dockerd) = keep(notes, "dockerd start (docker counts skipped)", started) else {
        return;
    };
    let sp = spinner("building the image (docker import + docker build)");
    let built = docker::build_image(&dockerd, dir, s.layer_size as usize).await;
    sp.finish_and_clear();
    if let Some(bytes) = keep(notes, "docker image build", built) {
        let mib = bytes >> 20;
        let mut push = Row {
            name: format!("docker push, 4 layers, {mib} MiB"),
            n: 1,
            cells: vec![None; deps.len()],
        };
        let mut pull = Row {
            name: format!("docker pull, 4 layers, {mib} MiB"),
            n: 1,
            cells: vec![None; deps.len()],
        };
        let mut times: Vec<(Option<f64>, Option<f64>)> = vec![(None, None); deps.len()];
        for (j, dep) in deps.iter().enumerate() {
            let Some(dep) = dep else { continue };
            let sp = spinner(format!("{}: docker push", dep.label));
            let mark = counter.mark();
            let r = docker::push(&dockerd, dep.addr).await;
            let tally = counter.since(mark, &dep.root).await;
            sp.finish_and_clear();
            if let Some(t) = keep(notes, &format!("{} docker push", dep.label), r) {
                note(format!(
                    "{}: docker push {:.1} s, {} S3 requests ({})",
                    dep.label,
                    t.as_secs_f64(),
                    tally.total,
                    tally.breakdown(1)
                ));
                times[j].0 = Some(t.as_secs_f64());
                push.cells[j] = Some(tally);
            }
        }
        let cleared = docker::remove_all_images(&dockerd).await;
        if keep(notes, "removing local images before the pulls", cleared).is_some() {
            for (j, dep) in deps.iter().enumerate() {
                let Some(dep) = dep else { continue };
                if push.cells[j].is_none() {
                    continue;
                }
                let sp = spinner(format!("{}: docker pull", dep.label));
                let mark = counter.mark();
                let r = docker::pull(&dockerd, dep.addr).await;
                let tally = counter.since(mark, &dep.root).await;
                sp.finish_and_clear();
                if let Some(t) = keep(notes, &format!("{} docker pull", dep.label), r) {
                    note(format!(
                        "{}: docker pull {:.1} s, {} S3 requests ({})",
                        dep.label,
                        t.as_secs_f64(),
                        tally.total,
                        tally.breakdown(1)
                    ));
                    times[j].1 = Some(t.as_secs_f64());
                    pull.cells[j] = Some(tally);
                }
                let cleared = docker::remove_all_images(&dockerd).await;
                if keep(notes, "removing local images after a pull", cleared).is_none() {
                    break;
                }
            }
        }
        rows.push(push);
        rows.push(pull);
        let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        notes.push(format!(
            "docker push/pull wall times through the counting proxy (s): {}",
            deps.iter()
                .zip(&times)
                .filter_map(|(d, t)| d.as_ref().map(|d| format!(
                    "{} {}/{}",
                    d.label,
                    fmt(t.0),
                    fmt(t.1)
                )))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let sp = spinner("stopping dockerd");
    dockerd.proc.stop();
    sp.finish_and_clear();
}

/// Issue 11's request targets: a docker push at most half distribution's in
/// the same configuration; a docker pull (with Redis: nothing to look up
/// twice) no request beyond the objects it must fetch — the tag link, the
/// manifest, the config and each layer.
fn targets(labels: &[String], rows: &[Row]) -> Vec<String> {
    let cell = |row: &str, label: &str| {
        let r = rows.iter().find(|r| r.name.starts_with(row))?;
        let j = labels.iter().position(|l| l == label)?;
        r.cells[j]
            .as_ref()
            .map(|t| t.total as f64 / r.n.max(1) as f64)
    };
    let mut out = Vec::new();
    for (berth, dist) in [
        ("berth x1 + redis", "dist x1 + redis"),
        ("berth x1", "dist x1"),
    ] {
        let ratio = cell("docker push", berth)
            .zip(cell("docker push", dist))
            .map(|(b, d)| b / d.max(1.0));
        out.push(crate::report::target_line(
            "docker push",
            ratio,
            Some(0.5),
            "x",
            format!("S3 requests, {berth} / {dist}"),
            true,
        ));
    }
    let needed = (crate::docker::LAYERS + 3) as f64;
    out.push(crate::report::target_line(
        "docker pull",
        cell("docker pull", "berth x1 + redis"),
        Some(needed),
        "requests",
        format!(
            "berth x1 + redis; {needed} objects: tag link, manifest, config, {} layers",
            crate::docker::LAYERS
        ),
        true,
    ));
    out
}

fn render(kind: StoreKind, labels: &[String], rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nS3 requests per operation (counted by nginx in front of {}; default configs: redirects on; \
         mean over the repetitions; fewer is better)",
        kind.label()
    );
    let mut t: Vec<Vec<String>> = vec![std::iter::once("operation".to_string())
        .chain(labels.iter().cloned())
        .collect()];
    for r in rows {
        let label = if r.n > 1 {
            format!("{} (x{})", r.name, r.n)
        } else {
            r.name.clone()
        };
        t.push(
            std::iter::once(label)
                .chain(
                    r.cells
                        .iter()
                        .map(|c| c.as_ref().map_or("-".into(), |t| per(t.total, r.n))),
                )
                .collect(),
        );
    }
    out.push_str(&crate::report::table(&t));
    let background: usize = rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .map(|t| t.background)
        .sum();
    let _ = writeln!(
        out,
        "(not counted above: {background} listings of gc/sweeps/ in the windows, each replica's \
         poll for garbage-collection markers, once a second whatever it serves)"
    );
    let _ = writeln!(out, "\nTargets (S3 requests)");
    for line in targets(labels, rows) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "\nS3 requests by kind, per operation");
    for (j, label) in labels.iter().enumerate() {
        let _ = writeln!(out, "{label}");
        let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in rows {
            if let Some(t) = &r.cells[j] {
                let _ = writeln!(out, "  {:<width$}  {}", r.name, t.breakdown(r.n));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_s3_requests() {
        assert_eq!(classify("HEAD", "/b/r/k", false), "HeadObject");
        assert_eq!(
            classify("GET", "/b?list-type=2&prefix=cnt1%2F", false),
            "ListObjectsV2"
        );
        assert_eq!(classify("GET", "/b?prefix=x", false), "ListObjects");
        assert_eq!(
            classify("GET", "/b/k?X-Amz-Signature=1", false),
            "GetObject"
        );
        assert_eq!(
            classify("PUT", "/b/k?partNumber=2&uploadId=x", false),
            "UploadPart"
        );
        assert_eq!(
            classify("PUT", "/b/k?partNumber=2&uploadId=x", true),
            "UploadPartCopy"
        );
        assert_eq!(classify("PUT", "/b/k", true), "CopyObject");
        assert_eq!(classify("PUT", "/b/k", false), "PutObject");
        assert_eq!(
            classify("POST", "/b/k?uploads", false),
            "CreateMultipartUpload"
        );
        assert_eq!(
            classify("POST", "/b/k?uploadId=x", false),
            "CompleteMultipartUpload"
        );
        assert_eq!(
            classify("DELETE", "/b/k?uploadId=x", false),
            "AbortMultipartUpload"
        );
        assert_eq!(classify("DELETE", "/b/k", false), "DeleteObject");
    }

    #[test]
    fn tallies_lines_by_root() {
        let roots = vec!["cnt1".to_string(), "cnt2".to_string()];
        let mut t = Tally::default();
        for l in [
            r#"HEAD 404 "/loadtest/cnt1/docker/registry/v2/blobs/x/data" "-""#,
            r#"PUT 200 "/loadtest/cnt1/docker/a" "loadtest/cnt1/docker/b""#,
            r#"GET 200 "/loadtest?list-type=2&prefix=cnt1%2Fdocker" "-""#,
            r#"GET 200 "/loadtest/cnt2/docker/x" "-""#,
            r#"GET 200 "/loadtest/elsewhere" "-""#,
            r#"GET 200 "/loadtest/?list-type=2&delimiter=%2F&prefix=cnt1%2Fdocker%2Fregistry%2Fv2%2Fgc%2Fsweeps%2F" "-""#,
            r#"GET 200 "/loadtest/?list-type=2&delimiter=%2F&prefix=cnt2%2Fdocker%2Fregistry%2Fv2%2Fgc%2Fsweeps%2F" "-""#,
        ] {
            t.add_line(l, "cnt1", &roots);
        }
        assert_eq!(t.total, 4);
        assert_eq!(t.stray, 1);
        assert_eq!(t.background, 2, "sweep polls, whoever's");
        assert_eq!(
            t.breakdown(1),
            "CopyObject 1, GetObject 1, HeadObject 1 (1 failed), ListObjectsV2 1"
        );
        assert_eq!(per(3, 2), "1.5");
        assert_eq!(per(4, 2), "2");
    }
}
