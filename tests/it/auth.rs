//! Authentication, per-key models and per-key rate limits.

use crate::common::*;

#[actix_web::test]
async fn both_auth_styles_and_their_failures() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    let body = request("mock-model", false);
    let ok = post_as(&gw.url, KEY, &body).await;
    assert_eq!(ok.status, 200);
    let ok = post_with(&gw.url, &[("authorization", "Bearer sk-test-key")], &body).await;
    assert_eq!(ok.status, 200);

    let res = post_with(&gw.url, &[], &body).await;
    let v = res.assert_error(401, "authentication_error");
    assert_eq!(
        v["error"]["message"],
        "missing API key: send x-api-key or Authorization: Bearer"
    );
    assert_eq!(res.header("x-should-retry"), Some("false"));
    let res = post_as(&gw.url, "sk-wrong", &body).await;
    let v = res.assert_error(401, "authentication_error");
    assert_eq!(v["error"]["message"], "invalid API key");
    gw.stop().await;
}

#[actix_web::test]
async fn models_outside_a_keys_allow_list_are_forbidden() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    let ok = post_as(&gw.url, "sk-narrow", &request("mock-alias", false)).await;
    assert_eq!(ok.status, 200, "aliases of an allowed model are allowed");
    let res = post_as(&gw.url, "sk-narrow", &request("up-text", false)).await;
    res.assert_error(403, "permission_error");
    post(&gw.url, &request("gpt-9", false))
        .await
        .assert_error(404, "not_found_error");
    gw.stop().await;
}

#[actix_web::test]
async fn requests_per_minute_gives_429_with_headers() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    let body = request("mock-model", false);
    let ok = post_as(&gw.url, "sk-limited", &body).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("anthropic-ratelimit-requests-limit"), Some("1"));
    assert_eq!(
        ok.header("anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert!(ok
        .header("anthropic-ratelimit-requests-reset")
        .unwrap()
        .ends_with('Z'));
    let res = post_as(&gw.url, "sk-limited", &body).await;
    let v = res.assert_error(429, "rate_limit_error");
    assert_eq!(
        v["error"]["message"],
        "rate limit exceeded: requests_per_minute"
    );
    let after: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    assert!(
        res.header("retry-after-ms")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(res.header("x-should-retry"), Some("true"));
    assert_eq!(
        res.header("anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    // Other keys are unaffected.
    assert_eq!(
        post(&gw.url, &request("mock-model", false)).await.status,
        200
    );
    gw.stop().await;
}

#[actix_web::test]
async fn max_concurrent_is_enforced_and_released() {
    let mut text = base_config("http://127.0.0.1:9");
    text = text.replace("requests_per_minute = 1", "max_concurrent = 1");
    text.push_str("\n[[models]]\nid = \"slow\"\ndeployments = [{ provider = \"slow\", model = \"s\" }]\n[[providers]]\nname = \"slow\"\nkind = \"mock\"\nttft_ms = 300\n");
    let gw = TestGateway::start(&text);
    let url = gw.url.clone();
    let first = actix_web::rt::spawn(async move {
        let mut res = client()
            .post(format!("{url}/v1/messages"))
            .insert_header(("x-api-key", "sk-limited"))
            .send_body(request("slow", true).to_string())
            .await
            .unwrap();
        collect(&mut res).await.status
    });
    // The slow stream holds the only slot until it ends (its head arrives after ttft).
    actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    let res = post_as(&gw.url, "sk-limited", &request("mock-model", false)).await;
    let v = res.assert_error(429, "rate_limit_error");
    assert_eq!(v["error"]["message"], "rate limit exceeded: max_concurrent");
    assert_eq!(first.await.unwrap(), 200);
    let res = post_as(&gw.url, "sk-limited", &request("mock-model", false)).await;
    assert_eq!(res.status, 200, "the slot was released");
    gw.stop().await;
}
