//! Logs via tracing: text or JSON per `log.formatter`, level per `log.level`
//! (RUST_LOG, when set, wins for finer filtering), `log.fields` on every
//! line; OpenTelemetry traces in [`otel`]; Prometheus metrics in [`metrics`].

mod fields;
pub mod metrics;
pub mod otel;

use std::io::IsTerminal;

use tracing_subscriber::{
    filter::filter_fn, fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer,
};

use crate::config::{Config, LogConfig};

/// Keeps the trace exporter alive; dropping it flushes the spans still
/// queued (bounded by the exporter's timeout).
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("berth: flushing traces: {e}");
            }
        }
    }
}

/// Logs only (for commands that do not serve).
pub fn init_logging(cfg: &LogConfig) {
    install(cfg, None);
}

/// Logs, and traces when configured (`tracing:` or OTEL_* env).
pub fn init(cfg: &Config) -> Result<Telemetry, String> {
    let provider = if otel::wanted(&cfg.tracing) {
        Some(otel::provider(&cfg.tracing)?)
    } else {
        None
    };
    install(&cfg.log, provider.as_ref());
    Ok(Telemetry { provider })
}

fn install(cfg: &LogConfig, provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colour codes only for a person at a terminal, never into log files.
    let ansi = std::io::stderr().is_terminal() && cfg.fields.is_empty();
    let base = fmt::format().with_ansi(ansi);
    let json = cfg.formatter != "text";
    let log_layer = if json {
        fmt::layer()
            .event_format(fields::WithFields::json(
                base.json().flatten_event(true),
                &cfg.fields,
            ))
            .fmt_fields(fmt::format::JsonFields::new())
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer()
            .event_format(fields::WithFields::text(base, &cfg.fields))
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };
    // Spans made for export stay out of log lines (and cost the log layer
    // nothing); events inside them are logged as before.
    let log_layer = log_layer
        .with_filter(filter_fn(|meta| {
            !(meta.is_span() && meta.target() == otel::TARGET)
        }))
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(log_layer);
    // A second init (tests) keeps the first subscriber, hence no unwrap.
    let traces = provider
        .map(|p| otel::layer(p).with_filter(filter_fn(|meta| meta.target() == otel::TARGET)));
    let _ = registry.with(traces).try_init();
}
