//! The clients of `loadtest chaos`: CI jobs one after another, each step
//! tried again as docker does (up to [`ATTEMPTS`] times, after the answer's
//! `Retry-After` or a second), every acknowledged manifest PUT written in
//! the [`Ledger`], every failure counted by kind in the [`Tally`], and every
//! byte read back hashed. Also the final check: every acknowledged image
//! pulled once more.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::Duration,
};

use anyhow::Result;
use bytes::Bytes;

use crate::{
    chaos_plan::{
        base_layer, failure_kind, job, Image, LayerSpec, Ledger, Tally, Upload, BASES,
        DEFAULT_WAIT, MOVING_TAG,
    },
    data::{digest_of, random_bytes, BlobData},
    http::ReqBody,
    regclient::{Credentials, Endpoint, Session},
    regops::{self, Descriptor, Mount},
};

/// Tries per step before the job gives it up (docker: 5).
pub const ATTEMPTS: usize = 5;
/// One try of a step that has not finished by then failed ("timeout").
const TRY_TIMEOUT: Duration = Duration::from_secs(60);
/// The shared random pattern layers are cut from (layers are at most 1 MiB).
const PATTERN_LEN: usize = 1 << 20;

/// What every client shares.
pub struct Shared {
    endpoint: Endpoint,
    pattern: Bytes,
    /// The base layers and their digests, computed once.
    bases: Vec<(BlobData, String)>,
    pub ledger: RefCell<Ledger>,
    /// Set when the run is over: clients stop after the job they are in.
    pub stop: Cell<bool>,
}

impl Shared {
    pub fn new(endpoint: Endpoint) -> Shared {
        let pattern = random_bytes(0xc4a05, PATTERN_LEN);
        let bases = (0..BASES)
            .map(|b| {
                let spec = base_layer(b);
                let data = BlobData::new(&pattern, spec.seed, spec.size);
                let digest = data.digest();
                (data, digest)
            })
            .collect();
        Shared {
            endpoint,
            pattern,
            bases,
            ledger: RefCell::new(Ledger::default()),
            stop: Cell::new(false),
        }
    }
}

/// A blob to push: its bytes (a recipe or a buffer) and how.
struct Blob {
    desc: Descriptor,
    data: BlobBody,
    upload: Upload,
    shared: bool,
}

enum BlobBody {
    Gen(BlobData),
    Buf(Bytes),
}

impl Blob {
    fn body(&self) -> ReqBody {
        match &self.data {
            BlobBody::Gen(d) => ReqBody::blob_range(d, 0, d.size(), None),
            BlobBody::Buf(b) => ReqBody::full(b.clone()),
        }
    }
}

/// One step of a job, tried as a whole.
enum Step<'a> {
    Blob(&'a Blob),
    Manifest {
        tag: &'a str,
        body: &'a Bytes,
    },
    Pull {
        image: &'a Image,
        reference: &'a str,
    },
}

impl Step<'_> {
    fn name(&self) -> &'static str {
        match self {
            Step::Blob(_) => "push blob",
            Step::Manifest { .. } => "push manifest",
            Step::Pull { .. } => "pull",
        }
    }
}

pub struct Worker {
    shared: Rc<Shared>,
    tally: Rc<RefCell<Tally>>,
    session: Session,
    repo: String,
}

impl Worker {
    pub fn new(shared: Rc<Shared>, tally: Rc<RefCell<Tally>>, repo: String) -> Result<Worker> {
        let session = Session::new(&shared.endpoint, Rc::new(Credentials::anonymous()))?;
        Ok(Worker {
            shared,
            tally,
            session,
            repo,
        })
    }

    /// `step` until it succeeds, at most [`ATTEMPTS`] times; each failure
    /// counted by kind. After a failure the next try starts on a new
    /// connection, as a client whose request broke off would.
    async fn retried(&mut self, step: Step<'_>) -> bool {
        for _ in 0..ATTEMPTS {
            let (kind, wait) = match tokio::time::timeout(TRY_TIMEOUT, self.once(&step)).await {
                Ok(Ok(())) => return true,
                Ok(Err(e)) => failure_kind(step.name(), &e),
                Err(_) => (format!("{}: timeout", step.name()), DEFAULT_WAIT),
            };
            self.tally.borrow_mut().error(kind);
            match Session::new(&self.shared.endpoint, Rc::new(Credentials::anonymous())) {
                Ok(s) => self.session = s,
                Err(_) => break,
            }
            // Backing off between tries, as docker does.
            tokio::time::sleep(wait).await;
        }
        self.tally.borrow_mut().abandoned += 1;
        false
    }

    async fn once(&mut self, step: &Step<'_>) -> Result<()> {
        match step {
            Step::Blob(b) => {
                let way = self.push_blob(b).await?;
                *self.tally.borrow_mut().blobs.entry(way).or_default() += 1;
                Ok(())
            }
            Step::Manifest { tag, body } => {
                regops::put_manifest(&mut self.session, &self.repo, tag, body).await
            }
            Step::Pull { image, reference } => self.pull(image, reference).await,
        }
    }

    /// Docker's way: HEAD; for a base layer another repository holds, a
    /// mount; else (or when the mount gives a session) the upload. How the
    /// blob got there.
    async fn push_blob(&mut self, b: &Blob) -> Result<&'static str> {
        let (s, repo, digest) = (&mut self.session, self.repo.as_str(), &b.desc.digest);
        if regops::blob_exists(s, repo, digest).await? {
            return Ok("already there");
        }
        let mut session = None;
        let home = b.shared.then(|| self.shared.ledger.borrow().home(digest));
        if let Some(from) = home.flatten().filter(|f| f != repo) {
            match regops::mount(s, repo, digest, &from).await? {
                Mount::Mounted => return Ok("mounted"),
                Mount::Upload(loc) => session = Some(loc),
            }
        }
        let body = || b.body();
        match (b.upload, &b.data) {
            (Upload::Post, _) if session.is_none() => {
                regops::post_whole(s, repo, &body, digest).await?;
            }
            (Upload::Chunked, BlobBody::Gen(data)) => {
                let loc = match session {
                    Some(l) => l,
                    None => regops::start_upload(s, repo).await?,
                };
                regops::upload(s, &loc, data, Some(digest)).await?;
            }
            // POST+PUT, and whatever a failed mount left a session for.
            _ => {
                let loc = match session {
                    Some(l) => l,
                    None => regops::start_upload(s, repo).await?,
                };
                regops::put_whole(s, &loc, &body, digest).await?;
            }
        }
        if b.shared {
            self.shared.ledger.borrow_mut().set_home(digest, repo);
        }
        Ok(b.upload.label())
    }

    /// The manifest by `reference`, then every blob, each hashed. A 200 with
    /// other bytes is recorded as wrong (and not tried again); a failed
    /// request is an error (tried again).
    async fn pull(&mut self, image: &Image, reference: &str) -> Result<()> {
        let s = &mut self.session;
        let body = regops::get_manifest_ok(s, &image.repo, reference).await?;
        let mut wrong = Vec::new();
        if digest_of(&body) != image.digest {
            wrong.push(format!("manifest {}:{reference}", image.repo));
        }
        for b in &image.blobs {
            let (n, got) = regops::get_blob_digest(s, &image.repo, &b.digest).await?;
            if got != b.digest || n != b.size {
                wrong.push(format!("blob {}@{} ({n} bytes)", image.repo, b.digest));
            }
        }
        let mut t = self.tally.borrow_mut();
        t.pulls += 1;
        t.wrong.extend(wrong);
        Ok(())
    }

    /// PUT the manifest under `tag`; written in the ledger if acknowledged.
    async fn tag(&mut self, image: &Image, tag: &str, body: &Bytes) -> bool {
        let n = self.shared.ledger.borrow_mut().attempt(&self.repo, tag);
        if !self.retried(Step::Manifest { tag, body }).await {
            return false;
        }
        let acked = Image {
            tag: tag.to_string(),
            ..image.clone()
        };
        self.shared.ledger.borrow_mut().ack(n, acked);
        true
    }

    /// Job `i`'s blobs: the base layer, its own layers.
    fn layers(&self, spec: &[LayerSpec]) -> Vec<Blob> {
        spec.iter()
            .map(|l| {
                let (data, digest) = if l.shared {
                    self.shared.bases[(l.seed - base_layer(0).seed) as usize].clone()
                } else {
                    let d = BlobData::new(&self.shared.pattern, l.seed, l.size);
                    let digest = d.digest();
                    (d, digest)
                };
                Blob {
                    desc: Descriptor {
                        digest,
                        size: data.size(),
                    },
                    data: BlobBody::Gen(data),
                    upload: l.upload,
                    shared: l.shared,
                }
            })
            .collect()
    }

    /// One CI job: layers, config, manifest under `v<i>` (and sometimes
    /// the moving tag), sometimes a pull of an earlier image.
    async fn job(&mut self, n: usize, i: u64) {
        let j = job(n, i);
        self.tally.borrow_mut().jobs += 1;
        let layers = self.layers(&j.layers);
        for b in &layers {
            if !self.retried(Step::Blob(b)).await {
                return;
            }
        }
        if j.cancelled {
            self.tally.borrow_mut().cancelled += 1;
            return;
        }
        let tag = format!("v{i}");
        let descs: Vec<Descriptor> = layers.iter().map(|b| b.desc.clone()).collect();
        let config = regops::image_config(&format!("{}:{tag}", self.repo), &descs);
        let config = Blob {
            desc: Descriptor {
                digest: digest_of(&config),
                size: config.len() as u64,
            },
            data: BlobBody::Buf(config),
            upload: j.config_upload,
            shared: false,
        };
        if !self.retried(Step::Blob(&config)).await {
            return;
        }
        let manifest = regops::image_manifest(&config.desc, &descs);
        let image = Image {
            repo: self.repo.clone(),
            tag: tag.clone(),
            digest: digest_of(&manifest),
            blobs: std::iter::once(config.desc).chain(descs).collect(),
        };
        if self.tag(&image, &tag, &manifest).await && j.retag {
            self.tag(&image, MOVING_TAG, &manifest).await;
        }
        if j.pull {
            let pick = n.wrapping_mul(7919).wrapping_add(i as usize * 31);
            let earlier = self.shared.ledger.borrow().earlier(pick);
            if let Some((image, reference)) = earlier {
                self.retried(Step::Pull {
                    image: &image,
                    reference: &reference,
                })
                .await;
            }
        }
    }
}

/// Client `n`: jobs into `chaos/c<n>` until the run stops.
pub async fn client(shared: Rc<Shared>, tally: Rc<RefCell<Tally>>, n: usize) -> Result<()> {
    let mut w = Worker::new(shared.clone(), tally, format!("chaos/c{n}"))?;
    let mut i = 0;
    // Bounded by the run's end: `stop` is set when it is over.
    while !shared.stop.get() {
        i += 1;
        w.job(n, i).await;
    }
    Ok(())
}

/// Checker `k` of `of`: every `of`-th acknowledged PUT, pulled by the
/// reference the ledger says, tried as often as during the run. The ones
/// that never pulled (lost), with their reference.
pub async fn check(
    shared: Rc<Shared>,
    tally: Rc<RefCell<Tally>>,
    checks: Rc<Vec<(Image, String)>>,
    k: usize,
    of: usize,
) -> Result<Vec<String>> {
    let mut w = Worker::new(shared, tally, String::new())?;
    let mut lost = Vec::new();
    for (image, reference) in checks.iter().skip(k).step_by(of.max(1)) {
        let step = Step::Pull { image, reference };
        if !w.retried(step).await {
            lost.push(format!("{}:{reference}", image.repo));
        }
    }
    Ok(lost)
}
