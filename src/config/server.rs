//! `[server]`, `[limits]`, `[defaults]` and `[stream]`.

use serde::Deserialize;

use super::Strictness;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub max_body_bytes: usize,
    /// 0 = one worker per core.
    pub workers: usize,
    pub shutdown_grace_secs: u64,
    /// Reload when the config file changes (SIGHUP reloads either way).
    pub watch_config: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 32 * 1024 * 1024,
            workers: 0,
            shutdown_grace_secs: 30,
            watch_config: false,
        }
    }
}

/// Per-key limits; also the defaults for keys that set none. 0 = unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
    pub max_concurrent: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultsConfig {
    pub strictness: Strictness,
    pub anthropic_version: String,
}

impl Default for DefaultsConfig {
    fn default() -> Self {
        Self {
            strictness: Strictness::Warn,
            anthropic_version: "2023-06-01".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    pub ping_interval_ms: u64,
    pub usage_wait_ms: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            ping_interval_ms: 5000,
            usage_wait_ms: 2000,
        }
    }
}
