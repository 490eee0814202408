//! The `berth` command line: thin on purpose; the work is in the library.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use berth::config::Config;

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
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with REGISTRY_* overrides) without serving.
    Check { file: PathBuf },
}

/// Exit code for configuration errors.
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, file } => {
            let cfg = match Config::load(config.or(file).as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("berth: {e}");
                    return ExitCode::from(CONFIG_ERROR);
                }
            };
            berth::telemetry::init_logging(&cfg.log);
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
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load(Some(&file)) {
            Ok(_) => {
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
