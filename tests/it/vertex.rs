//! `kind = "vertex"`: rawPredict / streamRawPredict with bearer tokens from application default
//! credentials (service account with a verified RS256 assertion, authorized user, metadata
//! server), tokens cached until a minute before expiry and refreshed single-flight, errors,
//! count_tokens, and the fallback Bedrock → Vertex → Anthropic.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::common::cloud::*;
use crate::common::upstream::{self, MockUpstream};
use crate::common::*;

/// A gateway with `mock`, `up` (anthropic at `anthropic_url`), `vertex` (at `vertex_url`, with
/// `credentials` lines) and optionally `bedrock-us`; models `vx-<name>` → Vertex `<name>`.
fn vertex_config(vertex_url: &str, credentials: &str, extra: &str) -> String {
    let mut models = String::new();
    for n in [
        "text",
        "tool",
        "error-400",
        "error-429",
        "error-529",
        "error-404",
    ] {
        models.push_str(&format!(
            "[[models]]\nid = \"vx-{n}\"\ndeployments = [{{ provider = \"vertex\", model = \"{n}\" }}]\n"
        ));
    }
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[retry]
base_delay_ms = 5
max_delay_ms = 20
max_attempts = 8

[circuit_breaker]
consecutive_failures = 1000
rate_limit_cooldown_ms = 50

[[auth.keys]]
name = "test"
secret_sha256 = "{hash}"

[[providers]]
name = "mock"
kind = "mock"

[[providers]]
name = "vertex"
kind = "vertex"
project = "{VERTEX_PROJECT}"
region = "{VERTEX_REGION}"
base_url = "{vertex_url}"
{credentials}

[[models]]
id = "claude-sonnet"
deployments = [{{ provider = "vertex", model = "claude-sonnet-4-5@20250929" }}]

{models}
{extra}
"#,
        hash = key_hash(KEY),
    )
}

/// Starts with `env` as the whole environment the config sees.
fn start(text: &str, env: &[(&str, String)]) -> TestGateway {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let config = aigw::Config::from_toml_with_env(text, &|var| {
        env.iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.clone())
            .or_else(|| crate::bedrock::test_env(var))
    })
    .unwrap();
    TestGateway::start_config(config)
}

/// Writes a credentials file; returns its path.
fn credentials_file(json: &str) -> String {
    let path = temp_path("google-credentials.json");
    std::fs::write(&path, json).unwrap();
    path.to_string_lossy().into_owned()
}

fn service_account_gateway(vx: &VertexMock) -> TestGateway {
    let file = credentials_file(&vx.service_account_json());
    start(
        &vertex_config(
            vx.url(),
            "credentials_file_env = \"VERTEX_CREDENTIALS\"",
            "",
        ),
        &[("VERTEX_CREDENTIALS", file)],
    )
}

#[actix_web::test]
async fn service_account_json_and_stream() {
    let vx = VertexMock::start(3600);
    let gw = service_account_gateway(&vx);
    let res = post_with(
        &gw.url,
        &[
            ("x-api-key", KEY),
            ("anthropic-beta", "context-1m-2025-08-07,oauth-2025-04-20"),
            ("anthropic-beta", "interleaved-thinking-2025-05-14"),
        ],
        &request("claude-sonnet", false),
    )
    .await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(
        res.json(),
        upstream::text_message("claude-sonnet-4-5@20250929", "Hello from upstream")
    );
    let got = vx.up.last();
    assert_eq!(
        got.path,
        "/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    );
    assert_eq!(
        got.header("anthropic-beta"),
        Some("context-1m-2025-08-07,interleaved-thinking-2025-05-14"),
        "the beta Vertex refuses is dropped"
    );
    assert_eq!(
        res.header("x-gateway-warnings"),
        Some("anthropic-beta.oauth-2025-04-20:unsupported")
    );
    assert_eq!(
        got.header("authorization"),
        Some("Bearer ya29.test-token-1")
    );
    assert_eq!(got.header("x-api-key"), None);
    assert_eq!(
        got.json(),
        json!({"max_tokens": 64, "stream": false,
               "messages": [{"role": "user", "content": "Hello there"}],
               "anthropic_version": "vertex-2023-10-16"})
    );

    let res = post(&gw.url, &request("vx-tool", true)).await;
    assert_eq!(res.status, 200);
    let expected = upstream::tool_stream("tool", "get_weather", &[""; 6]).len();
    assert_eq!(res.events().len(), expected);
    assert_stream_grammar(&res.events());
    assert!(vx.up.last().path.ends_with("/models/tool:streamRawPredict"));
    assert_eq!(vx.refreshes.load(Ordering::SeqCst), 1, "one token for both");
    let metrics = String::from_utf8_lossy(&get(&gw.url, "/metrics").await.body).to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_requests_total")
                && l.contains("provider=\"vertex\"")
                && l.contains("status=\"200\"")),
        "{metrics}"
    );
    assert_eq!(vx.refused.load(Ordering::SeqCst), 0);
    gw.stop().await;
    vx.up.stop().await;
}

/// Tokens that live less than the refresh margin are fetched for every request; long-lived ones
/// once, however many requests wait for the first.
#[actix_web::test]
async fn tokens_refresh_before_expiry_and_single_flight() {
    let vx = VertexMock::start(30);
    let gw = service_account_gateway(&vx);
    for _ in 0..3 {
        assert_eq!(post(&gw.url, &request("vx-text", false)).await.status, 200);
    }
    assert_eq!(vx.refreshes.load(Ordering::SeqCst), 3);
    gw.stop().await;
    vx.up.stop().await;

    let vx = VertexMock::start(3600);
    let gw = service_account_gateway(&vx);
    let body = request("vx-text", false);
    let calls: Vec<_> = (0..6).map(|_| post(&gw.url, &body)).collect();
    for res in futures_util::future::join_all(calls).await {
        assert_eq!(res.status, 200);
    }
    assert_eq!(
        vx.refreshes.load(Ordering::SeqCst),
        1,
        "one refresh for six waiters"
    );
    assert_eq!(vx.up.count(), 7, "one token request and six predictions");
    gw.stop().await;
    vx.up.stop().await;
}

#[actix_web::test]
async fn authorized_user_and_metadata_server() {
    let vx = VertexMock::start(3600);
    let file = credentials_file(&vx.authorized_user_json());
    let gw = start(
        &vertex_config(vx.url(), "", ""),
        &[("GOOGLE_APPLICATION_CREDENTIALS", file)],
    );
    assert_eq!(post(&gw.url, &request("vx-text", true)).await.status, 200);
    assert_eq!(vx.refreshes.load(Ordering::SeqCst), 1);
    let form = String::from_utf8_lossy(&vx.up.requests()[0].body).to_string();
    assert!(form.contains("grant_type=refresh_token"), "{form}");
    gw.stop().await;

    let host = vx.url().trim_start_matches("http://").to_string();
    let gw = start(
        &vertex_config(vx.url(), "", ""),
        &[("GCE_METADATA_HOST", host)],
    );
    let res = post(&gw.url, &request("vx-text", false)).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(vx.refreshes.load(Ordering::SeqCst), 2);
    assert_eq!(
        vx.up.last().header("authorization"),
        Some("Bearer ya29.test-token-2")
    );
    gw.stop().await;
    vx.up.stop().await;
}

/// A refused token request is a deployment fault, and no token, key or assertion reaches the
/// client or the logs.
#[actix_web::test]
async fn refused_credentials_and_upstream_errors() {
    let vx = VertexMock::start(3600);
    // An authorized user whose refresh token the endpoint does not know.
    let bad = vx
        .authorized_user_json()
        .replace(REFRESH_TOKEN, "1//revoked-token-hidden");
    let file = credentials_file(&bad);
    let gw = start(
        &vertex_config(
            vx.url(),
            "",
            "[[models]]\nid = \"fb\"\ndeployments = [{ provider = \"vertex\", model = \"text\" }, { provider = \"mock\", model = \"mock-1\", weight = 0 }]\n",
        ),
        &[("GOOGLE_APPLICATION_CREDENTIALS", file)],
    );
    let res = post(&gw.url, &request("fb", false)).await;
    assert_eq!(res.status, 200, "the fallback answers");
    assert_eq!(
        vx.refused.load(Ordering::SeqCst),
        1,
        "no retry of a refused credential"
    );
    let res = post(&gw.url, &request("vx-text", false)).await;
    assert!(res.status >= 500, "{}", res.status);
    let text = String::from_utf8_lossy(&res.body).to_string() + &logs();
    for s in ["revoked-token-hidden", CLIENT_SECRET, "ya29."] {
        assert!(!text.contains(s), "{s} leaked");
    }
    gw.stop().await;

    let gw = service_account_gateway(&vx);
    post(&gw.url, &request("vx-error-400", false))
        .await
        .assert_error(400, "invalid_request_error");
    let before = vx.up.count();
    let res = post(&gw.url, &request("vx-error-529", false)).await;
    assert!(res.status >= 500, "{}", res.status);
    assert_eq!(vx.up.count() - before, 3, "transient: retried");
    assert!(!logs().contains("BEGIN PRIVATE KEY") && !logs().contains("ya29."));
    gw.stop().await;
    vx.up.stop().await;
}

#[actix_web::test]
async fn count_tokens_through_vertex() {
    let vx = VertexMock::start(3600);
    let gw = service_account_gateway(&vx);
    let res = post_raw(
        &gw.url,
        "/v1/messages/count_tokens",
        &[("x-api-key", KEY), ("content-type", "application/json")],
        json!({"model": "claude-sonnet", "messages": [{"role": "user", "content": "Hi"}]})
            .to_string(),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"input_tokens": upstream::COUNT_TOKENS}));
    let got = vx.up.last();
    assert_eq!(
        got.path,
        "/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
    );
    assert_eq!(got.json()["model"], "claude-sonnet-4-5@20250929");
    assert_eq!(got.json()["anthropic_version"], "vertex-2023-10-16");
    gw.stop().await;
    vx.up.stop().await;
}

/// Bedrock first, Vertex as fallback, Anthropic last: each fails in its own scripted way.
#[actix_web::test]
async fn fallback_bedrock_then_vertex_then_anthropic() {
    let br = BedrockMock::start(aws_keys(&[(
        AWS_KEY_ID,
        AWS_SECRET,
        Some(AWS_SESSION_TOKEN),
    )]));
    let vx = VertexMock::start(3600);
    let an = MockUpstream::anthropic();
    let file = credentials_file(&vx.service_account_json());
    let extra = format!(
        r#"
[[providers]]
name = "up"
kind = "anthropic"
base_url = "{an}"
api_key_env = "UPSTREAM_KEY"

[[providers]]
name = "bedrock-us"
kind = "bedrock"
region = "{AWS_REGION}"
base_url = "{br}"
{keys}

[[models]]
id = "everywhere"
deployments = [
  {{ provider = "bedrock-us", model = "http-ServiceUnavailableException:0" }},
  {{ provider = "vertex", model = "error-404", weight = 0 }},
  {{ provider = "up", model = "text", weight = 0 }},
]

[[models]]
id = "everywhere-stream"
deployments = [
  {{ provider = "bedrock-us", model = "first-ThrottlingException:0" }},
  {{ provider = "vertex", model = "error-529", weight = 0 }},
  {{ provider = "up", model = "text", weight = 0 }},
]
"#,
        an = an.url,
        br = br.url(),
        keys = crate::bedrock::STATIC_KEYS,
    );
    let gw = start(
        &vertex_config(
            vx.url(),
            "credentials_file_env = \"VERTEX_CREDENTIALS\"",
            &extra,
        ),
        &[("VERTEX_CREDENTIALS", file)],
    );
    let res = post(&gw.url, &request("everywhere", false)).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(
        res.json(),
        upstream::text_message("text", "Hello from upstream")
    );
    assert_eq!(
        br.up.count(),
        3,
        "transient on Bedrock: retried, then the next"
    );
    assert_eq!(
        vx.up.count(),
        2,
        "a token, then one 404: a deployment fault"
    );
    assert_eq!(an.count(), 1);

    let res = post(&gw.url, &request("everywhere-stream", true)).await;
    assert_eq!(res.status, 200);
    let names = assert_stream_grammar(&res.events());
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(br.up.count(), 4, "rate-limited in-band: straight on");
    assert_eq!(vx.up.count(), 5, "three 529s");
    assert_eq!(an.count(), 2);
    assert_eq!(br.bad_signatures.load(Ordering::SeqCst), 0);

    let log = gw.flush_log().await;
    let providers: Vec<String> = log
        .prepare("SELECT provider FROM requests ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .map(|r| r.unwrap().unwrap_or_default())
        .collect();
    assert_eq!(providers, ["up", "up"]);
    gw.stop().await;
    br.up.stop().await;
    vx.up.stop().await;
    an.stop().await;
}

/// `debug` shows the request with the bearer token redacted.
#[actix_web::test]
async fn debug_redacts_the_bearer_token() {
    let vx = VertexMock::start(3600);
    let gw = service_account_gateway(&vx);
    let mut body = request("vx-text", false);
    body["debug"] = json!({"return_upstream_request": true});
    let res = post(&gw.url, &body).await;
    assert_eq!(res.status, 200);
    let sent = &res.json()["debug"]["upstream_request"][0];
    assert_eq!(sent["headers"]["authorization"], "[redacted]");
    assert!(sent["url"]
        .as_str()
        .unwrap()
        .ends_with("/models/text:rawPredict"));
    assert!(!String::from_utf8_lossy(&res.body).contains("ya29."));
    gw.stop().await;
    vx.up.stop().await;
}

/// A token Vertex refuses before its expiry (revoked) is dropped from the cache: the next
/// request gets a new one.
#[actix_web::test]
async fn a_revoked_token_is_replaced() {
    let vx = VertexMock::start(3600);
    let gw = service_account_gateway(&vx);
    assert_eq!(post(&gw.url, &request("vx-text", false)).await.status, 200);
    vx.revoke_all();
    let res = post(&gw.url, &request("vx-text", false)).await;
    assert_eq!(
        res.status, 502,
        "a deployment fault with nothing to fall back to"
    );
    assert_eq!(vx.refused.load(Ordering::SeqCst), 1);
    assert_eq!(post(&gw.url, &request("vx-text", false)).await.status, 200);
    assert_eq!(vx.refreshes.load(Ordering::SeqCst), 2);
    gw.stop().await;
    vx.up.stop().await;
}
