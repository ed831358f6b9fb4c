//! What the workers share and what each worker owns, per config generation.
//!
//! [`AppState`] is one config generation: the config and everything built from it. [`LiveState`]
//! holds the current one behind an `ArcSwap`; a request loads it once at admission and keeps that
//! `Arc` to its end, so a reload never changes a running request. [`WorkerActors`] are one
//! worker's actors for one generation; [`WorkerSlot`] keeps the worker's current set and moves it
//! to a new generation on the worker's first request after a reload, keeping the actors of
//! unchanged providers (and so their connection pools).

use std::cell::RefCell;
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::api::auth::KeyIndex;
use crate::cluster::health::Watched;
use crate::cluster::Redis;
use crate::config::Config;
use crate::observability::{self, Metrics, RequestLog, RequestRecord};
use crate::providers::{Provider, ProviderActor};
use crate::ratelimit::{RateLimiterActor, RateLimits};
use crate::routing::ModelIndex;
use crate::tools::ToolActors;

pub struct AppState {
    /// 1 at start, one more per applied reload.
    pub generation: u64,
    pub config: Arc<Config>,
    pub keys: KeyIndex,
    pub models: ModelIndex,
    pub providers: Vec<Arc<Provider>>,
    pub limits: Arc<RateLimits>,
    /// Shared by every generation.
    pub metrics: Arc<Metrics>,
    /// `None` when `request_log.enabled = false` (or before [`crate::start`] opens it).
    pub request_log: Option<Arc<RequestLog>>,
    /// Cluster mode: the Redis holding the replicas' shared state (set by [`crate::start`]).
    pub redis: Option<Arc<Redis>>,
    /// Cluster mode: the deployments whose shared health the poller refreshes.
    pub health: Option<Arc<Watched>>,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        let providers = providers(&config, None);
        let keys = KeyIndex::build(&config);
        let models = ModelIndex::build(&config, &providers);
        let limits = Arc::new(RateLimits::new(keys.all()));
        Self {
            generation: 1,
            config: Arc::new(config),
            keys,
            models,
            providers,
            limits,
            metrics: Arc::new(Metrics::new()),
            request_log: None,
            redis: None,
            health: None,
        }
    }

    /// The generation after this one, for `config` (already validated, and with nothing that
    /// needs a restart changed). What did not change keeps its state: providers (and so their
    /// per-worker actors and pools), deployment health, per-key limiter state.
    pub fn next(&self, config: Config) -> Self {
        let providers = providers(&config, Some(self));
        let keys = KeyIndex::build(&config);
        let models =
            ModelIndex::build_after(&config, &providers, Some((&self.models, &self.config)));
        let limits = Arc::new(RateLimits::after(Some(&self.limits), keys.all()));
        // Cluster mode carries over: the same Redis, its shared limits and health poller.
        if let Some(shared) = self.limits.shared() {
            limits.set_shared(shared.clone());
        }
        if let Some(health) = &self.health {
            health.watch(&models);
        }
        Self {
            generation: self.generation + 1,
            config: Arc::new(config),
            keys,
            models,
            providers,
            limits,
            metrics: self.metrics.clone(),
            request_log: self.request_log.clone(),
            redis: self.redis.clone(),
            health: self.health.clone(),
        }
    }
}

impl AppState {
    /// Accounts for one finished request: metrics, a log line, the request log row.
    pub fn record(&self, record: RequestRecord) {
        let kind = record
            .provider
            .as_ref()
            .and_then(|n| self.providers.iter().find(|p| p.name() == n))
            .map(|p| p.kind().as_str());
        observability::record(&self.metrics, self.request_log.as_deref(), record, kind);
    }
}

/// The runtime providers of `config`; a provider whose config, key, timeouts and stream settings
/// equal those in `prev` (cloud credentials included) is the same `Arc`.
fn providers(config: &Config, prev: Option<&AppState>) -> Vec<Arc<Provider>> {
    let key_of = |c: &Config, name: &str| c.secrets.provider_keys.get(name).cloned();
    config
        .providers
        .iter()
        .map(|p| {
            let api_key = key_of(config, &p.name);
            let kept = prev
                .filter(|s| {
                    s.config.timeouts == config.timeouts && s.config.stream == config.stream
                })
                .and_then(|s| {
                    s.providers.iter().find(|o| {
                        o.config == *p
                            && o.api_key == api_key
                            && s.config.secrets.cloud.get(&p.name)
                                == config.secrets.cloud.get(&p.name)
                    })
                });
            match kept {
                Some(o) => o.clone(),
                None => Arc::new(Provider::new(p.clone(), &config.secrets)),
            }
        })
        .collect()
}

/// The current config generation, swapped whole by a reload.
pub struct LiveState {
    current: ArcSwap<AppState>,
}

impl LiveState {
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            current: ArcSwap::new(state),
        }
    }

    pub fn load(&self) -> Arc<AppState> {
        self.current.load_full()
    }

    pub fn store(&self, state: Arc<AppState>) {
        self.current.store(state);
    }
}

/// The actors of one worker thread for one generation. Sessions on that worker message only
/// these.
pub struct WorkerActors {
    pub generation: u64,
    /// Indexed like [`AppState::providers`].
    pub providers: Vec<Addr<ProviderActor>>,
    pub limiter: Addr<RateLimiterActor>,
    /// One actor per gateway tool kind.
    pub tools: ToolActors,
    /// The providers the actors serve, to recognise unchanged ones in the next generation.
    served: Vec<Arc<Provider>>,
    limits: Arc<RateLimits>,
}

impl WorkerActors {
    /// Must run on the worker's thread: actors start on the current arbiter.
    pub fn start(state: &AppState) -> Self {
        Self::start_after(None, state)
    }

    /// As [`WorkerActors::start`], keeping `prev`'s actor for every provider that is the same
    /// `Arc` in `state` (its pool survives); changed and added providers get new actors.
    fn start_after(prev: Option<&WorkerActors>, state: &AppState) -> Self {
        let timeouts = &state.config.timeouts;
        let stream = &state.config.stream;
        let providers = state
            .providers
            .iter()
            .map(|p| {
                prev.and_then(|w| {
                    w.served
                        .iter()
                        .position(|o| Arc::ptr_eq(o, p))
                        .map(|i| w.providers[i].clone())
                })
                .unwrap_or_else(|| ProviderActor::new(p.clone(), timeouts, stream).start())
            })
            .collect();
        let limiter = match prev {
            Some(w) if Arc::ptr_eq(&w.limits, &state.limits) => w.limiter.clone(),
            _ => RateLimiterActor::new(state.limits.clone(), state.metrics.rate_limited.clone())
                .start(),
        };
        Self {
            generation: state.generation,
            providers,
            limiter,
            tools: ToolActors::start(&state.config, &state.providers),
            served: state.providers.clone(),
            limits: state.limits.clone(),
        }
    }
}

/// One worker's current [`WorkerActors`]. Only its own thread touches it, so the `RefCell` is
/// never contended; sessions hold their own `Arc` of the set they started with.
pub struct WorkerSlot {
    current: RefCell<Arc<WorkerActors>>,
}

impl WorkerSlot {
    /// Must run on the worker's thread.
    pub fn new(state: &AppState) -> Self {
        Self {
            current: RefCell::new(Arc::new(WorkerActors::start(state))),
        }
    }

    /// The current generation and this worker's actors for it, moving the worker to a new
    /// generation first if a reload happened since its last request.
    pub fn snapshot(&self, live: &LiveState) -> (Arc<AppState>, Arc<WorkerActors>) {
        let state = live.load();
        let mut current = self.current.borrow_mut();
        if current.generation != state.generation {
            *current = Arc::new(WorkerActors::start_after(Some(&current), &state));
        }
        (state, current.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Verdict;
    use std::time::Instant;

    fn config(b_reply: &str, extra: &str) -> Config {
        let text = format!(
            r#"
            auth.disabled = true
            [[providers]]
            name = "a"
            kind = "mock"
            [[providers]]
            name = "b"
            kind = "mock"
            reply = "{b_reply}"
            [[models]]
            id = "m"
            deployments = [{{ provider = "a", model = "x" }}, {{ provider = "b", model = "y" }}]
            {extra}
            "#
        );
        Config::from_toml_with_env(&text, &|_| None).unwrap()
    }

    #[test]
    fn a_new_generation_keeps_what_did_not_change() {
        let first = AppState::new(config("one", ""));
        let m = first.models.resolve("m").unwrap();
        m.deployments[0]
            .breaker
            .record(Verdict::Failure, Instant::now());
        let next = first.next(config(
            "two",
            "[[models]]\nid = \"n\"\ndeployments = [{ provider = \"a\", model = \"z\" }]",
        ));
        assert_eq!(next.generation, 2);
        assert!(Arc::ptr_eq(&first.providers[0], &next.providers[0]));
        assert!(!Arc::ptr_eq(&first.providers[1], &next.providers[1]));
        let (old, new) = (m, next.models.resolve("m").unwrap());
        assert!(Arc::ptr_eq(
            &old.deployments[0].breaker,
            &new.deployments[0].breaker
        ));
        assert!(Arc::ptr_eq(
            &old.deployments[0].stats,
            &new.deployments[0].stats
        ));
        assert!(
            !Arc::ptr_eq(&old.deployments[1].breaker, &new.deployments[1].breaker),
            "a changed provider's deployment starts with a fresh breaker"
        );
        assert!(Arc::ptr_eq(&first.metrics, &next.metrics));
        // Other breaker settings: every breaker starts afresh.
        let mut c = config("two", "");
        c.circuit_breaker.consecutive_failures += 1;
        let third = next.next(c);
        assert!(!Arc::ptr_eq(
            &new.deployments[0].breaker,
            &third.models.resolve("m").unwrap().deployments[0].breaker
        ));
    }

    #[actix_web::test]
    async fn a_worker_keeps_the_actors_of_unchanged_providers() {
        let first = Arc::new(AppState::new(config("one", "")));
        let live = LiveState::new(first.clone());
        let slot = WorkerSlot::new(&first);
        let (_, w1) = slot.snapshot(&live);
        let (_, again) = slot.snapshot(&live);
        assert!(Arc::ptr_eq(&w1, &again), "no reload, the same actors");
        live.store(Arc::new(first.next(config("two", ""))));
        let (state, w2) = slot.snapshot(&live);
        assert_eq!((state.generation, w2.generation), (2, 2));
        assert!(
            w1.providers[0] == w2.providers[0],
            "unchanged: the same actor"
        );
        assert!(w1.providers[1] != w2.providers[1], "changed: a new actor");
        assert!(
            w1.limiter != w2.limiter,
            "the limiter follows the new limits"
        );
    }
}
