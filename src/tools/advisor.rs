//! `advisor` (gateway.md §5.8): a nested non-stream call through the gateway's own routing, made
//! by an [`AdvisorCaller`] the session supplies (it owns routing, limits and usage).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde_json::{json, Value};

use super::declare::AdvisorOptions;
use super::{ToolErrorCode, ToolKind, ToolOutcome};
use crate::protocol::anthropic::Usage;

const KIND: ToolKind = ToolKind::Advisor;
/// The nested call's timeout (§5.8).
pub const ADVISOR_TIMEOUT: Duration = Duration::from_secs(120);

/// The built-in advisor preamble; the declaration's `instructions` follow it.
pub const ADVISOR_PREAMBLE: &str = "You are an advisor consulted by another AI model while it works on a task for a user. \
Answer the request with concise, concrete, actionable advice: point out mistakes, risks and better approaches, and say \
plainly when you are unsure. Do not address the end user, and do not ask follow-up questions: give your best advice \
from what you are told.";

/// The nested call the session makes: model, system, one user message, `max_tokens`, no tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisorRequest {
    /// A public model id, routed like any request.
    pub model: String,
    pub system: String,
    pub user: String,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdvisorReply {
    /// The reply's text blocks joined.
    pub text: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvisorFailure {
    /// The key's limits were hit (→ `too_many_requests`).
    RateLimited,
    /// The upstream failed (→ `unavailable`).
    Upstream(String),
}

/// Makes the nested call. Sent to the tool actor with the call, so it must be `Send`; the future
/// it returns runs on the worker.
pub type AdvisorCaller = Arc<
    dyn Fn(AdvisorRequest) -> LocalBoxFuture<'static, Result<AdvisorReply, AdvisorFailure>>
        + Send
        + Sync,
>;

/// The request for one call. `transcript` is the conversation so far, used with
/// `forward_transcript`.
pub fn build_request(
    options: &AdvisorOptions,
    input: &Value,
    transcript: Option<&[Value]>,
) -> Result<AdvisorRequest, String> {
    let prompt = match input.get("prompt") {
        Some(Value::String(p)) => p.trim().to_string(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err("prompt must be a string".into()),
    };
    let user = if options.forward_transcript {
        let rendered = render_transcript(transcript.unwrap_or(&[]));
        format!("{rendered}\n\nAdvisor request: {prompt}")
    } else if prompt.is_empty() {
        return Err("prompt must be a non-empty string".into());
    } else {
        prompt
    };
    let system = match &options.instructions {
        Some(i) => format!("{ADVISOR_PREAMBLE}\n\n{i}"),
        None => ADVISOR_PREAMBLE.to_string(),
    };
    Ok(AdvisorRequest {
        model: options.model.clone(),
        system,
        user,
        max_tokens: options.max_tokens,
    })
}

/// A plain-text rendering of a conversation for the advisor: one `User:` / `Assistant:` section
/// per message; tool calls, results and media as short bracketed notes.
pub fn render_transcript(messages: &[Value]) -> String {
    let mut out = String::from("Conversation so far:");
    for m in messages {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("assistant") => "Assistant",
            Some("system") => "System",
            _ => "User",
        };
        let mut parts: Vec<String> = Vec::new();
        match m.get("content") {
            Some(Value::String(s)) => parts.push(s.clone()),
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    if let Some(p) = render_block(b) {
                        parts.push(p);
                    }
                }
            }
            _ => {}
        }
        if !parts.is_empty() {
            out.push_str(&format!("\n\n{role}: {}", parts.join("\n")));
        }
    }
    out
}

fn render_block(b: &Value) -> Option<String> {
    let ty = b.get("type")?.as_str()?;
    Some(match ty {
        "text" => b.get("text")?.as_str()?.to_string(),
        "tool_use" | "server_tool_use" => format!(
            "[tool call {}: {}]",
            b.get("name").and_then(Value::as_str).unwrap_or("?"),
            b.get("input").cloned().unwrap_or(json!({}))
        ),
        "tool_result" => {
            let content = match b.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(render_block)
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            format!("[tool result: {content}]")
        }
        "thinking" | "redacted_thinking" => return None,
        "image" => "[image]".into(),
        "document" => "[document]".into(),
        t if t.ends_with("_tool_result") => match super::model_view(b) {
            Some((text, _)) => format!("[tool result: {text}]"),
            None => "[tool result]".into(),
        },
        other => format!("[{other}]"),
    })
}

/// Runs one call through `caller`.
pub async fn execute(
    tool_use_id: &str,
    options: &AdvisorOptions,
    input: &Value,
    transcript: Option<&[Value]>,
    caller: Option<&AdvisorCaller>,
    timeout: Duration,
) -> ToolOutcome {
    let fail = |code: ToolErrorCode, msg: &str| ToolOutcome::error(KIND, tool_use_id, code, msg);
    let request = match build_request(options, input, transcript) {
        Ok(r) => r,
        Err(msg) => return fail(ToolErrorCode::InvalidToolInput, &msg),
    };
    let Some(caller) = caller else {
        return fail(
            ToolErrorCode::Unavailable,
            "the advisor cannot be reached from here",
        );
    };
    let model = request.model.clone();
    let reply = tokio::time::timeout(timeout, caller(request)).await;
    match reply {
        Ok(Ok(reply)) => {
            let content = json!({"type": "advisor_result",
                                 "advisor": options.name.as_deref().unwrap_or("advisor"),
                                 "model": model, "text": reply.text});
            ToolOutcome::success(KIND, tool_use_id, content, reply.text.clone())
                .with_usage(reply.usage)
        }
        Ok(Err(AdvisorFailure::RateLimited)) => fail(
            ToolErrorCode::TooManyRequests,
            "the advisor is rate limited; try again later",
        )
        .counted(true),
        Ok(Err(AdvisorFailure::Upstream(why))) => {
            tracing::warn!(%model, error = %why, "advisor call failed");
            fail(ToolErrorCode::Unavailable, "the advisor model failed").counted(true)
        }
        Err(_) => fail(ToolErrorCode::Unavailable, "the advisor timed out").counted(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(forward: bool) -> AdvisorOptions {
        AdvisorOptions {
            name: Some("reviewer".into()),
            model: "big".into(),
            instructions: Some("Be terse.".into()),
            max_tokens: 2048,
            forward_transcript: forward,
        }
    }

    #[test]
    fn requests() {
        let r = build_request(&opts(false), &json!({"prompt":"Is this right?"}), None).unwrap();
        assert_eq!(r.model, "big");
        assert_eq!(r.user, "Is this right?");
        assert!(r.system.starts_with(ADVISOR_PREAMBLE) && r.system.ends_with("\n\nBe terse."));
        assert_eq!(r.max_tokens, 2048);
        assert!(build_request(&opts(false), &json!({}), None).is_err());
        assert!(build_request(&opts(false), &json!({"prompt":3}), None).is_err());

        let transcript = vec![
            json!({"role":"user","content":"Fix my loop"}),
            json!({"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"s"},
                {"type":"text","text":"Looking."},{"type":"tool_use","id":"t","name":"read","input":{"path":"a.rs"}}]}),
            json!({"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"fn main(){}"}]}),
        ];
        let r = build_request(&opts(true), &json!({}), Some(&transcript)).unwrap();
        assert_eq!(
            r.user,
            "Conversation so far:\n\nUser: Fix my loop\n\nAssistant: Looking.\n[tool call read: {\"path\":\"a.rs\"}]\
             \n\nUser: [tool result: fn main(){}]\n\nAdvisor request: "
        );
    }

    #[actix_rt::test]
    async fn outcomes() {
        let reply: AdvisorCaller = Arc::new(|req: AdvisorRequest| {
            Box::pin(async move {
                Ok(AdvisorReply {
                    text: format!("advice for {}", req.user),
                    usage: Usage {
                        input_tokens: 10,
                        output_tokens: 5,
                        ..Default::default()
                    },
                })
            })
        });
        let o = execute(
            "id",
            &opts(false),
            &json!({"prompt":"p"}),
            None,
            Some(&reply),
            ADVISOR_TIMEOUT,
        )
        .await;
        assert_eq!(
            o.block,
            json!({"type":"advisor_tool_result","tool_use_id":"id","content":{"type":"advisor_result","advisor":"reviewer","model":"big","text":"advice for p"}})
        );
        assert_eq!(o.model_content, "advice for p");
        assert_eq!(o.usage.unwrap().input_tokens, 10);
        assert!(o.counted);

        let limited: AdvisorCaller =
            Arc::new(|_| Box::pin(async { Err(AdvisorFailure::RateLimited) }));
        let o = execute(
            "id",
            &opts(false),
            &json!({"prompt":"p"}),
            None,
            Some(&limited),
            ADVISOR_TIMEOUT,
        )
        .await;
        assert_eq!(o.error_code(), Some("too_many_requests"));
        let broken: AdvisorCaller =
            Arc::new(|_| Box::pin(async { Err(AdvisorFailure::Upstream("502".into())) }));
        let o = execute(
            "id",
            &opts(false),
            &json!({"prompt":"p"}),
            None,
            Some(&broken),
            ADVISOR_TIMEOUT,
        )
        .await;
        assert_eq!(o.error_code(), Some("unavailable"));
        let o = execute(
            "id",
            &opts(false),
            &json!({"prompt":"p"}),
            None,
            None,
            ADVISOR_TIMEOUT,
        )
        .await;
        assert_eq!(o.error_code(), Some("unavailable"));
        let o = execute(
            "id",
            &opts(false),
            &json!({}),
            None,
            Some(&reply),
            ADVISOR_TIMEOUT,
        )
        .await;
        assert_eq!(o.error_code(), Some("invalid_tool_input"));
        assert!(!o.counted);

        let slow: AdvisorCaller = Arc::new(|_| Box::pin(std::future::pending()));
        let o = execute(
            "id",
            &opts(false),
            &json!({"prompt":"p"}),
            None,
            Some(&slow),
            Duration::from_millis(10),
        )
        .await;
        assert_eq!(o.error_code(), Some("unavailable"));
    }
}
