//! OpenAI chat completion → Anthropic message (translation.md §2).

use serde_json::{json, Map, Value};

use super::tool_names::ToolNameMap;
use super::usage::{map_stop_reason, map_usage};
use super::RAW_ARGUMENTS_KEY;
use crate::ids;
use crate::protocol::anthropic::{MessageResponse, ResponseUsage, Usage};
use crate::protocol::capabilities::{Reason, Warning};
use crate::protocol::openai::{ChatResponse, ErrorObject};

/// What the response translation needs from the request side.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext<'a> {
    /// The `msg_…` id to report (minted per attempt, so tests can fix it).
    pub message_id: &'a str,
    /// The model id the client sent.
    pub client_model: &'a str,
    pub tool_names: &'a ToolNameMap,
    /// Used when the upstream reports no usage at all.
    pub estimated_input_tokens: u64,
}

#[derive(Debug, Clone)]
pub struct TranslatedResponse {
    pub body: Vec<u8>,
    pub usage: Usage,
    pub stop_reason: &'static str,
    pub warnings: Vec<Warning>,
    /// The upstream's `chatcmpl-…` id, for debug output only.
    pub upstream_id: Option<String>,
    pub usage_estimated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseError {
    /// Not a chat completion.
    Invalid(String),
    /// A 2xx body that carries `{"error":…}`.
    Upstream(ErrorObject),
}

pub fn translate_response(
    body: &[u8],
    ctx: &ResponseContext<'_>,
) -> Result<TranslatedResponse, ResponseError> {
    let res: ChatResponse = serde_json::from_slice(body).map_err(|e| {
        ResponseError::Invalid(format!("upstream returned an invalid completion: {e}"))
    })?;
    if let Some(err) = res.error {
        return Err(ResponseError::Upstream(err));
    }
    // Only the first choice is used; `n` is never sent.
    let Some(choice) = res.choices.into_iter().min_by_key(|c| c.index.unwrap_or(0)) else {
        return Err(ResponseError::Invalid(
            "upstream returned a completion without choices".into(),
        ));
    };
    let msg = &choice.message;
    let mut warnings = Vec::new();
    let mut content: Vec<Value> = Vec::new();
    let mut output_chars = 0;

    // The native Anthropic order: thinking, text, tool calls.
    if let Some(thinking) = msg.reasoning_content.get().or(msg.reasoning.get()) {
        output_chars += thinking.len();
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    if let Some(text) = msg.content.get() {
        output_chars += text.len();
        content.push(json!({"type": "text", "text": text}));
    }
    let refusal = msg.refusal.get();
    if let Some(text) = refusal {
        output_chars += text.len();
        content.push(json!({"type": "text", "text": text}));
    }
    for (i, call) in msg.tool_calls.iter().enumerate() {
        let args = call.function.arguments.0.as_deref().unwrap_or("");
        output_chars += args.len();
        let (input, warning) = parse_arguments(i, args);
        warnings.extend(warning);
        let name = call.function.name.as_deref().unwrap_or("");
        content.push(
            json!({"type": "tool_use", "id": tool_use_id(call.id.as_deref()),
            "name": ctx.tool_names.to_client(name), "input": input}),
        );
    }

    let (stop_reason, warning) = map_stop_reason(
        choice.finish_reason.as_deref(),
        !msg.tool_calls.is_empty(),
        refusal.is_some(),
    );
    warnings.extend(warning);
    let (usage, usage_estimated) = match &res.usage {
        Some(u) => (map_usage(u), false),
        None => {
            warnings.push(Warning::new("usage", Reason::Estimated));
            (
                Usage {
                    input_tokens: ctx.estimated_input_tokens,
                    output_tokens: (output_chars as u64).div_ceil(4),
                    ..Usage::default()
                },
                true,
            )
        }
    };
    let body = MessageResponse::new(
        ctx.message_id,
        ctx.client_model,
        &content,
        stop_reason,
        ResponseUsage::new(&usage, None),
    )
    .to_vec();
    Ok(TranslatedResponse {
        body,
        usage,
        stop_reason,
        warnings,
        upstream_id: res.id.map(|c| c.into_owned()),
        usage_estimated,
    })
}

/// Tool-call arguments as `input`. `""` is `{}`; text that is not a JSON object is kept under
/// [`RAW_ARGUMENTS_KEY`] (see its docs) and reported.
pub fn parse_arguments(index: usize, args: &str) -> (Value, Option<Warning>) {
    if args.trim().is_empty() {
        return (Value::Object(Map::new()), None);
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => (v, None),
        _ => {
            let mut wrapped = Map::new();
            wrapped.insert(RAW_ARGUMENTS_KEY.into(), Value::String(args.to_string()));
            let w = Warning::new(format!("tool_calls.{index}.arguments"), Reason::InvalidJson)
                .with_detail(args);
            (Value::Object(wrapped), Some(w))
        }
    }
}

/// An id valid for Anthropic's pattern `^[a-zA-Z0-9_-]+$`: missing → a new `toolu_` id; other
/// characters → `_`, so the history can be replayed to Anthropic.
pub fn tool_use_id(id: Option<&str>) -> String {
    match id {
        Some(id) if !id.is_empty() => id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        _ => ids::tool_use_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: Value) -> TranslatedResponse {
        run_with(body, &ToolNameMap::default())
    }

    fn run_with(body: Value, names: &ToolNameMap) -> TranslatedResponse {
        let ctx = ResponseContext {
            message_id: "msg_test",
            client_model: "client-model",
            tool_names: names,
            estimated_input_tokens: 42,
        };
        translate_response(body.to_string().as_bytes(), &ctx).unwrap()
    }

    fn completion(message: Value, finish: &str, usage: Value) -> Value {
        json!({"id":"chatcmpl-1","object":"chat.completion","model":"gpt-x",
            "choices":[{"index":0,"message":message,"finish_reason":finish}],"usage":usage})
    }

    fn body(t: &TranslatedResponse) -> Value {
        serde_json::from_slice(&t.body).unwrap()
    }

    fn usage(p: u64, c: u64) -> Value {
        json!({"prompt_tokens":p,"completion_tokens":c,"total_tokens":p+c})
    }

    struct Case {
        name: &'static str,
        message: Value,
        finish: &'static str,
        content: Value,
        stop: &'static str,
    }

    #[test]
    fn response_table() {
        let cases = [
            Case {
                name: "text",
                message: json!({"role":"assistant","content":"Hello"}),
                finish: "stop",
                content: json!([{"type":"text","text":"Hello"}]),
                stop: "end_turn",
            },
            Case {
                name: "empty content gives no block",
                message: json!({"role":"assistant","content":""}),
                finish: "stop",
                content: json!([]),
                stop: "end_turn",
            },
            Case {
                name: "null content, length",
                message: json!({"role":"assistant","content":null}),
                finish: "length",
                content: json!([]),
                stop: "max_tokens",
            },
            Case {
                name: "thinking first, then text, then tools (pitfall 13 order)",
                message: json!({"role":"assistant","content":"Let me check.","reasoning_content":"plan",
                    "tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lyon\"}"}}]}),
                finish: "tool_calls",
                content: json!([{"type":"thinking","thinking":"plan","signature":""},
                    {"type":"text","text":"Let me check."},
                    {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Lyon"}}]),
                stop: "tool_use",
            },
            Case {
                name: "reasoning under its other name",
                message: json!({"role":"assistant","content":"A","reasoning":"r"}),
                finish: "stop",
                content: json!([{"type":"thinking","thinking":"r","signature":""},{"type":"text","text":"A"}]),
                stop: "end_turn",
            },
            Case {
                name: "tool calls with stop still mean tool_use; empty arguments are {}",
                message: json!({"role":"assistant","content":null,"tool_calls":[
                    {"id":"call_a","type":"function","function":{"name":"f","arguments":""}},
                    {"id":"call_b","type":"function","function":{"name":"g","arguments":"{\"x\":[1,2]}"}}]}),
                finish: "stop",
                content: json!([{"type":"tool_use","id":"call_a","name":"f","input":{}},{"type":"tool_use","id":"call_b","name":"g","input":{"x":[1,2]}}]),
                stop: "tool_use",
            },
            Case {
                name: "bad argument string is kept",
                message: json!({"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"city\": Lyon"}}]}),
                finish: "tool_calls",
                content: json!([{"type":"tool_use","id":"call_1","name":"f","input":{RAW_ARGUMENTS_KEY:"{\"city\": Lyon"}}]),
                stop: "tool_use",
            },
            Case {
                name: "ids normalised for Anthropic's pattern",
                message: json!({"role":"assistant","tool_calls":[{"id":"call:7f3a.9","type":"function","function":{"name":"f","arguments":"{}"}}]}),
                finish: "tool_calls",
                content: json!([{"type":"tool_use","id":"call_7f3a_9","name":"f","input":{}}]),
                stop: "tool_use",
            },
            Case {
                name: "refusal",
                message: json!({"role":"assistant","content":null,"refusal":"I can't help with that."}),
                finish: "stop",
                content: json!([{"type":"text","text":"I can't help with that."}]),
                stop: "refusal",
            },
            Case {
                name: "content filter",
                message: json!({"role":"assistant","content":"partial"}),
                finish: "content_filter",
                content: json!([{"type":"text","text":"partial"}]),
                stop: "refusal",
            },
            Case {
                name: "content as text parts",
                message: json!({"role":"assistant","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}),
                finish: "stop",
                content: json!([{"type":"text","text":"ab"}]),
                stop: "end_turn",
            },
        ];
        for c in cases {
            let t = run(completion(c.message, c.finish, usage(10, 5)));
            let b = body(&t);
            assert_eq!(b["content"], c.content, "{}", c.name);
            assert_eq!(b["stop_reason"], c.stop, "{}", c.name);
            assert_eq!(t.stop_reason, c.stop, "{}", c.name);
        }
    }

    #[test]
    fn envelope_has_every_field() {
        let t = run(completion(
            json!({"role":"assistant","content":"Hi"}),
            "stop",
            json!({"prompt_tokens":1200,"completion_tokens":80,"prompt_tokens_details":{"cached_tokens":1024}}),
        ));
        assert_eq!(
            body(&t),
            json!({"id":"msg_test","type":"message","role":"assistant","model":"client-model",
                "content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,
                "usage":{"input_tokens":176,"output_tokens":80,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024,
                         "cache_creation":null,"server_tool_use":null,"service_tier":null}})
        );
        assert_eq!(t.upstream_id.as_deref(), Some("chatcmpl-1"));
        assert!(!t.usage_estimated);
    }

    #[test]
    fn missing_id_and_bad_arguments_are_reported() {
        let t = run(completion(
            json!({"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f","arguments":"[1,2]"}}]}),
            "tool_calls",
            usage(1, 1),
        ));
        let b = body(&t);
        let id = b["content"][0]["id"].as_str().unwrap();
        assert!(id.starts_with("toolu_") && id.len() == 30, "{id}");
        assert_eq!(t.warnings.len(), 1);
        assert_eq!(t.warnings[0].param, "tool_calls.0.arguments");
        assert_eq!(t.warnings[0].reason, Reason::InvalidJson);
        assert_eq!(t.warnings[0].detail.as_deref(), Some("[1,2]"));
    }

    #[test]
    fn long_names_are_mapped_back() {
        let mut names = ToolNameMap::default();
        let long = "n".repeat(80);
        let short = names.to_upstream(&long).into_owned();
        let t = run_with(
            completion(
                json!({"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":short,"arguments":"{}"}}]}),
                "tool_calls",
                usage(1, 1),
            ),
            &names,
        );
        assert_eq!(body(&t)["content"][0]["name"], long);
    }

    #[test]
    fn missing_usage_is_estimated_and_flagged() {
        let mut c = completion(
            json!({"role":"assistant","content":"12345678"}),
            "stop",
            json!(null),
        );
        c.as_object_mut().unwrap().remove("usage");
        let t = run(c);
        assert!(t.usage_estimated);
        assert_eq!((t.usage.input_tokens, t.usage.output_tokens), (42, 2));
        assert!(t.warnings.iter().any(|w| w.reason == Reason::Estimated));
    }

    #[test]
    fn errors_and_garbage() {
        let ctx = ResponseContext {
            message_id: "m",
            client_model: "c",
            tool_names: &ToolNameMap::default(),
            estimated_input_tokens: 0,
        };
        assert!(matches!(
            translate_response(b"not json", &ctx),
            Err(ResponseError::Invalid(_))
        ));
        assert!(matches!(
            translate_response(br#"{"choices":[]}"#, &ctx),
            Err(ResponseError::Invalid(_))
        ));
        match translate_response(br#"{"error":{"message":"boom","code":429}}"#, &ctx) {
            Err(ResponseError::Upstream(e)) => assert_eq!(e.message.as_deref(), Some("boom")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_first_choice_is_used() {
        let t = run(json!({"choices":[
            {"index":1,"message":{"content":"second"},"finish_reason":"stop"},
            {"index":0,"message":{"content":"first"},"finish_reason":"length"}],"usage":usage(1,1)}));
        let b = body(&t);
        assert_eq!(b["content"][0]["text"], "first");
        assert_eq!(b["stop_reason"], "max_tokens");
    }
}
