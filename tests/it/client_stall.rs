//! Clients that stop reading (issue 10): the session ends within `timeouts.client_write_ms` (or
//! `total_ms`, whichever comes first) whatever the client does, the upstream request is dropped,
//! the key's concurrency slot is free again, and the row and metrics say `client_stalled`. For
//! passthrough, translated (OpenAI kind), mock-provider and tool-loop streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::upstream::{by_model, frame, message_start, MockUpstream, Recorded, Reply};
use crate::common::{get, post, single_key_config, tool_user, TestGateway, KEY};

/// The mock provider's reply: far more than the channel and both sockets' buffers hold.
const MOCK_REPLY_CHARS: usize = 8 * 1024 * 1024;

fn config(upstream: &str, client_write_ms: u64, total_ms: u64) -> String {
    let reply = "x".repeat(MOCK_REPLY_CHARS);
    single_key_config(
        upstream,
        &format!(
            r#"
[timeouts]
client_write_ms = {client_write_ms}
total_ms = {total_ms}
"#
        ),
        "max_concurrent = 1",
    ) + &format!(
        r#"
[[providers]]
name = "oai"
kind = "openai"
base_url = "{upstream}/v1"
api_key_env = "UPSTREAM_KEY"

[[providers]]
name = "mock"
kind = "mock"
reply = "{reply}"
chunk_chars = 4096

[[models]]
id = "up-endless"
deployments = [{{ provider = "up", model = "endless" }}]

[[models]]
id = "oai-endless"
deployments = [{{ provider = "oai", model = "endless" }}]

[[models]]
id = "up-loop-endless"
deployments = [{{ provider = "up", model = "loop-endless" }}]

[[models]]
id = "mock-long"
deployments = [{{ provider = "mock", model = "mock-long" }}]

[[models]]
id = "up-text"
deployments = [{{ provider = "up", model = "text" }}]
"#
    )
}

/// An endless, fast SSE reply in Anthropic's wire format.
fn anthropic_endless(model: &str) -> Reply {
    let text = "y".repeat(1024);
    Reply::Endless {
        head: vec![
            Bytes::from(frame(
                "message_start",
                &message_start("msg_endless", model, 10),
            )),
            Bytes::from(frame(
                "content_block_start",
                &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            )),
        ],
        chunk: Bytes::from(frame(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}}),
        )),
    }
}

/// The same in OpenAI's chunk format.
fn openai_endless() -> Reply {
    let text = "y".repeat(1024);
    let chunk = |delta: Value| {
        let c = json!({"id":"chatcmpl-endless","object":"chat.completion.chunk","created":1,
            "model":"endless","choices":[{"index":0,"delta":delta,"finish_reason":null}]});
        Bytes::from(format!("data: {c}\n\n"))
    };
    Reply::Endless {
        head: vec![chunk(json!({"role":"assistant","content":""}))],
        chunk: chunk(json!({"content": text})),
    }
}

/// `endless` on both wire formats; `loop-endless` calls `gateway_datetime`, then streams its
/// answer forever; anything else as the default script.
fn script(req: &Recorded) -> Reply {
    let model = req.model();
    if req.path.ends_with("/chat/completions") {
        return openai_endless();
    }
    match model.as_str() {
        "endless" => anthropic_endless(&model),
        "loop-endless" => {
            let mut body = req.json();
            let results = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_array())
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
            if results {
                anthropic_endless(&model)
            } else {
                body["model"] = json!("loop-datetime");
                tool_user::anthropic(&body)
            }
        }
        _ => by_model(req),
    }
}

/// Sends a stream request from a socket with a 4 KiB receive buffer, reads the response head
/// (the stream has started), then reads nothing more.
async fn stalled_client(gateway: &str, body: &Value) -> TcpStream {
    let addr: SocketAddr = gateway
        .trim_start_matches("http://")
        .parse()
        .expect("a loopback address");
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.expect("connects");
    let body = body.to_string();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {KEY}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the gateway closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    conn
}

fn stream_body(model: &str, tools: Option<Value>) -> Value {
    let mut body = json!({"model": model, "max_tokens": 8_000_000, "stream": true,
        "messages": [{"role": "user", "content": "Talk forever."}]});
    if let Some(t) = tools {
        body["tools"] = t;
    }
    body
}

/// Waits until the gateway counts no open stream (the session ended); returns when.
async fn stream_ended(gw: &TestGateway) -> Instant {
    let wait = async {
        loop {
            let text = gw.state.metrics.render(&gw.state.models);
            if text.lines().any(|l| l == "gateway_active_streams 0") {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the stalled session ended")
}

/// Waits until the key's one concurrency slot admits a request again; returns when it did.
async fn admitted_again(gw: &TestGateway, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let res = post(&gw.url, &crate::common::request("up-text", false)).await;
        if res.status == 200 {
            return Instant::now();
        }
        assert_eq!(res.status, 429, "{:?}", res.json());
        assert!(
            Instant::now() < deadline,
            "the key's slot was not released in time"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The stalled request's row and error count: `client_stalled`, or (`total_ms` cut it while its
/// `event: error` frame still fitted in the channel) `timeout_error` in-band.
async fn assert_ended_once(gw: &TestGateway, timeout_may_fit: bool, usage_known: bool) {
    let metrics = get(&gw.url, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.lines().any(|l| l == "gateway_active_streams 0"),
        "{text}"
    );
    let db = gw.flush_log().await;
    let rows: Vec<(u16, Option<String>)> = db
        .prepare("SELECT status, error_type FROM requests WHERE error_type <> 'rate_limit_error' AND model <> 'up-text'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let stalled = (499, Some("client_stalled".to_string()));
    let timed_out = (200, Some("timeout_error".to_string()));
    assert!(
        rows == [stalled.clone()] || (timeout_may_fit && rows == [timed_out]),
        "{rows:?}"
    );
    let error_type = rows[0].1.as_deref().unwrap();
    // The usage of what was done is kept (a tool loop's finished rounds included).
    let input_tokens: i64 = db
        .query_row(
            "SELECT input_tokens FROM requests WHERE model <> 'up-text' AND status <> 429",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        input_tokens > 0 || !usage_known,
        "{error_type}: the row lost its usage"
    );
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gateway_errors_total") && !l.contains("rate_limit_error"))
        .collect();
    assert_eq!(counted.len(), 1, "{text}");
    assert!(
        counted[0].contains(&format!("type=\"{error_type}\"")) && counted[0].ends_with(" 1"),
        "{}",
        counted[0]
    );
}

struct Case {
    model: &'static str,
    tools: Option<Value>,
    /// The stream comes from the scripted upstream (its drop is observable).
    upstream: bool,
    /// Input tokens are known before the stream ends (not so for OpenAI-format usage).
    usage_known: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            model: "up-endless",
            tools: None,
            upstream: true,
            usage_known: true,
        },
        Case {
            model: "oai-endless",
            tools: None,
            upstream: true,
            usage_known: false,
        },
        Case {
            model: "mock-long",
            tools: None,
            upstream: false,
            usage_known: true,
        },
        Case {
            model: "up-loop-endless",
            tools: Some(json!([{"type": "gateway:datetime"}])),
            upstream: true,
            usage_known: true,
        },
    ]
}

/// One stalled stream: ends by `limit` (client_write_ms or total_ms), then the slot is free.
async fn stall(case: &Case, client_write_ms: u64, total_ms: u64) {
    let upstream = MockUpstream::start(Arc::new(script));
    let gw = TestGateway::start(&config(&upstream.url, client_write_ms, total_ms));
    let _conn = stalled_client(&gw.url, &stream_body(case.model, case.tools.clone())).await;
    let stalled_at = Instant::now();
    let limit = Duration::from_millis(client_write_ms.min(total_ms));
    let ended = if case.upstream {
        // The upstream request is dropped: its connection closes.
        upstream.wait_dropped(1).await;
        let dropped = Instant::now();
        admitted_again(&gw, Duration::from_secs(1)).await;
        dropped
    } else {
        // The mock provider has no connection to watch: the session's end is its stream's.
        let ended = stream_ended(&gw).await;
        admitted_again(&gw, Duration::from_secs(1)).await;
        ended
    };
    // Nothing but the limit ends these streams. The time before it includes filling the
    // channel and both sockets (the gateway's speed), so this only guards against a hang.
    let took = ended.duration_since(stalled_at);
    assert!(
        took < limit + Duration::from_secs(20),
        "{}: ended {took:?} after the client stopped reading",
        case.model
    );
    assert_ended_once(&gw, total_ms < client_write_ms, case.usage_known).await;
    drop(_conn);
    gw.stop().await;
    upstream.stop().await;
}

#[actix_web::test]
async fn a_stalled_client_ends_its_session_after_client_write_ms() {
    for case in cases() {
        stall(&case, 500, 600_000).await;
    }
}

#[actix_web::test]
async fn total_ms_holds_while_the_client_does_not_read() {
    for case in cases() {
        stall(&case, 600_000, 1500).await;
    }
}
