//! The workloads, each against one server address: large blob push
//! (monolithic and chunked), large GET, many small pushes, and a fixed-duration
//! request loop with latency percentiles.

use std::{
    cell::Cell,
    net::SocketAddr,
    rc::Rc,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use bytes::Bytes;
use http::{header, HeaderName, Method, StatusCode};
use indicatif::ProgressBar;

use crate::{
    data::{digest_of, random_bytes, BlobData},
    http::{drain, expect, location, read_body, with_query, Client, ReqBody},
};

const OCTET: (HeaderName, &str) = (header::CONTENT_TYPE, "application/octet-stream");
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// MB/s with MB = 10^6 bytes, as dd and openssl count.
pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// POST a new upload session; its Location (path and query).
async fn start_upload(c: &mut Client, repo: &str) -> Result<String> {
    let resp = c
        .send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            ReqBody::Empty,
        )
        .await?;
    let resp = expect(resp, StatusCode::ACCEPTED, "POST upload").await?;
    let loc = location(&resp)?;
    drain(resp, None).await?;
    Ok(loc)
}

/// How long a push took, and how much of that came after the last byte of
/// data was sent (the server's flush, verify and commit).
#[derive(Clone, Copy, Debug)]
pub struct PushTiming {
    pub total: Duration,
    pub tail: Duration,
}

/// POST, then one streamed `PUT ?digest=` with the whole blob. Timed from POST
/// to the 201.
pub async fn push_monolithic(
    addr: SocketAddr,
    repo: &str,
    blob: &BlobData,
    digest: &str,
    pb: &ProgressBar,
) -> Result<PushTiming> {
    let mut c = Client::new(addr);
    let sent = Arc::new(OnceLock::new());
    let t0 = Instant::now();
    let loc = start_upload(&mut c, repo).await?;
    let body = ReqBody::blob_range(blob, 0, blob.size(), Some(pb.clone())).mark_sent(&sent);
    let resp = c
        .send(
            Method::PUT,
            &with_query(&loc, "digest", digest),
            &[OCTET],
            body,
        )
        .await?;
    let resp = expect(resp, StatusCode::CREATED, "PUT blob").await?;
    drain(resp, None).await?;
    let done = Instant::now();
    Ok(PushTiming {
        total: done - t0,
        tail: sent
            .get()
            .map_or(Duration::ZERO, |s| done.saturating_duration_since(*s)),
    })
}

/// POST, PATCH chunks of `chunk` bytes with Content-Range, then an empty
/// `PUT ?digest=`. Timed from POST to the 201.
pub async fn push_chunked(
    addr: SocketAddr,
    repo: &str,
    blob: &BlobData,
    digest: &str,
    chunk: u64,
    pb: &ProgressBar,
) -> Result<PushTiming> {
    let mut c = Client::new(addr);
    let t0 = Instant::now();
    let mut loc = start_upload(&mut c, repo).await?;
    let mut off = 0;
    // Bounded: one iteration per chunk.
    while off < blob.size() {
        let end = (off + chunk).min(blob.size());
        let range = format!("{}-{}", off, end - 1);
        let body = ReqBody::blob_range(blob, off, end, Some(pb.clone()));
        let resp = c
            .send(
                Method::PATCH,
                &loc,
                &[OCTET, (header::CONTENT_RANGE, range.as_str())],
                body,
            )
            .await?;
        let resp = expect(resp, StatusCode::ACCEPTED, "PATCH chunk").await?;
        loc = location(&resp)?;
        drain(resp, None).await?;
        off = end;
    }
    let put = Instant::now();
    let resp = c
        .send(
            Method::PUT,
            &with_query(&loc, "digest", digest),
            &[],
            ReqBody::Empty,
        )
        .await?;
    let resp = expect(resp, StatusCode::CREATED, "PUT (close chunked upload)").await?;
    drain(resp, None).await?;
    Ok(PushTiming {
        total: t0.elapsed(),
        tail: put.elapsed(),
    })
}

/// GET `path`, streamed and discarded; checks the length.
pub async fn pull(addr: SocketAddr, path: &str, size: u64, pb: &ProgressBar) -> Result<Duration> {
    let mut c = Client::new(addr);
    let t0 = Instant::now();
    let resp = c.send(Method::GET, path, &[], ReqBody::Empty).await?;
    let resp = expect(resp, StatusCode::OK, "GET blob").await?;
    let n = drain(resp, Some(pb)).await?;
    let d = t0.elapsed();
    if n != size {
        bail!("GET {path}: {n} bytes, expected {size}");
    }
    Ok(d)
}

/// GET `path`; a redirect (to a presigned storage URL on 127.0.0.1) is
/// followed once, on a new connection. Streamed and discarded; checks the
/// length. Also says where the data came from when redirected.
pub async fn pull_follow(
    addr: SocketAddr,
    path: &str,
    size: u64,
    pb: &ProgressBar,
) -> Result<(Duration, Option<SocketAddr>)> {
    let mut c = Client::new(addr);
    let t0 = Instant::now();
    let resp = c.send(Method::GET, path, &[], ReqBody::Empty).await?;
    let (resp, from) = if resp.status().is_redirection() {
        let url = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        drain(resp, None).await?;
        let url = url.ok_or_else(|| anyhow::anyhow!("GET {path}: redirect without Location"))?;
        let (to, rest) = crate::http::split_url(&url)?;
        let mut c2 = Client::new(to);
        (
            c2.send(Method::GET, &rest, &[], ReqBody::Empty).await?,
            Some(to),
        )
    } else {
        (resp, None)
    };
    let resp = expect(resp, StatusCode::OK, "GET blob").await?;
    let n = drain(resp, Some(pb)).await?;
    let d = t0.elapsed();
    if n != size {
        bail!("GET {path}: {n} bytes, expected {size}");
    }
    Ok((d, from))
}

/// Push one small blob the way docker does: POST, then PUT with the body.
pub async fn push_small(c: &mut Client, repo: &str, data: &Bytes, digest: &str) -> Result<()> {
    let loc = start_upload(c, repo).await?;
    let resp = c
        .send(
            Method::PUT,
            &with_query(&loc, "digest", digest),
            &[OCTET],
            ReqBody::full(data.clone()),
        )
        .await?;
    let resp = expect(resp, StatusCode::CREATED, "PUT small blob").await?;
    drain(resp, None).await?;
    Ok(())
}

/// Random small blobs with their digests (made before timing starts).
pub fn small_blobs(count: usize, size: usize, seed: u64) -> Vec<(Bytes, String)> {
    (0..count)
        .map(|i| {
            let data = random_bytes(seed.wrapping_mul(1_000_003).wrapping_add(i as u64), size);
            let d = digest_of(&data);
            (data, d)
        })
        .collect()
}

pub struct SmallResult {
    pub count: usize,
    pub elapsed: Duration,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl SmallResult {
    /// From per-item latencies in microseconds (unsorted).
    pub fn from_latencies(count: usize, elapsed: Duration, mut lat: Vec<u32>) -> SmallResult {
        lat.sort_unstable();
        SmallResult {
            count,
            elapsed,
            p50_ms: percentile_ms(&lat, 0.50),
            p99_ms: percentile_ms(&lat, 0.99),
        }
    }

    pub fn per_sec(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Push every blob in `blobs` with `concurrency` clients, each on its own
/// keep-alive connection, taking the next blob from a shared counter.
pub async fn push_small_blobs(
    addr: SocketAddr,
    repo: &str,
    blobs: Rc<Vec<(Bytes, String)>>,
    concurrency: usize,
    pb: &ProgressBar,
) -> Result<SmallResult> {
    let repo = repo.to_string();
    send_small_blobs(
        addr,
        blobs,
        concurrency,
        pb,
        async move |c, data, digest| push_small(c, &repo, data, digest).await,
    )
    .await
}

/// Send every `(data, digest)` in `blobs` with `send`: `concurrency` clients,
/// each on its own keep-alive connection to `addr`, take the next blob from a
/// shared counter; each send's latency counts. The registry push and the
/// store's PutObject differ only in `send`.
pub async fn send_small_blobs<F>(
    addr: SocketAddr,
    blobs: Rc<Vec<(Bytes, String)>>,
    concurrency: usize,
    pb: &ProgressBar,
    send: F,
) -> Result<SmallResult>
where
    F: AsyncFn(&mut Client, &Bytes, &str) -> Result<()> + 'static,
{
    let send = Rc::new(send);
    let next = Rc::new(Cell::new(0usize));
    let t0 = Instant::now();
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let (blobs, next, pb, send) = (blobs.clone(), next.clone(), pb.clone(), send.clone());
        handles.push(local.spawn_local(async move {
            let mut c = Client::new(addr);
            let mut lat = Vec::new();
            loop {
                let i = next.get();
                next.set(i + 1);
                let Some((data, digest)) = blobs.get(i) else {
                    break;
                };
                let t = Instant::now();
                send(&mut c, data, digest).await?;
                lat.push(t.elapsed().as_micros() as u32);
                pb.inc(1);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::with_capacity(blobs.len());
    local
        .run_until(async {
            for h in handles {
                lat.extend(h.await??);
            }
            anyhow::Ok(())
        })
        .await?;
    Ok(SmallResult::from_latencies(blobs.len(), t0.elapsed(), lat))
}

/// Sorted microseconds → milliseconds at quantile `q`.
pub(crate) fn percentile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// What the request loops hit in a registry.
pub struct ManifestTarget {
    pub manifest_path: String,
    /// The same manifest by digest (immutable: what a cache can answer).
    pub manifest_digest_path: String,
    pub blob_path: String,
}

/// A minimal image: a config blob, one 4 KiB layer and an OCI image manifest.
pub struct TestImage {
    pub config: Bytes,
    pub config_digest: String,
    pub layer: Bytes,
    pub layer_digest: String,
    pub manifest: Bytes,
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl TestImage {
    pub fn new(seed: u64) -> Result<TestImage> {
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{:064x}"]}}}}"#,
            seed
        ));
        let layer = random_bytes(4242 ^ seed, 4096);
        let (config_digest, layer_digest) = (digest_of(&config), digest_of(&layer));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer.len(),
            }],
        });
        Ok(TestImage {
            manifest: Bytes::from(serde_json::to_vec(&manifest)?),
            config,
            config_digest,
            layer,
            layer_digest,
        })
    }
}

/// PUT a manifest under `reference`.
pub async fn put_manifest(c: &mut Client, repo: &str, reference: &str, body: &Bytes) -> Result<()> {
    let resp = c
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[(header::CONTENT_TYPE, OCI_MANIFEST)],
            ReqBody::full(body.clone()),
        )
        .await?;
    let resp = expect(resp, StatusCode::CREATED, "PUT manifest").await?;
    drain(resp, None).await?;
    Ok(())
}

/// GET a manifest; its bytes.
pub async fn get_manifest(c: &mut Client, path: &str) -> Result<Bytes> {
    let resp = c
        .send(
            Method::GET,
            path,
            &[(header::ACCEPT, MANIFEST_ACCEPT)],
            ReqBody::Empty,
        )
        .await?;
    read_body(expect(resp, StatusCode::OK, "GET manifest").await?).await
}

/// Push a config blob, a small layer and an OCI image manifest tagged `v1`
/// (with `Authorization: <auth>` on every request, if given).
pub async fn setup_manifest(
    addr: SocketAddr,
    repo: &str,
    auth: Option<&str>,
) -> Result<ManifestTarget> {
    let mut c = Client::new(addr).with_auth(auth);
    let img = TestImage::new(0)?;
    push_small(&mut c, repo, &img.config, &img.config_digest).await?;
    push_small(&mut c, repo, &img.layer, &img.layer_digest).await?;
    put_manifest(&mut c, repo, "v1", &img.manifest).await?;
    // Read it back once: the loops below only check status codes.
    let target = ManifestTarget {
        manifest_path: format!("/v2/{repo}/manifests/v1"),
        manifest_digest_path: format!("/v2/{repo}/manifests/{}", digest_of(&img.manifest)),
        blob_path: format!("/v2/{repo}/blobs/{}", img.layer_digest),
    };
    if get_manifest(&mut c, &target.manifest_path).await? != img.manifest {
        bail!("GET manifest returned different bytes than were PUT");
    }
    Ok(target)
}

/// A request for the load loop.
#[derive(Clone)]
pub struct LoadSpec {
    pub method: Method,
    pub path: String,
    /// Sent with every request.
    pub headers: Vec<(HeaderName, String)>,
    /// The status that counts as success.
    pub expect: StatusCode,
    /// Send `Authorization: Basic <user:a password never used before>` with
    /// every request (the worst case for a bcrypt check).
    pub wrong_password_for: Option<String>,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl LoadSpec {
    /// `method path` expecting 200, no extra headers.
    pub fn new(
        method: Method,
        path: impl Into<String>,
        connections: usize,
        warmup: Duration,
        duration: Duration,
    ) -> LoadSpec {
        LoadSpec {
            method,
            path: path.into(),
            headers: Vec::new(),
            expect: StatusCode::OK,
            wrong_password_for: None,
            connections,
            warmup,
            duration,
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn expect(mut self, status: StatusCode) -> Self {
        self.expect = status;
        self
    }

    pub fn wrong_passwords(mut self, user: &str) -> Self {
        self.wrong_password_for = Some(user.to_string());
        self.expect = StatusCode::UNAUTHORIZED;
        self
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// `connections` connections, each sending the request back to back for
/// warmup + duration; requests completed inside the measured window count.
pub async fn load(addr: SocketAddr, spec: &LoadSpec, pb: &ProgressBar) -> Result<LoadResult> {
    let mut r = load_many(&[(addr, spec.clone())], pb).await?;
    Ok(r.remove(0))
}

/// Several request loops at once (each with its own connections, started
/// together), e.g. an attack and a probe measuring latency beside it.
pub async fn load_many(
    specs: &[(SocketAddr, LoadSpec)],
    pb: &ProgressBar,
) -> Result<Vec<LoadResult>> {
    let t0 = Instant::now();
    let last_end = specs
        .iter()
        .map(|(_, s)| t0 + s.warmup + s.duration)
        .max()
        .unwrap_or(t0);
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for (which, (addr, spec)) in specs.iter().enumerate() {
        let measure_from = t0 + spec.warmup;
        let end = measure_from + spec.duration;
        for conn in 0..spec.connections {
            let (spec, addr) = (spec.clone(), *addr);
            handles.push((
                which,
                local.spawn_local(async move {
                    connection_loop(addr, &spec, conn, measure_from, end).await
                }),
            ));
        }
    }
    let ticker = {
        let pb = pb.clone();
        local.spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while Instant::now() < last_end {
                tick.tick().await;
                pb.set_position(t0.elapsed().as_millis() as u64);
            }
        })
    };
    let mut lat = vec![Vec::new(); specs.len()];
    let mut errors = vec![0u64; specs.len()];
    local
        .run_until(async {
            for (which, h) in handles {
                let (l, e) = h.await??;
                lat[which].extend(l);
                errors[which] += e;
            }
            ticker.abort();
            anyhow::Ok(())
        })
        .await?;
    Ok(specs
        .iter()
        .zip(lat)
        .zip(errors)
        .map(|(((_, spec), mut lat), errors)| {
            lat.sort_unstable();
            LoadResult {
                requests: lat.len() as u64,
                errors,
                rps: lat.len() as f64 / spec.duration.as_secs_f64(),
                p50_ms: percentile_ms(&lat, 0.50),
                p99_ms: percentile_ms(&lat, 0.99),
                max_ms: percentile_ms(&lat, 1.0),
            }
        })
        .collect())
}

/// One connection of a request loop: latencies (µs) of the requests done
/// inside the measured window, and the error count.
async fn connection_loop(
    addr: SocketAddr,
    spec: &LoadSpec,
    conn: usize,
    measure_from: Instant,
    end: Instant,
) -> Result<(Vec<u32>, u64)> {
    let mut c = Client::new(addr);
    let mut lat: Vec<u32> = Vec::with_capacity(16 * 1024);
    let (mut errors, mut consecutive, mut n) = (0u64, 0u32, 0u64);
    // Bounded by the deadline (and by the error budget below).
    loop {
        let start = Instant::now();
        if start >= end {
            break;
        }
        n += 1;
        let wrong = spec
            .wrong_password_for
            .as_deref()
            .map(|user| crate::http::basic_auth(user, &format!("wrong-{conn}-{n}")));
        let mut headers: Vec<(HeaderName, &str)> = spec
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str()))
            .collect();
        if let Some(w) = &wrong {
            headers.push((header::AUTHORIZATION, w.as_str()));
        }
        let r = async {
            let resp = c
                .send(spec.method.clone(), &spec.path, &headers, ReqBody::Empty)
                .await?;
            let status = resp.status();
            drain(resp, None).await?;
            if status != spec.expect {
                bail!("{} {}: {status}", spec.method, spec.path);
            }
            anyhow::Ok(())
        }
        .await;
        let done = Instant::now();
        match r {
            Ok(()) => {
                consecutive = 0;
                // Completed inside the window (a request slower than the
                // warm-up may have started before it).
                if done >= measure_from && done <= end {
                    lat.push((done - start).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Err(e) => {
                errors += 1;
                consecutive += 1;
                if consecutive >= 50 {
                    return Err(e.context("50 consecutive errors"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok((lat, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
        assert_eq!(mb_per_s(2_000_000, Duration::from_secs(2)), 1.0);
    }
}
