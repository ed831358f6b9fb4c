//! The HTTP surface. Every response carries a `request-id`; every error is the Anthropic envelope.

pub mod auth;
pub mod count_tokens;
pub mod messages;
pub mod models;
pub mod ops;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use crate::ids;
use crate::state::{AppState, LiveState, WorkerActors, WorkerSlot};

/// Request headers the gateway reads, named once (a `&str` name is parsed on every lookup).
pub(crate) mod header {
    use actix_web::http::header::HeaderName;

    pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    pub const AUTHORIZATION: HeaderName = HeaderName::from_static("authorization");
    pub const CONTENT_LENGTH: HeaderName = HeaderName::from_static("content-length");
    pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
    pub const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
    pub const STRICTNESS: HeaderName = HeaderName::from_static("x-aistats-strictness");
    pub const SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
    pub const CLAUDE_CODE_SESSION_ID: HeaderName =
        HeaderName::from_static("x-claude-code-session-id");
    pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
    pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
}

/// The request's id, minted by the middleware before any handler runs.
#[derive(Clone)]
pub struct RequestId(pub String);

/// The config generation a request runs on, loaded once when it arrives and kept to its end
/// (a reload never changes a running request), with this worker's actors for it.
pub struct Current {
    pub state: web::Data<AppState>,
    pub workers: web::Data<WorkerActors>,
}

/// The current config generation alone, for routes that message no actor.
pub struct CurrentState(pub web::Data<AppState>);

fn live(req: &HttpRequest) -> Result<&LiveState, actix_web::Error> {
    req.app_data::<web::Data<LiveState>>()
        .map(|l| l.get_ref())
        .ok_or_else(|| actix_web::error::ErrorInternalServerError("no live state"))
}

impl FromRequest for Current {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(live(req).and_then(|live| {
            let slot = req
                .app_data::<web::Data<WorkerSlot>>()
                .ok_or_else(|| actix_web::error::ErrorInternalServerError("no worker slot"))?;
            let (state, workers) = slot.snapshot(live);
            Ok(Self {
                state: web::Data::from(state),
                workers: web::Data::from(workers),
            })
        }))
    }
}

impl FromRequest for CurrentState {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(live(req).map(|live| Self(web::Data::from(live.load()))))
    }
}

pub fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(ids::request_id)
}

async fn stamp_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = ids::request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    // Handlers answer every error themselves, as an envelope; nothing returns `Err` here.
    let mut res = next.call(req).await?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(header::REQUEST_ID, v);
    }
    Ok(res)
}

/// Routes; `/metrics` too unless it has a listener of its own.
pub fn configure(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    let mut scope = web::scope("")
        .wrap(from_fn(stamp_request_id))
        .route("/v1/messages", web::post().to(messages::create_message))
        .route(
            "/v1/messages/count_tokens",
            web::post().to(count_tokens::count_tokens),
        )
        .route("/v1/models", web::get().to(models::list))
        .route("/v1/models/{model_id}", web::get().to(models::retrieve))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz));
    if with_metrics {
        scope = scope.route("/metrics", web::get().to(ops::metrics));
    }
    cfg.service(scope.default_service(web::to(ops::not_found)));
}
