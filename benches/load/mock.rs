//! The fast upstream mock: its own process (the bench binary re-executed with
//! `AIGW_BENCH_ROLE=mock`), so that the gateway's /proc figures stay its own and each process
//! needs only one file descriptor per idle stream.
//!
//! It speaks Anthropic (`…/v1/messages`) and OpenAI (`…/chat/completions`), JSON and SSE, with
//! canned bodies. The first path segment names a [`Profile`] (`/fast/v1/messages`), so one
//! server serves every phase and a gateway provider selects a profile through its `base_url`.
//! Every streamed text delta carries its send time (`t:<CLOCK_MONOTONIC ns>`) so the client
//! can measure per-frame latency across processes.

use std::io::Write;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::stream;

/// Text deltas per streamed reply.
pub const DELTAS: usize = 25;
/// Inter-frame delay of the `paced` profile.
pub const PACED_INTERVAL: Duration = Duration::from_millis(20);
/// Longer than any phase: an `idle` stream is closed by the client, never by the mock.
const IDLE_HOLD: Duration = Duration::from_secs(600);

/// How a streamed reply is paced.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Delay between the stream head (headers, `message_start`) and the first text delta.
    pub ttft: Duration,
    /// Delay between text deltas.
    pub interval: Duration,
    pub deltas: usize,
    pub fault: Fault,
}

/// The soak's failing upstreams (`soak.rs`); the measured phases use only `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every request: HTTP 500.
    Fail,
    /// A stream is reset after its deltas, before its tail; JSON is answered normally.
    Cut,
    /// A stream stops after its deltas and holds the connection; JSON never answers.
    Stall,
}

/// The names of the profiles: the first path segment, and a provider per profile.
pub const PROFILES: [&str; 6] = ["fast", "paced", "idle", "fail", "cut", "stall"];

pub fn profile(name: &str) -> Option<Profile> {
    let p = |ttft, interval, deltas, fault| {
        Some(Profile {
            ttft,
            interval,
            deltas,
            fault,
        })
    };
    match name {
        "fast" => p(Duration::ZERO, Duration::ZERO, DELTAS, Fault::None),
        "paced" => p(Duration::ZERO, PACED_INTERVAL, DELTAS, Fault::None),
        "idle" => p(IDLE_HOLD, Duration::ZERO, 1, Fault::None),
        "fail" => p(Duration::ZERO, Duration::ZERO, DELTAS, Fault::Fail),
        "cut" => p(Duration::ZERO, PACED_INTERVAL, 3, Fault::Cut),
        "stall" => p(Duration::ZERO, PACED_INTERVAL, 2, Fault::Stall),
        _ => None,
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The send stamp inside a text delta (`"t:<ns>`), in either wire format.
pub fn stamp(data: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(data, b"\"t:")? + 3;
    let digits = &data[at..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    Anthropic,
    OpenAi,
}

const ANSWER: &str = "A reverse proxy accepts client connections and forwards each request to one of several upstream servers, then relays the answer back. It hides the upstreams, terminates TLS, and can balance load, cache, retry and enforce limits in one place.";

fn anthropic_message() -> Bytes {
    serde_json::json!({
        "id": "msg_01BenchMockReply0000000", "type": "message", "role": "assistant",
        "model": "claude-bench",
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 31, "output_tokens": 56,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
    .to_string()
    .into()
}

fn openai_completion() -> Bytes {
    serde_json::json!({
        "id": "chatcmpl-bench0000", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 56, "total_tokens": 87}
    })
    .to_string()
    .into()
}

const ANTHROPIC_HEAD: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01BenchMockReply0000000\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-bench\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":31,\"output_tokens\":1,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const ANTHROPIC_TAIL: &str = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":25}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
const OPENAI_HEAD: &str = "data: {\"id\":\"chatcmpl-bench0000\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-bench\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
const OPENAI_TAIL: &str = "data: {\"id\":\"chatcmpl-bench0000\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-bench\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"chatcmpl-bench0000\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":31,\"completion_tokens\":25,\"total_tokens\":56}}\n\ndata: [DONE]\n\n";

fn delta(wire: Wire) -> Bytes {
    let t = now_ns();
    match wire {
        Wire::Anthropic => format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"t:{t} token\"}}}}\n\n"
        ),
        Wire::OpenAi => format!(
            "data: {{\"id\":\"chatcmpl-bench0000\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t:{t} token\"}},\"finish_reason\":null}}]}}\n\n"
        ),
    }
    .into()
}

/// Head, then the deltas (the first after `ttft`, the others `interval` apart), then the tail.
fn sse(
    wire: Wire,
    p: Profile,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let (head, tail) = match wire {
        Wire::Anthropic => (ANTHROPIC_HEAD, ANTHROPIC_TAIL),
        Wire::OpenAi => (OPENAI_HEAD, OPENAI_TAIL),
    };
    stream::unfold(0usize, move |i| async move {
        let item = if i == 0 {
            Bytes::from_static(head.as_bytes())
        } else if i <= p.deltas {
            let wait = if i == 1 { p.ttft } else { p.interval };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            delta(wire)
        } else if i == p.deltas + 1 {
            match p.fault {
                Fault::Cut => {
                    return Some((
                        Err(actix_web::error::ErrorInternalServerError("cut")),
                        i + 1,
                    ))
                }
                Fault::Stall => {
                    tokio::time::sleep(IDLE_HOLD).await;
                    return None;
                }
                _ => Bytes::from_static(tail.as_bytes()),
            }
        } else {
            return None;
        };
        Some((Ok(item), i + 1))
    })
}

struct Canned {
    anthropic: Bytes,
    openai: Bytes,
}

async fn handle(req: HttpRequest, body: web::Bytes, canned: web::Data<Canned>) -> HttpResponse {
    let path = req.path();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let profile = parts.next().and_then(profile);
    let rest = parts.next().unwrap_or("");
    let wire = if rest == "v1/messages" {
        Wire::Anthropic
    } else if rest.ends_with("chat/completions") {
        Wire::OpenAi
    } else {
        return HttpResponse::NotFound().finish();
    };
    let Some(profile) = profile else {
        return HttpResponse::NotFound().finish();
    };
    if profile.fault == Fault::Fail {
        return HttpResponse::InternalServerError()
            .content_type("application/json")
            .body(match wire {
                Wire::Anthropic => {
                    r#"{"type":"error","error":{"type":"api_error","message":"scripted failure"}}"#
                }
                Wire::OpenAi => {
                    r#"{"error":{"message":"scripted failure","type":"server_error","code":null}}"#
                }
            });
    }
    // Bodies are compact JSON (the client's own, or the gateway's serde output).
    let stream = memchr::memmem::find(&body, b"\"stream\":true").is_some();
    if stream {
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .streaming(sse(wire, profile));
    }
    if profile.fault == Fault::Stall {
        tokio::time::sleep(IDLE_HOLD).await;
    }
    let body = match wire {
        Wire::Anthropic => canned.anthropic.clone(),
        Wire::OpenAi => canned.openai.clone(),
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

/// The mock process: binds 127.0.0.1 on a free port, prints `port <n>`, serves until killed.
pub fn serve(workers: usize) -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let canned = web::Data::new(Canned {
            anthropic: anthropic_message(),
            openai: openai_completion(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(canned.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(handle))
        })
        .workers(workers)
        .backlog(4096)
        .max_connections(100_000)
        .keep_alive(Duration::from_secs(120))
        // Like a production upstream: every streamed frame leaves at once.
        .tcp_nodelay(true)
        .disable_signals()
        .bind("127.0.0.1:0")?;
        let port = server.addrs()[0].port();
        let mut out = std::io::stdout().lock();
        writeln!(out, "port {port}")?;
        out.flush()?;
        drop(out);
        server.run().await
    })
}
