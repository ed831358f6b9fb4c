//! OpenAI chat chunks → Anthropic events: an upstream byte stream (split where the first byte
//! says, ended the way the second byte says) through `SseParser` and `StreamTranslator`. Never
//! panics, every frame is a JSON object whose `type` is its event name, and the events follow the
//! stream grammar (messages-api.md §5.2).
#![no_main]

use aigw::protocol::anthropic::Frame;
use aigw::protocol::sse::SseParser;
use aigw::protocol::translate::stream::{StreamContext, StreamEnd, StreamTranslator};
use aigw::protocol::translate::tool_names::ToolNameMap;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const ENDS: [StreamEnd; 5] = [
    StreamEnd::Done,
    StreamEnd::Eof,
    StreamEnd::UsageWait,
    StreamEnd::Idle,
    StreamEnd::Broken,
];

fuzz_target!(|input: &[u8]| {
    let [a, b, data @ ..] = input else {
        return;
    };
    let mut names = ToolNameMap::default();
    let long = "t".repeat(80);
    names.to_upstream(&long);
    let mut tr = StreamTranslator::new(StreamContext {
        message_id: "msg_fuzz".into(),
        client_model: "client-model".into(),
        tool_names: names,
        buffered_tool_calls: b & 0x80 != 0,
        estimated_input_tokens: 3,
    });
    let mut parser = SseParser::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut failed = false;
    let i = (*a as usize).min(data.len());
    let mut events = Vec::new();
    'feed: for chunk in [&data[..i], &data[i..]] {
        if parser.push(chunk, &mut events).is_err() {
            break;
        }
        for ev in events.drain(..) {
            if tr.push_event(&ev, &mut frames).is_err() {
                failed = true;
                break 'feed;
            }
        }
    }
    if !failed {
        parser.finish(&mut events);
        for ev in events.drain(..) {
            if tr.push_event(&ev, &mut frames).is_err() {
                failed = true;
                break;
            }
        }
    }
    if !failed {
        failed = tr
            .finish(ENDS[(*b & 0x7f) as usize % ENDS.len()], &mut frames)
            .is_err();
    }
    let _ = tr.warnings();
    let _ = tr.usage();

    let mut open: Option<u64> = None;
    let mut next = 0u64;
    let mut stopped = false;
    for (n, f) in frames.iter().enumerate() {
        let name = std::str::from_utf8(&f.name).expect("event names are UTF-8");
        let v: Value = serde_json::from_slice(&f.data).expect("frame data is JSON");
        assert_eq!(v["type"].as_str(), Some(name), "{v}");
        assert!(!stopped, "a frame after message_stop: {name}");
        if n == 0 {
            assert_eq!(name, "message_start");
        }
        match name {
            "message_start" => assert_eq!(n, 0),
            "content_block_start" => {
                assert!(open.is_none(), "blocks interleave");
                assert_eq!(v["index"].as_u64(), Some(next));
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => assert_eq!(v["index"].as_u64(), open),
            "content_block_stop" => {
                assert_eq!(v["index"].as_u64(), open);
                open = None;
            }
            "message_delta" => assert!(open.is_none()),
            "message_stop" => {
                assert!(open.is_none());
                stopped = true;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    // A stream that did not fail ends with message_stop once it started.
    if !failed && !frames.is_empty() {
        assert!(stopped, "ended without message_stop");
    }
});
