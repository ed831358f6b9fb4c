//! Malformed requests over real HTTP: each gets the Anthropic envelope with the right status, type
//! and exact message, and the server keeps serving (messages-api.md §3, §6; gateway.md §1).

use serde_json::{json, Value};

use crate::common::*;

/// The gateway limit for this file's server: small enough for a cheap oversize case.
const MAX_BODY: usize = 8192;

/// A valid body with top-level keys replaced by `patch`.
fn with(patch: Value) -> String {
    let mut b = request("mock-model", false);
    for (k, v) in patch.as_object().unwrap() {
        b[k] = v.clone();
    }
    b.to_string()
}

fn with_messages(messages: Value) -> String {
    with(json!({ "messages": messages }))
}

fn custom_tool(name: &str) -> Value {
    json!({"name": name, "input_schema": {"type": "object"}})
}

/// A user question, then an assistant turn calling `toolu_1` (and `toolu_2` when `two`).
fn after_tool_use(two: bool, user_content: Value) -> String {
    let mut calls = vec![json!({"type":"tool_use","id":"toolu_1","name":"w","input":{}})];
    if two {
        calls.push(json!({"type":"tool_use","id":"toolu_2","name":"w","input":{}}));
    }
    with(json!({
        "tools": [custom_tool("w")],
        "messages": [
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":calls},
            {"role":"user","content":user_content}
        ]
    }))
}

struct Case {
    name: &'static str,
    /// Extra request headers (`x-api-key` is always sent).
    headers: Vec<(&'static str, &'static str)>,
    body: String,
    status: u16,
    /// `(error.type, error.message)`; `None` for the cases that must succeed.
    error: Option<(&'static str, String)>,
}

fn bad(name: &'static str, body: String, message: &str) -> Case {
    Case {
        name,
        headers: vec![("content-type", "application/json")],
        body,
        status: 400,
        error: Some(("invalid_request_error", message.to_string())),
    }
}

fn v2026(mut case: Case) -> Case {
    case.headers.push(("anthropic-version", "2026-10-21"));
    case
}

fn cases() -> Vec<Case> {
    let breakpoint = json!({"type":"ephemeral"});
    let text_bp = |t: &str| json!({"type":"text","text":t,"cache_control":breakpoint});
    vec![
        // The body itself.
        bad(
            "truncated JSON",
            r#"{"model":"mock-model","#.into(),
            "invalid JSON: EOF while parsing a value at line 1 column 22",
        ),
        bad(
            "JSON array body",
            r#"[{"model":"mock-model"}]"#.into(),
            "request body must be a JSON object",
        ),
        bad(
            "empty body",
            String::new(),
            "request body is empty; expected a JSON object",
        ),
        bad(
            "form-encoded body",
            "model=mock-model&max_tokens=5".into(),
            "invalid JSON: expected value at line 1 column 1",
        ),
        bad(
            "trailing bytes",
            r#"{"model":"mock-model"} x"#.into(),
            "invalid JSON: trailing characters at line 1 column 24",
        ),
        // Top-level fields.
        bad(
            "model not a string",
            with(json!({"model": 42})),
            "model: must be a string",
        ),
        bad(
            "max_tokens as a string",
            with(json!({"max_tokens": "64"})),
            "max_tokens: must be an integer >= 1",
        ),
        bad(
            "max_tokens zero",
            with(json!({"max_tokens": 0})),
            "max_tokens: must be an integer >= 1",
        ),
        bad(
            "empty messages",
            with_messages(json!([])),
            "messages: must contain at least one message",
        ),
        bad(
            "messages missing",
            r#"{"model":"mock-model","max_tokens":5}"#.into(),
            "messages: field required",
        ),
        bad(
            "temperature out of range",
            with(json!({"temperature": 2})),
            "temperature: must be a number between 0 and 1",
        ),
        bad(
            "top_k zero",
            with(json!({"top_k": 0})),
            "top_k: must be an integer >= 1",
        ),
        bad(
            "empty stop sequence",
            with(json!({"stop_sequences": ["END", ""]})),
            "stop_sequences.1: must be a non-empty string",
        ),
        bad(
            "thinking budget too small",
            with(json!({"thinking": {"type":"enabled","budget_tokens":512}})),
            "thinking.budget_tokens: must be an integer >= 1024",
        ),
        bad(
            "unknown metadata key",
            with(json!({"metadata": {"user_id":"u1","email":"a@b.c"}})),
            "metadata.email: unknown field",
        ),
        bad(
            "metadata user_id too long",
            with(json!({"metadata": {"user_id": "u".repeat(257)}})),
            "metadata.user_id: must be at most 256 characters",
        ),
        bad(
            "empty session_id",
            with(json!({"session_id": ""})),
            "session_id: must be 1..256 characters",
        ),
        bad(
            "unknown debug flag",
            with(json!({"debug": {"verbose": true}})),
            "debug.verbose: unknown field",
        ),
        // Messages and blocks.
        bad(
            "bad role",
            with_messages(json!([{"role":"user","content":"a"},{"role":"tool","content":"b"}])),
            "messages.1.role: must be one of user, assistant, system",
        ),
        bad(
            "unknown block type",
            with_messages(json!([{"role":"user","content":[{"type":"video","url":"u"}]}])),
            "messages.0.content.0.type: unknown content block type \"video\"",
        ),
        bad(
            "tool_use in a user message",
            with_messages(
                json!([{"role":"user","content":[{"type":"tool_use","id":"t1","name":"w","input":{}}]}]),
            ),
            "messages.0.content.0.type: tool_use blocks are not allowed in user messages",
        ),
        bad(
            "image in an assistant message",
            with_messages(json!([
                {"role":"user","content":"hi"},
                {"role":"assistant","content":[{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}
            ])),
            "messages.1.content.0.type: image blocks are not allowed in assistant messages",
        ),
        bad(
            "empty text block",
            with_messages(json!([{"role":"user","content":[{"type":"text","text":""}]}])),
            "messages.0.content.0.text: must be non-empty",
        ),
        bad(
            "image media type",
            with_messages(json!([{"role":"user","content":[
                {"type":"text","text":"look"},
                {"type":"image","source":{"type":"base64","media_type":"image/bmp","data":"Qk0="}}]}])),
            "messages.0.content.1.source.media_type: must be one of image/jpeg, image/png, image/gif, image/webp",
        ),
        bad(
            "orphan tool_result",
            with_messages(
                json!([{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"x"}]}]),
            ),
            "messages.0.content.0.tool_use_id: no matching tool_use in the preceding assistant turn",
        ),
        bad(
            "tool_result after text",
            after_tool_use(
                false,
                json!([{"type":"text","text":"here"},{"type":"tool_result","tool_use_id":"toolu_1"}]),
            ),
            "messages.2.content.1: tool_result blocks must come first in the user turn",
        ),
        bad(
            "missing tool_result",
            after_tool_use(true, json!([{"type":"tool_result","tool_use_id":"toolu_1"}])),
            "messages.2.content: missing tool_result for tool_use id \"toolu_2\"",
        ),
        bad(
            "five cache breakpoints",
            with(json!({
                "system": [text_bp("s1"), text_bp("s2")],
                "messages": [{"role":"user","content":[text_bp("a"), text_bp("b"), text_bp("c")]}]
            })),
            "messages.0.content.2.cache_control: at most 4 cache_control breakpoints are allowed",
        ),
        // Tools and tool_choice.
        bad(
            "bad tool name",
            with(json!({"tools": [custom_tool("get weather")]})),
            "tools.0.name: must match ^[a-zA-Z0-9_-]{1,128}$",
        ),
        bad(
            "duplicate tool names",
            with(json!({"tools": [custom_tool("w"), custom_tool("x"), custom_tool("w")]})),
            "tools.2.name: duplicate tool name \"w\"",
        ),
        bad(
            "reserved gateway_ name",
            with(json!({"tools": [custom_tool("gateway_web_search")]})),
            "tools.0.name: names starting with gateway_ are reserved",
        ),
        bad(
            "unknown tool type",
            with(json!({"tools": [{"type":"function","function":{"name":"w"}}]})),
            "tools.0.type: unknown tool type \"function\"",
        ),
        bad(
            "tool_choice names an undeclared tool",
            with(json!({"tools": [custom_tool("w")], "tool_choice": {"type":"tool","name":"x"}})),
            "tool_choice.name: \"x\" is not a declared tool",
        ),
        bad(
            "tool_choice string form",
            with(json!({"tool_choice": "required"})),
            "tool_choice: must be one of auto, any, none or a gateway tool type",
        ),
        bad(
            "tool_choice names a gateway tool nobody declared",
            with(json!({"tool_choice": {"type":"tool","name":"gateway_advisor_reviewer"}})),
            "tool_choice.name: \"gateway_advisor_reviewer\" is not a declared tool",
        ),
        bad(
            "tool_choice none with disable_parallel_tool_use",
            with(json!({"tool_choice": {"type":"none","disable_parallel_tool_use":true}})),
            "tool_choice.disable_parallel_tool_use: not allowed with type none",
        ),
        // Native web shapes and gateway tools share one rule set for their options.
        bad(
            "native web_search with both domain lists",
            with(json!({"tools": [{"type":"web_search_20250305","name":"web_search",
                "allowed_domains":["a.org"],"blocked_domains":["b.org"]}]})),
            "tools.0.blocked_domains: allowed_domains and blocked_domains are mutually exclusive",
        ),
        bad(
            "gateway web_search with both domain lists",
            with(json!({"tools": [{"type":"gateway:web_search",
                "allowed_domains":["a.org"],"blocked_domains":["b.org"]}]})),
            "tools.0.blocked_domains: allowed_domains and blocked_domains are mutually exclusive",
        ),
        bad(
            "native web_search user_location without type",
            with(json!({"tools": [{"type":"web_search_20250305","name":"web_search",
                "user_location":{"city":"Lyon","zip":"69001"}}]})),
            "tools.0.user_location.type: field required",
        ),
        bad(
            "streaming request with a bad body",
            with(json!({"stream": true, "max_tokens": -1})),
            "max_tokens: must be an integer >= 1",
        ),
        // anthropic-version rules (§2.2).
        Case {
            headers: vec![("anthropic-version", "2025-01-01")],
            ..bad(
                "unsupported version",
                with(json!({})),
                "anthropic-version: unsupported value \"2025-01-01\"",
            )
        },
        v2026(bad(
            "2026: top_p at its default",
            with(json!({"top_p": 1.0})),
            "top_p: Extra inputs are not permitted",
        )),
        v2026(bad(
            "2026: document in an assistant message",
            with_messages(json!([
                {"role":"user","content":"summarise"},
                {"role":"assistant","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"d"}}]}
            ])),
            "messages.1.content.0.type: document blocks are not allowed in assistant messages",
        )),
        v2026(bad(
            "2026: citations on user text",
            with_messages(json!([{"role":"user","content":[
                {"type":"text","text":"as I said","citations":[{"type":"char_location","cited_text":"x","document_index":0,"start_char_index":0,"end_char_index":1}]}]}])),
            "messages.0.content.0.citations: not allowed in user messages",
        )),
        // Bodies are JSON whatever the content type (§1).
        Case {
            name: "valid JSON sent as text/plain",
            headers: vec![("content-type", "text/plain")],
            body: with(json!({})),
            status: 200,
            error: None,
        },
        Case {
            name: "oversize body",
            headers: vec![("content-type", "application/json")],
            body: with_messages(json!([{"role":"user","content":"x".repeat(MAX_BODY)}])),
            status: 413,
            error: Some((
                "request_too_large",
                format!("request body exceeds the limit of {MAX_BODY} bytes"),
            )),
        },
    ]
}

#[actix_web::test]
async fn malformed_requests_get_exact_errors() {
    let config = base_config("http://127.0.0.1:9").replace(
        "workers = 1",
        &format!("workers = 1\nmax_body_bytes = {MAX_BODY}"),
    );
    let gw = TestGateway::start(&config);
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    // Mismatches are collected so one run shows all of them.
    let mut failures = Vec::new();
    for case in cases {
        let mut headers = vec![("x-api-key", KEY)];
        headers.extend(case.headers.iter().copied());
        let res = post_raw(&gw.url, "/v1/messages", &headers, case.body.clone()).await;
        let name = case.name;
        let got = String::from_utf8_lossy(&res.body).into_owned();
        match case.error {
            None => {
                if res.status != case.status || res.json()["type"] != "message" {
                    failures.push(format!("{name}: {} {got}", res.status));
                }
            }
            Some((kind, message)) => {
                if res.status != case.status {
                    failures.push(format!("{name}: status {} {got}", res.status));
                    continue;
                }
                // Status, content type, envelope, error type, request-id header == request_id.
                let v = res.assert_error(case.status, kind);
                if v["error"]["message"] != message.as_str() {
                    failures.push(format!(
                        "{name}: {}\n  want {message:?}",
                        v["error"]["message"]
                    ));
                }
                assert_eq!(res.header("x-should-retry"), Some("false"), "{name}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Every problem is listed in `details`; the message is the first.
    let body = with(json!({"model": "", "top_k": 0, "messages": [{"role":"bot","content":"x"}]}));
    let res = post_raw(&gw.url, "/v1/messages", &[("x-api-key", KEY)], body).await;
    let v = res.assert_error(400, "invalid_request_error");
    assert_eq!(v["error"]["message"], "model: must be 1..256 characters");
    assert_eq!(
        v["error"]["details"],
        json!([
            {"param":"model","reason":"must be 1..256 characters"},
            {"param":"messages.0.role","reason":"must be one of user, assistant, system"},
            {"param":"top_k","reason":"must be an integer >= 1"}
        ])
    );

    // The server is still healthy.
    let res = post(&gw.url, &request("mock-model", false)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["content"][0]["type"], "text");
    gw.stop().await;
}
