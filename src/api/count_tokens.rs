//! `POST /v1/messages/count_tokens` (messages-api.md §8, gateway.md §10): the same checks as
//! `/v1/messages`, one requests-per-minute cell, then the first Anthropic deployment answers
//! natively; without one (or when it fails) the gateway estimates locally and says so with
//! `x-gateway-token-estimate: true`.

use std::time::{Instant, SystemTime};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::messages::{anthropic_beta, beta_query, check, refuse, Checked};
use super::request_id;
use crate::config::ProviderKind;
use crate::error::GatewayError;
use crate::observability::{self, Endpoint, RequestRecord};
use crate::protocol::token_estimate;
use crate::providers::{CountCall, CountTokens, FailureClass};
use crate::ratelimit::{AdmitRequest, LimitHeaders};
use crate::routing::{Deployment, Model, RoutingPrefs};
use crate::session::debug::AttemptRecord;
use crate::state::{AppState, WorkerActors};

pub const ESTIMATE_HEADER: &str = "x-gateway-token-estimate";

pub async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    workers: web::Data<WorkerActors>,
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
    let result = count(&req, &workers, checked, &mut record).await;
    record.total = received_at.elapsed();
    let mut res = match result {
        Ok((body, estimated)) => {
            record.ttft = Some(record.total);
            let mut res = HttpResponse::Ok();
            res.content_type("application/json");
            if estimated {
                res.insert_header((ESTIMATE_HEADER, "true"));
            }
            res.body(body)
        }
        Err(e) => {
            record.status = e.status().as_u16();
            record.error_type = Some(e.error_type().to_string());
            e.to_response(&request_id, None)
        }
    };
    add_headers(&mut res, limit_headers);
    observability::record(&state, record);
    res
}

fn add_headers(res: &mut HttpResponse, headers: LimitHeaders) {
    for (k, v) in headers {
        if let Ok(v) = v.parse() {
            res.headers_mut()
                .insert(actix_web::http::header::HeaderName::from_static(k), v);
        }
    }
}

/// The body and whether it is the local estimate.
async fn count(
    req: &HttpRequest,
    workers: &WorkerActors,
    checked: Checked,
    record: &mut RequestRecord,
) -> Result<(bytes::Bytes, bool), GatewayError> {
    let Checked {
        mut request,
        model,
        version,
        prefs,
        tools,
        ..
    } = checked;
    // Gateway tools count as the definitions the upstream would see (messages-api.md §8).
    if let Some(t) = tools.filter(|t| !t.set.is_empty()) {
        let native: &[String] = match first_anthropic(&model, &prefs) {
            Some(d) => &d.provider.config.native_tools,
            None => &[],
        };
        let upstream = t.set.upstream_tools(&request.tools, native);
        request.set_field("tools", &Value::Array(upstream.clone()));
        request.tools = upstream;
    }

    if let Some(d) = first_anthropic(&model, &prefs) {
        record.deployment = Some(d.name.clone());
        record.provider = Some(d.provider.name().to_string());
        record.upstream_model = Some(d.upstream_model.clone());
        let call = CountCall {
            body: request.anthropic_body(&d.upstream_model, &[]).into(),
            anthropic_version: version.as_str(),
            anthropic_beta: anthropic_beta(req.headers()),
            beta_query: beta_query(req),
        };
        let started = Instant::now();
        let reply = workers.providers[d.provider_index]
            .send(CountTokens { call })
            .await;
        let mut attempt = AttemptRecord {
            n: 1,
            round: 1,
            deployment: d.name.clone(),
            status: None,
            class: None,
            duration: started.elapsed(),
            retry_in: None,
            upstream_request_id: None,
        };
        record.upstream = attempt.duration;
        let reply = match reply {
            Ok(r) => r,
            Err(_) => Err(crate::providers::UpstreamError::transient(
                "provider actor unavailable",
            )),
        };
        match reply {
            Ok(body) => {
                attempt.status = Some(200);
                record.attempts.push(attempt);
                return Ok((body, false));
            }
            Err(e) => {
                attempt.status = e.status;
                attempt.class = Some(e.class.as_str());
                record.attempts.push(attempt);
                if e.class == FailureClass::ClientFault {
                    return Err(GatewayError::invalid(format!("upstream: {}", e.message)));
                }
                tracing::warn!(
                    deployment = %d.name,
                    status = e.status,
                    class = e.class.as_str(),
                    "count_tokens upstream failed, answering with the local estimate: {}",
                    e.message
                );
            }
        }
    }
    // Off the worker: the tokenizer is built on first use (seconds in a debug build) and encoding
    // costs time in proportion to the body, while every other connection of the worker waits.
    let (system, messages, tools) = (request.system, request.messages, request.tools);
    let n = web::block(move || token_estimate::estimate(system.as_ref(), &messages, &tools))
        .await
        .map_err(|_| GatewayError::Internal("the token estimate failed".into()))?;
    Ok((json!({"input_tokens": n}).to_string().into(), true))
}

/// The first Anthropic-kind deployment after `order`, `only` and `ignore`, in config order.
fn first_anthropic<'m>(model: &'m Model, prefs: &RoutingPrefs) -> Option<&'m Deployment> {
    let admitted = |d: &&'m Deployment| {
        d.provider.kind() == ProviderKind::Anthropic
            && prefs
                .only
                .as_ref()
                .is_none_or(|only| only.iter().any(|p| p == d.provider.name()))
            && !prefs.ignore.iter().any(|p| p == d.provider.name())
    };
    let mut candidates: Vec<&Deployment> = model
        .deployments
        .iter()
        .map(|d| &**d)
        .filter(admitted)
        .collect();
    // Providers named in `order` first, in that order; the rest keep config order.
    candidates.sort_by_key(|d| {
        prefs
            .order
            .iter()
            .position(|p| p == d.provider.name())
            .unwrap_or(usize::MAX)
    });
    candidates.first().copied()
}
