//! The [`SessionActor`]: one per request, on the worker that accepted it. It owns the request's
//! life: admission by the worker's `RateLimiterActor`, attempts on the worker's `ProviderActor`s,
//! and the channel that carries SSE frames to the client. When a send to the client fails, or the
//! client's body is dropped, the session stops and its upstream attempt is dropped with it.

mod client;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

pub use client::{ClientBody, ClientGuard};

use crate::api::auth::ApiKey;
use crate::config::Strictness;
use crate::error::GatewayError;
use crate::protocol::anthropic::{
    events, EventKind, Frame, MessageDeltaSummary, MessageStartSummary, Usage,
};
use crate::protocol::request::MessagesRequest;
use crate::protocol::validate::ApiVersion;
use crate::providers::{
    Call, Dispatch, FailureClass, ProviderEvent, UpstreamError, UpstreamMessage,
};
use crate::ratelimit::{Admit, ConcurrencyPermit};
use crate::routing::{weighted_order, Deployment, Model};
use crate::state::{AppState, WorkerActors};
use crate::strictness::{StrictnessPlan, WARNINGS_HEADER};

/// Extra response headers (rate limits, warnings).
pub type HeaderList = Vec<(&'static str, String)>;

/// Everything the HTTP layer learned about a request before handing it to a session.
pub struct SessionInit {
    pub request_id: String,
    pub key: Arc<ApiKey>,
    pub request: Arc<MessagesRequest>,
    pub model: Arc<Model>,
    pub version: ApiVersion,
    pub anthropic_beta: Option<String>,
    pub beta_query: bool,
    pub strictness: Strictness,
    /// Candidates and per-deployment drops under that strictness (gateway.md §3).
    pub strictness_plan: Arc<StrictnessPlan>,
    pub session_id: Option<String>,
    pub received_at: Instant,
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
    /// The attempt produced its first event.
    answered: bool,
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
    candidates: VecDeque<Arc<Deployment>>,
    attempts: u32,
    attempt: Option<Attempt>,
    last_error: Option<(UpstreamError, String)>,
    usage: Usage,
    stop_reason: Option<String>,
    outcome: Option<Outcome>,
    first_byte: Option<Duration>,
}

impl SessionActor {
    /// Starts a session on the current worker; the receiver yields its response head.
    pub fn spawn(
        init: SessionInit,
        state: Arc<AppState>,
        workers: Arc<WorkerActors>,
    ) -> (Addr<SessionActor>, oneshot::Receiver<SessionHead>) {
        let (tx, rx) = oneshot::channel();
        let candidates = weighted_order(&init.strictness_plan.candidates, &mut rand::rng()).into();
        let actor = SessionActor {
            init,
            state,
            workers,
            head: Some(tx),
            headers: Vec::new(),
            out: None,
            _permit: None,
            candidates,
            attempts: 0,
            attempt: None,
            last_error: None,
            usage: Usage::default(),
            stop_reason: None,
            outcome: None,
            first_byte: None,
        };
        (actor.start(), rx)
    }

    fn stream(&self) -> bool {
        self.init.request.stream
    }

    /// Sends the next attempt to the next candidate's provider actor on this worker.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let Some(deployment) = self.candidates.pop_front() else {
            let err = self.exhausted_error();
            return self.fail(err, ctx);
        };
        self.attempts += 1;
        let id = self.attempts;
        let call = Call {
            request: self.init.request.clone(),
            upstream_model: deployment.upstream_model.clone(),
            client_model: self.init.request.model.clone(),
            stream: self.stream(),
            anthropic_version: self.init.version.as_str(),
            anthropic_beta: self.init.anthropic_beta.clone(),
            beta_query: self.init.beta_query,
            request_id: self.init.request_id.clone(),
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
        self.attempt = Some(Attempt {
            id,
            deployment,
            handle,
            answered: false,
        });
    }

    /// The error once no candidate is left (gateway.md §7.5).
    fn exhausted_error(&self) -> GatewayError {
        match &self.last_error {
            None => GatewayError::Overloaded {
                message: format!(
                    "no deployment available for model \"{}\"",
                    self.init.model.id()
                ),
                retry_after: Duration::from_secs(1),
            },
            Some((e, deployment)) => {
                let last = match e.status {
                    Some(s) => format!("{s} from {deployment}"),
                    None => format!("{} ({deployment})", e.message),
                };
                let n = self.attempts;
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
        }
    }

    fn on_failed(&mut self, err: UpstreamError, ctx: &mut Context<Self>) {
        let deployment = self
            .attempt
            .take()
            .map(|a| a.deployment.name.clone())
            .unwrap_or_default();
        tracing::warn!(
            request_id = %self.init.request_id,
            deployment = %deployment,
            status = err.status,
            class = err.class.as_str(),
            "upstream attempt failed: {}",
            err.message
        );
        if self.head.is_none() {
            // The stream has started: the failure goes in-band.
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
        self.last_error = Some((err, deployment));
        self.dispatch(ctx);
    }

    fn on_message(&mut self, msg: UpstreamMessage, ctx: &mut Context<Self>) {
        self.usage = msg.usage;
        self.stop_reason = msg.stop_reason;
        let headers = std::mem::take(&mut self.headers);
        self.answer(
            SessionHead::Json {
                body: msg.body,
                headers,
            },
            ctx,
        );
        self.finish(200, None, ctx);
    }

    /// Opens the client stream on the first upstream event.
    fn open_stream(&mut self, ctx: &mut Context<Self>) {
        let (tx, rx) = mpsc::channel(CLIENT_CHANNEL);
        let headers = std::mem::take(&mut self.headers);
        self.first_byte = Some(self.init.received_at.elapsed());
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
        if self.head.is_some() {
            self.open_stream(ctx);
        }
        let mut buf = BytesMut::new();
        let mut terminal = None;
        for frame in &frames {
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
                }
                EventKind::MessageStop => terminal = Some((200, None)),
                EventKind::Error => terminal = Some((200, Some(error_frame_type(&frame.data)))),
                _ => {}
            }
            buf.extend_from_slice(&frame.encode());
            if terminal.is_some() {
                break;
            }
        }
        if !buf.is_empty() {
            self.write(buf.freeze(), ctx);
        }
        if let Some((status, error_type)) = terminal {
            self.finish(status, error_type, ctx);
        }
    }

    fn on_end(&mut self, ctx: &mut Context<Self>) {
        if self.outcome.is_some() {
            return;
        }
        let err = UpstreamError::transient("upstream stream ended before completion");
        self.on_failed(err, ctx);
    }

    /// Answers with an error: an HTTP error before the first byte, an `event: error` frame after.
    fn fail(&mut self, error: GatewayError, ctx: &mut Context<Self>) {
        let status = if self.head.is_some() {
            error.status().as_u16()
        } else {
            200
        };
        let error_type = Some(error.error_type().to_string());
        if self.head.is_some() {
            let headers = std::mem::take(&mut self.headers);
            self.answer(SessionHead::Error { error, headers }, ctx);
        } else {
            let frame = error.sse_frame(&self.init.request_id);
            self.write(frame, ctx);
        }
        self.finish(status, error_type, ctx);
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
        }
        if let Some(a) = self.attempt.take() {
            ctx.cancel_future(a.handle);
        }
        match &mut self.out {
            Some(w) if w.waiting => w.closing = true,
            _ => {
                self.out = None;
                ctx.stop();
            }
        }
    }

    fn client_gone(&mut self, ctx: &mut Context<Self>) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome {
                status: 499,
                error_type: Some("client_closed".into()),
            });
        }
        self.out = None;
        ctx.stop();
    }

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
        if self.stream() {
            let interval = Duration::from_millis(self.state.config.stream.ping_interval_ms);
            ctx.run_interval(interval, |act, ctx| act.ping(ctx));
        }
        let admit = self.workers.limiter.send(Admit {
            key: self.init.key.clone(),
        });
        ctx.wait(admit.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ok(admission)) => {
                act._permit = admission.permit;
                act.headers.extend(admission.headers);
                act.dispatch(ctx);
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
        let outcome = self.outcome.take().unwrap_or(Outcome {
            status: 500,
            error_type: Some("api_error".into()),
        });
        tracing::info!(
            request_id = %self.init.request_id,
            key = %self.init.key.name,
            session_id = self.init.session_id.as_deref().unwrap_or(""),
            model = %self.init.model.id(),
            stream = self.stream(),
            status = outcome.status,
            error_type = outcome.error_type.as_deref().unwrap_or(""),
            attempts = self.attempts,
            stop_reason = self.stop_reason.as_deref().unwrap_or(""),
            input_tokens = self.usage.input_tokens,
            output_tokens = self.usage.output_tokens,
            ttfb_ms = self.first_byte.map(|d| d.as_millis() as u64),
            total_ms = self.init.received_at.elapsed().as_millis() as u64,
            "request"
        );
    }
}

impl StreamHandler<Upstream> for SessionActor {
    fn handle(&mut self, Upstream(id, event): Upstream, ctx: &mut Context<Self>) {
        let Some(attempt) = self.attempt.as_mut().filter(|a| a.id == id) else {
            return;
        };
        attempt.answered = true;
        match event {
            Some(ProviderEvent::Message(m)) => self.on_message(m, ctx),
            Some(ProviderEvent::Frames(f)) => self.on_frames(f, ctx),
            Some(ProviderEvent::End) => self.on_end(ctx),
            Some(ProviderEvent::Failed(e)) => self.on_failed(e, ctx),
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
