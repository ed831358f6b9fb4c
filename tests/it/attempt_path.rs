//! One attempt path for every upstream call (issue 10): the advisor's nested call and
//! `count_tokens` retry, fall back, time out and map errors exactly as a client's request does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::upstream::COUNT_TOKENS;
use crate::common::upstream::{by_model, error_body, MockUpstream, Recorded, Reply};
use crate::common::{post, post_raw, single_key_config, tool_user, Response, TestGateway, KEY};

fn config(upstream: &str) -> String {
    single_key_config(
        upstream,
        r#"
[retry]
max_retries = 1
base_delay_ms = 5
max_delay_ms = 20

[timeouts]
ttft_ms = 300

[circuit_breaker]
consecutive_failures = 1000

"#,
        "",
    ) + r#"
[[models]]
id = "loop-advisor"
deployments = [{ provider = "up", model = "loop-advisor" }]

[[models]]
id = "adv-retry"
deployments = [{ provider = "up", model = "flaky" }]

[[models]]
id = "adv-fallback"
deployments = [{ provider = "up", model = "error-404" }, { provider = "up", model = "text", weight = 0 }]

[[models]]
id = "adv-timeout"
deployments = [{ provider = "up", model = "hang" }, { provider = "up", model = "text", weight = 0 }]

[[models]]
id = "too-large"
deployments = [{ provider = "up", model = "error-413" }]

[tools.advisor]
default_model = "adv-retry"
"#
}

/// `flaky` fails once with a 503, then answers; `hang` never answers; the rest as usual.
fn script(flaky: Arc<AtomicUsize>) -> impl Fn(&Recorded) -> Reply + Send + Sync {
    move |req: &Recorded| match req.model().as_str() {
        "loop-advisor" => tool_user::anthropic(&req.json()),
        "flaky" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => {
            Reply::Json(503, error_body("api_error", "scripted 503"), vec![])
        }
        "flaky" => by_model(&req.clone_with_model("text")),
        "hang" => Reply::Hang,
        _ => by_model(req),
    }
}

/// The advisor result block of a tool-loop turn whose advisor uses `model`.
async fn advise(gw: &TestGateway, model: &str) -> Value {
    let body = json!({"model":"loop-advisor","max_tokens":256,
        "tools":[{"type":"gateway:advisor","model":model}],
        "messages":[{"role":"user","content":"Go."}]});
    let res = post(&gw.url, &body).await;
    assert_eq!(res.status, 200, "{:?}", res.json());
    let content = res.json()["content"].clone();
    content
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "advisor_tool_result")
        .unwrap_or_else(|| panic!("no advisor result in {content}"))["content"]
        .clone()
}

fn upstream_models(upstream: &MockUpstream) -> Vec<String> {
    upstream
        .requests()
        .iter()
        .map(Recorded::model)
        .filter(|m| m != "loop-advisor")
        .collect()
}

#[actix_web::test]
async fn the_advisor_call_retries_falls_back_and_times_out() {
    let flaky = Arc::new(AtomicUsize::new(0));
    let upstream = MockUpstream::start(Arc::new(script(flaky)));
    let gw = TestGateway::start(&config(&upstream.url));
    let ok = json!({"type":"advisor_result","model":"","text":"Hello from upstream"});
    let check = |got: &Value, model: &str| {
        let mut want = ok.clone();
        want["model"] = json!(model);
        assert_eq!(got["type"], want["type"], "{got}");
        assert_eq!(got["text"], want["text"], "{got}");
        assert_eq!(got["model"], want["model"], "{got}");
    };

    // A 503 is retried on the same deployment.
    check(&advise(&gw, "adv-retry").await, "adv-retry");
    assert_eq!(upstream_models(&upstream), ["flaky", "flaky"]);

    // A misconfigured deployment (404) falls back to the next one.
    check(&advise(&gw, "adv-fallback").await, "adv-fallback");
    assert_eq!(upstream_models(&upstream)[2..], ["error-404", "text"]);

    // An upstream that never answers times out at ttft_ms (not the advisor's 120 s), is retried
    // once, then the next deployment answers.
    check(&advise(&gw, "adv-timeout").await, "adv-timeout");
    assert_eq!(upstream_models(&upstream)[4..], ["hang", "hang", "text"]);
    upstream.wait_dropped(2).await;

    // The nested calls are part of their callers' requests: three rows, not nine.
    let db = gw.flush_log().await;
    let rows: i64 = db
        .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);
    gw.stop().await;
    upstream.stop().await;
}

async fn count(gw: &TestGateway, model: &str) -> Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]});
    post_raw(
        &gw.url,
        "/v1/messages/count_tokens",
        &[("x-api-key", KEY), ("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// The upstream's own count, not the local estimate.
fn assert_native(res: &Response) {
    assert_eq!(res.status, 200, "{:?}", res.json());
    assert_eq!(res.header("x-gateway-token-estimate"), None);
    assert_eq!(res.json(), json!({"input_tokens": COUNT_TOKENS}));
}

#[actix_web::test]
async fn count_tokens_retries_falls_back_and_times_out() {
    let flaky = Arc::new(AtomicUsize::new(0));
    let upstream = MockUpstream::start(Arc::new(script(flaky)));
    let gw = TestGateway::start(&config(&upstream.url));

    assert_native(&count(&gw, "adv-retry").await);
    assert_eq!(upstream_models(&upstream), ["flaky", "flaky"]);

    assert_native(&count(&gw, "adv-fallback").await);
    assert_eq!(upstream_models(&upstream)[2..], ["error-404", "text"]);

    assert_native(&count(&gw, "adv-timeout").await);
    assert_eq!(upstream_models(&upstream)[4..], ["hang", "hang", "text"]);
    upstream.wait_dropped(2).await;
    assert!(upstream
        .requests()
        .iter()
        .all(|r| r.path == "/v1/messages/count_tokens"));

    // The session's one error mapping: an upstream 413 stays 413.
    count(&gw, "too-large")
        .await
        .assert_error(413, "request_too_large");
    gw.stop().await;
    upstream.stop().await;
}
