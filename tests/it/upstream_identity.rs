//! How upstream requests identify us (issue 16): `User-Agent: aigw/<version>` on every upstream
//! HTTP request (providers of both kinds, count_tokens, search engines, the images API; web_fetch
//! keeps its configurable agent), and `[[providers]] forward_headers`, which copies the listed
//! client headers and never auth, hop-by-hop or the gateway's own headers.

use std::process::Command;

use serde_json::json;

use crate::common::openai_upstream::openai_config;
use crate::common::tool_mocks::HttpMock;
use crate::common::tool_user::{services, tools_config};
use crate::common::upstream::MockUpstream;
use crate::common::*;

const OURS: &str = concat!("aigw/", env!("CARGO_PKG_VERSION"));
const CLIENT_UA: &str = "claude-cli/2.1.328 (external, cli)";

struct Rig {
    gw: TestGateway,
    up: MockUpstream,
    oai: MockUpstream,
    services: HttpMock,
}

impl Rig {
    fn start() -> Self {
        let up = MockUpstream::anthropic();
        let oai = MockUpstream::openai();
        let services = services();
        let mut text = openai_config(&oai.url, &up.url);
        text.push_str(&format!(
            r#"
[[providers]]
name = "fwd"
kind = "anthropic"
base_url = "{up}"
api_key_env = "UPSTREAM_KEY"
forward_headers = ["X-App", "x-claude-code-session-id", "User-Agent"]

[[providers]]
name = "fwd-oai"
kind = "openai"
base_url = "{oai}/v1"
forward_headers = ["x-app", "user-agent"]

[[models]]
id = "fwd-text"
deployments = [{{ provider = "fwd", model = "text" }}]

[[models]]
id = "fwd-loop"
deployments = [{{ provider = "fwd", model = "loop-datetime" }}]

[[models]]
id = "fwd-oai-text"
deployments = [{{ provider = "fwd-oai", model = "text" }}]

[[models]]
id = "up-loop-web_search"
deployments = [{{ provider = "up", model = "loop-web_search" }}]

[[models]]
id = "up-loop-web_fetch"
deployments = [{{ provider = "up", model = "loop-web_fetch" }}]

[[models]]
id = "up-loop-image_generation"
deployments = [{{ provider = "up", model = "loop-image_generation" }}]
"#,
            up = up.url,
            oai = oai.url,
        ));
        text.push_str(&tools_config(&services.url));
        Self {
            gw: TestGateway::start(&text),
            up,
            oai,
            services,
        }
    }

    async fn stop(self) {
        self.gw.stop().await;
        self.up.stop().await;
        self.oai.stop().await;
    }
}

/// Everything a client such as Claude Code sends, the credentials and the gateway's own
/// headers included.
const CLIENT_HEADERS: [(&str, &str); 9] = [
    ("x-api-key", KEY),
    ("content-type", "application/json"),
    ("user-agent", CLIENT_UA),
    ("x-app", "cli"),
    ("x-claude-code-session-id", "0b1e-session"),
    ("cookie", "session=secret"),
    ("proxy-authorization", "Basic c2VjcmV0"),
    ("x-gateway-debug", "trace"),
    ("x-other", "not listed"),
];

#[actix_web::test]
async fn every_upstream_request_carries_our_user_agent() {
    let rig = Rig::start();
    for stream in [false, true] {
        let res = post(&rig.gw.url, &request("up-text", stream)).await;
        assert_eq!(res.status, 200);
        assert_eq!(rig.up.last().header("user-agent"), Some(OURS), "{stream}");
        let res = post(&rig.gw.url, &request("oai-text", stream)).await;
        assert_eq!(res.status, 200);
        assert_eq!(rig.oai.last().header("user-agent"), Some(OURS), "{stream}");
    }
    let res = post_raw(
        &rig.gw.url,
        "/v1/messages/count_tokens",
        &[("x-api-key", KEY), ("content-type", "application/json")],
        json!({"model":"up-text","messages":[{"role":"user","content":"Hi"}]}).to_string(),
    )
    .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let last = rig.up.last();
    assert_eq!(last.path, "/v1/messages/count_tokens");
    assert_eq!(last.header("user-agent"), Some(OURS));

    // The tools' own HTTP calls: the search engine, the images API, and web fetch, which keeps
    // its configurable agent (default `aigw/<version> (web_fetch)`).
    let page = format!("{}/page", rig.services.url);
    for (model, tool, route) in [
        ("up-loop-web_search", "web_search", ("GET", "/searx/search")),
        (
            "up-loop-image_generation",
            "image_generation",
            ("POST", "/v1/images/generations"),
        ),
        ("up-loop-web_fetch", "web_fetch", ("GET", "/page")),
    ] {
        let body = json!({"model": model, "max_tokens": 64, "system": format!("Read {page} ."),
            "tools": [{"type": format!("gateway:{tool}")}],
            "messages": [{"role": "user", "content": "Go."}]});
        let res = post(&rig.gw.url, &body).await;
        assert_eq!(res.status, 200, "{tool}: {:?}", res.body);
        let reqs = rig.services.requests();
        let call = reqs
            .iter()
            .rev()
            .find(|r| r.route() == route)
            .unwrap_or_else(|| panic!("{tool} reached {route:?}"));
        let expected = if tool == "web_fetch" {
            format!("{OURS} (web_fetch)")
        } else {
            OURS.to_string()
        };
        assert_eq!(call.header("user-agent"), Some(expected.as_str()), "{tool}");
    }
    rig.stop().await;
}

#[actix_web::test]
async fn forward_headers_copies_only_what_the_provider_lists() {
    let rig = Rig::start();
    for stream in [false, true] {
        let res = post_with(&rig.gw.url, &CLIENT_HEADERS, &request("fwd-text", stream)).await;
        assert_eq!(res.status, 200, "{:?}", res.body);
        let got = rig.up.last();
        assert_eq!(got.header("x-app"), Some("cli"));
        assert_eq!(got.header("x-claude-code-session-id"), Some("0b1e-session"));
        assert_eq!(
            got.header("user-agent"),
            Some(format!("{CLIENT_UA} {OURS}").as_str())
        );
        // The upstream sees the provider's key, never the client's; nothing unlisted.
        assert_eq!(got.header("x-api-key"), Some(UPSTREAM_SECRET));
        for refused in [
            "cookie",
            "proxy-authorization",
            "x-gateway-debug",
            "x-other",
        ] {
            assert_eq!(got.header(refused), None, "{refused} reached the upstream");
        }
        assert_eq!(
            got.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
                .count(),
            1
        );

        // Another list on another kind: the session id is not on it.
        let res = post_with(
            &rig.gw.url,
            &CLIENT_HEADERS,
            &request("fwd-oai-text", stream),
        )
        .await;
        assert_eq!(res.status, 200, "{:?}", res.body);
        let got = rig.oai.last();
        assert_eq!(got.header("x-app"), Some("cli"));
        assert_eq!(got.header("x-claude-code-session-id"), None);
        assert_eq!(
            got.header("user-agent"),
            Some(format!("{CLIENT_UA} {OURS}").as_str())
        );
        assert_eq!(got.header("cookie"), None);

        // A provider without forward_headers forwards nothing and sends our agent alone.
        let res = post_with(&rig.gw.url, &CLIENT_HEADERS, &request("up-text", stream)).await;
        assert_eq!(res.status, 200);
        let got = rig.up.last();
        assert_eq!(got.header("x-app"), None);
        assert_eq!(got.header("x-claude-code-session-id"), None);
        assert_eq!(got.header("user-agent"), Some(OURS));
    }

    // Every round of a gateway tool loop is a call of the client's, and so is count_tokens.
    let before = rig.up.count();
    let body = json!({"model":"fwd-loop","max_tokens":64,"tools":[{"type":"gateway:datetime"}],
        "messages":[{"role":"user","content":"Go."}]});
    let res = post_with(&rig.gw.url, &CLIENT_HEADERS, &body).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let rounds = &rig.up.requests()[before..];
    assert_eq!(rounds.len(), 2);
    for r in rounds {
        assert_eq!(r.header("x-app"), Some("cli"));
        assert_eq!(r.header("cookie"), None);
    }
    let mut headers = CLIENT_HEADERS.to_vec();
    headers.retain(|(k, _)| *k != "content-type");
    headers.push(("content-type", "application/json"));
    let res = post_raw(
        &rig.gw.url,
        "/v1/messages/count_tokens",
        &headers,
        json!({"model":"fwd-text","messages":[{"role":"user","content":"Hi"}]}).to_string(),
    )
    .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let got = rig.up.last();
    assert_eq!(got.path, "/v1/messages/count_tokens");
    assert_eq!(got.header("x-claude-code-session-id"), Some("0b1e-session"));
    assert_eq!(got.header("x-other"), None);
    rig.stop().await;
}

/// A header that may never be forwarded is a config error naming its key, so `--check-config`
/// catches it before the gateway starts.
#[test]
fn check_config_refuses_headers_that_are_never_forwarded() {
    let dir = std::env::temp_dir().join(format!("aigw-forward-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("forward.toml");
    for (name, why) in [
        ("Authorization", "credentials"),
        ("x-api-key", "credentials"),
        ("connection", "hop-by-hop"),
        ("x-aistats-strictness", "gateway's own"),
    ] {
        std::fs::write(
            &path,
            format!(
                "auth.disabled = true\n[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nforward_headers = [\"x-app\", \"{name}\"]\n[[models]]\nid = \"m\"\ndeployments = [{{ provider = \"a\", model = \"x\" }}]\n"
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_aigw"))
            .args(["--config", path.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("providers[0].forward_headers[1]") && err.contains(why),
            "{name}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
