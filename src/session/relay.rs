//! A streamed upstream turn inside the tool loop (gateway.md §6.2): text and thinking are
//! forwarded live with their indices moved to the client's numbering; from the turn's first tool
//! call on, everything is held (the accumulator keeps it) until the turn ends and the loop has
//! decided what the client sees.

use std::collections::HashMap;

use serde_json::Value;

use crate::protocol::accumulate::{AccumulateError, TurnAccumulator};
use crate::protocol::anthropic::{EventKind, Frame};

/// What a frame meant for the turn.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayStep {
    More,
    /// `message_stop`: the turn is whole.
    TurnEnded,
    /// An upstream `event: error`: it was passed on and ends the stream.
    Failed,
}

#[derive(Debug, Default)]
pub struct Relay {
    pub acc: TurnAccumulator,
    /// Upstream index → client index, for blocks forwarded live.
    live: HashMap<usize, usize>,
    holding: bool,
    /// Blocks of this turn already shown live (they lead the turn).
    pub live_blocks: usize,
    started: bool,
}

impl Relay {
    /// Forgets the previous turn; the stream's `message_start` stays sent.
    pub fn next_turn(&mut self) {
        let started = self.started;
        *self = Self::default();
        self.started = started;
    }

    /// Takes one upstream frame; frames for the client are pushed onto `out`, `next_index`
    /// numbering the client's blocks.
    pub fn push(
        &mut self,
        frame: Frame,
        next_index: &mut usize,
        out: &mut Vec<Frame>,
    ) -> Result<RelayStep, AccumulateError> {
        self.acc.apply(&frame)?;
        match frame.kind {
            EventKind::MessageStart => {
                // One message for the whole loop: only the first round's start is shown.
                if !self.started {
                    self.started = true;
                    out.push(frame);
                }
            }
            EventKind::ContentBlockStart => {
                let index = self.acc.blocks.len() - 1;
                let is_call = self.acc.blocks[index]["type"] == "tool_use";
                if is_call {
                    self.holding = true;
                }
                if !self.holding {
                    self.live.insert(index, *next_index);
                    out.push(reindex(frame, index, *next_index));
                    *next_index += 1;
                    self.live_blocks += 1;
                }
            }
            EventKind::ContentBlockDelta | EventKind::ContentBlockStop => {
                let index = frame_index(&frame).unwrap_or(usize::MAX);
                if let Some(&to) = self.live.get(&index) {
                    out.push(reindex(frame, index, to));
                }
            }
            EventKind::Ping => out.push(frame),
            EventKind::MessageDelta | EventKind::Other => {}
            EventKind::MessageStop => return Ok(RelayStep::TurnEnded),
            EventKind::Error => {
                out.push(frame);
                return Ok(RelayStep::Failed);
            }
        }
        Ok(RelayStep::More)
    }
}

fn frame_index(frame: &Frame) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct I {
        index: usize,
    }
    serde_json::from_slice::<I>(&frame.data)
        .ok()
        .map(|i| i.index)
}

/// The frame with its `index` moved (unchanged bytes when it already matches).
fn reindex(frame: Frame, from: usize, to: usize) -> Frame {
    if from == to {
        return frame;
    }
    match serde_json::from_slice::<serde_json::Map<String, Value>>(&frame.data) {
        Ok(mut v) => {
            v.insert("index".into(), Value::from(to));
            Frame::new(frame.kind, serde_json::to_vec(&v).expect("serializes"))
        }
        Err(_) => frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::anthropic::events::{self, DeltaType};
    use crate::protocol::anthropic::Usage;
    use serde_json::json;

    #[test]
    fn live_until_the_first_tool_call_then_held() {
        let mut r = Relay::default();
        let mut next = 0;
        let mut out = Vec::new();
        let turn = |start_index: usize| {
            vec![
                events::message_start("msg_1", "m", &Usage::default()),
                events::block_start(0, &json!({"type":"text","text":""})),
                events::delta(0, DeltaType::Text, "Checking"),
                events::block_stop(0),
                events::block_start(
                    1,
                    &json!({"type":"tool_use","id":"t","name":"gateway_datetime","input":{}}),
                ),
                events::delta(1, DeltaType::InputJson, "{}"),
                events::block_stop(1),
                events::block_start(2, &json!({"type":"text","text":""})),
                events::delta(2, DeltaType::Text, "held"),
                events::block_stop(2),
                events::message_delta("tool_use", None, &Usage::default(), None, None),
                events::message_stop(),
            ]
            .into_iter()
            .skip(start_index)
        };
        let mut last = RelayStep::More;
        for f in turn(0) {
            last = r.push(f, &mut next, &mut out).unwrap();
        }
        assert_eq!(last, RelayStep::TurnEnded);
        let kinds: Vec<_> = out.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::MessageStart,
                EventKind::ContentBlockStart,
                EventKind::ContentBlockDelta,
                EventKind::ContentBlockStop
            ]
        );
        assert_eq!((r.live_blocks, next), (1, 1));
        assert_eq!(r.acc.blocks.len(), 3);

        // Round 2: no second message_start; indices continue from the client's numbering.
        r.next_turn();
        next = 4;
        out.clear();
        for f in turn(0) {
            r.push(f, &mut next, &mut out).unwrap();
        }
        assert_eq!(out[0].kind, EventKind::ContentBlockStart);
        let v: Value = serde_json::from_slice(&out[0].data).unwrap();
        assert_eq!(v["index"], 4);
        let v: Value = serde_json::from_slice(&out[1].data).unwrap();
        assert_eq!(
            (v["index"].as_u64(), v["delta"]["text"].as_str()),
            (Some(4), Some("Checking"))
        );
    }
}
