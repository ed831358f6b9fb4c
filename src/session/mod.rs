//! The [`SessionActor`]: one per upstream call, on the worker that accepted it — a client's
//! request, a `count_tokens`, or a gateway tool's nested call ([`Purpose`]). It owns the call's
//! life: admission by the worker's `RateLimiterActor`, attempts on the worker's `ProviderActor`s,
//! and the channel that carries SSE frames to the client. When the client's body is dropped,
//! or it stops reading for `timeouts.client_write_ms`, the session stops and its upstream
//! attempt is dropped with it.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the actor: its init, life cycle (admission, total timer, stop) and request record |
//! | `attempt.rs` | each attempt: dispatch, ttft/attempt/idle timers, breaker verdict, attempt log |
//! | `attempts.rs` | the pure attempt plan: retries, fallback order, backoff |
//! | `turn.rs` | a passthrough turn, and answering, failing and finishing |
//! | `looping.rs` | the tool loop's turns (gateway.md §6) over the pure state in `tool_loop.rs` and `relay.rs` |
//! | `stream.rs`, `client.rs` | the client stream: bounded channel, backpressure gate, flush deadline, pings |
//! | `nested.rs` | the advisor's nested call, as a session of its own |
//! | `debug.rs` | the `debug` object |

mod attempt;
mod attempts;
mod client;
pub mod debug;
mod looping;
mod nested;
mod relay;
mod stream;
pub mod tool_loop;
mod turn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use client::{ClientBody, ClientGuard};
pub use debug::DebugFlags;

use attempt::Attempts;
use attempts::AttemptPlan;
use debug::DebugRecorder;
use looping::Looping;
use turn::Answer;

use crate::api::auth::ApiKey;
use crate::config::Strictness;
use crate::error::GatewayError;
use crate::observability::{spans, RequestRecord};
use crate::protocol::request::MessagesRequest;
use crate::protocol::validate::ApiVersion;
use crate::providers::ClientHeaders;
use crate::ratelimit::{Admit, ConcurrencyPermit};
use crate::routing::{Deployment, Model};
use crate::state::{AppState, WorkerActors};
use crate::strictness::StrictnessPlan;
use crate::tools::{ToolChoice, ToolSet};
use stream::ClientStream;
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
    /// The client headers providers may forward (`forward_headers`).
    pub client_headers: ClientHeaders,
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
    pub purpose: Purpose,
}

/// Whom a session answers. Every upstream call is a session, so each gets the same attempts,
/// retries, fallbacks, timeouts, breaker accounting and error mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A client's `/v1/messages` request: admitted, settled and recorded by this session.
    Messages,
    /// `count_tokens` (admitted by its handler): attempts ask the upstream to count; when none
    /// can, `estimate` (the local count) answers, marked `x-gateway-token-estimate: true`.
    CountTokens { estimate: Bytes },
    /// A gateway tool's nested call (the advisor): its caller's session admitted the request,
    /// and adds its usage to its own totals and row.
    Nested,
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

#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientGone;

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
    client: ClientStream,
    _permit: Option<ConcurrencyPermit>,
    attempts: Attempts,
    answer: Answer,
    debug: Option<DebugRecorder>,
    /// The tool loop's turns (gateway.md §6), when gateway tools are declared.
    looping: Looping,
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
            client: ClientStream::new(),
            _permit: None,
            attempts: Attempts {
                plan,
                current: None,
                log: Vec::new(),
                last_error: None,
                skipped_until: None,
                seq: 0,
                upstream_start: None,
                upstream_end: None,
            },
            answer: Answer {
                debited,
                ..Answer::default()
            },
            debug,
            looping: Looping {
                state: tool_loop,
                ..Looping::default()
            },
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
        ctx.run_later(cfg.timeouts.total(), |act, ctx| act.total_timeout(ctx));
        if !self.init.key.has_limits() || self.init.purpose != Purpose::Messages {
            // Nothing to admit (or the caller did): no round trip to the limiter.
            self.trace("admitted");
            let step = self.attempts.plan.next_candidate();
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
                let step = act.attempts.plan.next_candidate();
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
        // A probe still running is abandoned by its guard.
        self.attempts.current = None;
        // Without an outcome the worker is shutting down (the grace period is over).
        let outcome = self
            .answer
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
        if self.init.purpose == Purpose::Nested {
            // Part of its caller's request, which is counted and logged once.
            return;
        }
        let mut r = std::mem::take(&mut self.init.record);
        let chosen = self.answer.chosen.as_ref().or_else(|| {
            // A failed request: the deployment asked last.
            let last = self.attempts.log.last()?;
            self.init
                .candidates
                .iter()
                .find(|d| d.name == last.deployment)
        });
        if let Some(d) = chosen {
            r.deployment = Some(d.name.clone());
            r.provider = Some(d.provider.name().to_string());
            r.upstream_model = Some(d.upstream_model.clone());
            r.price = self.answer.chosen.as_ref().and(d.price);
        }
        r.status = outcome.status;
        r.error_type = outcome.error_type;
        r.stop_reason = self.answer.stop_reason.clone();
        r.usage = self.usage();
        r.rounds = self.round();
        if let Some(lp) = &self.looping.state {
            r.server_tool_use = lp.counters;
        }
        r.attempts = std::mem::take(&mut self.attempts.log);
        for a in r.attempts.iter_mut() {
            // Still running when the session ended.
            if a.status.is_none() && a.class.is_none() {
                a.class = Some("abandoned");
            }
        }
        r.total = self.init.received_at.elapsed();
        r.ttft = self.answer.first_byte;
        r.upstream = match self.attempts.upstream_start {
            Some(s) => self
                .attempts
                .upstream_end
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(s),
            None => Duration::ZERO,
        };
        self.state.record(r);
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

impl Handler<ClientGone> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: ClientGone, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        if self.answer.outcome.is_none() {
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
