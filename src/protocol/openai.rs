//! OpenAI Chat Completions wire types (`POST {base_url}/chat/completions`): the request the
//! gateway sends, the response, stream chunks and error bodies ([OAI] `types/chat/`).
//!
//! Requests borrow from the client's parsed body; responses and chunks borrow from the upstream
//! bytes where no unescaping is needed. Readers are lenient: `null` and missing read alike, and a
//! content field may be a string or a list of text parts.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Debug, Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<ChatMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ChatTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_cache_retention: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_search_options: Option<&'a RawValue>,
}

impl<'a> ChatRequest<'a> {
    pub fn new(model: &'a str) -> Self {
        Self {
            model,
            messages: Vec::new(),
            max_tokens: None,
            max_completion_tokens: None,
            stream: None,
            stream_options: None,
            temperature: None,
            top_p: None,
            top_k: None,
            stop: None,
            user: None,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            reasoning_effort: None,
            response_format: None,
            prompt_cache_key: None,
            prompt_cache_retention: None,
            web_search_options: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ChatMessage<'a> {
    System {
        content: Cow<'a, str>,
    },
    User {
        content: UserContent<'a>,
    },
    Assistant {
        /// `null` when the turn has no text (tool calls only).
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reasoning_content: Option<String>,
    },
    Tool {
        tool_call_id: &'a str,
        content: String,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum UserContent<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<ContentPart<'a>>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart<'a> {
    Text { text: Cow<'a, str> },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Debug, Serialize)]
pub struct ImageUrl<'a> {
    pub url: Cow<'a, str>,
}

#[derive(Debug, Serialize)]
pub struct ToolCall<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall<'a>,
}

#[derive(Debug, Serialize)]
pub struct FunctionCall<'a> {
    pub name: Cow<'a, str>,
    pub arguments: String,
}

#[derive(Debug, Serialize)]
pub struct ChatTool<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionDef<'a>,
}

#[derive(Debug, Serialize)]
pub struct FunctionDef<'a> {
    pub name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `"auto"`, `"required"`, `"none"` or `{"type":"function","function":{"name":…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    Mode(&'static str),
    Function(Cow<'a, str>),
}

impl Serialize for ToolChoice<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Name<'b> {
            name: &'b str,
        }
        #[derive(Serialize)]
        struct Function<'b> {
            #[serde(rename = "type")]
            kind: &'static str,
            function: Name<'b>,
        }
        match self {
            Self::Mode(m) => s.serialize_str(m),
            Self::Function(name) => Function {
                kind: "function",
                function: Name { name },
            }
            .serialize(s),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Response and stream chunks

#[derive(Debug, Deserialize)]
pub struct ChatResponse<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub choices: Vec<Choice<'a>>,
    #[serde(default)]
    pub usage: Option<ChatUsage>,
    /// Some servers answer 200 with an error body.
    #[serde(default)]
    pub error: Option<ErrorObject>,
}

#[derive(Debug, Deserialize)]
pub struct Choice<'a> {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub message: ResponseMessage<'a>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ResponseMessage<'a> {
    #[serde(default, borrow)]
    pub content: Text<'a>,
    #[serde(default, borrow)]
    pub reasoning_content: Text<'a>,
    /// The name some servers (OpenRouter, newer vLLM) use for `reasoning_content`.
    #[serde(default, borrow)]
    pub reasoning: Text<'a>,
    #[serde(default, borrow)]
    pub refusal: Text<'a>,
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ResponseToolCall<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct ResponseToolCall<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub function: FunctionDelta<'a>,
}

#[derive(Debug, Deserialize)]
pub struct ChatChunk<'a> {
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    pub usage: Option<ChatUsage>,
    #[serde(default)]
    pub error: Option<ErrorObject>,
}

#[derive(Debug, Deserialize)]
pub struct ChunkChoice<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub delta: Delta<'a>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta<'a> {
    #[serde(default, borrow)]
    pub content: Text<'a>,
    #[serde(default, borrow)]
    pub reasoning_content: Text<'a>,
    #[serde(default, borrow)]
    pub reasoning: Text<'a>,
    #[serde(default, borrow)]
    pub refusal: Text<'a>,
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCallDelta<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCallDelta<'a> {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub function: FunctionDelta<'a>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub arguments: Arguments<'a>,
}

/// `usage` of a response or of the last stream chunk. `prompt_tokens` includes cached tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ChatUsage {
    #[serde(default, deserialize_with = "null_as_default")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Sent top-level by some Anthropic-backed OpenAI-compatible servers.
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_tokens: Option<u64>,
    #[serde(default)]
    pub cache_write_tokens: Option<u64>,
}

/// `{"error":{"message","type","param","code"}}`; `code` is a string or a number.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ErrorObject {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// A text field that may be a string, `null`, or a list of `{"type":"text","text":…}` parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    /// The text when there is any; empty strings read as none.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref().filter(|s| !s.is_empty())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, null or a list of text parts")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                #[derive(Deserialize)]
                struct Part {
                    #[serde(default)]
                    text: Option<String>,
                }
                let mut out = String::new();
                while let Some(p) = seq.next_element::<Part>()? {
                    out.push_str(p.text.as_deref().unwrap_or_default());
                }
                Ok(Text(Some(Cow::Owned(out))))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Tool-call `arguments`: a JSON string as the spec says, or (from some servers) the object
/// itself, kept as its compact text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arguments<'a>(pub Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Arguments<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        let text = raw.get();
        if text.starts_with('"') {
            let s: Cow<'de, str> = match serde_json::from_str::<&'de str>(text) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => {
                    Cow::Owned(serde_json::from_str::<String>(text).map_err(de::Error::custom)?)
                }
            };
            return Ok(Arguments(Some(s)));
        }
        if text == "null" {
            return Ok(Arguments(None));
        }
        Ok(Arguments(Some(Cow::Borrowed(text))))
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_reads_lenient_shapes() {
        let c: ChatChunk = serde_json::from_str(
            r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}],"usage":null}"#,
        )
        .unwrap();
        let d = &c.choices[0].delta;
        assert_eq!(d.content.get(), None);
        assert_eq!(
            d.tool_calls[0].function.arguments.0.as_deref(),
            Some("{\"a\"")
        );
        let c: ChatChunk = serde_json::from_str(
            r#"{"choices":null,"usage":{"prompt_tokens":3,"completion_tokens":null}}"#,
        )
        .unwrap();
        assert!(c.choices.is_empty());
        assert_eq!(c.usage.unwrap().prompt_tokens, 3);
    }

    #[test]
    fn text_parts_and_object_arguments() {
        let m: ResponseMessage = serde_json::from_str(
            r#"{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"tool_calls":[{"id":"c","function":{"name":"f","arguments":{"x":1}}}]}"#,
        )
        .unwrap();
        assert_eq!(m.content.get(), Some("ab"));
        assert_eq!(
            m.tool_calls[0].function.arguments.0.as_deref(),
            Some(r#"{"x":1}"#)
        );
    }

    #[test]
    fn request_serializes_like_openai() {
        let params = serde_json::json!({"type":"object"});
        let mut r = ChatRequest::new("gpt");
        r.messages.push(ChatMessage::Assistant {
            content: None,
            tool_calls: vec![ToolCall {
                id: "call_1",
                kind: "function",
                function: FunctionCall {
                    name: "f".into(),
                    arguments: "{}".into(),
                },
            }],
            reasoning_content: None,
        });
        r.tools.push(ChatTool {
            kind: "function",
            function: FunctionDef {
                name: "f".into(),
                description: None,
                parameters: &params,
                strict: None,
            },
        });
        r.tool_choice = Some(ToolChoice::Function("f".into()));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"model":"gpt","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}],
                "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
                "tool_choice":{"type":"function","function":{"name":"f"}}})
        );
    }
}
