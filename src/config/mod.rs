//! Configuration: serde structs (`deny_unknown_fields`, defaults from gateway.md §12), loaded then
//! validated. A bad config names the exact key path and why. Secrets are read from the environment
//! during validation and never stored in the file.

mod auth;
mod cluster;
mod models;
mod observability;
mod providers;
mod resilience;
mod server;
mod tools;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use auth::{AuthConfig, KeyConfig};
pub use cluster::{ClusterConfig, OnRedisError};
pub use models::{DeploymentConfig, ModelConfig, Price};
pub use observability::{LogFormat, ObservabilityConfig, RequestLogBackend, RequestLogConfig};
pub use providers::{
    CacheControlMode, CapabilityOverrides, MockToolMode, ProviderConfig, ProviderKind,
    StreamToolCalls,
};
pub use resilience::{CircuitBreakerConfig, RetryConfig, TimeoutsConfig};
pub use server::{DefaultsConfig, LimitsConfig, ServerConfig, StreamConfig};
pub use tools::{
    AdvisorConfig, DatetimeConfig, ImageGenerationConfig, SearchEngineConfig, SearchEngineKind,
    ToolsConfig, WebFetchConfig, WebSearchConfig,
};

/// `anthropic-version` values the gateway speaks (messages-api.md §2.2).
pub const SUPPORTED_ANTHROPIC_VERSIONS: [&str; 2] = ["2023-06-01", "2026-10-21"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strictness {
    Off,
    #[default]
    Warn,
    Error,
}

impl Strictness {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub defaults: DefaultsConfig,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
    pub retry: RetryConfig,
    pub timeouts: TimeoutsConfig,
    pub circuit_breaker: CircuitBreakerConfig,
    pub stream: StreamConfig,
    pub tools: ToolsConfig,
    pub observability: ObservabilityConfig,
    pub request_log: RequestLogConfig,
    /// `None`: one replica alone (in-process limits and health).
    pub cluster: Option<ClusterConfig>,
    /// Filled by validation: secrets read from the environment, never from the file.
    #[serde(skip)]
    pub secrets: Secrets,
}

/// Secrets resolved from the environment. `Debug` never prints them.
#[derive(Clone, Default)]
pub struct Secrets {
    /// SHA-256 of each gateway key, by `auth.keys` index.
    pub key_hashes: Vec<[u8; 32]>,
    /// Provider keys by provider name.
    pub provider_keys: HashMap<String, Secret>,
    /// Search engine keys by engine name.
    pub engine_keys: HashMap<String, Secret>,
    /// `cluster.redis_url(_env)`: a URL may carry a password.
    pub redis_url: Option<Secret>,
    /// `request_log.postgres_url(_env)`, with `backend = "postgres"`.
    pub postgres_url: Option<Secret>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets([redacted])")
    }
}

/// A secret value. It has no `Display` and its `Debug` is redacted, so it cannot leak through
/// formatting by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A configuration problem, located by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Parses and validates config text, reading secrets from the process environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with_env(text, &|name| std::env::var(name).ok())
    }

    /// As [`Config::from_toml`], with an explicit environment (tests use this to avoid touching
    /// the process environment).
    pub fn from_toml_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let de =
            toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e, String::new()))?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            toml_error(
                text,
                e.inner(),
                if path == "." { String::new() } else { path },
            )
        })?;
        config.validate(env)?;
        Ok(config)
    }

    /// Semantic checks that serde cannot express; fills [`Config::secrets`].
    fn validate(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let read_env = |path: String, var: &str| -> Result<Secret, ConfigError> {
            match env(var) {
                Some(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim().to_string())),
                _ => Err(ConfigError::new(
                    path,
                    format!("environment variable {var} is not set"),
                )),
            }
        };

        self.server.listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new("server.listen", "must be an address like 127.0.0.1:8080")
        })?;
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::new(
                "server.max_body_bytes",
                "must be at least 1",
            ));
        }
        if !SUPPORTED_ANTHROPIC_VERSIONS.contains(&self.defaults.anthropic_version.as_str()) {
            return Err(ConfigError::new(
                "defaults.anthropic_version",
                format!("must be one of {}", SUPPORTED_ANTHROPIC_VERSIONS.join(", ")),
            ));
        }

        // Providers.
        let mut provider_names = HashSet::new();
        for (i, p) in self.providers.iter_mut().enumerate() {
            let at = |k: &str| format!("providers[{i}].{k}");
            if !valid_name(&p.name) {
                return Err(ConfigError::new(
                    at("name"),
                    "must be 1..64 chars of [A-Za-z0-9_.-]",
                ));
            }
            if !provider_names.insert(p.name.clone()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("duplicate provider \"{}\"", p.name),
                ));
            }
            match p.kind {
                ProviderKind::Anthropic | ProviderKind::Openai => {
                    let default = match p.kind {
                        ProviderKind::Anthropic => "https://api.anthropic.com",
                        _ => "https://api.openai.com/v1",
                    };
                    let url = p.base_url.get_or_insert_with(|| default.to_string());
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(ConfigError::new(
                            at("base_url"),
                            "must start with http:// or https://",
                        ));
                    }
                    while url.ends_with('/') {
                        url.pop();
                    }
                }
                ProviderKind::Mock => {
                    if p.base_url.is_some() {
                        return Err(ConfigError::new(
                            at("base_url"),
                            "the mock provider has no upstream",
                        ));
                    }
                    if p.chunk_chars == 0 {
                        return Err(ConfigError::new(at("chunk_chars"), "must be at least 1"));
                    }
                }
            }
            if p.kind != ProviderKind::Mock
                && (p.reply.is_some()
                    || p.tool_mode != MockToolMode::None
                    || p.ttft_ms != 0
                    || p.chunk_delay_ms != 0)
            {
                return Err(ConfigError::new(
                    at("kind"),
                    "reply, tool_mode, ttft_ms and chunk_delay_ms are options of the mock kind only",
                ));
            }
            if let Some(var) = &p.api_key_env {
                let secret = read_env(at("api_key_env"), var)?;
                self.secrets.provider_keys.insert(p.name.clone(), secret);
            }
            for (j, t) in p.native_tools.iter().enumerate() {
                if t != "web_search" && t != "web_fetch" {
                    return Err(ConfigError::new(
                        format!("providers[{i}].native_tools[{j}]"),
                        "must be web_search or web_fetch",
                    ));
                }
            }
            if p.kind != ProviderKind::Anthropic && !p.native_tools.is_empty() {
                return Err(ConfigError::new(
                    at("native_tools"),
                    "only anthropic providers run native tools",
                ));
            }
            for name in p.headers.keys() {
                let lower = name.to_ascii_lowercase();
                if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(ConfigError::new(
                        format!("providers[{i}].headers.{name}"),
                        "not a valid header name",
                    ));
                }
                if matches!(
                    lower.as_str(),
                    "host" | "content-length" | "content-type" | "transfer-encoding"
                ) {
                    return Err(ConfigError::new(
                        format!("providers[{i}].headers.{name}"),
                        "is set by the gateway",
                    ));
                }
            }
            if let Some(r) = &p.capabilities.reasoning {
                if r != "effort" && r != "none" {
                    return Err(ConfigError::new(
                        at("capabilities.reasoning"),
                        "must be \"effort\" or \"none\"",
                    ));
                }
            }
            if p.capabilities.max_stop_sequences == Some(0) {
                return Err(ConfigError::new(
                    at("capabilities.max_stop_sequences"),
                    "must be at least 1",
                ));
            }
            // The anthropic kind forwards bodies as they are and the mock takes everything:
            // overrides there would be silently ignored, so they are refused.
            if p.kind != ProviderKind::Openai {
                if p.capabilities != CapabilityOverrides::default() {
                    return Err(ConfigError::new(
                        at("capabilities"),
                        "applies to openai providers only",
                    ));
                }
                if p.stream_tool_calls != StreamToolCalls::Live {
                    return Err(ConfigError::new(
                        at("stream_tool_calls"),
                        "applies to openai providers only",
                    ));
                }
            }
            if let Some(f) = &p.capabilities.max_tokens_field {
                if f != "max_tokens" && f != "max_completion_tokens" {
                    return Err(ConfigError::new(
                        at("capabilities.max_tokens_field"),
                        "must be \"max_tokens\" or \"max_completion_tokens\"",
                    ));
                }
            }
        }

        // Models and aliases share one namespace.
        let mut model_names = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            for (k, name) in std::iter::once(("id".to_string(), &m.id)).chain(
                m.aliases
                    .iter()
                    .enumerate()
                    .map(|(j, a)| (format!("aliases[{j}]"), a)),
            ) {
                if name.is_empty() || name.len() > 256 {
                    return Err(ConfigError::new(
                        format!("models[{i}].{k}"),
                        "must be 1..256 chars",
                    ));
                }
                if !model_names.insert(name.clone()) {
                    return Err(ConfigError::new(
                        format!("models[{i}].{k}"),
                        format!("\"{name}\" is already a model id or alias"),
                    ));
                }
            }
            if m.deployments.is_empty() {
                return Err(ConfigError::new(
                    format!("models[{i}].deployments"),
                    "must list at least one deployment",
                ));
            }
            if let Some(c) = &m.created_at {
                if chrono::DateTime::parse_from_rfc3339(c).is_err() {
                    return Err(ConfigError::new(
                        format!("models[{i}].created_at"),
                        "must be an RFC 3339 timestamp",
                    ));
                }
            }
            for (j, d) in m.deployments.iter().enumerate() {
                let at = |k: &str| format!("models[{i}].deployments[{j}].{k}");
                if !provider_names.contains(&d.provider) {
                    return Err(ConfigError::new(
                        at("provider"),
                        format!("unknown provider \"{}\"", d.provider),
                    ));
                }
                if d.model.is_empty() {
                    return Err(ConfigError::new(at("model"), "must not be empty"));
                }
                if let Some(p) = d.price {
                    if !(p.input >= 0.0 && p.output >= 0.0) {
                        return Err(ConfigError::new(at("price"), "must be non-negative"));
                    }
                }
            }
        }

        // Keys.
        if !self.auth.disabled && self.auth.keys.is_empty() {
            return Err(ConfigError::new(
                "auth.keys",
                "no keys configured; add [[auth.keys]] or set auth.disabled = true",
            ));
        }
        let mut key_names = HashSet::new();
        let mut hashes = HashSet::new();
        for (i, k) in self.auth.keys.iter().enumerate() {
            let at = |f: &str| format!("auth.keys[{i}].{f}");
            if !valid_name(&k.name) {
                return Err(ConfigError::new(
                    at("name"),
                    "must be 1..64 chars of [A-Za-z0-9_.-]",
                ));
            }
            if !key_names.insert(k.name.clone()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("duplicate key name \"{}\"", k.name),
                ));
            }
            let hash = match (&k.secret_env, &k.secret_sha256) {
                (Some(var), None) => {
                    let secret = read_env(at("secret_env"), var)?;
                    Sha256::digest(secret.expose().as_bytes()).into()
                }
                (None, Some(hex_hash)) => {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(hex_hash.trim(), &mut out).map_err(|_| {
                        ConfigError::new(
                            at("secret_sha256"),
                            "must be 64 hex characters (a SHA-256 digest)",
                        )
                    })?;
                    out
                }
                _ => {
                    return Err(ConfigError::new(
                        at("secret_env"),
                        "set exactly one of secret_env and secret_sha256",
                    ))
                }
            };
            if !hashes.insert(hash) {
                return Err(ConfigError::new(
                    at("name"),
                    "two keys have the same secret",
                ));
            }
            self.secrets.key_hashes.push(hash);
            for (j, m) in k.allowed_models.iter().enumerate() {
                if m != "*" && !model_names.contains(m) {
                    return Err(ConfigError::new(
                        format!("auth.keys[{i}].allowed_models[{j}]"),
                        format!("unknown model \"{m}\""),
                    ));
                }
            }
        }

        // Timeouts and retries.
        for (k, v) in [
            ("timeouts.connect_ms", self.timeouts.connect_ms),
            ("timeouts.ttft_ms", self.timeouts.ttft_ms),
            ("timeouts.attempt_ms", self.timeouts.attempt_ms),
            ("timeouts.idle_ms", self.timeouts.idle_ms),
            ("timeouts.total_ms", self.timeouts.total_ms),
            ("stream.ping_interval_ms", self.stream.ping_interval_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::new(k, "must be at least 1"));
            }
        }
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::new("retry.max_attempts", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.circuit_breaker.failure_ratio) {
            return Err(ConfigError::new(
                "circuit_breaker.failure_ratio",
                "must be within 0..1",
            ));
        }

        // Tools.
        if self.tools.max_rounds == 0 {
            return Err(ConfigError::new("tools.max_rounds", "must be at least 1"));
        }
        if self.tools.max_concurrency == 0 {
            return Err(ConfigError::new(
                "tools.max_concurrency",
                "must be at least 1",
            ));
        }
        if self
            .tools
            .datetime
            .default_timezone
            .parse::<chrono_tz::Tz>()
            .is_err()
        {
            return Err(ConfigError::new(
                "tools.datetime.default_timezone",
                "unknown IANA time zone",
            ));
        }
        for (k, v) in [
            (
                "tools.web_search.timeout_ms",
                self.tools.web_search.timeout_ms,
            ),
            (
                "tools.web_search.max_content_chars",
                self.tools.web_search.max_content_chars as u64,
            ),
            (
                "tools.web_fetch.timeout_ms",
                self.tools.web_fetch.timeout_ms,
            ),
            (
                "tools.web_fetch.max_bytes",
                self.tools.web_fetch.max_bytes as u64,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::new(k, "must be at least 1"));
            }
        }
        let wf = &self.tools.web_fetch;
        if wf.max_redirects > 20 {
            return Err(ConfigError::new(
                "tools.web_fetch.max_redirects",
                "must be at most 20",
            ));
        }
        if wf.user_agent.trim().is_empty()
            || actix_web::http::header::HeaderValue::from_str(&wf.user_agent).is_err()
        {
            return Err(ConfigError::new(
                "tools.web_fetch.user_agent",
                "must be a non-empty header value",
            ));
        }
        let ws = &mut self.tools.web_search;
        for (name, engine) in &ws.engines {
            let at = |k: &str| format!("tools.web_search.engines.{name}.{k}");
            if engine.kind == SearchEngineKind::Searxng && engine.base_url.is_none() {
                return Err(ConfigError::new(
                    at("base_url"),
                    "searxng needs the instance's base_url",
                ));
            }
            if let Some(url) = &engine.base_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::new(
                        at("base_url"),
                        "must start with http:// or https://",
                    ));
                }
            }
            match (&engine.api_key_env, engine.kind) {
                (Some(var), _) => {
                    let secret = read_env(at("api_key_env"), var)?;
                    self.secrets.engine_keys.insert(name.clone(), secret);
                }
                (None, SearchEngineKind::Searxng) => {}
                (None, _) => {
                    return Err(ConfigError::new(
                        at("api_key_env"),
                        "this engine needs an API key",
                    ))
                }
            }
        }
        match &ws.default_engine {
            Some(e) if !ws.engines.contains_key(e) => {
                return Err(ConfigError::new(
                    "tools.web_search.default_engine",
                    format!("unknown engine \"{e}\""),
                ))
            }
            None if ws.engines.len() == 1 => ws.default_engine = ws.engines.keys().next().cloned(),
            _ => {}
        }
        if let Some(m) = &self.tools.advisor.default_model {
            if !model_names.contains(m) {
                return Err(ConfigError::new(
                    "tools.advisor.default_model",
                    format!("unknown model \"{m}\""),
                ));
            }
        }
        let ig = &self.tools.image_generation;
        if let Some(p) = &ig.provider {
            match self.providers.iter().find(|x| &x.name == p) {
                Some(x) if x.kind == ProviderKind::Openai => {}
                Some(_) => {
                    return Err(ConfigError::new(
                        "tools.image_generation.provider",
                        "must be an openai-kind provider",
                    ))
                }
                None => {
                    return Err(ConfigError::new(
                        "tools.image_generation.provider",
                        format!("unknown provider \"{p}\""),
                    ))
                }
            }
            if ig.model.is_none() {
                return Err(ConfigError::new(
                    "tools.image_generation.model",
                    "required with a provider",
                ));
            }
        }

        // Observability.
        if let Some(addr) = &self.observability.metrics_listen {
            addr.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "observability.metrics_listen",
                    "must be an address like 127.0.0.1:9090",
                )
            })?;
        }
        if tracing_subscriber::EnvFilter::try_new(&self.observability.log_level).is_err() {
            return Err(ConfigError::new(
                "observability.log_level",
                "not a valid level or filter",
            ));
        }
        let rl = &self.request_log;
        if rl.enabled && (rl.batch_size == 0 || rl.queue_capacity == 0 || rl.flush_interval_ms == 0)
        {
            return Err(ConfigError::new(
                "request_log",
                "batch_size, queue_capacity and flush_interval_ms must be at least 1",
            ));
        }
        // A URL written in the file moves to the secrets: `Debug` of the config never shows it.
        let inline_postgres = self.request_log.postgres_url.take();
        let rl = &self.request_log;
        if rl.backend == RequestLogBackend::Postgres {
            let url = one_url(
                "request_log.postgres_url",
                inline_postgres.as_deref(),
                rl.postgres_url_env.as_deref(),
                &read_env,
            )?;
            if url.expose().parse::<postgres::Config>().is_err() {
                return Err(ConfigError::new(
                    "request_log.postgres_url",
                    "not a valid PostgreSQL connection URL",
                ));
            }
            if !valid_sql_identifier(&rl.postgres_table) {
                return Err(ConfigError::new(
                    "request_log.postgres_table",
                    "must be 1..63 chars of [a-z0-9_], not starting with a digit",
                ));
            }
            self.secrets.postgres_url = Some(url);
        }

        // Cluster.
        let inline_redis = self.cluster.as_mut().and_then(|c| c.redis_url.take());
        if let Some(c) = &self.cluster {
            let url = one_url(
                "cluster.redis_url",
                inline_redis.as_deref(),
                c.redis_url_env.as_deref(),
                &read_env,
            )?;
            if redis::Client::open(url.expose()).is_err() {
                return Err(ConfigError::new(
                    "cluster.redis_url",
                    "not a valid redis:// URL",
                ));
            }
            if c.key_prefix.is_empty() || c.key_prefix.contains(['{', '}', ' ']) {
                return Err(ConfigError::new(
                    "cluster.key_prefix",
                    "must be non-empty, without braces or spaces",
                ));
            }
            if c.lease_secs == 0 || c.timeout_ms == 0 {
                return Err(ConfigError::new(
                    "cluster",
                    "lease_secs and timeout_ms must be at least 1",
                ));
            }
            self.secrets.redis_url = Some(url);
        }
        Ok(())
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// Exactly one of `<path>` (in the file) and `<path>_env` (an environment variable).
fn one_url(
    path: &str,
    inline: Option<&str>,
    var: Option<&str>,
    read_env: &dyn Fn(String, &str) -> Result<Secret, ConfigError>,
) -> Result<Secret, ConfigError> {
    match (inline, var) {
        (Some(url), None) => Ok(Secret::new(url.trim().to_string())),
        (None, Some(var)) => read_env(format!("{path}_env"), var),
        _ => Err(ConfigError::new(
            path,
            format!("set exactly one of {path} and {path}_env"),
        )),
    }
}

/// A plain lower-case PostgreSQL identifier (it is spliced into SQL, so nothing else).
fn valid_sql_identifier(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Turns a toml error into "path: reason (line N)".
fn toml_error(text: &str, err: &toml::de::Error, path: String) -> ConfigError {
    let line = err
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let reason = match line {
        Some(l) => format!("{} (line {l})", err.message().trim()),
        None => err.message().trim().to_string(),
    };
    ConfigError::new(path, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const MINIMAL: &str = r#"
        auth.disabled = true
        [[providers]]
        name = "mock"
        kind = "mock"
        [[models]]
        id = "m"
        deployments = [{ provider = "mock", model = "x" }]
    "#;

    #[test]
    fn minimal_config_gets_spec_defaults() {
        let c = Config::from_toml_with_env(MINIMAL, &no_env).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080");
        assert_eq!(c.server.max_body_bytes, 33_554_432);
        assert_eq!(c.retry.max_retries, 2);
        assert_eq!(c.timeouts.idle_ms, 120_000);
        assert_eq!(c.stream.ping_interval_ms, 5000);
        assert_eq!(c.tools.max_rounds, 10);
        assert_eq!(c.providers[0].chunk_chars, 16);
        assert_eq!(c.models[0].deployments[0].weight, 1);
        assert_eq!(c.defaults.strictness, Strictness::Warn);
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let text = MINIMAL.replace("kind = \"mock\"", "kind = \"mock\"\nbogus = 1");
        let e = Config::from_toml_with_env(&text, &no_env).unwrap_err();
        assert_eq!(e.path, "providers[0].bogus");
        assert!(e.reason.contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let text = format!("{MINIMAL}\n[server]\nmax_body_bytes = \"big\"\n");
        let e = Config::from_toml_with_env(&text, &no_env).unwrap_err();
        assert_eq!(e.path, "server.max_body_bytes", "{e}");
    }

    #[test]
    fn no_keys_without_disabled_auth_is_refused() {
        let text = MINIMAL.replace("auth.disabled = true", "");
        let e = Config::from_toml_with_env(&text, &no_env).unwrap_err();
        assert_eq!(e.path, "auth.keys");
    }

    #[test]
    fn missing_secret_env_is_named() {
        let text = MINIMAL.replace(
            "auth.disabled = true",
            "auth.keys = [{ name = \"a\", secret_env = \"NOPE_KEY\" }]",
        );
        let e = Config::from_toml_with_env(&text, &no_env).unwrap_err();
        assert_eq!(e.path, "auth.keys[0].secret_env");
        assert!(e.reason.contains("NOPE_KEY"));
        let ok = Config::from_toml_with_env(&text, &|_| Some("s3cret".into())).unwrap();
        assert_eq!(ok.secrets.key_hashes.len(), 1);
        assert!(!format!("{ok:?}").contains("s3cret"));
    }

    #[test]
    fn deployment_with_unknown_provider_is_refused() {
        let text = MINIMAL.replace("provider = \"mock\", model", "provider = \"nope\", model");
        let e = Config::from_toml_with_env(&text, &no_env).unwrap_err();
        assert_eq!(e.path, "models[0].deployments[0].provider");
    }

    #[test]
    fn alias_collision_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[models]]\nid = \"n\"\naliases = [\"m\"]\ndeployments = [{{ provider = \"mock\", model = \"y\" }}]\n"
        );
        let e = Config::from_toml_with_env(&text, &no_env).unwrap_err();
        assert_eq!(e.path, "models[1].aliases[0]");
    }

    #[test]
    fn tool_limits_are_checked() {
        for (extra, path) in [
            (
                "[tools.web_fetch]\ntimeout_ms = 0",
                "tools.web_fetch.timeout_ms",
            ),
            (
                "[tools.web_fetch]\nmax_bytes = 0",
                "tools.web_fetch.max_bytes",
            ),
            (
                "[tools.web_fetch]\nmax_redirects = 21",
                "tools.web_fetch.max_redirects",
            ),
            (
                "[tools.web_fetch]\nuser_agent = \"\"",
                "tools.web_fetch.user_agent",
            ),
            (
                "[tools.web_search]\ntimeout_ms = 0",
                "tools.web_search.timeout_ms",
            ),
            (
                "[tools.web_search]\nmax_content_chars = 0",
                "tools.web_search.max_content_chars",
            ),
        ] {
            let e =
                Config::from_toml_with_env(&format!("{MINIMAL}\n{extra}\n"), &no_env).unwrap_err();
            assert_eq!(e.path, path, "{e}");
        }
        let ok = format!("{MINIMAL}\n[tools.web_fetch]\nmax_redirects = 0\n");
        Config::from_toml_with_env(&ok, &no_env).unwrap();
    }

    #[test]
    fn openai_provider_options_are_checked() {
        let openai = |extra: &str| {
            format!(
                "{MINIMAL}\n[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8000/v1/\"\n{extra}\n"
            )
        };
        let c = Config::from_toml_with_env(
            &openai("stream_tool_calls = \"buffered\"\ncapabilities = { top_k = true, max_stop_sequences = 8, reasoning = \"effort\" }"),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.providers[1].base_url.as_deref(),
            Some("http://127.0.0.1:8000/v1")
        );
        assert_eq!(c.providers[1].capabilities.max_stop_sequences, Some(8));
        let e = Config::from_toml_with_env(
            &openai("capabilities = { max_stop_sequences = 0 }"),
            &no_env,
        )
        .unwrap_err();
        assert_eq!(e.path, "providers[1].capabilities.max_stop_sequences");
        let e =
            Config::from_toml_with_env(&openai("capabilities = { reasoning = \"lots\" }"), &no_env)
                .unwrap_err();
        assert_eq!(e.path, "providers[1].capabilities.reasoning");
        let e = Config::from_toml_with_env(
            &openai("capabilities = { max_tokens_field = \"n\" }"),
            &no_env,
        )
        .unwrap_err();
        assert_eq!(e.path, "providers[1].capabilities.max_tokens_field");
        let e = Config::from_toml_with_env(&openai("capabilities = { bogus = 1 }"), &no_env)
            .unwrap_err();
        assert_eq!(e.path, "providers[1].capabilities.bogus");
        let mock = MINIMAL.replace(
            "kind = \"mock\"",
            "kind = \"mock\"\ncapabilities = { top_k = true }",
        );
        let e = Config::from_toml_with_env(&mock, &no_env).unwrap_err();
        assert_eq!(e.path, "providers[0].capabilities");
        let mock = MINIMAL.replace(
            "kind = \"mock\"",
            "kind = \"mock\"\nstream_tool_calls = \"buffered\"",
        );
        let e = Config::from_toml_with_env(&mock, &no_env).unwrap_err();
        assert_eq!(e.path, "providers[0].stream_tool_calls");
    }

    #[test]
    fn cluster_and_postgres_urls_come_from_the_file_or_the_environment() {
        let text = format!(
            "{MINIMAL}\n[cluster]\nredis_url_env = \"R\"\nlease_secs = 5\n\
             [request_log]\nbackend = \"postgres\"\npostgres_url_env = \"P\"\npostgres_table = \"t1\"\n"
        );
        let env = |v: &str| match v {
            "R" => Some("redis://:hunter2@127.0.0.1:6379/0".to_string()),
            "P" => Some("postgres://u:hunter2@127.0.0.1:5432/test".to_string()),
            _ => None,
        };
        let c = Config::from_toml_with_env(&text, &env).unwrap();
        let cluster = c.cluster.as_ref().unwrap();
        assert_eq!(
            (
                cluster.key_prefix.as_str(),
                cluster.lease_secs,
                cluster.timeout_ms
            ),
            ("aigw", 5, 50)
        );
        assert_eq!(cluster.on_redis_error, OnRedisError::Local);
        assert!(c.secrets.redis_url.is_some() && c.secrets.postgres_url.is_some());
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = Config::from_toml_with_env(&text, &no_env).unwrap_err();
        assert_eq!(e.path, "request_log.postgres_url_env");
        // Written in the file, a URL's password still never shows.
        let inline = format!(
            "{MINIMAL}\n[cluster]\nredis_url = \"redis://:hunter3@127.0.0.1:6379\"\n\
             [request_log]\nbackend = \"postgres\"\npostgres_url = \"postgres://u:hunter3@127.0.0.1/test\"\n"
        );
        let c = Config::from_toml_with_env(&inline, &no_env).unwrap();
        assert!(c.secrets.redis_url.is_some() && c.secrets.postgres_url.is_some());
        assert!(!format!("{c:?}").contains("hunter3"));

        for (extra, path) in [
            ("[cluster]\nbogus = 1", "cluster.bogus"),
            ("[cluster]\nredis_url = \"http://x\"", "cluster.redis_url"),
            ("[cluster]", "cluster.redis_url"),
            (
                "[cluster]\nredis_url = \"redis://127.0.0.1\"\non_redis_error = \"maybe\"",
                "cluster.on_redis_error",
            ),
            (
                "[request_log]\nbackend = \"postgres\"",
                "request_log.postgres_url",
            ),
            (
                "[request_log]\nbackend = \"postgres\"\npostgres_url = \"postgres://127.0.0.1/x\"\npostgres_table = \"t; drop\"",
                "request_log.postgres_table",
            ),
        ] {
            let e =
                Config::from_toml_with_env(&format!("{MINIMAL}\n{extra}\n"), &no_env).unwrap_err();
            assert_eq!(e.path, path, "{e}");
        }
    }

    #[test]
    fn shipped_config_is_valid() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        Config::from_toml_with_env(&text, &no_env).unwrap();
    }
}
