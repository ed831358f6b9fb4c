//! Request validation (messages-api.md §2.2, §3; gateway.md §4). One walk over the parsed body
//! collects every problem with its dotted path and zero-based indices; the first becomes the error
//! message (§3.5). Unknown keys inside known objects are not errors: they are forwarded to
//! Anthropic upstreams, which judge them. Optional fields sent as `null` count as absent.
//! Gateway tool declarations, the options of native web shapes and `tool_choice` have one rule
//! set, in the tool layer (`tools/declare.rs`, `tools/choice.rs`), checked after this walk.

use std::collections::HashSet;
use std::fmt;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::anthropic::ErrorDetail;
use super::extensions::{parse_routing, DebugFlags, Extensions};
use super::request::{
    is_gateway_tool_type, MessagesRequest, RawFields, ANTHROPIC_FIELDS, EXTENSION_FIELDS,
};

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

/// A hostile body must not get an error bigger than itself: past this many, problems are dropped.
const MAX_DETAILS: usize = 100;
const MAX_MESSAGES: usize = 100_000;
const MAX_CACHE_BREAKPOINTS: u32 = 4;
const MAX_MCP_SERVERS: usize = 20;
const IMAGE_MEDIA_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];
const DEBUG_FLAGS: [&str; 4] = [
    "enabled",
    "return_upstream_request",
    "return_upstream_response",
    "trace",
];

/// One step of a dotted path.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A dotted path kept on the stack while the walk descends. It becomes a string only when a
/// problem is found, so a valid request allocates nothing for paths.
#[derive(Clone, Copy)]
struct At<'a> {
    parent: Option<&'a At<'a>>,
    seg: Seg<'a>,
}

impl<'a> At<'a> {
    const fn root(key: &'a str) -> Self {
        Self {
            parent: None,
            seg: Seg::Key(key),
        }
    }

    fn key(&'a self, key: &'a str) -> At<'a> {
        At {
            parent: Some(self),
            seg: Seg::Key(key),
        }
    }

    fn idx(&'a self, i: usize) -> At<'a> {
        At {
            parent: Some(self),
            seg: Seg::Index(i),
        }
    }
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}.")?;
        }
        match self.seg {
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "{i}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
    System,
}

/// Where a content block sits; each block type is allowed in some places only (§3.3).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    User,
    Assistant,
    SystemMessage,
    SystemPrompt,
    ToolResult,
    DocumentContent,
    SearchResultContent,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Self::User => "user messages",
            Self::Assistant => "assistant messages",
            Self::SystemMessage => "system messages",
            Self::SystemPrompt => "the system prompt",
            Self::ToolResult => "tool_result content",
            Self::DocumentContent => "document content",
            Self::SearchResultContent => "search_result content",
        }
    }
}

/// The request content block types (§3.3).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Image,
    Document,
    SearchResult,
    ToolUse,
    ToolResult,
    Thinking,
    RedactedThinking,
    ServerToolUse,
    /// Results of Anthropic web search / fetch and of gateway tools.
    ServerToolResult,
    /// Forwarded verbatim to Anthropic upstreams; other upstreams: strictness.
    AnthropicOnly,
    /// Client-side tool search answers with these inside a `tool_result` (sent by coding agents
    /// whose tools use `defer_loading`); not in the §3.3 table but refusing them breaks such clients.
    ToolReference,
}

impl Kind {
    fn of(ty: &str) -> Option<Self> {
        Some(match ty {
            "text" => Self::Text,
            "image" => Self::Image,
            "document" => Self::Document,
            "search_result" => Self::SearchResult,
            "tool_use" => Self::ToolUse,
            "tool_result" => Self::ToolResult,
            "thinking" => Self::Thinking,
            "redacted_thinking" => Self::RedactedThinking,
            "server_tool_use" => Self::ServerToolUse,
            "web_search_tool_result"
            | "web_fetch_tool_result"
            | "datetime_tool_result"
            | "advisor_tool_result"
            | "image_generation_tool_result" => Self::ServerToolResult,
            "code_execution_tool_result"
            | "bash_code_execution_tool_result"
            | "text_editor_code_execution_tool_result"
            | "tool_search_tool_result"
            | "container_upload"
            | "mcp_tool_use"
            | "mcp_tool_result" => Self::AnthropicOnly,
            "tool_reference" => Self::ToolReference,
            _ => return None,
        })
    }

    fn allowed_in(self, place: Place, version: ApiVersion) -> bool {
        use Place as P;
        match self {
            Self::Text => true,
            Self::Image => matches!(place, P::User | P::ToolResult | P::DocumentContent),
            // The table allows documents in user turns; §2.2 makes the 2026 version refuse them
            // in assistant turns, so 2023-06-01 leaves that case to the upstream, as Anthropic did.
            Self::Document => {
                matches!(place, P::User | P::ToolResult)
                    || (place == P::Assistant && version == ApiVersion::V2023_06_01)
            }
            Self::SearchResult => matches!(place, P::User | P::ToolResult),
            Self::ToolResult => place == P::User,
            Self::ToolReference => place == P::ToolResult,
            Self::ToolUse
            | Self::Thinking
            | Self::RedactedThinking
            | Self::ServerToolUse
            | Self::ServerToolResult
            | Self::AnthropicOnly => place == P::Assistant,
        }
    }
}

/// Tool-call bookkeeping (§3.2). Consecutive same-role messages are merged before they reach an
/// upstream, so the rules hold for merged turns: the ids of a whole assistant turn (however many
/// messages it spans) are answered by the user turn right after it, and that turn's `tool_result`
/// blocks come before anything else in its merged content, so a `tool_result` in the second of
/// two consecutive user messages after a text block in the first is refused. A mid-conversation
/// `system` message neither ends nor starts a turn.
#[derive(Default)]
struct Turns<'v> {
    role: Option<Role>,
    /// `tool_use` (client) and `server_tool_use` ids of the last assistant turn, in order.
    calls: IndexMap<&'v str, Call>,
    /// Index of the first message of the current user turn.
    user_start: usize,
    /// A block other than `tool_result` has been seen in the current user turn.
    other_content: bool,
}

struct Call {
    client: bool,
    answered: bool,
}

impl<'v> Turns<'v> {
    /// Called for every user or assistant message, before its blocks.
    fn enter(&mut self, c: &mut Checker, role: Role, i: usize) {
        if self.role == Some(role) {
            return;
        }
        self.close_user_turn(c);
        if role == Role::User {
            self.user_start = i;
            self.other_content = false;
        } else {
            self.calls.clear();
        }
        self.role = Some(role);
    }

    /// Every client `tool_use` needs one `tool_result` in the user turn after it ("one per
    /// `tool_use` id"); a conversation ending on the assistant turn is a prefill and needs none.
    fn close_user_turn(&mut self, c: &mut Checker) {
        if self.role != Some(Role::User) {
            return;
        }
        let messages = At::root("messages");
        let turn = messages.idx(self.user_start);
        for (id, call) in &self.calls {
            if call.client && !call.answered {
                c.fail(
                    &turn.key("content"),
                    format!("missing tool_result for tool_use id {}", quoted(id)),
                );
            }
        }
    }

    fn call(&mut self, c: &mut Checker, at_id: &At, id: &'v str, client: bool) {
        let call = Call {
            client,
            answered: false,
        };
        if self.calls.insert(id, call).is_some() {
            c.fail(at_id, "duplicate tool_use id");
        }
    }

    fn result(&mut self, c: &mut Checker, at: &At, id: &str) {
        match self.calls.get_mut(id) {
            None => c.fail(
                &at.key("tool_use_id"),
                "no matching tool_use in the preceding assistant turn",
            ),
            Some(call) if call.answered => c.fail(
                &at.key("tool_use_id"),
                "duplicate tool_result for this tool_use id",
            ),
            Some(call) => {
                call.answered = true;
                if self.other_content {
                    c.fail(at, "tool_result blocks must come first in the user turn");
                }
            }
        }
    }
}

struct Checker {
    version: ApiVersion,
    details: Vec<ErrorDetail>,
    /// `cache_control` breakpoints seen so far in tools → system → messages order.
    breakpoints: u32,
}

/// Validates a parsed body; on success the request's typed views are filled in.
pub fn validate(
    fields: RawFields,
    version: ApiVersion,
) -> Result<MessagesRequest, Vec<ErrorDetail>> {
    validate_body(fields, version, true)
}

/// A `count_tokens` body (messages-api.md §8): `max_tokens` and `stream` are ignored (removed),
/// the rest is validated as for `/v1/messages`.
pub fn validate_count_tokens(
    mut fields: RawFields,
    version: ApiVersion,
) -> Result<MessagesRequest, Vec<ErrorDetail>> {
    fields.shift_remove("max_tokens");
    fields.shift_remove("stream");
    validate_body(fields, version, false)
}

fn validate_body(
    fields: RawFields,
    version: ApiVersion,
    max_tokens_required: bool,
) -> Result<MessagesRequest, Vec<ErrorDetail>> {
    let mut c = Checker {
        version,
        details: Vec::new(),
        breakpoints: 0,
    };

    let model = match c.parse(&fields, "model") {
        Some(Value::String(s)) => {
            if !char_len_in(&s, 1, 256) {
                c.fail(&At::root("model"), "must be 1..256 characters");
            }
            s
        }
        Some(_) => {
            c.fail(&At::root("model"), "must be a string");
            String::new()
        }
        None => {
            c.fail(&At::root("model"), "field required");
            String::new()
        }
    };

    let max_tokens = match c.parse(&fields, "max_tokens") {
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                c.fail(&At::root("max_tokens"), "must be an integer >= 1");
                0
            }
        },
        None if !max_tokens_required => 0,
        None => {
            c.fail(&At::root("max_tokens"), "field required");
            0
        }
    };

    let stream = match c.parse_opt(&fields, "stream") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            c.fail(&At::root("stream"), "must be a boolean");
            false
        }
    };

    // Tools → system → messages is the cache prefix order in which breakpoints are counted, so
    // "the 5th" is well defined.
    let tools = match c.parse_opt(&fields, "tools") {
        None => Vec::new(),
        Some(Value::Array(t)) => t,
        Some(_) => {
            c.fail(&At::root("tools"), "must be an array");
            Vec::new()
        }
    };
    c.tools(&tools);
    // Its forms and the names it may use are the tool layer's (tools/choice.rs), which knows
    // the gateway tools.
    let tool_choice = c.parse_opt(&fields, "tool_choice");

    let system = c.parse_opt(&fields, "system");
    if let Some(s) = &system {
        c.system(s);
    }

    let messages = match c.parse(&fields, "messages") {
        Some(Value::Array(m)) => {
            c.messages(&m);
            m
        }
        Some(_) => {
            c.fail(&At::root("messages"), "must be an array");
            Vec::new()
        }
        None => {
            c.fail(&At::root("messages"), "field required");
            Vec::new()
        }
    };

    c.top_level(&fields);
    let extensions = c.extensions(&fields);

    if !c.details.is_empty() {
        return Err(c.details);
    }
    let unknown_fields = fields
        .keys()
        .filter(|k| {
            !ANTHROPIC_FIELDS.contains(&k.as_str()) && !EXTENSION_FIELDS.contains(&k.as_str())
        })
        .cloned()
        .collect();
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
        extensions,
    })
}

impl Checker {
    fn fail(&mut self, at: &At, reason: impl Into<String>) {
        if self.details.len() < MAX_DETAILS {
            self.details.push(ErrorDetail::new(at.to_string(), reason));
        }
    }

    /// A top-level field parsed from its raw bytes.
    fn parse(&mut self, fields: &RawFields, key: &'static str) -> Option<Value> {
        let raw = fields.get(key)?;
        match serde_json::from_str(raw.get()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(&At::root(key), format!("invalid JSON: {e}"));
                None
            }
        }
    }

    /// An optional top-level field: `null` counts as absent.
    fn parse_opt(&mut self, fields: &RawFields, key: &'static str) -> Option<Value> {
        self.parse(fields, key).filter(|v| !v.is_null())
    }

    /// A field forwarded verbatim: only its JSON type is checked, from the first byte of its raw
    /// text (no parse).
    fn raw_type(&mut self, fields: &RawFields, key: &'static str, starts: &[u8], reason: &str) {
        let Some(raw) = fields.get(key) else { return };
        let first = raw.get().as_bytes().first().copied().unwrap_or(b'n');
        if first != b'n' && !starts.contains(&first) {
            self.fail(&At::root(key), reason);
        }
    }

    fn req_str<'v>(&mut self, at: &At, obj: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
        match obj.get(key) {
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.fail(&at.key(key), "must be a string");
                None
            }
            None => {
                self.fail(&at.key(key), "field required");
                None
            }
        }
    }

    fn opt_str<'v>(&mut self, at: &At, obj: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.fail(&at.key(key), "must be a string");
                None
            }
        }
    }

    fn req_one_of(&mut self, at: &At, obj: &Map<String, Value>, key: &str, allowed: &[&str]) {
        if let Some(s) = self.req_str(at, obj, key) {
            if !allowed.contains(&s) {
                self.fail(&at.key(key), one_of(allowed));
            }
        }
    }

    fn opt_one_of(&mut self, at: &At, obj: &Map<String, Value>, key: &str, allowed: &[&str]) {
        if let Some(s) = self.opt_str(at, obj, key) {
            if !allowed.contains(&s) {
                self.fail(&at.key(key), one_of(allowed));
            }
        }
    }

    /// A required string that `id` accepts (`id.1` says what it must match otherwise).
    fn req_id(&mut self, at: &At, obj: &Map<String, Value>, key: &str, id: IdRule) {
        let (valid, mismatch) = id;
        if self.req_str(at, obj, key).is_some_and(|s| !valid(s)) {
            self.fail(&at.key(key), mismatch);
        }
    }

    fn opt_bool(&mut self, at: &At, obj: &Map<String, Value>, key: &str) {
        match obj.get(key) {
            None | Some(Value::Null | Value::Bool(_)) => {}
            Some(_) => self.fail(&at.key(key), "must be a boolean"),
        }
    }

    fn req_object<'v>(
        &mut self,
        at: &At,
        obj: &'v Map<String, Value>,
        key: &str,
    ) -> Option<&'v Map<String, Value>> {
        match obj.get(key) {
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                self.fail(&at.key(key), "must be an object");
                None
            }
            None => {
                self.fail(&at.key(key), "field required");
                None
            }
        }
    }

    fn opt_object<'v>(
        &mut self,
        at: &At,
        obj: &'v Map<String, Value>,
        key: &str,
    ) -> Option<&'v Map<String, Value>> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                self.fail(&at.key(key), "must be an object");
                None
            }
        }
    }

    /// A member `cache_control`, if any (see `cache_control_value`).
    fn cache_control(&mut self, at: &At, obj: &Map<String, Value>, counted: bool) {
        if let Some(cc) = obj.get("cache_control") {
            self.cache_control_value(&at.key("cache_control"), cc, counted);
        }
    }

    /// `{"type":"ephemeral","ttl"?:"5m"|"1h"}`. `counted` ones are breakpoints: at most 4 across
    /// tools, system and messages (§3.3); the top-level one is automatic caching, not counted.
    fn cache_control_value(&mut self, at: &At, cc: &Value, counted: bool) {
        let cc = match cc {
            Value::Null => return,
            Value::Object(cc) => cc,
            _ => {
                self.fail(at, "must be an object");
                return;
            }
        };
        if let Some(t) = self.req_str(at, cc, "type") {
            if t != "ephemeral" {
                self.fail(&at.key("type"), "must be \"ephemeral\"");
            }
        }
        self.opt_one_of(at, cc, "ttl", &["5m", "1h"]);
        if counted {
            self.breakpoints += 1;
            if self.breakpoints == MAX_CACHE_BREAKPOINTS + 1 {
                self.fail(at, "at most 4 cache_control breakpoints are allowed");
            }
        }
    }

    fn top_level(&mut self, fields: &RawFields) {
        match self.parse_opt(fields, "stop_sequences") {
            None => {}
            Some(Value::Array(seqs)) => {
                let root = At::root("stop_sequences");
                for (i, s) in seqs.iter().enumerate() {
                    if !matches!(s, Value::String(s) if !s.is_empty()) {
                        self.fail(&root.idx(i), "must be a non-empty string");
                    }
                }
            }
            Some(_) => self.fail(&At::root("stop_sequences"), "must be an array"),
        }

        for key in ["temperature", "top_p", "top_k"] {
            // 2026-10-21 refuses sampling parameters outright, even at their defaults (§2.2).
            if self.version == ApiVersion::V2026_10_21 && fields.contains_key(key) {
                self.fail(&At::root(key), "Extra inputs are not permitted");
                continue;
            }
            let Some(v) = self.parse_opt(fields, key) else {
                continue;
            };
            if key == "top_k" {
                if v.as_u64().is_none_or(|k| k < 1) {
                    self.fail(&At::root(key), "must be an integer >= 1");
                }
            } else if !v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)) {
                self.fail(&At::root(key), "must be a number between 0 and 1");
            }
        }

        match self.parse_opt(fields, "metadata") {
            None => {}
            Some(Value::Object(meta)) => {
                let root = At::root("metadata");
                for (k, v) in &meta {
                    let at = root.key(k);
                    match (k.as_str(), v) {
                        ("user_id", Value::Null) => {}
                        ("user_id", Value::String(s)) => {
                            if !char_len_in(s, 0, 256) {
                                self.fail(&at, "must be at most 256 characters");
                            }
                        }
                        ("user_id", _) => self.fail(&at, "must be a string or null"),
                        _ => self.fail(&at, "unknown field"),
                    }
                }
            }
            Some(_) => self.fail(&At::root("metadata"), "must be an object"),
        }

        match self.parse_opt(fields, "thinking") {
            None => {}
            Some(Value::Object(t)) => {
                let at = At::root("thinking");
                match self.req_str(&at, &t, "type") {
                    Some("enabled") => {
                        match t.get("budget_tokens") {
                            Some(Value::Number(n)) if n.as_u64().is_some_and(|b| b >= 1024) => {}
                            None => self.fail(&at.key("budget_tokens"), "field required"),
                            Some(_) => {
                                self.fail(&at.key("budget_tokens"), "must be an integer >= 1024")
                            }
                        }
                        self.opt_one_of(&at, &t, "display", &["summarized", "omitted"]);
                    }
                    Some("adaptive") => {
                        self.opt_one_of(&at, &t, "display", &["summarized", "omitted"]);
                    }
                    Some("disabled") | None => {}
                    Some(_) => self.fail(
                        &at.key("type"),
                        "must be one of enabled, disabled, adaptive",
                    ),
                }
            }
            Some(_) => self.fail(&At::root("thinking"), "must be an object"),
        }

        match self.parse_opt(fields, "service_tier") {
            None => {}
            Some(Value::String(s)) if s == "auto" || s == "standard_only" => {}
            Some(_) => self.fail(
                &At::root("service_tier"),
                "must be one of auto, standard_only",
            ),
        }

        if let Some(cc) = self.parse(fields, "cache_control") {
            self.cache_control_value(&At::root("cache_control"), &cc, false);
        }

        match self.parse_opt(fields, "mcp_servers") {
            None => {}
            Some(Value::Array(servers)) => {
                let root = At::root("mcp_servers");
                if servers.len() > MAX_MCP_SERVERS {
                    self.fail(&root, "must contain at most 20 servers");
                }
                for (i, s) in servers.iter().enumerate() {
                    if !s.is_object() {
                        self.fail(&root.idx(i), "must be an object");
                    }
                }
            }
            Some(_) => self.fail(&At::root("mcp_servers"), "must be an array"),
        }

        self.raw_type(fields, "container", b"\"{", "must be a string or an object");
        self.raw_type(fields, "output_config", b"{", "must be an object");
        self.raw_type(fields, "inference_geo", b"\"", "must be a string");
        self.raw_type(fields, "context_management", b"{", "must be an object");
    }

    /// Gateway extensions (gateway.md §4), parsed into their types.
    fn extensions(&mut self, fields: &RawFields) -> Extensions {
        let mut ext = Extensions::default();
        match self.parse_opt(fields, "session_id") {
            None => {}
            Some(Value::String(s)) if !is_session_id(&s) => {
                self.fail(&At::root("session_id"), "must be 1..256 characters");
            }
            Some(Value::String(s)) => ext.session_id = Some(s),
            Some(_) => self.fail(&At::root("session_id"), "must be a string"),
        }
        match self.parse_opt(fields, "debug") {
            None => {}
            Some(Value::Object(flags)) => {
                let root = At::root("debug");
                let mut on = false;
                let mut debug = DebugFlags::default();
                for (k, v) in &flags {
                    let Some(&flag) = DEBUG_FLAGS.iter().find(|f| **f == k.as_str()) else {
                        self.fail(&root.key(k), "unknown field");
                        continue;
                    };
                    let Some(set) = v.as_bool() else {
                        self.fail(&root.key(k), "must be a boolean");
                        continue;
                    };
                    on |= set;
                    match flag {
                        "return_upstream_request" => debug.upstream_request = set,
                        "return_upstream_response" => debug.upstream_response = set,
                        "trace" => debug.trace = set,
                        _ => {} // `enabled`
                    }
                }
                // Any true flag enables debug output.
                ext.debug = on.then_some(debug);
            }
            Some(_) => self.fail(&At::root("debug"), "must be an object"),
        }
        let provider = self.parse(fields, "provider");
        let routing = self.parse(fields, "routing");
        match parse_routing(provider.as_ref(), routing.as_ref()) {
            Ok(prefs) => ext.routing = prefs,
            Err(details) => {
                let room = MAX_DETAILS.saturating_sub(self.details.len());
                self.details.extend(details.into_iter().take(room));
            }
        }
        match self.parse_opt(fields, "provider_options") {
            None => {}
            Some(Value::Object(kinds)) => {
                let root = At::root("provider_options");
                for (kind, options) in kinds {
                    let at = root.key(&kind);
                    let slot = match kind.as_str() {
                        "anthropic" => &mut ext.provider_options.anthropic,
                        "openai" => &mut ext.provider_options.openai,
                        _ => {
                            self.fail(&at, "unknown key; use anthropic or openai");
                            continue;
                        }
                    };
                    let Value::Object(options) = options else {
                        self.fail(&at, "must be an object");
                        continue;
                    };
                    for k in options.keys() {
                        if crate::protocol::merge::PROTECTED_KEYS.contains(&k.as_str()) {
                            self.fail(&at.key(k), "may not be set through provider_options");
                        }
                    }
                    *slot = Some(options);
                }
            }
            Some(_) => self.fail(&At::root("provider_options"), "must be an object"),
        }
        match self.parse_opt(fields, "prompt_cache_retention") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "in_memory" || s == "24h" => {}
            Some(_) => self.fail(
                &At::root("prompt_cache_retention"),
                "must be one of in_memory, 24h",
            ),
        }
        match self.parse_opt(fields, "web_search_options") {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(_) => self.fail(&At::root("web_search_options"), "must be an object"),
        }
        ext
    }

    fn system(&mut self, system: &Value) {
        let root = At::root("system");
        match system {
            Value::String(_) => {}
            Value::Array(blocks) => {
                for (i, b) in blocks.iter().enumerate() {
                    self.block(&root.idx(i), b, Place::SystemPrompt);
                }
            }
            _ => self.fail(&root, "must be a string or an array of text blocks"),
        }
    }

    fn messages(&mut self, messages: &[Value]) {
        let root = At::root("messages");
        if messages.is_empty() {
            self.fail(&root, "must contain at least one message");
        } else if messages.len() > MAX_MESSAGES {
            self.fail(&root, "must contain at most 100000 messages");
        }
        let mut turns = Turns::default();
        for (i, m) in messages.iter().enumerate() {
            let last = i + 1 == messages.len();
            self.message(&root.idx(i), i, m, last, &mut turns);
        }
        turns.close_user_turn(self);
    }

    fn message<'v>(&mut self, at: &At, i: usize, m: &'v Value, last: bool, turns: &mut Turns<'v>) {
        let Some(obj) = m.as_object() else {
            self.fail(at, "must be an object");
            return;
        };
        let role = match obj.get("role") {
            Some(Value::String(r)) if r == "user" => Role::User,
            Some(Value::String(r)) if r == "assistant" => Role::Assistant,
            Some(Value::String(r)) if r == "system" => Role::System,
            None => {
                self.fail(&at.key("role"), "field required");
                return;
            }
            Some(_) => {
                self.fail(&at.key("role"), "must be one of user, assistant, system");
                return;
            }
        };
        let place = match role {
            Role::User => Place::User,
            Role::Assistant => Place::Assistant,
            Role::System => Place::SystemMessage,
        };
        if role != Role::System {
            turns.enter(self, role, i);
        }
        // Anthropic refuses empty content "except for the optional final assistant message": an
        // empty prefill. A string is one text block, and an empty text block is refused (§3.3),
        // so an empty string is refused like an empty array.
        let may_be_empty = last && role == Role::Assistant;
        let content = at.key("content");
        match obj.get("content") {
            Some(Value::String(s)) => {
                if s.is_empty() && !may_be_empty {
                    self.fail(&content, "must be non-empty");
                }
                if role == Role::User {
                    turns.other_content = true;
                }
            }
            Some(Value::Array(blocks)) => {
                if blocks.is_empty() && !may_be_empty {
                    self.fail(&content, "must be non-empty");
                }
                for (j, b) in blocks.iter().enumerate() {
                    let at = content.idx(j);
                    let kind = self.block(&at, b, place);
                    match (role, kind) {
                        (Role::Assistant, Some(k @ (Kind::ToolUse | Kind::ServerToolUse))) => {
                            let id = b.get("id").and_then(Value::as_str);
                            let client = k == Kind::ToolUse;
                            let valid = if client {
                                is_tool_id
                            } else {
                                is_server_tool_id
                            };
                            if let Some(id) = id.filter(|id| valid(id)) {
                                turns.call(self, &at.key("id"), id, client);
                            }
                        }
                        (Role::User, Some(Kind::ToolResult)) => {
                            let id = b.get("tool_use_id").and_then(Value::as_str);
                            if let Some(id) = id.filter(|id| is_tool_id(id)) {
                                turns.result(self, &at, id);
                            }
                        }
                        (Role::User, _) => turns.other_content = true,
                        _ => {}
                    }
                }
            }
            Some(_) => self.fail(&content, "must be a string or an array of content blocks"),
            None => self.fail(&content, "field required"),
        }
    }

    /// Content inside a block (a tool result's, a document's): a string or blocks allowed in `place`.
    fn nested_content(&mut self, at: &At, content: &Value, place: Place) {
        match content {
            Value::String(_) => {}
            Value::Array(blocks) => {
                for (i, b) in blocks.iter().enumerate() {
                    self.block(&at.idx(i), b, place);
                }
            }
            _ => self.fail(at, "must be a string or an array of content blocks"),
        }
    }

    /// One content block; returns its kind when it is known and allowed where it sits.
    fn block(&mut self, at: &At, b: &Value, place: Place) -> Option<Kind> {
        let Some(obj) = b.as_object() else {
            self.fail(at, "must be an object");
            return None;
        };
        let ty = self.req_str(at, obj, "type")?;
        let Some(kind) = Kind::of(ty) else {
            self.fail(
                &at.key("type"),
                format!("unknown content block type {}", quoted(ty)),
            );
            return None;
        };
        if !kind.allowed_in(place, self.version) {
            self.fail(
                &at.key("type"),
                format!("{ty} blocks are not allowed in {}", place.name()),
            );
            return None;
        }
        self.cache_control(at, obj, true);
        match kind {
            Kind::Text => self.text_block(at, obj, place),
            Kind::Image => self.image_block(at, obj),
            Kind::Document => self.document_block(at, obj),
            Kind::SearchResult => self.search_result_block(at, obj),
            Kind::ToolUse => {
                self.req_id(at, obj, "id", TOOL_ID);
                if let Some(name) = self.req_str(at, obj, "name") {
                    if !char_len_in(name, 1, 200) {
                        self.fail(&at.key("name"), "must be 1..200 characters");
                    }
                }
                self.req_object(at, obj, "input");
            }
            Kind::ToolResult => {
                self.req_id(at, obj, "tool_use_id", TOOL_ID);
                match obj.get("content") {
                    None | Some(Value::Null) => {}
                    Some(c) => self.nested_content(&at.key("content"), c, Place::ToolResult),
                }
                self.opt_bool(at, obj, "is_error");
            }
            Kind::Thinking => {
                self.req_str(at, obj, "thinking");
                self.req_str(at, obj, "signature");
            }
            Kind::RedactedThinking => {
                self.req_str(at, obj, "data");
            }
            Kind::ServerToolUse => {
                self.req_id(at, obj, "id", SERVER_TOOL_ID);
                if self.req_str(at, obj, "name") == Some("") {
                    self.fail(&at.key("name"), "must be non-empty");
                }
                self.req_object(at, obj, "input");
            }
            Kind::ServerToolResult => {
                self.req_id(at, obj, "tool_use_id", SERVER_TOOL_ID);
                if obj.get("content").is_none_or(Value::is_null) {
                    self.fail(&at.key("content"), "field required");
                }
            }
            Kind::ToolReference => {
                self.req_str(at, obj, "tool_name");
            }
            Kind::AnthropicOnly => {}
        }
        Some(kind)
    }

    fn text_block(&mut self, at: &At, obj: &Map<String, Value>, place: Place) {
        if self.req_str(at, obj, "text") == Some("") {
            self.fail(&at.key("text"), "must be non-empty");
        }
        match obj.get("citations") {
            None | Some(Value::Null) => {}
            Some(Value::Array(c)) => {
                // Citations are output: 2026-10-21 refuses them on user text (§2.2).
                if place == Place::User && self.version == ApiVersion::V2026_10_21 && !c.is_empty()
                {
                    self.fail(&at.key("citations"), "not allowed in user messages");
                }
            }
            Some(_) => self.fail(&at.key("citations"), "must be an array"),
        }
    }

    fn image_block(&mut self, at: &At, obj: &Map<String, Value>) {
        let Some(src) = self.req_object(at, obj, "source") else {
            return;
        };
        let at = at.key("source");
        match self.req_str(&at, src, "type") {
            Some("base64") => {
                self.req_one_of(&at, src, "media_type", &IMAGE_MEDIA_TYPES);
                self.req_str(&at, src, "data");
            }
            Some("url") => {
                self.req_str(&at, src, "url");
            }
            Some("file") => {
                self.req_str(&at, src, "file_id");
            }
            Some(_) => self.fail(&at.key("type"), "must be one of base64, url, file"),
            None => {}
        }
    }

    fn document_block(&mut self, at: &At, obj: &Map<String, Value>) {
        if let Some(src) = self.req_object(at, obj, "source") {
            let at = at.key("source");
            match self.req_str(&at, src, "type") {
                Some("base64") => {
                    self.req_one_of(&at, src, "media_type", &["application/pdf"]);
                    self.req_str(&at, src, "data");
                }
                Some("text") => {
                    self.req_one_of(&at, src, "media_type", &["text/plain"]);
                    self.req_str(&at, src, "data");
                }
                Some("content") => match src.get("content") {
                    Some(c) => self.nested_content(&at.key("content"), c, Place::DocumentContent),
                    None => self.fail(&at.key("content"), "field required"),
                },
                Some("url") => {
                    self.req_str(&at, src, "url");
                }
                Some("file") => {
                    self.req_str(&at, src, "file_id");
                }
                Some(_) => self.fail(
                    &at.key("type"),
                    "must be one of base64, text, content, url, file",
                ),
                None => {}
            }
        }
        if let Some(title) = self.opt_str(at, obj, "title") {
            if !char_len_in(title, 1, 500) {
                self.fail(&at.key("title"), "must be 1..500 characters");
            }
        }
        self.opt_str(at, obj, "context");
        self.citations_config(at, obj);
    }

    fn search_result_block(&mut self, at: &At, obj: &Map<String, Value>) {
        self.req_str(at, obj, "source");
        self.req_str(at, obj, "title");
        match obj.get("content") {
            Some(Value::Array(blocks)) => {
                let content = at.key("content");
                for (i, b) in blocks.iter().enumerate() {
                    self.block(&content.idx(i), b, Place::SearchResultContent);
                }
            }
            Some(_) => self.fail(&at.key("content"), "must be an array of text blocks"),
            None => self.fail(&at.key("content"), "field required"),
        }
        self.citations_config(at, obj);
    }

    /// `citations?: {"enabled": bool}` on documents, search results and web fetch.
    fn citations_config(&mut self, at: &At, obj: &Map<String, Value>) {
        if let Some(c) = self.opt_object(at, obj, "citations") {
            self.opt_bool(&at.key("citations"), c, "enabled");
        }
    }

    /// Custom and Anthropic versioned tools, and unique names. Gateway tools and the options
    /// of native web shapes are the tool layer's (tools/declare.rs): one rule set for both.
    fn tools(&mut self, tools: &[Value]) {
        let root = At::root("tools");
        let mut names = HashSet::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            let at = root.idx(i);
            let Some(obj) = t.as_object() else {
                self.fail(&at, "must be an object");
                continue;
            };
            self.cache_control(&at, obj, true);
            let name = match obj.get("type") {
                None | Some(Value::Null) => self.custom_tool(&at, obj),
                Some(Value::String(ty)) if ty == "custom" => self.custom_tool(&at, obj),
                // Validated by the tool layer (gateway.md §5).
                Some(Value::String(ty)) if is_gateway_tool_type(ty) => None,
                Some(Value::String(ty)) if is_versioned_type(ty) => {
                    if ty.starts_with("web_search_") {
                        self.constant_name(&at, obj, "web_search")
                    } else if ty.starts_with("web_fetch_") {
                        self.constant_name(&at, obj, "web_fetch")
                    } else {
                        self.opt_str(&at, obj, "name")
                    }
                }
                Some(Value::String(ty)) => {
                    self.fail(&at.key("type"), format!("unknown tool type {}", quoted(ty)));
                    None
                }
                Some(_) => {
                    self.fail(&at.key("type"), "must be a string");
                    None
                }
            };
            if let Some(name) = name {
                if !names.insert(name) {
                    self.fail(
                        &at.key("name"),
                        format!("duplicate tool name {}", quoted(name)),
                    );
                }
            }
        }
    }

    /// A custom tool (§3.4); returns its name when valid.
    fn custom_tool<'v>(&mut self, at: &At, obj: &'v Map<String, Value>) -> Option<&'v str> {
        let name = match obj.get("name") {
            Some(Value::String(s)) if !is_tool_name(s) => {
                self.fail(&at.key("name"), "must match ^[a-zA-Z0-9_-]{1,128}$");
                None
            }
            Some(Value::String(s)) if s.starts_with("gateway_") => {
                self.fail(&at.key("name"), "names starting with gateway_ are reserved");
                None
            }
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.fail(&at.key("name"), "must be a string");
                None
            }
            None => {
                self.fail(&at.key("name"), "field required");
                None
            }
        };
        self.opt_str(at, obj, "description");
        if let Some(schema) = self.req_object(at, obj, "input_schema") {
            match schema.get("type") {
                Some(Value::String(t)) if t == "object" => {}
                None => self.fail(&at.key("input_schema").key("type"), "field required"),
                Some(_) => self.fail(&at.key("input_schema").key("type"), "must be \"object\""),
            }
        }
        name
    }

    /// The constant `name` of `web_search_*` / `web_fetch_*` (messages-api.md §7.1); their
    /// options are the tool layer's.
    fn constant_name<'v>(
        &mut self,
        at: &At,
        obj: &'v Map<String, Value>,
        constant: &str,
    ) -> Option<&'v str> {
        match self.req_str(at, obj, "name") {
            Some(n) if n != constant => {
                self.fail(&at.key("name"), format!("must be {constant:?}"));
                None
            }
            n => n,
        }
    }
}

/// The body's `session_id` when it is a valid one (gateway.md §4), read on its own so that a
/// request refused for any other reason still logs its session.
pub fn session_id(fields: &RawFields) -> Option<String> {
    let raw = fields.get("session_id")?;
    serde_json::from_str::<String>(raw.get())
        .ok()
        .filter(|s| is_session_id(s))
}

/// `session_id`: a string of 1..256 characters.
fn is_session_id(s: &str) -> bool {
    char_len_in(s, 1, 256)
}

/// `"must be one of a, b"`.
fn one_of(allowed: &[&str]) -> String {
    format!("must be one of {}", allowed.join(", "))
}

/// A client string quoted for an error message, cut so a huge value cannot bloat the error.
pub(crate) fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Whether `s` has `min..=max` characters, counting at most `max + 1` of them.
fn char_len_in(s: &str, min: usize, max: usize) -> bool {
    let n = s.chars().take(max + 1).count();
    n >= min && n <= max
}

/// An id check and the reason given when it fails.
type IdRule = (fn(&str) -> bool, &'static str);
const TOOL_ID: IdRule = (is_tool_id, "must match ^[a-zA-Z0-9_-]+$");
const SERVER_TOOL_ID: IdRule = (is_server_tool_id, "must match ^srvtoolu_[a-zA-Z0-9_]+$");

/// `^[a-zA-Z0-9_-]+$`
fn is_tool_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `^[a-zA-Z0-9_-]{1,128}$`
fn is_tool_name(s: &str) -> bool {
    s.len() <= 128 && is_tool_id(s)
}

/// `^srvtoolu_[a-zA-Z0-9_]+$`
fn is_server_tool_id(s: &str) -> bool {
    s.strip_prefix("srvtoolu_").is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Anthropic versioned tool types: `<name>_<YYYYMMDD>` (`web_search_20250305`, `bash_20250124`).
fn is_versioned_type(ty: &str) -> bool {
    let Some((name, date)) = ty.rsplit_once('_') else {
        return false;
    };
    !name.is_empty()
        && date.len() == 8
        && date.bytes().all(|b| b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::request::parse_fields;

    const V23: ApiVersion = ApiVersion::V2023_06_01;
    const V26: ApiVersion = ApiVersion::V2026_10_21;

    /// (name, version, body, every expected (param, reason) in order)
    type Case = (
        &'static str,
        ApiVersion,
        String,
        Vec<(&'static str, &'static str)>,
    );

    fn run(body: &str, version: ApiVersion) -> Result<MessagesRequest, Vec<ErrorDetail>> {
        validate(parse_fields(body.as_bytes()).unwrap(), version)
    }

    /// A minimal valid body with top-level keys replaced by `patch`; `null` in the patch removes.
    fn body(patch: Value) -> String {
        let mut b =
            json!({"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]});
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b.to_string()
    }

    fn msgs(messages: Value) -> String {
        body(json!({ "messages": messages }))
    }

    /// User content blocks in a one-message conversation.
    fn user(blocks: Value) -> String {
        msgs(json!([{"role":"user","content":blocks}]))
    }

    /// Assistant content blocks after a user turn.
    fn assistant(blocks: Value) -> String {
        msgs(json!([{"role":"user","content":"q"},{"role":"assistant","content":blocks}]))
    }

    fn tools(tools: Value) -> String {
        body(json!({ "tools": tools }))
    }

    fn weather(name: &str) -> Value {
        json!({"name":name,"input_schema":{"type":"object"}})
    }

    fn repeat(c: char, n: usize) -> String {
        std::iter::repeat_n(c, n).collect()
    }

    /// A round trip: the assistant called `toolu_1`; `results` is the next user content.
    fn round_trip(results: Value) -> String {
        msgs(json!([
            {"role":"user","content":"q"},
            {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"w","input":{}}]},
            {"role":"user","content":results}
        ]))
    }

    #[test]
    fn malformed_requests_name_every_problem() {
        let long = repeat('x', 257);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // Top level (§3.1).
            ("model missing", V23, body(json!({"model":null})), vec![("model", "field required")]),
            ("model type", V23, body(json!({"model":5})), vec![("model", "must be a string")]),
            ("model empty", V23, body(json!({"model":""})), vec![("model", "must be 1..256 characters")]),
            ("model long", V23, body(json!({"model":long})), vec![("model", "must be 1..256 characters")]),
            ("max_tokens zero", V23, body(json!({"max_tokens":0})), vec![("max_tokens", "must be an integer >= 1")]),
            ("max_tokens fraction", V23, body(json!({"max_tokens":1.5})), vec![("max_tokens", "must be an integer >= 1")]),
            ("max_tokens string", V23, body(json!({"max_tokens":"5"})), vec![("max_tokens", "must be an integer >= 1")]),
            ("max_tokens missing", V23, body(json!({"max_tokens":null})), vec![("max_tokens", "field required")]),
            ("messages empty", V23, msgs(json!([])), vec![("messages", "must contain at least one message")]),
            ("messages object", V23, msgs(json!({})), vec![("messages", "must be an array")]),
            ("messages missing", V23, body(json!({"messages":null})), vec![("messages", "field required")]),
            ("system number", V23, body(json!({"system":1})), vec![("system", "must be a string or an array of text blocks")]),
            ("system image", V23, body(json!({"system":[{"type":"image","source":{}}]})), vec![("system.0.type", "image blocks are not allowed in the system prompt")]),
            ("system empty text", V23, body(json!({"system":[{"type":"text","text":""}]})), vec![("system.0.text", "must be non-empty")]),
            ("system cache type", V23, body(json!({"system":[{"type":"text","text":"s","cache_control":{"type":"persistent"}}]})), vec![("system.0.cache_control.type", "must be \"ephemeral\"")]),
            ("stream type", V23, body(json!({"stream":"yes"})), vec![("stream", "must be a boolean")]),
            ("stop_sequences type", V23, body(json!({"stop_sequences":"END"})), vec![("stop_sequences", "must be an array")]),
            ("stop_sequences empty item", V23, body(json!({"stop_sequences":["a","",3]})), vec![("stop_sequences.1", "must be a non-empty string"), ("stop_sequences.2", "must be a non-empty string")]),
            ("temperature range", V23, body(json!({"temperature":1.5})), vec![("temperature", "must be a number between 0 and 1")]),
            ("temperature negative", V23, body(json!({"temperature":-0.1})), vec![("temperature", "must be a number between 0 and 1")]),
            ("top_p type", V23, body(json!({"top_p":"0.5"})), vec![("top_p", "must be a number between 0 and 1")]),
            ("top_k zero", V23, body(json!({"top_k":0})), vec![("top_k", "must be an integer >= 1")]),
            ("metadata type", V23, body(json!({"metadata":[]})), vec![("metadata", "must be an object")]),
            ("metadata user_id type", V23, body(json!({"metadata":{"user_id":5}})), vec![("metadata.user_id", "must be a string or null")]),
            ("metadata user_id long", V23, body(json!({"metadata":{"user_id":long}})), vec![("metadata.user_id", "must be at most 256 characters")]),
            ("metadata other key", V23, body(json!({"metadata":{"user_id":"u","session":"s"}})), vec![("metadata.session", "unknown field")]),
            ("thinking budget", V23, body(json!({"thinking":{"type":"enabled","budget_tokens":1000}})), vec![("thinking.budget_tokens", "must be an integer >= 1024")]),
            ("thinking budget missing", V23, body(json!({"thinking":{"type":"enabled"}})), vec![("thinking.budget_tokens", "field required")]),
            ("thinking type", V23, body(json!({"thinking":{"type":"on"}})), vec![("thinking.type", "must be one of enabled, disabled, adaptive")]),
            ("thinking display", V23, body(json!({"thinking":{"type":"adaptive","display":"full"}})), vec![("thinking.display", "must be one of summarized, omitted")]),
            ("thinking not object", V23, body(json!({"thinking":true})), vec![("thinking", "must be an object")]),
            ("service_tier", V23, body(json!({"service_tier":"priority"})), vec![("service_tier", "must be one of auto, standard_only")]),
            ("top-level cache ttl", V23, body(json!({"cache_control":{"type":"ephemeral","ttl":"10m"}})), vec![("cache_control.ttl", "must be one of 5m, 1h")]),
            ("top-level cache string", V23, body(json!({"cache_control":"ephemeral"})), vec![("cache_control", "must be an object")]),
            ("mcp_servers too many", V23, body(json!({"mcp_servers":vec![json!({"type":"url"}); 21]})), vec![("mcp_servers", "must contain at most 20 servers")]),
            ("mcp_servers item", V23, body(json!({"mcp_servers":[1]})), vec![("mcp_servers.0", "must be an object")]),
            ("container type", V23, body(json!({"container":5})), vec![("container", "must be a string or an object")]),
            ("output_config type", V23, body(json!({"output_config":"high"})), vec![("output_config", "must be an object")]),
            ("inference_geo type", V23, body(json!({"inference_geo":{}})), vec![("inference_geo", "must be a string")]),
            ("context_management type", V23, body(json!({"context_management":[]})), vec![("context_management", "must be an object")]),
            // Gateway extensions (gateway.md §4).
            ("session_id empty", V23, body(json!({"session_id":""})), vec![("session_id", "must be 1..256 characters")]),
            ("session_id long", V23, body(json!({"session_id":long})), vec![("session_id", "must be 1..256 characters")]),
            ("provider unknown key", V23, body(json!({"provider":{"order":["x"],"nonsense":1}})), vec![("provider.nonsense", "unknown key")]),
            ("routing not an object", V23, body(json!({"routing":"?"})), vec![("routing", "must be an object")]),
            ("routing sort", V23, body(json!({"provider":{"sort":"price"},"routing":{"sort":"cheap"}})), vec![("routing.sort", "must be one of price, latency, throughput")]),
            ("provider_options not an object", V23, body(json!({"provider_options":7})), vec![("provider_options", "must be an object")]),
            ("provider_options unknown kind", V23, body(json!({"provider_options":{"bedrock":{}}})), vec![("provider_options.bedrock", "unknown key; use anthropic or openai")]),
            ("provider_options protected key", V23, body(json!({"provider_options":{"openai":{"model":"x","stream":true}}})),
                vec![("provider_options.openai.model", "may not be set through provider_options"), ("provider_options.openai.stream", "may not be set through provider_options")]),
            ("prompt_cache_retention value", V23, body(json!({"prompt_cache_retention":"forever"})), vec![("prompt_cache_retention", "must be one of in_memory, 24h")]),
            ("web_search_options type", V23, body(json!({"web_search_options":[]})), vec![("web_search_options", "must be an object")]),
            ("session_id type", V23, body(json!({"session_id":7})), vec![("session_id", "must be a string")]),
            ("debug flag type", V23, body(json!({"debug":{"enabled":"yes"}})), vec![("debug.enabled", "must be a boolean")]),
            ("debug unknown flag", V23, body(json!({"debug":{"trace":true,"verbose":true}})), vec![("debug.verbose", "unknown field")]),
            ("debug type", V23, body(json!({"debug":true})), vec![("debug", "must be an object")]),
            // anthropic-version 2026-10-21 (§2.2).
            ("2026 temperature", V26, body(json!({"temperature":1.0})), vec![("temperature", "Extra inputs are not permitted")]),
            ("2026 all sampling, null too", V26, r#"{"model":"m","max_tokens":1,"top_k":5,"messages":[{"role":"user","content":"x"}],"top_p":0.9,"temperature":null}"#.to_string(), vec![("temperature", "Extra inputs are not permitted"), ("top_p", "Extra inputs are not permitted"), ("top_k", "Extra inputs are not permitted")]),
            ("2026 assistant document", V26, assistant(json!([{"type":"document","source":{"type":"text","media_type":"text/plain","data":"d"}}])), vec![("messages.1.content.0.type", "document blocks are not allowed in assistant messages")]),
            ("2026 user citations", V26, user(json!([{"type":"text","text":"t","citations":[{"type":"char_location"}]}])), vec![("messages.0.content.0.citations", "not allowed in user messages")]),
            // Messages (§3.2).
            ("role unknown", V23, msgs(json!([{"role":"tool","content":"x"}])), vec![("messages.0.role", "must be one of user, assistant, system")]),
            ("role missing", V23, msgs(json!([{"content":"x"}])), vec![("messages.0.role", "field required")]),
            ("message type", V23, msgs(json!(["hi"])), vec![("messages.0", "must be an object")]),
            ("content missing", V23, msgs(json!([{"role":"user"}])), vec![("messages.0.content", "field required")]),
            ("content type", V23, msgs(json!([{"role":"user","content":5}])), vec![("messages.0.content", "must be a string or an array of content blocks")]),
            ("content empty string", V23, msgs(json!([{"role":"user","content":""}])), vec![("messages.0.content", "must be non-empty")]),
            ("content empty array", V23, msgs(json!([{"role":"user","content":[]}])), vec![("messages.0.content", "must be non-empty")]),
            ("empty assistant mid-conversation", V23, msgs(json!([{"role":"user","content":"a"},{"role":"assistant","content":""},{"role":"user","content":"b"}])), vec![("messages.1.content", "must be non-empty")]),
            ("system message image", V23, msgs(json!([{"role":"user","content":"a"},{"role":"system","content":[{"type":"image","source":{"type":"url","url":"u"}}]}])), vec![("messages.1.content.0.type", "image blocks are not allowed in system messages")]),
            // Content blocks (§3.3).
            ("block type", V23, user(json!(["hi"])), vec![("messages.0.content.0", "must be an object")]),
            ("block without type", V23, user(json!([{"text":"hi"}])), vec![("messages.0.content.0.type", "field required")]),
            ("block unknown", V23, user(json!([{"type":"video"}])), vec![("messages.0.content.0.type", "unknown content block type \"video\"")]),
            ("tool_use in user", V23, user(json!([{"type":"tool_use","id":"t","name":"n","input":{}}])), vec![("messages.0.content.0.type", "tool_use blocks are not allowed in user messages")]),
            ("image in assistant", V23, assistant(json!([{"type":"image","source":{"type":"url","url":"u"}}])), vec![("messages.1.content.0.type", "image blocks are not allowed in assistant messages")]),
            ("tool_result in assistant", V23, assistant(json!([{"type":"tool_result","tool_use_id":"t"}])), vec![("messages.1.content.0.type", "tool_result blocks are not allowed in assistant messages")]),
            ("thinking in user", V23, user(json!([{"type":"thinking","thinking":"t","signature":"s"}])), vec![("messages.0.content.0.type", "thinking blocks are not allowed in user messages")]),
            ("anthropic-only block in user", V23, user(json!([{"type":"mcp_tool_use"}])), vec![("messages.0.content.0.type", "mcp_tool_use blocks are not allowed in user messages")]),
            ("empty text", V23, user(json!([{"type":"text","text":""}])), vec![("messages.0.content.0.text", "must be non-empty")]),
            ("text type", V23, user(json!([{"type":"text","text":5}])), vec![("messages.0.content.0.text", "must be a string")]),
            ("text citations type", V23, user(json!([{"type":"text","text":"t","citations":{}}])), vec![("messages.0.content.0.citations", "must be an array")]),
            ("image media type", V23, user(json!([{"type":"image","source":{"type":"base64","media_type":"image/bmp","data":"AA"}}])), vec![("messages.0.content.0.source.media_type", "must be one of image/jpeg, image/png, image/gif, image/webp")]),
            ("image source type", V23, user(json!([{"type":"image","source":{"type":"path","path":"/x"}}])), vec![("messages.0.content.0.source.type", "must be one of base64, url, file")]),
            ("image url missing", V23, user(json!([{"type":"image","source":{"type":"url"}}])), vec![("messages.0.content.0.source.url", "field required")]),
            ("image source missing", V23, user(json!([{"type":"image"}])), vec![("messages.0.content.0.source", "field required")]),
            ("document pdf media type", V23, user(json!([{"type":"document","source":{"type":"base64","media_type":"application/msword","data":"AA"}}])), vec![("messages.0.content.0.source.media_type", "must be one of application/pdf")]),
            ("document title", V23, user(json!([{"type":"document","source":{"type":"url","url":"u"},"title":""}])), vec![("messages.0.content.0.title", "must be 1..500 characters")]),
            ("document citations", V23, user(json!([{"type":"document","source":{"type":"file","file_id":"f"},"citations":{"enabled":1}}])), vec![("messages.0.content.0.citations.enabled", "must be a boolean")]),
            ("document content source", V23, user(json!([{"type":"document","source":{"type":"content","content":[{"type":"tool_use"}]}}])), vec![("messages.0.content.0.source.content.0.type", "tool_use blocks are not allowed in document content")]),
            ("search_result fields", V23, user(json!([{"type":"search_result","source":"s","content":[{"type":"image"}]}])), vec![("messages.0.content.0.title", "field required"), ("messages.0.content.0.content.0.type", "image blocks are not allowed in search_result content")]),
            ("tool_use id", V23, assistant(json!([{"type":"tool_use","id":"toolu 1","name":"w","input":{}}])), vec![("messages.1.content.0.id", "must match ^[a-zA-Z0-9_-]+$")]),
            ("tool_use name", V23, assistant(json!([{"type":"tool_use","id":"t1","name":"","input":{}}])), vec![("messages.1.content.0.name", "must be 1..200 characters")]),
            ("tool_use input", V23, assistant(json!([{"type":"tool_use","id":"t1","name":"w","input":"{}"}])), vec![("messages.1.content.0.input", "must be an object")]),
            ("tool_result id", V23, round_trip(json!([{"type":"tool_result","tool_use_id":"toolu.1"}])), vec![("messages.2.content.0.tool_use_id", "must match ^[a-zA-Z0-9_-]+$"), ("messages.2.content", "missing tool_result for tool_use id \"toolu_1\"")]),
            ("tool_result is_error", V23, round_trip(json!([{"type":"tool_result","tool_use_id":"toolu_1","is_error":"no"}])), vec![("messages.2.content.0.is_error", "must be a boolean")]),
            ("tool_result nested block", V23, round_trip(json!([{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"tool_use"}]}])), vec![("messages.2.content.0.content.0.type", "tool_use blocks are not allowed in tool_result content")]),
            ("tool_result nested empty text", V23, round_trip(json!([{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":""}]}])), vec![("messages.2.content.0.content.0.text", "must be non-empty")]),
            ("thinking signature", V23, assistant(json!([{"type":"thinking","thinking":"hm"}])), vec![("messages.1.content.0.signature", "field required")]),
            ("redacted_thinking data", V23, assistant(json!([{"type":"redacted_thinking"}])), vec![("messages.1.content.0.data", "field required")]),
            ("server_tool_use id", V23, assistant(json!([{"type":"server_tool_use","id":"toolu_1","name":"web_search","input":{}}])), vec![("messages.1.content.0.id", "must match ^srvtoolu_[a-zA-Z0-9_]+$")]),
            ("server result without id", V23, assistant(json!([{"type":"web_search_tool_result","content":[]}])), vec![("messages.1.content.0.tool_use_id", "field required")]),
            ("gateway result without content", V23, assistant(json!([{"type":"datetime_tool_result","tool_use_id":"srvtoolu_gw_1"}])), vec![("messages.1.content.0.content", "field required")]),
            // tool_result pairing (§3.2).
            ("orphan tool_result", V23, user(json!([{"type":"tool_result","tool_use_id":"toolu_1"}])), vec![("messages.0.content.0.tool_use_id", "no matching tool_use in the preceding assistant turn")]),
            ("tool_result for another id", V23, round_trip(json!([{"type":"tool_result","tool_use_id":"toolu_1"},{"type":"tool_result","tool_use_id":"toolu_9"}])), vec![("messages.2.content.1.tool_use_id", "no matching tool_use in the preceding assistant turn")]),
            ("tool_result after text", V23, round_trip(json!([{"type":"text","text":"see"},{"type":"tool_result","tool_use_id":"toolu_1"}])), vec![("messages.2.content.1", "tool_result blocks must come first in the user turn")]),
            ("tool_result after text in the merged turn", V23, msgs(json!([
                {"role":"user","content":"q"},
                {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"w","input":{}}]},
                {"role":"user","content":"wait"},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1"}]}
            ])), vec![("messages.3.content.0", "tool_result blocks must come first in the user turn")]),
            ("missing tool_result", V23, msgs(json!([
                {"role":"user","content":"q"},
                {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"w","input":{}},{"type":"tool_use","id":"toolu_2","name":"w","input":{}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1"}]}
            ])), vec![("messages.2.content", "missing tool_result for tool_use id \"toolu_2\"")]),
            ("duplicate tool_result", V23, round_trip(json!([{"type":"tool_result","tool_use_id":"toolu_1"},{"type":"tool_result","tool_use_id":"toolu_1"}])), vec![("messages.2.content.1.tool_use_id", "duplicate tool_result for this tool_use id")]),
            ("duplicate tool_use id", V23, assistant(json!([{"type":"tool_use","id":"t1","name":"w","input":{}},{"type":"tool_use","id":"t1","name":"w","input":{}}])), vec![("messages.1.content.1.id", "duplicate tool_use id")]),
            ("result answers only the previous turn", V23, msgs(json!([
                {"role":"user","content":"q"},
                {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"w","input":{}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1"}]},
                {"role":"assistant","content":"ok"},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1"}]}
            ])), vec![("messages.4.content.0.tool_use_id", "no matching tool_use in the preceding assistant turn")]),
            // cache_control (§3.3).
            ("fifth breakpoint", V23, body(json!({
                "tools":[{"name":"a","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}],
                "system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}},{"type":"text","text":"t","cache_control":{"type":"ephemeral","ttl":"1h"}}],
                "messages":[{"role":"user","content":[
                    {"type":"text","text":"a","cache_control":{"type":"ephemeral"}},
                    {"type":"text","text":"b","cache_control":{"type":"ephemeral"}},
                    {"type":"text","text":"c","cache_control":{"type":"ephemeral"}}]}]
            })), vec![("messages.0.content.1.cache_control", "at most 4 cache_control breakpoints are allowed")]),
            ("block cache ttl", V23, user(json!([{"type":"text","text":"a","cache_control":{"type":"ephemeral","ttl":"2h"}}])), vec![("messages.0.content.0.cache_control.ttl", "must be one of 5m, 1h")]),
            ("tool cache type", V23, tools(json!([{"name":"a","input_schema":{"type":"object"},"cache_control":true}])), vec![("tools.0.cache_control", "must be an object")]),
            // Tools (§3.4).
            ("tools type", V23, tools(json!({})), vec![("tools", "must be an array")]),
            ("tool not object", V23, tools(json!(["w"])), vec![("tools.0", "must be an object")]),
            ("tool name chars", V23, tools(json!([weather("get weather")])), vec![("tools.0.name", "must match ^[a-zA-Z0-9_-]{1,128}$")]),
            ("tool name long", V23, tools(json!([weather(&repeat('a', 129))])), vec![("tools.0.name", "must match ^[a-zA-Z0-9_-]{1,128}$")]),
            ("tool name missing", V23, tools(json!([{"input_schema":{"type":"object"}}])), vec![("tools.0.name", "field required")]),
            ("tool name duplicate", V23, tools(json!([weather("a"), weather("b"), {"type":"custom","name":"a","input_schema":{"type":"object"}}])), vec![("tools.2.name", "duplicate tool name \"a\"")]),
            ("tool name reserved", V23, tools(json!([weather("gateway_datetime")])), vec![("tools.0.name", "names starting with gateway_ are reserved")]),
            ("input_schema missing", V23, tools(json!([{"name":"a"}])), vec![("tools.0.input_schema", "field required")]),
            ("input_schema type", V23, tools(json!([{"name":"a","input_schema":{"type":"array"}}])), vec![("tools.0.input_schema.type", "must be \"object\"")]),
            ("input_schema without type", V23, tools(json!([{"name":"a","input_schema":{"properties":{}}}])), vec![("tools.0.input_schema.type", "field required")]),
            ("tool description type", V23, tools(json!([{"name":"a","description":1,"input_schema":{"type":"object"}}])), vec![("tools.0.description", "must be a string")]),
            ("tool type unknown", V23, tools(json!([{"type":"function","name":"a"}])), vec![("tools.0.type", "unknown tool type \"function\"")]),
            ("tool type bad date", V23, tools(json!([{"type":"bash_2025","name":"bash"}])), vec![("tools.0.type", "unknown tool type \"bash_2025\"")]),
            ("versioned name clash", V23, tools(json!([weather("web_search"), {"type":"web_search_20250305","name":"web_search"}])), vec![("tools.1.name", "duplicate tool name \"web_search\"")]),
            ("web_search name", V23, tools(json!([{"type":"web_search_20250305","name":"search"}])), vec![("tools.0.name", "must be \"web_search\"")]),
            // Every problem is listed, in walk order.
            ("many problems", V23, r#"{"model":"","max_tokens":-1,"tools":[{"name":"a b","input_schema":{"type":"object"}}],"messages":[{"role":"bot","content":"x"},{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/tiff","data":""}}]}],"top_k":0,"session_id":""}"#.to_string(),
                vec![("model", "must be 1..256 characters"), ("max_tokens", "must be an integer >= 1"), ("tools.0.name", "must match ^[a-zA-Z0-9_-]{1,128}$"), ("messages.0.role", "must be one of user, assistant, system"), ("messages.1.content.0.source.media_type", "must be one of image/jpeg, image/png, image/gif, image/webp"), ("top_k", "must be an integer >= 1"), ("session_id", "must be 1..256 characters")]),
        ];
        assert!(cases.len() >= 60, "{} cases", cases.len());
        let mut failures = Vec::new();
        for (name, version, body, want) in &cases {
            let got = run(body, *version).err().unwrap_or_default();
            let got: Vec<(&str, &str)> = got
                .iter()
                .map(|d| (d.param.as_str(), d.reason.as_str()))
                .collect();
            if &got != want {
                failures.push(format!(
                    "{name}: got {got:?}\n  want {want:?}\n  body {body}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn valid_requests_pass() {
        #[rustfmt::skip]
        let cases: Vec<(&str, ApiVersion, String)> = vec![
            ("minimal", V23, body(json!({}))),
            ("nulls are absent", V23, body(json!({"system":Value::Null}))),
            ("every optional field", V23, r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}],
                "system":"be brief","stream":null,"stop_sequences":["END"],"temperature":0,"top_p":1,"top_k":1,
                "metadata":{"user_id":null},"thinking":{"type":"enabled","budget_tokens":1024,"display":"summarized"},
                "service_tier":"standard_only","cache_control":{"type":"ephemeral","ttl":"1h"},"container":"cntr_1",
                "mcp_servers":[{"type":"url","url":"https://mcp.example","name":"x"}],"output_config":{"format":{"type":"json_schema"}},
                "inference_geo":"us","context_management":null,"tool_choice":null,"tools":null}"#.to_string()),
            ("disabled thinking, object container", V23, body(json!({"thinking":{"type":"disabled"},"container":{"id":"c"}}))),
            ("extensions routing validates", V23, body(json!({"provider":{"order":["x"],"sort":"price"},"routing":{"allow_fallbacks":false},"provider_options":{"openai":{"seed":1},"anthropic":{}},"prompt_cache_retention":"24h","web_search_options":{},"session_id":"s-1","debug":{"enabled":true,"trace":false,"return_upstream_request":true,"return_upstream_response":false}}))),
            ("unknown top-level key is strictness", V23, body(json!({"frobnicate":true}))),
            ("final assistant prefill may be empty", V23, msgs(json!([{"role":"user","content":"a"},{"role":"assistant","content":""}]))),
            ("consecutive same-role messages", V23, msgs(json!([{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"assistant","content":"c"},{"role":"assistant","content":"d"}]))),
            ("user blocks", V23, user(json!([
                {"type":"text","text":"t","citations":null,"future_key":1},
                {"type":"image","source":{"type":"base64","media_type":"image/webp","data":"AA"}},
                {"type":"image","source":{"type":"url","url":"https://x/y.png"}},
                {"type":"image","source":{"type":"file","file_id":"file_1"}},
                {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"AA"},"title":"T","context":"c","citations":{"enabled":true}},
                {"type":"document","source":{"type":"text","media_type":"text/plain","data":"d"}},
                {"type":"document","source":{"type":"content","content":[{"type":"text","text":"x"},{"type":"image","source":{"type":"url","url":"u"}}]}},
                {"type":"document","source":{"type":"content","content":"plain"}},
                {"type":"search_result","source":"https://s","title":"S","content":[{"type":"text","text":"r"}],"citations":{"enabled":false}}
            ]))),
            ("assistant blocks", V23, assistant(json!([
                {"type":"thinking","thinking":"hm","signature":"sig"},
                {"type":"redacted_thinking","data":"opaque"},
                {"type":"text","text":"t","citations":[{"type":"web_search_result_location","url":"u"}]},
                {"type":"server_tool_use","id":"srvtoolu_01WYG3ziw53XMcoyKL4XcZmE","name":"web_search","input":{"query":"q"}},
                {"type":"web_search_tool_result","tool_use_id":"srvtoolu_01WYG3ziw53XMcoyKL4XcZmE","content":{"type":"web_search_tool_result_error","error_code":"unavailable"}},
                {"type":"server_tool_use","id":"srvtoolu_gw_abc","name":"datetime","input":{}},
                {"type":"datetime_tool_result","tool_use_id":"srvtoolu_gw_abc","content":{"times":[]}},
                {"type":"web_fetch_tool_result","tool_use_id":"srvtoolu_2","content":{"type":"web_fetch_result"}},
                {"type":"advisor_tool_result","tool_use_id":"srvtoolu_3","content":"advice"},
                {"type":"image_generation_tool_result","tool_use_id":"srvtoolu_4","content":[]},
                {"type":"code_execution_tool_result","tool_use_id":"srvtoolu_5","content":{}},
                {"type":"bash_code_execution_tool_result"},{"type":"text_editor_code_execution_tool_result"},
                {"type":"tool_search_tool_result"},{"type":"container_upload","file_id":"f"},
                {"type":"mcp_tool_use","id":"mcptoolu_1"},{"type":"mcp_tool_result","tool_use_id":"mcptoolu_1"}
            ]))),
            // The paused server tool call is the final assistant message, with no result yet (§7.4).
            ("pause_turn continuation", V23, assistant(json!([{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}]))),
            ("tool round trip", V23, msgs(json!([
                {"role":"user","content":"q"},
                {"role":"assistant","content":[{"type":"text","text":"calling"},{"type":"tool_use","id":"toolu_1","name":"w","input":{}}]},
                {"role":"assistant","content":[{"type":"tool_use","id":"toolu-2","name":"w","input":{}}]},
                {"role":"system","content":"results follow"},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu-2","content":"r2"}]},
                {"role":"user","content":[
                    {"type":"tool_result","tool_use_id":"toolu_1","is_error":true,"content":[
                        {"type":"text","text":"x"},{"type":"image","source":{"type":"url","url":"u"}},
                        {"type":"search_result","source":"s","title":"t","content":[]},
                        {"type":"document","source":{"type":"url","url":"u"}},{"type":"tool_reference","tool_name":"w"}]},
                    {"type":"text","text":"and now?"}]},
                {"role":"assistant","content":[{"type":"tool_use","id":"toolu_3","name":"w","input":{}}]}
            ]))),
            ("tool_result may answer a server_tool_use", V23, msgs(json!([
                {"role":"user","content":"q"},
                {"role":"assistant","content":[{"type":"server_tool_use","id":"srvtoolu_gw_1","name":"datetime","input":{}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"srvtoolu_gw_1","content":"now"}]}
            ]))),
            ("four breakpoints", V23, body(json!({
                "tools":[{"name":"a","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}],
                "system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral","ttl":"5m"}}],
                "cache_control":{"type":"ephemeral"},
                "messages":[{"role":"user","content":[
                    {"type":"text","text":"a","cache_control":{"type":"ephemeral"}},
                    {"type":"text","text":"b","cache_control":null},
                    {"type":"text","text":"c","cache_control":{"type":"ephemeral"}}]}]
            }))),
            ("tool kinds", V23, body(json!({
                "tools":[
                    {"type":"custom","name":"a-1_B","input_schema":{"type":"object"},"strict":true,"eager_input_streaming":true,"input_examples":[{}],"allowed_callers":["direct"]},
                    {"type":"web_search_20250305","name":"web_search","max_uses":3,"blocked_domains":["ads.example"],"user_location":{"type":"approximate","city":"Lyon","country":"FR","timezone":"Europe/Paris"}},
                    {"type":"web_fetch_20250910","name":"web_fetch","allowed_domains":["example.org"],"citations":{"enabled":true},"max_content_tokens":1000},
                    {"type":"bash_20250124","name":"bash"},{"type":"code_execution_20250825","name":"code_execution"},
                    {"type":"text_editor_20250728","name":"str_replace_based_edit_tool"},{"type":"tool_search_tool_regex_20251119","name":"tool_search"},
                    {"type":"gateway:datetime"},{"type":"ai-stats:advisor","name":"reviewer","anything":1},{"type":"gateway:web_search","parameters":{"max_uses":2}}
                ],
                "tool_choice":{"type":"tool","name":"bash","disable_parallel_tool_use":true}
            }))),
            // 2023-06-01 leaves these to the upstream (§2.2 makes them errors from 2026-10-21 only).
            ("2023 sampling", V23, body(json!({"temperature":1.0,"top_p":0.9,"top_k":40}))),
            ("2023 assistant document", V23, assistant(json!([{"type":"document","source":{"type":"text","media_type":"text/plain","data":"d"}}]))),
            ("2023 user citations", V23, user(json!([{"type":"text","text":"t","citations":[{"type":"char_location"}]}]))),
            ("2026 empty citations", V26, user(json!([{"type":"text","text":"t","citations":[]}]))),
            ("2026 plain", V26, body(json!({"thinking":{"type":"adaptive"}}))),
        ];
        for (name, version, body) in &cases {
            if let Err(e) = run(body, *version) {
                panic!("{name}: {e:?}\n{body}");
            }
        }
    }

    /// What a current coding-agent CLI sends on every call (messages-api.md §3.1a).
    #[test]
    fn claude_code_style_request_is_clean() {
        let mut tools: Vec<Value> = [
            "Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "NotebookEdit", "WebFetch",
            "TodoWrite", "WebSearch", "mcp__ide__getDiagnostics",
        ]
        .iter()
        .map(|name| {
            json!({"name":name,"description":format!("The {name} tool"),"input_schema":{
                "$schema":"http://json-schema.org/draft-07/schema#","type":"object",
                "properties":{"x":{"type":"string"}},"required":["x"],"additionalProperties":false}})
        })
        .collect();
        tools[11]["defer_loading"] = json!(true);
        let body = json!({
            "model": "claude-sonnet-4-5-20250929",
            "max_tokens": 32000,
            "stream": true,
            "system": [
                {"type":"text","text":"x-anthropic-billing-header: cc_version=2.1"},
                {"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}},
                {"type":"text","text":"Instructions…","cache_control":{"type":"ephemeral","ttl":"1h"}}
            ],
            "messages": [
                {"role":"user","content":[{"type":"text","text":"<system-reminder>ctx</system-reminder>"},{"type":"text","text":"fix the bug"}]},
                {"role":"system","content":[{"type":"text","text":"The user's environment changed.","cache_control":{"type":"ephemeral"}}]},
                {"role":"assistant","content":[
                    {"type":"thinking","thinking":"","signature":"EqQBCkYIBxgCKkA"},
                    {"type":"text","text":"Reading the file."},
                    {"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"Read","input":{"x":"src/main.rs"}}]},
                {"role":"user","content":[
                    {"type":"tool_result","tool_use_id":"toolu_01A09q90qw90lq917835lq9","content":[{"type":"text","text":"fn main() {}"}]},
                    {"type":"text","text":"<system-reminder>todo list</system-reminder>","cache_control":{"type":"ephemeral"}}]}
            ],
            "tools": tools,
            "thinking": {"type":"adaptive","display":"omitted"},
            "context_management": {"edits":[{"type":"clear_thinking_20251015","keep":"all"}]},
            "output_config": {"effort":"high"},
            "metadata": {"user_id":"{\"device_id\":\"4f1c\",\"account_uuid\":\"\",\"session_id\":\"8e0b\"}"}
        });
        let req = run(&body.to_string(), V26).unwrap();
        assert_eq!(req.model, "claude-sonnet-4-5-20250929");
        assert_eq!(req.max_tokens, 32000);
        assert!(req.stream);
        assert_eq!(req.tools.len(), 12);
        assert_eq!(req.messages.len(), 4);
        assert!(req.unknown_fields.is_empty());
        assert!(run(&body.to_string(), V23).is_ok());
    }

    #[test]
    fn typed_views_are_filled() {
        let r = run(
            &body(json!({"system":"s","tools":[weather("w")],"tool_choice":"auto","zz":1})),
            V23,
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.max_tokens, 16);
        assert!(!r.stream);
        assert_eq!(r.system, Some(json!("s")));
        assert_eq!(r.tool_choice, Some(json!("auto")));
        assert_eq!(r.messages, vec![json!({"role":"user","content":"hi"})]);
        assert_eq!(r.unknown_fields, ["zz"]);
    }

    #[test]
    fn extensions_are_typed() {
        let r = run(&body(json!({})), V23).unwrap();
        assert_eq!(r.extensions, Extensions::default());
        let r = run(
            &body(json!({
                "session_id":"s-1",
                "debug":{"enabled":false,"return_upstream_response":true},
                "provider":{"order":["a"],"sort":"latency"},"routing":{"allow_fallbacks":false},
                "provider_options":{"openai":{"seed":1}}
            })),
            V23,
        )
        .unwrap();
        let ext = &r.extensions;
        assert_eq!(ext.session_id.as_deref(), Some("s-1"));
        assert_eq!(
            ext.debug,
            Some(DebugFlags {
                upstream_request: false,
                upstream_response: true,
                trace: false
            })
        );
        assert_eq!(ext.routing.order, ["a"]);
        assert!(!ext.routing.allow_fallbacks);
        assert_eq!(ext.routing.source, "routing");
        assert_eq!(
            ext.provider_options.openai,
            json!({"seed":1}).as_object().cloned()
        );
        assert_eq!(ext.provider_options.anthropic, None);
        // Only true flags turn debug on; `enabled: true` alone asks for no extras.
        let debug = |d: Value| {
            run(&body(json!({ "debug": d })), V23)
                .unwrap()
                .extensions
                .debug
        };
        assert_eq!(debug(json!({"enabled":false,"trace":false})), None);
        assert_eq!(debug(json!({"enabled":true})), Some(DebugFlags::default()));
        // The body's session id is read on its own for refused requests, with the same rule.
        let id = |v: Value| {
            session_id(&parse_fields(body(json!({ "session_id": v })).as_bytes()).unwrap())
        };
        assert_eq!(id(json!("s")), Some("s".into()));
        assert_eq!(id(json!("")), None);
        assert_eq!(id(json!(repeat('x', 257))), None);
        assert_eq!(id(json!(7)), None);
    }

    #[test]
    fn count_tokens_bodies_ignore_max_tokens_and_stream() {
        let parse = |b: &str| validate_count_tokens(parse_fields(b.as_bytes()).unwrap(), V23);
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!((r.max_tokens, r.stream), (0, false));
        // Ignored even when invalid, and not forwarded.
        let r = parse(r#"{"model":"m","max_tokens":"x","stream":7,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert!(!r.has("max_tokens") && !r.has("stream"));
        let e = parse(r#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(e[0].param, "messages");
        let e = parse(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap_err();
        assert_eq!(e[0].param, "model");
    }

    #[test]
    fn all_problems_are_listed() {
        let e = run(r#"{"model":1,"max_tokens":0,"messages":[]}"#, V23).unwrap_err();
        let params: Vec<_> = e.iter().map(|d| d.param.as_str()).collect();
        assert_eq!(params, ["model", "max_tokens", "messages"]);
    }

    #[test]
    fn problems_are_capped() {
        let bad: Vec<Value> = (0..500)
            .map(|_| json!({"role":"bot","content":"x"}))
            .collect();
        let e = run(&msgs(Value::Array(bad)), V23).unwrap_err();
        assert_eq!(e.len(), MAX_DETAILS);
        assert_eq!(e[99].param, "messages.99.role");
    }

    #[test]
    fn quoted_values_are_cut() {
        let e = run(&user(json!([{"type": repeat('v', 1000)}])), V23).unwrap_err();
        assert_eq!(
            e[0].reason,
            format!("unknown content block type \"{}\"...", repeat('v', 64))
        );
    }

    #[test]
    fn patterns() {
        assert!(is_tool_id("toolu_01-aZ"));
        assert!(!is_tool_id("") && !is_tool_id("a.b") && !is_tool_id("é"));
        assert!(is_tool_name(&repeat('a', 128)) && !is_tool_name(&repeat('a', 129)));
        assert!(is_server_tool_id("srvtoolu_gw_A1"));
        assert!(!is_server_tool_id("srvtoolu_") && !is_server_tool_id("srvtoolu_a-b"));
        assert!(
            is_versioned_type("web_search_20250305")
                && is_versioned_type("tool_search_tool_bm25_20251119")
        );
        assert!(
            !is_versioned_type("web_search")
                && !is_versioned_type("_20250305")
                && !is_versioned_type("Bash_20250124")
        );
        assert!(char_len_in("éé", 2, 2) && !char_len_in("ééé", 1, 2) && !char_len_in("", 1, 2));
    }
}
