//! The gateway tool loop end to end (gateway.md §6): every tool, alone and together, on both
//! upstream kinds, stream and non-stream; client calls in the same round, `max_uses`,
//! `pause_turn` and its continuation, disconnects mid-loop, and history replayed on the other
//! upstream kind.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::openai_upstream::openai_config;
use crate::common::tool_mocks::{HttpMock, Reply as MockReply};
use crate::common::tool_user::{services, tools_config, PNG};
use crate::common::upstream::{MockUpstream, Reply};
use crate::common::*;

const LOOP_MODELS: [&str; 9] = [
    "loop",
    "loop-client",
    "loop-forever",
    "loop-twice",
    "loop-datetime",
    "loop-web_search",
    "loop-web_fetch",
    "loop-advisor",
    "loop-image_generation",
];

struct Setup {
    gw: TestGateway,
    up: MockUpstream,
    oai: MockUpstream,
    services: HttpMock,
}

impl Setup {
    fn start() -> Self {
        Self::with("")
    }

    fn with(extra: &str) -> Self {
        let up = MockUpstream::anthropic();
        let oai = MockUpstream::openai();
        let services = services();
        let mut text = openai_config(&oai.url, &up.url);
        for name in LOOP_MODELS {
            for kind in ["up", "oai"] {
                if kind == "up" && UPSTREAM_MODELS.contains(&name) {
                    continue; // base_config has it already
                }
                text.push_str(&format!(
                    "\n[[models]]\nid = \"{kind}-{name}\"\ndeployments = [{{ provider = \"{kind}\", model = \"{name}\" }}]\n"
                ));
            }
        }
        text.push_str(&format!("\n[tools]\nmax_rounds = 3\n{extra}\n"));
        text.push_str(&tools_config(&services.url));
        Self {
            gw: TestGateway::start(&text),
            up,
            oai,
            services,
        }
    }

    fn page(&self) -> String {
        format!("{}/page", self.services.url)
    }

    async fn stop(self) {
        self.gw.stop().await;
        self.up.stop().await;
        self.oai.stop().await;
    }
}

fn declaration(tool: &str) -> Value {
    json!({"type": format!("gateway:{tool}")})
}

fn body(model: &str, stream: bool, tools: Value, system: &str) -> Value {
    json!({"model": model, "max_tokens": 256, "stream": stream, "system": system, "tools": tools,
           "messages": [{"role": "user", "content": "Go."}]})
}

/// The content blocks of a response, rebuilt from its events when it streamed (the way the SDK
/// accumulators do), and its usage.
fn content_and_usage(res: &Response, stream: bool) -> (Vec<Value>, Value, String) {
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    if !stream {
        let v = res.json();
        return (
            v["content"].as_array().unwrap().clone(),
            v["usage"].clone(),
            v["stop_reason"].as_str().unwrap().to_string(),
        );
    }
    let events = res.events();
    let names = assert_stream_grammar(&events);
    assert_eq!(
        names.iter().filter(|n| *n == "message_start").count(),
        1,
        "one message_start"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "message_delta").count(),
        1,
        "one message_delta"
    );
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    let mut blocks: Vec<Value> = Vec::new();
    let mut inputs: Vec<String> = Vec::new();
    let mut usage = Value::Null;
    let mut stop = String::new();
    for (name, d) in &events {
        match name.as_str() {
            "content_block_start" => {
                blocks.push(d["content_block"].clone());
                inputs.push(String::new());
            }
            "content_block_delta" => {
                let i = d["index"].as_u64().unwrap() as usize;
                let delta = &d["delta"];
                match delta["type"].as_str().unwrap() {
                    "text_delta" => {
                        let t = blocks[i]["text"].as_str().unwrap().to_string()
                            + delta["text"].as_str().unwrap();
                        assert!(
                            !delta["text"].as_str().unwrap().is_empty(),
                            "no empty deltas"
                        );
                        blocks[i]["text"] = json!(t);
                    }
                    "input_json_delta" => {
                        inputs[i].push_str(delta["partial_json"].as_str().unwrap())
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = d["index"].as_u64().unwrap() as usize;
                if !inputs[i].is_empty() {
                    blocks[i]["input"] = serde_json::from_str(&inputs[i]).unwrap();
                }
            }
            "message_delta" => {
                usage = d["usage"].clone();
                stop = d["delta"]["stop_reason"].as_str().unwrap().to_string();
            }
            _ => {}
        }
    }
    (blocks, usage, stop)
}

fn types(blocks: &[Value]) -> Vec<&str> {
    blocks.iter().map(|b| b["type"].as_str().unwrap()).collect()
}

fn counters(usage: &Value) -> Value {
    usage["server_tool_use"].clone()
}

fn zero_counters_but(key: &str, n: u64) -> Value {
    let mut c = json!({"web_search_requests":0,"web_fetch_requests":0,"datetime_requests":0,"advisor_requests":0,"image_generation_requests":0});
    c[key] = json!(n);
    c
}

#[actix_web::test]
async fn each_tool_alone_on_both_kinds_streamed_and_not() {
    let s = Setup::start();
    let cases = [
        ("datetime", "datetime_tool_result", "datetime_requests"),
        (
            "web_search",
            "web_search_tool_result",
            "web_search_requests",
        ),
        ("web_fetch", "web_fetch_tool_result", "web_fetch_requests"),
        ("advisor", "advisor_tool_result", "advisor_requests"),
        (
            "image_generation",
            "image_generation_tool_result",
            "image_generation_requests",
        ),
    ];
    for kind in ["up", "oai"] {
        for stream in [false, true] {
            for (tool, result, counter) in cases {
                let cell = format!("{kind} stream={stream} {tool}");
                let system = format!("Fetch {} if asked.", s.page());
                let res = post(
                    &s.gw.url,
                    &body(
                        &format!("{kind}-loop"),
                        stream,
                        json!([declaration(tool)]),
                        &system,
                    ),
                )
                .await;
                let (blocks, usage, stop) = content_and_usage(&res, stream);
                assert_eq!(stop, "end_turn", "{cell}");
                assert_eq!(
                    types(&blocks),
                    ["text", "server_tool_use", result, "text"],
                    "{cell}: {blocks:?}"
                );
                let call = &blocks[1];
                assert!(
                    call["id"].as_str().unwrap().starts_with("srvtoolu_gw_"),
                    "{cell}"
                );
                assert_eq!(call["name"], tool, "{cell}");
                assert_eq!(blocks[2]["tool_use_id"], call["id"], "{cell}");
                assert!(
                    !blocks[2]["content"]["type"]
                        .as_str()
                        .unwrap_or("")
                        .ends_with("_error"),
                    "{cell}: the tool failed: {}",
                    blocks[2]
                );
                assert!(
                    blocks[3]["text"].as_str().unwrap().starts_with("done: "),
                    "{cell}"
                );
                assert_eq!(counters(&usage), zero_counters_but(counter, 1), "{cell}");
                // Two rounds of 100 + 10 tokens, plus what a nested call used.
                let (nested_in, nested_out) = match tool {
                    "advisor" => (21, 9),
                    "image_generation" => (7, 50),
                    _ => (0, 0),
                };
                assert_eq!(usage["input_tokens"], 200 + nested_in, "{cell}: {usage}");
                assert_eq!(usage["output_tokens"], 20 + nested_out, "{cell}: {usage}");
            }
        }
    }
    // What the tools produced, as the client sees it.
    let res = post(
        &s.gw.url,
        &body(
            "up-loop",
            false,
            json!([
                declaration("web_search"),
                declaration("web_fetch"),
                declaration("image_generation")
            ]),
            &format!("See {}", s.page()),
        ),
    )
    .await;
    let (blocks, _, _) = content_and_usage(&res, false);
    let search = blocks
        .iter()
        .find(|b| b["type"] == "web_search_tool_result")
        .unwrap();
    assert_eq!(search["content"][0]["url"], "https://example.org/lyon");
    assert_eq!(search["content"][0]["type"], "web_search_result");
    let fetch = blocks
        .iter()
        .find(|b| b["type"] == "web_fetch_tool_result")
        .unwrap();
    assert_eq!(fetch["content"]["content"]["title"], "Lyon page");
    assert!(fetch["content"]["content"]["source"]["data"]
        .as_str()
        .unwrap()
        .contains("Hello from Lyon."));
    let image = blocks
        .iter()
        .find(|b| b["type"] == "image_generation_tool_result")
        .unwrap();
    assert_eq!(
        image["content"]["source"],
        json!({"type":"base64","media_type":"image/png","data":PNG})
    );
    s.stop().await;
}

#[actix_web::test]
async fn all_five_tools_together_in_one_round() {
    let s = Setup::start();
    let tools = json!([
        "datetime",
        "web_search",
        "web_fetch",
        "advisor",
        "image_generation"
    ]
    .map(declaration));
    for kind in ["up", "oai"] {
        for stream in [false, true] {
            let res = post(
                &s.gw.url,
                &body(
                    &format!("{kind}-loop"),
                    stream,
                    tools.clone(),
                    &format!("Use {}", s.page()),
                ),
            )
            .await;
            let (blocks, usage, stop) = content_and_usage(&res, stream);
            assert_eq!(stop, "end_turn");
            assert_eq!(
                types(&blocks),
                [
                    "text",
                    "server_tool_use",
                    "datetime_tool_result",
                    "server_tool_use",
                    "web_search_tool_result",
                    "server_tool_use",
                    "web_fetch_tool_result",
                    "server_tool_use",
                    "advisor_tool_result",
                    "server_tool_use",
                    "image_generation_tool_result",
                    "text"
                ],
                "{kind} {stream}"
            );
            assert_eq!(
                counters(&usage),
                json!({"web_search_requests":1,"web_fetch_requests":1,"datetime_requests":1,"advisor_requests":1,"image_generation_requests":1})
            );
            // The model saw every result in round 2.
            let done = blocks.last().unwrap()["text"].as_str().unwrap();
            assert!(
                done.contains("Europe/Paris")
                    && done.contains("Sunny in Lyon")
                    && done.contains("Hello from upstream"),
                "{done}"
            );
        }
    }
    s.stop().await;
}

#[actix_web::test]
async fn a_client_call_in_the_same_round_ends_the_loop_after_the_gateway_calls() {
    let s = Setup::start();
    let tools = json!([declaration("datetime"), {"name":"get_weather","input_schema":{"type":"object","properties":{}}}]);
    for kind in ["up", "oai"] {
        for stream in [false, true] {
            let res = post(
                &s.gw.url,
                &body(&format!("{kind}-loop-client"), stream, tools.clone(), ""),
            )
            .await;
            let (blocks, usage, stop) = content_and_usage(&res, stream);
            assert_eq!(stop, "tool_use", "{kind} {stream}");
            assert_eq!(
                types(&blocks),
                [
                    "text",
                    "server_tool_use",
                    "datetime_tool_result",
                    "tool_use"
                ]
            );
            assert_eq!(blocks[3]["name"], "get_weather");
            assert_eq!(counters(&usage)["datetime_requests"], 1);
            assert_eq!(usage["input_tokens"], 100, "one round");
        }
    }
    s.stop().await;
}

#[actix_web::test]
async fn max_uses_answers_the_extra_calls_unexecuted() {
    let s = Setup::start();
    let tools = json!([{"type":"gateway:datetime","max_uses":1}]);
    for stream in [false, true] {
        let res = post(&s.gw.url, &body("up-loop-twice", stream, tools.clone(), "")).await;
        let (blocks, usage, _) = content_and_usage(&res, stream);
        assert_eq!(
            types(&blocks),
            [
                "text",
                "server_tool_use",
                "datetime_tool_result",
                "server_tool_use",
                "datetime_tool_result",
                "text"
            ]
        );
        assert_eq!(
            blocks[4]["content"],
            json!({"type":"datetime_tool_result_error","error_code":"max_uses_exceeded"})
        );
        assert_eq!(counters(&usage)["datetime_requests"], 1);
        assert!(
            blocks[5]["text"]
                .as_str()
                .unwrap()
                .contains("max_uses_exceeded"),
            "the model saw the error"
        );
    }
    s.stop().await;
}

#[actix_web::test]
async fn tool_failures_are_results_with_their_codes() {
    let s = Setup::with("");
    // web_fetch of a URL that answers 404 → url_not_accessible; a search engine that is down.
    let system = format!("Fetch {}/missing", s.services.url);
    let res = post(
        &s.gw.url,
        &body(
            "oai-loop-web_fetch",
            false,
            json!([declaration("web_fetch")]),
            &system,
        ),
    )
    .await;
    let (blocks, usage, _) = content_and_usage(&res, false);
    assert_eq!(
        blocks[2]["content"],
        json!({"type":"web_fetch_tool_result_error","error_code":"url_not_accessible"})
    );
    assert_eq!(
        counters(&usage)["web_fetch_requests"],
        1,
        "it reached the network"
    );
    assert!(blocks[3]["text"]
        .as_str()
        .unwrap()
        .contains("url_not_accessible"));
    // A declaration the config cannot honour is a 400 before anything runs.
    let v = post(
        &s.gw.url,
        &body(
            "up-loop",
            false,
            json!([{"type":"gateway:datetime","timezone":"Mars/Olympus"}]),
            "",
        ),
    )
    .await
    .assert_error(400, "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("tools.0.timezone"),
        "{v}"
    );
    s.stop().await;
}

#[actix_web::test]
async fn pause_turn_at_max_rounds_then_the_continuation_resumes() {
    let s = Setup::start();
    let tools = json!([declaration("datetime")]);
    for kind in ["up", "oai"] {
        for stream in [false, true] {
            let res = post(
                &s.gw.url,
                &body(&format!("{kind}-loop-forever"), stream, tools.clone(), ""),
            )
            .await;
            let (blocks, usage, stop) = content_and_usage(&res, stream);
            assert_eq!(stop, "pause_turn", "{kind} {stream}");
            // max_rounds = 3: three rounds, each one call and its result.
            assert_eq!(
                blocks
                    .iter()
                    .filter(|b| b["type"] == "datetime_tool_result")
                    .count(),
                3
            );
            assert_eq!(counters(&usage)["datetime_requests"], 3);
            assert_eq!(usage["input_tokens"], 300);
            // Continuation: the content goes back as the final assistant message.
            let mut next = body(&format!("{kind}-loop"), stream, tools.clone(), "");
            next["messages"] =
                json!([{"role":"user","content":"Go."},{"role":"assistant","content":blocks}]);
            let res = post(&s.gw.url, &next).await;
            let (blocks, _, stop) = content_and_usage(&res, stream);
            assert_eq!(stop, "end_turn");
            assert_eq!(types(&blocks), ["text"]);
            assert!(
                blocks[0]["text"].as_str().unwrap().starts_with("done: "),
                "{blocks:?}"
            );
        }
    }
    s.stop().await;
}

#[actix_web::test]
async fn a_trailing_call_without_result_runs_before_the_upstream_resumes() {
    let s = Setup::start();
    let tools = json!([declaration("datetime")]);
    let mut b = body("up-loop", false, tools, "");
    b["messages"] = json!([{"role":"user","content":"Go."},
        {"role":"assistant","content":[{"type":"server_tool_use","id":"srvtoolu_gw_pending0000000000000000","name":"datetime","input":{"timezones":["Asia/Tokyo"]}}]}]);
    let res = post(&s.gw.url, &b).await;
    let (blocks, usage, _) = content_and_usage(&res, false);
    assert_eq!(types(&blocks), ["datetime_tool_result", "text"]);
    assert_eq!(
        blocks[0]["tool_use_id"],
        "srvtoolu_gw_pending0000000000000000"
    );
    assert!(blocks[1]["text"].as_str().unwrap().contains("Asia/Tokyo"));
    assert_eq!(counters(&usage)["datetime_requests"], 1);
    s.stop().await;
}

/// History with gateway blocks from one upstream kind continues on the other.
#[actix_web::test]
async fn history_replays_on_the_other_upstream_kind() {
    let s = Setup::start();
    let tools = json!([declaration("datetime")]);
    for (first, second) in [("up", "oai"), ("oai", "up")] {
        let res = post(
            &s.gw.url,
            &body(&format!("{first}-loop"), false, tools.clone(), ""),
        )
        .await;
        let (blocks, _, _) = content_and_usage(&res, false);
        let mut next = body(&format!("{second}-text"), false, tools.clone(), "");
        next["messages"] = json!([{"role":"user","content":"Go."},{"role":"assistant","content":blocks},{"role":"user","content":"Thanks. And now?"}]);
        let res = post(&s.gw.url, &next).await;
        assert_eq!(
            res.status,
            200,
            "{first}→{second}: {}",
            String::from_utf8_lossy(&res.body)
        );
        if second == "oai" {
            let sent = s.oai.last().json();
            let msgs = sent["messages"].as_array().unwrap();
            let call = msgs
                .iter()
                .find(|m| m["tool_calls"].is_array())
                .expect("a tool-call turn");
            assert_eq!(
                call["tool_calls"][0]["function"]["name"],
                "gateway_datetime"
            );
            let result = msgs
                .iter()
                .find(|m| m["role"] == "tool")
                .expect("a tool result");
            assert!(result["content"].as_str().unwrap().contains("Europe/Paris"));
        } else {
            let sent = s.up.last().json();
            let msgs = sent["messages"].as_array().unwrap();
            assert!(msgs
                .iter()
                .any(|m| m["content"].as_array().is_some_and(|c| c
                    .iter()
                    .any(|b| b["type"] == "tool_use" && b["name"] == "gateway_datetime"))));
            assert!(msgs.iter().any(|m| m["content"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"))));
            assert!(
                !sent.to_string().contains("srvtoolu_gw_") || sent.to_string().contains("tool_use"),
                "no raw gateway blocks upstream"
            );
            assert!(!sent["messages"]
                .to_string()
                .contains("datetime_tool_result"));
        }
    }
    s.stop().await;
}

/// A client that goes away while a tool runs stops the loop: the tool's request is dropped.
#[actix_web::test]
async fn disconnect_mid_loop_cancels_the_running_tool() {
    let hang = MockUpstream::start(Arc::new(|_| Reply::Hang));
    let s = Setup::start();
    let b = body(
        "up-loop-web_fetch",
        true,
        json!([declaration("web_fetch")]),
        &format!("Fetch {}/slow", hang.url),
    );
    // The live text of round 1 precedes the call; the fetch is then under way.
    let sock = raw_request(&s.gw.url, &b, Some("Using tools.")).await;
    hang.wait_requests(1).await;
    drop(sock);
    hang.wait_dropped(1).await;
    s.stop().await;
    hang.stop().await;
}

#[actix_web::test]
async fn without_gateway_calls_the_loop_only_adds_the_counters() {
    let s = Setup::start();
    for stream in [false, true] {
        let res = post(
            &s.gw.url,
            &body("up-text", stream, json!([declaration("datetime")]), ""),
        )
        .await;
        let (blocks, usage, stop) = content_and_usage(&res, stream);
        assert_eq!(stop, "end_turn");
        assert_eq!(types(&blocks), ["text"]);
        assert_eq!(counters(&usage), zero_counters_but("datetime_requests", 0));
    }
    // The upstream got the gateway tool as a function definition, never the gateway type.
    let sent = s.up.last().json();
    assert_eq!(sent["tools"][0]["name"], "gateway_datetime");
    assert!(sent["tools"][0]["input_schema"].is_object());
    s.stop().await;
}

/// The native `web_search_20250305` shape: passed through to an Anthropic provider that runs it
/// natively; executed by the gateway, with the same blocks, everywhere else.
#[actix_web::test]
async fn native_web_search_shape_passes_through_or_runs_in_the_gateway() {
    let s = Setup::with("");
    let native = json!({"type":"web_search_20250305","name":"web_search","max_uses":2});
    // The mock provider with tool_mode = "auto" is not native: the gateway runs the search.
    for stream in [false, true] {
        let mut b = body("mock-model", stream, json!([native.clone()]), "");
        b["messages"] = json!([{"role":"user","content":"lyon weather"}]);
        let res = post(&s.gw.url, &b).await;
        let (blocks, usage, _) = content_and_usage(&res, stream);
        assert_eq!(
            types(&blocks),
            ["server_tool_use", "web_search_tool_result", "text"],
            "{blocks:?}"
        );
        assert_eq!(blocks[0]["name"], "web_search");
        assert_eq!(blocks[1]["content"][0]["title"], "Lyon forecast");
        assert_eq!(counters(&usage)["web_search_requests"], 1);
    }
    s.stop().await;

    // A provider that runs web_search natively gets the declaration untouched.
    let up = MockUpstream::anthropic();
    let text = base_config(&up.url).replace(
        "api_key_env = \"UPSTREAM_KEY\"",
        "api_key_env = \"UPSTREAM_KEY\"\nnative_tools = [\"web_search\"]",
    );
    let gw = TestGateway::start(&text);
    let res = post(
        &gw.url,
        &body("up-text", false, json!([native.clone()]), ""),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        crate::common::upstream::text_message("text", "Hello from upstream"),
        "passed through untouched"
    );
    assert_eq!(up.last().json()["tools"], json!([native]));
    gw.stop().await;
    up.stop().await;
}

#[actix_web::test]
async fn tool_choice_forms_are_rewritten_and_relaxed_after_round_one() {
    let s = Setup::start();
    for choice in [
        json!("gateway:datetime"),
        json!({"type":"tool","name":"ai-stats:datetime"}),
        json!({"type":"tool","name":"datetime"}),
        json!("any"),
    ] {
        let mut b = body("up-loop", false, json!([declaration("datetime")]), "");
        b["tool_choice"] = choice.clone();
        let before = s.up.count();
        let res = post(&s.gw.url, &b).await;
        assert_eq!(
            res.status,
            200,
            "{choice}: {}",
            String::from_utf8_lossy(&res.body)
        );
        let sent = s.up.requests();
        let round1 = sent[before].json();
        let round2 = sent[before + 1].json();
        let expected = if choice == "any" {
            json!({"type":"any"})
        } else {
            json!({"type":"tool","name":"gateway_datetime"})
        };
        assert_eq!(round1["tool_choice"], expected, "{choice}");
        assert_eq!(
            round2["tool_choice"],
            json!({"type":"auto"}),
            "{choice}: round 2 may end the loop"
        );
    }
    let mut b = body("up-loop", false, json!([declaration("datetime")]), "");
    b["tool_choice"] = json!("gateway:web_search");
    post(&s.gw.url, &b)
        .await
        .assert_error(400, "invalid_request_error");
    s.stop().await;
}

/// While a tool runs, a stream that would otherwise be silent carries pings.
#[actix_web::test]
async fn pings_while_a_tool_runs() {
    let slow = HttpMock::start(|_| {
        MockReply::Delayed(
            std::time::Duration::from_millis(400),
            Box::new(MockReply::Body(
                200,
                "text/plain",
                bytes::Bytes::from_static(b"slow page"),
            )),
        )
    });
    let s = Setup::with("");
    let text = {
        // The same setup, with pings every 100 ms.
        let up = &s.up.url;
        let mut t = openai_config(&s.oai.url, up);
        t = t.replace(
            "[stream]\nusage_wait_ms = 300",
            "[stream]\nusage_wait_ms = 300\nping_interval_ms = 100",
        );
        t.push_str("\n[tools.web_fetch]\nallow_private_networks = true\n");
        t
    };
    let gw = TestGateway::start(&text);
    let res = post(
        &gw.url,
        &body(
            "up-loop",
            true,
            json!([declaration("web_fetch")]),
            &format!("Fetch {}/x", slow.url),
        ),
    )
    .await;
    let events = res.events();
    assert_stream_grammar(&events);
    let call = events
        .iter()
        .position(|(n, d)| {
            n == "content_block_start" && d["content_block"]["type"] == "server_tool_use"
        })
        .unwrap();
    let pings = events[..call].iter().filter(|(n, _)| n == "ping").count();
    assert!(
        pings >= 2,
        "pings while the fetch ran: {:?}",
        events.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    gw.stop().await;
    s.stop().await;
}
