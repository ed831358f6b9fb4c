//! The clients people use are the judges of conformance: suites for the official Anthropic SDKs
//! (`tests/sdk/python`, `tests/sdk/ts`) and the Vercel AI SDK (`tests/sdk/ai`) run unchanged
//! against the gateway, once per target. Each suite also walks every JSON body and SSE event it
//! receives for `null` where the API omits a field (`tests/sdk/shape.mjs`,
//! `tests/sdk/python/shape.py`).
//!
//! The gateway and its upstreams run inside this test's actix system on 127.0.0.1:0; the SDK
//! suites are child processes awaited through `tokio::process`, so the system thread keeps
//! serving them. `./scripts/test.sh` installs the SDKs; without them these tests fail.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use std::sync::atomic::Ordering;

use crate::common::cloud::{
    aws_keys, BedrockMock, VertexMock, AWS_KEY_ID, AWS_SECRET, AWS_SESSION_TOKEN,
};
use crate::common::tool_user::{services, tools_config};
use crate::common::upstream::{MockUpstream, COUNT_TOKENS};
use crate::common::*;

/// One way the gateway reaches a model: the models playing each role in the SDK suites. A new
/// kind of upstream is one more entry in [`TARGETS`] (plus its mock server, if it needs one).
struct Target {
    name: &'static str,
    /// Providers and models this target adds to `base_config` (TOML); `{openai}` stands for the
    /// OpenAI-format mock upstream's URL.
    config: &'static str,
    /// A plain text reply.
    text: &'static str,
    /// A `get_weather` call whose `input_json_delta` fragments split the JSON awkwardly.
    tool: &'static str,
    /// The upstream fails with 500 (→ 502).
    error_500: &'static str,
    /// The stream fails after its first text delta.
    midstream: &'static str,
    /// What the tool call's input must parse to.
    expect_tool_input: &'static str,
    /// Calls the gateway's `datetime` tool when offered it, then answers with text.
    tool_loop: &'static str,
    /// Calls every gateway tool offered in one turn, then answers with text. (The mock provider
    /// calls only the first tool offered, so its target uses the scripted upstream here.)
    tool_loop_all: &'static str,
    /// Calls the first client tool offered, then answers with text naming its result.
    client_loop: &'static str,
    /// Calls the `web_search` tool once (run by the gateway), then answers with text.
    search: &'static str,
    /// `count_tokens` on `text` reaches an Anthropic upstream (else: the local estimate).
    native_count: bool,
}

const TARGETS: [Target; 5] = [
    // The scripted Anthropic upstream (`by_model` in common/upstream.rs) behind passthrough.
    Target {
        name: "anthropic",
        // base_config routes `up-<name>` to the scripted upstream model `<name>`.
        config: r#"
[[models]]
id = "sdk-up-client-loop"
deployments = [{ provider = "up", model = "loop-client" }]

[[models]]
id = "sdk-up-search"
deployments = [{ provider = "up", model = "loop-web_search" }]
"#,
        text: "up-text",
        tool: "up-tool",
        error_500: "up-error-500",
        midstream: "up-midstream",
        expect_tool_input: r#"{"city":"Lyon","unit":"célsius","days":[1,2]}"#,
        tool_loop: "up-loop-datetime",
        tool_loop_all: "up-loop",
        client_loop: "sdk-up-client-loop",
        search: "sdk-up-search",
        native_count: true,
    },
    // The built-in mock provider, in 3-char chunks so the tool JSON splits inside keys and
    // strings. It fills the required properties of the suites' `get_weather` schema (string →
    // "mock", enum → its first value, array → []).
    Target {
        name: "mock",
        config: r#"
[[providers]]
name = "sdk-mock"
kind = "mock"
tool_mode = "auto"
chunk_chars = 3

[[models]]
id = "sdk-mock-text"
deployments = [{ provider = "sdk-mock", model = "mock-1" }]

[[models]]
id = "sdk-mock-tool"
deployments = [{ provider = "sdk-mock", model = "mock-1" }]

[[models]]
id = "sdk-mock-error-500"
deployments = [{ provider = "sdk-mock", model = "error-500" }]

[[models]]
id = "sdk-mock-midstream"
deployments = [{ provider = "sdk-mock", model = "error-midstream" }]
"#,
        text: "sdk-mock-text",
        tool: "sdk-mock-tool",
        error_500: "sdk-mock-error-500",
        midstream: "sdk-mock-midstream",
        expect_tool_input: r#"{"city":"mock","unit":"célsius","days":[]}"#,
        // `tool_mode = "auto"` calls the first tool offered: the gateway's.
        tool_loop: "sdk-mock-text",
        tool_loop_all: "up-loop",
        // Offered only the client tool or only web_search, the mock calls it.
        client_loop: "sdk-mock-text",
        search: "sdk-mock-text",
        native_count: false,
    },
    // An OpenAI-compatible upstream (`by_model` in common/openai_upstream.rs), translated both
    // ways: the same suites must pass unchanged.
    Target {
        name: "openai",
        config: r#"
[[providers]]
name = "sdk-openai"
kind = "openai"
base_url = "{openai}/v1"
api_key_env = "UPSTREAM_KEY"

[[models]]
id = "sdk-oai-text"
deployments = [{ provider = "sdk-openai", model = "text" }]

[[models]]
id = "sdk-oai-tool"
deployments = [{ provider = "sdk-openai", model = "tool" }]

[[models]]
id = "sdk-oai-error-500"
deployments = [{ provider = "sdk-openai", model = "error-500" }]

[[models]]
id = "sdk-oai-midstream"
deployments = [{ provider = "sdk-openai", model = "midstream" }]

[[models]]
id = "sdk-oai-loop"
deployments = [{ provider = "sdk-openai", model = "loop-datetime" }]

[[models]]
id = "sdk-oai-loop-all"
deployments = [{ provider = "sdk-openai", model = "loop" }]

[[models]]
id = "sdk-oai-client-loop"
deployments = [{ provider = "sdk-openai", model = "loop-client" }]

[[models]]
id = "sdk-oai-search"
deployments = [{ provider = "sdk-openai", model = "loop-web_search" }]
"#,
        text: "sdk-oai-text",
        tool: "sdk-oai-tool",
        error_500: "sdk-oai-error-500",
        midstream: "sdk-oai-midstream",
        expect_tool_input: r#"{"city":"Lyon","unit":"célsius","days":[1,2]}"#,
        tool_loop: "sdk-oai-loop",
        tool_loop_all: "sdk-oai-loop-all",
        client_loop: "sdk-oai-client-loop",
        search: "sdk-oai-search",
        native_count: false,
    },
    // Claude on Bedrock: the scripted Anthropic upstream inside Bedrock's envelope (SigV4
    // checked on every request, eventstream frames, exceptions; common/cloud.rs).
    Target {
        name: "bedrock",
        config: r#"
[[providers]]
name = "sdk-bedrock"
kind = "bedrock"
region = "us-east-1"
base_url = "{bedrock}"
aws_access_key_id_env = "TEST_AWS_ID"
aws_secret_access_key_env = "TEST_AWS_SECRET"
aws_session_token_env = "TEST_AWS_TOKEN"

[[models]]
id = "sdk-br-text"
deployments = [{ provider = "sdk-bedrock", model = "text:0" }]

[[models]]
id = "sdk-br-tool"
deployments = [{ provider = "sdk-bedrock", model = "tool:0" }]

[[models]]
id = "sdk-br-error-500"
deployments = [{ provider = "sdk-bedrock", model = "error-500:0" }]

[[models]]
id = "sdk-br-midstream"
deployments = [{ provider = "sdk-bedrock", model = "midstream:0" }]

[[models]]
id = "sdk-br-loop"
deployments = [{ provider = "sdk-bedrock", model = "loop-datetime:0" }]

[[models]]
id = "sdk-br-loop-all"
deployments = [{ provider = "sdk-bedrock", model = "loop:0" }]

[[models]]
id = "sdk-br-client-loop"
deployments = [{ provider = "sdk-bedrock", model = "loop-client:0" }]

[[models]]
id = "sdk-br-search"
deployments = [{ provider = "sdk-bedrock", model = "loop-web_search:0" }]
"#,
        text: "sdk-br-text",
        tool: "sdk-br-tool",
        error_500: "sdk-br-error-500",
        midstream: "sdk-br-midstream",
        expect_tool_input: r#"{"city":"Lyon","unit":"célsius","days":[1,2]}"#,
        tool_loop: "sdk-br-loop",
        tool_loop_all: "sdk-br-loop-all",
        client_loop: "sdk-br-client-loop",
        search: "sdk-br-search",
        native_count: true,
    },
    // Claude on Vertex: bearer tokens from the metadata-server stand-in, checked live on every
    // request (common/cloud.rs).
    Target {
        name: "vertex",
        config: r#"
[[providers]]
name = "sdk-vertex"
kind = "vertex"
project = "test-project"
region = "us-east5"
base_url = "{vertex}"

[[models]]
id = "sdk-vx-text"
deployments = [{ provider = "sdk-vertex", model = "text" }]

[[models]]
id = "sdk-vx-tool"
deployments = [{ provider = "sdk-vertex", model = "tool" }]

[[models]]
id = "sdk-vx-error-500"
deployments = [{ provider = "sdk-vertex", model = "error-500" }]

[[models]]
id = "sdk-vx-midstream"
deployments = [{ provider = "sdk-vertex", model = "midstream" }]

[[models]]
id = "sdk-vx-loop"
deployments = [{ provider = "sdk-vertex", model = "loop-datetime" }]

[[models]]
id = "sdk-vx-loop-all"
deployments = [{ provider = "sdk-vertex", model = "loop" }]

[[models]]
id = "sdk-vx-client-loop"
deployments = [{ provider = "sdk-vertex", model = "loop-client" }]

[[models]]
id = "sdk-vx-search"
deployments = [{ provider = "sdk-vertex", model = "loop-web_search" }]
"#,
        text: "sdk-vx-text",
        tool: "sdk-vx-tool",
        error_500: "sdk-vx-error-500",
        midstream: "sdk-vx-midstream",
        expect_tool_input: r#"{"city":"Lyon","unit":"célsius","days":[1,2]}"#,
        tool_loop: "sdk-vx-loop",
        tool_loop_all: "sdk-vx-loop-all",
        client_loop: "sdk-vx-client-loop",
        search: "sdk-vx-search",
        native_count: true,
    },
];

/// The mock servers the targets reach, by the placeholder their config names them with.
struct Upstreams<'a> {
    openai: &'a str,
    bedrock: &'a str,
    vertex: &'a str,
}

/// `max_body_bytes` of the gateway under test; the suites send ~100 KB to provoke a 413.
const MAX_BODY_BYTES: usize = 65_536;
/// An SDK suite that runs longer than this has hung.
const SUITE_TIMEOUT: Duration = Duration::from_secs(120);

fn limited_key(target: &Target) -> String {
    format!("sk-limited-{}", target.name)
}

/// `base_config` plus every target's providers and models, and one `requests_per_minute = 1`
/// key per target (each suite run spends its own).
fn sdk_config(upstream: &str, ups: &Upstreams, services: &str) -> aigw::Config {
    let mut text = base_config(upstream);
    text.push_str(&tools_config(services));
    for target in &TARGETS {
        text.push_str(
            &target
                .config
                .replace("{openai}", ups.openai)
                .replace("{bedrock}", ups.bedrock)
                .replace("{vertex}", ups.vertex),
        );
        text.push_str(&format!(
            "\n[[auth.keys]]\nname = \"limited-{}\"\nsecret_sha256 = \"{}\"\nrequests_per_minute = 1\n",
            target.name,
            key_hash(&limited_key(target)),
        ));
    }
    // The Vertex target's tokens come from the metadata-server stand-in.
    let metadata_host = ups.vertex.trim_start_matches("http://").to_string();
    let mut config = aigw::Config::from_toml_with_env(&text, &|var| match var {
        "GCE_METADATA_HOST" => Some(metadata_host.clone()),
        _ => crate::bedrock::test_env(var),
    })
    .expect("test config is valid");
    config.server.max_body_bytes = MAX_BODY_BYTES;
    // The suites provoke upstream failures on purpose: each must reach the client as it is,
    // neither retried nor turned into 529 by an open circuit.
    config.retry.max_retries = 0;
    config.circuit_breaker.consecutive_failures = u32::MAX;
    config.circuit_breaker.min_requests = u32::MAX;
    config
}

#[derive(Clone, Copy, Debug)]
enum Sdk {
    Python,
    TypeScript,
    /// The Vercel AI SDK: `ai` + `@ai-sdk/anthropic`.
    VercelAi,
}

impl Sdk {
    /// The suite's command, run from the repository root. Fails the test when the SDK is not
    /// installed: a missing SDK must never look like a pass.
    fn command(self, root: &Path) -> tokio::process::Command {
        let (installed, mut cmd) = match self {
            Sdk::Python => {
                let python = root.join(".venv/bin/python");
                let mut cmd = tokio::process::Command::new(&python);
                cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
                    .arg("tests/sdk/python");
                (python, cmd)
            }
            Sdk::TypeScript => {
                let mut cmd = tokio::process::Command::new("node");
                cmd.args(["--test", "tests/sdk/ts/sdk.test.mjs"]);
                (
                    root.join("tests/sdk/ts/node_modules/@anthropic-ai/sdk/package.json"),
                    cmd,
                )
            }
            Sdk::VercelAi => {
                let mut cmd = tokio::process::Command::new("node");
                cmd.args(["--test", "tests/sdk/ai/ai.test.mjs"]);
                (
                    root.join("tests/sdk/ai/node_modules/@ai-sdk/anthropic/package.json"),
                    cmd,
                )
            }
        };
        assert!(
            installed.exists(),
            "{} is missing: run ./scripts/test.sh, which installs the SDK test dependencies",
            installed.display()
        );
        cmd.current_dir(root);
        cmd
    }
}

/// Runs one SDK suite against every target and fails with the output of each failed run.
async fn run_suite(sdk: Sdk) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let upstream = MockUpstream::anthropic();
    let openai = MockUpstream::openai();
    let bedrock = BedrockMock::start(aws_keys(&[(
        AWS_KEY_ID,
        AWS_SECRET,
        Some(AWS_SESSION_TOKEN),
    )]));
    let vertex = VertexMock::start(3600);
    let services = services();
    let ups = Upstreams {
        openai: &openai.url,
        bedrock: bedrock.url(),
        vertex: vertex.url(),
    };
    let gw = TestGateway::start_config(sdk_config(&upstream.url, &ups, &services.url));
    // The targets use disjoint models and keys, so their runs may overlap (an SDK import alone
    // takes seconds).
    // Every model the suites' key sees, in config order (`/v1/models`).
    let model_ids: Vec<&str> = gw.state.models.ordered.iter().map(|m| m.id()).collect();
    let model_ids = model_ids.join(",");
    let runs = TARGETS
        .iter()
        .map(|target| run_target(sdk, root, &gw.url, &services.url, &model_ids, target));
    let failures: Vec<String> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    gw.stop().await;
    upstream.stop().await;
    openai.stop().await;
    bedrock.up.stop().await;
    vertex.up.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(bedrock.bad_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(vertex.refused.load(Ordering::SeqCst), 0);
}

/// One run of `sdk`'s suite against `target`: `Err` holds the report of a failure.
async fn run_target(
    sdk: Sdk,
    root: &Path,
    url: &str,
    services: &str,
    model_ids: &str,
    target: &Target,
) -> Result<(), String> {
    // The suites count `HELLO` (one user message, "Hello there").
    let (count, estimated) = if target.native_count {
        (COUNT_TOKENS, false)
    } else {
        let hello = [serde_json::json!({"role": "user", "content": "Hello there"})];
        (
            aigw::protocol::token_estimate::estimate(None, &hello, &[]),
            true,
        )
    };
    let mut cmd = sdk.command(root);
    // Only what the suite is told: no credentials, base URL or proxy from the environment.
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy().to_ascii_lowercase();
        if name.starts_with("anthropic_") || name.ends_with("_proxy") {
            cmd.env_remove(&var);
        }
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("GATEWAY_URL", url)
        .env("GATEWAY_KEY", KEY)
        .env("GATEWAY_LIMITED_KEY", limited_key(target))
        .env("MODEL_TEXT", target.text)
        .env("MODEL_TOOL", target.tool)
        .env("MODEL_500", target.error_500)
        .env("MODEL_MIDSTREAM", target.midstream)
        .env("EXPECT_TOOL_INPUT", target.expect_tool_input)
        .env("MODEL_LOOP", target.tool_loop)
        .env("MODEL_LOOP_ALL", target.tool_loop_all)
        .env("MODEL_CLIENT_LOOP", target.client_loop)
        .env("MODEL_SEARCH", target.search)
        .env("FETCH_URL", format!("{services}/page"))
        .env("MISSING_URL", format!("{services}/missing"))
        .env("MODEL_IDS", model_ids)
        .env("MODEL_ALIAS", "mock-alias")
        .env("MODEL_ALIAS_ID", "mock-model")
        .env("EXPECT_COUNT_TOKENS", count.to_string())
        .env("EXPECT_TOKEN_ESTIMATE", estimated.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = format!("{sdk:?} SDK suite against target {}", target.name);
    let child = cmd
        .spawn()
        .map_err(|e| format!("{run}: cannot start: {e}"))?;
    let out = tokio::time::timeout(SUITE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{run}: timed out after {SUITE_TIMEOUT:?}"))?
        .map_err(|e| format!("{run}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{run} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        ));
    }
    println!("{run}:\n{stdout}");
    Ok(())
}

#[actix_web::test]
async fn python_sdk_suite() {
    run_suite(Sdk::Python).await;
}

#[actix_web::test]
async fn typescript_sdk_suite() {
    run_suite(Sdk::TypeScript).await;
}

#[actix_web::test]
async fn ai_sdk_suite() {
    run_suite(Sdk::VercelAi).await;
}
