//! `[[models]]`: public model ids, their aliases and ordered deployments.

use std::collections::HashSet;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    /// RFC 3339; unset → the epoch.
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub max_input_tokens: Option<u64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    pub deployments: Vec<DeploymentConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub provider: String,
    /// The upstream model id.
    pub model: String,
    /// Relative weight; 0 = fallback only.
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub price: Option<Price>,
    /// Defaults to `<provider>/<model>`.
    #[serde(default)]
    pub name: Option<String>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

fn one() -> u32 {
    1
}

/// Ids, aliases (one namespace) and deployments of known providers. Returns every id and alias.
pub(super) fn validate(
    models: &[ModelConfig],
    provider_names: &HashSet<String>,
) -> Result<HashSet<String>, ConfigError> {
    let mut model_names = HashSet::new();
    for (i, m) in models.iter().enumerate() {
        for (k, name) in std::iter::once(("id".to_string(), &m.id)).chain(
            m.aliases
                .iter()
                .enumerate()
                .map(|(j, a)| (format!("aliases[{j}]"), a)),
        ) {
            if name.is_empty() || name.len() > 256 {
                return Err(ConfigError::new(
                    format!("models[{i}].{k}"),
                    "must be 1..256 chars",
                ));
            }
            if !model_names.insert(name.clone()) {
                return Err(ConfigError::new(
                    format!("models[{i}].{k}"),
                    format!("\"{name}\" is already a model id or alias"),
                ));
            }
        }
        if m.deployments.is_empty() {
            return Err(ConfigError::new(
                format!("models[{i}].deployments"),
                "must list at least one deployment",
            ));
        }
        if let Some(c) = &m.created_at {
            if chrono::DateTime::parse_from_rfc3339(c).is_err() {
                return Err(ConfigError::new(
                    format!("models[{i}].created_at"),
                    "must be an RFC 3339 timestamp",
                ));
            }
        }
        for (j, d) in m.deployments.iter().enumerate() {
            let at = |k: &str| format!("models[{i}].deployments[{j}].{k}");
            if !provider_names.contains(&d.provider) {
                return Err(ConfigError::new(
                    at("provider"),
                    format!("unknown provider \"{}\"", d.provider),
                ));
            }
            if d.model.is_empty() {
                return Err(ConfigError::new(at("model"), "must not be empty"));
            }
            if let Some(p) = d.price {
                if !(p.input >= 0.0 && p.output >= 0.0) {
                    return Err(ConfigError::new(at("price"), "must be non-negative"));
                }
            }
        }
    }

    Ok(model_names)
}
