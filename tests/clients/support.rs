//! Driving real clients: commands with a deadline, plain HTTP checks, what a
//! registry lists, and a look at a storage root.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use crate::common::{http::exchange, process::wait_with_deadline};
pub use crate::common::{
    http::{sha256, Resp},
    process::require_tool,
};

/// What a finished command printed.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout then stderr, for messages and for searching client output.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run `cmd` to completion, killing it after `limit`: a hung client must fail
/// the test, not hang it. Output goes to files so a chatty child cannot block
/// on a full pipe while we poll.
pub fn run(cmd: &mut Command, limit: Duration) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    let Some(status) = wait_with_deadline(&mut child, limit) else {
        panic!(
            "{cmd:?} did not finish within {limit:?}; output so far:\n{}{}",
            fs::read_to_string(&o).unwrap_or_default(),
            fs::read_to_string(&e).unwrap_or_default()
        );
    };
    Out {
        status,
        stdout: fs::read_to_string(&o).unwrap_or_default(),
        stderr: fs::read_to_string(&e).unwrap_or_default(),
    }
}

/// Run `cmd` and require exit status 0.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Out {
    let out = run(cmd, limit);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        out.all()
    );
    out
}

/// One request (status is returned, not checked; connection errors give 0).
pub fn http(method: &str, url: &str, accept: &[&str]) -> Resp {
    let accept = accept.join(", ");
    let headers: &[(&str, &str)] = if accept.is_empty() {
        &[]
    } else {
        &[("accept", &accept)]
    };
    send(method, url, headers, Vec::new())
}

/// A request with headers and a body; a failed exchange gives status 0 so
/// tests can probe a registry that is not (yet) answering.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let client = crate::common::http::builder().timeout(Duration::from_secs(30));
    exchange(client, |c| {
        let mut req = c.request(method.parse().unwrap(), url).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    })
    .unwrap_or_else(|_| Resp {
        status: 0,
        headers: Default::default(),
        body: vec![],
    })
}

/// Every manifest type a registry here may hold.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// What a client sees of a registry: the catalog, each repository's tags, and
/// the digest (and media type) every tag resolves to.
#[derive(Debug, PartialEq, Eq)]
pub struct Listing {
    pub catalog: Vec<String>,
    pub tags: BTreeMap<String, Vec<String>>,
    pub digests: BTreeMap<String, (String, String)>,
}

pub fn listing(addr: &str) -> Listing {
    let cat = http("GET", &format!("http://{addr}/v2/_catalog"), &[]);
    assert_eq!(cat.status, 200, "catalog on {addr}");
    let catalog: Vec<String> = serde_json::from_value(cat.json()["repositories"].clone()).unwrap();
    let mut tags = BTreeMap::new();
    let mut digests = BTreeMap::new();
    for repo in &catalog {
        let r = http("GET", &format!("http://{addr}/v2/{repo}/tags/list"), &[]);
        assert_eq!(r.status, 200, "tags of {repo} on {addr}");
        // Sorted here: distribution 2.8 answers in directory order (the OCI
        // spec asks for lexical order; Berth's own order is checked apart).
        let mut list: Vec<String> =
            serde_json::from_value(r.json()["tags"].clone()).unwrap_or_default();
        list.sort();
        for tag in &list {
            let m = http(
                "GET",
                &format!("http://{addr}/v2/{repo}/manifests/{tag}"),
                &MANIFEST_TYPES,
            );
            assert_eq!(m.status, 200, "{repo}:{tag} on {addr}");
            let digest = m.header("docker-content-digest").unwrap().to_string();
            assert_eq!(
                digest,
                sha256(&m.body),
                "{repo}:{tag}: digest header vs body"
            );
            let ct = m.header("content-type").unwrap_or("").to_string();
            digests.insert(format!("{repo}:{tag}"), (digest, ct));
        }
        tags.insert(repo.clone(), list);
    }
    Listing {
        catalog,
        tags,
        digests,
    }
}

/// The blobs in a distribution-layout storage root, checking on the way that
/// each sits at `blobs/sha256/<hex[..2]>/<hex>/data` and hashes to its name.
pub fn stored_blobs(root: &Path) -> BTreeSet<String> {
    let base = root.join("docker/registry/v2/blobs/sha256");
    let mut found = BTreeSet::new();
    for prefix in fs::read_dir(&base).unwrap() {
        let prefix = prefix.unwrap().path();
        for blob in fs::read_dir(&prefix).unwrap() {
            let blob = blob.unwrap().path();
            let hex = blob.file_name().unwrap().to_str().unwrap().to_string();
            assert!(
                hex.starts_with(prefix.file_name().unwrap().to_str().unwrap()),
                "{} is under the wrong prefix",
                blob.display()
            );
            let files: Vec<_> = fs::read_dir(&blob)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(files, ["data"], "{}", blob.display());
            let data = fs::read(blob.join("data")).unwrap();
            assert_eq!(sha256(&data), format!("sha256:{hex}"), "corrupt blob");
            assert!(found.insert(format!("sha256:{hex}")));
        }
    }
    found
}

/// Files under any repository's `_uploads`: finished or mounted uploads must
/// leave none behind.
pub fn upload_leftovers(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, in_uploads: bool, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let p = e.unwrap().path();
            let up = in_uploads || p.file_name().is_some_and(|n| n == "_uploads");
            if p.is_dir() {
                walk(&p, up, out);
            } else if up {
                out.push(p);
            }
        }
    }
    let mut out = vec![];
    walk(
        &root.join("docker/registry/v2/repositories"),
        false,
        &mut out,
    );
    out
}
