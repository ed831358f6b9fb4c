//! Health, readiness and the fallback for unknown routes.

use actix_web::{HttpRequest, HttpResponse};

use super::request_id;
use crate::error::GatewayError;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// Ready once the config is loaded and the listeners are up, which is true whenever this runs.
/// Upstream health never affects readiness.
pub async fn readyz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ready"}"#)
}

pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let err = GatewayError::NotFound(format!("not found: {} {}", req.method(), req.path()));
    err.to_response(&request_id(&req), None)
}
