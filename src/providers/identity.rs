//! How upstream requests identify us: `User-Agent: aigw/<version>` on every one (some providers
//! behind bot protection refuse anonymous clients), and the client's own identification headers
//! where a provider lists them in `forward_headers`.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::Provider;
use crate::config::ProviderConfig;

/// The gateway's `User-Agent`, on every upstream HTTP request (web_fetch has its own, configurable).
pub const USER_AGENT: &str = concat!("aigw/", env!("CARGO_PKG_VERSION"));

/// The client's request headers that at least one provider forwards, taken once by the HTTP
/// layer. Only names that passed config validation are ever kept, so a call never carries the
/// client's credentials.
#[derive(Debug, Clone, Default)]
pub struct ClientHeaders(Arc<[(HeaderName, HeaderValue)]>);

impl ClientHeaders {
    /// The headers of `from` named in any of `providers`' `forward_headers`.
    pub fn collect(from: &HeaderMap, providers: &[Arc<Provider>]) -> Self {
        let mut kept: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for name in providers.iter().flat_map(|p| &p.config.forward_headers) {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            if kept.iter().any(|(n, _)| *n == name) {
                continue;
            }
            kept.extend(from.get_all(&name).map(|v| (name.clone(), v.clone())));
        }
        Self(kept.into())
    }
}

/// `req` with the client headers `provider` forwards. A forwarded `user-agent` is the client's
/// followed by ours (`claude-cli/2.1.328 (external, cli) aigw/0.1.0`); without one, the client's
/// default `User-Agent` (ours alone) stays.
pub fn forward(
    mut req: awc::ClientRequest,
    provider: &ProviderConfig,
    client: &ClientHeaders,
) -> awc::ClientRequest {
    // The values of one name are adjacent: the first replaces, the rest append.
    let mut prev: Option<&HeaderName> = None;
    for (name, value) in client.0.iter() {
        if !provider.forward_headers.iter().any(|n| n == name.as_str()) {
            continue;
        }
        if *name == header::USER_AGENT {
            let joined = [value.as_bytes(), b" ", USER_AGENT.as_bytes()].concat();
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                req = req.insert_header((header::USER_AGENT, v));
            }
        } else if prev == Some(name) {
            req = req.append_header((name.clone(), value.clone()));
        } else {
            req = req.insert_header((name.clone(), value.clone()));
        }
        prev = Some(name);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(forward: &[&str]) -> Arc<Provider> {
        let mut config: ProviderConfig = toml::from_str("name = \"p\"\nkind = \"openai\"").unwrap();
        config.forward_headers = forward.iter().map(|s| s.to_string()).collect();
        Arc::new(Provider {
            config,
            api_key: None,
            cloud: None,
        })
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        m
    }

    #[actix_rt::test]
    async fn forwards_only_listed_headers_and_appends_our_user_agent() {
        let a = provider(&["x-app", "user-agent"]);
        let b = provider(&["x-claude-code-session-id"]);
        let client = ClientHeaders::collect(
            &map(&[
                ("x-app", "cli"),
                ("x-claude-code-session-id", "s-1"),
                ("user-agent", "claude-cli/2.1.328 (external, cli)"),
                ("x-api-key", "sk-secret"),
                ("x-other", "o"),
            ]),
            &[a.clone(), b.clone()],
        );
        // Only names some provider lists are kept, never the key.
        assert!(!format!("{client:?}").contains("sk-secret"));
        assert_eq!(client.0.len(), 3);

        let http = awc::Client::builder()
            .add_default_header((header::USER_AGENT, USER_AGENT))
            .finish();
        let req = forward(http.get("http://127.0.0.1:9/"), &a.config, &client);
        let h = req.headers();
        assert_eq!(h.get("x-app").unwrap(), "cli");
        assert_eq!(
            h.get("user-agent").unwrap().to_str().unwrap(),
            format!("claude-cli/2.1.328 (external, cli) {USER_AGENT}")
        );
        assert_eq!(h.get_all("user-agent").count(), 1);
        assert!(h.get("x-claude-code-session-id").is_none());
        assert!(h.get("x-other").is_none());

        let req = forward(http.get("http://127.0.0.1:9/"), &b.config, &client);
        let h = req.headers();
        assert_eq!(h.get("x-claude-code-session-id").unwrap(), "s-1");
        assert_eq!(h.get("user-agent").unwrap(), USER_AGENT);
        assert!(h.get("x-app").is_none());
    }
}
