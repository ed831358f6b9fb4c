//! `POST /v1/messages/count_tokens` (messages-api.md §8, gateway.md §10): the same checks as
//! `/v1/messages`, one requests-per-minute cell, then a session over the model's Anthropic
//! deployments (order preference first, then config order) asks them to count, with the same
//! retries, fallbacks, timeouts, breaker accounting and error mapping as any request. Without
//! one (or when none could answer) the gateway estimates locally and says so with
//! `x-gateway-token-estimate: true`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::messages::{anthropic_beta, beta_query, check, refuse, Checked};
use super::{request_id, Current};
use crate::config::Strictness;
use crate::error::GatewayError;
use crate::observability::{Endpoint, RequestRecord};
use crate::protocol::token_estimate;
use crate::providers::ClientHeaders;
use crate::ratelimit::AdmitRequest;
use crate::routing::{Deployment, Model, RoutingPrefs};
use crate::session::{self, HeaderList, Purpose, SessionHead, SessionInit};
use crate::strictness::StrictnessPlan;

pub const ESTIMATE_HEADER: &str = "x-gateway-token-estimate";

pub async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    Current { state, workers }: Current,
) -> HttpResponse {
    let received_at = Instant::now();
    let request_id = request_id(&req);
    let mut record = RequestRecord::new(Endpoint::CountTokens, &request_id, SystemTime::now());
    let checked = match check(&req, payload, &state, &mut record).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(request_id = %request_id, status = e.status().as_u16(), error_type = e.error_type(), "rejected: {e}");
            return refuse(&state, record, received_at, &e);
        }
    };
    let admitted = workers
        .limiter
        .send(AdmitRequest {
            key: checked.key.clone(),
        })
        .await;
    let limit_headers = match admitted {
        Ok(Ok(headers)) => headers,
        Ok(Err(refusal)) => {
            let mut res = refuse(&state, record, received_at, &refusal.error);
            add_headers(&mut res, refusal.headers);
            return res;
        }
        Err(_) => {
            let e = GatewayError::Internal("rate limiter unavailable".into());
            return refuse(&state, record, received_at, &e);
        }
    };
    let prepared = match prepare(&req, checked, &mut record, received_at).await {
        Ok(p) => p,
        Err(e) => {
            let mut res = refuse(&state, record, received_at, &e);
            add_headers(&mut res, limit_headers);
            return res;
        }
    };
    let mut res = match prepared {
        Prepared::Local(body) => {
            record.total = received_at.elapsed();
            record.ttft = Some(record.total);
            state.record(record);
            HttpResponse::Ok()
                .content_type("application/json")
                .insert_header((ESTIMATE_HEADER, "true"))
                .body(body)
        }
        // The session answers, retries, falls back and records the row.
        Prepared::Session(init) => match session::run(*init, state, workers).await {
            (_, Ok(SessionHead::Json { body, headers })) => {
                let mut res = HttpResponse::Ok();
                res.content_type("application/json");
                for h in headers {
                    res.insert_header(h);
                }
                res.body(body)
            }
            (_, Ok(SessionHead::Error { error, headers, .. })) => {
                let mut res = error.to_response(&request_id, None);
                add_headers(&mut res, headers);
                res
            }
            (_, Ok(SessionHead::Stream { .. })) => {
                unreachable!("a count never streams")
            }
            (_, Err(e)) => e.to_response(&request_id, None),
        },
    };
    add_headers(&mut res, limit_headers);
    res
}

fn add_headers(res: &mut HttpResponse, headers: HeaderList) {
    for (k, v) in headers {
        if let Ok(v) = v.parse() {
            res.headers_mut()
                .insert(actix_web::http::header::HeaderName::from_static(k), v);
        }
    }
}

enum Prepared {
    /// No Anthropic deployment: the local estimate.
    Local(bytes::Bytes),
    Session(Box<SessionInit>),
}

/// A session over the Anthropic deployments (the local estimate its last resort), or the
/// estimate at once when there are none.
async fn prepare(
    req: &HttpRequest,
    checked: Checked,
    record: &mut RequestRecord,
    received_at: Instant,
) -> Result<Prepared, GatewayError> {
    let Checked {
        key,
        mut request,
        model,
        version,
        prefs,
        tools,
        session_id,
        ..
    } = checked;
    let candidates = anthropic_deployments(&model, &prefs);
    // Gateway tools count as the definitions the upstream would see (messages-api.md §8).
    if let Some(t) = tools.filter(|t| !t.set.is_empty()) {
        let native: &[String] = match candidates.first() {
            Some(d) => &d.provider.config.native_tools,
            None => &[],
        };
        let upstream = t.set.upstream_tools(&request.tools, native);
        request.set_field("tools", &Value::Array(upstream.clone()));
        request.tools = upstream;
    }
    // Off the worker: the tokenizer is built on first use (seconds in a debug build) and encoding
    // costs time in proportion to the body, while every other connection of the worker waits.
    let (system, messages, tools) = (
        request.system.clone(),
        request.messages.clone(),
        request.tools.clone(),
    );
    let n = web::block(move || token_estimate::estimate(system.as_ref(), &messages, &tools))
        .await
        .map_err(|_| GatewayError::Internal("the token estimate failed".into()))?;
    let estimate: bytes::Bytes = json!({"input_tokens": n}).to_string().into();
    if candidates.is_empty() {
        return Ok(Prepared::Local(estimate));
    }
    // Strictness does not apply to a count: nothing is dropped or reported.
    let Ok(plan) = StrictnessPlan::build(&request, &model, Strictness::Off, &key.name, None) else {
        return Ok(Prepared::Local(estimate));
    };
    let providers: Vec<_> = candidates.iter().map(|d| d.provider.clone()).collect();
    let client_headers = ClientHeaders::collect(req.headers(), &providers);
    Ok(Prepared::Session(Box::new(SessionInit {
        request_id: record.request_id.clone(),
        key,
        request: Arc::new(request),
        model,
        candidates,
        sort: "config",
        version,
        anthropic_beta: anthropic_beta(req.headers()),
        beta_query: beta_query(req),
        client_headers,
        strictness: Strictness::Off,
        strictness_plan: Arc::new(plan),
        session_id,
        debug: None,
        tools: None,
        token_estimate: 0,
        received_at,
        record: std::mem::take(record),
        purpose: Purpose::CountTokens { estimate },
    })))
}

/// The deployments that speak Anthropic (anthropic, bedrock, vertex) after `only` and
/// `ignore`: those named in `order` first, the rest in config order.
fn anthropic_deployments(model: &Model, prefs: &RoutingPrefs) -> Vec<Arc<Deployment>> {
    let admitted = |d: &&Arc<Deployment>| {
        d.provider.kind().speaks_anthropic()
            && prefs
                .only
                .as_ref()
                .is_none_or(|only| only.iter().any(|p| p == d.provider.name()))
            && !prefs.ignore.iter().any(|p| p == d.provider.name())
    };
    let mut candidates: Vec<Arc<Deployment>> =
        model.deployments.iter().filter(admitted).cloned().collect();
    // Providers named in `order` first, in that order; the rest keep config order.
    candidates.sort_by_key(|d| {
        prefs
            .order
            .iter()
            .position(|p| p == d.provider.name())
            .unwrap_or(usize::MAX)
    });
    candidates
}
