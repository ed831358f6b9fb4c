//! OpenAI chat chunks → Anthropic stream events (translation.md §5).
//!
//! [`StreamTranslator`] is fed one upstream `data:` payload at a time and appends the Anthropic
//! frames that are ready; [`StreamTranslator::finish`] tells it how the upstream ended (`[DONE]`,
//! EOF, the usage-wait deadline, idle timeout, a broken connection). Timers and sockets stay in
//! the I/O layer: it only asks [`StreamTranslator::awaiting_usage`] to know when the bounded wait
//! for the usage chunk runs.

use super::json_prefix::JsonPrefix;
use super::response::tool_use_id;
use super::tool_names::ToolNameMap;
use super::usage::{map_error_type, map_stop_reason, map_usage};
use crate::protocol::anthropic::events::{self, DeltaType};
use crate::protocol::anthropic::{Frame, Usage};
use crate::protocol::capabilities::{Reason, Warning};
use crate::protocol::openai::{ChatChunk, ErrorObject, ToolCallDelta};
use crate::protocol::sse::SseEvent;

/// What the stream translation needs from the request side.
#[derive(Debug, Clone)]
pub struct StreamContext {
    pub message_id: String,
    /// The model id the client sent.
    pub client_model: String,
    pub tool_names: ToolNameMap,
    /// `stream_tool_calls = "buffered"`: hold every call until `finish_reason`.
    pub buffered_tool_calls: bool,
    /// Used when the upstream reports no usage at all.
    pub estimated_input_tokens: u64,
}

/// How the upstream stream ended, as seen by the I/O layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// `data: [DONE]`.
    Done,
    /// The body ended. Without `[DONE]` or a `finish_reason` before it this counts as broken:
    /// awc reports a connection closed in the middle of a chunked body as a plain end, so a
    /// truncated stream cannot be told from a clean one, and an error the client can retry beats
    /// a cut answer that looks complete.
    Eof,
    /// `stream.usage_wait_ms` passed after `finish_reason` with no usage chunk.
    UsageWait,
    /// `timeouts.idle_ms` passed with no upstream event.
    Idle,
    /// A reset or read error.
    Broken,
}

/// The stream cannot go on. The I/O layer reports it as a failed attempt: before the first frame
/// it may still fall back; after it the session sends it as `event: error`, the last frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFailure {
    pub message: String,
    /// The Anthropic `error.type` (translation.md §6).
    pub error_type: &'static str,
    /// An HTTP status the upstream named (classifies a failure before the first frame).
    pub status: Option<u16>,
}

impl StreamFailure {
    fn new(message: impl Into<String>, error_type: &'static str) -> Self {
        Self {
            message: message.into(),
            error_type,
            status: None,
        }
    }

    /// An upstream `{"error":{…}}` payload.
    pub fn from_error(err: &ErrorObject) -> Self {
        let status = err
            .code
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..600).contains(c));
        Self {
            message: err
                .message
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "stream error".into()),
            error_type: map_error_type(status, err.code.as_ref(), err.kind.as_deref()),
            status,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text(usize),
    Thinking(usize),
    /// A tool block, by its slot in `calls`.
    Tool(usize),
}

#[derive(Debug)]
struct CallState {
    /// The upstream's `index` (or the entry's position when it sends none).
    key: u32,
    /// Order of first appearance: `tool_calls.<n>` in warnings.
    n: usize,
    id: Option<String>,
    name: Option<String>,
    args: String,
    /// Bytes of `args` already sent.
    sent: usize,
    prefix: JsonPrefix,
    /// A fragment broke the JSON prefix; nothing more is sent for this call.
    broken: bool,
    /// The block index once started.
    block: Option<usize>,
}

pub struct StreamTranslator {
    ctx: StreamContext,
    started: bool,
    open: Open,
    next_index: usize,
    calls: Vec<CallState>,
    tool_blocks: usize,
    finish: Option<String>,
    usage: Option<Usage>,
    refusal: bool,
    done: bool,
    closed: bool,
    output_chars: usize,
    warnings: Vec<Warning>,
    usage_estimated: bool,
}

impl StreamTranslator {
    pub fn new(ctx: StreamContext) -> Self {
        Self {
            ctx,
            started: false,
            open: Open::None,
            next_index: 0,
            calls: Vec::new(),
            tool_blocks: 0,
            finish: None,
            usage: None,
            refusal: false,
            done: false,
            closed: false,
            output_chars: 0,
            warnings: Vec::new(),
            usage_estimated: false,
        }
    }

    /// `message_start` is out: a failure now goes in-band.
    pub fn started(&self) -> bool {
        self.started
    }

    /// `message_stop` (or a failure) is out: nothing more will be emitted.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `finish_reason` arrived and the final `message_delta` waits for the usage chunk.
    pub fn awaiting_usage(&self) -> bool {
        self.finish.is_some() && !self.closed
    }

    /// Lossy steps so far (invalid arguments, missing finish reason, estimated usage).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The usage reported to the client so far (final once closed).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn usage_estimated(&self) -> bool {
        self.usage_estimated
    }

    /// One SSE event: `event: error` is an upstream error whatever its data.
    pub fn push_event(&mut self, ev: &SseEvent, out: &mut Vec<Frame>) -> Result<(), StreamFailure> {
        if ev.name() == "error" {
            if self.closed {
                return Ok(());
            }
            let err = serde_json::from_slice::<crate::protocol::openai::ErrorBody>(&ev.data)
                .map(|b| b.error)
                .unwrap_or_default();
            return self.fail(StreamFailure::from_error(&err));
        }
        self.push(&ev.data, out)
    }

    /// One `data:` payload: a chunk, `[DONE]`, or an error object.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Frame>) -> Result<(), StreamFailure> {
        if self.closed {
            return Ok(());
        }
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.done = true;
            return self.finish(StreamEnd::Done, out);
        }
        let chunk: ChatChunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                return self.fail(StreamFailure::new(
                    format!("invalid stream chunk: {e}"),
                    "api_error",
                ))
            }
        };
        if let Some(err) = &chunk.error {
            return self.fail(StreamFailure::from_error(err));
        }
        let usage = chunk.usage.as_ref().map(map_usage);
        if !self.started {
            self.started = true;
            out.push(events::message_start(
                &self.ctx.message_id,
                &self.ctx.client_model,
                &usage.unwrap_or_default(),
            ));
        }
        // Other choices are ignored; `n` is never sent.
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let d = &choice.delta;
            // One chunk may carry several pieces (fake-streaming servers): each in order (§5.2).
            if let Some(t) = d.reasoning_content.get().or(d.reasoning.get()) {
                self.block_delta(false, t, out);
            }
            if let Some(t) = d.content.get() {
                self.block_delta(true, t, out);
            }
            if let Some(t) = d.refusal.get() {
                self.refusal = true;
                self.block_delta(true, t, out);
            }
            for (pos, tc) in d.tool_calls.iter().enumerate() {
                if let Err(f) = self.tool_delta(pos, tc, out) {
                    return self.fail(f);
                }
            }
            if let Some(reason) = choice.finish_reason.as_deref().filter(|r| !r.is_empty()) {
                self.on_finish(reason.to_string(), out);
            }
        }
        // Cumulative: the latest wins.
        if let Some(u) = usage {
            self.usage = Some(u);
            if self.finish.is_some() {
                self.close(out);
            }
        }
        Ok(())
    }

    /// The upstream ended (or the usage wait or idle timer fired).
    pub fn finish(&mut self, end: StreamEnd, out: &mut Vec<Frame>) -> Result<(), StreamFailure> {
        if self.closed {
            return Ok(());
        }
        if !self.started {
            let f = match end {
                StreamEnd::Idle => StreamFailure::new("stream timed out", "timeout_error"),
                _ => StreamFailure::new("stream ended before any chunk", "api_error"),
            };
            return self.fail(f);
        }
        match end {
            _ if self.finish.is_some() => {}
            // A clean end without finish_reason still gives a well-formed stream (§5 step 9).
            StreamEnd::Eof if !self.done => {
                return self.fail(StreamFailure::new(
                    "stream ended before completion",
                    "api_error",
                ))
            }
            StreamEnd::Done | StreamEnd::Eof | StreamEnd::UsageWait => {
                self.flush_calls(out);
                self.stop_open(out);
            }
            StreamEnd::Idle => {
                return self.fail(StreamFailure::new("stream timed out", "timeout_error"))
            }
            StreamEnd::Broken => {
                return self.fail(StreamFailure::new(
                    "stream ended before completion",
                    "api_error",
                ))
            }
        }
        self.close(out);
        Ok(())
    }

    fn fail(&mut self, f: StreamFailure) -> Result<(), StreamFailure> {
        self.closed = true;
        Err(f)
    }

    /// A text (`text = true`) or thinking delta, opening its block when another kind is open.
    fn block_delta(&mut self, text: bool, value: &str, out: &mut Vec<Frame>) {
        let index = match (self.open, text) {
            (Open::Text(i), true) | (Open::Thinking(i), false) => i,
            _ => {
                self.stop_open(out);
                let i = self.take_index();
                if text {
                    out.push(events::text_start(i));
                    self.open = Open::Text(i);
                } else {
                    out.push(events::thinking_start(i));
                    self.open = Open::Thinking(i);
                }
                i
            }
        };
        let kind = if text {
            DeltaType::Text
        } else {
            DeltaType::Thinking
        };
        self.output_chars += value.len();
        out.push(events::delta(index, kind, value));
    }

    fn take_index(&mut self) -> usize {
        let i = self.next_index;
        self.next_index += 1;
        i
    }

    fn tool_delta(
        &mut self,
        pos: usize,
        tc: &ToolCallDelta<'_>,
        out: &mut Vec<Frame>,
    ) -> Result<(), StreamFailure> {
        let key = tc.index.unwrap_or(pos as u32);
        let slot = match self.calls.iter().position(|c| c.key == key) {
            Some(s) => s,
            None => {
                self.calls.push(CallState {
                    key,
                    n: self.calls.len(),
                    id: None,
                    name: None,
                    args: String::new(),
                    sent: 0,
                    prefix: JsonPrefix::new(),
                    broken: false,
                    block: None,
                });
                self.calls.len() - 1
            }
        };
        let fragment = tc.function.arguments.0.as_deref().unwrap_or("");
        let call = &mut self.calls[slot];
        if call.id.is_none() {
            call.id = tc
                .id
                .as_deref()
                .filter(|i| !i.is_empty())
                .map(str::to_string);
        }
        if call.name.is_none() {
            call.name = tc
                .function
                .name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(str::to_string);
        }
        if self.ctx.buffered_tool_calls {
            call.args.push_str(fragment);
            return Ok(());
        }
        match call.block {
            Some(_) if self.open == Open::Tool(slot) => {
                self.send_args(slot, fragment, out);
                Ok(())
            }
            // A started block cannot be reopened (§5 step 5, closed key).
            Some(_) if !fragment.is_empty() => Err(StreamFailure::new(
                "interleaved tool-call arguments",
                "api_error",
            )),
            Some(_) => Ok(()),
            None => {
                // Buffer until a fragment names the tool, then send the buffer as one delta.
                call.args.push_str(fragment);
                if call.name.is_some() {
                    self.start_tool(slot, out);
                    let pending = std::mem::take(&mut self.calls[slot].args);
                    self.send_args(slot, &pending, out);
                }
                Ok(())
            }
        }
    }

    fn start_tool(&mut self, slot: usize, out: &mut Vec<Frame>) {
        self.stop_open(out);
        let index = self.take_index();
        let call = &mut self.calls[slot];
        call.block = Some(index);
        let id = tool_use_id(call.id.as_deref());
        let name = self
            .ctx
            .tool_names
            .to_client(call.name.as_deref().unwrap_or_default());
        out.push(events::tool_use_start(index, &id, name));
        self.open = Open::Tool(slot);
        self.tool_blocks += 1;
    }

    /// Appends a fragment and sends what is safe of it as `input_json_delta` (the same step that
    /// opened the block, so no first fragment is lost: pitfalls 1 and 2).
    fn send_args(&mut self, slot: usize, fragment: &str, out: &mut Vec<Frame>) {
        let call = &mut self.calls[slot];
        call.args.push_str(fragment);
        if call.broken || fragment.is_empty() {
            return;
        }
        if call.prefix.feed(fragment.as_bytes()).is_err() {
            // Withheld with everything after it; the raw text goes to the warning at close.
            call.broken = true;
            return;
        }
        let safe = call.prefix.safe_len();
        if safe > call.sent {
            let index = call.block.expect("a started call has a block");
            self.output_chars += safe - call.sent;
            out.push(events::delta(
                index,
                DeltaType::InputJson,
                &call.args[call.sent..safe],
            ));
            call.sent = safe;
        }
    }

    fn stop_open(&mut self, out: &mut Vec<Frame>) {
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Text(i) | Open::Thinking(i) => out.push(events::block_stop(i)),
            Open::Tool(slot) => {
                let call = &self.calls[slot];
                if (call.broken || call.sent < call.args.len()) && !call.args.trim().is_empty() {
                    self.warnings.push(
                        Warning::new(
                            format!("tool_calls.{}.arguments", call.n),
                            Reason::InvalidJson,
                        )
                        .with_detail(call.args.clone()),
                    );
                }
                out.push(events::block_stop(
                    call.block.expect("open tool has a block"),
                ));
            }
        }
    }

    /// Buffered calls, and calls still waiting for a name, are sent now: start, one delta, stop.
    fn flush_calls(&mut self, out: &mut Vec<Frame>) {
        for slot in 0..self.calls.len() {
            if self.calls[slot].block.is_some() {
                continue;
            }
            if self.calls[slot].name.is_none() {
                let n = self.calls[slot].n;
                self.warnings.push(Warning::new(
                    format!("tool_calls.{n}.name"),
                    Reason::Unsupported,
                ));
                continue;
            }
            self.start_tool(slot, out);
            let args = std::mem::take(&mut self.calls[slot].args);
            self.send_args(slot, &args, out);
            self.stop_open(out);
        }
    }

    fn on_finish(&mut self, reason: String, out: &mut Vec<Frame>) {
        self.flush_calls(out);
        // The open block stops now; message_delta waits for the usage chunk (§5 steps 6–8).
        self.stop_open(out);
        self.finish = Some(reason);
    }

    fn close(&mut self, out: &mut Vec<Frame>) {
        self.stop_open(out);
        let (stop, warning) =
            map_stop_reason(self.finish.as_deref(), self.tool_blocks > 0, self.refusal);
        self.warnings.extend(warning);
        let usage = match self.usage {
            Some(u) => u,
            None => {
                self.usage_estimated = true;
                self.warnings.push(Warning::new("usage", Reason::Estimated));
                let u = Usage {
                    input_tokens: self.ctx.estimated_input_tokens,
                    output_tokens: (self.output_chars as u64).div_ceil(4),
                    ..Usage::default()
                };
                self.usage = Some(u);
                u
            }
        };
        out.push(events::message_delta(stop, None, &usage, None, None));
        out.push(events::message_stop());
        self.closed = true;
    }
}

#[cfg(test)]
mod tests;
