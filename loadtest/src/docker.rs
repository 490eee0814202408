//! The docker workload: a multi-layer image (a `docker import`ed base plus
//! COPY layers from a legacy `docker build`, so no container ever runs),
//! pushed to each registry and pulled back with the local copy removed in
//! between, timed by wall clock.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{data::random_bytes, servers::run, servers::Dockerd};

const IMAGE: &str = "loadtest-img:1";
const BASE: &str = "loadtest-base:1";
const STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// Layers of the built image: the base and 3 COPY layers.
pub const LAYERS: usize = 4;

/// Debian's client matches Debian's dockerd; any other is a fallback.
fn docker_bin() -> PathBuf {
    let debian = Path::new("/usr/bin/docker");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("docker")
    }
}

/// A docker CLI command talking to our private engine only.
pub fn docker_cmd(sock: &Path, cli_config: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(docker_bin());
    cmd.env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_CONFIG", cli_config)
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CLI_HINTS", "false")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY");
    cmd
}

async fn docker(d: &Dockerd, args: &[&str]) -> Result<String> {
    let mut cmd = docker_cmd(&d.sock, &d.cli_config);
    cmd.args(args);
    let out = run(cmd, STEP_TIMEOUT).await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Build the image: base layer + 3 COPY layers of `layer_bytes` random bytes.
/// Returns the total payload in bytes.
pub async fn build_image(d: &Dockerd, dir: &Path, layer_bytes: usize) -> Result<u64> {
    let dir = dir.join("image");
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("etc"))?;
    fs::create_dir_all(rootfs.join("data"))?;
    fs::write(rootfs.join("etc/loadtest-release"), "loadtest base layer\n")?;
    fs::write(rootfs.join("data/base.bin"), random_bytes(100, layer_bytes))?;
    let tar = dir.join("base.tar");
    let mut cmd = tokio::process::Command::new("tar");
    cmd.arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".");
    run(cmd, STEP_TIMEOUT).await.context("tar the base layer")?;
    docker(d, &["import", &tar.to_string_lossy(), BASE])
        .await
        .context("docker import")?;

    let ctx = dir.join("build");
    fs::create_dir_all(&ctx)?;
    let mut dockerfile = format!("FROM {BASE}\n");
    for i in 1..=3 {
        fs::write(
            ctx.join(format!("l{i}.bin")),
            random_bytes(100 + i, layer_bytes),
        )?;
        dockerfile.push_str(&format!("COPY l{i}.bin /data/l{i}.bin\n"));
    }
    fs::write(ctx.join("Dockerfile"), dockerfile)?;
    docker(d, &["build", "-q", "-t", IMAGE, &ctx.to_string_lossy()])
        .await
        .context("docker build")?;
    // Untag the base so that removing the image removes every layer.
    docker(d, &["rmi", BASE]).await?;
    Ok(4 * layer_bytes as u64)
}

fn remote(addr: SocketAddr) -> String {
    format!("{addr}/loadtest/img:1")
}

/// Remove every image the engine has, so a pull downloads every layer:
/// untag everything (which prunes untagged parents), then force-remove
/// whatever is left, children first, in a few bounded rounds.
pub async fn remove_all_images(d: &Dockerd) -> Result<()> {
    let tags = docker(d, &["images", "--format", "{{.Repository}}:{{.Tag}}"]).await?;
    for tag in tags.split_whitespace().filter(|t| !t.contains("<none>")) {
        let _ = docker(d, &["rmi", tag]).await;
    }
    for _ in 0..5 {
        let ids = docker(d, &["images", "-aq"]).await?;
        let mut ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.dedup();
        for id in ids {
            let _ = docker(d, &["rmi", "-f", id]).await;
        }
    }
    let left = docker(d, &["images", "-a"]).await?;
    anyhow::bail!("images left after removal:\n{left}")
}

#[derive(Clone, Copy, Debug)]
pub struct DockerTimes {
    pub push: Duration,
    pub pull: Duration,
}

/// Tag the built image for the registry at `addr` and push it; wall time.
pub async fn push(d: &Dockerd, addr: SocketAddr) -> Result<Duration> {
    let tag = remote(addr);
    docker(d, &["tag", IMAGE, &tag]).await?;
    let t0 = Instant::now();
    docker(d, &["push", &tag]).await.context("docker push")?;
    Ok(t0.elapsed())
}

/// Pull the image from the registry at `addr` (local images removed
/// beforehand); wall time.
pub async fn pull(d: &Dockerd, addr: SocketAddr) -> Result<Duration> {
    let tag = remote(addr);
    let t0 = Instant::now();
    docker(d, &["pull", &tag]).await.context("docker pull")?;
    Ok(t0.elapsed())
}

/// Push the built image to each registry, drop it locally, then pull it back
/// from each (dropping it again after each pull). One result per registry.
pub async fn push_pull(
    d: &Dockerd,
    registries: &[(&'static str, SocketAddr)],
) -> Vec<(&'static str, Result<DockerTimes>)> {
    let mut pushes = Vec::new();
    for (label, addr) in registries {
        let r = push(d, *addr).await;
        crate::progress::note(match &r {
            Ok(t) => format!("{label}: docker push {:.2} s", t.as_secs_f64()),
            Err(e) => format!("{label}: docker push failed: {e:#}"),
        });
        pushes.push(r);
    }
    let cleared = remove_all_images(d).await;
    let mut out = Vec::new();
    for ((label, addr), push) in registries.iter().zip(pushes) {
        let r = async {
            let push = push?;
            if let Err(e) = &cleared {
                anyhow::bail!("could not remove local images before pulling: {e:#}");
            }
            let pull = pull(d, *addr).await?;
            remove_all_images(d).await?;
            Ok(DockerTimes { push, pull })
        }
        .await;
        if let Ok(t) = &r {
            crate::progress::note(format!(
                "{label}: docker pull {:.2} s",
                t.pull.as_secs_f64()
            ));
        }
        out.push((*label, r));
    }
    out
}
