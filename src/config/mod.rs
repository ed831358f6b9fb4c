//! Configuration: serde structs (`deny_unknown_fields`, defaults from gateway.md §12), loaded then
//! validated. A bad config names the exact key path and why. Secrets are read from the environment
//! during validation and never stored in the file.

mod auth;
mod cloud;
mod cluster;
mod models;
mod observability;
mod providers;
pub mod reload;
mod resilience;
mod server;
mod tools;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

pub use auth::{AuthConfig, KeyConfig};
pub use cloud::{parse_google_json, CloudCredentials};
pub use cluster::{ClusterConfig, OnRedisError};
pub use models::{DeploymentConfig, ModelConfig, Price};
pub use observability::{
    LogFormat, ObservabilityConfig, OtlpConfig, OtlpProtocol, RequestLogBackend, RequestLogConfig,
};
pub use providers::{
    forward_refusal, CacheControlMode, CapabilityOverrides, MockToolMode, ProviderConfig,
    ProviderKind, StreamToolCalls,
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
    /// `observability.otlp.headers_env`, resolved: header name and value.
    pub otlp_headers: Vec<(String, Secret)>,
    /// Credentials of the bedrock and vertex providers, by provider name.
    pub cloud: HashMap<String, CloudCredentials>,
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

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
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

/// Where validation reads secrets: the process environment, or a test's.
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A secret from the environment variable `var`, named by `path` when it is unset.
fn read_env(env: Env, path: String, var: &str) -> Result<Secret, ConfigError> {
    match env(var) {
        Some(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim().to_string())),
        _ => Err(ConfigError::new(
            path,
            format!("environment variable {var} is not set"),
        )),
    }
}

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

    /// Semantic checks that serde cannot express, section by section in file order; fills
    /// [`Config::secrets`].
    fn validate(&mut self, env: Env) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.defaults.validate()?;
        let provider_names = providers::validate(
            &mut self.providers,
            env,
            &mut self.secrets.provider_keys,
            &mut self.secrets.cloud,
        )?;
        let model_names = models::validate(&self.models, &provider_names)?;
        self.secrets.key_hashes = self.auth.validate(env, &model_names)?;
        self.timeouts.validate()?;
        self.stream.validate()?;
        self.retry.validate()?;
        self.circuit_breaker.validate()?;
        self.tools.validate(
            env,
            &model_names,
            &self.providers,
            &mut self.secrets.engine_keys,
        )?;
        self.observability.validate()?;
        if let Some(otlp) = &self.observability.otlp {
            self.secrets.otlp_headers = otlp.validate(&|path, var| read_env(env, path, var))?;
        }
        self.request_log.validate()?;
        // A URL written in the file moves to the secrets: `Debug` of the config never shows it.
        let inline_postgres = self.request_log.postgres_url.take();
        let rl = &self.request_log;
        if rl.backend == RequestLogBackend::Postgres {
            let url = one_url(
                "request_log.postgres_url",
                inline_postgres.as_deref(),
                rl.postgres_url_env.as_deref(),
                &|path, var| read_env(env, path, var),
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
                &|path, var| read_env(env, path, var),
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
    fn forward_headers_are_lower_cased_and_never_secrets_or_hop_by_hop() {
        let with = |list: &str| {
            format!(
                "{MINIMAL}\n[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nforward_headers = {list}\n"
            )
        };
        let c = Config::from_toml_with_env(
            &with(r#"["X-App", "x-claude-code-session-id", "User-Agent"]"#),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.providers[1].forward_headers,
            ["x-app", "x-claude-code-session-id", "user-agent"]
        );
        assert!(c.providers[0].forward_headers.is_empty());
        for (name, why) in [
            ("Authorization", "credentials"),
            ("x-api-key", "credentials"),
            ("proxy-authorization", "credentials"),
            ("Cookie", "credentials"),
            ("connection", "hop-by-hop"),
            ("keep-alive", "hop-by-hop"),
            ("te", "hop-by-hop"),
            ("trailer", "hop-by-hop"),
            ("transfer-encoding", "hop-by-hop"),
            ("upgrade", "hop-by-hop"),
            ("proxy-connection", "hop-by-hop"),
            ("host", "set by the gateway"),
            ("content-length", "set by the gateway"),
            ("anthropic-version", "set by the gateway"),
            ("x-aistats-strictness", "gateway's own"),
            ("X-Gateway-Debug", "gateway's own"),
            ("bad name", "not a valid header name"),
        ] {
            let list = format!("[\"x-app\", \"{name}\"]");
            let e = Config::from_toml_with_env(&with(&list), &no_env).unwrap_err();
            assert_eq!(e.path, "providers[1].forward_headers[1]", "{name}: {e}");
            assert!(e.reason.contains(why), "{name}: {e}");
        }
        let mock = MINIMAL.replace(
            "kind = \"mock\"",
            "kind = \"mock\"\nforward_headers = [\"x-app\"]",
        );
        let e = Config::from_toml_with_env(&mock, &no_env).unwrap_err();
        assert_eq!(e.path, "providers[0].forward_headers");
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
