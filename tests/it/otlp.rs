//! OpenTelemetry export: an in-process OTLP/HTTP collector (protobuf decoded with the
//! `opentelemetry-proto` types) receives the spans of a scripted mix of requests. The exporter
//! is process-wide, and nextest runs each test in a process of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

use crate::common::upstream::MockUpstream;
use crate::common::*;

const COLLECTOR_TOKEN: &str = "otlp-token-58be1";
const PROMPT: &str = "prompt-content-marker-77ad";

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    service_names: Vec<String>,
    tokens: Vec<String>,
}

struct Collector {
    url: String,
    received: Arc<Mutex<Received>>,
    handle: actix_web::dev::ServerHandle,
}

impl Collector {
    fn start() -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let data = web::Data::new(received.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .route("/v1/traces", web::post().to(traces))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url,
            received,
            handle,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }
}

async fn traces(
    req: HttpRequest,
    body: web::Bytes,
    received: web::Data<Arc<Mutex<Received>>>,
) -> HttpResponse {
    let export = match req.headers().get("content-type").unwrap().to_str().unwrap() {
        "application/x-protobuf" => ExportTraceServiceRequest::decode(body).expect("OTLP protobuf"),
        "application/json" => serde_json::from_slice(&body).expect("OTLP JSON"),
        other => panic!("content type {other}"),
    };
    let mut r = received.lock().unwrap();
    if let Some(t) = req.headers().get("x-collector-token") {
        r.tokens.push(t.to_str().unwrap().to_string());
    }
    for rs in export.resource_spans {
        for a in rs.resource.iter().flat_map(|r| &r.attributes) {
            if a.key == "service.name" {
                r.service_names.push(value(a.value.as_ref()));
            }
        }
        for ss in rs.scope_spans {
            r.spans.extend(ss.spans);
        }
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| value(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    }
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|a| (a.key.clone(), value(a.value.as_ref())))
        .collect()
}

fn children<'a>(spans: &'a [Span], parent: &Span, name: &str) -> Vec<&'a Span> {
    let mut v: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.name == name)
        .collect();
    v.sort_by_key(|s| s.start_time_unix_nano);
    v
}

/// Spans named `name` anywhere under `root`.
fn descendants<'a>(spans: &'a [Span], root: &Span, name: &str) -> Vec<&'a Span> {
    let mut out = Vec::new();
    let mut frontier = vec![root.span_id.clone()];
    while let Some(id) = frontier.pop() {
        for s in spans.iter().filter(|s| s.parent_span_id == id) {
            if s.name == name {
                out.push(s);
            }
            frontier.push(s.span_id.clone());
        }
    }
    out
}

/// The traceparent parts: (trace id, span id).
fn parse_traceparent(tp: &str) -> (String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string())
}

#[actix_web::test]
async fn spans_of_a_mix_reach_the_collector_as_one_tree_per_request() {
    let collector = Collector::start();
    let upstream = MockUpstream::anthropic();
    let text = format!(
        r#"{base}
[[models]]
id = "fallback"
deployments = [{{ provider = "up", model = "error-401" }}, {{ provider = "up", model = "text", weight = 0 }}]

[observability.otlp]
endpoint = "{collector}"
protocol = "http/protobuf"
headers_env = {{ "x-collector-token" = "AIGW_TEST_OTLP_TOKEN" }}
service_name = "aigw-under-test"
sample_ratio = 1.0
"#,
        base = base_config(&upstream.url),
        collector = collector.url,
    );
    let config = aigw::Config::from_toml_with_env(&text, &|var| match var {
        "UPSTREAM_KEY" => Some(UPSTREAM_SECRET.to_string()),
        "AIGW_TEST_OTLP_TOKEN" => Some(COLLECTOR_TOKEN.to_string()),
        _ => None,
    })
    .unwrap();
    let guard = aigw::telemetry::init_with_export(&config).unwrap();
    // The process keeps logging for the rest of the test run.
    std::mem::forget(guard);
    let gw = TestGateway::start_config(config);

    let ask = |model: &str, stream: bool| {
        json!({"model": model, "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}]})
    };
    let incoming_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming_parent = "00f067aa0ba902b7";
    let incoming = format!("00-{incoming_trace}-{incoming_parent}-01");
    let mut cases = Vec::new();
    for (name, body, headers) in [
        (
            "json",
            ask("up-text", false),
            vec![("x-session-id", "sess-1")],
        ),
        ("stream", ask("up-text", true), vec![]),
        ("fallback", ask("fallback", false), vec![]),
        (
            "tool_loop",
            json!({"model": "up-loop", "max_tokens": 256, "tools": [{"type": "gateway:datetime"}],
                "messages": [{"role": "user", "content": PROMPT}]}),
            vec![],
        ),
        (
            "incoming",
            ask("up-text", false),
            vec![("traceparent", incoming.as_str())],
        ),
    ] {
        let mut h = vec![("x-api-key", KEY)];
        h.extend(headers);
        let res = post_with(&gw.url, &h, &body).await;
        assert_eq!(
            res.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&res.body)
        );
        let tp = res
            .header("traceparent")
            .expect("traceparent on the response");
        let request_id = res.header("request-id").unwrap().to_string();
        cases.push((name, parse_traceparent(tp), request_id));
    }

    // Every request's server span, and its children, arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = collector.spans();
        let servers = spans.iter().filter(|s| s.name.starts_with("chat")).count();
        let attempts = spans.iter().filter(|s| s.name == "attempt").count();
        let tools = spans.iter().filter(|s| s.name == "tool").count();
        // json, stream, incoming: 1 attempt each; fallback: 2; tool loop: 2 rounds.
        if servers >= 5 && attempts >= 7 && tools >= 1 {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans so far: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    let upstream_traceparents: Vec<(String, String)> = upstream
        .requests()
        .iter()
        .map(|r| parse_traceparent(r.header("traceparent").expect("traceparent upstream")))
        .collect();

    for (name, (trace_id, span_id), request_id) in &cases {
        let server = spans
            .iter()
            .find(|s| hex::encode(&s.span_id) == *span_id)
            .unwrap_or_else(|| panic!("{name}: the server span of the response's traceparent"));
        assert_eq!(hex::encode(&server.trace_id), *trace_id, "{name}");
        assert_eq!(server.kind, SpanKind::Server as i32, "{name}");
        let a = attrs(server);
        assert_eq!(a["gen_ai.operation.name"], "chat", "{name}");
        assert_eq!(a["gen_ai.provider.name"], "anthropic", "{name}");
        assert_eq!(
            a["gen_ai.request.max_tokens"],
            if *name == "tool_loop" { "256" } else { "64" }
        );
        assert!(
            a["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0,
            "{name}: {a:?}"
        );
        assert!(
            a["gen_ai.usage.output_tokens"].parse::<u64>().unwrap() > 0,
            "{name}: {a:?}"
        );
        assert_eq!(
            a["gen_ai.response.finish_reasons"], "end_turn",
            "{name}: {a:?}"
        );
        assert!(a.contains_key("gen_ai.response.model"), "{name}: {a:?}");
        assert!(a.contains_key("aigw.overhead_ms"), "{name}: {a:?}");
        assert!(
            a.contains_key("aigw.usage.cache_read_input_tokens"),
            "{name}"
        );
        assert_eq!(a["aigw.key_name"], "test", "{name}");
        assert_eq!(a["aigw.request_id"], *request_id, "{name}");
        assert_eq!(a["http.response.status_code"], "200", "{name}");
        let model = match *name {
            "fallback" => "fallback",
            "tool_loop" => "up-loop",
            _ => "up-text",
        };
        assert_eq!(a["gen_ai.request.model"], model, "{name}");
        assert_eq!(server.name, format!("chat {model}"), "{name}");

        let request = children(&spans, server, "request");
        assert_eq!(
            request.len(),
            1,
            "{name}: one request span under the server span"
        );
        let attempts = children(&spans, request[0], "attempt");
        for at in &attempts {
            assert_eq!(at.trace_id, server.trace_id, "{name}");
            assert_eq!(at.kind, SpanKind::Client as i32, "{name}");
            let failed = attrs(at)["class"] != "success";
            let code = at.status.as_ref().map_or(0, |s| s.code);
            assert_eq!(
                code == 2,
                failed,
                "{name}: a failed attempt is an error span"
            );
            let sid = hex::encode(&at.span_id);
            assert!(
                upstream_traceparents
                    .iter()
                    .any(|(t, s)| *t == *trace_id && *s == sid),
                "{name}: the upstream request carries its attempt's traceparent"
            );
        }
        let summary: Vec<(String, String, String)> = attempts
            .iter()
            .map(|s| {
                let a = attrs(s);
                (a["round"].clone(), a["attempt"].clone(), a["class"].clone())
            })
            .collect();
        match *name {
            "json" => {
                assert_eq!(a["aigw.session_id"], "sess-1");
                assert_eq!(summary, [("1".into(), "1".into(), "success".into())]);
            }
            "fallback" => {
                assert_eq!(
                    summary,
                    [
                        ("1".into(), "1".into(), "deployment_fault".into()),
                        ("1".into(), "2".into(), "success".into())
                    ]
                );
                assert_eq!(attrs(attempts[0])["status"], "401");
                assert_eq!(attrs(attempts[0])["deployment"], "up/error-401");
            }
            "tool_loop" => {
                let rounds: Vec<&str> = summary.iter().map(|s| s.0.as_str()).collect();
                assert_eq!(rounds, ["1", "2"], "the loop's rounds are visible");
                // A tool call runs within the round that asked for it.
                let tools = descendants(&spans, request[0], "tool");
                assert_eq!(tools.len(), 1);
                assert_eq!(
                    tools[0].parent_span_id, attempts[0].span_id,
                    "the tool call runs in the round-1 attempt that asked for it"
                );
                let t = attrs(tools[0]);
                assert_eq!(t["tool"], "datetime");
                assert!(t.contains_key("outcome"), "{t:?}");
            }
            "incoming" => {
                assert_eq!(trace_id, incoming_trace);
                assert_eq!(hex::encode(&server.parent_span_id), incoming_parent);
            }
            _ => assert_eq!(summary.len(), 1, "{name}"),
        }
        if *name != "incoming" {
            assert!(server.parent_span_id.is_empty(), "{name}: a root span");
        }
    }

    // Nothing secret and no content, anywhere in what was exported.
    let everything = format!("{spans:?}");
    for secret in [UPSTREAM_SECRET, KEY, COLLECTOR_TOKEN, PROMPT, "mock reply"] {
        assert!(!everything.contains(secret), "{secret} was exported");
    }
    {
        let r = collector.received.lock().unwrap();
        assert!(r.tokens.iter().all(|t| t == COLLECTOR_TOKEN) && !r.tokens.is_empty());
        assert!(r.service_names.iter().all(|s| s == "aigw-under-test"));
    }

    // A stopped collector costs no request: they are answered, and the spans are counted as
    // dropped.
    collector.handle.stop(true).await;
    for _ in 0..10 {
        let res = post(&gw.url, &ask("up-text", false)).await;
        assert_eq!(res.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = get(&gw.url, "/metrics").await;
        let dropped = String::from_utf8_lossy(&text.body)
            .lines()
            .find_map(|l| l.strip_prefix("gateway_otlp_dropped_spans_total "))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .expect("the dropped-spans counter");
        if dropped > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no span counted as dropped");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    upstream.stop().await;
}

/// The binary with `http/json` export and JSON logs: the request's log line carries the trace
/// and span ids of its spans, which reach the collector.
#[actix_web::test]
async fn the_binary_exports_json_and_its_json_logs_carry_the_trace() {
    use crate::reload::{key, Binary, KEY_A};
    let collector = Collector::start();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[observability]
log_format = "json"

[observability.otlp]
endpoint = "{}"
protocol = "http/json"

[request_log]
enabled = false

{}

[[providers]]
name = "mock"
kind = "mock"

[[models]]
id = "m"
deployments = [{{ provider = "mock", model = "x" }}]
"#,
        collector.url,
        key("a", KEY_A, ""),
    );
    let gw = Binary::start("otlp-json", &config).await;
    let res = post_as(
        &gw.url,
        KEY_A,
        &json!({"model": "m", "max_tokens": 16,
        "messages": [{"role": "user", "content": PROMPT}]}),
    )
    .await;
    assert_eq!(res.status, 200);
    let (trace_id, server_id) = parse_traceparent(res.header("traceparent").unwrap());
    let request_id = res.header("request-id").unwrap();
    let line = gw
        .log_line(&format!("\"request_id\":\"{request_id}\""))
        .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["trace_id"], trace_id.as_str(), "{line}");
    assert!(
        v["span_id"].as_str().is_some_and(|s| s.len() == 16),
        "{line}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = collector.spans();
        if let Some(server) = spans.iter().find(|s| hex::encode(&s.span_id) == server_id) {
            assert_eq!(hex::encode(&server.trace_id), trace_id);
            assert_eq!(attrs(server)["aigw.key_name"], "a");
            let spanned = spans
                .iter()
                .any(|s| hex::encode(&s.span_id) == v["span_id"].as_str().unwrap());
            assert!(spanned, "the log line's span is exported");
            break;
        }
        assert!(Instant::now() < deadline, "the server span never arrived");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        collector
            .received
            .lock()
            .unwrap()
            .service_names
            .first()
            .map(String::as_str),
        Some("aigw")
    );
}
