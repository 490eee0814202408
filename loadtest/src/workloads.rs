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

/// Push one small blob the way docker does: POST, then PUT with the body.
async fn push_small(c: &mut Client, repo: &str, data: &Bytes, digest: &str) -> Result<()> {
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
    let next = Rc::new(Cell::new(0usize));
    let t0 = Instant::now();
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let (blobs, next, pb, repo) = (blobs.clone(), next.clone(), pb.clone(), repo.to_string());
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
                push_small(&mut c, &repo, data, digest).await?;
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
    let elapsed = t0.elapsed();
    lat.sort_unstable();
    Ok(SmallResult {
        count: blobs.len(),
        elapsed,
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
    })
}

/// Sorted microseconds → milliseconds at quantile `q`.
fn percentile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// What the request loops hit in a registry.
pub struct ManifestTarget {
    pub manifest_path: String,
    pub blob_path: String,
}

/// Push a config blob, a small layer and an OCI image manifest tagged `v1`.
pub async fn setup_manifest(addr: SocketAddr, repo: &str) -> Result<ManifestTarget> {
    let mut c = Client::new(addr);
    let config = Bytes::from_static(
        br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#,
    );
    let layer = random_bytes(4242, 4096);
    let (config_d, layer_d) = (digest_of(&config), digest_of(&layer));
    push_small(&mut c, repo, &config, &config_d).await?;
    push_small(&mut c, repo, &layer, &layer_d).await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_d,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_d,
            "size": layer.len(),
        }],
    });
    let body = Bytes::from(serde_json::to_vec(&manifest)?);
    let resp = c
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/v1"),
            &[(
                header::CONTENT_TYPE,
                "application/vnd.oci.image.manifest.v1+json",
            )],
            ReqBody::full(body.clone()),
        )
        .await?;
    let resp = expect(resp, StatusCode::CREATED, "PUT manifest").await?;
    drain(resp, None).await?;
    // Read it back once: the loops below only check status codes.
    let target = ManifestTarget {
        manifest_path: format!("/v2/{repo}/manifests/v1"),
        blob_path: format!("/v2/{repo}/blobs/{layer_d}"),
    };
    let resp = c
        .send(
            Method::GET,
            &target.manifest_path,
            &[(header::ACCEPT, MANIFEST_ACCEPT)],
            ReqBody::Empty,
        )
        .await?;
    let got = read_body(expect(resp, StatusCode::OK, "GET manifest").await?).await?;
    if got != body {
        bail!("GET manifest returned different bytes than were PUT");
    }
    Ok(target)
}

/// A request for the load loop.
#[derive(Clone)]
pub struct LoadSpec {
    pub method: Method,
    pub path: String,
    pub accept: Option<&'static str>,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `connections` connections, each sending the request back to back for
/// warmup + duration; requests completed inside the measured window count.
pub async fn load(addr: SocketAddr, spec: &LoadSpec, pb: &ProgressBar) -> Result<LoadResult> {
    let t0 = Instant::now();
    let measure_from = t0 + spec.warmup;
    let end = measure_from + spec.duration;
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for _ in 0..spec.connections {
        let spec = spec.clone();
        handles.push(local.spawn_local(async move {
            let mut c = Client::new(addr);
            let mut lat: Vec<u32> = Vec::with_capacity(16 * 1024);
            let (mut errors, mut consecutive) = (0u64, 0u32);
            let headers: Vec<(HeaderName, &str)> = spec
                .accept
                .map(|a| (header::ACCEPT, a))
                .into_iter()
                .collect();
            // Bounded by the deadline (and by the error budget below).
            loop {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let r = async {
                    let resp = c
                        .send(spec.method.clone(), &spec.path, &headers, ReqBody::Empty)
                        .await?;
                    let status = resp.status();
                    drain(resp, None).await?;
                    if status != StatusCode::OK {
                        bail!("{} {}: {status}", spec.method, spec.path);
                    }
                    anyhow::Ok(())
                }
                .await;
                let done = Instant::now();
                match r {
                    Ok(()) => {
                        consecutive = 0;
                        if start >= measure_from && done <= end {
                            lat.push((done - start).as_micros() as u32);
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
            anyhow::Ok((lat, errors))
        }));
    }
    let ticker = {
        let pb = pb.clone();
        local.spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while Instant::now() < end {
                tick.tick().await;
                pb.set_position(t0.elapsed().as_millis() as u64);
            }
        })
    };
    let mut lat = Vec::new();
    let mut errors = 0;
    local
        .run_until(async {
            for h in handles {
                let (l, e) = h.await??;
                lat.extend(l);
                errors += e;
            }
            ticker.abort();
            anyhow::Ok(())
        })
        .await?;
    lat.sort_unstable();
    Ok(LoadResult {
        requests: lat.len() as u64,
        errors,
        rps: lat.len() as f64 / spec.duration.as_secs_f64(),
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
    })
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
