//! Request bodies shared by the micro-benches and the load harness, built deterministically so
//! every run sends the same bytes.

// Each bench target uses a subset of these fixtures.
#![allow(dead_code)]

use serde_json::{json, Value};

/// A typical small request: a system prompt and one user turn.
pub fn small_request(model: &str, stream: bool) -> String {
    json!({
        "model": model,
        "max_tokens": 1024,
        "system": "You are a concise assistant. Answer in plain English.",
        "messages": [
            {"role": "user", "content": "Explain in two sentences what a reverse proxy does."}
        ],
        "stream": stream,
    })
    .to_string()
}

/// The tools a coding agent typically declares.
fn agent_tools() -> Vec<Value> {
    let tool = |name: &str, description: &str, props: Value, required: &[&str]| {
        json!({
            "name": name,
            "description": description,
            "input_schema": {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": false,
            }
        })
    };
    vec![
        tool(
            "read_file",
            "Read a file from the workspace. Returns its text with line numbers.",
            json!({"path": {"type": "string", "description": "Path relative to the workspace root"},
                   "offset": {"type": "integer", "minimum": 0},
                   "limit": {"type": "integer", "minimum": 1}}),
            &["path"],
        ),
        tool(
            "write_file",
            "Create or overwrite a file in the workspace.",
            json!({"path": {"type": "string"}, "content": {"type": "string"}}),
            &["path", "content"],
        ),
        tool(
            "edit_file",
            "Replace one exact occurrence of old_string with new_string in a file.",
            json!({"path": {"type": "string"}, "old_string": {"type": "string"},
                   "new_string": {"type": "string"}, "replace_all": {"type": "boolean"}}),
            &["path", "old_string", "new_string"],
        ),
        tool(
            "bash",
            "Run a shell command in the workspace and return stdout, stderr and the exit code.",
            json!({"command": {"type": "string"}, "timeout_ms": {"type": "integer"}}),
            &["command"],
        ),
        tool(
            "grep",
            "Search file contents with a regular expression.",
            json!({"pattern": {"type": "string"}, "path": {"type": "string"},
                   "glob": {"type": "string"}, "case_insensitive": {"type": "boolean"}}),
            &["pattern"],
        ),
        tool(
            "list_dir",
            "List the entries of a directory.",
            json!({"path": {"type": "string"}}),
            &["path"],
        ),
    ]
}

/// A coding-agent conversation of at least `turns` messages, user and assistant alternating:
/// assistant turns call tools and user turns carry the results, so the body looks like what agent
/// CLIs send late in a session. It always ends on a user turn (one more message when needed).
pub fn conversation_request(model: &str, turns: usize, stream: bool) -> String {
    let file_body: String = (0..40)
        .map(|i| {
            format!("{i:>4}  let value_{i} = compute(input, {i}); // keep the hot path lean\n")
        })
        .collect();
    let mut messages = vec![json!({
        "role": "user",
        "content": "The request handler allocates too much. Find the hot path and fix it."
    })];
    let mut call = 0;
    while messages.len() < turns || messages.len() % 2 == 0 {
        let id = format!("toolu_{call:024}");
        if messages.len() % 2 == 1 {
            messages.push(json!({
                "role": "assistant",
                "content": [
                    {"type": "text", "text": format!("Step {call}: reading the next file to see how requests are handled.")},
                    {"type": "tool_use", "id": id, "name": "read_file",
                     "input": {"path": format!("src/handler_{call}.rs"), "offset": 0, "limit": 200}}
                ]
            }));
        } else {
            messages.push(json!({
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": id, "content": file_body}
                ]
            }));
            call += 1;
        }
    }
    json!({
        "model": model,
        "max_tokens": 8192,
        "system": [{"type": "text", "text": "You are a coding agent working in a Rust repository. Use the tools to read, edit and test code. Keep changes small and explain them.", "cache_control": {"type": "ephemeral"}}],
        "tools": agent_tools(),
        "tool_choice": {"type": "auto"},
        "messages": messages,
        "stream": stream,
    })
    .to_string()
}

/// [`small_request`] as the gateway translates it for an OpenAI-compatible upstream: what the
/// direct baseline sends to the OpenAI side of the mock.
pub fn small_openai_request(model: &str, stream: bool) -> String {
    let mut body = json!({
        "model": model,
        "max_tokens": 1024,
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in plain English."},
            {"role": "user", "content": "Explain in two sentences what a reverse proxy does."}
        ],
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string()
}
