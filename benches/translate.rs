//! Translation micro-benchmarks (pure code, no I/O): an Anthropic request with a 10-turn tool
//! conversation → chat/completions; a 200-chunk upstream stream → Anthropic events (SSE parsing
//! included); a chat completion → Anthropic message.
//!
//! `cargo bench --bench translate` (add `-- --quick` on a shared machine).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};

use aigw::config::ProviderKind;
use aigw::protocol::capabilities::Capabilities;
use aigw::protocol::request::{parse_fields, MessagesRequest};
use aigw::protocol::sse::SseParser;
use aigw::protocol::translate::stream::StreamContext;
use aigw::protocol::translate::{
    translate_request, translate_response, RequestContext, ResponseContext, StreamTranslator,
    ToolNameMap,
};
use aigw::protocol::validate::{validate, ApiVersion};

/// System prompt, two tools, and ten turns of question → text + tool call → tool result.
fn tool_conversation() -> Vec<u8> {
    let mut messages = Vec::new();
    for turn in 0..10 {
        messages.push(json!({"role":"user","content":[{"type":"text",
            "text":format!("Turn {turn}: what is the weather in Lyon and what time is it in Paris? Please be precise and explain your reasoning briefly.")}]}));
        messages.push(json!({"role":"assistant","content":[
            {"type":"thinking","thinking":"I should call both tools.","signature":"c2lnbmF0dXJl"},
            {"type":"text","text":"Let me check both for you."},
            {"type":"tool_use","id":format!("toolu_{turn:024}"),"name":"get_weather","input":{"city":"Lyon","unit":"celsius","days":[1,2,3]}},
            {"type":"tool_use","id":format!("toolu_t{turn:023}"),"name":"get_time","input":{"timezone":"Europe/Paris"}}]}));
        messages.push(json!({"role":"user","content":[
            {"type":"tool_result","tool_use_id":format!("toolu_{turn:024}"),"content":"Sunny, 24°C, light wind from the north-west; tomorrow 22°C with clouds."},
            {"type":"tool_result","tool_use_id":format!("toolu_t{turn:023}"),"content":[{"type":"text","text":"2026-07-09T17:27:12+02:00"}]}]}));
    }
    messages.push(json!({"role":"user","content":"Summarise everything."}));
    let body = json!({
        "model": "sonnet", "max_tokens": 4096, "temperature": 0.7, "stream": true,
        "system": [{"type":"text","text":"You are a helpful assistant with tools. Answer concisely and cite tool results."}],
        "metadata": {"user_id": "user-1234"},
        "tools": [
            {"name":"get_weather","description":"Current weather and forecast for a city","input_schema":{"type":"object",
                "properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]},"days":{"type":"array","items":{"type":"integer"}}},"required":["city"]}},
            {"name":"get_time","description":"Current time in a time zone","input_schema":{"type":"object",
                "properties":{"timezone":{"type":"string"}},"required":["timezone"]}}],
        "tool_choice": {"type":"auto"},
        "messages": messages
    });
    serde_json::to_vec(&body).unwrap()
}

fn request(body: &[u8]) -> MessagesRequest {
    validate(parse_fields(body).unwrap(), ApiVersion::V2023_06_01).unwrap()
}

/// Exactly 200 chunks: a role chunk, text pieces, two tool calls in about 20 argument fragments
/// each, the finish chunk and the usage chunk; then `[DONE]`.
fn stream_bytes() -> Vec<u8> {
    let args = r#"{"city":"Lyon","unit":"celsius","days":[1,2,3],"note":"caf\u00e9 au lait"}"#;
    let pieces: Vec<String> = args
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let texts = 200 - 3 - 2 * pieces.len();
    let mut chunks: Vec<Value> =
        vec![json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})];
    for i in 0..texts {
        chunks.push(
            json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-x",
            "choices":[{"index":0,"delta":{"content":format!("word{i} ")},"finish_reason":null}]}),
        );
    }
    for (call, name) in ["get_weather", "get_forecast"].iter().enumerate() {
        for (j, p) in pieces.iter().enumerate() {
            let mut f = json!({"index":call,"function":{"arguments":p}});
            if j == 0 {
                f["id"] = json!(format!("call_{call}"));
                f["function"]["name"] = json!(name);
            }
            chunks.push(
                json!({"choices":[{"index":0,"delta":{"tool_calls":[f]},"finish_reason":null}]}),
            );
        }
    }
    chunks.push(json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}));
    chunks.push(json!({"choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":380,"prompt_tokens_details":{"cached_tokens":1024}}}));
    assert_eq!(chunks.len(), 200);
    let mut out = String::new();
    for c in &chunks {
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn completion() -> Vec<u8> {
    serde_json::to_vec(&json!({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x",
        "choices":[{"index":0,"message":{"role":"assistant","reasoning_content":"Both tools are needed.",
            "content":"Let me check the weather in Lyon and the time in Paris for you.",
            "tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lyon\",\"unit\":\"celsius\",\"days\":[1,2,3]}"}},
                {"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{\"timezone\":\"Europe/Paris\"}"}}]},
            "finish_reason":"tool_calls"}],
        "usage":{"prompt_tokens":1200,"completion_tokens":80,"prompt_tokens_details":{"cached_tokens":1024}}}))
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let caps = Capabilities::default_for(ProviderKind::Openai);

    let body = tool_conversation();
    let req = request(&body);
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("request_10_turn_tools", |b| {
        b.iter(|| {
            let ctx = RequestContext {
                upstream_model: "gpt-x",
                caps: &caps,
                stream: true,
                prompt_cache_key: None,
            };
            translate_request(&req, &ctx).body.len()
        })
    });

    let bytes = stream_bytes();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("stream_200_chunks", |b| {
        b.iter_batched(
            || {
                StreamTranslator::new(StreamContext {
                    message_id: "msg_bench".into(),
                    client_model: "sonnet".into(),
                    tool_names: ToolNameMap::default(),
                    buffered_tool_calls: false,
                    estimated_input_tokens: 0,
                })
            },
            |mut tr| {
                let mut parser = SseParser::new();
                let mut events = Vec::new();
                let mut frames = Vec::new();
                // Reads of 1 KiB, as a socket might deliver them.
                for read in bytes.chunks(1024) {
                    parser.push(read, &mut events).unwrap();
                    for ev in events.drain(..) {
                        tr.push_event(&ev, &mut frames).unwrap();
                    }
                }
                assert!(tr.is_closed());
                frames.len()
            },
            BatchSize::SmallInput,
        )
    });

    let completion = completion();
    let names = ToolNameMap::default();
    g.throughput(Throughput::Bytes(completion.len() as u64));
    g.bench_function("response_text_and_2_tools", |b| {
        b.iter(|| {
            let ctx = ResponseContext {
                message_id: "msg_bench",
                client_model: "sonnet",
                tool_names: &names,
                estimated_input_tokens: 0,
            };
            translate_response(&completion, &ctx).unwrap().body.len()
        })
    });
    g.finish();
}

criterion_group!(translate, benches);
criterion_main!(translate);
