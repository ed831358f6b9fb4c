//! `tool_choice` (gateway.md §5.2): every accepted form is parsed once per request, then written
//! per deployment and round in the object form with gateway names mapped to function names.

use serde_json::{json, Value};

use super::declare::{is_tool_layer_type, ToolSet};
use super::ToolKind;
use crate::error::{ErrorDetail, GatewayError};
use crate::protocol::validate::quoted;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceMode {
    Auto,
    Any,
    None,
    Tool,
}

/// What a `tool` choice names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChoiceTarget {
    /// A client tool (or any non-gateway tool), by its name.
    Named(String),
    /// A gateway tool, by its position in [`ToolSet::tools`].
    Gateway(usize),
}

/// A validated `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolChoice {
    pub mode: ChoiceMode,
    pub target: Option<ChoiceTarget>,
    pub disable_parallel_tool_use: Option<bool>,
}

/// `"<name>" is not a declared tool`, with the client's name cut short.
fn undeclared(name: &str) -> String {
    format!("{} is not a declared tool", quoted(name))
}

impl ToolChoice {
    /// Validates the request's `tool_choice` against its tools (messages-api.md §3.4, gateway.md
    /// §5.2): the one rule set, with every problem as a detail. `None` when absent.
    pub fn parse(
        choice: Option<&Value>,
        request_tools: &[Value],
        set: &ToolSet,
    ) -> Result<Option<Self>, GatewayError> {
        let mut details = Vec::new();
        let parsed = choice
            .filter(|c| !c.is_null())
            .and_then(|c| parse_choice(c, request_tools, set, &mut details));
        if details.is_empty() {
            Ok(parsed)
        } else {
            Err(GatewayError::from_details(details))
        }
    }

    /// The object form for one upstream call. Rounds ≥ 2 turn `any` / `tool` into `auto`, so
    /// the loop can end (§5.2).
    pub fn for_round(&self, set: &ToolSet, native: &[String], round: u32) -> Value {
        let mode = match self.mode {
            ChoiceMode::Any | ChoiceMode::Tool if round >= 2 => ChoiceMode::Auto,
            m => m,
        };
        let mut v = match mode {
            ChoiceMode::Auto => json!({"type": "auto"}),
            ChoiceMode::Any => json!({"type": "any"}),
            ChoiceMode::None => return json!({"type": "none"}),
            ChoiceMode::Tool => {
                let name = match &self.target {
                    Some(ChoiceTarget::Named(n)) => n.clone(),
                    Some(ChoiceTarget::Gateway(i)) => match set.tools().get(*i) {
                        Some(t) if t.is_native_for(native) => t.server_name().to_string(),
                        Some(t) => t.function_name.clone(),
                        None => return json!({"type": "auto"}),
                    },
                    None => return json!({"type": "auto"}),
                };
                json!({"type": "tool", "name": name})
            }
        };
        if let Some(dp) = self.disable_parallel_tool_use {
            v["disable_parallel_tool_use"] = Value::Bool(dp);
        }
        v
    }
}

fn parse_choice(
    choice: &Value,
    request_tools: &[Value],
    set: &ToolSet,
    details: &mut Vec<ErrorDetail>,
) -> Option<ToolChoice> {
    let mut fail = |param: &str, reason: String| details.push(ErrorDetail::new(param, reason));
    let simple = |mode, dp| ToolChoice {
        mode,
        target: None,
        disable_parallel_tool_use: dp,
    };
    let obj = match choice {
        // Bare strings: the three modes or a gateway tool type (gateway.md §5.2).
        Value::String(s) => {
            return match s.as_str() {
                "auto" => Some(simple(ChoiceMode::Auto, None)),
                "any" => Some(simple(ChoiceMode::Any, None)),
                "none" => Some(simple(ChoiceMode::None, None)),
                other => match ToolKind::from_type_alias(other) {
                    Some(kind) => match first_of_kind(set, kind) {
                        Some(target) => Some(ToolChoice {
                            mode: ChoiceMode::Tool,
                            target: Some(target),
                            disable_parallel_tool_use: None,
                        }),
                        None => {
                            fail("tool_choice", undeclared(other));
                            None
                        }
                    },
                    None => {
                        fail(
                            "tool_choice",
                            "must be one of auto, any, none or a gateway tool type".into(),
                        );
                        None
                    }
                },
            };
        }
        Value::Object(obj) => obj,
        _ => {
            fail("tool_choice", "must be an object or a string".into());
            return None;
        }
    };
    // A required string member of the choice object.
    let required = |key: &str, fail: &mut dyn FnMut(&str, String)| match obj.get(key) {
        Some(Value::String(s)) => Some(s.as_str()),
        other => {
            let reason = if other.is_some() {
                "must be a string"
            } else {
                "field required"
            };
            fail(&format!("tool_choice.{key}"), reason.into());
            None
        }
    };
    let ty = required("type", &mut fail)?;
    const DP: &str = "tool_choice.disable_parallel_tool_use";
    let dp_value = obj
        .get("disable_parallel_tool_use")
        .filter(|v| !v.is_null());
    let dp = |fail: &mut dyn FnMut(&str, String)| match dp_value {
        None => Some(None),
        Some(Value::Bool(b)) => Some(Some(*b)),
        Some(_) => {
            fail(DP, "must be a boolean".into());
            None
        }
    };
    match ty {
        "auto" => dp(&mut fail).map(|dp| simple(ChoiceMode::Auto, dp)),
        "any" => dp(&mut fail).map(|dp| simple(ChoiceMode::Any, dp)),
        // §3.4: `disable_parallel_tool_use` belongs to auto, any and tool only.
        "none" if dp_value.is_some() => {
            fail(DP, "not allowed with type none".into());
            None
        }
        "none" => Some(simple(ChoiceMode::None, None)),
        "tool" => {
            let name = required("name", &mut fail)?;
            let target = resolve_name(name, request_tools, set);
            if target.is_none() {
                fail("tool_choice.name", undeclared(name));
            }
            let dp = dp(&mut fail);
            Some(ToolChoice {
                mode: ChoiceMode::Tool,
                target: Some(target?),
                disable_parallel_tool_use: dp?,
            })
        }
        _ => {
            fail(
                "tool_choice.type",
                "must be one of auto, any, tool, none".into(),
            );
            None
        }
    }
}

/// The first declared tool of `kind` (the advisor alias means the first advisor).
fn first_of_kind(set: &ToolSet, kind: ToolKind) -> Option<ChoiceTarget> {
    set.tools()
        .iter()
        .position(|t| t.kind == kind)
        .map(ChoiceTarget::Gateway)
}

/// What a `tool` choice's `name` names: a gateway function name, a gateway type, a client tool
/// (any declaration that is not the tool layer's), or a gateway-run native name.
fn resolve_name(name: &str, request_tools: &[Value], set: &ToolSet) -> Option<ChoiceTarget> {
    // Gateway function names first: `gateway_` is reserved for them.
    if let Some(i) = set.tools().iter().position(|t| t.function_name == name) {
        return Some(ChoiceTarget::Gateway(i));
    }
    if let Some(kind) = ToolKind::from_type_alias(name) {
        return first_of_kind(set, kind);
    }
    let is_client_tool = |t: &Value| {
        t.get("type")
            .and_then(Value::as_str)
            .is_none_or(|ty| !is_tool_layer_type(ty))
    };
    if request_tools
        .iter()
        .filter(|t| is_client_tool(t))
        .any(|t| t.get("name").and_then(Value::as_str) == Some(name))
    {
        return Some(ChoiceTarget::Named(name.to_string()));
    }
    first_of_kind(set, ToolKind::from_server_name(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ToolsConfig;
    use crate::tools::ModelAccess;

    fn tools() -> Vec<Value> {
        vec![
            json!({"name":"lookup","input_schema":{"type":"object"}}),
            json!({"type":"gateway:datetime"}),
            json!({"type":"web_search_20250305","name":"web_search"}),
            json!({"type":"ai-stats:advisor","name":"Reviewer","model":"m"}),
            json!({"type":"gateway:advisor","name":"second","model":"m"}),
        ]
    }

    fn set(tools: &[Value]) -> ToolSet {
        ToolSet::declare(tools, &ToolsConfig::default(), &|_| ModelAccess::Allowed).unwrap()
    }

    fn rewrite(choice: Value, native: &[String], round: u32) -> Result<Value, GatewayError> {
        let t = tools();
        let s = set(&t);
        Ok(ToolChoice::parse(Some(&choice), &t, &s)?
            .unwrap()
            .for_round(&s, native, round))
    }

    #[test]
    fn every_form_is_rewritten() {
        let none: &[String] = &[];
        let native = ["web_search".to_string()];
        let cases: Vec<(Value, &[String], Value)> = vec![
            (json!("auto"), none, json!({"type":"auto"})),
            (json!("any"), none, json!({"type":"any"})),
            (json!("none"), none, json!({"type":"none"})),
            (json!({"type":"none"}), none, json!({"type":"none"})),
            (
                json!({"type":"auto","disable_parallel_tool_use":true}),
                none,
                json!({"type":"auto","disable_parallel_tool_use":true}),
            ),
            (
                json!("gateway:datetime"),
                none,
                json!({"type":"tool","name":"gateway_datetime"}),
            ),
            (
                json!("ai-stats:datetime"),
                none,
                json!({"type":"tool","name":"gateway_datetime"}),
            ),
            (
                json!({"type":"tool","name":"gateway:datetime"}),
                none,
                json!({"type":"tool","name":"gateway_datetime"}),
            ),
            (
                json!({"type":"tool","name":"gateway_datetime","disable_parallel_tool_use":false}),
                none,
                json!({"type":"tool","name":"gateway_datetime","disable_parallel_tool_use":false}),
            ),
            (
                json!({"type":"tool","name":"web_search"}),
                none,
                json!({"type":"tool","name":"gateway_web_search"}),
            ),
            (
                json!({"type":"tool","name":"web_search"}),
                &native,
                json!({"type":"tool","name":"web_search"}),
            ),
            (
                json!({"type":"tool","name":"gateway:web_search"}),
                none,
                json!({"type":"tool","name":"gateway_web_search"}),
            ),
            (
                json!("ai-stats:advisor"),
                none,
                json!({"type":"tool","name":"gateway_advisor_reviewer"}),
            ),
            (
                json!({"type":"tool","name":"gateway_advisor_second"}),
                none,
                json!({"type":"tool","name":"gateway_advisor_second"}),
            ),
            (
                json!({"type":"tool","name":"advisor"}),
                none,
                json!({"type":"tool","name":"gateway_advisor_reviewer"}),
            ),
            (
                json!({"type":"tool","name":"lookup"}),
                none,
                json!({"type":"tool","name":"lookup"}),
            ),
        ];
        for (choice, native, want) in cases {
            assert_eq!(
                rewrite(choice.clone(), native, 1).unwrap(),
                want,
                "{choice}"
            );
        }
    }

    #[test]
    fn later_rounds_use_auto() {
        let none: &[String] = &[];
        assert_eq!(
            rewrite(json!("any"), none, 2).unwrap(),
            json!({"type":"auto"})
        );
        assert_eq!(
            rewrite(
                json!({"type":"tool","name":"lookup","disable_parallel_tool_use":true}),
                none,
                3
            )
            .unwrap(),
            json!({"type":"auto","disable_parallel_tool_use":true})
        );
        assert_eq!(
            rewrite(json!("none"), none, 2).unwrap(),
            json!({"type":"none"})
        );
        assert_eq!(
            rewrite(json!("gateway:datetime"), none, 2).unwrap(),
            json!({"type":"auto"})
        );
    }

    /// The one rule set for `tool_choice` (messages-api.md §3.4, gateway.md §5.2): every detail.
    #[test]
    fn bad_forms_are_400() {
        let none: &[String] = &[];
        let long = "n".repeat(100);
        let long_reason = format!("\"{}\"... is not a declared tool", "n".repeat(64));
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (
                json!("sometimes"),
                vec![(
                    "tool_choice",
                    "must be one of auto, any, none or a gateway tool type",
                )],
            ),
            (
                json!("required"),
                vec![(
                    "tool_choice",
                    "must be one of auto, any, none or a gateway tool type",
                )],
            ),
            (
                json!("web_search"),
                vec![(
                    "tool_choice",
                    "must be one of auto, any, none or a gateway tool type",
                )],
            ),
            (
                json!("ai-stats:apply_patch"),
                vec![(
                    "tool_choice",
                    "must be one of auto, any, none or a gateway tool type",
                )],
            ),
            (
                json!("gateway:image_generation"),
                vec![(
                    "tool_choice",
                    "\"gateway:image_generation\" is not a declared tool",
                )],
            ),
            (
                json!(3),
                vec![("tool_choice", "must be an object or a string")],
            ),
            (
                json!([]),
                vec![("tool_choice", "must be an object or a string")],
            ),
            (json!({}), vec![("tool_choice.type", "field required")]),
            (
                json!({"type":1}),
                vec![("tool_choice.type", "must be a string")],
            ),
            (
                json!({"type":"maybe"}),
                vec![("tool_choice.type", "must be one of auto, any, tool, none")],
            ),
            (
                json!({"type":"function"}),
                vec![("tool_choice.type", "must be one of auto, any, tool, none")],
            ),
            (
                json!({"type":"tool"}),
                vec![("tool_choice.name", "field required")],
            ),
            (
                json!({"type":"tool","name":7}),
                vec![("tool_choice.name", "must be a string")],
            ),
            (
                json!({"type":"tool","name":"nope"}),
                vec![("tool_choice.name", "\"nope\" is not a declared tool")],
            ),
            (
                json!({"type":"tool","name":long}),
                vec![("tool_choice.name", long_reason.as_str())],
            ),
            (
                json!({"type":"tool","name":"gateway_web_fetch"}),
                vec![(
                    "tool_choice.name",
                    "\"gateway_web_fetch\" is not a declared tool",
                )],
            ),
            (
                json!({"type":"tool","name":"image_generation"}),
                vec![(
                    "tool_choice.name",
                    "\"image_generation\" is not a declared tool",
                )],
            ),
            (
                json!({"type":"tool","name":"nope","disable_parallel_tool_use":"yes"}),
                vec![
                    ("tool_choice.name", "\"nope\" is not a declared tool"),
                    ("tool_choice.disable_parallel_tool_use", "must be a boolean"),
                ],
            ),
            (
                json!({"type":"auto","disable_parallel_tool_use":"yes"}),
                vec![("tool_choice.disable_parallel_tool_use", "must be a boolean")],
            ),
            (
                json!({"type":"any","disable_parallel_tool_use":1}),
                vec![("tool_choice.disable_parallel_tool_use", "must be a boolean")],
            ),
            (
                json!({"type":"none","disable_parallel_tool_use":true}),
                vec![(
                    "tool_choice.disable_parallel_tool_use",
                    "not allowed with type none",
                )],
            ),
            (
                json!({"type":"none","disable_parallel_tool_use":"x"}),
                vec![(
                    "tool_choice.disable_parallel_tool_use",
                    "not allowed with type none",
                )],
            ),
        ];
        for (choice, want) in cases {
            match rewrite(choice.clone(), none, 1) {
                Err(GatewayError::InvalidRequest { details, .. }) => {
                    let got: Vec<(&str, &str)> = details
                        .iter()
                        .map(|d| (d.param.as_str(), d.reason.as_str()))
                        .collect();
                    assert_eq!(got, want, "{choice}");
                }
                other => panic!("{choice}: {other:?}"),
            }
        }
    }

    /// Without any gateway tool declared, only client tools can be named: a `gateway_` name
    /// that the tool layer does not hold is refused rather than sent upstream.
    #[test]
    fn without_gateway_tools_only_client_names_resolve() {
        let t = vec![
            json!({"name":"w","input_schema":{"type":"object"}}),
            json!({"type":"bash_20250124","name":"bash"}),
        ];
        let empty = ToolSet::default();
        let parse = |c: Value| ToolChoice::parse(Some(&c), &t, &empty);
        assert_eq!(
            parse(json!({"type":"tool","name":"bash"}))
                .unwrap()
                .unwrap()
                .target,
            Some(ChoiceTarget::Named("bash".into()))
        );
        assert!(parse(json!({"type":"tool","name":"w"})).is_ok());
        assert!(parse(json!({"type":"none"})).is_ok());
        for name in ["gateway_advisor_reviewer", "gateway:datetime", "datetime"] {
            assert!(parse(json!({"type":"tool","name":name})).is_err(), "{name}");
        }
    }

    #[test]
    fn absent_choice_is_none() {
        let t = tools();
        let s = set(&t);
        assert_eq!(ToolChoice::parse(None, &t, &s).unwrap(), None);
        assert_eq!(ToolChoice::parse(Some(&Value::Null), &t, &s).unwrap(), None);
    }
}
