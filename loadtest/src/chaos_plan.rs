//! `loadtest chaos` as data: when each fault strikes (the schedule), what a
//! client's job pushes (the job plan), how each acknowledged tag is checked
//! at the end (the ledger), and how a client-visible error is named (the
//! tally). Pure, so it is tested without a registry; `chaos.rs` and
//! `chaos_client.rs` run it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use crate::{http::Unexpected, regops::Descriptor};

/// Replicas behind nginx.
pub const REPLICAS: usize = 3;
/// The tag every few images are also pushed under, moving it each time.
pub const MOVING_TAG: &str = "latest";
/// Base layers every client's images share (pushed once, then found by HEAD
/// or mounted from another repository).
pub const BASES: u64 = 4;
const BASE_SEED: u64 = 0xba5e;
const MIN_LAYER: u64 = 4 << 10;
const MAX_LAYER: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL replica `i`, then start it again.
    Kill(usize),
    /// SIGKILL Redis, then start an empty one.
    Redis,
    /// `berth garbage-collect`, with the replicas serving.
    Collect,
}

/// Every fault of a run, at its time from the start, in order. A replica is
/// killed every `kill_every`, the first half a period in (so no kill falls
/// on the start or the end, nor on the two below in a default run), taking
/// the replicas in turn; Redis at a third of the run; the collector at half.
pub fn schedule(run: Duration, kill_every: Duration, replicas: usize) -> Vec<(Duration, Fault)> {
    let mut out = vec![(run / 3, Fault::Redis), (run / 2, Fault::Collect)];
    if !kill_every.is_zero() && replicas > 0 {
        let mut at = kill_every / 2;
        // Bounded: `at` grows by a non-zero period up to `run`.
        while at < run {
            let i = out.len() - 2;
            out.push((at, Fault::Kill(i % replicas)));
            at += kill_every;
        }
    }
    // Stable: at equal times Redis and the collector come before a kill.
    out.sort_by_key(|(at, _)| *at);
    out
}

/// How a blob goes up when it is not there yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Upload {
    /// POST, one PATCH with the data, `PUT ?digest=`.
    Chunked,
    /// POST, then the data in `PUT ?digest=`.
    Put,
    /// The data in one `POST ?digest=`.
    Post,
}

impl Upload {
    pub fn label(self) -> &'static str {
        match self {
            Upload::Chunked => "POST+PATCH+PUT",
            Upload::Put => "POST+PUT",
            Upload::Post => "POST ?digest=",
        }
    }
}

/// A layer as a recipe (`BlobData::new(pattern, seed, size)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    pub seed: u64,
    pub size: u64,
    /// A base layer: other repositories have it (mount, or found by HEAD).
    pub shared: bool,
    pub upload: Upload,
}

/// One CI job of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// A base layer first, then one or two of the job's own.
    pub layers: Vec<LayerSpec>,
    /// How the config goes up (never chunked: it is a few hundred bytes).
    pub config_upload: Upload,
    /// Cancelled after its layers: no config, no manifest (orphans for the
    /// collector).
    pub cancelled: bool,
    /// Also pushed under [`MOVING_TAG`].
    pub retag: bool,
    /// Then pulls an image pushed earlier (by any client).
    pub pull: bool,
}

/// The base layers: 64 KiB to 1 MiB.
pub fn base_layer(b: u64) -> LayerSpec {
    LayerSpec {
        seed: BASE_SEED + b,
        size: (64 << 10) << (b % 5),
        shared: true,
        upload: Upload::Chunked,
    }
}

/// splitmix64: sizes spread over the range without a random generator.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Job `i` (from 1) of client `client`: deterministic, unique layers per
/// (client, job), the three upload ways in turn.
pub fn job(client: usize, i: u64) -> Job {
    const WAYS: [Upload; 3] = [Upload::Chunked, Upload::Put, Upload::Post];
    let own = 1 + (i % 2);
    let mut layers = vec![base_layer((client as u64 + i) % BASES)];
    for k in 0..own {
        let seed = ((client as u64 + 1) << 40) | (i << 2) | k;
        layers.push(LayerSpec {
            seed,
            size: MIN_LAYER + mix(seed) % (MAX_LAYER - MIN_LAYER + 1),
            shared: false,
            upload: WAYS[((i + k) % 3) as usize],
        });
    }
    Job {
        layers,
        config_upload: if i.is_multiple_of(2) {
            Upload::Put
        } else {
            Upload::Post
        },
        cancelled: i % 5 == 4,
        retag: i.is_multiple_of(3),
        pull: i % 2 == 1,
    }
}

/// An image as acknowledged under one tag: what a pull must give back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub repo: String,
    pub tag: String,
    /// The manifest's digest.
    pub digest: String,
    /// The config, then the layers.
    pub blobs: Vec<Descriptor>,
}

/// Every manifest PUT attempted and acknowledged (201), in order, and where
/// each shared layer was first pushed (to mount it from).
#[derive(Default)]
pub struct Ledger {
    acked: Vec<(u64, Image)>,
    /// (repository, tag) → the number of the last PUT attempted on it.
    last_attempt: HashMap<(String, String), u64>,
    attempts: u64,
    homes: HashMap<String, String>,
}

impl Ledger {
    /// Before the first try of a manifest PUT on `repo:tag`: its number.
    /// Every attempt counts, acknowledged or not: one whose answer was lost
    /// may still have moved the tag.
    pub fn attempt(&mut self, repo: &str, tag: &str) -> u64 {
        self.attempts += 1;
        self.last_attempt
            .insert((repo.to_string(), tag.to_string()), self.attempts);
        self.attempts
    }

    /// Attempt `n` was answered 201.
    pub fn ack(&mut self, n: u64, image: Image) {
        self.acked.push((n, image));
    }

    /// Acknowledged manifest PUTs.
    pub fn acked(&self) -> usize {
        self.acked.len()
    }

    /// Distinct images acknowledged (under any tag).
    pub fn images(&self) -> usize {
        let set: HashSet<(&str, &str)> = self
            .acked
            .iter()
            .map(|(_, i)| (i.repo.as_str(), i.digest.as_str()))
            .collect();
        set.len()
    }

    /// During the run: the `pick`-th (modulo) acknowledged image and the
    /// reference to pull it by: its tag, unless the tag moves (its owner
    /// may be moving it right now), then its digest.
    pub fn earlier(&self, pick: usize) -> Option<(Image, String)> {
        if self.acked.is_empty() {
            return None;
        }
        let (_, img) = &self.acked[pick % self.acked.len()];
        let reference = if img.tag == MOVING_TAG {
            img.digest.clone()
        } else {
            img.tag.clone()
        };
        Some((img.clone(), reference))
    }

    /// At the end: every acknowledged PUT with the reference to check it
    /// by: its tag if no later PUT was attempted on that tag, else (the tag
    /// may have been re-pointed) its digest.
    pub fn final_checks(&self) -> Vec<(Image, String)> {
        self.acked
            .iter()
            .map(|(n, img)| {
                let key = (img.repo.clone(), img.tag.clone());
                let latest = self.last_attempt.get(&key) == Some(n);
                let reference = if latest { &img.tag } else { &img.digest };
                (img.clone(), reference.clone())
            })
            .collect()
    }

    /// The repository a shared layer was first pushed to.
    pub fn home(&self, digest: &str) -> Option<String> {
        self.homes.get(digest).cloned()
    }

    pub fn set_home(&mut self, digest: &str, repo: &str) {
        self.homes
            .entry(digest.to_string())
            .or_insert_with(|| repo.to_string());
    }
}

/// What the clients saw.
#[derive(Default, Debug)]
pub struct Tally {
    /// Client-visible failures by kind ("PATCH upload 502", "PUT blob 404
    /// BLOB_UPLOAD_UNKNOWN", "push blob: connection refused", ...).
    pub errors: BTreeMap<String, usize>,
    /// Reads answered 200 whose bytes do not hash to what was asked for.
    pub wrong: Vec<String>,
    /// Steps given up after every attempt failed.
    pub abandoned: usize,
    pub jobs: usize,
    pub cancelled: usize,
    pub pulls: usize,
    /// Blobs by how they got into the repository ("POST+PATCH+PUT",
    /// "mounted", "already there", ...).
    pub blobs: BTreeMap<&'static str, usize>,
}

impl Tally {
    pub fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn total_errors(&self) -> usize {
        self.errors.values().sum()
    }
}

/// Wait before the next try when the answer did not say (docker: about a
/// second at first).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);
/// A `Retry-After` above this is capped: the run is short.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// A failed step's kind and how long to wait before trying again. An
/// answer: `<request> <status> <OCI code>` (the code when the body is the
/// spec's JSON) and its `Retry-After`. No answer: `<step>: <cause>`
/// (connection refused or reset, body cut short).
pub fn failure_kind(step: &str, e: &anyhow::Error) -> (String, Duration) {
    if let Some(u) = e.chain().find_map(|c| c.downcast_ref::<Unexpected>()) {
        let mut kind = format!("{} {}", u.what, u.status.as_u16());
        if let Some(code) = oci_code(&u.body) {
            kind = format!("{kind} {code}");
        }
        let wait = u
            .retry_after
            .map_or(DEFAULT_WAIT, |s| Duration::from_secs(s).min(MAX_WAIT));
        return (kind, wait);
    }
    let io = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(|io| io.kind().to_string());
    let hyper = || {
        e.chain()
            .find_map(|c| c.downcast_ref::<hyper::Error>())
            .map(|h| h.to_string())
    };
    let cause = io
        .or_else(hyper)
        .unwrap_or_else(|| e.root_cause().to_string());
    (format!("{step}: {cause}"), DEFAULT_WAIT)
}

/// The first error code of an OCI error body (`{"errors":[{"code":…}]}`).
fn oci_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(v["errors"][0]["code"].as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_schedule_kills_in_turn_between_the_ends() {
        assert_eq!(
            schedule(S(60), S(30), 3),
            vec![
                (S(15), Fault::Kill(0)),
                (S(20), Fault::Redis),
                (S(30), Fault::Collect),
                (S(45), Fault::Kill(1)),
            ]
        );
        let full = schedule(S(180), S(30), 3);
        let kills: Vec<_> = full
            .iter()
            .filter_map(|(at, f)| match f {
                Fault::Kill(i) => Some((at.as_secs(), *i)),
                _ => None,
            })
            .collect();
        assert_eq!(
            kills,
            [(15, 0), (45, 1), (75, 2), (105, 0), (135, 1), (165, 2)]
        );
        assert!(full.contains(&(S(60), Fault::Redis)) && full.contains(&(S(90), Fault::Collect)));
        // A period longer than the run: no kill, the other two still.
        assert_eq!(schedule(S(10), S(30), 3).len(), 2);
        // Equal times: Redis and the collector first.
        assert_eq!(schedule(S(6), S(4), 3)[0], (S(2), Fault::Redis));
    }

    #[test]
    fn jobs_share_a_base_and_use_every_upload_way() {
        let jobs: Vec<Job> = (1..=30).map(|i| job(2, i)).collect();
        let mut ways = HashSet::new();
        let mut seeds = HashSet::new();
        for j in &jobs {
            assert!((2..=3).contains(&j.layers.len()), "{j:?}");
            assert!(j.layers[0].shared && j.layers[0].seed >= BASE_SEED);
            assert!(j.layers[0].seed < BASE_SEED + BASES);
            for l in &j.layers[1..] {
                assert!(!l.shared && (MIN_LAYER..=MAX_LAYER).contains(&l.size));
                assert!(seeds.insert(l.seed), "own layers are unique");
                ways.insert(l.upload);
            }
            assert_ne!(j.config_upload, Upload::Chunked);
        }
        assert_eq!(ways.len(), 3);
        assert_eq!(jobs.iter().filter(|j| j.cancelled).count(), 6);
        assert!(jobs.iter().any(|j| j.retag) && jobs.iter().any(|j| j.pull));
        assert_eq!(job(2, 7), job(2, 7));
        assert_ne!(job(1, 7).layers[1].seed, job(2, 7).layers[1].seed);
        assert!((0..BASES).all(|b| base_layer(b).size <= MAX_LAYER));
    }

    fn image(repo: &str, tag: &str, digest: &str) -> Image {
        Image {
            repo: repo.into(),
            tag: tag.into(),
            digest: digest.into(),
            blobs: Vec::new(),
        }
    }

    #[test]
    fn a_tag_moved_or_maybe_moved_later_is_checked_by_digest() {
        let mut l = Ledger::default();
        let n = l.attempt("a", "v1");
        l.ack(n, image("a", "v1", "d1"));
        let n = l.attempt("a", "latest");
        l.ack(n, image("a", "latest", "d1"));
        let n = l.attempt("a", "v2");
        l.ack(n, image("a", "v2", "d2"));
        let n = l.attempt("a", "latest");
        l.ack(n, image("a", "latest", "d2"));
        // A third PUT on latest, never acknowledged: it may have landed.
        l.attempt("a", "latest");
        // Another repository's tags are its own.
        let n = l.attempt("b", "latest");
        l.ack(n, image("b", "latest", "d3"));
        let refs: Vec<(String, String)> = l
            .final_checks()
            .into_iter()
            .map(|(i, r)| (i.tag, r))
            .collect();
        let want = [
            ("v1", "v1"),
            ("latest", "d1"),
            ("v2", "v2"),
            ("latest", "d2"),
            ("latest", "latest"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(refs, want);
        assert_eq!((l.acked(), l.images()), (5, 3));
        assert_eq!(l.earlier(1).unwrap().1, "d1", "a moving tag by digest");
        assert_eq!(l.earlier(7).unwrap().1, "v2");
        assert!(Ledger::default().earlier(0).is_none());
        l.set_home("sha256:x", "a");
        l.set_home("sha256:x", "b");
        assert_eq!(l.home("sha256:x").as_deref(), Some("a"));
    }

    #[test]
    fn failures_are_named_by_request_status_and_code() {
        let unexpected = |status: u16, body: &str, retry_after| {
            anyhow::Error::from(Unexpected {
                what: "PUT blob".into(),
                want: StatusCode::CREATED,
                status: StatusCode::from_u16(status).unwrap(),
                body: body.into(),
                retry_after,
            })
        };
        let e = unexpected(
            404,
            r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"gone"}]}"#,
            None,
        );
        assert_eq!(
            failure_kind("push blob", &e),
            ("PUT blob 404 BLOB_UPLOAD_UNKNOWN".into(), DEFAULT_WAIT)
        );
        let e = unexpected(502, "<html>Bad Gateway</html>", None);
        assert_eq!(failure_kind("push blob", &e).0, "PUT blob 502");
        let e = unexpected(503, r#"{"errors":[{"code":"UNAVAILABLE"}]}"#, Some(3));
        assert_eq!(
            failure_kind("push blob", &e),
            ("PUT blob 503 UNAVAILABLE".into(), S(3))
        );
        assert_eq!(failure_kind("x", &unexpected(503, "", Some(600))).1, S(10));
        // No answer: the step and the cause, under any context.
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = anyhow::Error::from(io).context("connect to 127.0.0.1:1");
        assert_eq!(
            failure_kind("pull", &e),
            ("pull: connection refused".into(), DEFAULT_WAIT)
        );
        let e = anyhow::anyhow!("response has no Location");
        assert_eq!(
            failure_kind("push blob", &e).0,
            "push blob: response has no Location"
        );
        let mut t = Tally::default();
        t.error("a".into());
        t.error("a".into());
        t.error("b".into());
        assert_eq!((t.errors["a"], t.total_errors()), (2, 3));
    }
}
