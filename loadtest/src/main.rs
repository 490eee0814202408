//! `loadtest compare`: start Berth and CNCF distribution side by side on
//! loopback, run the same workloads against both, and print one table with
//! the targets as PASS/FAIL lines. `loadtest s3`: the same workloads
//! on S3 (s3s-fs, moto), one and several replicas, with and without Redis,
//! and the S3 requests each registry operation costs. `loadtest auth`: what
//! htpasswd (bcrypt) authentication costs. `loadtest run`: CI-fleet
//! scenarios against any registry by URL; `loadtest versus`: the same
//! scenarios against Berth and distribution side by side, with a PNG chart.
//! `loadtest flood`: a client's throughput and latency while slowloris and
//! idle connections flood Berth's listener. `loadtest chaos`: a bounded
//! chaos run (replicas killed, Redis restarted, garbage collection) under a
//! CI-style workload; every acknowledged image must pull byte-exact.
//! `loadtest proxy`: the pull-through cache against the upstream alone and
//! distribution's proxy. `loadtest ui`: the web UI's page render times at
//! 2,000 repositories and 500 tags. See README.md.

mod authbench;
mod blobload;
mod chaos;
mod chaos_client;
mod chaos_plan;
mod chart;
mod compare;
mod cpu;
mod data;
mod deploy;
mod docker;
mod flood;
mod http;
mod opstats;
mod progress;
mod proxybench;
mod reference;
mod regclient;
mod regops;
mod report;
mod rss;
mod runcmd;
mod s3bench;
mod s3budget;
mod s3count;
mod s3ref;
mod scenario_plan;
mod scenarios;
mod servers;
mod setup;
mod stores;
mod uibench;
mod versus;
mod workloads;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Benchmark Berth against CNCF distribution"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every workload against Berth and distribution and print the table.
    Compare(CompareArgs),
    /// Berth (and distribution) on S3: throughput with 1 and N replicas, with
    /// and without Redis, and S3 requests per registry operation.
    S3(S3Args),
    /// Basic authentication (htpasswd, bcrypt): remembered checks, uncached
    /// checks, and wrong passwords against the rest of the traffic.
    Auth(AuthArgs),
    /// CI-fleet scenarios against any registry: throughput, latency
    /// percentiles and errors per operation (exit status 1 on any error).
    Run(RunArgs),
    /// The `run` scenarios against Berth and distribution side by side: a
    /// table with both and the ratio, and a PNG bar chart.
    Versus(VersusArgs),
    /// A normal client's throughput and latency alone and during a flood of
    /// slowloris and idle keep-alive connections; Berth's memory; PASS/FAIL.
    Flood(FloodArgs),
    /// Three Berth replicas behind nginx on Garage with Redis under CI-style
    /// clients, a replica SIGKILLed and restarted every `--kill-every`,
    /// Redis restarted once, garbage collection once; then every
    /// acknowledged image pulled byte-exact. Errors per kind, PASS/FAIL.
    Chaos(ChaosArgs),
    /// The pull-through cache: cold and warm pulls through Berth's and
    /// distribution's `proxy:` against the upstream alone, and many
    /// clients pulling one uncached image at once (upstream GETs per blob).
    Proxy(ProxyArgs),
    /// The web UI: render times of the repository list and a repository's
    /// tag and image pages on `--repos` repositories and `--tags` tags,
    /// beside the API requests they are built from; PASS/FAIL on budgets.
    Ui(UiArgs),
}

#[derive(Args, Clone, Debug)]
pub struct UiArgs {
    /// Repositories pushed (bench/repo-0000…), each one image by mount.
    #[arg(long, default_value_t = 2000)]
    pub repos: usize,
    /// Tags of bench/tags, all on one image.
    #[arg(long, default_value_t = 500)]
    pub tags: usize,
    /// Timed requests per page, after 3 warm-ups [default: 30, quick 10].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Fewer samples (the same registry).
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub bins: setup::BinaryArgs,
    /// Directory for the run's temporary directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Keep the temporary directory (config, log, data) afterwards.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Clone, Debug)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Layers of the image.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Size of each layer [default: 32MiB, quick 8MiB].
    #[arg(long, value_parser = parse_size)]
    pub layer_size: Option<u64>,
    /// Clients pulling the uncached image at once.
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
}

#[derive(Args, Clone, Debug)]
pub struct ChaosArgs {
    /// How long the clients push and pull [default: 180s, quick 60s].
    #[arg(long, value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// A replica is SIGKILLed and started again this often (in turn).
    #[arg(long, value_parser = parse_secs, default_value = "30s")]
    pub kill_every: f64,
    /// Concurrent CI clients, each pushing into its own repository.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// A one-minute run.
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub bins: setup::BinaryArgs,
    /// garage binary [default: ~/.cache/berth/garage/bin, then PATH].
    #[arg(long)]
    pub garage: Option<PathBuf>,
    /// Directory for the run's temporary directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, Garage's data) afterwards.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Clone, Debug)]
pub struct FloodArgs {
    /// Connections sending a request head one byte a second [default: 2000, quick 500].
    #[arg(long)]
    pub dribblers: Option<usize>,
    /// Keep-alive connections idle after one request [default: 2000, quick 500].
    #[arg(long)]
    pub idlers: Option<usize>,
    /// The normal client's concurrent connections.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Each measurement phase [default: 10s, quick 3s].
    #[arg(long, value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Berth's `http.timeouts.readheader` and `idle` [default: duration + 15s].
    #[arg(long, value_parser = parse_secs)]
    pub timeout: Option<f64>,
    /// Size of the normal client's blobs [default: 64KiB].
    #[arg(long, value_parser = parse_size)]
    pub blob_size: Option<u64>,
    /// Fewer connections and shorter phases.
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub bins: setup::BinaryArgs,
    /// Directory for the run's temporary directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Keep the temporary directory (config, log, data) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Exit with status 1 unless every target passes.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// The registry's root URL (http:// only), e.g. http://127.0.0.1:5000.
    #[arg(long)]
    pub url: String,
    /// User for Basic auth or the token endpoint.
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    #[arg(long, requires = "user")]
    pub password: Option<String>,
    /// Token endpoint to use instead of the realm of a Bearer challenge.
    #[arg(long)]
    pub token_url: Option<String>,
    /// Scenarios, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<scenarios::Scenario>,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Smaller layers, fewer clients and shorter phases (see README.md).
    #[arg(long)]
    pub quick: bool,
}

/// How hard and how long the scenarios run.
#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Concurrent clients [default: 32, quick 8; large-layer: a quarter, 1..=4].
    #[arg(long)]
    pub clients: Option<usize>,
    /// Per scenario: seconds, or with a unit (500ms, 20s, 2m) [default: 20s, quick 4s].
    #[arg(long, value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Size of each large-layer layer [default: 256MiB, quick 32MiB].
    #[arg(long, value_parser = parse_size)]
    pub large_layer: Option<u64>,
}

#[derive(Args, Clone, Debug)]
pub struct VersusArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Scenarios, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<scenarios::Scenario>,
    /// bcrypt cost of the htpasswd entry for mixed-auth (htpasswd -B uses 5).
    #[arg(long, default_value_t = 5)]
    pub cost: u32,
    /// Where the chart goes.
    #[arg(long, default_value = "loadtest-versus.png")]
    pub png: PathBuf,
}

/// Options every run that starts registries shares.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Measure Berth only (no distribution).
    #[arg(long)]
    pub berth_only: bool,
    /// Shorter run with smaller sizes (see README.md).
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub bins: setup::BinaryArgs,
    /// Directory for the run's temporary directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, data) afterwards.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Clone, Debug)]
pub struct S3Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Size of the large blob on s3s-fs [default: 256MiB, quick 64MiB].
    #[arg(long, value_parser = parse_size)]
    pub blob_size: Option<u64>,
    /// Size of the large blob on moto (in memory) and for the request counts
    /// [default: 64MiB, quick 16MiB].
    #[arg(long, value_parser = parse_size)]
    pub moto_blob_size: Option<u64>,
    #[command(flatten)]
    pub blob_load: blobload::BlobLoadArgs,
    /// GETs of the large blob per configuration; the median counts [default: 3].
    #[arg(long)]
    pub pulls: Option<usize>,
    /// Berth processes behind nginx in the replicated configurations.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Run only these parts (comma-separated): matrix (Garage or s3s-fs,
    /// with the targets), moto
    /// (Berth and distribution side by side on moto), count (S3 requests
    /// per operation), budget (concurrent uploads under
    /// `storage.uploadbuffers`: peak RSS, PASS/FAIL).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<S3Part>,
    /// Size of each of the docker image's 4 layers [default: 12MiB, quick 2MiB].
    #[arg(long, value_parser = parse_size)]
    pub layer_size: Option<u64>,
    /// Skip docker push/pull in the request counts.
    #[arg(long)]
    pub no_docker: bool,
    /// Seconds to wait for dockerd to answer.
    #[arg(long, default_value_t = 60)]
    pub dockerd_timeout: u64,
    /// The store the request counts are taken on [default: Garage if
    /// installed, else moto if installed (distribution cannot run on
    /// s3s-fs), else s3s-fs].
    #[arg(long, value_enum)]
    pub count_store: Option<stores::StoreKind>,
    /// The store of the matrix (and its targets) [default: Garage if
    /// installed, else s3s-fs].
    #[arg(long, value_enum)]
    pub store: Option<stores::StoreKind>,
    /// garage binary [default: ~/.cache/berth/garage/bin, then PATH].
    #[arg(long)]
    pub garage: Option<PathBuf>,
    /// s3s-fs binary [default: PATH, then ~/.cargo/bin].
    #[arg(long)]
    pub s3s_fs: Option<PathBuf>,
    /// moto_server binary [default: ~/.cache/berth/moto/bin, then PATH].
    #[arg(long)]
    pub moto: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Part {
    Matrix,
    Moto,
    Count,
    /// Concurrent uploads under a small upload buffer budget: peak RSS.
    Budget,
}

#[derive(Args, Clone, Debug)]
pub struct AuthArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Concurrent connections for the HEAD loops and the wrong-password attack.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Connections measuring `GET /` (and a remembered HEAD) during the attack.
    #[arg(long, default_value_t = 2)]
    pub probe_connections: usize,
    /// Seconds per request-loop phase [default: 10, quick 3].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Users in the htpasswd file, each giving one uncached check [default: 5, quick 3].
    #[arg(long)]
    pub users: Option<usize>,
    /// bcrypt cost of the generated hashes (htpasswd -B uses 5; 10 is common).
    #[arg(long, default_value_t = 10)]
    pub cost: u32,
}

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// Measure Berth only (no distribution column).
    #[arg(long)]
    pub berth_only: bool,
    /// Fast smoke run: 128 MiB blob, 200 small blobs, 2 s load phases, small image.
    #[arg(long)]
    pub quick: bool,
    /// Size of the large blob (e.g. 1GiB, 256MiB, or bytes) [default: 1GiB, quick 128MiB].
    #[arg(long, value_parser = parse_size)]
    pub blob_size: Option<u64>,
    #[command(flatten)]
    pub blob_load: blobload::BlobLoadArgs,
    /// GETs of the large blob per server; the median counts [default: 3, quick 2].
    #[arg(long)]
    pub pulls: Option<usize>,
    /// Size of each of the image's 4 layers [default: 12MiB, quick 2MiB].
    #[arg(long, value_parser = parse_size)]
    pub layer_size: Option<u64>,
    /// Skip the docker push/pull workload.
    #[arg(long)]
    pub no_docker: bool,
    /// Run only these workloads (comma-separated: push, chunked, pull, small,
    /// rate, docker); `pull` implies `push`. Useful with a profiler attached.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Workload>,
    /// Seconds to wait for dockerd to answer.
    #[arg(long, default_value_t = 60)]
    pub dockerd_timeout: u64,
    #[command(flatten)]
    pub bins: setup::BinaryArgs,
    /// Directory for the run's temporary directory (its disk is the one measured).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Keep the temporary directory (roots, configs, logs) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Exit with status 1 unless every target passes.
    #[arg(long)]
    pub strict: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Push,
    Chunked,
    Pull,
    Small,
    Rate,
    Docker,
}

/// `20`, `2.5s`, `500ms`, `2m` → seconds.
fn parse_secs(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s, m)")),
    };
    if secs > 0.0 && secs.is_finite() {
        Ok(secs)
    } else {
        Err(format!("duration {s:?} must be positive"))
    }
}

/// `1GiB`, `16MiB`, `4KiB`, `4k`, `512` (bytes).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB, GiB)")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("size {s:?} out of range")),
        Some(v) => Ok(v),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the client must leave the two cores to the servers.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Compare(args) => {
                let strict = args.strict;
                let r = tokio::select! {
                    r = compare::run(args) => r,
                    e = interrupted() => e,
                };
                r.map(|report| (report.render(), !strict || report.all_pass()))
            }
            Command::S3(args) => tokio::select! {
                r = s3bench::run(args) => r.map(|text| (text, true)),
                e = interrupted() => e,
            },
            Command::Auth(args) => tokio::select! {
                r = authbench::run(args) => r.map(|text| (text, true)),
                e = interrupted() => e,
            },
            Command::Run(args) => tokio::select! {
                r = runcmd::run(args) => r,
                e = interrupted() => e,
            },
            Command::Versus(args) => tokio::select! {
                r = versus::run(args) => r,
                e = interrupted() => e,
            },
            Command::Flood(args) => tokio::select! {
                r = flood::run(args) => r,
                e = interrupted() => e,
            },
            Command::Chaos(args) => tokio::select! {
                r = chaos::run(args) => r,
                e = interrupted() => e,
            },
            Command::Proxy(args) => tokio::select! {
                r = proxybench::run(args) => r,
                e = interrupted() => e,
            },
            Command::Ui(args) => tokio::select! {
                r = uibench::run(args) => r,
                e = interrupted() => e,
            },
        }
    });
    match result {
        Ok((text, ok)) => {
            println!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves (to an error) on Ctrl-C; the run's future is then dropped, which
/// stops every server it started.
async fn interrupted<T>() -> anyhow::Result<T> {
    let _ = tokio::signal::ctrl_c().await;
    Err(anyhow::anyhow!("interrupted: servers stopped"))
}

#[cfg(test)]
mod tests {
    use super::{parse_secs, parse_size};

    #[test]
    fn durations() {
        assert_eq!(parse_secs("20"), Ok(20.0));
        assert_eq!(parse_secs("2.5s"), Ok(2.5));
        assert_eq!(parse_secs("500ms"), Ok(0.5));
        assert_eq!(parse_secs("2m"), Ok(120.0));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("3h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("0").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
