//! The attempts of a session: the plan's steps (retries, fallback, backoff), each attempt on
//! this worker's provider actor with its timers (ttft, attempt, idle), the breaker verdict (a
//! half-open probe is a guard, freed if the attempt is dropped) and the attempt log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::attempts::{AttemptPlan, Step};
use super::debug::AttemptRecord;
use super::{Purpose, SessionActor, SessionHead};
use crate::api::count_tokens::ESTIMATE_HEADER;
use crate::error::GatewayError;
use crate::observability::spans;
use crate::protocol::capabilities::Warning;
use crate::providers::{Call, Dispatch, FailureClass, ProviderEvent, UpstreamError};
use crate::routing::shared::{self, Permit, SharedAdmission};
use crate::routing::{Deployment, Verdict};
use crate::strictness::WARNINGS_HEADER;

/// Provider events queued towards the session.
const UPSTREAM_CHANNEL: usize = 16;

/// An event of attempt `.0`; `None` when that attempt's channel closed.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Upstream(u32, Option<ProviderEvent>);

/// The attempts of the whole session (all rounds).
pub(super) struct Attempts {
    pub(super) plan: AttemptPlan,
    /// The attempt in flight.
    pub(super) current: Option<Attempt>,
    pub(super) log: Vec<AttemptRecord>,
    pub(super) last_error: Option<(UpstreamError, String)>,
    /// Earliest time a skipped (open) deployment becomes available again.
    pub(super) skipped_until: Option<Instant>,
    /// Attempts started over the whole request (all rounds); numbers them.
    pub(super) seq: u32,
    pub(super) upstream_start: Option<Instant>,
    pub(super) upstream_end: Option<Instant>,
}

pub(super) struct Attempt {
    pub(super) id: u32,
    pub(super) deployment: Arc<Deployment>,
    pub(super) handle: SpawnHandle,
    /// The right to call its deployment; when it is the half-open probe (local or the
    /// cluster's), dropping it without a verdict (the session stopped) frees the probe.
    pub(super) permit: Permit,
    pub(super) started: Instant,
    /// A 2xx head arrived.
    pub(super) accepted: bool,
    pub(super) first_event: Option<Instant>,
    pub(super) last_event: Instant,
    pub(super) upstream_request_id: Option<String>,
    /// What the translation of this attempt's reply changed (kept if it answers).
    pub(super) warnings: Vec<Warning>,
    pub(super) span: tracing::Span,
}

impl SessionActor {
    pub(super) fn step(&mut self, step: Step, ctx: &mut Context<Self>) {
        let Step::Try { deployment, delay } = step else {
            return self.give_up(ctx);
        };
        // The previous attempt (if any) is followed by this one after `delay`.
        if let Some(last) = self.attempts.log.last_mut() {
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
    pub(super) fn start_attempt(&mut self, deployment: Arc<Deployment>, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        if self.answer.outcome.is_some() {
            return;
        }
        let now = Instant::now();
        let permit = match shared::admit(&deployment, now) {
            SharedAdmission::Go(permit) => permit,
            SharedAdmission::No { until } => {
                self.attempts.skipped_until =
                    Some(self.attempts.skipped_until.map_or(until, |u| u.min(until)));
                let next = self.attempts.plan.next_candidate();
                return self.step(next, ctx);
            }
        };
        let Some(request) = self.round_request(&deployment, ctx) else {
            // A continuation's trailing calls run first; this attempt starts when they are done.
            return;
        };
        self.attempts.plan.started();
        self.attempts.seq += 1;
        let id = self.attempts.seq;
        self.attempts.upstream_start.get_or_insert(now);
        self.trace_with(|| format!("attempt.{id}.start {}", deployment.name));
        let attempt_span = spans::attempt(
            &deployment.name,
            &deployment.upstream_model,
            self.round(),
            id,
        );
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
            count: matches!(self.init.purpose, Purpose::CountTokens { .. }),
            client_headers: self.init.client_headers.clone(),
            traceparent: spans::traceparent(&attempt_span),
        };
        // The warnings are those of the deployment that answers.
        self.headers.retain(|(k, _)| *k != WARNINGS_HEADER);
        if let Some(w) = self.init.strictness_plan.warnings_header(&deployment) {
            self.headers.push((WARNINGS_HEADER, w));
        }
        let (tx, rx) = mpsc::channel(UPSTREAM_CHANNEL);
        self.workers.providers[deployment.provider_index].do_send(Dispatch { call, sink: tx });
        // Events wait while the client is not reading: the upstream then waits on us.
        let events = self
            .client
            .gated(rx)
            .map(move |e| Upstream(id, Some(e)))
            .chain(futures_util::stream::once(
                async move { Upstream(id, None) },
            ));
        let handle = ctx.add_stream(events);
        self.attempts.log.push(AttemptRecord {
            n: id,
            round: self.round(),
            deployment: deployment.name.clone(),
            status: None,
            class: None,
            duration: Duration::ZERO,
            retry_in: None,
            upstream_request_id: None,
        });
        self.attempts.current = Some(Attempt {
            id,
            deployment,
            handle,
            permit,
            started: now,
            accepted: false,
            first_event: None,
            last_event: now,
            upstream_request_id: None,
            warnings: Vec::new(),
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

    pub(super) fn current(&self, id: u32) -> bool {
        self.attempts.current.as_ref().is_some_and(|a| a.id == id)
    }

    /// Stream: no upstream event yet. Non-stream: no response head yet.
    pub(super) fn check_ttft(&mut self, id: u32, ctx: &mut Context<Self>) {
        let waiting = self
            .attempts
            .current
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
    pub(super) fn check_idle(&mut self, id: u32, ctx: &mut Context<Self>) {
        let idle = self.state.config.timeouts.idle();
        let blocked = self.client.blocked();
        let Some(a) = self.attempts.current.as_mut().filter(|a| a.id == id) else {
            return;
        };
        if blocked {
            // Not the upstream's silence: its events wait for the client.
            a.last_event = Instant::now();
        }
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

    pub(super) fn attempt_timed_out(&mut self, message: String, ctx: &mut Context<Self>) {
        // Timers run outside any handler.
        let span = self.span.clone();
        let _entered = span.enter();
        let mut err = UpstreamError::transient(message);
        err.timeout = true;
        self.on_failed(err, ctx);
    }

    /// Ends the current attempt: stops listening to it, tells its breaker, logs it.
    pub(super) fn close_attempt(
        &mut self,
        verdict: Verdict,
        status: Option<u16>,
        class: Option<&'static str>,
        ctx: &mut Context<Self>,
    ) {
        let Some(a) = self.attempts.current.take() else {
            return;
        };
        ctx.cancel_future(a.handle);
        spans::attempt_done(&a.span, status, class.unwrap_or("success"));
        let now = Instant::now();
        self.attempts.upstream_end = Some(now);
        a.permit.record(verdict, now);
        if verdict == Verdict::Success {
            self.answer.chosen = Some(a.deployment.clone());
            self.answer.reply_warnings.extend(a.warnings);
        }
        // A count says nothing about a deployment's answering speed.
        if verdict == Verdict::Success && self.init.purpose == Purpose::Messages {
            let ttft = a
                .first_event
                .unwrap_or(now)
                .saturating_duration_since(a.started);
            a.deployment
                .stats
                .record(ttft, now - a.started, self.answer.usage.output_tokens);
        }
        if let Some(rec) = self.attempts.log.iter_mut().rev().find(|r| r.n == a.id) {
            rec.status = status;
            rec.class = class;
            rec.duration = now - a.started;
            rec.upstream_request_id = a.upstream_request_id;
        }
    }

    pub(super) fn on_failed(&mut self, err: UpstreamError, ctx: &mut Context<Self>) {
        let deployment = self
            .attempts
            .current
            .as_ref()
            .map(|a| a.deployment.name.clone())
            .unwrap_or_default();
        let verdict = match err.class {
            FailureClass::ClientFault => Verdict::Success,
            FailureClass::RateLimited => Verdict::RateLimited {
                cooldown: self.attempts.plan.rate_limit_cooldown(&err),
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
        let step = self.attempts.plan.after_failure(&err, &mut rand::rng());
        self.attempts.last_error = Some((err, deployment));
        self.step(step, ctx);
    }

    /// No attempt left (gateway.md §7.5).
    pub(super) fn give_up(&mut self, ctx: &mut Context<Self>) {
        if let Purpose::CountTokens { estimate } = &self.init.purpose {
            // No upstream could count: the local estimate answers, and says so.
            let body = estimate.clone();
            let mut headers = std::mem::take(&mut self.headers);
            headers.push((ESTIMATE_HEADER, "true".into()));
            self.answer(SessionHead::Json { body, headers }, ctx);
            return self.finish(200, None, ctx);
        }
        let error = match &self.attempts.last_error {
            None => {
                let until = self.attempts.skipped_until.unwrap_or_else(Instant::now);
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
                let n = self.attempts.plan.started;
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
}

impl StreamHandler<Upstream> for SessionActor {
    fn handle(&mut self, Upstream(id, event): Upstream, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _entered = span.enter();
        let attempt_span = self.attempts.current.as_ref().map(|a| a.span.clone());
        let _in_attempt = attempt_span.as_ref().map(|s| s.enter());
        let stream = self.stream();
        let idle = self.state.config.timeouts.idle();
        let Some(attempt) = self.attempts.current.as_mut().filter(|a| a.id == id) else {
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
            Some(ProviderEvent::Warnings(w)) => attempt.warnings.extend(w),
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
