//! Logs via tracing: text or JSON per `log.formatter`, level per `log.level`
//! (RUST_LOG, when set, wins for finer filtering); Prometheus metrics in
//! [`metrics`].

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogConfig;

pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colour codes only for a person at a terminal, never into log files.
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if cfg.formatter == "text" {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
