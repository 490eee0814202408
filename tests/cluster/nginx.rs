//! Debian's nginx as the cluster's load balancer: a generated config in a temp
//! dir (its own pid file, logs and temp paths, nothing under /etc or /var),
//! round-robin over the replicas, started in the foreground and stopped in Drop.

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{free_port, process::wait_ready};

pub struct Nginx {
    child: Child,
    /// `127.0.0.1:<port>`, what clients (and Location URLs) name.
    pub addr: String,
    dir: tempfile::TempDir,
}

/// nginx lives in /usr/sbin, which a non-root PATH may lack.
fn executable() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    });
    let p = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    assert!(p.is_file(), "nginx is not installed: apt-get install nginx");
    p
}

/// The settings a registry needs from a proxy: bodies of any size streamed
/// both ways (no buffering to disk, no size limit), HTTP/1.1 keep-alive to the
/// upstreams, the client's Host passed on so Berth's Location URLs name the
/// balancer, and timeouts long enough for multi-GiB layers.
pub fn config(dir: &Path, listen: &str, upstreams: &[String]) -> String {
    let d = dir.display();
    // Running as root, workers would switch to `nobody` and could not use
    // the temp dir (0700, root's).
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    let mut servers = String::new();
    for u in upstreams {
        writeln!(servers, "    server {u};").unwrap();
    }
    format!(
        r#"{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
  log_format upstream '$request_method $uri $status upstream=$upstream_addr';
  access_log {d}/access.log upstream;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream berth {{
{servers}    keepalive 16;
  }}
  server {{
    listen {listen};
    client_max_body_size 0;
    client_body_timeout 600s;
    send_timeout 600s;
    location / {{
      proxy_pass http://berth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_connect_timeout 5s;
      proxy_send_timeout 600s;
      proxy_read_timeout 600s;
      # nginx's default, spelled out: a refused connect moves on to the next
      # replica (a request already sent is not retried if not idempotent).
      proxy_next_upstream error timeout;
    }}
  }}
}}
"#
    )
}

/// One raw `GET /v2/`: the status code, or None if nothing answered.
fn probe(addr: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// What nginx wrote to stderr, then its error log.
fn error_log(dir: &Path) -> String {
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    read("stderr.log") + &read("error.log")
}

impl Nginx {
    /// Start in front of `upstreams` (`host:port` each) and wait, bounded,
    /// until a request through it reaches a replica.
    pub fn start(upstreams: &[String]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), &addr, upstreams)).unwrap();
        let mut child = Command::new(executable())
            .arg("-p")
            .arg(dir.path())
            // Startup errors too go to the temp dir, not /var/log/nginx.
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn nginx");
        wait_ready(
            &mut child,
            "nginx",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || probe(&addr) == Some(200),
            || error_log(dir.path()),
        );
        Nginx { child, addr, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn error_log(&self) -> String {
        error_log(self.dir.path())
    }

    /// One line per request: method, path, status, the upstream(s) tried.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker before exiting; a SIGKILLed
        // master would leave the worker holding the port.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
