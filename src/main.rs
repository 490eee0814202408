//! The `berth` command line: thin on purpose; the work is in the library.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use berth::config::Config;

/// Every S3 request allocates and frees a few hundred small objects across
/// threads (the SDK's request, config bag and interceptors; hyper's
/// buffers): under glibc's malloc a blob HEAD spent ~20 % of its CPU in
/// malloc and on its arena locks (`perf`, 64 clients on Garage).
/// Measured with `loadtest s3` (Garage, 64 clients): blob HEAD without a
/// cache 3,500 -> 6,100 req/s, the rest unchanged.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mi_option_e` in mimalloc.h, v2
/// and v3 alike; libmimalloc-sys names the options around it, not this one).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed pages go back to the OS at once rather than 10 ms later, so that
/// RSS follows `storage.uploadbuffers.budget`: with the delay, 100
/// concurrent uploads' freed part buffers lingered as RSS 30 MiB past the
/// budget's bound (`loadtest s3 --only budget`: peak 285 MiB, 232 MiB at
/// once), at no cost the benchmarks could see. (Under glibc's malloc the
/// same needed `M_MMAP_THRESHOLD` pinned at 1 MiB.)
fn tune_allocator() {
    // SAFETY: sets a process-wide option mimalloc reads on each purge; any
    // value is valid (0: purge immediately).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "An OCI Distribution v1.1 container registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (with no config: filesystem under ./data on 127.0.0.1:5000).
    Serve {
        /// Configuration file (distribution's config.yml schema).
        #[arg(long = "config", short = 'c', env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// The configuration file, given positionally as with `registry serve FILE`.
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
    },
    /// Delete blobs no manifest references, online: servers keep serving
    /// pushes meanwhile (see README, Garbage collection).
    GarbageCollect {
        /// Configuration file, the same one `serve` uses.
        #[arg(long = "config", short = 'c', env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// The configuration file, given positionally as with
        /// `registry garbage-collect FILE`.
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
        /// Report what would be deleted and change nothing.
        #[arg(long, short = 'd')]
        dry_run: bool,
        /// Also delete manifests no tag points at (never an index's child or
        /// a referrer of a kept manifest).
        #[arg(long, short = 'm')]
        delete_untagged: bool,
        /// Keep unreferenced blobs and untagged manifests younger than this
        /// (pushes in progress).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        grace_period: std::time::Duration,
    },
    /// The repository index behind `/v2/_catalog` (see README, Catalog).
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Exit 0 if the Berth this configuration describes answers
    /// `/health/storage` with 200 (for container HEALTHCHECKs).
    Healthcheck {
        #[arg(long = "config", short = 'c', env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
        /// host:port to ask instead of the configured `http.addr`.
        #[arg(long)]
        addr: Option<String>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Add every repository in storage to the index and mark it complete
    /// (once, for storage distribution or an older Berth wrote); safe while
    /// servers run.
    Rebuild {
        /// Configuration file, the same one `serve` uses.
        #[arg(long = "config", short = 'c', env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// The configuration file, given positionally.
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with REGISTRY_* overrides) without serving.
    Check { file: PathBuf },
}

/// Exit code for configuration errors.
const CONFIG_ERROR: u8 = 2;

/// One warning line per distribution key accepted but not acted on, and per
/// `REGISTRY_*` variable skipped.
fn log_config_warnings(cfg: &Config) {
    for w in &cfg.warnings {
        tracing::warn!("configuration: {w}");
    }
}

/// The configuration at `path` (or the embedded default), or the exit code
/// of a configuration error, said on stderr.
fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("berth: {e}");
        ExitCode::from(CONFIG_ERROR)
    })
}

/// As [`load_config`], for the one-shot commands (garbage-collect, index
/// rebuild): logging set up from it and its warnings logged.
fn tool_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    let cfg = load_config(path)?;
    berth::telemetry::init_logging(&cfg.log);
    log_config_warnings(&cfg);
    Ok(cfg)
}

fn main() -> ExitCode {
    tune_allocator();
    // Before any TLS client or listener is built (see the function's doc).
    berth::config::tls::install_default_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, file } => {
            let cfg = match load_config(config.or(file).as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = berth::auth::check(&cfg) {
                eprintln!("berth: configuration error: {e}");
                return ExitCode::from(CONFIG_ERROR);
            }
            let _telemetry = match berth::telemetry::init(&cfg) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("berth: {e}");
                    return ExitCode::from(CONFIG_ERROR);
                }
            };
            log_config_warnings(&cfg);
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(cfg.http.bind_addr()).await?;
                berth::server::serve(&cfg, listener, berth::server::shutdown_signal()).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berth: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::GarbageCollect {
            config,
            file,
            dry_run,
            delete_untagged,
            grace_period,
        } => {
            let cfg = match tool_config(config.or(file).as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if grace_period < std::time::Duration::from_secs(60) && !dry_run {
                tracing::warn!(
                    ?grace_period,
                    "a grace period under a minute can delete the layers of a push in progress, \
                     and is below the timestamp precision and clock skew of some stores"
                );
            }
            let opts = berth::registry::gc::GcOptions {
                dry_run,
                delete_untagged,
                grace: grace_period,
                ..Default::default()
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(berth::server::garbage_collect(&cfg, &opts)) {
                Ok(report) => {
                    println!("garbage-collect: {report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berth: garbage-collect: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Index {
            command: IndexCommand::Rebuild { config, file },
        } => {
            let cfg = match tool_config(config.or(file).as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(berth::server::index_rebuild(&cfg)) {
                Ok(report) => {
                    println!("index rebuild: {report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berth: index rebuild: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Healthcheck { config, file, addr } => {
            let cfg = match load_config(config.or(file).as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(berth::health::probe(&cfg, addr.as_deref())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berth: healthcheck: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load(Some(&file)) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    eprintln!("berth: warning: {w}");
                }
                if let Err(e) = berth::auth::check(&cfg) {
                    eprintln!("berth: configuration error: {e}");
                    return ExitCode::from(CONFIG_ERROR);
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("berth: {e}");
                ExitCode::from(CONFIG_ERROR)
            }
        },
    }
}
