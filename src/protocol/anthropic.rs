//! Anthropic Messages wire types: usage, responses, stream events (messages-api.md §4–§5).
//! Pure values; the I/O lives in `providers/` and `session/`.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::sse::encode_frame;

/// One validation or strictness problem in `error.details` (messages-api.md §3.5): a dotted path
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorDetail {
    pub param: String,
    pub reason: String,
}

impl ErrorDetail {
    pub fn new(param: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            reason: reason.into(),
        }
    }
}

/// The four token counters. Missing or `null` upstream fields read as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, deserialize_with = "null_as_zero")]
    pub input_tokens: u64,
    #[serde(default, deserialize_with = "null_as_zero")]
    pub output_tokens: u64,
    #[serde(default, deserialize_with = "null_as_zero")]
    pub cache_creation_input_tokens: u64,
    #[serde(default, deserialize_with = "null_as_zero")]
    pub cache_read_input_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
    }

    /// Tokens that count against `tokens_per_minute` (gateway.md §8): cache reads excluded.
    pub fn rate_limited_tokens(&self) -> u64 {
        self.input_tokens + self.cache_creation_input_tokens + self.output_tokens
    }
}

fn null_as_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

/// A `usage` object whose fields may be partly absent: `message_delta` usage overlays only the
/// counters it carries.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct PartialUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

impl PartialUsage {
    pub fn overlay(&self, usage: &mut Usage) {
        if let Some(v) = self.input_tokens {
            usage.input_tokens = v;
        }
        if let Some(v) = self.output_tokens {
            usage.output_tokens = v;
        }
        if let Some(v) = self.cache_creation_input_tokens {
            usage.cache_creation_input_tokens = v;
        }
        if let Some(v) = self.cache_read_input_tokens {
            usage.cache_read_input_tokens = v;
        }
    }
}

/// `usage.server_tool_use` with the gateway's five counters (gateway.md §5.10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerToolUse {
    #[serde(default)]
    pub web_search_requests: u64,
    #[serde(default)]
    pub web_fetch_requests: u64,
    #[serde(default)]
    pub datetime_requests: u64,
    #[serde(default)]
    pub advisor_requests: u64,
    #[serde(default)]
    pub image_generation_requests: u64,
}

impl ServerToolUse {
    pub fn add(&mut self, o: &ServerToolUse) {
        self.web_search_requests += o.web_search_requests;
        self.web_fetch_requests += o.web_fetch_requests;
        self.datetime_requests += o.datetime_requests;
        self.advisor_requests += o.advisor_requests;
        self.image_generation_requests += o.image_generation_requests;
    }
}

/// The full `usage` object of a non-stream response (messages-api.md §4.1): every key present.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseUsage<'a> {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation: Option<&'a Value>,
    pub server_tool_use: Option<&'a ServerToolUse>,
    pub service_tier: Option<&'a str>,
}

impl<'a> ResponseUsage<'a> {
    pub fn new(u: &Usage, server_tool_use: Option<&'a ServerToolUse>) -> Self {
        Self {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_creation_input_tokens: u.cache_creation_input_tokens,
            cache_read_input_tokens: u.cache_read_input_tokens,
            cache_creation: None,
            server_tool_use,
            service_tier: None,
        }
    }
}

/// A non-stream message built by the gateway (mock, translated upstreams, tool loops).
#[derive(Debug, Clone, Serialize)]
pub struct MessageResponse<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: &'a [Value],
    pub stop_reason: &'a str,
    pub stop_sequence: Option<&'a str>,
    pub usage: ResponseUsage<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<&'a Value>,
}

impl<'a> MessageResponse<'a> {
    pub fn new(
        id: &'a str,
        model: &'a str,
        content: &'a [Value],
        stop_reason: &'a str,
        usage: ResponseUsage<'a>,
    ) -> Self {
        Self {
            id,
            kind: "message",
            role: "assistant",
            model,
            content,
            stop_reason,
            stop_sequence: None,
            usage,
            debug: None,
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("message serializes")
    }
}

/// What the gateway reads from an upstream Anthropic message (non-stream) without copying it.
#[derive(Debug, Default, Deserialize)]
pub struct ResponseSummary {
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Usage,
}

/// The `message_start` payload, as far as accounting needs it.
#[derive(Debug, Deserialize)]
pub struct MessageStartSummary {
    pub message: MessageStartInner,
}

#[derive(Debug, Deserialize)]
pub struct MessageStartInner {
    #[serde(default)]
    pub usage: Option<PartialUsage>,
}

/// The `message_delta` payload, as far as accounting needs it.
#[derive(Debug, Deserialize)]
pub struct MessageDeltaSummary {
    #[serde(default)]
    pub delta: MessageDeltaInner,
    #[serde(default)]
    pub usage: Option<PartialUsage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MessageDeltaInner {
    #[serde(default)]
    pub stop_reason: Option<String>,
}

/// Stream event names (messages-api.md §5.2). The `event:` line names the JSON `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    MessageStart,
    ContentBlockStart,
    ContentBlockDelta,
    ContentBlockStop,
    MessageDelta,
    MessageStop,
    Ping,
    Error,
    Other,
}

impl EventKind {
    pub fn from_name(name: &[u8]) -> Self {
        match name {
            b"message_start" => Self::MessageStart,
            b"content_block_start" => Self::ContentBlockStart,
            b"content_block_delta" => Self::ContentBlockDelta,
            b"content_block_stop" => Self::ContentBlockStop,
            b"message_delta" => Self::MessageDelta,
            b"message_stop" => Self::MessageStop,
            b"ping" => Self::Ping,
            b"error" => Self::Error,
            _ => Self::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::MessageStart => "message_start",
            Self::ContentBlockStart => "content_block_start",
            Self::ContentBlockDelta => "content_block_delta",
            Self::ContentBlockStop => "content_block_stop",
            Self::MessageDelta => "message_delta",
            Self::MessageStop => "message_stop",
            Self::Ping => "ping",
            Self::Error => "error",
            Self::Other => "",
        }
    }
}

/// One Anthropic stream event, ready to send: its kind and its one-line JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: EventKind,
    /// The event name as sent (equal to `kind.name()` except for unknown events).
    pub name: Bytes,
    pub data: Bytes,
}

impl Frame {
    pub fn new(kind: EventKind, data: Vec<u8>) -> Self {
        Self {
            kind,
            name: Bytes::from_static(kind.name().as_bytes()),
            data: Bytes::from(data),
        }
    }

    /// The wire bytes: `event: <name>\ndata: <json>\n\n`.
    pub fn encode(&self) -> Bytes {
        encode_frame(
            std::str::from_utf8(&self.name).unwrap_or("message"),
            &self.data,
        )
    }
}

/// Builders for the gateway's own stream events, in the exact shapes of messages-api.md §5.3.
pub mod events {
    use super::*;

    #[derive(Serialize)]
    struct StartMessage<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        role: &'static str,
        model: &'a str,
        content: [Value; 0],
        stop_reason: Option<()>,
        stop_sequence: Option<()>,
        usage: &'a Usage,
    }

    pub fn message_start(id: &str, model: &str, usage: &Usage) -> Frame {
        #[derive(Serialize)]
        struct E<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            message: StartMessage<'a>,
        }
        let e = E {
            kind: "message_start",
            message: StartMessage {
                id,
                kind: "message",
                role: "assistant",
                model,
                content: [],
                stop_reason: None,
                stop_sequence: None,
                usage,
            },
        };
        Frame::new(EventKind::MessageStart, to_vec(&e))
    }

    pub fn block_start(index: usize, block: &Value) -> Frame {
        #[derive(Serialize)]
        struct E<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            index: usize,
            content_block: &'a Value,
        }
        Frame::new(
            EventKind::ContentBlockStart,
            to_vec(&E {
                kind: "content_block_start",
                index,
                content_block: block,
            }),
        )
    }

    /// `content_block_start` of an empty text block: `{"type":"text","text":""}`.
    pub fn text_start(index: usize) -> Frame {
        let mut v = Vec::with_capacity(80);
        v.extend_from_slice(b"{\"type\":\"content_block_start\",\"index\":");
        v.extend_from_slice(index.to_string().as_bytes());
        v.extend_from_slice(b",\"content_block\":{\"type\":\"text\",\"text\":\"\"}}");
        Frame::new(EventKind::ContentBlockStart, v)
    }

    /// `content_block_start` of an empty thinking block (signature `""`: translated upstreams have
    /// no signatures).
    pub fn thinking_start(index: usize) -> Frame {
        let mut v = Vec::with_capacity(96);
        v.extend_from_slice(b"{\"type\":\"content_block_start\",\"index\":");
        v.extend_from_slice(index.to_string().as_bytes());
        v.extend_from_slice(
            b",\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}",
        );
        Frame::new(EventKind::ContentBlockStart, v)
    }

    /// `content_block_start` of a `tool_use` block with `"input":{}`; the input follows as
    /// `input_json_delta`s.
    pub fn tool_use_start(index: usize, id: &str, name: &str) -> Frame {
        #[derive(Serialize)]
        struct Block<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            id: &'a str,
            name: &'a str,
            input: Empty,
        }
        #[derive(Serialize)]
        struct Empty {}
        #[derive(Serialize)]
        struct E<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            index: usize,
            content_block: Block<'a>,
        }
        Frame::new(
            EventKind::ContentBlockStart,
            to_vec(&E {
                kind: "content_block_start",
                index,
                content_block: Block {
                    kind: "tool_use",
                    id,
                    name,
                    input: Empty {},
                },
            }),
        )
    }

    /// `text_delta`, `thinking_delta`, `signature_delta` or `input_json_delta`.
    pub fn delta(index: usize, delta_type: DeltaType, value: &str) -> Frame {
        #[derive(Serialize)]
        struct D<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            text: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            thinking: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            signature: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            partial_json: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct E<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            index: usize,
            delta: D<'a>,
        }
        let mut d = D {
            kind: delta_type.name(),
            text: None,
            thinking: None,
            signature: None,
            partial_json: None,
        };
        match delta_type {
            DeltaType::Text => d.text = Some(value),
            DeltaType::Thinking => d.thinking = Some(value),
            DeltaType::Signature => d.signature = Some(value),
            DeltaType::InputJson => d.partial_json = Some(value),
        }
        Frame::new(
            EventKind::ContentBlockDelta,
            to_vec(&E {
                kind: "content_block_delta",
                index,
                delta: d,
            }),
        )
    }

    pub fn citations_delta(index: usize, citation: &Value) -> Frame {
        let v = serde_json::json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "citations_delta", "citation": citation}});
        Frame::new(EventKind::ContentBlockDelta, to_vec(&v))
    }

    /// A complete block as the stream events that build it: empty start, one delta per field,
    /// stop. Tool inputs go out as one `input_json_delta`; result blocks and other kinds arrive
    /// complete in their start (messages-api.md §5.3).
    pub fn block_frames(index: usize, block: &Value) -> Vec<Frame> {
        let text = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or("");
        let mut out = Vec::with_capacity(4);
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                out.push(block_start(
                    index,
                    &serde_json::json!({"type": "text", "text": ""}),
                ));
                if !text("text").is_empty() {
                    out.push(delta(index, DeltaType::Text, text("text")));
                }
                for c in block
                    .get("citations")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.push(citations_delta(index, c));
                }
            }
            Some("thinking") => {
                out.push(block_start(
                    index,
                    &serde_json::json!({"type": "thinking", "thinking": "", "signature": ""}),
                ));
                if !text("thinking").is_empty() {
                    out.push(delta(index, DeltaType::Thinking, text("thinking")));
                }
                if !text("signature").is_empty() {
                    out.push(delta(index, DeltaType::Signature, text("signature")));
                }
            }
            Some("tool_use" | "server_tool_use") => {
                let mut start = block.clone();
                start["input"] = serde_json::json!({});
                out.push(block_start(index, &start));
                let input = block
                    .get("input")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({}));
                if input.as_object().is_none_or(|o| !o.is_empty()) {
                    let json = serde_json::to_string(&input).expect("input serializes");
                    out.push(delta(index, DeltaType::InputJson, &json));
                }
            }
            _ => out.push(block_start(index, block)),
        }
        out.push(block_stop(index));
        out
    }

    pub fn block_stop(index: usize) -> Frame {
        let mut v = Vec::with_capacity(48);
        v.extend_from_slice(b"{\"type\":\"content_block_stop\",\"index\":");
        v.extend_from_slice(index.to_string().as_bytes());
        v.push(b'}');
        Frame::new(EventKind::ContentBlockStop, v)
    }

    /// The final `message_delta`: cumulative usage with all four counters (and `server_tool_use`
    /// when gateway tools are declared), plus `debug` when requested.
    pub fn message_delta(
        stop_reason: &str,
        stop_sequence: Option<&str>,
        usage: &Usage,
        server_tool_use: Option<&ServerToolUse>,
        debug: Option<&Value>,
    ) -> Frame {
        #[derive(Serialize)]
        struct Delta<'a> {
            stop_reason: &'a str,
            stop_sequence: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct U<'a> {
            input_tokens: u64,
            output_tokens: u64,
            cache_creation_input_tokens: u64,
            cache_read_input_tokens: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            server_tool_use: Option<&'a ServerToolUse>,
        }
        #[derive(Serialize)]
        struct E<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            delta: Delta<'a>,
            usage: U<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            debug: Option<&'a Value>,
        }
        Frame::new(
            EventKind::MessageDelta,
            to_vec(&E {
                kind: "message_delta",
                delta: Delta {
                    stop_reason,
                    stop_sequence,
                },
                usage: U {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cache_creation_input_tokens: usage.cache_creation_input_tokens,
                    cache_read_input_tokens: usage.cache_read_input_tokens,
                    server_tool_use,
                },
                debug,
            }),
        )
    }

    pub fn message_stop() -> Frame {
        Frame::new(
            EventKind::MessageStop,
            b"{\"type\":\"message_stop\"}".to_vec(),
        )
    }

    pub fn ping() -> Frame {
        Frame::new(EventKind::Ping, b"{\"type\":\"ping\"}".to_vec())
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DeltaType {
        Text,
        Thinking,
        Signature,
        InputJson,
    }

    impl DeltaType {
        pub fn name(self) -> &'static str {
            match self {
                Self::Text => "text_delta",
                Self::Thinking => "thinking_delta",
                Self::Signature => "signature_delta",
                Self::InputJson => "input_json_delta",
            }
        }
    }

    fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).expect("event serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::events::*;
    use super::*;

    fn json(f: &Frame) -> Value {
        serde_json::from_slice(&f.data).unwrap()
    }

    #[test]
    fn message_start_has_empty_content_and_full_usage() {
        let f = message_start("msg_1", "m", &Usage::default());
        let v = json(&f);
        assert_eq!(v["type"], "message_start");
        assert_eq!(v["message"]["content"], serde_json::json!([]));
        assert_eq!(v["message"]["stop_reason"], Value::Null);
        assert_eq!(v["message"]["usage"]["cache_read_input_tokens"], 0);
        assert!(f.encode().starts_with(b"event: message_start\ndata: {"));
    }

    #[test]
    fn deltas_carry_only_their_field() {
        let v = json(&delta(2, DeltaType::InputJson, "{\"a"));
        assert_eq!(
            v,
            serde_json::json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a"}})
        );
        assert_eq!(
            json(&block_stop(7)),
            serde_json::json!({"type":"content_block_stop","index":7})
        );
    }

    #[test]
    fn block_starts_have_their_empty_fields() {
        assert_eq!(
            json(&text_start(0)),
            serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})
        );
        assert_eq!(
            json(&thinking_start(3)),
            serde_json::json!({"type":"content_block_start","index":3,"content_block":{"type":"thinking","thinking":"","signature":""}})
        );
        assert_eq!(
            json(&tool_use_start(1, "toolu_1", "get_weather")),
            serde_json::json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}})
        );
    }

    #[test]
    fn complete_blocks_become_their_events() {
        let names = |frames: Vec<Frame>| -> Vec<String> {
            frames
                .iter()
                .map(|f| {
                    let v = json(f);
                    match v["delta"]["type"].as_str() {
                        Some(t) => t.to_string(),
                        None => v["type"].as_str().unwrap().to_string(),
                    }
                })
                .collect()
        };
        let text =
            serde_json::json!({"type":"text","text":"hi","citations":[{"type":"char_location"}]});
        assert_eq!(
            names(block_frames(3, &text)),
            [
                "content_block_start",
                "text_delta",
                "citations_delta",
                "content_block_stop"
            ]
        );
        let tool = serde_json::json!({"type":"server_tool_use","id":"srvtoolu_gw_1","name":"datetime","input":{"a":1}});
        let frames = block_frames(0, &tool);
        assert_eq!(
            json(&frames[0])["content_block"]["input"],
            serde_json::json!({})
        );
        assert_eq!(json(&frames[1])["delta"]["partial_json"], "{\"a\":1}");
        let empty = serde_json::json!({"type":"tool_use","id":"t","name":"f","input":{}});
        assert_eq!(
            block_frames(0, &empty).len(),
            2,
            "no empty input_json_delta"
        );
        let result =
            serde_json::json!({"type":"datetime_tool_result","tool_use_id":"x","content":{}});
        let frames = block_frames(1, &result);
        assert_eq!(json(&frames[0])["content_block"], result);
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn message_delta_has_all_counters() {
        let u = Usage {
            input_tokens: 3,
            output_tokens: 4,
            ..Default::default()
        };
        let v = json(&message_delta("end_turn", None, &u, None, None));
        assert_eq!(
            v,
            serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                "usage":{"input_tokens":3,"output_tokens":4,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}})
        );
    }

    #[test]
    fn usage_reads_null_as_zero_and_overlays() {
        let u: Usage =
            serde_json::from_str(r#"{"input_tokens":5,"cache_read_input_tokens":null}"#).unwrap();
        assert_eq!(u.input_tokens, 5);
        assert_eq!(u.cache_read_input_tokens, 0);
        let mut base = u;
        let p: PartialUsage = serde_json::from_str(r#"{"output_tokens":9}"#).unwrap();
        p.overlay(&mut base);
        assert_eq!((base.input_tokens, base.output_tokens), (5, 9));
    }
}
