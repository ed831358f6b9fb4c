//! The gateway's error type and its one mapping to the Anthropic error envelope and HTTP status
//! (messages-api.md §6). Before the first byte an error is an HTTP response; after it, the same
//! JSON goes out as an `event: error` frame.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::protocol::sse;

/// A wire type of the envelope, kept with the other protocol types (pure code reports
/// problems in it without depending on this layer).
pub use crate::protocol::anthropic::ErrorDetail;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// 400: validation, strictness, version rules, client-caused upstream 4xx.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        details: Vec<ErrorDetail>,
    },
    /// 401.
    #[error("{0}")]
    Authentication(String),
    /// 403.
    #[error("{0}")]
    Permission(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 413.
    #[error("{0}")]
    RequestTooLarge(String),
    /// 429 from the gateway's own per-key limits.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// 500: a fault of the gateway itself.
    #[error("{0}")]
    Internal(String),
    /// 502: every upstream attempt failed. `transient` says whether retrying may help.
    #[error("{message}")]
    UpstreamFailed { message: String, transient: bool },
    /// 504 before the first byte; `timeout_error` frame after it.
    #[error("{0}")]
    Timeout(String),
    /// 529: no deployment available.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Duration,
    },
    /// An in-band error whose type came from the upstream (an Anthropic `event: error` frame).
    /// Only ever sent as a frame; as a response it is a 502.
    #[error("{message}")]
    UpstreamStream { error_type: String, message: String },
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A 400 whose message is the first detail, as `"<param>: <reason>"` (messages-api.md §3.5).
    pub fn from_details(details: Vec<ErrorDetail>) -> Self {
        let message = details
            .first()
            .map(|d| format!("{}: {}", d.param, d.reason))
            .unwrap_or_else(|| "invalid request".into());
        Self::InvalidRequest { message, details }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Authentication(_) => StatusCode::UNAUTHORIZED,
            Self::Permission(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RequestTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UpstreamFailed { .. } | Self::UpstreamStream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Overloaded { .. } => StatusCode::from_u16(529).expect("529 is a valid status"),
        }
    }

    pub fn error_type(&self) -> &str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request_error",
            Self::Authentication(_) => "authentication_error",
            Self::Permission(_) => "permission_error",
            Self::NotFound(_) => "not_found_error",
            Self::RequestTooLarge(_) => "request_too_large",
            Self::RateLimited { .. } => "rate_limit_error",
            Self::Internal(_) | Self::UpstreamFailed { .. } => "api_error",
            Self::Timeout(_) => "timeout_error",
            Self::Overloaded { .. } => "overloaded_error",
            Self::UpstreamStream { error_type, .. } => error_type,
        }
    }

    /// `x-should-retry` (messages-api.md §6.3); `None` leaves the SDK's own rule in force.
    pub fn should_retry(&self) -> Option<bool> {
        match self {
            Self::InvalidRequest { .. }
            | Self::Authentication(_)
            | Self::Permission(_)
            | Self::NotFound(_)
            | Self::RequestTooLarge(_) => Some(false),
            Self::RateLimited { .. } | Self::Overloaded { .. } | Self::Timeout(_) => Some(true),
            Self::UpstreamFailed { transient, .. } => Some(*transient),
            Self::Internal(_) | Self::UpstreamStream { .. } => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Overloaded { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The JSON error envelope: `{"type":"error","error":{…},"request_id":…}`, plus `debug` when given.
    pub fn envelope(&self, request_id: &str, debug: Option<&Value>) -> Vec<u8> {
        #[derive(Serialize)]
        struct Inner<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            message: String,
            #[serde(skip_serializing_if = "<[ErrorDetail]>::is_empty")]
            details: &'a [ErrorDetail],
        }
        #[derive(Serialize)]
        struct Envelope<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            error: Inner<'a>,
            request_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            debug: Option<&'a Value>,
        }
        let details: &[ErrorDetail] = match self {
            Self::InvalidRequest { details, .. } => details,
            _ => &[],
        };
        serde_json::to_vec(&Envelope {
            kind: "error",
            error: Inner {
                kind: self.error_type(),
                message: self.to_string(),
                details,
            },
            request_id,
            debug,
        })
        .expect("error envelope serializes")
    }

    /// The in-band form, once a stream's 200 header is out (messages-api.md §6.4).
    pub fn sse_frame(&self, request_id: &str, debug: Option<&Value>) -> Bytes {
        sse::encode_frame("error", &self.envelope(request_id, debug))
    }

    /// The HTTP form, before the first byte. `request-id` is added by the middleware.
    pub fn to_response(&self, request_id: &str, debug: Option<&Value>) -> HttpResponse {
        let mut res = HttpResponse::build(self.status());
        res.content_type("application/json");
        if let Some(retry) = self.should_retry() {
            res.insert_header(("x-should-retry", if retry { "true" } else { "false" }));
        }
        if let Some(after) = self.retry_after() {
            let ms = after.as_millis().max(1);
            // Whole seconds, rounded up, at least 1 (messages-api.md §6.3).
            res.insert_header(("retry-after", ms.div_ceil(1000).max(1).to_string()));
            res.insert_header(("retry-after-ms", ms.to_string()));
        }
        res.body(self.envelope(request_id, debug))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape_and_details() {
        let e = GatewayError::from_details(vec![
            ErrorDetail::new("messages.1.role", "must be one of user, assistant"),
            ErrorDetail::new("top_k", "must be an integer >= 1"),
        ]);
        let v: Value = serde_json::from_slice(&e.envelope("req_x", None)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(
            v["error"]["message"],
            "messages.1.role: must be one of user, assistant"
        );
        assert_eq!(v["error"]["details"][1]["param"], "top_k");
        assert_eq!(v["request_id"], "req_x");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn status_table() {
        let cases: Vec<(GatewayError, u16, &str)> = vec![
            (
                GatewayError::Authentication("x".into()),
                401,
                "authentication_error",
            ),
            (
                GatewayError::Permission("x".into()),
                403,
                "permission_error",
            ),
            (GatewayError::NotFound("x".into()), 404, "not_found_error"),
            (
                GatewayError::RequestTooLarge("x".into()),
                413,
                "request_too_large",
            ),
            (
                GatewayError::RateLimited {
                    message: "x".into(),
                    retry_after: Duration::from_secs(1),
                },
                429,
                "rate_limit_error",
            ),
            (GatewayError::Internal("x".into()), 500, "api_error"),
            (
                GatewayError::UpstreamFailed {
                    message: "x".into(),
                    transient: true,
                },
                502,
                "api_error",
            ),
            (GatewayError::Timeout("x".into()), 504, "timeout_error"),
            (
                GatewayError::Overloaded {
                    message: "x".into(),
                    retry_after: Duration::from_secs(3),
                },
                529,
                "overloaded_error",
            ),
        ];
        for (e, status, kind) in cases {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.error_type(), kind);
            let v: Value = serde_json::from_slice(&e.envelope("r", None)).unwrap();
            assert!(v["error"].get("details").is_none());
        }
    }

    #[test]
    fn error_frame_is_named() {
        let f = GatewayError::UpstreamFailed {
            message: "gone".into(),
            transient: true,
        }
        .sse_frame("req_1", None);
        let s = std::str::from_utf8(&f).unwrap();
        assert!(s.starts_with("event: error\ndata: {\"type\":\"error\""));
        assert!(s.ends_with("\n\n"));
    }
}
