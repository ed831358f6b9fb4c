//! The `anthropic` kind: `POST {base_url}/v1/messages`, passed through faithfully (gateway.md §7.6).
//! Non-stream bodies go back byte for byte; stream frames are forwarded as they arrive, re-framed
//! only when the upstream's framing is not the canonical `event:` + one `data:` line.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{
    accepted, identity, report_sent, send_checked, Call, ClientHeaders, Provider, ProviderEvent,
    UpstreamError, UpstreamMessage,
};
use crate::protocol::anthropic::{EventKind, Frame, ResponseSummary, Usage};
use crate::protocol::sse::{SseEvent, SseParser};

/// Largest non-stream body or error body read from an upstream.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub async fn run(
    client: awc::Client,
    provider: Arc<Provider>,
    call: Call,
    sink: mpsc::Sender<ProviderEvent>,
) {
    match send(&client, &provider, &call, &sink).await {
        Ok(res) => relay(res, &call, sink).await,
        Err(e) => {
            let _ = sink.send(ProviderEvent::failed(e)).await;
        }
    }
}

/// A 2xx answer in the Anthropic wire format (this kind's and Vertex's), relayed to the
/// session: the stream pumped event by event, or the whole message.
pub(super) async fn relay(mut res: Response, call: &Call, sink: mpsc::Sender<ProviderEvent>) {
    if sink.send(accepted(&res)).await.is_err() {
        return;
    }
    if call.stream {
        return pump(res, call.capture_response, sink).await;
    }
    let event = match res.body().limit(MAX_BODY).await {
        Ok(body) => {
            if call.capture_response {
                let _ = sink.send(ProviderEvent::Raw(body.clone())).await;
            }
            read_message(body)
        }
        Err(e) => ProviderEvent::failed(UpstreamError::transient(format!("upstream body: {e}"))),
    };
    let _ = sink.send(event).await;
}

type Response = awc::ClientResponse;

/// `POST {base_url}{path}` with the provider's key, version, betas, the client headers it
/// forwards and its static headers.
fn post(
    client: &awc::Client,
    provider: &Provider,
    path: &str,
    beta_query: bool,
    anthropic_version: &str,
    anthropic_beta: Option<&str>,
    client_headers: &ClientHeaders,
) -> awc::ClientRequest {
    let base = provider.config.base_url.as_deref().unwrap_or_default();
    let query = if beta_query { "?beta=true" } else { "" };
    let mut req = client
        .post(format!("{base}{path}{query}"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("anthropic-version", anthropic_version));
    if let Some(key) = &provider.api_key {
        req = req.insert_header(("x-api-key", key.expose()));
    }
    let betas: Vec<&str> = anthropic_beta
        .into_iter()
        .chain(provider.config.extra_betas.iter().map(String::as_str))
        .collect();
    if !betas.is_empty() {
        req = req.insert_header(("anthropic-beta", betas.join(",")));
    }
    req = identity::forward(req, &provider.config, client_headers);
    for (k, v) in &provider.config.headers {
        req = req.insert_header((k.as_str(), v.as_str()));
    }
    req
}

/// A `count_tokens` attempt: the upstream's count, as the attempt's whole reply.
pub async fn count(
    client: awc::Client,
    provider: Arc<Provider>,
    call: Call,
    sink: mpsc::Sender<ProviderEvent>,
) {
    let body: Bytes = call
        .request
        .anthropic_body(&call.upstream_model, &[])
        .into();
    let req = post(
        &client,
        &provider,
        "/v1/messages/count_tokens",
        call.beta_query,
        call.anthropic_version,
        call.anthropic_beta.as_deref(),
        &call.client_headers,
    );
    report_sent(&call, &req, &body, &sink).await;
    let event = match count_reply(req, body, &provider).await {
        Ok((accepted, body)) => {
            if sink.send(accepted).await.is_err() {
                return;
            }
            ProviderEvent::message(UpstreamMessage {
                body,
                usage: Usage::default(),
                stop_reason: None,
            })
        }
        Err(e) => ProviderEvent::failed(e),
    };
    let _ = sink.send(event).await;
}

async fn count_reply(
    req: awc::ClientRequest,
    body: Bytes,
    provider: &Provider,
) -> Result<(ProviderEvent, Bytes), UpstreamError> {
    let mut res = send_checked(req, body, provider, false, true).await?;
    let accepted = accepted(&res);
    let body = res
        .body()
        .limit(super::MAX_ERROR_BODY)
        .await
        .map_err(|e| UpstreamError::transient(format!("upstream body: {e}")))?;
    #[derive(Deserialize)]
    struct Count {
        #[allow(dead_code)]
        input_tokens: u64,
    }
    serde_json::from_slice::<Count>(&body)
        .map_err(|_| UpstreamError::transient("upstream returned an invalid count_tokens body"))?;
    Ok((accepted, body))
}

/// Sends the request; any non-2xx answer (or a stream answered without SSE) is an error.
async fn send(
    client: &awc::Client,
    provider: &Provider,
    call: &Call,
    sink: &mpsc::Sender<ProviderEvent>,
) -> Result<Response, UpstreamError> {
    let mut req = post(
        client,
        provider,
        "/v1/messages",
        call.beta_query,
        call.anthropic_version,
        call.anthropic_beta.as_deref(),
        &call.client_headers,
    );
    if call.stream {
        req = req.insert_header(("accept", "text/event-stream"));
    }
    if let Some(tp) = &call.traceparent {
        req = req.insert_header(("traceparent", tp.as_str()));
    }
    // Strictness drops for an Anthropic upstream are top-level fields (unknown ones, and the
    // OpenAI-only extensions, which `anthropic_body` skips anyway).
    let skip: Vec<&str> = call
        .drops
        .iter()
        .filter(|w| w.is_top_level())
        .map(|w| w.param.as_str())
        .collect();
    let body = Bytes::from(call.request.anthropic_body(&call.upstream_model, &skip));
    report_sent(call, &req, &body, sink).await;
    send_checked(req, body, provider, call.stream, true).await
}

pub(super) fn read_message(body: Bytes) -> ProviderEvent {
    match serde_json::from_slice::<ResponseSummary>(&body) {
        Ok(summary) => ProviderEvent::message(UpstreamMessage {
            body,
            usage: summary.usage,
            stop_reason: summary.stop_reason,
        }),
        Err(_) => ProviderEvent::failed(UpstreamError::transient(
            "upstream returned an invalid JSON message",
        )),
    }
}

/// Forwards every complete frame as soon as its read completes.
async fn pump(mut res: Response, capture: bool, sink: mpsc::Sender<ProviderEvent>) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    loop {
        let chunk = res.next().await;
        let done = match chunk {
            Some(Ok(bytes)) => {
                if parser.push(&bytes, &mut events).is_err() {
                    let err = UpstreamError::transient("upstream sent an oversized SSE line");
                    let _ = sink.send(ProviderEvent::failed(err)).await;
                    return;
                }
                false
            }
            Some(Err(e)) => {
                flush(&mut events, &sink).await;
                let err = UpstreamError::transient(format!("upstream stream broke: {e}"));
                let _ = sink.send(ProviderEvent::failed(err)).await;
                return;
            }
            None => {
                parser.finish(&mut events);
                true
            }
        };
        if capture {
            for ev in &events {
                let _ = sink.send(ProviderEvent::Raw(ev.data.clone())).await;
            }
        }
        if !flush(&mut events, &sink).await {
            return;
        }
        if done {
            let _ = sink.send(ProviderEvent::End).await;
            return;
        }
    }
}

/// Sends parsed events as frames; false when the session is gone or an event was invalid (then
/// the attempt has already been reported failed).
async fn flush(events: &mut Vec<SseEvent>, sink: &mpsc::Sender<ProviderEvent>) -> bool {
    if events.is_empty() {
        return true;
    }
    let mut frames = Vec::with_capacity(events.len());
    let mut invalid = None;
    for ev in events.drain(..) {
        match to_frame(ev) {
            Ok(f) => frames.push(f),
            Err(why) => {
                invalid = Some(why);
                break;
            }
        }
    }
    if !frames.is_empty() && sink.send(ProviderEvent::Frames(frames)).await.is_err() {
        return false;
    }
    match invalid {
        None => true,
        Some(why) => {
            let _ = sink
                .send(ProviderEvent::failed(UpstreamError::transient(why)))
                .await;
            false
        }
    }
}

/// An upstream event as a conformant frame: its data must be a JSON object with a `type`; it is
/// named after that type when the `event:` line is missing, and compacted onto one line when its
/// data spanned several.
pub fn to_frame(ev: SseEvent) -> Result<Frame, String> {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    // Parsing the type validates the whole payload (serde_json checks what it skips).
    let typed: Typed = serde_json::from_slice(&ev.data)
        .map_err(|e| format!("upstream sent an invalid stream event: {e}"))?;
    let name = match ev.event {
        Some(name) if !name.is_empty() => name,
        _ => Bytes::copy_from_slice(typed.kind.as_bytes()),
    };
    let data = if memchr::memchr(b'\n', &ev.data).is_some() {
        let v: serde_json::Value = serde_json::from_slice(&ev.data).map_err(|e| e.to_string())?;
        Bytes::from(serde_json::to_vec(&v).map_err(|e| e.to_string())?)
    } else {
        ev.data
    };
    Ok(Frame {
        kind: EventKind::from_name(&name),
        name,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_named_and_compacted() {
        let f = to_frame(SseEvent {
            event: None,
            data: Bytes::from_static(b"{\"type\":\"ping\"}"),
        })
        .unwrap();
        assert_eq!(f.kind, EventKind::Ping);
        let f = to_frame(SseEvent {
            event: Some(Bytes::from_static(b"message_stop")),
            data: Bytes::from_static(b"{\n\"type\": \"message_stop\"\n}"),
        })
        .unwrap();
        assert_eq!(&f.data[..], b"{\"type\":\"message_stop\"}");
        assert_eq!(f.kind, EventKind::MessageStop);
        assert!(to_frame(SseEvent {
            event: None,
            data: Bytes::from_static(b"not json")
        })
        .is_err());
        let bad = SseEvent {
            event: Some(Bytes::from_static(b"ping")),
            data: Bytes::from_static(b"{\"type\":\"ping\""),
        };
        assert!(
            to_frame(bad).is_err(),
            "a named event with broken JSON is refused too"
        );
    }
}
