//! Metrics, the request log, readiness and tracing spans, after scripted traffic whose outcome
//! each assertion knows.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{json, Value};

use crate::common::upstream::MockUpstream;
use crate::common::*;

/// One parsed sample line of the text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("closing brace");
                    let labels = rest
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").expect("label=\"value\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include `labels`.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(url: &str) -> Vec<Sample> {
    let res = get(url, "/metrics").await;
    assert_eq!(res.status, 200);
    assert!(res
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    parse_metrics(std::str::from_utf8(&res.body).unwrap())
}

/// Waits until the gateway has accounted for `n` requests (sessions finish after their
/// response is out, and an abandoned stream's only after the disconnect is noticed).
async fn wait_recorded(gw: &TestGateway, n: f64) {
    let wait = async {
        loop {
            let text = gw.state.metrics.render(&gw.state.models);
            let done = metric(&parse_metrics(&text), "gateway_requests_total", &[]);
            if done >= n {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("every request accounted for");
    assert_eq!(done, n, "no more requests than sent");
}

fn usage_sum(responses: &[Value], field: &str) -> f64 {
    responses
        .iter()
        .map(|r| r["usage"][field].as_u64().unwrap() as f64)
        .sum()
}

/// Scripted traffic, then every family the README lists, with values that match it.
#[actix_web::test]
async fn metrics_match_scripted_traffic() {
    let upstream = MockUpstream::anthropic();
    let gw = TestGateway::start(&base_config(&upstream.url));
    let url = &gw.url;

    let mut json_replies = Vec::new();
    for _ in 0..3 {
        let res = post(url, &request("mock-model", false)).await;
        assert_eq!(res.status, 200);
        json_replies.push(res.json());
    }
    let mut stream_usage = Vec::new();
    for _ in 0..2 {
        let res = post(url, &request("mock-alias", true)).await;
        assert_eq!(res.status, 200);
        let events = res.events();
        let start = &events[0].1["message"]["usage"];
        let delta = &events
            .iter()
            .rev()
            .find(|(n, _)| n == "message_delta")
            .unwrap()
            .1;
        stream_usage.push(json!({"usage": {
            "input_tokens": start["input_tokens"],
            "output_tokens": delta["usage"]["output_tokens"],
        }}));
    }
    post(url, &request("no-such-model", false))
        .await
        .assert_error(404, "not_found_error");
    post_raw(url, "/v1/messages", &[("x-api-key", "sk-nope")], "{}")
        .await
        .assert_error(401, "authentication_error");
    // Retried twice (max_retries = 2) on the same deployment, then 502.
    post(url, &request("up-error-500", false))
        .await
        .assert_error(502, "api_error");
    let limited = |body: Value| async move { post_as(url, "sk-limited", &body).await };
    assert_eq!(limited(request("mock-model", false)).await.status, 200);
    limited(request("mock-model", false))
        .await
        .assert_error(429, "rate_limit_error");
    wait_recorded(&gw, 10.0).await;

    let m = scrape(url).await;
    let req = |labels: &[(&str, &str)]| metric(&m, "gateway_requests_total", labels);
    let ok = [
        ("endpoint", "messages"),
        ("model", "mock-model"),
        ("provider", "mock"),
        ("key", "test"),
        ("status", "200"),
        ("error_type", ""),
    ];
    assert_eq!(req(&ok), 5.0);
    assert_eq!(req(&[("key", "limited"), ("status", "200")]), 1.0);
    assert_eq!(
        req(&[
            ("model", ""),
            ("key", "test"),
            ("status", "404"),
            ("error_type", "not_found_error")
        ]),
        1.0,
        "an unknown model is never a label value"
    );
    assert_eq!(req(&[("key", ""), ("status", "401")]), 1.0);
    assert_eq!(
        req(&[
            ("model", "up-error-500"),
            ("provider", "up"),
            ("status", "502"),
            ("error_type", "api_error")
        ]),
        1.0
    );
    assert_eq!(
        req(&[
            ("key", "limited"),
            ("status", "429"),
            ("error_type", "rate_limit_error")
        ]),
        1.0
    );
    assert_eq!(req(&[]), 10.0);
    let err = |labels: &[(&str, &str)]| metric(&m, "gateway_errors_total", labels);
    assert_eq!(err(&[]), 4.0);
    assert_eq!(
        err(&[("model", "up-error-500"), ("type", "api_error")]),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "gateway_rate_limited_total",
            &[("key", "limited"), ("limit", "requests_per_minute")]
        ),
        1.0
    );

    // Latency histograms: one observation per request, split by stream (the 429 has no first
    // byte of a body, so no time to first token).
    let hist = |name: &str, stream: &str| {
        metric(
            &m,
            &format!("{name}_count"),
            &[("model", "mock-model"), ("stream", stream)],
        )
    };
    for (name, non_stream) in [
        ("gateway_request_duration_seconds", 5.0),
        ("gateway_overhead_seconds", 5.0),
        ("gateway_ttft_seconds", 4.0),
    ] {
        assert_eq!(hist(name, "false"), non_stream, "{name}");
        assert_eq!(hist(name, "true"), 2.0, "{name}");
    }
    assert_eq!(
        metric(&m, "gateway_request_duration_seconds_count", &[]),
        10.0
    );

    // Tokens: what the responses reported.
    let tokens = |kind: &str| {
        metric(
            &m,
            "gateway_tokens_total",
            &[("model", "mock-model"), ("kind", kind)],
        )
    };
    let limited_reply = json_replies[0].clone(); // same request, same usage
    json_replies.push(limited_reply);
    json_replies.extend(stream_usage);
    assert_eq!(tokens("input"), usage_sum(&json_replies, "input_tokens"));
    assert_eq!(tokens("output"), usage_sum(&json_replies, "output_tokens"));
    assert!(tokens("input") > 0.0);

    // Attempts: 6 mock successes; 3 transient failures on up/error-500, 2 of them retries.
    let attempts = |labels: &[(&str, &str)]| metric(&m, "gateway_upstream_attempts_total", labels);
    assert_eq!(
        attempts(&[("deployment", "mock/mock-1"), ("class", "success")]),
        6.0
    );
    assert_eq!(
        attempts(&[("deployment", "up/error-500"), ("class", "transient")]),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            "gateway_upstream_duration_seconds_count",
            &[("deployment", "up/error-500"), ("outcome", "transient")]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            "gateway_retries_total",
            &[("deployment", "up/error-500")]
        ),
        2.0
    );
    assert_eq!(metric(&m, "gateway_fallbacks_total", &[]), 0.0);

    // Circuit state per deployment, read now; nothing open in this config.
    assert_eq!(
        m.iter()
            .filter(|s| s.name == "gateway_circuit_state")
            .count(),
        gw.state
            .models
            .ordered
            .iter()
            .map(|m| m.deployments.len())
            .sum::<usize>()
    );
    assert_eq!(metric(&m, "gateway_circuit_state", &[]), 0.0);
    assert_eq!(metric(&m, "gateway_request_log_dropped_total", &[]), 0.0);
    assert_eq!(metric(&m, "gateway_log_lines_dropped_total", &[]), 0.0);
    assert!(m.iter().any(|s| s.name == "gateway_active_streams"));

    // The same requests, one row each.
    let db = gw.flush_log().await;
    let rows: i64 = db
        .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 10);
    let input: i64 = db
        .query_row(
            "SELECT sum(input_tokens) FROM requests WHERE model = 'mock-model'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(input as f64, tokens("input"));
    upstream.stop().await;
}

/// Fallback from a failing deployment to a healthy one, and an open circuit, as metrics.
#[actix_web::test]
async fn fallbacks_and_circuit_state() {
    let upstream = MockUpstream::anthropic();
    let config = base_config(&upstream.url)
        .replace("consecutive_failures = 1000", "consecutive_failures = 1")
        + r#"
[[models]]
id = "falls-back"
deployments = [{ provider = "up", model = "error-529" }, { provider = "mock", model = "mock-2", weight = 0 }]
"#;
    let mut config = parse_config(&config);
    config.retry.max_retries = 0;
    let gw = TestGateway::start_config(config);
    let res = post(&gw.url, &request("falls-back", false)).await;
    assert_eq!(res.status, 200);
    wait_recorded(&gw, 1.0).await;
    let m = scrape(&gw.url).await;
    assert_eq!(
        metric(
            &m,
            "gateway_fallbacks_total",
            &[("deployment", "mock/mock-2")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "gateway_circuit_state",
            &[("model", "falls-back"), ("deployment", "up/error-529")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "gateway_circuit_state",
            &[("model", "falls-back"), ("deployment", "mock/mock-2")]
        ),
        0.0
    );
    assert_eq!(
        metric(
            &m,
            "gateway_requests_total",
            &[
                ("model", "falls-back"),
                ("provider", "mock"),
                ("status", "200")
            ]
        ),
        1.0
    );
    upstream.stop().await;
}

/// A mock that streams slowly, so a stream is still open when the test looks.
const SLOW_MOCK: &str = r#"
[[providers]]
name = "slow"
kind = "mock"
chunk_chars = 2
chunk_delay_ms = 30

[[models]]
id = "slow"
deployments = [{ provider = "slow", model = "slow-1", price = { input = 3.0, output = 15.0 } }]
"#;

#[actix_web::test]
async fn active_streams_gauge() {
    let upstream = MockUpstream::anthropic();
    let gw = TestGateway::start(&(base_config(&upstream.url) + SLOW_MOCK));
    let sock = raw_request(&gw.url, &request("slow", true), Some("content_block_delta")).await;
    let m = scrape(&gw.url).await;
    assert_eq!(metric(&m, "gateway_active_streams", &[]), 1.0);
    drop(sock);
    // The gauge falls when the response body is dropped, just after the disconnect.
    let wait = async {
        loop {
            let m = parse_metrics(&gw.state.metrics.render(&gw.state.models));
            if metric(&m, "gateway_active_streams", &[]) == 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the stream is no longer counted");
    wait_recorded(&gw, 1.0).await;
    let m = scrape(&gw.url).await;
    assert_eq!(
        metric(
            &m,
            "gateway_errors_total",
            &[("model", "slow"), ("type", "client_closed")]
        ),
        1.0
    );
    upstream.stop().await;
}

/// A burst of mixed requests — successes, refusals, upstream failures, broken streams, streams
/// the client abandoned — leaves exactly one row per request, matching the responses.
#[actix_web::test]
async fn request_log_has_one_row_per_request() {
    let upstream = MockUpstream::anthropic();
    let gw = TestGateway::start(&(base_config(&upstream.url) + SLOW_MOCK));
    let url = gw.url.clone();

    let mut bodies: Vec<(Value, &str)> = Vec::new();
    for i in 0..40 {
        let (body, key) = match i % 8 {
            0 | 1 => (request("mock-model", false), KEY),
            2 => (request("mock-model", true), KEY),
            3 => (request("up-text", i % 16 == 3), KEY),
            4 => (request("up-error-400", false), KEY),
            5 => (request("up-midstream", true), KEY),
            6 => (request("mock-model", false), "sk-wrong"),
            _ => (json!({"model": "mock-model", "messages": []}), KEY),
        };
        bodies.push((body, key));
    }
    let sent = bodies.len();
    let requests = bodies.into_iter().map(|(body, key)| {
        let url = url.clone();
        async move { post_as(&url, key, &body).await }
    });
    // Five abandoned streams, each dropped after its first delta.
    let abandoned = (0..5).map(|_| {
        let url = url.clone();
        async move {
            let sock = raw_request(&url, &request("slow", true), Some("content_block_delta")).await;
            drop(sock);
        }
    });
    let (responses, _) = futures_util::future::join(
        futures_util::future::join_all(requests),
        futures_util::future::join_all(abandoned),
    )
    .await;
    let total = sent + 5;
    wait_recorded(&gw, total as f64).await;

    let db = gw.flush_log().await;
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM requests"), total as i64);
    assert_eq!(
        count("SELECT count(DISTINCT request_id) FROM requests"),
        total as i64
    );
    // Every response's request-id has its row, with the status the client saw.
    for res in &responses {
        let id = res.header("request-id").expect("request-id");
        let status: i64 = db
            .query_row(
                "SELECT status FROM requests WHERE request_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("no row for {id}: {e}"));
        assert_eq!(status, res.status as i64, "{id}");
    }
    let by_status = |status: i64, error: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM requests WHERE status = ?1 AND coalesce(error_type, '') = ?2",
            rusqlite::params![status, error],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(by_status(200, ""), 20);
    assert_eq!(by_status(400, "invalid_request_error"), 10);
    assert_eq!(by_status(401, "authentication_error"), 5);
    assert_eq!(by_status(200, "api_error"), 5, "midstream failures");
    assert_eq!(by_status(499, "client_closed"), 5);
    assert_eq!(
        count("SELECT count(*) FROM requests WHERE key_name IS NULL"),
        5
    );

    // The metrics agree with the log.
    let m = parse_metrics(&gw.state.metrics.render(&gw.state.models));
    assert_eq!(
        metric(&m, "gateway_requests_total", &[("status", "499")]),
        5.0
    );
    assert_eq!(metric(&m, "gateway_request_log_dropped_total", &[]), 0.0);
    upstream.stop().await;
}

/// What a row holds for one request, bodies included when configured.
#[actix_web::test]
async fn request_log_row_contents() {
    let upstream = MockUpstream::anthropic();
    let mut config = parse_config(&(base_config(&upstream.url) + SLOW_MOCK));
    config.request_log.log_bodies = true;
    let gw = TestGateway::start_config(config);
    let mut body = request("slow", false);
    body["session_id"] = json!("sess-1");
    body["metadata"] = json!({"user_id": "user-7"});
    body["messages"] = json!([{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "text", "text": "Hello there"}
    ]}]);
    let res = post(&gw.url, &body).await;
    assert_eq!(res.status, 200);
    let reply = res.json();
    let id = res.header("request-id").unwrap().to_string();
    post(&gw.url, &request("no-such-model", true))
        .await
        .assert_error(404, "not_found_error");
    wait_recorded(&gw, 2.0).await;

    let db = gw.flush_log().await;
    let row = |sql: &str| -> Value {
        db.query_row(sql, [&id], |r| {
            let n = r.as_ref().column_count();
            let mut o = serde_json::Map::new();
            for i in 0..n {
                let name = r.as_ref().column_name(i).unwrap().to_string();
                let v = match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(x) => json!(x),
                    rusqlite::types::ValueRef::Real(x) => json!(x),
                    rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    rusqlite::types::ValueRef::Blob(_) => json!("blob"),
                };
                o.insert(name, v);
            }
            Ok(Value::Object(o))
        })
        .unwrap()
    };
    let r = row("SELECT * FROM requests WHERE request_id = ?1");
    let u = &reply["usage"];
    for (col, want) in [
        ("endpoint", json!("messages")),
        ("key_name", json!("test")),
        ("session_id", json!("sess-1")),
        ("user_id", json!("user-7")),
        ("model", json!("slow")),
        ("deployment", json!("slow/slow-1")),
        ("provider", json!("slow")),
        ("upstream_model", json!("slow-1")),
        ("stream", json!(0)),
        ("status", json!(200)),
        ("error_type", Value::Null),
        ("stop_reason", reply["stop_reason"].clone()),
        ("input_tokens", u["input_tokens"].clone()),
        ("output_tokens", u["output_tokens"].clone()),
        ("cache_read_input_tokens", json!(0)),
        ("web_search_requests", json!(0)),
        ("rounds", json!(1)),
        ("attempts", json!(1)),
    ] {
        assert_eq!(r[col], want, "{col}: {r}");
    }
    let ts = r["ts"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "{ts}"
    );
    let ms = |c: &str| r[c].as_i64().unwrap();
    assert_eq!(ms("overhead_ms"), ms("total_ms") - ms("upstream_ms"));
    assert!(ms("ttft_ms") <= ms("total_ms"));
    let cost = r["cost_usd"].as_f64().unwrap();
    let expected = (u["input_tokens"].as_f64().unwrap() * 3.0
        + u["output_tokens"].as_f64().unwrap() * 15.0)
        / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");
    // Bodies: the request with its base64 payload elided, the response as sent.
    let logged: Value = serde_json::from_str(r["request_body"].as_str().unwrap()).unwrap();
    assert_eq!(
        logged["messages"][0]["content"][0]["source"]["data"],
        "[base64, 12 bytes]"
    );
    assert_eq!(logged["session_id"], "sess-1");
    let response: Value = serde_json::from_str(r["response_body"].as_str().unwrap()).unwrap();
    assert_eq!(response, reply);

    // A refused request: what was known by then.
    let (model, key, stream, deployment): (String, String, i64, Option<String>) = db
        .query_row(
            "SELECT model, key_name, stream, deployment FROM requests WHERE status = 404",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (model.as_str(), key.as_str(), stream, deployment),
        ("no-such-model", "test", 1, None)
    );
    upstream.stop().await;
}

/// Requests refused before routing keep the session the header or a parsable body gave
/// (gateway.md §4: the body's `session_id` wins, then `x-session-id`, then
/// `x-claude-code-session-id`), so grouping by session shows the failures too.
#[actix_web::test]
async fn refused_rows_keep_their_session_id() {
    let config = base_config("http://127.0.0.1:9")
        .replace("workers = 1", "workers = 1\nmax_body_bytes = 4096");
    let gw = TestGateway::start(&config);
    let with_session = |mut body: Value, id: Value| {
        body["session_id"] = id;
        body.to_string()
    };
    let json_ct = ("content-type", "application/json");
    /// (name, key, extra headers, body, status, the row's session_id)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        String,
        u16,
        Option<&'a str>,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("broken JSON: the header", KEY, vec![("x-session-id", "h-json")],
            r#"{"model":"mock-model","session_id":"b-lost""#.into(), 400, Some("h-json")),
        ("validation error: the body wins", KEY, vec![("x-session-id", "h-400")],
            with_session(json!({"model":"mock-model","max_tokens":0,"messages":[]}), json!("b-400")), 400, Some("b-400")),
        ("invalid body session_id: the header", KEY, vec![("x-session-id", "h-bad-id")],
            with_session(request("mock-model", false), json!(5)), 400, Some("h-bad-id")),
        ("bad anthropic-version", KEY, vec![("anthropic-version", "1999-01-01")],
            with_session(request("mock-model", false), json!("b-version")), 400, Some("b-version")),
        ("unknown model", KEY, vec![],
            with_session(request("no-such-model", false), json!("b-404")), 404, Some("b-404")),
        ("model not allowed: the Claude Code header", "sk-narrow", vec![("x-claude-code-session-id", "cc-403")],
            request("up-text", false).to_string(), 403, Some("cc-403")),
        ("x-session-id before x-claude-code-session-id", "sk-narrow",
            vec![("x-session-id", "h-first"), ("x-claude-code-session-id", "cc-second")],
            request("up-text", false).to_string(), 403, Some("h-first")),
        ("too large", KEY, vec![("x-session-id", "h-413")],
            with_session(json!({"model":"mock-model","pad":"x".repeat(5000)}), json!("b-413")), 413, Some("h-413")),
        ("bad key: the body is never read", "sk-wrong", vec![("x-session-id", "h-401")],
            with_session(request("mock-model", false), json!("b-401")), 401, Some("h-401")),
        ("limited key, first request", "sk-limited", vec![],
            with_session(request("mock-model", false), json!("b-200")), 200, Some("b-200")),
        ("limited key, rate limited", "sk-limited", vec![("x-session-id", "h-429")],
            with_session(request("mock-model", false), json!("b-429")), 429, Some("b-429")),
        ("no session at all", KEY, vec![], request("no-such-model", false).to_string(), 404, None),
    ];
    let mut ids = Vec::new();
    for (name, key, extra, body, status, _) in &cases {
        let mut headers = vec![("x-api-key", *key), json_ct];
        headers.extend(extra.iter().copied());
        let res = post_raw(&gw.url, "/v1/messages", &headers, body.clone()).await;
        assert_eq!(
            res.status,
            *status,
            "{name}: {}",
            String::from_utf8_lossy(&res.body)
        );
        ids.push(res.header("request-id").expect("request-id").to_string());
    }
    // count_tokens runs the same checks.
    let res = post_raw(
        &gw.url,
        "/v1/messages/count_tokens",
        &[("x-api-key", KEY), json_ct, ("x-session-id", "h-count")],
        r#"{"model":"no-such-model","messages":[{"role":"user","content":"hi"}],"session_id":"b-count"}"#,
    )
    .await;
    assert_eq!(res.status, 404);
    let count_id = res.header("request-id").unwrap().to_string();
    wait_recorded(&gw, cases.len() as f64 + 1.0).await;
    let db = gw.flush_log().await;
    let logged: Option<String> = db
        .query_row(
            "SELECT session_id FROM requests WHERE request_id = ?1 AND endpoint = 'count_tokens'",
            [&count_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(logged.as_deref(), Some("b-count"));
    for ((name, .., status, want), id) in cases.iter().zip(&ids) {
        let (got, logged): (Option<String>, i64) = db
            .query_row(
                "SELECT session_id, status FROM requests WHERE request_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("{name}: no row for {id}: {e}"));
        assert_eq!(logged, i64::from(*status), "{name}");
        assert_eq!(got.as_deref(), *want, "{name}");
    }
    gw.stop().await;
}

/// A full queue drops rows (counted) and never fails or delays the request.
#[actix_web::test]
async fn full_queue_drops_rows_and_counts_them() {
    let upstream = MockUpstream::anthropic();
    let mut config = parse_config(&base_config(&upstream.url));
    config.request_log.queue_capacity = 1;
    config.request_log.batch_size = 1000;
    config.request_log.flush_interval_ms = 600_000;
    let gw = TestGateway::start_config(config);
    for _ in 0..4 {
        assert_eq!(
            post(&gw.url, &request("mock-model", false)).await.status,
            200
        );
    }
    wait_recorded(&gw, 4.0).await;
    let m = scrape(&gw.url).await;
    assert_eq!(metric(&m, "gateway_request_log_dropped_total", &[]), 3.0);
    let db = gw.flush_log().await;
    let rows: i64 = db
        .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    upstream.stop().await;
}

#[actix_web::test]
async fn readiness_follows_the_log_writer() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    let res = get(&gw.url, "/readyz").await;
    assert_eq!((res.status, res.json()), (200, json!({"status": "ready"})));
    gw.flush_log().await;
    let res = get(&gw.url, "/readyz").await;
    assert_eq!(
        (res.status, res.json()),
        (
            503,
            json!({"status": "not_ready", "reasons": ["request log writer is not running"]})
        )
    );
    // Health is not readiness.
    assert_eq!(get(&gw.url, "/healthz").await.status, 200);
}

#[actix_web::test]
async fn metrics_on_their_own_listener() {
    let mut config = parse_config(&base_config("http://127.0.0.1:9"));
    config.observability.metrics_listen = Some("127.0.0.1:0".into());
    let gw = TestGateway::start_config(config);
    get(&gw.url, "/metrics")
        .await
        .assert_error(404, "not_found_error");
    let metrics_url = gw.metrics_url.clone().expect("a metrics listener");
    assert!(!scrape(&metrics_url).await.is_empty());
    assert_eq!(get(&metrics_url, "/v1/models").await.status, 404);
}

#[actix_web::test]
async fn no_log_when_disabled() {
    let mut config = parse_config(&base_config("http://127.0.0.1:9"));
    config.request_log.enabled = false;
    let gw = TestGateway::start_config(config);
    assert!(gw.state.request_log.is_none());
    assert_eq!(
        post(&gw.url, &request("mock-model", false)).await.status,
        200
    );
    assert_eq!(get(&gw.url, "/readyz").await.status, 200);
    assert!(!gw.log_path.exists());
}

/// Log lines inside a request carry the `request` and `attempt` span fields.
#[actix_web::test]
async fn spans_carry_request_and_attempt_fields() {
    let upstream = MockUpstream::anthropic();
    let gw = TestGateway::start(&base_config(&upstream.url));
    let mut body = request("up-error-500", false);
    body["session_id"] = json!("span-session");
    let res = post(&gw.url, &body).await;
    let id = res.header("request-id").unwrap().to_string();
    wait_recorded(&gw, 1.0).await;
    let logs = logs();
    let line = logs
        .lines()
        .find(|l| l.contains(&id) && l.contains("upstream attempt failed"))
        .unwrap_or_else(|| panic!("no attempt log for {id}"));
    for part in [
        "request{",
        "key=test",
        "session_id=\"span-session\"",
        "model=up-error-500",
        "attempt{",
        "deployment=up/error-500",
        "upstream_model=error-500",
        "round=1",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
    upstream.stop().await;
}

/// The request log is a real SQLite file in WAL mode.
#[actix_web::test]
async fn the_log_is_sqlite_in_wal_mode() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    assert_eq!(
        post(&gw.url, &request("mock-model", false)).await.status,
        200
    );
    wait_recorded(&gw, 1.0).await;
    let db: Connection = gw.flush_log().await;
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// A burst at load-test rates (1000 requests, 64 in flight) with the default queue: nothing is
/// dropped, and the log and the metrics both count every request.
#[actix_web::test]
async fn a_burst_drops_no_row() {
    use futures_util::StreamExt;
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    let n = 1000;
    let url = gw.url.clone();
    let statuses: Vec<u16> = futures_util::stream::iter(0..n)
        .map(|i| {
            let url = url.clone();
            async move { post(&url, &request("mock-model", i % 4 == 0)).await.status }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    wait_recorded(&gw, n as f64).await;
    let m = scrape(&gw.url).await;
    assert_eq!(metric(&m, "gateway_request_log_dropped_total", &[]), 0.0);
    let db = gw.flush_log().await;
    let rows: i64 = db
        .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, n as i64);
}
