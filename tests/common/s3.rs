//! Local S3 servers for the S3 driver tests, on 127.0.0.1, killed on drop:
//! s3s-fs (checks SigV4 signatures; keys are files under a temp dir) and
//! moto's server (a second implementation). `tests/run.sh` installs both.

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

pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub bucket: String,
    pub kind: &'static str,
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

    /// Parts of unfinished multipart uploads on s3s-fs, which keeps them as
    /// `.upload_id-*` files in its root (s3s-fs only: moto keeps memory).
    pub fn pending_parts(&self) -> usize {
        std::fs::read_dir(&self.root)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".upload_id-")
            })
            .count()
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
            accesskey: ACCESS_KEY.into(),
            secretkey: SECRET_KEY.into(),
            rootdirectory: rootdirectory.into(),
            ..Default::default()
        }
    }

    /// A `storage.s3` YAML section (indented for `storage:`) for `berth`.
    pub fn yaml(&self, rootdirectory: &str) -> String {
        format!(
            "  s3:\n    region: us-east-1\n    bucket: {}\n    regionendpoint: {}\n    forcepathstyle: true\n    accesskey: {ACCESS_KEY}\n    secretkey: {SECRET_KEY}\n    rootdirectory: {rootdirectory}\n",
            self.bucket, self.endpoint
        )
    }

    /// A raw SDK client, to look behind the driver.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let cfg = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(berth::storage::s3::http_client())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "test",
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
