//! `loadtest s3 --only budget`: many concurrent uploads on S3 (s3s-fs) with
//! a small `storage.uploadbuffers.budget`, and Berth's peak RSS against that
//! budget. Each upload is docker's: POST, one PATCH with the whole blob
//! (larger than one 5 MiB part, so its writer needs a full part buffer), and
//! an empty `PUT ?digest=`. A 503 is retried at the same Location after its
//! Retry-After, as the spec's resumable uploads allow. Without the budget
//! each upload in flight would hold up to `chunksize` (10 MiB) in memory.

use std::{
    cell::Cell,
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    rc::Rc,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{header, Method, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::{
    data::{hex, BlobData},
    deploy::s3_config,
    http::{drain, expect, location, with_query, Client, ReqBody},
    progress::{count_bar, note, phase},
    rss::RssMonitor,
    servers::{free_port, spawn_registry, RegistryKind},
    stores::{S3Store, StoreKind},
};

/// hyper's largest HTTP/1 read buffer per connection (its default
/// `max_buf_size`, 8 KiB + 100 × 4 KiB): memory a connection streaming a
/// body may keep that no upload budget covers.
const HYPER_READ_BUFFER: u64 = 8192 + 4096 * 100;

pub struct BudgetSettings {
    pub uploads: usize,
    pub blob_size: u64,
    pub budget: u64,
    /// What the process may use beyond the budget and the connections'
    /// read buffers (runtime, binary, the S3 client) and still PASS.
    pub allowance: u64,
}

impl BudgetSettings {
    pub fn new(quick: bool) -> BudgetSettings {
        BudgetSettings {
            uploads: if quick { 100 } else { 500 },
            blob_size: 6 << 20,
            budget: 128 << 20,
            allowance: 64 << 20,
        }
    }
}

struct Outcome {
    refused: u64,
    /// PATCHes whose connection closed while the body was still going out:
    /// a 503 answered before the body was read (Berth does not drain it).
    resets: u64,
    elapsed: Duration,
}

#[derive(Default)]
struct Counts {
    refused: Cell<u64>,
    resets: Cell<u64>,
}

/// One upload, retrying refused requests (503) after their Retry-After, and
/// PATCHes cut off by such an early answer after a second.
async fn upload(c: &mut Client, repo: &str, blob: &BlobData, counts: &Counts) -> Result<()> {
    let refused = &counts.refused;
    let post = c
        .send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            ReqBody::Empty,
        )
        .await?;
    let post = expect(post, StatusCode::ACCEPTED, "POST upload").await?;
    let loc = location(&post)?;
    drain(post, None).await?;
    let octet = [(header::CONTENT_TYPE, "application/octet-stream")];
    for _ in 0..100 {
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let body = ReqBody::blob_range(blob, 0, blob.size(), None).hashing(&hasher);
        let resp = match c.send(Method::PATCH, &loc, &octet, body).await {
            Ok(r) => r,
            Err(_) => {
                counts.resets.set(counts.resets.get() + 1);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused.set(refused.get() + 1);
            let wait = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .context("503 without Retry-After")?;
            drain(resp, None).await?;
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let resp = expect(resp, StatusCode::ACCEPTED, "PATCH").await?;
        let next = location(&resp)?;
        drain(resp, None).await?;
        let digest = format!(
            "sha256:{}",
            hex(hasher.lock().expect("hasher").clone().finalize().as_slice())
        );
        for _ in 0..100 {
            let put = c
                .send(
                    Method::PUT,
                    &with_query(&next, "digest", &digest),
                    &[],
                    ReqBody::Empty,
                )
                .await?;
            if put.status() == StatusCode::SERVICE_UNAVAILABLE {
                refused.set(refused.get() + 1);
                drain(put, None).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let put = expect(put, StatusCode::CREATED, "PUT ?digest").await?;
            drain(put, None).await?;
            // The blob is there, whole.
            let head = c
                .send(
                    Method::HEAD,
                    &format!("/v2/{repo}/blobs/{digest}"),
                    &[],
                    ReqBody::Empty,
                )
                .await?;
            let len = head
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let head = expect(head, StatusCode::OK, "HEAD blob").await?;
            drain(head, None).await?;
            if len != Some(blob.size()) {
                bail!("blob {digest}: length {len:?}, pushed {}", blob.size());
            }
            return Ok(());
        }
        bail!("PUT refused 100 times");
    }
    bail!("PATCH refused 100 times");
}

/// All uploads at once, each on its own connection.
async fn run_uploads(addr: SocketAddr, s: &BudgetSettings, pattern: &Bytes) -> Result<Outcome> {
    let pb = count_bar(
        s.uploads as u64,
        format!("{} concurrent uploads", s.uploads),
    );
    let counts = Rc::new(Counts::default());
    let local = tokio::task::LocalSet::new();
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for i in 0..s.uploads {
        let blob = BlobData::new(pattern, 1000 + i as u64, s.blob_size);
        let (counts, pb) = (counts.clone(), pb.clone());
        handles.push(local.spawn_local(async move {
            let mut c = Client::new(addr);
            let r = upload(&mut c, "budget/app", &blob, &counts).await;
            pb.inc(1);
            r
        }));
    }
    local
        .run_until(async {
            for h in handles {
                h.await??;
            }
            anyhow::Ok(())
        })
        .await?;
    pb.finish_and_clear();
    Ok(Outcome {
        refused: counts.refused.get(),
        resets: counts.resets.get(),
        elapsed: t0.elapsed(),
    })
}

/// The part's report: figures and the PASS/FAIL line.
pub async fn run(
    s: &BudgetSettings,
    berth: &Path,
    s3s_fs: Option<&Path>,
    dir: &Path,
    pattern: &Bytes,
    notes: &mut Vec<String>,
) -> Result<String> {
    phase("upload buffer budget: concurrent uploads on s3s-fs");
    let store = S3Store::start(StoreKind::S3sFs, s3s_fs, dir).await?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut config = s3_config(addr, &store.endpoint(), "budget", None, false);
    let _ = write!(
        config,
        "  uploadbuffers:\n    budget: {}\n    wait: 120s\n",
        s.budget
    );
    let reg = spawn_registry(
        RegistryKind::Berth,
        berth,
        &dir.join("budget-berth"),
        &config,
        addr,
        Default::default(),
    )
    .await?;
    let rss = RssMonitor::start();
    rss.watch("berth", reg.proc.pid());
    // Idle, after one small request has warmed the process up.
    let mut c = Client::new(addr);
    let r = c.send(Method::GET, "/v2/", &[], ReqBody::Empty).await?;
    drain(r, None).await?;
    let idle = rss.current("berth");
    let outcome = run_uploads(addr, s, pattern).await;
    let peak = rss.peak("berth");
    drop(reg);
    drop(store);
    let outcome = outcome?;
    let mib = |b: u64| b as f64 / 1048576.0;
    let connections = s.uploads as u64 * HYPER_READ_BUFFER;
    let limit = idle + s.budget + connections + s.allowance;
    let pass = peak <= limit;
    note(format!(
        "{} uploads of {:.0} MiB in {:.1} s, {} requests told to retry; RSS idle {:.0} MiB, peak {:.0} MiB",
        s.uploads,
        mib(s.blob_size),
        outcome.elapsed.as_secs_f64(),
        outcome.refused,
        mib(idle),
        mib(peak)
    ));
    notes.push(format!(
        "budget: without storage.uploadbuffers each of the {} uploads would buffer a part \
         (here {:.0} MiB of each blob): {:.0} MiB",
        s.uploads,
        mib(s.blob_size.min(10 << 20)),
        mib(s.uploads as u64 * s.blob_size.min(10 << 20))
    ));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nUpload buffer budget on s3s-fs ({} concurrent POST+PATCH+PUT uploads of {:.0} MiB, \
         chunksize 10 MiB, storage.uploadbuffers.budget {:.0} MiB)",
        s.uploads,
        mib(s.blob_size),
        mib(s.budget)
    );
    let _ = writeln!(
        out,
        "  all {} blobs stored whole; {} requests answered 503 + Retry-After and retried, \
         {} PATCHes cut off mid-body (an early 503) and retried; {:.1} s",
        s.uploads,
        outcome.refused,
        outcome.resets,
        outcome.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  {} peak RSS {:.0} MiB <= idle {:.0} MiB + budget {:.0} MiB + {} connections x 408 KiB \
         (hyper's read buffer) {:.0} MiB + {:.0} MiB",
        if pass { "PASS" } else { "FAIL" },
        mib(peak),
        mib(idle),
        mib(s.budget),
        s.uploads,
        mib(connections),
        mib(s.allowance)
    );
    Ok(out)
}
