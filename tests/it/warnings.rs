//! Warnings reach the client (issue 10): tool-declaration warnings and the translation
//! warnings of an upstream's reply join `x-gateway-warnings` and `debug.warnings` under
//! `X-AIStats-Strictness: warn`; under `error`, a tool option the gateway cannot honour is the
//! strictness 400.

use serde_json::{json, Value};

use crate::common::openai_upstream::openai_config;
use crate::common::upstream::MockUpstream;
use crate::common::{post, post_raw, request, Response, TestGateway, KEY};

struct Setup {
    gw: TestGateway,
    ant: MockUpstream,
    oai: MockUpstream,
}

impl Setup {
    fn start() -> Self {
        let ant = MockUpstream::anthropic();
        let oai = MockUpstream::openai();
        let gw = TestGateway::start(&openai_config(&oai.url, &ant.url));
        Self { gw, ant, oai }
    }

    async fn stop(self) {
        self.gw.stop().await;
        self.ant.stop().await;
        self.oai.stop().await;
    }
}

async fn post_strict(url: &str, strictness: &str, body: &Value) -> Response {
    let headers = [
        ("x-api-key", KEY),
        ("content-type", "application/json"),
        ("x-aistats-strictness", strictness),
    ];
    post_raw(url, "/v1/messages", &headers, body.to_string()).await
}

fn with_tool_option(stream: bool) -> Value {
    json!({"model":"mock-model","max_tokens":64,"stream":stream,
        "tools":[{"type":"gateway:datetime","color":"red"}],
        "messages":[{"role":"user","content":"What time is it?"}]})
}

#[actix_web::test]
async fn tool_declaration_warnings_are_strictness() {
    let s = Setup::start();
    for stream in [false, true] {
        let res = post(&s.gw.url, &with_tool_option(stream)).await;
        assert_eq!(res.status, 200, "{:?}", res.body);
        assert_eq!(
            res.header("x-gateway-warnings"),
            Some("tools.0.color:unknown_parameter"),
            "stream: {stream}"
        );
    }
    // Debug output lists it too.
    let mut body = with_tool_option(false);
    body["debug"] = json!({"trace": true});
    let v = post(&s.gw.url, &body).await.json();
    assert_eq!(
        v["debug"]["warnings"],
        json!([{"param":"tools.0.color","reason":"unknown_parameter"}])
    );
    // `off` says nothing; `error` refuses what no deployment can honour.
    let off = post_strict(&s.gw.url, "off", &with_tool_option(false)).await;
    assert_eq!(off.status, 200);
    assert!(off.header("x-gateway-warnings").is_none());
    let res = post_strict(&s.gw.url, "error", &with_tool_option(false)).await;
    let v = res.assert_error(400, "invalid_request_error");
    assert_eq!(
        v["error"]["details"],
        json!([{"param":"tools.0.color","reason":"unknown_parameter"}]),
        "{v}"
    );
    s.stop().await;
}

#[actix_web::test]
async fn reply_translation_warnings_reach_the_client() {
    let s = Setup::start();
    // A JSON reply: the header (and debug) carry what translating it changed.
    let mut body = request("oai-bad-args", false);
    let res = post(&s.gw.url, &body).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(
        res.header("x-gateway-warnings"),
        Some("tool_calls.0.arguments:invalid_json")
    );
    body["debug"] = json!({"trace": true});
    let v = post(&s.gw.url, &body).await.json();
    let warnings = v["debug"]["warnings"].as_array().unwrap().clone();
    assert!(
        warnings.contains(&json!({"param":"tool_calls.0.arguments","reason":"invalid_json"})),
        "{warnings:?}"
    );
    // Off: nothing.
    let res = post_strict(&s.gw.url, "off", &request("oai-bad-args", false)).await;
    assert!(res.header("x-gateway-warnings").is_none());

    // A stream's warnings arise after its head: the final `message_delta`'s debug has them.
    let mut body = request("oai-no-usage", true);
    body["debug"] = json!({"trace": true});
    let res = post(&s.gw.url, &body).await;
    assert_eq!(res.status, 200);
    let events = res.events();
    let (_, delta) = events
        .iter()
        .find(|(n, _)| n == "message_delta")
        .expect("a final message_delta");
    assert!(
        delta["debug"]["warnings"]
            .as_array()
            .unwrap()
            .contains(&json!({"param":"usage","reason":"estimated"})),
        "{delta}"
    );
    s.stop().await;
}
