//! `[[providers]]`: one upstream each.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use super::{read_env, valid_name, ConfigError, Env, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Anthropic,
    Openai,
    Mock,
    /// Claude on AWS Bedrock (`InvokeModel`, SigV4).
    Bedrock,
    /// Claude on Google Vertex AI (`rawPredict`, OAuth bearer tokens).
    Vertex,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
            Self::Mock => "mock",
            Self::Bedrock => "bedrock",
            Self::Vertex => "vertex",
        }
    }

    /// Claude behind a cloud API: the Anthropic body and events, with the cloud's envelope.
    pub fn is_cloud(self) -> bool {
        matches!(self, Self::Bedrock | Self::Vertex)
    }

    /// Speaks Anthropic's Messages format (natively or inside a cloud envelope).
    pub fn speaks_anthropic(self) -> bool {
        matches!(self, Self::Anthropic | Self::Bedrock | Self::Vertex)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheControlMode {
    #[default]
    TopLevel,
    Breakpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamToolCalls {
    #[default]
    Live,
    Buffered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MockToolMode {
    #[default]
    None,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the provider's key. The key itself never lives in the file.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Static headers added to every upstream request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Client request headers copied to this provider's upstream requests. Names are
    /// case-insensitive (lower-cased at load); `user-agent` gets the gateway's own appended.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Anthropic server tools this provider executes itself (`web_search`, `web_fetch`).
    #[serde(default)]
    pub native_tools: Vec<String>,
    #[serde(default)]
    pub extra_betas: Vec<String>,
    #[serde(default)]
    pub cache_control_mode: CacheControlMode,
    #[serde(default)]
    pub stream_tool_calls: StreamToolCalls,
    #[serde(default)]
    pub capabilities: CapabilityOverrides,
    // bedrock and vertex (config/cloud.rs validates which kind takes which)
    /// AWS region (bedrock) or Google Cloud location (vertex; `"global"` allowed).
    #[serde(default)]
    pub region: Option<String>,
    /// Google Cloud project id (vertex).
    #[serde(default)]
    pub project: Option<String>,
    /// Variables holding static AWS keys, instead of the default credential chain (bedrock).
    #[serde(default)]
    pub aws_access_key_id_env: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key_env: Option<String>,
    #[serde(default)]
    pub aws_session_token_env: Option<String>,
    /// Shared-config profile for the AWS credential chain (bedrock).
    #[serde(default)]
    pub profile: Option<String>,
    /// Variable naming the Google credentials JSON, instead of `GOOGLE_APPLICATION_CREDENTIALS`
    /// (vertex).
    #[serde(default)]
    pub credentials_file_env: Option<String>,
    // mock-only options (gateway.md §9)
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default)]
    pub tool_mode: MockToolMode,
    #[serde(default)]
    pub ttft_ms: u64,
    #[serde(default = "default_chunk_chars")]
    pub chunk_chars: usize,
    #[serde(default)]
    pub chunk_delay_ms: u64,
}

/// Why a client header must never be copied upstream (`forward_headers`), or `None` when it
/// may be. `lower` is the lower-cased name.
pub fn forward_refusal(lower: &str) -> Option<&'static str> {
    match lower {
        "authorization" | "proxy-authorization" | "x-api-key" | "cookie" => {
            Some("carries the client's credentials and is never forwarded")
        }
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade" => {
            Some("is a hop-by-hop header and is never forwarded")
        }
        n if n.starts_with("proxy-") => Some("is a hop-by-hop header and is never forwarded"),
        "host" | "content-length" | "content-type" | "content-encoding" | "accept"
        | "accept-encoding" | "anthropic-version" | "anthropic-beta" => {
            Some("is set by the gateway itself")
        }
        n if n.starts_with("x-aistats-") || n.starts_with("x-gateway-") => {
            Some("is one of the gateway's own headers and is never forwarded")
        }
        _ => None,
    }
}

fn default_chunk_chars() -> usize {
    16
}

/// `[providers.capabilities]`: overrides of the per-kind capability table (gateway.md §3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapabilityOverrides {
    pub top_k: Option<bool>,
    /// `"effort"` maps thinking / `output_config.effort` to `reasoning_effort`.
    pub reasoning: Option<String>,
    pub max_stop_sequences: Option<usize>,
    pub vision: Option<bool>,
    /// `"max_tokens"` or `"max_completion_tokens"`.
    pub max_tokens_field: Option<String>,
    pub reasoning_history: Option<bool>,
}

/// An upstream base URL: http(s), kept without its trailing slashes (paths are appended).
pub(super) fn check_base_url(url: &mut String, at: String) -> Result<(), ConfigError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::new(at, "must start with http:// or https://"));
    }
    while url.ends_with('/') {
        url.pop();
    }
    Ok(())
}

/// Every provider's settings; their API keys go into `keys`. Returns the provider names.
pub(super) fn validate(
    providers: &mut [ProviderConfig],
    env: Env,
    keys: &mut HashMap<String, Secret>,
    cloud: &mut HashMap<String, super::CloudCredentials>,
) -> Result<HashSet<String>, ConfigError> {
    let mut provider_names = HashSet::new();
    for (i, p) in providers.iter_mut().enumerate() {
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
                check_base_url(
                    p.base_url.get_or_insert_with(|| default.to_string()),
                    at("base_url"),
                )?;
            }
            // Their base_url comes from the region (config/cloud.rs).
            ProviderKind::Bedrock | ProviderKind::Vertex => {}
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
        if let Some(creds) = super::cloud::validate(p, i, env)? {
            cloud.insert(p.name.clone(), creds);
        }
        if let Some(var) = &p.api_key_env {
            let secret = read_env(env, at("api_key_env"), var)?;
            keys.insert(p.name.clone(), secret);
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
        // A header that cannot be forwarded is a config error, not a silent drop: the
        // operator who listed it expects it upstream.
        if p.kind == ProviderKind::Mock && !p.forward_headers.is_empty() {
            return Err(ConfigError::new(
                at("forward_headers"),
                "the mock provider has no upstream",
            ));
        }
        for (j, name) in p.forward_headers.iter_mut().enumerate() {
            let at = format!("providers[{i}].forward_headers[{j}]");
            name.make_ascii_lowercase();
            if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::new(at, "not a valid header name"));
            }
            if let Some(why) = forward_refusal(name) {
                return Err(ConfigError::new(at, format!("\"{name}\" {why}")));
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

    Ok(provider_names)
}
