//! `[observability]` and `[request_log]` (gateway.md §11).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, Secret};

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

    /// Checks the section and resolves `headers_env` (`read_env(key path, variable)`).
    pub(super) fn validate(
        &self,
        read_env: &dyn Fn(String, &str) -> Result<Secret, ConfigError>,
    ) -> Result<Vec<(String, Secret)>, ConfigError> {
        let at = |k: &str| format!("observability.otlp.{k}");
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(ConfigError::new(
                at("endpoint"),
                "must start with http:// or https://",
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::new(at("sample_ratio"), "must be within 0..1"));
        }
        if self.service_name.is_empty() {
            return Err(ConfigError::new(at("service_name"), "must not be empty"));
        }
        self.headers_env
            .iter()
            .map(|(name, var)| {
                let path = format!("observability.otlp.headers_env.{name}");
                if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(ConfigError::new(path, "not a valid header name"));
                }
                Ok((name.clone(), read_env(path, var)?))
            })
            .collect()
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

/// Where request log rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLogBackend {
    #[default]
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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

impl ObservabilityConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(addr) = &self.metrics_listen {
            addr.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "observability.metrics_listen",
                    "must be an address like 127.0.0.1:9090",
                )
            })?;
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(ConfigError::new(
                "observability.log_level",
                "not a valid level or filter",
            ));
        }
        Ok(())
    }
}

impl RequestLogConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let rl = self;
        if rl.enabled && (rl.batch_size == 0 || rl.queue_capacity == 0 || rl.flush_interval_ms == 0)
        {
            return Err(ConfigError::new(
                "request_log",
                "batch_size, queue_capacity and flush_interval_ms must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(otlp: &str) -> Result<Config, String> {
        let text = format!("auth.disabled = true\n[observability.otlp]\n{otlp}\n");
        Config::from_toml_with_env(&text, &|v| (v == "TOKEN").then(|| "t0k".into()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn otlp_section_defaults_and_errors_name_the_key() {
        let c = load("endpoint = \"http://127.0.0.1:4318/\"").unwrap();
        let otlp = c.observability.otlp.unwrap();
        assert_eq!(otlp.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(otlp.protocol, super::OtlpProtocol::HttpProtobuf);
        assert_eq!(
            (otlp.service_name.as_str(), otlp.sample_ratio),
            ("aigw", 1.0)
        );
        let c = load("endpoint = \"https://x\"\nprotocol = \"http/json\"\nheaders_env = { \"x-team\" = \"TOKEN\" }").unwrap();
        assert_eq!(c.secrets.otlp_headers[0].0, "x-team");
        assert_eq!(c.secrets.otlp_headers[0].1.expose(), "t0k");
        assert!(
            !format!("{c:?}").contains("t0k"),
            "the header value is a secret"
        );
        for (otlp, err) in [
            (
                "endpoint = \"localhost:4318\"",
                "observability.otlp.endpoint: must start with http:// or https://",
            ),
            (
                "endpoint = \"http://x\"\nsample_ratio = 2.0",
                "observability.otlp.sample_ratio: must be within 0..1",
            ),
            (
                "endpoint = \"http://x\"\nheaders_env = { \"x\" = \"MISSING\" }",
                "observability.otlp.headers_env.x: environment variable MISSING is not set",
            ),
            (
                "endpoint = \"http://x\"\nprotocol = \"grpc\"",
                "observability.otlp.protocol",
            ),
        ] {
            let e = load(otlp).unwrap_err();
            assert!(e.contains(err), "{e}");
        }
    }
}
