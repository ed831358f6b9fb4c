//! The [`SessionActor`]: one per request, on the worker that accepted it. It owns the request's
//! life: admission by the worker's `RateLimiterActor`, attempts on the worker's `ProviderActor`s
//! (retries, fallback, timeouts, circuit-breaker verdicts), and the channel that carries SSE
//! frames to the client. When a send to the client fails, or the client's body is dropped, the
//! session stops and its upstream attempt is dropped with it.

mod attempts;
mod client;
pub mod debug;
mod looping;
mod nested;
mod relay;
pub mod tool_loop;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

pub use client::{ClientBody, ClientGuard};
pub use debug::DebugFlags;

use attempts::{AttemptPlan, Step};
use debug::{AttemptRecord, DebugRecorder, Summary, Timings};

use crate::api::auth::ApiKey;
use crate::config::Strictness;
use crate::error::{ErrorDetail, GatewayError};
use crate::observability::{self, spans, RequestRecord};
use crate::protocol::anthropic::{
    events, EventKind, Frame, MessageDeltaSummary, MessageStartSummary, Usage,
};
use crate::protocol::request::MessagesRequest;
use crate::protocol::validate::ApiVersion;
use crate::providers::{
    Call, Dispatch, FailureClass, ProviderEvent, UpstreamError, UpstreamMessage,
};
use crate::ratelimit::{Admit, ConcurrencyPermit, Debit};
use crate::routing::breaker::Admission;
use crate::routing::{self, Deployment, Model, Verdict};
use crate::state::{AppState, WorkerActors};
use crate::strictness::{StrictnessPlan, WARNINGS_HEADER};
use crate::tools::{Replay, ToolChoice, ToolSet};
use relay::Relay;
use tool_loop::ToolLoop;

/// Extra response headers (rate limits, warnings).
pub type HeaderList = Vec<(&'static str, String)>;

/// Everything the HTTP layer learned about a request before handing it to a session.
pub struct SessionInit {
    pub request_id: String,
    pub key: Arc<ApiKey>,
    pub request: Arc<MessagesRequest>,
    pub model: Arc<Model>,
    /// The deployments to try, in order (already filtered by routing preferences and breakers).
    pub candidates: Vec<Arc<Deployment>>,
    /// How the candidates were ordered, for debug output.
    pub sort: &'static str,
    pub version: ApiVersion,
    pub anthropic_beta: Option<String>,
    pub beta_query: bool,
    pub strictness: Strictness,
    /// Candidates and per-deployment drops under that strictness (gateway.md §3).
    pub strictness_plan: Arc<StrictnessPlan>,
    pub session_id: Option<String>,
    pub debug: Option<DebugFlags>,
    /// Gateway-run tools and the rewritten `tool_choice`, when the request declares any or its
    /// history holds gateway blocks.
    pub tools: Option<ToolsInit>,
    /// Tokens debited at admission, reconciled with the real usage at the end.
    pub token_estimate: u64,
    pub received_at: Instant,
    /// What the HTTP layer already knows for the request log; the session completes it.
    pub record: RequestRecord,
}

/// The request's gateway tools (gateway.md §5).
pub struct ToolsInit {
    pub set: Arc<ToolSet>,
    pub choice: Option<ToolChoice>,
}

/// The session's first answer to the handler: the response head (and body source).
pub enum SessionHead {
    Json {
        body: Bytes,
        headers: HeaderList,
    },
    Stream {
        body: mpsc::Receiver<Bytes>,
        headers: HeaderList,
    },
    Error {
        error: GatewayError,
        headers: HeaderList,
        debug: Option<Value>,
    },
}

/// Frames queued towards the client; small, so a slow client slows its upstream read.
const CLIENT_CHANNEL: usize = 32;
/// Provider events queued towards the session.
const UPSTREAM_CHANNEL: usize = 16;

#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientGone;

/// An event of attempt `.0`; `None` when that attempt's channel closed.
#[derive(Message)]
#[rtype(result = "()")]
struct Upstream(u32, Option<ProviderEvent>);

struct Attempt {
    id: u32,
    deployment: Arc<Deployment>,
    handle: SpawnHandle,
    /// This attempt is its deployment's half-open probe.
    probe: bool,
    started: Instant,
    /// A 2xx head arrived.
    accepted: bool,
    first_event: Option<Instant>,
    last_event: Instant,
    upstream_request_id: Option<String>,
    span: tracing::Span,
}

struct ClientWriter {
    tx: mpsc::Sender<Bytes>,
    backlog: VecDeque<Bytes>,
    /// A send is parked in `ctx.wait` because the channel was full.
    waiting: bool,
    closing: bool,
    last_write: Instant,
}

/// How the request ended, for logs and accounting.
struct Outcome {
    status: u16,
    error_type: Option<String>,
}

pub struct SessionActor {
    init: SessionInit,
    state: Arc<AppState>,
    workers: Arc<WorkerActors>,
    head: Option<oneshot::Sender<SessionHead>>,
    headers: HeaderList,
    out: Option<ClientWriter>,
    _permit: Option<ConcurrencyPermit>,
    plan: AttemptPlan,
    attempt: Option<Attempt>,
    attempt_log: Vec<AttemptRecord>,
    last_error: Option<(UpstreamError, String)>,
    /// Earliest time a skipped (open) deployment becomes available again.
    skipped_until: Option<Instant>,
    chosen: Option<Arc<Deployment>>,
    usage: Usage,
    stop_reason: Option<String>,
    outcome: Option<Outcome>,
    upstream_start: Option<Instant>,
    upstream_end: Option<Instant>,
    first_byte: Option<Duration>,
    debug: Option<DebugRecorder>,
    /// With debug on, a passthrough stream's `message_delta` waits to learn whether it is the
    /// final one (then it carries `debug`).
    held_delta: Option<Frame>,
    /// Attempts started over the whole request (all rounds); numbers them.
    attempt_seq: u32,
    /// Tokens debited from the key so far (the estimate, then real usage).
    debited: u64,
    // ----- the tool loop (gateway.md §6), when gateway tools are declared -----
    tool_loop: Option<ToolLoop>,
    /// The replayed history for the deployment of the current attempt (fixed after round 1).
    history: Option<Replay>,
    /// The loop runs for the current deployment (else the turn passes through).
    loop_mode: bool,
    relay: Relay,
    /// The client's next block index across rounds.
    next_index: usize,
    /// A continuation's trailing calls answered before round 1 (gateway.md §6.3): the user
    /// message that joins the history, and the result blocks the client sees first.
    pending_answer: Option<Value>,
    pending_blocks: Vec<Value>,
    /// Dropping it cancels running tool calls.
    tools_cancel: Option<tokio::sync::watch::Sender<()>>,
    tools_time: Duration,
    /// The `request` span, entered in every handler.
    span: tracing::Span,
    /// The request log row was handed over (in `stopped`, or by `Drop` when the worker was torn
    /// down before the session could stop).
    recorded: bool,
}

impl SessionActor {
    /// Starts a session on the current worker; the receiver yields its response head.
    pub fn spawn(
        init: SessionInit,
        state: Arc<AppState>,
        workers: Arc<WorkerActors>,
    ) -> (Addr<SessionActor>, oneshot::Receiver<SessionHead>) {
        let (tx, rx) = oneshot::channel();
        let cfg = &state.config;
        let plan = AttemptPlan::new(
            init.candidates.clone(),
            cfg.retry.clone(),
            Duration::from_millis(cfg.circuit_breaker.rate_limit_cooldown_ms),
        );
        let debug = init
            .debug
            .map(|flags| DebugRecorder::new(flags, init.received_at));
        let tool_loop = init
            .tools
            .as_ref()
            .map(|t| ToolLoop::new(t.set.clone(), t.choice.clone(), cfg.tools.max_rounds));
        let debited = init.token_estimate;
        let span = spans::request(
            &init.request_id,
            &init.key.name,
            init.session_id.as_deref(),
            init.model.id(),
            init.request.stream,
        );
        let actor = SessionActor {
            init,
            state,
            workers,
            head: Some(tx),
            headers: Vec::new(),
            out: None,
            _permit: None,
            plan,
            attempt: None,
            attempt_log: Vec::new(),
            last_error: None,
            skipped_until: None,
            chosen: None,
            usage: Usage::default(),
            stop_reason: None,
            outcome: None,
            upstream_start: None,
            upstream_end: None,
            first_byte: None,
            debug,
            held_delta: None,
            attempt_seq: 0,
            debited,
            tool_loop,
            history: None,
            loop_mode: false,
            relay: Relay::default(),
            next_index: 0,
            pending_answer: None,
            pending_blocks: Vec::new(),
            tools_cancel: None,
            tools_time: Duration::ZERO,
            span,
            recorded: false,
        };
        (actor.start(), rx)
    }

    fn stream(&self) -> bool {
        self.init.request.stream
    }

    fn trace(&mut self, event: &str) {
        self.trace_with(|| event.to_string());
    }

    /// Records a trace event; the text is only built when the client asked for a trace.
    fn trace_with(&mut self, event: impl FnOnce() -> String) {
        if let Some(d) = self.debug.as_mut().filter(|d| d.flags.trace) {
            d.event(&event());
        }
    }

    // ----- attempts ---------------------------------------------------------------------------

    fn step(&mut self, step: Step, ctx: &mut Context<Self>) {
        let Step::Try { deployment, delay } = step else {
            return self.give_up(ctx);
        };
        // The previous attempt (if any) is followed by this one after `delay`.
        if let Some(last) = self.attempt_log.last_mut() {
            last.retry_in.get_or_insert(delay);
        }
        if delay.is_zero() {
            return self.start_attempt(deployment, ctx);
        }
        let deadline = self.init.received_at + self.state.config.timeouts.total();
        if Instant::now() + delay >= deadline {
            return self.give_up(ctx);
        }
        ctx.run_later(delay, move |act, ctx| act.start_attempt(deployment, ctx));
    }

    /// Sends an attempt to the deployment's provider actor on this worker.
    fn start_attempt(&mut self, deployment: Arc<Deployment>, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        if self.outcome.is_some() {
            return;
        }
        let now = Instant::now();
        let probe = match routing::shared::admit(&deployment, now) {
            Admission::Yes => false,
            Admission::Probe => true,
            Admission::No { until } => {
                self.skipped_until = Some(self.skipped_until.map_or(until, |u| u.min(until)));
                let next = self.plan.next_candidate();
                return self.step(next, ctx);
            }
        };
        let Some(request) = self.round_request(&deployment, ctx) else {
            // A continuation's trailing calls run first; this attempt starts when they are done.
            return;
        };
        self.plan.started();
        self.attempt_seq += 1;
        let id = self.attempt_seq;
        self.upstream_start.get_or_insert(now);
        self.trace_with(|| format!("attempt.{id}.start {}", deployment.name));
        let call = Call {
            request,
            upstream_model: deployment.upstream_model.clone(),
            client_model: self.init.request.model.clone(),
            stream: self.stream(),
            anthropic_version: self.init.version.as_str(),
            anthropic_beta: self.init.anthropic_beta.clone(),
            beta_query: self.init.beta_query,
            request_id: self.init.request_id.clone(),
            capture_request: self
                .debug
                .as_ref()
                .is_some_and(|d| d.flags.upstream_request),
            capture_response: self
                .debug
                .as_ref()
                .is_some_and(|d| d.flags.upstream_response),
            drops: self.init.strictness_plan.drops_for(&deployment),
            prompt_cache_key: self.init.strictness_plan.prompt_cache_key.clone(),
        };
        // The warnings are those of the deployment that answers.
        self.headers.retain(|(k, _)| *k != WARNINGS_HEADER);
        if let Some(w) = self.init.strictness_plan.warnings_header(&deployment) {
            self.headers.push((WARNINGS_HEADER, w));
        }
        let (tx, rx) = mpsc::channel(UPSTREAM_CHANNEL);
        self.workers.providers[deployment.provider_index].do_send(Dispatch { call, sink: tx });
        let events = ReceiverStream::new(rx)
            .map(move |e| Upstream(id, Some(e)))
            .chain(futures_util::stream::once(
                async move { Upstream(id, None) },
            ));
        let handle = ctx.add_stream(events);
        let attempt_span = spans::attempt(
            &deployment.name,
            &deployment.upstream_model,
            self.round(),
            id,
        );
        self.attempt_log.push(AttemptRecord {
            n: id,
            round: self.round(),
            deployment: deployment.name.clone(),
            status: None,
            class: None,
            duration: Duration::ZERO,
            retry_in: None,
            upstream_request_id: None,
        });
        self.attempt = Some(Attempt {
            id,
            deployment,
            handle,
            probe,
            started: now,
            accepted: false,
            first_event: None,
            last_event: now,
            upstream_request_id: None,
            span: attempt_span,
        });
        let timeouts = &self.state.config.timeouts;
        ctx.run_later(timeouts.ttft(), move |act, ctx| act.check_ttft(id, ctx));
        if !self.stream() {
            ctx.run_later(timeouts.attempt(), move |act, ctx| {
                if act.current(id) {
                    let ms = act.state.config.timeouts.attempt_ms;
                    act.attempt_timed_out(
                        format!("upstream attempt exceeded timeouts.attempt_ms ({ms} ms)"),
                        ctx,
                    );
                }
            });
        }
    }

    fn current(&self, id: u32) -> bool {
        self.attempt.as_ref().is_some_and(|a| a.id == id)
    }

    /// Stream: no upstream event yet. Non-stream: no response head yet.
    fn check_ttft(&mut self, id: u32, ctx: &mut Context<Self>) {
        let waiting = self
            .attempt
            .as_ref()
            .filter(|a| a.id == id)
            .is_some_and(|a| {
                if self.stream() {
                    a.first_event.is_none()
                } else {
                    !a.accepted
                }
            });
        if waiting {
            let ms = self.state.config.timeouts.ttft_ms;
            self.attempt_timed_out(
                format!("upstream sent nothing within timeouts.ttft_ms ({ms} ms)"),
                ctx,
            );
        }
    }

    /// Stream: the longest silence between upstream events.
    fn check_idle(&mut self, id: u32, ctx: &mut Context<Self>) {
        let idle = self.state.config.timeouts.idle();
        let Some(a) = self.attempt.as_ref().filter(|a| a.id == id) else {
            return;
        };
        let silent = a.last_event.elapsed();
        if silent >= idle {
            let ms = self.state.config.timeouts.idle_ms;
            self.attempt_timed_out(
                format!("upstream stream was idle for timeouts.idle_ms ({ms} ms)"),
                ctx,
            );
        } else {
            ctx.run_later(idle - silent, move |act, ctx| act.check_idle(id, ctx));
        }
    }

    fn attempt_timed_out(&mut self, message: String, ctx: &mut Context<Self>) {
        // Timers run outside any handler.
        let span = self.span.clone();
        let _entered = span.enter();
        let mut err = UpstreamError::transient(message);
        err.timeout = true;
        self.on_failed(err, ctx);
    }

    /// Ends the current attempt: stops listening to it, tells its breaker, logs it.
    fn close_attempt(
        &mut self,
        verdict: Verdict,
        status: Option<u16>,
        class: Option<&'static str>,
        ctx: &mut Context<Self>,
    ) {
        let Some(a) = self.attempt.take() else { return };
        ctx.cancel_future(a.handle);
        spans::attempt_done(&a.span, status, class.unwrap_or("success"));
        let now = Instant::now();
        self.upstream_end = Some(now);
        if verdict != Verdict::Abandoned || a.probe {
            routing::shared::record(&a.deployment, verdict, now);
        }
        if verdict == Verdict::Success {
            let ttft = a
                .first_event
                .unwrap_or(now)
                .saturating_duration_since(a.started);
            a.deployment
                .stats
                .record(ttft, now - a.started, self.usage.output_tokens);
            self.chosen = Some(a.deployment.clone());
        }
        if let Some(rec) = self.attempt_log.iter_mut().rev().find(|r| r.n == a.id) {
            rec.status = status;
            rec.class = class;
            rec.duration = now - a.started;
            rec.upstream_request_id = a.upstream_request_id;
        }
    }

    fn on_failed(&mut self, err: UpstreamError, ctx: &mut Context<Self>) {
        let deployment = self
            .attempt
            .as_ref()
            .map(|a| a.deployment.name.clone())
            .unwrap_or_default();
        let verdict = match err.class {
            FailureClass::ClientFault => Verdict::Success,
            FailureClass::RateLimited => Verdict::RateLimited {
                cooldown: self.plan.rate_limit_cooldown(&err),
            },
            _ => Verdict::Failure,
        };
        self.close_attempt(verdict, err.status, Some(err.class.as_str()), ctx);
        self.trace_with(|| format!("attempt.failed {}", err.class.as_str()));
        if err.class == FailureClass::DeploymentFault {
            tracing::error!(
                request_id = %self.init.request_id,
                deployment = %deployment,
                status = err.status,
                "upstream refused the deployment's credentials or model; check its config: {}",
                err.message
            );
        } else {
            tracing::warn!(
                request_id = %self.init.request_id,
                deployment = %deployment,
                status = err.status,
                class = err.class.as_str(),
                "upstream attempt failed: {}",
                err.message
            );
        }
        if self.head.is_none() {
            // The stream has started: no fallback any more, the failure goes in-band.
            let error = GatewayError::UpstreamStream {
                error_type: err.stream_error_type().to_string(),
                message: format!("upstream: {}", err.message),
            };
            return self.fail(error, ctx);
        }
        if err.class == FailureClass::ClientFault {
            let message = format!("upstream: {}", err.message);
            let error = if err.status == Some(413) {
                GatewayError::RequestTooLarge(message)
            } else {
                GatewayError::invalid(message)
            };
            return self.fail(error, ctx);
        }
        let step = self.plan.after_failure(&err, &mut rand::rng());
        self.last_error = Some((err, deployment));
        self.step(step, ctx);
    }

    /// No attempt left (gateway.md §7.5).
    fn give_up(&mut self, ctx: &mut Context<Self>) {
        let error = match &self.last_error {
            None => {
                let until = self.skipped_until.unwrap_or_else(Instant::now);
                GatewayError::Overloaded {
                    message: format!(
                        "no deployment of model \"{}\" is available",
                        self.init.model.id()
                    ),
                    retry_after: until
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_secs(1)),
                }
            }
            Some((e, deployment)) => {
                let last = match e.status {
                    Some(s) => format!("{s} from {deployment}"),
                    None => format!("{} ({deployment})", e.message),
                };
                let n = self.plan.started;
                GatewayError::UpstreamFailed {
                    message: format!(
                        "all {n} upstream attempt{} failed; last: {last}",
                        if n == 1 { "" } else { "s" }
                    ),
                    transient: matches!(
                        e.class,
                        FailureClass::Transient | FailureClass::RateLimited
                    ),
                }
            }
        };
        self.fail(error, ctx);
    }

    // ----- upstream events --------------------------------------------------------------------

    fn on_message(&mut self, msg: UpstreamMessage, ctx: &mut Context<Self>) {
        if self.state.config.request_log.log_bodies {
            self.init.record.response_body =
                Some(observability::record::redact_body(&msg.body, &[]));
        }
        if self.loop_mode {
            return self.loop_message(msg, ctx);
        }
        self.usage = msg.usage;
        self.stop_reason = msg.stop_reason;
        self.close_attempt(Verdict::Success, Some(200), None, ctx);
        self.first_byte = Some(self.init.received_at.elapsed());
        let body = match self.debug_value() {
            Some(debug) => with_debug(&msg.body, &debug),
            None => msg.body,
        };
        let headers = std::mem::take(&mut self.headers);
        self.answer(SessionHead::Json { body, headers }, ctx);
        self.finish(200, None, ctx);
    }

    /// Opens the client stream on the first upstream event.
    fn open_stream(&mut self, ctx: &mut Context<Self>) {
        let (tx, rx) = mpsc::channel(CLIENT_CHANNEL);
        let headers = std::mem::take(&mut self.headers);
        self.first_byte = Some(self.init.received_at.elapsed());
        self.trace("stream.open");
        self.out = Some(ClientWriter {
            tx,
            backlog: VecDeque::new(),
            waiting: false,
            closing: false,
            last_write: Instant::now(),
        });
        self.answer(SessionHead::Stream { body: rx, headers }, ctx);
    }

    fn on_frames(&mut self, frames: Vec<Frame>, ctx: &mut Context<Self>) {
        if self.outcome.is_some() {
            return;
        }
        if self.loop_mode {
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
                            u.overlay(&mut self.usage);
                        }
                    }
                }
                EventKind::MessageDelta => {
                    if let Ok(d) = serde_json::from_slice::<MessageDeltaSummary>(&frame.data) {
                        if let Some(u) = d.usage {
                            u.overlay(&mut self.usage);
                        }
                        if d.delta.stop_reason.is_some() {
                            self.stop_reason = d.delta.stop_reason;
                        }
                    }
                    if self.debug.is_some() {
                        if let Some(prev) = self.held_delta.replace(frame) {
                            buf.extend_from_slice(&prev.encode());
                        }
                        continue;
                    }
                }
                EventKind::MessageStop => completed = true,
                EventKind::Error => error_type = Some(error_frame_type(&frame.data)),
                _ => {}
            }
            if let Some(held) = self.held_delta.take() {
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

    fn final_delta_with_debug(&self, held: &Frame) -> Frame {
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

    fn on_end(&mut self, ctx: &mut Context<Self>) {
        if self.outcome.is_some() {
            return;
        }
        let err = UpstreamError::transient("upstream stream ended before completion");
        self.on_failed(err, ctx);
    }

    // ----- answering --------------------------------------------------------------------------

    /// Answers with an error: an HTTP error before the first byte, an `event: error` frame after.
    fn fail(&mut self, error: GatewayError, ctx: &mut Context<Self>) {
        if self.outcome.is_some() {
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

    fn answer(&mut self, head: SessionHead, ctx: &mut Context<Self>) {
        if let Some(tx) = self.head.take() {
            if tx.send(head).is_err() {
                self.client_gone(ctx);
            }
        }
    }

    /// Records the outcome and closes the client stream once everything queued is sent.
    fn finish(&mut self, status: u16, error_type: Option<String>, ctx: &mut Context<Self>) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome { status, error_type });
            self.reconcile_tokens();
        }
        match &mut self.out {
            Some(w) if w.waiting => w.closing = true,
            _ => {
                self.out = None;
                ctx.stop();
            }
        }
    }

    /// Brings the key's token balance in line with the tokens used so far: it was debited an
    /// estimate at admission, and real usage after each round (gateway.md §8).
    fn reconcile_tokens(&mut self) {
        let used = self.usage.rate_limited_tokens();
        self.settle_tokens(used);
    }

    fn settle_tokens(&mut self, used: u64) {
        if self.init.key.limits.tokens_per_minute == 0 || used == self.debited {
            return;
        }
        let tokens = used as i64 - self.debited as i64;
        self.debited = used;
        self.workers.limiter.do_send(Debit {
            key: self.init.key.clone(),
            tokens,
        });
    }

    fn client_gone(&mut self, ctx: &mut Context<Self>) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome {
                status: 499,
                error_type: Some("client_closed".into()),
            });
            self.reconcile_tokens();
        }
        self.close_attempt(Verdict::Abandoned, None, Some("abandoned"), ctx);
        self.out = None;
        ctx.stop();
    }

    fn debug_value(&self) -> Option<Value> {
        let d = self.debug.as_ref()?;
        let now = Instant::now();
        let upstream = match self.upstream_start {
            Some(s) => self
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
        let chosen = self.chosen.as_ref().map(|c| {
            (
                c.provider.name(),
                c.name.as_str(),
                c.upstream_model.as_str(),
            )
        });
        // The warnings of the deployment that answered, as in `x-gateway-warnings`.
        let warnings: Vec<ErrorDetail> = match (&self.chosen, self.init.strictness) {
            (Some(d), Strictness::Warn) => self
                .init
                .strictness_plan
                .drops_for(d)
                .iter()
                .map(|w| ErrorDetail::new(w.param.clone(), w.reason.as_str()))
                .collect(),
            _ => Vec::new(),
        };
        let summary = Summary {
            request_id: &self.init.request_id,
            strictness: self.init.strictness.as_str(),
            warnings: &warnings,
            rounds: self.round(),
            model: &self.init.request.model,
            candidates: &candidates,
            sort: self.init.sort,
            attempts: &self.attempt_log,
            chosen,
            timings: Timings {
                total: self.init.received_at.elapsed(),
                upstream,
                tools: self.tools_time,
                ttft: self.first_byte,
            },
        };
        Some(d.build(&summary, self.stream()))
    }

    // ----- the client channel -----------------------------------------------------------------

    /// Queues bytes for the client, parking the actor (not the thread) while the channel is full.
    fn write(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        let Some(w) = self.out.as_mut() else { return };
        if w.waiting {
            w.backlog.push_back(bytes);
            return;
        }
        match w.tx.try_send(bytes) {
            Ok(()) => w.last_write = Instant::now(),
            Err(mpsc::error::TrySendError::Full(bytes)) => self.park(bytes, ctx),
            Err(mpsc::error::TrySendError::Closed(_)) => self.client_gone(ctx),
        }
    }

    fn park(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        let Some(w) = self.out.as_mut() else { return };
        w.waiting = true;
        let tx = w.tx.clone();
        let send = async move { tx.send(bytes).await.is_ok() };
        ctx.wait(send.into_actor(self).map(|sent, act, ctx| {
            if !sent {
                return act.client_gone(ctx);
            }
            let Some(w) = act.out.as_mut() else { return };
            w.waiting = false;
            w.last_write = Instant::now();
            while let Some(b) = w.backlog.pop_front() {
                match w.tx.try_send(b) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(b)) => return act.park(b, ctx),
                    Err(mpsc::error::TrySendError::Closed(_)) => return act.client_gone(ctx),
                }
            }
            if w.closing {
                act.out = None;
                ctx.stop();
            }
        }));
    }

    fn ping(&mut self, ctx: &mut Context<Self>) {
        let interval = Duration::from_millis(self.state.config.stream.ping_interval_ms);
        let idle = match &self.out {
            Some(w) => !w.closing && !w.waiting && w.last_write.elapsed() >= interval,
            None => false,
        };
        if idle {
            self.write(events::ping().encode(), ctx);
        }
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

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        let cfg = &self.state.config;
        if self.stream() {
            let interval = Duration::from_millis(cfg.stream.ping_interval_ms);
            ctx.run_interval(interval, |act, ctx| act.ping(ctx));
        }
        ctx.run_later(cfg.timeouts.total(), |act, ctx| {
            let ms = act.state.config.timeouts.total_ms;
            act.trace("timeout.total");
            act.fail(
                GatewayError::Timeout(format!("request exceeded timeouts.total_ms ({ms} ms)")),
                ctx,
            );
        });
        if !self.init.key.has_limits() {
            // Nothing to admit: no round trip to the limiter.
            self.trace("admitted");
            let step = self.plan.next_candidate();
            return self.step(step, ctx);
        }
        let admit = self.workers.limiter.send(Admit {
            key: self.init.key.clone(),
            estimate: self.init.token_estimate,
        });
        ctx.wait(admit.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ok(admission)) => {
                act._permit = admission.permit;
                act.headers.extend(admission.headers);
                act.trace("admitted");
                let step = act.plan.next_candidate();
                act.step(step, ctx);
            }
            Ok(Err(refusal)) => {
                act.headers.extend(refusal.headers);
                act.fail(refusal.error, ctx);
            }
            Err(_) => act.fail(
                GatewayError::Internal("rate limiter unavailable".into()),
                ctx,
            ),
        }));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(a) = self.attempt.take() {
            if a.probe {
                routing::shared::record(&a.deployment, Verdict::Abandoned, Instant::now());
            }
        }
        // Without an outcome the worker is shutting down (the grace period is over).
        let outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| self.shutdown_outcome());
        self.record(outcome);
    }
}

impl SessionActor {
    /// Completes the request's record and hands it over (metrics, log line, request log row).
    fn record(&mut self, outcome: Outcome) {
        let _entered = self.span.enter();
        self.recorded = true;
        let mut r = std::mem::take(&mut self.init.record);
        let chosen = self.chosen.as_ref().or_else(|| {
            // A failed request: the deployment asked last.
            let last = self.attempt_log.last()?;
            self.init
                .candidates
                .iter()
                .find(|d| d.name == last.deployment)
        });
        if let Some(d) = chosen {
            r.deployment = Some(d.name.clone());
            r.provider = Some(d.provider.name().to_string());
            r.upstream_model = Some(d.upstream_model.clone());
            r.price = self.chosen.as_ref().and(d.price);
        }
        r.status = outcome.status;
        r.error_type = outcome.error_type;
        r.stop_reason = self.stop_reason.clone();
        r.usage = self.usage;
        r.rounds = self.round();
        if let Some(lp) = &self.tool_loop {
            r.server_tool_use = lp.counters;
        }
        r.attempts = std::mem::take(&mut self.attempt_log);
        for a in r.attempts.iter_mut() {
            // Still running when the session ended.
            if a.status.is_none() && a.class.is_none() {
                a.class = Some("abandoned");
            }
        }
        r.total = self.init.received_at.elapsed();
        r.ttft = self.first_byte;
        r.upstream = match self.upstream_start {
            Some(s) => self
                .upstream_end
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(s),
            None => Duration::ZERO,
        };
        observability::record(&self.state, r);
    }

    /// The request was cut by the server's shutdown: 503 if nothing was sent yet.
    fn shutdown_outcome(&self) -> Outcome {
        Outcome {
            status: if self.head.is_some() { 503 } else { 200 },
            error_type: Some("shutdown".into()),
        }
    }
}

impl Drop for SessionActor {
    /// Should a worker drop a session without stopping it, its request is still accounted for.
    fn drop(&mut self) {
        if !self.recorded {
            let outcome = self.shutdown_outcome();
            self.record(outcome);
        }
    }
}

impl StreamHandler<Upstream> for SessionActor {
    fn handle(&mut self, Upstream(id, event): Upstream, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        let attempt_span = self.attempt.as_ref().map(|a| a.span.clone());
        let _in_attempt = attempt_span.as_ref().map(|s| s.enter());
        let stream = self.stream();
        let idle = self.state.config.timeouts.idle();
        let Some(attempt) = self.attempt.as_mut().filter(|a| a.id == id) else {
            return;
        };
        let now = Instant::now();
        attempt.last_event = now;
        match event {
            Some(ProviderEvent::Sent(sent)) => {
                let round = self.round();
                if let Some(d) = &mut self.debug {
                    d.sent(round, &sent);
                }
            }
            Some(ProviderEvent::Raw(payload)) => {
                if let Some(d) = &mut self.debug {
                    d.received(&payload);
                }
            }
            Some(ProviderEvent::Accepted {
                upstream_request_id,
            }) => {
                attempt.accepted = true;
                attempt.upstream_request_id = upstream_request_id;
            }
            Some(ProviderEvent::Message(m)) => self.on_message(*m, ctx),
            Some(ProviderEvent::Frames(f)) => {
                if attempt.first_event.is_none() {
                    attempt.first_event = Some(now);
                    if stream {
                        ctx.run_later(idle, move |act, ctx| act.check_idle(id, ctx));
                    }
                }
                self.on_frames(f, ctx)
            }
            Some(ProviderEvent::End) => self.on_end(ctx),
            Some(ProviderEvent::Failed(e)) => self.on_failed(*e, ctx),
            None => self.on_failed(
                UpstreamError::transient("upstream attempt ended without a result"),
                ctx,
            ),
        }
    }

    /// An attempt's channel closing says nothing about the session: do not stop.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<ClientGone> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: ClientGone, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        if self.outcome.is_none() {
            self.client_gone(ctx);
        }
    }
}

/// Starts a session and waits for its head; used by the HTTP handler.
pub async fn run(
    init: SessionInit,
    state: web::Data<AppState>,
    workers: web::Data<WorkerActors>,
) -> (Option<ClientGuard>, Result<SessionHead, GatewayError>) {
    let (addr, head) = SessionActor::spawn(init, state.into_inner(), workers.into_inner());
    let guard = ClientGuard(addr);
    match head.await {
        Ok(head) => (Some(guard), Ok(head)),
        Err(_) => (
            None,
            Err(GatewayError::Internal(
                "the session ended without an answer".into(),
            )),
        ),
    }
}
