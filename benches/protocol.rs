//! Micro-benches of the pure protocol code on the request and stream hot paths:
//! `cargo bench --bench protocol`.

use std::hint::black_box;

use aigw::config::ProviderConfig;
use aigw::protocol::anthropic::events::{self, DeltaType};
use aigw::protocol::anthropic::{Frame, Usage};
use aigw::protocol::request::{parse_fields, MessagesRequest};
use aigw::protocol::sse::{encode_frame, SseParser};
use aigw::protocol::validate::{validate, ApiVersion};
use aigw::providers::anthropic::to_frame;
use aigw::providers::mock;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "shared/fixtures.rs"]
mod fixtures;

fn parsed(body: &str) -> MessagesRequest {
    let fields = parse_fields(body.as_bytes()).expect("fixture is JSON");
    validate(fields, ApiVersion::V2023_06_01).expect("fixture is valid")
}

/// What an Anthropic upstream streams for a short text answer: start, 30 text deltas, the end.
fn anthropic_stream() -> Vec<u8> {
    let mut frames = vec![
        events::message_start(
            "msg_bench",
            "claude-bench",
            &Usage {
                input_tokens: 1200,
                ..Usage::default()
            },
        ),
        events::block_start(0, &serde_json::json!({"type": "text", "text": ""})),
    ];
    for i in 0..30 {
        frames.push(events::delta(
            0,
            DeltaType::Text,
            &format!("token {i} of the answer, "),
        ));
    }
    frames.push(events::block_stop(0));
    frames.push(events::message_delta(
        "end_turn",
        None,
        &Usage {
            output_tokens: 90,
            ..Usage::default()
        },
        None,
        None,
    ));
    frames.push(events::message_stop());
    frames.iter().flat_map(|f| f.encode().to_vec()).collect()
}

fn parse_and_validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_validate");
    for (name, body) in [
        ("small", fixtures::small_request("bench-model", false)),
        (
            "conversation_50_turns_tools",
            fixtures::conversation_request("bench-model", 50, false),
        ),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let fields = parse_fields(black_box(body.as_bytes())).unwrap();
                validate(fields, ApiVersion::V2023_06_01).unwrap()
            })
        });
        // The split into raw top-level fields alone, to tell it from building the Value views.
        g.bench_function(format!("{name}/parse_fields_only"), |b| {
            b.iter(|| parse_fields(black_box(body.as_bytes())).unwrap())
        });
    }
    g.finish();
}

fn anthropic_body(c: &mut Criterion) {
    let mut g = c.benchmark_group("anthropic_body");
    for (name, body) in [
        ("small", fixtures::small_request("bench-model", false)),
        (
            "conversation_50_turns_tools",
            fixtures::conversation_request("bench-model", 50, false),
        ),
    ] {
        let req = parsed(&body);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(&req).anthropic_body("claude-upstream-model", &[]))
        });
    }
    g.finish();
}

fn sse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse");
    let delta = events::delta(0, DeltaType::Text, "token 7 of the answer, ");
    g.bench_function("encode_frame", |b| {
        b.iter(|| encode_frame(black_box("content_block_delta"), black_box(&delta.data)))
    });
    g.bench_function("build_and_encode_text_delta", |b| {
        b.iter(|| events::delta(0, DeltaType::Text, black_box("token 7 of the answer, ")).encode())
    });

    let stream = anthropic_stream();
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("parse_stream_35_frames_whole", |b| {
        b.iter(|| {
            let mut p = SseParser::new();
            let mut out = Vec::with_capacity(40);
            p.push(black_box(&stream), &mut out).unwrap();
            p.finish(&mut out);
            out
        })
    });
    // TCP splits reads anywhere: 512-byte chunks cut frames in the middle.
    g.bench_function("parse_stream_35_frames_512b_chunks", |b| {
        b.iter(|| {
            let mut p = SseParser::new();
            let mut out = Vec::with_capacity(40);
            for chunk in black_box(&stream).chunks(512) {
                p.push(chunk, &mut out).unwrap();
            }
            p.finish(&mut out);
            out
        })
    });
    // The passthrough stream path per upstream read: parse, name/compact, re-encode.
    g.bench_function("passthrough_35_frames", |b| {
        b.iter(|| {
            let mut p = SseParser::new();
            let mut out = Vec::with_capacity(40);
            p.push(black_box(&stream), &mut out).unwrap();
            p.finish(&mut out);
            let frames: Vec<Frame> = out.into_iter().filter_map(|e| to_frame(e).ok()).collect();
            let mut wire = Vec::with_capacity(stream.len());
            for f in &frames {
                wire.extend_from_slice(&f.encode());
            }
            wire
        })
    });
    g.finish();
}

fn mock_provider(c: &mut Criterion) {
    let mut g = c.benchmark_group("mock_provider");
    let config: ProviderConfig =
        toml::from_str("name = \"mock\"\nkind = \"mock\"\ntool_mode = \"auto\"").unwrap();
    let small = parsed(&fixtures::small_request("bench-model", true));
    let conversation = parsed(&fixtures::conversation_request("bench-model", 50, true));
    g.bench_function("plan_small", |b| {
        b.iter(|| mock::plan(&config, black_box(&small)))
    });
    g.bench_function("plan_conversation_50_turns_tools", |b| {
        b.iter(|| mock::plan(&config, black_box(&conversation)))
    });
    let plan = mock::plan(&config, &small);
    g.bench_function("stream_frames_small", |b| {
        b.iter(|| black_box(&plan).stream("msg_bench", "bench-model", 16))
    });
    g.finish();
}

criterion_group!(
    benches,
    parse_and_validate,
    anthropic_body,
    sse,
    mock_provider
);
criterion_main!(benches);
