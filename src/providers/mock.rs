//! The `mock` kind (gateway.md §9): no network, deterministic replies, the full stream grammar,
//! scripted client tool calls. The deployment's upstream model name can script failures, so SDK
//! error handling can be exercised offline:
//!
//! | upstream model      | behaviour                                                      |
//! |---------------------|----------------------------------------------------------------|
//! | `error-<status>`    | the attempt fails with that HTTP status (`error-429` adds a 1 s `retry-after`) |
//! | `error-midstream`   | a stream fails after its first text delta                      |
//!
//! A stream sends `message_start` at once and its first token after `ttft_ms`, as real upstreams
//! do (time to first *token*).
//! | anything else       | a normal reply                                                 |

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{Call, Provider, ProviderEvent, UpstreamError, UpstreamMessage};
use crate::config::{MockToolMode, ProviderConfig};
use crate::ids;
use crate::protocol::anthropic::events::{self, DeltaType};
use crate::protocol::anthropic::{Frame, MessageResponse, ResponseUsage, Usage};
use crate::protocol::request::MessagesRequest;

/// A reply decided from the request alone.
#[derive(Debug, Clone, PartialEq)]
pub struct MockPlan {
    pub text: Option<String>,
    /// `(id, name, input)` of a scripted client tool call.
    pub tool_call: Option<(String, String, Value)>,
    pub stop_reason: &'static str,
    pub usage: Usage,
}

pub fn plan(config: &ProviderConfig, req: &MessagesRequest) -> MockPlan {
    let last_has_results = req
        .messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| blocks.iter().any(|b| block_type(b) == Some("tool_result")));
    let tool = req
        .tools
        .iter()
        .find(|t| t.get("name").and_then(Value::as_str).is_some());

    let (mut text, tool_call) = match (config.tool_mode, tool) {
        (MockToolMode::Auto, Some(tool)) if !last_has_results => {
            let name = tool["name"].as_str().unwrap_or_default().to_string();
            (
                None,
                Some((
                    ids::tool_use_id(),
                    name,
                    fill_required(tool.get("input_schema")),
                )),
            )
        }
        _ if last_has_results => (
            Some(format!("mock received: {}", first_tool_result(req))),
            None,
        ),
        _ => (
            Some(config.reply.clone().unwrap_or_else(|| {
                format!("mock reply: {}", take_chars(&req.last_user_text(), 200))
            })),
            None,
        ),
    };

    let mut stop_reason = if tool_call.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let cap = (req.max_tokens as usize).saturating_mul(4);
    if let Some(t) = &mut text {
        if t.chars().count() > cap {
            *t = take_chars(t, cap);
            stop_reason = "max_tokens";
        }
    }
    let out_chars = text.as_deref().map_or(0, |t| t.chars().count())
        + tool_call
            .as_ref()
            .map_or(0, |(_, _, input)| input.to_string().chars().count());
    MockPlan {
        text: text.filter(|t| !t.is_empty()),
        tool_call,
        stop_reason,
        usage: Usage {
            input_tokens: request_chars(req).div_ceil(4) as u64,
            output_tokens: out_chars.div_ceil(4) as u64,
            ..Usage::default()
        },
    }
}

impl MockPlan {
    pub fn content(&self) -> Vec<Value> {
        let mut content = Vec::new();
        if let Some(t) = &self.text {
            content.push(json!({"type": "text", "text": t}));
        }
        if let Some((id, name, input)) = &self.tool_call {
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
        content
    }

    /// The whole stream, in the pieces it is sent in.
    pub fn stream(&self, id: &str, model: &str, chunk_chars: usize) -> Vec<Vec<Frame>> {
        self.pieces(id, model, chunk_chars).collect()
    }

    /// The stream's pieces, built as they are sent: a long reply is never held twice.
    pub fn pieces<'a>(
        &'a self,
        id: &str,
        model: &str,
        chunk_chars: usize,
    ) -> impl Iterator<Item = Vec<Frame>> + 'a {
        let start_usage = Usage {
            input_tokens: self.usage.input_tokens,
            ..Usage::default()
        };
        let start = std::iter::once(vec![events::message_start(id, model, &start_usage)]);
        let text = self.text.as_deref().into_iter().flat_map(move |text| {
            std::iter::once(vec![events::block_start(
                0,
                &json!({"type": "text", "text": ""}),
            )])
            .chain(
                char_chunks(text, chunk_chars)
                    .map(|chunk| vec![events::delta(0, DeltaType::Text, chunk)]),
            )
            .chain(std::iter::once(vec![events::block_stop(0)]))
        });
        let index = usize::from(self.text.is_some());
        let tool = self.tool_call.iter().flat_map(move |(tid, name, input)| {
            let block = json!({"type": "tool_use", "id": tid, "name": name, "input": {}});
            let args = serde_json::to_string(input).expect("input serializes");
            let chunks = if args == "{}" {
                Vec::new()
            } else {
                split_json(&args, chunk_chars)
            };
            std::iter::once(vec![events::block_start(index, &block)])
                .chain(
                    chunks
                        .into_iter()
                        .map(move |c| vec![events::delta(index, DeltaType::InputJson, &c)]),
                )
                .chain(std::iter::once(vec![events::block_stop(index)]))
        });
        let end = std::iter::once(()).map(move |()| {
            vec![
                events::message_delta(self.stop_reason, None, &self.usage, None, None),
                events::message_stop(),
            ]
        });
        start.chain(text).chain(tool).chain(end)
    }
}

/// Pieces of a fast stream share one event up to about this many bytes.
const BATCH_BYTES: usize = 16 * 1024;

pub async fn run(provider: Arc<Provider>, call: Call, sink: mpsc::Sender<ProviderEvent>) {
    let cfg = &provider.config;
    let model = call.upstream_model.as_str();
    if let Some(status) = model
        .strip_prefix("error-")
        .and_then(|s| s.parse::<u16>().ok())
    {
        let mut err = UpstreamError::from_status(status, format!("mock upstream failure {status}"));
        if status == 429 {
            err.retry_after = Some(Duration::from_secs(1));
        }
        let _ = sink.send(ProviderEvent::failed(err)).await;
        return;
    }
    let plan = plan(cfg, &call.request);
    let id = ids::message_id();
    if !call.stream {
        let content = plan.content();
        let body = MessageResponse::new(
            &id,
            &call.client_model,
            &content,
            plan.stop_reason,
            ResponseUsage::new(&plan.usage, None),
        )
        .to_vec();
        let msg = UpstreamMessage {
            body: body.into(),
            usage: plan.usage,
            stop_reason: Some(plan.stop_reason.to_string()),
        };
        let _ = sink.send(ProviderEvent::message(msg)).await;
        return;
    }

    // Piece by piece through the session's bounded channel, as a real upstream's reads arrive:
    // a client that stops reading stops this task, and a long reply is never buffered whole.
    let mut pieces = plan.pieces(&id, &call.client_model, cfg.chunk_chars);
    // Like a real upstream: `message_start` at once, the first token after `ttft_ms`.
    let sent = usize::from(cfg.ttft_ms > 0);
    if cfg.ttft_ms > 0 {
        let start = pieces.next().unwrap_or_default();
        if sink.send(ProviderEvent::Frames(start)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(cfg.ttft_ms)).await;
    }
    let midstream_cut = model == "error-midstream";
    let delay = Duration::from_millis(cfg.chunk_delay_ms);
    // Paced pieces go alone; fast ones share events of about `BATCH_BYTES`.
    let batch_bytes = if delay.is_zero() && !midstream_cut {
        BATCH_BYTES
    } else {
        0
    };
    let mut batch = Vec::new();
    let mut size = 0;
    for (i, frames) in pieces.enumerate() {
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if midstream_cut && i + sent == 3 {
            let err = UpstreamError::transient("mock upstream cut the stream");
            let _ = sink.send(ProviderEvent::failed(err)).await;
            return;
        }
        size += frames.iter().map(|f| f.data.len()).sum::<usize>();
        batch.extend(frames);
        if size >= batch_bytes {
            size = 0;
            if sink
                .send(ProviderEvent::Frames(std::mem::take(&mut batch)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    if !batch.is_empty() && sink.send(ProviderEvent::Frames(batch)).await.is_err() {
        return;
    }
    let _ = sink.send(ProviderEvent::End).await;
}

fn block_type(b: &Value) -> Option<&str> {
    b.get("type").and_then(Value::as_str)
}

/// A tool input with every required property filled by its type (gateway.md §9).
fn fill_required(schema: Option<&Value>) -> Value {
    let mut input = Map::new();
    let Some(schema) = schema else {
        return Value::Object(input);
    };
    let props = schema.get("properties");
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = name.as_str() else { continue };
        let prop = props.and_then(|p| p.get(name));
        let value = match prop
            .and_then(|p| p.get("enum"))
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            Some(first) => first.clone(),
            None => match prop.and_then(|p| p.get("type")).and_then(Value::as_str) {
                Some("string") => json!("mock"),
                Some("number" | "integer") => json!(0),
                Some("boolean") => json!(false),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => Value::Null,
            },
        };
        input.insert(name.to_string(), value);
    }
    Value::Object(input)
}

fn first_tool_result(req: &MessagesRequest) -> String {
    let blocks = req
        .messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array);
    let Some(result) = blocks
        .into_iter()
        .flatten()
        .find(|b| block_type(b) == Some("tool_result"))
    else {
        return String::new();
    };
    take_chars(&content_text(result.get("content")), 200)
}

/// The text of a content value: a string, or the text of its blocks.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Characters of the request's text: system, message text, tool inputs and results.
fn request_chars(req: &MessagesRequest) -> usize {
    let mut n = content_text(req.system.as_ref()).chars().count();
    for m in &req.messages {
        match m.get("content") {
            Some(Value::String(s)) => n += s.chars().count(),
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    n += match block_type(b) {
                        Some("text") => b
                            .get("text")
                            .and_then(Value::as_str)
                            .map_or(0, |t| t.chars().count()),
                        Some("tool_use") => {
                            b.get("input").map_or(0, |i| i.to_string().chars().count())
                        }
                        Some("tool_result") => content_text(b.get("content")).chars().count(),
                        _ => 0,
                    }
                }
            }
            _ => {}
        }
    }
    n
}

fn take_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// `s` in pieces of `n` chars, borrowed.
fn char_chunks(s: &str, n: usize) -> impl Iterator<Item = &str> {
    let n = n.max(1);
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = rest.char_indices().nth(n).map_or(rest.len(), |(i, _)| i);
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

/// Splits JSON text into pieces of about `n` chars, never inside an escape sequence, so every
/// concatenated prefix stays a JSON prefix a partial parser accepts.
pub fn split_json(s: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut count = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        cur.push(c);
        count += 1;
        if c == '\\' {
            if let Some(e) = chars.next() {
                cur.push(e);
                count += 1;
                if e == 'u' {
                    for _ in 0..4 {
                        if let Some(h) = chars.next() {
                            cur.push(h);
                            count += 1;
                        }
                    }
                }
            }
        }
        if count >= n.max(1) {
            out.push(std::mem::take(&mut cur));
            count = 0;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::parse_fields;
    use crate::protocol::validate::{validate, ApiVersion};

    fn cfg(tool_mode: MockToolMode) -> ProviderConfig {
        let mut c: ProviderConfig = toml::from_str("name = \"m\"\nkind = \"mock\"").unwrap();
        c.tool_mode = tool_mode;
        c
    }

    fn req(body: Value) -> MessagesRequest {
        validate(
            parse_fields(body.to_string().as_bytes()).unwrap(),
            ApiVersion::V2023_06_01,
        )
        .unwrap()
    }

    #[test]
    fn echoes_the_last_user_text() {
        let r = req(
            json!({"model":"x","max_tokens":100,"messages":[{"role":"user","content":"Hello there"}]}),
        );
        let p = plan(&cfg(MockToolMode::None), &r);
        assert_eq!(p.text.as_deref(), Some("mock reply: Hello there"));
        assert_eq!(p.stop_reason, "end_turn");
        assert_eq!(p.usage.input_tokens, 3); // 11 chars
        assert_eq!(p.usage.output_tokens, 6); // 23 chars
    }

    #[test]
    fn cuts_at_max_tokens() {
        let r = req(
            json!({"model":"x","max_tokens":2,"messages":[{"role":"user","content":"Hello there"}]}),
        );
        let p = plan(&cfg(MockToolMode::None), &r);
        assert_eq!(p.text.as_deref(), Some("mock rep"));
        assert_eq!(p.stop_reason, "max_tokens");
    }

    #[test]
    fn calls_the_first_tool_then_reads_its_result() {
        let tools = json!([{"name":"get_weather","input_schema":{"type":"object","properties":{
            "city":{"type":"string"},"days":{"type":"integer"},"unit":{"type":"string","enum":["c","f"]},"x":{"type":"boolean"}},
            "required":["city","days","unit","x"]}}]);
        let r = req(
            json!({"model":"x","max_tokens":100,"tools":tools,"messages":[{"role":"user","content":"hi"}]}),
        );
        let p = plan(&cfg(MockToolMode::Auto), &r);
        let (id, name, input) = p.tool_call.clone().unwrap();
        assert!(id.starts_with("toolu_"));
        assert_eq!(name, "get_weather");
        assert_eq!(input, json!({"city":"mock","days":0,"unit":"c","x":false}));
        assert_eq!(p.stop_reason, "tool_use");
        assert!(p.text.is_none());

        let r = req(
            json!({"model":"x","max_tokens":100,"tools":tools,"messages":[
            {"role":"user","content":"hi"},
            {"role":"assistant","content":[{"type":"tool_use","id":id,"name":"get_weather","input":input}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":id,"content":"sunny"}]}]}),
        );
        let p = plan(&cfg(MockToolMode::Auto), &r);
        assert_eq!(p.text.as_deref(), Some("mock received: sunny"));
    }

    #[test]
    fn json_split_never_breaks_escapes() {
        let s = r#"{"a":"x\"y\u00e9z\\","b":[1,2]}"#;
        for n in 1..8 {
            let parts = split_json(s, n);
            assert_eq!(parts.concat(), s);
            for p in &parts {
                assert!(!p.ends_with('\\') || p.ends_with("\\\\"), "{p:?}");
            }
        }
    }

    #[test]
    fn stream_grammar() {
        let r = req(
            json!({"model":"x","max_tokens":100,"messages":[{"role":"user","content":"abcdefghijklmnopqrstuvwxyz"}]}),
        );
        let p = plan(&cfg(MockToolMode::None), &r);
        let frames: Vec<Frame> = p.stream("msg_1", "x", 16).into_iter().flatten().collect();
        let names: Vec<&str> = frames.iter().map(|f| f.kind.name()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }
}
