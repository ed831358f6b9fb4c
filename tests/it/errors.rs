//! The error envelope, request ids and size limits on every path.

use serde_json::json;

use crate::common::*;

#[actix_web::test]
async fn every_response_has_a_request_id() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    for path in ["/healthz", "/readyz"] {
        let res = get(&gw.url, path).await;
        assert_eq!(res.status, 200);
        assert!(res.header("request-id").unwrap().starts_with("req_"));
    }
    assert_eq!(
        get(&gw.url, "/healthz").await.json(),
        json!({"status":"ok"})
    );
    assert_eq!(
        get(&gw.url, "/readyz").await.json(),
        json!({"status":"ready"})
    );
    get(&gw.url, "/nope")
        .await
        .assert_error(404, "not_found_error");
    get(&gw.url, "/v1/messages")
        .await
        .assert_error(404, "not_found_error");
    let s = post(&gw.url, &request("mock-model", true)).await;
    assert!(s.header("request-id").is_some());
    gw.stop().await;
}

#[actix_web::test]
async fn oversize_bodies_get_413_before_auth() {
    let text = base_config("http://127.0.0.1:9")
        .replace("workers = 1", "workers = 1\nmax_body_bytes = 1000");
    let gw = TestGateway::start(&text);
    let big = json!({"model":"mock-model","max_tokens":5,"messages":[{"role":"user","content":"x".repeat(2000)}]}).to_string();
    // Declared length: refused before the key is even checked.
    let res = post_raw(&gw.url, "/v1/messages", &[], big.clone()).await;
    let v = res.assert_error(413, "request_too_large");
    assert!(v["error"]["message"].as_str().unwrap().contains("1000"));
    assert_eq!(res.header("x-should-retry"), Some("false"));
    // Chunked (no content-length): counted while reading.
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, actix_web::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let mut res = client()
        .post(format!("{}/v1/messages", gw.url))
        .insert_header(("x-api-key", KEY))
        .send_stream(stream)
        .await
        .unwrap();
    collect(&mut res)
        .await
        .assert_error(413, "request_too_large");
    // The server is fine afterwards.
    assert_eq!(
        post(&gw.url, &request("mock-model", false)).await.status,
        200
    );
    gw.stop().await;
}

#[actix_web::test]
async fn strictness_header_values() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    let body = request("mock-model", false);
    for ok in ["off", " WARN ", "Error"] {
        let res = post_with(
            &gw.url,
            &[("x-api-key", KEY), ("x-aistats-strictness", ok)],
            &body,
        )
        .await;
        assert_eq!(res.status, 200, "{ok}");
    }
    let res = post_with(
        &gw.url,
        &[("x-api-key", KEY), ("x-aistats-strictness", "loose")],
        &body,
    )
    .await;
    let v = res.assert_error(400, "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "X-AIStats-Strictness: must be one of off, warn, error"
    );
    gw.stop().await;
}
