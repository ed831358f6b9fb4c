//! Health, readiness, metrics and the fallback for unknown routes. None of them is authenticated.

use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::{request_id, CurrentState};
use crate::error::GatewayError;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// Ready once the config is loaded, the listeners are up (both true whenever this runs) and the
/// request log writer is alive. Upstream health never affects readiness. In cluster mode an
/// unreachable Redis leaves the gateway ready (it falls back or refuses per `on_redis_error`) and
/// is listed as `shared_state_degraded`.
pub async fn readyz(CurrentState(state): CurrentState) -> HttpResponse {
    let reasons: Vec<&str> = state
        .request_log
        .as_ref()
        .and_then(|log| log.unhealthy())
        .into_iter()
        .collect();
    let degraded = state.redis.as_ref().is_some_and(|r| r.degraded());
    if reasons.is_empty() {
        let body = if degraded {
            r#"{"status":"ready","reasons":["shared_state_degraded"]}"#
        } else {
            r#"{"status":"ready"}"#
        };
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(body);
    }
    let mut reasons = reasons;
    if degraded {
        reasons.push("shared_state_degraded");
    }
    HttpResponse::ServiceUnavailable()
        .content_type("application/json")
        .body(json!({"status": "not_ready", "reasons": reasons}).to_string())
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(CurrentState(state): CurrentState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&state.models))
}

pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let err = GatewayError::NotFound(format!("not found: {} {}", req.method(), req.path()));
    err.to_response(&request_id(&req), None)
}
