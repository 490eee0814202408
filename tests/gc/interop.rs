//! Drop-in: `berth garbage-collect` on a root CNCF distribution 2.8 (Debian's
//! `docker-registry`) was pushed to and is serving, and distribution's own
//! collector agreeing afterwards that nothing is left to collect.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use super::common::free_port;
use super::support::*;

struct Distribution {
    child: Child,
    addr: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Distribution {
    fn start(root: &Path) -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            super::support::config(&filesystem(root.to_str().unwrap()), "", &addr),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry) on PATH");
        let d = Distribution {
            child,
            addr,
            config,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !super::common::wait_for_port(&d.addr, Duration::from_millis(200)) {
            assert!(Instant::now() < deadline, "docker-registry did not start");
        }
        d
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn collects_a_root_distribution_serves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let dist = Distribution::start(&root);
    let c = Client::new(format!("http://{}", dist.addr));
    let repo = "legacy/app";
    let layer = noise(1, 4000);
    let m = c.push_image(repo, "v1", b"{\"legacy\":1}", &[&layer]).await;
    let orphan = noise(2, 555);
    let orphan_digest = c.push_blob(repo, &orphan).await;

    let run = gc(
        &config(&filesystem(root.to_str().unwrap()), "", "127.0.0.1:0"),
        &["--grace-period", "0s"],
    );

    assert_eq!(run.count("blobs_deleted"), 1, "{}", run.stdout);
    assert_eq!(run.count("blobs_marked"), 3, "config, layer, manifest");
    assert_eq!(c.get_manifest(repo, "v1").await, (StatusCode::OK, m.body));
    assert_eq!(c.head_blob(repo, &digest(&layer)).await, StatusCode::OK);
    assert_eq!(
        c.head_blob(repo, &orphan_digest).await,
        StatusCode::NOT_FOUND
    );
    let out = Command::new("docker-registry")
        .args(["garbage-collect", "--dry-run"])
        .arg(&dist.config)
        .output()
        .unwrap();
    let out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.contains("3 blobs marked, 0 blobs and 0 manifests eligible for deletion"),
        "distribution's collector: {out}"
    );
}
