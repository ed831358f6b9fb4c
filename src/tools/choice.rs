//! `tool_choice` (gateway.md §5.2): every accepted form is parsed once per request, then written
//! per deployment and round in the object form with gateway names mapped to function names.

use serde_json::{json, Value};

use super::declare::{native_kind, ToolSet};
use super::ToolKind;
use crate::error::{ErrorDetail, GatewayError};

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

fn invalid(param: &str, reason: impl Into<String>) -> GatewayError {
    GatewayError::from_details(vec![ErrorDetail::new(param, reason)])
}

impl ToolChoice {
    /// Validates the request's `tool_choice` against its tools. `None` when absent.
    pub fn parse(
        choice: Option<&Value>,
        request_tools: &[Value],
        set: &ToolSet,
    ) -> Result<Option<Self>, GatewayError> {
        let Some(choice) = choice.filter(|c| !c.is_null()) else {
            return Ok(None);
        };
        let simple = |mode, dp| ToolChoice {
            mode,
            target: None,
            disable_parallel_tool_use: dp,
        };
        match choice {
            Value::String(s) => match s.as_str() {
                "auto" => Ok(Some(simple(ChoiceMode::Auto, None))),
                "any" => Ok(Some(simple(ChoiceMode::Any, None))),
                "none" => Ok(Some(simple(ChoiceMode::None, None))),
                other => match ToolKind::from_type_alias(other) {
                    Some(kind) => Ok(Some(ToolChoice {
                        mode: ChoiceMode::Tool,
                        target: Some(gateway_target(set, kind, None, other)?),
                        disable_parallel_tool_use: None,
                    })),
                    None => Err(invalid(
                        "tool_choice",
                        "must be \"auto\", \"any\", \"none\", a gateway tool type or a tool choice object",
                    )),
                },
            },
            Value::Object(obj) => {
                let dp = match obj.get("disable_parallel_tool_use") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => {
                        return Err(invalid(
                            "tool_choice.disable_parallel_tool_use",
                            "must be a boolean",
                        ))
                    }
                };
                match obj.get("type").and_then(Value::as_str) {
                    Some("auto") => Ok(Some(simple(ChoiceMode::Auto, dp))),
                    Some("any") => Ok(Some(simple(ChoiceMode::Any, dp))),
                    Some("none") => Ok(Some(simple(ChoiceMode::None, None))),
                    Some("tool") => {
                        let Some(name) = obj.get("name").and_then(Value::as_str) else {
                            return Err(invalid("tool_choice.name", "field required"));
                        };
                        Ok(Some(ToolChoice {
                            mode: ChoiceMode::Tool,
                            target: Some(resolve_name(name, request_tools, set)?),
                            disable_parallel_tool_use: dp,
                        }))
                    }
                    _ => Err(invalid(
                        "tool_choice.type",
                        "must be one of auto, any, tool, none",
                    )),
                }
            }
            _ => Err(invalid(
                "tool_choice",
                "must be a string or a tool choice object",
            )),
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

/// The first declared tool of `kind` (the advisor alias means the first advisor).
fn gateway_target(
    set: &ToolSet,
    kind: ToolKind,
    exact: Option<&str>,
    given: &str,
) -> Result<ChoiceTarget, GatewayError> {
    set.tools()
        .iter()
        .position(|t| t.kind == kind && exact.is_none_or(|f| t.function_name == f))
        .map(ChoiceTarget::Gateway)
        .ok_or_else(|| {
            invalid(
                "tool_choice.name",
                format!("\"{given}\" does not name a declared tool"),
            )
        })
}

fn resolve_name(
    name: &str,
    request_tools: &[Value],
    set: &ToolSet,
) -> Result<ChoiceTarget, GatewayError> {
    // Gateway function names first: `gateway_` is reserved for them.
    if let Some(i) = set.tools().iter().position(|t| t.function_name == name) {
        return Ok(ChoiceTarget::Gateway(i));
    }
    if let Some(kind) = ToolKind::from_type_alias(name) {
        return gateway_target(set, kind, None, name);
    }
    // Client tools: everything but gateway declarations and native shapes (which the set holds).
    let is_client_tool = |t: &Value| match t.get("type").and_then(Value::as_str) {
        Some(ty) => {
            !(ty.starts_with("gateway:")
                || ty.starts_with("ai-stats:")
                || native_kind(ty).is_some())
        }
        None => true,
    };
    if request_tools
        .iter()
        .filter(|t| is_client_tool(t))
        .any(|t| t.get("name").and_then(Value::as_str) == Some(name))
    {
        return Ok(ChoiceTarget::Named(name.to_string()));
    }
    if let Some(kind) = ToolKind::from_server_name(name) {
        return gateway_target(set, kind, None, name);
    }
    Err(invalid(
        "tool_choice.name",
        format!("\"{name}\" does not name a declared tool"),
    ))
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

    #[test]
    fn bad_forms_are_400() {
        let none: &[String] = &[];
        for (choice, param) in [
            (json!("sometimes"), "tool_choice"),
            (json!("web_search"), "tool_choice"),
            (json!("gateway:image_generation"), "tool_choice.name"),
            (json!("ai-stats:apply_patch"), "tool_choice"),
            (json!({"type":"tool"}), "tool_choice.name"),
            (json!({"type":"tool","name":"nope"}), "tool_choice.name"),
            (
                json!({"type":"tool","name":"gateway_web_fetch"}),
                "tool_choice.name",
            ),
            (json!({"type":"maybe"}), "tool_choice.type"),
            (
                json!({"type":"auto","disable_parallel_tool_use":"yes"}),
                "tool_choice.disable_parallel_tool_use",
            ),
            (json!(3), "tool_choice"),
        ] {
            match rewrite(choice.clone(), none, 1) {
                Err(GatewayError::InvalidRequest { details, .. }) => {
                    assert_eq!(details[0].param, param, "{choice}")
                }
                other => panic!("{choice}: {other:?}"),
            }
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
