//! An in-process OpenAI-compatible upstream: the same loopback server as [`MockUpstream`], with a
//! script that speaks `POST /v1/chat/completions` (JSON and SSE chunks), chosen by model name.
//!
//! The roles shared with the Anthropic mock (`text`, `tool`, `error-<status>`, `midstream`)
//! produce the same Anthropic output after translation, so a client test written against one runs
//! unchanged against the other.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::upstream::{End, MockUpstream, Recorded, Reply};

impl MockUpstream {
    /// An OpenAI-format upstream whose behaviour is chosen by the upstream model name
    /// (see [`by_model`]).
    pub fn openai() -> Self {
        Self::start(Arc::new(by_model))
    }
}

/// A `chat.completion.chunk` with one choice.
pub fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock",
        "choices":[{"index":0,"delta":delta,"finish_reason":finish_reason}]})
}

/// The choiceless last chunk that `stream_options.include_usage` asks for.
pub fn usage_chunk(usage: Value) -> Value {
    json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"mock","choices":[],"usage":usage})
}

/// A tool-call delta for call `index`; `id` and `name` only on its first fragment.
pub fn tool_chunk(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut function = json!({"arguments": args});
    if let Some(n) = name {
        function["name"] = json!(n);
    }
    let mut call = json!({"index": index, "function": function});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    chunk(json!({"tool_calls": [call]}), None)
}

/// `data: <chunk>` frames, then `data: [DONE]` when `done`.
pub fn sse_frames(chunks: &[Value], done: bool) -> Vec<String> {
    let mut out: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    if done {
        out.push("data: [DONE]\n\n".into());
    }
    out
}

pub fn sse(chunks: &[Value], done: bool, end: End) -> Reply {
    Reply::Sse {
        chunks: sse_frames(chunks, done)
            .into_iter()
            .map(Bytes::from)
            .collect(),
        delay: Duration::ZERO,
        end,
    }
}

pub fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens":prompt,"completion_tokens":completion,"total_tokens":prompt+completion})
}

pub fn completion(message: Value, finish_reason: &str, usage: Value) -> Value {
    json!({"id":"chatcmpl-mock","object":"chat.completion","created":1,"model":"mock",
        "choices":[{"index":0,"message":message,"finish_reason":finish_reason,"logprobs":null}],"usage":usage})
}

pub fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        400 | 422 => ("invalid_request_error", json!(null)),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        _ => ("server_error", json!(null)),
    };
    json!({"error":{"message":message,"type":kind,"param":null,"code":code}})
}

/// The `get_weather` input, and the fragments its arguments stream in: they split a key, a
/// string, a `\u00e9` escape and a number.
pub const TOOL_INPUT: &str = r#"{"city":"Lyon","unit":"célsius","days":[1,2]}"#;
pub const TOOL_FRAGMENTS: [&str; 7] = [
    "{\"ci",
    "ty\": \"Ly",
    "on\", \"unit",
    "\": \"c\\u00",
    "e9lsius\", \"days\"",
    ": [1",
    ", 2]}",
];

fn text_chunks(pieces: &[&str]) -> Vec<Value> {
    let mut c = vec![chunk(json!({"role":"assistant","content":""}), None)];
    c.extend(pieces.iter().map(|p| chunk(json!({"content": p}), None)));
    c
}

fn weather_call_chunks(index: u32, id: &str) -> Vec<Value> {
    let mut c = vec![tool_chunk(
        index,
        Some(id),
        Some("get_weather"),
        TOOL_FRAGMENTS[0],
    )];
    c.extend(
        TOOL_FRAGMENTS[1..]
            .iter()
            .map(|f| tool_chunk(index, None, None, f)),
    );
    c
}

/// The default script, chosen by the upstream model name:
///
/// | model | behaviour |
/// |---|---|
/// | `text` | "Hello from upstream", usage 21 / 9 |
/// | `tool` | "Checking." then `get_weather` (awkward fragments, [`TOOL_FRAGMENTS`]); stream usage 312 / 38; JSON usage 568 prompt of which 256 cached |
/// | `parallel` | `get_weather` and `get_time` called in parallel (one after the other) |
/// | `interleaved` | the same two calls with their argument fragments interleaved |
/// | `cached` | "ok", usage 1200 prompt (1024 cached) / 80 |
/// | `reasoning` | `reasoning_content` then text |
/// | `bad-args` | a tool call whose arguments are not JSON |
/// | `echo-tool` | calls the first declared tool (by its upstream name) with `{}` |
/// | `midstream` | a stream reset after its first text delta |
/// | `stream-error` | a `data: {"error":…}` payload (overloaded) after the first text delta |
/// | `no-finish` | text then `[DONE]`, no `finish_reason` |
/// | `no-usage` | text and `finish_reason`, then silence: no usage, no `[DONE]` |
/// | `hang` | a stream that sends its first text delta, then nothing |
/// | `error-<status>` | an OpenAI error body with that status |
pub fn by_model(req: &Recorded) -> Reply {
    let model = req.model();
    let stream = req.stream();
    if model.starts_with("loop") {
        return super::tool_user::openai(&req.json());
    }
    if let Some(status) = model
        .strip_prefix("error-")
        .and_then(|s| s.parse::<u16>().ok())
    {
        let headers = if status == 429 {
            vec![("retry-after".to_string(), "1".to_string())]
        } else {
            vec![]
        };
        return Reply::Json(
            status,
            error_body(status, &format!("scripted upstream {status}")),
            headers,
        );
    }
    match (model.as_str(), stream) {
        ("tool", true) => {
            let mut c = text_chunks(&["Checking."]);
            c.extend(weather_call_chunks(0, "toolu_01UpstreamCall"));
            c.push(chunk(json!({}), Some("tool_calls")));
            c.push(usage_chunk(usage(312, 38)));
            sse(&c, true, End::Close)
        }
        ("tool", false) => Reply::Json(
            200,
            completion(
                json!({"role":"assistant","content":"Checking.","tool_calls":[{"id":"toolu_01UpstreamCall","type":"function",
                    "function":{"name":"get_weather","arguments":TOOL_INPUT}}]}),
                "tool_calls",
                json!({"prompt_tokens":568,"completion_tokens":38,"total_tokens":606,"prompt_tokens_details":{"cached_tokens":256}}),
            ),
            vec![],
        ),
        ("parallel", true) => {
            let mut c = weather_call_chunks(0, "call_weather");
            c.push(tool_chunk(1, Some("call_time"), Some("get_time"), ""));
            c.push(tool_chunk(1, None, None, "{\"timezone\":"));
            c.push(tool_chunk(1, None, None, "\"Europe/Paris\"}"));
            c.push(chunk(json!({}), Some("tool_calls")));
            c.push(usage_chunk(usage(100, 50)));
            sse(&c, true, End::Close)
        }
        ("parallel", false) => Reply::Json(
            200,
            completion(
                json!({"role":"assistant","content":null,"tool_calls":[
                    {"id":"call_weather","type":"function","function":{"name":"get_weather","arguments":TOOL_INPUT}},
                    {"id":"call_time","type":"function","function":{"name":"get_time","arguments":"{\"timezone\":\"Europe/Paris\"}"}}]}),
                "tool_calls",
                usage(100, 50),
            ),
            vec![],
        ),
        ("interleaved", _) => {
            let c = vec![
                tool_chunk(0, Some("call_weather"), Some("get_weather"), "{\"city\":"),
                tool_chunk(1, Some("call_time"), Some("get_time"), "{\"timezone\":"),
                tool_chunk(0, None, None, "\"Lyon\"}"),
                tool_chunk(1, None, None, "\"Europe/Paris\"}"),
                chunk(json!({}), Some("tool_calls")),
                usage_chunk(usage(100, 50)),
            ];
            sse(&c, true, End::Close)
        }
        ("cached", true) => {
            let mut c = text_chunks(&["ok"]);
            c.push(chunk(json!({}), Some("stop")));
            c.push(usage_chunk(
                json!({"prompt_tokens":1200,"completion_tokens":80,"prompt_tokens_details":{"cached_tokens":1024}}),
            ));
            sse(&c, true, End::Close)
        }
        ("cached", false) => Reply::Json(
            200,
            completion(
                json!({"role":"assistant","content":"ok"}),
                "stop",
                json!({"prompt_tokens":1200,"completion_tokens":80,"prompt_tokens_details":{"cached_tokens":1024}}),
            ),
            vec![],
        ),
        ("reasoning", true) => {
            let c = vec![
                chunk(
                    json!({"role":"assistant","reasoning_content":"Think"}),
                    None,
                ),
                chunk(json!({"reasoning_content":"ing.","content":"Done"}), None),
                chunk(json!({}), Some("stop")),
                usage_chunk(usage(10, 20)),
            ];
            sse(&c, true, End::Close)
        }
        ("reasoning", false) => Reply::Json(
            200,
            completion(
                json!({"role":"assistant","reasoning_content":"Thinking.","content":"Done"}),
                "stop",
                usage(10, 20),
            ),
            vec![],
        ),
        ("bad-args", _) => Reply::Json(
            200,
            completion(
                json!({"role":"assistant","tool_calls":[{"id":"call_bad","type":"function","function":{"name":"get_weather","arguments":"{\"city\": Lyon"}}]}),
                "tool_calls",
                usage(5, 5),
            ),
            vec![],
        ),
        ("echo-tool", _) => {
            let name = req.json()["tools"][0]["function"]["name"]
                .as_str()
                .unwrap_or("none")
                .to_string();
            Reply::Json(
                200,
                completion(
                    json!({"role":"assistant","tool_calls":[{"id":"call_echo","type":"function","function":{"name":name,"arguments":"{}"}}]}),
                    "tool_calls",
                    usage(5, 5),
                ),
                vec![],
            )
        }
        ("midstream", true) => {
            // Paced, so the frames before the reset are flushed, as on a real connection.
            let c = text_chunks(&["Hello", " world"]);
            Reply::Sse {
                chunks: sse_frames(&c[..2], false)
                    .into_iter()
                    .map(Bytes::from)
                    .collect(),
                delay: Duration::from_millis(20),
                end: End::Reset,
            }
        }
        ("stream-error", true) => {
            let mut c = text_chunks(&["Hello"]);
            c.push(json!({"error":{"message":"Overloaded","type":"overloaded_error","code":529}}));
            sse(&c, false, End::Close)
        }
        ("no-finish", true) => sse(&text_chunks(&["partial"]), true, End::Close),
        ("no-usage", true) => {
            let mut c = text_chunks(&["12345678"]);
            c.push(chunk(json!({}), Some("stop")));
            sse(&c, false, End::Hang)
        }
        ("hang", true) => sse(&text_chunks(&["Hello"]), false, End::Hang),
        (_, true) => {
            let mut c = text_chunks(&["Hello", " from", " upstream"]);
            c.push(chunk(json!({}), Some("stop")));
            c.push(usage_chunk(usage(21, 9)));
            sse(&c, true, End::Close)
        }
        (_, false) => Reply::Json(
            200,
            completion(
                json!({"role":"assistant","content":"Hello from upstream","refusal":null}),
                "stop",
                usage(21, 9),
            ),
            vec![],
        ),
    }
}

/// Upstream model names of [`by_model`] that get a public model `oai-<name>`.
pub const OPENAI_MODELS: [&str; 18] = [
    "text",
    "tool",
    "parallel",
    "interleaved",
    "cached",
    "reasoning",
    "bad-args",
    "echo-tool",
    "midstream",
    "stream-error",
    "no-finish",
    "no-usage",
    "hang",
    "error-400",
    "error-404",
    "error-429",
    "error-500",
    "error-529",
];

/// [`super::base_config`] (mock and Anthropic providers at `anthropic`) plus OpenAI-compatible
/// providers at `openai` (its root; `/v1` is the configured base URL):
/// - `oai` (keyed, with a static header): models `oai-<name>` for each of [`OPENAI_MODELS`];
/// - `oai-keyless`: model `oai-keyless-text`;
/// - `oai-buffered` (`stream_tool_calls = "buffered"`): model `oai-buffered-interleaved`;
/// - model `mixed`: `oai/text` and `up/text` (the Anthropic upstream), equal weights.
///
/// `stream.usage_wait_ms` is short so the bounded wait for usage is quick in tests.
pub fn openai_config(openai: &str, anthropic: &str) -> String {
    let mut text = super::base_config(anthropic);
    text.push_str(&format!(
        r#"
[stream]
usage_wait_ms = 300

[[providers]]
name = "oai"
kind = "openai"
base_url = "{openai}/v1"
api_key_env = "UPSTREAM_KEY"
headers = {{ "x-extra-header" = "static-value" }}

[[providers]]
name = "oai-keyless"
kind = "openai"
base_url = "{openai}/v1/"

[[providers]]
name = "oai-buffered"
kind = "openai"
base_url = "{openai}/v1"
stream_tool_calls = "buffered"

[[models]]
id = "oai-keyless-text"
deployments = [{{ provider = "oai-keyless", model = "text" }}]

[[models]]
id = "oai-buffered-interleaved"
deployments = [{{ provider = "oai-buffered", model = "interleaved" }}]

[[models]]
id = "mixed"
deployments = [{{ provider = "oai", model = "text" }}, {{ provider = "up", model = "text" }}]
"#
    ));
    for name in OPENAI_MODELS {
        text.push_str(&format!(
            "\n[[models]]\nid = \"oai-{name}\"\ndeployments = [{{ provider = \"oai\", model = \"{name}\" }}]\n"
        ));
    }
    text
}
