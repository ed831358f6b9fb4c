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
/// request log writer is alive. Upstream health never affects readiness.
pub async fn readyz(CurrentState(state): CurrentState) -> HttpResponse {
    let reasons: Vec<&str> = state
        .request_log
        .as_ref()
        .and_then(|log| log.unhealthy())
        .into_iter()
        .collect();
    if reasons.is_empty() {
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"status":"ready"}"#);
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
