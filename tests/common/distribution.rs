//! CNCF distribution 2.8 (Debian's `docker-registry`) as a reference
//! registry: its own config file, a free port, a log, killed on drop.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{
    free_port,
    process::{require_tool, wait_ready},
};

pub struct Distribution {
    child: Child,
    pub addr: String,
    /// Holds config.yml, registry.log and whatever the config puts there.
    pub dir: tempfile::TempDir,
}

impl Distribution {
    /// `docker-registry serve` on the config `config(dir, addr)` returns,
    /// once it accepts connections (at most 30 s; an early exit fails with
    /// its log).
    pub fn start(config: impl FnOnce(&Path, &str) -> String) -> Distribution {
        require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config(dir.path(), &addr)).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        wait_ready(
            &mut child,
            "docker-registry",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || std::net::TcpStream::connect(&addr).is_ok(),
            || read_log(dir.path()),
        );
        Distribution { child, addr, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        read_log(self.dir.path())
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
