//! `http.tls` — distribution's keys: a certificate and key (or Let's Encrypt),
//! client CAs for mutual TLS and the minimum protocol version. TLS is on when
//! `certificate` or `letsencrypt.cachefile` is set, as in distribution.
//!
//! The files are read and parsed here, at load, so a wrong path or a broken
//! PEM is a configuration error naming the key (exit code 2) rather than a
//! failure at the first handshake; the server reads them through the same
//! functions.

use std::{path::Path, sync::Arc};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};
use serde::{Deserialize, Deserializer, Serialize};

/// Let's Encrypt's production directory: distribution's default (autocert's).
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the leaf certificate first, then any intermediates.
    pub certificate: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// CA files; when any is given every client must present a certificate
    /// issued by one of them.
    #[serde(deserialize_with = "one_or_many")]
    pub clientcas: Vec<String>,
    /// "tls1.2" (default) or "tls1.3".
    pub minimumtls: String,
    pub letsencrypt: LetsEncryptConfig,
    /// distribution's; refused while set (see `compat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphersuites: super::compat::Tolerated,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LetsEncryptConfig {
    /// Where the ACME account key and the certificates are kept (one file).
    pub cachefile: String,
    /// Contact address given to the ACME server.
    pub email: String,
    /// The names the certificate is ordered for.
    #[serde(deserialize_with = "one_or_many")]
    pub hosts: Vec<String>,
    /// ACME directory; Let's Encrypt production when empty.
    pub directoryurl: String,
}

/// The lowest protocol version the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinimumTls {
    Tls12,
    Tls13,
}

/// A list, or one string for a one-element list: a single
/// `REGISTRY_HTTP_TLS_CLIENTCAS=/ca.pem` arrives as a string.
pub(crate) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) if s.is_empty() => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

impl LetsEncryptConfig {
    pub fn enabled(&self) -> bool {
        !self.cachefile.is_empty()
    }

    pub fn directory(&self) -> &str {
        if self.directoryurl.is_empty() {
            LETS_ENCRYPT_DIRECTORY
        } else {
            &self.directoryurl
        }
    }
}

/// The crypto every TLS connection of the process uses: ring, the only
/// rustls provider compiled in (deny.toml bans aws-lc-rs, so a dependency's
/// default TLS feature cannot bring a second one back unnoticed).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Make ring the process-wide default provider; `main` does this before
/// anything else. reqwest 0.13 without aws-lc is built with
/// `rustls-no-provider` and takes the process default, so every reqwest
/// client (webhooks, health checks, the Azure driver, OTLP export) needs it;
/// a program using the library (a test) calls this once too. Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TlsConfig {
    /// Whether the listener speaks TLS at all.
    pub fn enabled(&self) -> bool {
        !self.certificate.is_empty() || self.letsencrypt.enabled()
    }

    pub fn minimum(&self) -> Result<MinimumTls, String> {
        match self.minimumtls.as_str() {
            "" | "tls1.2" => Ok(MinimumTls::Tls12),
            "tls1.3" => Ok(MinimumTls::Tls13),
            other => Err(format!(
                "http.tls.minimumtls: {other:?} is not supported (one of tls1.2, tls1.3)"
            )),
        }
    }

    /// `certificate` and `key` as a served certificate: the chain in file
    /// order, with the key checked against the leaf.
    pub fn certified_key(&self) -> Result<CertifiedKey, String> {
        let chain = read_certs("http.tls.certificate", &self.certificate)?;
        if self.key.is_empty() {
            return Err("http.tls.key: required with http.tls.certificate".into());
        }
        let bytes = read("http.tls.key", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| format!("http.tls.key: no private key in {} ({e})", self.key))?;
        CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(|e| {
            format!(
                "http.tls.key: {} does not fit http.tls.certificate {} ({e})",
                self.key, self.certificate
            )
        })
    }

    /// Every CA certificate in every `clientcas` file.
    pub fn client_roots(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let mut roots = Vec::new();
        for path in &self.clientcas {
            roots.extend(read_certs("http.tls.clientcas", path)?);
        }
        Ok(roots)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        self.minimum()?;
        let le = &self.letsencrypt;
        if !self.enabled() {
            // Plain HTTP with TLS settings present is almost surely a mistake;
            // with clientcas it would silently drop the client check.
            if !self.key.is_empty() {
                return Err("http.tls.certificate: required when http.tls.key is set".into());
            }
            if !self.clientcas.is_empty() {
                return Err("http.tls.clientcas: needs http.tls.certificate or \
                            http.tls.letsencrypt.cachefile (TLS is off)"
                    .into());
            }
            return Ok(());
        }
        if !self.certificate.is_empty() && le.enabled() {
            return Err(
                "http.tls.letsencrypt: cannot be combined with http.tls.certificate".into(),
            );
        }
        if self.certificate.is_empty() {
            validate_letsencrypt(le)?;
            if !self.clientcas.is_empty() {
                // The ACME server's tls-alpn-01 check presents no client
                // certificate, so renewals would fail.
                return Err("http.tls.clientcas: cannot be combined with \
                            http.tls.letsencrypt (the ACME validation has no client certificate)"
                    .into());
            }
        } else {
            self.certified_key()?;
        }
        self.client_roots()?;
        Ok(())
    }
}

fn validate_letsencrypt(le: &LetsEncryptConfig) -> Result<(), String> {
    if le.hosts.is_empty() {
        return Err(
            "http.tls.letsencrypt.hosts: required with http.tls.letsencrypt \
                    (the names to order a certificate for)"
                .into(),
        );
    }
    match url::Url::parse(le.directory()) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        _ => {
            return Err(format!(
                "http.tls.letsencrypt.directoryurl: {:?} is not an http(s) URL",
                le.directory()
            ))
        }
    }
    // The file itself may not exist yet (first start); its directory must.
    let cache = Path::new(&le.cachefile);
    if cache.exists() {
        read("http.tls.letsencrypt.cachefile", &le.cachefile)?;
    } else {
        let dir = cache
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "http.tls.letsencrypt.cachefile: directory {} does not exist",
                dir.display()
            ));
        }
    }
    Ok(())
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key}: cannot read {path}: {e}"))
}

/// The certificates of a PEM file, in order; at least one.
fn read_certs(key: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key}: {path} is not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{key}: no certificate in {path}"));
    }
    Ok(certs)
}
