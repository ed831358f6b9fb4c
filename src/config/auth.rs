//! `[auth]` and `[[auth.keys]]`.

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub disabled: bool,
    pub keys: Vec<KeyConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    /// Name of an environment variable holding the key.
    pub secret_env: Option<String>,
    /// Hex SHA-256 of the key, for keys that should not live in the environment.
    pub secret_sha256: Option<String>,
    #[serde(default = "all_models")]
    pub allowed_models: Vec<String>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent: Option<u32>,
    #[serde(default = "yes")]
    pub allow_debug: bool,
}

fn all_models() -> Vec<String> {
    vec!["*".into()]
}

fn yes() -> bool {
    true
}
