//! A half-open breaker probe cannot leak (issue 10): a probe dropped without a verdict (its
//! session cancelled, the advisor's nested call dropped with it) frees the probe slot, and the
//! deployment serves again after its cooldown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::common::upstream::{
    by_model, error_body, sse, text_message, text_stream, End, MockUpstream, Recorded, Reply,
};
use aigw::routing::CircuitState;

use crate::common::{client, post, single_key_config, tool_user, TestGateway, KEY};

fn config(upstream: &str) -> String {
    single_key_config(
        upstream,
        r#"
[retry]
max_retries = 0

[circuit_breaker]
consecutive_failures = 1
cooldown_secs = 1

"#,
        "",
    ) + r#"
[[models]]
id = "flaky"
deployments = [{ provider = "up", model = "flaky" }]

[[models]]
id = "loop-advisor"
deployments = [{ provider = "up", model = "loop-advisor" }]

[tools.advisor]
default_model = "flaky"
"#
}

/// `flaky`: a 500 (the circuit opens), then a hang (the probe in flight), then healthy.
fn script(calls: Arc<AtomicUsize>) -> impl Fn(&Recorded) -> Reply + Send + Sync {
    move |req: &Recorded| {
        if req.model() != "flaky" {
            return match req.model().as_str() {
                "loop-advisor" => tool_user::anthropic(&req.json()),
                _ => by_model(req),
            };
        }
        match calls.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::Json(500, error_body("api_error", "scripted 500"), vec![]),
            1 => Reply::Hang,
            _ if req.stream() => sse(text_stream("flaky", &["recovered"]), End::Close),
            _ => Reply::Json(200, text_message("flaky", "recovered"), vec![]),
        }
    }
}

/// Opens `flaky`'s circuit and waits out its cooldown: the next request is the probe.
async fn open_then_cool_down(gw: &TestGateway) {
    let res = post(
        &gw.url,
        &json!({"model":"flaky","max_tokens":16,
        "messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(res.status, 502, "{:?}", res.json());
    assert_eq!(gw.circuit("flaky", 0), CircuitState::Open);
    // The cooldown is the mechanism under test; nothing else to wait on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(gw.circuit("flaky", 0), CircuitState::HalfOpen);
}

/// The slot is free (no probe in flight) and the deployment serves, closing its circuit.
async fn usable_again(gw: &TestGateway) {
    let breaker = &gw.state.models.resolve("flaky").unwrap().deployments[0].breaker;
    assert_eq!(
        breaker.available(Instant::now()),
        Ok(()),
        "the probe leaked"
    );
    let res = post(
        &gw.url,
        &json!({"model":"flaky","max_tokens":16,
        "messages":[{"role":"user","content":"hi"}]}),
    )
    .await;
    assert_eq!(res.status, 200, "{:?}", res.json());
    assert_eq!(gw.circuit("flaky", 0), CircuitState::Closed);
}

/// Streams `body` until the upstream has seen `requests` requests, then hangs up.
async fn hang_up_after(
    gw: &TestGateway,
    upstream: &MockUpstream,
    body: serde_json::Value,
    requests: usize,
) {
    let mut res = client()
        .post(format!("{}/v1/messages", gw.url))
        .insert_header(("x-api-key", KEY))
        .send_json(&body)
        .await
        .expect("the stream opens");
    assert_eq!(res.status(), 200);
    let reading = async {
        while let Some(chunk) = res.next().await {
            chunk.expect("the stream reads");
        }
        panic!("the stream ended before the probe was in flight");
    };
    tokio::select! {
        _ = reading => {}
        _ = upstream.wait_requests(requests) => {}
    }
    drop(res);
    // The probe's upstream request is dropped with its session.
    upstream.wait_dropped(1).await;
}

#[actix_web::test]
async fn a_cancelled_session_frees_its_probe() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = MockUpstream::start(Arc::new(script(calls.clone())));
    let gw = TestGateway::start(&config(&upstream.url));
    open_then_cool_down(&gw).await;
    // The probe is a stream whose upstream never answers; the client leaves during it. The head
    // waits for the first upstream event, so hang up from another task once the probe is sent.
    let body = json!({"model":"flaky","max_tokens":16,"stream":true,
        "messages":[{"role":"user","content":"hi"}]});
    let request = client()
        .post(format!("{}/v1/messages", gw.url))
        .insert_header(("x-api-key", KEY))
        .send_json(&body);
    tokio::select! {
        _ = request => panic!("the probe was answered"),
        _ = upstream.wait_requests(2) => {}
    }
    upstream.wait_dropped(1).await;
    usable_again(&gw).await;
    gw.stop().await;
    upstream.stop().await;
}

#[actix_web::test]
async fn an_advisor_call_dropped_with_its_session_frees_its_probe() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = MockUpstream::start(Arc::new(script(calls.clone())));
    let gw = TestGateway::start(&config(&upstream.url));
    open_then_cool_down(&gw).await;
    // Round 1 streams "Using tools." and calls the advisor, whose nested call is the probe.
    let body = json!({"model":"loop-advisor","max_tokens":256,"stream":true,
        "tools":[{"type":"gateway:advisor"}],
        "messages":[{"role":"user","content":"Go."}]});
    hang_up_after(&gw, &upstream, body, 3).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the advisor's call was the probe"
    );
    usable_again(&gw).await;
    gw.stop().await;
    upstream.stop().await;
}
