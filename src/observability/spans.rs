//! The tracing spans of gateway.md §11. Actors handle messages on their own, so a span is kept
//! on the actor and entered in each handler (`let _e = span.enter();`), not held across awaits.

use actix_web::http::header::HeaderMap;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{KeyValue, Value};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::otlp;
use super::RequestRecord;
use crate::protocol::request::MessagesRequest;

/// The server span of one API request when spans are exported (else `Span::none()`, which costs
/// nothing): the parent of the `request` span, and itself a child of an incoming W3C
/// `traceparent`. Its GenAI attributes are set as the request becomes known.
pub fn server(headers: &HeaderMap, request_id: &str) -> Span {
    if !otlp::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "server",
        otel.name = "chat",
        otel.kind = "server",
        request_id = %request_id,
    );
    let parent = otlp::extract(headers);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    set(
        &span,
        [KeyValue::new("aigw.request_id", request_id.to_string())],
    );
    span
}

/// What is known once a request is admitted: the client's model and limits.
pub fn server_admitted(span: &Span, request: &MessagesRequest) {
    if span.is_none() {
        return;
    }
    span.context()
        .span()
        .update_name(format!("chat {}", request.model));
    set(
        span,
        [
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", request.model.clone()),
            KeyValue::new("gen_ai.request.max_tokens", request.max_tokens as i64),
            KeyValue::new("aigw.stream", request.stream),
        ],
    );
}

/// The outcome of the request, from its record: usage, finish reason, who answered.
pub fn server_done(span: &Span, r: &RequestRecord, provider_kind: Option<&'static str>) {
    if span.is_none() {
        return;
    }
    let mut attrs = vec![
        KeyValue::new("http.response.status_code", r.status as i64),
        KeyValue::new("gen_ai.usage.input_tokens", r.usage.input_tokens as i64),
        KeyValue::new("gen_ai.usage.output_tokens", r.usage.output_tokens as i64),
        KeyValue::new(
            "aigw.usage.cache_read_input_tokens",
            r.usage.cache_read_input_tokens as i64,
        ),
        KeyValue::new(
            "aigw.usage.cache_creation_input_tokens",
            r.usage.cache_creation_input_tokens as i64,
        ),
        KeyValue::new("aigw.overhead_ms", r.overhead().as_secs_f64() * 1000.0),
        KeyValue::new("aigw.rounds", r.rounds as i64),
        KeyValue::new("aigw.attempts", r.attempts.len() as i64),
    ];
    let mut opt = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            attrs.push(KeyValue::new(k, v.clone()));
        }
    };
    opt("aigw.key_name", &r.key_name);
    opt("aigw.session_id", &r.session_id);
    opt("aigw.provider", &r.provider);
    opt("gen_ai.response.model", &r.upstream_model);
    opt("aigw.model", &r.model);
    opt("aigw.deployment", &r.deployment);
    opt("error.type", &r.error_type);
    opt("gen_ai.request.model", &r.requested_model);
    if let Some(kind) = provider_kind {
        attrs.push(KeyValue::new("gen_ai.provider.name", kind));
    }
    if let Some(reason) = &r.stop_reason {
        attrs.push(KeyValue::new(
            "gen_ai.response.finish_reasons",
            Value::Array(vec![opentelemetry::StringValue::from(reason.clone())].into()),
        ));
    }
    set(span, attrs);
    if let Some(kind) = &r.error_type {
        span.set_status(opentelemetry::trace::Status::error(kind.clone()));
    }
}

fn set(span: &Span, attrs: impl IntoIterator<Item = KeyValue>) {
    for a in attrs {
        span.set_attribute(a.key, a.value);
    }
}

/// The `traceparent` for an upstream request made inside `span` (`None` without export).
pub fn traceparent(span: &Span) -> Option<String> {
    if !otlp::enabled() || span.is_none() {
        return None;
    }
    otlp::traceparent(&span.context())
}

/// One API request: everything logged while handling it carries these fields.
pub fn request(
    request_id: &str,
    key: &str,
    session_id: Option<&str>,
    model: &str,
    stream: bool,
) -> Span {
    tracing::info_span!(
        "request",
        request_id = %request_id,
        key = %key,
        session_id = session_id.unwrap_or(""),
        model = %model,
        stream,
    )
}

/// One upstream attempt; `status` and `class` are filled by [`attempt_done`]. Exported, it is a
/// client span, in error when the attempt failed.
pub fn attempt(deployment: &str, upstream_model: &str, round: u32, attempt: u32) -> Span {
    let span = tracing::info_span!(
        "attempt",
        deployment = %deployment,
        upstream_model = %upstream_model,
        round,
        attempt,
        status = Empty,
        class = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
    );
    if otlp::enabled() {
        span.record("otel.kind", "client");
    }
    span
}

/// Records how an attempt ended (`class` is `success` or a failure class).
pub fn attempt_done(span: &Span, status: Option<u16>, class: &str) {
    if let Some(s) = status {
        span.record("status", s);
    }
    span.record("class", class);
    if class != "success" && otlp::enabled() {
        span.record("otel.status_code", "error");
    }
}

/// One gateway tool call; `outcome` is filled by [`tool_done`].
pub fn tool(tool: &str, tool_use_id: &str) -> Span {
    tracing::info_span!("tool", tool = %tool, tool_use_id = %tool_use_id, outcome = Empty)
}

pub fn tool_done(span: &Span, outcome: &str) {
    span.record("outcome", outcome);
}
