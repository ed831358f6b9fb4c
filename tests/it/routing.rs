//! The request's `provider`/`routing` object, the `debug` object (and its redaction), and
//! per-key token limits.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::upstream::{self, MockUpstream, Recorded, Reply};
use crate::common::*;

/// Two Anthropic upstreams `pa` (pricier) and `pb` serving model `m`; keys `test` and `nodebug`.
fn two_providers(a: &str, b: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[retry]
base_delay_ms = 5
max_delay_ms = 20

[[auth.keys]]
name = "test"
secret_sha256 = "{hash}"

[[auth.keys]]
name = "nodebug"
secret_sha256 = "{nodebug}"
allow_debug = false

[[providers]]
name = "pa"
kind = "anthropic"
base_url = "{a}"
api_key_env = "UPSTREAM_KEY"

[[providers]]
name = "pb"
kind = "anthropic"
base_url = "{b}"
api_key_env = "UPSTREAM_KEY"

[[models]]
id = "m"
deployments = [
  {{ provider = "pa", model = "text", price = {{ input = 3.0, output = 15.0 }} }},
  {{ provider = "pb", model = "text", price = {{ input = 1.0, output = 2.0 }} }},
]
{extra}
"#,
        hash = key_hash(KEY),
        nodebug = key_hash("sk-nodebug"),
    )
}

fn with(mut body: Value, key: &str, v: Value) -> Value {
    body[key] = v;
    body
}

#[actix_web::test]
async fn provider_object_steers_the_choice() {
    let a = MockUpstream::anthropic();
    let b = MockUpstream::anthropic();
    let gw = TestGateway::start(&two_providers(&a.url, &b.url, ""));
    let base = request("m", false);
    let cases = [
        (json!({"order": ["pb", "pa"]}), "b"),
        (json!({"order": ["pa"]}), "a"),
        (json!({"only": ["pb"]}), "b"),
        (json!({"ignore": ["pa"]}), "b"),
        (json!({"sort": "price"}), "b"),
    ];
    for (prefs, want) in cases {
        let (na, nb) = (a.count(), b.count());
        for key in ["provider", "routing"] {
            let res = post(&gw.url, &with(base.clone(), key, prefs.clone())).await;
            assert_eq!(res.status, 200, "{key}: {prefs}");
        }
        let got = if a.count() == na + 2 {
            "a"
        } else if b.count() == nb + 2 {
            "b"
        } else {
            "?"
        };
        assert_eq!(got, want, "{prefs}");
    }
    // Both objects: merged per key, routing wins.
    let body = with(
        with(
            base.clone(),
            "provider",
            json!({"order": ["pa"], "sort": "price"}),
        ),
        "routing",
        json!({"order": ["pb"]}),
    );
    let nb = b.count();
    post(&gw.url, &body).await;
    assert_eq!(b.count(), nb + 1);
    // The routing objects never reach the upstream.
    let sent = b.last().json();
    assert!(
        sent.get("provider").is_none()
            && sent.get("routing").is_none()
            && sent.get("debug").is_none(),
        "{sent}"
    );
    gw.stop().await;
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn provider_object_errors() {
    let a = MockUpstream::anthropic();
    let b = MockUpstream::anthropic();
    let gw = TestGateway::start(&two_providers(&a.url, &b.url, ""));
    let base = request("m", false);
    let cases = [
        (
            json!({"order": ["nope"]}),
            "provider.order.0: unknown provider \"nope\"",
        ),
        (
            json!({"quantizations": ["fp8"]}),
            "provider.quantizations: unknown key",
        ),
        (
            json!({"sort": "cheapest"}),
            "provider.sort: must be one of price, latency, throughput",
        ),
        (
            json!({"max_price": {"prompt": 0.5}}),
            "provider.max_price: no deployment of model \"m\" is left",
        ),
        (
            json!({"only": ["pa"], "ignore": ["pa"]}),
            "provider.ignore: no deployment of model \"m\" is left",
        ),
    ];
    for (prefs, message) in cases {
        let v = post(&gw.url, &with(base.clone(), "provider", prefs.clone()))
            .await
            .assert_error(400, "invalid_request_error");
        assert_eq!(v["error"]["message"], message, "{prefs}");
        assert!(v["error"]["details"]
            .as_array()
            .is_some_and(|d| !d.is_empty()));
    }
    assert_eq!(a.count() + b.count(), 0);
    gw.stop().await;
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn allow_fallbacks_false_keeps_only_the_first_candidate() {
    let a = MockUpstream::start(Arc::new(|_| {
        Reply::Json(503, upstream::error_body("api_error", "down"), vec![])
    }));
    let b = MockUpstream::anthropic();
    let gw = TestGateway::start(&two_providers(&a.url, &b.url, ""));
    let body = with(
        request("m", false),
        "provider",
        json!({"order": ["pa"], "allow_fallbacks": false}),
    );
    let v = post(&gw.url, &body).await.assert_error(502, "api_error");
    assert_eq!(
        v["error"]["message"],
        "all 3 upstream attempts failed; last: 503 from pa/text"
    );
    assert_eq!(
        (a.count(), b.count()),
        (3, 0),
        "its retries still apply; no fallback"
    );
    // With fallbacks (the default) the same request succeeds on pb.
    let body = with(request("m", false), "provider", json!({"order": ["pa"]}));
    assert_eq!(post(&gw.url, &body).await.status, 200);
    assert_eq!(b.count(), 1);
    gw.stop().await;
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn debug_object_in_message_stream_and_error() {
    let a = MockUpstream::anthropic();
    let b = MockUpstream::start(Arc::new(|_| {
        Reply::Json(500, upstream::error_body("api_error", "boom"), vec![])
    }));
    let gw = TestGateway::start(&two_providers(&a.url, &b.url, ""));
    let flags =
        json!({"return_upstream_request": true, "return_upstream_response": true, "trace": true});
    let body = with(
        with(request("m", false), "debug", flags.clone()),
        "provider",
        json!({"only": ["pa"]}),
    );
    let res = post(&gw.url, &body).await;
    assert_eq!(res.status, 200);
    let v = res.json();
    let d = &v["debug"];
    assert_eq!(d["request_id"].as_str(), res.header("request-id"));
    assert_eq!(d["strictness"], "warn");
    assert_eq!(d["rounds"], 1);
    assert_eq!(d["routing"]["model"], "m");
    assert_eq!(d["routing"]["candidates"], json!(["pa/text"]));
    assert_eq!(d["attempts"][0]["deployment"], "pa/text");
    assert_eq!(d["attempts"][0]["status"], 200);
    assert_eq!(
        d["attempts"][0]["upstream_request_id"],
        "req_upstream_secret_id"
    );
    assert_eq!(
        d["chosen"],
        json!({"provider":"pa","deployment":"pa/text","upstream_model":"text"})
    );
    let t = &d["timings"];
    assert_eq!(
        t["overhead_ms"].as_u64().unwrap(),
        t["total_ms"].as_u64().unwrap() - t["upstream_ms"].as_u64().unwrap()
    );
    assert!(d["trace"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "admitted"));
    let sent = &d["upstream_request"][0];
    assert_eq!(sent["headers"]["x-api-key"], "[redacted]");
    assert_eq!(sent["body"]["model"], "text");
    assert!(sent["body"].get("debug").is_none());
    assert_eq!(
        d["upstream_response"],
        upstream::text_message("text", "Hello from upstream")
    );
    // Everything else in the message is the upstream's, unchanged.
    let mut without = v.clone();
    without.as_object_mut().unwrap().remove("debug");
    assert_eq!(
        without,
        upstream::text_message("text", "Hello from upstream")
    );
    assert!(
        a.last().json().get("debug").is_none(),
        "debug is never forwarded"
    );

    // Stream: the final message_delta carries it; the other events are untouched.
    let body = with(
        with(request("m", true), "debug", json!({"enabled": true})),
        "provider",
        json!({"only": ["pa"]}),
    );
    let res = post(&gw.url, &body).await;
    let events = res.events();
    assert_stream_grammar(&events);
    let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta["debug"]["attempts"][0]["status"], 200);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        events
            .iter()
            .filter(|(_, d)| d.get("debug").is_some())
            .count(),
        1
    );

    // Error envelope.
    let body = with(
        with(request("m", false), "debug", json!({"enabled": true})),
        "provider",
        json!({"only": ["pb"]}),
    );
    let v = post(&gw.url, &body).await.assert_error(502, "api_error");
    assert_eq!(v["debug"]["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(v["debug"]["attempts"][0]["class"], "transient");
    assert!(v["debug"]["attempts"][0]["retry_in_ms"].is_u64());

    // A key without allow_debug.
    let res = post_as(
        &gw.url,
        "sk-nodebug",
        &with(request("m", false), "debug", json!({"trace": true})),
    )
    .await;
    res.assert_error(403, "permission_error");
    let res = post_as(
        &gw.url,
        "sk-nodebug",
        &with(request("m", false), "debug", json!({"trace": false})),
    )
    .await;
    assert_eq!(res.status, 200, "all flags false is no debug request");
    gw.stop().await;
    a.stop().await;
    b.stop().await;
}

/// The provider key never appears in a response, in debug output or in the logs, even when the
/// upstream echoes it back.
#[actix_web::test]
async fn provider_secret_never_leaks() {
    let echo =
        format!("Incorrect API key provided: {UPSTREAM_SECRET}. You can find your key at ...");
    let e = echo.clone();
    let a = MockUpstream::start(Arc::new(move |r| {
        let m = r.model();
        let e = e.clone();
        if r.json()["max_tokens"] == 1 {
            Reply::Json(
                401,
                json!({"error": {"message": e, "type": "invalid_request_error", "code": "invalid_api_key"}}),
                vec![],
            )
        } else if r.json()["max_tokens"] == 2 {
            Reply::Json(
                400,
                json!({"type":"error","error": {"type": "invalid_request_error", "message": e}}),
                vec![],
            )
        } else {
            upstream::by_model(&Recorded::clone_with_model(r, &m))
        }
    }));
    let b = MockUpstream::anthropic();
    let gw = TestGateway::start(&two_providers(&a.url, &b.url, ""));
    let flags =
        json!({"return_upstream_request": true, "return_upstream_response": true, "trace": true});
    let mut seen = String::new();
    for (max_tokens, stream) in [(1, false), (2, false), (2, true), (64, false), (64, true)] {
        let mut body = with(
            with(request("m", stream), "debug", flags.clone()),
            "provider",
            json!({"only": ["pa"]}),
        );
        body["max_tokens"] = json!(max_tokens);
        let res = post(&gw.url, &body).await;
        seen.push_str(&String::from_utf8_lossy(&res.body));
        seen.push_str(&format!("{:?}", res.headers));
    }
    assert!(
        seen.contains("[redacted]"),
        "the upstream request headers are shown redacted"
    );
    assert!(
        seen.contains("Incorrect API key provided: [redacted]"),
        "{seen}"
    );
    assert!(
        !seen.contains(UPSTREAM_SECRET),
        "a response leaked the provider key"
    );
    assert!(
        a.requests()
            .iter()
            .all(|r| r.header("x-api-key") == Some(UPSTREAM_SECRET)),
        "the key did reach the upstream"
    );
    assert!(
        !logs().contains(UPSTREAM_SECRET),
        "the logs leaked the provider key"
    );
    gw.stop().await;
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn tokens_per_minute_admits_on_an_estimate_and_reconciles() {
    let a = MockUpstream::anthropic();
    let b = MockUpstream::anthropic();
    let text = two_providers(&a.url, &b.url, "").replace(
        "name = \"test\"\n",
        "name = \"test\"\ntokens_per_minute = 20\n",
    );
    let gw = TestGateway::start(&text);
    let res = post(&gw.url, &request("m", false)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("anthropic-ratelimit-tokens-limit"), Some("20"));
    // Admitted on an estimate of 12 tokens (the body's bytes / 4).
    assert_eq!(
        res.header("anthropic-ratelimit-tokens-remaining"),
        Some("8")
    );
    // The upstream reported 21 input + 9 output tokens: the balance is settled to about -10, and
    // the next request is refused.
    let res = post(&gw.url, &request("m", false)).await;
    let v = res.assert_error(429, "rate_limit_error");
    assert_eq!(
        v["error"]["message"],
        "rate limit exceeded: tokens_per_minute"
    );
    let after: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((10..=60).contains(&after), "{after}");
    assert_eq!(
        res.header("anthropic-ratelimit-tokens-remaining"),
        Some("0")
    );
    assert!(res
        .header("anthropic-ratelimit-tokens-reset")
        .unwrap()
        .ends_with('Z'));
    assert_eq!(a.count() + b.count(), 1);
    gw.stop().await;
    a.stop().await;
    b.stop().await;
}
