//! Usage (translation.md §3), stop reasons (§4) and upstream error types (§6).

use serde_json::Value;

use crate::protocol::anthropic::Usage;
use crate::protocol::capabilities::{Reason, Warning};
use crate::protocol::openai::ChatUsage;

/// OpenAI's `prompt_tokens` includes cached tokens; Anthropic's `input_tokens` does not. Cache
/// reads and writes are taken out once, never counted twice.
pub fn map_usage(u: &ChatUsage) -> Usage {
    let details = u.prompt_tokens_details.as_ref();
    let cache_read = details
        .and_then(|d| d.cached_tokens)
        .or(u.cache_read_input_tokens)
        .unwrap_or(0);
    let cache_creation = details
        .and_then(|d| d.cache_creation_tokens.or(d.cache_write_tokens))
        .or(u.cache_creation_input_tokens)
        .unwrap_or(0);
    Usage {
        input_tokens: u
            .prompt_tokens
            .saturating_sub(cache_read)
            .saturating_sub(cache_creation),
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: cache_creation,
        cache_read_input_tokens: cache_read,
    }
}

/// The Anthropic `stop_reason` for an OpenAI `finish_reason`. `tool_calls`: the message carries
/// tool calls (some servers say `stop` for them); `refusal`: it carries a refusal. A missing or
/// unknown reason gives `end_turn` and a warning.
pub fn map_stop_reason(
    finish_reason: Option<&str>,
    tool_calls: bool,
    refusal: bool,
) -> (&'static str, Option<Warning>) {
    let reason = match finish_reason {
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        Some("tool_calls" | "function_call") => "tool_use",
        _ if refusal => "refusal",
        Some("stop") if tool_calls => "tool_use",
        Some("stop") => "end_turn",
        // translation.md says `end_turn`; with tool calls present that would hide them from a
        // client that dispatches on `stop_reason`, so the tool-call rule of `stop` applies.
        None => {
            let stop = if tool_calls { "tool_use" } else { "end_turn" };
            return (stop, Some(Warning::new("upstream", Reason::NoFinishReason)));
        }
        Some(other) => {
            let stop = if tool_calls { "tool_use" } else { "end_turn" };
            return (
                stop,
                Some(
                    Warning::new("finish_reason", Reason::UnknownFinishReason)
                        .with_detail(other.to_string()),
                ),
            );
        }
    };
    (reason, None)
}

/// The Anthropic error type for an upstream error payload (translation.md §6): by HTTP status,
/// then by `code` / `type`.
pub fn map_error_type(
    status: Option<u16>,
    code: Option<&Value>,
    kind: Option<&str>,
) -> &'static str {
    let code_num = code.and_then(Value::as_u64).map(|c| c as u16);
    let code_str = code.and_then(Value::as_str).unwrap_or("");
    let kind = kind.unwrap_or("");
    let has = |needle: &str| code_str.contains(needle) || kind.contains(needle);
    match status.or(code_num) {
        Some(429) => return "rate_limit_error",
        Some(529) => return "overloaded_error",
        Some(408 | 504) => return "timeout_error",
        _ => {}
    }
    if has("rate_limit") {
        "rate_limit_error"
    } else if has("overloaded") {
        "overloaded_error"
    } else if has("timeout") {
        "timeout_error"
    } else {
        "api_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usage(v: Value) -> Usage {
        map_usage(&serde_json::from_value(v).unwrap())
    }

    fn u(input: u64, output: u64, creation: u64, read: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: creation,
            cache_read_input_tokens: read,
        }
    }

    #[test]
    fn usage_table() {
        let cases = [
            // The worked example of translation.md §3.
            (
                json!({"prompt_tokens":1200,"completion_tokens":80,"prompt_tokens_details":{"cached_tokens":1024}}),
                u(176, 80, 0, 1024),
            ),
            (
                json!({"prompt_tokens":21,"completion_tokens":9}),
                u(21, 9, 0, 0),
            ),
            // Pitfall 7: cache writes are taken out of the input too, never counted twice.
            (
                json!({"prompt_tokens":1000,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":200,"cache_creation_tokens":300}}),
                u(500, 5, 300, 200),
            ),
            (
                json!({"prompt_tokens":1000,"completion_tokens":5,"prompt_tokens_details":{"cache_write_tokens":100}}),
                u(900, 5, 100, 0),
            ),
            // Top-level fields from Anthropic-backed servers.
            (
                json!({"prompt_tokens":568,"completion_tokens":38,"cache_read_input_tokens":256}),
                u(312, 38, 0, 256),
            ),
            // Nulls read as zero; inconsistent counts never go negative.
            (
                json!({"prompt_tokens":null,"completion_tokens":null,"prompt_tokens_details":null}),
                u(0, 0, 0, 0),
            ),
            (
                json!({"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":50}}),
                u(0, 1, 0, 50),
            ),
            // Reasoning tokens are part of completion_tokens already.
            (
                json!({"prompt_tokens":10,"completion_tokens":100,"completion_tokens_details":{"reasoning_tokens":60}}),
                u(10, 100, 0, 0),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(usage(input.clone()), expected, "{input}");
        }
    }

    #[test]
    fn stop_reason_table() {
        // (finish_reason, has tool calls, has refusal, stop_reason, warning)
        type Row<'a> = (Option<&'a str>, bool, bool, &'a str, Option<Reason>);
        let cases: &[Row] = &[
            (Some("stop"), false, false, "end_turn", None),
            (Some("stop"), true, false, "tool_use", None),
            (Some("length"), false, false, "max_tokens", None),
            (Some("length"), true, false, "max_tokens", None),
            (Some("tool_calls"), true, false, "tool_use", None),
            (Some("function_call"), true, false, "tool_use", None),
            (Some("content_filter"), false, false, "refusal", None),
            (Some("stop"), false, true, "refusal", None),
            (None, false, false, "end_turn", Some(Reason::NoFinishReason)),
            (None, true, false, "tool_use", Some(Reason::NoFinishReason)),
            (
                Some("eos_token"),
                false,
                false,
                "end_turn",
                Some(Reason::UnknownFinishReason),
            ),
        ];
        for (finish, tools, refusal, expected, warning) in cases {
            let (got, w) = map_stop_reason(*finish, *tools, *refusal);
            assert_eq!(got, *expected, "{finish:?} tools={tools}");
            assert_eq!(w.map(|w| w.reason), *warning, "{finish:?}");
        }
    }

    #[test]
    fn error_type_table() {
        // (status, code, type, Anthropic error type)
        type Row<'a> = (Option<u16>, Option<Value>, Option<&'a str>, &'a str);
        let cases: &[Row] = &[
            (Some(429), None, None, "rate_limit_error"),
            (
                None,
                Some(json!("rate_limit_exceeded")),
                None,
                "rate_limit_error",
            ),
            (None, Some(json!(529)), None, "overloaded_error"),
            (None, None, Some("overloaded_error"), "overloaded_error"),
            (Some(504), None, None, "timeout_error"),
            (None, Some(json!("request_timeout")), None, "timeout_error"),
            (
                Some(500),
                Some(json!("server_error")),
                Some("server_error"),
                "api_error",
            ),
            (None, None, None, "api_error"),
        ];
        for (status, code, kind, expected) in cases {
            assert_eq!(map_error_type(*status, code.as_ref(), *kind), *expected);
        }
    }
}
