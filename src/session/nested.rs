//! Nested calls a gateway tool makes through the gateway's own routing (the advisor, gateway.md
//! §5.8): a non-stream request to a public model, tried on its deployments in order on this
//! worker's provider actors, with the same breakers. Its tokens join the caller's totals.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::auth::ApiKey;
use crate::protocol::accumulate::TurnAccumulator;
use crate::protocol::request::parse_fields;
use crate::protocol::validate::{validate, ApiVersion};
use crate::providers::{Call, Dispatch, ProviderEvent};
use crate::routing::breaker::Admission;
use crate::routing::{self, RoutingPrefs, Verdict};
use crate::state::{AppState, WorkerActors};
use crate::tools::advisor::{AdvisorCaller, AdvisorFailure, AdvisorReply, AdvisorRequest};

/// The advisor caller of one request: the key's limits and this worker's actors.
pub fn advisor_caller(
    state: Arc<AppState>,
    workers: Arc<WorkerActors>,
    key: Arc<ApiKey>,
    request_id: String,
) -> AdvisorCaller {
    Arc::new(move |req: AdvisorRequest| {
        let (state, workers, key, request_id) = (
            state.clone(),
            workers.clone(),
            key.clone(),
            request_id.clone(),
        );
        Box::pin(async move { complete(&state, &workers, &key, &request_id, req).await })
    })
}

async fn complete(
    state: &AppState,
    workers: &WorkerActors,
    key: &ApiKey,
    request_id: &str,
    req: AdvisorRequest,
) -> Result<AdvisorReply, AdvisorFailure> {
    if !state.limits.tokens_available(key) {
        return Err(AdvisorFailure::RateLimited);
    }
    let model = state
        .models
        .resolve(&req.model)
        .ok_or_else(|| AdvisorFailure::Upstream(format!("unknown model \"{}\"", req.model)))?;
    let body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens,
        "system": req.system,
        "messages": [{"role": "user", "content": req.user}],
    });
    let request = parse_fields(body.to_string().as_bytes())
        .ok()
        .and_then(|f| validate(f, ApiVersion::V2023_06_01).ok())
        .ok_or_else(|| AdvisorFailure::Upstream("the advisor request is invalid".into()))?;
    let request = Arc::new(request);
    let candidates = routing::select(
        model,
        &RoutingPrefs::default(),
        None,
        Instant::now(),
        &mut rand::rng(),
    )
    .map_err(|_| {
        AdvisorFailure::Upstream("no deployment of the advisor model is available".into())
    })?;
    let mut last = String::from("no attempt was made");
    for deployment in candidates {
        if let Admission::No { .. } = routing::shared::admit(&deployment, Instant::now()) {
            continue;
        }
        let call = Call {
            request: request.clone(),
            upstream_model: deployment.upstream_model.clone(),
            client_model: req.model.clone(),
            stream: false,
            anthropic_version: ApiVersion::V2023_06_01.as_str(),
            anthropic_beta: None,
            beta_query: false,
            request_id: request_id.to_string(),
            capture_request: false,
            capture_response: false,
            drops: Arc::from(Vec::new()),
            prompt_cache_key: None,
        };
        let (tx, mut rx) = mpsc::channel(8);
        workers.providers[deployment.provider_index].do_send(Dispatch { call, sink: tx });
        let outcome = loop {
            match rx.recv().await {
                Some(ProviderEvent::Message(m)) => break Ok(*m),
                Some(ProviderEvent::Failed(e)) => break Err(e.message),
                Some(_) => continue,
                None => break Err("the upstream attempt ended without a result".into()),
            }
        };
        match outcome {
            Ok(m) => {
                routing::shared::record(&deployment, Verdict::Success, Instant::now());
                let text = TurnAccumulator::from_message(&m.body)
                    .map(|acc| {
                        acc.blocks
                            .iter()
                            .filter(|b| b["type"] == "text")
                            .filter_map(|b| b.get("text").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .map_err(|e| AdvisorFailure::Upstream(e.0))?;
                return Ok(AdvisorReply {
                    text,
                    usage: m.usage,
                });
            }
            Err(message) => {
                routing::shared::record(&deployment, Verdict::Failure, Instant::now());
                last = message;
            }
        }
    }
    Err(AdvisorFailure::Upstream(last))
}
