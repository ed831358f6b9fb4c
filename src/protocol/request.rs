//! The client's `POST /v1/messages` body. Top-level fields keep their original bytes and order
//! (`RawValue` + `preserve_order`) so an Anthropic upstream receives untouched fields byte for
//! byte; the parts the gateway must understand are parsed into `Value`s beside them.

use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::Value;

use super::extensions::Extensions;

/// Top-level fields in arrival order, each with its original bytes. Every request builds and
/// probes this map about twenty times, so it uses foldhash (randomly seeded per process) rather
/// than SipHash.
pub type RawFields = IndexMap<String, Box<RawValue>, foldhash::fast::RandomState>;

/// Gateway extensions (gateway.md §4): removed before forwarding.
pub const EXTENSION_FIELDS: [&str; 7] = [
    "session_id",
    "provider",
    "routing",
    "debug",
    "prompt_cache_retention",
    "provider_options",
    "web_search_options",
];

/// Anthropic top-level fields (messages-api.md §3.1).
pub const ANTHROPIC_FIELDS: [&str; 20] = [
    "model",
    "max_tokens",
    "messages",
    "system",
    "stream",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "cache_control",
    "container",
    "mcp_servers",
    "output_config",
    "inference_geo",
    "context_management",
];

/// The tool name in a gateway tool type (`gateway:web_search`, `ai-stats:web_search` →
/// `web_search`; gateway.md §5.1). The one test for the two prefixes.
pub fn gateway_tool_name(ty: &str) -> Option<&str> {
    ty.strip_prefix("gateway:")
        .or_else(|| ty.strip_prefix("ai-stats:"))
}

/// Whether a tool `type` is a gateway tool type (`gateway:*`, `ai-stats:*`).
pub fn is_gateway_tool_type(ty: &str) -> bool {
    gateway_tool_name(ty).is_some()
}

/// Why a body is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError(pub String);

/// Splits a body into its top-level fields without parsing their values.
pub fn parse_fields(body: &[u8]) -> Result<RawFields, BodyError> {
    let trimmed = body.trim_ascii_start();
    if trimmed.first() != Some(&b'{') {
        return Err(BodyError(if trimmed.is_empty() {
            "request body is empty; expected a JSON object".into()
        } else {
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => "request body must be a JSON object".into(),
                Err(e) => format!("invalid JSON: {e}"),
            }
        }));
    }
    serde_json::from_slice::<RawFields>(body).map_err(|e| BodyError(format!("invalid JSON: {e}")))
}

/// A validated request (see `validate.rs`).
#[derive(Debug, Clone)]
pub struct MessagesRequest {
    pub fields: RawFields,
    pub model: String,
    pub max_tokens: u64,
    pub stream: bool,
    pub system: Option<Value>,
    pub messages: Vec<Value>,
    pub tools: Vec<Value>,
    pub tool_choice: Option<Value>,
    /// Top-level keys that are neither Anthropic fields nor gateway extensions (strictness).
    pub unknown_fields: Vec<String>,
    /// The gateway extensions, typed; their fields stay in `fields` but are never forwarded.
    pub extensions: Extensions,
}

impl MessagesRequest {
    pub fn field(&self, key: &str) -> Option<&RawValue> {
        self.fields.get(key).map(|v| &**v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    /// Replaces (or appends) a top-level field with a new value.
    pub fn set_field(&mut self, key: &str, value: &Value) {
        let raw = serde_json::value::to_raw_value(value).expect("Value serializes");
        self.fields.insert(key.to_string(), raw);
    }

    /// Replaces the conversation, keeping `fields["messages"]` in step.
    pub fn set_messages(&mut self, messages: Vec<Value>) {
        let raw = serde_json::value::to_raw_value(&messages).expect("Value serializes");
        self.fields.insert("messages".to_string(), raw);
        self.messages = messages;
    }

    /// The body for an Anthropic upstream: every field but the gateway extensions and `skip`, in
    /// arrival order and with original bytes, `model` rewritten to the upstream id. Thinking
    /// blocks without a signature (from an OpenAI-compatible backend) are dropped, since
    /// Anthropic refuses them (translation.md §2); `provider_options.anthropic` is merged last.
    pub fn anthropic_body(&self, upstream_model: &str, skip: &[&str]) -> Vec<u8> {
        let unsigned = self.without_unsigned_thinking();
        let out = self.write_anthropic_body(upstream_model, skip, unsigned.as_deref());
        match &self.extensions.provider_options.anthropic {
            None => out,
            Some(patch) => {
                let mut body: Value =
                    serde_json::from_slice(&out).expect("the body just written is JSON");
                super::merge::merge_top_level(&mut body, patch);
                serde_json::to_vec(&body).expect("Value serializes")
            }
        }
    }

    /// The `messages` field without unsigned thinking blocks, when it has any.
    fn without_unsigned_thinking(&self) -> Option<Box<RawValue>> {
        let unsigned = |b: &Value| {
            b.get("type").and_then(Value::as_str) == Some("thinking")
                && b.get("signature")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
        };
        let has = self.messages.iter().any(|m| {
            m.get("content")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(unsigned))
        });
        if !has {
            return None;
        }
        let messages: Vec<Value> = self
            .messages
            .iter()
            .filter_map(|m| {
                let Some(blocks) = m.get("content").and_then(Value::as_array) else {
                    return Some(m.clone());
                };
                let kept: Vec<Value> = blocks.iter().filter(|b| !unsigned(b)).cloned().collect();
                if kept.is_empty() {
                    return None; // a turn that was only unsigned thinking
                }
                let mut m = m.clone();
                m["content"] = Value::Array(kept);
                Some(m)
            })
            .collect();
        serde_json::value::to_raw_value(&messages).ok()
    }

    fn write_anthropic_body(
        &self,
        upstream_model: &str,
        skip: &[&str],
        messages: Option<&RawValue>,
    ) -> Vec<u8> {
        let size: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + upstream_model.len() + 16);
        out.push(b'{');
        let mut first = true;
        for (k, v) in &self.fields {
            if EXTENSION_FIELDS.contains(&k.as_str()) || skip.contains(&k.as_str()) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, k).expect("key serializes");
            out.push(b':');
            if k == "model" {
                serde_json::to_writer(&mut out, upstream_model).expect("model serializes");
            } else if let (true, Some(m)) = (k == "messages", messages) {
                out.extend_from_slice(m.get().as_bytes());
            } else {
                out.extend_from_slice(v.get().as_bytes());
            }
        }
        out.push(b'}');
        out
    }

    /// The text of the last user message (string content or its text blocks).
    pub fn last_user_text(&self) -> String {
        let Some(last) = self
            .messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        else {
            return String::new();
        };
        match last.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(blocks)) => blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_order_and_bytes() {
        let body = br#"{"model":"a",  "messages":[{"role":"user","content":"h\u00e9"}],"max_tokens":1.0e1,"session_id":"s","z":{"b":1, "a":2}}"#;
        let f = parse_fields(body).unwrap();
        let keys: Vec<_> = f.keys().cloned().collect();
        assert_eq!(keys, ["model", "messages", "max_tokens", "session_id", "z"]);
        assert_eq!(f["z"].get(), r#"{"b":1, "a":2}"#);
        let req = MessagesRequest {
            fields: f,
            model: "a".into(),
            max_tokens: 10,
            stream: false,
            system: None,
            messages: vec![],
            tools: vec![],
            tool_choice: None,
            unknown_fields: vec![],
            extensions: Extensions::default(),
        };
        let out = String::from_utf8(req.anthropic_body("up-1", &[])).unwrap();
        assert_eq!(
            out,
            r#"{"model":"up-1","messages":[{"role":"user","content":"h\u00e9"}],"max_tokens":1.0e1,"z":{"b":1, "a":2}}"#
        );
    }

    #[test]
    fn unsigned_thinking_is_dropped_and_provider_options_merged() {
        let body = br#"{"model":"a","max_tokens":5,"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":""},{"type":"text","text":"x"}]},{"role":"assistant","content":[{"type":"thinking","thinking":"only"}]},{"role":"user","content":"again"}],"provider_options":{"anthropic":{"top_k":3,"model":"no"},"openai":{"seed":1}}}"#;
        let f = parse_fields(body).unwrap();
        let messages: Vec<Value> = serde_json::from_str(f["messages"].get()).unwrap();
        let req = MessagesRequest {
            fields: f,
            model: "a".into(),
            max_tokens: 5,
            stream: false,
            system: None,
            messages,
            tools: vec![],
            tool_choice: None,
            unknown_fields: vec![],
            extensions: Extensions {
                provider_options: super::super::extensions::ProviderOptions {
                    anthropic: serde_json::json!({"top_k":3,"model":"no"})
                        .as_object()
                        .cloned(),
                    openai: None,
                },
                ..Extensions::default()
            },
        };
        let out: Value = serde_json::from_slice(&req.anthropic_body("up", &[])).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"model":"up","max_tokens":5,"top_k":3,"messages":[
                {"role":"user","content":"q"},
                {"role":"assistant","content":[{"type":"text","text":"x"}]},
                {"role":"user","content":"again"}]})
        );
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(parse_fields(b"").unwrap_err().0.contains("empty"));
        assert!(parse_fields(b"[1]").unwrap_err().0.contains("JSON object"));
        assert!(parse_fields(b"{\"a\":")
            .unwrap_err()
            .0
            .starts_with("invalid JSON"));
        assert!(parse_fields(b"nope")
            .unwrap_err()
            .0
            .starts_with("invalid JSON"));
    }
}
