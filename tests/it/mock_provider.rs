//! The built-in mock provider: deterministic replies, full stream grammar, scripted tool calls.

use serde_json::json;

use crate::common::*;

#[actix_web::test]
async fn non_stream_reply_has_every_field() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    let res = post(&gw.url, &request("mock-alias", false)).await;
    assert_eq!(res.status, 200);
    let v = res.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "mock-alias");
    assert_eq!(
        v["content"],
        json!([{"type":"text","text":"mock reply: Hello there"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], serde_json::Value::Null);
    assert_eq!(
        v["usage"],
        json!({"input_tokens":3,"output_tokens":6,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,
               "cache_creation":null,"server_tool_use":null,"service_tier":null})
    );
    gw.stop().await;
}

#[actix_web::test]
async fn stream_reply_follows_the_grammar() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    let res = post(&gw.url, &request("mock-model", true)).await;
    let events = res.events();
    let names = assert_stream_grammar(&events);
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "mock reply: Hello there");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["usage"]["output_tokens"], 6);
    assert_eq!(delta["usage"]["input_tokens"], 3);
    gw.stop().await;
}

#[actix_web::test]
async fn scripted_tool_call_then_result() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    let tools = json!([{"name":"get_weather","description":"w","input_schema":{"type":"object",
        "properties":{"city":{"type":"string"}},"required":["city"]}}]);
    let mut body = request("mock-model", true);
    body["tools"] = tools.clone();
    let events = post(&gw.url, &body).await.events();
    assert_stream_grammar(&events);
    let start = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .unwrap();
    assert_eq!(start.1["content_block"]["input"], json!({}));
    let id = start.1["content_block"]["id"].as_str().unwrap().to_string();
    let args: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&args).unwrap(),
        json!({"city":"mock"})
    );
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );

    body["stream"] = json!(false);
    body["messages"] = json!([
        {"role":"user","content":"weather?"},
        {"role":"assistant","content":[{"type":"tool_use","id":id,"name":"get_weather","input":{"city":"mock"}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":id,"content":"sunny"}]}
    ]);
    let v = post(&gw.url, &body).await.json();
    assert_eq!(v["content"][0]["text"], "mock received: sunny");
    gw.stop().await;
}

#[actix_web::test]
async fn scripted_failures() {
    let gw = TestGateway::start(&base_config("http://127.0.0.1:9"));
    post(&gw.url, &request("mock-error-500", false))
        .await
        .assert_error(502, "api_error");
    post(&gw.url, &request("mock-error-500", true))
        .await
        .assert_error(502, "api_error");
    gw.stop().await;
}
