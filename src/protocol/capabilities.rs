//! What a deployment can honour (gateway.md §3) and the evaluation of a request against it: the
//! list of `{param, reason}` that deployment would drop. Strictness modes act on that list
//! (`crate::strictness`); translation records its own lossy steps in the same shape.

use serde::Serialize;

use super::request::MessagesRequest;
use super::translate::request::{build, RequestContext};
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

/// Extension fields that only OpenAI-compatible upstreams receive (gateway.md §3 last row).
const OPENAI_ONLY_EXTENSIONS: [&str; 2] = ["prompt_cache_retention", "web_search_options"];

/// Every parameter of `req` that a deployment with `caps` would drop, in request order.
/// `has_session`: a session id exists, so a top-level `cache_control` becomes `prompt_cache_key`
/// on OpenAI-compatible upstreams.
pub fn evaluate(req: &MessagesRequest, caps: &Capabilities, has_session: bool) -> Vec<Warning> {
    match caps.kind {
        // The mock accepts everything and warns about nothing (gateway.md §3).
        ProviderKind::Mock => Vec::new(),
        ProviderKind::Anthropic => req
            .fields
            .keys()
            .filter_map(|k| {
                if req.unknown_fields.contains(k) {
                    Some(Warning::new(k.clone(), Reason::UnknownParameter))
                } else if OPENAI_ONLY_EXTENSIONS.contains(&k.as_str()) {
                    Some(Warning::new(k.clone(), Reason::Unsupported))
                } else {
                    None
                }
            })
            .collect(),
        // One source of truth: the translator records what it drops, so evaluation is a build
        // of the upstream request without serializing it.
        ProviderKind::Openai => {
            let ctx = RequestContext {
                upstream_model: "",
                caps,
                stream: req.stream,
                prompt_cache_key: has_session.then_some(""),
            };
            build(req, &ctx).warnings
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::parse_fields;
    use crate::protocol::validate::{validate, ApiVersion};
    use serde_json::json;

    fn req(v: serde_json::Value) -> MessagesRequest {
        validate(
            parse_fields(v.to_string().as_bytes()).unwrap(),
            ApiVersion::V2023_06_01,
        )
        .unwrap()
    }

    fn params(w: &[Warning]) -> Vec<String> {
        w.iter()
            .map(|w| format!("{}:{}", w.param, w.reason.as_str()))
            .collect()
    }

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

    #[test]
    fn evaluation_per_kind() {
        let r = req(
            json!({"model":"m","max_tokens":5,"top_k":3,"thinking":{"type":"enabled","budget_tokens":2048},
            "stop_sequences":["a","b","c","d","e"],"service_tier":"auto","prompt_cache_retention":"24h","frobnicate":1,
            "messages":[{"role":"user","content":"hi"}]}),
        );
        let openai = Capabilities::default_for(ProviderKind::Openai);
        assert_eq!(
            params(&evaluate(&r, &openai, false)),
            [
                "top_k:unsupported",
                "thinking:unsupported",
                "stop_sequences:truncated",
                "frobnicate:unknown_parameter"
            ]
        );
        let anthropic = Capabilities::default_for(ProviderKind::Anthropic);
        assert_eq!(
            params(&evaluate(&r, &anthropic, false)),
            [
                "prompt_cache_retention:unsupported",
                "frobnicate:unknown_parameter"
            ]
        );
        assert!(evaluate(&r, &Capabilities::default_for(ProviderKind::Mock), false).is_empty());
        let vllm = caps(
            "name=\"v\"\nkind=\"openai\"\ncapabilities={top_k=true,reasoning=\"effort\",max_stop_sequences=8}",
        );
        assert_eq!(
            params(&evaluate(&r, &vllm, false)),
            ["frobnicate:unknown_parameter"]
        );
    }

    #[test]
    fn top_level_cache_control_needs_a_session() {
        let r = req(
            json!({"model":"m","max_tokens":5,"cache_control":{"type":"ephemeral"},
            "messages":[{"role":"user","content":"hi"}]}),
        );
        let openai = Capabilities::default_for(ProviderKind::Openai);
        assert_eq!(
            params(&evaluate(&r, &openai, false)),
            ["cache_control:unsupported"]
        );
        assert!(evaluate(&r, &openai, true).is_empty());
    }
}
