//! The tool loop inside the [`SessionActor`] (gateway.md §6): each upstream turn is taken whole
//! (streamed turns through the [`Relay`](super::relay::Relay), which forwards text and thinking
//! live), its gateway calls run on this worker's `ToolActor`s, concurrently up to
//! `tools.max_concurrency`, and the next round goes to the same deployment. The client sees one
//! message: one `message_start`, indices rising across rounds, one final `message_delta` with
//! the cumulative usage and `usage.server_tool_use`.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use actix::prelude::*;
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::Value;

use super::nested::advisor_caller;
use super::relay::{Relay, RelayStep};
use super::tool_loop::{Next, ToolLoop, Turn};
use super::{SessionActor, SessionHead};
use crate::ids;
use crate::observability::spans;
use crate::protocol::accumulate::TurnAccumulator;
use crate::protocol::anthropic::events;
use crate::protocol::anthropic::{Frame, MessageResponse, ResponseUsage};
use crate::protocol::request::MessagesRequest;
use crate::providers::{UpstreamError, UpstreamMessage};
use crate::routing::{Deployment, Verdict};
use crate::tools::{
    replay, CallContext, Execute, PendingCall, Replay, ToolCall, ToolKind, ToolOutcome,
};
use tracing::Instrument;

/// The tool loop's side of a session.
#[derive(Default)]
pub(super) struct Looping {
    pub(super) state: Option<ToolLoop>,
    /// The replayed history for the deployment of the current attempt (fixed after round 1).
    pub(super) history: Option<Replay>,
    /// The loop runs for the current deployment (else the turn passes through).
    pub(super) loop_mode: bool,
    pub(super) relay: Relay,
    /// The client's next block index across rounds.
    pub(super) next_index: usize,
    /// A continuation's trailing calls answered before round 1 (gateway.md §6.3): the user
    /// message that joins the history, and the result blocks the client sees first.
    pub(super) pending_answer: Option<Value>,
    pub(super) pending_blocks: Vec<Value>,
    /// Dropping it cancels running tool calls.
    pub(super) tools_cancel: Option<tokio::sync::watch::Sender<()>>,
    pub(super) tools_time: Duration,
}

impl SessionActor {
    /// The current round (1 without a loop).
    pub(super) fn round(&self) -> u32 {
        self.looping.state.as_ref().map_or(1, |l| l.round)
    }

    /// The request an attempt on `deployment` sends: the client's own without gateway tools;
    /// otherwise with the tools, `tool_choice` and history rewritten for that deployment.
    /// `None` while a continuation's trailing calls run first (the attempt restarts after).
    pub(super) fn round_request(
        &mut self,
        deployment: &Arc<Deployment>,
        ctx: &mut Context<Self>,
    ) -> Option<Arc<MessagesRequest>> {
        let Some(lp) = &self.looping.state else {
            self.looping.loop_mode = false;
            return Some(self.init.request.clone());
        };
        let native = &deployment.provider.config.native_tools;
        if lp.round == 1 {
            let mut history = lp.replay(&self.init.request, native);
            if !history.pending.is_empty() {
                match &self.looping.pending_answer {
                    Some(answer) => history.messages.push(answer.clone()),
                    None => {
                        let pending = std::mem::take(&mut history.pending);
                        self.looping.history = Some(history);
                        self.run_pending(pending, deployment.clone(), ctx);
                        return None;
                    }
                }
            }
            self.looping.history = Some(history);
        }
        self.looping.loop_mode = lp.active_for(native);
        let history = self.looping.history.as_ref()?;
        Some(Arc::new(lp.request(&self.init.request, native, history)))
    }

    /// §6.3: a continuation ending in `server_tool_use` without its result, for a deployment
    /// that does not run it natively: execute it, then start the attempt.
    fn run_pending(
        &mut self,
        pending: Vec<PendingCall>,
        deployment: Arc<Deployment>,
        ctx: &mut Context<Self>,
    ) {
        let Some(lp) = self.looping.state.as_mut() else {
            return;
        };
        let mut calls = Vec::new();
        let mut ready: Vec<(usize, ToolOutcome)> = Vec::new();
        for (i, p) in pending.iter().enumerate() {
            match p.to_call() {
                Ok(call) if lp.take_use(&call.tool) => calls.push((i, call)),
                Ok(call) => {
                    ready.push((i, ToolOutcome::max_uses_exceeded(call.tool.kind, &call.id)))
                }
                Err(outcome) => ready.push((i, *outcome)),
            }
        }
        let order: Vec<usize> = calls.iter().map(|(i, _)| *i).collect();
        let calls = calls.into_iter().map(|(_, c)| c).collect();
        self.run_tools(calls, ctx, move |act, outcomes, ctx| {
            let mut all: Vec<(usize, ToolOutcome)> =
                order.into_iter().zip(outcomes).chain(ready).collect();
            all.sort_by_key(|(i, _)| *i);
            let done = all
                .into_iter()
                .map(|(i, o)| (pending[i].id.clone(), o))
                .collect();
            let (Some(lp), Some(history)) =
                (act.looping.state.as_mut(), act.looping.history.as_mut())
            else {
                return;
            };
            act.looping.pending_blocks = lp.settle_pending(history, done);
            act.looping.pending_answer = history.messages.last().cloned();
            act.start_attempt(deployment, ctx);
        });
    }

    /// Runs gateway calls on this worker's tool actors, at most `tools.max_concurrency` at a
    /// time, then hands their outcomes (in call order) to `then`. Stopping the session drops
    /// the running calls.
    fn run_tools<F>(&mut self, calls: Vec<ToolCall>, ctx: &mut Context<Self>, then: F)
    where
        F: FnOnce(&mut Self, Vec<ToolOutcome>, &mut Context<Self>) + 'static,
    {
        let context = self.call_context(&calls);
        let limit = self.state.config.tools.max_concurrency.max(1);
        let started = Instant::now();
        self.trace_with(|| format!("tools.start {}", calls.len()));
        let runs: Vec<_> = calls
            .into_iter()
            .map(|call| {
                let workers = self.workers.clone();
                let state = self.state.clone();
                let span = spans::tool(call.tool.server_name(), &call.id);
                let msg = Execute {
                    call,
                    context: context.clone(),
                };
                // Lazy: a call is sent to its actor only when the window has room for it.
                async move {
                    let started = Instant::now();
                    let outcome = workers.tools.execute(msg).instrument(span.clone()).await;
                    let label = outcome.error_code().unwrap_or("ok");
                    spans::tool_done(&span, label);
                    state
                        .metrics
                        .tool_call(outcome.kind.server_name(), label, started.elapsed());
                    outcome
                }
            })
            .collect();
        let all = futures_util::stream::iter(runs)
            .buffered(limit)
            .collect::<Vec<_>>();
        ctx.spawn(all.into_actor(self).map(move |outcomes, act, ctx| {
            act.looping.tools_time += started.elapsed();
            act.trace("tools.done");
            then(act, outcomes, ctx)
        }));
    }

    fn call_context(&mut self, calls: &[ToolCall]) -> CallContext {
        let (tx, rx) = tokio::sync::watch::channel(());
        self.looping.tools_cancel = Some(tx);
        let conversation: Vec<Value> = self
            .looping
            .history
            .as_ref()
            .map(|h| h.messages.clone())
            .unwrap_or_else(|| self.init.request.messages.clone());
        let needs_context = calls.iter().any(|c| c.tool.kind == ToolKind::WebFetch)
            && self.state.config.tools.web_fetch.require_url_in_context;
        let prior_context = needs_context.then(|| {
            let mut text =
                replay::prior_context_text(self.init.request.system.as_ref(), &conversation);
            if let Some(lp) = &self.looping.state {
                text.push('\n');
                text.push_str(&serde_json::to_string(&lp.content).unwrap_or_default());
            }
            Arc::from(text)
        });
        let advisor = calls
            .iter()
            .any(|c| c.tool.kind == ToolKind::Advisor)
            .then(|| {
                advisor_caller(
                    self.state.clone(),
                    self.workers.clone(),
                    self.init.key.clone(),
                    self.init.request_id.clone(),
                )
            });
        CallContext {
            prior_context,
            transcript: Some(Arc::from(conversation)),
            advisor,
            cancel: Some(rx),
        }
    }

    /// A non-stream turn.
    pub(super) fn loop_message(&mut self, msg: UpstreamMessage, ctx: &mut Context<Self>) {
        if let Some(d) = &mut self.debug {
            d.received(&msg.body);
        }
        match TurnAccumulator::from_message(&msg.body) {
            Ok(acc) => self.turn_done(acc, 0, ctx),
            Err(e) => self.on_failed(
                UpstreamError::transient(format!("upstream message: {}", e.0)),
                ctx,
            ),
        }
    }

    /// Streamed frames of a turn: live ones to the client, the turn whole at its end.
    pub(super) fn loop_frames(&mut self, frames: Vec<Frame>, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        let mut step = RelayStep::More;
        let mut invalid = None;
        for frame in frames {
            let was_started = !out.is_empty() || self.head.is_none();
            match self
                .looping
                .relay
                .push(frame, &mut self.looping.next_index, &mut out)
            {
                Ok(s) => step = s,
                Err(e) => {
                    invalid = Some(e.0);
                    break;
                }
            }
            // The answers to a continuation's calls lead the message, right after its start.
            if !was_started && !self.looping.pending_blocks.is_empty() {
                for block in std::mem::take(&mut self.looping.pending_blocks) {
                    out.extend(events::block_frames(self.looping.next_index, &block));
                    self.looping.next_index += 1;
                }
            }
            if step != RelayStep::More {
                break;
            }
        }
        if !out.is_empty() {
            if self.head.is_some() {
                self.open_stream(ctx);
            }
            self.write_frames(&out, ctx);
        }
        if let Some(why) = invalid {
            return self.on_failed(
                UpstreamError::transient(format!("upstream stream: {why}")),
                ctx,
            );
        }
        match step {
            RelayStep::More => {}
            RelayStep::TurnEnded => {
                let acc = std::mem::take(&mut self.looping.relay.acc);
                let live = self.looping.relay.live_blocks;
                self.turn_done(acc, live, ctx);
            }
            RelayStep::Failed => {
                self.close_attempt(Verdict::Failure, Some(200), Some("stream_error"), ctx);
                self.finish(200, Some("upstream_stream_error".into()), ctx);
            }
        }
    }

    pub(super) fn write_frames(&mut self, frames: &[Frame], ctx: &mut Context<Self>) {
        let mut buf = BytesMut::new();
        for f in frames {
            buf.extend_from_slice(&f.encode());
        }
        if !buf.is_empty() {
            self.write(buf.freeze(), ctx);
        }
    }

    /// A whole upstream turn: `live` of its blocks were already shown (stream).
    fn turn_done(&mut self, acc: TurnAccumulator, live: usize, ctx: &mut Context<Self>) {
        self.close_attempt(Verdict::Success, Some(200), None, ctx);
        let native = self
            .answer
            .chosen
            .as_ref()
            .map(|d| d.provider.config.native_tools.clone())
            .unwrap_or_default();
        let Some(lp) = self.looping.state.as_mut() else {
            return;
        };
        lp.add_usage(&acc.usage);
        lp.counters.add(&acc.server_tool_use);
        if lp.round == 1 {
            lp.message_id = acc.id.clone();
            lp.model = acc.model.clone();
        }
        let stop_reason = acc.stop_reason.clone().unwrap_or_else(|| "end_turn".into());
        let turn = lp.split(acc.blocks, stop_reason, acc.stop_sequence, &native);
        let used = lp.usage.rate_limited_tokens();
        self.settle_tokens(used);
        let round = self.round();
        self.trace_with(|| format!("round.{round} {}", turn.stop_reason));
        let calls = if turn.stop_reason == "tool_use" {
            ToolLoop::calls(&turn)
        } else {
            Vec::new()
        };
        if calls.is_empty() {
            return self.settle_turn(turn, Vec::new(), live, ctx);
        }
        self.run_tools(calls, ctx, move |act, outcomes, ctx| {
            act.settle_turn(turn, outcomes, live, ctx)
        });
    }

    fn settle_turn(
        &mut self,
        turn: Turn,
        outcomes: Vec<ToolOutcome>,
        live: usize,
        ctx: &mut Context<Self>,
    ) {
        if self.answer.outcome.is_some() {
            return;
        }
        let (Some(lp), Some(history)) =
            (self.looping.state.as_mut(), self.looping.history.as_ref())
        else {
            return;
        };
        let (shown, next) = lp.settle(turn, outcomes, history);
        let nested = lp.usage.rate_limited_tokens();
        self.settle_tokens(nested);
        if self.stream() {
            let mut frames = Vec::new();
            for block in shown.iter().skip(live) {
                frames.extend(events::block_frames(self.looping.next_index, block));
                self.looping.next_index += 1;
            }
            self.write_frames(&frames, ctx);
        }
        match next {
            Next::Continue => {
                self.looping.relay.next_turn();
                // Later rounds go to the deployment that answered round 1 (its retries apply).
                let Some(deployment) = self.answer.chosen.clone() else {
                    return;
                };
                let cfg = &self.state.config;
                self.attempts.plan = super::attempts::AttemptPlan::new(
                    vec![deployment],
                    cfg.retry.clone(),
                    std::time::Duration::from_millis(cfg.circuit_breaker.rate_limit_cooldown_ms),
                );
                self.attempts.last_error = None;
                let step = self.attempts.plan.next_candidate();
                self.step(step, ctx);
            }
            Next::Finish {
                stop_reason,
                stop_sequence,
            } => self.finish_loop(stop_reason, stop_sequence, ctx),
        }
    }

    /// The loop is over: one final `message_delta` (stream) or the whole message (non-stream).
    fn finish_loop(
        &mut self,
        stop_reason: String,
        stop_sequence: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        if self.looping.state.is_none() {
            return;
        }
        self.answer.stop_reason = Some(stop_reason.clone());
        let debug = self.debug_value();
        let lp = self.looping.state.as_ref().expect("checked above");
        if self.stream() {
            let frames = [
                events::message_delta(
                    &stop_reason,
                    stop_sequence.as_deref(),
                    &lp.usage,
                    Some(&lp.counters),
                    debug.as_ref(),
                ),
                events::message_stop(),
            ];
            self.write_frames(&frames, ctx);
        } else {
            let id = lp.message_id.clone().unwrap_or_else(ids::message_id);
            let model = lp
                .model
                .clone()
                .unwrap_or_else(|| self.init.request.model.clone());
            let mut message = MessageResponse::new(
                &id,
                &model,
                &lp.content,
                &stop_reason,
                ResponseUsage::new(&lp.usage, Some(&lp.counters)),
            );
            message.stop_sequence = stop_sequence.as_deref();
            message.debug = debug.as_ref();
            let body: bytes::Bytes = message.to_vec().into();
            if self.state.config.request_log.log_bodies {
                self.init.record.response_body =
                    Some(crate::observability::record::redact_body(&body, &[]));
            }
            self.refresh_warnings_header();
            let headers = std::mem::take(&mut self.headers);
            self.answer(SessionHead::Json { body, headers }, ctx);
        }
        self.finish(200, None, ctx);
    }
}
