//! `POST /v1/messages`: the checks that need no upstream, in the order of gateway.md §1, then a
//! session that answers. [`check`] is shared with `count_tokens`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::BytesMut;
use futures_util::StreamExt;
use tracing::Instrument;

use super::auth::ApiKey;
use super::{header, request_id, Current};
use crate::config::Strictness;
use crate::error::{ErrorDetail, GatewayError};
use crate::observability::record::{redact_body, user_id};
use crate::observability::{spans, Endpoint, RequestRecord};
use crate::protocol::request::parse_fields;
use crate::protocol::request::MessagesRequest;
use crate::protocol::validate::{session_id, validate, validate_count_tokens, ApiVersion};
use crate::providers::ClientHeaders;
use crate::routing::{self, Model, NoCandidate, RoutingPrefs};
use crate::session::DebugFlags;
use crate::session::{self, ClientBody, HeaderList, SessionHead, SessionInit, ToolsInit};
use crate::state::{AppState, WorkerActors};
use crate::strictness::StrictnessPlan;
use crate::tools::declare::is_tool_layer_type;
use crate::tools::{ModelAccess, ToolChoice, ToolSet};

pub async fn create_message(
    req: HttpRequest,
    payload: web::Payload,
    Current { state, workers }: Current,
) -> HttpResponse {
    let request_id = request_id(&req);
    let server = spans::server(req.headers(), &request_id);
    let traceparent = spans::traceparent(&server);
    let mut res = answer(req, payload, state, workers, request_id, server).await;
    // The trace this request belongs to, for the client to find it.
    if let Some(v) = traceparent.and_then(|t| t.parse().ok()) {
        res.headers_mut().insert(header::TRACEPARENT, v);
    }
    res
}

async fn answer(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    workers: web::Data<WorkerActors>,
    request_id: String,
    server: tracing::Span,
) -> HttpResponse {
    let received_at = Instant::now();
    let mut record = RequestRecord::new(Endpoint::Messages, &request_id, SystemTime::now());
    record.trace = (!server.is_none()).then(|| server.clone());
    let init = match admit(&req, payload, &state, &mut record, received_at).await {
        Ok(init) => init,
        Err(e) => {
            tracing::info!(request_id = %request_id, status = e.status().as_u16(), error_type = e.error_type(), "rejected: {e}");
            return refuse(&state, record, received_at, &e);
        }
    };
    spans::server_admitted(&server, &init.request);
    // The session's `request` span is created inside, so it is a child of the server span.
    let result = session::run(init, state.clone(), workers)
        .instrument(server)
        .await;
    match result {
        (_, Ok(SessionHead::Json { body, headers })) => {
            let mut res = HttpResponse::Ok();
            res.content_type("application/json");
            with_headers(res, headers).body(body)
        }
        (Some(guard), Ok(SessionHead::Stream { body, headers })) => {
            let mut res = HttpResponse::Ok();
            res.content_type("text/event-stream; charset=utf-8")
                .insert_header(("cache-control", "no-cache"))
                .insert_header(("x-accel-buffering", "no"));
            let body = ClientBody::new(body, guard);
            with_headers(res, headers).streaming(body)
        }
        (
            _,
            Ok(SessionHead::Error {
                error,
                headers,
                debug,
            }),
        ) => {
            let mut res = error.to_response(&request_id, debug.as_ref());
            for (k, v) in headers {
                if let Ok(v) = v.parse() {
                    res.headers_mut()
                        .insert(actix_web::http::header::HeaderName::from_static(k), v);
                }
            }
            res
        }
        (_, Ok(SessionHead::Stream { .. })) => {
            unreachable!("a stream head always comes with its guard")
        }
        (_, Err(e)) => e.to_response(&request_id, None),
    }
}

/// A request refused before any session or upstream: accounted for, then answered.
pub(super) fn refuse(
    state: &AppState,
    mut record: RequestRecord,
    received_at: Instant,
    error: &GatewayError,
) -> HttpResponse {
    record.status = error.status().as_u16();
    record.error_type = Some(error.error_type().to_string());
    record.total = received_at.elapsed();
    let response = error.to_response(&record.request_id, None);
    state.record(record);
    response
}

fn with_headers(mut res: HttpResponseBuilder, headers: HeaderList) -> HttpResponseBuilder {
    for (k, v) in headers {
        res.insert_header((k, v));
    }
    res
}

/// What every model endpoint checks before doing anything, in the order of gateway.md §1 up to
/// the model: size, auth, JSON, version, strictness header, schema, extensions, model, debug,
/// routing preferences.
pub(super) struct Checked {
    pub key: Arc<ApiKey>,
    pub request: MessagesRequest,
    pub model: Arc<Model>,
    pub version: ApiVersion,
    pub strictness: Strictness,
    pub debug: Option<DebugFlags>,
    pub prefs: RoutingPrefs,
    pub session_id: Option<String>,
    /// Gateway tools, when the request uses the tool layer.
    pub tools: Option<ToolsInit>,
}

/// Runs the shared checks for `record.endpoint`, filling `record` with what becomes known (so a
/// refused request still logs its key and model).
pub(super) async fn check(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    record: &mut RequestRecord,
) -> Result<Checked, GatewayError> {
    // Known before any check can refuse, so refused rows still group with their session.
    record.session_id = header_str(req.headers(), &header::SESSION_ID)
        .or_else(|| header_str(req.headers(), &header::CLAUDE_CODE_SESSION_ID));
    let limit = state.config.server.max_body_bytes;
    let declared = req
        .headers()
        .get(&header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let key = state.keys.authenticate(req.headers())?;
    record.key_name = Some(key.name.clone());
    let body = read_body(payload, limit).await?;
    if state.config.request_log.log_bodies {
        let secrets: Vec<&str> = state
            .providers
            .iter()
            .filter_map(|p| p.api_key.as_ref().map(|k| k.expose()))
            .collect();
        record.request_body = Some(redact_body(&body, &secrets));
    }
    let fields = parse_fields(&body).map_err(|e| GatewayError::invalid(e.0))?;
    // The body wins over the headers (gateway.md §4), as soon as its field is a valid id.
    if let Some(id) = session_id(&fields) {
        record.session_id = Some(id);
    }
    let version = anthropic_version(req.headers(), &state.config.defaults.anthropic_version)?;
    let strictness = strictness(req.headers(), state.config.defaults.strictness)?;
    let request = match record.endpoint {
        Endpoint::CountTokens => validate_count_tokens(fields, version),
        _ => validate(fields, version),
    }
    .map_err(GatewayError::from_details)?;
    record.stream = request.stream;
    record.requested_model = Some(request.model.clone());
    record.user_id = user_id(&request);
    // Extensions (§4), then tool declarations (§5), then the model.
    let prefs = routing_prefs(&request, state)?;
    let tools = gateway_tools(&request, state, &key)?;

    let model = state
        .models
        .resolve(&request.model)
        .ok_or_else(|| {
            GatewayError::NotFound(format!("model: unknown model \"{}\"", request.model))
        })?
        .clone();
    record.model = Some(model.id().to_string());
    let names = std::iter::once(model.config.id.as_str())
        .chain(model.config.aliases.iter().map(String::as_str));
    if !key.may_use(names) {
        return Err(GatewayError::Permission(format!(
            "model: this API key may not use model \"{}\"",
            request.model
        )));
    }

    let debug = request.extensions.debug;
    if debug.is_some() && !key.allow_debug {
        return Err(GatewayError::Permission(
            "debug: this API key may not request debug output".into(),
        ));
    }
    let session_id = record.session_id.clone();
    Ok(Checked {
        key,
        request,
        model,
        version,
        strictness,
        debug,
        prefs,
        session_id,
        tools,
    })
}

/// Everything up to the session: the shared checks, then candidates and strictness.
async fn admit(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    record: &mut RequestRecord,
    received_at: Instant,
) -> Result<SessionInit, GatewayError> {
    let Checked {
        key,
        request,
        model,
        version,
        strictness,
        debug,
        prefs,
        session_id,
        tools,
    } = check(req, payload, state, record).await?;

    // Candidates and strictness (gateway.md §1, §7.2): what each deployment would drop, then
    // the filters; `error` mode and `require_parameters` keep only deployments that drop nothing.
    let plan = StrictnessPlan::build(
        &request,
        &model,
        strictness,
        &key.name,
        session_id.as_deref(),
    )?
    .with_betas(anthropic_beta(req.headers()).as_deref());
    let plan = match &tools {
        Some(t) => plan.with_tool_warnings(&t.set),
        None => plan,
    };
    let honours = |d: &routing::Deployment| plan.honours(d);
    let capability_filter: Option<&dyn Fn(&routing::Deployment) -> bool> =
        (strictness == Strictness::Error || prefs.require_parameters).then_some(&honours);
    let candidates = routing::select(
        &model,
        &prefs,
        capability_filter,
        Instant::now(),
        &mut rand::rng(),
    )
    .map_err(|e| match e {
        NoCandidate::Filtered { filter } if filter == "strictness" => {
            plan.cannot_honour(&request.model)
        }
        NoCandidate::Filtered { filter } => GatewayError::from_details(vec![ErrorDetail::new(
            filter,
            format!("no deployment of model \"{}\" is left", model.id()),
        )]),
        NoCandidate::AllOpen { until } => GatewayError::Overloaded {
            message: format!(
                "every deployment of model \"{}\" is temporarily unavailable (open circuit or upstream rate limit)",
                model.id()
            ),
            retry_after: until
                .saturating_duration_since(Instant::now())
                .max(std::time::Duration::from_secs(1)),
        },
    })?;
    // Admission debits an estimate (~4 bytes per token); the real usage settles it afterwards.
    let token_estimate = (request
        .fields
        .values()
        .map(|v| v.get().len())
        .sum::<usize>()
        / 4) as u64;

    Ok(SessionInit {
        request_id: record.request_id.clone(),
        key,
        request: Arc::new(request),
        model,
        candidates,
        sort: prefs.sort.map_or("weighted", |s| s.as_str()),
        debug,
        tools,
        token_estimate,
        version,
        anthropic_beta: anthropic_beta(req.headers()),
        beta_query: beta_query(req),
        client_headers: ClientHeaders::collect(req.headers(), &state.providers),
        strictness,
        strictness_plan: Arc::new(plan),
        session_id,
        received_at,
        // The session finishes the record from here on.
        record: std::mem::take(record),
        purpose: session::Purpose::Messages,
    })
}

/// Gateway tool declarations and `tool_choice` (gateway.md §5.1–§5.2). `tool_choice` is
/// validated for every request; the tool layer is set up only when the request needs it: gateway
/// or native server tools declared, a string `tool_choice` to rewrite, or gateway blocks in its
/// history to replay. `None` keeps the passthrough untouched.
fn gateway_tools(
    request: &MessagesRequest,
    state: &AppState,
    key: &ApiKey,
) -> Result<Option<ToolsInit>, GatewayError> {
    let access = |model: &str| match state.models.resolve(model) {
        None => ModelAccess::Unknown,
        Some(m) => {
            let names = std::iter::once(m.config.id.as_str())
                .chain(m.config.aliases.iter().map(String::as_str));
            if key.may_use(names) {
                ModelAccess::Allowed
            } else {
                ModelAccess::Forbidden
            }
        }
    };
    let choice_is_string = matches!(request.tool_choice, Some(serde_json::Value::String(_)));
    let declares_server_tools = request.tools.iter().any(|t| {
        t.get("type")
            .and_then(serde_json::Value::as_str)
            .is_some_and(is_tool_layer_type)
    });
    if !declares_server_tools && !choice_is_string && !has_server_blocks(&request.messages) {
        // No gateway tool can be named, so an empty set is the whole truth.
        ToolChoice::parse(
            request.tool_choice.as_ref(),
            &request.tools,
            &ToolSet::default(),
        )?;
        return Ok(None);
    }
    let set = ToolSet::declare(&request.tools, &state.config.tools, &access)?;
    let choice = ToolChoice::parse(request.tool_choice.as_ref(), &request.tools, &set)?;
    Ok(Some(ToolsInit {
        set: Arc::new(set),
        choice,
    }))
}

/// Whether an assistant turn holds server-tool blocks (`server_tool_use`, `*_tool_result`).
fn has_server_blocks(messages: &[serde_json::Value]) -> bool {
    messages
        .iter()
        .filter(|m| m.get("role").and_then(serde_json::Value::as_str) == Some("assistant"))
        .filter_map(|m| m.get("content").and_then(serde_json::Value::as_array))
        .flatten()
        .filter_map(|b| b.get("type").and_then(serde_json::Value::as_str))
        .any(|t| t == "server_tool_use" || (t.ends_with("_tool_result") && t != "tool_result"))
}

/// `?beta=true` (the SDKs' beta namespaces).
pub(super) fn beta_query(req: &HttpRequest) -> bool {
    web::Query::<BetaQuery>::from_query(req.query_string())
        .map(|q| q.beta.as_deref() == Some("true"))
        .unwrap_or(false)
}

/// The `provider` / `routing` extension (gateway.md §4), its provider names checked against the
/// configuration.
fn routing_prefs(
    request: &MessagesRequest,
    state: &AppState,
) -> Result<RoutingPrefs, GatewayError> {
    let prefs = &request.extensions.routing;
    let is_provider = |name: &str| state.providers.iter().any(|p| p.name() == name);
    routing::preferences::check_providers(prefs, &is_provider)
        .map_err(GatewayError::from_details)?;
    Ok(prefs.clone())
}

#[derive(serde::Deserialize)]
struct BetaQuery {
    beta: Option<String>,
}

fn too_large(limit: usize) -> GatewayError {
    GatewayError::RequestTooLarge(format!("request body exceeds the limit of {limit} bytes"))
}

async fn read_body(mut payload: web::Payload, limit: usize) -> Result<BytesMut, GatewayError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| GatewayError::invalid(format!("could not read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn header_str(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// messages-api.md §2.2: missing → the configured default; unknown → 400.
pub(super) fn anthropic_version(
    headers: &HeaderMap,
    default: &str,
) -> Result<ApiVersion, GatewayError> {
    let value =
        header_str(headers, &header::ANTHROPIC_VERSION).unwrap_or_else(|| default.to_string());
    ApiVersion::parse(&value).ok_or_else(|| {
        GatewayError::invalid(format!("anthropic-version: unsupported value \"{value}\""))
    })
}

/// gateway.md §3: trimmed, case-insensitive.
fn strictness(headers: &HeaderMap, default: Strictness) -> Result<Strictness, GatewayError> {
    let Some(raw) = headers.get(&header::STRICTNESS) else {
        return Ok(default);
    };
    match raw
        .to_str()
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        Ok("off") => Ok(Strictness::Off),
        Ok("warn") => Ok(Strictness::Warn),
        Ok("error") => Ok(Strictness::Error),
        _ => Err(GatewayError::invalid(
            "X-AIStats-Strictness: must be one of off, warn, error",
        )),
    }
}

/// Every `anthropic-beta` header, joined with `,` in arrival order.
pub(super) fn anthropic_beta(headers: &HeaderMap) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(&header::ANTHROPIC_BETA)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}
