//! Azurite, Microsoft's Blob storage emulator (npm `azurite`), on a free
//! 127.0.0.1 port with a throwaway workspace; killed on drop.
//!
//! `tests/run.sh` installs it into `~/.cache/berth/azurite` (outside the
//! checkout); `BERTH_AZURITE` may name another `azurite-blob` executable.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::free_port;

/// Azurite's well-known development account and key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    pub port: u16,
    /// "http", or "https" when started with a certificate.
    scheme: &'static str,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The `azurite-blob` executable, or a panic saying how to install it.
pub fn executable() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_AZURITE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let p = PathBuf::from(home).join(".cache/berth/azurite/node_modules/.bin/azurite-blob");
    assert!(
        p.exists(),
        "Azurite is not installed at {}: run tests/run.sh, or \
         npm install --prefix \"$HOME/.cache/berth/azurite\" azurite@3.37.0",
        p.display()
    );
    p
}

impl Azurite {
    /// Start on plain HTTP and wait (bounded) until it accepts connections.
    pub fn start() -> Azurite {
        Self::launch(None, false)
    }

    /// Start on HTTPS with `cert`/`key` (PEM files) and Entra ID (OAuth)
    /// bearer tokens accepted (`--oauth basic`: issuer, audience and lifetime
    /// are checked, the token's signature is not), which Azurite allows only
    /// over HTTPS. Shared-key requests still work. Requests are logged, one
    /// line each, in `logs()`.
    pub fn start_oauth(cert: &Path, key: &Path) -> Azurite {
        Self::launch(Some((cert, key)), true)
    }

    fn launch(tls: Option<(&Path, &Path)>, access_log: bool) -> Azurite {
        let exe = executable();
        let mut last_log = String::new();
        // A port taken between `free_port` and Azurite's bind: try another.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let log = dir.path().join("azurite.log");
            let mut cmd = Command::new(&exe);
            if let Some((cert, key)) = tls {
                cmd.args(["--oauth", "basic", "--cert"])
                    .arg(cert)
                    .arg("--key")
                    .arg(key);
            }
            let child = cmd
                .args(["--blobHost", "127.0.0.1", "--blobPort"])
                .arg(port.to_string())
                .arg("--location")
                .arg(dir.path().join("data"))
                .args(["--loose", "--skipApiVersionCheck", "--disableTelemetry"])
                // Its access log (one line per request) goes to `logs()`.
                .args((!access_log).then_some("--silent"))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::from(
                    std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
                ))
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
            let mut a = Azurite {
                child,
                port,
                scheme: if tls.is_some() { "https" } else { "http" },
                log,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = a.child.try_wait() {
                    break; // exited: report, maybe retry
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return a;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last_log = a.logs();
            // Dropping `a` kills it.
        }
        panic!("Azurite did not start: {last_log}");
    }

    /// `serviceurl` for the driver: path-style, account in the path.
    pub fn service_url(&self) -> String {
        format!("{}://127.0.0.1:{}/{ACCOUNT}", self.scheme, self.port)
    }

    /// A `storage.azure` section (indented for `storage:`) for this emulator.
    pub fn yaml(&self, container: &str, root: &str) -> String {
        format!(
            "  azure:\n    accountname: {ACCOUNT}\n    accountkey: {KEY}\n    container: {container}\n    serviceurl: {}\n    rootdirectory: {root}\n",
            self.service_url()
        )
    }

    /// Driver settings for this emulator, through Berth's own config loader.
    pub fn settings(&self, container: &str, root: &str) -> berth::config::azure::AzureSettings {
        // The driver's reqwest takes the process-default provider (ring),
        // which `main` installs in the server and a test installs itself.
        berth::config::tls::install_default_provider();
        let cfg =
            berth::config::Config::from_yaml(&format!("storage:\n{}", self.yaml(container, root)))
                .unwrap();
        match cfg.storage.driver().unwrap() {
            berth::config::StorageDriverConfig::Azure(s) => *s,
            other => panic!("not azure: {other:?}"),
        }
    }

    /// A driver on `container` (created if missing) under `root`.
    pub async fn driver(&self, container: &str, root: &str) -> berth::storage::azure::AzureDriver {
        let d = berth::storage::azure::AzureDriver::new(&self.settings(container, root)).unwrap();
        d.create_container().await.unwrap();
        d
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
