//! Gateway server tools (gateway.md §5): declarations, `tool_choice`, history replay, and the
//! [`ToolActor`]s that run the calls. The tool loop itself lives in `session`.
//!
//! # API for the session
//!
//! Per request (pure, no I/O):
//! - [`ToolSet::declare`]`(request_tools: &[Value], &ToolsConfig, access: &dyn Fn(&str) ->
//!   ModelAccess) -> Result<ToolSet, GatewayError>` validates every `gateway:*` / `ai-stats:*`
//!   and native `web_search_*` / `web_fetch_*` declaration: 400 with every `tools.N.<opt>`
//!   detail, then 403 for an advisor model the key may not use ([`ModelAccess::Forbidden`];
//!   [`ModelAccess::Unknown`] is a 400).
//! - [`ToolChoice::parse`]`(tool_choice: Option<&Value>, request_tools, &ToolSet) ->
//!   Result<Option<ToolChoice>, GatewayError>` accepts every form of §5.2 (400 otherwise).
//!
//! Per deployment (`native: &[String]` = the provider's `native_tools`) and round:
//! - [`ToolSet::upstream_tools`]`(request_tools, native) -> Vec<Value>`: custom tools untouched
//!   and in order, gateway declarations replaced by their function definitions (with their
//!   `cache_control`), native shapes verbatim where the provider runs them.
//! - [`ToolChoice::for_round`]`(&ToolSet, native, round) -> Value`: the object form; rounds ≥ 2
//!   turn `any` / `tool` into `auto`.
//! - [`ToolSet::by_function_name`]`(name, native) -> Option<&Arc<GatewayTool>>` splits an upstream
//!   turn's calls (G vs C); [`ToolSet::gateway_run`]`(native)`, [`ToolSet::has_gateway_run`]
//!   `(native)` (then `usage.server_tool_use` carries all five counters),
//!   [`ToolSet::warnings`]`(native) -> Vec<ErrorDetail>` (strictness, e.g.
//!   `tools.1.user_location` / `engine_unsupported`, `tools.0.color` / `unknown_parameter`).
//! - [`replay::replay`]`(messages, &ToolSet, native) -> Replay { messages, extra_tools, pending }`:
//!   gateway (and non-native native) blocks in history become `tool_use` / `tool_result` turns;
//!   append `extra_tools` to the upstream `tools`; `pending` are trailing calls without a result
//!   (§6.3): run each ([`PendingCall::to_call`]) and append one user message of
//!   [`ToolOutcome::tool_result`]s (the `tool_use`s already end the history).
//! - [`replay::prior_context_text`]`(system, messages) -> String` for [`CallContext::prior_context`].
//!
//! Execution: `WorkerActors.tools` is a [`ToolActors`] (one [`ToolActor`] per kind per worker,
//! started by [`ToolActors::start`]). [`ToolActors::execute`]`(Execute { call: ToolCall { id,
//! tool, input }, context: CallContext }) -> impl Future<Output = ToolOutcome> + 'static` (or
//! `addr(kind)?.send(..)`). Calls run concurrently, each with its own timeout (search/fetch from
//! config, advisor/image 120 s); dropping every sender of [`CallContext::cancel`] cancels them.
//! A [`ToolOutcome`] has the client-visible `block`, the model-facing `model_content` (send it with
//! [`ToolOutcome::tool_result`]`(upstream_id)`), `is_error`, `counted` (add one to the kind's
//! counter with [`ToolKind::count`]) and `usage` of nested calls. Failures are outcomes, never
//! errors. `max_uses` and `tools.max_concurrency` are the session's:
//! [`ToolOutcome::max_uses_exceeded`]`(kind, id)` answers calls over the limit.
//! The advisor's nested call is made by the [`advisor::AdvisorCaller`] in [`CallContext::advisor`]
//! (`Fn(AdvisorRequest { model, system, user, max_tokens }) -> LocalBoxFuture<Result<AdvisorReply
//! { text, usage }, AdvisorFailure::{RateLimited, Upstream}>>`); `CallContext::transcript` feeds
//! `forward_transcript`.

pub mod actor;
pub mod advisor;
pub mod api_client;
pub mod choice;
pub mod datetime;
pub mod declare;
pub mod domains;
pub mod image_generation;
pub mod replay;
pub mod ssrf;
pub mod web_fetch;
pub mod web_search;

use serde_json::{json, Value};

pub use actor::{CallContext, Execute, ToolActor, ToolActors, ToolCall};
pub use choice::ToolChoice;
pub use declare::{GatewayTool, ModelAccess, ToolOptions, ToolSet};
pub use replay::{PendingCall, Replay};

use crate::protocol::anthropic::{ServerToolUse, Usage};
use crate::protocol::request::gateway_tool_name;

/// The five gateway-run tools (gateway.md §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolKind {
    Datetime,
    WebSearch,
    WebFetch,
    Advisor,
    ImageGeneration,
}

impl ToolKind {
    pub const ALL: [ToolKind; 5] = [
        Self::Datetime,
        Self::WebSearch,
        Self::WebFetch,
        Self::Advisor,
        Self::ImageGeneration,
    ];

    /// `server_tool_use.name`.
    pub fn server_name(self) -> &'static str {
        match self {
            Self::Datetime => "datetime",
            Self::WebSearch => "web_search",
            Self::WebFetch => "web_fetch",
            Self::Advisor => "advisor",
            Self::ImageGeneration => "image_generation",
        }
    }

    /// The upstream function name (an advisor with a `name` adds `_<name>`).
    pub fn function_name(self) -> &'static str {
        match self {
            Self::Datetime => "gateway_datetime",
            Self::WebSearch => "gateway_web_search",
            Self::WebFetch => "gateway_web_fetch",
            Self::Advisor => "gateway_advisor",
            Self::ImageGeneration => "gateway_image_generation",
        }
    }

    /// The client-visible result block type.
    pub fn result_type(self) -> &'static str {
        match self {
            Self::Datetime => "datetime_tool_result",
            Self::WebSearch => "web_search_tool_result",
            Self::WebFetch => "web_fetch_tool_result",
            Self::Advisor => "advisor_tool_result",
            Self::ImageGeneration => "image_generation_tool_result",
        }
    }

    pub fn from_server_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.server_name() == name)
    }

    pub fn from_result_type(t: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.result_type() == t)
    }

    /// The kind a declared `type` names: `gateway:*` / `ai-stats:*` aliases (§5.1).
    pub fn from_type_alias(t: &str) -> Option<Self> {
        Self::from_server_name(gateway_tool_name(t)?)
    }

    /// Raises this kind's `usage.server_tool_use` counter by one.
    pub fn count(self, counters: &mut ServerToolUse) {
        match self {
            Self::Datetime => counters.datetime_requests += 1,
            Self::WebSearch => counters.web_search_requests += 1,
            Self::WebFetch => counters.web_fetch_requests += 1,
            Self::Advisor => counters.advisor_requests += 1,
            Self::ImageGeneration => counters.image_generation_requests += 1,
        }
    }
}

/// `error_code` values of `<x>_tool_result_error` (gateway.md §5.3, messages-api.md §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolErrorCode {
    InvalidToolInput,
    Unavailable,
    MaxUsesExceeded,
    TooManyRequests,
    QueryTooLong,
    UrlTooLong,
    UrlNotAllowed,
    UrlNotInPriorContext,
    UrlNotAccessible,
    UnsupportedContentType,
    GenerationFailed,
}

impl ToolErrorCode {
    pub const ALL: [ToolErrorCode; 11] = [
        Self::InvalidToolInput,
        Self::Unavailable,
        Self::MaxUsesExceeded,
        Self::TooManyRequests,
        Self::QueryTooLong,
        Self::UrlTooLong,
        Self::UrlNotAllowed,
        Self::UrlNotInPriorContext,
        Self::UrlNotAccessible,
        Self::UnsupportedContentType,
        Self::GenerationFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidToolInput => "invalid_tool_input",
            Self::Unavailable => "unavailable",
            Self::MaxUsesExceeded => "max_uses_exceeded",
            Self::TooManyRequests => "too_many_requests",
            Self::QueryTooLong => "query_too_long",
            Self::UrlTooLong => "url_too_long",
            Self::UrlNotAllowed => "url_not_allowed",
            Self::UrlNotInPriorContext => "url_not_in_prior_context",
            Self::UrlNotAccessible => "url_not_accessible",
            Self::UnsupportedContentType => "unsupported_content_type",
            Self::GenerationFailed => "generation_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The message the model sees when nothing more specific is known (history replay).
    pub fn default_message(self) -> &'static str {
        match self {
            Self::InvalidToolInput => "the tool input was invalid",
            Self::Unavailable => "the tool is unavailable",
            Self::MaxUsesExceeded => "this tool's max_uses limit was reached for this request",
            Self::TooManyRequests => "the tool is rate limited; try again later",
            Self::QueryTooLong => "the query is longer than 500 characters",
            Self::UrlTooLong => "the URL is longer than 2048 characters",
            Self::UrlNotAllowed => "fetching this URL is not allowed",
            Self::UrlNotInPriorContext => "the URL did not appear earlier in the conversation",
            Self::UrlNotAccessible => "the URL could not be fetched",
            Self::UnsupportedContentType => "the content type is not supported",
            Self::GenerationFailed => "the image could not be generated",
        }
    }
}

/// The result of one gateway tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    pub kind: ToolKind,
    /// The client-visible block: `{"type":"<x>_tool_result","tool_use_id":…,"content":…}`.
    pub block: Value,
    /// The `tool_result` content the model sees (compact JSON, or the advice text).
    pub model_content: String,
    pub is_error: bool,
    /// The call raises `usage.server_tool_use.<x>_requests` (§5.5, §5.6: failed searches count,
    /// fetches count once they reached the network, refused inputs never).
    pub counted: bool,
    /// Tokens of a nested call (advisor, image generation), joining the totals and the TPM.
    pub usage: Option<Usage>,
}

impl ToolOutcome {
    /// A success: `content` is the block's `content`, `model_content` what the model sees.
    pub fn success(
        kind: ToolKind,
        tool_use_id: &str,
        content: Value,
        model_content: String,
    ) -> Self {
        Self {
            kind,
            block: result_block(kind, tool_use_id, content),
            model_content,
            is_error: false,
            counted: true,
            usage: None,
        }
    }

    /// A failure: `{"type":"<x>_tool_result_error","error_code":…}`; the model sees
    /// `{"error":"<code>","message":…}`. Not counted unless [`ToolOutcome::counted`] says so.
    pub fn error(kind: ToolKind, tool_use_id: &str, code: ToolErrorCode, message: &str) -> Self {
        Self {
            kind,
            block: result_block(kind, tool_use_id, error_content(kind, code)),
            model_content: error_model_content(code, message),
            is_error: true,
            counted: false,
            usage: None,
        }
    }

    /// The unexecuted answer to a call over the declaration's `max_uses`.
    pub fn max_uses_exceeded(kind: ToolKind, tool_use_id: &str) -> Self {
        let code = ToolErrorCode::MaxUsesExceeded;
        Self::error(kind, tool_use_id, code, code.default_message())
    }

    /// Sets whether the counter rises.
    pub fn counted(mut self, counted: bool) -> Self {
        self.counted = counted;
        self
    }

    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// The `tool_result` block answering upstream call `upstream_id`.
    pub fn tool_result(&self, upstream_id: &str) -> Value {
        tool_result_block(upstream_id, &self.model_content, self.is_error)
    }

    /// The `error_code`, when this is a failure.
    pub fn error_code(&self) -> Option<&str> {
        self.block["content"]["error_code"].as_str()
    }
}

pub(crate) fn result_block(kind: ToolKind, tool_use_id: &str, content: Value) -> Value {
    json!({"type": kind.result_type(), "tool_use_id": tool_use_id, "content": content})
}

pub(crate) fn error_content(kind: ToolKind, code: ToolErrorCode) -> Value {
    json!({"type": format!("{}_error", kind.result_type()), "error_code": code.as_str()})
}

pub(crate) fn error_model_content(code: ToolErrorCode, message: &str) -> String {
    json!({"error": code.as_str(), "message": message}).to_string()
}

pub(crate) fn tool_result_block(tool_use_id: &str, content: &str, is_error: bool) -> Value {
    let mut block = json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": content});
    if is_error {
        block["is_error"] = Value::Bool(true);
    }
    block
}

/// What the model sees for a result block found in history (gateway.md §5.3): the same content
/// an execution produced, rebuilt from the block alone. `None` for a block that is not a
/// recognisable gateway or native result.
pub fn model_view(block: &Value) -> Option<(String, bool)> {
    let kind = ToolKind::from_result_type(block.get("type")?.as_str()?)?;
    let content = block.get("content")?;
    if let Some(code) = content
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| t.ends_with("_tool_result_error"))
        .map(|_| {
            content
                .get("error_code")
                .and_then(Value::as_str)
                .unwrap_or("unavailable")
        })
    {
        let code = ToolErrorCode::parse(code).unwrap_or(ToolErrorCode::Unavailable);
        return Some((error_model_content(code, code.default_message()), true));
    }
    let text = match kind {
        ToolKind::Datetime => datetime::model_content_from_block(content)?,
        ToolKind::WebSearch => web_search::model_content_from_block(content)?,
        ToolKind::WebFetch => web_fetch::model_content_from_block(content)?,
        ToolKind::Advisor => content.get("text")?.as_str()?.to_string(),
        ToolKind::ImageGeneration => image_generation::model_content_from_block(content),
    };
    Some((text, false))
}

/// Cuts `s` to at most `n` characters.
pub(crate) fn cut_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ToolKind::ALL {
            assert_eq!(ToolKind::from_server_name(k.server_name()), Some(k));
            assert_eq!(ToolKind::from_result_type(k.result_type()), Some(k));
            assert_eq!(
                ToolKind::from_type_alias(&format!("gateway:{}", k.server_name())),
                Some(k)
            );
            assert_eq!(
                ToolKind::from_type_alias(&format!("ai-stats:{}", k.server_name())),
                Some(k)
            );
            assert_eq!(k.function_name(), format!("gateway_{}", k.server_name()));
        }
        assert_eq!(ToolKind::from_type_alias("ai-stats:apply_patch"), None);
        for c in ToolErrorCode::ALL {
            assert_eq!(ToolErrorCode::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn error_blocks_have_the_spec_shape() {
        for k in ToolKind::ALL {
            let o = ToolOutcome::max_uses_exceeded(k, "srvtoolu_gw_x");
            assert_eq!(
                o.block,
                json!({"type": k.result_type(), "tool_use_id": "srvtoolu_gw_x",
                       "content": {"type": format!("{}_error", k.result_type()), "error_code": "max_uses_exceeded"}})
            );
            assert!(o.is_error && !o.counted);
            let m: Value = serde_json::from_str(&o.model_content).unwrap();
            assert_eq!(m["error"], "max_uses_exceeded");
            assert_eq!(
                o.tool_result("call_1"),
                json!({"type":"tool_result","tool_use_id":"call_1","content":o.model_content,"is_error":true})
            );
            assert!(model_view(&o.block).unwrap().1);
        }
    }

    #[test]
    fn counters() {
        let mut c = ServerToolUse::default();
        for k in ToolKind::ALL {
            k.count(&mut c);
        }
        ToolKind::WebSearch.count(&mut c);
        assert_eq!(c.web_search_requests, 2);
        assert_eq!(c.image_generation_requests, 1);
    }
}
