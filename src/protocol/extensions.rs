//! Gateway body extensions (gateway.md §4), parsed once by validation into these types; later
//! stages read them here, never the JSON again. Only the checks that need configuration (which
//! providers exist, whether a key may debug) are left to the HTTP layer.

use serde_json::{Map, Value};

use super::anthropic::ErrorDetail;

/// The typed extensions of a validated request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extensions {
    /// The body's `session_id` (the headers are the HTTP layer's fallback).
    pub session_id: Option<String>,
    /// `debug`, when any flag is true.
    pub debug: Option<DebugFlags>,
    /// `provider` merged with `routing` (`routing` wins per key).
    pub routing: RoutingPrefs,
    pub provider_options: ProviderOptions,
}

/// The client's `debug` flags; any true flag enables debug output (`enabled` alone: no extras).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DebugFlags {
    pub upstream_request: bool,
    pub upstream_response: bool,
    pub trace: bool,
}

/// `provider_options.<kind>`: objects deep-merged into that kind's final body (`merge.rs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderOptions {
    pub anthropic: Option<Map<String, Value>>,
    pub openai: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Price,
    Latency,
    Throughput,
}

impl Sort {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Price => "price",
            Self::Latency => "latency",
            Self::Throughput => "throughput",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MaxPrice {
    /// USD per million input tokens.
    pub prompt: Option<f64>,
    /// USD per million output tokens.
    pub completion: Option<f64>,
}

/// Which body key (`provider` or `routing`) each provider-name list came from, for error paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListSources {
    pub order: &'static str,
    pub only: &'static str,
    pub ignore: &'static str,
}

/// The `provider` / `routing` preferences (gateway.md §4, §7.2). Provider names are checked
/// against the configuration by `routing::preferences::check_providers`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingPrefs {
    pub order: Vec<String>,
    pub only: Option<Vec<String>>,
    pub ignore: Vec<String>,
    pub allow_fallbacks: bool,
    pub require_parameters: bool,
    pub sort: Option<Sort>,
    pub max_price: Option<MaxPrice>,
    /// Which body key the object came from, for error paths.
    pub source: &'static str,
    pub list_sources: ListSources,
}

impl Default for RoutingPrefs {
    fn default() -> Self {
        Self {
            order: Vec::new(),
            only: None,
            ignore: Vec::new(),
            allow_fallbacks: true,
            require_parameters: false,
            sort: None,
            max_price: None,
            source: "provider",
            list_sources: ListSources {
                order: "provider",
                only: "provider",
                ignore: "provider",
            },
        }
    }
}

/// Parses `provider` and `routing` (merged per key, `routing` wins).
pub fn parse_routing(
    provider: Option<&Value>,
    routing: Option<&Value>,
) -> Result<RoutingPrefs, Vec<ErrorDetail>> {
    let mut errors = Vec::new();
    let mut merged: Vec<(&String, &Value, &'static str)> = Vec::new();
    let mut source = "provider";
    for (name, value) in [("provider", provider), ("routing", routing)] {
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                source = name;
                for (k, v) in map {
                    merged.retain(|(key, _, _)| *key != k);
                    merged.push((k, v, name));
                }
            }
            Some(_) => errors.push(ErrorDetail::new(name, "must be an object")),
        }
    }
    let mut prefs = RoutingPrefs {
        source,
        ..RoutingPrefs::default()
    };
    let names = |at: &str, v: &Value, errors: &mut Vec<ErrorDetail>| -> Vec<String> {
        let Some(items) = v.as_array() else {
            errors.push(ErrorDetail::new(at, "must be an array of provider names"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(n) => out.push(n.to_string()),
                None => errors.push(ErrorDetail::new(format!("{at}.{i}"), "must be a string")),
            }
        }
        out
    };
    for (k, v, src) in merged {
        let at = format!("{src}.{k}");
        match k.as_str() {
            "order" => {
                prefs.order = names(&at, v, &mut errors);
                prefs.list_sources.order = src;
            }
            "only" => {
                prefs.only = Some(names(&at, v, &mut errors));
                prefs.list_sources.only = src;
            }
            "ignore" => {
                prefs.ignore = names(&at, v, &mut errors);
                prefs.list_sources.ignore = src;
            }
            "allow_fallbacks" | "require_parameters" => match v.as_bool() {
                Some(b) if k == "allow_fallbacks" => prefs.allow_fallbacks = b,
                Some(b) => prefs.require_parameters = b,
                None => errors.push(ErrorDetail::new(at, "must be a boolean")),
            },
            "sort" => match v.as_str() {
                Some("price") => prefs.sort = Some(Sort::Price),
                Some("latency") => prefs.sort = Some(Sort::Latency),
                Some("throughput") => prefs.sort = Some(Sort::Throughput),
                _ => errors.push(ErrorDetail::new(
                    at,
                    "must be one of price, latency, throughput",
                )),
            },
            "max_price" => match v.as_object() {
                Some(obj) => {
                    let mut mp = MaxPrice::default();
                    for (pk, pv) in obj {
                        let slot = match pk.as_str() {
                            "prompt" => &mut mp.prompt,
                            "completion" => &mut mp.completion,
                            _ => {
                                errors.push(ErrorDetail::new(format!("{at}.{pk}"), "unknown key"));
                                continue;
                            }
                        };
                        match pv.as_f64() {
                            Some(p) if p >= 0.0 => *slot = Some(p),
                            _ => errors.push(ErrorDetail::new(
                                format!("{at}.{pk}"),
                                "must be a number >= 0 (USD per million tokens)",
                            )),
                        }
                    }
                    prefs.max_price = Some(mp);
                }
                None => errors.push(ErrorDetail::new(at, "must be an object")),
            },
            _ => errors.push(ErrorDetail::new(at, "unknown key")),
        }
    }
    if errors.is_empty() {
        Ok(prefs)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_full_object() {
        assert_eq!(parse_routing(None, None).unwrap(), RoutingPrefs::default());
        let p = parse_routing(
            Some(&json!({"order":["b"],"only":["a","b"],"ignore":["c"],"allow_fallbacks":false,
                "require_parameters":true,"sort":"latency","max_price":{"prompt":1,"completion":2.5}})),
            None,
        )
        .unwrap();
        assert_eq!(p.order, ["b"]);
        assert_eq!(
            p.only.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(p.ignore, ["c"]);
        assert!(!p.allow_fallbacks && p.require_parameters);
        assert_eq!(p.sort, Some(Sort::Latency));
        assert_eq!(
            p.max_price,
            Some(MaxPrice {
                prompt: Some(1.0),
                completion: Some(2.5)
            })
        );
    }

    #[test]
    fn routing_wins_per_key() {
        let p = parse_routing(
            Some(&json!({"sort":"price","order":["a"]})),
            Some(&json!({"sort":"throughput","ignore":["b"]})),
        )
        .unwrap();
        assert_eq!(p.sort, Some(Sort::Throughput));
        assert_eq!(p.order, ["a"]);
        assert_eq!((p.source, p.list_sources.order), ("routing", "provider"));
        assert_eq!(p.list_sources.ignore, "routing");
    }

    #[test]
    fn errors_name_their_path() {
        let cases = [
            (
                json!({"quantizations":["fp8"]}),
                "provider.quantizations",
                "unknown key",
            ),
            (
                json!({"sort":"cheap"}),
                "provider.sort",
                "must be one of price, latency, throughput",
            ),
            (
                json!({"allow_fallbacks":"no"}),
                "provider.allow_fallbacks",
                "must be a boolean",
            ),
            (
                json!({"max_price":{"prompt":-1}}),
                "provider.max_price.prompt",
                "must be a number >= 0 (USD per million tokens)",
            ),
            (
                json!({"max_price":{"input":1}}),
                "provider.max_price.input",
                "unknown key",
            ),
            (
                json!({"only":"a"}),
                "provider.only",
                "must be an array of provider names",
            ),
        ];
        for (v, param, reason) in cases {
            let e = parse_routing(Some(&v), None).unwrap_err();
            assert_eq!(
                (e[0].param.as_str(), e[0].reason.as_str()),
                (param, reason),
                "{v}"
            );
        }
        let e = parse_routing(None, Some(&json!({"ignore":[1]}))).unwrap_err();
        assert_eq!(e[0].param, "routing.ignore.0");
        let e = parse_routing(Some(&json!([1])), None).unwrap_err();
        assert_eq!(e[0].param, "provider");
    }
}
