//! A registry deployment on S3: one or more registry processes sharing
//! `http.secret`, the bucket and a root directory, optionally a Redis for the
//! blob-descriptor cache, and (for more than one process) nginx in front,
//! round-robin. Clients talk to [`Deployment::addr`] only. A registry or
//! Redis can be killed and started again in place (`loadtest chaos`).
//! Everything is stopped when the deployment is dropped (front first, Redis
//! last).

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Result};

use crate::{
    servers::{free_port, spawn_registry, start_proxy, Proxy, RegistryKind, RegistryServer},
    stores::{start_redis, start_redis_at, Redis, ACCESS_KEY, BUCKET, SECRET_KEY},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeploySpec {
    pub kind: RegistryKind,
    pub replicas: usize,
    pub redis: bool,
    /// `storage.redirect.disable: false` (the default of both registries):
    /// blob GETs answer 307 to a presigned S3 URL.
    pub redirect: bool,
}

impl DeploySpec {
    pub fn new(kind: RegistryKind, replicas: usize, redis: bool, redirect: bool) -> Self {
        DeploySpec {
            kind,
            replicas,
            redis,
            redirect,
        }
    }

    /// `berth x3 + redis`
    pub fn label(&self) -> String {
        let kind = match self.kind {
            RegistryKind::Berth => "berth",
            RegistryKind::Distribution => "dist",
        };
        format!(
            "{kind} x{}{}",
            self.replicas,
            if self.redis { " + redis" } else { "" }
        )
    }
}

/// A distribution-style config on S3, the same for both registries.
pub fn s3_config(
    addr: SocketAddr,
    endpoint: &str,
    root: &str,
    redis: Option<SocketAddr>,
    redirect: bool,
) -> String {
    let mut c = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         http:\n  addr: {addr}\n  secret: loadtest-secret\n\
         storage:\n\
         \x20 s3:\n\
         \x20   region: us-east-1\n\
         \x20   regionendpoint: {endpoint}\n\
         \x20   forcepathstyle: true\n\
         \x20   bucket: {BUCKET}\n\
         \x20   accesskey: {ACCESS_KEY}\n\
         \x20   secretkey: {SECRET_KEY}\n\
         \x20   secure: false\n\
         \x20   v4auth: true\n\
         \x20   rootdirectory: /{root}\n\
         \x20 redirect:\n    disable: {}\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n",
        !redirect
    );
    if let Some(r) = redis {
        let _ = write!(
            c,
            "  cache:\n    blobdescriptor: redis\nredis:\n  addr: {r}\n"
        );
    }
    c
}

pub struct Deployment {
    pub label: String,
    /// Where clients connect: nginx in front, or the only process.
    pub addr: SocketAddr,
    /// The S3 root directory (no slashes).
    pub root: String,
    // Dropped in this order: front, registries, Redis.
    front: Option<Proxy>,
    pub regs: Vec<RegistryServer>,
    redis: Option<Redis>,
    kind: RegistryKind,
    bin: PathBuf,
    /// `<dir>/<root>`: every process's files.
    dir: PathBuf,
    /// Each registry's config, to start it again as it was.
    configs: Vec<String>,
    /// Processes started again so far (each gets a fresh directory, so the
    /// logs of the ones before stay).
    restarts: usize,
}

impl Deployment {
    /// An error (with the log's end) if any of its processes has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(f) = self.front.as_mut() {
            f.proc.check_running()?;
        }
        for r in &mut self.regs {
            r.proc.check_running()?;
        }
        if let Some(r) = self.redis.as_mut() {
            r.proc.check_running()?;
        }
        Ok(())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.regs.iter().map(|r| r.proc.pid()).collect()
    }

    /// Registry `i`'s whole config (what a tool such as `garbage-collect`
    /// is run with).
    pub fn config(&self, i: usize) -> &str {
        &self.configs[i]
    }

    /// SIGKILL registry `i`, as a crash would. Its address stays in nginx's
    /// list: requests to it fail until [`Deployment::start_again`].
    pub fn kill(&mut self, i: usize) {
        self.regs[i].proc.kill();
    }

    /// Start registry `i` again, after [`Deployment::kill`], on its old
    /// address with its old config; ready once `GET /v2/` answers.
    pub async fn start_again(&mut self, i: usize) -> Result<()> {
        self.restarts += 1;
        let r = &self.regs[i];
        let rdir = self
            .dir
            .join(format!("{}{}.{}", self.kind.label(), i + 1, self.restarts));
        let (kind, addr) = (r.kind, r.addr);
        self.regs[i] = spawn_registry(
            kind,
            &self.bin,
            &rdir,
            &self.configs[i],
            addr,
            PathBuf::new(),
        )
        .await?;
        Ok(())
    }

    /// SIGKILL Redis and start an empty one on the same address (the
    /// registries reconnect to it).
    pub async fn restart_redis(&mut self) -> Result<()> {
        let Some(old) = self.redis.as_mut() else {
            bail!("this deployment has no Redis");
        };
        old.proc.kill();
        let addr = old.addr;
        self.restarts += 1;
        let name = format!("redis.{}", self.restarts);
        self.redis = Some(start_redis_at(&self.dir, &name, addr).await?);
        Ok(())
    }
}

/// Start `spec` against the S3 `endpoint` under `root`, with its files in
/// `<dir>/<root>`.
pub async fn deploy(
    spec: DeploySpec,
    bin: &Path,
    dir: &Path,
    endpoint: &str,
    root: &str,
) -> Result<Deployment> {
    if spec.replicas == 0 || spec.replicas > 16 {
        bail!("replicas must be in 1..=16");
    }
    let dir = dir.join(root);
    let redis = if spec.redis {
        Some(start_redis(&dir, "redis").await?)
    } else {
        None
    };
    let mut regs = Vec::new();
    let mut configs = Vec::new();
    for i in 1..=spec.replicas {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let config = s3_config(
            addr,
            endpoint,
            root,
            redis.as_ref().map(|r| r.addr),
            spec.redirect,
        );
        let rdir = dir.join(format!("{}{i}", spec.kind.label()));
        regs.push(spawn_registry(spec.kind, bin, &rdir, &config, addr, PathBuf::new()).await?);
        configs.push(config);
    }
    let (front, addr) = if spec.replicas > 1 {
        let upstreams: Vec<SocketAddr> = regs.iter().map(|r| r.addr).collect();
        let p = start_proxy(&dir, "nginx-front", &upstreams, false, "/v2/").await?;
        let a = p.addr;
        (Some(p), a)
    } else {
        (None, regs[0].addr)
    };
    Ok(Deployment {
        label: spec.label(),
        addr,
        root: root.to_string(),
        front,
        regs,
        redis,
        kind: spec.kind,
        bin: bin.to_path_buf(),
        dir,
        configs,
        restarts: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_cache_and_redirect() {
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let r: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        let c = s3_config(a, "http://127.0.0.1:9000", "m1", Some(r), false);
        assert!(c.contains("    rootdirectory: /m1\n"), "{c}");
        assert!(c.contains("  redirect:\n    disable: true\n"), "{c}");
        assert!(c.contains("blobdescriptor: redis\nredis:\n  addr: 127.0.0.1:6379\n"));
        let c = s3_config(a, "http://127.0.0.1:9000", "m1", None, true);
        assert!(c.contains("disable: false") && !c.contains("redis"), "{c}");
        assert_eq!(
            DeploySpec::new(RegistryKind::Berth, 3, true, false).label(),
            "berth x3 + redis"
        );
    }
}
