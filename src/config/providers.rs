//! `[[providers]]`: one upstream each.

use std::collections::BTreeMap;

use serde::Deserialize;

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

#[derive(Debug, Clone, Deserialize)]
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
