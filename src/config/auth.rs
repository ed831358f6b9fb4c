//! `[auth]` and `[[auth.keys]]`.

use std::collections::HashSet;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{read_env, valid_name, ConfigError, Env};

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

impl AuthConfig {
    /// Key names and secrets; `allowed_models` must name models. Returns the SHA-256 of each
    /// key's secret, by index.
    pub(super) fn validate(
        &self,
        env: Env,
        model_names: &HashSet<String>,
    ) -> Result<Vec<[u8; 32]>, ConfigError> {
        if !self.disabled && self.keys.is_empty() {
            return Err(ConfigError::new(
                "auth.keys",
                "no keys configured; add [[auth.keys]] or set auth.disabled = true",
            ));
        }
        let mut key_names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut key_hashes = Vec::with_capacity(self.keys.len());
        for (i, k) in self.keys.iter().enumerate() {
            let at = |f: &str| format!("auth.keys[{i}].{f}");
            if !valid_name(&k.name) {
                return Err(ConfigError::new(
                    at("name"),
                    "must be 1..64 chars of [A-Za-z0-9_.-]",
                ));
            }
            if !key_names.insert(k.name.clone()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("duplicate key name \"{}\"", k.name),
                ));
            }
            let hash = match (&k.secret_env, &k.secret_sha256) {
                (Some(var), None) => {
                    let secret = read_env(env, at("secret_env"), var)?;
                    Sha256::digest(secret.expose().as_bytes()).into()
                }
                (None, Some(hex_hash)) => {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(hex_hash.trim(), &mut out).map_err(|_| {
                        ConfigError::new(
                            at("secret_sha256"),
                            "must be 64 hex characters (a SHA-256 digest)",
                        )
                    })?;
                    out
                }
                _ => {
                    return Err(ConfigError::new(
                        at("secret_env"),
                        "set exactly one of secret_env and secret_sha256",
                    ))
                }
            };
            if !hashes.insert(hash) {
                return Err(ConfigError::new(
                    at("name"),
                    "two keys have the same secret",
                ));
            }
            key_hashes.push(hash);
            for (j, m) in k.allowed_models.iter().enumerate() {
                if m != "*" && !model_names.contains(m) {
                    return Err(ConfigError::new(
                        format!("auth.keys[{i}].allowed_models[{j}]"),
                        format!("unknown model \"{m}\""),
                    ));
                }
            }
        }

        Ok(key_hashes)
    }
}
