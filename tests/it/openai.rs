//! OpenAI-compatible upstreams end to end: the client speaks Anthropic to the gateway over HTTP,
//! the gateway speaks chat/completions to an in-process OpenAI-format upstream.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::openai_upstream::{self, openai_config, TOOL_INPUT};
use crate::common::upstream::{self, End, MockUpstream, Reply};
use crate::common::*;

struct Setup {
    gw: TestGateway,
    oai: MockUpstream,
    ant: MockUpstream,
}

impl Setup {
    fn start() -> Self {
        let oai = MockUpstream::openai();
        let ant = MockUpstream::anthropic();
        let gw = TestGateway::start(&openai_config(&oai.url, &ant.url));
        Self { gw, oai, ant }
    }

    async fn stop(self) {
        self.gw.stop().await;
        self.oai.stop().await;
        self.ant.stop().await;
    }
}

async fn post_with(url: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
    let mut h = vec![("x-api-key", KEY), ("content-type", "application/json")];
    h.extend_from_slice(headers);
    post_raw(url, "/v1/messages", &h, body.to_string()).await
}

/// The events with the random message id replaced, after checking its shape.
fn normalized(events: &[(String, Value)]) -> Vec<(String, Value)> {
    let mut events = events.to_vec();
    let id = events[0].1["message"]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("msg_") && id.len() == 28, "{id}");
    events[0].1["message"]["id"] = json!("msg_x");
    events
}

fn input_json(events: &[(String, Value)], index: u64) -> Value {
    let s: String = events
        .iter()
        .filter(|(n, v)| n == "content_block_delta" && v["index"] == index)
        .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s:?}"))
}

#[actix_web::test]
async fn pitfall_15_openai_upstreams_serve_v1_messages() {
    let s = Setup::start();
    let body = json!({"model":"oai-text","max_tokens":64,"system":"Be brief.","temperature":0.5,"session_id":"s1",
        "metadata":{"user_id":"u-1"},"stop_sequences":["END"],"messages":[{"role":"user","content":"Hello there"}]});
    let res = post(&s.gw.url, &body).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert!(res.header("x-gateway-warnings").is_none());
    let mut v = res.json();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("msg_") && id.len() == 28);
    v["id"] = json!("msg_x");
    assert_eq!(
        v,
        json!({"id":"msg_x","type":"message","role":"assistant","model":"oai-text",
            "content":[{"type":"text","text":"Hello from upstream"}],"stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":21,"output_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,
                     "cache_creation":null,"server_tool_use":null,"service_tier":null}})
    );

    let got = s.oai.last();
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {UPSTREAM_SECRET}").as_str())
    );
    assert_eq!(
        got.header("x-api-key"),
        None,
        "the client's key is never forwarded"
    );
    assert_eq!(got.header("x-extra-header"), Some("static-value"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.json(),
        json!({"model":"text","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there"}],
            "max_tokens":64,"temperature":0.5,"stop":["END"],"user":"u-1"})
    );
    assert!(
        !String::from_utf8_lossy(&res.body).contains(UPSTREAM_SECRET),
        "no secret in the answer"
    );
    s.stop().await;
}

#[actix_web::test]
async fn pitfall_9_anthropic_headers_are_not_sent_to_openai_upstreams() {
    let s = Setup::start();
    let res = post_with(
        &s.gw.url,
        &request("oai-text", false),
        &[
            ("anthropic-beta", "beta-one"),
            ("anthropic-version", "2023-06-01"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    let got = s.oai.last();
    assert_eq!(got.header("anthropic-beta"), None);
    assert_eq!(got.header("anthropic-version"), None);
    // ...while an Anthropic upstream gets them (messages-api.md §2.1).
    post_with(
        &s.gw.url,
        &request("up-text", false),
        &[("anthropic-beta", "beta-one")],
    )
    .await;
    assert_eq!(s.ant.last().header("anthropic-beta"), Some("beta-one"));
    s.stop().await;
}

#[actix_web::test]
async fn a_keyless_provider_sends_no_authorization() {
    let s = Setup::start();
    let res = post(&s.gw.url, &request("oai-keyless-text", false)).await;
    assert_eq!(res.status, 200);
    let got = s.oai.last();
    assert_eq!(got.path, "/v1/chat/completions", "trailing slash trimmed");
    assert_eq!(got.header("authorization"), None);
    s.stop().await;
}

#[actix_web::test]
async fn stream_text_is_the_exact_anthropic_sequence() {
    let s = Setup::start();
    let res = post(&s.gw.url, &request("oai-text", true)).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let events = res.events();
    assert_stream_grammar(&events);
    let ev = |t: Value| (t["type"].as_str().unwrap().to_string(), t);
    assert_eq!(
        normalized(&events),
        vec![
            ev(
                json!({"type":"message_start","message":{"id":"msg_x","type":"message","role":"assistant","model":"oai-text","content":[],
                "stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}})
            ),
            ev(
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})
            ),
            ev(
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}})
            ),
            ev(
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" from"}})
            ),
            ev(
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" upstream"}})
            ),
            ev(json!({"type":"content_block_stop","index":0})),
            ev(
                json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                "usage":{"input_tokens":21,"output_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}})
            ),
            ev(json!({"type":"message_stop"})),
        ]
    );
    let sent = s.oai.last().json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    s.stop().await;
}

#[actix_web::test]
async fn tool_use_stream_with_awkward_fragments() {
    let s = Setup::start();
    let mut body = request("oai-tool", true);
    body["tools"] = json!([{"name":"get_weather","description":"Weather","input_schema":{"type":"object",
        "properties":{"city":{"type":"string"},"unit":{"type":"string"},"days":{"type":"array"}}}}]);
    let res = post(&s.gw.url, &body).await;
    let events = res.events();
    let names = assert_stream_grammar(&events);
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(
        events[1].1["content_block"],
        json!({"type":"text","text":""})
    );
    assert_eq!(events[2].1["delta"]["text"], "Checking.");
    let tool_start = events
        .iter()
        .find(|(n, v)| n == "content_block_start" && v["index"] == 1)
        .unwrap();
    assert_eq!(
        tool_start.1["content_block"],
        json!({"type":"tool_use","id":"toolu_01UpstreamCall","name":"get_weather","input":{}})
    );
    assert_eq!(
        input_json(&events, 1),
        serde_json::from_str::<Value>(TOOL_INPUT).unwrap()
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"],
        json!({"input_tokens":312,"output_tokens":38,"cache_creation_input_tokens":0,"cache_read_input_tokens":0})
    );
    // The tool went up as a function.
    assert_eq!(
        s.oai.last().json()["tools"],
        json!([{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object",
            "properties":{"city":{"type":"string"},"unit":{"type":"string"},"days":{"type":"array"}}}}}])
    );
    s.stop().await;
}

#[actix_web::test]
async fn tool_use_non_stream_matches_the_anthropic_upstream() {
    let s = Setup::start();
    let oai = post(&s.gw.url, &request("oai-tool", false)).await.json();
    let ant = post(&s.gw.url, &request("up-tool", false)).await.json();
    assert_eq!(oai["content"], ant["content"]);
    assert_eq!(oai["usage"]["input_tokens"], ant["usage"]["input_tokens"]);
    assert_eq!(oai["usage"]["output_tokens"], ant["usage"]["output_tokens"]);
    assert_eq!(
        oai["usage"]["cache_read_input_tokens"],
        ant["usage"]["cache_read_input_tokens"]
    );
    assert_eq!(oai["stop_reason"], "tool_use");
    s.stop().await;
}

#[actix_web::test]
async fn parallel_tool_calls_stream_and_json() {
    let s = Setup::start();
    let res = post(&s.gw.url, &request("oai-parallel", true)).await;
    let events = res.events();
    assert_stream_grammar(&events);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, v)| &v["content_block"])
        .collect();
    assert_eq!(starts.len(), 2, "no empty text block for a tool-only reply");
    assert_eq!(
        (starts[0]["id"].as_str(), starts[0]["name"].as_str()),
        (Some("call_weather"), Some("get_weather"))
    );
    assert_eq!(
        (starts[1]["id"].as_str(), starts[1]["name"].as_str()),
        (Some("call_time"), Some("get_time"))
    );
    assert_eq!(
        input_json(&events, 0),
        serde_json::from_str::<Value>(TOOL_INPUT).unwrap()
    );
    assert_eq!(input_json(&events, 1), json!({"timezone":"Europe/Paris"}));

    let v = post(&s.gw.url, &request("oai-parallel", false))
        .await
        .json();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["input"]["city"], "Lyon");
    assert_eq!(
        v["content"][1],
        json!({"type":"tool_use","id":"call_time","name":"get_time","input":{"timezone":"Europe/Paris"}})
    );
    s.stop().await;
}

#[actix_web::test]
async fn interleaved_calls_fail_live_and_pass_buffered() {
    let s = Setup::start();
    let res = post(&s.gw.url, &request("oai-interleaved", true)).await;
    assert_eq!(res.status, 200);
    let events = res.events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(
        data["error"],
        json!({"type":"api_error","message":"upstream: interleaved tool-call arguments"})
    );
    assert_eq!(data["request_id"].as_str(), res.header("request-id"));
    assert!(!events.iter().any(|(n, _)| n == "message_stop"));

    let res = post(&s.gw.url, &request("oai-buffered-interleaved", true)).await;
    let events = res.events();
    let names = assert_stream_grammar(&events);
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(input_json(&events, 0), json!({"city":"Lyon"}));
    assert_eq!(input_json(&events, 1), json!({"timezone":"Europe/Paris"}));
    s.stop().await;
}

#[actix_web::test]
async fn usage_is_exactly_what_the_upstream_reported() {
    let s = Setup::start();
    let expected = json!({"input_tokens":176,"output_tokens":80,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024});
    let v = post(&s.gw.url, &request("oai-cached", false)).await.json();
    for k in [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ] {
        assert_eq!(v["usage"][k], expected[k], "{k}");
    }
    let events = post(&s.gw.url, &request("oai-cached", true)).await.events();
    let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta["usage"], expected);
    s.stop().await;
}

#[actix_web::test]
async fn reasoning_becomes_a_thinking_block_first() {
    let s = Setup::start();
    let v = post(&s.gw.url, &request("oai-reasoning", false))
        .await
        .json();
    assert_eq!(
        v["content"],
        json!([{"type":"thinking","thinking":"Thinking.","signature":""},{"type":"text","text":"Done"}])
    );
    let events = post(&s.gw.url, &request("oai-reasoning", true))
        .await
        .events();
    assert_stream_grammar(&events);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type":"thinking","thinking":"","signature":""})
    );
    let thinking: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"]["thinking"].as_str())
        .collect();
    assert_eq!(thinking, "Thinking.");
    assert!(events
        .iter()
        .any(|(_, v)| v["content_block"]["type"] == "text" && v["index"] == 1));
    s.stop().await;
}

#[actix_web::test]
async fn history_is_translated_and_thinking_never_sent() {
    let s = Setup::start();
    let body = json!({"model":"oai-text","max_tokens":64,"tools":[{"name":"get_weather","input_schema":{"type":"object"}}],
        "tool_choice":{"type":"any","disable_parallel_tool_use":true},
        "messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},
                {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Lyon"}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","is_error":true,"content":"timeout"},
                {"type":"text","text":"try again"}]}]});
    let res = post(&s.gw.url, &body).await;
    assert_eq!(res.status, 200);
    let sent = s.oai.last().json();
    assert_eq!(
        sent["messages"],
        json!([{"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lyon\"}"}}]},
            {"role":"tool","tool_call_id":"toolu_1","content":"Error: timeout"},
            {"role":"user","content":"try again"}])
    );
    assert_eq!(sent["tool_choice"], "required");
    assert_eq!(sent["parallel_tool_calls"], false);
    s.stop().await;
}

#[actix_web::test]
async fn long_tool_names_round_trip() {
    let s = Setup::start();
    let long = "lookup_the_current_weather_for_a_city_using_the_internal_forecasting_service";
    assert!(long.len() > 64);
    let mut body = request("oai-echo-tool", false);
    body["tools"] = json!([{"name":long,"input_schema":{"type":"object"}}]);
    let v = post(&s.gw.url, &body).await.json();
    assert_eq!(v["content"][0]["name"], long);
    let sent_name = s.oai.last().json()["tools"][0]["function"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sent_name.len(), 64);
    assert_ne!(sent_name, long);
    s.stop().await;
}

#[actix_web::test]
async fn bad_arguments_are_kept_not_lost() {
    let s = Setup::start();
    let v = post(&s.gw.url, &request("oai-bad-args", false))
        .await
        .json();
    assert_eq!(
        v["content"][0]["input"],
        json!({"_gateway_raw_arguments":"{\"city\": Lyon"})
    );
    // Echoed back, the original string goes upstream again.
    let body = json!({"model":"oai-text","max_tokens":64,"messages":[{"role":"user","content":"q"},
        {"role":"assistant","content":[v["content"][0].clone()]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"call_bad","content":"?"}]}]});
    assert_eq!(post(&s.gw.url, &body).await.status, 200);
    assert_eq!(
        s.oai.last().json()["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{\"city\": Lyon"
    );
    s.stop().await;
}

#[actix_web::test]
async fn upstream_http_errors_become_envelopes() {
    let s = Setup::start();
    for stream in [false, true] {
        let v = post(&s.gw.url, &request("oai-error-400", stream))
            .await
            .assert_error(400, "invalid_request_error");
        assert_eq!(v["error"]["message"], "upstream: scripted upstream 400");
        let res = post(&s.gw.url, &request("oai-error-500", stream)).await;
        let v = res.assert_error(502, "api_error");
        assert_eq!(
            v["error"]["message"],
            "all 3 upstream attempts failed; last: 500 from oai/error-500"
        );
        assert_eq!(res.header("x-should-retry"), Some("true"));
        post(&s.gw.url, &request("oai-error-529", stream))
            .await
            .assert_error(502, "api_error");
        if !stream {
            // Once: afterwards the deployment sits out its 429 cool-down (then 529, see resilience).
            post(&s.gw.url, &request("oai-error-429", stream))
                .await
                .assert_error(502, "api_error");
        }
        let res = post(&s.gw.url, &request("oai-error-404", stream)).await;
        res.assert_error(502, "api_error");
        assert_eq!(res.header("x-should-retry"), Some("false"));
    }
    s.stop().await;
}

#[actix_web::test]
async fn pitfalls_10_11_mid_stream_failures_end_with_a_conformant_error_frame() {
    let s = Setup::start();
    // A reset after the first delta.
    let res = post(&s.gw.url, &request("oai-midstream", true)).await;
    assert_eq!(res.status, 200);
    let events = res.events();
    assert_eq!(events[2].1["delta"]["text"], "Hello");
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(!events.iter().any(|(n, _)| n == "message_stop"));
    // An error payload: its mapped type, the exact envelope shape (pitfall 10).
    let res = post(&s.gw.url, &request("oai-stream-error", true)).await;
    let events = res.events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(
        data,
        &json!({"type":"error","error":{"type":"overloaded_error","message":"upstream: Overloaded"},
            "request_id":res.header("request-id").unwrap()})
    );
    assert!(std::str::from_utf8(&res.body).unwrap().ends_with("\n\n"));
    s.stop().await;
}

#[actix_web::test]
async fn streams_without_finish_or_usage_still_close_cleanly() {
    let s = Setup::start();
    let events = post(&s.gw.url, &request("oai-no-finish", true))
        .await
        .events();
    let names = assert_stream_grammar(&events);
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    // No usage chunk and the upstream stays open: the bounded wait closes the stream with the
    // estimate (the mock upstream hangs; only `usage_wait_ms` can end this request).
    let events = post(&s.gw.url, &request("oai-no-usage", true))
        .await
        .events();
    let names = assert_stream_grammar(&events);
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 2);
    assert!(delta["usage"]["input_tokens"].as_u64().unwrap() > 0);
    s.oai.wait_dropped(1).await;
    s.stop().await;
}

#[actix_web::test]
async fn client_disconnect_drops_the_upstream_stream() {
    let s = Setup::start();
    let sock = raw_request(&s.gw.url, &request("oai-hang", true), Some("text_delta")).await;
    drop(sock);
    s.oai.wait_dropped(1).await;
    s.stop().await;
}

fn strict_body(model: &str) -> Value {
    json!({"model":model,"max_tokens":64,"top_k":5,"stop_sequences":["1","2","3","4","5"],
        "messages":[{"role":"user","content":"Hello there"}]})
}

#[actix_web::test]
async fn strictness_warn_drops_and_says_so() {
    let s = Setup::start();
    for headers in [vec![], vec![("x-aistats-strictness", " WARN ")]] {
        let res = post_with(&s.gw.url, &strict_body("oai-text"), &headers).await;
        assert_eq!(res.status, 200);
        assert_eq!(
            res.header("x-gateway-warnings"),
            Some("top_k:unsupported,stop_sequences:truncated")
        );
        let sent = s.oai.last().json();
        assert!(sent.get("top_k").is_none());
        assert_eq!(sent["stop"], json!(["1", "2", "3", "4"]));
    }
    // Streams carry it too.
    let mut body = strict_body("oai-text");
    body["stream"] = json!(true);
    let res = post_with(&s.gw.url, &body, &[]).await;
    assert_eq!(
        res.header("x-gateway-warnings"),
        Some("top_k:unsupported,stop_sequences:truncated")
    );
    // An Anthropic deployment honours both: no header.
    let res = post_with(&s.gw.url, &strict_body("up-text"), &[]).await;
    assert_eq!(res.status, 200);
    assert!(res.header("x-gateway-warnings").is_none());
    assert_eq!(s.ant.last().json()["top_k"], 5);
    s.stop().await;
}

#[actix_web::test]
async fn strictness_off_drops_silently() {
    let s = Setup::start();
    let res = post_with(
        &s.gw.url,
        &strict_body("oai-text"),
        &[("x-aistats-strictness", "off")],
    )
    .await;
    assert_eq!(res.status, 200);
    assert!(res.header("x-gateway-warnings").is_none());
    assert!(s.oai.last().json().get("top_k").is_none());
    s.stop().await;
}

#[actix_web::test]
async fn strictness_error_refuses_what_no_deployment_honours() {
    let s = Setup::start();
    let before = s.oai.count();
    let res = post_with(
        &s.gw.url,
        &strict_body("oai-text"),
        &[("x-aistats-strictness", "error")],
    )
    .await;
    let v = res.assert_error(400, "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "strictness: oai-text cannot honour: top_k, stop_sequences"
    );
    assert_eq!(
        v["error"]["details"],
        json!([{"param":"top_k","reason":"unsupported"},{"param":"stop_sequences","reason":"truncated"}])
    );
    assert_eq!(res.header("x-should-retry"), Some("false"));
    // An unknown top-level field is a 400 in error mode, whatever the deployment.
    let mut body = request("up-text", false);
    body["frobnicate"] = json!(1);
    let v = post_with(&s.gw.url, &body, &[("x-aistats-strictness", "error")])
        .await
        .assert_error(400, "invalid_request_error");
    assert_eq!(
        v["error"]["details"],
        json!([{"param":"frobnicate","reason":"unknown_parameter"}])
    );
    // In warn mode it is dropped before an Anthropic upstream sees it.
    let res = post_with(&s.gw.url, &body, &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("x-gateway-warnings"),
        Some("frobnicate:unknown_parameter")
    );
    assert!(s.ant.last().json().get("frobnicate").is_none());
    assert_eq!(s.oai.count(), before, "nothing reached the OpenAI upstream");
    s.stop().await;
}

#[actix_web::test]
async fn strictness_error_routes_to_the_deployment_that_honours() {
    let s = Setup::start();
    let ant_before = s.ant.count();
    for _ in 0..8 {
        let res = post_with(
            &s.gw.url,
            &strict_body("mixed"),
            &[("x-aistats-strictness", "error")],
        )
        .await;
        assert_eq!(res.status, 200);
        assert!(res.header("x-gateway-warnings").is_none());
    }
    assert_eq!(
        s.oai.count(),
        0,
        "the OpenAI deployment cannot honour top_k"
    );
    assert_eq!(s.ant.count(), ant_before + 8);
    // Without the parameters both deployments serve it.
    for _ in 0..16 {
        post_with(
            &s.gw.url,
            &request("mixed", false),
            &[("x-aistats-strictness", "error")],
        )
        .await;
    }
    assert!(s.oai.count() > 0 && s.ant.count() > ant_before + 8);
    s.stop().await;
}

#[actix_web::test]
async fn an_invalid_strictness_header_is_a_400() {
    let s = Setup::start();
    let v = post_with(
        &s.gw.url,
        &request("oai-text", false),
        &[("x-aistats-strictness", "strict")],
    )
    .await
    .assert_error(400, "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "X-AIStats-Strictness: must be one of off, warn, error"
    );
    assert_eq!(s.oai.count(), 0);
    s.stop().await;
}

#[actix_web::test]
async fn prompt_cache_key_from_session_and_cache_control() {
    let s = Setup::start();
    let mut body = request("oai-text", false);
    body["cache_control"] = json!({"type":"ephemeral"});
    let res = post_with(&s.gw.url, &body, &[("x-session-id", "sess-42")]).await;
    assert_eq!(res.status, 200);
    let key = s.oai.last().json()["prompt_cache_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(key, aigw::strictness::prompt_cache_key("test", "sess-42"));
    // No session: dropped, with a warning.
    let res = post_with(&s.gw.url, &body, &[]).await;
    assert_eq!(
        res.header("x-gateway-warnings"),
        Some("cache_control:unsupported")
    );
    assert!(s.oai.last().json().get("prompt_cache_key").is_none());
    s.stop().await;
}

#[actix_web::test]
async fn an_unknown_path_style_upstream_failure_is_not_a_500() {
    // A 200 that is not a completion.
    let up = MockUpstream::start(Arc::new(|_| {
        Reply::Raw(
            200,
            "application/json",
            bytes::Bytes::from_static(b"{\"nope\":1}"),
        )
    }));
    let ant = MockUpstream::anthropic();
    let gw = TestGateway::start(&openai_config(&up.url, &ant.url));
    post(&gw.url, &request("oai-text", false))
        .await
        .assert_error(502, "api_error");
    // A stream request answered with JSON.
    let up2 = MockUpstream::start(Arc::new(|_| {
        Reply::Json(
            200,
            openai_upstream::completion(json!({"content":"x"}), "stop", json!(null)),
            vec![],
        )
    }));
    let gw2 = TestGateway::start(&openai_config(&up2.url, &ant.url));
    post(&gw2.url, &request("oai-text", true))
        .await
        .assert_error(502, "api_error");
    // A stream that ends before any chunk.
    let up3 = MockUpstream::start(Arc::new(|_| upstream::sse(vec![], End::Close)));
    let gw3 = TestGateway::start(&openai_config(&up3.url, &ant.url));
    post(&gw3.url, &request("oai-text", true))
        .await
        .assert_error(502, "api_error");
    for g in [gw, gw2, gw3] {
        g.stop().await;
    }
    for u in [up, up2, up3, ant] {
        u.stop().await;
    }
}

/// Debug output shows the translated request (key redacted) and the upstream's own payloads.
#[actix_web::test]
async fn debug_shows_the_translated_request_and_raw_chunks() {
    let s = Setup::start();
    let flags = json!({"return_upstream_request": true, "return_upstream_response": true});
    let mut body = request("oai-text", true);
    body["debug"] = flags.clone();
    let res = post(&s.gw.url, &body).await;
    let events = res.events();
    let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    let d = &delta["debug"];
    let sent = &d["upstream_request"][0];
    assert_eq!(sent["headers"]["authorization"], "[redacted]");
    assert_eq!(
        sent["body"]["stream_options"],
        json!({"include_usage": true})
    );
    assert!(sent["url"]
        .as_str()
        .unwrap()
        .ends_with("/v1/chat/completions"));
    let raw = d["upstream_response"].as_array().unwrap();
    assert!(
        raw.iter().any(|c| c["object"] == "chat.completion.chunk"),
        "{raw:?}"
    );
    assert!(
        raw.iter().any(|c| c["usage"].is_object()),
        "the usage chunk is shown too"
    );
    body["stream"] = json!(false);
    let v = post(&s.gw.url, &body).await.json();
    assert_eq!(v["debug"]["upstream_response"]["object"], "chat.completion");
    assert!(!res
        .body
        .windows(UPSTREAM_SECRET.len())
        .any(|w| w == UPSTREAM_SECRET.as_bytes()));
    s.stop().await;
}
