//! Gateway tool declarations (gateway.md §5.1–§5.2, §5.4–§5.9): the request's `tools` entries of
//! type `gateway:*` / `ai-stats:*` and the native `web_search_*` / `web_fetch_*` shapes, validated
//! into a [`ToolSet`]. Pure code.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use super::domains::{DomainFilter, DomainRule};
use super::ToolKind;
use crate::config::{SearchEngineKind, ToolsConfig};
use crate::error::{ErrorDetail, GatewayError};
use crate::protocol::request::is_gateway_tool_type;

/// Whether the requesting key may use a public model id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelAccess {
    Allowed,
    /// The model exists but the key may not use it (→ 403).
    Forbidden,
    /// No such model id or alias (→ 400).
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatetimeOptions {
    /// 1..5 zones: the declared ones, else `tools.datetime.default_timezone`.
    pub timezones: Vec<Tz>,
}

/// `user_location` (messages-api.md §7.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserLocation {
    pub city: Option<String>,
    pub region: Option<String>,
    /// ISO 3166-1 alpha-2, upper-case.
    pub country: Option<String>,
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebSearchOptions {
    /// A configured engine; `None` when none is declared nor configured as the default.
    pub engine: Option<String>,
    pub max_results: usize,
    pub domains: DomainFilter,
    pub user_location: Option<UserLocation>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebFetchOptions {
    pub max_chars: usize,
    pub domains: DomainFilter,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdvisorOptions {
    /// The declared `name` as given; shown in `advisor_tool_result.advisor`.
    pub name: Option<String>,
    /// The public model id of the nested call.
    pub model: String,
    pub instructions: Option<String>,
    pub max_tokens: u32,
    pub forward_transcript: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Webp,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
        }
    }
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    /// Declared, else `tools.image_generation.model`; `None` when nothing is configured.
    pub model: Option<String>,
    pub size: Option<String>,
    pub quality: Option<String>,
    pub background: Option<String>,
    /// Declared format; sent upstream only when declared. The media type defaults to PNG.
    pub output_format: Option<ImageFormat>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolOptions {
    Datetime(DatetimeOptions),
    WebSearch(WebSearchOptions),
    WebFetch(WebFetchOptions),
    Advisor(AdvisorOptions),
    ImageGeneration(ImageOptions),
}

/// One gateway-run tool as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayTool {
    /// Position in the request's `tools` array; `None` for a default added for history replay.
    pub index: Option<usize>,
    pub kind: ToolKind,
    /// The upstream function name (`gateway_web_search`, `gateway_advisor_reviewer`).
    pub function_name: String,
    /// The native Anthropic `type` (`web_search_20250305`), passed through to providers that
    /// list the tool in `native_tools`.
    pub native_type: Option<String>,
    pub max_uses: Option<u32>,
    pub options: ToolOptions,
    /// The upstream function tool `{name, description, input_schema}` (+ `cache_control`).
    pub definition: Value,
    /// Strictness details for options the gateway drops when it runs the tool.
    pub warnings: Vec<ErrorDetail>,
}

impl GatewayTool {
    pub fn server_name(&self) -> &'static str {
        self.kind.server_name()
    }

    /// The provider runs this declaration itself (a native shape listed in `native_tools`).
    pub fn is_native_for(&self, native: &[String]) -> bool {
        self.native_type.is_some() && native.iter().any(|n| n == self.kind.server_name())
    }

    /// The advisor's display name: its declared `name`, else `advisor`.
    pub fn advisor_name(&self) -> Option<&str> {
        match &self.options {
            ToolOptions::Advisor(a) => Some(a.name.as_deref().unwrap_or("advisor")),
            _ => None,
        }
    }
}

/// The request's gateway tools, in declaration order, plus defaults for kinds that are not
/// declared (used only to replay history, §5.3).
#[derive(Debug, Clone, Default)]
pub struct ToolSet {
    tools: Vec<Arc<GatewayTool>>,
    defaults: Vec<Arc<GatewayTool>>,
}

const COMMON_KEYS: [&str; 4] = ["type", "name", "cache_control", "parameters"];

impl ToolSet {
    /// Validates the gateway declarations among `request_tools`. Out-of-range options → 400 with
    /// every detail; an advisor model the key may not use → 403 (after the 400 checks).
    pub fn declare(
        request_tools: &[Value],
        config: &ToolsConfig,
        access: &dyn Fn(&str) -> ModelAccess,
    ) -> Result<Self, GatewayError> {
        let mut details = Vec::new();
        let mut forbidden: Option<String> = None;
        let mut tools: Vec<GatewayTool> = Vec::new();
        let mut first_of_kind: HashMap<ToolKind, usize> = HashMap::new();
        let mut advisor_count = 0;

        for (index, decl) in request_tools.iter().enumerate() {
            let Some(ty) = decl.get("type").and_then(Value::as_str) else {
                continue;
            };
            let native = native_kind(ty);
            let kind = match (ToolKind::from_type_alias(ty), native) {
                (Some(k), _) => k,
                (None, Some(k)) => k,
                (None, None) => {
                    if is_gateway_tool_type(ty) {
                        details.push(ErrorDetail::new(
                            format!("tools.{index}.type"),
                            format!("unknown gateway tool type \"{ty}\""),
                        ));
                    }
                    continue;
                }
            };
            if kind == ToolKind::Advisor {
                advisor_count += 1;
            } else if let Some(first) = first_of_kind.get(&kind) {
                details.push(ErrorDetail::new(
                    format!("tools.{index}.type"),
                    format!(
                        "{} is already declared at tools.{first}; each gateway tool type is declared once",
                        kind.server_name()
                    ),
                ));
                continue;
            }
            first_of_kind.entry(kind).or_insert(index);
            let mut parser = match Parser::new(index, decl, &mut details) {
                Some(p) => p,
                None => continue,
            };
            // A native shape's constant `name` is the schema's (protocol/validate.rs).
            let options = match kind {
                ToolKind::Datetime => parser.datetime(config),
                ToolKind::WebSearch => parser.web_search(config, native.is_some()),
                ToolKind::WebFetch => parser.web_fetch(native.is_some()),
                ToolKind::Advisor => parser.advisor(config, access, &mut forbidden),
                ToolKind::ImageGeneration => parser.image(config),
            };
            let max_uses = parser.max_uses(kind);
            let warnings = parser.finish(native.is_some());
            let Some(options) = options else { continue };
            let function_name = match &options {
                ToolOptions::Advisor(AdvisorOptions { name: Some(n), .. }) => {
                    format!("gateway_advisor_{}", sanitize_advisor_name(n))
                }
                _ => kind.function_name().to_string(),
            };
            let mut definition = definition(kind, &function_name, &options);
            if let Some(cc) = decl.get("cache_control") {
                definition["cache_control"] = cc.clone();
            }
            tools.push(GatewayTool {
                index: Some(index),
                kind,
                function_name,
                native_type: native.map(|_| ty.to_string()),
                max_uses,
                options,
                definition,
                warnings,
            });
        }

        // Advisors: distinct names, required when several are declared.
        let advisors: Vec<&GatewayTool> = tools
            .iter()
            .filter(|t| t.kind == ToolKind::Advisor)
            .collect();
        let mut seen = HashSet::new();
        for a in &advisors {
            let index = a.index.unwrap_or_default();
            let named = matches!(&a.options, ToolOptions::Advisor(o) if o.name.is_some());
            if advisor_count > 1 && !named {
                details.push(ErrorDetail::new(
                    format!("tools.{index}.name"),
                    "required when several advisors are declared",
                ));
            } else if !seen.insert(a.function_name.clone()) {
                details.push(ErrorDetail::new(
                    format!("tools.{index}.name"),
                    "advisor names must be distinct",
                ));
            }
        }

        if !details.is_empty() {
            return Err(GatewayError::from_details(details));
        }
        if let Some(message) = forbidden {
            return Err(GatewayError::Permission(message));
        }
        let defaults = ToolKind::ALL
            .into_iter()
            .filter(|k| !tools.iter().any(|t| t.kind == *k))
            .filter_map(|k| default_tool(k, config).map(Arc::new))
            .collect();
        Ok(Self {
            tools: tools.into_iter().map(Arc::new).collect(),
            defaults,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Every declared gateway tool, native shapes included, in declaration order.
    pub fn tools(&self) -> &[Arc<GatewayTool>] {
        &self.tools
    }

    /// The tools the gateway runs on a deployment whose provider runs `native` itself.
    pub fn gateway_run<'a>(
        &'a self,
        native: &'a [String],
    ) -> impl Iterator<Item = &'a Arc<GatewayTool>> + 'a {
        self.tools.iter().filter(move |t| !t.is_native_for(native))
    }

    /// Any gateway-run tool is declared (then `usage.server_tool_use` carries all five counters).
    pub fn has_gateway_run(&self, native: &[String]) -> bool {
        self.gateway_run(native).next().is_some()
    }

    /// The gateway-run tool an upstream call names.
    pub fn by_function_name(&self, name: &str, native: &[String]) -> Option<&Arc<GatewayTool>> {
        self.tools
            .iter()
            .find(|t| t.function_name == name && !t.is_native_for(native))
    }

    /// The first declared tool of a kind.
    pub fn first_of(&self, kind: ToolKind) -> Option<&Arc<GatewayTool>> {
        self.tools.iter().find(|t| t.kind == kind)
    }

    /// The tool that answers a history block of `kind` (an advisor by its display name): the
    /// declared one, else the default definition (`None` when the kind cannot run at all).
    pub fn for_history(&self, kind: ToolKind, advisor: Option<&str>) -> Option<&Arc<GatewayTool>> {
        let declared = self.tools.iter().filter(|t| t.kind == kind);
        if kind == ToolKind::Advisor {
            if let Some(name) = advisor {
                if let Some(t) = declared.clone().find(|t| t.advisor_name() == Some(name)) {
                    return Some(t);
                }
            }
        }
        declared
            .chain(self.defaults.iter().filter(|t| t.kind == kind))
            .next()
    }

    /// The `tools` array for one upstream: custom and other tools untouched and in order, gateway
    /// declarations replaced by their function definitions, native shapes kept verbatim where
    /// the provider runs them.
    pub fn upstream_tools(&self, request_tools: &[Value], native: &[String]) -> Vec<Value> {
        request_tools
            .iter()
            .enumerate()
            .map(
                |(i, decl)| match self.tools.iter().find(|t| t.index == Some(i)) {
                    Some(t) if !t.is_native_for(native) => t.definition.clone(),
                    _ => decl.clone(),
                },
            )
            .collect()
    }

    /// Strictness details for the tools the gateway runs on this deployment.
    pub fn warnings(&self, native: &[String]) -> Vec<ErrorDetail> {
        self.gateway_run(native)
            .flat_map(|t| t.warnings.iter().cloned())
            .collect()
    }
}

/// Whether a declared tool `type` is the tool layer's: a gateway type or a native web shape.
pub fn is_tool_layer_type(ty: &str) -> bool {
    is_gateway_tool_type(ty) || native_kind(ty).is_some()
}

/// `web_search_20250305` → web search, `web_fetch_20250910` → web fetch.
pub(crate) fn native_kind(ty: &str) -> Option<ToolKind> {
    let dated = |prefix: &str| {
        ty.strip_prefix(prefix)
            .is_some_and(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
    };
    if dated("web_search_") {
        Some(ToolKind::WebSearch)
    } else if dated("web_fetch_") {
        Some(ToolKind::WebFetch)
    } else {
        None
    }
}

/// An advisor `name` in a function name: lower-cased, `[^a-z0-9_-]` → `_` (§5.1).
pub fn sanitize_advisor_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads one declaration's options: top-level keys overlaid by `parameters` (which wins).
struct Parser<'a> {
    index: usize,
    options: Map<String, Value>,
    used: HashSet<String>,
    details: &'a mut Vec<ErrorDetail>,
    /// Strictness details, kept apart from the 400 details.
    warnings: Vec<ErrorDetail>,
}

impl<'a> Parser<'a> {
    fn new(index: usize, decl: &Value, details: &'a mut Vec<ErrorDetail>) -> Option<Self> {
        let Some(obj) = decl.as_object() else {
            details.push(ErrorDetail::new(
                format!("tools.{index}"),
                "must be an object",
            ));
            return None;
        };
        let mut options: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "cache_control" | "parameters"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match obj.get("parameters") {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                for (k, v) in p {
                    options.insert(k.clone(), v.clone());
                }
            }
            Some(_) => {
                details.push(ErrorDetail::new(
                    format!("tools.{index}.parameters"),
                    "must be an object",
                ));
                return None;
            }
        }
        Some(Self {
            index,
            options,
            used: HashSet::new(),
            details,
            warnings: Vec::new(),
        })
    }

    fn path(&self, key: &str) -> String {
        format!("tools.{}.{key}", self.index)
    }

    fn fail(&mut self, key: &str, reason: impl Into<String>) {
        let path = self.path(key);
        self.details.push(ErrorDetail::new(path, reason));
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.used.insert(key.to_string());
        self.options.get(key).filter(|v| !v.is_null()).cloned()
    }

    fn int(&mut self, key: &str, min: u64, max: u64) -> Option<u64> {
        let v = self.take(key)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ if max >= u64::from(u32::MAX) => {
                self.fail(key, format!("must be an integer >= {min}"));
                None
            }
            _ => {
                self.fail(key, format!("must be an integer between {min} and {max}"));
                None
            }
        }
    }

    fn string(&mut self, key: &str, max_chars: usize) -> Option<String> {
        let v = self.take(key)?;
        match v.as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= max_chars => Some(s.to_string()),
            _ => {
                self.fail(
                    key,
                    format!("must be a string of 1..{max_chars} characters"),
                );
                None
            }
        }
    }

    fn bool(&mut self, key: &str) -> Option<bool> {
        let v = self.take(key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.fail(key, "must be a boolean");
                None
            }
        }
    }

    fn max_uses(&mut self, kind: ToolKind) -> Option<u32> {
        match self.int("max_uses", 1, u32::MAX as u64) {
            Some(n) => Some(n as u32),
            None if kind == ToolKind::Advisor => Some(1),
            None => None,
        }
    }

    fn domain_list(&mut self, key: &str) -> Vec<DomainRule> {
        let Some(v) = self.take(key) else {
            return Vec::new();
        };
        let Some(items) = v.as_array() else {
            self.fail(key, "must be an array of domains");
            return Vec::new();
        };
        let mut rules = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().map(DomainRule::parse) {
                Some(Ok(r)) => rules.push(r),
                Some(Err(reason)) => self.fail(&format!("{key}.{i}"), reason),
                None => self.fail(&format!("{key}.{i}"), "must be a string"),
            }
        }
        rules
    }

    fn domains(&mut self) -> DomainFilter {
        let allowed = self.domain_list("allowed_domains");
        let blocked = self.domain_list("blocked_domains");
        let both = self
            .options
            .get("allowed_domains")
            .is_some_and(|v| !v.is_null())
            && self
                .options
                .get("blocked_domains")
                .is_some_and(|v| !v.is_null());
        if both {
            self.fail(
                "blocked_domains",
                "allowed_domains and blocked_domains are mutually exclusive",
            );
        }
        DomainFilter { allowed, blocked }
    }

    fn timezone(&mut self, key: &str, value: &Value) -> Option<Tz> {
        match value.as_str().map(|s| s.parse::<Tz>()) {
            Some(Ok(tz)) => Some(tz),
            _ => {
                self.fail(key, "must be an IANA time zone such as Europe/Paris");
                None
            }
        }
    }

    fn datetime(&mut self, config: &ToolsConfig) -> Option<ToolOptions> {
        let single = self.take("timezone");
        let list = self.take("timezones");
        let before = self.details.len();
        // An invalid `timezone` is refused even when `timezones` wins.
        let single = single.and_then(|z| self.timezone("timezone", &z));
        let zones = match (list, single) {
            (Some(Value::Array(items)), _) if (1..=5).contains(&items.len()) => items
                .iter()
                .enumerate()
                .filter_map(|(i, z)| self.timezone(&format!("timezones.{i}"), z))
                .collect(),
            (Some(_), _) => {
                self.fail("timezones", "must be an array of 1..5 IANA time zones");
                Vec::new()
            }
            (None, Some(z)) => vec![z],
            (None, None) => config
                .datetime
                .default_timezone
                .parse::<Tz>()
                .ok()
                .into_iter()
                .collect(),
        };
        (self.details.len() == before).then_some(ToolOptions::Datetime(DatetimeOptions {
            timezones: if zones.is_empty() {
                vec![Tz::UTC]
            } else {
                zones
            },
        }))
    }

    /// `user_location` (messages-api.md §7.1): `type` "approximate", strings of 1..255
    /// characters. Unknown keys are not errors: like unknown options, they are dropped with a
    /// strictness warning.
    fn user_location(&mut self) -> Option<UserLocation> {
        const KEYS: [&str; 5] = ["type", "city", "region", "country", "timezone"];
        let v = self.take("user_location")?;
        let Some(obj) = v.as_object() else {
            self.fail("user_location", "must be an object");
            return None;
        };
        match obj.get("type") {
            None | Some(Value::Null) => self.fail("user_location.type", "field required"),
            Some(t) if t.as_str() == Some("approximate") => {}
            Some(_) => self.fail("user_location.type", "must be \"approximate\""),
        }
        let mut field = |k: &str| -> Option<String> {
            let v = obj.get(k).filter(|v| !v.is_null())?;
            match v.as_str() {
                Some(s) if !s.is_empty() && s.chars().count() <= 255 => Some(s.to_string()),
                _ => {
                    self.fail(
                        &format!("user_location.{k}"),
                        "must be a string of 1..255 characters",
                    );
                    None
                }
            }
        };
        let loc = UserLocation {
            city: field("city"),
            region: field("region"),
            country: field("country"),
            timezone: field("timezone"),
        };
        if let Some(c) = &loc.country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
                self.fail(
                    "user_location.country",
                    "must be an ISO 3166-1 alpha-2 code",
                );
            }
        }
        if let Some(tz) = &loc.timezone {
            if tz.parse::<Tz>().is_err() {
                self.fail("user_location.timezone", "must be an IANA time zone");
            }
        }
        for k in obj.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            self.warn(&format!("user_location.{k}"), "unknown_parameter");
        }
        Some(UserLocation {
            country: loc.country.map(|c| c.to_ascii_uppercase()),
            ..loc
        })
    }

    fn web_search(&mut self, config: &ToolsConfig, native: bool) -> Option<ToolOptions> {
        let before = self.details.len();
        let ws = &config.web_search;
        let engine = if native {
            None
        } else {
            match self.take("engine") {
                None => None,
                Some(Value::String(e)) if ws.engines.contains_key(&e) => Some(e),
                Some(Value::String(e)) => {
                    self.fail("engine", format!("unknown engine \"{e}\""));
                    None
                }
                Some(_) => {
                    self.fail("engine", "must be the name of a configured engine");
                    None
                }
            }
        }
        .or_else(|| ws.default_engine.clone());
        let max_results = if native {
            5
        } else {
            self.int("max_results", 1, 25).unwrap_or(5) as usize
        };
        let domains = self.domains();
        let user_location = self.user_location();
        if user_location.is_some() {
            let kind = engine
                .as_ref()
                .and_then(|e| ws.engines.get(e))
                .map(|e| e.kind);
            if !matches!(kind, Some(SearchEngineKind::Exa | SearchEngineKind::Brave)) {
                self.warn("user_location", "engine_unsupported");
            }
        }
        (self.details.len() == before).then_some(ToolOptions::WebSearch(WebSearchOptions {
            engine,
            max_results,
            domains,
            user_location,
        }))
    }

    fn web_fetch(&mut self, native: bool) -> Option<ToolOptions> {
        let before = self.details.len();
        let max_chars = if native {
            self.int("max_content_tokens", 1, u64::MAX)
                .map(|t| t.saturating_mul(4).min(100_000) as usize)
                .unwrap_or(12_000)
        } else {
            self.int("max_chars", 1, 100_000).unwrap_or(12_000) as usize
        };
        let domains = self.domains();
        if native {
            // `{"enabled": bool}`; the gateway cannot cite, so enabling it is a loss.
            match self.take("citations") {
                None => {}
                Some(Value::Object(c)) => match c.get("enabled") {
                    None | Some(Value::Null | Value::Bool(false)) => {}
                    Some(Value::Bool(true)) => self.warn("citations", "unsupported"),
                    Some(_) => self.fail("citations.enabled", "must be a boolean"),
                },
                Some(_) => self.fail("citations", "must be an object"),
            }
        }
        (self.details.len() == before).then_some(ToolOptions::WebFetch(WebFetchOptions {
            max_chars,
            domains,
        }))
    }

    fn advisor(
        &mut self,
        config: &ToolsConfig,
        access: &dyn Fn(&str) -> ModelAccess,
        forbidden: &mut Option<String>,
    ) -> Option<ToolOptions> {
        let before = self.details.len();
        let name = self.take("name").and_then(|v| match v.as_str() {
            Some(s)
                if (1..=48).contains(&s.chars().count())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-')) =>
            {
                Some(s.to_string())
            }
            _ => {
                self.fail("name", "must be 1..48 characters of [A-Za-z0-9 _-]");
                None
            }
        });
        let model = match self.string("model", 256) {
            Some(m) => Some(m),
            None if self.options.get("model").is_some_and(|v| !v.is_null()) => None,
            None => match &config.advisor.default_model {
                Some(m) => Some(m.clone()),
                None => {
                    self.fail(
                        "model",
                        "required: no tools.advisor.default_model is configured",
                    );
                    None
                }
            },
        };
        if let Some(m) = &model {
            match access(m) {
                ModelAccess::Allowed => {}
                ModelAccess::Unknown => self.fail("model", format!("unknown model \"{m}\"")),
                ModelAccess::Forbidden => {
                    forbidden.get_or_insert_with(|| {
                        format!(
                            "tools.{}.model: this API key may not use model \"{m}\"",
                            self.index
                        )
                    });
                }
            }
        }
        let instructions = self.string("instructions", 8000);
        let max_tokens = self
            .int("max_tokens", 1024, u32::MAX as u64)
            .unwrap_or(2048) as u32;
        let forward_transcript = self.bool("forward_transcript").unwrap_or(false);
        if self.details.len() != before {
            return None;
        }
        Some(ToolOptions::Advisor(AdvisorOptions {
            name,
            model: model?,
            instructions,
            max_tokens,
            forward_transcript,
        }))
    }

    fn image(&mut self, config: &ToolsConfig) -> Option<ToolOptions> {
        let before = self.details.len();
        let ig = &config.image_generation;
        let model = match self.string("model", 256) {
            Some(m)
                if ig.model.as_deref() == Some(m.as_str()) || ig.allowed_models.contains(&m) =>
            {
                Some(m)
            }
            Some(m) => {
                self.fail(
                    "model",
                    format!("\"{m}\" is not in tools.image_generation.allowed_models"),
                );
                None
            }
            None => ig.model.clone(),
        };
        let size = self.string("size", 64);
        let quality = self.string("quality", 64);
        let background = self.string("background", 64);
        let output_format = match self.take("output_format") {
            None => None,
            Some(v) => match v.as_str() {
                Some("png") => Some(ImageFormat::Png),
                Some("jpeg") => Some(ImageFormat::Jpeg),
                Some("webp") => Some(ImageFormat::Webp),
                _ => {
                    self.fail("output_format", "must be one of png, jpeg, webp");
                    None
                }
            },
        };
        (self.details.len() == before).then_some(ToolOptions::ImageGeneration(ImageOptions {
            model,
            size,
            quality,
            background,
            output_format,
        }))
    }

    fn warn(&mut self, key: &str, reason: &str) {
        let path = self.path(key);
        self.warnings.push(ErrorDetail::new(path, reason));
    }

    /// The warnings recorded on the way, then unknown options, as strictness details.
    fn finish(self, native: bool) -> Vec<ErrorDetail> {
        let mut warnings = self.warnings;
        let native_unsupported = ["use_cache", "response_inclusion", "dynamic_filtering"];
        for key in self.options.keys() {
            if self.used.contains(key) || COMMON_KEYS.contains(&key.as_str()) {
                continue;
            }
            let reason = if native && native_unsupported.contains(&key.as_str()) {
                "unsupported"
            } else {
                "unknown_parameter"
            };
            warnings.push(ErrorDetail::new(
                format!("tools.{}.{key}", self.index),
                reason,
            ));
        }
        warnings
    }
}

/// The upstream function definition of a tool.
fn definition(kind: ToolKind, function_name: &str, options: &ToolOptions) -> Value {
    let (description, schema) = match (kind, options) {
        (ToolKind::Datetime, _) => (
            "Returns the current date, time and weekday in one or more IANA time zones. Use it \
             whenever the answer depends on today's date or the current time."
                .to_string(),
            json!({"type":"object","properties":{"timezones":{"type":"array","items":{"type":"string"},"maxItems":5,
                   "description":"IANA time zones such as Europe/Paris; empty for the default"}},
                   "additionalProperties":false}),
        ),
        (ToolKind::WebSearch, _) => (
            "Searches the web. Returns the top results with title, URL, page age and an extract \
             of their text. Use it for current events and facts you are unsure of."
                .to_string(),
            json!({"type":"object","properties":{"query":{"type":"string","description":"The search query (at most 500 characters)"}},
                   "required":["query"],"additionalProperties":false}),
        ),
        (ToolKind::WebFetch, _) => (
            "Fetches a web page or text document by its http(s) URL and returns its readable text."
                .to_string(),
            json!({"type":"object","properties":{"url":{"type":"string","description":"The absolute http or https URL to fetch"}},
                   "required":["url"],"additionalProperties":false}),
        ),
        (ToolKind::Advisor, ToolOptions::Advisor(a)) => {
            let who = match &a.name {
                Some(n) => format!("the advisor \"{n}\""),
                None => "an advisor".to_string(),
            };
            if a.forward_transcript {
                (
                    format!(
                        "Consults {who} (model {}) for a second opinion. The advisor sees the \
                         conversation so far; use `prompt` to say what you want advice on.",
                        a.model
                    ),
                    json!({"type":"object","properties":{"prompt":{"type":"string","description":"What you want advice on"}},
                           "additionalProperties":false}),
                )
            } else {
                (
                    format!(
                        "Consults {who} (model {}) for a second opinion. The advisor sees only \
                         `prompt`: make it a self-contained question with the context it needs.",
                        a.model
                    ),
                    json!({"type":"object","properties":{"prompt":{"type":"string","description":"A self-contained question"}},
                           "required":["prompt"],"additionalProperties":false}),
                )
            }
        }
        (_, options) => {
            let mut props = json!({"prompt":{"type":"string","minLength":1,"maxLength":4000,"description":"A description of the image"}});
            if let ToolOptions::ImageGeneration(o) = options {
                if o.size.is_none() {
                    props["size"] =
                        json!({"type":"string","description":"Image size, e.g. 1024x1024"});
                }
                if o.quality.is_none() {
                    props["quality"] = json!({"type":"string","description":"Image quality, e.g. low, medium, high"});
                }
            }
            (
                "Generates an image from a text description. The image is shown to the user, not \
                 to you."
                    .to_string(),
                json!({"type":"object","properties":props,"required":["prompt"],"additionalProperties":false}),
            )
        }
    };
    json!({"name": function_name, "description": description, "input_schema": schema})
}

/// The tool used for a kind that appears in history without a declaration (§5.3).
fn default_tool(kind: ToolKind, config: &ToolsConfig) -> Option<GatewayTool> {
    let options = match kind {
        ToolKind::Datetime => ToolOptions::Datetime(DatetimeOptions {
            timezones: vec![config.datetime.default_timezone.parse().unwrap_or(Tz::UTC)],
        }),
        ToolKind::WebSearch => ToolOptions::WebSearch(WebSearchOptions {
            engine: config.web_search.default_engine.clone(),
            max_results: 5,
            domains: DomainFilter::default(),
            user_location: None,
        }),
        ToolKind::WebFetch => ToolOptions::WebFetch(WebFetchOptions {
            max_chars: 12_000,
            domains: DomainFilter::default(),
        }),
        ToolKind::Advisor => ToolOptions::Advisor(AdvisorOptions {
            name: None,
            model: config.advisor.default_model.clone()?,
            instructions: None,
            max_tokens: 2048,
            forward_transcript: false,
        }),
        ToolKind::ImageGeneration => ToolOptions::ImageGeneration(ImageOptions {
            model: config.image_generation.model.clone(),
            size: None,
            quality: None,
            background: None,
            output_format: None,
        }),
    };
    Some(GatewayTool {
        index: None,
        kind,
        function_name: kind.function_name().to_string(),
        native_type: None,
        max_uses: (kind == ToolKind::Advisor).then_some(1),
        definition: definition(kind, kind.function_name(), &options),
        options,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SearchEngineConfig;

    fn config() -> ToolsConfig {
        let mut c = ToolsConfig::default();
        let engine = |kind| SearchEngineConfig {
            kind,
            base_url: Some("http://127.0.0.1:9".into()),
            api_key_env: None,
        };
        c.web_search
            .engines
            .insert("searx".into(), engine(SearchEngineKind::Searxng));
        c.web_search
            .engines
            .insert("exa".into(), engine(SearchEngineKind::Exa));
        c.web_search.default_engine = Some("searx".into());
        c.advisor.default_model = Some("adv-default".into());
        c.image_generation.model = Some("gpt-image-1".into());
        c.image_generation.allowed_models = vec!["dall-e-3".into()];
        c
    }

    fn access(m: &str) -> ModelAccess {
        match m {
            "secret-model" => ModelAccess::Forbidden,
            "ghost" => ModelAccess::Unknown,
            _ => ModelAccess::Allowed,
        }
    }

    fn declare(tools: Value) -> Result<ToolSet, GatewayError> {
        declare_with(tools, &config())
    }

    fn declare_with(tools: Value, c: &ToolsConfig) -> Result<ToolSet, GatewayError> {
        ToolSet::declare(tools.as_array().unwrap(), c, &access)
    }

    fn one(tool: Value) -> Arc<GatewayTool> {
        declare(json!([tool])).unwrap().tools()[0].clone()
    }

    /// Every 400 path: (tools, the first detail's param, a fragment of its reason).
    #[test]
    fn invalid_declarations_table() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!([{"type":"ai-stats:apply_patch"}]),
                "tools.0.type",
                "unknown gateway tool type",
            ),
            (
                json!([{"type":"gateway:calculator"}]),
                "tools.0.type",
                "unknown",
            ),
            (
                json!([{"type":"gateway:datetime"},{"type":"ai-stats:datetime"}]),
                "tools.1.type",
                "already declared at tools.0",
            ),
            (
                json!([{"type":"gateway:web_search"},{"type":"web_search_20250305","name":"web_search"}]),
                "tools.1.type",
                "already declared",
            ),
            (
                json!([{"type":"web_fetch_20250910","name":"web_fetch"},{"type":"gateway:web_fetch"}]),
                "tools.1.type",
                "already declared",
            ),
            (
                json!([{"type":"gateway:datetime","timezone":"Mars/Base"}]),
                "tools.0.timezone",
                "IANA",
            ),
            (
                json!([{"type":"gateway:datetime","timezones":[]}]),
                "tools.0.timezones",
                "1..5",
            ),
            (
                json!([{"type":"gateway:datetime","timezones":["UTC","UTC","UTC","UTC","UTC","UTC"]}]),
                "tools.0.timezones",
                "1..5",
            ),
            (
                json!([{"type":"gateway:datetime","timezones":["UTC","Nowhere/Land"]}]),
                "tools.0.timezones.1",
                "IANA",
            ),
            (
                json!([{"type":"gateway:datetime","max_uses":0}]),
                "tools.0.max_uses",
                ">= 1",
            ),
            (
                json!([{"type":"gateway:datetime","parameters":{"max_uses":"2"}}]),
                "tools.0.max_uses",
                ">= 1",
            ),
            (
                json!([{"type":"gateway:datetime","parameters":[1]}]),
                "tools.0.parameters",
                "object",
            ),
            (
                json!([{"type":"gateway:web_search","max_results":0}]),
                "tools.0.max_results",
                "between 1 and 25",
            ),
            (
                json!([{"type":"gateway:web_search","max_results":26}]),
                "tools.0.max_results",
                "between 1 and 25",
            ),
            (
                json!([{"type":"gateway:web_search","parameters":{"max_results":30}}]),
                "tools.0.max_results",
                "between 1 and 25",
            ),
            (
                json!([{"type":"gateway:web_search","engine":"bing"}]),
                "tools.0.engine",
                "unknown engine",
            ),
            (
                json!([{"type":"gateway:web_search","allowed_domains":["a.org"],"blocked_domains":["b.org"]}]),
                "tools.0.blocked_domains",
                "mutually exclusive",
            ),
            (
                json!([{"type":"gateway:web_search","allowed_domains":["https://a.org"]}]),
                "tools.0.allowed_domains.0",
                "without a scheme",
            ),
            (
                json!([{"type":"gateway:web_search","blocked_domains":"a.org"}]),
                "tools.0.blocked_domains",
                "array",
            ),
            (
                json!([{"type":"gateway:web_search","user_location":{"type":"exact"}}]),
                "tools.0.user_location.type",
                "approximate",
            ),
            (
                json!([{"type":"gateway:web_search","user_location":{"type":"approximate","country":"France"}}]),
                "tools.0.user_location.country",
                "alpha-2",
            ),
            (
                json!([{"type":"gateway:web_search","user_location":{"type":"approximate","timezone":"Paris"}}]),
                "tools.0.user_location.timezone",
                "IANA",
            ),
            (
                json!([{"type":"gateway:web_search","user_location":{"city":"Lyon"}}]),
                "tools.0.user_location.type",
                "field required",
            ),
            (
                json!([{"type":"gateway:web_search","user_location":{"type":"approximate","city":""}}]),
                "tools.0.user_location.city",
                "1..255",
            ),
            (
                json!([{"type":"gateway:web_search","user_location":"Lyon"}]),
                "tools.0.user_location",
                "must be an object",
            ),
            // Native shapes follow the same rules (messages-api.md §7.1, gateway.md §5.7).
            (
                json!([{"type":"web_search_20250305","name":"web_search","allowed_domains":["a.org"],"blocked_domains":["b.org"]}]),
                "tools.0.blocked_domains",
                "mutually exclusive",
            ),
            (
                json!([{"type":"web_search_20250305","name":"web_search","blocked_domains":["https://a.org"]}]),
                "tools.0.blocked_domains.0",
                "without a scheme",
            ),
            (
                json!([{"type":"web_search_20250305","name":"web_search","user_location":{"type":"approximate","country":"USA"}}]),
                "tools.0.user_location.country",
                "alpha-2",
            ),
            (
                json!([{"type":"web_fetch_20250910","name":"web_fetch","citations":{"enabled":"y"}}]),
                "tools.0.citations.enabled",
                "must be a boolean",
            ),
            (
                json!([{"type":"web_fetch_20250910","name":"web_fetch","citations":true}]),
                "tools.0.citations",
                "must be an object",
            ),
            (
                json!([{"type":"web_search_20250305","max_uses":-1}]),
                "tools.0.max_uses",
                ">= 1",
            ),
            (
                json!([{"type":"gateway:web_fetch","max_chars":0}]),
                "tools.0.max_chars",
                "between 1 and 100000",
            ),
            (
                json!([{"type":"gateway:web_fetch","max_chars":100001}]),
                "tools.0.max_chars",
                "between 1 and 100000",
            ),
            (
                json!([{"type":"web_fetch_20250910","name":"web_fetch","max_content_tokens":0}]),
                "tools.0.max_content_tokens",
                ">= 1",
            ),
            (
                json!([{"type":"gateway:advisor","name":"bad!name"}]),
                "tools.0.name",
                "[A-Za-z0-9 _-]",
            ),
            (
                json!([{"type":"gateway:advisor","name":"x".repeat(49)}]),
                "tools.0.name",
                "1..48",
            ),
            (
                json!([{"type":"gateway:advisor","model":"ghost"}]),
                "tools.0.model",
                "unknown model",
            ),
            (
                json!([{"type":"gateway:advisor","instructions":"x".repeat(8001)}]),
                "tools.0.instructions",
                "1..8000",
            ),
            (
                json!([{"type":"gateway:advisor","max_tokens":1023}]),
                "tools.0.max_tokens",
                ">= 1024",
            ),
            (
                json!([{"type":"gateway:advisor","forward_transcript":"yes"}]),
                "tools.0.forward_transcript",
                "boolean",
            ),
            (
                json!([{"type":"gateway:advisor","name":"a"},{"type":"gateway:advisor"}]),
                "tools.1.name",
                "required when several",
            ),
            (
                json!([{"type":"gateway:advisor","name":"Rev"},{"type":"ai-stats:advisor","name":"rev"}]),
                "tools.1.name",
                "distinct",
            ),
            (
                json!([{"type":"gateway:image_generation","model":"midjourney"}]),
                "tools.0.model",
                "allowed_models",
            ),
            (
                json!([{"type":"gateway:image_generation","output_format":"gif"}]),
                "tools.0.output_format",
                "png, jpeg, webp",
            ),
            (
                json!([{"type":"gateway:image_generation","size":""}]),
                "tools.0.size",
                "1..64",
            ),
            (
                json!([{"name":"custom","input_schema":{"type":"object"}},{"type":"gateway:web_search","allowed_domains":[5]}]),
                "tools.1.allowed_domains.0",
                "must be a string",
            ),
            (
                json!([{"type":"gateway:image_generation","background":7}]),
                "tools.0.background",
                "1..64",
            ),
        ];
        assert!(cases.len() >= 30);
        for (tools, param, reason) in cases {
            match declare(tools.clone()) {
                Err(GatewayError::InvalidRequest { details, message }) => {
                    assert_eq!(details[0].param, param, "{tools}");
                    assert!(
                        details[0].reason.contains(reason),
                        "{tools}: {}",
                        details[0].reason
                    );
                    assert!(message.starts_with(param));
                }
                other => panic!("{tools}: expected 400, got {other:?}"),
            }
        }
    }

    #[test]
    fn string_tools_that_are_not_gateway_are_ignored() {
        // "not an object" has no `type`: it is not ours to judge (validate.rs does).
        assert!(declare(json!(["x"])).unwrap().is_empty());
    }

    #[test]
    fn advisor_model_rules() {
        match declare(json!([{"type":"gateway:advisor","model":"secret-model"}])) {
            Err(GatewayError::Permission(m)) => assert!(m.contains("tools.0.model"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A 400 wins over a 403.
        let e = declare(
            json!([{"type":"gateway:advisor","model":"secret-model"},{"type":"gateway:nope"}]),
        );
        assert!(matches!(e, Err(GatewayError::InvalidRequest { .. })));
        let mut c = config();
        c.advisor.default_model = None;
        let e = declare_with(json!([{"type":"gateway:advisor"}]), &c).unwrap_err();
        assert!(e.to_string().starts_with("tools.0.model: required"), "{e}");
        // The default model is checked against the key too.
        c.advisor.default_model = Some("secret-model".into());
        assert!(matches!(
            declare_with(json!([{"type":"gateway:advisor"}]), &c),
            Err(GatewayError::Permission(_))
        ));
    }

    #[test]
    fn defaults_per_kind() {
        let t = one(json!({"type":"gateway:datetime"}));
        assert_eq!(t.function_name, "gateway_datetime");
        assert_eq!(t.max_uses, None);
        assert_eq!(
            t.options,
            ToolOptions::Datetime(DatetimeOptions {
                timezones: vec![Tz::UTC]
            })
        );

        let t = one(json!({"type":"ai-stats:web_search"}));
        match &t.options {
            ToolOptions::WebSearch(o) => {
                assert_eq!(o.engine.as_deref(), Some("searx"));
                assert_eq!(o.max_results, 5);
                assert!(o.domains.is_empty());
            }
            o => panic!("{o:?}"),
        }
        let t = one(json!({"type":"gateway:web_fetch"}));
        assert_eq!(
            t.options,
            ToolOptions::WebFetch(WebFetchOptions {
                max_chars: 12_000,
                domains: DomainFilter::default()
            })
        );
        let t = one(json!({"type":"gateway:advisor"}));
        assert_eq!(t.function_name, "gateway_advisor");
        assert_eq!(t.max_uses, Some(1));
        assert_eq!(t.advisor_name(), Some("advisor"));
        match &t.options {
            ToolOptions::Advisor(a) => {
                assert_eq!(
                    (a.model.as_str(), a.max_tokens, a.forward_transcript),
                    ("adv-default", 2048, false)
                )
            }
            o => panic!("{o:?}"),
        }
        let t = one(json!({"type":"gateway:image_generation"}));
        match &t.options {
            ToolOptions::ImageGeneration(o) => {
                assert_eq!(o.model.as_deref(), Some("gpt-image-1"));
                assert_eq!(o.output_format, None);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn options_come_from_top_level_or_parameters() {
        let t = one(
            json!({"type":"gateway:web_search","max_results":3,"parameters":{"max_results":7,"engine":"exa"},"max_uses":2}),
        );
        assert_eq!(t.max_uses, Some(2));
        match &t.options {
            ToolOptions::WebSearch(o) => {
                assert_eq!((o.max_results, o.engine.as_deref()), (7, Some("exa")))
            }
            o => panic!("{o:?}"),
        }
        let t = one(
            json!({"type":"gateway:datetime","timezone":"Europe/Paris","timezones":["Asia/Tokyo","UTC"]}),
        );
        assert_eq!(
            t.options,
            ToolOptions::Datetime(DatetimeOptions {
                timezones: vec![Tz::Asia__Tokyo, Tz::UTC]
            })
        );
        let t = one(json!({"type":"gateway:datetime","parameters":{"timezone":"Europe/Paris"}}));
        assert_eq!(
            t.options,
            ToolOptions::Datetime(DatetimeOptions {
                timezones: vec![Tz::Europe__Paris]
            })
        );
    }

    #[test]
    fn unknown_options_are_strictness_warnings() {
        let set = declare(json!([
            {"name":"custom","input_schema":{"type":"object"}},
            {"type":"gateway:datetime","color":"red","parameters":{"shape":"round"}},
            {"type":"gateway:web_search","user_location":{"type":"approximate","city":"Lyon","street":"x"}},
            {"type":"gateway:web_fetch","engine":"exa"}
        ]))
        .unwrap();
        let w: Vec<String> = set
            .warnings(&[])
            .iter()
            .map(|d| format!("{}:{}", d.param, d.reason))
            .collect();
        assert_eq!(
            w,
            [
                "tools.1.color:unknown_parameter",
                "tools.1.shape:unknown_parameter",
                "tools.2.user_location.street:unknown_parameter",
                "tools.2.user_location:engine_unsupported",
                "tools.3.engine:unknown_parameter",
            ]
        );
        // Exa can use the location.
        let set = declare(json!([{"type":"gateway:web_search","engine":"exa","user_location":{"type":"approximate","country":"fr"}}])).unwrap();
        assert!(set.warnings(&[]).is_empty());
        match &set.tools()[0].options {
            ToolOptions::WebSearch(o) => assert_eq!(
                o.user_location.as_ref().unwrap().country.as_deref(),
                Some("FR")
            ),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn native_shapes_map_their_options() {
        let set = declare(json!([
            {"type":"web_search_20250305","name":"web_search","max_uses":3,"allowed_domains":["ex.org"],
             "user_location":{"type":"approximate","country":"US"}},
            {"type":"web_fetch_20250910","name":"web_fetch","max_content_tokens":1000,
             "citations":{"enabled":true},"use_cache":false}
        ]))
        .unwrap();
        let [s, f] = set.tools() else { panic!() };
        assert_eq!(s.native_type.as_deref(), Some("web_search_20250305"));
        assert_eq!(
            (s.function_name.as_str(), s.max_uses),
            ("gateway_web_search", Some(3))
        );
        assert_eq!(f.native_type.as_deref(), Some("web_fetch_20250910"));
        match &f.options {
            ToolOptions::WebFetch(o) => assert_eq!(o.max_chars, 4000),
            o => panic!("{o:?}"),
        }
        let w: Vec<String> = set
            .warnings(&[])
            .iter()
            .map(|d| format!("{}:{}", d.param, d.reason))
            .collect();
        assert_eq!(
            w,
            [
                "tools.0.user_location:engine_unsupported",
                "tools.1.citations:unsupported",
                "tools.1.use_cache:unsupported",
            ]
        );
        // Where the provider runs them, nothing is dropped.
        let native = ["web_search".to_string(), "web_fetch".to_string()];
        assert!(set.warnings(&native).is_empty());
        assert!(!set.has_gateway_run(&native));
        assert!(set
            .by_function_name("gateway_web_search", &native)
            .is_none());
        assert!(set.by_function_name("gateway_web_search", &[]).is_some());
        let huge = one(
            json!({"type":"web_fetch_20250910","name":"web_fetch","max_content_tokens":1_000_000}),
        );
        assert!(matches!(&huge.options, ToolOptions::WebFetch(o) if o.max_chars == 100_000));
    }

    #[test]
    fn upstream_tools_per_deployment() {
        let request = json!([
            {"name":"lookup","input_schema":{"type":"object"}},
            {"type":"gateway:datetime","cache_control":{"type":"ephemeral"}},
            {"type":"web_search_20250305","name":"web_search"},
            {"type":"bash_20250124","name":"bash"}
        ]);
        let tools = request.as_array().unwrap();
        let set = declare(request.clone()).unwrap();
        let up = set.upstream_tools(tools, &[]);
        assert_eq!(up.len(), 4);
        assert_eq!(up[0], tools[0]);
        assert_eq!(up[1]["name"], "gateway_datetime");
        assert_eq!(up[1]["cache_control"], json!({"type":"ephemeral"}));
        assert_eq!(
            up[1]["input_schema"]["properties"]["timezones"]["maxItems"],
            5
        );
        assert_eq!(up[2]["name"], "gateway_web_search");
        assert_eq!(up[2]["input_schema"]["required"], json!(["query"]));
        assert!(up[2].get("type").is_none());
        assert_eq!(up[3], tools[3]);
        let up = set.upstream_tools(tools, &["web_search".to_string()]);
        assert_eq!(up[2], tools[2]);
        assert_eq!(set.gateway_run(&["web_search".to_string()]).count(), 1);
    }

    #[test]
    fn advisors_by_name() {
        let set = declare(json!([
            {"type":"gateway:advisor","name":"Code Reviewer","model":"m1","forward_transcript":true},
            {"type":"ai-stats:advisor","name":"sec","parameters":{"model":"m2","max_tokens":4096,"max_uses":3}}
        ]))
        .unwrap();
        let [a, b] = set.tools() else { panic!() };
        assert_eq!(a.function_name, "gateway_advisor_code_reviewer");
        assert_eq!(a.advisor_name(), Some("Code Reviewer"));
        assert!(
            a.definition["input_schema"].get("required").is_none(),
            "prompt optional with forward_transcript"
        );
        assert_eq!(b.function_name, "gateway_advisor_sec");
        assert_eq!(b.max_uses, Some(3));
        assert_eq!(b.definition["input_schema"]["required"], json!(["prompt"]));
        assert_eq!(
            set.for_history(ToolKind::Advisor, Some("sec"))
                .unwrap()
                .function_name,
            "gateway_advisor_sec"
        );
        assert_eq!(
            set.for_history(ToolKind::Advisor, None)
                .unwrap()
                .function_name,
            "gateway_advisor_code_reviewer"
        );
        assert_eq!(sanitize_advisor_name("A b-C_9!"), "a_b-c_9_");
    }

    #[test]
    fn image_schema_offers_only_undeclared_settings() {
        let t = one(
            json!({"type":"gateway:image_generation","size":"512x512","model":"dall-e-3","output_format":"jpeg"}),
        );
        let props = &t.definition["input_schema"]["properties"];
        assert!(props.get("size").is_none());
        assert!(props.get("quality").is_some());
        assert!(
            matches!(&t.options, ToolOptions::ImageGeneration(o) if o.output_format == Some(ImageFormat::Jpeg) && o.model.as_deref() == Some("dall-e-3"))
        );
    }

    #[test]
    fn history_defaults_exist_for_undeclared_kinds() {
        let set = declare(json!([])).unwrap();
        for k in ToolKind::ALL {
            let t = set.for_history(k, None).unwrap();
            assert_eq!(t.index, None);
            assert_eq!(t.definition["name"], k.function_name());
        }
        let mut c = config();
        c.advisor.default_model = None;
        assert!(declare_with(json!([]), &c)
            .unwrap()
            .for_history(ToolKind::Advisor, None)
            .is_none());
    }
}
