//! `[tools]`: the gateway-run server tools (gateway.md §5).

use std::collections::BTreeMap;

use serde::Deserialize;

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
