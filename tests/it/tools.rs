//! Gateway tools driven through their `ToolActor`s against in-process loopback mocks: every search
//! engine's API, fetch targets (and the SSRF guard), the images endpoint, the advisor caller.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use aigw::config::{Config, WebFetchConfig};
use aigw::protocol::anthropic::Usage;
use aigw::state::AppState;
use aigw::tools::advisor::{AdvisorCaller, AdvisorFailure, AdvisorReply, AdvisorRequest};
use aigw::tools::ssrf::{AddressPolicy, FetchNet, SystemResolver};
use aigw::tools::web_fetch::WebFetch;
use aigw::tools::{
    CallContext, Execute, GatewayTool, ModelAccess, ToolActor, ToolActors, ToolCall, ToolOutcome,
    ToolSet,
};

use crate::common::tool_mocks::{ConnCounter, FakeResolver, HttpMock, Reply, Req};

const ENGINE_KEY: &str = "engine-key-7d1";
const IMAGE_KEY: &str = "sk-image-key-93b";

/// A config whose four engines and image provider point at `engines` / `images`.
fn config(engines: &str, images: &str, extra: &str) -> Config {
    let text = format!(
        r#"
auth.disabled = true
[[providers]]
name = "mock"
kind = "mock"
[[providers]]
name = "img"
kind = "openai"
base_url = "{images}/v1"
api_key_env = "IMAGE_KEY"
headers = {{ "x-team" = "tools" }}
[[models]]
id = "m"
deployments = [{{ provider = "mock", model = "x" }}]
[tools.web_search]
default_engine = "searx"
max_content_chars = 40
timeout_ms = 2000
[tools.web_search.engines]
searx = {{ kind = "searxng", base_url = "{engines}/searx" }}
exa = {{ kind = "exa", base_url = "{engines}/exa", api_key_env = "ENGINE_KEY" }}
tavily = {{ kind = "tavily", base_url = "{engines}/tavily", api_key_env = "ENGINE_KEY" }}
brave = {{ kind = "brave", base_url = "{engines}/brave", api_key_env = "ENGINE_KEY" }}
[tools.image_generation]
provider = "img"
model = "gpt-image-1"
{extra}
"#
    );
    Config::from_toml_with_env(&text, &|v| match v {
        "ENGINE_KEY" => Some(ENGINE_KEY.into()),
        "IMAGE_KEY" => Some(IMAGE_KEY.into()),
        _ => None,
    })
    .expect("valid config")
}

/// An address nothing listens on, for the engines or image provider a test does not use.
const UNUSED: &str = "http://127.0.0.1:9";

/// A config with no search engine, image provider or other tool settings at all.
fn bare_config() -> Config {
    Config::from_toml_with_env(
        "auth.disabled = true\n[[providers]]\nname = \"mock\"\nkind = \"mock\"\n[[models]]\nid = \"m\"\ndeployments = [{ provider = \"mock\", model = \"x\" }]\n",
        &|_| None,
    )
    .unwrap()
}

fn declare(config: &Config, tool: Value) -> Arc<GatewayTool> {
    let set = ToolSet::declare(&[tool], &config.tools, &|_| ModelAccess::Allowed).unwrap();
    set.tools()[0].clone()
}

/// Search engines: each answers in its own API's shape; queries steer failures.
fn engine_script(r: &Req) -> Reply {
    let q = r
        .param("q")
        .or_else(|| {
            serde_json::from_slice::<Value>(&r.body).ok()?["query"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    match q.as_str() {
        "ratelimit" => return Reply::Json(429, json!({"error":"slow down"})),
        "broken" => return Reply::Json(500, json!({"error":"boom"})),
        "garbage" => {
            return Reply::Body(200, "text/html", Bytes::from_static(b"<html>oops</html>"))
        }
        "slow" => {
            return Reply::Delayed(
                Duration::from_secs(10),
                Box::new(Reply::Json(200, json!({}))),
            )
        }
        _ => {}
    }
    let long = "x".repeat(100);
    match r.path.as_str() {
        "/searx/search" => Reply::Json(
            200,
            json!({"query": q, "number_of_results": 3, "results": [
            {"url":"https://spam.org/1","title":"Spam","content":"spam","engine":"ddg","publishedDate":null},
            {"url":"https://lyon.example/weather","title":"Lyon weather","content":long,"engine":"ddg","publishedDate":"2026-07-08T00:00:00"},
            {"url":"https://www.meteo.example/lyon","title":"Meteo","content":"Sunny","engine":"ddg"}
        ], "answers": [], "suggestions": []}),
        ),
        "/exa/search" => Reply::Json(
            200,
            json!({"requestId":"r1","resolvedSearchType":"neural","results":[
                {"id":"https://lyon.example/weather","url":"https://lyon.example/weather","title":"Lyon weather","publishedDate":"2026-07-08T00:00:00.000Z","author":null,"text":"Warm and sunny"}
            ]}),
        ),
        "/tavily/search" => Reply::Json(
            200,
            json!({"query": q, "answer": null, "images": [], "response_time": 0.4, "results":[
                {"title":"Lyon weather","url":"https://lyon.example/weather","content":"Warm","score":0.93,"raw_content":null}
            ]}),
        ),
        "/brave/res/v1/web/search" => Reply::Json(
            200,
            json!({"type":"search","query":{"original": q},"web":{"type":"search","results":[
                {"title":"Lyon weather","url":"https://lyon.example/weather","description":"<strong>Lyon</strong> is warm","age":"July 8, 2026","page_age":"2026-07-08T00:00:00"},
                {"title":"Spam","url":"https://ads.spam.org/x","description":"buy"}
            ]}}),
        ),
        _ => Reply::Json(404, json!({})),
    }
}

/// One declared tool and the config's actors that run it.
struct Rig {
    actors: ToolActors,
    tool: Arc<GatewayTool>,
}

impl Rig {
    /// `declaration` declared against `config`, run by that config's actors.
    fn new(config: &Config, declaration: Value) -> Self {
        let state = AppState::new(config.clone());
        Rig {
            actors: ToolActors::start(config, &state.providers),
            tool: declare(config, declaration),
        }
    }

    /// Only a fetch actor, with this config and network.
    fn web_fetch(cfg: &WebFetchConfig, net: FetchNet, declaration: Value) -> Self {
        Rig {
            actors: ToolActors::from_actors(vec![ToolActor::web_fetch(WebFetch::new(cfg, net))]),
            tool: declare(&config(UNUSED, UNUSED, ""), declaration),
        }
    }

    async fn call(&self, input: Value) -> ToolOutcome {
        self.call_in(input, CallContext::default()).await
    }

    /// Runs the tool on `input`; the result must answer this call's id.
    async fn call_in(&self, input: Value, context: CallContext) -> ToolOutcome {
        let call = ToolCall {
            id: aigw::ids::gateway_tool_use_id(),
            tool: self.tool.clone(),
            input,
        };
        let id = call.id.clone();
        let out = self.actors.execute(Execute { call, context }).await;
        assert_eq!(out.block["tool_use_id"], id.as_str());
        out
    }
}

/// The search engines' mock, and a search tool declared against it.
fn search_rig(declaration: Value) -> (HttpMock, Rig) {
    let engines = HttpMock::start(engine_script);
    let rig = Rig::new(&config(&engines.url, UNUSED, ""), declaration);
    (engines, rig)
}

#[actix_web::test]
async fn searxng_speaks_its_json_api() {
    let (engines, rig) =
        search_rig(json!({"type":"gateway:web_search","blocked_domains":["spam.org"]}));
    let out = rig.call(json!({"query":"lyon weather"})).await;

    let req = engines.only_request();
    assert_eq!(req.route(), ("GET", "/searx/search"));
    assert_eq!(req.param("q").as_deref(), Some("lyon weather"));
    assert_eq!(req.param("format").as_deref(), Some("json"));
    assert!(req.header("authorization").is_none() && req.header("x-api-key").is_none());

    assert!(!out.is_error && out.counted);
    let items = out.block["content"].as_array().unwrap();
    assert_eq!(
        items.len(),
        2,
        "the blocked domain is filtered out: {items:?}"
    );
    assert_eq!(items[0]["type"], "web_search_result");
    assert_eq!(items[0]["url"], "https://lyon.example/weather");
    assert_eq!(items[0]["page_age"], "2026-07-08T00:00:00");
    assert_eq!(items[1]["page_age"], Value::Null);
    let enc = base64::engine::general_purpose::STANDARD
        .decode(items[0]["encrypted_content"].as_str().unwrap())
        .unwrap();
    let enc: Value = serde_json::from_slice(&enc).unwrap();
    assert_eq!(enc["v"], 1);
    assert_eq!(
        enc["content"].as_str().unwrap().len(),
        40,
        "cut to max_content_chars"
    );
    let model: Value = serde_json::from_str(&out.model_content).unwrap();
    assert_eq!(
        model["results"][1],
        json!({"title":"Meteo","url":"https://www.meteo.example/lyon","page_age":null,"content":"Sunny"})
    );
}

#[actix_web::test]
async fn exa_gets_its_key_domains_and_location() {
    let (engines, rig) = search_rig(
        json!({"type":"gateway:web_search","engine":"exa","max_results":3,"allowed_domains":["lyon.example"],
               "user_location":{"type":"approximate","country":"fr"}}),
    );
    let out = rig.call(json!({"query":"lyon weather"})).await;
    let req = engines.only_request();
    assert_eq!(req.route(), ("POST", "/exa/search"));
    assert_eq!(req.header("x-api-key"), Some(ENGINE_KEY));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({"query":"lyon weather","numResults":3,"contents":{"text":{"maxCharacters":40}},
               "includeDomains":["lyon.example"],"userLocation":"FR"})
    );
    assert_eq!(out.block["content"][0]["title"], "Lyon weather");
    assert_eq!(
        out.block["content"][0]["page_age"],
        "2026-07-08T00:00:00.000Z"
    );
}

#[actix_web::test]
async fn tavily_uses_bearer_auth() {
    let (engines, rig) = search_rig(
        json!({"type":"gateway:web_search","parameters":{"engine":"tavily","blocked_domains":["spam.org"]}}),
    );
    let out = rig.call(json!({"query":"lyon"})).await;
    let req = engines.only_request();
    assert_eq!(req.route(), ("POST", "/tavily/search"));
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {ENGINE_KEY}").as_str())
    );
    assert_eq!(
        req.json(),
        json!({"query":"lyon","max_results":5,"search_depth":"basic","exclude_domains":["spam.org"]})
    );
    let model: Value = serde_json::from_str(&out.model_content).unwrap();
    assert_eq!(model["results"][0]["content"], "Warm");
}

#[actix_web::test]
async fn brave_uses_its_token_header() {
    let (engines, rig) = search_rig(
        json!({"type":"gateway:web_search","engine":"brave","blocked_domains":["spam.org"],
               "user_location":{"type":"approximate","country":"FR","city":"Lyon"}}),
    );
    let out = rig.call(json!({"query":"lyon"})).await;
    let req = engines.only_request();
    assert_eq!(req.route(), ("GET", "/brave/res/v1/web/search"));
    assert_eq!(req.header("x-subscription-token"), Some(ENGINE_KEY));
    assert_eq!(req.header("accept"), Some("application/json"));
    assert_eq!(req.param("q").as_deref(), Some("lyon"));
    assert_eq!(
        req.param("count").as_deref(),
        Some("20"),
        "domain filters are re-applied, so ask for more"
    );
    assert_eq!(req.param("country").as_deref(), Some("FR"));
    let items = out.block["content"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "ads.spam.org is a subdomain of a blocked domain"
    );
    assert_eq!(items[0]["page_age"], "July 8, 2026");
    let model: Value = serde_json::from_str(&out.model_content).unwrap();
    assert_eq!(model["results"][0]["content"], "**Lyon** is warm");
}

#[actix_web::test]
async fn search_error_codes() {
    let (engines, rig) = search_rig(json!({"type":"gateway:web_search","engine":"exa"}));
    let cases = [
        (json!({"query":"ratelimit"}), "too_many_requests", true),
        (json!({"query":"broken"}), "unavailable", true),
        (json!({"query":"garbage"}), "unavailable", true),
        (json!({"query":"  "}), "invalid_tool_input", false),
        (json!({}), "invalid_tool_input", false),
        (json!({"query": "q".repeat(501)}), "query_too_long", false),
    ];
    for (input, code, counted) in cases {
        let before = engines.requests().len();
        let out = rig.call(input.clone()).await;
        assert_eq!(out.error_code(), Some(code), "{input}");
        assert_eq!(
            out.block["content"]["type"], "web_search_tool_result_error",
            "{input}"
        );
        assert!(out.is_error);
        assert_eq!(out.counted, counted, "{input}");
        assert_eq!(
            engines.requests().len() - before,
            usize::from(counted),
            "{input}"
        );
        let model: Value = serde_json::from_str(&out.model_content).unwrap();
        assert_eq!(model["error"], code);
    }
    // A query of exactly 500 characters is allowed.
    let out = rig.call(json!({"query": "q".repeat(500)})).await;
    assert!(!out.is_error);
}

#[actix_web::test]
async fn search_timeout_and_missing_engine_are_unavailable() {
    let (_engines, rig) = search_rig(json!({"type":"gateway:web_search"}));
    let out = rig.call(json!({"query":"slow"})).await;
    assert_eq!(out.error_code(), Some("unavailable"));
    assert!(out.counted);
    assert!(
        out.model_content.contains("timed out"),
        "{}",
        out.model_content
    );

    // No engine configured at all.
    let out = Rig::new(&bare_config(), json!({"type":"gateway:web_search"}))
        .call(json!({"query":"lyon"}))
        .await;
    assert_eq!(out.error_code(), Some("unavailable"));
    assert!(!out.counted);
}

/// Fetch targets served by one mock; only its exact address is treated as public.
fn site_script(max: usize) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    let together = Arc::new(Barrier::new(2));
    move |r: &Req| {
        match r.path.as_str() {
        "/page.html" => Reply::Body(
            200,
            "text/html; charset=utf-8",
            Bytes::from_static(b"<!doctype html><html><head><title>Lyon forecast</title><script>var x=1;</script></head>\
                <body><h1>Lyon</h1><p>Sunny &amp; <em>warm</em>.</p><a href=\"/more\">more</a></body></html>"),
        ),
        "/plain.txt" => Reply::Body(200, "text/plain", Bytes::from_static(b"just text")),
        "/data.json" => Reply::Body(200, "application/json", Bytes::from_static(b"{\"temp\":31}")),
        "/doc.pdf" => Reply::Body(200, "application/pdf", Bytes::from_static(b"%PDF-1.7 ...")),
        "/image.png" => Reply::Body(200, "image/png", Bytes::from_static(b"\x89PNG")),
        "/untyped" => Reply::Untyped(Bytes::from_static(b"untyped words")),
        "/missing" => Reply::Json(404, json!({"error":"nope"})),
        "/error" => Reply::Json(503, json!({"error":"down"})),
        "/redirect" => Reply::Redirect(302, "/page.html".into()),
        "/loop" => Reply::Redirect(301, "/loop".into()),
        "/big" => Reply::Body(200, "text/plain", Bytes::from(vec![b'a'; max * 3])),
        "/long" => Reply::Body(200, "text/plain", Bytes::from("word ".repeat(100))),
        "/slow" => Reply::Delayed(Duration::from_secs(10), Box::new(Reply::Body(200, "text/plain", Bytes::new()))),
        "/pair" => Reply::Together(together.clone(), Box::new(Reply::Body(200, "text/plain", Bytes::from_static(b"paired")))),
        _ => Reply::Json(404, json!({})),
    }
    }
}

struct FetchRig {
    site: HttpMock,
    resolver: FakeResolver,
    net: FetchNet,
    tool: Rig,
}

/// A fetch actor with a fake resolver: `site.test` → 127.0.0.1, the site mock's exact address
/// treated as public, and the blocked names of the SSRF tests.
fn fetch_rig(cfg: WebFetchConfig, declaration: Value) -> FetchRig {
    assert!(
        !cfg.allow_private_networks,
        "SSRF tests run with private networks refused"
    );
    let site = HttpMock::start(site_script(cfg.max_bytes));
    let resolver = FakeResolver::with(&[
        ("site.test", &["127.0.0.1"]),
        ("metadata.test", &["169.254.169.254"]),
        ("intranet.test", &["10.0.0.5"]),
        ("office.test", &["192.168.1.20"]),
        ("docker.test", &["172.17.0.2"]),
        ("cgnat.test", &["100.64.1.1"]),
        ("zero.test", &["0.0.0.0"]),
        ("multicast.test", &["239.1.2.3"]),
        ("reserved.test", &["240.0.0.1"]),
        ("bench.test", &["198.18.0.1"]),
        ("ietf.test", &["192.0.0.8"]),
        ("ula.test", &["fc00::1"]),
        ("fd.test", &["fd00:ec2::254"]),
        ("linklocal6.test", &["fe80::1"]),
        ("multicast6.test", &["ff02::1"]),
        ("unspecified6.test", &["::"]),
        ("loopback6.test", &["::1"]),
        ("mapped.test", &["::ffff:127.0.0.1"]),
        ("nat64.test", &["64:ff9b::a9fe:a9fe"]),
        ("mixed.test", &["127.0.0.1", "10.0.0.5"]),
    ]);
    let net = FetchNet {
        resolver: Rc::new(resolver.clone()),
        policy: AddressPolicy {
            allow_private_networks: false,
            treat_as_public: Some(site.addr),
        },
    };
    let tool = Rig::web_fetch(&cfg, net.clone(), declaration);
    FetchRig {
        site,
        resolver,
        net,
        tool,
    }
}

fn fetch_cfg() -> WebFetchConfig {
    WebFetchConfig {
        timeout_ms: 1500,
        max_bytes: 1000,
        ..WebFetchConfig::default()
    }
}

impl FetchRig {
    fn url(&self, path: &str) -> String {
        format!("http://site.test:{}{path}", self.site.addr.port())
    }

    async fn fetch(&self, url: &str) -> ToolOutcome {
        self.tool.call(json!({"url": url})).await
    }
}

/// The document text of a successful fetch.
fn fetched_text(out: &ToolOutcome) -> &str {
    out.block["content"]["content"]["source"]["data"]
        .as_str()
        .unwrap()
}

#[actix_web::test]
async fn fetch_html_becomes_a_text_document() {
    let rig = fetch_rig(fetch_cfg(), json!({"type":"gateway:web_fetch"}));
    let url = rig.url("/page.html");
    let out = rig.fetch(&url).await;
    assert!(!out.is_error, "{:?}", out.block);
    assert!(out.counted);
    let c = &out.block["content"];
    assert_eq!(out.block["type"], "web_fetch_tool_result");
    assert_eq!(c["type"], "web_fetch_result");
    assert_eq!(c["url"], url);
    let retrieved = c["retrieved_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(retrieved).is_ok() && retrieved.ends_with('Z'));
    assert_eq!(c["content"]["type"], "document");
    assert_eq!(c["content"]["title"], "Lyon forecast");
    assert_eq!(c["content"]["source"]["type"], "text");
    assert_eq!(c["content"]["source"]["media_type"], "text/plain");
    let text = c["content"]["source"]["data"].as_str().unwrap();
    assert!(text.starts_with("# Lyon"), "{text}");
    assert!(
        text.contains("Sunny & *warm*.") || text.contains("Sunny & _warm_."),
        "{text}"
    );
    assert!(!text.contains("var x"), "{text}");
    let model: Value = serde_json::from_str(&out.model_content).unwrap();
    assert_eq!(model["title"], "Lyon forecast");
    assert_eq!(model["content"], text);

    // The request went to the vetted address with the URL's Host and our User-Agent.
    let req = rig.site.only_request();
    assert_eq!(
        req.header("host"),
        Some(format!("site.test:{}", rig.site.addr.port()).as_str())
    );
    assert!(req.header("user-agent").unwrap().starts_with("aigw/"));
    assert_eq!(rig.resolver.lookups(), ["site.test"]);
}

#[actix_web::test]
async fn fetch_content_types() {
    let rig = fetch_rig(fetch_cfg(), json!({"type":"gateway:web_fetch"}));
    let out = rig.fetch(&rig.url("/plain.txt")).await;
    assert_eq!(fetched_text(&out), "just text");
    assert_eq!(out.block["content"]["content"]["title"], Value::Null);
    assert_eq!(
        fetched_text(&rig.fetch(&rig.url("/data.json")).await),
        "{\"temp\":31}"
    );
    assert_eq!(
        fetched_text(&rig.fetch(&rig.url("/untyped")).await),
        "untyped words"
    );
    for path in ["/doc.pdf", "/image.png"] {
        let out = rig.fetch(&rig.url(path)).await;
        assert_eq!(out.error_code(), Some("unsupported_content_type"), "{path}");
        assert_eq!(out.block["content"]["type"], "web_fetch_tool_result_error");
        assert!(out.counted, "the fetch reached the network");
    }
}

#[actix_web::test]
async fn fetch_failures_are_not_accessible() {
    let rig = fetch_rig(fetch_cfg(), json!({"type":"gateway:web_fetch"}));
    for path in ["/missing", "/error"] {
        let out = rig.fetch(&rig.url(path)).await;
        assert_eq!(out.error_code(), Some("url_not_accessible"), "{path}");
        assert!(out.counted);
    }
    let out = rig.fetch("http://unknown.test/").await;
    assert_eq!(out.error_code(), Some("url_not_accessible"));
    assert!(!out.counted, "nothing was sent");
    // A closed port on the allowed address: the connection is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = rig.fetch(&format!("http://site.test:{dead}/")).await;
    assert_eq!(
        out.error_code(),
        Some("url_not_allowed"),
        "only the mock's exact address is public"
    );
}

#[actix_web::test]
async fn fetch_follows_redirects_by_hand() {
    let rig = fetch_rig(fetch_cfg(), json!({"type":"gateway:web_fetch"}));
    let out = rig.fetch(&rig.url("/redirect")).await;
    assert!(!out.is_error, "{:?}", out.block);
    assert_eq!(out.block["content"]["url"], rig.url("/page.html"));
    let paths: Vec<String> = rig.site.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/redirect", "/page.html"]);
    assert_eq!(
        rig.resolver.lookups(),
        ["site.test", "site.test"],
        "each hop is resolved and vetted"
    );

    // A loop: the first request plus 5 redirects, then a 6th → url_not_accessible.
    let out = rig.fetch(&rig.url("/loop")).await;
    assert_eq!(out.error_code(), Some("url_not_accessible"));
    let loops = rig
        .site
        .requests()
        .iter()
        .filter(|r| r.path == "/loop")
        .count();
    assert_eq!(loops, 6);
}

#[actix_web::test]
async fn fetch_caps_size_and_text() {
    let cases = [
        (
            200,
            "/big",
            format!("{}\n\n[truncated]", "a".repeat(200)),
            "cut to max_chars",
        ),
        (
            100000,
            "/big",
            format!("{}\n\n[truncated]", "a".repeat(1000)),
            "body capped at max_bytes",
        ),
        (
            12,
            "/long",
            "word word wo\n\n[truncated]".to_string(),
            "cut to max_chars",
        ),
    ];
    for (max_chars, path, expected, why) in cases {
        let rig = fetch_rig(
            fetch_cfg(),
            json!({"type":"gateway:web_fetch","max_chars":max_chars}),
        );
        let out = rig.fetch(&rig.url(path)).await;
        assert_eq!(fetched_text(&out), expected, "{why}");
    }
}

#[actix_web::test]
async fn fetch_timeout() {
    let rig = fetch_rig(
        WebFetchConfig {
            timeout_ms: 200,
            ..fetch_cfg()
        },
        json!({"type":"gateway:web_fetch"}),
    );
    let out = rig.fetch(&rig.url("/slow")).await;
    assert_eq!(out.error_code(), Some("url_not_accessible"));
    assert!(out.counted);
    assert!(out.model_content.contains("timed out"));
}

#[actix_web::test]
async fn fetch_input_errors() {
    let rig = fetch_rig(
        fetch_cfg(),
        json!({"type":"gateway:web_fetch","allowed_domains":["site.test"]}),
    );
    let cases = [
        (json!({}), "invalid_tool_input"),
        (json!({"url":""}), "invalid_tool_input"),
        (json!({"url":"ftp://site.test/x"}), "invalid_tool_input"),
        (json!({"url":"javascript:alert(1)"}), "invalid_tool_input"),
        (
            json!({"url": format!("http://site.test/{}", "a".repeat(2100))}),
            "url_too_long",
        ),
        (json!({"url":"http://other.test/"}), "url_not_allowed"),
    ];
    for (input, code) in cases {
        let out = rig.tool.call(input.clone()).await;
        assert_eq!(out.error_code(), Some(code), "{input}");
        assert!(!out.counted);
    }
    assert!(rig.resolver.lookups().is_empty());
    assert!(rig.site.requests().is_empty());
}

#[actix_web::test]
async fn fetch_url_must_be_in_prior_context_when_required() {
    let rig = fetch_rig(
        WebFetchConfig {
            require_url_in_context: true,
            ..fetch_cfg()
        },
        json!({"type":"gateway:web_fetch"}),
    );
    let url = rig.url("/plain.txt");
    let out = rig.fetch(&url).await;
    assert_eq!(out.error_code(), Some("url_not_in_prior_context"));
    let messages = vec![json!({"role":"user","content": format!("read {url} please")})];
    let ctx = CallContext {
        prior_context: Some(aigw::tools::replay::prior_context_text(None, &messages).into()),
        ..Default::default()
    };
    let out = rig.tool.call_in(json!({"url": url}), ctx).await;
    assert!(!out.is_error, "{:?}", out.block);
}

#[actix_web::test]
async fn ssrf_refuses_every_blocked_class_before_connecting() {
    let rig = fetch_rig(fetch_cfg(), json!({"type":"gateway:web_fetch"}));
    let target = ConnCounter::start().await;
    let port = target.addr.port();
    // Loopback on the counting listener first: literal, mapped and mixed answers. If the guard
    // were broken these fail before any other class is tried.
    let loopback = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://127.1.2.3:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://loopback6.test:{port}/"),
        format!("http://mapped.test:{port}/"),
        format!("http://mixed.test:{port}/"),
    ];
    for url in &loopback {
        let out = rig.fetch(url).await;
        assert_eq!(out.error_code(), Some("url_not_allowed"), "{url}");
        assert!(!out.counted, "{url}: nothing reached the network");
        assert_eq!(out.block["content"]["type"], "web_fetch_tool_result_error");
    }
    // Every other class, through the fake resolver. Never aimed at a real network: each name is
    // first checked to be refused by the guard itself, so the executor cannot connect to it.
    let hosts = [
        "metadata.test",
        "intranet.test",
        "office.test",
        "docker.test",
        "cgnat.test",
        "zero.test",
        "multicast.test",
        "reserved.test",
        "bench.test",
        "ietf.test",
        "ula.test",
        "fd.test",
        "linklocal6.test",
        "multicast6.test",
        "unspecified6.test",
        "nat64.test",
        "169.254.169.254",
        "[fe80::1]",
    ];
    for host in hosts {
        let vetted = aigw::tools::ssrf::vet_host(&rig.net, host, 80).await;
        assert!(
            matches!(vetted, Err(aigw::tools::ssrf::Refusal::Blocked(..))),
            "{host}: {vetted:?}"
        );
        let url = format!("http://{host}/latest/meta-data/");
        let out = rig.fetch(&url).await;
        assert_eq!(out.error_code(), Some("url_not_allowed"), "{url}");
        assert!(!out.counted, "{url}: nothing reached the network");
    }
    assert_eq!(
        target.earlier_connections().await,
        0,
        "the guard opened a connection"
    );
    assert!(rig
        .resolver
        .lookups()
        .contains(&"metadata.test".to_string()));
}

#[actix_web::test]
async fn ssrf_rechecks_redirects_into_blocked_ranges() {
    let target = ConnCounter::start().await;
    let hidden = format!("http://127.0.0.1:{}/admin", target.addr.port());
    let hop = HttpMock::start({
        let hidden = hidden.clone();
        move |r: &Req| match r.path.as_str() {
            "/to-loopback" => Reply::Redirect(302, hidden.clone()),
            "/to-metadata" => Reply::Redirect(307, "http://metadata.test/latest/meta-data/".into()),
            "/to-file" => Reply::Redirect(302, "file:///etc/passwd".into()),
            _ => Reply::Json(404, json!({})),
        }
    });
    let resolver = FakeResolver::with(&[
        ("hop.test", &["127.0.0.1"]),
        ("metadata.test", &["169.254.169.254"]),
    ]);
    let net = FetchNet {
        resolver: Rc::new(resolver.clone()),
        policy: AddressPolicy {
            allow_private_networks: false,
            // TEST ONLY: the first hop's exact address is treated as public.
            treat_as_public: Some(hop.addr),
        },
    };
    let tool = Rig::web_fetch(&fetch_cfg(), net, json!({"type":"gateway:web_fetch"}));
    // The blocked hop is refused by the guard itself before any fetch is tried.
    assert!(
        aigw::tools::ssrf::vet_host(&net_check(&resolver), "metadata.test", 80)
            .await
            .is_err()
    );
    let port = hop.addr.port();
    for (path, code) in [
        ("/to-loopback", "url_not_allowed"),
        ("/to-metadata", "url_not_allowed"),
        ("/to-file", "url_not_allowed"),
    ] {
        let url = format!("http://hop.test:{port}{path}");
        let out = tool.call(json!({"url": url})).await;
        assert_eq!(out.error_code(), Some(code), "{path}");
        assert!(out.counted, "the first hop reached the network");
    }
    assert_eq!(hop.requests().len(), 3, "each first hop was fetched");
    assert_eq!(
        target.earlier_connections().await,
        0,
        "a redirect reached a blocked target"
    );
    assert_eq!(
        resolver.lookups(),
        [
            "metadata.test",
            "hop.test",
            "hop.test",
            "metadata.test",
            "hop.test"
        ]
    );
}

fn net_check(resolver: &FakeResolver) -> FetchNet {
    FetchNet {
        resolver: Rc::new(resolver.clone()),
        policy: AddressPolicy::default(),
    }
}

#[actix_web::test]
async fn ssrf_with_the_system_resolver() {
    // `localhost` resolves through the system (hosts file) to loopback only.
    let target = ConnCounter::start().await;
    let c = config(UNUSED, UNUSED, "");
    let net = FetchNet {
        resolver: Rc::new(SystemResolver),
        policy: AddressPolicy::from_config(c.tools.web_fetch.allow_private_networks),
    };
    let tool = Rig::web_fetch(&fetch_cfg(), net, json!({"type":"gateway:web_fetch"}));
    let url = format!("http://localhost:{}/", target.addr.port());
    let out = tool.call(json!({"url": url})).await;
    assert_eq!(out.error_code(), Some("url_not_allowed"));
    assert_eq!(target.earlier_connections().await, 0);
}

#[actix_web::test]
async fn calls_run_concurrently_and_can_be_cancelled() {
    let rig = fetch_rig(fetch_cfg(), json!({"type":"gateway:web_fetch"}));
    // `/pair` answers only once two requests wait together: run in series, both would time out.
    let url = rig.url("/pair");
    let (a, b) = futures_util::join!(rig.fetch(&url), rig.fetch(&url));
    assert!(!a.is_error && !b.is_error, "{:?} {:?}", a.block, b.block);

    let rig = fetch_rig(
        WebFetchConfig {
            timeout_ms: 60_000,
            ..fetch_cfg()
        },
        json!({"type":"gateway:web_fetch"}),
    );
    let (tx, rx) = tokio::sync::watch::channel(());
    let ctx = CallContext {
        cancel: Some(rx),
        ..Default::default()
    };
    let url = rig.url("/slow");
    let call = rig.tool.call_in(json!({"url": url}), ctx);
    let cancel = async {
        // Cancel once the request is in flight.
        while rig.site.requests().is_empty() {
            actix_web::rt::task::yield_now().await;
        }
        drop(tx);
    };
    let (out, ()) = futures_util::join!(call, cancel);
    assert_eq!(out.error_code(), Some("unavailable"));
    assert!(out.model_content.contains("cancelled"));
}

/// The images endpoint: prompts steer the answer.
fn images_script(r: &Req) -> Reply {
    let prompt = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["prompt"].as_str().map(str::to_string));
    if r.path != "/v1/images/generations" {
        return Reply::Json(404, json!({}));
    }
    let png =
        base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\n-fake-image-bytes-");
    match prompt.as_deref() {
        Some("as url") => Reply::Json(
            200,
            json!({"created":1,"data":[{"url":"https://images.example/cat.png","revised_prompt":"a cat"}]}),
        ),
        Some("refused") => Reply::Json(
            400,
            json!({"error":{"message":"Your request was rejected by the safety system.","type":"invalid_request_error","code":"content_policy_violation"}}),
        ),
        Some("busy") => Reply::Json(429, json!({"error":{"message":"Rate limit"}})),
        Some("down") => Reply::Json(500, json!({"error":{"message":"Internal"}})),
        Some("empty") => Reply::Json(200, json!({"created":1,"data":[]})),
        _ => Reply::Json(
            200,
            json!({"created":1,"data":[{"b64_json":png}],
                                     "usage":{"input_tokens":9,"output_tokens":272,"total_tokens":281,"input_tokens_details":{"text_tokens":9,"image_tokens":0}}}),
        ),
    }
}

#[actix_web::test]
async fn image_generation_calls_the_images_api() {
    let images = HttpMock::start(images_script);
    let rig = Rig::new(
        &config(UNUSED, &images.url, ""),
        json!({"type":"ai-stats:image_generation","quality":"high","output_format":"png"}),
    );
    let out = rig
        .call(json!({"prompt":"a cat","size":"1024x1024","quality":"low"}))
        .await;
    let req = images.only_request();
    assert_eq!(req.route(), ("POST", "/v1/images/generations"));
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {IMAGE_KEY}").as_str())
    );
    assert_eq!(req.header("x-team"), Some("tools"));
    assert_eq!(
        req.json(),
        json!({"model":"gpt-image-1","prompt":"a cat","n":1,"size":"1024x1024","quality":"high","output_format":"png"})
    );
    assert!(!out.is_error && out.counted);
    let c = &out.block["content"];
    assert_eq!(out.block["type"], "image_generation_tool_result");
    assert_eq!(c["type"], "image_generation_result");
    assert_eq!(c["model"], "gpt-image-1");
    assert_eq!(c["revised_prompt"], Value::Null);
    assert_eq!(c["source"]["type"], "base64");
    assert_eq!(c["source"]["media_type"], "image/png");
    assert!(c["source"]["data"]
        .as_str()
        .unwrap()
        .starts_with("iVBORw0KGgo"));
    assert_eq!(
        out.model_content,
        r#"{"status":"ok","media_type":"image/png","note":"image shown to the user"}"#
    );
    assert_eq!(
        out.usage,
        Some(Usage {
            input_tokens: 9,
            output_tokens: 272,
            ..Default::default()
        })
    );

    let out = rig.call(json!({"prompt":"as url"})).await;
    assert_eq!(
        out.block["content"]["source"],
        json!({"type":"url","url":"https://images.example/cat.png"})
    );
    assert_eq!(out.block["content"]["revised_prompt"], "a cat");
    assert!(!out.model_content.contains("images.example"));
}

#[actix_web::test]
async fn image_generation_error_codes() {
    let images = HttpMock::start(images_script);
    let rig = Rig::new(
        &config(UNUSED, &images.url, ""),
        json!({"type":"gateway:image_generation"}),
    );
    for (input, code, counted) in [
        (json!({"prompt":"refused"}), "generation_failed", true),
        (json!({"prompt":"empty"}), "generation_failed", true),
        (json!({"prompt":"busy"}), "too_many_requests", true),
        (json!({"prompt":"down"}), "unavailable", true),
        (json!({"prompt":""}), "invalid_tool_input", false),
        (
            json!({"prompt":"x".repeat(4001)}),
            "invalid_tool_input",
            false,
        ),
    ] {
        let out = rig.call(input.clone()).await;
        assert_eq!(out.error_code(), Some(code), "{input}");
        assert_eq!(
            out.block["content"]["type"],
            "image_generation_tool_result_error"
        );
        assert_eq!(out.counted, counted, "{input}");
        assert!(!out.model_content.contains(IMAGE_KEY));
    }
    // Without a configured provider the tool is unavailable.
    let out = Rig::new(&bare_config(), json!({"type":"gateway:image_generation"}))
        .call(json!({"prompt":"a cat"}))
        .await;
    assert_eq!(out.error_code(), Some("unavailable"));
}

#[actix_web::test]
async fn advisor_calls_through_the_session_caller() {
    let c = config(UNUSED, UNUSED, "[tools.advisor]\ndefault_model = \"m\"");
    let seen: Arc<Mutex<Vec<AdvisorRequest>>> = Arc::default();
    let caller: AdvisorCaller = {
        let seen = seen.clone();
        Arc::new(move |req: AdvisorRequest| {
            seen.lock().unwrap().push(req.clone());
            Box::pin(async move {
                match req.user.contains("limit") {
                    true => Err(AdvisorFailure::RateLimited),
                    false => Ok(AdvisorReply {
                        text: "Check the null case first.".into(),
                        usage: Usage {
                            input_tokens: 120,
                            output_tokens: 8,
                            ..Default::default()
                        },
                    }),
                }
            })
        })
    };
    let rig = Rig::new(
        &c,
        json!({"type":"ai-stats:advisor","name":"reviewer","instructions":"Focus on bugs.","forward_transcript":true,"max_tokens":4096}),
    );
    let transcript: Arc<[Value]> =
        vec![json!({"role":"user","content":"Why does it crash?"})].into();
    let ctx = CallContext {
        advisor: Some(caller.clone()),
        transcript: Some(transcript),
        ..Default::default()
    };
    let out = rig
        .call_in(json!({"prompt":"What should I check?"}), ctx.clone())
        .await;
    assert_eq!(
        out.block["content"],
        json!({"type":"advisor_result","advisor":"reviewer","model":"m","text":"Check the null case first."})
    );
    assert_eq!(out.model_content, "Check the null case first.");
    assert_eq!(out.usage.unwrap().input_tokens, 120);
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.model, "m");
    assert_eq!(req.max_tokens, 4096);
    assert!(req.system.ends_with("\n\nFocus on bugs."));
    assert_eq!(
        req.user,
        "Conversation so far:\n\nUser: Why does it crash?\n\nAdvisor request: What should I check?"
    );

    let out = rig.call_in(json!({"prompt":"over the limit"}), ctx).await;
    assert_eq!(out.error_code(), Some("too_many_requests"));
    assert_eq!(out.block["content"]["type"], "advisor_tool_result_error");
}

#[actix_web::test]
async fn datetime_through_its_actor() {
    let c = config(
        UNUSED,
        UNUSED,
        "[tools.datetime]\ndefault_timezone = \"Asia/Tokyo\"",
    );
    let rig = Rig::new(&c, json!({"type":"gateway:datetime"}));
    let out = rig.call(json!({})).await;
    let t = &out.block["content"]["times"][0];
    assert_eq!(out.block["content"]["type"], "datetime_result");
    assert_eq!(t["timezone"], "Asia/Tokyo");
    assert!(t["datetime"].as_str().unwrap().ends_with("+09:00"));
    assert!(out.counted);
    let out = rig.call(json!({"timezones":["Atlantis/Capital"]})).await;
    assert_eq!(out.error_code(), Some("invalid_tool_input"));
    assert_eq!(out.block["content"]["type"], "datetime_tool_result_error");
}

#[actix_web::test]
async fn worker_actors_include_the_tools() {
    let c = config(UNUSED, UNUSED, "");
    let state = AppState::new(c);
    let workers = aigw::state::WorkerActors::start(&state);
    for kind in aigw::tools::ToolKind::ALL {
        assert!(workers.tools.addr(kind).is_some(), "{kind:?}");
    }
}

#[actix_web::test]
async fn the_connection_counter_sees_every_connection() {
    // The fixture the SSRF tests rely on: a connection that is never used for a request counts.
    let target = ConnCounter::start().await;
    assert_eq!(target.earlier_connections().await, 0);
    let _a = tokio::net::TcpStream::connect(target.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(target.addr).await.unwrap();
    assert_eq!(
        target.earlier_connections().await,
        3,
        "two here plus the first control"
    );
}
