//! The fault-injection matrix (gateway.md §7.3–§7.5): every way an upstream fails, stream and
//! non-stream, alone and with a fallback. Each cell asserts the client's exact outcome, the number
//! of upstream attempts, that nobody waited past the configured timeouts, and the circuit state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw::routing::CircuitState;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::common::upstream::{self, End, MockUpstream, Recorded, Reply};
use crate::common::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    RateLimitedWithRetryAfter,
    RateLimitedWithoutRetryAfter,
    Status500,
    Status503,
    Status529,
    ConnectionRefused,
    TimeoutBeforeHeaders,
    HangAfterHeaders,
    ResetMidStream,
    TruncatedStream,
    InvalidJson,
    WrongContentType,
    SlowTrickle,
    StallMidStream,
}

const FAULTS: [Fault; 14] = [
    Fault::RateLimitedWithRetryAfter,
    Fault::RateLimitedWithoutRetryAfter,
    Fault::Status500,
    Fault::Status503,
    Fault::Status529,
    Fault::ConnectionRefused,
    Fault::TimeoutBeforeHeaders,
    Fault::HangAfterHeaders,
    Fault::ResetMidStream,
    Fault::TruncatedStream,
    Fault::InvalidJson,
    Fault::WrongContentType,
    Fault::SlowTrickle,
    Fault::StallMidStream,
];

// The timeouts of the matrix config, small so the matrix runs in seconds.
const TTFT_MS: u64 = 300;
const ATTEMPT_MS: u64 = 500;
const IDLE_MS: u64 = 400;
const RATE_LIMIT_COOLDOWN_MS: u64 = 150;
const MAX_DELAY_MS: u64 = 20;

/// How the primary upstream misbehaves, for a request.
fn misbehave(fault: Fault, req: &Recorded) -> Reply {
    let stream = req.stream();
    let model = req.model();
    let text = upstream::text_stream(&model, &["Hello", " world"]);
    let message = upstream::text_message(&model, "Hello world").to_string();
    match fault {
        Fault::RateLimitedWithRetryAfter => Reply::Json(
            429,
            upstream::error_body("rate_limit_error", "slow down"),
            vec![("retry-after".into(), "1".into())],
        ),
        Fault::RateLimitedWithoutRetryAfter => Reply::Json(
            429,
            upstream::error_body("rate_limit_error", "slow down"),
            vec![],
        ),
        Fault::Status500 => Reply::Json(500, upstream::error_body("api_error", "boom"), vec![]),
        Fault::Status503 => Reply::Raw(
            503,
            "text/html",
            Bytes::from_static(b"<html>unavailable</html>"),
        ),
        Fault::Status529 => Reply::Json(
            529,
            upstream::error_body("overloaded_error", "Overloaded"),
            vec![],
        ),
        Fault::ConnectionRefused => unreachable!("no upstream listens"),
        Fault::TimeoutBeforeHeaders => Reply::Hang,
        Fault::HangAfterHeaders if stream => upstream::sse(vec![], End::Hang),
        Fault::HangAfterHeaders => Reply::Partial(
            "application/json",
            Bytes::from(message[..20].to_string()),
            End::Hang,
        ),
        Fault::ResetMidStream if stream => Reply::Sse {
            chunks: text[..4].iter().cloned().map(Bytes::from).collect(),
            delay: Duration::from_millis(20),
            end: End::Reset,
        },
        Fault::ResetMidStream => Reply::Partial(
            "application/json",
            Bytes::from(message[..20].to_string()),
            End::Reset,
        ),
        Fault::TruncatedStream if stream => {
            upstream::sse(text[..text.len() - 1].to_vec(), End::Close)
        }
        Fault::TruncatedStream => Reply::Partial(
            "application/json",
            Bytes::from(message[..40].to_string()),
            End::Close,
        ),
        Fault::InvalidJson if stream => upstream::sse(
            vec!["event: message_start\ndata: {\"type\":\"message_st\n\n".into()],
            End::Close,
        ),
        Fault::InvalidJson => Reply::Raw(
            200,
            "application/json",
            Bytes::from_static(b"{\"id\":\"msg_1\","),
        ),
        Fault::WrongContentType if stream => {
            Reply::Json(200, upstream::text_message(&model, "not a stream"), vec![])
        }
        Fault::WrongContentType => {
            Reply::Raw(200, "text/html", Bytes::from_static(b"<html>login</html>"))
        }
        Fault::SlowTrickle if stream => Reply::Sse {
            chunks: text.into_iter().map(Bytes::from).collect(),
            delay: Duration::from_millis(60),
            end: End::Close,
        },
        Fault::SlowTrickle => Reply::Trickle(
            "application/json",
            message
                .as_bytes()
                .chunks(message.len() / 3 + 1)
                .map(Bytes::copy_from_slice)
                .collect(),
            Duration::from_millis(60),
        ),
        Fault::StallMidStream if stream => upstream::sse(text[..4].to_vec(), End::Hang),
        Fault::StallMidStream => Reply::Partial(
            "application/json",
            Bytes::from(message[..20].to_string()),
            End::Hang,
        ),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Success,
    /// An HTTP error before the first byte.
    Http(u16, &'static str),
    /// A 200 stream that ends with `event: error` of this type.
    StreamError(&'static str),
}

struct Expect {
    outcome: Outcome,
    /// Upstream attempts, fallback included.
    attempts: usize,
    /// Primary deployment's circuit after the request.
    circuit: CircuitState,
    /// The longest the client may have waited.
    max_wait: Duration,
}

/// The expected result of each cell, from gateway.md §7.3–§7.5 with the matrix config:
/// max_retries 2, max_attempts 4, consecutive_failures 3.
fn expect(fault: Fault, stream: bool, fallback: bool) -> Expect {
    let slack = Duration::from_millis(1500);
    let backoffs = Duration::from_millis(3 * MAX_DELAY_MS);
    // A transient fault: the primary is tried 3 times, then the fallback (4th attempt) answers.
    let transient = |per_attempt: Duration| Expect {
        outcome: if fallback {
            Outcome::Success
        } else {
            Outcome::Http(502, "api_error")
        },
        attempts: if fallback { 4 } else { 3 },
        circuit: CircuitState::Open,
        max_wait: per_attempt * 3 + backoffs + slack,
    };
    let in_band = |kind: &'static str, wait: Duration| Expect {
        outcome: Outcome::StreamError(kind),
        attempts: 1,
        circuit: CircuitState::Closed,
        max_wait: wait + slack,
    };
    let quick = Duration::ZERO;
    match fault {
        Fault::RateLimitedWithRetryAfter | Fault::RateLimitedWithoutRetryAfter => {
            let wait = if fault == Fault::RateLimitedWithRetryAfter {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(RATE_LIMIT_COOLDOWN_MS)
            };
            if fallback {
                // Next candidate at once; the primary is set aside but its circuit stays closed.
                Expect {
                    outcome: Outcome::Success,
                    attempts: 2,
                    circuit: CircuitState::Closed,
                    max_wait: slack,
                }
            } else {
                // Alone: wait out the retry-after and retry, twice.
                Expect {
                    outcome: Outcome::Http(502, "api_error"),
                    attempts: 3,
                    circuit: CircuitState::Open,
                    max_wait: wait * 2 + slack,
                }
            }
        }
        Fault::Status500
        | Fault::Status503
        | Fault::Status529
        | Fault::ConnectionRefused
        | Fault::InvalidJson
        | Fault::WrongContentType => transient(quick),
        Fault::TimeoutBeforeHeaders => transient(Duration::from_millis(TTFT_MS)),
        Fault::HangAfterHeaders if stream => transient(Duration::from_millis(TTFT_MS)),
        Fault::HangAfterHeaders => transient(Duration::from_millis(ATTEMPT_MS)),
        Fault::StallMidStream if !stream => transient(Duration::from_millis(ATTEMPT_MS)),
        Fault::ResetMidStream | Fault::TruncatedStream if !stream => transient(quick),
        Fault::ResetMidStream | Fault::TruncatedStream => in_band("api_error", quick),
        Fault::StallMidStream => in_band("timeout_error", Duration::from_millis(IDLE_MS)),
        Fault::SlowTrickle => Expect {
            outcome: Outcome::Success,
            attempts: 1,
            circuit: CircuitState::Closed,
            max_wait: Duration::from_millis(60 * 10) + slack,
        },
    }
}

fn matrix_config(primary: &str, fallback: Option<&str>) -> String {
    let mut deployments = "{ provider = \"primary\", model = \"text\" }".to_string();
    let mut providers = format!(
        "[[providers]]\nname = \"primary\"\nkind = \"anthropic\"\nbase_url = \"{primary}\"\napi_key_env = \"UPSTREAM_KEY\"\n"
    );
    if let Some(f) = fallback {
        deployments.push_str(", { provider = \"fallback\", model = \"text\", weight = 0 }");
        providers.push_str(&format!(
            "[[providers]]\nname = \"fallback\"\nkind = \"anthropic\"\nbase_url = \"{f}\"\n"
        ));
    }
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[[auth.keys]]
name = "test"
secret_sha256 = "{hash}"

[retry]
base_delay_ms = 5
max_delay_ms = {MAX_DELAY_MS}

[timeouts]
connect_ms = 1000
ttft_ms = {TTFT_MS}
attempt_ms = {ATTEMPT_MS}
idle_ms = {IDLE_MS}
total_ms = 15000

[circuit_breaker]
consecutive_failures = 3
rate_limit_cooldown_ms = {RATE_LIMIT_COOLDOWN_MS}

{providers}
[[models]]
id = "m"
deployments = [{deployments}]
"#,
        hash = key_hash(KEY),
    )
}

/// A loopback port with nothing listening.
fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// The `debug.attempts` list, wherever the response carries it.
fn debug_attempts(res: &Response, stream: bool) -> Vec<Value> {
    let debug = if res.status != 200 || !stream {
        res.json()["debug"].clone()
    } else {
        let events = res.events();
        let (_, last) = events
            .iter()
            .rev()
            .find(|(n, _)| n == "message_delta" || n == "error")
            .expect("a final event");
        last["debug"].clone()
    };
    debug["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("debug.attempts in {debug}"))
}

async fn run_cell(fault: Fault, stream: bool, fallback: bool) {
    let cell = format!("{fault:?} stream={stream} fallback={fallback}");
    let primary = (fault != Fault::ConnectionRefused)
        .then(|| MockUpstream::start(Arc::new(move |r| misbehave(fault, r))));
    let primary_url = primary.as_ref().map_or_else(refused_url, |p| p.url.clone());
    let backup = fallback.then(MockUpstream::anthropic);
    let gw = TestGateway::start(&matrix_config(
        &primary_url,
        backup.as_ref().map(|b| b.url.as_str()),
    ));

    let mut body = request("m", stream);
    body["debug"] = json!({"enabled": true});
    let started = Instant::now();
    let res = post(&gw.url, &body).await;
    let waited = started.elapsed();
    let want = expect(fault, stream, fallback);

    match &want.outcome {
        Outcome::Success => {
            assert_eq!(
                res.status,
                200,
                "{cell}: {}",
                String::from_utf8_lossy(&res.body)
            );
            if stream {
                let events = res.events();
                let names = assert_stream_grammar(&events);
                assert_eq!(
                    names.last().map(String::as_str),
                    Some("message_stop"),
                    "{cell}"
                );
            } else {
                assert_eq!(res.json()["type"], "message", "{cell}");
            }
        }
        Outcome::Http(status, kind) => {
            let v = res.assert_error(*status, kind);
            let n = want.attempts;
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with(&format!("all {n} upstream attempts failed; last: ")),
                "{cell}: {msg}"
            );
            assert_eq!(res.header("x-should-retry"), Some("true"), "{cell}");
        }
        Outcome::StreamError(kind) => {
            assert_eq!(res.status, 200, "{cell}");
            let events = res.events();
            let (name, data) = events.last().unwrap();
            assert_eq!(name, "error", "{cell}: {events:?}");
            assert_eq!(data["error"]["type"], *kind, "{cell}");
            assert!(
                events.iter().any(|(n, _)| n == "message_start"),
                "{cell}: bytes reached the client first"
            );
            assert!(!events.iter().any(|(n, _)| n == "message_stop"), "{cell}");
        }
    }
    let attempts = debug_attempts(&res, stream);
    assert_eq!(attempts.len(), want.attempts, "{cell}: {attempts:?}");
    if let Some(p) = &primary {
        let primary_attempts = attempts
            .iter()
            .filter(|a| a["deployment"] == "primary/text")
            .count();
        assert_eq!(
            p.count(),
            primary_attempts,
            "{cell}: the primary saw every attempt"
        );
    }
    if let Some(b) = &backup {
        let fallback_attempts = attempts
            .iter()
            .filter(|a| a["deployment"] == "fallback/text")
            .count();
        assert_eq!(b.count(), fallback_attempts, "{cell}");
    }
    assert!(
        waited <= want.max_wait,
        "{cell}: waited {waited:?}, limit {:?}",
        want.max_wait
    );
    assert_eq!(gw.circuit("m", 0), want.circuit, "{cell}: primary circuit");
    if fallback && want.outcome == Outcome::Success && want.attempts > 1 {
        assert_eq!(
            gw.circuit("m", 1),
            CircuitState::Closed,
            "{cell}: fallback circuit"
        );
    }
    gw.stop().await;
    if let Some(p) = primary {
        p.stop().await;
    }
    if let Some(b) = backup {
        b.stop().await;
    }
}

macro_rules! matrix {
    ($($name:ident: $stream:expr, $fallback:expr;)*) => {$(
        #[actix_web::test]
        async fn $name() {
            for fault in FAULTS {
                run_cell(fault, $stream, $fallback).await;
            }
        }
    )*};
}

matrix! {
    matrix_non_stream_single: false, false;
    matrix_non_stream_with_fallback: false, true;
    matrix_stream_single: true, false;
    matrix_stream_with_fallback: true, true;
}

/// A deployment whose circuit is open is skipped; with none left the client gets 529 with the
/// time to the half-open probe, and the probe's success closes the circuit again.
#[actix_web::test]
async fn open_circuit_gives_529_then_probes() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = failing.clone();
    let up = MockUpstream::start(Arc::new(move |r| {
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::Json(500, upstream::error_body("api_error", "boom"), vec![])
        } else {
            upstream::by_model(r)
        }
    }));
    let text = matrix_config(&up.url, None).replace(
        "consecutive_failures = 3",
        "consecutive_failures = 3\ncooldown_secs = 1",
    );
    let gw = TestGateway::start(&text);
    post(&gw.url, &request("m", false))
        .await
        .assert_error(502, "api_error");
    assert_eq!(gw.circuit("m", 0), CircuitState::Open);
    let before = up.count();
    let res = post(&gw.url, &request("m", false)).await;
    res.assert_error(529, "overloaded_error");
    assert_eq!(res.header("retry-after"), Some("1"));
    assert_eq!(res.header("x-should-retry"), Some("true"));
    assert_eq!(up.count(), before, "an open circuit sends nothing upstream");
    // After the cooldown one probe goes through; it succeeds and closes the circuit.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.circuit("m", 0) != CircuitState::HalfOpen {
        assert!(
            Instant::now() < deadline,
            "the circuit half-opens after its cooldown"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post(&gw.url, &request("m", false)).await.status, 200);
    assert_eq!(gw.circuit("m", 0), CircuitState::Closed);
    gw.stop().await;
    up.stop().await;
}

/// `timeouts.total_ms` bounds the whole request: 504 before the first byte, an in-band
/// `timeout_error` after it.
#[actix_web::test]
async fn total_timeout_before_and_after_the_first_byte() {
    let up = MockUpstream::start(Arc::new(|r| {
        if r.stream() {
            let frames =
                upstream::text_stream(&r.model(), &["a", "b", "c", "d", "e", "f", "g", "h"]);
            Reply::Sse {
                chunks: frames.into_iter().map(Bytes::from).collect(),
                delay: Duration::from_millis(150),
                end: End::Close,
            }
        } else {
            Reply::Hang
        }
    }));
    let text = matrix_config(&up.url, None)
        .replace(&format!("ttft_ms = {TTFT_MS}"), "ttft_ms = 5000")
        .replace(&format!("attempt_ms = {ATTEMPT_MS}"), "attempt_ms = 5000")
        .replace("total_ms = 15000", "total_ms = 700");
    let gw = TestGateway::start(&text);
    let t = Instant::now();
    let res = post(&gw.url, &request("m", false)).await;
    let v = res.assert_error(504, "timeout_error");
    assert_eq!(
        v["error"]["message"],
        "request exceeded timeouts.total_ms (700 ms)"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(700) && t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        gw.circuit("m", 0),
        CircuitState::Closed,
        "an abandoned attempt is not a failure"
    );

    let res = post(&gw.url, &request("m", true)).await;
    let events = res.events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "timeout_error");
    assert!(events.iter().any(|(n, _)| n == "content_block_delta"));
    gw.stop().await;
    up.stop().await;
}

/// A client fault from the upstream is answered at once, never retried, and is no failure of the
/// deployment; an upstream 413 stays a 413.
#[actix_web::test]
async fn client_faults_stop_at_once() {
    let up = MockUpstream::start(Arc::new(|r| match r.json()["max_tokens"].as_u64() {
        Some(1) => Reply::Json(
            413,
            upstream::error_body("request_too_large", "too big"),
            vec![],
        ),
        _ => Reply::Json(
            422,
            upstream::error_body("invalid_request_error", "bad thing"),
            vec![],
        ),
    }));
    let backup = MockUpstream::anthropic();
    let gw = TestGateway::start(&matrix_config(&up.url, Some(&backup.url)));
    let v = post(&gw.url, &request("m", false))
        .await
        .assert_error(400, "invalid_request_error");
    assert_eq!(v["error"]["message"], "upstream: bad thing");
    let mut body = request("m", true);
    body["max_tokens"] = json!(1);
    let v = post(&gw.url, &body)
        .await
        .assert_error(413, "request_too_large");
    assert_eq!(v["error"]["message"], "upstream: too big");
    assert_eq!(up.count(), 2);
    assert_eq!(backup.count(), 0, "a client fault never falls back");
    assert_eq!(gw.circuit("m", 0), CircuitState::Closed);
    gw.stop().await;
    up.stop().await;
    backup.stop().await;
}

/// 401/403/404 from an upstream mean a misconfigured deployment: next candidate, no retry.
#[actix_web::test]
async fn deployment_faults_fall_back_without_retry() {
    let up = MockUpstream::start(Arc::new(|_| {
        Reply::Json(
            401,
            upstream::error_body("authentication_error", "invalid x-api-key"),
            vec![],
        )
    }));
    let backup = MockUpstream::anthropic();
    let gw = TestGateway::start(&matrix_config(&up.url, Some(&backup.url)));
    assert_eq!(post(&gw.url, &request("m", false)).await.status, 200);
    assert_eq!((up.count(), backup.count()), (1, 1));
    gw.stop().await;
    let gw = TestGateway::start(&matrix_config(&up.url, None));
    let res = post(&gw.url, &request("m", false)).await;
    let v = res.assert_error(502, "api_error");
    assert_eq!(
        v["error"]["message"],
        "all 1 upstream attempt failed; last: 401 from primary/text"
    );
    assert_eq!(res.header("x-should-retry"), Some("false"));
    assert!(
        logs().contains("check its config"),
        "logged as a config error"
    );
    gw.stop().await;
    up.stop().await;
    backup.stop().await;
}
