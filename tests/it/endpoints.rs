//! `GET /v1/models` (list, pagination, retrieve) and `POST /v1/messages/count_tokens` (native
//! through an Anthropic deployment, local estimate otherwise).

use serde_json::{json, Value};

use crate::common::upstream::{MockUpstream, COUNT_TOKENS};
use crate::common::*;

/// A small model list: three models (one with metadata and an alias), one key that sees one.
fn models_config(upstream: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[[auth.keys]]
name = "test"
secret_sha256 = "{test}"

[[auth.keys]]
name = "narrow"
secret_sha256 = "{narrow}"
allowed_models = ["b-alias"]

[[auth.keys]]
name = "limited"
secret_sha256 = "{limited}"
requests_per_minute = 1

[[providers]]
name = "mock"
kind = "mock"

[[providers]]
name = "up"
kind = "anthropic"
base_url = "{upstream}"
api_key_env = "UPSTREAM_KEY"

[[models]]
id = "a"
deployments = [{{ provider = "mock", model = "m" }}]

[[models]]
id = "b"
aliases = ["b-alias"]
display_name = "Model B"
created_at = "2025-09-29T02:00:00+02:00"
max_input_tokens = 200000
max_tokens = 64000
deployments = [{{ provider = "mock", model = "m" }}]

[[models]]
id = "c"
deployments = [{{ provider = "mock", model = "m" }}, {{ provider = "up", model = "text" }}]

[[models]]
id = "up-fail"
deployments = [{{ provider = "up", model = "error-500" }}]

[[models]]
id = "up-bad"
deployments = [{{ provider = "up", model = "error-400" }}]
"#,
        test = key_hash(KEY),
        narrow = key_hash("sk-narrow"),
        limited = key_hash("sk-limited"),
    )
}

async fn get_with(url: &str, path: &str, key: &str) -> Response {
    let mut res = client()
        .get(format!("{url}{path}"))
        .insert_header(("x-api-key", key))
        .send()
        .await
        .expect("gateway answers");
    collect(&mut res).await
}

fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

#[actix_web::test]
async fn models_list_pages_and_retrieve() {
    let gw = TestGateway::start(&models_config("http://127.0.0.1:9"));
    let url = &gw.url;

    let all = get_with(url, "/v1/models", KEY).await;
    assert_eq!(all.status, 200);
    let v = all.json();
    assert_eq!(ids(&v), ["a", "b", "c", "up-fail", "up-bad"]);
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], "a");
    assert_eq!(v["last_id"], "up-bad");
    assert_eq!(
        v["data"][0],
        json!({"type":"model","id":"a","display_name":"a","created_at":"1970-01-01T00:00:00Z"})
    );
    assert_eq!(
        v["data"][1],
        json!({"type":"model","id":"b","display_name":"Model B","created_at":"2025-09-29T00:00:00Z",
               "max_input_tokens":200000,"max_tokens":64000})
    );

    // (query, ids, has_more)
    let pages: [(&str, &[&str], bool); 6] = [
        ("limit=2", &["a", "b"], true),
        ("limit=2&after_id=b", &["c", "up-fail"], true),
        ("limit=2&after_id=up-fail", &["up-bad"], false),
        ("limit=2&before_id=up-bad", &["c", "up-fail"], true),
        ("limit=2&before_id=b-alias", &["a"], false),
        ("limit=1000&after_id=up-bad", &[], false),
    ];
    for (query, expect, more) in pages {
        let v = get_with(url, &format!("/v1/models?{query}"), KEY)
            .await
            .json();
        assert_eq!(ids(&v), expect, "{query}");
        assert_eq!(v["has_more"], more, "{query}");
        assert_eq!(v["first_id"].as_str(), expect.first().copied(), "{query}");
        assert_eq!(v["last_id"].as_str(), expect.last().copied(), "{query}");
    }
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "after_id=nope",
        "after_id=a&before_id=b",
    ] {
        get_with(url, &format!("/v1/models?{query}"), KEY)
            .await
            .assert_error(400, "invalid_request_error");
    }

    // Filtered by the key's allowed_models (an alias allows its model).
    let narrow = get_with(url, "/v1/models", "sk-narrow").await.json();
    assert_eq!(ids(&narrow), ["b"]);

    let b = get_with(url, "/v1/models/b-alias", KEY).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.json()["id"], "b");
    assert_eq!(
        get_with(url, "/v1/models/c", KEY).await.json()["type"],
        "model"
    );
    get_with(url, "/v1/models/nope", KEY)
        .await
        .assert_error(404, "not_found_error");
    get_with(url, "/v1/models/a", "sk-narrow")
        .await
        .assert_error(404, "not_found_error");
    get(url, "/v1/models")
        .await
        .assert_error(401, "authentication_error");
    get_with(url, "/v1/models", "sk-wrong")
        .await
        .assert_error(401, "authentication_error");
}

async fn count(url: &str, key: &str, body: &Value) -> Response {
    post_raw(
        url,
        "/v1/messages/count_tokens",
        &[("x-api-key", key), ("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

fn count_body(model: &str) -> Value {
    json!({
        "model": model,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello there"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "session_id": "s-1",
    })
}

#[actix_web::test]
async fn count_tokens_native_and_estimated() {
    let upstream = MockUpstream::anthropic();
    let gw = TestGateway::start(&models_config(&upstream.url));
    let url = &gw.url;

    // A mock-only model: the local estimate, flagged.
    let body = count_body("a");
    let res = count(url, KEY, &body).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(res.header("x-gateway-token-estimate"), Some("true"));
    let expected = aigw::protocol::token_estimate::estimate(
        Some(&body["system"]),
        body["messages"].as_array().unwrap(),
        body["tools"].as_array().unwrap(),
    );
    assert!(expected > 5);
    assert_eq!(res.json(), json!({"input_tokens": expected}));
    assert_eq!(upstream.count(), 0);

    // `c` has an Anthropic deployment after its mock one: that one answers, natively.
    let res = count(url, KEY, &count_body("c")).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(res.header("x-gateway-token-estimate"), None);
    assert_eq!(res.json(), json!({"input_tokens": COUNT_TOKENS}));
    let sent = upstream.last();
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.header("x-api-key"), Some(UPSTREAM_SECRET));
    let sent = sent.json();
    assert_eq!(sent["model"], "text");
    assert!(
        sent.get("session_id").is_none(),
        "extensions stay home: {sent}"
    );
    assert_eq!(sent["messages"], body["messages"]);

    // max_tokens and stream are ignored, not forwarded; `provider.ignore` skips the upstream.
    let mut b = count_body("c");
    b["max_tokens"] = json!(10);
    b["stream"] = json!(true);
    assert_eq!(count(url, KEY, &b).await.status, 200);
    let sent = upstream.last().json();
    assert!(sent.get("max_tokens").is_none() && sent.get("stream").is_none());
    b["provider"] = json!({"ignore": ["up"]});
    let res = count(url, KEY, &b).await;
    assert_eq!(res.header("x-gateway-token-estimate"), Some("true"));

    // A client fault upstream is the client's 400; anything else falls back to the estimate.
    count(url, KEY, &count_body("up-bad"))
        .await
        .assert_error(400, "invalid_request_error");
    let res = count(url, KEY, &count_body("up-fail")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-gateway-token-estimate"), Some("true"));

    // The same checks as /v1/messages.
    count(url, KEY, &json!({"model": "a", "messages": []}))
        .await
        .assert_error(400, "invalid_request_error");
    count(url, KEY, &count_body("nope"))
        .await
        .assert_error(404, "not_found_error");
    count(url, "sk-narrow", &count_body("a"))
        .await
        .assert_error(403, "permission_error");
    count(url, "sk-wrong", &count_body("a"))
        .await
        .assert_error(401, "authentication_error");

    // It counts toward requests_per_minute.
    let first = count(url, "sk-limited", &count_body("a")).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    let res = count(url, "sk-limited", &count_body("a")).await;
    res.assert_error(429, "rate_limit_error");
    assert!(res.header("retry-after").is_some());
    upstream.stop().await;
}
