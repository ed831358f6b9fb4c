//! The local `count_tokens` estimate (gateway.md §10), for models without an Anthropic
//! deployment: o200k_base BPE over the system prompt, message text, tool inputs and results and
//! the tool definitions' JSON, plus 3 tokens per message and 1600 per image or document.

use serde_json::Value;
use tiktoken_rs::CoreBPE;

const PER_MESSAGE: u64 = 3;
const PER_IMAGE_OR_DOCUMENT: u64 = 1600;

/// The tokenizer, built on first use (it parses a 200k-entry vocabulary).
fn bpe() -> &'static CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

fn tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe().encode_ordinary(text).len() as u64
}

/// The estimate for a validated request's `system`, `messages` and (upstream-form) `tools`.
pub fn estimate(system: Option<&Value>, messages: &[Value], tools: &[Value]) -> u64 {
    let mut n = system.map_or(0, content);
    for m in messages {
        n += PER_MESSAGE + m.get("content").map_or(0, content);
    }
    for t in tools {
        n += tokens(&t.to_string());
    }
    n
}

/// A string, or an array of content blocks.
fn content(v: &Value) -> u64 {
    match v {
        Value::String(s) => tokens(s),
        Value::Array(blocks) => blocks.iter().map(block).sum(),
        _ => 0,
    }
}

fn block(b: &Value) -> u64 {
    let field = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
    match field("type") {
        "text" => tokens(field("text")),
        "thinking" => tokens(field("thinking")),
        "image" | "document" => PER_IMAGE_OR_DOCUMENT,
        "tool_use" | "server_tool_use" => b.get("input").map_or(0, |i| tokens(&i.to_string())),
        "tool_result" => b.get("content").map_or(0, content),
        // Redacted thinking is opaque; other result blocks count as their JSON.
        "redacted_thinking" => 0,
        _ => b.get("content").map_or(0, |c| tokens(&c.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates() {
        let hello = tokens("Hello there");
        assert_eq!(hello, 2);
        let tool = json!({"name":"get_weather","input_schema":{"type":"object"}});
        let tool_tokens = tokens(&tool.to_string());
        assert!(tool_tokens > 5);
        let image = json!({"type":"image","source":{"type":"base64","media_type":"image/png","data":"QUJD"}});
        // (name, system, messages, tools, expected)
        type Case = (&'static str, Option<Value>, Vec<Value>, Vec<Value>, u64);
        let cases: Vec<Case> = vec![
            (
                "one message",
                None,
                vec![json!({"role":"user","content":"Hello there"})],
                vec![],
                3 + hello,
            ),
            (
                "system string",
                Some(json!("Hello there")),
                vec![json!({"role":"user","content":"Hello there"})],
                vec![],
                3 + 2 * hello,
            ),
            (
                "system blocks",
                Some(json!([{"type":"text","text":"Hello there"}])),
                vec![],
                vec![],
                hello,
            ),
            (
                "image and document",
                None,
                vec![
                    json!({"role":"user","content":[image, {"type":"document","source":{"type":"text","media_type":"text/plain","data":"x"}}, {"type":"text","text":"Hello there"}]}),
                ],
                vec![],
                3 + 3200 + hello,
            ),
            (
                "tool use and result",
                None,
                vec![
                    json!({"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]}),
                    json!({"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"Hello there"}]}]}),
                ],
                vec![],
                6 + tokens("{}") + hello,
            ),
            (
                "tools",
                None,
                vec![],
                vec![tool.clone(), tool],
                2 * tool_tokens,
            ),
        ];
        for (name, system, messages, tools, expected) in cases {
            assert_eq!(
                estimate(system.as_ref(), &messages, &tools),
                expected,
                "{name}"
            );
        }
    }
}
