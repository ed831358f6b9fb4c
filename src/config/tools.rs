//! `[tools]`: the gateway-run server tools (gateway.md §5).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use super::{read_env, ConfigError, Env, ProviderConfig, ProviderKind, Secret};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    pub max_rounds: u32,
    pub max_concurrency: usize,
    pub datetime: DatetimeConfig,
    pub web_search: WebSearchConfig,
    pub web_fetch: WebFetchConfig,
    pub advisor: AdvisorConfig,
    pub image_generation: ImageGenerationConfig,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            max_rounds: 10,
            max_concurrency: 4,
            datetime: DatetimeConfig::default(),
            web_search: WebSearchConfig::default(),
            web_fetch: WebFetchConfig::default(),
            advisor: AdvisorConfig::default(),
            image_generation: ImageGenerationConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatetimeConfig {
    pub default_timezone: String,
}

impl Default for DatetimeConfig {
    fn default() -> Self {
        Self {
            default_timezone: "UTC".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSearchConfig {
    /// Defaults to the sole engine when exactly one is configured.
    pub default_engine: Option<String>,
    pub max_content_chars: usize,
    pub timeout_ms: u64,
    pub engines: BTreeMap<String, SearchEngineConfig>,
}

impl Default for WebSearchConfig {
    fn default() -> Self {
        Self {
            default_engine: None,
            max_content_chars: 2000,
            timeout_ms: 15_000,
            engines: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchEngineKind {
    Searxng,
    Exa,
    Tavily,
    Brave,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchEngineConfig {
    pub kind: SearchEngineKind,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebFetchConfig {
    pub allow_private_networks: bool,
    pub require_url_in_context: bool,
    pub timeout_ms: u64,
    pub max_bytes: usize,
    pub max_redirects: u32,
    pub user_agent: String,
}

impl Default for WebFetchConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            require_url_in_context: false,
            timeout_ms: 15_000,
            max_bytes: 5 * 1024 * 1024,
            max_redirects: 5,
            user_agent: concat!("aigw/", env!("CARGO_PKG_VERSION"), " (web_fetch)").into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvisorConfig {
    pub default_model: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageGenerationConfig {
    /// An `openai`-kind provider serving `/images/generations`.
    pub provider: Option<String>,
    pub model: Option<String>,
    pub allowed_models: Vec<String>,
}

impl ToolsConfig {
    /// Limits, engines (their keys go into `engine_keys`), and the models and providers the
    /// tools name.
    pub(super) fn validate(
        &mut self,
        env: Env,
        model_names: &HashSet<String>,
        providers: &[ProviderConfig],
        engine_keys: &mut HashMap<String, Secret>,
    ) -> Result<(), ConfigError> {
        if self.max_rounds == 0 {
            return Err(ConfigError::new("tools.max_rounds", "must be at least 1"));
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError::new(
                "tools.max_concurrency",
                "must be at least 1",
            ));
        }
        if self
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
            ("tools.web_search.timeout_ms", self.web_search.timeout_ms),
            (
                "tools.web_search.max_content_chars",
                self.web_search.max_content_chars as u64,
            ),
            ("tools.web_fetch.timeout_ms", self.web_fetch.timeout_ms),
            ("tools.web_fetch.max_bytes", self.web_fetch.max_bytes as u64),
        ] {
            if v == 0 {
                return Err(ConfigError::new(k, "must be at least 1"));
            }
        }
        let wf = &self.web_fetch;
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
        let ws = &mut self.web_search;
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
                    let secret = read_env(env, at("api_key_env"), var)?;
                    engine_keys.insert(name.clone(), secret);
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
        if let Some(m) = &self.advisor.default_model {
            if !model_names.contains(m) {
                return Err(ConfigError::new(
                    "tools.advisor.default_model",
                    format!("unknown model \"{m}\""),
                ));
            }
        }
        let ig = &self.image_generation;
        if let Some(p) = &ig.provider {
            match providers.iter().find(|x| &x.name == p) {
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

        Ok(())
    }
}
