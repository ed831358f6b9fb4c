//! Anthropic-native upstreams: bodies, headers and streams pass through faithfully.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::common::upstream::{self, End, MockUpstream, Recorded, Reply, Script};
use crate::common::*;

#[actix_web::test]
async fn non_stream_body_and_headers_pass_through() {
    let up = MockUpstream::anthropic();
    let gw = TestGateway::start(&base_config(&up.url));
    // Untouched fields keep their bytes and order; extensions are removed; model is rewritten.
    let body = r#"{"model":"up-text","max_tokens":64,"session_id":"s-1","messages":[{"role":"user","content":"h\u00e9llo"}],"metadata":{"user_id":"{\"a\": 1}"},"temperature":0.50}"#;
    let res = post_raw(
        &gw.url,
        "/v1/messages?beta=true",
        &[
            ("authorization", "Bearer sk-test-key"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "beta-one,beta-two"),
            ("anthropic-beta", "beta-three"),
            ("x-stainless-lang", "python"),
            ("anthropic-dangerous-direct-browser-access", "true"),
        ],
        body,
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        upstream::text_message("text", "Hello from upstream")
    );
    assert_eq!(res.header("content-type"), Some("application/json"));
    let rid = res.header("request-id").unwrap();
    assert!(rid.starts_with("req_") && rid.len() == 30, "{rid}");
    assert!(
        res.header("anthropic-organization-id").is_none(),
        "upstream headers are not forwarded"
    );

    let got = up.last();
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(got.query, "beta=true");
    assert_eq!(got.header("x-api-key"), Some(UPSTREAM_SECRET));
    assert_eq!(
        got.header("authorization"),
        None,
        "the client's key is never forwarded"
    );
    assert_eq!(got.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        got.header("anthropic-beta"),
        Some("beta-one,beta-two,beta-three")
    );
    assert_eq!(got.header("x-stainless-lang"), None);
    assert_eq!(
        got.header("anthropic-dangerous-direct-browser-access"),
        None
    );
    assert_eq!(
        std::str::from_utf8(&got.body).unwrap(),
        r#"{"model":"text","max_tokens":64,"messages":[{"role":"user","content":"h\u00e9llo"}],"metadata":{"user_id":"{\"a\": 1}"},"temperature":0.50}"#
    );
    gw.stop().await;
    up.stop().await;
}

/// For a scripted upstream stream, the client receives the same events in the same order with
/// the same payloads, however the upstream's bytes are split.
#[actix_web::test]
async fn stream_events_pass_through_unchanged_at_any_split() {
    let frames = upstream::tool_stream("tool", "get_weather", &["{\"ci", "ty\": \"Ly", "on\"}"]);
    let whole: String = frames.concat();
    for split in [1usize, 7, 64, whole.len()] {
        let bytes = Bytes::from(whole.clone());
        let chunks: Vec<Bytes> = (0..bytes.len())
            .step_by(split)
            .map(|i| bytes.slice(i..(i + split).min(bytes.len())))
            .collect();
        let up = MockUpstream::start(Arc::new(move |_| Reply::Sse {
            chunks: chunks.clone(),
            delay: Duration::ZERO,
            end: End::Close,
        }));
        let gw = TestGateway::start(&base_config(&up.url));
        let res = post(&gw.url, &request("up-tool", true)).await;
        assert_eq!(res.status, 200);
        assert_eq!(
            res.header("content-type"),
            Some("text/event-stream; charset=utf-8")
        );
        assert_eq!(res.header("cache-control"), Some("no-cache"));
        let expected: Vec<(String, Value)> = frames
            .iter()
            .map(|f| {
                let mut lines = f.lines();
                let name = lines
                    .next()
                    .unwrap()
                    .trim_start_matches("event: ")
                    .to_string();
                let data = serde_json::from_str(lines.next().unwrap().trim_start_matches("data: "))
                    .unwrap();
                (name, data)
            })
            .collect();
        assert_eq!(res.events(), expected, "split {split}");
        assert_stream_grammar(&res.events());
        gw.stop().await;
        up.stop().await;
    }
}

#[actix_web::test]
async fn upstream_frames_without_event_lines_are_reframed() {
    let frames: Vec<String> = upstream::text_stream("t", &["Hi"])
        .iter()
        .map(|f| {
            f.lines()
                .filter(|l| l.starts_with("data:"))
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n\r\n"
        })
        .collect();
    let up = MockUpstream::start(Arc::new(move |_| upstream::sse(frames.clone(), End::Close)));
    let gw = TestGateway::start(&base_config(&up.url));
    let res = post(&gw.url, &request("up-text", true)).await;
    let names = assert_stream_grammar(&res.events());
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert!(std::str::from_utf8(&res.body)
        .unwrap()
        .starts_with("event: message_start\ndata: {"));
    gw.stop().await;
    up.stop().await;
}

#[actix_web::test]
async fn upstream_failure_mid_stream_is_an_error_frame_last() {
    let up = MockUpstream::anthropic();
    let gw = TestGateway::start(&base_config(&up.url));
    for model in ["up-midstream", "up-no-stop"] {
        let res = post(&gw.url, &request(model, true)).await;
        assert_eq!(res.status, 200);
        let events = res.events();
        let (name, data) = events.last().unwrap();
        assert_eq!(name, "error", "{model}: {events:?}");
        assert_eq!(data["error"]["type"], "api_error");
        assert_eq!(data["request_id"].as_str(), res.header("request-id"));
        assert!(!events.iter().any(|(n, _)| n == "message_stop"));
    }
    // An upstream error frame keeps its type and ends the stream.
    let res = post(&gw.url, &request("up-stream-error", true)).await;
    let events = res.events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "overloaded_error");
    gw.stop().await;
    up.stop().await;
}

#[actix_web::test]
async fn upstream_http_errors_become_envelopes() {
    let up = MockUpstream::anthropic();
    let gw = TestGateway::start(&base_config(&up.url));
    for stream in [false, true] {
        let v = post(&gw.url, &request("up-error-400", stream))
            .await
            .assert_error(400, "invalid_request_error");
        assert_eq!(v["error"]["message"], "upstream: scripted upstream 400");
        let res = post(&gw.url, &request("up-error-500", stream)).await;
        let v = res.assert_error(502, "api_error");
        assert_eq!(
            v["error"]["message"],
            "all 3 upstream attempts failed; last: 500 from up/error-500"
        );
        assert_eq!(res.header("x-should-retry"), Some("true"));
        post(&gw.url, &request("up-error-529", stream))
            .await
            .assert_error(502, "api_error");
        let res = post(&gw.url, &request("up-error-404", stream)).await;
        res.assert_error(502, "api_error");
        assert_eq!(res.header("x-should-retry"), Some("false"));
    }
    // Nothing of the upstream's own identity leaks.
    let res = post(&gw.url, &request("up-error-500", false)).await;
    assert!(!String::from_utf8_lossy(&res.body).contains("req_upstream_secret_id"));
    gw.stop().await;
    up.stop().await;
}

/// Behind an upstream that answers with `script`, an `up-text` request (streamed or not) is a 502.
async fn assert_upstream_failure(script: Script, stream: bool) {
    let up = MockUpstream::start(script);
    let gw = TestGateway::start(&base_config(&up.url));
    post(&gw.url, &request("up-text", stream))
        .await
        .assert_error(502, "api_error");
    gw.stop().await;
    up.stop().await;
}

#[actix_web::test]
async fn wrong_content_type_for_a_stream_is_an_upstream_failure() {
    let json =
        Arc::new(|r: &Recorded| Reply::Json(200, upstream::text_message(&r.model(), "x"), vec![]));
    assert_upstream_failure(json, true).await;
}

#[actix_web::test]
async fn invalid_json_from_upstream_is_an_upstream_failure() {
    let not_json = Arc::new(|_: &Recorded| {
        Reply::Raw(200, "application/json", Bytes::from_static(b"{not json"))
    });
    assert_upstream_failure(not_json, false).await;
}

/// A client that goes away mid-stream makes the gateway drop its upstream request.
#[actix_web::test]
async fn client_disconnect_drops_the_upstream_stream() {
    let up = MockUpstream::start(Arc::new(|r| {
        let mut frames = upstream::text_stream(&r.model(), &["Hello"]);
        frames.truncate(3);
        upstream::sse(frames, End::Hang)
    }));
    let gw = TestGateway::start(&base_config(&up.url));
    let sock = raw_request(
        &gw.url,
        &request("up-text", true),
        Some("event: message_start"),
    )
    .await;
    drop(sock);
    up.wait_dropped(1).await;
    gw.stop().await;
    up.stop().await;
}

#[actix_web::test]
async fn client_disconnect_before_the_first_byte_drops_the_upstream_request() {
    let up = MockUpstream::start(Arc::new(|_| upstream::sse(vec![], End::Hang)));
    let gw = TestGateway::start(&base_config(&up.url));
    let sock = raw_request(&gw.url, &request("up-text", true), None).await;
    up.wait_requests(1).await;
    drop(sock);
    up.wait_dropped(1).await;
    gw.stop().await;
    up.stop().await;
}

/// POSTs `body` with the test key and this `anthropic-version`.
async fn post_version(url: &str, version: &str, body: &Value) -> Response {
    post_with(
        url,
        &[("x-api-key", KEY), ("anthropic-version", version)],
        body,
    )
    .await
}

#[actix_web::test]
async fn anthropic_version_is_forwarded_and_checked() {
    let up = MockUpstream::anthropic();
    let gw = TestGateway::start(&base_config(&up.url));
    let mut body = request("up-text", false);
    let res = post_version(&gw.url, "2026-10-21", &body).await;
    assert_eq!(res.status, 200);
    assert_eq!(up.last().header("anthropic-version"), Some("2026-10-21"));
    // Missing: the default.
    post(&gw.url, &body).await;
    assert_eq!(up.last().header("anthropic-version"), Some("2023-06-01"));
    let res = post_version(&gw.url, "2024-01-01", &body).await;
    let v = res.assert_error(400, "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "anthropic-version: unsupported value \"2024-01-01\""
    );
    // 2026-10-21 refuses sampling parameters before routing.
    body["temperature"] = json!(1.0);
    let before = up.count();
    let res = post_version(&gw.url, "2026-10-21", &body).await;
    let v = res.assert_error(400, "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "temperature: Extra inputs are not permitted"
    );
    assert_eq!(up.count(), before);
    gw.stop().await;
    up.stop().await;
}
