//! Debian's redis-server for the tests: one node or a three-node cluster, on
//! free 127.0.0.1 ports, persistence off, stopped on drop.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    free_port,
    process::{output_ok, wait_ready},
};

pub struct RedisServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port(), false)
    }

    /// Start on a given port (to restart a stopped one in place).
    pub fn start_on(port: u16, cluster: bool) -> RedisServer {
        // A cluster node's bus listens on port + 10000 unless told otherwise:
        // a port nobody checked was free (another socket may hold it, and
        // the node then exits). Give it a free one of its own.
        Self::spawn(port, cluster.then(free_port))
    }

    fn spawn(port: u16, cluster_bus: Option<u16>) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(&log);
        if let Some(bus) = cluster_bus {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus.to_string(),
            ]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server)");
        // Ready when the server on the port is this one (its own `dir`, as
        // its getcwd reports it), not whatever else took the port since it
        // was free.
        let own_dir = std::fs::canonicalize(dir.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        wait_ready(
            &mut child,
            &format!("redis-server on {port}"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || cli(port, &["config", "get", "dir"]).contains(&own_dir),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        RedisServer {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL it (a crash; its data is gone), then start an empty one on
    /// the same port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Self::start_on(self.port, false);
    }

    /// `redis-cli` against this node (`-c` follows cluster redirects).
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three masters joined into a Redis Cluster.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        // Six distinct ports at once (three clients, three buses): held
        // together, so no two of them are the same.
        let held: Vec<TcpListener> = (0..6)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(held);
        let nodes: Vec<RedisServer> = ports
            .chunks(2)
            .map(|p| RedisServer::spawn(p[0], Some(p[1])))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        output_ok(
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "0", "--cluster-yes"]),
        );
        // `--cluster create` returns once the nodes agree on who serves which
        // slot, but each node turns its own cluster_state to ok later (a
        // master waits until 2 s after its start); until then it answers
        // CLUSTERDOWN, and a cache write routed to it is lost. So every node,
        // not only the first, must report ok with all slots served.
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            loop {
                let info = node.cli(&["cluster", "info"]);
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster never became ok on {}:\n{info}",
                    node.addr()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster { nodes }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }
}
