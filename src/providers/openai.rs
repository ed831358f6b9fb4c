//! The `openai` kind: any OpenAI-compatible `POST {base_url}/chat/completions` server (OpenAI,
//! vLLM, Ollama, Groq, OpenRouter…), translated both ways by `protocol::translate`
//! (translation.md). This file is only the I/O: the request, the body read, the SSE read loop and
//! its two timers (idle, and the bounded wait for the usage chunk).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{
    accepted, report_sent, send_checked, truncate_chars, Call, FailureClass, Provider,
    ProviderEvent, StreamTiming, UpstreamError, UpstreamMessage,
};
use crate::ids;
use crate::protocol::anthropic::Frame;
use crate::protocol::capabilities::Capabilities;
use crate::protocol::sse::SseParser;
use crate::protocol::translate::response::ResponseError;
use crate::protocol::translate::stream::StreamContext;
use crate::protocol::translate::{
    translate_request, translate_response, RequestContext, ResponseContext, StreamEnd,
    StreamFailure, StreamTranslator, TranslatedRequest,
};

/// Largest non-stream body or error body read from an upstream.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub async fn run(
    client: awc::Client,
    provider: Arc<Provider>,
    call: Call,
    timing: StreamTiming,
    sink: mpsc::Sender<ProviderEvent>,
) {
    let caps = Capabilities::of(&provider.config);
    let translated = translate_request(
        &call.request,
        &RequestContext {
            upstream_model: &call.upstream_model,
            caps: &caps,
            stream: call.stream,
            prompt_cache_key: call.prompt_cache_key.as_deref(),
        },
    );
    let TranslatedRequest {
        body,
        tool_names,
        estimated_input_tokens,
        ..
    } = translated;
    let mut res = match send(&client, &provider, &call, body.into(), &sink).await {
        Ok(res) => res,
        Err(e) => {
            let _ = sink.send(ProviderEvent::failed(e)).await;
            return;
        }
    };
    if sink.send(accepted(&res)).await.is_err() {
        return;
    }
    let message_id = ids::message_id();
    if call.stream {
        let translator = StreamTranslator::new(StreamContext {
            message_id,
            client_model: call.client_model.clone(),
            tool_names,
            buffered_tool_calls: caps.buffered_tool_calls,
            estimated_input_tokens,
        });
        return pump(res, translator, timing, call.capture_response, sink).await;
    }
    let event = match res.body().limit(MAX_BODY).await {
        Ok(body) => {
            if call.capture_response {
                let _ = sink.send(ProviderEvent::Raw(body.clone())).await;
            }
            let ctx = ResponseContext {
                message_id: &message_id,
                client_model: &call.client_model,
                tool_names: &tool_names,
                estimated_input_tokens,
            };
            match translate_response(&body, &ctx) {
                Ok(t) => {
                    if !t.warnings.is_empty()
                        && sink
                            .send(ProviderEvent::Warnings(t.warnings))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    ProviderEvent::message(UpstreamMessage {
                        body: t.body.into(),
                        usage: t.usage,
                        stop_reason: Some(t.stop_reason.to_string()),
                    })
                }
                Err(ResponseError::Invalid(m)) => {
                    ProviderEvent::failed(UpstreamError::transient(m))
                }
                Err(ResponseError::Upstream(e)) => {
                    ProviderEvent::failed(failure(StreamFailure::from_error(&e)))
                }
            }
        }
        Err(e) => ProviderEvent::failed(UpstreamError::transient(format!("upstream body: {e}"))),
    };
    let _ = sink.send(event).await;
}

type Response = awc::ClientResponse;

/// Sends the translated body; any non-2xx answer (or a stream answered without SSE) is an error.
async fn send(
    client: &awc::Client,
    provider: &Provider,
    call: &Call,
    body: Bytes,
    sink: &mpsc::Sender<ProviderEvent>,
) -> Result<Response, UpstreamError> {
    let base = provider.config.base_url.as_deref().unwrap_or_default();
    let mut req = client
        .post(format!("{base}/chat/completions"))
        .insert_header(("content-type", "application/json"));
    if let Some(tp) = &call.traceparent {
        req = req.insert_header(("traceparent", tp.as_str()));
    }
    if call.stream {
        req = req.insert_header(("accept", "text/event-stream"));
    }
    // Local servers (vLLM, Ollama) often run without a key: then no header at all.
    if let Some(key) = &provider.api_key {
        req = req.insert_header(("authorization", format!("Bearer {}", key.expose())));
    }
    req = super::identity::forward(req, &provider.config, &call.client_headers);
    for (k, v) in &provider.config.headers {
        req = req.insert_header((k.as_str(), v.as_str()));
    }
    report_sent(call, &req, &body, sink).await;
    // OpenAI's `error.type` is not an Anthropic type: the status decides (translation.md §6).
    send_checked(req, body, provider, call.stream, false).await
}

/// Reads SSE until the translator closes: frames go to the session as soon as a read yields
/// them; the idle timer runs between reads, the usage wait once `finish_reason` arrived.
async fn pump(
    mut res: Response,
    mut tr: StreamTranslator,
    timing: StreamTiming,
    capture: bool,
    sink: mpsc::Sender<ProviderEvent>,
) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut usage_deadline: Option<Instant> = None;
    // Warnings already reported; new ones go out ahead of the frames they concern.
    let mut reported = 0;
    loop {
        let wait = match usage_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => timing.idle,
        };
        let step = match tokio::time::timeout(wait, res.next()).await {
            Err(_) if usage_deadline.is_some() => tr.finish(StreamEnd::UsageWait, &mut frames),
            Err(_) => tr.finish(StreamEnd::Idle, &mut frames),
            Ok(Some(Ok(bytes))) => match parser.push(&bytes, &mut events) {
                Ok(()) => {
                    if capture {
                        for ev in &events {
                            let _ = sink.send(ProviderEvent::Raw(ev.data.clone())).await;
                        }
                    }
                    feed(&mut tr, &mut events, &mut frames)
                }
                Err(_) => Err(StreamFailure {
                    message: "oversized SSE line".into(),
                    error_type: "api_error",
                    status: None,
                }),
            },
            Ok(Some(Err(_))) => tr.finish(StreamEnd::Broken, &mut frames),
            Ok(None) => {
                parser.finish(&mut events);
                feed(&mut tr, &mut events, &mut frames)
                    .and_then(|()| tr.finish(StreamEnd::Eof, &mut frames))
            }
        };
        if tr.warnings().len() > reported {
            let new = tr.warnings()[reported..].to_vec();
            reported = tr.warnings().len();
            if sink.send(ProviderEvent::Warnings(new)).await.is_err() {
                return;
            }
        }
        if !frames.is_empty()
            && sink
                .send(ProviderEvent::Frames(std::mem::take(&mut frames)))
                .await
                .is_err()
        {
            return;
        }
        if let Err(f) = step {
            let _ = sink.send(ProviderEvent::failed(failure(f))).await;
            return;
        }
        if tr.is_closed() {
            let _ = sink.send(ProviderEvent::End).await;
            return;
        }
        if usage_deadline.is_none() && tr.awaiting_usage() {
            usage_deadline = Some(Instant::now() + timing.usage_wait);
        }
    }
}

fn feed(
    tr: &mut StreamTranslator,
    events: &mut Vec<crate::protocol::sse::SseEvent>,
    frames: &mut Vec<Frame>,
) -> Result<(), StreamFailure> {
    for ev in events.drain(..) {
        tr.push_event(&ev, frames)?;
    }
    Ok(())
}

/// A translator failure as an attempt failure. Before the first frame it is classified by the
/// status the upstream named (so a 429 payload still moves to the next candidate); after it the
/// session sends it in-band with this type.
fn failure(f: StreamFailure) -> UpstreamError {
    UpstreamError {
        class: f
            .status
            .map_or(FailureClass::Transient, FailureClass::from_status),
        status: f.status,
        message: truncate_chars(&f.message, 1000),
        retry_after: None,
        error_type: Some(f.error_type.to_string()),
        timeout: f.error_type == "timeout_error",
    }
}
