//! Gateway keys (gateway.md §2): `x-api-key` or `Authorization: Bearer`, SHA-256-hashed and
//! compared in constant time. Only a key's `name` ever reaches logs.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, LimitsConfig};
use crate::error::GatewayError;

/// A configured key as the runtime sees it.
#[derive(Debug)]
pub struct ApiKey {
    pub name: String,
    /// `None` = every model.
    pub allowed_models: Option<Vec<String>>,
    pub limits: LimitsConfig,
    pub allow_debug: bool,
}

impl ApiKey {
    /// Whether the key may use a model, given the model's id and aliases.
    pub fn may_use<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> bool {
        match &self.allowed_models {
            None => true,
            Some(allowed) => names.any(|n| allowed.iter().any(|a| a == n)),
        }
    }

    pub fn has_limits(&self) -> bool {
        self.limits.requests_per_minute > 0
            || self.limits.tokens_per_minute > 0
            || self.limits.max_concurrent > 0
    }
}

#[derive(Debug)]
pub struct KeyIndex {
    by_hash: HashMap<[u8; 32], Arc<ApiKey>>,
    /// With `auth.disabled`: every request runs as this key.
    anonymous: Option<Arc<ApiKey>>,
}

impl KeyIndex {
    pub fn build(config: &Config) -> Self {
        let defaults = &config.limits;
        let by_hash = config
            .auth
            .keys
            .iter()
            .zip(&config.secrets.key_hashes)
            .map(|(k, hash)| {
                let key = ApiKey {
                    name: k.name.clone(),
                    allowed_models: if k.allowed_models.iter().any(|m| m == "*") {
                        None
                    } else {
                        Some(k.allowed_models.clone())
                    },
                    limits: LimitsConfig {
                        requests_per_minute: k
                            .requests_per_minute
                            .unwrap_or(defaults.requests_per_minute),
                        tokens_per_minute: k
                            .tokens_per_minute
                            .unwrap_or(defaults.tokens_per_minute),
                        max_concurrent: k.max_concurrent.unwrap_or(defaults.max_concurrent),
                    },
                    allow_debug: k.allow_debug,
                };
                (*hash, Arc::new(key))
            })
            .collect();
        let anonymous = config.auth.disabled.then(|| {
            Arc::new(ApiKey {
                name: "anonymous".into(),
                allowed_models: None,
                limits: defaults.clone(),
                allow_debug: true,
            })
        });
        Self { by_hash, anonymous }
    }

    /// Every key, for the rate limiter.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ApiKey>> {
        self.by_hash.values().chain(self.anonymous.iter())
    }

    /// Resolves the presented key: `x-api-key` first, then `Authorization: Bearer`; either may
    /// name a configured key.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<ApiKey>, GatewayError> {
        if let Some(anon) = &self.anonymous {
            return Ok(anon.clone());
        }
        let x_api_key = headers
            .get(&super::header::X_API_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let bearer = headers
            .get(&super::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let v = v.trim();
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        let presented: Vec<&str> = [x_api_key, bearer]
            .into_iter()
            .flatten()
            .filter(|k| !k.is_empty())
            .collect();
        if presented.is_empty() {
            return Err(GatewayError::Authentication(
                "missing API key: send x-api-key or Authorization: Bearer".into(),
            ));
        }
        presented
            .into_iter()
            .find_map(|k| self.lookup(k))
            .ok_or_else(|| GatewayError::Authentication("invalid API key".into()))
    }

    fn lookup(&self, presented: &str) -> Option<Arc<ApiKey>> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let (stored, key) = self.by_hash.get_key_value(&hash)?;
        bool::from(stored.ct_eq(&hash)).then(|| key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn index() -> KeyIndex {
        let text = r#"
            auth.keys = [{ name = "a", secret_env = "K_A" }, { name = "b", secret_env = "K_B", allowed_models = ["m"] }]
            [[providers]]
            name = "mock"
            kind = "mock"
            [[models]]
            id = "m"
            deployments = [{ provider = "mock", model = "x" }]
        "#;
        let env = |v: &str| {
            Some(if v == "K_A" {
                "sk-a".into()
            } else {
                "sk-b".into()
            })
        };
        KeyIndex::build(&Config::from_toml_with_env(text, &env).unwrap())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn both_header_styles() {
        let i = index();
        assert_eq!(
            i.authenticate(&headers(&[("x-api-key", "sk-a")]))
                .unwrap()
                .name,
            "a"
        );
        assert_eq!(
            i.authenticate(&headers(&[("authorization", "Bearer sk-b")]))
                .unwrap()
                .name,
            "b"
        );
        assert_eq!(
            i.authenticate(&headers(&[("authorization", "bearer  sk-b")]))
                .unwrap()
                .name,
            "b"
        );
        // Either header may name the key.
        let h = headers(&[("x-api-key", "wrong"), ("authorization", "Bearer sk-a")]);
        assert_eq!(i.authenticate(&h).unwrap().name, "a");
    }

    #[test]
    fn missing_and_invalid() {
        let i = index();
        let e = i.authenticate(&headers(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing API key: send x-api-key or Authorization: Bearer"
        );
        let e = i
            .authenticate(&headers(&[("x-api-key", "nope")]))
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid API key");
        let e = i
            .authenticate(&headers(&[("authorization", "Basic sk-a")]))
            .unwrap_err();
        assert!(e.to_string().starts_with("missing"));
    }

    #[test]
    fn allowed_models() {
        let i = index();
        let b = i.authenticate(&headers(&[("x-api-key", "sk-b")])).unwrap();
        assert!(b.may_use(["m"].into_iter()));
        assert!(!b.may_use(["other"].into_iter()));
    }
}
