//! A bounded chaos run: three replicas behind nginx on Garage with Redis,
//! CI-style clients pushing and pulling images the whole time, while a
//! replica is SIGKILLed and restarted every `KILL_EVERY`, Redis is killed
//! and restarted once, and `berth garbage-collect` runs once in the middle.
//! Clients retry what fails, as docker does. At the end every image whose
//! manifest PUT was acknowledged (201) pulls byte-exact, no read ever gave a
//! wrong byte, and the client-visible errors are printed per kind.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use super::{
    client::{data, manifest, on, sha256},
    harness::{Backend, Cluster, Options, REPLICAS},
};

const CLIENTS: usize = 4;
const RUN: Duration = Duration::from_secs(80);
const KILL_EVERY: Duration = Duration::from_secs(20);
/// Attempts per step before a client gives the image up (docker: 5).
const ATTEMPTS: usize = 5;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An acknowledged image: repository, tag, manifest digest, its blobs.
#[derive(Clone)]
struct Pushed {
    repo: String,
    tag: String,
    digest: String,
    blobs: Vec<String>,
}

#[derive(Default)]
struct Tally {
    /// Client-visible failures by kind ("PATCH 503", "PUT error", ...).
    errors: BTreeMap<String, usize>,
    /// A 200 whose bytes do not hash to the digest asked for: must stay 0.
    wrong: Vec<String>,
    /// Images given up after `ATTEMPTS` tries of a step.
    abandoned: usize,
    pulls: usize,
}

struct Worker {
    http: reqwest::Client,
    lb: String,
    tally: Arc<Mutex<Tally>>,
}

impl Worker {
    fn fail(&self, kind: String) {
        *self.tally.lock().unwrap().errors.entry(kind).or_default() += 1;
    }

    /// One step retried as a CI client would: after the answer's
    /// Retry-After (or a second), up to `ATTEMPTS` times.
    async fn retried<T, F, Fut>(&self, mut step: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, (String, Duration)>>,
    {
        for _ in 0..ATTEMPTS {
            match step().await {
                Ok(v) => return Some(v),
                Err((kind, wait)) => {
                    self.fail(kind);
                    tokio::time::sleep(wait).await;
                }
            }
        }
        self.tally.lock().unwrap().abandoned += 1;
        None
    }

    /// POST, one PATCH when `chunked`, then `PUT ?digest=` (with the rest).
    async fn push_blob(&self, repo: &str, blob: &[u8], chunked: bool) -> Result<(), Failure> {
        let digest = sha256(blob);
        // Already there (a shared layer): docker's HEAD first.
        let head = self
            .http
            .head(format!("{}/v2/{repo}/blobs/{digest}", self.lb))
            .send()
            .await
            .map_err(|_| failure("HEAD", None))?;
        if head.status() == StatusCode::OK {
            return Ok(());
        }
        let r = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.lb))
            .send()
            .await
            .map_err(|_| failure("POST", None))?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(failure("POST", Some(&r)));
        }
        let mut url = on(&self.lb, &location(&r));
        let mut rest = blob;
        if chunked {
            let half = blob.len() / 2;
            let r = self
                .http
                .patch(&url)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("0-{}", half - 1))
                .body(blob[..half].to_vec())
                .send()
                .await
                .map_err(|_| failure("PATCH", None))?;
            if r.status() != StatusCode::ACCEPTED {
                return Err(failure("PATCH", Some(&r)));
            }
            url = on(&self.lb, &location(&r));
            rest = &blob[half..];
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        let r = self
            .http
            .put(format!("{url}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(rest.to_vec())
            .send()
            .await
            .map_err(|_| failure("PUT blob", None))?;
        if r.status() != StatusCode::CREATED {
            return Err(failure("PUT blob", Some(&r)));
        }
        Ok(())
    }

    async fn put_manifest(&self, repo: &str, tag: &str, body: &[u8]) -> Result<(), Failure> {
        let r = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.lb))
            .header("content-type", OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|_| failure("PUT manifest", None))?;
        if r.status() != StatusCode::CREATED {
            return Err(failure("PUT manifest", Some(&r)));
        }
        Ok(())
    }

    /// Pull `p` by tag; every byte checked. A wrong byte is recorded, not
    /// retried.
    async fn pull(&self, p: &Pushed) -> Result<(), Failure> {
        let r = self
            .http
            .get(format!("{}/v2/{}/manifests/{}", self.lb, p.repo, p.tag))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .map_err(|_| failure("GET manifest", None))?;
        if r.status() != StatusCode::OK {
            return Err(failure("GET manifest", Some(&r)));
        }
        let body = r
            .bytes()
            .await
            .map_err(|_| failure("GET manifest body", None))?;
        if sha256(&body) != p.digest {
            self.tally
                .lock()
                .unwrap()
                .wrong
                .push(format!("{}:{}", p.repo, p.tag));
            return Ok(());
        }
        for b in &p.blobs {
            let r = self
                .http
                .get(format!("{}/v2/{}/blobs/{b}", self.lb, p.repo))
                .send()
                .await
                .map_err(|_| failure("GET blob", None))?;
            if r.status() != StatusCode::OK {
                return Err(failure("GET blob", Some(&r)));
            }
            // A body cut short is a failed read (the client retries), not
            // a wrong byte.
            let got = r
                .bytes()
                .await
                .map_err(|_| failure("GET blob body", None))?;
            if &sha256(&got) != b {
                self.tally
                    .lock()
                    .unwrap()
                    .wrong
                    .push(format!("{}@{b}", p.repo));
            }
        }
        self.tally.lock().unwrap().pulls += 1;
        Ok(())
    }
}

type Failure = (String, Duration);

/// A failure's kind (`what` and the status, or "error" for no answer) and
/// how long to wait before the next try.
fn failure(what: &str, r: Option<&reqwest::Response>) -> Failure {
    match r {
        None => (format!("{what}: connection error"), Duration::from_secs(1)),
        Some(r) => {
            let wait = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map_or(Duration::from_secs(1), Duration::from_secs);
            (format!("{what}: {}", r.status().as_u16()), wait)
        }
    }
}

/// The last ERROR line of a failed collector run.
fn last_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .find(|l| l.contains("ERROR") || l.contains("error"))
        .unwrap_or("")
        .to_string()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// One client: image after image into its own repository, each a shared
/// base layer, a layer of its own (every third chunked) and a config; every
/// fifth a layer alone (a cancelled job); every few images a pull of an
/// earlier one.
async fn client(w: Worker, n: usize, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<Pushed>>>) {
    let repo = format!("chaos/c{n}");
    let base = data(300 * 1024, 1000 + n as u64);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let seed = (n as u64) << 32 | i;
        let own = data(64 * 1024 + (i as usize % 7) * 97 * 1024, seed);
        let config =
            format!(r#"{{"architecture":"amd64","os":"linux","n":"{seed}"}}"#).into_bytes();
        if i.is_multiple_of(5) {
            // A cancelled job: a layer up, never a manifest. The collector's
            // to sweep, once older than its grace period.
            let orphan = data(32 * 1024, seed | 1 << 63);
            w.retried(|| w.push_blob(&repo, &orphan, false)).await;
            continue;
        }
        let mut ok = true;
        for (blob, chunked) in [
            (&base, false),
            (&own, i.is_multiple_of(3)),
            (&config, false),
        ] {
            if w.retried(|| w.push_blob(&repo, blob, chunked))
                .await
                .is_none()
            {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        let m = manifest(&config, &[&base, &own]);
        let tag = format!("v{i}");
        if w.retried(|| w.put_manifest(&repo, &tag, &m))
            .await
            .is_none()
        {
            continue;
        }
        let pushed = Pushed {
            repo: repo.clone(),
            tag,
            digest: sha256(&m),
            blobs: vec![sha256(&config), sha256(&base), sha256(&own)],
        };
        acked.lock().unwrap().push(pushed.clone());
        if i.is_multiple_of(4) {
            let earlier = {
                let a = acked.lock().unwrap();
                a[(i as usize * 7) % a.len()].clone()
            };
            w.retried(|| w.pull(&earlier)).await;
        }
    }
}

pub fn chaos_run() {
    let mut c = Cluster::start_with(
        Backend::S3,
        Options {
            redirect: false,
            ..Options::default()
        },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let http = crate::common::http::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let w = Worker {
                http: http.clone(),
                lb: c.balancer(),
                tally: tally.clone(),
            };
            rt.spawn(client(w, n, stop.clone(), acked.clone()))
        })
        .collect();

    // The chaos, on a schedule: a replica killed and restarted every
    // KILL_EVERY, Redis at a third of the run, the collector at half.
    let start = Instant::now();
    let (mut kills, mut redis_done, mut gc) = (0, false, None);
    while start.elapsed() < RUN {
        std::thread::sleep(Duration::from_millis(250));
        let t = start.elapsed();
        if t >= KILL_EVERY * (kills + 1) {
            let i = kills as usize % REPLICAS;
            c.kill(i);
            std::thread::sleep(Duration::from_secs(1));
            c.restart(i);
            kills += 1;
        }
        if !redis_done && t >= RUN / 3 {
            c.restart_redis();
            redis_done = true;
        }
        if gc.is_none() && t >= RUN / 2 {
            // As a CronJob would: a run that stopped (it refuses to go on
            // when, say, Redis does not answer a cache clear in time) is
            // simply run again.
            let mut failed = Vec::new();
            for _ in 0..3 {
                let out = c.garbage_collect(&["--grace-period", "10s"]);
                if out.status.success() {
                    gc = Some((out, failed.clone()));
                    break;
                }
                failed.push(last_error(&out.stderr));
            }
            assert!(gc.is_some(), "garbage-collect failed 3 times: {failed:?}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in workers {
            w.await.unwrap();
        }
    });
    let (gc, gc_failed) = gc.expect("the collector ran");
    let gc_out = String::from_utf8_lossy(&gc.stdout).to_string();

    let swept: u64 = gc_out
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("blobs_deleted="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(swept > 0, "the collector swept the orphans: {gc_out}");

    // Every acknowledged image, pulled once more with the cluster whole.
    let acked = acked.lock().unwrap().clone();
    let check = Worker {
        http,
        lb: c.balancer(),
        tally: Arc::new(Mutex::new(Tally::default())),
    };
    let mut lost = Vec::new();
    rt.block_on(async {
        for p in &acked {
            if let Err((kind, _)) = check.pull(p).await {
                lost.push(format!("{}:{} ({kind})", p.repo, p.tag));
            }
        }
    });
    let t = tally.lock().unwrap();
    eprintln!(
        "chaos: {kills} replica kills, Redis restarted, gc: {} (after {} failed runs: {gc_failed:?})\n\
         {} images acknowledged, {} abandoned, {} pulls during the run; \
         client-visible errors by kind: {:?}",
        gc_out.trim(),
        gc_failed.len(),
        acked.len(),
        t.abandoned,
        t.pulls,
        t.errors
    );
    // The story of every upload PUT a replica answered 404 (its upload
    // gone), for the record: the client retried it from the start.
    let logs = c.logs();
    for id in logs
        .lines()
        .filter(|l| l.contains("method=PUT") && l.contains("status=404"))
        .filter_map(|l| l.split("request_id=").nth(1))
    {
        for l in logs.lines().filter(|l| l.contains(id)) {
            eprintln!("{l}");
        }
    }
    let wrong = [&t.wrong[..], &check.tally.lock().unwrap().wrong[..]].concat();
    assert_eq!(wrong, Vec::<String>::new(), "wrong bytes read");
    assert_eq!(lost, Vec::<String>::new(), "acknowledged images lost");
    assert!(kills >= 3 && redis_done);
    assert!(
        acked.len() >= 20,
        "too little work to tell: {}",
        acked.len()
    );
}
