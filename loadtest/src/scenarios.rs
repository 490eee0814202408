//! The CI-fleet scenarios of `loadtest run` and `loadtest versus`: the
//! operations each client does (its plan is in `scenario_plan.rs`) and the
//! loop that drives N clients against one registry for a fixed time,
//! recording every operation.
//!
//! - ci-push: every client pushes images made of one of a few shared base
//!   images' layers plus its own layers, docker-style: HEAD each blob, try a
//!   cross-repository mount from the base repository, upload what is missing,
//!   then PUT the manifest.
//! - hot-pull: every client pulls a few hot tags (manifest GET by tag, then
//!   every blob it lists).
//! - head-heavy: blob HEADs (present and absent) and manifest HEADs.
//! - large-layer: a few clients each streaming big fresh layers (digested on
//!   the way, never held in memory), then a manifest.
//! - mixed-auth: half the clients pull anonymously (allowed or denied, both
//!   fine), half push and pull with credentials.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use bytes::Bytes;
use http::StatusCode;

use crate::{
    data::{digest_of, BlobData},
    opstats::{Recorder, ScenarioResult},
    progress,
    regclient::{Credentials, Endpoint, Session},
    regops::{self, manifest_blobs, Descriptor, Mount},
};

use crate::scenario_plan::{
    base_layers, ci_image, client_seed, head_layers, BlobSpec, BASE_REPO, HEAD_REPO, HOT_REPO,
    PUBLIC_REPO, SHARED_SEEDS_END,
};
pub use crate::scenario_plan::{Plan, Scenario};

/// What every client of a run shares.
pub struct Ctx {
    pub endpoint: Endpoint,
    pub creds: Rc<Credentials>,
    pub plan: Plan,
    pub pattern: Bytes,
    /// Digests of the shared blobs (base layers), computed once: docker
    /// knows a layer's digest before it pushes, and hashing 24 MiB on the
    /// client's one thread every iteration would stall every other client.
    pub shared_digests: RefCell<HashMap<BlobSpec, String>>,
}

impl Ctx {
    pub fn new(endpoint: Endpoint, creds: Rc<Credentials>, plan: Plan, pattern: Bytes) -> Ctx {
        Ctx {
            endpoint,
            creds,
            plan,
            pattern,
            shared_digests: RefCell::new(HashMap::new()),
        }
    }

    fn blob(&self, b: BlobSpec) -> BlobData {
        BlobData::new(&self.pattern, b.seed, b.size)
    }

    /// A blob and its digest (memoised for shared blobs).
    fn blob_with_digest(&self, b: BlobSpec) -> (BlobData, String) {
        let data = self.blob(b);
        if b.seed >= SHARED_SEEDS_END {
            let d = data.digest();
            return (data, d);
        }
        let d = self
            .shared_digests
            .borrow_mut()
            .entry(b)
            .or_insert_with(|| data.digest())
            .clone();
        (data, d)
    }

    fn session(&self) -> Result<Session> {
        Session::new(&self.endpoint, self.creds.clone())
    }

    fn anonymous(&self) -> Result<Session> {
        let mut c = Credentials::anonymous();
        c.token_url = self.creds.token_url.clone();
        Session::new(&self.endpoint, Rc::new(c))
    }
}

/// Time `fut` as operation `op`: its latency and payload bytes, or its error.
/// Payload is layer data only (configs and manifests count 0), so MB/s
/// figures are about blobs.
async fn timed<T>(
    rec: &Recorder,
    op: &str,
    fut: impl std::future::Future<Output = Result<(T, u64)>>,
) -> Option<T> {
    let t = Instant::now();
    match fut.await {
        Ok((v, bytes)) => {
            rec.ok(op, t.elapsed(), bytes);
            Some(v)
        }
        Err(e) => {
            rec.error(op, &e);
            None
        }
    }
}

/// Push an image docker-style: per blob HEAD, then for the first `n` layers
/// of `mount_from: Some((repo, n))` (those docker knows live in that
/// repository) a mount attempt; the upload when the blob is still missing;
/// then the config and the manifest. `None` if an operation failed (it was
/// recorded).
async fn push_image(
    s: &mut Session,
    rec: &Recorder,
    repo: &str,
    tag: &str,
    layers: &[(BlobData, String)],
    mount_from: Option<(&str, usize)>,
) -> Option<()> {
    let descs: Vec<Descriptor> = layers
        .iter()
        .map(|(b, d)| Descriptor {
            digest: d.clone(),
            size: b.size(),
        })
        .collect();
    let config = regops::image_config(&format!("{repo}:{tag}"), &descs);
    let config_digest = digest_of(&config);
    for (i, (blob, digest)) in layers.iter().enumerate() {
        let exists = timed(rec, "blob HEAD", async {
            Ok((regops::blob_exists(s, repo, digest).await?, 0))
        })
        .await?;
        if exists {
            continue;
        }
        let session = match mount_from.filter(|(_, n)| i < *n) {
            Some((from, _)) => {
                timed(rec, "blob mount", async {
                    Ok((regops::mount(s, repo, digest, from).await?, 0))
                })
                .await?
            }
            None => Mount::Upload(String::new()),
        };
        if let Mount::Upload(loc) = session {
            timed(rec, "blob upload", async {
                let loc = match loc.is_empty() {
                    true => regops::start_upload(s, repo).await?,
                    false => loc,
                };
                regops::upload(s, &loc, blob, Some(digest)).await?;
                Ok(((), blob.size()))
            })
            .await?;
        }
    }
    timed(rec, "config upload", async {
        if !regops::blob_exists(s, repo, &config_digest).await? {
            let loc = regops::start_upload(s, repo).await?;
            regops::put_small(s, &loc, &config, &config_digest).await?;
        }
        Ok(((), 0))
    })
    .await?;
    let manifest = regops::image_manifest(
        &Descriptor {
            digest: config_digest,
            size: config.len() as u64,
        },
        &descs,
    );
    timed(rec, "manifest PUT", async {
        regops::put_manifest(s, repo, tag, &manifest).await?;
        Ok(((), 0))
    })
    .await
}

/// Pull `repo:reference`: the manifest, then every blob it lists.
async fn pull_image(
    s: &mut Session,
    rec: &Recorder,
    repo: &str,
    reference: &str,
    op: &str,
) -> Option<()> {
    let blobs = timed(rec, &format!("{op}manifest GET"), async {
        let (status, body) = regops::get_manifest(s, repo, reference).await?;
        if status != StatusCode::OK {
            bail!("GET manifest {repo}:{reference}: {status}");
        }
        Ok((manifest_blobs(&body)?, 0))
    })
    .await?;
    for b in blobs {
        timed(rec, &format!("{op}blob GET"), async {
            Ok(((), regops::get_blob(s, repo, &b.digest, b.size).await?))
        })
        .await?;
    }
    Some(())
}

/// Blobs with their digests (computed before any timing).
fn with_digests(ctx: &Ctx, specs: &[BlobSpec]) -> Vec<(BlobData, String)> {
    specs.iter().map(|b| ctx.blob_with_digest(*b)).collect()
}

/// Untimed preparation: the images the scenario reads or mounts from.
async fn setup(sc: Scenario, ctx: &Ctx) -> Result<()> {
    let p = &ctx.plan;
    let mut images: Vec<(&str, String, Vec<BlobSpec>)> = Vec::new();
    match sc {
        Scenario::CiPush => {
            for b in 0..p.bases {
                images.push((BASE_REPO, format!("base-{b}"), base_layers(p, b)));
            }
        }
        Scenario::HotPull => {
            for t in 0..p.hot_tags {
                // Layer 0 is shared by every hot tag, as a base would be.
                let specs = (0..3)
                    .map(|l| BlobSpec {
                        seed: if l == 0 {
                            5000
                        } else {
                            5000 + (t * 10 + l) as u64
                        },
                        size: p.pull_layer_size,
                    })
                    .collect();
                images.push((HOT_REPO, format!("t{t}"), specs));
            }
        }
        Scenario::HeadHeavy => images.push((HEAD_REPO, "v1".into(), head_layers())),
        Scenario::MixedAuth => {
            if ctx.creds.user.is_none() {
                bail!("mixed-auth needs --user and --password (a registry with htpasswd)");
            }
            let specs = (0..2)
                .map(|l| BlobSpec {
                    seed: 9000 + l,
                    size: p.app_layer_size,
                })
                .collect();
            images.push((PUBLIC_REPO, "v1".into(), specs));
        }
        Scenario::LargeLayer | Scenario::All => {}
    }
    let mut s = ctx.session()?;
    for (repo, tag, specs) in images {
        let scratch = Recorder::default();
        let layers = with_digests(ctx, &specs);
        if push_image(&mut s, &scratch, repo, &tag, &layers, None)
            .await
            .is_none()
        {
            bail!("setup push {repo}:{tag}: {}", scratch.error_summary());
        }
    }
    Ok(())
}

/// One client's loop: iterations until the deadline (an iteration under way
/// then is finished).
async fn client_loop(
    sc: Scenario,
    ctx: Rc<Ctx>,
    rec: Rc<Recorder>,
    c: usize,
    end: Instant,
) -> Result<()> {
    let p = &ctx.plan;
    let anonymous = sc == Scenario::MixedAuth && c.is_multiple_of(2);
    let mut s = if anonymous {
        ctx.anonymous()?
    } else {
        ctx.session()?
    };
    let head_digests: Vec<String> = if sc == Scenario::HeadHeavy {
        head_layers()
            .into_iter()
            .map(|b| ctx.blob(b).digest())
            .collect()
    } else {
        Vec::new()
    };
    let mut iter = 0u64;
    // Bounded by the deadline.
    while Instant::now() < end {
        let done = match sc {
            Scenario::CiPush => {
                let img = ci_image(p, c, iter);
                let layers = with_digests(&ctx, &img.layers);
                push_image(
                    &mut s,
                    &rec,
                    &img.repo,
                    &img.tag,
                    &layers,
                    Some((BASE_REPO, p.base_layers)),
                )
                .await
            }
            Scenario::HotPull => {
                let tag = format!("t{}", (c + iter as usize) % p.hot_tags);
                pull_image(&mut s, &rec, HOT_REPO, &tag, "").await
            }
            Scenario::HeadHeavy => head_round(&mut s, &rec, &head_digests, c, iter).await,
            Scenario::LargeLayer => large_push(&ctx, &mut s, &rec, c, iter).await,
            Scenario::MixedAuth if anonymous => anonymous_pull(&mut s, &rec).await,
            Scenario::MixedAuth => {
                let specs: Vec<BlobSpec> = (0..p.app_layers)
                    .map(|n| BlobSpec {
                        seed: client_seed(5, c, iter, n),
                        size: p.app_layer_size,
                    })
                    .collect();
                let layers = with_digests(&ctx, &specs);
                let (repo, tag) = (format!("mixed/team-{c}"), format!("v{iter}"));
                match push_image(&mut s, &rec, &repo, &tag, &layers, None).await {
                    Some(()) => pull_image(&mut s, &rec, &repo, &tag, "auth ").await,
                    None => None,
                }
            }
            Scenario::All => bail!("'all' is expanded before running"),
        };
        if done.is_none() {
            // A failed operation was recorded; do not spin on a broken server.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        iter += 1;
    }
    Ok(())
}

/// Four requests: two present-blob HEADs, a manifest HEAD, an absent-blob HEAD.
async fn head_round(
    s: &mut Session,
    rec: &Recorder,
    digests: &[String],
    c: usize,
    iter: u64,
) -> Option<()> {
    for k in 0..4u64 {
        let r = match k {
            0 | 1 => {
                let d = &digests[((iter * 2 + k) as usize + c) % digests.len()];
                timed(rec, "blob HEAD", async {
                    match regops::blob_exists(s, HEAD_REPO, d).await? {
                        true => Ok(((), 0)),
                        false => bail!("HEAD {d}: 404 for a pushed blob"),
                    }
                })
                .await
            }
            2 => {
                timed(rec, "manifest HEAD", async {
                    regops::manifest_head(s, HEAD_REPO, "v1").await?;
                    Ok(((), 0))
                })
                .await
            }
            _ => {
                let d = digest_of(format!("absent-{c}-{iter}").as_bytes());
                timed(rec, "blob HEAD (absent)", async {
                    match regops::blob_exists(s, HEAD_REPO, &d).await? {
                        false => Ok(((), 0)),
                        true => bail!("HEAD {d}: 200 for a blob never pushed"),
                    }
                })
                .await
            }
        };
        r?;
    }
    Some(())
}

/// A fresh big layer streamed (digested on the way), a config, a manifest.
async fn large_push(ctx: &Ctx, s: &mut Session, rec: &Recorder, c: usize, iter: u64) -> Option<()> {
    let blob = ctx.blob(BlobSpec {
        seed: client_seed(4, c, iter, 0),
        size: ctx.plan.large_layer_size,
    });
    let repo = format!("big/app-{c}");
    let digest = timed(rec, "layer upload", async {
        let loc = regops::start_upload(s, &repo).await?;
        Ok((regops::upload(s, &loc, &blob, None).await?, blob.size()))
    })
    .await?;
    let layers = [Descriptor {
        digest,
        size: blob.size(),
    }];
    let config = regops::image_config(&format!("{repo}:{iter}"), &layers);
    let config_digest = digest_of(&config);
    timed(rec, "config upload", async {
        let loc = regops::start_upload(s, &repo).await?;
        regops::put_small(s, &loc, &config, &config_digest).await?;
        Ok(((), 0))
    })
    .await?;
    let config = Descriptor {
        digest: config_digest,
        size: config.len() as u64,
    };
    let manifest = regops::image_manifest(&config, &layers);
    timed(rec, "manifest PUT", async {
        regops::put_manifest(s, &repo, &format!("v{iter}"), &manifest).await?;
        Ok(((), 0))
    })
    .await
}

/// An anonymous pull of the public image: allowed (then the blobs too) or
/// denied with 401/403; both are answers, anything else is an error.
async fn anonymous_pull(s: &mut Session, rec: &Recorder) -> Option<()> {
    let t = Instant::now();
    match regops::get_manifest(s, PUBLIC_REPO, "v1").await {
        Ok((StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _)) => {
            rec.ok("anon manifest GET (denied)", t.elapsed(), 0);
            Some(())
        }
        Ok((StatusCode::OK, body)) => {
            rec.ok("anon manifest GET (allowed)", t.elapsed(), 0);
            for b in manifest_blobs(&body).ok()? {
                timed(rec, "anon blob GET", async {
                    Ok((
                        (),
                        regops::get_blob(s, PUBLIC_REPO, &b.digest, b.size).await?,
                    ))
                })
                .await?;
            }
            Some(())
        }
        Ok((status, _)) => {
            rec.error(
                "anon manifest GET",
                &anyhow::anyhow!("GET manifest: {status}"),
            );
            None
        }
        Err(e) => {
            rec.error("anon manifest GET", &e);
            None
        }
    }
}

/// Prepare and run one scenario against the registry in `ctx`, with a
/// progress bar labelled `label`.
pub async fn run(sc: Scenario, ctx: Rc<Ctx>, label: &str) -> Result<ScenarioResult> {
    let sp = progress::spinner(format!("{label}: {} setup", sc.name()));
    let r = setup(sc, &ctx).await;
    sp.finish_and_clear();
    r?;
    let clients = ctx.plan.clients_for(sc);
    let rec = Rc::new(Recorder::default());
    let total_ms = ctx.plan.duration.as_millis() as u64;
    let pb = progress::count_bar(total_ms, format!("{label}: {} (ms)", sc.name()));
    let t0 = Instant::now();
    let end = t0 + ctx.plan.duration;
    let local = tokio::task::LocalSet::new();
    let running = Rc::new(Cell::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (ctx, rec, running) = (ctx.clone(), rec.clone(), running.clone());
            local.spawn_local(async move {
                let r = client_loop(sc, ctx, rec, c, end).await;
                running.set(running.get() - 1);
                r
            })
        })
        .collect();
    let ticker = {
        let (pb, rec, running) = (pb.clone(), rec.clone(), running.clone());
        let label = label.to_string();
        local.spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            // Bounded: the ticker is aborted when every client is done.
            loop {
                tick.tick().await;
                pb.set_position((t0.elapsed().as_millis() as u64).min(total_ms));
                pb.set_message(format!(
                    "{label}: {} {} ops {} errors{}",
                    sc.name(),
                    rec.total_ops(),
                    rec.total_errors(),
                    if Instant::now() >= end {
                        format!(", finishing {} clients", running.get())
                    } else {
                        String::new()
                    }
                ));
            }
        })
    };
    local
        .run_until(async {
            for h in handles {
                h.await??;
            }
            ticker.abort();
            anyhow::Ok(())
        })
        .await?;
    let elapsed = t0.elapsed();
    pb.finish_and_clear();
    // The aborted ticker holds the recorder until its task is dropped.
    drop(local);
    let rec = Rc::try_unwrap(rec).map_err(|_| anyhow::anyhow!("recorder still shared"))?;
    Ok(rec.finish(sc.name(), elapsed, clients))
}
