//! Logging setup: `log_format = "text" | "json"`, level from the config unless `RUST_LOG` is set.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, ObservabilityConfig};

pub fn init(config: &ObservabilityConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    // Logs go to stderr, coloured only on a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
