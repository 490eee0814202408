//! The processes under test and beside it: Berth, distribution, nginx and
//! dockerd. Each runs in its own process group with its output in a log file,
//! dies with this process (PR_SET_PDEATHSIG), and is stopped in `Drop`:
//! SIGTERM, a bounded grace period, then SIGKILL to the whole group.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use http::{Method, StatusCode};

use crate::http::{drain, Client};

/// A child process that is always cleaned up.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
    stopped: bool,
}

impl Proc {
    /// Spawn `cmd` with stdout and stderr appended to `log`. `death_signal` is
    /// sent to the child if this process dies first.
    pub fn spawn(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        death_signal: i32,
        grace: Duration,
    ) -> Result<Proc> {
        let out = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            grace,
            stopped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error (with the end of its log) if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                self.log_tail(15)
            );
        }
        Ok(())
    }

    /// The whole log (empty if unreadable).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL the process group.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + self.grace;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever is left of the group (nginx workers, dockerd's containerd).
        self.kill();
    }

    /// SIGKILL the process group now and reap the child: a crash, with no
    /// draining and no cleanup (`loadtest chaos` does this to replicas).
    pub fn kill(&mut self) {
        self.stopped = true;
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: the group is the child's own (process_group(0) above).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Poll `GET path` until `ready(status)`, the process dies, or `timeout`.
pub async fn wait_http(
    proc: &mut Proc,
    addr: SocketAddr,
    path: &str,
    ready: fn(StatusCode) -> bool,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        proc.check_running()?;
        let mut c = Client::new(addr);
        match c
            .send(Method::GET, path, &[], crate::http::ReqBody::Empty)
            .await
        {
            Ok(resp) => {
                let status = resp.status();
                let _ = drain(resp, None).await;
                if ready(status) {
                    return Ok(());
                }
                last = format!("status {status}");
            }
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} not ready on {addr} after {timeout:?} ({last}); log:\n{}",
        proc.name,
        proc.log_tail(15)
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryKind {
    Berth,
    Distribution,
}

impl RegistryKind {
    pub fn label(self) -> &'static str {
        match self {
            RegistryKind::Berth => "berth",
            RegistryKind::Distribution => "distribution",
        }
    }
}

/// Keep the caller's environment out of a registry process (`serve` or a
/// tool such as `garbage-collect`): both registries read REGISTRY_*
/// overrides. AWS_* too: the S3 drivers get static keys from the config, and
/// distribution's aws-sdk-go panics at start when AWS_CA_BUNDLE is set
/// ("unable to load custom CA bundle, HTTPClient's transport unsupported type").
pub fn clean_registry_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("REGISTRY_") || k_str.starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
}

/// A registry on a fresh filesystem root.
pub struct RegistryServer {
    pub kind: RegistryKind,
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub proc: Proc,
}

/// The same distribution-style config for both registries.
fn registry_config(root: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: {addr}\n  secret: loadtest-secret\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n",
        root.display()
    )
}

pub async fn start_registry(kind: RegistryKind, bin: &Path, dir: &Path) -> Result<RegistryServer> {
    let dir = dir.join(kind.label());
    let root = dir.join("root");
    fs::create_dir_all(&root)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    spawn_registry(kind, bin, &dir, &registry_config(&root, addr), addr, root).await
}

/// Start a registry with `config` (which must listen on `addr`) written to
/// `<dir>/config.yml`, its log in `<dir>/server.log`; ready once `GET /v2/`
/// answers (200, or 401 when it authenticates). `root` is its filesystem root,
/// if it has one.
pub async fn spawn_registry(
    kind: RegistryKind,
    bin: &Path,
    dir: &Path,
    config: &str,
    addr: SocketAddr,
    root: PathBuf,
) -> Result<RegistryServer> {
    fs::create_dir_all(dir)?;
    let config_path = dir.join("config.yml");
    fs::write(&config_path, config)?;
    let mut cmd = Command::new(bin);
    match kind {
        RegistryKind::Berth => cmd.arg("serve").arg("--config").arg(&config_path),
        RegistryKind::Distribution => cmd.arg("serve").arg(&config_path),
    };
    clean_registry_env(&mut cmd);
    let mut proc = Proc::spawn(
        kind.label(),
        &mut cmd,
        &dir.join("server.log"),
        libc::SIGKILL,
        Duration::from_secs(5),
    )?;
    wait_http(
        &mut proc,
        addr,
        "/v2/",
        |s| s == StatusCode::OK || s == StatusCode::UNAUTHORIZED,
        Duration::from_secs(20),
    )
    .await?;
    Ok(RegistryServer {
        kind,
        addr,
        root,
        proc,
    })
}

impl RegistryServer {
    /// Where the filesystem driver keeps a blob's data.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn label(&self) -> &'static str {
        self.kind.label()
    }
}

/// nginx serving a directory with sendfile on.
pub struct Nginx {
    pub addr: SocketAddr,
    pub www: PathBuf,
    pub proc: Proc,
}

pub async fn start_nginx(dir: &Path) -> Result<Nginx> {
    let dir = dir.join("nginx");
    let www = dir.join("www");
    fs::create_dir_all(&www)?;
    fs::write(www.join("small.bin"), crate::data::random_bytes(11, 1024))?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let server = format!("root {};\nlocation / {{ }}\n", www.display());
    let proc = spawn_nginx(&dir, "nginx", addr, "", &server, "/small.bin", |s| {
        s == StatusCode::OK
    })
    .await?;
    Ok(Nginx { addr, www, proc })
}

/// nginx as a streaming reverse proxy: round-robin over `upstreams`, bodies
/// passed through as they come in both directions, `Host` kept (registries
/// build their Location URLs from it; S3 signatures cover it).
pub struct Proxy {
    pub addr: SocketAddr,
    /// One line per proxied request (`method status "uri" "copy-source"`), if asked for.
    pub access_log: Option<PathBuf>,
    pub proc: Proc,
}

/// Start a [`Proxy`] in `<dir>/<name>`; ready once `ready_path` answers anything.
pub async fn start_proxy(
    dir: &Path,
    name: &str,
    upstreams: &[SocketAddr],
    log_requests: bool,
    ready_path: &str,
) -> Result<Proxy> {
    let dir = dir.join(name);
    fs::create_dir_all(&dir)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let access_log = log_requests.then(|| dir.join("access.log"));
    let servers: String = upstreams
        .iter()
        .map(|u| format!("  server {u};\n"))
        .collect();
    let http_extra = format!(
        "log_format requests '$request_method $status \"$request_uri\" \"$http_x_amz_copy_source\"';\n\
         upstream backends {{\n{servers}  keepalive 256;\n}}\n"
    );
    let log_line = match &access_log {
        Some(p) => format!("access_log {} requests;\n", p.display()),
        None => String::new(),
    };
    let server = format!(
        "{log_line}\
         client_max_body_size 0;\n\
         merge_slashes off;\n\
         ignore_invalid_headers off;\n\
         large_client_header_buffers 8 64k;\n\
         proxy_request_buffering off;\n\
         proxy_buffering off;\n\
         proxy_http_version 1.1;\n\
         proxy_set_header Host $http_host;\n\
         proxy_set_header Connection \"\";\n\
         proxy_connect_timeout 10s;\n\
         proxy_read_timeout 600s;\n\
         proxy_send_timeout 600s;\n\
         location / {{ proxy_pass http://backends; }}\n"
    );
    let proc = spawn_nginx(&dir, name, addr, &http_extra, &server, ready_path, |_| true).await?;
    Ok(Proxy {
        addr,
        access_log,
        proc,
    })
}

/// nginx in `dir` (config, logs, temp paths) with one server on `addr`;
/// `http_extra` goes into the `http` block, `server_body` into the server.
async fn spawn_nginx(
    dir: &Path,
    name: &str,
    addr: SocketAddr,
    http_extra: &str,
    server_body: &str,
    ready_path: &str,
    ready: fn(StatusCode) -> bool,
) -> Result<Proc> {
    for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        fs::create_dir_all(dir.join("tmp").join(sub))?;
    }
    let d = dir.display();
    let conf = format!(
        "{user}\
         worker_processes auto;\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           sendfile on;\n\
           tcp_nopush on;\n\
           keepalive_requests 100000000;\n\
           keepalive_timeout 300s;\n\
           default_type application/octet-stream;\n\
           client_body_temp_path {d}/tmp/client_body;\n\
           proxy_temp_path {d}/tmp/proxy;\n\
           fastcgi_temp_path {d}/tmp/fastcgi;\n\
           uwsgi_temp_path {d}/tmp/uwsgi;\n\
           scgi_temp_path {d}/tmp/scgi;\n\
           {http_extra}\
           server {{\n\
             listen {addr};\n\
             {server_body}\
           }}\n\
         }}\n",
        // As root, workers would switch to `nobody`, who cannot read temp dirs.
        user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        },
    );
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"));
    let mut proc = Proc::spawn(
        name,
        &mut cmd,
        &dir.join("nginx.log"),
        libc::SIGKILL,
        Duration::from_secs(5),
    )?;
    wait_http(&mut proc, addr, ready_path, ready, Duration::from_secs(10)).await?;
    Ok(proc)
}

/// A private docker engine: own socket, data-root and exec-root.
pub struct Dockerd {
    pub sock: PathBuf,
    pub cli_config: PathBuf,
    pub proc: Proc,
}

pub async fn start_dockerd(dir: &Path, timeout: Duration) -> Result<Dockerd> {
    let dir = dir.join("docker");
    fs::create_dir_all(&dir)?;
    // Short paths: containerd's socket lives under exec-root (108-byte limit).
    let sock = dir.join("d.sock");
    let daemon_json = dir.join("daemon.json");
    fs::write(&daemon_json, "{}")?;
    let cli_config = dir.join("cli");
    fs::create_dir_all(&cli_config)?;
    fs::write(cli_config.join("config.json"), "{}")?;
    let mut cmd = Command::new("dockerd");
    cmd.args([
        "--storage-driver=vfs",
        "--iptables=false",
        "--bridge=none",
        "--log-level=warn",
    ])
    .arg("--config-file")
    .arg(&daemon_json)
    .arg("--data-root")
    .arg(dir.join("data"))
    .arg("--exec-root")
    .arg(dir.join("x"))
    .arg("--pidfile")
    .arg(dir.join("docker.pid"))
    .arg("-H")
    .arg(format!("unix://{}", sock.display()));
    let mut proc = Proc::spawn(
        "dockerd",
        &mut cmd,
        &dir.join("dockerd.log"),
        libc::SIGTERM,
        Duration::from_secs(20),
    )?;
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_running()?;
        let mut version = crate::docker::docker_cmd(&sock, &cli_config);
        version.arg("version");
        let ok = crate::servers::run(version, Duration::from_secs(10))
            .await
            .is_ok();
        if ok {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "dockerd not ready after {timeout:?}; log:\n{}",
                proc.log_tail(15)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(Dockerd {
        sock,
        cli_config,
        proc,
    })
}

/// Run a short command to completion within `timeout` (killed if it overruns);
/// an error carrying its stderr if it fails.
pub async fn run(
    mut cmd: tokio::process::Command,
    timeout: Duration,
) -> Result<std::process::Output> {
    cmd.kill_on_drop(true).stdin(Stdio::null());
    let std = cmd.as_std();
    let what = std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("{what} timed out after {timeout:?}"))?
        .with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed ({}): {}", out.status, tail.join("\n"));
    }
    Ok(out)
}
