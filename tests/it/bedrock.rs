//! `kind = "bedrock"`: signed requests (verified by the stand-in with the AWS signer), JSON and
//! eventstream replies, every exception over HTTP and mid-stream, count_tokens, and the AWS
//! credential chain (environment, profile file, ECS endpoint, IMDSv2, web identity through STS)
//! with expiry and refresh.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::cloud::*;
use crate::common::upstream::{self, MockUpstream, Recorded, Reply};
use crate::common::*;

/// The fragments of `by_model`'s `tool` stream.
const TOOL_FRAGMENTS: [&str; 6] = [
    "{\"ci",
    "ty\": \"Ly",
    "on\", \"unit",
    "\": \"c\\u00e9lsius\", \"days\"",
    ": [1, ",
    "2]}",
];

const MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

/// A gateway with `mock` and `bedrock-us` (at `url`, with `credentials` lines), and models
/// `br-<name>` → Bedrock `<name>:0` and `fb-<name>` → the same, then the mock.
pub fn bedrock_config(url: &str, credentials: &str, names: &[&str]) -> String {
    let mut models = format!(
        "[[models]]\nid = \"claude-sonnet\"\ndeployments = [{{ provider = \"bedrock-us\", model = \"{MODEL}\" }}]\n"
    );
    for n in names {
        models.push_str(&format!(
            "[[models]]\nid = \"br-{n}\"\ndeployments = [{{ provider = \"bedrock-us\", model = \"{n}:0\" }}]\n\
             [[models]]\nid = \"fb-{n}\"\ndeployments = [{{ provider = \"bedrock-us\", model = \"{n}:0\" }}, {{ provider = \"mock\", model = \"mock-1\", weight = 0 }}]\n"
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
name = "bedrock-us"
kind = "bedrock"
region = "{AWS_REGION}"
base_url = "{url}"
{credentials}

{models}
"#,
        hash = key_hash(KEY),
    )
}

pub const STATIC_KEYS: &str = "aws_access_key_id_env = \"TEST_AWS_ID\"\naws_secret_access_key_env = \"TEST_AWS_SECRET\"\naws_session_token_env = \"TEST_AWS_TOKEN\"";

pub fn test_env(var: &str) -> Option<String> {
    match var {
        "TEST_AWS_ID" => Some(AWS_KEY_ID.into()),
        "TEST_AWS_SECRET" => Some(AWS_SECRET.into()),
        "TEST_AWS_TOKEN" => Some(AWS_SESSION_TOKEN.into()),
        "UPSTREAM_KEY" => Some(UPSTREAM_SECRET.into()),
        _ => None,
    }
}

fn start(url: &str, credentials: &str, names: &[&str]) -> TestGateway {
    let text = bedrock_config(url, credentials, names);
    TestGateway::start_config(aigw::Config::from_toml_with_env(&text, &test_env).unwrap())
}

fn static_mock() -> BedrockMock {
    BedrockMock::start(aws_keys(&[(
        AWS_KEY_ID,
        AWS_SECRET,
        Some(AWS_SESSION_TOKEN),
    )]))
}

fn assert_no_secret(text: &str) {
    for s in [AWS_KEY_ID, AWS_SECRET, AWS_SESSION_TOKEN] {
        assert!(!text.contains(s), "a credential leaked: {text}");
    }
}

#[actix_web::test]
async fn json_reply_through_a_signed_invoke() {
    let br = static_mock();
    let gw = start(br.url(), STATIC_KEYS, &[]);
    let mut body = request("claude-sonnet", false);
    body["temperature"] = json!(0.5);
    let res = post_with(
        &gw.url,
        &[
            ("x-api-key", KEY),
            (
                "anthropic-beta",
                "context-1m-2025-08-07,claude-code-20250219",
            ),
            ("anthropic-beta", "interleaved-thinking-2025-05-14"),
        ],
        &body,
    )
    .await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(
        res.json(),
        upstream::text_message(MODEL.trim_end_matches(":0"), "Hello from upstream")
    );
    assert_no_secret(&String::from_utf8_lossy(&res.body));
    // Bedrock refuses betas it does not know: dropped, and said so.
    assert_eq!(
        res.header("x-gateway-warnings"),
        Some("anthropic-beta.claude-code-20250219:unsupported")
    );

    let got = br.up.last();
    assert_eq!(br.bad_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(
        got.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    );
    assert_eq!(got.header("x-amz-security-token"), Some(AWS_SESSION_TOKEN));
    assert_eq!(got.header("x-api-key"), None);
    assert_eq!(got.header("anthropic-version"), None);
    assert_eq!(
        got.json(),
        json!({"max_tokens": 64, "messages": [{"role": "user", "content": "Hello there"}],
               "temperature": 0.5, "anthropic_version": "bedrock-2023-05-31",
               "anthropic_beta": ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]})
    );

    // Under `error` strictness an unsupported beta is refused before any upstream call.
    let before = br.up.count();
    let res = post_with(
        &gw.url,
        &[
            ("x-api-key", KEY),
            ("anthropic-beta", "claude-code-20250219"),
            ("x-aistats-strictness", "error"),
        ],
        &body,
    )
    .await;
    let e = res.assert_error(400, "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-beta.claude-code-20250219"),
        "{e}"
    );
    assert_eq!(br.up.count(), before);

    let metrics = String::from_utf8_lossy(&get(&gw.url, "/metrics").await.body).to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_requests_total")
                && l.contains("provider=\"bedrock-us\"")
                && l.contains("status=\"200\"")),
        "{metrics}"
    );
    assert_no_secret(&metrics);
    gw.stop().await;
    br.up.stop().await;
}

#[actix_web::test]
async fn eventstream_frames_become_anthropic_sse() {
    let br = static_mock();
    let gw = start(br.url(), STATIC_KEYS, &["text", "tool"]);
    for (model, frames) in [
        (
            "br-text",
            upstream::text_stream("text", &["Hello", " from", " upstream"]),
        ),
        (
            "br-tool",
            upstream::tool_stream("tool", "get_weather", &TOOL_FRAGMENTS),
        ),
    ] {
        let res = post(&gw.url, &request(model, true)).await;
        assert_eq!(res.status, 200);
        assert_eq!(
            res.header("content-type"),
            Some("text/event-stream; charset=utf-8")
        );
        let expected: Vec<(String, Value)> = bedrock_events(&frames)
            .into_iter()
            .map(|mut v| {
                // Bedrock's own metrics stay in the gateway.
                v.as_object_mut()
                    .unwrap()
                    .remove("amazon-bedrock-invocationMetrics");
                (v["type"].as_str().unwrap().to_string(), v)
            })
            .collect();
        assert_eq!(res.events(), expected, "{model}");
        assert_stream_grammar(&res.events());
    }
    let got = br.up.last();
    assert_eq!(got.path, "/model/tool%3A0/invoke-with-response-stream");
    assert_eq!(
        got.header("accept"),
        Some("application/vnd.amazon.eventstream")
    );
    assert!(got.json().get("stream").is_none());
    assert_eq!(br.bad_signatures.load(Ordering::SeqCst), 0);
    gw.stop().await;
    br.up.stop().await;
}

/// Each exception over HTTP, by the class it must get: attempts on Bedrock (1 + retries for
/// transient ones) before the mock answers, or the client's own error.
#[actix_web::test]
async fn http_exceptions_map_to_resilience_classes() {
    let br = static_mock();
    let names: Vec<String> = EXCEPTIONS
        .iter()
        .map(|(n, _)| format!("http-{n}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let gw = start(br.url(), STATIC_KEYS, &names);
    let expect = [
        ("ThrottlingException", 1, 200),
        ("ServiceUnavailableException", 3, 200),
        ("InternalServerException", 3, 200),
        ("ModelNotReadyException", 3, 200),
        ("AccessDeniedException", 1, 200),
        ("ResourceNotFoundException", 1, 200),
        ("UnrecognizedClientException", 1, 200),
        ("ValidationException", 1, 400),
        ("ModelTimeoutException", 3, 200),
        ("ModelStreamErrorException", 3, 200),
    ];
    for (exc, attempts, status) in expect {
        // A 429 sets the deployment aside for a while: one try is all it gets here.
        let modes: &[bool] = if exc == "ThrottlingException" {
            &[false]
        } else {
            &[false, true]
        };
        for &stream in modes {
            let before = br.up.count();
            let res = post(&gw.url, &request(&format!("fb-http-{exc}"), stream)).await;
            assert_eq!(res.status, status, "{exc} stream={stream}");
            assert_eq!(br.up.count() - before, attempts, "{exc} stream={stream}");
            if status == 400 {
                let e = res.assert_error(400, "invalid_request_error");
                assert!(e["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("scripted ValidationException"));
            }
        }
    }
    // With nothing to fall back to, the client gets the exception's own type.
    let res = post(&gw.url, &request("br-http-AccessDeniedException", false)).await;
    assert!(res.status >= 400);
    assert_no_secret(&String::from_utf8_lossy(&res.body));
    assert_eq!(br.bad_signatures.load(Ordering::SeqCst), 0);
    gw.stop().await;
    br.up.stop().await;
}

#[actix_web::test]
async fn midstream_exceptions_become_error_events() {
    let br = static_mock();
    let gw = start(
        br.url(),
        STATIC_KEYS,
        &[
            "mid-ModelStreamErrorException",
            "mid-ModelTimeoutException",
            "mid-ThrottlingException",
            "first-ThrottlingException",
            "first-ServiceUnavailableException",
            "first-ValidationException",
            "cut",
        ],
    );
    for (model, kind) in [
        ("br-mid-ModelStreamErrorException", "api_error"),
        ("br-mid-ModelTimeoutException", "timeout_error"),
        ("br-mid-ThrottlingException", "rate_limit_error"),
        ("br-cut", "api_error"),
    ] {
        let res = post(&gw.url, &request(model, true)).await;
        assert_eq!(res.status, 200, "{model}");
        let events = res.events();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{model}: {names:?}");
        let (last, data) = events.last().unwrap();
        assert_eq!(last, "error", "{model}: {names:?}");
        assert_eq!(data["error"]["type"], kind, "{model}");
    }
    // An exception before any event is an attempt failure like any other.
    let before = br.up.count();
    let res = post(&gw.url, &request("fb-first-ThrottlingException", true)).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        br.up.count() - before,
        1,
        "rate-limited: straight to the next candidate"
    );
    assert_stream_grammar(&res.events());
    let before = br.up.count();
    let res = post(
        &gw.url,
        &request("fb-first-ServiceUnavailableException", true),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        br.up.count() - before,
        3,
        "transient: retried, then the fallback"
    );
    let res = post(&gw.url, &request("fb-first-ValidationException", true)).await;
    res.assert_error(400, "invalid_request_error");
    gw.stop().await;
    br.up.stop().await;
}

#[actix_web::test]
async fn count_tokens_through_bedrock() {
    let br = static_mock();
    let gw = start(br.url(), STATIC_KEYS, &[]);
    let res = post_raw(
        &gw.url,
        "/v1/messages/count_tokens",
        &[
            ("authorization", "Bearer sk-test-key"),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ],
        json!({"model": "claude-sonnet", "messages": [{"role": "user", "content": "Hi"}]})
            .to_string(),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"input_tokens": upstream::COUNT_TOKENS}));
    let got = br.up.last();
    assert_eq!(
        got.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    );
    use base64::Engine;
    let blob = got.json()["input"]["invokeModel"]["body"]
        .as_str()
        .unwrap()
        .to_string();
    let inner: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(blob)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(inner["anthropic_version"], "bedrock-2023-05-31");
    assert!(inner.get("model").is_none());
    assert_eq!(br.bad_signatures.load(Ordering::SeqCst), 0);
    gw.stop().await;
    br.up.stop().await;
}

/// A wrong secret is refused by the signature check: a deployment fault (the next candidate
/// answers), and no credential reaches the client or the logs.
#[actix_web::test]
async fn a_bad_signature_is_a_deployment_fault_and_nothing_leaks() {
    let br = BedrockMock::start(aws_keys(&[(
        AWS_KEY_ID,
        "another-secret",
        Some(AWS_SESSION_TOKEN),
    )]));
    let gw = start(br.url(), STATIC_KEYS, &["text"]);
    let res = post(&gw.url, &request("fb-text", false)).await;
    assert_eq!(res.status, 200);
    assert_eq!(br.up.count(), 1);
    assert_eq!(br.bad_signatures.load(Ordering::SeqCst), 1);
    let res = post(&gw.url, &request("br-text", false)).await;
    assert_eq!(res.status, 502, "{}", String::from_utf8_lossy(&res.body));
    assert_no_secret(&String::from_utf8_lossy(&res.body));
    let log = gw.flush_log().await;
    let rows: Vec<String> = log
        .prepare("SELECT * FROM requests")
        .and_then(|mut s| {
            let n = s.column_count();
            let rows = s
                .query_map([], |r| {
                    Ok((0..n)
                        .map(|i| match r.get::<_, rusqlite::types::Value>(i) {
                            Ok(rusqlite::types::Value::Text(t)) => t,
                            other => format!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                        .join("|"))
                })?
                .collect::<Result<Vec<_>, _>>();
            rows
        })
        .unwrap_or_default();
    assert!(!rows.is_empty());
    for row in &rows {
        assert_no_secret(row);
    }
    assert!(rows.iter().any(|r| r.contains("bedrock-us")), "{rows:?}");
    assert_no_secret(&logs());
    gw.stop().await;
    br.up.stop().await;
}

// ---- the AWS credential chain, through the SDK's documented environment ----

/// The chain tests change the process environment: under nextest each test has its own process,
/// and under `cargo test` they take turns through this lock.
static AWS_ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Clears what the chain reads and keeps it off any real endpoint: IMDS is off unless a test
/// points it at loopback, and no shared file of this machine is read. Hold the guard for the
/// whole test.
async fn hermetic_aws_env() -> tokio::sync::MutexGuard<'static, ()> {
    let guard = AWS_ENV.lock().await;
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
    ] {
        std::env::remove_var(var);
    }
    let none = temp_path("no-such-aws-file");
    std::env::set_var("AWS_CONFIG_FILE", &none);
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &none);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    guard
}

async fn three_signed_requests(gw: &TestGateway, br: &BedrockMock) {
    for stream in [false, true, false] {
        let res = post(&gw.url, &request("claude-sonnet", stream)).await;
        assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    }
    assert_eq!(br.up.count(), 3);
    assert_eq!(br.bad_signatures.load(Ordering::SeqCst), 0);
}

#[actix_web::test]
async fn chain_environment_keys() {
    let _env = hermetic_aws_env().await;
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT1");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "env-secret-value");
    let br = BedrockMock::start(aws_keys(&[(
        "AKIDFROMENVIRONMENT1",
        "env-secret-value",
        None,
    )]));
    let gw = start(br.url(), "", &[]);
    three_signed_requests(&gw, &br).await;
    gw.stop().await;
    br.up.stop().await;
}

#[actix_web::test]
async fn chain_profile_file() {
    let _env = hermetic_aws_env().await;
    let creds = temp_path("aws-credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIDWRONGPROFILE\naws_secret_access_key = nope\n\n\
         [dev]\naws_access_key_id = AKIDFROMPROFILEDEV1\naws_secret_access_key = profile-secret\naws_session_token = profile-token\n",
    )
    .unwrap();
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &creds);
    let br = BedrockMock::start(aws_keys(&[(
        "AKIDFROMPROFILEDEV1",
        "profile-secret",
        Some("profile-token"),
    )]));
    let gw = start(br.url(), "profile = \"dev\"", &[]);
    three_signed_requests(&gw, &br).await;
    gw.stop().await;
    br.up.stop().await;
    let _ = std::fs::remove_file(creds);
}

/// An endpoint issuing fresh keys on every call, valid for `lifetime_s`, registered with `keys`.
fn credential_endpoint(
    keys: AwsKeys,
    lifetime_s: i64,
    json_for: fn(&str, &str, &str, &str) -> Reply,
) -> (MockUpstream, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let up = MockUpstream::start(Arc::new(move |rec: &Recorded| {
        let n = h.fetch_add(1, Ordering::SeqCst) + 1;
        let id = format!("AKIDISSUED{n:010}");
        let secret = format!("issued-secret-{n}");
        let token = format!("issued-token-{n}");
        keys.lock()
            .unwrap()
            .insert(id.clone(), (secret.clone(), Some(token.clone())));
        let expiry = (chrono::Utc::now() + chrono::Duration::seconds(lifetime_s))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let _ = rec;
        json_for(&id, &secret, &token, &expiry)
    }));
    (up, hits)
}

fn ecs_json(id: &str, secret: &str, token: &str, expiry: &str) -> Reply {
    Reply::Json(
        200,
        json!({"AccessKeyId": id, "SecretAccessKey": secret, "Token": token,
               "Expiration": expiry, "RoleArn": "arn:aws:iam::123456789012:role/test"}),
        vec![],
    )
}

/// Keys from the ECS container endpoint; ones that expire within a minute are fetched again for
/// every request, long-lived ones once.
#[actix_web::test]
async fn chain_ecs_endpoint_with_expiry_and_refresh() {
    for (lifetime, fetches) in [(30, 3), (3600, 1)] {
        let _env = hermetic_aws_env().await;
        let br = BedrockMock::start(aws_keys(&[]));
        let (ecs, hits) = credential_endpoint(br.keys.clone(), lifetime, ecs_json);
        std::env::set_var(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v2/credentials/test", ecs.url),
        );
        let gw = start(br.url(), "", &[]);
        three_signed_requests(&gw, &br).await;
        assert_eq!(hits.load(Ordering::SeqCst), fetches, "lifetime {lifetime}s");
        gw.stop().await;
        br.up.stop().await;
        ecs.stop().await;
    }
}

/// IMDSv2: a session token first (PUT), then the role's keys, from a loopback stand-in.
#[actix_web::test]
async fn chain_imdsv2() {
    let _env = hermetic_aws_env().await;
    std::env::remove_var("AWS_EC2_METADATA_DISABLED");
    let br = BedrockMock::start(aws_keys(&[]));
    let keys = br.keys.clone();
    let issued = Arc::new(AtomicUsize::new(0));
    let i = issued.clone();
    let imds = MockUpstream::start(Arc::new(move |rec: &Recorded| {
        // The token is opaque to the client: a JSON string's quotes are part of it.
        let token_ok = rec.header("x-aws-ec2-metadata-token") == Some("\"imds-session-token\"");
        match rec.path.as_str() {
            "/latest/api/token" => {
                let ttl = rec
                    .header("x-aws-ec2-metadata-token-ttl-seconds")
                    .expect("the client asks for a TTL")
                    .to_string();
                Reply::Json(
                    200,
                    json!("imds-session-token"),
                    vec![("x-aws-ec2-metadata-token-ttl-seconds".into(), ttl)],
                )
            }
            _ if !token_ok => Reply::Raw(401, "text/plain", "".into()),
            "/latest/meta-data/iam/security-credentials/" => {
                Reply::Raw(200, "text/plain", "test-role".into())
            }
            "/latest/meta-data/iam/security-credentials/test-role" => {
                i.fetch_add(1, Ordering::SeqCst);
                keys.lock().unwrap().insert(
                    "AKIDFROMIMDS0000001".into(),
                    ("imds-secret".into(), Some("imds-token".into())),
                );
                let expiry = (chrono::Utc::now() + chrono::Duration::hours(6))
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                Reply::Json(
                    200,
                    json!({"Code": "Success", "LastUpdated": "2026-12-06T00:00:00Z", "Type": "AWS-HMAC",
                           "AccessKeyId": "AKIDFROMIMDS0000001", "SecretAccessKey": "imds-secret",
                           "Token": "imds-token", "Expiration": expiry}),
                    vec![],
                )
            }
            _ => Reply::Raw(404, "text/plain", "".into()),
        }
    }));
    std::env::set_var("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url);
    let gw = start(br.url(), "", &[]);
    three_signed_requests(&gw, &br).await;
    assert_eq!(issued.load(Ordering::SeqCst), 1, "cached until near expiry");
    gw.stop().await;
    br.up.stop().await;
    imds.stop().await;
}

fn sts_xml(id: &str, secret: &str, token: &str, expiry: &str) -> Reply {
    let body = format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:default:aigw</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/test/aigw</Arn>
      <AssumedRoleId>AROATEST:aigw</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expiry}</Expiration>
      <AccessKeyId>{id}</AccessKeyId>
    </Credentials>
    <Audience>sts.amazonaws.com</Audience>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
    );
    Reply::Raw(200, "text/xml", body.into())
}

/// Web identity: the token file and role are exchanged at a local STS stand-in
/// (`AWS_ENDPOINT_URL_STS`), with refresh before expiry.
#[actix_web::test]
async fn chain_web_identity_through_sts() {
    let _env = hermetic_aws_env().await;
    let br = BedrockMock::start(aws_keys(&[]));
    let (sts, hits) = credential_endpoint(br.keys.clone(), 30, sts_xml);
    let token_file = temp_path("web-identity-token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.test-web-identity.sig").unwrap();
    std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file);
    std::env::set_var("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/test");
    std::env::set_var("AWS_ROLE_SESSION_NAME", "aigw");
    std::env::set_var("AWS_ENDPOINT_URL_STS", &sts.url);
    let gw = start(br.url(), "", &[]);
    three_signed_requests(&gw, &br).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "short-lived keys refresh every time"
    );
    let form = String::from_utf8_lossy(&sts.last().body).to_string();
    assert!(form.contains("Action=AssumeRoleWithWebIdentity"), "{form}");
    assert!(form.contains("test-web-identity"), "{form}");
    gw.stop().await;
    br.up.stop().await;
    sts.stop().await;
    let _ = std::fs::remove_file(token_file);
}

/// `debug` shows the signed request with every credential redacted, and Bedrock's raw events.
#[actix_web::test]
async fn debug_redacts_the_signature_and_token() {
    let br = static_mock();
    let gw = start(br.url(), STATIC_KEYS, &[]);
    let mut body = request("claude-sonnet", true);
    body["debug"] = json!({"return_upstream_request": true, "return_upstream_response": true});
    let res = post(&gw.url, &body).await;
    assert_eq!(res.status, 200);
    let events = res.events();
    let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    let sent = &delta["debug"]["upstream_request"][0];
    assert_eq!(sent["headers"]["authorization"], "[redacted]");
    assert_eq!(sent["headers"]["x-amz-security-token"], "[redacted]");
    assert!(sent["headers"]["x-amz-date"].is_string());
    assert_eq!(sent["body"]["anthropic_version"], "bedrock-2023-05-31");
    assert!(sent["url"]
        .as_str()
        .unwrap()
        .ends_with("/invoke-with-response-stream"));
    let raw = delta["debug"]["upstream_response"].as_array().unwrap();
    assert!(raw.iter().any(|e| e["type"] == "message_start"), "{raw:?}");
    assert_no_secret(&String::from_utf8_lossy(&res.body));
    assert_eq!(br.bad_signatures.load(Ordering::SeqCst), 0);
    gw.stop().await;
    br.up.stop().await;
}

/// Bedrock runs no Anthropic server tools: the native `web_search_20250305` shape runs in the
/// gateway's tool loop, and Bedrock sees it as a plain tool definition.
#[actix_web::test]
async fn native_web_search_runs_in_the_gateway() {
    let br = static_mock();
    let services = crate::common::tool_user::services();
    let text = bedrock_config(br.url(), STATIC_KEYS, &["loop"])
        + &format!(
            "[tools.web_search.engines.local]\nkind = \"searxng\"\nbase_url = \"{}/searx\"\n",
            services.url
        );
    let gw = TestGateway::start_config(aigw::Config::from_toml_with_env(&text, &test_env).unwrap());
    let mut body = request("br-loop", false);
    body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]);
    body["messages"] = json!([{"role": "user", "content": "lyon weather"}]);
    let res = post(&gw.url, &body).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let v = res.json();
    let types: Vec<&str> = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"server_tool_use"), "{types:?}");
    assert!(types.contains(&"web_search_tool_result"), "{types:?}");
    assert_eq!(v["usage"]["server_tool_use"]["web_search_requests"], 1);
    let first = br.up.requests()[0].json();
    assert_ne!(first["tools"][0]["type"], "web_search_20250305");
    assert!(first["tools"][0]["input_schema"].is_object(), "{first}");
    assert_eq!(br.up.count(), 2, "two rounds on Bedrock");
    assert_eq!(br.bad_signatures.load(Ordering::SeqCst), 0);
    gw.stop().await;
    br.up.stop().await;
}
