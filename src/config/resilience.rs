//! `[retry]`, `[timeouts]` and `[circuit_breaker]` (gateway.md §7.3–§7.5).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_retries: u32,
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    pub max_retry_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            max_attempts: 4,
            base_delay_ms: 250,
            max_delay_ms: 8000,
            max_retry_after_ms: 20_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    pub connect_ms: u64,
    pub ttft_ms: u64,
    pub attempt_ms: u64,
    pub idle_ms: u64,
    pub total_ms: u64,
    /// How long bytes may wait for a stream client to accept them before the session ends
    /// (`499 client_stalled`): a client that stops reading cannot pin a session.
    pub client_write_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            ttft_ms: 60_000,
            attempt_ms: 600_000,
            idle_ms: 120_000,
            total_ms: 1_800_000,
            client_write_ms: 30_000,
        }
    }
}

impl TimeoutsConfig {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn ttft(&self) -> Duration {
        Duration::from_millis(self.ttft_ms)
    }
    pub fn attempt(&self) -> Duration {
        Duration::from_millis(self.attempt_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
    pub fn client_write(&self) -> Duration {
        Duration::from_millis(self.client_write_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    pub consecutive_failures: u32,
    pub failure_ratio: f64,
    pub window_secs: u64,
    pub min_requests: u32,
    pub cooldown_secs: u64,
    pub max_cooldown_secs: u64,
    pub rate_limit_cooldown_ms: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window_secs: 30,
            min_requests: 10,
            cooldown_secs: 30,
            max_cooldown_secs: 300,
            rate_limit_cooldown_ms: 5000,
        }
    }
}

impl TimeoutsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (k, v) in [
            ("timeouts.connect_ms", self.connect_ms),
            ("timeouts.ttft_ms", self.ttft_ms),
            ("timeouts.attempt_ms", self.attempt_ms),
            ("timeouts.idle_ms", self.idle_ms),
            ("timeouts.total_ms", self.total_ms),
            ("timeouts.client_write_ms", self.client_write_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::new(k, "must be at least 1"));
            }
        }
        Ok(())
    }
}

impl RetryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new("retry.max_attempts", "must be at least 1"));
        }
        Ok(())
    }
}

impl CircuitBreakerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.failure_ratio) {
            return Err(ConfigError::new(
                "circuit_breaker.failure_ratio",
                "must be within 0..1",
            ));
        }

        Ok(())
    }
}
