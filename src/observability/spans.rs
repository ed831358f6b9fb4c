//! The tracing spans of gateway.md §11. Actors handle messages on their own, so a span is kept
//! on the actor and entered in each handler (`let _e = span.enter();`), not held across awaits.

use tracing::field::Empty;
use tracing::Span;

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

/// One upstream attempt; `status` and `class` are filled by [`attempt_done`].
pub fn attempt(deployment: &str, upstream_model: &str, round: u32, attempt: u32) -> Span {
    tracing::info_span!(
        "attempt",
        deployment = %deployment,
        upstream_model = %upstream_model,
        round,
        attempt,
        status = Empty,
        class = Empty,
    )
}

/// Records how an attempt ended (`class` is `success` or a failure class).
pub fn attempt_done(span: &Span, status: Option<u16>, class: &str) {
    if let Some(s) = status {
        span.record("status", s);
    }
    span.record("class", class);
}

/// One gateway tool call; `outcome` is filled by [`tool_done`].
pub fn tool(tool: &str, tool_use_id: &str) -> Span {
    tracing::info_span!("tool", tool = %tool, tool_use_id = %tool_use_id, outcome = Empty)
}

pub fn tool_done(span: &Span, outcome: &str) {
    span.record("outcome", outcome);
}
