//! `image_generation` (gateway.md §5.9): `POST {base_url}/images/generations` on the configured
//! OpenAI-kind provider. The image goes to the client; the model sees only a short status.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::declare::{ImageFormat, ImageOptions};
use super::{ToolErrorCode, ToolKind, ToolOutcome};
use crate::protocol::anthropic::Usage;
use crate::providers::Provider;

const KIND: ToolKind = ToolKind::ImageGeneration;
pub const IMAGE_TIMEOUT: Duration = Duration::from_secs(120);
pub const MAX_PROMPT_CHARS: usize = 4000;
/// Larger answers are refused (a 4096² PNG in base64 stays well below this).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The request body for one call (`n` is always 1).
pub fn build_body(options: &ImageOptions, model: &str, input: &Value) -> Result<Value, String> {
    let prompt = match input.get("prompt").and_then(Value::as_str).map(str::trim) {
        Some(p) if !p.is_empty() && p.chars().count() <= MAX_PROMPT_CHARS => p,
        _ => {
            return Err(format!(
                "prompt must be a string of 1..{MAX_PROMPT_CHARS} characters"
            ))
        }
    };
    let mut body = json!({"model": model, "prompt": prompt, "n": 1});
    // Declared values win; when undeclared, the model may set size and quality.
    for (key, declared) in [("size", &options.size), ("quality", &options.quality)] {
        let value = match declared {
            Some(v) => Some(v.clone()),
            None => match input.get(key) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
                Some(_) => return Err(format!("{key} must be a short string")),
            },
        };
        if let Some(v) = value {
            body[key] = Value::String(v);
        }
    }
    if let Some(b) = &options.background {
        body["background"] = json!(b);
    }
    if let Some(f) = options.output_format {
        body["output_format"] = json!(f.as_str());
    }
    Ok(body)
}

/// The image's media type: from its bytes when recognisable, else the declared format (PNG).
fn media_type(b64: &str, declared: Option<ImageFormat>) -> &'static str {
    let head = b64.get(..32.min(b64.len())).unwrap_or("");
    let head = &head[..head.len() / 4 * 4];
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(head)
        .unwrap_or_default();
    if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        declared.unwrap_or(ImageFormat::Png).media_type()
    }
}

/// Reads an images API answer into the result `content`, the model's view and usage.
pub fn parse_response(
    body: &[u8],
    model: &str,
    declared: Option<ImageFormat>,
) -> Result<(Value, String, Option<Usage>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("unexpected response: {e}"))?;
    let first = v
        .get("data")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .ok_or("the response has no data[0]")?;
    let revised = first.get("revised_prompt").cloned().unwrap_or(Value::Null);
    let (source, media) = if let Some(b64) = first
        .get("b64_json")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let media = media_type(b64, declared);
        (
            json!({"type": "base64", "media_type": media, "data": b64}),
            Some(media),
        )
    } else if let Some(url) = first
        .get("url")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        (
            json!({"type": "url", "url": url}),
            declared.map(ImageFormat::media_type),
        )
    } else {
        return Err("data[0] has neither b64_json nor url".into());
    };
    let usage = v.get("usage").map(|u| Usage {
        input_tokens: u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
        output_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
        ..Default::default()
    });
    let content = json!({"type": "image_generation_result", "model": model, "revised_prompt": revised, "source": source});
    Ok((content, model_view(media), usage))
}

fn model_view(media_type: Option<&str>) -> String {
    json!({"status": "ok", "media_type": media_type, "note": "image shown to the user"}).to_string()
}

/// The model's view of an `image_generation_result` found in history.
pub fn model_content_from_block(content: &Value) -> String {
    model_view(content["source"]["media_type"].as_str())
}

/// The image generation executor of one worker.
pub struct ImageGeneration {
    provider: Option<Arc<Provider>>,
    client: awc::Client,
    timeout: Duration,
}

impl ImageGeneration {
    /// `provider`: the one named by `tools.image_generation.provider`, if any.
    pub fn new(provider: Option<Arc<Provider>>, timeout: Duration) -> Self {
        Self {
            provider,
            client: super::api_client::api_client(),
            timeout,
        }
    }

    pub async fn execute(
        &self,
        tool_use_id: &str,
        options: &ImageOptions,
        input: &Value,
    ) -> ToolOutcome {
        let fail =
            |code: ToolErrorCode, msg: &str| ToolOutcome::error(KIND, tool_use_id, code, msg);
        let (Some(provider), Some(model)) = (&self.provider, &options.model) else {
            return fail(
                ToolErrorCode::Unavailable,
                "image generation is not configured",
            );
        };
        let body = match build_body(options, model, input) {
            Ok(b) => b,
            Err(msg) => return fail(ToolErrorCode::InvalidToolInput, &msg),
        };
        let sent = tokio::time::timeout(self.timeout, self.send(provider, &body)).await;
        let failed = |code, msg: &str| fail(code, msg).counted(true);
        match sent {
            Err(_) => failed(ToolErrorCode::Unavailable, "image generation timed out"),
            Ok(Err(Sent::Network(why))) => {
                tracing::warn!(provider = provider.name(), error = %provider.redact(&why), "image generation failed");
                failed(
                    ToolErrorCode::Unavailable,
                    "the image service is unavailable",
                )
            }
            Ok(Err(Sent::Status(429))) => failed(
                ToolErrorCode::TooManyRequests,
                "the image service is rate limited",
            ),
            Ok(Err(Sent::Status(s))) if s >= 500 || s == 401 || s == 403 || s == 404 => failed(
                ToolErrorCode::Unavailable,
                "the image service is unavailable",
            ),
            Ok(Err(Sent::Status(_))) => failed(
                ToolErrorCode::GenerationFailed,
                "the image could not be generated",
            ),
            Ok(Ok(bytes)) => match parse_response(&bytes, model, options.output_format) {
                Ok((content, view, usage)) => {
                    let o = ToolOutcome::success(KIND, tool_use_id, content, view);
                    match usage {
                        Some(u) => o.with_usage(u),
                        None => o,
                    }
                }
                Err(why) => {
                    tracing::warn!(provider = provider.name(), error = %why, "image generation answer unreadable");
                    failed(
                        ToolErrorCode::GenerationFailed,
                        "the image could not be generated",
                    )
                }
            },
        }
    }

    async fn send(&self, provider: &Provider, body: &Value) -> Result<bytes::Bytes, Sent> {
        let base = provider
            .config
            .base_url
            .as_deref()
            .unwrap_or("https://api.openai.com/v1");
        let mut req = self
            .client
            .post(format!("{}/images/generations", base.trim_end_matches('/')));
        for (k, v) in &provider.config.headers {
            req = req.insert_header((k.as_str(), v.as_str()));
        }
        if let Some(key) = &provider.api_key {
            req = req.bearer_auth(key.expose());
        }
        let mut res = req
            .send_json(body)
            .await
            .map_err(|e| Sent::Network(e.to_string()))?;
        let status = res.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(Sent::Status(status));
        }
        res.body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| Sent::Network(e.to_string()))
    }
}

enum Sent {
    Network(String),
    Status(u16),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ImageOptions {
        ImageOptions {
            model: Some("gpt-image-1".into()),
            size: None,
            quality: Some("high".into()),
            background: Some("transparent".into()),
            output_format: None,
        }
    }

    #[test]
    fn bodies() {
        let b = build_body(
            &opts(),
            "gpt-image-1",
            &json!({"prompt":" a cat ","size":"1024x1024","quality":"low"}),
        )
        .unwrap();
        assert_eq!(
            b,
            json!({"model":"gpt-image-1","prompt":"a cat","n":1,"size":"1024x1024","quality":"high","background":"transparent"})
        );
        let mut o = opts();
        o.output_format = Some(ImageFormat::Webp);
        assert_eq!(
            build_body(&o, "m", &json!({"prompt":"x"})).unwrap()["output_format"],
            "webp"
        );
        for bad in [
            json!({}),
            json!({"prompt":""}),
            json!({"prompt":"x".repeat(4001)}),
            json!({"prompt":"x","size":5}),
        ] {
            assert!(build_body(&opts(), "m", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let png =
            base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\n0000000000000000");
        let body = json!({"created":1,"data":[{"b64_json":png,"revised_prompt":"a cute cat"}],
                          "usage":{"input_tokens":12,"output_tokens":4160,"total_tokens":4172}});
        let (content, view, usage) = parse_response(
            body.to_string().as_bytes(),
            "gpt-image-1",
            Some(ImageFormat::Jpeg),
        )
        .unwrap();
        assert_eq!(
            content["source"],
            json!({"type":"base64","media_type":"image/png","data":png})
        );
        assert_eq!(content["revised_prompt"], "a cute cat");
        assert_eq!(
            view,
            r#"{"status":"ok","media_type":"image/png","note":"image shown to the user"}"#
        );
        assert_eq!(usage.unwrap().output_tokens, 4160);
        assert_eq!(model_content_from_block(&content), view);

        let jpeg =
            base64::engine::general_purpose::STANDARD.encode([0xff, 0xd8, 0xff, 0xe0, 0, 0, 0, 0]);
        let body = json!({"data":[{"b64_json":jpeg}]});
        let (content, _, usage) = parse_response(body.to_string().as_bytes(), "m", None).unwrap();
        assert_eq!(content["source"]["media_type"], "image/jpeg");
        assert_eq!(content["revised_prompt"], Value::Null);
        assert!(usage.is_none());

        let body = json!({"data":[{"url":"https://img.example/1.png"}]});
        let (content, _, _) = parse_response(body.to_string().as_bytes(), "m", None).unwrap();
        assert_eq!(
            content["source"],
            json!({"type":"url","url":"https://img.example/1.png"})
        );

        assert!(parse_response(br#"{"data":[]}"#, "m", None).is_err());
        assert!(parse_response(br#"{"data":[{}]}"#, "m", None).is_err());
        assert!(parse_response(b"nope", "m", None).is_err());
    }
}
