//! Recorded-style upstream chunk sequences, each replayed through `SseParser` + the translator
//! split at every byte boundary (and one byte at a time), asserting the exact Anthropic events,
//! the stream grammar, and that every `input_json_delta` concatenation stays a JSON prefix the
//! SDKs' partial parser accepts.

use serde_json::{json, Value};

use super::*;
use crate::protocol::sse::SseParser;

fn ctx(buffered: bool) -> StreamContext {
    StreamContext {
        message_id: "msg_test".into(),
        client_model: "client-model".into(),
        tool_names: ToolNameMap::default(),
        buffered_tool_calls: buffered,
        estimated_input_tokens: 7,
    }
}

/// An upstream chunk with one choice.
fn delta(d: Value) -> Value {
    json!({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-x",
        "choices":[{"index":0,"delta":d,"finish_reason":null}]})
}

fn finish(reason: &str) -> Value {
    json!({"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":reason}]})
}

fn usage_chunk(prompt: u64, completion: u64) -> Value {
    json!({"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[],
        "usage":{"prompt_tokens":prompt,"completion_tokens":completion,"total_tokens":prompt+completion}})
}

fn call(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut f = json!({"arguments": args});
    if let Some(n) = name {
        f["name"] = json!(n);
    }
    let mut c = json!({"index": index, "function": f});
    if let Some(id) = id {
        c["id"] = json!(id);
        c["type"] = json!("function");
    }
    delta(json!({"tool_calls": [c]}))
}

/// The upstream bytes, in OpenAI's framing.
fn wire(chunks: &[Value], done: bool) -> Vec<u8> {
    let mut out = String::new();
    for c in chunks {
        out.push_str(&format!("data: {c}\n\n"));
    }
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    out.into_bytes()
}

type Events = Vec<(String, Value)>;

/// Feeds `bytes` in the given pieces, then ends the stream with `end`.
fn replay(
    bytes: &[u8],
    pieces: &[&[u8]],
    buffered: bool,
    end: StreamEnd,
) -> (Events, Option<StreamFailure>, Vec<Warning>) {
    assert_eq!(pieces.concat(), bytes);
    let mut parser = SseParser::new();
    let mut tr = StreamTranslator::new(ctx(buffered));
    let mut frames = Vec::new();
    let mut failure = None;
    let mut evs = Vec::new();
    let feed = |evs: &mut Vec<crate::protocol::sse::SseEvent>,
                tr: &mut StreamTranslator,
                frames: &mut Vec<Frame>,
                failure: &mut Option<StreamFailure>| {
        for ev in evs.drain(..) {
            if failure.is_none() {
                if let Err(f) = tr.push_event(&ev, frames) {
                    *failure = Some(f);
                }
            }
        }
    };
    for p in pieces {
        parser.push(p, &mut evs).unwrap();
        feed(&mut evs, &mut tr, &mut frames, &mut failure);
    }
    parser.finish(&mut evs);
    feed(&mut evs, &mut tr, &mut frames, &mut failure);
    if failure.is_none() {
        if let Err(f) = tr.finish(end, &mut frames) {
            failure = Some(f);
        }
    }
    // Nothing after the end.
    let mut after = Vec::new();
    assert!(tr
        .push(
            b"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"late\"}}]}",
            &mut after
        )
        .is_ok());
    assert!(after.is_empty(), "frames after the end");
    let events = frames
        .iter()
        .map(|f| {
            assert_eq!(f.kind.name().as_bytes(), &f.name[..]);
            (
                f.kind.name().to_string(),
                serde_json::from_slice(&f.data).expect("frame data is JSON"),
            )
        })
        .collect();
    (events, failure, tr.warnings().to_vec())
}

/// Replays at every two-piece split and byte by byte; all must give the same result.
fn replay_everywhere(
    bytes: &[u8],
    buffered: bool,
    end: StreamEnd,
) -> (Events, Option<StreamFailure>, Vec<Warning>) {
    let whole = replay(bytes, &[bytes], buffered, end);
    for i in 0..=bytes.len() {
        let got = replay(bytes, &[&bytes[..i], &bytes[i..]], buffered, end);
        assert_eq!(got.0, whole.0, "split at byte {i}");
        assert_eq!(got.1, whole.1, "split at byte {i}");
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(
        replay(bytes, &singles, buffered, end).0,
        whole.0,
        "byte by byte"
    );
    check_grammar(&whole.0, whole.1.is_some());
    check_json_deltas(&whole.0);
    whole
}

/// messages-api.md §5.2 and §5.3: one message_start first; blocks in index order, never
/// interleaved; deltas of the block's own type and never empty; message_delta only after every
/// block stopped, with all four counters as integers; message_stop last (unless a failure ended it).
fn check_grammar(events: &Events, failed: bool) {
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    if events.is_empty() && failed {
        return;
    }
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "message_start").count(), 1);
    let mut open: Option<(u64, String)> = None;
    let mut next = 0;
    let mut delta_seen = false;
    for (name, data) in events {
        assert_eq!(data["type"], name.as_str());
        match name.as_str() {
            "content_block_start" => {
                assert!(open.is_none(), "interleaved blocks: {names:?}");
                assert_eq!(data["index"], next);
                let kind = data["content_block"]["type"].as_str().unwrap().to_string();
                match kind.as_str() {
                    "text" => assert_eq!(data["content_block"]["text"], ""),
                    "thinking" => assert_eq!(data["content_block"]["thinking"], ""),
                    "tool_use" => {
                        assert_eq!(data["content_block"]["input"], json!({}));
                        let id = data["content_block"]["id"].as_str().unwrap();
                        assert!(id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
                    }
                    other => panic!("unexpected block {other}"),
                }
                open = Some((next, kind));
                next += 1;
            }
            "content_block_delta" => {
                let (i, kind) = open.as_ref().expect("delta into an open block");
                assert_eq!(data["index"], *i);
                let (field, expected) = match kind.as_str() {
                    "text" => ("text", "text_delta"),
                    "thinking" => ("thinking", "thinking_delta"),
                    _ => ("partial_json", "input_json_delta"),
                };
                assert_eq!(data["delta"]["type"], expected, "delta type fits the block");
                assert!(
                    !data["delta"][field].as_str().unwrap().is_empty(),
                    "empty delta"
                );
            }
            "content_block_stop" => {
                assert_eq!(data["index"], open.take().expect("stop of an open block").0);
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta before content_block_stop");
                assert!(!delta_seen);
                delta_seen = true;
                for k in [
                    "input_tokens",
                    "output_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                ] {
                    assert!(data["usage"][k].is_u64(), "usage.{k} in {data}");
                }
            }
            "message_start" => {}
            "message_stop" => assert!(delta_seen),
            other => panic!("unexpected event {other}"),
        }
    }
    if !failed {
        assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    } else {
        assert!(!names.contains(&"message_stop"));
    }
}

/// Every running concatenation of a block's `partial_json` must be accepted by a partial JSON
/// parser: checked here independently of `JsonPrefix` by completing the text with the closers it
/// needs and parsing it with serde_json.
fn check_json_deltas(events: &Events) {
    let mut acc: Option<String> = None;
    for (name, data) in events {
        match name.as_str() {
            "content_block_start" => acc = Some(String::new()),
            "content_block_delta" if data["delta"]["type"] == "input_json_delta" => {
                let s = acc.as_mut().unwrap();
                s.push_str(data["delta"]["partial_json"].as_str().unwrap());
                assert!(closes_to_json(s), "not a usable JSON prefix: {s:?}");
            }
            "content_block_stop" => acc = None,
            _ => {}
        }
    }
}

/// Completes a prefix the way a partial parser reads it (open string closed, pending key given a
/// null value, containers closed) and checks the result parses as an object.
fn closes_to_json(prefix: &str) -> bool {
    let mut stack = Vec::new();
    let mut in_str = false;
    let mut escaped = false;
    for c in prefix.chars() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' => {
                stack.pop();
            }
            _ => {}
        }
    }
    if escaped {
        return false;
    }
    let mut text = prefix.trim_end().to_string();
    if in_str {
        text.push('"');
    }
    let needs_value = |t: &str| t.ends_with(':') || t.ends_with(',') || t.ends_with('[');
    let last_open = stack.last().copied();
    if text.ends_with(',') {
        text.pop();
    } else if text.ends_with(':') {
        text.push_str("null");
    } else if last_open == Some('}') && !needs_value(&text) {
        // A bare key at the end (`{"ci` → `{"ci"`): give it a value.
        let tail = text.rsplit(['{', ',']).next().unwrap_or("");
        if tail.trim_start().starts_with('"') && !tail.contains(':') {
            text.push_str(":null");
        }
    }
    while let Some(close) = stack.pop() {
        text.push(close);
    }
    matches!(serde_json::from_str::<Value>(&text), Ok(Value::Object(_)))
}

// Expected events.

fn ms() -> (String, Value) {
    (
        "message_start".into(),
        json!({"type":"message_start","message":{"id":"msg_test","type":"message","role":"assistant","model":"client-model",
            "content":[],"stop_reason":null,"stop_sequence":null,
            "usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}),
    )
}
fn start(i: u64, block: Value) -> (String, Value) {
    (
        "content_block_start".into(),
        json!({"type":"content_block_start","index":i,"content_block":block}),
    )
}
fn text_start(i: u64) -> (String, Value) {
    start(i, json!({"type":"text","text":""}))
}
fn thinking_start(i: u64) -> (String, Value) {
    start(i, json!({"type":"thinking","thinking":"","signature":""}))
}
fn tool_start(i: u64, id: &str, name: &str) -> (String, Value) {
    start(i, json!({"type":"tool_use","id":id,"name":name,"input":{}}))
}
fn d(i: u64, kind: &str, field: &str, v: &str) -> (String, Value) {
    (
        "content_block_delta".into(),
        json!({"type":"content_block_delta","index":i,"delta":{"type":kind, field: v}}),
    )
}
fn text(i: u64, v: &str) -> (String, Value) {
    d(i, "text_delta", "text", v)
}
fn thinking(i: u64, v: &str) -> (String, Value) {
    d(i, "thinking_delta", "thinking", v)
}
fn json_d(i: u64, v: &str) -> (String, Value) {
    d(i, "input_json_delta", "partial_json", v)
}
fn stop(i: u64) -> (String, Value) {
    (
        "content_block_stop".into(),
        json!({"type":"content_block_stop","index":i}),
    )
}
fn message_delta(reason: &str, u: [u64; 4]) -> (String, Value) {
    (
        "message_delta".into(),
        json!({"type":"message_delta","delta":{"stop_reason":reason,"stop_sequence":null},
            "usage":{"input_tokens":u[0],"output_tokens":u[1],"cache_creation_input_tokens":u[2],"cache_read_input_tokens":u[3]}}),
    )
}
fn message_stop() -> (String, Value) {
    ("message_stop".into(), json!({"type":"message_stop"}))
}

/// One whole block: its start, a delta per piece, its stop.
fn block(
    i: u64,
    start: (String, Value),
    delta: fn(u64, &str) -> (String, Value),
    pieces: &[&str],
) -> Events {
    let mut events = vec![start];
    events.extend(pieces.iter().map(|p| delta(i, p)));
    events.push(stop(i));
    events
}
fn text_block(i: u64, pieces: &[&str]) -> Events {
    block(i, text_start(i), text, pieces)
}
fn thinking_block(i: u64, pieces: &[&str]) -> Events {
    block(i, thinking_start(i), thinking, pieces)
}
fn tool_block(i: u64, id: &str, name: &str, pieces: &[&str]) -> Events {
    block(i, tool_start(i, id, name), json_d, pieces)
}

/// A whole message: message_start, the blocks in order, message_delta and message_stop.
fn message(blocks: &[Events], reason: &str, usage: [u64; 4]) -> Events {
    let mut events = vec![ms()];
    events.extend(blocks.concat());
    events.push(message_delta(reason, usage));
    events.push(message_stop());
    events
}

fn reasons(w: &[Warning]) -> Vec<String> {
    w.iter()
        .map(|w| format!("{}:{}", w.param, w.reason.as_str()))
        .collect()
}

#[test]
fn text_only() {
    // Pitfall 5: the role-only chunk with content "" opens nothing and sends no empty delta.
    let bytes = wire(
        &[
            delta(json!({"role":"assistant","content":""})),
            delta(json!({"content":"Hello"})),
            delta(json!({"content":" world"})),
            finish("stop"),
            usage_chunk(21, 9),
        ],
        true,
    );
    let (events, failure, warnings) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert!(failure.is_none());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        events,
        message(
            &[text_block(0, &["Hello", " world"])],
            "end_turn",
            [21, 9, 0, 0]
        )
    );
}

#[test]
fn reasoning_then_text_split_from_one_chunk() {
    // Pitfall 4: a chunk with reasoning and text is split into two blocks, in that order.
    let bytes = wire(
        &[
            delta(json!({"role":"assistant","reasoning_content":"Let me think"})),
            delta(json!({"reasoning_content":" more","content":"Answer"})),
            delta(json!({"content":"!"})),
            finish("stop"),
            usage_chunk(30, 12),
        ],
        true,
    );
    let (events, _, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert_eq!(
        events,
        message(
            &[
                thinking_block(0, &["Let me think", " more"]),
                text_block(1, &["Answer", "!"])
            ],
            "end_turn",
            [30, 12, 0, 0]
        )
    );
}

#[test]
fn tool_call_with_name_in_first_chunk_the_worked_example() {
    // translation.md §5 worked example; pitfalls 1 and 2: the chunk that opens the tool block
    // has its own arguments sent in the same step.
    let bytes = wire(
        &[
            delta(json!({"role":"assistant","content":""})),
            delta(json!({"content":"Checking"})),
            call(0, Some("call_7f3a"), Some("get_weather"), "{\"ci"),
            call(0, None, None, "ty\":\"Lyon\"}"),
            finish("tool_calls"),
            json!({"choices":[],"usage":{"prompt_tokens":312,"completion_tokens":38}}),
        ],
        true,
    );
    let (events, _, warnings) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert!(warnings.is_empty());
    assert_eq!(
        events,
        message(
            &[
                text_block(0, &["Checking"]),
                tool_block(1, "call_7f3a", "get_weather", &["{\"ci", "ty\":\"Lyon\"}"])
            ],
            "tool_use",
            [312, 38, 0, 0]
        )
    );
}

#[test]
fn name_arriving_after_the_id() {
    let bytes = wire(
        &[
            call(0, Some("call_1"), None, ""),
            call(0, None, None, "{\"a\""),
            call(0, None, Some("f"), ":1}"),
            finish("tool_calls"),
            usage_chunk(5, 3),
        ],
        true,
    );
    let (events, _, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert_eq!(
        events,
        message(
            &[tool_block(0, "call_1", "f", &["{\"a\":1}"])],
            "tool_use",
            [5, 3, 0, 0]
        )
    );
}

#[test]
fn two_parallel_calls_and_no_text_block_for_a_tool_only_reply() {
    // Pitfall 12: no text block 0 is opened for a tool-only reply.
    let bytes = wire(
        &[
            delta(json!({"role":"assistant","content":null})),
            call(0, Some("call_a"), Some("get_weather"), ""),
            call(0, None, None, "{\"city\":\"Lyon\"}"),
            call(1, Some("call_b"), Some("get_time"), "{\"tz\":"),
            call(1, None, None, "\"Europe/Paris\"}"),
            finish("tool_calls"),
            usage_chunk(40, 20),
        ],
        true,
    );
    let (events, _, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert_eq!(
        events,
        message(
            &[
                tool_block(0, "call_a", "get_weather", &["{\"city\":\"Lyon\"}"]),
                tool_block(1, "call_b", "get_time", &["{\"tz\":", "\"Europe/Paris\"}"])
            ],
            "tool_use",
            [40, 20, 0, 0]
        )
    );
}

fn interleaved() -> Vec<u8> {
    wire(
        &[
            call(0, Some("call_a"), Some("f"), "{\"a\":"),
            call(1, Some("call_b"), Some("g"), "{\"b\":"),
            call(0, None, None, "1}"),
            call(1, None, None, "2}"),
            finish("tool_calls"),
            usage_chunk(9, 9),
        ],
        true,
    )
}

#[test]
fn interleaved_parallel_calls_fail_in_live_mode() {
    let (events, failure, _) = replay_everywhere(&interleaved(), false, StreamEnd::Eof);
    assert_eq!(
        events,
        vec![
            ms(),
            tool_start(0, "call_a", "f"),
            json_d(0, "{\"a\":"),
            stop(0),
            tool_start(1, "call_b", "g"),
            json_d(1, "{\"b\":"),
        ]
    );
    let f = failure.unwrap();
    assert_eq!(f.error_type, "api_error");
    assert_eq!(f.message, "interleaved tool-call arguments");
}

#[test]
fn interleaved_parallel_calls_are_fine_in_buffered_mode() {
    let (events, failure, _) = replay_everywhere(&interleaved(), true, StreamEnd::Eof);
    assert!(failure.is_none());
    assert_eq!(
        events,
        message(
            &[
                tool_block(0, "call_a", "f", &["{\"a\":1}"]),
                tool_block(1, "call_b", "g", &["{\"b\":2}"])
            ],
            "tool_use",
            [9, 9, 0, 0]
        )
    );
}

#[test]
fn awkward_argument_fragments_are_held_to_safe_boundaries() {
    // Escapes and numbers split across fragments: the held tail goes out with the next fragment.
    let fragments = [
        "{\"ci",
        "ty\": \"Ly",
        "on\", \"unit",
        "\": \"c\\u00",
        "e9lsius\", \"days\"",
        ": [1",
        ", 2]}",
    ];
    let mut chunks = vec![call(0, Some("call_w"), Some("get_weather"), fragments[0])];
    chunks.extend(fragments[1..].iter().map(|f| call(0, None, None, f)));
    chunks.push(finish("tool_calls"));
    chunks.push(usage_chunk(312, 38));
    let (events, _, warnings) = replay_everywhere(&wire(&chunks, true), false, StreamEnd::Eof);
    assert!(warnings.is_empty());
    assert_eq!(
        events,
        message(
            &[tool_block(
                0,
                "call_w",
                "get_weather",
                &[
                    "{\"ci",
                    "ty\": \"Ly",
                    "on\", \"unit",
                    "\": \"c",
                    "\\u00e9lsius\", \"days\"",
                    ": [",
                    "1, 2]}"
                ]
            )],
            "tool_use",
            [312, 38, 0, 0]
        )
    );
    let all: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&all).unwrap(),
        json!({"city":"Lyon","unit":"célsius","days":[1,2]})
    );
}

#[test]
fn a_fragment_that_breaks_the_prefix_is_withheld_and_reported() {
    let bytes = wire(
        &[
            call(0, Some("call_x"), Some("f"), "{\"a\": 1"),
            call(0, None, None, "}}"),
            call(0, None, None, " trailing"),
            finish("tool_calls"),
            usage_chunk(1, 1),
        ],
        true,
    );
    let (events, _, warnings) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert_eq!(
        events,
        message(
            &[tool_block(0, "call_x", "f", &["{\"a\": "])],
            "tool_use",
            [1, 1, 0, 0]
        )
    );
    assert_eq!(reasons(&warnings), ["tool_calls.0.arguments:invalid_json"]);
    assert_eq!(warnings[0].detail.as_deref(), Some("{\"a\": 1}} trailing"));
}

#[test]
fn usage_on_every_chunk_closes_at_the_finish_chunk() {
    let mut c1 = delta(json!({"content":"Hi"}));
    c1["usage"] = json!({"prompt_tokens":10,"completion_tokens":1});
    let mut c2 = finish("stop");
    c2["usage"] = json!({"prompt_tokens":10,"completion_tokens":2});
    let bytes = wire(&[c1, c2, usage_chunk(99, 99)], true);
    let (events, _, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    let mut expected = message(&[text_block(0, &["Hi"])], "end_turn", [10, 2, 0, 0]);
    // message_start carries the first chunk's usage.
    expected[0].1["message"]["usage"]["input_tokens"] = json!(10);
    expected[0].1["message"]["usage"]["output_tokens"] = json!(1);
    assert_eq!(events, expected);
}

#[test]
fn pitfall_7_cached_tokens_are_not_double_counted_in_a_stream() {
    let bytes = wire(
        &[
            delta(json!({"content":"ok"})),
            finish("stop"),
            json!({"choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":80,"prompt_tokens_details":{"cached_tokens":1024}}}),
        ],
        true,
    );
    let (events, _, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert_eq!(events[4], message_delta("end_turn", [176, 80, 0, 1024]));
}

#[test]
fn no_usage_at_all_closes_on_the_usage_wait_with_an_estimate() {
    // The upstream stays open after finish_reason and never sends usage: the I/O layer's
    // bounded wait ends it through `finish(UsageWait)`.
    let bytes = wire(
        &[delta(json!({"content":"12345678"})), finish("stop")],
        false,
    );
    let (events, failure, warnings) = replay_everywhere(&bytes, false, StreamEnd::UsageWait);
    assert!(failure.is_none());
    assert_eq!(
        events,
        message(&[text_block(0, &["12345678"])], "end_turn", [7, 2, 0, 0])
    );
    assert_eq!(reasons(&warnings), ["usage:estimated"]);
}

#[test]
fn finish_holds_the_message_delta_until_usage() {
    let mut tr = StreamTranslator::new(ctx(false));
    let mut out = Vec::new();
    tr.push(
        delta(json!({"content":"a"})).to_string().as_bytes(),
        &mut out,
    )
    .unwrap();
    // Live: the delta is out before the upstream finishes (pitfall 14).
    assert_eq!(out.len(), 3);
    tr.push(finish("stop").to_string().as_bytes(), &mut out)
        .unwrap();
    assert_eq!(out.last().unwrap().kind.name(), "content_block_stop");
    assert!(tr.awaiting_usage());
    tr.push(usage_chunk(3, 4).to_string().as_bytes(), &mut out)
        .unwrap();
    assert!(!tr.awaiting_usage() && tr.is_closed());
    assert_eq!(out.last().unwrap().kind.name(), "message_stop");
}

#[test]
fn done_without_finish_reason_closes_cleanly() {
    let bytes = wire(
        &[delta(json!({"content":"partial"})), usage_chunk(4, 2)],
        true,
    );
    let (events, failure, warnings) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert!(failure.is_none());
    assert_eq!(
        events,
        message(&[text_block(0, &["partial"])], "end_turn", [4, 2, 0, 0])
    );
    assert_eq!(reasons(&warnings), ["upstream:no_finish_reason"]);
}

#[test]
fn done_without_finish_closes_an_open_tool_call() {
    let bytes = wire(&[call(0, Some("call_1"), Some("f"), "{\"a\":1}")], true);
    let (events, failure, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert!(failure.is_none());
    assert_eq!(
        events,
        message(
            &[tool_block(0, "call_1", "f", &["{\"a\":1}"])],
            "tool_use",
            [7, 2, 0, 0]
        )
    );
}

#[test]
fn eof_without_done_or_finish_is_a_broken_stream() {
    // A body cut mid-stream reads as a plain end through awc: without `[DONE]` or a finish
    // reason it must not pass for a complete answer.
    let bytes = wire(&[delta(json!({"content":"Hel"}))], false);
    let (events, failure, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert_eq!(events, vec![ms(), text_start(0), text(0, "Hel")]);
    assert_eq!(failure.unwrap().message, "stream ended before completion");
    // With a finish reason the end is clean even without `[DONE]`.
    let bytes = wire(
        &[
            delta(json!({"content":"Hel"})),
            finish("stop"),
            usage_chunk(1, 1),
        ],
        false,
    );
    let (_, failure, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert!(failure.is_none());
}

#[test]
fn mid_stream_error_payload_ends_with_a_failure() {
    // Pitfall 11: the error is re-raised, with its mapped type (pitfall 10's shape is the
    // session's `event: error`, checked end to end).
    let bytes = wire(
        &[
            delta(json!({"content":"Hel"})),
            json!({"error":{"message":"Overloaded","type":"overloaded_error","code":529}}),
            delta(json!({"content":"lo"})),
        ],
        true,
    );
    let (events, failure, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert_eq!(events, vec![ms(), text_start(0), text(0, "Hel")]);
    let f = failure.unwrap();
    assert_eq!(f.error_type, "overloaded_error");
    assert_eq!(f.message, "Overloaded");
    assert_eq!(f.status, Some(529));
}

#[test]
fn event_error_frames_and_rate_limits() {
    let bytes = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\nevent: error\ndata: {\"error\":{\"message\":\"slow down\",\"code\":\"rate_limit_exceeded\"}}\n\n";
    let (events, failure, _) = replay_everywhere(bytes, false, StreamEnd::Eof);
    assert_eq!(events.len(), 3);
    assert_eq!(failure.unwrap().error_type, "rate_limit_error");
}

#[test]
fn failures_before_the_first_chunk_send_nothing() {
    let (events, failure, _) = replay_everywhere(
        &wire(&[json!({"error":{"message":"bad key","code":401}})], false),
        false,
        StreamEnd::Eof,
    );
    assert!(events.is_empty());
    let f = failure.unwrap();
    assert_eq!((f.status, f.message.as_str()), (Some(401), "bad key"));
    let (events, failure, _) = replay(b"", &[b""], false, StreamEnd::Eof);
    assert!(events.is_empty());
    assert_eq!(failure.unwrap().message, "stream ended before any chunk");
    let (_, failure, _) = replay(
        b"data: {nope\n\n",
        &[b"data: {nope\n\n"],
        false,
        StreamEnd::Eof,
    );
    assert!(failure.unwrap().message.starts_with("invalid stream chunk"));
}

#[test]
fn broken_or_idle_before_finish_fail_after_finish_close() {
    let before = wire(&[delta(json!({"content":"a"}))], false);
    let (events, failure, _) = replay_everywhere(&before, false, StreamEnd::Broken);
    assert_eq!(events.len(), 3);
    assert_eq!(failure.unwrap().error_type, "api_error");
    let (_, failure, _) = replay_everywhere(&before, false, StreamEnd::Idle);
    assert_eq!(failure.unwrap().error_type, "timeout_error");
    let after = wire(&[delta(json!({"content":"a"})), finish("length")], false);
    let (events, failure, _) = replay_everywhere(&after, false, StreamEnd::Broken);
    assert!(failure.is_none());
    assert_eq!(events[4].1["delta"]["stop_reason"], "max_tokens");
}

#[test]
fn refusal_streams_as_text_with_stop_reason_refusal() {
    let bytes = wire(
        &[
            delta(json!({"refusal":"I can't."})),
            finish("stop"),
            usage_chunk(2, 2),
        ],
        true,
    );
    let (events, _, _) = replay_everywhere(&bytes, false, StreamEnd::Eof);
    assert_eq!(events[2], text(0, "I can't."));
    assert_eq!(events[4].1["delta"]["stop_reason"], "refusal");
}

#[test]
fn long_names_map_back_and_bad_ids_are_normalised() {
    let long = "x".repeat(90);
    let mut names = ToolNameMap::default();
    let short = names.to_upstream(&long).into_owned();
    let mut tr = StreamTranslator::new(StreamContext {
        tool_names: names,
        ..ctx(false)
    });
    let mut out = Vec::new();
    tr.push(
        call(0, Some("call.1:x"), Some(&short), "{}")
            .to_string()
            .as_bytes(),
        &mut out,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out[1].data).unwrap();
    assert_eq!(v["content_block"]["name"], long.as_str());
    assert_eq!(v["content_block"]["id"], "call_1_x");
}

#[test]
fn the_prefix_checker_itself() {
    for ok in [
        "{",
        "{\"ci",
        "{\"a\":",
        "{\"a\": \"x",
        "{\"a\":[1,",
        "{\"a\":{\"b\"",
        "{}",
    ] {
        assert!(closes_to_json(ok), "{ok}");
    }
    for bad in ["{\"a\": \"c\\", "[1", "{\"a\"}}", "x"] {
        assert!(!closes_to_json(bad), "{bad}");
    }
}
