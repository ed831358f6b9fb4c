//! What a deployment can honour (gateway.md §3), and the `{param, reason}` shape of what it
//! drops. Evaluating a request against it is `strictness::evaluate` (crate root); translation
//! records its own lossy steps in the same shape. A leaf: translation and strictness build on it.

use serde::Serialize;

use crate::config::{ProviderConfig, ProviderKind, StreamToolCalls};

/// Why a parameter is not honoured as sent. The first four are the strictness reasons of
/// gateway.md §3; the others are translation notes that go to debug output only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Unsupported,
    UnknownParameter,
    Truncated,
    EngineUnsupported,
    /// Tool-call arguments that are not a JSON object (translation.md §2, §5 step 5).
    InvalidJson,
    /// The upstream ended without a finish reason (translation.md §5 step 9).
    NoFinishReason,
    /// A finish reason the mapping does not know (translation.md §4).
    UnknownFinishReason,
    /// The upstream reported no usage; the counts are the gateway's estimate.
    Estimated,
}

impl Reason {
    /// The reason [`Reason::as_str`] names.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Unsupported,
            Self::UnknownParameter,
            Self::Truncated,
            Self::EngineUnsupported,
            Self::InvalidJson,
            Self::NoFinishReason,
            Self::UnknownFinishReason,
            Self::Estimated,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsupported => "unsupported",
            Self::UnknownParameter => "unknown_parameter",
            Self::Truncated => "truncated",
            Self::EngineUnsupported => "engine_unsupported",
            Self::InvalidJson => "invalid_json",
            Self::NoFinishReason => "no_finish_reason",
            Self::UnknownFinishReason => "unknown_finish_reason",
            Self::Estimated => "estimated",
        }
    }
}

/// One parameter a deployment cannot honour (or a lossy translation step): a top-level key or a
/// dotted path, why, and for translation notes the raw value that could not be kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub param: String,
    pub reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Warning {
    pub fn new(param: impl Into<String>, reason: Reason) -> Self {
        Self {
            param: param.into(),
            reason,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A top-level key (no dotted path): the only kind of drop an Anthropic body can apply.
    pub fn is_top_level(&self) -> bool {
        !self.param.contains('.')
    }
}

/// The capability table of gateway.md §3 for one provider, with its config overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub kind: ProviderKind,
    pub top_k: bool,
    /// `thinking` / `output_config.effort` → `reasoning_effort`.
    pub reasoning_effort: bool,
    /// `None` = unlimited.
    pub max_stop_sequences: Option<usize>,
    pub vision: bool,
    /// Send `max_completion_tokens` instead of `max_tokens`.
    pub max_completion_tokens: bool,
    /// Thinking text in the history is sent as `reasoning_content`.
    pub reasoning_history: bool,
    /// Hold every tool call until `finish_reason` (`stream_tool_calls = "buffered"`).
    pub buffered_tool_calls: bool,
}

/// OpenAI's documented limit on `stop`.
const OPENAI_MAX_STOP_SEQUENCES: usize = 4;

impl Capabilities {
    pub fn of(config: &ProviderConfig) -> Self {
        let o = &config.capabilities;
        let openai = config.kind == ProviderKind::Openai;
        Self {
            kind: config.kind,
            top_k: o.top_k.unwrap_or(!openai),
            reasoning_effort: match o.reasoning.as_deref() {
                Some("effort") => true,
                Some(_) => false,
                None => !openai,
            },
            max_stop_sequences: o
                .max_stop_sequences
                .or(openai.then_some(OPENAI_MAX_STOP_SEQUENCES)),
            vision: o.vision.unwrap_or(true),
            max_completion_tokens: o.max_tokens_field.as_deref() == Some("max_completion_tokens"),
            reasoning_history: o.reasoning_history.unwrap_or(false),
            buffered_tool_calls: config.stream_tool_calls == StreamToolCalls::Buffered,
        }
    }

    /// The defaults of a kind, without overrides.
    pub fn default_for(kind: ProviderKind) -> Self {
        let config: ProviderConfig =
            toml::from_str(&format!("name = \"x\"\nkind = \"{}\"", kind.as_str()))
                .expect("a minimal provider config parses");
        Self::of(&config)
    }
}

/// The client's betas a cloud deployment drops (`anthropic-beta.<name>`, unsupported): Bedrock
/// and Vertex refuse betas they do not know. The other kinds drop none.
pub fn beta_warnings(kind: ProviderKind, anthropic_beta: Option<&str>) -> Vec<Warning> {
    if !kind.is_cloud() {
        return Vec::new();
    }
    super::cloud::split_betas(anthropic_beta)
        .filter(|b| !super::cloud::cloud_supports_beta(b))
        .map(|b| Warning::new(format!("anthropic-beta.{b}"), Reason::Unsupported))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(toml_text: &str) -> Capabilities {
        Capabilities::of(&toml::from_str(toml_text).unwrap())
    }

    #[test]
    fn defaults_per_kind() {
        let o = Capabilities::default_for(ProviderKind::Openai);
        assert!(!o.top_k && !o.reasoning_effort && o.vision && !o.max_completion_tokens);
        assert_eq!(o.max_stop_sequences, Some(4));
        let a = Capabilities::default_for(ProviderKind::Anthropic);
        assert!(a.top_k && a.reasoning_effort);
        assert_eq!(a.max_stop_sequences, None);
        let v = caps(
            "name=\"v\"\nkind=\"openai\"\nstream_tool_calls=\"buffered\"\ncapabilities={top_k=true,reasoning=\"effort\",max_stop_sequences=8,max_tokens_field=\"max_completion_tokens\"}",
        );
        assert!(v.top_k && v.reasoning_effort && v.max_completion_tokens && v.buffered_tool_calls);
        assert_eq!(v.max_stop_sequences, Some(8));
    }
}
