//! Shape fidelity (issue 16): what the gateway builds itself has the API's shapes, with `null`
//! only where the API sends `null`, never for a field the API omits (`citations` on text blocks:
//! the Vercel AI SDK rejects a whole response over `"citations": null`). The client suites walk
//! every response they get the same way (`tests/sdk/shape.mjs`, `tests/sdk/python/shape.py`); this test covers, on every
//! target, what they do not reach: `pause_turn` and its continuation, every gateway tool's
//! blocks in one loop, the native `web_search_20250305` declaration run by the gateway, and the
//! error envelopes and in-stream error events.
//!
//! Audit (checked against messages-api.md §4–§7, the TypeScript SDK's types in
//! `@anthropic-ai/sdk/resources/messages` and the AI SDK's zod schemas in
//! `@ai-sdk/anthropic/dist`):
//!
//! | What the gateway writes | Where | Verdict |
//! |---|---|---|
//! | text block `citations` | `protocol/translate/response.rs`, `providers/mock.rs` | was `null`: now omitted, as the API does (fixed). TS SDK type `Array<TextCitation> \| null`, Python `Optional[...] = None`: both read an absent field; the AI SDK's `array().optional()` rejects `null` |
//! | text block in passthrough | upstream bytes, unchanged | as the upstream sent it (the scripted upstream no longer sends `null`, as the API does not) |
//! | accumulated text block with `citations_delta` | `protocol/accumulate.rs` | array only when a citation arrived: ok |
//! | `thinking` (`signature: ""` when translated), `tool_use` (`id`, `name`, `input`) | `translate/response.rs`, `mock.rs` | required fields present: ok |
//! | message envelope: `stop_sequence`, `usage.cache_creation`, `usage.server_tool_use`, `usage.service_tier` | `protocol/anthropic.rs` `MessageResponse` | `T \| null` in the SDK types, required by the Python SDK (messages-api.md §4): `null` kept |
//! | `message_start` (`content: []`, `stop_reason: null`, full usage), `content_block_start` text `{"type":"text","text":""}` | `protocol/anthropic.rs` events | API shape: ok |
//! | `message_delta` (`stop_sequence: null`, cumulative usage) | `translate/stream.rs`, `tools` loop | `nullish` in the AI SDK: ok |
//! | `server_tool_use` (`srvtoolu_…`, `name`, `input`) | tool loop (`session/tool_loop.rs`) | ok |
//! | `web_search_tool_result` items (`url`, `title` string, `encrypted_content`, `page_age` string or `null`) | `tools/web_search.rs` | ok (`title` never null: the AI SDK requires a string) |
//! | `web_fetch_tool_result` (`retrieved_at`, document `title` string or `null`, `source`) | `tools/web_fetch.rs` | `title: string \| null` in the API: ok |
//! | tool errors: `content` an object `{type: …_tool_result_error, error_code}` | `tools/mod.rs` | ok |
//! | `datetime_`, `advisor_`, `image_generation_tool_result` | gateway tools (gateway.md §5) | the gateway's own types; only `revised_prompt` may be `null` (gateway.md §5.9) |
//! | `pause_turn` reply and its continuation | tool loop | same blocks as any round: ok |
//! | error envelope `{"type":"error","error":{type,message[,details]},"request_id"}` | `error.rs` | `details` only when non-empty: ok |
//! | in-stream `event: error` | `session/relay.rs` | same envelope: ok |

use serde_json::{json, Value};

use crate::common::openai_upstream::openai_config;
use crate::common::tool_user::{services, tools_config};
use crate::common::upstream::MockUpstream;
use crate::common::*;

/// The keys where the API (and so the SDKs' types) has `T | null` rather than an optional
/// field; `revised_prompt` is the gateway's image tool's.
const NULLABLE: [&str; 13] = [
    "stop_reason",
    "stop_sequence",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "server_tool_use",
    "service_tier",
    "page_age",
    "title",
    "document_title",
    "container",
    "stop_details",
    "revised_prompt",
];

/// Every `null` at a key the API omits, and every `citations` on a text block that is not a
/// non-empty array.
fn violations(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                violations(item, &format!("{at}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let here = format!("{at}.{k}");
                if item.is_null() && !NULLABLE.contains(&k.as_str()) {
                    out.push(format!("{here} is null"));
                }
                if k == "citations"
                    && map.get("type").and_then(Value::as_str) == Some("text")
                    && item.as_array().is_none_or(|a| a.is_empty())
                {
                    out.push(format!("{here} must be a non-empty array or absent"));
                }
                violations(item, &here, out);
            }
        }
        _ => {}
    }
}

/// Walks a whole response, JSON or SSE, into `out`; returns the content blocks of a JSON one.
fn walk(what: &str, res: &Response, out: &mut Vec<String>) -> Vec<Value> {
    let mut found = Vec::new();
    let mut blocks = Vec::new();
    if res
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream"))
    {
        for (name, event) in res.events() {
            violations(&event, &format!("{what} {name}"), &mut found);
        }
    } else {
        let v = res.json();
        violations(&v, &format!("{what} body"), &mut found);
        blocks = v["content"].as_array().cloned().unwrap_or_default();
    }
    out.extend(found);
    blocks
}

#[test]
fn the_walker_finds_what_it_is_for() {
    let mut out = Vec::new();
    violations(
        &json!({"content":[{"type":"text","text":"a","citations":null},{"type":"text","text":"b","citations":[]}],
                "stop_sequence":null,"usage":{"service_tier":null,"extra":null}}),
        "$",
        &mut out,
    );
    assert_eq!(
        out,
        [
            "$.content[0].citations is null",
            "$.content[0].citations must be a non-empty array or absent",
            "$.content[1].citations must be a non-empty array or absent",
            "$.usage.extra is null",
        ]
    );
}

/// One target: the model id for each scripted behaviour (`None`: the target has no such model).
struct Target {
    name: &'static str,
    text: &'static str,
    /// Calls every gateway tool offered, then answers.
    every_tool: &'static str,
    /// Calls `gateway_datetime` every round: `pause_turn` at `max_rounds`.
    forever: Option<&'static str>,
    search: &'static str,
    error_500: &'static str,
    midstream: &'static str,
}

const TARGETS: [Target; 3] = [
    Target {
        name: "anthropic",
        text: "up-text",
        every_tool: "up-loop",
        forever: Some("shape-up-forever"),
        search: "shape-up-search",
        error_500: "up-error-500",
        midstream: "up-midstream",
    },
    Target {
        name: "openai",
        text: "oai-text",
        every_tool: "shape-oai-loop",
        forever: Some("shape-oai-forever"),
        search: "shape-oai-search",
        error_500: "oai-error-500",
        midstream: "oai-midstream",
    },
    // The mock calls the first tool offered, once.
    Target {
        name: "mock",
        text: "mock-model",
        every_tool: "mock-model",
        forever: None,
        search: "mock-model",
        error_500: "mock-error-500",
        midstream: "shape-mock-midstream",
    },
];

const MODELS: &str = r#"
[tools]
max_rounds = 3

[[models]]
id = "shape-up-forever"
deployments = [{ provider = "up", model = "loop-forever" }]

[[models]]
id = "shape-up-search"
deployments = [{ provider = "up", model = "loop-web_search" }]

[[models]]
id = "shape-oai-loop"
deployments = [{ provider = "oai", model = "loop" }]

[[models]]
id = "shape-oai-forever"
deployments = [{ provider = "oai", model = "loop-forever" }]

[[models]]
id = "shape-oai-search"
deployments = [{ provider = "oai", model = "loop-web_search" }]

[[models]]
id = "shape-mock-midstream"
deployments = [{ provider = "mock", model = "error-midstream" }]
"#;

fn body(model: &str, stream: bool, tools: Value, system: &str) -> Value {
    json!({"model": model, "max_tokens": 256, "stream": stream, "system": system, "tools": tools,
           "messages": [{"role": "user", "content": "What is the weather in Lyon?"}]})
}

#[actix_web::test]
async fn gateway_built_responses_have_no_null_where_the_api_omits_the_field() {
    let up = MockUpstream::anthropic();
    let oai = MockUpstream::openai();
    let services = services();
    let mut text = openai_config(&oai.url, &up.url);
    text.push_str(&tools_config(&services.url));
    text.push_str(MODELS);
    let mut config = parse_config(&text);
    config.retry.max_retries = 0;
    let gw = TestGateway::start_config(config);
    let page = format!("Read {}/page .", services.url);
    let every_tool = json!([{"type":"gateway:datetime"},{"type":"gateway:web_search"},
        {"type":"gateway:web_fetch"},{"type":"ai-stats:advisor"},{"type":"gateway:image_generation"}]);
    let datetime = json!([{"type":"gateway:datetime"}]);
    let native_search = json!([{"type":"web_search_20250305","name":"web_search","max_uses":2}]);
    let weather = json!([{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]);

    let mut found = Vec::new();
    let mut walked = 0;
    for t in &TARGETS {
        for stream in [false, true] {
            let what = |case: &str| format!("{} {case} stream={stream}:", t.name);
            let cases = [
                ("text", t.text, json!([])),
                ("client tool", t.every_tool, weather.clone()),
                ("every gateway tool", t.every_tool, every_tool.clone()),
                ("web_search_20250305", t.search, native_search.clone()),
            ];
            for (case, model, tools) in cases {
                let res = post(&gw.url, &body(model, stream, tools, &page)).await;
                assert_eq!(res.status, 200, "{} {:?}", what(case), res.body);
                walk(&what(case), &res, &mut found);
                walked += 1;
            }
            if let Some(forever) = t.forever {
                let res = post(&gw.url, &body(forever, stream, datetime.clone(), "")).await;
                assert_eq!(res.status, 200, "{:?}", res.body);
                walk(&what("pause_turn"), &res, &mut found);
                // The paused content, whole, for the continuation.
                let res = post(&gw.url, &body(forever, false, datetime.clone(), "")).await;
                let blocks = walk(&what("pause_turn"), &res, &mut found);
                assert!(
                    blocks.iter().any(|b| b["type"] == "datetime_tool_result"),
                    "{blocks:?}"
                );
                // The continuation: the paused content back as the last assistant message.
                let mut next = body(t.every_tool, stream, datetime.clone(), "");
                next["messages"] = json!([{"role":"user","content":"Go."},
                    {"role":"assistant","content":blocks}]);
                let res = post(&gw.url, &next).await;
                assert_eq!(res.status, 200, "{:?}", res.body);
                walk(&what("continuation"), &res, &mut found);
                walked += 2;
            }
            // Errors: before the stream (envelopes) and inside it (an `error` event).
            for (case, model, status) in [
                ("unknown model", "no-such-model", 404),
                ("upstream 500", t.error_500, 502),
            ] {
                let res = post(&gw.url, &body(model, stream, json!([]), "")).await;
                assert_eq!(res.status, status, "{} {:?}", what(case), res.body);
                walk(&what(case), &res, &mut found);
                walked += 1;
            }
            let mut bad = body(t.text, stream, json!([]), "");
            bad["max_tokens"] = json!(-1);
            let res = post(&gw.url, &bad).await;
            res.assert_error(400, "invalid_request_error");
            walk(&what("invalid request"), &res, &mut found);
            if stream {
                let res = post(&gw.url, &body(t.midstream, true, json!([]), "")).await;
                let events = res.events();
                assert_eq!(
                    events.last().map(|(n, _)| n.as_str()),
                    Some("error"),
                    "{events:?}"
                );
                walk(&what("midstream"), &res, &mut found);
            }
            walked += 2;
        }
    }
    assert!(walked > 50, "{walked}");
    assert!(found.is_empty(), "{}", found.join("\n"));
    gw.stop().await;
    up.stop().await;
    oai.stop().await;
}
