//! `[observability]` and `[request_log]` (gateway.md §11).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
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

/// Where request log rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLogBackend {
    #[default]
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLogConfig {
    pub enabled: bool,
    pub backend: RequestLogBackend,
    /// The SQLite file (`backend = "sqlite"`).
    pub path: String,
    /// May carry a password: prefer `postgres_url_env`. Never logged.
    pub postgres_url: Option<String>,
    pub postgres_url_env: Option<String>,
    /// Created with its indexes at start when missing.
    pub postgres_table: String,
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
            backend: RequestLogBackend::Sqlite,
            path: "gateway.sqlite".into(),
            postgres_url: None,
            postgres_url_env: None,
            postgres_table: "requests".into(),
            batch_size: 256,
            flush_interval_ms: 1000,
            queue_capacity: 10_000,
            retention_days: 30,
            log_bodies: false,
        }
    }
}
