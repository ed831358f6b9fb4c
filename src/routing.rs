//! Models, their deployments, and the order in which deployments are tried (gateway.md §7).

use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng;

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
                    Arc::new(Deployment {
                        name: d
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("{}/{}", d.provider, d.model)),
                        provider: providers[provider_index].clone(),
                        provider_index,
                        upstream_model: d.model.clone(),
                        weight: d.weight,
                        price: d.price,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;
    use rand::SeedableRng;

    fn dep(name: &str, weight: u32) -> Arc<Deployment> {
        let config: ProviderConfig = toml::from_str("name = \"p\"\nkind = \"mock\"").unwrap();
        Arc::new(Deployment {
            name: name.into(),
            provider: Arc::new(Provider {
                config,
                api_key: None,
            }),
            provider_index: 0,
            upstream_model: name.into(),
            weight,
            price: None,
        })
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
