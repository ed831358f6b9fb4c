//! Observability (gateway.md §11): Prometheus metrics, the SQLite request log, tracing spans.
//!
//! Every API request ends in exactly one [`record`] call with its [`RequestRecord`] (through
//! `AppState::record`): the `SessionActor` makes it when it stops, the HTTP handlers for requests
//! refused before a session exists and for the other endpoints. That call updates the metrics,
//! logs one `request` line and queues the log row.

pub mod metrics;
pub mod otlp;
pub mod record;
pub mod request_log;
pub mod spans;

pub use metrics::Metrics;
pub use record::{Endpoint, RequestRecord};
pub use request_log::RequestLog;

/// Accounts for one finished request: metrics, a log line, the request log row.
/// `provider_kind` is the answering provider's kind, for the server span.
pub fn record(
    metrics: &Metrics,
    log: Option<&RequestLog>,
    mut record: RequestRecord,
    provider_kind: Option<&'static str>,
) {
    metrics.observe(&record);
    // The server span ends here, not when the row is written on the log's thread.
    if let Some(span) = record.trace.take() {
        spans::server_done(&span, &record, provider_kind);
    }
    tracing::info!(
        request_id = %record.request_id,
        endpoint = record.endpoint.as_str(),
        key = record.key_name.as_deref().unwrap_or(""),
        session_id = record.session_id.as_deref().unwrap_or(""),
        model = record.model.as_deref().or(record.requested_model.as_deref()).unwrap_or(""),
        deployment = record.deployment.as_deref().unwrap_or(""),
        stream = record.stream,
        status = record.status,
        error_type = record.error_type.as_deref().unwrap_or(""),
        attempts = record.attempts.len(),
        stop_reason = record.stop_reason.as_deref().unwrap_or(""),
        input_tokens = record.usage.input_tokens,
        output_tokens = record.usage.output_tokens,
        ttft_ms = record.ttft.map(|d| d.as_millis() as u64),
        total_ms = record.total.as_millis() as u64,
        "request"
    );
    if let Some(log) = log {
        log.push(record);
    }
}
