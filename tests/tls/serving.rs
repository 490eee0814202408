//! Serving over TLS: chain files, HTTP/2 by ALPN, https Location URLs, the
//! minimum protocol version and certificate reload.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use reqwest::{StatusCode, Version};
use rustls::ProtocolVersion;
use sha2::Digest as _;

use super::client::{self, block_on, ANY_VERSION, TLS12_ONLY};
use crate::common::{
    pki::{write, Ca},
    Berth,
};

/// Berth on the filesystem driver with `tls` (YAML lines indented under
/// `http.tls:`).
pub fn start_tls(tls: &str) -> Berth {
    Berth::start_with(|root, addr| {
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: test-secret\n  tls:\n{tls}"
        )
    })
}

/// `certificate:` and `key:` lines for files in `dir`.
pub fn cert_lines(dir: &Path, cert_pem: &str, key_pem: &str) -> String {
    let cert = write(dir, "server.crt", cert_pem);
    let key = write(dir, "server.key", key_pem);
    format!(
        "    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    )
}

#[test]
fn chain_file_with_intermediate_verifies_against_the_root_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::root("Berth Test Root");
    let inter = root.intermediate("Berth Test Intermediate");
    let leaf = inter.server(&["127.0.0.1", "localhost"]);

    // Leaf then intermediate in one file, as distribution accepts.
    let chain = format!("{}{}", leaf.cert_pem, inter.pem());
    let berth = start_tls(&cert_lines(dir.path(), &chain, &leaf.key_pem));
    let trusting_root = client::config(&[&root.pem()], ANY_VERSION, None);
    let ok = client::get(&berth.addr, "127.0.0.1", trusting_root.clone(), "/v2/")
        .unwrap_or_else(|e| panic!("{e}\n{}", berth.logs()));
    assert_eq!(ok.status, "HTTP/1.1 200 OK");
    assert_eq!(ok.chain.len(), 2, "leaf and intermediate are both sent");
    assert_eq!(ok.chain[0], leaf.der);
    assert_eq!(ok.chain[1], inter.cert.der().to_vec());

    // The same leaf without its intermediate cannot be verified from the
    // root: the chain file is what makes it work.
    let dir2 = tempfile::tempdir().unwrap();
    let bare = start_tls(&cert_lines(dir2.path(), &leaf.cert_pem, &leaf.key_pem));
    let err = client::get(&bare.addr, "127.0.0.1", trusting_root, "/v2/").unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn http2_is_negotiated_by_alpn_and_http1_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::root("Berth Test Root");
    let leaf = root.server(&["127.0.0.1"]);
    let berth = start_tls(&cert_lines(dir.path(), &leaf.cert_pem, &leaf.key_pem));
    let url = berth.https_url("/v2/");
    block_on(async {
        let h2 = client::reqwest_client(&root.pem()).build().unwrap();
        let r = h2.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.version(), Version::HTTP_2);

        let h1 = client::reqwest_client(&root.pem())
            .http1_only()
            .build()
            .unwrap();
        let r = h1.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.version(), Version::HTTP_11);

        // Plain HTTP on the TLS port gets no HTTP answer.
        let plain = crate::common::http::client();
        assert!(plain.get(berth.url("/v2/")).send().await.is_err());
    });
}

#[test]
fn location_urls_are_https_and_usable() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::root("Berth Test Root");
    let leaf = root.server(&["127.0.0.1"]);
    let berth = start_tls(&cert_lines(dir.path(), &leaf.cert_pem, &leaf.key_pem));
    let base = format!("https://{}/v2/", berth.addr);
    block_on(async {
        let c = client::reqwest_client(&root.pem()).build().unwrap();
        let r = c
            .post(berth.https_url("/v2/tls/app/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let upload = r.headers()["location"].to_str().unwrap().to_string();
        assert!(upload.starts_with(&base), "{upload}");

        // Finish the upload at that URL; the blob's Location is https too.
        let blob = b"over tls".to_vec();
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blob)));
        let r = c
            .put(format!("{upload}&digest={digest}"))
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let at = r.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(at, format!("{base}tls/app/blobs/{digest}"));
        let got = c.get(&at).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().to_vec(), blob);

        // A proxy's X-Forwarded-Proto still wins.
        let r = c
            .post(berth.https_url("/v2/tls/app/blobs/uploads/"))
            .header("x-forwarded-proto", "http")
            .send()
            .await
            .unwrap();
        let loc = r.headers()["location"].to_str().unwrap();
        assert!(loc.starts_with("http://"), "{loc}");
    });
}

#[test]
fn minimum_tls13_refuses_a_tls12_only_client() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::root("Berth Test Root");
    let leaf = root.server(&["127.0.0.1"]);
    let files = cert_lines(dir.path(), &leaf.cert_pem, &leaf.key_pem);
    let strict = start_tls(&format!("{files}    minimumtls: tls1.3\n"));
    let default = start_tls(&files);

    let tls12 = client::config(&[&root.pem()], TLS12_ONLY, None);
    let err = client::get(&strict.addr, "127.0.0.1", tls12.clone(), "/v2/").unwrap_err();
    assert!(err.contains("ProtocolVersion"), "{err}");
    let ok = client::get(
        &strict.addr,
        "127.0.0.1",
        client::config(&[&root.pem()], ANY_VERSION, None),
        "/v2/",
    )
    .unwrap();
    assert_eq!(ok.version, Some(ProtocolVersion::TLSv1_3));

    // The default (tls1.2) lets the same client in.
    let ok = client::get(&default.addr, "127.0.0.1", tls12, "/v2/").unwrap();
    assert_eq!(ok.status, "HTTP/1.1 200 OK");
    assert_eq!(ok.version, Some(ProtocolVersion::TLSv1_2));
}

#[test]
fn replaced_certificate_files_are_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::root("Berth Test Root");
    let first = root.server(&["127.0.0.1"]);
    let berth = start_tls(&cert_lines(dir.path(), &first.cert_pem, &first.key_pem));
    let trusting = client::config(&[&root.pem()], ANY_VERSION, None);
    let served = || {
        client::get(&berth.addr, "127.0.0.1", trusting.clone(), "/v2/")
            .unwrap()
            .chain[0]
            .clone()
    };
    assert_eq!(served(), first.der);

    let second = root.server(&["127.0.0.1"]);
    cert_lines(dir.path(), &second.cert_pem, &second.key_pem);
    let deadline = Instant::now() + Duration::from_secs(30);
    while served() != second.der {
        assert!(
            Instant::now() < deadline,
            "new certificate not served after 30s:\n{}",
            berth.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(berth.logs().contains("reloaded"), "{}", berth.logs());
}

#[test]
fn sigterm_drains_an_in_flight_request_then_exits() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let root = Ca::root("Berth Test Root");
    let leaf = root.server(&["127.0.0.1"]);
    let mut berth = start_tls(&cert_lines(dir.path(), &leaf.cert_pem, &leaf.key_pem));
    let upload = block_on(async {
        let c = client::reqwest_client(&root.pem()).build().unwrap();
        let r = c
            .post(berth.https_url("/v2/drain/app/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        loc[loc.find("/v2/").unwrap()..].to_string()
    });

    let mut config = client::config(&[&root.pem()], ANY_VERSION, None);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let status = block_on(async {
        let tcp = tokio::net::TcpStream::connect(&berth.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        // The request must be in the handler (reading its body) before the
        // signal: bytes still in the socket buffer are a connection that
        // has not started a request, which a drain may close. hyper sends
        // `100 Continue` when the handler first reads the body, so wait
        // for it, then send half the body.
        let head = format!(
            "PATCH {upload} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
            berth.addr
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        let mut interim = Vec::new();
        let mut buf = [0u8; 1024];
        while !interim.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf))
                .await
                .expect("100 Continue in time")
                .unwrap();
            assert!(n > 0, "closed before 100 Continue:\n{}", berth.logs());
            interim.extend_from_slice(&buf[..n]);
        }
        assert!(
            interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
            "{}",
            String::from_utf8_lossy(&interim)
        );
        // Half a body in flight when the signal arrives.
        tls.write_all(b"12345").await.unwrap();
        tls.flush().await.unwrap();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &berth.child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !berth.logs().contains("shutting down") {
            assert!(Instant::now() < deadline, "no shutdown:\n{}", berth.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tls.write_all(b"67890").await.unwrap();
        let mut response = Vec::new();
        while !response.windows(2).any(|w| w == b"\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf))
                .await
                .expect("response in time")
                .unwrap();
            assert!(n > 0, "closed without a response:\n{}", berth.logs());
            response.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap()
            .to_string()
    });
    assert_eq!(status, "HTTP/1.1 202 Accepted", "{}", berth.logs());

    // Then the process ends by itself, successfully.
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = berth.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            berth.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}:\n{}", berth.logs());
}

/// `berth healthcheck` speaks TLS when the config does, without insisting the
/// certificate names the loopback address it asks.
#[test]
fn healthcheck_command_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = Ca::root("Berth Test Root").server(&["registry.example.com"]);
    let berth = start_tls(&cert_lines(dir.path(), &leaf.cert_pem, &leaf.key_pem));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("healthcheck")
        .arg(berth.log.with_file_name("config.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", berth.logs());
    assert!(
        berth.logs().contains("/health/storage"),
        "the probe reached the TLS listener: {}",
        berth.logs()
    );
}
