//! The bookkeeping of the gateway tool loop (gateway.md §6.1): what each round asks the upstream,
//! how an upstream turn splits into gateway calls (G) and client calls (C), `max_uses`, what the
//! client sees, and when the loop ends. Plain values only: the session actor does the I/O.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::ids;
use crate::protocol::anthropic::{ServerToolUse, Usage};
use crate::protocol::request::MessagesRequest;
use crate::tools::{replay, GatewayTool, ToolCall, ToolChoice, ToolOutcome, ToolSet};

/// One item of an upstream turn, in upstream order.
#[derive(Debug, Clone)]
pub enum Item {
    /// Text, thinking or any block the client sees as it came.
    Block(Value),
    /// A call of a gateway-run tool.
    Gateway(GatewayCall),
    /// A `tool_use` for the client to run.
    Client(Value),
}

#[derive(Debug, Clone)]
pub struct GatewayCall {
    /// The upstream's call id (the conversation keeps it).
    pub upstream_id: String,
    /// The client-visible id, `srvtoolu_gw_…`.
    pub id: String,
    pub tool: Arc<GatewayTool>,
    pub input: Value,
    /// Over the declaration's `max_uses`: answered `max_uses_exceeded`, not executed.
    pub over_limit: bool,
}

/// An upstream turn, split.
#[derive(Debug, Clone)]
pub struct Turn {
    pub items: Vec<Item>,
    /// The upstream blocks as they came, for the conversation.
    pub raw: Vec<Value>,
    pub stop_reason: String,
    pub stop_sequence: Option<String>,
}

impl Turn {
    pub fn gateway_calls(&self) -> impl Iterator<Item = &GatewayCall> {
        self.items.iter().filter_map(|i| match i {
            Item::Gateway(g) => Some(g),
            _ => None,
        })
    }

    pub fn has_client_calls(&self) -> bool {
        self.items.iter().any(|i| matches!(i, Item::Client(_)))
    }
}

/// What follows a settled turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Call the upstream again (the next round).
    Continue,
    /// The loop is over with this stop reason.
    Finish {
        stop_reason: String,
        stop_sequence: Option<String>,
    },
}

#[derive(Debug)]
pub struct ToolLoop {
    pub set: Arc<ToolSet>,
    choice: Option<ToolChoice>,
    pub round: u32,
    max_rounds: u32,
    /// Uses per declaration (by its upstream function name), in upstream call order.
    uses: HashMap<String, u32>,
    /// `usage.server_tool_use`: gateway counters plus a passthrough upstream's native ones.
    pub counters: ServerToolUse,
    /// Tokens of completed rounds and nested calls.
    pub usage: Usage,
    /// The upstream conversation from round 2 on (the deployment is fixed by then).
    conversation: Option<Vec<Value>>,
    /// Every block shown to the client so far, in order.
    pub content: Vec<Value>,
    /// The first round's message id and model: the client's message is that message.
    pub message_id: Option<String>,
    pub model: Option<String>,
}

impl ToolLoop {
    pub fn new(set: Arc<ToolSet>, choice: Option<ToolChoice>, max_rounds: u32) -> Self {
        Self {
            set,
            choice,
            round: 1,
            max_rounds,
            uses: HashMap::new(),
            counters: ServerToolUse::default(),
            usage: Usage::default(),
            conversation: None,
            content: Vec::new(),
            message_id: None,
            model: None,
        }
    }

    /// Whether the loop runs for a deployment with these native tools (else: plain passthrough).
    pub fn active_for(&self, native: &[String]) -> bool {
        self.set.has_gateway_run(native)
    }

    /// The replayed history for a deployment (gateway blocks rebuilt as plain tool turns).
    pub fn replay(&self, base: &MessagesRequest, native: &[String]) -> replay::Replay {
        replay::replay(&base.messages, &self.set, native)
    }

    /// The upstream request of the current round for a deployment.
    pub fn request(
        &self,
        base: &MessagesRequest,
        native: &[String],
        history: &replay::Replay,
    ) -> MessagesRequest {
        let mut req = base.clone();
        let messages = match &self.conversation {
            Some(c) => c.clone(),
            None => history.messages.clone(),
        };
        let mut tools = self.set.upstream_tools(&base.tools, native);
        tools.extend(history.extra_tools.iter().cloned());
        req.set_field("tools", &Value::Array(tools.clone()));
        req.tools = tools;
        if let Some(choice) = &self.choice {
            let c = choice.for_round(&self.set, native, self.round);
            req.set_field("tool_choice", &c);
            req.tool_choice = Some(c);
        }
        req.set_messages(messages);
        req
    }

    /// Splits an upstream turn: gateway calls get client ids and their `max_uses` verdict.
    pub fn split(
        &mut self,
        blocks: Vec<Value>,
        stop_reason: String,
        stop_sequence: Option<String>,
        native: &[String],
    ) -> Turn {
        let mut items = Vec::with_capacity(blocks.len());
        for b in &blocks {
            let name = b.get("name").and_then(Value::as_str);
            match (b.get("type").and_then(Value::as_str), name) {
                (Some("tool_use"), Some(name)) => match self.set.by_function_name(name, native) {
                    Some(tool) => {
                        let used = self.uses.entry(tool.function_name.clone()).or_insert(0);
                        *used += 1;
                        let over_limit = tool.max_uses.is_some_and(|m| *used > m);
                        items.push(Item::Gateway(GatewayCall {
                            upstream_id: b
                                .get("id")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            id: ids::gateway_tool_use_id(),
                            tool: tool.clone(),
                            input: b.get("input").cloned().unwrap_or_else(|| json!({})),
                            over_limit,
                        }));
                    }
                    None => items.push(Item::Client(b.clone())),
                },
                _ => items.push(Item::Block(b.clone())),
            }
        }
        Turn {
            items,
            raw: blocks,
            stop_reason,
            stop_sequence,
        }
    }

    /// The calls of a turn to execute, in upstream order.
    pub fn calls(turn: &Turn) -> Vec<ToolCall> {
        turn.gateway_calls()
            .filter(|g| !g.over_limit)
            .map(|g| ToolCall {
                id: g.id.clone(),
                tool: g.tool.clone(),
                input: g.input.clone(),
            })
            .collect()
    }

    /// Adds a round's (or nested call's) tokens.
    pub fn add_usage(&mut self, u: &Usage) {
        self.usage.add(u);
    }

    /// Closes a turn once its calls ran (`outcomes` in the order of [`ToolLoop::calls`]): returns
    /// the blocks the client sees for the turn (each `server_tool_use` followed by its result,
    /// client calls last) and what comes next. Continuing appends the assistant turn and the
    /// results to the upstream conversation.
    pub fn settle(
        &mut self,
        turn: Turn,
        mut outcomes: Vec<ToolOutcome>,
        history: &replay::Replay,
    ) -> (Vec<Value>, Next) {
        let finish = |turn: &Turn, reason: &str| Next::Finish {
            stop_reason: reason.to_string(),
            stop_sequence: turn.stop_sequence.clone(),
        };
        let tool_stop = turn.stop_reason == "tool_use";
        let mut shown = Vec::new();
        let mut clients = Vec::new();
        let mut results = Vec::new();
        let mut executed = outcomes.drain(..);
        for item in &turn.items {
            match item {
                Item::Block(b) => shown.push(b.clone()),
                Item::Client(b) => clients.push(b.clone()),
                // A turn that stopped for another reason leaves its gateway calls out.
                Item::Gateway(_) if !tool_stop => {}
                Item::Gateway(g) => {
                    let outcome = if g.over_limit {
                        ToolOutcome::max_uses_exceeded(g.tool.kind, &g.id)
                    } else {
                        executed
                            .next()
                            .unwrap_or_else(|| ToolOutcome::max_uses_exceeded(g.tool.kind, &g.id))
                    };
                    if outcome.counted {
                        g.tool.kind.count(&mut self.counters);
                    }
                    if let Some(u) = &outcome.usage {
                        self.usage.add(u);
                    }
                    shown.push(json!({"type": "server_tool_use", "id": g.id, "name": g.tool.server_name(), "input": g.input}));
                    shown.push(outcome.block.clone());
                    results.push(outcome.tool_result(&g.upstream_id));
                }
            }
        }
        let has_gateway = turn.gateway_calls().next().is_some();
        shown.extend(clients);
        self.content.extend(shown.iter().cloned());

        let next = if turn.stop_reason == "pause_turn" {
            // An upstream server-tool loop paused: resend its turn as it is (a round).
            if self.round >= self.max_rounds {
                finish(&turn, "pause_turn")
            } else {
                self.push_turn(history, turn.raw.clone(), None);
                Next::Continue
            }
        } else if !tool_stop || !has_gateway {
            finish(&turn, &turn.stop_reason)
        } else if turn.has_client_calls() {
            finish(&turn, "tool_use")
        } else if self.round >= self.max_rounds {
            finish(&turn, "pause_turn")
        } else {
            self.push_turn(history, turn.raw.clone(), Some(results));
            Next::Continue
        };
        if next == Next::Continue {
            self.round += 1;
        }
        (shown, next)
    }

    fn push_turn(
        &mut self,
        history: &replay::Replay,
        assistant: Vec<Value>,
        results: Option<Vec<Value>>,
    ) {
        let conversation = self
            .conversation
            .get_or_insert_with(|| history.messages.clone());
        conversation.push(json!({"role": "assistant", "content": assistant}));
        if let Some(results) = results {
            conversation.push(json!({"role": "user", "content": results}));
        }
    }

    /// Answers the trailing calls of a continuation (gateway.md §6.3): their results join the
    /// conversation as a user message, and the client sees the result blocks first.
    pub fn settle_pending(
        &mut self,
        history: &mut replay::Replay,
        done: Vec<(String, ToolOutcome)>,
    ) -> Vec<Value> {
        let mut shown = Vec::new();
        let mut results = Vec::new();
        for (upstream_id, outcome) in done {
            if outcome.counted {
                outcome.kind.count(&mut self.counters);
            }
            if let Some(u) = &outcome.usage {
                self.usage.add(u);
            }
            shown.push(outcome.block.clone());
            results.push(outcome.tool_result(&upstream_id));
        }
        if !results.is_empty() {
            history
                .messages
                .push(json!({"role": "user", "content": results}));
        }
        self.content.extend(shown.iter().cloned());
        shown
    }

    /// `max_uses` for a continuation's trailing call, which counts like any other.
    pub fn take_use(&mut self, tool: &GatewayTool) -> bool {
        let used = self.uses.entry(tool.function_name.clone()).or_insert(0);
        *used += 1;
        tool.max_uses.is_none_or(|m| *used <= m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ToolsConfig;
    use crate::protocol::request::parse_fields;
    use crate::protocol::validate::{validate, ApiVersion};
    use crate::tools::{ModelAccess, ToolKind};

    fn setup(tools: Value, max_rounds: u32) -> (ToolLoop, MessagesRequest) {
        let body = json!({"model":"m","max_tokens":100,"tools":tools,"messages":[{"role":"user","content":"what time is it?"}]});
        let req = validate(
            parse_fields(body.to_string().as_bytes()).unwrap(),
            ApiVersion::V2023_06_01,
        )
        .unwrap();
        let set = ToolSet::declare(&req.tools, &ToolsConfig::default(), &|_| {
            ModelAccess::Allowed
        })
        .unwrap();
        (ToolLoop::new(Arc::new(set), None, max_rounds), req)
    }

    fn call(id: &str, name: &str, input: Value) -> Value {
        json!({"type":"tool_use","id":id,"name":name,"input":input})
    }

    fn outcome(kind: ToolKind, id: &str) -> ToolOutcome {
        ToolOutcome::success(
            kind,
            id,
            json!({"type":"datetime_result","times":[]}),
            "{\"times\":[]}".into(),
        )
    }

    #[test]
    fn gateway_calls_run_and_the_loop_continues_with_the_results() {
        let (mut lp, req) = setup(json!([{"type":"gateway:datetime"}]), 10);
        let history = lp.replay(&req, &[]);
        let up = lp.request(&req, &[], &history);
        assert_eq!(up.tools[0]["name"], "gateway_datetime");
        let turn = lp.split(
            vec![
                json!({"type":"text","text":"Let me check."}),
                call("toolu_1", "gateway_datetime", json!({"timezones":["UTC"]})),
            ],
            "tool_use".into(),
            None,
            &[],
        );
        let calls = ToolLoop::calls(&turn);
        assert_eq!(calls.len(), 1);
        assert!(calls[0].id.starts_with("srvtoolu_gw_"));
        let id = calls[0].id.clone();
        let (shown, next) = lp.settle(turn, vec![outcome(ToolKind::Datetime, &id)], &history);
        assert_eq!(next, Next::Continue);
        assert_eq!(shown[0]["type"], "text");
        assert_eq!(
            shown[1],
            json!({"type":"server_tool_use","id":id,"name":"datetime","input":{"timezones":["UTC"]}})
        );
        assert_eq!(shown[2]["type"], "datetime_tool_result");
        assert_eq!(shown[2]["tool_use_id"], json!(id));
        assert_eq!(lp.counters.datetime_requests, 1);
        assert_eq!(lp.round, 2);
        // Round 2 carries the assistant turn (upstream ids) and the results.
        let up = lp.request(&req, &[], &history);
        assert_eq!(up.messages.len(), 3);
        assert_eq!(up.messages[1]["content"][1]["id"], "toolu_1");
        assert_eq!(up.messages[2]["content"][0]["tool_use_id"], "toolu_1");
        assert_eq!(up.messages[2]["content"][0]["type"], "tool_result");
        let raw: Value = serde_json::from_str(up.field("messages").unwrap().get()).unwrap();
        assert_eq!(
            raw.as_array().unwrap().len(),
            3,
            "the raw field follows the parsed view"
        );
    }

    #[test]
    fn client_calls_go_last_and_end_the_loop() {
        let (mut lp, req) = setup(
            json!([{"type":"gateway:datetime"},{"name":"get_weather","input_schema":{"type":"object"}}]),
            10,
        );
        let history = lp.replay(&req, &[]);
        let turn = lp.split(
            vec![
                call("c1", "get_weather", json!({})),
                call("g1", "gateway_datetime", json!({})),
            ],
            "tool_use".into(),
            None,
            &[],
        );
        let id = ToolLoop::calls(&turn)[0].id.clone();
        let (shown, next) = lp.settle(turn, vec![outcome(ToolKind::Datetime, &id)], &history);
        let types: Vec<&str> = shown.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["server_tool_use", "datetime_tool_result", "tool_use"]
        );
        assert_eq!(
            next,
            Next::Finish {
                stop_reason: "tool_use".into(),
                stop_sequence: None
            }
        );
    }

    #[test]
    fn max_uses_and_max_rounds() {
        let (mut lp, req) = setup(json!([{"type":"gateway:datetime","max_uses":1}]), 2);
        let history = lp.replay(&req, &[]);
        let turn = lp.split(
            vec![
                call("a", "gateway_datetime", json!({})),
                call("b", "gateway_datetime", json!({})),
            ],
            "tool_use".into(),
            None,
            &[],
        );
        let calls = ToolLoop::calls(&turn);
        assert_eq!(calls.len(), 1, "the second call is over max_uses");
        let (shown, next) = lp.settle(
            turn,
            vec![outcome(ToolKind::Datetime, &calls[0].id)],
            &history,
        );
        assert_eq!(shown[3]["content"]["error_code"], "max_uses_exceeded");
        assert_eq!(lp.counters.datetime_requests, 1);
        assert_eq!(next, Next::Continue);
        // Round 2 = max_rounds: its calls are answered, then pause_turn.
        let turn = lp.split(
            vec![call("c", "gateway_datetime", json!({}))],
            "tool_use".into(),
            None,
            &[],
        );
        assert!(ToolLoop::calls(&turn).is_empty());
        let (shown, next) = lp.settle(turn, vec![], &history);
        assert_eq!(shown.len(), 2);
        assert_eq!(
            next,
            Next::Finish {
                stop_reason: "pause_turn".into(),
                stop_sequence: None
            }
        );
    }

    #[test]
    fn a_non_tool_stop_leaves_gateway_calls_out() {
        let (mut lp, req) = setup(json!([{"type":"gateway:datetime"}]), 10);
        let history = lp.replay(&req, &[]);
        let turn = lp.split(
            vec![
                json!({"type":"text","text":"partial"}),
                call("a", "gateway_datetime", json!({})),
            ],
            "max_tokens".into(),
            None,
            &[],
        );
        let (shown, next) = lp.settle(turn, vec![], &history);
        assert_eq!(shown, vec![json!({"type":"text","text":"partial"})]);
        assert_eq!(
            next,
            Next::Finish {
                stop_reason: "max_tokens".into(),
                stop_sequence: None
            }
        );
        assert_eq!(lp.counters, ServerToolUse::default());
    }
}
