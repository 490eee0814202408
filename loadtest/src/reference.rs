//! Reference figures for the targets, measured on this machine in the same
//! run: single-core SHA-256 (sha2 in-process and `openssl speed`) and the
//! disk's synced write rate (`dd ... conv=fdatasync`).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use crate::{data::random_bytes, workloads::mb_per_s};

/// MB/s of sha2's SHA-256 over 16 KiB blocks for about `d`, on this thread.
pub fn sha256_rust(d: Duration) -> f64 {
    let block = random_bytes(3, 16 * 1024);
    let mut h = Sha256::new();
    let t0 = Instant::now();
    let mut bytes = 0u64;
    // Bounded by the duration.
    while t0.elapsed() < d {
        for _ in 0..64 {
            h.update(&block);
        }
        bytes += 64 * block.len() as u64;
    }
    std::hint::black_box(h.finalize());
    mb_per_s(bytes, t0.elapsed())
}

/// MB/s from `openssl speed -evp sha256` for 16384-byte blocks.
pub async fn sha256_openssl(seconds: u32) -> Result<f64> {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args(["speed", "-mr", "-bytes", "16384", "-seconds"])
        .arg(seconds.to_string())
        .args(["-evp", "sha256"]);
    let out = crate::servers::run(cmd, Duration::from_secs(30 + seconds as u64)).await?;
    parse_openssl_mr(&String::from_utf8_lossy(&out.stdout))
}

/// `+F:<n>:sha256:<bytes per second>` (machine-readable `-mr` output).
fn parse_openssl_mr(text: &str) -> Result<f64> {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("+F:") {
            if let Some(v) = rest.rsplit(':').next() {
                let bps: f64 = v.trim().parse().context("openssl rate")?;
                return Ok(bps / 1e6);
            }
        }
    }
    bail!("no +F: line in openssl output: {text:?}")
}

/// MB/s of `dd if=/dev/zero of=<dir>/dd.tmp bs=1M count=<mib> conv=fdatasync`,
/// timed around the process (which includes the final fdatasync).
pub async fn disk_synced_write(dir: &Path, mib: u64) -> Result<f64> {
    let file = dir.join("dd.tmp");
    let mut cmd = tokio::process::Command::new("dd");
    cmd.arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .arg("bs=1M")
        .arg(format!("count={mib}"))
        .arg("conv=fdatasync");
    let t0 = Instant::now();
    let res = crate::servers::run(cmd, Duration::from_secs(600)).await;
    let d = t0.elapsed();
    let _ = std::fs::remove_file(&file);
    res?;
    Ok(mb_per_s(mib << 20, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl() {
        let out = "+R:115414:sha256:0.990000\n+H:16384\n+F:25:sha256:1910043410.10\n";
        assert!((parse_openssl_mr(out).unwrap() - 1910.04341).abs() < 1e-3);
        assert!(parse_openssl_mr("nothing").is_err());
    }
}
