//! What the workers share (one [`AppState`] behind an `Arc`) and what each worker owns
//! ([`WorkerActors`], started inside the worker's own arbiter).

use std::sync::Arc;

use actix::prelude::*;

use crate::api::auth::KeyIndex;
use crate::cluster::Redis;
use crate::config::Config;
use crate::observability::{Metrics, RequestLog};
use crate::providers::{Provider, ProviderActor};
use crate::ratelimit::{RateLimiterActor, RateLimits};
use crate::routing::ModelIndex;
use crate::tools::ToolActors;

pub struct AppState {
    pub config: Arc<Config>,
    pub keys: KeyIndex,
    pub models: ModelIndex,
    pub providers: Vec<Arc<Provider>>,
    pub limits: Arc<RateLimits>,
    pub metrics: Metrics,
    /// `None` when `request_log.enabled = false` (or before [`crate::start`] opens it).
    pub request_log: Option<RequestLog>,
    /// Cluster mode: the Redis holding the replicas' shared state (set by [`crate::start`]).
    pub redis: Option<Arc<Redis>>,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        let providers: Vec<Arc<Provider>> = config
            .providers
            .iter()
            .map(|p| {
                Arc::new(Provider {
                    config: p.clone(),
                    api_key: config.secrets.provider_keys.get(&p.name).cloned(),
                })
            })
            .collect();
        let keys = KeyIndex::build(&config);
        let models = ModelIndex::build(&config, &providers);
        let limits = Arc::new(RateLimits::new(keys.all()));
        Self {
            config: Arc::new(config),
            keys,
            models,
            providers,
            limits,
            metrics: Metrics::new(),
            request_log: None,
            redis: None,
        }
    }
}

/// The actors of one worker thread. Sessions on that worker message only these.
pub struct WorkerActors {
    /// Indexed like [`AppState::providers`].
    pub providers: Vec<Addr<ProviderActor>>,
    pub limiter: Addr<RateLimiterActor>,
    /// One actor per gateway tool kind.
    pub tools: ToolActors,
}

impl WorkerActors {
    /// Must run on the worker's thread: actors start on the current arbiter.
    pub fn start(state: &AppState) -> Self {
        let timeouts = &state.config.timeouts;
        let stream = &state.config.stream;
        Self {
            providers: state
                .providers
                .iter()
                .map(|p| ProviderActor::new(p.clone(), timeouts, stream).start())
                .collect(),
            limiter: RateLimiterActor::new(
                state.limits.clone(),
                state.metrics.rate_limited.clone(),
            )
            .start(),
            tools: ToolActors::start(&state.config, &state.providers),
        }
    }
}
