//! What the S3 runs put behind the registries: an S3 server (Garage, a store
//! run in production, on disk; s3s-fs, on disk and checking SigV4 strictly;
//! or moto, in memory) and redis-server, each a [`Proc`] on a free
//! 127.0.0.1 port with its data under the run's directory.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    http::{drain, Client, ReqBody},
    servers::{free_port, wait_http, Proc},
};

/// In Garage's formats (`GK` + 24 hex digits, a 64-digit hex secret), which
/// the other stores take as any string.
pub const ACCESS_KEY: &str = "GK10ad7e5c0de2b8f4a9c3e6d1";
pub const SECRET_KEY: &str = "0c9f8e7d6c5b4a39281706f5e4d3c2b1a0918273645546372819a0b1c2d3e4f5";
pub const BUCKET: &str = "loadtest";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// Garage, one node: objects in its data directory, metadata in LMDB.
    Garage,
    /// s3s-fs: objects are files, SigV4 is checked.
    S3sFs,
    /// moto's server: objects in memory (Python).
    Moto,
}

impl StoreKind {
    pub fn label(self) -> &'static str {
        match self {
            StoreKind::Garage => "Garage",
            StoreKind::S3sFs => "s3s-fs",
            StoreKind::Moto => "moto",
        }
    }
}

pub struct S3Store {
    pub kind: StoreKind,
    pub addr: SocketAddr,
    /// s3s-fs's data directory (`<data>/<bucket>/<key>`).
    pub data: Option<PathBuf>,
    pub proc: Proc,
}

/// `name` on PATH, else in `~/.cargo/bin` or `~/.local/bin`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
        [home.join(".cargo/bin"), home.join(".local/bin")]
            .into_iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// tests/run.sh builds Garage into `~/.cache/berth/garage`; else PATH.
pub fn find_garage() -> Option<PathBuf> {
    let cached = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/berth/garage/bin/garage");
    if cached.is_file() {
        Some(cached)
    } else {
        find_program("garage")
    }
}

/// tests/run.sh keeps moto 5.1 in its own virtualenv (5.2 answers some
/// operations with XML the AWS SDKs reject); else `moto_server` from PATH.
pub fn find_moto() -> Option<PathBuf> {
    let venv = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/berth/moto/bin/moto_server");
    if venv.is_file() {
        Some(venv)
    } else {
        find_program("moto_server")
    }
}

impl S3Store {
    pub async fn start(kind: StoreKind, bin: Option<&Path>, dir: &Path) -> Result<S3Store> {
        match kind {
            StoreKind::Garage => start_garage(bin, dir).await,
            StoreKind::S3sFs => start_s3s_fs(bin, dir).await,
            StoreKind::Moto => start_moto(bin, dir).await,
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Remove a root directory's objects (s3s-fs only: its files on disk).
    pub fn remove_root(&self, root: &str) {
        if let Some(d) = &self.data {
            let _ = fs::remove_dir_all(d.join(BUCKET).join(root.trim_matches('/')));
        }
    }

    /// The s3s-fs log lines saying an operation is not implemented (why a
    /// client that needs one fails).
    pub fn unimplemented_ops(&self) -> Vec<String> {
        let text = self.proc.log_text();
        let mut ops: Vec<String> = text
            .split("<Message>")
            .skip(1)
            .filter_map(|s| s.split("</Message>").next())
            .filter(|m| m.contains("not implemented"))
            .map(str::to_string)
            .collect();
        ops.sort();
        ops.dedup();
        ops
    }
}

/// One Garage node: `server --single-node --default-bucket` lays out the
/// node and makes the bucket and its key from the environment; ready once
/// `garage bucket info` finds the bucket.
async fn start_garage(bin: Option<&Path>, dir: &Path) -> Result<S3Store> {
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => find_garage().context("garage not found (tests/run.sh builds it)")?,
    };
    let dir = dir.join("garage");
    fs::create_dir_all(&dir)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let rpc = free_port()?;
    let config = dir.join("garage.toml");
    fs::write(
        &config,
        format!(
            "metadata_dir = \"{d}/meta\"\n\
             data_dir = \"{d}/data\"\n\
             db_engine = \"lmdb\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{SECRET_KEY}\"\n\
             [s3_api]\n\
             s3_region = \"us-east-1\"\n\
             api_bind_addr = \"{addr}\"\n",
            d = dir.display()
        ),
    )?;
    let mut cmd = Command::new(&bin);
    cmd.arg("-c")
        .arg(&config)
        .args([
            "server",
            "--single-node",
            "--default-access-key",
            "--default-bucket",
        ])
        .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
        .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
        .env("GARAGE_DEFAULT_BUCKET", BUCKET)
        .env("RUST_LOG", "garage=warn");
    let mut proc = Proc::spawn(
        "garage",
        &mut cmd,
        &dir.join("garage.log"),
        libc::SIGKILL,
        Duration::from_secs(5),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proc.check_running()?;
        let found = tokio::process::Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args(["bucket", "info", BUCKET])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if found {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "garage: no bucket {BUCKET} after 60 s; log:\n{}",
                proc.log_tail(10)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(S3Store {
        kind: StoreKind::Garage,
        addr,
        data: None,
        proc,
    })
}

async fn start_s3s_fs(bin: Option<&Path>, dir: &Path) -> Result<S3Store> {
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => find_program("s3s-fs")
            .context("s3s-fs not found (cargo install s3s-fs, or tests/run.sh)")?,
    };
    let dir = dir.join("s3s-fs");
    let data = dir.join("data");
    fs::create_dir_all(data.join(BUCKET))?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut cmd = Command::new(bin);
    cmd.args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(&data)
        .env("RUST_LOG", "warn");
    let mut proc = Proc::spawn(
        "s3s-fs",
        &mut cmd,
        &dir.join("s3s-fs.log"),
        libc::SIGKILL,
        Duration::from_secs(5),
    )?;
    wait_http(&mut proc, addr, "/", |_| true, Duration::from_secs(30)).await?;
    Ok(S3Store {
        kind: StoreKind::S3sFs,
        addr,
        data: Some(data),
        proc,
    })
}

async fn start_moto(bin: Option<&Path>, dir: &Path) -> Result<S3Store> {
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => find_moto().context("moto_server not found (tests/run.sh installs it)")?,
    };
    let dir = dir.join("moto");
    fs::create_dir_all(&dir)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_CA_BUNDLE");
    let mut proc = Proc::spawn(
        "moto",
        &mut cmd,
        &dir.join("moto.log"),
        libc::SIGKILL,
        Duration::from_secs(5),
    )?;
    wait_http(&mut proc, addr, "/", |_| true, Duration::from_secs(60)).await?;
    // moto checks no signature by default: one plain PUT makes the bucket.
    let mut c = Client::new(addr);
    let resp = c
        .send(Method::PUT, &format!("/{BUCKET}"), &[], ReqBody::Empty)
        .await?;
    let status = resp.status();
    drain(resp, None).await?;
    if status != StatusCode::OK {
        bail!("moto: PUT /{BUCKET} answered {status}");
    }
    Ok(S3Store {
        kind: StoreKind::Moto,
        addr,
        data: None,
        proc,
    })
}

/// Debian's redis-server, persistence off.
pub struct Redis {
    pub addr: SocketAddr,
    pub proc: Proc,
}

pub async fn start_redis(dir: &Path, name: &str) -> Result<Redis> {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    start_redis_at(dir, name, addr).await
}

/// An empty redis-server on `addr` (a restart keeps its clients' address),
/// its files in `<dir>/<name>`.
pub async fn start_redis_at(dir: &Path, name: &str, addr: SocketAddr) -> Result<Redis> {
    let dir = dir.join(name);
    fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir);
    let mut proc = Proc::spawn(
        name,
        &mut cmd,
        &dir.join("redis.log"),
        libc::SIGKILL,
        Duration::from_secs(5),
    )
    .context("redis-server (Debian package redis-server)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        proc.check_running()?;
        if ping(addr).await.is_ok() {
            return Ok(Redis { addr, proc });
        }
        if Instant::now() >= deadline {
            bail!(
                "redis-server not answering PING on {addr}; log:\n{}",
                proc.log_tail(10)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ping(addr: SocketAddr) -> Result<()> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await?;
        anyhow::ensure!(&buf == b"+PONG\r\n", "unexpected answer to PING");
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .map_err(|_| anyhow::anyhow!("PING timed out"))?
}
