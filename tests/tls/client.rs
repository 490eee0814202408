//! TLS clients for the tests: a raw rustls connection that reports what the
//! handshake negotiated (or why it failed), and reqwest for HTTP semantics.

use std::{sync::Arc, time::Duration};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    version::{TLS12, TLS13},
    ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::pki::Leaf;

pub use crate::common::http::block_on;

pub const ANY_VERSION: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];
pub const TLS12_ONLY: &[&SupportedProtocolVersion] = &[&TLS12];

/// A rustls client trusting only `roots` (PEM), speaking `versions`, with an
/// optional client certificate.
pub fn config(
    roots: &[&str],
    versions: &[&'static SupportedProtocolVersion],
    identity: Option<&Leaf>,
) -> ClientConfig {
    let mut store = RootCertStore::empty();
    for pem in roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    // Every connection a full handshake: a resumed session would report the
    // certificates of the first one, not what the server serves now.
    config.resumption = rustls::client::Resumption::disabled();
    config
}

/// What one request over a fresh TLS connection saw.
#[derive(Debug)]
pub struct Exchange {
    /// e.g. "HTTP/1.1 200 OK"
    pub status: String,
    pub version: Option<ProtocolVersion>,
    /// The server's chain as sent: leaf first.
    pub chain: Vec<Vec<u8>>,
}

/// Handshake with `addr` as `server_name`, then `GET path` over HTTP/1.1.
/// Err carries the TLS error text: with TLS 1.3 a refused client
/// certificate shows up as an alert on the first read, not at connect.
pub fn get(
    addr: &str,
    server_name: &str,
    config: ClientConfig,
    path: &str,
) -> Result<Exchange, String> {
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let host = server_name.to_string();
    let path = path.to_string();
    block_on(async move {
        let limit = Duration::from_secs(20);
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut tls = tokio::time::timeout(limit, connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, conn) = tls.get_ref();
        let version = conn.protocol_version();
        let chain = conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.to_vec())
            .collect();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        // The status line is all that is needed; stop there rather than
        // depend on how the server closes.
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        while !response.windows(2).any(|w| w == b"\r\n") {
            let n = tokio::time::timeout(limit, tls.read(&mut buf))
                .await
                .map_err(|_| "read timed out".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before a response".into());
            }
            response.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&response);
        Ok(Exchange {
            status: text.lines().next().unwrap_or("").to_string(),
            version,
            chain,
        })
    })
}

/// A reqwest client trusting only `root_pem` (none of the built-in roots).
pub fn reqwest_client(root_pem: &str) -> reqwest::ClientBuilder {
    crate::common::http::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(30))
}
