//! `X-AIStats-Strictness: off | warn | error` (gateway.md §3) for one request: what each of the
//! model's deployments would drop ([`evaluate`]), the capability filter
//! that routing applies in `error` mode (§7.2), and the `x-gateway-warnings` header of `warn`
//! mode.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::ProviderKind;
use crate::config::Strictness;
use crate::error::{ErrorDetail, GatewayError};
use crate::protocol::capabilities::{beta_warnings, Capabilities, Reason, Warning};
use crate::protocol::request::MessagesRequest;
use crate::protocol::translate::request::{build, RequestContext};
use crate::routing::{Deployment, Model};
use crate::tools::ToolSet;

pub const WARNINGS_HEADER: &str = "x-gateway-warnings";

/// Headers past this size are cut at a whole entry (proxies refuse huge headers).
const MAX_HEADER_BYTES: usize = 4096;

/// The strictness decisions of one request.
#[derive(Debug)]
pub struct StrictnessPlan {
    pub mode: Strictness,
    /// What each of the model's deployments drops.
    drops: Vec<(Arc<Deployment>, Arc<[Warning]>)>,
    /// `prompt_cache_key` for OpenAI-compatible upstreams when a top-level `cache_control` and a
    /// session id are present (gateway.md §4).
    pub prompt_cache_key: Option<Arc<str>>,
}

impl StrictnessPlan {
    /// Evaluates every deployment of `model`. In `error` mode an unknown top-level field, or no
    /// deployment that honours everything, is a 400 with `error.details`.
    pub fn build(
        req: &MessagesRequest,
        model: &Model,
        mode: Strictness,
        key_name: &str,
        session_id: Option<&str>,
    ) -> Result<Self, GatewayError> {
        if mode == Strictness::Error && !req.unknown_fields.is_empty() {
            let drops: Vec<Warning> = req
                .unknown_fields
                .iter()
                .map(|f| Warning::new(f.clone(), Reason::UnknownParameter))
                .collect();
            return Err(cannot_honour(&req.model, &drops));
        }
        let drops: Vec<(Arc<Deployment>, Arc<[Warning]>)> = model
            .deployments
            .iter()
            .map(|d| {
                let caps = Capabilities::of(&d.provider.config);
                (d.clone(), evaluate(req, &caps, session_id.is_some()).into())
            })
            .collect();
        let prompt_cache_key = match (req.has("cache_control"), session_id) {
            (true, Some(s)) => Some(prompt_cache_key(key_name, s).into()),
            _ => None,
        };
        Ok(Self {
            mode,
            drops,
            prompt_cache_key,
        })
    }

    /// Adds the client's betas each deployment drops (cloud kinds drop the ones they refuse). In
    /// `error` mode a deployment that drops one is filtered out like any other.
    pub fn with_betas(mut self, anthropic_beta: Option<&str>) -> Self {
        for (d, drops) in &mut self.drops {
            let betas = beta_warnings(d.provider.kind(), anthropic_beta);
            if !betas.is_empty() {
                *drops = drops.iter().cloned().chain(betas).collect();
            }
        }
        self
    }

    /// Adds what the request's gateway tools leave out on each deployment (unknown options,
    /// options the engine cannot honour): the same strictness as any other parameter.
    pub fn with_tool_warnings(mut self, tools: &ToolSet) -> Self {
        for (d, drops) in self.drops.iter_mut() {
            let extra = tools.warnings(&d.provider.config.native_tools);
            if extra.is_empty() {
                continue;
            }
            let mut all = drops.to_vec();
            all.extend(extra.into_iter().map(|e| {
                Warning::new(
                    e.param,
                    Reason::parse(&e.reason).unwrap_or(Reason::Unsupported),
                )
            }));
            *drops = all.into();
        }
        self
    }

    /// Whether `deployment` honours every parameter (drops nothing): the capability filter of
    /// `error` mode and `require_parameters` (gateway.md §7.2).
    pub fn honours(&self, deployment: &Deployment) -> bool {
        self.drops
            .iter()
            .find(|(d, _)| std::ptr::eq(&**d, deployment))
            .is_none_or(|(_, w)| w.is_empty())
    }

    /// The 400 when no deployment honours everything: the union of what they would drop.
    pub fn cannot_honour(&self, model: &str) -> GatewayError {
        let mut all: Vec<Warning> = Vec::new();
        for (_, w) in &self.drops {
            for w in w.iter() {
                if !all.iter().any(|a| a.param == w.param) {
                    all.push(w.clone());
                }
            }
        }
        cannot_honour(model, &all)
    }

    /// What `deployment` drops from this request.
    pub fn drops_for(&self, deployment: &Arc<Deployment>) -> Arc<[Warning]> {
        self.drops
            .iter()
            .find(|(d, _)| Arc::ptr_eq(d, deployment))
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// `x-gateway-warnings` for an attempt on `deployment`: only in `warn` mode, only when
    /// something is dropped.
    pub fn warnings_header(&self, deployment: &Arc<Deployment>) -> Option<String> {
        if self.mode != Strictness::Warn {
            return None;
        }
        header_value(&self.drops_for(deployment))
    }
}

/// 400 `strictness: <model> cannot honour: top_k, thinking` with the details.
fn cannot_honour(model: &str, drops: &[Warning]) -> GatewayError {
    let params: Vec<&str> = drops.iter().map(|w| w.param.as_str()).collect();
    GatewayError::InvalidRequest {
        message: format!("strictness: {model} cannot honour: {}", params.join(", ")),
        details: drops
            .iter()
            .map(|w| ErrorDetail::new(w.param.clone(), w.reason.as_str()))
            .collect(),
    }
}

/// `param:reason,param:reason`. Params come from client JSON keys, so anything outside
/// `[A-Za-z0-9_.-]` is percent-encoded: the value stays a valid header and the separators
/// unambiguous.
pub fn header_value(drops: &[Warning]) -> Option<String> {
    let mut out = String::new();
    for w in drops {
        let mut entry = String::new();
        for b in w.param.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                entry.push(b as char);
            } else {
                entry.push_str(&format!("%{b:02X}"));
            }
        }
        entry.push(':');
        entry.push_str(w.reason.as_str());
        if out.len() + entry.len() + 1 > MAX_HEADER_BYTES {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&entry);
    }
    (!out.is_empty()).then_some(out)
}

/// The first 32 hex characters of SHA-256(key name + `\n` + session id) (gateway.md §4).
pub fn prompt_cache_key(key_name: &str, session_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(key_name.as_bytes());
    h.update(b"\n");
    h.update(session_id.as_bytes());
    let mut hex = hex::encode(h.finalize());
    hex.truncate(32);
    hex
}

/// Extension fields that only OpenAI-compatible upstreams receive (gateway.md §3 last row).
const OPENAI_ONLY_EXTENSIONS: [&str; 2] = ["prompt_cache_retention", "web_search_options"];

/// Every parameter of `req` that a deployment with `caps` would drop, in request order.
/// `has_session`: a session id exists, so a top-level `cache_control` becomes `prompt_cache_key`
/// on OpenAI-compatible upstreams.
pub fn evaluate(req: &MessagesRequest, caps: &Capabilities, has_session: bool) -> Vec<Warning> {
    match caps.kind {
        // The mock accepts everything and warns about nothing (gateway.md §3).
        ProviderKind::Mock => Vec::new(),
        // The cloud kinds take the Anthropic body inside their envelope.
        ProviderKind::Anthropic | ProviderKind::Bedrock | ProviderKind::Vertex => req
            .fields
            .keys()
            .filter_map(|k| {
                if req.unknown_fields.contains(k) {
                    Some(Warning::new(k.clone(), Reason::UnknownParameter))
                } else if OPENAI_ONLY_EXTENSIONS.contains(&k.as_str()) {
                    Some(Warning::new(k.clone(), Reason::Unsupported))
                } else {
                    None
                }
            })
            .collect(),
        // One source of truth: the translator records what it drops, so evaluation is a build
        // of the upstream request without serializing it.
        ProviderKind::Openai => {
            let ctx = RequestContext {
                upstream_model: "",
                caps,
                stream: req.stream,
                prompt_cache_key: has_session.then_some(""),
            };
            build(req, &ctx).warnings
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::parse_fields;
    use crate::protocol::validate::{validate, ApiVersion};
    use serde_json::json;

    fn deployment(name: &str, kind: &str) -> Arc<Deployment> {
        crate::routing::test_deployment(
            name,
            kind,
            &format!("{name}/m"),
            1,
            None,
            Default::default(),
        )
    }

    fn model(deployments: Vec<Arc<Deployment>>) -> Model {
        Model {
            config: toml::from_str("id = \"sonnet\"\ndeployments = []").unwrap(),
            deployments,
        }
    }

    fn req(v: serde_json::Value) -> MessagesRequest {
        validate(
            parse_fields(v.to_string().as_bytes()).unwrap(),
            ApiVersion::V2023_06_01,
        )
        .unwrap()
    }

    fn details(e: GatewayError) -> (String, Vec<(String, String)>) {
        match e {
            GatewayError::InvalidRequest { message, details } => (
                message,
                details.into_iter().map(|d| (d.param, d.reason)).collect(),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn modes() {
        let oai = deployment("oai", "openai");
        let ant = deployment("ant", "anthropic");
        let m = model(vec![oai.clone(), ant.clone()]);
        let r = req(
            json!({"model":"sonnet","max_tokens":5,"top_k":4,"stop_sequences":["a","b","c","d","e"],
            "messages":[{"role":"user","content":"hi"}]}),
        );

        let warn = StrictnessPlan::build(&r, &m, Strictness::Warn, "k", None).unwrap();
        assert!(warn.honours(&ant) && !warn.honours(&oai));
        assert_eq!(
            warn.warnings_header(&oai).as_deref(),
            Some("top_k:unsupported,stop_sequences:truncated")
        );
        assert_eq!(warn.warnings_header(&ant), None);
        assert_eq!(warn.drops_for(&oai).len(), 2);

        let off = StrictnessPlan::build(&r, &m, Strictness::Off, "k", None).unwrap();
        assert_eq!(off.warnings_header(&oai), None);
        assert_eq!(off.drops_for(&oai).len(), 2, "off still drops");

        let only_oai = model(vec![oai.clone()]);
        let plan = StrictnessPlan::build(&r, &only_oai, Strictness::Error, "k", None).unwrap();
        let e = plan.cannot_honour("sonnet");
        let (message, d) = details(e);
        assert_eq!(
            message,
            "strictness: sonnet cannot honour: top_k, stop_sequences"
        );
        assert_eq!(
            d,
            [
                ("top_k".to_string(), "unsupported".to_string()),
                ("stop_sequences".to_string(), "truncated".to_string())
            ]
        );
    }

    #[test]
    fn unknown_fields_are_a_400_in_error_mode_whatever_the_deployment() {
        let m = model(vec![deployment("mock", "mock")]);
        let r = req(
            json!({"model":"sonnet","max_tokens":5,"bogus":1,"messages":[{"role":"user","content":"hi"}]}),
        );
        let (message, d) =
            details(StrictnessPlan::build(&r, &m, Strictness::Error, "k", None).unwrap_err());
        assert_eq!(message, "strictness: sonnet cannot honour: bogus");
        assert_eq!(d, [("bogus".to_string(), "unknown_parameter".to_string())]);
        // The mock warns about nothing.
        let warn = StrictnessPlan::build(&r, &m, Strictness::Warn, "k", None).unwrap();
        assert_eq!(warn.warnings_header(&m.deployments[0]), None);
    }

    #[test]
    fn header_values_are_safe() {
        let w = [
            Warning::new("we ird,key\n", Reason::UnknownParameter),
            Warning::new("messages.3.content.0", Reason::Unsupported),
        ];
        assert_eq!(
            header_value(&w).as_deref(),
            Some("we%20ird%2Ckey%0A:unknown_parameter,messages.3.content.0:unsupported")
        );
        let many: Vec<Warning> = (0..1000)
            .map(|i| Warning::new(format!("field_{i}"), Reason::UnknownParameter))
            .collect();
        let v = header_value(&many).unwrap();
        assert!(v.len() <= MAX_HEADER_BYTES);
        assert!(v.ends_with(":unknown_parameter"));
        assert_eq!(header_value(&[]), None);
    }

    #[test]
    fn prompt_cache_key_needs_cache_control_and_a_session() {
        let m = model(vec![deployment("oai", "openai")]);
        let r = req(
            json!({"model":"sonnet","max_tokens":5,"cache_control":{"type":"ephemeral"},
            "messages":[{"role":"user","content":"hi"}]}),
        );
        let p = StrictnessPlan::build(&r, &m, Strictness::Error, "team", Some("s-1")).unwrap();
        let key = p.prompt_cache_key.as_deref().unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(key, prompt_cache_key("team", "s-1"));
        assert_ne!(key, prompt_cache_key("other", "s-1"));
        let no_session = StrictnessPlan::build(&r, &m, Strictness::Error, "team", None).unwrap();
        assert!(
            !no_session.honours(&m.deployments[0]),
            "no session: cache_control cannot be honoured"
        );
    }

    fn params(w: &[Warning]) -> Vec<String> {
        w.iter()
            .map(|w| format!("{}:{}", w.param, w.reason.as_str()))
            .collect()
    }

    fn caps(toml_text: &str) -> Capabilities {
        Capabilities::of(&toml::from_str(toml_text).unwrap())
    }

    #[test]
    fn evaluation_per_kind() {
        let r = req(
            json!({"model":"m","max_tokens":5,"top_k":3,"thinking":{"type":"enabled","budget_tokens":2048},
            "stop_sequences":["a","b","c","d","e"],"service_tier":"auto","prompt_cache_retention":"24h","frobnicate":1,
            "messages":[{"role":"user","content":"hi"}]}),
        );
        let openai = Capabilities::default_for(ProviderKind::Openai);
        assert_eq!(
            params(&evaluate(&r, &openai, false)),
            [
                "top_k:unsupported",
                "thinking:unsupported",
                "stop_sequences:truncated",
                "frobnicate:unknown_parameter"
            ]
        );
        let anthropic = Capabilities::default_for(ProviderKind::Anthropic);
        assert_eq!(
            params(&evaluate(&r, &anthropic, false)),
            [
                "prompt_cache_retention:unsupported",
                "frobnicate:unknown_parameter"
            ]
        );
        assert!(evaluate(&r, &Capabilities::default_for(ProviderKind::Mock), false).is_empty());
        let vllm = caps(
            "name=\"v\"\nkind=\"openai\"\ncapabilities={top_k=true,reasoning=\"effort\",max_stop_sequences=8}",
        );
        assert_eq!(
            params(&evaluate(&r, &vllm, false)),
            ["frobnicate:unknown_parameter"]
        );
    }

    #[test]
    fn top_level_cache_control_needs_a_session() {
        let r = req(
            json!({"model":"m","max_tokens":5,"cache_control":{"type":"ephemeral"},
            "messages":[{"role":"user","content":"hi"}]}),
        );
        let openai = Capabilities::default_for(ProviderKind::Openai);
        assert_eq!(
            params(&evaluate(&r, &openai, false)),
            ["cache_control:unsupported"]
        );
        assert!(evaluate(&r, &openai, true).is_empty());
    }
}
