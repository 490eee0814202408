//! Local S3 servers for the S3 driver tests, on 127.0.0.1, killed on drop:
//! Garage (an S3 store run in production by self-hosters: the main one),
//! s3s-fs (checks SigV4 signatures strictly; keys are files under a temp
//! dir) and moto's server (a third implementation). `tests/run.sh`
//! installs all three.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{free_port, wait_for_port};

pub const ACCESS_KEY: &str = "berth-test-key";
pub const SECRET_KEY: &str = "berth-test-secret";

/// Garage wants its own key formats: `GK` and 24 hex digits, a 64-digit
/// hex secret.
const GARAGE_ACCESS_KEY: &str = "GK0b3e7a2c9d4f1e6a8b5c7d2e";
const GARAGE_SECRET_KEY: &str = "5f1c0e9d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e";

pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub bucket: String,
    pub kind: &'static str,
    pub access_key: &'static str,
    pub secret_key: &'static str,
    /// s3s-fs's storage root (`<root>/<bucket>/<key>`); moto keeps memory.
    pub root: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// `name` from PATH, else from `~/.cargo/bin` or the Python user scripts.
fn program(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }) {
        return p;
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    for dir in [home.join(".cargo/bin"), home.join(".local/bin")] {
        if dir.join(name).is_file() {
            return dir.join(name);
        }
    }
    panic!("{name} is not installed: run tests/run.sh, which installs it");
}

/// Garage from tests/run.sh's cache, else from PATH.
pub fn garage_program() -> PathBuf {
    let cached = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/berth/garage/bin/garage");
    if cached.is_file() {
        cached
    } else {
        program("garage")
    }
}

/// moto 5.2 answers some operations with `<OpResponse>` XML roots the AWS
/// SDK rejects; tests/run.sh keeps a 5.1 in its own virtualenv.
fn moto_server() -> PathBuf {
    let venv = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/berth/moto/bin/moto_server");
    if venv.is_file() {
        venv
    } else {
        program("moto_server")
    }
}

/// One raw HTTP/1.1 request; the status code, or None if nothing answered.
fn http_status(addr: &str, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

impl S3Server {
    /// s3s-fs with SigV4 checking; the bucket is a directory made beforehand.
    pub fn s3s_fs() -> S3Server {
        Self::s3s_fs_in(&std::env::temp_dir())
    }

    /// s3s-fs keeping its bucket under `parent` (a tmpfs for tests that
    /// write tens of thousands of objects: removing them from a busy disk
    /// takes minutes).
    pub fn s3s_fs_in(parent: &std::path::Path) -> S3Server {
        let dir = tempfile::tempdir_in(parent).unwrap();
        let root = dir.path().join("data");
        let bucket = "berth".to_string();
        std::fs::create_dir_all(root.join(&bucket)).unwrap();
        let port = free_port();
        let log = dir.path().join("s3s-fs.log");
        let child = Command::new(program("s3s-fs"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn s3s-fs");
        Self::ready(child, port, bucket, "s3s-fs", root, log, dir, |_| true)
    }

    /// moto's server; the bucket is created with one unsigned PUT (moto does
    /// not check signatures unless asked to).
    pub fn moto() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("moto.log");
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn moto_server");
        let bucket = "berth".to_string();
        let root = dir.path().to_path_buf();
        Self::ready(child, port, bucket, "moto", root, log, dir, |s| {
            matches!(
                http_status(
                    &s.endpoint["http://".len()..],
                    "PUT",
                    &format!("/{}", s.bucket)
                ),
                Some(200)
            )
        })
    }

    /// Garage, one node (`server --single-node --default-bucket` lays out
    /// the node and makes the bucket and its key from the environment).
    /// The binary is the one tests/run.sh builds into ~/.cache/berth/garage.
    pub fn garage() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("garage");
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{root}/meta\"\n\
                 data_dir = \"{root}/data\"\n\
                 db_engine = \"lmdb\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{GARAGE_SECRET_KEY}\"\n\
                 [s3_api]\n\
                 s3_region = \"us-east-1\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n\
                 [admin]\n\
                 api_bind_addr = \"127.0.0.1:{admin}\"\n",
                root = root.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("garage.log");
        let bucket = "berth".to_string();
        let child = Command::new(garage_program())
            .arg("-c")
            .arg(&config)
            .args([
                "server",
                "--single-node",
                "--default-access-key",
                "--default-bucket",
            ])
            .env("GARAGE_DEFAULT_ACCESS_KEY", GARAGE_ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", GARAGE_SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", &bucket)
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn garage");
        let mut server = Self::ready(child, s3, bucket, "garage", root, log, dir, |_| {
            // Ready once its bucket exists (made just after the layout).
            Command::new(garage_program())
                .arg("-c")
                .arg(&config)
                .args(["bucket", "info", "berth"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        server.access_key = GARAGE_ACCESS_KEY;
        server.secret_key = GARAGE_SECRET_KEY;
        server
    }

    #[allow(clippy::too_many_arguments)]
    fn ready(
        child: Child,
        port: u16,
        bucket: String,
        kind: &'static str,
        root: PathBuf,
        log: PathBuf,
        dir: tempfile::TempDir,
        setup: impl Fn(&S3Server) -> bool,
    ) -> S3Server {
        let addr = format!("127.0.0.1:{port}");
        let server = S3Server {
            child,
            endpoint: format!("http://{addr}"),
            bucket,
            kind,
            access_key: ACCESS_KEY,
            secret_key: SECRET_KEY,
            root,
            log,
            _dir: dir,
        };
        let up = wait_for_port(&addr, Duration::from_secs(30)) && {
            // The port may open before requests are served: poll, bounded.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if setup(&server) {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        assert!(up, "{kind} did not start: {}", server.logs());
        server
    }

    /// Parts of unfinished multipart uploads in the bucket. s3s-fs keeps
    /// them as `.upload_id-*` files in its root and has no
    /// ListMultipartUploads; the others are asked through the S3 API.
    pub async fn pending_parts(&self) -> usize {
        if self.kind == "s3s-fs" {
            return std::fs::read_dir(&self.root)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".upload_id-")
                })
                .count();
        }
        let c = self.client();
        let uploads = c
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
            .unwrap();
        let mut n = 0;
        for u in uploads.uploads() {
            let parts = c
                .list_parts()
                .bucket(&self.bucket)
                .key(u.key().unwrap())
                .upload_id(u.upload_id().unwrap())
                .send()
                .await
                .unwrap();
            n += parts.parts().len();
        }
        n
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The driver configuration for this server, under `rootdirectory`.
    pub fn config(&self, rootdirectory: &str) -> berth::config::S3Config {
        berth::config::S3Config {
            region: "us-east-1".into(),
            bucket: self.bucket.clone(),
            regionendpoint: self.endpoint.clone(),
            forcepathstyle: true,
            accesskey: self.access_key.into(),
            secretkey: self.secret_key.into(),
            rootdirectory: rootdirectory.into(),
            ..Default::default()
        }
    }

    /// A `storage.s3` YAML section (indented for `storage:`) for `berth`.
    pub fn yaml(&self, rootdirectory: &str) -> String {
        format!(
            "  s3:\n    region: us-east-1\n    bucket: {}\n    regionendpoint: {}\n    forcepathstyle: true\n    accesskey: {}\n    secretkey: {}\n    rootdirectory: {rootdirectory}\n",
            self.bucket, self.endpoint, self.access_key, self.secret_key
        )
    }

    /// A raw SDK client, to look behind the driver.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let cfg = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(berth::storage::s3::http_client())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                self.access_key,
                self.secret_key,
                None,
                None,
                "test",
            ))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(cfg)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
