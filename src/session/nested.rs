//! Nested calls a gateway tool makes through the gateway's own routing (the advisor, gateway.md
//! §5.8): a non-stream request to a public model, run as a [`SessionActor`] of its own
//! ([`Purpose::Nested`]), so it gets the attempt path every upstream call takes: retries,
//! fallbacks, timeouts, breaker accounting and one error mapping. Its tokens join the caller's
//! totals; the caller's session is the one counted and logged.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::{ClientGuard, Purpose, SessionActor, SessionHead, SessionInit};
use crate::api::auth::ApiKey;
use crate::config::Strictness;
use crate::observability::RequestRecord;
use crate::protocol::accumulate::TurnAccumulator;
use crate::protocol::request::parse_fields;
use crate::protocol::validate::{validate, ApiVersion};
use crate::routing::{self, RoutingPrefs};
use crate::state::{AppState, WorkerActors};
use crate::strictness::StrictnessPlan;
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
        Box::pin(complete(state, workers, key, request_id, req))
    })
}

async fn complete(
    state: Arc<AppState>,
    workers: Arc<WorkerActors>,
    key: Arc<ApiKey>,
    request_id: String,
    req: AdvisorRequest,
) -> Result<AdvisorReply, AdvisorFailure> {
    if !state.limits.tokens_available(&key) {
        return Err(AdvisorFailure::RateLimited);
    }
    let model = state
        .models
        .resolve(&req.model)
        .ok_or_else(|| AdvisorFailure::Upstream(format!("unknown model \"{}\"", req.model)))?
        .clone();
    let body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens,
        "system": req.system,
        "messages": [{"role": "user", "content": req.user}],
    });
    let invalid = || AdvisorFailure::Upstream("the advisor request is invalid".into());
    let request = parse_fields(body.to_string().as_bytes())
        .ok()
        .and_then(|f| validate(f, ApiVersion::V2023_06_01).ok())
        .ok_or_else(invalid)?;
    let candidates = routing::select(
        &model,
        &RoutingPrefs::default(),
        None,
        Instant::now(),
        &mut rand::rng(),
    )
    .map_err(|_| {
        AdvisorFailure::Upstream("no deployment of the advisor model is available".into())
    })?;
    let plan = StrictnessPlan::build(&request, &model, Strictness::Warn, &key.name, None)
        .map_err(|_| invalid())?;
    let init = SessionInit {
        request_id,
        key,
        request: Arc::new(request),
        model,
        candidates,
        sort: "weighted",
        version: ApiVersion::V2023_06_01,
        anthropic_beta: None,
        beta_query: false,
        strictness: Strictness::Warn,
        strictness_plan: Arc::new(plan),
        session_id: None,
        debug: None,
        tools: None,
        token_estimate: 0,
        received_at: Instant::now(),
        record: RequestRecord::default(),
        purpose: Purpose::Nested,
        // The advisor's own call is the gateway's, not the client's.
        client_headers: Default::default(),
    };
    let (addr, head) = SessionActor::spawn(init, state, workers);
    // Dropping this future (the advisor's timeout, the caller's session stopping) stops the
    // nested session, which drops its attempt and frees a probe it holds.
    let _guard = ClientGuard(addr);
    match head.await {
        Ok(SessionHead::Json { body, .. }) => {
            let acc =
                TurnAccumulator::from_message(&body).map_err(|e| AdvisorFailure::Upstream(e.0))?;
            let text = acc
                .blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n");
            Ok(AdvisorReply {
                text,
                usage: acc.usage,
            })
        }
        Ok(SessionHead::Error { error, .. }) => Err(AdvisorFailure::Upstream(error.to_string())),
        Ok(SessionHead::Stream { .. }) | Err(_) => Err(AdvisorFailure::Upstream(
            "the advisor call ended without an answer".into(),
        )),
    }
}
