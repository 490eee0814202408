//! `loadtest proxy`: the pull-through cache. One upstream registry (a Berth
//! on its own filesystem root, its access log counting what reaches it)
//! holds an image; Berth's `proxy:` and distribution's `proxy:` mirror it
//! side by side. Per mirror: a cold pull (nothing cached), a warm pull, and
//! `--clients` clients pulling the same uncached image at once on a fresh
//! mirror, with the upstream blob GETs each case caused; the same pull
//! straight from the upstream is the reference for warm pulls, and
//! distribution's proxy for cold ones (both write every byte to their
//! storage). PASS/FAIL lines for Berth.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::{header, Method, StatusCode};

use crate::{
    compare::median,
    data::{digest_of, random_bytes},
    http::{drain, expect, read_body, Client, ReqBody},
    progress::{note, phase},
    report::{num, table},
    servers::{free_port, spawn_registry, RegistryKind, RegistryServer},
    setup, ProxyArgs,
};

const REPO: &str = "library/bench";
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";
/// Layers a client fetches at once, as docker does.
const LAYERS_AT_ONCE: usize = 3;

/// The image: its manifest and blobs (config first).
struct Image {
    manifest: Bytes,
    blobs: Vec<(String, u64)>,
}

/// What one mirror achieved.
#[derive(Default, Clone)]
struct Figures {
    cold_s: Option<f64>,
    warm_s: Option<f64>,
    /// Median over interleaved pairs of (pull straight from upstream time /
    /// warm pull through the mirror time): speed relative to the upstream.
    warm_ratio: Option<f64>,
    /// Upstream blob GETs during the warm pulls.
    warm_fetches: Option<usize>,
    crowd_s: Option<f64>,
    /// Upstream blob GETs per blob while `clients` pulled at once (cold).
    crowd_fetches_per_blob: Option<f64>,
}

fn config(root: &Path, addr: SocketAddr, proxy: &str) -> String {
    format!(
        "version: 0.1\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: {addr}\n  secret: loadtest-secret\n\
         log:\n  level: info\n{proxy}",
        root.display()
    )
}

async fn start(
    kind: RegistryKind,
    bin: &Path,
    dir: &Path,
    name: &str,
    proxy: &str,
) -> Result<RegistryServer> {
    let dir = dir.join(name);
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    spawn_registry(kind, bin, &dir, &config(&root, addr, proxy), addr, root)
        .await
        .with_context(|| format!("starting {name}"))
}

/// Blob GETs the upstream has answered so far (its access log).
fn upstream_blob_gets(upstream: &RegistryServer) -> usize {
    upstream
        .proc
        .log_text()
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains("/blobs/sha256:"))
        .count()
}

async fn push(addr: SocketAddr, layers: usize, size: u64) -> Result<Image> {
    let mut c = Client::new(addr);
    let mut blobs = Vec::new();
    let config = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"seed":{}}}"#,
        std::process::id()
    ));
    let mut contents = vec![config];
    for i in 0..layers {
        contents.push(random_bytes(0x9e0c + i as u64, size as usize));
    }
    for data in contents {
        let d = digest_of(&data);
        let len = data.len() as u64;
        let resp = c
            .send(
                Method::POST,
                &format!("/v2/{REPO}/blobs/uploads/?digest={d}"),
                &[(header::CONTENT_TYPE, "application/octet-stream")],
                ReqBody::Full(Some(data)),
            )
            .await?;
        drain(
            expect(resp, StatusCode::CREATED, "POST ?digest=").await?,
            None,
        )
        .await?;
        blobs.push((d, len));
    }
    let layer_json: Vec<String> = blobs[1..]
        .iter()
        .map(|(d, n)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#
            )
        })
        .collect();
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        blobs[0].0,
        blobs[0].1,
        layer_json.join(",")
    ));
    let resp = c
        .send(
            Method::PUT,
            &format!("/v2/{REPO}/manifests/v1"),
            &[(
                header::CONTENT_TYPE,
                "application/vnd.oci.image.manifest.v1+json",
            )],
            ReqBody::Full(Some(manifest.clone())),
        )
        .await?;
    drain(
        expect(resp, StatusCode::CREATED, "PUT manifest").await?,
        None,
    )
    .await?;
    Ok(Image { manifest, blobs })
}

/// Pull the image as docker does (the manifest by tag, then the blobs,
/// `LAYERS_AT_ONCE` at a time), checking sizes and the manifest's bytes.
async fn pull(addr: SocketAddr, image: &Image) -> Result<f64> {
    let t0 = Instant::now();
    let mut c = Client::new(addr);
    let resp = c
        .send(
            Method::GET,
            &format!("/v2/{REPO}/manifests/v1"),
            &[(header::ACCEPT, ACCEPT)],
            ReqBody::Empty,
        )
        .await?;
    let body = read_body(expect(resp, StatusCode::OK, "GET manifest").await?).await?;
    if body != image.manifest {
        bail!("the manifest pulled is not the one pushed");
    }
    for group in image.blobs.chunks(LAYERS_AT_ONCE) {
        let mut fetches = tokio::task::JoinSet::new();
        for (d, size) in group.iter().cloned() {
            fetches.spawn(async move {
                let mut c = Client::new(addr);
                let resp = c
                    .send(
                        Method::GET,
                        &format!("/v2/{REPO}/blobs/{d}"),
                        &[],
                        ReqBody::Empty,
                    )
                    .await?;
                let n = drain(expect(resp, StatusCode::OK, "GET blob").await?, None).await?;
                if n != size {
                    bail!("blob {d}: {n} bytes, expected {size}");
                }
                Ok(())
            });
        }
        while let Some(r) = fetches.join_next().await {
            r??;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// `n` pulls, the median time.
async fn pulls(addr: SocketAddr, image: &Image, n: usize) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..n {
        times.push(pull(addr, image).await?);
    }
    median(times).context("no pulls")
}

async fn measure(
    kind: RegistryKind,
    bin: &Path,
    dir: &Path,
    upstream: &RegistryServer,
    image: &Arc<Image>,
    clients: usize,
    warm_pulls: usize,
) -> Result<Figures> {
    let proxy = format!("proxy:\n  remoteurl: http://{}\n", upstream.addr);
    let label = kind.label();
    let mut f = Figures::default();

    phase(&format!("{label}: cold and warm pulls through the mirror"));
    let mirror = start(kind, bin, dir, &format!("{label}-mirror"), &proxy).await?;
    let t = pull(mirror.addr, image).await?;
    f.cold_s = Some(t);
    note(format!("{label}: cold pull {t:.2} s"));
    let before = upstream_blob_gets(upstream);
    let t = pulls(mirror.addr, image, warm_pulls).await?;
    f.warm_s = Some(t);
    f.warm_fetches = Some(upstream_blob_gets(upstream) - before);
    note(format!(
        "{label}: warm pull {t:.2} s (median of {warm_pulls})"
    ));
    // Against the upstream alone pair by pair: a pull takes tens of
    // milliseconds and the machine's state drifts between two series.
    let mut ratios = Vec::new();
    for _ in 0..warm_pulls {
        let alone = pull(upstream.addr, image).await?;
        let through = pull(mirror.addr, image).await?;
        ratios.push(alone / through);
    }
    f.warm_ratio = median(ratios);
    drop(mirror);

    phase(&format!(
        "{label}: {clients} clients pulling the uncached image at once"
    ));
    let mirror = start(kind, bin, dir, &format!("{label}-crowd"), &proxy).await?;
    let before = upstream_blob_gets(upstream);
    let t0 = Instant::now();
    let mut crowd = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (addr, image) = (mirror.addr, image.clone());
        crowd.spawn(async move { pull(addr, &image).await });
    }
    while let Some(r) = crowd.join_next().await {
        r?.with_context(|| format!("{label}: a client of the crowd"))?;
    }
    let t = t0.elapsed().as_secs_f64();
    let fetched = upstream_blob_gets(upstream) - before;
    let per_blob = fetched as f64 / image.blobs.len() as f64;
    f.crowd_s = Some(t);
    f.crowd_fetches_per_blob = Some(per_blob);
    note(format!(
        "{label}: {clients} clients at once {t:.2} s, {fetched} upstream blob GETs for {} blobs",
        image.blobs.len()
    ));
    Ok(f)
}

pub async fn run(args: ProxyArgs) -> Result<(String, bool)> {
    let q = args.common.quick;
    let layers = args.layers;
    let size = args
        .layer_size
        .unwrap_or(if q { 8 << 20 } else { 32 << 20 });
    let clients = args.clients;
    let warm_pulls = if q { 3 } else { 7 };
    let berth = setup::binaries(&args.common.bins, args.common.berth_only).await?;
    let tmp = setup::work_dir("loadtest-proxy-", args.common.workdir.as_deref())?;
    let dir = tmp.path();
    let mut notes = Vec::new();

    phase("upstream: a Berth holding the image");
    let upstream = start(RegistryKind::Berth, &berth, dir, "upstream", "").await?;
    let image = Arc::new(push(upstream.addr, layers, size).await?);
    let total: u64 = image.blobs.iter().map(|(_, n)| n).sum();
    let direct = pulls(upstream.addr, &image, warm_pulls).await?;
    note(format!("straight from the upstream: {direct:.2} s"));

    let mut results = Vec::new();
    for (kind, bin) in setup::registries(&berth, &args.common.bins, args.common.berth_only) {
        let f = measure(kind, bin, dir, &upstream, &image, clients, warm_pulls).await;
        match f {
            Ok(f) => results.push((kind, f)),
            Err(e) => {
                notes.push(format!("{}: {e:#}", kind.label()));
                results.push((kind, Figures::default()));
            }
        }
    }

    let mb = |s: Option<f64>| s.map(|s| total as f64 / s / 1e6);
    let mut rows = vec![vec![
        "pull of the image".to_string(),
        "straight from upstream".into(),
    ]];
    for (kind, _) in &results {
        rows[0].push(format!("{} mirror", kind.label()));
    }
    let mut add = |name: String, direct: String, cell: &dyn Fn(&Figures) -> String| {
        let mut row = vec![name, direct];
        row.extend(results.iter().map(|(_, f)| cell(f)));
        rows.push(row);
    };
    add("cold (MB/s)".into(), "-".into(), &|f| num(mb(f.cold_s)));
    add("warm (MB/s)".into(), num(mb(Some(direct))), &|f| {
        num(mb(f.warm_s))
    });
    add("upstream blob GETs, warm pulls".into(), "-".into(), &|f| {
        f.warm_fetches.map_or("-".into(), |n| n.to_string())
    });
    add(
        format!("{clients} clients at once, cold (s)"),
        "-".into(),
        &|f| num(f.crowd_s),
    );
    add(
        format!("upstream GETs per blob, {clients} clients"),
        "-".into(),
        &|f| num(f.crowd_fetches_per_blob),
    );

    let mut text = format!(
        "\nloadtest proxy: image of {} blobs, {:.0} MiB; {clients} clients at once\n\n{}\n",
        image.blobs.len(),
        total as f64 / (1 << 20) as f64,
        table(&rows)
    );
    let berth_f = results
        .iter()
        .find(|(k, _)| *k == RegistryKind::Berth)
        .map(|(_, f)| f.clone())
        .unwrap_or_default();
    let mut ok = true;
    let mut verdict = |pass: Option<bool>, line: String| {
        let pass = pass.unwrap_or(false);
        ok &= pass;
        text += &format!("{} {line}\n", if pass { "PASS" } else { "FAIL" });
    };
    let per_blob = berth_f.crowd_fetches_per_blob;
    verdict(
        per_blob.map(|p| p <= 1.0),
        format!(
            "{clients} clients pulling an uncached image at once: {} upstream GETs per blob <= 1 (berth)",
            num(per_blob)
        ),
    );
    verdict(
        berth_f.warm_fetches.map(|n| n == 0),
        format!(
            "warm pulls: {} upstream blob GETs == 0 (berth)",
            berth_f.warm_fetches.map_or("-".into(), |n| n.to_string())
        ),
    );
    let warm_ratio = berth_f.warm_ratio;
    verdict(
        warm_ratio.map(|r| r >= 0.8),
        format!(
            "warm pull through the mirror: {} x >= 0.80 x the pull straight from upstream",
            num(warm_ratio)
        ),
    );
    // A cold pull writes every byte to the mirror's storage: its reference
    // is the other mirror doing the same, not a pull from a warm upstream.
    let dist_f = results
        .iter()
        .find(|(k, _)| *k == RegistryKind::Distribution)
        .map(|(_, f)| f.clone());
    if let Some(dist) = dist_f {
        let cold = berth_f.cold_s.zip(dist.cold_s).map(|(b, d)| d / b);
        verdict(
            cold.map(|r| r >= 0.9),
            format!(
                "cold pull: {} x >= 0.90 x distribution's proxy (speed)",
                num(cold)
            ),
        );
        let crowd = berth_f.crowd_s.zip(dist.crowd_s).map(|(b, d)| d / b);
        verdict(
            crowd.map(|r| r >= 1.0),
            format!(
                "{clients} clients at once, cold: {} x >= 1.00 x distribution's proxy (speed)",
                num(crowd)
            ),
        );
    }
    for n in &notes {
        text += &format!("- {n}\n");
    }
    drop(upstream);
    setup::finish_work_dir(tmp, args.common.keep, &mut Vec::new());
    Ok((text, ok))
}
