//! The request's `provider` object (alias `routing`, gateway.md §4): parsed with the other
//! extensions by validation (`protocol/extensions.rs`), checked here against the configured
//! providers, applied by `select`.

pub use crate::protocol::extensions::{MaxPrice, RoutingPrefs, Sort};

use crate::error::ErrorDetail;

/// Every provider name in `order`, `only` and `ignore` must be configured; `is_provider` says
/// whether a name is.
pub fn check_providers(
    prefs: &RoutingPrefs,
    is_provider: &dyn Fn(&str) -> bool,
) -> Result<(), Vec<ErrorDetail>> {
    let src = prefs.list_sources;
    let lists = [
        ("order", src.order, prefs.order.as_slice()),
        ("only", src.only, prefs.only.as_deref().unwrap_or_default()),
        ("ignore", src.ignore, prefs.ignore.as_slice()),
    ];
    let errors: Vec<ErrorDetail> = lists
        .into_iter()
        .flat_map(|(key, src, names)| {
            names
                .iter()
                .enumerate()
                .filter(|(_, n)| !is_provider(n))
                .map(move |(i, n)| {
                    ErrorDetail::new(
                        format!("{src}.{key}.{i}"),
                        format!("unknown provider \"{n}\""),
                    )
                })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::extensions::parse_routing;
    use serde_json::json;

    fn known(n: &str) -> bool {
        matches!(n, "a" | "b" | "c")
    }

    #[test]
    fn unknown_providers_name_their_path() {
        let check = |p: serde_json::Value, r: Option<serde_json::Value>| {
            check_providers(&parse_routing(Some(&p), r.as_ref()).unwrap(), &known)
        };
        assert!(check(json!({"order":["a"],"only":["b"],"ignore":["c"]}), None).is_ok());
        let e = check(json!({"order":["a","zz"]}), None).unwrap_err();
        assert_eq!(
            (e[0].param.as_str(), e[0].reason.as_str()),
            ("provider.order.1", "unknown provider \"zz\"")
        );
        let e = check(json!({"only":["a"]}), Some(json!({"ignore":["x"]}))).unwrap_err();
        assert_eq!(e[0].param, "routing.ignore.0");
        let e = check(json!({"only":["q"]}), None).unwrap_err();
        assert_eq!(e[0].param, "provider.only.0");
    }
}
