//! Black-box fuzzing over real HTTP: a seeded generator mutates valid requests (structure, bytes
//! and headers) and sends them to a gateway with Anthropic and OpenAI upstreams and the mock
//! provider. Every answer is a status from the allowed set, with a `request-id` and (when not
//! 200) the Anthropic error envelope; nothing panics, nothing hangs (gateway.md §1, §6).
//!
//! The seed is fixed, so a failure reproduces: it names the case index and what was sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use crate::common::openai_upstream::openai_config;
use crate::common::upstream::MockUpstream;
use crate::common::*;

const CASES: usize = 5_000;
const SEED: u64 = 0x5eed_a16e_f022;
const CONCURRENCY: usize = 16;
const MAX_BODY: usize = 32 * 1024;
/// Per request, head and body: far above any honest answer here, so only a hang reaches it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
const ALLOWED: [u16; 7] = [200, 400, 401, 403, 404, 413, 429];

/// SplitMix64: small, seedable, and the same on every platform and crate version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Healthy models of every kind (mock, Anthropic, OpenAI, mixed), an alias, and unknown ids.
/// Scripted upstream failures are left out: their 5xx answers are right, not bugs.
const MODELS: [&str; 12] = [
    "mock-model",
    "mock-model",
    "mock-alias",
    "up-text",
    "up-tool",
    "oai-text",
    "oai-tool",
    "oai-parallel",
    "oai-reasoning",
    "oai-cached",
    "mixed",
    "no-such-model",
];

const STRINGS: [&str; 24] = [
    "",
    " ",
    "user",
    "assistant",
    "system",
    "text",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "ephemeral",
    "auto",
    "any",
    "none",
    "tool",
    "toolu_01",
    "srvtoolu_01",
    "gateway:datetime",
    "get_weather",
    "mock-model",
    "\u{0}",
    "h\u{e9}llo \u{1f600} \u{202e}",
    "\\u0000\"}",
    "2023-06-01",
];

/// Numbers written as raw JSON text (some have no `Value` form).
const NUMBERS: [&str; 12] = [
    "0",
    "-1",
    "1.5",
    "1e400",
    "-1e400",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1e-400",
    "0.0000000000000000000001",
    "4294967296",
];

const NUMBER_MARK: &str = "@@number@@";
const DEEP_MARK: &str = "@@deep@@";

fn custom_tool() -> Value {
    json!({"name":"get_weather","description":"Weather for a city","input_schema":{
        "type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}},
        "required":["city"]}})
}

/// A valid request of one of several shapes.
fn base(rng: &mut Rng) -> Value {
    let model = *rng.pick(&MODELS);
    let mut b = json!({"model": model, "max_tokens": 1 + rng.below(200), "messages": []});
    let messages = match rng.below(6) {
        0 => json!([{"role":"user","content":"Hello there"}]),
        1 => {
            json!([{"role":"user","content":[{"type":"text","text":"Describe","cache_control":{"type":"ephemeral"}},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]}])
        }
        2 => json!([
            {"role":"user","content":"weather in Lyon?"},
            {"role":"assistant","content":[{"type":"text","text":"checking"},
                {"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"city":"Lyon"}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"12 C"}]}]),
        3 => json!([
            {"role":"user","content":"think"},
            {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"text","text":"ok"}]},
            {"role":"user","content":"again"}]),
        4 => {
            json!([{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"doc"}},
            {"type":"text","text":"summarise"}]}])
        }
        _ => {
            json!([{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}])
        }
    };
    b["messages"] = messages;
    let extras: [(&str, Value); 16] = [
        ("stream", json!(true)),
        ("stream", json!(true)),
        ("system", json!("You are terse.")),
        (
            "system",
            json!([{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}]),
        ),
        ("temperature", json!(0.5)),
        ("top_p", json!(0.9)),
        ("top_k", json!(5)),
        ("stop_sequences", json!(["STOP"])),
        ("metadata", json!({"user_id":"u-1"})),
        ("tools", json!([custom_tool()])),
        ("tools", json!([{"type":"gateway:datetime"}])),
        ("tools", json!([custom_tool(), {"type":"gateway:datetime"}])),
        ("tool_choice", json!({"type":"auto"})),
        ("thinking", json!({"type":"enabled","budget_tokens":1024})),
        ("session_id", json!("sess-fuzz")),
        (
            "provider_options",
            json!({"openai":{"seed":1},"anthropic":{"top_k":2}}),
        ),
    ];
    for _ in 0..rng.below(4) {
        let (k, v) = rng.pick(&extras);
        b[*k] = v.clone();
    }
    if rng.chance(5) {
        b["debug"] = json!({"enabled": true});
    }
    if rng.chance(5) {
        b["provider"] = json!({"order":["oai","up"],"allow_fallbacks":true});
    }
    b
}

/// Any value, small.
fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 2 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.next() as i64 % 100_000),
        3 => json!(NUMBER_MARK),
        4 => json!(*rng.pick(&STRINGS)),
        5 => Value::Array(
            (0..rng.below(3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(3) {
                m.insert(rng.pick(&STRINGS).to_string(), random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// Invalid (or odd) tool declarations.
fn odd_tool(rng: &mut Rng) -> Value {
    let shapes = [
        json!({}),
        json!({"name":""}),
        json!({"name":"has space","input_schema":{"type":"object"}}),
        json!({"name":"x".repeat(300),"input_schema":{"type":"object"}}),
        json!({"name":"w","input_schema":"object"}),
        json!({"name":"w","input_schema":{"type":"string"}}),
        json!({"name":"w","input_schema":{"type":"object"},"cache_control":{"type":"bogus"}}),
        json!({"type":"gateway:nope"}),
        json!({"type":"gateway:datetime","timezone":"Not/AZone"}),
        json!({"type":"gateway:datetime","max_uses":-1}),
        json!({"type":"gateway:advisor","model":"no-such-model"}),
        json!({"type":"gateway:advisor","model":"mock-model","name":"adv"}),
        json!({"type":"gateway:web_fetch","max_uses":2,"allowed_domains":[1]}),
        json!({"type":"web_search_20250305","name":"web_search","user_location":{"type":"approximate","zzz":1}}),
        json!({"type":"web_fetch_20250910","name":"web_fetch","blocked_domains":"x"}),
        json!({"type":"bash_20250124","name":"bash"}),
        json!({"type":"custom","name":"w","input_schema":{"type":"object","properties":[]}}),
        json!("get_weather"),
        json!(null),
    ];
    rng.pick(&shapes).clone()
}

/// JSON pointers of every node (the root is "").
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                pointers(
                    c,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// One structural mutation at a random node; returns what it did.
fn mutate(rng: &mut Rng, body: &mut Value) -> String {
    let mut ptrs = Vec::new();
    pointers(body, String::new(), &mut ptrs);
    let ptr = rng.pick(&ptrs).clone();
    let (parent, key) = match ptr.rfind('/') {
        Some(i) => (ptr[..i].to_string(), ptr[i + 1..].to_string()),
        None => (String::new(), String::new()),
    };
    let op = rng.below(10);
    let node = body.pointer_mut(&ptr).expect("pointer from the walk");
    match op {
        0 if !ptr.is_empty() => {
            match body.pointer_mut(&parent) {
                Some(Value::Object(m)) => {
                    m.shift_remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(a)) => {
                    a.remove(key.parse::<usize>().unwrap());
                }
                _ => {}
            }
            format!("delete {ptr}")
        }
        1 => {
            *node = random_value(rng, 0);
            format!("swap {ptr}")
        }
        2 => {
            if let Value::Array(a) = node {
                if let Some(first) = a.first().cloned() {
                    for _ in 0..1 + rng.below(3) {
                        a.push(first.clone());
                    }
                }
            } else if let Value::Object(m) = node {
                if let Some((k, v)) = m.iter().next().map(|(k, v)| (k.clone(), v.clone())) {
                    // Same value under a case-changed key; exact duplicate keys are textual.
                    m.insert(k.to_uppercase(), v);
                }
            }
            format!("duplicate in {ptr}")
        }
        3 => {
            *node = json!(DEEP_MARK);
            format!("deep {ptr}")
        }
        4 => {
            *node = json!(NUMBER_MARK);
            format!("number {ptr}")
        }
        5 => {
            if let Value::Object(m) = node {
                m.insert(format!("zz_unknown_{}", rng.below(9)), random_value(rng, 1));
            } else if let Some(Value::Object(m)) = body.pointer_mut(&parent) {
                m.insert("zz_unknown".into(), random_value(rng, 1));
            }
            format!("unknown field in {ptr}")
        }
        6 => {
            *node = json!(*rng.pick(&STRINGS));
            format!("string {ptr}")
        }
        7 => {
            *node = match node {
                Value::Array(_) => json!({}),
                Value::Object(_) => json!([]),
                _ => json!("x".repeat(1 + rng.below(2000))),
            };
            format!("empty/long {ptr}")
        }
        _ => {
            let tool = odd_tool(rng);
            match body.get_mut("tools").and_then(Value::as_array_mut) {
                Some(tools) if !tools.is_empty() && rng.chance(50) => {
                    let i = rng.below(tools.len());
                    tools[i] = tool;
                }
                Some(tools) => tools.push(tool),
                None => {
                    if let Some(m) = body.as_object_mut() {
                        m.insert("tools".into(), json!([tool]));
                    }
                }
            }
            if let Some(m) = body.as_object_mut().filter(|_| rng.chance(30)) {
                m.insert("tool_choice".into(), random_value(rng, 1));
            }
            "tool shape".into()
        }
    }
}

/// The body text, markers replaced by raw JSON no `Value` holds (huge numbers, deep nesting), and
/// sometimes a key written twice.
fn serialize(rng: &mut Rng, body: &Value) -> Vec<u8> {
    let mut text = body.to_string();
    while let Some(i) = text.find(&format!("\"{NUMBER_MARK}\"")) {
        let n = *rng.pick(&NUMBERS);
        text.replace_range(i..i + NUMBER_MARK.len() + 2, n);
    }
    while let Some(i) = text.find(&format!("\"{DEEP_MARK}\"")) {
        let depth = *rng.pick(&[64, 127, 129, 1000, 5000]);
        let (open, close) = if rng.chance(50) {
            ("[", "]")
        } else {
            ("{\"a\":", "}")
        };
        let deep = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        text.replace_range(i..i + DEEP_MARK.len() + 2, &deep);
    }
    if rng.chance(5) && text.starts_with('{') {
        let dup = *rng.pick(&[
            "\"model\":\"no-such-model\",",
            "\"max_tokens\":-5,",
            "\"messages\":[],",
            "\"stream\":\"yes\",",
        ]);
        text.insert_str(1, dup);
    }
    text.into_bytes()
}

/// One byte-level mutation.
fn mangle(rng: &mut Rng, bytes: &mut Vec<u8>) -> String {
    let at = rng.below(bytes.len() + 1);
    match rng.below(8) {
        0 => {
            bytes.truncate(at);
            format!("truncate at {at}")
        }
        1 => {
            let bad: &[u8] = rng.pick::<&[u8]>(&[
                &[0xff][..],
                &[0xc3],
                &[0xed, 0xa0, 0x80],
                &[0xf4, 0x90, 0x80, 0x80],
                &[0xc0, 0xaf],
            ]);
            bytes.splice(at..at, bad.iter().copied());
            format!("invalid UTF-8 at {at}")
        }
        2 => {
            bytes.insert(at, 0);
            format!("NUL at {at}")
        }
        3 => {
            let end = (at + 1 + rng.below(16)).min(bytes.len());
            for b in &mut bytes[at.min(end)..end] {
                *b = rng.next() as u8;
            }
            format!("random bytes at {at}..{end}")
        }
        4 => {
            *bytes = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
            "random body".into()
        }
        5 => {
            *bytes = rng
                .pick(&[
                    "",
                    "[]",
                    "null",
                    "\"x\"",
                    "1",
                    "{}",
                    "{\"model\":}",
                    " \t\n",
                ])
                .as_bytes()
                .to_vec();
            "not an object".into()
        }
        6 => {
            let prefix: &[u8] = rng.pick::<&[u8]>(&[&b"\xef\xbb\xbf"[..], b"  \n", b"\x00"]);
            bytes.splice(0..0, prefix.iter().copied());
            "prefix".into()
        }
        _ => {
            // Past max_body_bytes: a 413 whichever way the size is found.
            let pad = format!(
                "{{\"model\":\"mock-model\",\"max_tokens\":1,\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
                "p".repeat(MAX_BODY)
            );
            *bytes = pad.into_bytes();
            "oversize".into()
        }
    }
}

/// Request headers: content type, version, beta, auth, strictness and session, each sometimes
/// absent or odd. Values are raw bytes (some not UTF-8).
fn headers(rng: &mut Rng) -> Vec<(&'static str, Vec<u8>)> {
    let mut h: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let add = |h: &mut Vec<(&'static str, Vec<u8>)>, name: &'static str, v: &[u8]| {
        h.push((name, v.to_vec()))
    };
    match rng.below(14) {
        0..=6 => add(&mut h, "x-api-key", KEY.as_bytes()),
        7 => add(&mut h, "authorization", b"Bearer sk-test-key"),
        8 => add(&mut h, "authorization", b"bearer sk-test-key"),
        9 => {
            add(&mut h, "x-api-key", b"sk-wrong");
            add(&mut h, "authorization", b"Basic c2stdGVzdA==");
        }
        10 => {}
        11 => {
            add(&mut h, "x-api-key", b"");
            add(&mut h, "x-api-key", b"sk-\xe9\xff");
        }
        12 => add(&mut h, "x-api-key", b"sk-limited"),
        _ => add(&mut h, "x-api-key", b"sk-narrow"),
    }
    if !rng.chance(15) {
        let ct: &[u8] = rng.pick::<&[u8]>(&[
            &b"application/json"[..],
            b"application/json",
            b"application/json; charset=utf-8",
            b"text/plain",
            b"multipart/form-data; boundary=x",
            b"application/x-www-form-urlencoded",
            b"",
            b"\xe9/\xff",
        ]);
        add(&mut h, "content-type", ct);
    }
    if rng.chance(40) {
        let v: &[u8] = rng.pick::<&[u8]>(&[
            &b"2023-06-01"[..],
            b"2026-10-21",
            b"2023-01-01",
            b"",
            b"latest",
            b"2023-06-01\xff",
        ]);
        add(&mut h, "anthropic-version", v);
    }
    if rng.chance(20) {
        let v: &[u8] = rng.pick::<&[u8]>(&[
            &b"prompt-caching-2024-07-31"[..],
            b"fine-grained-tool-streaming-2025-05-14,interleaved-thinking-2025-05-14",
            b"",
            b",,,",
            b"unknown-beta",
            b"\xe9",
        ]);
        add(&mut h, "anthropic-beta", v);
    }
    if rng.chance(20) {
        let v: &[u8] =
            rng.pick::<&[u8]>(&[&b"warn"[..], b"error", b"off", b"", b"WARN", b"strict"]);
        add(&mut h, "x-aistats-strictness", v);
    }
    if rng.chance(20) {
        let long = "s".repeat(600);
        let v: Vec<u8> = match rng.below(4) {
            0 => b"sess-1".to_vec(),
            1 => Vec::new(),
            2 => long.into_bytes(),
            _ => b"s\xe9ss".to_vec(),
        };
        h.push(("x-session-id", v));
    }
    h
}

struct Case {
    index: usize,
    path: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    what: Vec<String>,
}

fn case(rng: &mut Rng, index: usize) -> Case {
    let mut body = base(rng);
    let mut what = Vec::new();
    // A few cases stay valid, so successful paths (streams, tool loops) are exercised too.
    let mutations = *rng.pick(&[0, 0, 1, 1, 2, 3, 4]);
    for _ in 0..mutations {
        what.push(mutate(rng, &mut body));
    }
    let mut bytes = serialize(rng, &body);
    if rng.chance(20) {
        what.push(mangle(rng, &mut bytes));
    }
    let path = if rng.chance(10) {
        "/v1/messages/count_tokens"
    } else {
        "/v1/messages"
    };
    Case {
        index,
        path,
        headers: headers(rng),
        body: bytes,
        what,
    }
}

impl Case {
    fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
            .collect();
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(600).collect();
        format!(
            "case {} {} [{}] headers {headers:?}\n  body {body}",
            self.index,
            self.path,
            self.what.join(", ")
        )
    }
}

/// Sends one case; `Err` says what was wrong with the answer.
async fn run(client: &awc::Client, url: &str, case: &Case) -> Result<(), String> {
    let exchange = async {
        let mut req = client.post(format!("{url}{}", case.path));
        for (k, v) in &case.headers {
            let v = awc::http::header::HeaderValue::from_bytes(v).expect("no CR or LF");
            req = req.append_header((*k, v));
        }
        let mut res = req
            .send_body(case.body.clone())
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        Ok::<_, String>(collect(&mut res).await)
    };
    let res = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer within the client timeout".to_string())??;
    let body = String::from_utf8_lossy(&res.body);
    let status = res.status;
    if !ALLOWED.contains(&status) {
        return Err(format!("status {status}: {body}"));
    }
    let rid = res
        .header("request-id")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("status {status} without request-id"))?;
    if status == 200 {
        // A stream must at least be well-formed SSE with JSON payloads.
        if res
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
        {
            let mut p = aigw::protocol::sse::SseParser::new();
            let mut events = Vec::new();
            p.push(&res.body, &mut events)
                .map_err(|_| "SSE overflow".to_string())?;
            p.finish(&mut events);
            if events.is_empty() {
                return Err("an empty 200 stream".into());
            }
            for e in &events {
                serde_json::from_slice::<Value>(&e.data)
                    .map_err(|err| format!("stream event not JSON ({err}): {body}"))?;
            }
            // Every upstream here is healthy: a stream ends with message_stop.
            if events.last().map(|e| e.name()) != Some("message_stop") {
                return Err(format!(
                    "a 200 stream without message_stop at its end: {body}"
                ));
            }
        } else {
            serde_json::from_slice::<Value>(&res.body)
                .map_err(|e| format!("200 body not JSON ({e}): {body}"))?;
        }
        return Ok(());
    }
    if res.header("content-type") != Some("application/json") {
        return Err(format!(
            "status {status}: content type {:?}",
            res.header("content-type")
        ));
    }
    let v: Value =
        serde_json::from_slice(&res.body).map_err(|e| format!("status {status}: {e}: {body}"))?;
    let envelope = v["type"] == "error"
        && v["error"]["type"].as_str().is_some_and(|t| !t.is_empty())
        && v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
        && v["request_id"] == rid;
    if !envelope {
        return Err(format!("status {status}: not the error envelope: {body}"));
    }
    Ok(())
}

/// Panics anywhere but this test's own thread (gateway workers, actors), counted by a hook.
fn count_panics() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let test_thread = std::thread::current().id();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != test_thread {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    count
}

#[actix_web::test]
async fn mutated_requests_get_clean_answers() {
    let panics = count_panics();
    let anthropic = MockUpstream::anthropic();
    let openai = MockUpstream::openai();
    let config = openai_config(&openai.url, &anthropic.url).replace(
        "workers = 1",
        &format!("workers = 1\nmax_body_bytes = {MAX_BODY}"),
    );
    let gw = TestGateway::start(&config);

    let mut rng = Rng(SEED);
    let cases: Vec<Case> = (0..CASES).map(|i| case(&mut rng, i)).collect();
    let client = awc::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .max_http_version(awc::http::Version::HTTP_11)
        .finish();
    let failures: Vec<String> = futures_util::stream::iter(&cases)
        .map(|c| {
            let (client, url) = (&client, &gw.url);
            async move {
                run(client, url, c)
                    .await
                    .err()
                    .map(|e| format!("{}\n  => {e}", c.describe()))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;

    // Still healthy.
    let res = post(&gw.url, &request("mock-model", false)).await;
    assert_eq!(res.status, 200);

    let mut statuses = std::collections::BTreeMap::new();
    let conn = gw.flush_log().await;
    let mut stmt = conn
        .prepare("SELECT status, COUNT(*) FROM requests GROUP BY status")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .unwrap();
    for r in rows {
        let (s, n) = r.unwrap();
        statuses.insert(s, n);
    }
    eprintln!("statuses: {statuses:?}");
    let shown: Vec<&String> = failures.iter().take(10).collect();
    assert!(
        failures.is_empty(),
        "{} of {CASES} cases failed; the first:\n{}",
        failures.len(),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the gateway panicked");
    // Every request got its row, and the mix reached both refusals and successes.
    assert_eq!(
        statuses.values().sum::<i64>(),
        CASES as i64 + 1,
        "{statuses:?}"
    );
    for s in [200, 400, 401, 404, 413] {
        assert!(
            statuses.get(&s).is_some_and(|n| *n > 0),
            "no {s}: {statuses:?}"
        );
    }
    assert!(
        openai.count() > 0 && anthropic.count() > 0,
        "both upstreams served"
    );
}

/// Found by the test above: the local `count_tokens` estimate ran on the actix worker, so the
/// first one (which builds the tokenizer) or one over a large body held up every other
/// connection of that worker (requests timed out with 408, pooled connections were reset).
/// Here the Anthropic deployment fails, so the gateway estimates locally over 200 KB of text.
/// Once the upstream has seen the count, a `/healthz` on another connection is answered while
/// the count's own connection has received nothing yet (a blocked worker would write the count
/// first, and loopback delivers it before the later answer).
#[actix_web::test]
async fn a_local_token_estimate_does_not_hold_up_the_worker() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = MockUpstream::anthropic();
    let gw = TestGateway::start(&base_config(&upstream.url));
    let mut body = request("up-error-500", false);
    body["messages"][0]["content"] = json!("lorem ipsum dolor sit amet ".repeat(8_000));
    let body = body.to_string();
    let addr = gw.url.trim_start_matches("http://");
    let mut counting = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/messages/count_tokens HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    counting.write_all(head.as_bytes()).await.unwrap();
    counting.write_all(body.as_bytes()).await.unwrap();
    upstream.wait_requests(1).await;

    let health = get(&gw.url, "/healthz").await;
    assert_eq!(health.status, 200);
    let mut buf = vec![0u8; 64 * 1024];
    match counting.try_read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the count was answered before /healthz: {other:?}"),
    }
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("input_tokens") {
        let n = counting.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-gateway-token-estimate: true"),
        "{answer}"
    );
}
