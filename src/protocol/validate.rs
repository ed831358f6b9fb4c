//! Request validation (messages-api.md §3): every problem is collected with its dotted path; the
//! first becomes the error message (§3.5).

use serde_json::Value;

use super::request::{MessagesRequest, RawFields, ANTHROPIC_FIELDS, EXTENSION_FIELDS};
use crate::error::ErrorDetail;

/// The effective `anthropic-version` (messages-api.md §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V2023_06_01,
    V2026_10_21,
}

impl ApiVersion {
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "2023-06-01" => Some(Self::V2023_06_01),
            "2026-10-21" => Some(Self::V2026_10_21),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2023_06_01 => "2023-06-01",
            Self::V2026_10_21 => "2026-10-21",
        }
    }
}

struct Checker {
    details: Vec<ErrorDetail>,
}

impl Checker {
    fn fail(&mut self, param: impl Into<String>, reason: impl Into<String>) {
        self.details.push(ErrorDetail::new(param, reason));
    }
}

/// Validates a parsed body; on success the request's typed views are filled in.
pub fn validate(
    fields: RawFields,
    version: ApiVersion,
) -> Result<MessagesRequest, Vec<ErrorDetail>> {
    let mut c = Checker {
        details: Vec::new(),
    };
    let parse = |c: &mut Checker, key: &str| -> Option<Value> {
        let raw = fields.get(key)?;
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(v) => Some(v),
            Err(e) => {
                c.fail(key, format!("invalid JSON: {e}"));
                None
            }
        }
    };

    let model = match parse(&mut c, "model") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 256 => s,
        Some(Value::String(_)) => {
            c.fail("model", "must be 1..256 characters");
            String::new()
        }
        Some(_) => {
            c.fail("model", "must be a string");
            String::new()
        }
        None => {
            c.fail("model", "field required");
            String::new()
        }
    };

    let max_tokens = match parse(&mut c, "max_tokens") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v >= 1 => v,
            _ => {
                c.fail("max_tokens", "must be an integer >= 1");
                0
            }
        },
        Some(_) => {
            c.fail("max_tokens", "must be an integer >= 1");
            0
        }
        None => {
            c.fail("max_tokens", "field required");
            0
        }
    };

    let stream = match parse(&mut c, "stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            c.fail("stream", "must be a boolean");
            false
        }
    };

    let messages = match parse(&mut c, "messages") {
        Some(Value::Array(items)) => {
            if items.is_empty() {
                c.fail("messages", "must contain at least one message");
            }
            for (i, m) in items.iter().enumerate() {
                check_message(&mut c, i, m);
            }
            items
        }
        Some(_) => {
            c.fail("messages", "must be an array");
            Vec::new()
        }
        None => {
            c.fail("messages", "field required");
            Vec::new()
        }
    };

    let system = parse(&mut c, "system");
    match &system {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    c.fail(format!("system.{i}.type"), "must be \"text\"");
                }
            }
        }
        Some(_) => c.fail("system", "must be a string or an array of text blocks"),
    }

    let tools = match parse(&mut c, "tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(t)) => t,
        Some(_) => {
            c.fail("tools", "must be an array");
            Vec::new()
        }
    };
    let tool_choice = parse(&mut c, "tool_choice");

    if version == ApiVersion::V2026_10_21 {
        for f in ["temperature", "top_p", "top_k"] {
            if fields.contains_key(f) {
                c.fail(f, "Extra inputs are not permitted");
            }
        }
    }

    let unknown_fields = fields
        .keys()
        .filter(|k| {
            !ANTHROPIC_FIELDS.contains(&k.as_str()) && !EXTENSION_FIELDS.contains(&k.as_str())
        })
        .cloned()
        .collect();

    if !c.details.is_empty() {
        return Err(c.details);
    }
    Ok(MessagesRequest {
        fields,
        model,
        max_tokens,
        stream,
        system,
        messages,
        tools,
        tool_choice,
        unknown_fields,
    })
}

fn check_message(c: &mut Checker, i: usize, m: &Value) {
    let Some(obj) = m.as_object() else {
        c.fail(format!("messages.{i}"), "must be an object");
        return;
    };
    match obj.get("role").and_then(Value::as_str) {
        Some("user" | "assistant" | "system") => {}
        _ => c.fail(
            format!("messages.{i}.role"),
            "must be one of user, assistant, system",
        ),
    }
    match obj.get("content") {
        Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (j, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str).is_none() {
                    c.fail(format!("messages.{i}.content.{j}.type"), "field required");
                }
            }
        }
        Some(_) => c.fail(
            format!("messages.{i}.content"),
            "must be a string or an array of content blocks",
        ),
        None => c.fail(format!("messages.{i}.content"), "field required"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::parse_fields;

    fn check(body: &str) -> Result<MessagesRequest, Vec<ErrorDetail>> {
        validate(
            parse_fields(body.as_bytes()).unwrap(),
            ApiVersion::V2023_06_01,
        )
    }

    #[test]
    fn minimal_request_passes() {
        let r =
            check(r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.max_tokens, 5);
        assert!(!r.stream);
    }

    #[test]
    fn all_problems_are_listed() {
        let e = check(r#"{"model":1,"max_tokens":0,"messages":[]}"#).unwrap_err();
        let params: Vec<_> = e.iter().map(|d| d.param.as_str()).collect();
        assert_eq!(params, ["model", "max_tokens", "messages"]);
    }
}
