//! The same bounds on every listener: plain HTTP/2 (h2c), HTTPS (HTTP/1.1
//! and h2 by ALPN, the connection cap) and the debug (metrics) listener.

use std::{
    path::Path,
    sync::{atomic::AtomicUsize, Arc},
    time::Duration,
};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::{
    h2,
    support::{self, Ended},
};
use crate::{
    common::{
        free_port,
        pki::{write, Ca},
        Berth,
    },
    tls_client,
};

const LIMIT: Duration = Duration::from_secs(120);

/// Berth over TLS with `http` lines added; the CA its certificate is from.
fn start_tls(dir: &Path, http: &str) -> (Berth, Ca) {
    let ca = Ca::root("Berth Test Root");
    let leaf = ca.server(&["127.0.0.1"]);
    let cert = write(dir, "server.crt", &leaf.cert_pem);
    let key = write(dir, "server.key", &leaf.key_pem);
    let tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    );
    let berth =
        Berth::start_with(|root, addr| support::config(root, addr, &format!("{http}{tls}")));
    (berth, ca)
}

/// A TLS connection offering `alpn`, or the handshake's error.
async fn connect_tls(
    addr: &str,
    ca: &Ca,
    alpn: &[u8],
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let mut config = tls_client::config(&[&ca.pem()], tls_client::ANY_VERSION, None);
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_slowloris_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (berth, ca) = start_tls(
        dir.path(),
        "  timeouts:\n    readheader: 2s\n    idle: 2s\n",
    );
    let open = Arc::new(AtomicUsize::new(0));

    let tls = connect_tls(&berth.addr, &ca, b"http/1.1").await.unwrap();
    let ended = support::dribble(tls, Duration::from_millis(500), LIMIT, open.clone()).await;
    assert_eq!(ended, Ended::Closed(String::new()), "slowloris over TLS");

    let mut tls = connect_tls(&berth.addr, &ca, b"http/1.1").await.unwrap();
    let answer = support::get(&mut tls, "/v2/").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let ended = support::read_until_closed(&mut tls, LIMIT).await;
    assert_eq!(
        ended,
        Ended::Closed(String::new()),
        "idle HTTP/1.1 over TLS"
    );

    // h2 by ALPN: answered, then told to go away, then closed.
    let tls = connect_tls(&berth.addr, &ca, b"h2").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let seen = h2::get_then_idle(tls, true, &berth.addr, LIMIT).await;
    assert!(seen.frames.contains(&h2::HEADERS), "{:?}", seen.frames);
    assert!(seen.frames.contains(&h2::GOAWAY), "{:?}", seen.frames);
    assert!(seen.closed, "idle h2 over TLS still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_past_the_cap_are_closed_before_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (berth, ca) = start_tls(
        dir.path(),
        "  maxconnections: 2\n  timeouts:\n    idle: 0\n",
    );
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tls = connect_tls(&berth.addr, &ca, b"http/1.1").await.unwrap();
        let answer = support::get(&mut tls, "/v2/").await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        held.push(tls);
    }
    assert!(
        connect_tls(&berth.addr, &ca, b"http/1.1").await.is_err(),
        "a handshake past the cap"
    );
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut tls) = connect_tls(&berth.addr, &ca, b"http/1.1").await {
            let answer = support::get(&mut tls, "/v2/").await;
            assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot was never used again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_served_and_an_idle_h2c_connection_is_closed() {
    let berth = support::start("  timeouts:\n    readheader: 2s\n    idle: 2s\n");
    let client = crate::common::http::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client.get(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);

    let tcp = TcpStream::connect(&berth.addr).await.unwrap();
    let seen = h2::get_then_idle(tcp, false, &berth.addr, LIMIT).await;
    assert!(seen.frames.contains(&h2::HEADERS), "{:?}", seen.frames);
    assert!(seen.frames.contains(&h2::GOAWAY), "{:?}", seen.frames);
    assert!(seen.closed, "idle h2c still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_listener_closes_slowloris_and_idle_connections() {
    let debug = format!("127.0.0.1:{}", free_port());
    let berth = support::start(&format!(
        "  debug:\n    addr: {debug}\n  timeouts:\n    readheader: 2s\n    idle: 2s\n"
    ));
    let open = Arc::new(AtomicUsize::new(0));
    let tcp = TcpStream::connect(&debug).await.unwrap();
    let ended = support::dribble(tcp, Duration::from_millis(500), LIMIT, open).await;
    assert_eq!(
        ended,
        Ended::Closed(String::new()),
        "slowloris on the debug listener"
    );

    let mut tcp = TcpStream::connect(&debug).await.unwrap();
    let answer = support::get(&mut tcp, "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let ended = support::read_until_closed(&mut tcp, LIMIT).await;
    assert_eq!(
        ended,
        Ended::Closed(String::new()),
        "idle on the debug listener"
    );
    assert!(
        berth.logs().contains("metrics listening"),
        "{}",
        berth.logs()
    );
}
