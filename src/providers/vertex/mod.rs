//! The `vertex` kind: Claude on Google Vertex AI.
//! `POST {base}/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}`
//! `:rawPredict` (JSON) and `:streamRawPredict` (Anthropic SSE, passed through as the anthropic
//! kind does), with a bearer token from application default credentials ([`auth`]).

pub mod auth;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{report_sent, send_checked, Call, CountCall, Provider, ProviderEvent, UpstreamError};
use crate::config::Secret;
use crate::protocol::cloud::{
    cloud_supports_beta, split_betas, vertex_body, vertex_count_body, vertex_path,
};

fn google(provider: &Provider) -> Result<&auth::GoogleAuth, UpstreamError> {
    match &provider.cloud {
        Some(super::CloudAuth::Google(a)) => Ok(a),
        _ => Err(UpstreamError::transient(
            "vertex provider without Google credentials",
        )),
    }
}

/// `POST {base}{path}` with the bearer token, the betas as `anthropic-beta`, and static headers.
async fn post(
    client: &awc::Client,
    provider: &Provider,
    model: &str,
    method: &str,
    anthropic_beta: Option<&str>,
) -> Result<(awc::ClientRequest, Secret), UpstreamError> {
    let token = google(provider)?.token(client).await?;
    let c = &provider.config;
    let path = vertex_path(
        c.project.as_deref().unwrap_or_default(),
        c.region.as_deref().unwrap_or_default(),
        model,
        method,
    );
    let base = c.base_url.as_deref().unwrap_or_default();
    let mut req = client
        .post(format!("{base}{path}"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("authorization", format!("Bearer {}", token.expose())));
    // Betas Vertex refuses are dropped (strictness reported them); `extra_betas` always go.
    let betas: Vec<&str> = split_betas(anthropic_beta)
        .filter(|b| cloud_supports_beta(b))
        .chain(c.extra_betas.iter().map(String::as_str))
        .collect();
    if !betas.is_empty() {
        req = req.insert_header(("anthropic-beta", betas.join(",")));
    }
    for (k, v) in &c.headers {
        req = req.insert_header((k.as_str(), v.as_str()));
    }
    Ok((req, token))
}

/// An error message never carries the token, whatever the upstream echoed; a token Vertex
/// refused is not used again.
fn scrub(provider: &Provider, mut e: UpstreamError, token: &Secret) -> UpstreamError {
    if e.status == Some(401) {
        if let Ok(auth) = google(provider) {
            auth.forget();
        }
    }
    if !token.expose().is_empty() {
        e.message = e.message.replace(token.expose(), "[redacted]");
    }
    e
}

pub async fn run(
    client: awc::Client,
    provider: Arc<Provider>,
    call: Call,
    sink: mpsc::Sender<ProviderEvent>,
) {
    match send(&client, &provider, &call, &sink).await {
        Ok(res) => super::anthropic::relay(res, &call, sink).await,
        Err(e) => {
            let _ = sink.send(ProviderEvent::failed(e)).await;
        }
    }
}

async fn send(
    client: &awc::Client,
    provider: &Provider,
    call: &Call,
    sink: &mpsc::Sender<ProviderEvent>,
) -> Result<awc::ClientResponse, UpstreamError> {
    let method = if call.stream {
        "streamRawPredict"
    } else {
        "rawPredict"
    };
    let (mut req, token) = post(
        client,
        provider,
        &call.upstream_model,
        method,
        call.anthropic_beta.as_deref(),
    )
    .await?;
    if call.stream {
        req = req.insert_header(("accept", "text/event-stream"));
    }
    let skip: Vec<&str> = call
        .drops
        .iter()
        .filter(|w| w.is_top_level())
        .map(|w| w.param.as_str())
        .collect();
    let anthropic = call.request.anthropic_body(&call.upstream_model, &skip);
    let body = Bytes::from(vertex_body(&anthropic).map_err(UpstreamError::transient)?);
    report_sent(call, &req, &body, sink).await;
    send_checked(req, body, provider, call.stream, true)
        .await
        .map_err(|e| scrub(provider, e, &token))
}

/// `POST …/publishers/anthropic/models/count-tokens:rawPredict`: Anthropic's answer as it is.
pub async fn count_tokens(
    client: awc::Client,
    provider: Arc<Provider>,
    call: CountCall,
) -> Result<Bytes, UpstreamError> {
    let (req, token) = post(
        &client,
        &provider,
        "count-tokens",
        "rawPredict",
        call.anthropic_beta.as_deref(),
    )
    .await?;
    let body = Bytes::from(vertex_count_body(&call.body).map_err(UpstreamError::transient)?);
    let mut res = send_checked(req, body, &provider, false, true)
        .await
        .map_err(|e| scrub(&provider, e, &token))?;
    let body = res
        .body()
        .limit(super::MAX_ERROR_BODY)
        .await
        .map_err(|e| UpstreamError::transient(format!("upstream body: {e}")))?;
    #[derive(serde::Deserialize)]
    struct Count {
        #[allow(dead_code)]
        input_tokens: u64,
    }
    serde_json::from_slice::<Count>(&body)
        .map_err(|_| UpstreamError::transient("upstream returned an invalid count_tokens body"))?;
    Ok(body)
}
