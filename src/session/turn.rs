//! A plain turn, passed through: the upstream's reply (JSON, or stream frames relayed as they
//! come, usage and stop reason read on the way), and how a session answers, fails and ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::debug::{Summary, Timings};
use super::{Outcome, Purpose, SessionActor, SessionHead};
use crate::config::Strictness;
use crate::error::{ErrorDetail, GatewayError};
use crate::observability;
use crate::protocol::anthropic::{
    EventKind, Frame, MessageDeltaSummary, MessageStartSummary, Usage,
};
use crate::protocol::capabilities::Warning;
use crate::providers::{UpstreamError, UpstreamMessage};
use crate::ratelimit::Debit;
use crate::routing::{Deployment, Verdict};
use crate::strictness::{header_value, WARNINGS_HEADER};

/// What the answer is made of so far.
#[derive(Default)]
pub(super) struct Answer {
    /// The deployment whose reply is the answer.
    pub(super) chosen: Option<Arc<Deployment>>,
    /// Translation warnings of the replies that made the answer (all rounds).
    pub(super) reply_warnings: Vec<Warning>,
    pub(super) usage: Usage,
    pub(super) stop_reason: Option<String>,
    pub(super) outcome: Option<Outcome>,
    pub(super) first_byte: Option<Duration>,
    /// With debug on, a passthrough stream's `message_delta` waits to learn whether it is the
    /// final one (then it carries `debug`).
    pub(super) held_delta: Option<Frame>,
    /// Tokens debited from the key so far (the estimate, then real usage).
    pub(super) debited: u64,
}

impl SessionActor {
    // ----- upstream events --------------------------------------------------------------------

    pub(super) fn on_message(&mut self, msg: UpstreamMessage, ctx: &mut Context<Self>) {
        if self.state.config.request_log.log_bodies {
            self.init.record.response_body =
                Some(observability::record::redact_body(&msg.body, &[]));
        }
        if self.looping.loop_mode {
            return self.loop_message(msg, ctx);
        }
        self.answer.usage = msg.usage;
        self.answer.stop_reason = msg.stop_reason;
        self.close_attempt(Verdict::Success, Some(200), None, ctx);
        self.refresh_warnings_header();
        self.answer.first_byte = Some(self.init.received_at.elapsed());
        let body = match self.debug_value() {
            Some(debug) => with_debug(&msg.body, &debug),
            None => msg.body,
        };
        let headers = std::mem::take(&mut self.headers);
        self.answer(SessionHead::Json { body, headers }, ctx);
        self.finish(200, None, ctx);
    }

    /// Opens the client stream on the first upstream event.
    pub(super) fn on_frames(&mut self, frames: Vec<Frame>, ctx: &mut Context<Self>) {
        if self.answer.outcome.is_some() {
            return;
        }
        if self.looping.loop_mode {
            return self.loop_frames(frames, ctx);
        }
        if self.head.is_some() {
            self.open_stream(ctx);
        }
        let mut buf = BytesMut::new();
        let mut completed = false;
        let mut error_type = None;
        for frame in frames {
            match frame.kind {
                EventKind::MessageStart => {
                    if let Ok(s) = serde_json::from_slice::<MessageStartSummary>(&frame.data) {
                        if let Some(u) = s.message.usage {
                            u.overlay(&mut self.answer.usage);
                        }
                    }
                }
                EventKind::MessageDelta => {
                    if let Ok(d) = serde_json::from_slice::<MessageDeltaSummary>(&frame.data) {
                        if let Some(u) = d.usage {
                            u.overlay(&mut self.answer.usage);
                        }
                        if d.delta.stop_reason.is_some() {
                            self.answer.stop_reason = d.delta.stop_reason;
                        }
                    }
                    if self.debug.is_some() {
                        if let Some(prev) = self.answer.held_delta.replace(frame) {
                            buf.extend_from_slice(&prev.encode());
                        }
                        continue;
                    }
                }
                EventKind::MessageStop => completed = true,
                EventKind::Error => error_type = Some(error_frame_type(&frame.data)),
                _ => {}
            }
            if let Some(held) = self.answer.held_delta.take() {
                if completed {
                    // The final message_delta: it carries the debug object.
                    self.close_attempt(Verdict::Success, Some(200), None, ctx);
                    buf.extend_from_slice(&self.final_delta_with_debug(&held).encode());
                } else {
                    buf.extend_from_slice(&held.encode());
                }
            }
            buf.extend_from_slice(&frame.encode());
            if completed || error_type.is_some() {
                break;
            }
        }
        if !buf.is_empty() {
            self.write(buf.freeze(), ctx);
        }
        if completed {
            self.close_attempt(Verdict::Success, Some(200), None, ctx);
            self.finish(200, None, ctx);
        } else if let Some(t) = error_type {
            // The upstream reported the failure in-band; the stream has started, so it stands.
            self.close_attempt(Verdict::Failure, Some(200), Some("stream_error"), ctx);
            self.finish(200, Some(t), ctx);
        }
    }

    pub(super) fn final_delta_with_debug(&self, held: &Frame) -> Frame {
        let Some(debug) = self.debug_value() else {
            return held.clone();
        };
        match serde_json::from_slice::<serde_json::Map<String, Value>>(&held.data) {
            Ok(mut obj) => {
                obj.insert("debug".into(), debug);
                Frame::new(
                    EventKind::MessageDelta,
                    serde_json::to_vec(&obj).expect("serializes"),
                )
            }
            Err(_) => held.clone(),
        }
    }

    pub(super) fn on_end(&mut self, ctx: &mut Context<Self>) {
        if self.answer.outcome.is_some() {
            return;
        }
        let err = UpstreamError::transient("upstream stream ended before completion");
        self.on_failed(err, ctx);
    }

    // ----- answering --------------------------------------------------------------------------

    /// Answers with an error: an HTTP error before the first byte, an `event: error` frame after.
    pub(super) fn fail(&mut self, error: GatewayError, ctx: &mut Context<Self>) {
        if self.answer.outcome.is_some() {
            return;
        }
        // An attempt still running (the total timeout fired) says nothing about its deployment.
        self.close_attempt(Verdict::Abandoned, None, Some("abandoned"), ctx);
        let error_type = Some(error.error_type().to_string());
        let debug = self.debug_value();
        if self.head.is_some() {
            let status = error.status().as_u16();
            let headers = std::mem::take(&mut self.headers);
            self.answer(
                SessionHead::Error {
                    error,
                    headers,
                    debug,
                },
                ctx,
            );
            self.finish(status, error_type, ctx);
        } else {
            let frame = error.sse_frame(&self.init.request_id, debug.as_ref());
            self.write(frame, ctx);
            self.finish(200, error_type, ctx);
        }
    }

    pub(super) fn answer(&mut self, head: SessionHead, ctx: &mut Context<Self>) {
        if let Some(tx) = self.head.take() {
            if tx.send(head).is_err() {
                self.client_gone(ctx);
            }
        }
    }

    /// Records the outcome and closes the client stream once everything queued is sent.
    pub(super) fn finish(
        &mut self,
        status: u16,
        error_type: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        if self.answer.outcome.is_none() {
            self.answer.outcome = Some(Outcome { status, error_type });
            self.reconcile_tokens();
        }
        if self.client.close() {
            ctx.stop();
        }
    }

    /// The request's usage so far, kept in one place each: the tool loop's totals (all rounds,
    /// nested calls included) when the loop runs, else the passthrough turn's.
    pub(super) fn usage(&self) -> Usage {
        match &self.looping.state {
            Some(lp) if self.looping.loop_mode => lp.usage,
            _ => self.answer.usage,
        }
    }

    /// Brings the key's token balance in line with the tokens used so far: it was debited an
    /// estimate at admission, and real usage after each round (gateway.md §8).
    pub(super) fn reconcile_tokens(&mut self) {
        let used = self.usage().rate_limited_tokens();
        self.settle_tokens(used);
    }

    pub(super) fn settle_tokens(&mut self, used: u64) {
        if self.init.key.limits.tokens_per_minute == 0
            || used == self.answer.debited
            || self.init.purpose == Purpose::Nested
        {
            return;
        }
        let tokens = used as i64 - self.answer.debited as i64;
        self.answer.debited = used;
        self.workers.limiter.do_send(Debit {
            key: self.init.key.clone(),
            tokens,
        });
    }

    pub(super) fn client_gone(&mut self, ctx: &mut Context<Self>) {
        if self.answer.outcome.is_none() {
            self.answer.outcome = Some(Outcome {
                status: 499,
                error_type: Some("client_closed".into()),
            });
            self.reconcile_tokens();
        }
        self.close_attempt(Verdict::Abandoned, None, Some("abandoned"), ctx);
        self.client.drop_all();
        ctx.stop();
    }

    /// Bytes waited `timeouts.client_write_ms` for the client (or the request's time ran out
    /// while they waited): the client never got its answer, whatever was recorded before.
    pub(super) fn client_stalled(&mut self, ctx: &mut Context<Self>) {
        self.trace("client.stalled");
        tracing::warn!(
            request_id = %self.init.request_id,
            "the client stopped reading; ending the session"
        );
        if self.answer.outcome.is_none() {
            self.reconcile_tokens();
        }
        self.answer.outcome = Some(Outcome {
            status: 499,
            error_type: Some("client_stalled".into()),
        });
        self.close_attempt(Verdict::Abandoned, None, Some("abandoned"), ctx);
        self.client.drop_all();
        ctx.stop();
    }

    /// `timeouts.total_ms`: it holds whatever the client does. The `event: error` frame goes
    /// out if the channel can take it; the session ends either way.
    pub(super) fn total_timeout(&mut self, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        self.trace("timeout.total");
        let ms = self.state.config.timeouts.total_ms;
        self.fail(
            GatewayError::Timeout(format!("request exceeded timeouts.total_ms ({ms} ms)")),
            ctx,
        );
        if self.client.blocked() {
            self.client_stalled(ctx);
        }
    }

    /// Under `warn`, everything dropped or changed for the deployment that answered: what its
    /// request left out (strictness, tool options) and what translating its replies changed.
    pub(super) fn warnings(&self) -> Vec<Warning> {
        if self.init.strictness != Strictness::Warn {
            return Vec::new();
        }
        let mut all: Vec<Warning> = match &self.answer.chosen {
            Some(d) => self.init.strictness_plan.drops_for(d).to_vec(),
            None => Vec::new(),
        };
        all.extend(self.answer.reply_warnings.iter().cloned());
        all
    }

    /// A JSON answer's `x-gateway-warnings`, now that its replies are known.
    pub(super) fn refresh_warnings_header(&mut self) {
        self.headers.retain(|(k, _)| *k != WARNINGS_HEADER);
        if let Some(v) = header_value(&self.warnings()) {
            self.headers.push((WARNINGS_HEADER, v));
        }
    }

    pub(super) fn debug_value(&self) -> Option<Value> {
        let d = self.debug.as_ref()?;
        let now = Instant::now();
        let upstream = match self.attempts.upstream_start {
            Some(s) => self
                .attempts
                .upstream_end
                .unwrap_or(now)
                .saturating_duration_since(s),
            None => Duration::ZERO,
        };
        let candidates: Vec<String> = self
            .init
            .candidates
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let chosen = self.answer.chosen.as_ref().map(|c| {
            (
                c.provider.name(),
                c.name.as_str(),
                c.upstream_model.as_str(),
            )
        });
        // As in `x-gateway-warnings`.
        let warnings: Vec<ErrorDetail> = self
            .warnings()
            .iter()
            .map(|w| ErrorDetail::new(w.param.clone(), w.reason.as_str()))
            .collect();
        let summary = Summary {
            request_id: &self.init.request_id,
            strictness: self.init.strictness.as_str(),
            warnings: &warnings,
            rounds: self.round(),
            model: &self.init.request.model,
            candidates: &candidates,
            sort: self.init.sort,
            attempts: &self.attempts.log,
            chosen,
            timings: Timings {
                total: self.init.received_at.elapsed(),
                upstream,
                tools: self.looping.tools_time,
                ttft: self.answer.first_byte,
            },
        };
        Some(d.build(&summary, self.stream()))
    }
}

/// A JSON body with a top-level `debug` member added, other members untouched.
fn with_debug(body: &[u8], debug: &Value) -> Bytes {
    match serde_json::from_slice::<crate::protocol::request::RawFields>(body) {
        Ok(mut fields) => {
            let raw = serde_json::value::to_raw_value(debug).expect("serializes");
            fields.insert("debug".into(), raw);
            Bytes::from(serde_json::to_vec(&fields).expect("serializes"))
        }
        Err(_) => Bytes::copy_from_slice(body),
    }
}

/// The `error.type` of an upstream `event: error` frame.
fn error_frame_type(data: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        error: Option<I>,
    }
    #[derive(serde::Deserialize)]
    struct I {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_slice::<E>(data)
        .ok()
        .and_then(|e| e.error)
        .and_then(|i| i.kind)
        .unwrap_or_else(|| "api_error".into())
}
