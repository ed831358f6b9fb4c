//! Models, their deployments, and which deployments a request tries in which order
//! (gateway.md §7.1–§7.2). Deployment health (circuit breaker, latency stats) lives on the
//! deployment itself, shared by every worker.

pub mod breaker;
pub mod preferences;
pub mod shared;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;

pub use breaker::{CircuitBreaker, CircuitState, Verdict};
pub use preferences::{RoutingPrefs, Sort};
pub use shared::SharedHold;
pub use stats::DeploymentStats;

use crate::config::{Config, ModelConfig, Price};
use crate::providers::Provider;

/// One way to serve a model: a provider and its upstream model id.
#[derive(Debug)]
pub struct Deployment {
    /// `<provider>/<model>` unless configured.
    pub name: String,
    pub provider: Arc<Provider>,
    /// Index into the per-worker provider actors.
    pub provider_index: usize,
    pub upstream_model: String,
    pub weight: u32,
    pub price: Option<Price>,
    /// Shared with the same deployment of the previous config generation, when it did not
    /// change: a reload keeps its health.
    pub breaker: Arc<CircuitBreaker>,
    /// The cluster's view of this deployment (empty without cluster mode); kept by a reload
    /// like the breaker.
    pub shared: Arc<SharedHold>,
    pub stats: Arc<DeploymentStats>,
}

impl Deployment {
    /// Input + output price, for `sort = price`.
    fn price_sum(&self) -> Option<f64> {
        self.price.map(|p| p.input + p.output)
    }
}

#[derive(Debug)]
pub struct Model {
    pub config: ModelConfig,
    pub deployments: Vec<Arc<Deployment>>,
}

impl Model {
    pub fn id(&self) -> &str {
        &self.config.id
    }
}

/// Public model ids and aliases → models.
#[derive(Debug, Default)]
pub struct ModelIndex {
    by_name: HashMap<String, Arc<Model>>,
    /// In config order (for `/v1/models`).
    pub ordered: Vec<Arc<Model>>,
}

impl ModelIndex {
    pub fn build(config: &Config, providers: &[Arc<Provider>]) -> Self {
        Self::build_after(config, providers, None)
    }

    /// As [`ModelIndex::build`], for the config generation after `prev`: a deployment whose
    /// model, name, provider (the same `Arc`) and upstream model are unchanged keeps its breaker
    /// and latency statistics, unless the breaker settings changed.
    pub fn build_after(
        config: &Config,
        providers: &[Arc<Provider>],
        prev: Option<(&ModelIndex, &Config)>,
    ) -> Self {
        let mut index = Self::default();
        for m in &config.models {
            let deployments = m
                .deployments
                .iter()
                .map(|d| {
                    let provider_index = providers
                        .iter()
                        .position(|p| p.name() == d.provider)
                        .expect("validated: deployment provider exists");
                    let provider = providers[provider_index].clone();
                    let name = d
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{}/{}", d.provider, d.model));
                    let kept = prev
                        .filter(|(_, c)| c.circuit_breaker == config.circuit_breaker)
                        .and_then(|(index, _)| index.resolve(&m.id))
                        .and_then(|old| {
                            old.deployments.iter().find(|o| {
                                o.name == name
                                    && o.upstream_model == d.model
                                    && Arc::ptr_eq(&o.provider, &provider)
                            })
                        });
                    let (breaker, shared, stats) = match kept {
                        Some(o) => (o.breaker.clone(), o.shared.clone(), o.stats.clone()),
                        None => (
                            Arc::new(CircuitBreaker::new(config.circuit_breaker.clone())),
                            Arc::new(SharedHold::new(format!("{}/{name}", m.id))),
                            Arc::default(),
                        ),
                    };
                    Arc::new(Deployment {
                        shared,
                        name,
                        provider,
                        provider_index,
                        upstream_model: d.model.clone(),
                        weight: d.weight,
                        price: d.price,
                        breaker,
                        stats,
                    })
                })
                .collect();
            let model = Arc::new(Model {
                config: m.clone(),
                deployments,
            });
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                index.by_name.insert(name.clone(), model.clone());
            }
            index.ordered.push(model);
        }
        index
    }

    /// A model by id or alias (exact match).
    pub fn resolve(&self, name: &str) -> Option<&Arc<Model>> {
        self.by_name.get(name)
    }
}

/// Why no deployment is left for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum NoCandidate {
    /// A filter removed the last deployment: `provider.only`, `provider.ignore`,
    /// `provider.max_price` or `strictness` (the capability filter).
    Filtered { filter: String },
    /// Every remaining deployment's circuit is open; the earliest becomes available then.
    AllOpen { until: Instant },
}

/// The deployments to try, in order (gateway.md §7.2). `capable` is the capability filter, used
/// when strictness is `error` or the request sets `require_parameters`.
pub fn select(
    model: &Model,
    prefs: &RoutingPrefs,
    capable: Option<&dyn Fn(&Deployment) -> bool>,
    now: Instant,
    rng: &mut impl Rng,
) -> Result<Vec<Arc<Deployment>>, NoCandidate> {
    let filtered = |filter: String| NoCandidate::Filtered { filter };
    let mut pool: Vec<Arc<Deployment>> = model.deployments.clone();
    if let Some(only) = &prefs.only {
        pool.retain(|d| only.iter().any(|p| p == d.provider.name()));
        if pool.is_empty() {
            return Err(filtered(format!("{}.only", prefs.source)));
        }
    }
    if !prefs.ignore.is_empty() {
        pool.retain(|d| !prefs.ignore.iter().any(|p| p == d.provider.name()));
        if pool.is_empty() {
            return Err(filtered(format!("{}.ignore", prefs.source)));
        }
    }
    if let Some(capable) = capable {
        pool.retain(|d| capable(d));
        if pool.is_empty() {
            return Err(filtered("strictness".into()));
        }
    }
    if let Some(max) = prefs.max_price {
        pool.retain(|d| match d.price {
            None => false,
            Some(p) => {
                max.prompt.is_none_or(|m| p.input <= m)
                    && max.completion.is_none_or(|m| p.output <= m)
            }
        });
        if pool.is_empty() {
            return Err(filtered(format!("{}.max_price", prefs.source)));
        }
    }
    let mut earliest: Option<Instant> = None;
    pool.retain(|d| match shared::available(d, now) {
        Ok(()) => true,
        Err(until) => {
            earliest = Some(earliest.map_or(until, |e| e.min(until)));
            false
        }
    });
    if pool.is_empty() {
        return Err(NoCandidate::AllOpen {
            until: earliest.unwrap_or(now),
        });
    }

    let (mut first, rest): (Vec<_>, Vec<_>) = pool
        .into_iter()
        .partition(|d| prefs.order.iter().any(|p| p == d.provider.name()));
    first.sort_by_key(|d| prefs.order.iter().position(|p| p == d.provider.name()));
    let rest = match prefs.sort {
        None => weighted_order(&rest, rng),
        Some(sort) => sorted(rest, sort),
    };
    first.extend(rest);
    if !prefs.allow_fallbacks {
        first.truncate(1);
    }
    Ok(first)
}

/// `price`: input + output ascending (unpriced last); `latency`: EWMA TTFT ascending (unknown
/// last); `throughput`: EWMA output tokens/s descending (unknown last). Stable, so ties keep
/// config order.
fn sorted(mut pool: Vec<Arc<Deployment>>, sort: Sort) -> Vec<Arc<Deployment>> {
    let key = |d: &Arc<Deployment>| -> f64 {
        let v = match sort {
            Sort::Price => d.price_sum(),
            Sort::Latency => d.stats.ttft_ms(),
            Sort::Throughput => d.stats.tokens_per_sec().map(|t| -t),
        };
        v.unwrap_or(f64::INFINITY)
    };
    pool.sort_by(|a, b| key(a).total_cmp(&key(b)));
    pool
}

/// Default order: weighted random without replacement over weight > 0, then the weight-0
/// (fallback-only) deployments in config order.
pub fn weighted_order(deployments: &[Arc<Deployment>], rng: &mut impl Rng) -> Vec<Arc<Deployment>> {
    let mut pool: Vec<&Arc<Deployment>> = deployments.iter().filter(|d| d.weight > 0).collect();
    let mut out = Vec::with_capacity(deployments.len());
    while !pool.is_empty() {
        let total: u64 = pool.iter().map(|d| d.weight as u64).sum();
        let mut pick = rng.random_range(0..total);
        let i = pool
            .iter()
            .position(|d| {
                if pick < d.weight as u64 {
                    true
                } else {
                    pick -= d.weight as u64;
                    false
                }
            })
            .expect("pick < total");
        out.push(pool.remove(i).clone());
    }
    out.extend(deployments.iter().filter(|d| d.weight == 0).cloned());
    out
}

/// A deployment on a fresh provider of `kind` named `provider`, for unit tests across modules.
#[cfg(test)]
pub(crate) fn test_deployment(
    provider: &str,
    kind: &str,
    name: &str,
    weight: u32,
    price: Option<(f64, f64)>,
    breaker: crate::config::CircuitBreakerConfig,
) -> Arc<Deployment> {
    let config: crate::config::ProviderConfig =
        toml::from_str(&format!("name = \"{provider}\"\nkind = \"{kind}\""))
            .expect("test provider");
    Arc::new(Deployment {
        name: name.into(),
        provider: Arc::new(Provider {
            config,
            api_key: None,
            cloud: None,
        }),
        provider_index: 0,
        upstream_model: name.into(),
        weight,
        price: price.map(|(input, output)| Price { input, output }),
        breaker: Arc::new(CircuitBreaker::new(breaker)),
        shared: Arc::new(SharedHold::new(name.into())),
        stats: Arc::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::time::Duration;

    fn dep_on(
        provider: &str,
        name: &str,
        weight: u32,
        price: Option<(f64, f64)>,
    ) -> Arc<Deployment> {
        let breaker = crate::config::CircuitBreakerConfig {
            consecutive_failures: 1,
            ..Default::default()
        };
        test_deployment(provider, "mock", name, weight, price, breaker)
    }

    fn dep(name: &str, weight: u32) -> Arc<Deployment> {
        dep_on("p", name, weight, None)
    }

    fn model(deployments: Vec<Arc<Deployment>>) -> Model {
        Model {
            config: toml::from_str("id = \"m\"\ndeployments = []").unwrap(),
            deployments,
        }
    }

    fn names(v: &[Arc<Deployment>]) -> Vec<&str> {
        v.iter().map(|d| d.name.as_str()).collect()
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(1)
    }

    fn prefs(v: serde_json::Value) -> RoutingPrefs {
        crate::protocol::extensions::parse_routing(Some(&v), None).unwrap()
    }

    /// `select` with routing preferences `v` and no capability filter.
    fn select_by(
        m: &Model,
        v: serde_json::Value,
        now: Instant,
    ) -> Result<Vec<Arc<Deployment>>, NoCandidate> {
        select(m, &prefs(v), None, now, &mut rng())
    }

    #[test]
    fn filters_in_order_and_name_the_one_that_emptied_the_pool() {
        let m = model(vec![
            dep_on("a", "a/1", 1, Some((3.0, 15.0))),
            dep_on("b", "b/1", 1, Some((1.0, 2.0))),
            dep_on("c", "c/1", 0, None),
        ]);
        let now = Instant::now();
        let sel = select_by(&m, serde_json::json!({"only":["a","b"]}), now).unwrap();
        assert_eq!(sel.len(), 2);
        let e = select_by(&m, serde_json::json!({"only":["c"],"ignore":["c"]}), now).unwrap_err();
        assert_eq!(
            e,
            NoCandidate::Filtered {
                filter: "provider.ignore".into()
            }
        );
        let sel = select_by(&m, serde_json::json!({"max_price":{"prompt":2}}), now).unwrap();
        assert_eq!(
            names(&sel),
            ["b/1"],
            "unpriced deployments are dropped by a price cap"
        );
        let e = select_by(&m, serde_json::json!({"max_price":{"completion":1}}), now).unwrap_err();
        assert_eq!(
            e,
            NoCandidate::Filtered {
                filter: "provider.max_price".into()
            }
        );
        let capable = |d: &Deployment| d.provider.name() == "c";
        let sel = select(
            &m,
            &RoutingPrefs::default(),
            Some(&capable),
            now,
            &mut rng(),
        )
        .unwrap();
        assert_eq!(names(&sel), ["c/1"]);
        let never = |_: &Deployment| false;
        let e = select(&m, &RoutingPrefs::default(), Some(&never), now, &mut rng()).unwrap_err();
        assert_eq!(
            e,
            NoCandidate::Filtered {
                filter: "strictness".into()
            }
        );
    }

    #[test]
    fn order_then_sort_then_fallbacks() {
        let m = model(vec![
            dep_on("a", "a/1", 1, Some((3.0, 15.0))),
            dep_on("b", "b/1", 1, Some((1.0, 2.0))),
            dep_on("c", "c/1", 0, Some((0.5, 0.5))),
        ]);
        let now = Instant::now();
        let sel = select_by(&m, serde_json::json!({"sort":"price"}), now).unwrap();
        assert_eq!(names(&sel), ["c/1", "b/1", "a/1"]);
        let sel = select_by(&m, serde_json::json!({"sort":"price","order":["a"]}), now).unwrap();
        assert_eq!(names(&sel), ["a/1", "c/1", "b/1"]);
        let sel = select_by(
            &m,
            serde_json::json!({"order":["b"],"allow_fallbacks":false}),
            now,
        )
        .unwrap();
        assert_eq!(names(&sel), ["b/1"]);
        // Latency: known fastest first, unknown last.
        m.deployments[0]
            .stats
            .record(Duration::from_millis(50), Duration::from_millis(60), 1);
        m.deployments[2]
            .stats
            .record(Duration::from_millis(500), Duration::from_millis(600), 1);
        let sel = select_by(&m, serde_json::json!({"sort":"latency"}), now).unwrap();
        assert_eq!(names(&sel), ["a/1", "c/1", "b/1"]);
        let sel = select_by(&m, serde_json::json!({"sort":"throughput"}), now).unwrap();
        assert_eq!(names(&sel), ["a/1", "c/1", "b/1"]);
    }

    #[test]
    fn open_circuits_are_skipped_and_all_open_says_until_when() {
        let m = model(vec![
            dep_on("a", "a/1", 1, None),
            dep_on("b", "b/1", 1, None),
        ]);
        let now = Instant::now();
        m.deployments[0].breaker.record(Verdict::Failure, now);
        let sel = select(&m, &RoutingPrefs::default(), None, now, &mut rng()).unwrap();
        assert_eq!(names(&sel), ["b/1"]);
        m.deployments[1].breaker.record(Verdict::Failure, now);
        match select(&m, &RoutingPrefs::default(), None, now, &mut rng()).unwrap_err() {
            NoCandidate::AllOpen { until } => assert_eq!(until, now + Duration::from_secs(30)),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn weights_are_honoured_and_zero_weight_comes_last() {
        let deps = vec![dep("a", 3), dep("fallback", 0), dep("b", 1)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut first_a = 0;
        for _ in 0..4000 {
            let order = weighted_order(&deps, &mut rng);
            assert_eq!(order.len(), 3);
            assert_eq!(order[2].name, "fallback");
            if order[0].name == "a" {
                first_a += 1;
            }
        }
        // Expect 3/4 of the picks; allow a wide margin.
        assert!((2700..3300).contains(&first_a), "{first_a}");
    }
}
