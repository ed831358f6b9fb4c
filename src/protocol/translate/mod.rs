//! Anthropic Messages ↔ OpenAI Chat Completions (translation.md). Pure functions and one state
//! machine, fed plain values: `request` (Anthropic body → chat request), `response` (chat
//! completion → Anthropic message), `stream` (chat chunks → Anthropic events), `usage` (usage and
//! stop reasons), `tool_names` (names over OpenAI's limit), `json_prefix` (argument fragments).

pub mod json_prefix;
#[cfg(test)]
mod pitfalls;
pub mod request;
pub mod response;
pub mod stream;
pub mod tool_names;
pub mod usage;

pub use request::{translate_request, RequestContext, TranslatedRequest};
pub use response::{translate_response, ResponseContext, TranslatedResponse};
pub use stream::{StreamEnd, StreamFailure, StreamTranslator};
pub use tool_names::ToolNameMap;

/// The key under which tool-call arguments that are not a JSON object are kept in `input`.
///
/// translation.md §2 says `input: {}`; the project's issue says a bad argument string must be kept,
/// not lost. `input` must stay an object for the SDKs, so the raw string is wrapped as
/// `{"_gateway_raw_arguments": "<the string>"}` (the `gateway_` prefix is reserved for the
/// gateway, so no real tool schema collides with it), and a warning records it. When such a block
/// comes back in the history, the request translator unwraps it and sends the original string.
pub const RAW_ARGUMENTS_KEY: &str = "_gateway_raw_arguments";
