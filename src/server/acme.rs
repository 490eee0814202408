//! `http.tls.letsencrypt`: certificates ordered and renewed over ACME by
//! rustls-acme (tls-alpn-01 on the registry's own port, like distribution's
//! autocert), kept in distribution's single `cachefile`.
//!
//! rustls-acme is a maintained crate that does the whole job: account,
//! order, tls-alpn-01 answers through its certificate resolver, renewal a
//! third of the lifetime before expiry, and backoff after failures. It only
//! has to be polled, which the task spawned here does.
//!
//! The ACME directory's own HTTPS certificate is checked against the system
//! trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured, as with Go).

use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::PathBuf,
    sync::Arc,
};

use async_trait::async_trait;
use base64::{engine::general_purpose::STANDARD, Engine};
use futures::StreamExt;
use rustls::{ClientConfig, RootCertStore};
use rustls_acme::{AccountCache, AcmeConfig, CertCache, ResolvesServerCertAcme};
use serde::{Deserialize, Serialize};

use crate::config::tls::{crypto_provider, LetsEncryptConfig};

/// Start ordering (or load from the cache) and keep renewing; the returned
/// resolver serves the current certificate and the tls-alpn-01 answers.
pub(super) fn start(le: &LetsEncryptConfig) -> anyhow::Result<Arc<ResolvesServerCertAcme>> {
    let contact = (!le.email.is_empty()).then(|| format!("mailto:{}", le.email));
    let mut state = AcmeConfig::new_with_client_config(&le.hosts, Arc::new(acme_client()?))
        .directory(le.directory())
        .contact(contact)
        .cache(FileCache {
            path: PathBuf::from(&le.cachefile),
            lock: tokio::sync::Mutex::new(()),
        })
        .state();
    let resolver = state.resolver();
    tracing::info!(hosts = ?le.hosts, directory = le.directory(), "letsencrypt: starting");
    // rustls-acme retries with backoff after an error; every event is logged.
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(event = ?ok, "letsencrypt"),
                Err(err) => tracing::warn!(error = %err, "letsencrypt"),
            }
        }
    });
    Ok(resolver)
}

/// The HTTPS client config for talking to the ACME directory.
fn acme_client() -> anyhow::Result<ClientConfig> {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "letsencrypt: reading the system trust store");
    }
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        anyhow::bail!(
            "http.tls.letsencrypt: no trusted CA certificates found on this system \
             (install ca-certificates or set SSL_CERT_FILE)"
        );
    }
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// distribution's `cachefile`: one file holding the account keys and the
/// certificates (key + chain PEM), each under the directory URL and names
/// (or contacts) it belongs to. JSON, base64 values; written whole to a
/// temporary file and renamed, mode 0600 since it holds private keys.
struct FileCache {
    path: PathBuf,
    /// Serialises read-modify-write of the one file.
    lock: tokio::sync::Mutex<()>,
}

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    #[serde(default)]
    accounts: BTreeMap<String, String>,
    #[serde(default)]
    certs: BTreeMap<String, String>,
}

fn entry_key(directory_url: &str, names: &[String]) -> String {
    format!("{directory_url} {}", names.join(","))
}

impl FileCache {
    async fn load(&self) -> io::Result<CacheFile> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) if bytes.is_empty() => Ok(CacheFile::default()),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(CacheFile::default()),
            Err(e) => Err(e),
        }
    }

    async fn get(
        &self,
        pick: fn(&CacheFile) -> &BTreeMap<String, String>,
        key: String,
    ) -> io::Result<Option<Vec<u8>>> {
        let _guard = self.lock.lock().await;
        let file = self.load().await?;
        pick(&file)
            .get(&key)
            .map(|v| STANDARD.decode(v))
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn put(
        &self,
        pick: fn(&mut CacheFile) -> &mut BTreeMap<String, String>,
        key: String,
        value: &[u8],
    ) -> io::Result<()> {
        let _guard = self.lock.lock().await;
        let mut file = self.load().await?;
        pick(&mut file).insert(key, STANDARD.encode(value));
        let bytes = serde_json::to_vec_pretty(&file)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_private(&path, &bytes)).await?
    }
}

/// Replace `path` atomically with `bytes`, readable by the owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[async_trait]
impl CertCache for FileCache {
    type EC = io::Error;
    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        self.get(|f| &f.certs, entry_key(directory_url, domains))
            .await
    }
    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> io::Result<()> {
        self.put(|f| &mut f.certs, entry_key(directory_url, domains), cert)
            .await
    }
}

#[async_trait]
impl AccountCache for FileCache {
    type EA = io::Error;
    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        self.get(|f| &f.accounts, entry_key(directory_url, contact))
            .await
    }
    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> io::Result<()> {
        self.put(
            |f| &mut f.accounts,
            entry_key(directory_url, contact),
            account,
        )
        .await
    }
}
