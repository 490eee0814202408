//! The blob workloads' options that `compare` and `s3` share (chunked push,
//! small-blob pushes, HEAD/GET request loops), and their values after
//! `--quick` is applied. One definition so both commands name, default and
//! check them the same way.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::parse_size;

#[derive(Args, Clone, Debug)]
pub struct BlobLoadArgs {
    /// PATCH chunk size for the chunked push.
    #[arg(long, value_parser = parse_size, default_value = "16MiB")]
    pub chunk_size: u64,
    /// How many small blobs to push [default: 1000, quick 200].
    #[arg(long)]
    pub small_blobs: Option<usize>,
    /// Size of each small blob.
    #[arg(long, value_parser = parse_size, default_value = "4KiB")]
    pub small_size: u64,
    /// Concurrent clients for the small-blob pushes.
    #[arg(long, default_value_t = 16)]
    pub small_concurrency: usize,
    /// Concurrent connections for the HEAD/GET request loops.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds per request-loop phase [default: 10, quick 2].
    #[arg(long)]
    pub duration: Option<f64>,
}

/// [`BlobLoadArgs`] with the `--quick` defaults applied and checked.
pub struct BlobLoad {
    pub chunk_size: u64,
    pub small_blobs: usize,
    pub small_size: u64,
    pub small_concurrency: usize,
    pub connections: usize,
    pub duration: Duration,
    /// Unmeasured lead-in of each request loop.
    pub warmup: Duration,
}

impl BlobLoad {
    pub fn from(a: &BlobLoadArgs, quick: bool) -> Result<BlobLoad> {
        let duration =
            Duration::from_secs_f64(a.duration.unwrap_or(if quick { 2.0 } else { 10.0 }));
        if duration.is_zero() || duration > Duration::from_secs(600) {
            bail!("--duration must be in (0, 600] seconds");
        }
        if a.connections == 0 || a.connections > 4096 || a.small_concurrency == 0 {
            bail!("--connections must be in 1..=4096 and --small-concurrency at least 1");
        }
        Ok(BlobLoad {
            chunk_size: a.chunk_size,
            small_blobs: a.small_blobs.unwrap_or(if quick { 200 } else { 1000 }),
            small_size: a.small_size,
            small_concurrency: a.small_concurrency,
            connections: a.connections,
            duration,
            warmup: (duration / 5).min(Duration::from_secs(1)),
        })
    }
}
