//! The request's `provider` object (alias `routing`, gateway.md §4): parsed and checked here,
//! applied by `select`.

use serde_json::{Map, Value};

use crate::error::ErrorDetail;

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
        }
    }
}

/// Parses `provider` and `routing` (merged per key, `routing` wins). `is_provider` says whether
/// a name is a configured provider.
pub fn parse(
    provider: Option<&Value>,
    routing: Option<&Value>,
    is_provider: &dyn Fn(&str) -> bool,
) -> Result<RoutingPrefs, Vec<ErrorDetail>> {
    let mut errors = Vec::new();
    let mut merged: Map<String, Value> = Map::new();
    let mut origin: Vec<(String, &'static str)> = Vec::new();
    let mut source = "provider";
    for (name, value) in [("provider", provider), ("routing", routing)] {
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                source = name;
                for (k, v) in map {
                    merged.insert(k.clone(), v.clone());
                    origin.retain(|(key, _)| key != k);
                    origin.push((k.clone(), name));
                }
            }
            Some(_) => errors.push(ErrorDetail::new(name, "must be an object")),
        }
    }
    let at = |k: &str| -> String {
        let src = origin
            .iter()
            .find(|(key, _)| key == k)
            .map_or("provider", |(_, s)| *s);
        format!("{src}.{k}")
    };
    let mut prefs = RoutingPrefs {
        source,
        ..RoutingPrefs::default()
    };
    let names = |k: &str, v: &Value, errors: &mut Vec<ErrorDetail>| -> Vec<String> {
        let Some(items) = v.as_array() else {
            errors.push(ErrorDetail::new(
                at(k),
                "must be an array of provider names",
            ));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(n) if is_provider(n) => out.push(n.to_string()),
                Some(n) => errors.push(ErrorDetail::new(
                    format!("{}.{i}", at(k)),
                    format!("unknown provider \"{n}\""),
                )),
                None => errors.push(ErrorDetail::new(
                    format!("{}.{i}", at(k)),
                    "must be a string",
                )),
            }
        }
        out
    };
    for (k, v) in &merged {
        match k.as_str() {
            "order" => prefs.order = names(k, v, &mut errors),
            "only" => prefs.only = Some(names(k, v, &mut errors)),
            "ignore" => prefs.ignore = names(k, v, &mut errors),
            "allow_fallbacks" | "require_parameters" => match v.as_bool() {
                Some(b) if k == "allow_fallbacks" => prefs.allow_fallbacks = b,
                Some(b) => prefs.require_parameters = b,
                None => errors.push(ErrorDetail::new(at(k), "must be a boolean")),
            },
            "sort" => match v.as_str() {
                Some("price") => prefs.sort = Some(Sort::Price),
                Some("latency") => prefs.sort = Some(Sort::Latency),
                Some("throughput") => prefs.sort = Some(Sort::Throughput),
                _ => errors.push(ErrorDetail::new(
                    at(k),
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
                                errors.push(ErrorDetail::new(
                                    format!("{}.{pk}", at(k)),
                                    "unknown key",
                                ));
                                continue;
                            }
                        };
                        match pv.as_f64() {
                            Some(p) if p >= 0.0 => *slot = Some(p),
                            _ => errors.push(ErrorDetail::new(
                                format!("{}.{pk}", at(k)),
                                "must be a number >= 0 (USD per million tokens)",
                            )),
                        }
                    }
                    prefs.max_price = Some(mp);
                }
                None => errors.push(ErrorDetail::new(at(k), "must be an object")),
            },
            _ => errors.push(ErrorDetail::new(at(k), "unknown key")),
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

    fn known(n: &str) -> bool {
        matches!(n, "a" | "b" | "c")
    }

    #[test]
    fn defaults_and_full_object() {
        assert_eq!(parse(None, None, &known).unwrap(), RoutingPrefs::default());
        let p = parse(
            Some(&json!({"order":["b"],"only":["a","b"],"ignore":["c"],"allow_fallbacks":false,
                "require_parameters":true,"sort":"latency","max_price":{"prompt":1,"completion":2.5}})),
            None,
            &known,
        )
        .unwrap();
        assert_eq!(p.order, ["b"]);
        assert_eq!(
            p.only.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
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
        let p = parse(
            Some(&json!({"sort":"price","order":["a"]})),
            Some(&json!({"sort":"throughput"})),
            &known,
        )
        .unwrap();
        assert_eq!(p.sort, Some(Sort::Throughput));
        assert_eq!(p.order, ["a"]);
    }

    #[test]
    fn errors_name_their_path() {
        let cases = [
            (
                json!({"order":["zz"]}),
                "provider.order.0",
                "unknown provider \"zz\"",
            ),
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
                json!({"only":"a"}),
                "provider.only",
                "must be an array of provider names",
            ),
        ];
        for (v, param, reason) in cases {
            let e = parse(Some(&v), None, &known).unwrap_err();
            assert_eq!(
                (e[0].param.as_str(), e[0].reason.as_str()),
                (param, reason),
                "{v}"
            );
        }
        let e = parse(None, Some(&json!({"ignore":[1]})), &known).unwrap_err();
        assert_eq!(e[0].param, "routing.ignore.0");
        let e = parse(Some(&json!([1])), None, &known).unwrap_err();
        assert_eq!(e[0].param, "provider");
    }
}
