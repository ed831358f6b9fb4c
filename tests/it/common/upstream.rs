//! A scriptable in-process Anthropic upstream on 127.0.0.1: real HTTP, the real wire format, and
//! every way a real one fails (error statuses, wrong content types, resets mid-stream, hangs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header_in(&self.headers, name)
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("upstream got JSON")
    }
    pub fn model(&self) -> String {
        self.json()["model"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    pub fn stream(&self) -> bool {
        self.json()["stream"].as_bool().unwrap_or(false)
    }

    /// This request as if it had asked for another upstream model.
    pub fn clone_with_model(&self, model: &str) -> Recorded {
        let mut v = self.json();
        v["model"] = Value::String(model.to_string());
        Recorded {
            body: Bytes::from(v.to_string()),
            ..self.clone()
        }
    }
}

/// How the upstream answers one request.
pub enum Reply {
    /// A JSON body with a status and extra headers.
    Json(u16, Value, Vec<(String, String)>),
    /// Any body with any content type.
    Raw(u16, &'static str, Bytes),
    /// An SSE response: `chunks` written `delay` apart, then `end`.
    Sse {
        chunks: Vec<Bytes>,
        delay: Duration,
        end: End,
    },
    /// Accept the connection and never answer.
    Hang,
    /// Send the head and `prefix` of a body with this content type, then `end`.
    Partial(&'static str, Bytes, End),
    /// A body sent in pieces, `delay` apart, then closed.
    Trickle(&'static str, Vec<Bytes>, Duration),
    /// An SSE response that never ends: `head`, then `chunk` again and again, as fast as the
    /// reader takes it (counted as dropped when the gateway lets go of it).
    Endless { head: Vec<Bytes>, chunk: Bytes },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum End {
    /// Close cleanly.
    Close,
    /// Abort the connection (no terminating chunk): a reset mid-stream.
    Reset,
    /// Keep the connection open and send nothing more.
    Hang,
}

pub type Script = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub struct MockUpstream {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Streams whose body the gateway dropped before the end.
    pub dropped_streams: Arc<AtomicUsize>,
    dropped: Arc<Notify>,
    handle: actix_web::dev::ServerHandle,
}

impl MockUpstream {
    /// Starts on an ephemeral loopback port. Call inside an actix system.
    pub fn start(script: Script) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let dropped_streams = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(Notify::new());
        let state = web::Data::new(State {
            script,
            requests: requests.clone(),
            dropped_streams: dropped_streams.clone(),
            dropped: dropped.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .h1_allow_half_closed(false)
        .bind(("127.0.0.1", 0))
        .expect("bind loopback");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url: format!("http://{addr}"),
            requests,
            dropped_streams,
            dropped,
            handle,
        }
    }

    /// The scripted default: behaviour chosen by the upstream model name (see [`by_model`]).
    pub fn anthropic() -> Self {
        Self::start(Arc::new(by_model))
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the upstream got a request")
    }

    /// Waits until a stream body was dropped by the gateway (client went away).
    pub async fn wait_dropped(&self, n: usize) {
        let wait = async {
            loop {
                let notified = self.dropped.notified();
                if self.dropped_streams.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the upstream stream was dropped");
    }

    /// Waits until the upstream has received `n` requests.
    pub async fn wait_requests(&self, n: usize) {
        let wait = async {
            loop {
                let notified = self.dropped.notified();
                if self.count() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the upstream got the requests");
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

struct State {
    script: Script,
    requests: Arc<Mutex<Vec<Recorded>>>,
    dropped_streams: Arc<AtomicUsize>,
    dropped: Arc<Notify>,
}

async fn handle(req: HttpRequest, body: Bytes, state: web::Data<State>) -> HttpResponse {
    let recorded = Recorded {
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body,
    };
    state.requests.lock().unwrap().push(recorded.clone());
    state.dropped.notify_waiters();
    match (state.script)(&recorded) {
        Reply::Json(status, body, headers) => {
            let mut res =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            res.content_type("application/json");
            for (k, v) in headers {
                res.insert_header((k, v));
            }
            // Headers a real upstream sends that must not reach the client.
            res.insert_header(("request-id", "req_upstream_secret_id"));
            res.insert_header(("anthropic-organization-id", "org-upstream"));
            res.body(body.to_string())
        }
        Reply::Raw(status, ct, body) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .content_type(ct)
                .body(body)
        }
        Reply::Hang => {
            // Counted as dropped when the client gives up on it.
            let _guard = DropGuard {
                done: false,
                counter: state.dropped_streams.clone(),
                notify: state.dropped.clone(),
            };
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Partial(ct, prefix, end) => {
            let rest = stream::once(async move { Ok::<_, actix_web::Error>(prefix) }).chain(
                stream::once(async move {
                    match end {
                        End::Close => Ok(Bytes::new()),
                        End::Reset => Err(actix_web::error::ErrorInternalServerError("reset")),
                        End::Hang => {
                            std::future::pending::<()>().await;
                            Ok(Bytes::new())
                        }
                    }
                }),
            );
            let paced = rest.then(|item| async move {
                // Let the prefix reach the socket before a reset.
                tokio::time::sleep(Duration::from_millis(20)).await;
                item
            });
            HttpResponse::Ok().content_type(ct).streaming(paced)
        }
        Reply::Trickle(ct, pieces, delay) => {
            let items = stream::iter(pieces).then(move |p| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, actix_web::Error>(p)
            });
            HttpResponse::Ok().content_type(ct).streaming(items)
        }
        Reply::Endless { head, chunk } => {
            let guard = DropGuard {
                done: false,
                counter: state.dropped_streams.clone(),
                notify: state.dropped.clone(),
            };
            let body = stream::iter(head)
                .chain(stream::repeat(chunk))
                .map(move |b| {
                    let _held = &guard;
                    Ok::<_, actix_web::Error>(b)
                });
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .streaming(body)
        }
        Reply::Sse { chunks, delay, end } => {
            let guard = DropGuard {
                done: false,
                counter: state.dropped_streams.clone(),
                notify: state.dropped.clone(),
            };
            let items = stream::unfold(
                (chunks.into_iter(), guard, true),
                move |(mut it, mut guard, first)| async move {
                    if !first && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    match it.next() {
                        Some(chunk) => Some((Ok::<_, actix_web::Error>(chunk), (it, guard, false))),
                        None => match end {
                            End::Close => {
                                guard.done = true;
                                drop(guard);
                                None
                            }
                            End::Reset => {
                                guard.done = true;
                                Some((
                                    Err(actix_web::error::ErrorInternalServerError("reset")),
                                    (it, guard, false),
                                ))
                            }
                            End::Hang => {
                                std::future::pending::<()>().await;
                                None
                            }
                        },
                    }
                },
            );
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .insert_header(("request-id", "req_upstream_secret_id"))
                .streaming(items)
        }
    }
}

/// Counts stream bodies dropped before their scripted end.
struct DropGuard {
    done: bool,
    counter: Arc<AtomicUsize>,
    notify: Arc<Notify>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.done {
            self.counter.fetch_add(1, Ordering::SeqCst);
            self.notify.notify_waiters();
        }
    }
}

/// One SSE frame in Anthropic's framing.
pub fn frame(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

pub fn message_start(id: &str, model: &str, input_tokens: u64) -> Value {
    json!({"type":"message_start","message":{"id":id,"type":"message","role":"assistant","model":model,
        "content":[],"stop_reason":null,"stop_sequence":null,
        "usage":{"input_tokens":input_tokens,"output_tokens":1,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,
                 "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"service_tier":"standard"}}})
}

/// The frames of a text reply, as Anthropic sends them (with a ping after the first block start).
pub fn text_stream(model: &str, pieces: &[&str]) -> Vec<String> {
    let mut f = vec![
        frame(
            "message_start",
            &message_start("msg_01UpstreamText", model, 21),
        ),
        frame(
            "content_block_start",
            &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        frame("ping", &json!({"type":"ping"})),
    ];
    for p in pieces {
        f.push(frame(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":p}}),
        ));
    }
    f.push(frame(
        "content_block_stop",
        &json!({"type":"content_block_stop","index":0}),
    ));
    f.push(frame(
        "message_delta",
        &json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}),
    ));
    f.push(frame("message_stop", &json!({"type":"message_stop"})));
    f
}

/// A text block then a tool_use block whose input arrives in the given fragments.
pub fn tool_stream(model: &str, name: &str, fragments: &[&str]) -> Vec<String> {
    let mut f = vec![
        frame(
            "message_start",
            &message_start("msg_01UpstreamTool", model, 312),
        ),
        frame(
            "content_block_start",
            &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        frame(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}),
        ),
        frame(
            "content_block_stop",
            &json!({"type":"content_block_stop","index":0}),
        ),
        frame(
            "content_block_start",
            &json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01UpstreamCall","name":name,"input":{}}}),
        ),
    ];
    for p in fragments {
        f.push(frame(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":p}}),
        ));
    }
    f.push(frame(
        "content_block_stop",
        &json!({"type":"content_block_stop","index":1}),
    ));
    f.push(frame(
        "message_delta",
        &json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":38}}),
    ));
    f.push(frame("message_stop", &json!({"type":"message_stop"})));
    f
}

pub fn text_message(model: &str, text: &str) -> Value {
    json!({"id":"msg_01UpstreamJson","type":"message","role":"assistant","model":model,
        "content":[{"type":"text","text":text}],"stop_reason":"end_turn","stop_sequence":null,
        "usage":{"input_tokens":21,"output_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,
                 "cache_creation":null,"server_tool_use":null,"service_tier":"standard"}})
}

pub fn tool_message(model: &str, name: &str, input: Value) -> Value {
    json!({"id":"msg_01UpstreamToolJson","type":"message","role":"assistant","model":model,
        "content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_01UpstreamCall","name":name,"input":input}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":312,"output_tokens":38,"cache_creation_input_tokens":0,"cache_read_input_tokens":256,
                 "cache_creation":null,"server_tool_use":null,"service_tier":"standard"}})
}

pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type":"error","error":{"type":kind,"message":message},"request_id":"req_upstream_secret_id"})
}

pub fn sse(frames: Vec<String>, end: End) -> Reply {
    Reply::Sse {
        chunks: frames.into_iter().map(Bytes::from).collect(),
        delay: Duration::ZERO,
        end,
    }
}

/// What the scripted upstream answers to every successful `count_tokens` request.
pub const COUNT_TOKENS: u64 = 42;

/// The default script, chosen by the upstream model name (`count_tokens` requests: the same
/// `error-<status>` failures, else [`COUNT_TOKENS`]):
/// `text` (echoes nothing, says hello), `tool` (a `get_weather` call split at awkward points),
/// `error-<status>`, `midstream` (reset after the first delta), `no-stop` (ends without
/// `message_stop`), `stream-error` (an `overloaded_error` frame mid-stream).
pub fn by_model(req: &Recorded) -> Reply {
    let model = req.model();
    let stream = req.stream();
    if model.starts_with("loop") {
        return super::tool_user::anthropic(&req.json());
    }
    let counting = req.path.ends_with("/count_tokens");
    if let Some(status) = model
        .strip_prefix("error-")
        .and_then(|s| s.parse::<u16>().ok())
    {
        let kind = match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        return Reply::Json(
            status,
            error_body(kind, &format!("scripted upstream {status}")),
            vec![],
        );
    }
    if counting {
        return Reply::Json(200, json!({"input_tokens": COUNT_TOKENS}), vec![]);
    }
    // Fragments that split keys, strings and escapes at awkward points.
    let tool_fragments = [
        "{\"ci",
        "ty\": \"Ly",
        "on\", \"unit",
        "\": \"c\\u00e9lsius\", \"days\"",
        ": [1, ",
        "2]}",
    ];
    match (model.as_str(), stream) {
        ("tool", true) => sse(
            tool_stream(&model, "get_weather", &tool_fragments),
            End::Close,
        ),
        ("tool", false) => Reply::Json(
            200,
            tool_message(
                &model,
                "get_weather",
                json!({"city":"Lyon","unit":"c\u{e9}lsius","days":[1,2]}),
            ),
            vec![],
        ),
        ("midstream", true) => {
            let mut f = text_stream(&model, &["Hello", " world"]);
            f.truncate(4);
            // Paced, so the frames before the reset are flushed, as on a real connection.
            Reply::Sse {
                chunks: f.into_iter().map(Bytes::from).collect(),
                delay: Duration::from_millis(20),
                end: End::Reset,
            }
        }
        ("no-stop", true) => {
            let mut f = text_stream(&model, &["Hello"]);
            f.pop();
            sse(f, End::Close)
        }
        ("stream-error", true) => {
            let mut f = text_stream(&model, &["Hello"]);
            f.truncate(4);
            f.push(frame(
                "error",
                &error_body("overloaded_error", "Overloaded"),
            ));
            sse(f, End::Close)
        }
        (_, true) => sse(
            text_stream(&model, &["Hello", " from", " upstream"]),
            End::Close,
        ),
        (_, false) => Reply::Json(200, text_message(&model, "Hello from upstream"), vec![]),
    }
}
