//! HTTPS for [`serve`](super::serve): the rustls configuration (ring
//! provider, minimum version, client certificates, ALPN for HTTP/2 and
//! ACME's tls-alpn-01) and the certificate it serves, reloaded when its
//! files change. The handshakes themselves happen in the shared accept loop
//! ([`listener`](super::listener)), through tokio-rustls.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    version::{TLS12, TLS13},
    RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::acme;
use crate::config::tls::{crypto_provider, MinimumTls, TlsConfig};

/// How often the certificate and key files are checked for a change. A stat
/// of two files: cheap, and a renewed certificate is served within seconds.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// The acceptor for `http.tls`, and the certificate reload that keeps it
/// current for as long as this lives.
pub(super) struct Tls {
    pub acceptor: TlsAcceptor,
    reload: Option<JoinHandle<()>>,
}

impl Drop for Tls {
    fn drop(&mut self) {
        if let Some(task) = &self.reload {
            task.abort();
        }
    }
}

pub(super) fn start(tls: &TlsConfig) -> anyhow::Result<Tls> {
    let mut reload = None;
    let resolver: Arc<dyn ResolvesServerCert> = if tls.letsencrypt.enabled() {
        acme::start(&tls.letsencrypt)?
    } else {
        let files = Arc::new(FileCertResolver::new(tls)?);
        reload = Some(tokio::spawn(watch_files(tls.clone(), files.clone())));
        files
    };
    let config = server_config(tls, resolver)?;
    tracing::info!(
        minimum = ?tls.minimum().map_err(anyhow::Error::msg)?,
        client_certificates = !tls.clientcas.is_empty(),
        letsencrypt = tls.letsencrypt.enabled(),
        "TLS on"
    );
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        reload,
    })
}

/// The rustls configuration for `tls`, serving what `resolver` picks.
fn server_config(
    tls: &TlsConfig,
    resolver: Arc<dyn ResolvesServerCert>,
) -> anyhow::Result<ServerConfig> {
    let versions: &[&SupportedProtocolVersion] = match tls.minimum().map_err(anyhow::Error::msg)? {
        MinimumTls::Tls12 => &[&TLS13, &TLS12],
        MinimumTls::Tls13 => &[&TLS13],
    };
    let builder =
        ServerConfig::builder_with_provider(crypto_provider()).with_protocol_versions(versions)?;
    let builder = if tls.clientcas.is_empty() {
        builder.with_no_client_auth()
    } else {
        // distribution's RequireAndVerifyClientCert: no certificate, or one
        // from another CA, fails the handshake.
        let mut roots = RootCertStore::empty();
        for ca in tls.client_roots().map_err(anyhow::Error::msg)? {
            roots.add(ca)?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if tls.letsencrypt.enabled() {
        // tls-alpn-01: the ACME server's validation connects with this
        // protocol and gets the challenge certificate from the resolver.
        config
            .alpn_protocols
            .push(rustls_acme::acme::ACME_TLS_ALPN_NAME.to_vec());
    }
    Ok(config)
}

/// `http.tls.certificate` and `http.tls.key`, replaced when the files change
/// so a renewed certificate needs no restart.
#[derive(Debug)]
struct FileCertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl FileCertResolver {
    fn new(tls: &TlsConfig) -> anyhow::Result<Self> {
        let key = tls.certified_key().map_err(anyhow::Error::msg)?;
        Ok(FileCertResolver {
            current: RwLock::new(Arc::new(key)),
        })
    }
}

impl ResolvesServerCert for FileCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

/// Modification time and size of the certificate and key files.
fn stamp(tls: &TlsConfig) -> Stamp {
    [&tls.certificate, &tls.key]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// Reload the certificate whenever its files change. A pair that does not
/// load (e.g. the certificate rewritten, the key not yet) keeps the previous
/// one in service, with a warning; the next change is tried again.
async fn watch_files(tls: TlsConfig, resolver: Arc<FileCertResolver>) {
    let mut seen = stamp(&tls);
    let mut tick = tokio::time::interval(RELOAD_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp(&tls);
        if now == seen {
            continue;
        }
        seen = now;
        let loaded = {
            let tls = tls.clone();
            tokio::task::spawn_blocking(move || tls.certified_key()).await
        };
        match loaded {
            Ok(Ok(key)) => {
                *resolver.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                tracing::info!(certificate = %tls.certificate, "TLS certificate reloaded");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "TLS certificate not reloaded: serving the previous one")
            }
            Err(e) => tracing::warn!(error = %e, "TLS certificate reload failed"),
        }
    }
}
