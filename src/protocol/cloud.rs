//! The Anthropic body inside the cloud envelopes: Bedrock's `InvokeModel` and Vertex's
//! `rawPredict` take the Messages body with the model in the URL and their own
//! `anthropic_version` in the body.

use base64::Engine;
use bytes::Bytes;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::value::RawValue;

pub const BEDROCK_VERSION: &str = "bedrock-2023-05-31";
pub const VERTEX_VERSION: &str = "vertex-2023-10-16";

/// The `anthropic-beta` values Claude on Bedrock and Vertex accept (from their documentation);
/// they refuse any other with a 400, so the gateway drops the rest (and says so in `warn` mode).
const CLOUD_BETAS: [&str; 14] = [
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "computer-use-2025-11-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "effort-2025-11-24",
    "tool-search-tool-2025-10-19",
    "tool-examples-2025-10-29",
    "fine-grained-tool-streaming-2025-05-14",
    "prompt-caching-2024-07-31",
];

/// The client's `anthropic-beta` values (comma-joined, as the gateway carries them), split.
pub fn split_betas(header: Option<&str>) -> impl Iterator<Item = &str> {
    header
        .into_iter()
        .flat_map(|b| b.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
}

pub fn cloud_supports_beta(beta: &str) -> bool {
    CLOUD_BETAS.contains(&beta)
}

/// The body with `drop` removed and `add` appended; untouched fields keep their bytes and order.
fn rebody(body: &[u8], drop: &[&str], add: &[(&str, String)]) -> Result<Vec<u8>, String> {
    let mut fields: IndexMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))?;
    for k in drop.iter().chain(add.iter().map(|(k, _)| k)) {
        fields.shift_remove(*k);
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    let mut first = true;
    let added = add.iter().map(|(k, v)| (*k, v.as_str()));
    for (k, v) in fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.get()))
        .chain(added)
    {
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, k).expect("a key serializes");
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Bedrock's `InvokeModel` body: no `model` or `stream` (the URL says both), its version, and the
/// client's betas as `anthropic_beta`.
pub fn bedrock_body(anthropic_body: &[u8], betas: &[&str]) -> Result<Vec<u8>, String> {
    let mut add = vec![("anthropic_version", json_string(BEDROCK_VERSION))];
    if !betas.is_empty() {
        add.push((
            "anthropic_beta",
            serde_json::to_string(betas).expect("strings serialize"),
        ));
    }
    rebody(anthropic_body, &["model", "stream"], &add)
}

/// Bedrock's `CountTokens` body: the `InvokeModel` body, base64 in a blob.
pub fn bedrock_count_body(anthropic_body: &[u8], betas: &[&str]) -> Result<Vec<u8>, String> {
    let inner = bedrock_body(anthropic_body, betas)?;
    let blob = base64::engine::general_purpose::STANDARD.encode(inner);
    Ok(
        serde_json::json!({"input": {"invokeModel": {"body": blob}}})
            .to_string()
            .into_bytes(),
    )
}

/// Bedrock's `{"inputTokens": n}` as Anthropic's `{"input_tokens": n}`.
pub fn bedrock_count_reply(body: &[u8]) -> Result<Bytes, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Count {
        input_tokens: u64,
    }
    let c: Count = serde_json::from_slice(body)
        .map_err(|_| "upstream returned an invalid CountTokens body".to_string())?;
    Ok(Bytes::from(
        serde_json::json!({"input_tokens": c.input_tokens}).to_string(),
    ))
}

/// `/model/{modelId}/{op}`: the id is percent-encoded as one path segment (it holds `:`).
pub fn bedrock_path(model: &str, op: &str) -> String {
    format!("/model/{}/{op}", encode_segment(model))
}

/// RFC 3986 unreserved characters stay; everything else is `%XX`, as the AWS SDKs encode labels.
fn encode_segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Vertex's body: no `model` (the URL says it), its version; `stream` stays, as
/// `streamRawPredict` wants it.
pub fn vertex_body(anthropic_body: &[u8]) -> Result<Vec<u8>, String> {
    rebody(
        anthropic_body,
        &["model"],
        &[("anthropic_version", json_string(VERTEX_VERSION))],
    )
}

/// Vertex's count-tokens body keeps the model (one endpoint serves every model).
pub fn vertex_count_body(anthropic_body: &[u8]) -> Result<Vec<u8>, String> {
    rebody(
        anthropic_body,
        &[],
        &[("anthropic_version", json_string(VERTEX_VERSION))],
    )
}

/// `/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:{method}`.
pub fn vertex_path(project: &str, region: &str, model: &str, method: &str) -> String {
    format!(
        "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{}:{method}",
        encode_segment(model).replace("%40", "@")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn bedrock_bodies() {
        let body = br#"{"model":"claude","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"h\u00e9"}],"temperature":0.50}"#;
        let out = bedrock_body(body, &["beta-a", "beta-b"]).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"max_tokens":64,"messages":[{"role":"user","content":"h\u00e9"}],"temperature":0.50,"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["beta-a","beta-b"]}"#
        );
        let out: Value = serde_json::from_slice(&bedrock_body(body, &[]).unwrap()).unwrap();
        assert!(out.get("anthropic_beta").is_none());
        let count: Value = serde_json::from_slice(&bedrock_count_body(body, &[]).unwrap()).unwrap();
        let blob = count["input"]["invokeModel"]["body"].as_str().unwrap();
        let inner = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .unwrap();
        assert_eq!(inner, bedrock_body(body, &[]).unwrap());
        assert_eq!(
            &bedrock_count_reply(br#"{"inputTokens":17}"#).unwrap()[..],
            br#"{"input_tokens":17}"#
        );
        assert!(bedrock_count_reply(b"{}").is_err());
        assert!(bedrock_body(b"[1]", &[]).is_err());
    }

    #[test]
    fn betas() {
        let kept: Vec<&str> = split_betas(Some("claude-code-20250219, context-1m-2025-08-07,,"))
            .filter(|b| cloud_supports_beta(b))
            .collect();
        assert_eq!(kept, ["context-1m-2025-08-07"]);
        assert_eq!(split_betas(None).count(), 0);
    }

    #[test]
    fn paths() {
        assert_eq!(
            bedrock_path("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "invoke"),
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
        );
        assert_eq!(
            bedrock_path("arn:aws:bedrock:us-east-1:1:inference-profile/x", "invoke"),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/invoke"
        );
        assert_eq!(
            vertex_path("p", "us-east5", "claude-sonnet-4-5@20250929", "rawPredict"),
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
        );
    }

    #[test]
    fn vertex_bodies() {
        let body = br#"{"model":"claude","stream":true,"max_tokens":8,"anthropic_version":"x"}"#;
        let out: Value = serde_json::from_slice(&vertex_body(body).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"stream":true,"max_tokens":8,"anthropic_version":"vertex-2023-10-16"})
        );
        let out: Value = serde_json::from_slice(&vertex_count_body(body).unwrap()).unwrap();
        assert_eq!(out["model"], "claude");
    }
}
