//! Shared test harness: start a real `berth` process on a free 127.0.0.1 port
//! with a given config, wait (bounded) until it answers, stop it on drop.
#![allow(dead_code)]

pub mod azurite;
pub mod distribution;
pub mod docker;
pub mod faults;
pub mod htpasswd;
pub mod http;
pub mod ldap;
pub mod noise;
pub mod oidc;
pub mod pki;
pub mod process;
pub mod redis;
pub mod s3;

use std::{
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every file and directory under `dir`, sorted: compare two of these for
/// "storage unchanged".
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `berth config check` of `yaml` with `env` set: the exit code and stderr.
pub fn config_check(yaml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config.yml");
    std::fs::write(&f, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["config", "check"])
        .arg(&f)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Poll `addr` until a TCP connect succeeds, at most `limit`.
pub fn wait_for_port(addr: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub struct Berth {
    pub child: Child,
    pub addr: String,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Berth {
    /// Start with the filesystem driver in a fresh temp dir; `extra` is YAML
    /// merged at top level after the generated `storage` and `http` sections
    /// (it may add e.g. `storage.delete` under its own `storage:` only if it
    /// repeats the whole section, so prefer `Berth::start_with`).
    pub fn start() -> Berth {
        Berth::start_with(|root, addr| {
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n"
            )
        })
    }

    /// Start with a config built from the storage root and listen address.
    pub fn start_with(config: impl FnOnce(&str, &str) -> String) -> Berth {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        Self::start_in(dir, root, config, &[])
    }

    /// `start_with`, plus environment for the `berth` process.
    pub fn start_with_env(
        config: impl FnOnce(&str, &str) -> String,
        env: &[(&str, &str)],
    ) -> Berth {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        Self::start_in(dir, root, config, env)
    }

    /// Start serving an existing storage root (e.g. one distribution wrote).
    pub fn start_on_root(root: &Path, env: &[(&str, &str)]) -> Berth {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(
            dir,
            root.to_path_buf(),
            |root, addr| {
                format!(
                    "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n"
                )
            },
            env,
        )
    }

    /// Another replica on an existing root, with a config built like `start_with`.
    pub fn start_on_root_with(root: &Path, config: impl FnOnce(&str, &str) -> String) -> Berth {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, root.to_path_buf(), config, &[])
    }

    fn start_in(
        dir: tempfile::TempDir,
        root: PathBuf,
        config: impl FnOnce(&str, &str) -> String,
        env: &[(&str, &str)],
    ) -> Berth {
        // A free port is only free until someone else binds it (a parallel
        // test's redis or replica): wait for Berth's own "listening" line, and
        // if it lost the port, try again on another one.
        let first = format!("127.0.0.1:{}", free_port());
        let text = config(root.to_str().unwrap(), &first);
        let cfg_path = dir.path().join("config.yml");
        let log = dir.path().join("berth.log");
        let mut b = None;
        for attempt in 0..5 {
            let addr = if attempt == 0 {
                first.clone()
            } else {
                format!("127.0.0.1:{}", free_port())
            };
            std::fs::File::create(&cfg_path)
                .unwrap()
                .write_all(text.replace(&first, &addr).as_bytes())
                .unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["serve", "--config"])
                .arg(&cfg_path)
                .envs(env.iter().copied())
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn berth");
            let mut started = Berth {
                child,
                addr,
                root: root.clone(),
                _dir: tempfile::tempdir().unwrap(),
                log: log.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            let up = loop {
                if started.logs().contains("berth listening") {
                    break true;
                }
                if let Ok(Some(_)) = started.child.try_wait() {
                    break false;
                }
                assert!(
                    Instant::now() < deadline,
                    "berth did not start: {}",
                    started.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                b = Some(started);
                break;
            }
            let logs = started.logs();
            assert!(logs.contains("in use"), "berth exited at start: {logs}");
        }
        let mut b = b.expect("berth could not get a free port in 5 tries");
        b._dir = dir;
        b
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The URL over TLS (the listener's certificate names 127.0.0.1).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as an orchestrator stops it, then wait (bounded by `limit`)
    /// for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        // SAFETY: a plain kill(2) on the child we spawned.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "berth did not stop: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
