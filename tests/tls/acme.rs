//! `http.tls.letsencrypt` against pebble, Let's Encrypt's ACME test server.
//! Pebble's validation really connects: its `tlsPort` is Berth's port, so the
//! tls-alpn-01 challenge is answered by Berth itself (PEBBLE_VA_ALWAYS_VALID
//! is not used). Pebble resolves `localhost` with the system resolver.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rustls::pki_types::{pem::PemObject, CertificateDer};

use super::client::{self, block_on, ANY_VERSION};
use crate::common::{
    free_port,
    pki::{write, Ca},
    wait_for_port, Berth,
};

/// A pebble process with its own listener certificate (from `ca`), its ACME
/// directory and management interface on free 127.0.0.1 ports, validating
/// challenges against `validate_port`.
struct Pebble {
    child: Child,
    directory: String,
    management: String,
    ca_pem: String,
    log: std::path::PathBuf,
}

impl Pebble {
    fn start(ca: &Ca, dir: &Path, validate_port: u16) -> Pebble {
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("pebble").is_file()))
            .unwrap_or(false);
        assert!(on_path, "`pebble` is not on PATH (apt-get install pebble)");
        let leaf = ca.server(&["127.0.0.1", "localhost"]);
        let cert = write(dir, "pebble.crt", &leaf.cert_pem);
        let key = write(dir, "pebble.key", &leaf.key_pem);
        let (api, mgmt) = (free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert,
            "privateKey": key,
            // http-01 is not used; point it at a closed port.
            "httpPort": free_port(),
            "tlsPort": validate_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let cfg = write(dir, "pebble.json", &config.to_string());
        let log = dir.join("pebble.log");
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&cfg)
            // No random 0-15 s pause before each validation.
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Always a fresh authorization, so the challenge really runs.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pebble");
        let mut p = Pebble {
            child,
            directory: format!("https://127.0.0.1:{api}/dir"),
            management: format!("https://127.0.0.1:{mgmt}"),
            ca_pem: ca.pem(),
            log,
        };
        for port in [api, mgmt] {
            let up = wait_for_port(&format!("127.0.0.1:{port}"), Duration::from_secs(20));
            if !up || p.child.try_wait().unwrap().is_some() {
                panic!("pebble did not start:\n{}", p.logs());
            }
        }
        p
    }

    /// A PEM document from the management interface (issuing root, intermediate).
    fn fetch(&self, path: &str) -> String {
        block_on(async {
            let r = client::reqwest_client(&self.ca_pem)
                .build()
                .unwrap()
                .get(format!("{}{path}", self.management))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.text().await.unwrap()
        })
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn letsencrypt_config(root: &str, addr: &str, cache: &Path, directory: &str) -> String {
    format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: test-secret\n  tls:\n    letsencrypt:\n      cachefile: {}\n      email: admin@example.com\n      hosts: [localhost]\n      directoryurl: {directory}\n",
        cache.display()
    )
}

#[test]
fn letsencrypt_obtains_a_certificate_over_acme_and_keeps_it_in_the_cachefile() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("letsencrypt.json");
    // Berth checks the ACME directory's HTTPS certificate against the system
    // store; SSL_CERT_FILE points it at the CA of pebble's listener.
    let listener_ca = Ca::root("Pebble Listener CA");
    let ca_file = write(work.path(), "listener-ca.pem", &listener_ca.pem());
    let env = [("SSL_CERT_FILE", ca_file.to_str().unwrap())];

    // Pebble must know Berth's port before Berth starts ordering, and the
    // harness hands the address to the config closure first.
    let mut pebble = None;
    let berth = Berth::start_with_env(
        |root, addr| {
            let port = addr.rsplit(':').next().unwrap().parse().unwrap();
            let p = Pebble::start(&listener_ca, work.path(), port);
            let cfg = letsencrypt_config(root, addr, &cache, &p.directory);
            pebble = Some(p);
            cfg
        },
        &env,
    );
    let pebble = pebble.unwrap();
    let issuing_root = pebble.fetch("/roots/0");
    let intermediate = CertificateDer::from_pem_slice(pebble.fetch("/intermediates/0").as_bytes())
        .unwrap()
        .to_vec();

    // Ordering starts with the server; poll (bounded) until the handshake
    // verifies against pebble's issuing root.
    let trusting = client::config(&[&issuing_root], ANY_VERSION, None);
    let deadline = Instant::now() + Duration::from_secs(90);
    let issued = loop {
        match client::get(&berth.addr, "localhost", trusting.clone(), "/v2/") {
            Ok(x) => break x,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no ACME certificate after 90s ({e})\nberth:\n{}\npebble:\n{}",
                berth.logs(),
                pebble.logs()
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(issued.status, "HTTP/1.1 200 OK");
    assert_eq!(issued.chain.len(), 2, "leaf and pebble's intermediate");
    assert_eq!(
        issued.chain[1], intermediate,
        "issued under pebble's intermediate"
    );
    let validated = pebble.logs();
    assert!(
        validated.contains("set VALID by completed challenge"),
        "{validated}"
    );

    // The account key and the certificate are in the one cache file,
    // readable by the owner only.
    let meta = std::fs::metadata(&cache).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    let cert_key = format!("{} localhost", pebble.directory);
    assert!(stored["certs"][&cert_key].is_string(), "{stored}");
    assert_eq!(stored["accounts"].as_object().unwrap().len(), 1, "{stored}");

    // Restarted with pebble gone, Berth serves the cached certificate.
    let directory = pebble.directory.clone();
    drop(berth);
    drop(pebble);
    let again = Berth::start_with_env(
        |root, addr| letsencrypt_config(root, addr, &cache, &directory),
        &env,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let cached = loop {
        match client::get(&again.addr, "localhost", trusting.clone(), "/v2/") {
            Ok(x) => break x,
            Err(e) => assert!(
                Instant::now() < deadline,
                "cached certificate not served ({e}):\n{}",
                again.logs()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(cached.chain, issued.chain);
}
