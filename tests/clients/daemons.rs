//! The daemons the tests start besides Berth: a private Docker engine and
//! CNCF distribution (`docker-registry`). Both stop in `Drop`, so a failing
//! assertion leaks no process.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::support::{http, require_tool, run, run_ok, Out};
use crate::common::free_port;

/// Ask `pid` to stop with `signal` (via kill(1): the crate has no libc binding).
fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Wait (bounded) for a child to exit after it was signalled.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A private Docker engine: own socket, data root, exec root (and so its own
/// managed containerd under `<exec>/containerd`), nothing shared with a
/// system daemon. vfs needs no kernel overlay support; no bridge and no
/// iptables: the containers tests run use `--network host`.
pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    containerd_pid: Option<u32>,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        Dockerd::start_with_mirrors(&[])
    }

    /// An engine whose Docker Hub pulls go to `mirrors` (daemon.json's
    /// `registry-mirrors`). Its fallback to Docker Hub itself goes through
    /// a proxy that refuses (`127.0.0.1:9`), so a pull that did not use the
    /// mirror fails here instead of leaving the machine.
    pub fn start_with_mirrors(mirrors: &[&str]) -> Dockerd {
        require_tool("dockerd", "docker.io");
        require_tool("docker", "docker.io");
        // Under /tmp, not $TMPDIR: containerd's unix sockets live below the
        // exec root and a socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd-")
            .tempdir_in("/tmp")
            .unwrap();
        let p = |name: &str| dir.path().join(name);
        // Our own daemon.json so a host /etc/docker/daemon.json cannot leak in.
        let config = serde_json::json!({ "registry-mirrors": mirrors });
        fs::write(p("daemon.json"), config.to_string()).unwrap();
        fs::create_dir_all(p("cli")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(p("daemon.json"))
            .args(["--storage-driver=vfs", "--iptables=false", "--bridge=none"])
            .arg(format!("--host=unix://{}", p("docker.sock").display()))
            .arg("--data-root")
            .arg(p("root"))
            .arg("--exec-root")
            .arg(p("exec"))
            .arg("--pidfile")
            .arg(p("docker.pid"))
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .stdout(fs::File::create(p("dockerd.log")).unwrap())
            .stderr(fs::File::create(p("dockerd.err.log")).unwrap())
            .spawn()
            .expect("spawn dockerd");
        let mut d = Dockerd {
            child,
            dir,
            containerd_pid: None,
        };
        // Bounded readiness poll: `docker info` answers once the API is up.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("dockerd exited ({status}) at start:\n{}", d.logs());
            }
            if run(&mut d.cli(&["info"]), Duration::from_secs(20))
                .status
                .success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not ready in 60s:\n{}",
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        // Remember dockerd's managed containerd so Drop can stop it even if
        // dockerd itself dies without taking it down.
        d.containerd_pid = fs::read_to_string(d.dir.path().join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        d
    }

    /// A `docker` CLI command bound to this engine, with a private client
    /// config (no credential helpers of the host) and the classic builder
    /// (Debian ships no buildx plugin).
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.path().join("docker.sock").display()),
        )
        .env("DOCKER_CONFIG", self.dir.path().join("cli"))
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CLI_HINTS", "false")
        .args(args);
        c
    }

    /// Run a docker command that must succeed (push/pull/build are bounded at 3 min).
    pub fn ok(&self, args: &[&str]) -> Out {
        run_ok(&mut self.cli(args), Duration::from_secs(180))
    }

    /// `docker image inspect` of one field.
    pub fn inspect(&self, reference: &str, format: &str) -> String {
        self.ok(&["image", "inspect", "--format", format, reference])
            .stdout
            .trim()
            .to_string()
    }

    /// Remove every image, intermediate ones included, so the next pull has
    /// to fetch every layer from the registry.
    pub fn remove_all_images(&self) {
        // A parent cannot go before its children, and the listing order is
        // arbitrary: remove what can be removed, a bounded number of rounds.
        for _ in 0..5 {
            let ids = self.ok(&["image", "ls", "-aq", "--no-trunc"]).stdout;
            let ids: BTreeSet<&str> = ids.split_whitespace().collect();
            if ids.is_empty() {
                return;
            }
            let mut args = vec!["image", "rm", "-f"];
            args.extend(ids);
            run(&mut self.cli(&args), Duration::from_secs(60));
        }
        let left = self.ok(&["image", "ls", "-a"]).stdout;
        panic!("images left after 5 rounds of rm:\n{left}");
    }

    pub fn logs(&self) -> String {
        let read = |n: &str| fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        let all = read("dockerd.log") + &read("dockerd.err.log");
        let tail: Vec<&str> = all.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containerd; SIGKILL is the fallback.
        signal(self.child.id(), "-TERM");
        if !wait_exit(&mut self.child, Duration::from_secs(30)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(pid) = self.containerd_pid {
            // Still alive only if dockerd could not stop it.
            if signal(pid, "-0") {
                signal(pid, "-TERM");
                let deadline = Instant::now() + Duration::from_secs(10);
                while signal(pid, "-0") && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                signal(pid, "-KILL");
            }
        }
        // An engine that ran a container keeps its netns mounted under the
        // exec root after it stops; unmount it so the temp dir can go.
        let netns = self.dir.path().join("exec/netns/default");
        if netns.exists() {
            let _ = Command::new("umount").arg(&netns).status();
        }
    }
}

/// CNCF distribution 2.8 (Debian's `docker-registry`) serving `root`.
pub struct Distribution {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Distribution {
    pub fn start(root: &Path) -> Distribution {
        require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let cfg = Self::config(dir.path(), root, &addr);
        let log = dir.path().join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(dir.path().join("registry.err.log")).unwrap())
            .spawn()
            .expect("spawn docker-registry");
        let mut r = Distribution {
            child,
            addr,
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("docker-registry exited ({status}) at start:\n{}", r.logs());
            }
            if http("GET", &format!("http://{}/v2/", r.addr), &[]).status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not ready in 30s:\n{}",
                r.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    /// distribution's own config.yml for `root`, written into `dir`.
    fn config(dir: &Path, root: &Path, addr: &str) -> PathBuf {
        let cfg = dir.join("config.yml");
        fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: interop-secret\n",
                root.display()
            ),
        )
        .unwrap();
        cfg
    }

    /// `docker-registry garbage-collect` (offline, as distribution requires)
    /// over `root`; returns its output.
    pub fn garbage_collect(root: &Path) -> String {
        require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let cfg = Self::config(dir.path(), root, "127.0.0.1:0");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("garbage-collect").arg(cfg);
        run_ok(&mut cmd, Duration::from_secs(120)).all()
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
            + &fs::read_to_string(self._dir.path().join("registry.err.log")).unwrap_or_default()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
