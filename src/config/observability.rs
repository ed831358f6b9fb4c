//! `[observability]` and `[request_log]` (gateway.md §11).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    pub log_format: LogFormat,
    pub log_level: String,
    /// Serve `/metrics` on this address instead of the main listener.
    pub metrics_listen: Option<String>,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".into(),
            metrics_listen: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLogConfig {
    pub enabled: bool,
    pub path: String,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub queue_capacity: usize,
    pub retention_days: u32,
    pub log_bodies: bool,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "gateway.sqlite".into(),
            batch_size: 256,
            flush_interval_ms: 1000,
            queue_capacity: 10_000,
            retention_days: 30,
            log_bodies: false,
        }
    }
}
