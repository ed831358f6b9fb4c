//! Upstream providers. One [`ProviderActor`] per configured provider per worker: `awc::Client` is
//! `!Send` and keeps its connection pool per thread, so each worker talks to upstreams through its
//! own actors and no request crosses threads.
//!
//! A session sends [`Dispatch`] with a channel; the actor runs the attempt as a local task that
//! pushes [`ProviderEvent`]s into it. When the session drops the receiver (client gone, timeout,
//! abandoned attempt) the task is dropped at once, and with it the upstream connection.

pub mod anthropic;
pub mod bedrock;
pub mod identity;
pub mod mock;
pub mod openai;
pub mod token_cache;
pub mod vertex;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::{ProviderConfig, ProviderKind, Secret, Secrets, StreamConfig, TimeoutsConfig};
use crate::protocol::anthropic::{Frame, Usage};
use crate::protocol::capabilities::Warning;
use crate::protocol::request::MessagesRequest;
pub use identity::ClientHeaders;

/// A provider as the runtime sees it: its config, its key, and the cloud kinds' credentials.
#[derive(Debug)]
pub struct Provider {
    pub config: ProviderConfig,
    pub api_key: Option<Secret>,
    /// bedrock and vertex: the credential source, shared by every worker.
    pub cloud: Option<CloudAuth>,
}

/// Where a cloud provider's requests get their credentials.
#[derive(Debug)]
pub enum CloudAuth {
    Aws(bedrock::AwsAuth),
    Google(vertex::auth::GoogleAuth),
}

impl Provider {
    pub fn new(config: ProviderConfig, secrets: &Secrets) -> Self {
        let cloud = secrets
            .cloud
            .get(&config.name)
            .and_then(|creds| match config.kind {
                ProviderKind::Bedrock => Some(CloudAuth::Aws(bedrock::AwsAuth::new(
                    config.region.as_deref().unwrap_or_default(),
                    creds,
                ))),
                ProviderKind::Vertex => {
                    Some(CloudAuth::Google(vertex::auth::GoogleAuth::new(creds)))
                }
                _ => None,
            });
        Self {
            api_key: secrets.provider_keys.get(&config.name).cloned(),
            config,
            cloud,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// `text` with this provider's key blanked out, for anything an upstream echoes back.
    pub fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(k) if !k.expose().is_empty() && text.contains(k.expose()) => {
                text.replace(k.expose(), "[redacted]")
            }
            _ => text.to_string(),
        }
    }
    pub fn kind(&self) -> ProviderKind {
        self.config.kind
    }
}

/// One upstream call: what to ask and how.
#[derive(Debug, Clone)]
pub struct Call {
    pub request: Arc<MessagesRequest>,
    pub upstream_model: String,
    /// The model id the client sent; gateway-built responses report it.
    pub client_model: String,
    pub stream: bool,
    pub anthropic_version: &'static str,
    /// The client's `anthropic-beta` values, joined with `,`.
    pub anthropic_beta: Option<String>,
    /// The client called `/v1/messages?beta=true`.
    pub beta_query: bool,
    pub request_id: String,
    /// Report the request as sent ([`ProviderEvent::Sent`]), for `debug.return_upstream_request`.
    pub capture_request: bool,
    /// Report every upstream payload ([`ProviderEvent::Raw`]), for `debug.return_upstream_response`.
    pub capture_response: bool,
    /// What this deployment drops from the request (strictness, gateway.md §3). Anthropic bodies
    /// skip the top-level ones; the OpenAI translation drops the same things by itself.
    pub drops: Arc<[Warning]>,
    /// `prompt_cache_key` for OpenAI-compatible upstreams (gateway.md §4).
    pub prompt_cache_key: Option<Arc<str>>,
    /// The client's headers that providers may forward (`forward_headers`).
    pub client_headers: ClientHeaders,
    /// W3C `traceparent` of the attempt's span, when spans are exported.
    pub traceparent: Option<String>,
    /// Ask the upstream to count the request's input tokens (`count_tokens`, Anthropic kind
    /// only) instead of answering it; the count arrives as a [`ProviderEvent::Message`].
    pub count: bool,
}

/// How an upstream failure is handled (gateway.md §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Connect errors, timeouts, 408, 5xx, 529: retry, then fall back.
    Transient,
    /// 429: next candidate at once.
    RateLimited,
    /// 401/402/403/404: the deployment is misconfigured; next candidate, no retry.
    DeploymentFault,
    /// 400/413/422 and other 4xx: the client's request is at fault; stop.
    ClientFault,
}

impl FailureClass {
    pub fn from_status(status: u16) -> Self {
        match status {
            408 | 500..=599 => Self::Transient,
            429 => Self::RateLimited,
            401..=404 => Self::DeploymentFault,
            _ => Self::ClientFault,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::RateLimited => "rate_limited",
            Self::DeploymentFault => "deployment_fault",
            Self::ClientFault => "client_fault",
        }
    }
}

/// A failed attempt. `message` is already sanitized: it never holds a secret.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    pub class: FailureClass,
    pub status: Option<u16>,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// The Anthropic `error.type` the upstream reported, if any.
    pub error_type: Option<String>,
    /// The failure was a timeout (→ `timeout_error`).
    pub timeout: bool,
}

impl UpstreamError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Transient,
            status: None,
            message: message.into(),
            retry_after: None,
            error_type: None,
            timeout: false,
        }
    }

    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::from_status(status),
            status: Some(status),
            message: message.into(),
            retry_after: None,
            error_type: None,
            timeout: false,
        }
    }

    /// The Anthropic error type for an in-band `event: error` frame (gateway.md §7.5).
    pub fn stream_error_type(&self) -> &str {
        if let Some(t) = &self.error_type {
            return t;
        }
        if self.timeout {
            return "timeout_error";
        }
        match self.status {
            Some(529) => "overloaded_error",
            Some(429) => "rate_limit_error",
            _ => "api_error",
        }
    }
}

/// A complete non-stream reply, already in Anthropic form.
#[derive(Debug, Clone)]
pub struct UpstreamMessage {
    pub body: Bytes,
    pub usage: Usage,
    pub stop_reason: Option<String>,
}

/// The upstream request as sent, secrets redacted.
#[derive(Debug, Clone)]
pub struct SentRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Header names whose values are never shown, whatever the provider configured.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "x-api-key"
        || n == "api-key"
        || n == "cookie"
        || n.contains("token")
        || n.contains("secret")
        || n.contains("key")
        || n.contains("auth")
}

/// Headers as shown in debug output.
pub fn redacted_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    headers
        .map(|(k, v)| {
            let v = if is_secret_header(k) { "[redacted]" } else { v };
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// What a provider task reports to its session.
#[derive(Debug)]
pub enum ProviderEvent {
    /// Only with [`Call::capture_request`]: the request about to be sent.
    Sent(Box<SentRequest>),
    /// A 2xx response head arrived (the end of a non-stream attempt's time to first byte).
    Accepted { upstream_request_id: Option<String> },
    /// Only with [`Call::capture_response`]: an upstream payload as received (the whole body, or
    /// one stream event's data), before any translation.
    Raw(Bytes),
    /// Non-stream: the whole reply.
    Message(Box<UpstreamMessage>),
    /// Stream: Anthropic events, in order (all complete frames of one upstream read).
    Frames(Vec<Frame>),
    /// Stream: the upstream closed cleanly.
    End,
    /// What the translation of the upstream's reply changed or dropped (translation.md): it
    /// comes before the frames or message it concerns.
    Warnings(Vec<Warning>),
    /// The attempt failed, before or after its first event.
    Failed(Box<UpstreamError>),
}

impl ProviderEvent {
    // The rare, large payloads are boxed: a channel preallocates 32 slots of this enum.
    pub fn failed(err: UpstreamError) -> Self {
        Self::Failed(Box::new(err))
    }

    pub fn message(msg: UpstreamMessage) -> Self {
        Self::Message(Box::new(msg))
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Dispatch {
    pub call: Call,
    pub sink: mpsc::Sender<ProviderEvent>,
}

/// A cloud kind's `count_tokens` request: the Anthropic body, ready to wrap.
#[derive(Debug, Clone)]
pub struct CountCall {
    pub body: Bytes,
    pub anthropic_beta: Option<String>,
}

impl CountCall {
    fn of(call: &Call) -> Self {
        Self {
            body: call
                .request
                .anthropic_body(&call.upstream_model, &[])
                .into(),
            anthropic_beta: call.anthropic_beta.clone(),
        }
    }
}

pub struct ProviderActor {
    provider: Arc<Provider>,
    client: Option<awc::Client>,
    stream_timing: StreamTiming,
}

/// The timers a translated stream runs itself (translation.md §5 steps 8–9).
#[derive(Debug, Clone, Copy)]
pub struct StreamTiming {
    /// Longest silence between upstream events.
    pub idle: Duration,
    /// How long the final `message_delta` waits for the usage chunk after `finish_reason`.
    pub usage_wait: Duration,
}

impl ProviderActor {
    pub fn new(provider: Arc<Provider>, timeouts: &TimeoutsConfig, stream: &StreamConfig) -> Self {
        let client = match provider.kind() {
            ProviderKind::Mock => None,
            _ => Some(http_client(timeouts)),
        };
        Self {
            provider,
            client,
            stream_timing: StreamTiming {
                idle: timeouts.idle(),
                usage_wait: Duration::from_millis(stream.usage_wait_ms),
            },
        }
    }
}

impl Actor for ProviderActor {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for ProviderActor {
    type Result = ();

    fn handle(&mut self, msg: Dispatch, _ctx: &mut Context<Self>) {
        let Dispatch { call, sink } = msg;
        let provider = self.provider.clone();
        let watch = sink.clone();
        match (provider.kind(), &self.client) {
            (ProviderKind::Anthropic, Some(client)) if call.count => spawn_attempt(
                anthropic::count(client.clone(), provider, call, sink),
                watch,
            ),
            (ProviderKind::Bedrock, Some(client)) if call.count => {
                let count = bedrock::count_tokens(client.clone(), provider, CountCall::of(&call));
                spawn_attempt(one_shot_count(count, sink), watch)
            }
            (ProviderKind::Vertex, Some(client)) if call.count => {
                let count = vertex::count_tokens(client.clone(), provider, CountCall::of(&call));
                spawn_attempt(one_shot_count(count, sink), watch)
            }
            (kind, _) if call.count => {
                let err = UpstreamError::from_status(
                    404,
                    format!("provider kind {} cannot count tokens", kind.as_str()),
                );
                let _ = sink.try_send(ProviderEvent::failed(err));
            }
            (ProviderKind::Anthropic, Some(client)) => {
                spawn_attempt(anthropic::run(client.clone(), provider, call, sink), watch)
            }
            (ProviderKind::Openai, Some(client)) => spawn_attempt(
                openai::run(client.clone(), provider, call, self.stream_timing, sink),
                watch,
            ),
            (ProviderKind::Bedrock, Some(client)) => {
                spawn_attempt(bedrock::run(client.clone(), provider, call, sink), watch)
            }
            (ProviderKind::Vertex, Some(client)) => {
                spawn_attempt(vertex::run(client.clone(), provider, call, sink), watch)
            }
            (ProviderKind::Mock, _) => spawn_attempt(mock::run(provider, call, sink), watch),
            (kind, _) => {
                let err = UpstreamError::transient(format!(
                    "provider kind {} is not available",
                    kind.as_str()
                ));
                let _ = sink.try_send(ProviderEvent::failed(err));
            }
        }
    }
}

/// A cloud kind's count_tokens attempt: its one reply is the attempt's whole message.
async fn one_shot_count(
    count: impl std::future::Future<Output = Result<Bytes, UpstreamError>>,
    sink: mpsc::Sender<ProviderEvent>,
) {
    let event = match count.await {
        Ok(body) => {
            let accepted = ProviderEvent::Accepted {
                upstream_request_id: None,
            };
            if sink.send(accepted).await.is_err() {
                return;
            }
            ProviderEvent::message(UpstreamMessage {
                body,
                usage: Default::default(),
                stop_reason: None,
            })
        }
        Err(e) => ProviderEvent::failed(e),
    };
    let _ = sink.send(event).await;
}

/// Runs an attempt on this worker until it ends or its session stops listening.
fn spawn_attempt<F: std::future::Future<Output = ()> + 'static>(
    attempt: F,
    watch: mpsc::Sender<ProviderEvent>,
) {
    actix_rt::spawn(async move {
        tokio::select! {
            _ = attempt => {}
            _ = watch.closed() => {}
        }
    });
}

/// The per-worker HTTP client: no overall timeout (the session enforces the gateway's own),
/// unlimited pool, no default headers but our `User-Agent`, rustls with the webpki roots.
pub fn http_client(timeouts: &TimeoutsConfig) -> awc::Client {
    let connector = awc::Connector::new()
        .timeout(timeouts.connect())
        .handshake_timeout(timeouts.connect())
        .limit(0)
        .conn_keep_alive(Duration::from_secs(60))
        .conn_lifetime(Duration::from_secs(300));
    awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        // An upstream that redirects is answered as it is, never followed behind our back.
        .disable_redirects()
        .no_default_headers()
        .add_default_header((actix_web::http::header::USER_AGENT, identity::USER_AGENT))
        .finish()
}

/// Reports the request about to be sent, when the session asked for it.
pub async fn report_sent(
    call: &Call,
    req: &awc::ClientRequest,
    body: &Bytes,
    sink: &mpsc::Sender<ProviderEvent>,
) {
    if call.capture_request {
        let sent = SentRequest {
            url: req.get_uri().to_string(),
            headers: redacted_headers(
                req.headers()
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or(""))),
            ),
            body: body.clone(),
        };
        let _ = sink.send(ProviderEvent::Sent(Box::new(sent))).await;
    }
}

/// Largest error body (or `count_tokens` answer) read from an upstream.
pub(crate) const MAX_ERROR_BODY: usize = 1024 * 1024;

/// Sends a built request and checks the head: a non-2xx answer becomes an [`UpstreamError`]
/// (its message read from the body, the provider's key redacted; `keep_error_type` keeps the
/// body's Anthropic `error.type`), and so does a stream answered without SSE.
pub async fn send_checked(
    req: awc::ClientRequest,
    body: Bytes,
    provider: &Provider,
    stream: bool,
    keep_error_type: bool,
) -> Result<awc::ClientResponse, UpstreamError> {
    let mut res = req.send_body(body).await.map_err(|e| {
        let mut err =
            UpstreamError::transient(provider.redact(&format!("upstream request failed: {e}")));
        err.timeout = matches!(e, awc::error::SendRequestError::Timeout);
        err
    })?;
    let status = res.status().as_u16();
    if !(200..300).contains(&status) {
        let body = res.body().limit(MAX_ERROR_BODY).await.unwrap_or_default();
        let (message, kind) = upstream_error_message(&body);
        let mut err = UpstreamError::from_status(status, provider.redact(&message));
        err.error_type = kind.filter(|_| keep_error_type);
        err.retry_after = retry_after(res.headers());
        return Err(err);
    }
    if stream {
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with("text/event-stream") {
            return Err(UpstreamError::transient(format!(
                "upstream answered a stream request with content-type \"{}\"",
                truncate_chars(ct, 100)
            )));
        }
    }
    Ok(res)
}

/// The response head's upstream request id, reported as [`ProviderEvent::Accepted`].
pub fn accepted(res: &awc::ClientResponse) -> ProviderEvent {
    let upstream_request_id = ["request-id", "x-request-id"]
        .iter()
        .find_map(|h| res.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    ProviderEvent::Accepted {
        upstream_request_id,
    }
}

/// Reads a human message out of an upstream error body, cut to 1000 chars: Anthropic and OpenAI
/// `{"error":{"type","message"}}`, vLLM's top-level `message`, Ollama's `{"error":"…"}`. Bodies
/// that are not JSON are summarised, not echoed.
pub fn upstream_error_message(body: &[u8]) -> (String, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Env {
        error: Option<ErrorField>,
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object(Inner),
        Text(String),
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "type")]
        kind: Option<String>,
        message: Option<String>,
    }
    let parsed = serde_json::from_slice::<Env>(body).ok();
    let (msg, kind) = match parsed {
        Some(Env {
            error: Some(ErrorField::Object(i)),
            ..
        }) => (i.message.unwrap_or_default(), i.kind),
        Some(Env {
            error: Some(ErrorField::Text(m)),
            ..
        }) => (m, None),
        Some(Env {
            message: Some(m), ..
        }) => (m, None),
        _ => (String::new(), None),
    };
    let msg = if msg.is_empty() {
        format!(
            "upstream returned a non-JSON error body ({} bytes)",
            body.len()
        )
    } else {
        msg
    };
    (truncate_chars(&msg, 1000), kind)
}

pub fn truncate_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// `retry-after-ms` (preferred) or `retry-after` seconds from upstream headers.
pub fn retry_after(headers: &actix_web::http::header::HeaderMap) -> Option<Duration> {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_millis(ms as u64));
        }
    }
    get("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_millis((s * 1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(FailureClass::from_status(529), FailureClass::Transient);
        assert_eq!(FailureClass::from_status(408), FailureClass::Transient);
        assert_eq!(FailureClass::from_status(429), FailureClass::RateLimited);
        assert_eq!(
            FailureClass::from_status(404),
            FailureClass::DeploymentFault
        );
        assert_eq!(FailureClass::from_status(422), FailureClass::ClientFault);
        assert_eq!(FailureClass::from_status(400), FailureClass::ClientFault);
    }

    #[test]
    fn secrets_are_redacted() {
        let config: ProviderConfig = toml::from_str("name = \"p\"\nkind = \"mock\"").unwrap();
        let p = Provider {
            config,
            api_key: Some(Secret::new("sk-live-123".into())),
            cloud: None,
        };
        assert_eq!(
            p.redact("Incorrect API key provided: sk-live-123."),
            "Incorrect API key provided: [redacted]."
        );
        let h = redacted_headers(
            [
                ("x-api-key", "sk"),
                ("X-Custom-Token", "t"),
                ("anthropic-version", "v"),
            ]
            .into_iter(),
        );
        assert_eq!(h[0].1, "[redacted]");
        assert_eq!(h[1].1, "[redacted]");
        assert_eq!(h[2].1, "v");
    }

    #[test]
    fn error_messages() {
        let (m, k) = upstream_error_message(
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#,
        );
        assert_eq!(
            (m.as_str(), k.as_deref()),
            ("bad", Some("invalid_request_error"))
        );
        let (m, k) = upstream_error_message(
            br#"{"error":{"message":"bad model","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
        );
        assert_eq!(
            (m.as_str(), k.as_deref()),
            ("bad model", Some("invalid_request_error"))
        );
        let (m, _) = upstream_error_message(br#"{"error":"model 'x' not found"}"#);
        assert_eq!(m, "model 'x' not found");
        let (m, _) = upstream_error_message(
            br#"{"object":"error","message":"max_tokens too large","type":"BadRequestError","code":400}"#,
        );
        assert_eq!(m, "max_tokens too large");
        let (m, _) = upstream_error_message(b"<html>secret page</html>");
        assert!(!m.contains("secret"));
        assert_eq!(truncate_chars("h\u{e9}llo", 2), "h\u{e9}");
    }
}
