//! Anthropic request → OpenAI chat request (translation.md §1).
//!
//! [`build`] makes the typed request and records, as [`Warning`]s, everything the deployment
//! cannot honour; strictness evaluation (`capabilities::evaluate`) is that same build, so what is
//! reported and what is dropped cannot drift apart. [`translate_request`] serializes it.

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::protocol::merge::merge_top_level;
use serde_json::{json, Map, Value};

use super::tool_names::ToolNameMap;
use super::RAW_ARGUMENTS_KEY;
use crate::protocol::capabilities::{Capabilities, Reason, Warning};
use crate::protocol::openai::{
    ChatMessage, ChatRequest, ChatTool, ContentPart, FunctionCall, FunctionDef, ImageUrl,
    StreamOptions, ToolCall, ToolChoice, UserContent,
};
use crate::protocol::request::MessagesRequest;

/// Per-attempt inputs that are not in the client's body.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub upstream_model: &'a str,
    pub caps: &'a Capabilities,
    pub stream: bool,
    /// `prompt_cache_key` for a top-level `cache_control` (gateway.md §4); `None` without a session.
    pub prompt_cache_key: Option<&'a str>,
}

/// The typed request before serialization.
#[derive(Debug)]
pub struct Built<'a> {
    pub body: ChatRequest<'a>,
    pub tool_names: ToolNameMap,
    pub warnings: Vec<Warning>,
    /// `provider_options.openai`, deep-merged into the body last.
    pub overrides: Option<Map<String, Value>>,
    /// A rough local count (4 characters a token, 3 per message), used when an upstream reports
    /// no usage at all.
    pub estimated_input_tokens: u64,
}

/// A serialized request and what the response translation needs from it.
#[derive(Debug, Clone)]
pub struct TranslatedRequest {
    pub body: Vec<u8>,
    pub tool_names: ToolNameMap,
    pub warnings: Vec<Warning>,
    pub estimated_input_tokens: u64,
}

pub fn translate_request(req: &MessagesRequest, ctx: &RequestContext<'_>) -> TranslatedRequest {
    let built = build(req, ctx);
    let body = match &built.overrides {
        None => serde_json::to_vec(&built.body).expect("chat request serializes"),
        Some(patch) => {
            let mut v = serde_json::to_value(&built.body).expect("chat request serializes");
            merge_top_level(&mut v, patch);
            serde_json::to_vec(&v).expect("chat request serializes")
        }
    };
    TranslatedRequest {
        body,
        tool_names: built.tool_names,
        warnings: built.warnings,
        estimated_input_tokens: built.estimated_input_tokens,
    }
}

pub fn build<'a>(req: &'a MessagesRequest, ctx: &RequestContext<'a>) -> Built<'a> {
    let mut b = Builder {
        caps: ctx.caps,
        names: ToolNameMap::default(),
        warnings: Vec::new(),
        chars: 0,
    };
    let mut body = ChatRequest::new(ctx.upstream_model);
    if ctx.caps.max_completion_tokens {
        body.max_completion_tokens = Some(req.max_tokens);
    } else {
        body.max_tokens = Some(req.max_tokens);
    }
    if ctx.stream {
        body.stream = Some(true);
        // Without it no usage arrives on a stream [OAI].
        body.stream_options = Some(StreamOptions {
            include_usage: true,
        });
    }

    if let Some(system) = &req.system {
        b.system(system, &mut body.messages);
    }
    b.messages(&req.messages, &mut body.messages);
    b.tools(req, &mut body);

    let mut overrides = None;
    let mut thinking_effort = None;
    let mut explicit_effort = None;
    for (key, raw) in &req.fields {
        let raw = &**raw;
        if raw.get() == "null" {
            continue;
        }
        match key.as_str() {
            "model" | "max_tokens" | "messages" | "system" | "stream" | "tools" | "tool_choice" => {
            }
            "session_id" | "provider" | "routing" | "debug" => {}
            "temperature" => body.temperature = Some(raw),
            "top_p" => body.top_p = Some(raw),
            "top_k" if ctx.caps.top_k => body.top_k = Some(raw),
            "stop_sequences" => {
                let Ok(mut stops) = serde_json::from_str::<Vec<String>>(raw.get()) else {
                    continue;
                };
                if let Some(max) = ctx.caps.max_stop_sequences {
                    if stops.len() > max {
                        stops.truncate(max);
                        b.warn(key, Reason::Truncated);
                    }
                }
                if !stops.is_empty() {
                    body.stop = Some(stops.into_iter().map(Cow::Owned).collect());
                }
            }
            "metadata" => {
                let user = serde_json::from_str::<Value>(raw.get())
                    .ok()
                    .and_then(|m| m.get("user_id").and_then(Value::as_str).map(str::to_string));
                body.user = user.map(Cow::Owned);
            }
            "thinking" => match serde_json::from_str::<Value>(raw.get()) {
                Ok(t) => match t.get("type").and_then(Value::as_str) {
                    // A documented default: dropped without a warning (gateway.md §3).
                    Some("disabled") => {}
                    _ if ctx.caps.reasoning_effort => thinking_effort = Some(effort_of(&t)),
                    _ => b.warn(key, Reason::Unsupported),
                },
                Err(_) => b.warn(key, Reason::Unsupported),
            },
            "output_config" => {
                let Ok(Value::Object(cfg)) = serde_json::from_str::<Value>(raw.get()) else {
                    b.warn(key, Reason::Unsupported);
                    continue;
                };
                for (k, v) in &cfg {
                    match (k.as_str(), v) {
                        ("format", f)
                            if f.get("type").and_then(Value::as_str) == Some("json_schema") =>
                        {
                            body.response_format = Some(json!({"type":"json_schema",
                                "json_schema":{"name":"output","schema":f.get("schema").cloned().unwrap_or_else(|| json!({})),"strict":true}}));
                        }
                        ("effort", Value::String(e)) if ctx.caps.reasoning_effort => {
                            match explicit_effort_of(e) {
                                Some(e) => explicit_effort = Some(e),
                                None => b.warn(format!("output_config.{k}"), Reason::Unsupported),
                            }
                        }
                        _ => b.warn(format!("output_config.{k}"), Reason::Unsupported),
                    }
                }
            }
            "service_tier" if raw.get() == "\"auto\"" => {}
            "cache_control" => match ctx.prompt_cache_key {
                Some(k) => body.prompt_cache_key = Some(k),
                None => b.warn(key, Reason::Unsupported),
            },
            "prompt_cache_retention" => body.prompt_cache_retention = Some(raw),
            "web_search_options" => body.web_search_options = Some(raw),
            "provider_options" => overrides = req.extensions.provider_options.openai.clone(),
            "top_k" | "service_tier" | "container" | "mcp_servers" | "context_management"
            | "inference_geo" => b.warn(key, Reason::Unsupported),
            _ => b.warn(key, Reason::UnknownParameter),
        }
    }
    body.reasoning_effort = explicit_effort.or(thinking_effort);

    let messages = body.messages.len() as u64;
    Built {
        body,
        tool_names: b.names,
        warnings: b.warnings,
        overrides,
        estimated_input_tokens: (b.chars as u64).div_ceil(4) + 3 * messages,
    }
}

/// `budget_tokens` ≤ 2048 → low, ≤ 8192 → medium, otherwise high; adaptive → medium.
fn effort_of(thinking: &Value) -> &'static str {
    match thinking.get("budget_tokens").and_then(Value::as_u64) {
        Some(b) if b <= 2048 => "low",
        Some(b) if b <= 8192 => "medium",
        Some(_) => "high",
        None => "medium",
    }
}

fn explicit_effort_of(effort: &str) -> Option<&'static str> {
    match effort {
        "minimal" => Some("minimal"),
        "low" => Some("low"),
        "medium" => Some("medium"),
        "high" | "max" => Some("high"),
        _ => None,
    }
}

fn empty_schema() -> &'static Value {
    static EMPTY: OnceLock<Value> = OnceLock::new();
    EMPTY.get_or_init(|| json!({"type": "object", "properties": {}}))
}

/// Where a block sits in the client's request, for warnings.
#[derive(Clone, Copy)]
struct At {
    message: usize,
    block: usize,
}

impl At {
    fn path(self) -> String {
        format!("messages.{}.content.{}", self.message, self.block)
    }
}

enum Piece<'a> {
    /// A message whose content is a plain string.
    Text(&'a str),
    Block(At, &'a Value),
}

struct Builder<'c> {
    caps: &'c Capabilities,
    names: ToolNameMap,
    warnings: Vec<Warning>,
    chars: usize,
}

fn block_type(b: &Value) -> &str {
    b.get("type").and_then(Value::as_str).unwrap_or("")
}

fn str_field<'a>(b: &'a Value, key: &str) -> &'a str {
    b.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Every content piece of `messages[range]`, with its path.
fn pieces<'a>(
    messages: &'a [Value],
    start: usize,
    end: usize,
) -> impl Iterator<Item = Piece<'a>> + 'a {
    messages[start..end]
        .iter()
        .enumerate()
        .flat_map(move |(n, m)| {
            let message = start + n;
            let (text, blocks): (Option<&'a str>, &'a [Value]) = match m.get("content") {
                Some(Value::String(s)) => (Some(s.as_str()), &[]),
                Some(Value::Array(a)) => (None, a.as_slice()),
                _ => (None, &[]),
            };
            text.map(Piece::Text).into_iter().chain(
                blocks
                    .iter()
                    .enumerate()
                    .map(move |(block, v)| Piece::Block(At { message, block }, v)),
            )
        })
}

impl<'c> Builder<'c> {
    fn warn(&mut self, param: impl Into<String>, reason: Reason) {
        self.warnings.push(Warning::new(param, reason));
    }

    fn check_cache_control(&mut self, b: &Value, path: impl FnOnce() -> String) {
        if b.get("cache_control").is_some_and(|c| !c.is_null()) {
            self.warn(format!("{}.cache_control", path()), Reason::Unsupported);
        }
    }

    fn system<'a>(&mut self, system: &'a Value, out: &mut Vec<ChatMessage<'a>>) {
        let text: Cow<'a, str> = match system {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Array(blocks) => {
                let mut texts = Vec::with_capacity(blocks.len());
                for (i, b) in blocks.iter().enumerate() {
                    self.check_cache_control(b, || format!("system.{i}"));
                    let t = str_field(b, "text");
                    if !t.is_empty() {
                        texts.push(t);
                    }
                }
                match texts.as_slice() {
                    [one] => Cow::Borrowed(*one),
                    _ => Cow::Owned(texts.join("\n\n")),
                }
            }
            _ => return,
        };
        if !text.is_empty() {
            self.chars += text.len();
            out.push(ChatMessage::System { content: text });
        }
    }

    /// Consecutive same-role messages are merged, then each run is mapped in order (§1.1).
    fn messages<'a>(&mut self, messages: &'a [Value], out: &mut Vec<ChatMessage<'a>>) {
        fn role(m: &Value) -> &str {
            m.get("role").and_then(Value::as_str).unwrap_or("")
        }
        let mut start = 0;
        while start < messages.len() {
            let r = role(&messages[start]);
            let end = start
                + messages[start..]
                    .iter()
                    .take_while(|m| role(m) == r)
                    .count();
            match r {
                "user" => self.user_turn(messages, start, end, out),
                "assistant" => self.assistant_turn(messages, start, end, out),
                "system" => self.system_turn(messages, start, end, out),
                _ => {}
            }
            start = end;
        }
    }

    fn user_turn<'a>(
        &mut self,
        messages: &'a [Value],
        start: usize,
        end: usize,
        out: &mut Vec<ChatMessage<'a>>,
    ) {
        // Tool results first: OpenAI wants tool replies right after the assistant's calls.
        let mut parts = Vec::new();
        for piece in pieces(messages, start, end) {
            if let Piece::Block(at, b) = piece {
                if block_type(b) == "tool_result" {
                    self.check_cache_control(b, || at.path());
                    let msg = self.tool_result(at, b, &mut parts);
                    out.push(msg);
                }
            }
        }
        // Images from those results come next, then the turn's own parts.
        for piece in pieces(messages, start, end) {
            match piece {
                Piece::Text(s) => {
                    if !s.is_empty() {
                        self.chars += s.len();
                        parts.push(ContentPart::Text {
                            text: Cow::Borrowed(s),
                        });
                    }
                }
                Piece::Block(at, b) => {
                    let kind = block_type(b);
                    if kind != "tool_result" {
                        self.check_cache_control(b, || at.path());
                    }
                    match kind {
                        "tool_result" | "thinking" | "redacted_thinking" => {}
                        "text" => {
                            let t = str_field(b, "text");
                            if !t.is_empty() {
                                self.chars += t.len();
                                parts.push(ContentPart::Text {
                                    text: Cow::Borrowed(t),
                                });
                            }
                        }
                        "image" => {
                            if let Some(p) = self.image(b, || at.path()) {
                                parts.push(p);
                            }
                        }
                        "document" => {
                            if let Some(t) = self.document(b, || at.path()) {
                                parts.push(ContentPart::Text { text: t });
                            }
                        }
                        "search_result" => {
                            let t = self.search_result(b, || at.path());
                            parts.push(ContentPart::Text {
                                text: Cow::Owned(t),
                            });
                        }
                        _ => self.warn(at.path(), Reason::Unsupported),
                    }
                }
            }
        }
        if parts.is_empty() {
            return;
        }
        let content = if parts.len() == 1 && matches!(parts[0], ContentPart::Text { .. }) {
            match parts.pop() {
                Some(ContentPart::Text { text }) => UserContent::Text(text),
                _ => unreachable!("checked above"),
            }
        } else {
            UserContent::Parts(parts)
        };
        out.push(ChatMessage::User { content });
    }

    /// A `tool_result` as a `tool` message. Images in it go to `images` (a user message follows).
    fn tool_result<'a>(
        &mut self,
        at: At,
        b: &'a Value,
        images: &mut Vec<ContentPart<'a>>,
    ) -> ChatMessage<'a> {
        let mut content = match b.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => {
                let mut texts: Vec<Cow<'a, str>> = Vec::new();
                for (k, item) in items.iter().enumerate() {
                    let path = || format!("{}.content.{k}", at.path());
                    match block_type(item) {
                        "text" => texts.push(Cow::Borrowed(str_field(item, "text"))),
                        "search_result" => texts.push(Cow::Owned(self.search_result(item, path))),
                        "document" => {
                            if let Some(t) = self.document(item, path) {
                                texts.push(t);
                            }
                        }
                        "image" => {
                            if let Some(p) = self.image(item, path) {
                                images.push(p);
                            }
                        }
                        _ => self.warn(path(), Reason::Unsupported),
                    }
                }
                texts.join("\n")
            }
            _ => String::new(),
        };
        // OpenAI has no error flag; the marker keeps the fact in the content (§1.1).
        if b.get("is_error").and_then(Value::as_bool) == Some(true) {
            content.insert_str(0, "Error: ");
        }
        self.chars += content.len();
        ChatMessage::Tool {
            tool_call_id: str_field(b, "tool_use_id"),
            content,
        }
    }

    fn image<'a>(
        &mut self,
        b: &'a Value,
        path: impl FnOnce() -> String,
    ) -> Option<ContentPart<'a>> {
        let source = b.get("source");
        let url = match (self.caps.vision, source.map(block_type)) {
            (true, Some("base64")) => {
                let source = source?;
                Cow::Owned(format!(
                    "data:{};base64,{}",
                    str_field(source, "media_type"),
                    str_field(source, "data")
                ))
            }
            (true, Some("url")) => Cow::Borrowed(str_field(source?, "url")),
            _ => {
                self.warn(path(), Reason::Unsupported);
                return None;
            }
        };
        Some(ContentPart::ImageUrl {
            image_url: ImageUrl { url },
        })
    }

    /// A text or content document as text (`<title>\n\n<text>`); PDF, URL and file documents have
    /// no portable mapping.
    fn document<'a>(&mut self, b: &'a Value, path: impl Fn() -> String) -> Option<Cow<'a, str>> {
        if b.pointer("/citations/enabled").and_then(Value::as_bool) == Some(true) {
            self.warn(format!("{}.citations", path()), Reason::Unsupported);
        }
        let source = b.get("source")?;
        let text: Cow<'a, str> = match block_type(source) {
            "text" => Cow::Borrowed(str_field(source, "data")),
            "content" => match source.get("content") {
                Some(Value::String(s)) => Cow::Borrowed(s.as_str()),
                Some(Value::Array(items)) => Cow::Owned(
                    items
                        .iter()
                        .filter(|i| block_type(i) == "text")
                        .map(|i| str_field(i, "text"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                _ => Cow::Borrowed(""),
            },
            _ => {
                self.warn(path(), Reason::Unsupported);
                return None;
            }
        };
        let title = str_field(b, "title");
        let text = if title.is_empty() {
            text
        } else {
            Cow::Owned(format!("{title}\n\n{text}"))
        };
        self.chars += text.len();
        Some(text)
    }

    /// `search_result` → title, source, then the text.
    fn search_result(&mut self, b: &Value, path: impl FnOnce() -> String) -> String {
        if b.pointer("/citations/enabled").and_then(Value::as_bool) == Some(true) {
            self.warn(format!("{}.citations", path()), Reason::Unsupported);
        }
        let body: Vec<&str> = b
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|i| str_field(i, "text"))
            .collect();
        let t = format!(
            "{}\n{}\n\n{}",
            str_field(b, "title"),
            str_field(b, "source"),
            body.join("\n")
        );
        self.chars += t.len();
        t
    }

    fn assistant_turn<'a>(
        &mut self,
        messages: &'a [Value],
        start: usize,
        end: usize,
        out: &mut Vec<ChatMessage<'a>>,
    ) {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        for piece in pieces(messages, start, end) {
            match piece {
                Piece::Text(s) => text.push_str(s),
                Piece::Block(at, b) => {
                    self.check_cache_control(b, || at.path());
                    match block_type(b) {
                        "text" => text.push_str(str_field(b, "text")),
                        "tool_use" => {
                            let arguments = arguments_of(b.get("input"));
                            self.chars += arguments.len();
                            tool_calls.push(ToolCall {
                                id: str_field(b, "id"),
                                kind: "function",
                                function: FunctionCall {
                                    name: self.names.to_upstream(str_field(b, "name")),
                                    arguments,
                                },
                            });
                        }
                        // Never sent to a backend that cannot take them: a 400 on many (pitfall 6).
                        "thinking" if self.caps.reasoning_history => {
                            let t = str_field(b, "thinking");
                            if !t.is_empty() {
                                if !reasoning.is_empty() {
                                    reasoning.push_str("\n\n");
                                }
                                reasoning.push_str(t);
                            }
                        }
                        "thinking" | "redacted_thinking" => {}
                        _ => self.warn(at.path(), Reason::Unsupported),
                    }
                }
            }
        }
        if text.is_empty() && tool_calls.is_empty() && reasoning.is_empty() {
            return;
        }
        self.chars += text.len() + reasoning.len();
        out.push(ChatMessage::Assistant {
            content: (!text.is_empty()).then_some(text),
            tool_calls,
            reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
        });
    }

    /// A `system` message inside `messages`: translated in place, never moved or merged into a
    /// user turn.
    fn system_turn<'a>(
        &mut self,
        messages: &'a [Value],
        start: usize,
        end: usize,
        out: &mut Vec<ChatMessage<'a>>,
    ) {
        let mut texts: Vec<&'a str> = Vec::new();
        for piece in pieces(messages, start, end) {
            match piece {
                Piece::Text(s) => texts.push(s),
                Piece::Block(at, b) => {
                    self.check_cache_control(b, || at.path());
                    match block_type(b) {
                        "text" => texts.push(str_field(b, "text")),
                        _ => self.warn(at.path(), Reason::Unsupported),
                    }
                }
            }
        }
        texts.retain(|t| !t.is_empty());
        if texts.is_empty() {
            return;
        }
        let content = match texts.as_slice() {
            [one] => Cow::Borrowed(*one),
            _ => Cow::Owned(texts.join("\n\n")),
        };
        self.chars += content.len();
        out.push(ChatMessage::System { content });
    }

    fn tools<'a>(&mut self, req: &'a MessagesRequest, body: &mut ChatRequest<'a>) {
        let mut kept: Vec<&'a str> = Vec::new();
        for (i, t) in req.tools.iter().enumerate() {
            match t.get("type").and_then(Value::as_str) {
                None | Some("custom") => {
                    self.check_cache_control(t, || format!("tools.{i}"));
                    let name = str_field(t, "name");
                    kept.push(name);
                    body.tools.push(ChatTool {
                        kind: "function",
                        function: FunctionDef {
                            name: self.names.to_upstream(name),
                            description: t.get("description").and_then(Value::as_str),
                            parameters: t.get("input_schema").unwrap_or_else(|| empty_schema()),
                            strict: t.get("strict").and_then(Value::as_bool),
                        },
                    });
                }
                // Anthropic-defined and gateway tool types have no function form here.
                Some(_) => self.warn(format!("tools.{i}"), Reason::Unsupported),
            }
        }

        let Some(choice) = &req.tool_choice else {
            return;
        };
        let (kind, name) = match choice {
            Value::String(s) => (s.as_str(), ""),
            v => (str_field(v, "type"), str_field(v, "name")),
        };
        if body.tools.is_empty() {
            // OpenAI refuses tool_choice without tools; only a forcing choice is a loss.
            if matches!(kind, "any" | "tool") {
                self.warn("tool_choice", Reason::Unsupported);
            }
            return;
        }
        body.tool_choice = match kind {
            "auto" => Some(ToolChoice::Mode("auto")),
            // `any` MUST become `required`; `auto` would be lossy (pitfall 13).
            "any" => Some(ToolChoice::Mode("required")),
            "none" => Some(ToolChoice::Mode("none")),
            "tool" if kept.contains(&name) => {
                Some(ToolChoice::Function(self.names.to_upstream(name)))
            }
            _ => {
                self.warn("tool_choice", Reason::Unsupported);
                None
            }
        };
        if choice
            .get("disable_parallel_tool_use")
            .and_then(Value::as_bool)
            == Some(true)
        {
            body.parallel_tool_calls = Some(false);
        }
    }
}

/// A history `tool_use.input` as OpenAI `arguments`: compact JSON, or the original string when
/// the gateway had wrapped arguments that were not a JSON object (see [`RAW_ARGUMENTS_KEY`]).
fn arguments_of(input: Option<&Value>) -> String {
    match input {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::Object(o)) if o.len() == 1 => match o.get(RAW_ARGUMENTS_KEY) {
            Some(Value::String(raw)) => raw.clone(),
            _ => serde_json::to_string(o).expect("object serializes"),
        },
        Some(v) => serde_json::to_string(v).expect("value serializes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;
    use crate::protocol::request::parse_fields;
    use crate::protocol::validate::{validate, ApiVersion};

    fn req(v: Value) -> MessagesRequest {
        validate(
            parse_fields(v.to_string().as_bytes()).unwrap(),
            ApiVersion::V2023_06_01,
        )
        .unwrap()
    }

    fn openai() -> Capabilities {
        Capabilities::default_for(ProviderKind::Openai)
    }

    /// Translates with default OpenAI capabilities; returns the body and the warnings.
    fn translate_with(
        v: Value,
        caps: &Capabilities,
        stream: bool,
        cache_key: Option<&str>,
    ) -> (Value, Vec<String>) {
        let r = req(v);
        let ctx = RequestContext {
            upstream_model: "gpt-x",
            caps,
            stream,
            prompt_cache_key: cache_key,
        };
        let t = translate_request(&r, &ctx);
        let warnings = t
            .warnings
            .iter()
            .map(|w| format!("{}:{}", w.param, w.reason.as_str()))
            .collect();
        (serde_json::from_slice(&t.body).unwrap(), warnings)
    }

    fn translate(v: Value) -> (Value, Vec<String>) {
        translate_with(v, &openai(), false, None)
    }

    fn base(messages: Value) -> Value {
        json!({"model":"claude","max_tokens":100,"messages":messages})
    }

    /// One table row: an Anthropic request, the OpenAI fields expected (a subset of the body), and
    /// the warnings expected.
    struct Case {
        name: &'static str,
        request: Value,
        expect: Value,
        warnings: &'static [&'static str],
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "minimal text",
                request: base(json!([{"role":"user","content":"hi"}])),
                expect: json!({"model":"gpt-x","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}),
                warnings: &[],
            },
            Case {
                name: "system string",
                request: json!({"model":"c","max_tokens":5,"system":"Be brief.","messages":[{"role":"user","content":"hi"}]}),
                expect: json!({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}),
                warnings: &[],
            },
            Case {
                name: "system blocks joined, block cache_control warned",
                request: json!({"model":"c","max_tokens":5,"system":[{"type":"text","text":"A"},{"type":"text","text":"B","cache_control":{"type":"ephemeral"}}],
                    "messages":[{"role":"user","content":"hi"}]}),
                expect: json!({"messages":[{"role":"system","content":"A\n\nB"},{"role":"user","content":"hi"}]}),
                warnings: &["system.1.cache_control:unsupported"],
            },
            Case {
                name: "mid-conversation system message stays in place",
                request: base(json!([{"role":"user","content":"a"},{"role":"system","content":[{"type":"text","text":"S1"},{"type":"text","text":"S2"}]},{"role":"user","content":"b"}])),
                expect: json!({"messages":[{"role":"user","content":"a"},{"role":"system","content":"S1\n\nS2"},{"role":"user","content":"b"}]}),
                warnings: &[],
            },
            Case {
                name: "single text block becomes a string",
                request: base(json!([{"role":"user","content":[{"type":"text","text":"hello"}]}])),
                expect: json!({"messages":[{"role":"user","content":"hello"}]}),
                warnings: &[],
            },
            Case {
                name: "consecutive user messages merge",
                request: base(json!([{"role":"user","content":"a"},{"role":"user","content":[{"type":"text","text":"b"}]}])),
                expect: json!({"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}),
                warnings: &[],
            },
            Case {
                name: "base64 and URL images",
                request: base(json!([{"role":"user","content":[{"type":"text","text":"see"},
                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}},
                    {"type":"image","source":{"type":"url","url":"https://example.org/a.jpg"}}]}])),
                expect: json!({"messages":[{"role":"user","content":[{"type":"text","text":"see"},
                    {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR"}},
                    {"type":"image_url","image_url":{"url":"https://example.org/a.jpg"}}]}]}),
                warnings: &[],
            },
            Case {
                name: "file image is unsupported",
                request: base(json!([{"role":"user","content":[{"type":"text","text":"x"},{"type":"image","source":{"type":"file","file_id":"f1"}}]}])),
                expect: json!({"messages":[{"role":"user","content":"x"}]}),
                warnings: &["messages.0.content.1:unsupported"],
            },
            Case {
                name: "text document becomes text, PDF is unsupported",
                request: base(json!([{"role":"user","content":[
                    {"type":"document","title":"Notes","source":{"type":"text","media_type":"text/plain","data":"body"}},
                    {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBER"}},
                    {"type":"document","source":{"type":"content","content":[{"type":"text","text":"c1"},{"type":"text","text":"c2"}]},"citations":{"enabled":true}}]}])),
                expect: json!({"messages":[{"role":"user","content":[{"type":"text","text":"Notes\n\nbody"},{"type":"text","text":"c1\nc2"}]}]}),
                warnings: &["messages.0.content.1:unsupported", "messages.0.content.2.citations:unsupported"],
            },
            Case {
                name: "search_result becomes text",
                request: base(json!([{"role":"user","content":[{"type":"search_result","source":"https://s.example","title":"T","content":[{"type":"text","text":"found"}]}]}])),
                expect: json!({"messages":[{"role":"user","content":"T\nhttps://s.example\n\nfound"}]}),
                warnings: &[],
            },
            Case {
                name: "tool_use and tool_result, results first (pitfall 13: is_error kept)",
                request: base(json!([
                    {"role":"user","content":"weather?"},
                    {"role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Lyon","days":[1,2]}},
                        {"type":"tool_use","id":"toolu_2","name":"get_time","input":{}}]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"},
                        {"type":"tool_result","tool_use_id":"toolu_2","is_error":true,"content":[{"type":"text","text":"no clock"}]},
                        {"type":"text","text":"also this"}]}])),
                expect: json!({"messages":[
                    {"role":"user","content":"weather?"},
                    {"role":"assistant","content":"Checking.","tool_calls":[
                        {"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lyon\",\"days\":[1,2]}"}},
                        {"id":"toolu_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
                    {"role":"tool","tool_call_id":"toolu_1","content":"sunny"},
                    {"role":"tool","tool_call_id":"toolu_2","content":"Error: no clock"},
                    {"role":"user","content":"also this"}]}),
                warnings: &[],
            },
            Case {
                name: "tool-only assistant turn has null content",
                request: base(json!([{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1"}]}])),
                expect: json!({"messages":[{"role":"user","content":"q"},
                    {"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
                    {"role":"tool","tool_call_id":"t1","content":""}]}),
                warnings: &[],
            },
            Case {
                name: "tool result content variants and images",
                request: base(json!([{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[
                        {"type":"text","text":"line1"},{"type":"image","source":{"type":"url","url":"https://i.example/x.png"}},
                        {"type":"search_result","source":"s","title":"t","content":[{"type":"text","text":"r"}]}]}]}])),
                expect: json!({"messages":[{"role":"user","content":"q"},
                    {"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                    {"role":"tool","tool_call_id":"t1","content":"line1\nt\ns\n\nr"},
                    {"role":"user","content":[{"type":"image_url","image_url":{"url":"https://i.example/x.png"}}]}]}),
                warnings: &[],
            },
            Case {
                name: "pitfall 6: thinking blocks are never sent",
                request: base(json!([{"role":"user","content":"q"},{"role":"assistant","content":[
                    {"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"redacted_thinking","data":"xx"},{"type":"text","text":"A"}]},
                    {"role":"user","content":"more"}])),
                expect: json!({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"A"},{"role":"user","content":"more"}]}),
                warnings: &[],
            },
            Case {
                name: "thinking-only assistant turn is dropped",
                request: base(json!([{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":""}]}])),
                expect: json!({"messages":[{"role":"user","content":"q"}]}),
                warnings: &[],
            },
            Case {
                name: "assistant prefill is sent last",
                request: base(json!([{"role":"user","content":"q"},{"role":"assistant","content":"The answer is"}])),
                expect: json!({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"The answer is"}]}),
                warnings: &[],
            },
            Case {
                name: "server tool blocks in history are unsupported",
                request: base(json!([{"role":"user","content":"q"},{"role":"assistant","content":[
                    {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"x"}},
                    {"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]},{"type":"text","text":"A"}]}])),
                expect: json!({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"A"}]}),
                warnings: &["messages.1.content.0:unsupported", "messages.1.content.1:unsupported"],
            },
            Case {
                name: "tools and tool_choice auto",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],
                    "tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true,
                        "defer_loading":true,"eager_input_streaming":true}],
                    "tool_choice":{"type":"auto"}}),
                expect: json!({"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather",
                    "parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}}],"tool_choice":"auto"}),
                warnings: &[],
            },
            Case {
                name: "pitfall 13: any becomes required, parallel disabled",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],
                    "tools":[{"name":"f","input_schema":{"type":"object"}}],
                    "tool_choice":{"type":"any","disable_parallel_tool_use":true}}),
                expect: json!({"tool_choice":"required","parallel_tool_calls":false}),
                warnings: &[],
            },
            Case {
                name: "tool_choice none and named tool",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],
                    "tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f"}}),
                expect: json!({"tool_choice":{"type":"function","function":{"name":"f"}}}),
                warnings: &[],
            },
            Case {
                name: "Anthropic-defined tools are unsupported, choice without tools dropped",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],
                    "tools":[{"type":"bash_20250124","name":"bash"},{"type":"text_editor_20250728","name":"str_replace_based_edit_tool"}],
                    "tool_choice":{"type":"any"}}),
                expect: json!({"model":"gpt-x","max_tokens":5,"messages":[{"role":"user","content":"q"}]}),
                warnings: &["tools.0:unsupported", "tools.1:unsupported", "tool_choice:unsupported"],
            },
            Case {
                name: "tool cache_control warned",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],
                    "tools":[{"name":"f","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}]}),
                expect: json!({"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}),
                warnings: &["tools.0.cache_control:unsupported"],
            },
            Case {
                name: "stop_sequences → stop, cut to 4",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],"stop_sequences":["1","2","3","4","5"]}),
                expect: json!({"stop":["1","2","3","4"]}),
                warnings: &["stop_sequences:truncated"],
            },
            Case {
                name: "sampling values copied byte for byte, metadata.user_id → user",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],"temperature":0.25,"top_p":0.9,
                    "metadata":{"user_id":"{\"a\": 1}"}}),
                expect: json!({"temperature":0.25,"top_p":0.9,"user":"{\"a\": 1}"}),
                warnings: &[],
            },
            Case {
                name: "top_k, thinking, service tier and Anthropic-only fields are unsupported by default",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],"top_k":5,
                    "thinking":{"type":"adaptive","display":"omitted"},"service_tier":"standard_only","container":"c1",
                    "mcp_servers":[],"context_management":{"edits":[]},"inference_geo":"us","output_config":{"effort":"high"}}),
                expect: json!({"model":"gpt-x","max_tokens":5,"messages":[{"role":"user","content":"q"}]}),
                warnings: &["top_k:unsupported","thinking:unsupported","service_tier:unsupported","container:unsupported",
                    "mcp_servers:unsupported","context_management:unsupported","inference_geo:unsupported","output_config.effort:unsupported"],
            },
            Case {
                name: "documented defaults are dropped silently",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],"thinking":{"type":"disabled"},"service_tier":"auto"}),
                expect: json!({"model":"gpt-x","max_tokens":5,"messages":[{"role":"user","content":"q"}]}),
                warnings: &[],
            },
            Case {
                name: "output_config.format → response_format",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],
                    "output_config":{"format":{"type":"json_schema","schema":{"type":"object"}}}}),
                expect: json!({"response_format":{"type":"json_schema","json_schema":{"name":"output","schema":{"type":"object"},"strict":true}}}),
                warnings: &[],
            },
            Case {
                name: "extensions: retention and web_search_options forwarded, others removed",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],"session_id":"s","debug":{"enabled":true},
                    "prompt_cache_retention":"24h","web_search_options":{"search_context_size":"low"}}),
                expect: json!({"model":"gpt-x","max_tokens":5,"messages":[{"role":"user","content":"q"}],
                    "prompt_cache_retention":"24h","web_search_options":{"search_context_size":"low"}}),
                warnings: &[],
            },
            Case {
                name: "unknown top-level field",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],"frobnicate":true}),
                expect: json!({"model":"gpt-x","max_tokens":5,"messages":[{"role":"user","content":"q"}]}),
                warnings: &["frobnicate:unknown_parameter"],
            },
            Case {
                name: "provider_options.openai deep-merged last, protected keys kept",
                request: json!({"model":"c","max_tokens":5,"messages":[{"role":"user","content":"q"}],"output_config":{"format":{"type":"json_schema","schema":{"type":"object"}}},
                    "provider_options":{"openai":{"seed":7,"max_tokens":9,"response_format":{"json_schema":{"strict":false}}},"anthropic":{"x":1}}}),
                expect: json!({"model":"gpt-x","max_tokens":9,"seed":7,"response_format":{"type":"json_schema","json_schema":{"name":"output","schema":{"type":"object"},"strict":false}}}),
                warnings: &[],
            },
        ]
    }

    /// Asserts every key of `expect` equals the body's (a subset match, exact below the top level).
    fn assert_subset(name: &str, body: &Value, expect: &Value) {
        for (k, v) in expect.as_object().unwrap() {
            assert_eq!(&body[k], v, "{name}: field {k} in {body}");
        }
    }

    #[test]
    fn request_table() {
        for c in cases() {
            let (body, warnings) = translate(c.request.clone());
            assert_subset(c.name, &body, &c.expect);
            assert_eq!(warnings, c.warnings, "{}", c.name);
            // No Anthropic-only construct ever reaches the body.
            let text = body.to_string();
            for banned in [
                "cache_control",
                "thinking",
                "\"tool_use\"",
                "tool_result",
                "input_schema",
                "session_id",
            ] {
                assert!(
                    !text.contains(banned),
                    "{}: {banned} leaked: {text}",
                    c.name
                );
            }
        }
    }

    #[test]
    fn exact_bodies_for_the_plain_cases() {
        // Rows whose `expect` lists every field are compared whole.
        for c in cases()
            .into_iter()
            .filter(|c| c.expect.get("model").is_some())
        {
            let (body, _) = translate(c.request.clone());
            if c.name.starts_with("provider_options") {
                continue;
            }
            assert_eq!(body, c.expect, "{}", c.name);
        }
    }

    #[test]
    fn stream_sets_include_usage() {
        let (body, _) = translate_with(
            base(json!([{"role":"user","content":"q"}])),
            &openai(),
            true,
            None,
        );
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn capability_overrides() {
        let caps = Capabilities {
            top_k: true,
            reasoning_effort: true,
            max_stop_sequences: Some(8),
            max_completion_tokens: true,
            reasoning_history: true,
            ..openai()
        };
        let r = json!({"model":"c","max_tokens":50,"top_k":3,"stop_sequences":["1","2","3","4","5"],
            "thinking":{"type":"enabled","budget_tokens":4096},
            "messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"thinking","thinking":"plan","signature":"s"},{"type":"text","text":"A"}]}]});
        let (body, warnings) = translate_with(r.clone(), &caps, false, None);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(body["max_completion_tokens"], 50);
        assert!(body.get("max_tokens").is_none());
        assert_eq!(body["top_k"], 3);
        assert_eq!(body["stop"].as_array().unwrap().len(), 5);
        assert_eq!(body["reasoning_effort"], "medium");
        assert_eq!(
            body["messages"][1],
            json!({"role":"assistant","content":"A","reasoning_content":"plan"})
        );
        // Budgets map to effort levels; an explicit effort wins; adaptive is medium.
        for (thinking, effort, expected) in [
            (json!({"type":"enabled","budget_tokens":1024}), None, "low"),
            (
                json!({"type":"enabled","budget_tokens":8192}),
                None,
                "medium",
            ),
            (
                json!({"type":"enabled","budget_tokens":20000}),
                None,
                "high",
            ),
            (json!({"type":"adaptive"}), None, "medium"),
            (
                json!({"type":"enabled","budget_tokens":1024}),
                Some("high"),
                "high",
            ),
        ] {
            let mut r = r.clone();
            r["thinking"] = thinking;
            if let Some(e) = effort {
                r["output_config"] = json!({"effort": e});
            }
            let (body, _) = translate_with(r, &caps, false, None);
            assert_eq!(body["reasoning_effort"], expected);
        }
        // Images are dropped when vision is off.
        let caps = Capabilities {
            vision: false,
            ..openai()
        };
        let (body, warnings) = translate_with(
            base(
                json!([{"role":"user","content":[{"type":"text","text":"x"},{"type":"image","source":{"type":"url","url":"u"}}]}]),
            ),
            &caps,
            false,
            None,
        );
        assert_eq!(body["messages"][0]["content"], "x");
        assert_eq!(warnings, ["messages.0.content.1:unsupported"]);
    }

    #[test]
    fn top_level_cache_control_becomes_prompt_cache_key() {
        let r = json!({"model":"c","max_tokens":5,"cache_control":{"type":"ephemeral"},"messages":[{"role":"user","content":"q"}]});
        let (body, warnings) = translate_with(r.clone(), &openai(), false, Some("abc123"));
        assert_eq!(body["prompt_cache_key"], "abc123");
        assert!(warnings.is_empty());
        let (body, warnings) = translate(r);
        assert!(body.get("prompt_cache_key").is_none());
        assert_eq!(warnings, ["cache_control:unsupported"]);
    }

    #[test]
    fn long_tool_names_are_mapped_everywhere() {
        let long = "tool_".repeat(20);
        let r = req(json!({"model":"c","max_tokens":5,
            "tools":[{"name":long,"input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":long},
            "messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":long,"input":{}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]}));
        let caps = openai();
        let ctx = RequestContext {
            upstream_model: "m",
            caps: &caps,
            stream: false,
            prompt_cache_key: None,
        };
        let t = translate_request(&r, &ctx);
        let body: Value = serde_json::from_slice(&t.body).unwrap();
        let short = body["tools"][0]["function"]["name"].as_str().unwrap();
        assert_eq!(short.len(), 64);
        assert_eq!(body["tool_choice"]["function"]["name"], short);
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["name"],
            short
        );
        assert_eq!(t.tool_names.to_client(short), long);
        assert!(!t.body.windows(long.len()).any(|w| w == long.as_bytes()));
    }

    #[test]
    fn raw_arguments_round_trip_from_history() {
        let (body, _) = translate(base(json!([{"role":"user","content":"q"},
            {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{RAW_ARGUMENTS_KEY:"{\"city\": Lyon"}}]}])));
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"city\": Lyon"
        );
    }

    #[test]
    fn estimate_grows_with_the_conversation() {
        let caps = openai();
        let small = req(base(json!([{"role":"user","content":"hi"}])));
        let big = req(base(json!([{"role":"user","content":"x".repeat(4000)}])));
        let ctx = RequestContext {
            upstream_model: "m",
            caps: &caps,
            stream: false,
            prompt_cache_key: None,
        };
        assert_eq!(build(&small, &ctx).estimated_input_tokens, 1 + 3);
        assert_eq!(build(&big, &ctx).estimated_input_tokens, 1000 + 3);
    }
}
