//! `[observability]` and `[request_log]` (gateway.md §11).

use std::collections::BTreeMap;

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
    /// Trace export; `None` = no exporter at all.
    pub otlp: Option<OtlpConfig>,
}

/// `[observability.otlp]`: OTLP/HTTP trace export.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Base URL; `/v1/traces` is appended.
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Header name → environment variable holding its value (values are secrets).
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of traces recorded (a sampled incoming parent is always followed).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

impl OtlpConfig {
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

fn default_service_name() -> String {
    "aigw".into()
}

fn default_sample_ratio() -> f64 {
    1.0
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".into(),
            metrics_listen: None,
            otlp: None,
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
