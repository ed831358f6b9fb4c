//! Builds an assistant turn from Anthropic stream events, the way the SDK accumulators do: blocks
//! by index, text and thinking deltas appended, tool inputs parsed from their `input_json_delta`
//! fragments, usage overlaid. The tool loop uses it to see a streamed upstream turn whole.

use serde_json::{Map, Value};

use super::anthropic::{EventKind, Frame, PartialUsage, ServerToolUse, Usage};

#[derive(Debug, Default)]
pub struct TurnAccumulator {
    pub id: Option<String>,
    pub model: Option<String>,
    pub blocks: Vec<Value>,
    /// Raw `partial_json` per block, parsed at its stop.
    inputs: Vec<Option<String>>,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
    /// `usage.server_tool_use` as the upstream reported it (native server tools).
    pub server_tool_use: ServerToolUse,
    pub stopped: bool,
}

/// A frame that does not fit the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccumulateError(pub String);

impl TurnAccumulator {
    /// Applies one event. Unknown events and pings are ignored.
    pub fn apply(&mut self, frame: &Frame) -> Result<(), AccumulateError> {
        let bad = |why: &str| AccumulateError(format!("{}: {why}", frame.kind.name()));
        match frame.kind {
            EventKind::MessageStart => {
                let v: Value =
                    serde_json::from_slice(&frame.data).map_err(|e| bad(&e.to_string()))?;
                let m = &v["message"];
                self.id = m["id"].as_str().map(str::to_string);
                self.model = m["model"].as_str().map(str::to_string);
                if let Ok(u) = serde_json::from_value::<PartialUsage>(m["usage"].clone()) {
                    u.overlay(&mut self.usage);
                }
            }
            EventKind::ContentBlockStart => {
                let v: Value =
                    serde_json::from_slice(&frame.data).map_err(|e| bad(&e.to_string()))?;
                let index = v["index"].as_u64().ok_or_else(|| bad("no index"))? as usize;
                if index != self.blocks.len() {
                    return Err(bad("blocks must start in index order"));
                }
                let block = v
                    .get("content_block")
                    .cloned()
                    .ok_or_else(|| bad("no content_block"))?;
                let is_tool = matches!(
                    block["type"].as_str(),
                    Some("tool_use" | "server_tool_use" | "mcp_tool_use")
                );
                self.inputs.push(is_tool.then(String::new));
                self.blocks.push(block);
            }
            EventKind::ContentBlockDelta => {
                let v: Value =
                    serde_json::from_slice(&frame.data).map_err(|e| bad(&e.to_string()))?;
                let index = v["index"].as_u64().ok_or_else(|| bad("no index"))? as usize;
                let block = self
                    .blocks
                    .get_mut(index)
                    .ok_or_else(|| bad("delta to an unknown block"))?;
                let d = &v["delta"];
                let append = |block: &mut Value, key: &str, more: &str| {
                    let cur = block[key].as_str().unwrap_or("").to_string();
                    block[key] = Value::String(cur + more);
                };
                match d["type"].as_str() {
                    Some("text_delta") => append(block, "text", d["text"].as_str().unwrap_or("")),
                    Some("thinking_delta") => {
                        append(block, "thinking", d["thinking"].as_str().unwrap_or(""))
                    }
                    Some("signature_delta") => {
                        append(block, "signature", d["signature"].as_str().unwrap_or(""))
                    }
                    Some("citations_delta") => {
                        let list = block
                            .as_object_mut()
                            .ok_or_else(|| bad("block is not an object"))?;
                        let citations = list.entry("citations").or_insert(Value::Null);
                        if !citations.is_array() {
                            *citations = Value::Array(Vec::new());
                        }
                        citations
                            .as_array_mut()
                            .expect("array")
                            .push(d["citation"].clone());
                    }
                    Some("input_json_delta") => {
                        let slot = self
                            .inputs
                            .get_mut(index)
                            .and_then(Option::as_mut)
                            .ok_or_else(|| bad("input_json_delta to a non-tool block"))?;
                        slot.push_str(d["partial_json"].as_str().unwrap_or(""));
                    }
                    _ => {}
                }
            }
            EventKind::ContentBlockStop => {
                let v: Value =
                    serde_json::from_slice(&frame.data).map_err(|e| bad(&e.to_string()))?;
                let index = v["index"].as_u64().ok_or_else(|| bad("no index"))? as usize;
                if let Some(Some(raw)) = self.inputs.get_mut(index).map(Option::take) {
                    if !raw.trim().is_empty() {
                        let input: Value = serde_json::from_str(&raw)
                            .map_err(|e| bad(&format!("tool input is not JSON: {e}")))?;
                        self.blocks[index]["input"] = input;
                    }
                }
            }
            EventKind::MessageDelta => {
                let v: Value =
                    serde_json::from_slice(&frame.data).map_err(|e| bad(&e.to_string()))?;
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(r.to_string());
                }
                self.stop_sequence = v["delta"]["stop_sequence"].as_str().map(str::to_string);
                if let Ok(u) = serde_json::from_value::<PartialUsage>(v["usage"].clone()) {
                    u.overlay(&mut self.usage);
                }
                if let Ok(s) =
                    serde_json::from_value::<ServerToolUse>(v["usage"]["server_tool_use"].clone())
                {
                    self.server_tool_use = s;
                }
            }
            EventKind::MessageStop => self.stopped = true,
            EventKind::Ping | EventKind::Error | EventKind::Other => {}
        }
        Ok(())
    }

    /// A complete non-stream message body, read the same way.
    pub fn from_message(body: &[u8]) -> Result<Self, AccumulateError> {
        let v: Map<String, Value> =
            serde_json::from_slice(body).map_err(|e| AccumulateError(e.to_string()))?;
        let blocks = match v.get("content") {
            Some(Value::Array(b)) => b.clone(),
            _ => return Err(AccumulateError("message without a content array".into())),
        };
        let usage = v
            .get("usage")
            .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
            .unwrap_or_default();
        let server_tool_use = v
            .get("usage")
            .and_then(|u| u.get("server_tool_use"))
            .and_then(|s| serde_json::from_value::<ServerToolUse>(s.clone()).ok())
            .unwrap_or_default();
        Ok(Self {
            id: v.get("id").and_then(Value::as_str).map(str::to_string),
            model: v.get("model").and_then(Value::as_str).map(str::to_string),
            inputs: vec![None; blocks.len()],
            blocks,
            stop_reason: v
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
            stop_sequence: v
                .get("stop_sequence")
                .and_then(Value::as_str)
                .map(str::to_string),
            usage,
            server_tool_use,
            stopped: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::anthropic::events::{self, DeltaType};
    use serde_json::json;

    #[test]
    fn builds_blocks_from_events() {
        let mut acc = TurnAccumulator::default();
        let frames = vec![
            events::message_start(
                "msg_1",
                "m",
                &Usage {
                    input_tokens: 10,
                    ..Default::default()
                },
            ),
            events::block_start(0, &json!({"type":"thinking","thinking":"","signature":""})),
            events::delta(0, DeltaType::Thinking, "hmm"),
            events::delta(0, DeltaType::Signature, "sig"),
            events::block_stop(0),
            events::block_start(1, &json!({"type":"text","text":""})),
            events::delta(1, DeltaType::Text, "Hel"),
            events::delta(1, DeltaType::Text, "lo"),
            events::block_stop(1),
            events::block_start(
                2,
                &json!({"type":"tool_use","id":"toolu_1","name":"f","input":{}}),
            ),
            events::delta(2, DeltaType::InputJson, "{\"a\":"),
            events::delta(2, DeltaType::InputJson, "[1,2]}"),
            events::block_stop(2),
            events::block_start(
                3,
                &json!({"type":"tool_use","id":"toolu_2","name":"g","input":{}}),
            ),
            events::block_stop(3),
            events::message_delta(
                "tool_use",
                None,
                &Usage {
                    output_tokens: 7,
                    ..Default::default()
                },
                None,
                None,
            ),
            events::message_stop(),
        ];
        for f in &frames {
            acc.apply(f).unwrap();
        }
        assert_eq!(acc.id.as_deref(), Some("msg_1"));
        assert_eq!(acc.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            (acc.usage.input_tokens, acc.usage.output_tokens),
            (0, 7),
            "message_delta overlays every counter it carries"
        );
        assert!(acc.stopped);
        assert_eq!(
            acc.blocks,
            vec![
                json!({"type":"thinking","thinking":"hmm","signature":"sig"}),
                json!({"type":"text","text":"Hello"}),
                json!({"type":"tool_use","id":"toolu_1","name":"f","input":{"a":[1,2]}}),
                json!({"type":"tool_use","id":"toolu_2","name":"g","input":{}}),
            ]
        );
    }

    #[test]
    fn refuses_out_of_order_blocks_and_bad_inputs() {
        let mut acc = TurnAccumulator::default();
        assert!(acc
            .apply(&events::block_start(1, &json!({"type":"text","text":""})))
            .is_err());
        let mut acc = TurnAccumulator::default();
        acc.apply(&events::block_start(
            0,
            &json!({"type":"tool_use","id":"t","name":"f","input":{}}),
        ))
        .unwrap();
        acc.apply(&events::delta(0, DeltaType::InputJson, "{\"a\""))
            .unwrap();
        assert!(acc.apply(&events::block_stop(0)).is_err());
    }

    #[test]
    fn reads_a_message_body() {
        let body = json!({"id":"msg_2","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"x"}],
            "stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":4}});
        let acc = TurnAccumulator::from_message(body.to_string().as_bytes()).unwrap();
        assert_eq!(acc.blocks.len(), 1);
        assert_eq!(acc.usage.output_tokens, 4);
        assert_eq!(acc.stop_reason.as_deref(), Some("end_turn"));
    }
}
