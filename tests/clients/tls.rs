//! The Docker engine pushing to and pulling from Berth over TLS, with the
//! test CA installed where dockerd looks for a registry's CA:
//! /etc/docker/certs.d/<host:port>/ca.crt (removed again on drop).
//!
//! What this does and does not prove: dockerd always treats 127.0.0.0/8 as
//! an "insecure registry", for which it still tries HTTPS first but skips
//! certificate verification (and does not read certs.d). So this checks
//! docker's HTTPS path end to end against Berth's TLS listener: the port
//! speaks only TLS, so docker's plain-HTTP fallback cannot succeed. Chain
//! verification itself is covered by tests/tls.rs with rustls clients.

use std::{fs, path::PathBuf, time::Duration};

use super::{
    daemons::Dockerd,
    docker::{build, import_base, push},
};
use crate::common::{
    pki::{write, Ca},
    Berth,
};

/// `ca.crt` for one registry in dockerd's certs.d, removed on drop.
struct CertsD {
    dir: PathBuf,
}

impl CertsD {
    fn install(registry: &str, ca_pem: &str) -> CertsD {
        let dir = PathBuf::from("/etc/docker/certs.d").join(registry);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ca.crt"), ca_pem).unwrap();
        CertsD { dir }
    }
}

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        // certs.d itself too, if this left it empty (fails harmlessly if not).
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

#[test]
fn docker_push_and_pull_over_tls() {
    let work = tempfile::tempdir().unwrap();
    let root = Ca::root("Berth Docker Test Root");
    let leaf = root.server(&["127.0.0.1", "localhost"]);
    let cert = write(work.path(), "server.crt", &leaf.cert_pem);
    let key = write(work.path(), "server.key", &leaf.key_pem);
    let berth = Berth::start_with(|data, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {data}\nhttp:\n  addr: {addr}\n  secret: s\n  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        )
    });
    let _ca = CertsD::install(&berth.addr, &root.pem());
    let d = Dockerd::start();

    import_base(&d, work.path(), "berth-tls/base:1");
    let reference = format!("{}/secure/app:1", berth.addr);
    let image = build(
        &d,
        work.path(),
        "berth-tls/base:1",
        &reference,
        &[("app.txt", "pushed over tls\n")],
    );
    let (digest, _) = push(&d, &reference);

    // What docker pushed is what Berth serves, read back over TLS by a
    // client that trusts only the test root.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let served = rt.block_on(async {
        let c = crate::common::http::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(root.pem().as_bytes()).unwrap()])
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        c.head(berth.https_url("/v2/secure/app/manifests/1"))
            .header(
                "accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .unwrap()
    });
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["docker-content-digest"], digest.as_str());

    d.remove_all_images();
    let out = d.ok(&["pull", &reference]).all();
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(d.inspect(&reference, "{{.Id}}"), image.id);
}
