//! `[server]`, `[limits]`, `[defaults]` and `[stream]`.

use serde::Deserialize;

use std::net::SocketAddr;

use super::{ConfigError, Strictness, SUPPORTED_ANTHROPIC_VERSIONS};

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

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new("server.listen", "must be an address like 127.0.0.1:8080")
        })?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new(
                "server.max_body_bytes",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl DefaultsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !SUPPORTED_ANTHROPIC_VERSIONS.contains(&self.anthropic_version.as_str()) {
            return Err(ConfigError::new(
                "defaults.anthropic_version",
                format!("must be one of {}", SUPPORTED_ANTHROPIC_VERSIONS.join(", ")),
            ));
        }

        Ok(())
    }
}

impl StreamConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.ping_interval_ms == 0 {
            return Err(ConfigError::new(
                "stream.ping_interval_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
