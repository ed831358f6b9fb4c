//! `datetime` (gateway.md §5.4): the current time in up to five IANA zones.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::declare::DatetimeOptions;
use super::{ToolErrorCode, ToolKind, ToolOutcome};

const KIND: ToolKind = ToolKind::Datetime;

/// Runs one call at instant `now`. Zones from the model win when non-empty.
pub fn execute(
    tool_use_id: &str,
    options: &DatetimeOptions,
    input: &Value,
    now: DateTime<Utc>,
) -> ToolOutcome {
    let invalid =
        |msg: &str| ToolOutcome::error(KIND, tool_use_id, ToolErrorCode::InvalidToolInput, msg);
    let zones: Vec<Tz> = match input.get("timezones") {
        None | Some(Value::Null) => options.timezones.clone(),
        Some(Value::Array(items)) if items.is_empty() => options.timezones.clone(),
        Some(Value::Array(items)) => {
            if items.len() > 5 {
                return invalid("at most 5 time zones");
            }
            let mut zones = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str().map(|s| s.trim().parse::<Tz>()) {
                    Some(Ok(tz)) => zones.push(tz),
                    _ => {
                        return invalid(&format!(
                            "unknown time zone {item}; use IANA names such as Europe/Paris"
                        ))
                    }
                }
            }
            zones
        }
        Some(_) => return invalid("timezones must be an array of IANA time zone names"),
    };
    let times: Vec<Value> = zones
        .iter()
        .map(|tz| {
            let local = now.with_timezone(tz);
            json!({
                "timezone": tz.name(),
                "datetime": local.to_rfc3339_opts(SecondsFormat::Secs, false),
                "weekday": local.format("%A").to_string(),
            })
        })
        .collect();
    let model = json!({"times": times}).to_string();
    ToolOutcome::success(
        KIND,
        tool_use_id,
        json!({"type": "datetime_result", "times": times}),
        model,
    )
}

/// The model's view of a `datetime_result` found in history.
pub fn model_content_from_block(content: &Value) -> Option<String> {
    Some(json!({"times": content.get("times")?}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-07-09T15:27:12Z".parse().unwrap()
    }

    fn opts(z: &[&str]) -> DatetimeOptions {
        DatetimeOptions {
            timezones: z.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn declared_zones_apply_when_the_model_gives_none() {
        for input in [
            json!({}),
            json!({"timezones":[]}),
            json!({"timezones":null}),
        ] {
            let o = execute("srvtoolu_gw_1", &opts(&["Europe/Paris"]), &input, now());
            assert_eq!(
                o.block,
                json!({"type":"datetime_tool_result","tool_use_id":"srvtoolu_gw_1","content":{"type":"datetime_result",
                    "times":[{"timezone":"Europe/Paris","datetime":"2026-07-09T17:27:12+02:00","weekday":"Thursday"}]}})
            );
            assert!(o.counted && !o.is_error);
            assert_eq!(
                o.model_content,
                r#"{"times":[{"timezone":"Europe/Paris","datetime":"2026-07-09T17:27:12+02:00","weekday":"Thursday"}]}"#
            );
        }
    }

    #[test]
    fn model_zones_win() {
        let o = execute(
            "id",
            &opts(&["Europe/Paris"]),
            &json!({"timezones":["UTC","Asia/Tokyo","America/Los_Angeles"]}),
            now(),
        );
        let times = &o.block["content"]["times"];
        assert_eq!(times[0]["datetime"], "2026-07-09T15:27:12+00:00");
        assert_eq!(times[1]["datetime"], "2026-07-10T00:27:12+09:00");
        assert_eq!(times[1]["weekday"], "Friday");
        assert_eq!(times[2]["datetime"], "2026-07-09T08:27:12-07:00");
    }

    #[test]
    fn bad_zones_are_invalid_input() {
        for input in [
            json!({"timezones":["Mars/Olympus"]}),
            json!({"timezones":["UTC","UTC","UTC","UTC","UTC","UTC"]}),
            json!({"timezones":"UTC"}),
            json!({"timezones":[3]}),
        ] {
            let o = execute("id", &opts(&["UTC"]), &input, now());
            assert_eq!(o.error_code(), Some("invalid_tool_input"), "{input}");
            assert!(o.is_error && !o.counted);
        }
        let five = json!({"timezones":["UTC","UTC","UTC","UTC","UTC"]});
        assert!(!execute("id", &opts(&["UTC"]), &five, now()).is_error);
    }

    #[test]
    fn history_view_matches_execution() {
        let o = execute("id", &opts(&["UTC"]), &json!({}), now());
        assert_eq!(
            model_content_from_block(&o.block["content"]).unwrap(),
            o.model_content
        );
    }
}
