//! A scripted model that uses tools, served by both mock upstreams (Anthropic and OpenAI wire
//! formats) for upstream models named `loop…`:
//!
//! | model          | first turn (no tool results yet)                          | after tool results |
//! |----------------|-----------------------------------------------------------|--------------------|
//! | `loop`         | "Using tools." + a call of every `gateway_*` tool offered | `done: <results>`  |
//! | `loop-client`  | the same, plus a call of the first non-gateway tool       | `done: <results>`  |
//! | `loop-<name>`  | a call of `gateway_<name>` only (e.g. `loop-datetime`)     | `done: <results>`  |
//! | `loop-forever` | a call of `gateway_datetime`, every turn                  | the same           |
//! | `loop-twice`   | two calls of `gateway_datetime` in one turn               | `done: <results>`  |
//!
//! Inputs: datetime `{"timezones":["Europe/Paris"]}`, web_search `{"query":"lyon weather"}`,
//! web_fetch the first `http://` URL of the system prompt, image `{"prompt":"a red square"}`,
//! advisor `{"prompt":"is the plan sound?"}`, anything else `{}`.

use bytes::Bytes;
use serde_json::{json, Value};

use super::openai_upstream as oai;
use super::tool_mocks::{HttpMock, Reply as MockReply};
use super::upstream::{self, End, Reply};

/// One turn of the scripted model.
#[derive(Debug, Clone)]
pub struct Plan {
    pub text: Option<String>,
    /// `(id, name, input)`.
    pub calls: Vec<(String, String, Value)>,
}

/// What the model sees of a request, whatever its wire format.
pub struct Seen {
    pub tools: Vec<String>,
    /// The tool results of the last turn, if it was one.
    pub results: Option<Vec<String>>,
    pub system: String,
}

pub fn decide(model: &str, seen: &Seen) -> Plan {
    let call = |name: &str, i: usize| -> (String, String, Value) {
        let input = match name {
            "gateway_datetime" => json!({"timezones": ["Europe/Paris"]}),
            "gateway_web_search" => json!({"query": "lyon weather"}),
            "gateway_web_fetch" => {
                let url = seen
                    .system
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .unwrap_or("http://127.0.0.1:9/none");
                json!({"url": url})
            }
            "gateway_image_generation" => json!({"prompt": "a red square"}),
            n if n.starts_with("gateway_advisor") => json!({"prompt": "is the plan sound?"}),
            _ => json!({}),
        };
        (format!("toolu_loop_{i}"), name.to_string(), input)
    };
    let gateway: Vec<&String> = seen
        .tools
        .iter()
        .filter(|t| t.starts_with("gateway_"))
        .collect();
    if model != "loop-forever" {
        if let Some(results) = &seen.results {
            let joined = results.join(" | ");
            let cut: String = joined.chars().take(3000).collect();
            return Plan {
                text: Some(format!("done: {cut}")),
                calls: vec![],
            };
        }
    }
    let calls = match model {
        "loop" => gateway
            .iter()
            .enumerate()
            .map(|(i, n)| call(n, i))
            .collect(),
        "loop-client" => {
            let mut c: Vec<_> = gateway
                .iter()
                .enumerate()
                .map(|(i, n)| call(n, i))
                .collect();
            if let Some(client) = seen.tools.iter().find(|t| !t.starts_with("gateway_")) {
                c.push(call(client, 99));
            }
            c
        }
        "loop-forever" => vec![call("gateway_datetime", 0)],
        "loop-twice" => vec![call("gateway_datetime", 0), call("gateway_datetime", 1)],
        m => {
            let name = format!("gateway_{}", m.trim_start_matches("loop-"));
            vec![call(&name, 0)]
        }
    };
    Plan {
        text: Some("Using tools.".into()),
        calls,
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The scripted model behind the Anthropic mock.
pub fn anthropic(req: &Value) -> Reply {
    let model = req["model"].as_str().unwrap_or_default();
    let tools = req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    let last = req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    let results: Vec<String> = last["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| text_of(&b["content"]))
        .collect();
    let seen = Seen {
        tools,
        results: (last["role"] == "user" && !results.is_empty()).then_some(results),
        system: text_of(&req["system"]),
    };
    let plan = decide(model, &seen);
    let stop = if plan.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    let mut content = Vec::new();
    if let Some(t) = &plan.text {
        content.push(json!({"type":"text","text":t}));
    }
    for (id, name, input) in &plan.calls {
        content.push(json!({"type":"tool_use","id":id,"name":name,"input":input}));
    }
    if req["stream"] != true {
        let body = json!({"id":"msg_01Loop","type":"message","role":"assistant","model":model,"content":content,
            "stop_reason":stop,"stop_sequence":null,
            "usage":{"input_tokens":100,"output_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}});
        return Reply::Json(200, body, vec![]);
    }
    let mut frames = vec![upstream::frame(
        "message_start",
        &upstream::message_start("msg_01Loop", model, 100),
    )];
    for (i, block) in content.iter().enumerate() {
        match block["type"].as_str() {
            Some("text") => {
                frames.push(upstream::frame("content_block_start", &json!({"type":"content_block_start","index":i,"content_block":{"type":"text","text":""}})));
                frames.push(upstream::frame("content_block_delta", &json!({"type":"content_block_delta","index":i,"delta":{"type":"text_delta","text":block["text"]}})));
            }
            _ => {
                let mut start = block.clone();
                start["input"] = json!({});
                frames.push(upstream::frame(
                    "content_block_start",
                    &json!({"type":"content_block_start","index":i,"content_block":start}),
                ));
                let args = block["input"].to_string();
                let (a, b) = args.split_at(args.len() / 2);
                for part in [a, b] {
                    frames.push(upstream::frame("content_block_delta", &json!({"type":"content_block_delta","index":i,"delta":{"type":"input_json_delta","partial_json":part}})));
                }
            }
        }
        frames.push(upstream::frame(
            "content_block_stop",
            &json!({"type":"content_block_stop","index":i}),
        ));
    }
    frames.push(upstream::frame(
        "message_delta",
        &json!({"type":"message_delta","delta":{"stop_reason":stop,"stop_sequence":null},"usage":{"output_tokens":10}}),
    ));
    frames.push(upstream::frame(
        "message_stop",
        &json!({"type":"message_stop"}),
    ));
    upstream::sse(frames, End::Close)
}

/// The scripted model behind the OpenAI mock.
pub fn openai(req: &Value) -> Reply {
    let model = req["model"].as_str().unwrap_or_default();
    let tools = req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
        .collect();
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let trailing: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] == "tool")
        .map(|m| text_of(&m["content"]))
        .collect();
    let system = messages
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| text_of(&m["content"]))
        .collect::<Vec<_>>()
        .join("\n");
    let seen = Seen {
        tools,
        results: (!trailing.is_empty()).then(|| trailing.into_iter().rev().collect()),
        system,
    };
    let plan = decide(model, &seen);
    let finish = if plan.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    if req["stream"] != true {
        let calls: Vec<Value> = plan
            .calls
            .iter()
            .map(|(id, name, input)| json!({"id":id,"type":"function","function":{"name":name,"arguments":input.to_string()}}))
            .collect();
        let mut message = json!({"role":"assistant","content":plan.text});
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        return Reply::Json(
            200,
            oai::completion(message, finish, oai::usage(100, 10)),
            vec![],
        );
    }
    let mut chunks = vec![oai::chunk(json!({"role":"assistant","content":""}), None)];
    if let Some(t) = &plan.text {
        chunks.push(oai::chunk(json!({"content": t}), None));
    }
    for (i, (id, name, input)) in plan.calls.iter().enumerate() {
        let args = input.to_string();
        let (a, b) = args.split_at(args.len() / 2);
        chunks.push(oai::tool_chunk(i as u32, Some(id), Some(name), a));
        chunks.push(oai::tool_chunk(i as u32, None, None, b));
    }
    chunks.push(oai::chunk(json!({}), Some(finish)));
    chunks.push(oai::usage_chunk(oai::usage(100, 10)));
    Reply::Sse {
        chunks: oai::sse_frames(&chunks, true)
            .into_iter()
            .map(Bytes::from)
            .collect(),
        delay: std::time::Duration::ZERO,
        end: End::Close,
    }
}

/// A 1×1 PNG, as the images mock returns it.
pub const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// The services gateway tools reach: a SearXNG instance (`/searx`), a web page (`/page`), an
/// images API (`/v1/images/generations`); anything else is a 404.
pub fn services() -> HttpMock {
    HttpMock::start(|r| {
        match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/searx/search") => MockReply::Json(
            200,
            json!({"results":[{"url":"https://example.org/lyon","title":"Lyon forecast","content":"Sunny in Lyon","publishedDate":"2026-07-08"}]}),
        ),
        ("GET", "/page") => MockReply::Body(
            200,
            "text/html; charset=utf-8",
            Bytes::from_static(b"<html><head><title>Lyon page</title></head><body><h1>Lyon</h1><p>Hello from Lyon.</p></body></html>"),
        ),
        ("POST", "/v1/images/generations") => MockReply::Json(
            200,
            json!({"created":1,"data":[{"b64_json":PNG}],"usage":{"input_tokens":7,"output_tokens":50}}),
        ),
        _ => MockReply::Json(404, json!({"error":"not found"})),
    }
    })
}

/// Config for the five tools against [`services`]: an `images` provider, a SearXNG engine,
/// fetches allowed on loopback, the advisor on model `up-text` (from `base_config`).
pub fn tools_config(services: &str) -> String {
    format!(
        r#"
[[providers]]
name = "images"
kind = "openai"
base_url = "{services}/v1"

[tools.web_search.engines.local]
kind = "searxng"
base_url = "{services}/searx"

[tools.web_fetch]
allow_private_networks = true

[tools.image_generation]
provider = "images"
model = "gpt-image-1"

[tools.advisor]
default_model = "up-text"
"#
    )
}
