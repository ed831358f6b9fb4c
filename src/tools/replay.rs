//! History replay (gateway.md §5.3, §6.3): gateway blocks a client sends back are rebuilt as
//! plain `tool_use` / `tool_result` turns, so a conversation can continue on any upstream.
//! Pure code.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};

use super::actor::ToolCall;
use super::declare::{GatewayTool, ToolSet};
use super::{model_view, tool_result_block, ToolErrorCode, ToolKind, ToolOutcome};

/// A trailing `server_tool_use` without a result (§6.3): the session executes it before the
/// upstream call and appends a user message with its [`super::ToolOutcome::tool_result`]
/// (the `tool_use` with id `id` already ends the replayed history).
#[derive(Debug, Clone)]
pub struct PendingCall {
    pub id: String,
    pub kind: ToolKind,
    /// `None` when the kind cannot run (an undeclared advisor with no default model): answer it
    /// with an `unavailable` outcome.
    pub tool: Option<Arc<GatewayTool>>,
    pub input: Value,
}

impl PendingCall {
    /// The call to execute, or (for a kind that cannot run) its `unavailable` outcome.
    pub fn to_call(&self) -> Result<ToolCall, Box<ToolOutcome>> {
        match &self.tool {
            Some(tool) => Ok(ToolCall {
                id: self.id.clone(),
                tool: tool.clone(),
                input: self.input.clone(),
            }),
            None => Err(Box::new(ToolOutcome::error(
                self.kind,
                &self.id,
                ToolErrorCode::Unavailable,
                "this tool is not available in this request",
            ))),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub messages: Vec<Value>,
    /// Function definitions to append to the upstream `tools`: gateway tools that appear in
    /// history but are not gateway-run tools of this request on this deployment.
    pub extra_tools: Vec<Value>,
    pub pending: Vec<PendingCall>,
}

const GATEWAY_ID_PREFIX: &str = "srvtoolu_gw_";

/// The tool kind of a `server_tool_use` block this deployment cannot take as is.
fn convertible_use(block: &Value, native: &[String]) -> Option<ToolKind> {
    if block.get("type")?.as_str()? != "server_tool_use" {
        return None;
    }
    let id = block.get("id")?.as_str()?;
    let kind = ToolKind::from_server_name(block.get("name")?.as_str()?)?;
    if id.starts_with(GATEWAY_ID_PREFIX) {
        return Some(kind);
    }
    let nativeable = matches!(kind, ToolKind::WebSearch | ToolKind::WebFetch);
    (nativeable && !native.iter().any(|n| n == kind.server_name())).then_some(kind)
}

/// A result block that belongs to a convertible call (by its `tool_use_id`).
fn convertible_result<'a>(block: &'a Value, native: &[String]) -> Option<(ToolKind, &'a str)> {
    let kind = ToolKind::from_result_type(block.get("type")?.as_str()?)?;
    let id = block.get("tool_use_id")?.as_str()?;
    if id.starts_with(GATEWAY_ID_PREFIX) {
        return Some((kind, id));
    }
    let nativeable = matches!(kind, ToolKind::WebSearch | ToolKind::WebFetch);
    (nativeable && !native.iter().any(|n| n == kind.server_name())).then_some((kind, id))
}

struct Out {
    messages: Vec<(Value, bool)>,
    used_tools: Vec<(String, Value)>,
}

impl Out {
    fn push(&mut self, role: &str, content: Vec<Value>, generated: bool) {
        self.messages
            .push((json!({"role": role, "content": content}), generated));
    }
}

/// Rebuilds `messages` for a deployment whose provider runs `native` itself.
pub fn replay(messages: &[Value], set: &ToolSet, native: &[String]) -> Replay {
    let mut out = Out {
        messages: Vec::with_capacity(messages.len()),
        used_tools: Vec::new(),
    };
    let mut pending = Vec::new();
    let last = messages.len().saturating_sub(1);

    for (mi, msg) in messages.iter().enumerate() {
        let blocks = match (msg.get("role").and_then(Value::as_str), msg.get("content")) {
            (Some("assistant"), Some(Value::Array(blocks)))
                if blocks.iter().any(|b| {
                    convertible_use(b, native).is_some() || convertible_result(b, native).is_some()
                }) =>
            {
                blocks
            }
            _ => {
                out.messages.push((msg.clone(), false));
                continue;
            }
        };
        let results: HashMap<&str, usize> = blocks
            .iter()
            .enumerate()
            .filter_map(|(i, b)| convertible_result(b, native).map(|(_, id)| (id, i)))
            .collect();
        let has_result = |b: &Value| {
            b.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| results.contains_key(id))
        };
        // Calls from here on have no result: at the end of the last message they are pending.
        let trailing_from = if mi == last {
            blocks
                .iter()
                .rposition(|b| convertible_use(b, native).is_none() || has_result(b))
                .map_or(0, |i| i + 1)
        } else {
            blocks.len()
        };
        let converted_native = blocks.iter().any(|b| {
            convertible_use(b, native).is_some()
                && !b["id"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(GATEWAY_ID_PREFIX)
        });

        let mut current: Vec<Value> = Vec::new();
        let mut uses: Vec<Value> = Vec::new();
        let mut results_out: Vec<Value> = Vec::new();
        let mut consumed: HashSet<usize> = HashSet::new();
        let flush = |out: &mut Out,
                     current: &mut Vec<Value>,
                     uses: &mut Vec<Value>,
                     results_out: &mut Vec<Value>| {
            if uses.is_empty() {
                return;
            }
            current.append(uses);
            out.push("assistant", std::mem::take(current), true);
            out.push("user", std::mem::take(results_out), true);
        };

        for (i, b) in blocks.iter().enumerate() {
            if consumed.contains(&i) {
                continue;
            }
            if let Some(kind) = convertible_use(b, native) {
                let id = b["id"].as_str().unwrap_or_default();
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                if let Some(&j) = results.get(id) {
                    consumed.insert(j);
                    let result = &blocks[j];
                    let advisor = result["content"]["advisor"].as_str();
                    let name = note_tool(&mut out, set, kind, advisor);
                    uses.push(json!({"type":"tool_use","id":id,"name":name,"input":input}));
                    let (content, is_error) = model_view(result).unwrap_or_else(|| {
                        let code = ToolErrorCode::Unavailable;
                        (
                            super::error_model_content(code, code.default_message()),
                            true,
                        )
                    });
                    results_out.push(tool_result_block(id, &content, is_error));
                } else if i >= trailing_from {
                    flush(&mut out, &mut current, &mut uses, &mut results_out);
                    let name = note_tool(&mut out, set, kind, None);
                    current.push(json!({"type":"tool_use","id":id,"name":name,"input":input}));
                    pending.push(PendingCall {
                        id: id.to_string(),
                        kind,
                        tool: set.for_history(kind, None).cloned(),
                        input,
                    });
                }
                // A call with no result mid-history cannot be replayed: it is left out.
                continue;
            }
            if convertible_result(b, native).is_some() {
                // A result without its call: left out.
                continue;
            }
            flush(&mut out, &mut current, &mut uses, &mut results_out);
            let mut b = b.clone();
            if converted_native && b["type"] == "text" {
                // Citations point into native search results that are no longer there.
                if let Some(o) = b.as_object_mut() {
                    o.remove("citations");
                }
            }
            current.push(b);
        }
        flush(&mut out, &mut current, &mut uses, &mut results_out);
        if !current.is_empty() {
            out.push("assistant", current, true);
        }
    }

    let run: HashSet<&str> = set
        .gateway_run(native)
        .map(|t| t.function_name.as_str())
        .collect();
    let mut added = HashSet::new();
    let extra_tools = out
        .used_tools
        .iter()
        .filter(|(name, _)| !run.contains(name.as_str()) && added.insert(name.clone()))
        .map(|(_, def)| def.clone())
        .collect();
    Replay {
        messages: merge_generated(out.messages),
        extra_tools,
        pending,
    }
}

/// The function name a history call of `kind` is replayed under, noting its definition.
fn note_tool(out: &mut Out, set: &ToolSet, kind: ToolKind, advisor: Option<&str>) -> String {
    let (name, def) = match set.for_history(kind, advisor) {
        Some(t) => {
            let mut def = t.definition.clone();
            if let Some(o) = def.as_object_mut() {
                o.remove("cache_control");
            }
            (t.function_name.clone(), def)
        }
        None => {
            let name = kind.function_name().to_string();
            let def = json!({"name": name, "description": format!("The gateway's {} tool.", kind.server_name()),
                             "input_schema": {"type":"object"}});
            (name, def)
        }
    };
    if !out.used_tools.iter().any(|(n, _)| *n == name) {
        out.used_tools.push((name.clone(), def));
    }
    name
}

/// Joins consecutive messages of one role when one of them was produced by the conversion, so
/// roles still alternate where they did before.
fn merge_generated(messages: Vec<(Value, bool)>) -> Vec<Value> {
    let mut merged: Vec<(Value, bool)> = Vec::with_capacity(messages.len());
    for (msg, generated) in messages {
        if let Some((prev, prev_generated)) = merged.last_mut() {
            if (*prev_generated || generated) && prev["role"] == msg["role"] {
                let mut blocks = content_blocks(&prev["content"]);
                blocks.extend(content_blocks(&msg["content"]));
                prev["content"] = Value::Array(blocks);
                *prev_generated = true;
                continue;
            }
        }
        merged.push((msg, generated));
    }
    merged.into_iter().map(|(m, _)| m).collect()
}

fn content_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::Array(b) => b.clone(),
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![json!({"type":"text","text":s})],
        _ => Vec::new(),
    }
}

/// The conversation's text as `web_fetch` checks it with `require_url_in_context`: every string
/// in `system` and `messages` except opaque payloads (base64 data, signatures, encrypted content).
pub fn prior_context_text(system: Option<&Value>, messages: &[Value]) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => {
                for (k, v) in map {
                    if !matches!(
                        k.as_str(),
                        "data" | "signature" | "encrypted_content" | "encrypted_index"
                    ) {
                        walk(v, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    if let Some(s) = system {
        walk(s, &mut out);
    }
    for m in messages {
        walk(m, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ToolsConfig;
    use crate::tools::ModelAccess;

    fn set(tools: &[Value]) -> ToolSet {
        let mut config = ToolsConfig::default();
        config.advisor.default_model = Some("adv".into());
        ToolSet::declare(tools, &config, &|_| ModelAccess::Allowed).unwrap()
    }

    fn search_item(url: &str, title: &str, content: &str) -> Value {
        crate::tools::web_search::SearchHit {
            url: url.into(),
            title: title.into(),
            page_age: Some("July 8, 2026".into()),
            content: content.into(),
        }
        .result_item()
    }

    #[test]
    fn pairs_become_tool_turns_in_order() {
        let msgs = vec![
            json!({"role":"user","content":"what time is it, and search"}),
            json!({"role":"assistant","content":[
                {"type":"text","text":"Let me check."},
                {"type":"server_tool_use","id":"srvtoolu_gw_A","name":"datetime","input":{}},
                {"type":"datetime_tool_result","tool_use_id":"srvtoolu_gw_A","content":{"type":"datetime_result",
                    "times":[{"timezone":"UTC","datetime":"2026-07-09T15:27:12+00:00","weekday":"Thursday"}]}},
                {"type":"server_tool_use","id":"srvtoolu_gw_B","name":"web_search","input":{"query":"lyon"}},
                {"type":"web_search_tool_result","tool_use_id":"srvtoolu_gw_B","content":[search_item("https://ex.org/a","A","alpha text")]},
                {"type":"text","text":"Done."},
                {"type":"server_tool_use","id":"srvtoolu_gw_C","name":"web_fetch","input":{"url":"https://ex.org/a"}},
                {"type":"web_fetch_tool_result","tool_use_id":"srvtoolu_gw_C","content":{"type":"web_fetch_tool_result_error","error_code":"url_not_accessible"}}
            ]}),
            json!({"role":"user","content":"thanks"}),
        ];
        let s = set(&[
            json!({"type":"gateway:datetime"}),
            json!({"type":"gateway:web_search"}),
        ]);
        let r = replay(&msgs, &s, &[]);
        assert_eq!(
            r.messages.len(),
            5,
            "{:#}",
            Value::Array(r.messages.clone())
        );
        let m = &r.messages;
        assert_eq!(m[1]["role"], "assistant");
        assert_eq!(m[1]["content"][0]["text"], "Let me check.");
        assert_eq!(
            m[1]["content"][1],
            json!({"type":"tool_use","id":"srvtoolu_gw_A","name":"gateway_datetime","input":{}})
        );
        assert_eq!(m[1]["content"][2]["name"], "gateway_web_search");
        assert_eq!(m[2]["role"], "user");
        assert_eq!(m[2]["content"][0]["tool_use_id"], "srvtoolu_gw_A");
        let times: Value =
            serde_json::from_str(m[2]["content"][0]["content"].as_str().unwrap()).unwrap();
        assert_eq!(times["times"][0]["weekday"], "Thursday");
        let results: Value =
            serde_json::from_str(m[2]["content"][1]["content"].as_str().unwrap()).unwrap();
        assert_eq!(
            results,
            json!({"results":[{"title":"A","url":"https://ex.org/a","page_age":"July 8, 2026","content":"alpha text"}]})
        );
        assert_eq!(m[3]["content"][0]["text"], "Done.");
        assert_eq!(m[3]["content"][1]["name"], "gateway_web_fetch");
        // The fetch error result and the user's next message merge into one user turn.
        assert_eq!(m[4]["role"], "user");
        assert_eq!(m[4]["content"][0]["is_error"], true);
        let err: Value =
            serde_json::from_str(m[4]["content"][0]["content"].as_str().unwrap()).unwrap();
        assert_eq!(err["error"], "url_not_accessible");
        assert_eq!(m[4]["content"][1], json!({"type":"text","text":"thanks"}));
        // web_fetch is not declared: its default definition is added.
        assert_eq!(r.extra_tools.len(), 1);
        assert_eq!(r.extra_tools[0]["name"], "gateway_web_fetch");
        assert!(r.pending.is_empty());
    }

    #[test]
    fn native_blocks_pass_to_native_providers_and_convert_elsewhere() {
        let msgs = vec![
            json!({"role":"user","content":"search"}),
            json!({"role":"assistant","content":[
                {"type":"server_tool_use","id":"srvtoolu_01X","name":"web_search","input":{"query":"q"}},
                {"type":"web_search_tool_result","tool_use_id":"srvtoolu_01X","content":[
                    {"type":"web_search_result","url":"https://ex.org","title":"Ex","encrypted_content":"EqgfCioIARgB","page_age":null}]},
                {"type":"text","text":"Found.","citations":[{"type":"web_search_result_location","url":"https://ex.org","title":"Ex","encrypted_index":"x","cited_text":"c"}]}
            ]}),
        ];
        let tools = [json!({"type":"web_search_20250305","name":"web_search"})];
        let s = set(&tools);
        let native = ["web_search".to_string()];
        let r = replay(&msgs, &s, &native);
        assert_eq!(r.messages, msgs);
        assert!(r.extra_tools.is_empty());

        let r = replay(&msgs, &s, &[]);
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[1]["content"][0]["name"], "gateway_web_search");
        let results: Value =
            serde_json::from_str(r.messages[2]["content"][0]["content"].as_str().unwrap()).unwrap();
        assert_eq!(
            results,
            json!({"results":[{"title":"Ex","url":"https://ex.org"}]})
        );
        assert_eq!(
            r.messages[3],
            json!({"role":"assistant","content":[{"type":"text","text":"Found."}]})
        );
        assert!(
            r.extra_tools.is_empty(),
            "declared and gateway-run: no extra definition"
        );
    }

    #[test]
    fn gateway_blocks_are_converted_even_for_native_providers() {
        let msgs = vec![
            json!({"role":"user","content":"q"}),
            json!({"role":"assistant","content":[
                {"type":"server_tool_use","id":"srvtoolu_gw_1","name":"web_search","input":{"query":"q"}},
                {"type":"web_search_tool_result","tool_use_id":"srvtoolu_gw_1","content":[]}
            ]}),
        ];
        let s = set(&[json!({"type":"web_search_20250305","name":"web_search"})]);
        let r = replay(&msgs, &s, &["web_search".to_string()]);
        assert_eq!(r.messages[1]["content"][0]["type"], "tool_use");
        assert_eq!(r.messages[2]["content"][0]["content"], "{\"results\":[]}");
        // The deployment runs web_search natively, so the function needs its definition.
        assert_eq!(r.extra_tools[0]["name"], "gateway_web_search");
    }

    #[test]
    fn trailing_calls_are_pending() {
        let msgs = vec![
            json!({"role":"user","content":"time?"}),
            json!({"role":"assistant","content":[
                {"type":"server_tool_use","id":"srvtoolu_gw_1","name":"datetime","input":{}},
                {"type":"datetime_tool_result","tool_use_id":"srvtoolu_gw_1","content":{"type":"datetime_result","times":[]}},
                {"type":"text","text":"more"},
                {"type":"server_tool_use","id":"srvtoolu_gw_2","name":"datetime","input":{"timezones":["Asia/Tokyo"]}},
                {"type":"server_tool_use","id":"srvtoolu_gw_3","name":"advisor","input":{"prompt":"p"}}
            ]}),
        ];
        let s = set(&[json!({"type":"gateway:datetime"})]);
        let r = replay(&msgs, &s, &[]);
        assert_eq!(r.pending.len(), 2);
        assert_eq!(r.pending[0].id, "srvtoolu_gw_2");
        assert_eq!(r.pending[0].input, json!({"timezones":["Asia/Tokyo"]}));
        assert_eq!(r.pending[1].kind, ToolKind::Advisor);
        assert!(
            r.pending[1].tool.is_some(),
            "default advisor model configured"
        );
        let last = r.messages.last().unwrap();
        assert_eq!(last["role"], "assistant");
        assert_eq!(last["content"][0]["text"], "more");
        assert_eq!(last["content"][1]["id"], "srvtoolu_gw_2");
        assert_eq!(last["content"][2]["name"], "gateway_advisor");
        assert_eq!(r.extra_tools.len(), 1);
    }

    #[test]
    fn unpaired_calls_mid_history_are_dropped() {
        let msgs = vec![
            json!({"role":"user","content":"a"}),
            json!({"role":"assistant","content":[
                {"type":"text","text":"x"},
                {"type":"server_tool_use","id":"srvtoolu_gw_1","name":"datetime","input":{}},
                {"type":"advisor_tool_result","tool_use_id":"srvtoolu_gw_9","content":{"type":"advisor_result","advisor":"a","model":"m","text":"t"}}
            ]}),
            json!({"role":"user","content":"b"}),
        ];
        let r = replay(&msgs, &set(&[]), &[]);
        assert_eq!(
            r.messages[1],
            json!({"role":"assistant","content":[{"type":"text","text":"x"}]})
        );
        assert!(r.pending.is_empty());
    }

    #[test]
    fn other_messages_are_untouched() {
        let msgs = vec![
            json!({"role":"user","content":"a"}),
            json!({"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"x","input":{}}]}),
            json!({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"r"}]}),
            json!({"role":"assistant","content":"plain"}),
            json!({"role":"user","content":"again"}),
        ];
        let r = replay(&msgs, &set(&[]), &[]);
        assert_eq!(r.messages, msgs);
        assert!(r.extra_tools.is_empty() && r.pending.is_empty());
    }

    #[test]
    fn advisor_results_keep_their_advisor() {
        let msgs = vec![
            json!({"role":"user","content":"a"}),
            json!({"role":"assistant","content":[
                {"type":"server_tool_use","id":"srvtoolu_gw_1","name":"advisor","input":{"prompt":"p"}},
                {"type":"advisor_tool_result","tool_use_id":"srvtoolu_gw_1","content":{"type":"advisor_result","advisor":"second","model":"m","text":"Check nulls."}},
                {"type":"server_tool_use","id":"srvtoolu_gw_2","name":"image_generation","input":{"prompt":"cat"}},
                {"type":"image_generation_tool_result","tool_use_id":"srvtoolu_gw_2","content":{"type":"image_generation_result","model":"gpt-image-1","revised_prompt":null,
                    "source":{"type":"base64","media_type":"image/png","data":"iVBOR"}}}
            ]}),
        ];
        let tools = [
            json!({"type":"gateway:advisor","name":"first","model":"m"}),
            json!({"type":"gateway:advisor","name":"second","model":"m"}),
        ];
        let r = replay(&msgs, &set(&tools), &[]);
        assert_eq!(
            r.messages[1]["content"][0]["name"],
            "gateway_advisor_second"
        );
        assert_eq!(r.messages[2]["content"][0]["content"], "Check nulls.");
        let img: Value =
            serde_json::from_str(r.messages[2]["content"][1]["content"].as_str().unwrap()).unwrap();
        assert_eq!(
            img,
            json!({"status":"ok","media_type":"image/png","note":"image shown to the user"})
        );
        assert_eq!(r.extra_tools[0]["name"], "gateway_image_generation");
    }

    #[test]
    fn prior_context_skips_opaque_payloads() {
        let msgs = vec![json!({"role":"user","content":[
            {"type":"text","text":"see https://ex.org/a"},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"https://hidden.example"}}
        ]})];
        let t = prior_context_text(Some(&json!("sys https://sys.example")), &msgs);
        assert!(t.contains("https://ex.org/a") && t.contains("https://sys.example"));
        assert!(!t.contains("hidden"));
    }
}
