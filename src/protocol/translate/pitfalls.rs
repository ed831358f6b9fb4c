//! translation.md §7: every pitfall seen in other gateways, one named case each. Pitfalls that
//! live outside the pure translation (9, 10, 15) are end-to-end tests in `tests/it/openai.rs`
//! with the same names.

use serde_json::{json, Value};

use super::request::{translate_request, RequestContext};
use super::response::{translate_response, ResponseContext};
use super::stream::{StreamContext, StreamEnd, StreamTranslator};
use super::tool_names::ToolNameMap;
use crate::config::ProviderKind;
use crate::protocol::capabilities::Capabilities;
use crate::protocol::request::parse_fields;
use crate::protocol::validate::{validate, ApiVersion};

/// Runs chunks through a translator and returns the events as (name, payload).
fn stream(chunks: &[Value], end: StreamEnd) -> (Vec<(String, Value)>, bool) {
    let mut tr = StreamTranslator::new(StreamContext {
        message_id: "msg_p".into(),
        client_model: "m".into(),
        tool_names: ToolNameMap::default(),
        buffered_tool_calls: false,
        estimated_input_tokens: 1,
    });
    let mut frames = Vec::new();
    let mut failed = false;
    for c in chunks {
        if tr.push(c.to_string().as_bytes(), &mut frames).is_err() {
            failed = true;
            break;
        }
    }
    if !failed {
        failed = tr.finish(end, &mut frames).is_err();
    }
    let events = frames
        .iter()
        .map(|f| {
            (
                f.kind.name().to_string(),
                serde_json::from_slice(&f.data).unwrap(),
            )
        })
        .collect();
    (events, failed)
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"choices":[{"index":0,"delta":delta,"finish_reason":finish}]})
}

fn tool(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut c = json!({"index":index,"function":{"arguments":args}});
    if let Some(id) = id {
        c["id"] = json!(id);
    }
    if let Some(n) = name {
        c["function"]["name"] = json!(n);
    }
    chunk(json!({"tool_calls":[c]}), None)
}

fn usage(p: u64, c: u64) -> Value {
    json!({"choices":[],"usage":{"prompt_tokens":p,"completion_tokens":c}})
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn partial_json(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter_map(|(_, v)| v["delta"]["partial_json"].as_str())
        .collect()
}

fn translate(body: Value) -> Value {
    let req = validate(
        parse_fields(body.to_string().as_bytes()).unwrap(),
        ApiVersion::V2023_06_01,
    )
    .unwrap();
    let caps = Capabilities::default_for(ProviderKind::Openai);
    let t = translate_request(
        &req,
        &RequestContext {
            upstream_model: "up",
            caps: &caps,
            stream: false,
            prompt_cache_key: None,
        },
    );
    serde_json::from_slice(&t.body).unwrap()
}

fn respond(body: Value) -> Value {
    let names = ToolNameMap::default();
    let t = translate_response(
        body.to_string().as_bytes(),
        &ResponseContext {
            message_id: "msg_p",
            client_model: "m",
            tool_names: &names,
            estimated_input_tokens: 0,
        },
    )
    .unwrap();
    serde_json::from_slice(&t.body).unwrap()
}

#[test]
fn pitfall_1_streamed_tool_arguments_are_never_dropped() {
    // Arguments arriving in the same chunk as the name (Gemini-style) and in later chunks.
    let (events, _) = stream(
        &[
            tool(0, Some("c1"), Some("f"), "{\"a\":1,"),
            tool(0, None, None, "\"b\":2}"),
            chunk(json!({}), Some("tool_calls")),
            usage(1, 1),
        ],
        StreamEnd::Done,
    );
    assert_eq!(partial_json(&events), "{\"a\":1,\"b\":2}");
}

#[test]
fn pitfall_2_the_chunk_that_switches_blocks_keeps_its_own_delta() {
    let (events, _) = stream(
        &[
            chunk(json!({"reasoning_content":"r"}), None),
            chunk(json!({"content":"first words"}), None),
            tool(0, Some("c1"), Some("f"), "{\"x\":true}"),
            chunk(json!({}), Some("tool_calls")),
            usage(1, 1),
        ],
        StreamEnd::Done,
    );
    assert_eq!(events[5].1["delta"]["text"], "first words");
    assert_eq!(events[8].1["delta"]["partial_json"], "{\"x\":true}");
}

#[test]
fn pitfall_3_lifecycle_frames_are_never_missing() {
    let (events, failed) = stream(
        &[chunk(json!({"content":"a"}), Some("stop")), usage(1, 1)],
        StreamEnd::Done,
    );
    assert!(!failed);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    // The held message_delta comes after the block's stop even when usage arrives late.
    let (events, _) = stream(
        &[chunk(json!({"content":"a"}), Some("stop"))],
        StreamEnd::UsageWait,
    );
    assert_eq!(
        names(&events)[3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
}

#[test]
fn pitfall_4_mixed_reasoning_and_text_in_one_chunk_become_two_blocks() {
    let (events, _) = stream(
        &[
            chunk(
                json!({"reasoning_content":"think","content":"say"}),
                Some("stop"),
            ),
            usage(1, 1),
        ],
        StreamEnd::Done,
    );
    assert_eq!(events[1].1["content_block"]["type"], "thinking");
    assert_eq!(events[2].1["delta"]["thinking"], "think");
    assert_eq!(events[4].1["content_block"]["type"], "text");
    assert_eq!(events[5].1["delta"]["text"], "say");
}

#[test]
fn pitfall_5_no_empty_or_mistyped_deltas() {
    let (events, _) = stream(
        &[
            chunk(json!({"reasoning_content":"r"}), None),
            chunk(json!({"content":"","reasoning_content":""}), None),
            chunk(json!({"role":"assistant"}), None),
            chunk(json!({"reasoning_content":"s"}), Some("stop")),
            usage(1, 1),
        ],
        StreamEnd::Done,
    );
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(events
        .iter()
        .all(|(_, v)| v["delta"]["type"] != "text_delta"));
}

#[test]
fn pitfall_6_thinking_blocks_are_not_sent_to_openai_backends() {
    let body = translate(json!({"model":"m","max_tokens":5,"messages":[
        {"role":"user","content":"q"},
        {"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"redacted_thinking","data":"d"},{"type":"text","text":"a"}]},
        {"role":"user","content":"q2"}]}));
    assert!(!body.to_string().contains("thinking"), "{body}");
    assert_eq!(
        body["messages"][1],
        json!({"role":"assistant","content":"a"})
    );
}

#[test]
fn pitfall_7_cached_tokens_are_neither_double_counted_nor_lost() {
    let usage = json!({"prompt_tokens":1200,"completion_tokens":80,"prompt_tokens_details":{"cached_tokens":1024}});
    let expected = json!({"input_tokens":176,"output_tokens":80,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024});
    let v = respond(
        json!({"choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"}],"usage":usage}),
    );
    for k in [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ] {
        assert_eq!(v["usage"][k], expected[k]);
    }
    let (events, _) = stream(
        &[
            chunk(json!({"content":"x"}), Some("stop")),
            json!({"choices":[],"usage":usage}),
        ],
        StreamEnd::Done,
    );
    assert_eq!(events[4].1["usage"], expected);
}

#[test]
fn pitfall_8_message_delta_always_has_all_four_integer_counters() {
    // No usage at all, and usage with nulls.
    for tail in [
        vec![],
        vec![json!({"choices":[],"usage":{"prompt_tokens":null,"completion_tokens":3}})],
    ] {
        let mut chunks = vec![chunk(json!({"content":"x"}), Some("stop"))];
        chunks.extend(tail);
        let (events, _) = stream(&chunks, StreamEnd::Done);
        let u = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1["usage"];
        for k in [
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ] {
            assert!(u[k].is_u64(), "{k}: {u}");
        }
    }
}

#[test]
fn pitfall_11_mid_stream_errors_are_raised() {
    let (events, failed) = stream(
        &[
            chunk(json!({"content":"a"}), None),
            json!({"error":{"message":"boom","type":"server_error"}}),
        ],
        StreamEnd::Done,
    );
    assert!(failed);
    assert!(!names(&events).contains(&"message_stop"));
}

#[test]
fn pitfall_12_no_text_block_for_tool_only_replies_live_deltas_real_usage() {
    let (events, _) = stream(
        &[
            chunk(json!({"role":"assistant","content":null}), None),
            tool(0, Some("c1"), Some("f"), "{\"a\":"),
            tool(0, None, None, "1}"),
            chunk(json!({}), Some("tool_calls")),
            usage(50, 7),
        ],
        StreamEnd::Done,
    );
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    // Two live deltas, not one buffered one.
    assert_eq!(events[2].1["delta"]["partial_json"], "{\"a\":");
    assert_eq!(events[3].1["delta"]["partial_json"], "1}");
    assert_eq!(events[5].1["usage"]["input_tokens"], 50);
    assert_eq!(events[5].1["usage"]["output_tokens"], 7);
}

#[test]
fn pitfall_13_request_and_response_mappings_are_not_lossy() {
    let body = translate(
        json!({"model":"m","max_tokens":5,"tools":[{"name":"f","input_schema":{"type":"object"}}],
        "tool_choice":{"type":"any"},"messages":[{"role":"user","content":"q"},
        {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","is_error":true,"content":"failed"}]}]}),
    );
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["messages"][2]["content"], "Error: failed");
    let v = respond(
        json!({"choices":[{"index":0,"message":{"content":"text","reasoning_content":"why",
        "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],
        "usage":{"prompt_tokens":1,"completion_tokens":1}}),
    );
    let kinds: Vec<&str> = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use"]);
}

#[test]
fn pitfall_14_streams_are_incremental_with_rising_indices() {
    let mut tr = StreamTranslator::new(StreamContext {
        message_id: "msg_p".into(),
        client_model: "m".into(),
        tool_names: ToolNameMap::default(),
        buffered_tool_calls: false,
        estimated_input_tokens: 1,
    });
    let mut out = Vec::new();
    tr.push(
        chunk(json!({"content":"early"}), None)
            .to_string()
            .as_bytes(),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.len(), 3, "the text is out before the upstream finishes");
    tr.push(
        tool(0, Some("c"), Some("f"), "{}").to_string().as_bytes(),
        &mut out,
    )
    .unwrap();
    let indices: Vec<u64> = out
        .iter()
        .filter_map(|f| serde_json::from_slice::<Value>(&f.data).ok())
        .filter_map(|v| v["index"].as_u64())
        .collect();
    assert_eq!(indices, [0, 0, 0, 1, 1]);
}
