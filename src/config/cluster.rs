//! `[cluster]`: several replicas sharing per-key limits and deployment health through Redis.

use serde::Deserialize;

/// What admission does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    /// Each replica enforces the configured limits alone until Redis is back.
    #[default]
    Local,
    /// Refuse what needs a shared limit (529 `overloaded_error`, `x-should-retry: true`).
    Deny,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// May carry a password: prefer `redis_url_env`. Never logged.
    pub redis_url: Option<String>,
    pub redis_url_env: Option<String>,
    /// Every Redis key starts with `<key_prefix>:`.
    pub key_prefix: String,
    pub on_redis_error: OnRedisError,
    /// A dead replica's concurrency slots are freed after this.
    pub lease_secs: u64,
    /// The bound on every Redis call.
    pub timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_url_env: None,
            key_prefix: "aigw".into(),
            on_redis_error: OnRedisError::Local,
            lease_secs: 30,
            timeout_ms: 50,
        }
    }
}
