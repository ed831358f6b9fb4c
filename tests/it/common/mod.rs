//! Test fixtures: the gateway and mock upstreams on 127.0.0.1 ephemeral ports, and a client.

#![allow(dead_code)]

pub mod cloud;
pub mod openai_upstream;
pub mod tool_mocks;
pub mod tool_user;
pub mod upstream;

use std::time::Duration;

use aigw::protocol::sse::SseParser;
use aigw::Config;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

/// The gateway key every test config accepts.
pub const KEY: &str = "sk-test-key";
/// The provider key the mock upstream must receive (and nobody else ever sees).
pub const UPSTREAM_SECRET: &str = "sk-upstream-secret-5f2a";

/// SHA-256 of [`KEY`], for `secret_sha256`.
pub fn key_hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// A config with a mock provider (`mock`), an Anthropic provider at `upstream` (`up`) and models:
/// `mock-model` → mock, `up-<name>` → upstream model `<name>` for each name in `UPSTREAM_MODELS`.
pub fn base_config(upstream: &str) -> String {
    let mut models = String::new();
    for name in UPSTREAM_MODELS {
        models.push_str(&format!(
            "[[models]]\nid = \"up-{name}\"\ndeployments = [{{ provider = \"up\", model = \"{name}\" }}]\n"
        ));
    }
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[retry]
base_delay_ms = 5
max_delay_ms = 20

# Tests that count attempts must not see a circuit open; the resilience matrix sets its own.
[circuit_breaker]
consecutive_failures = 1000
rate_limit_cooldown_ms = 50

[[auth.keys]]
name = "test"
secret_sha256 = "{hash}"

[[auth.keys]]
name = "limited"
secret_sha256 = "{limited}"
requests_per_minute = 1

[[auth.keys]]
name = "narrow"
secret_sha256 = "{narrow}"
allowed_models = ["mock-model"]

[[providers]]
name = "mock"
kind = "mock"
tool_mode = "auto"

[[providers]]
name = "up"
kind = "anthropic"
base_url = "{upstream}"
api_key_env = "UPSTREAM_KEY"

[[models]]
id = "mock-model"
aliases = ["mock-alias"]
deployments = [{{ provider = "mock", model = "mock-1" }}]

[[models]]
id = "mock-error-500"
deployments = [{{ provider = "mock", model = "error-500" }}]

{models}
"#,
        hash = key_hash(KEY),
        limited = key_hash("sk-limited"),
        narrow = key_hash("sk-narrow"),
    )
}

/// A one-worker gateway with key `test` ([`KEY`], with `key_options`) and the Anthropic
/// provider `up` at `upstream`, after the top-level `sections` (`[retry]`, `[timeouts]`...).
/// Callers append their providers and models.
pub fn single_key_config(upstream: &str, sections: &str, key_options: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
{sections}
[[auth.keys]]
name = "test"
secret_sha256 = "{hash}"
{key_options}

[[providers]]
name = "up"
kind = "anthropic"
base_url = "{upstream}"
api_key_env = "UPSTREAM_KEY"
"#,
        hash = key_hash(KEY),
    )
}

pub const UPSTREAM_MODELS: [&str; 11] = [
    "loop",
    "loop-datetime",
    "text",
    "tool",
    "midstream",
    "no-stop",
    "stream-error",
    "error-400",
    "error-500",
    "error-529",
    "error-404",
];

pub fn parse_config(text: &str) -> Config {
    Config::from_toml_with_env(text, &|var| {
        (var == "UPSTREAM_KEY").then(|| UPSTREAM_SECRET.to_string())
    })
    .expect("test config is valid")
}

/// A gateway running inside the test's actix system.
pub struct TestGateway {
    pub url: String,
    /// The `/metrics` listener, when `observability.metrics_listen` is set.
    pub metrics_url: Option<String>,
    pub state: std::sync::Arc<aigw::state::AppState>,
    /// The request log's database (a temporary file, removed on drop).
    pub log_path: std::path::PathBuf,
    handle: actix_web::dev::ServerHandle,
}

/// A fresh temporary path for a test's files.
pub fn temp_path(what: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("aigw-it-{}-{n}-{what}", std::process::id()))
}

impl TestGateway {
    pub fn start(config_text: &str) -> Self {
        Self::start_config(parse_config(config_text))
    }

    /// Starts `config`; a request log left at its default path goes to a temporary file
    /// instead, so no test writes into the repository.
    pub fn start_config(mut config: Config) -> Self {
        capture_logs();
        if config.request_log.path == aigw::config::RequestLogConfig::default().path {
            config.request_log.path = temp_path("gateway.sqlite").to_string_lossy().into_owned();
        }
        let log_path = std::path::PathBuf::from(&config.request_log.path);
        let gw = aigw::start(config).expect("gateway starts");
        let url = gw.url();
        let handle = gw.server.handle();
        let state = gw.state.clone();
        actix_web::rt::spawn(gw.server);
        let metrics_url = gw.metrics_server.map(|(server, addr)| {
            actix_web::rt::spawn(server);
            format!("http://{addr}")
        });
        Self {
            url,
            metrics_url,
            state,
            log_path,
            handle,
        }
    }

    /// Writes every queued request log row and stops the writer, then opens the database.
    pub async fn flush_log(&self) -> rusqlite::Connection {
        self.state
            .request_log
            .as_ref()
            .expect("the request log is enabled")
            .shutdown()
            .await;
        rusqlite::Connection::open(&self.log_path).expect("the request log opens")
    }

    /// A deployment's circuit state.
    pub fn circuit(&self, model: &str, deployment: usize) -> aigw::routing::CircuitState {
        let m = self.state.models.resolve(model).expect("model exists");
        m.deployments[deployment]
            .breaker
            .state(std::time::Instant::now())
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if self.log_path.starts_with(std::env::temp_dir()) {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.log_path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Everything the gateways of this test binary logged (all tests share one subscriber).
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Routes the gateway's logs (debug level and up) into [`logs`].
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("aigw=debug,info"))
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .try_init();
    });
}

/// The logs captured so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

/// The first value of header `name` in recorded `headers`.
pub fn header_in<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A finished HTTP exchange.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    /// The SSE events as (name, payload).
    pub fn events(&self) -> Vec<(String, Value)> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(&self.body, &mut out).unwrap();
        p.finish(&mut out);
        out.into_iter()
            .map(|e| {
                (
                    e.name().to_string(),
                    serde_json::from_slice(&e.data).expect("event data is JSON"),
                )
            })
            .collect()
    }
    /// Asserts the Anthropic error envelope with this status and type.
    pub fn assert_error(&self, status: u16, kind: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        let rid = v["request_id"]
            .as_str()
            .expect("request_id in the envelope");
        assert_eq!(Some(rid), self.header("request-id"));
        v
    }
}

/// POSTs raw bytes with headers and reads the whole response.
pub async fn post_raw(
    url: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    let mut req = client().post(format!("{url}{path}"));
    for (k, v) in headers {
        req = req.append_header((*k, *v));
    }
    let mut res = req.send_body(body.into()).await.expect("gateway answers");
    collect(&mut res).await
}

/// POSTs a JSON body to `/v1/messages` with the test key.
pub async fn post(url: &str, body: &Value) -> Response {
    post_raw(
        url,
        "/v1/messages",
        &[("x-api-key", KEY), ("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// POSTs a JSON body to `/v1/messages` with these headers only (no content type).
pub async fn post_with(url: &str, headers: &[(&str, &str)], body: &Value) -> Response {
    post_raw(url, "/v1/messages", headers, body.to_string()).await
}

/// POSTs a JSON body to `/v1/messages` with `key` as `x-api-key` (and no content type).
pub async fn post_as(url: &str, key: &str, body: &Value) -> Response {
    post_with(url, &[("x-api-key", key)], body).await
}

/// Sends a request on a raw TCP connection and reads until `until` appears in the response (or
/// only the request is sent, for `None`). Dropping the returned socket is a real disconnect,
/// which an HTTP client with a connection pool does not guarantee.
pub async fn raw_request(
    url: &str,
    body: &serde_json::Value,
    until: Option<&str>,
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.to_string();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(body.as_bytes()).await.unwrap();
    if let Some(marker) = until {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(marker) {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed before {marker:?}: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    }
    sock
}

pub async fn get(url: &str, path: &str) -> Response {
    let mut res = client()
        .get(format!("{url}{path}"))
        .send()
        .await
        .expect("gateway answers");
    collect(&mut res).await
}

pub async fn collect(res: &mut awc::ClientResponse) -> Response {
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = res.next().await {
        match chunk {
            Ok(c) => body.extend_from_slice(&c),
            Err(_) => break,
        }
    }
    Response {
        status,
        headers,
        body: body.into(),
    }
}

/// A minimal valid request body.
pub fn request(model: &str, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello there"}]
    })
}

/// Asserts the stream grammar of messages-api.md §5.2 and returns the event names.
pub fn assert_stream_grammar(events: &[(String, Value)]) -> Vec<String> {
    let names: Vec<String> = events.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("message_start"),
        "{names:?}"
    );
    let mut open: Option<u64> = None;
    let mut next = 0u64;
    for (name, data) in events {
        assert_eq!(
            data["type"].as_str(),
            Some(name.as_str()),
            "event name equals its type"
        );
        match name.as_str() {
            "content_block_start" => {
                assert!(open.is_none(), "blocks must not interleave: {names:?}");
                assert_eq!(data["index"].as_u64(), Some(next));
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => {
                assert_eq!(data["index"].as_u64(), open, "delta to the open block")
            }
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                open = None;
            }
            "message_delta" | "message_stop" => assert!(open.is_none(), "all blocks stopped first"),
            _ => {}
        }
    }
    names
}
