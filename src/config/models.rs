//! `[[models]]`: public model ids, their aliases and ordered deployments.

use serde::Deserialize;

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
