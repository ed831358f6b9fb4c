//! Logging setup: `log_format = "text" | "json"`, level from the config unless `RUST_LOG` is set;
//! with `[observability.otlp]`, the spans are exported too (see [`crate::observability::otlp`]).

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{Config, LogFormat, ObservabilityConfig};
use crate::observability::otlp;

/// Logs only.
pub fn init(config: &ObservabilityConfig) {
    let _ = install(config, None);
}

/// Logs, and span export when the config asks for it. Call once, inside nothing: the exporter
/// runs on a thread of its own.
pub fn init_with_export(config: &Config) -> std::io::Result<()> {
    let provider = match &config.observability.otlp {
        Some(otlp) => Some(otlp::start(otlp, &config.secrets.otlp_headers)?),
        None => None,
    };
    install(&config.observability, provider)
}

fn install(
    config: &ObservabilityConfig,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
) -> std::io::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    // Logs go to stderr, coloured only on a terminal.
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = match config.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    // Exported spans do not depend on the log level: the gateway's own spans, always.
    let export = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(otlp::tracer(&p))
            .with_filter(filter_fn(|m| m.is_span() && m.target().starts_with("aigw")))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(export)
        .try_init()
        .map_err(std::io::Error::other)
}
