//! `provider_options` (gateway.md §4): a per-kind object deep-merged, values winning, into the
//! final upstream body after translation.

use serde_json::{Map, Value};

/// Keys `provider_options` may not set: they would break the request the gateway built.
pub const PROTECTED_KEYS: [&str; 5] = ["model", "messages", "stream", "stream_options", "tools"];

/// Merges `patch` into the top level of `body`, skipping the protected keys.
pub fn merge_top_level(body: &mut Value, patch: &Map<String, Value>) {
    let Value::Object(obj) = body else { return };
    for (k, v) in patch {
        if PROTECTED_KEYS.contains(&k.as_str()) {
            continue;
        }
        match obj.get_mut(k) {
            Some(existing) => deep_merge(existing, v),
            None => {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Objects merge key by key; anything else is replaced by the patch.
pub fn deep_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_deeply_and_keeps_protected_keys() {
        let mut body = json!({"model":"m","max_tokens":5,"metadata":{"user_id":"u","x":1}});
        let patch = json!({"model":"evil","max_tokens":9,"metadata":{"x":2},"top_k":3});
        merge_top_level(&mut body, patch.as_object().unwrap());
        assert_eq!(
            body,
            json!({"model":"m","max_tokens":9,"metadata":{"user_id":"u","x":2},"top_k":3})
        );
    }
}
