//! [`RequestRecord`]: what one finished API request leaves behind, for the metrics and the
//! request log row alike.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::config::Price;
use crate::protocol::anthropic::{ServerToolUse, Usage};
use crate::protocol::request::MessagesRequest;

/// One upstream attempt, as logs and debug output show it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub n: u32,
    pub round: u32,
    pub deployment: String,
    pub status: Option<u16>,
    pub class: Option<&'static str>,
    pub duration: Duration,
    pub retry_in: Option<Duration>,
    pub upstream_request_id: Option<String>,
}

/// The API endpoint a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    CountTokens,
    Models,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::CountTokens => "count_tokens",
            Self::Models => "models",
        }
    }
}

/// One finished request. Fields a request never reached stay empty.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub endpoint: Endpoint,
    /// When the request arrived.
    pub ts: SystemTime,
    pub request_id: String,
    /// The authenticated key's name.
    pub key_name: Option<String>,
    pub session_id: Option<String>,
    /// `metadata.user_id`.
    pub user_id: Option<String>,
    /// The configured model id (aliases resolved); `None` until the model is known.
    pub model: Option<String>,
    /// The `model` the client sent, kept in the log when it names no configured model.
    pub requested_model: Option<String>,
    /// The deployment that answered (or was asked last).
    pub deployment: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub stream: bool,
    /// The HTTP status; 200 for a stream that ended in an in-band error (`error_type` says so),
    /// 499 when the client went away first.
    pub status: u16,
    pub error_type: Option<String>,
    pub stop_reason: Option<String>,
    pub usage: Usage,
    /// Gateway tool calls (`usage.server_tool_use`).
    pub server_tool_use: ServerToolUse,
    pub rounds: u32,
    pub attempts: Vec<AttemptRecord>,
    pub total: Duration,
    /// To the first byte of the response body.
    pub ttft: Option<Duration>,
    /// Attempts, retry waits and tool execution (gateway.md §11).
    pub upstream: Duration,
    /// The answering deployment's price, for `cost_usd`.
    pub price: Option<Price>,
    /// Only with `request_log.log_bodies`; redacted.
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    /// The request's server span when spans are exported; it ends when the record is accounted
    /// for, and takes the request's attributes then.
    pub trace: Option<tracing::Span>,
}

/// An empty record, left behind when a record moves on (to the session, to the log).
impl Default for RequestRecord {
    fn default() -> Self {
        Self::new(Endpoint::Messages, "", SystemTime::UNIX_EPOCH)
    }
}

impl RequestRecord {
    /// A record for `endpoint` with nothing known yet but its id and arrival.
    pub fn new(endpoint: Endpoint, request_id: &str, ts: SystemTime) -> Self {
        Self {
            endpoint,
            ts,
            request_id: request_id.to_string(),
            key_name: None,
            session_id: None,
            user_id: None,
            model: None,
            requested_model: None,
            deployment: None,
            provider: None,
            upstream_model: None,
            stream: false,
            status: 200,
            error_type: None,
            stop_reason: None,
            usage: Usage::default(),
            server_tool_use: ServerToolUse::default(),
            rounds: 0,
            attempts: Vec::new(),
            total: Duration::ZERO,
            ttft: None,
            upstream: Duration::ZERO,
            price: None,
            request_body: None,
            response_body: None,
            trace: None,
        }
    }

    /// Total minus upstream time, as the debug object computes it (from whole milliseconds, so
    /// the three logged figures always add up).
    pub fn overhead(&self) -> Duration {
        self.total.saturating_sub(self.upstream)
    }

    /// USD: input and cache writes at the input price, output at the output price, cache reads
    /// at a tenth of the input price (Anthropic's rates relative to the base price).
    pub fn cost_usd(&self) -> Option<f64> {
        let p = self.price?;
        let u = &self.usage;
        let input = (u.input_tokens + u.cache_creation_input_tokens) as f64
            + u.cache_read_input_tokens as f64 * 0.1;
        Some((input * p.input + u.output_tokens as f64 * p.output) / 1_000_000.0)
    }
}

/// `metadata.user_id` of a request, if it is a string.
pub fn user_id(request: &MessagesRequest) -> Option<String> {
    let raw = request.field("metadata")?;
    #[derive(serde::Deserialize)]
    struct Meta {
        user_id: Option<String>,
    }
    serde_json::from_str::<Meta>(raw.get()).ok()?.user_id
}

/// Longest string field kept in a logged body; base64 payloads and huge texts are summarised.
const MAX_LOGGED_STRING: usize = 4096;

/// A body as the request log stores it: base64 `data` of images and documents replaced by their
/// size, strings over 4 KiB cut, and every `secrets` value blanked out.
pub fn redact_body(body: &[u8], secrets: &[&str]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact_value(&mut v);
            v.to_string()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text, |t, s| t.replace(s, "[redacted]"))
}

fn redact_value(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let base64 = map.get("type").and_then(Value::as_str) == Some("base64");
            for (k, child) in map.iter_mut() {
                match child {
                    Value::String(s) if base64 && k == "data" => {
                        *child = Value::String(format!("[base64, {} bytes]", s.len()));
                    }
                    _ => redact_value(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::String(s) if s.len() > MAX_LOGGED_STRING => {
            let mut end = MAX_LOGGED_STRING;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let cut = s.len() - end;
            s.truncate(end);
            s.push_str(&format!("…[{cut} more bytes]"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_are_redacted() {
        let body = json!({
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJDRA=="}},
                {"type": "text", "text": "my key is sk-live-1"}
            ]}],
            "long": "x".repeat(5000),
        });
        let out = redact_body(body.to_string().as_bytes(), &["sk-live-1", ""]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["messages"][0]["content"][0]["source"]["data"],
            "[base64, 8 bytes]"
        );
        assert_eq!(
            v["messages"][0]["content"][1]["text"],
            "my key is [redacted]"
        );
        assert!(v["long"].as_str().unwrap().ends_with("…[904 more bytes]"));
        assert_eq!(
            redact_body(b"not json sk-live-1", &["sk-live-1"]),
            "not json [redacted]"
        );
    }

    #[test]
    fn cost_uses_the_deployment_price() {
        let mut r = RequestRecord::new(Endpoint::Messages, "req_1", SystemTime::now());
        assert_eq!(r.cost_usd(), None);
        r.price = Some(Price {
            input: 3.0,
            output: 15.0,
        });
        r.usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 1_000_000,
        };
        let cost = r.cost_usd().unwrap();
        assert!((cost - (3.0 + 1.5 + 0.3)).abs() < 1e-9, "{cost}");
    }
}
