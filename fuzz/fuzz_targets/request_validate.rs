//! A client body through everything the gateway does to it before any I/O: split into fields,
//! validate (both API versions, and as count_tokens), gateway tool declarations, capability
//! warnings, and the Anthropic and OpenAI upstream bodies. Never panics, and every body it
//! writes is JSON.
#![no_main]

use aigw::config::{ProviderKind, ToolsConfig};
use aigw::protocol::capabilities::{evaluate, Capabilities};
use aigw::protocol::request::parse_fields;
use aigw::protocol::translate::request::{translate_request, RequestContext};
use aigw::protocol::validate::{validate, validate_count_tokens, ApiVersion};
use aigw::tools::declare::{ModelAccess, ToolSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(fields) = parse_fields(body) else {
        return;
    };
    let _ = validate_count_tokens(fields.clone(), ApiVersion::V2023_06_01);
    for version in [ApiVersion::V2023_06_01, ApiVersion::V2026_10_21] {
        let req = match validate(fields.clone(), version) {
            Ok(r) => r,
            Err(details) => {
                assert!(!details.is_empty());
                continue;
            }
        };
        let _ = ToolSet::declare(&req.tools, &ToolsConfig::default(), &|_| ModelAccess::Allowed);
        let _ = req.last_user_text();
        let up = req.anthropic_body("upstream-model", &[]);
        serde_json::from_slice::<serde_json::Value>(&up).expect("the Anthropic body is JSON");
        for kind in [ProviderKind::Anthropic, ProviderKind::Openai] {
            let caps = Capabilities::default_for(kind);
            let _ = evaluate(&req, &caps, true);
        }
        let caps = Capabilities::default_for(ProviderKind::Openai);
        for stream in [false, true] {
            let t = translate_request(
                &req,
                &RequestContext {
                    upstream_model: "gpt-x",
                    caps: &caps,
                    stream,
                    prompt_cache_key: Some("session"),
                },
            );
            serde_json::from_slice::<serde_json::Value>(&t.body).expect("the OpenAI body is JSON");
        }
    }
});
