//! Bedrock's wire: `application/vnd.amazon.eventstream` frames (prelude and message CRCs, checked
//! by the AWS eventstream crate) carrying one Anthropic stream event each, and the exceptions it
//! reports over HTTP and in-band, mapped to the status that picks their resilience class.

use base64::Engine;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::{HeaderValue, Message};

use super::anthropic::{EventKind, Frame};

/// The Bedrock exceptions the gateway tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    Throttling,
    ServiceQuotaExceeded,
    ServiceUnavailable,
    InternalServer,
    ModelNotReady,
    ModelTimeout,
    ModelStream,
    ModelError,
    AccessDenied,
    ResourceNotFound,
    UnrecognizedClient,
    Validation,
}

impl Exception {
    /// `ThrottlingException`, also as `…#ThrottlingException` or `ThrottlingException:http://…`.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.rsplit('#').next().unwrap_or(name);
        let name = name.split(':').next().unwrap_or(name).trim();
        Some(match name {
            "ThrottlingException" => Self::Throttling,
            "ServiceQuotaExceededException" => Self::ServiceQuotaExceeded,
            "ServiceUnavailableException" => Self::ServiceUnavailable,
            "InternalServerException" => Self::InternalServer,
            "ModelNotReadyException" => Self::ModelNotReady,
            "ModelTimeoutException" => Self::ModelTimeout,
            "ModelStreamErrorException" => Self::ModelStream,
            "ModelErrorException" => Self::ModelError,
            "AccessDeniedException" => Self::AccessDenied,
            "ResourceNotFoundException" => Self::ResourceNotFound,
            "UnrecognizedClientException" => Self::UnrecognizedClient,
            "ValidationException" => Self::Validation,
            _ => return None,
        })
    }

    /// The status this exception stands for, whatever status carried it: it picks the class
    /// (429 rate-limited; 5xx and 408 transient; 401/403/404 deployment fault; 400 client fault).
    pub fn status(self) -> u16 {
        match self {
            Self::Throttling | Self::ServiceQuotaExceeded => 429,
            Self::ServiceUnavailable | Self::ModelNotReady => 503,
            Self::InternalServer | Self::ModelStream | Self::ModelError => 500,
            Self::ModelTimeout => 408,
            Self::AccessDenied => 403,
            Self::ResourceNotFound => 404,
            Self::UnrecognizedClient => 401,
            Self::Validation => 400,
        }
    }

    /// The Anthropic `error.type` the client sees.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::Throttling | Self::ServiceQuotaExceeded => "rate_limit_error",
            Self::ServiceUnavailable | Self::ModelNotReady => "overloaded_error",
            Self::InternalServer | Self::ModelStream | Self::ModelError => "api_error",
            Self::ModelTimeout => "timeout_error",
            Self::AccessDenied => "permission_error",
            Self::ResourceNotFound => "not_found_error",
            Self::UnrecognizedClient => "authentication_error",
            Self::Validation => "invalid_request_error",
        }
    }
}

/// A Bedrock failure: the named exception (when known) and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockError {
    pub exception: Option<Exception>,
    pub name: String,
    pub message: String,
}

/// An HTTP error answer: the type from `x-amzn-ErrorType` or the body's `__type`, the message
/// from its `message` (either case).
pub fn http_error(error_type_header: Option<&str>, body: &[u8]) -> BedrockError {
    #[derive(Deserialize, Default)]
    struct Body {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let parsed: Body = serde_json::from_slice(body).unwrap_or_default();
    let name = error_type_header
        .map(str::to_string)
        .or(parsed.kind)
        .map(|n| {
            let n = n.rsplit('#').next().unwrap_or(&n).to_string();
            n.split(':').next().unwrap_or(&n).trim().to_string()
        })
        .unwrap_or_default();
    let message = parsed.message.unwrap_or_else(|| {
        format!(
            "Bedrock returned {} ({} bytes)",
            if name.is_empty() { "an error" } else { &name },
            body.len()
        )
    });
    BedrockError {
        exception: Exception::from_name(&name),
        name,
        message,
    }
}

/// One decoded stream item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A `chunk` event's Anthropic event.
    Frame(Frame),
    /// A `:message-type exception` (or `error`) frame: the stream ends with it.
    Exception(BedrockError),
}

/// The most a frame may declare (the eventstream limit is 16 MiB of message).
const MAX_FRAME: usize = 16 * 1024 * 1024 + 1024;
const PRELUDE: usize = 12;

/// An incremental decoder: bytes in at any split, complete frames out; a partial frame is all it
/// keeps.
#[derive(Default)]
pub struct EventStreamDecoder {
    buf: BytesMut,
}

impl EventStreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; pushes the item of every frame they complete onto `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<StreamItem>) -> Result<(), String> {
        self.buf.extend_from_slice(chunk);
        while self.buf.len() >= PRELUDE {
            let total =
                u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
            if !(PRELUDE + 4..=MAX_FRAME).contains(&total) {
                return Err(format!("eventstream frame of {total} bytes"));
            }
            if self.buf.len() < total {
                break;
            }
            let frame = self.buf.split_to(total).freeze();
            let message =
                read_message_from(frame).map_err(|e| format!("invalid eventstream frame: {e}"))?;
            if let Some(item) = item(&message)? {
                out.push(item);
            }
        }
        Ok(())
    }

    /// Bytes of an unfinished frame are left: the stream was cut.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

fn item(m: &Message) -> Result<Option<StreamItem>, String> {
    match header(m, ":message-type") {
        Some("event") => match header(m, ":event-type") {
            Some("chunk") => chunk_frame(m.payload()).map(|f| Some(StreamItem::Frame(f))),
            // Other event types carry nothing the client gets.
            _ => Ok(None),
        },
        Some("exception") => {
            let name = header(m, ":exception-type").unwrap_or_default();
            let mut err = http_error(Some(name), m.payload());
            if err.name.is_empty() {
                err.name = "exception".into();
            }
            Ok(Some(StreamItem::Exception(err)))
        }
        Some("error") => {
            let name = header(m, ":error-code").unwrap_or("error").to_string();
            let message = header(m, ":error-message").unwrap_or_default().to_string();
            Ok(Some(StreamItem::Exception(BedrockError {
                exception: Exception::from_name(&name),
                name,
                message,
            })))
        }
        _ => Err("eventstream frame without a :message-type".into()),
    }
}

/// `{"bytes": "<base64 of one Anthropic event>"}` as a frame named after the event's type, with
/// Bedrock's own `amazon-bedrock-invocationMetrics` removed.
fn chunk_frame(payload: &[u8]) -> Result<Frame, String> {
    #[derive(Deserialize)]
    struct Chunk {
        bytes: String,
    }
    let chunk: Chunk =
        serde_json::from_slice(payload).map_err(|_| "chunk event without bytes".to_string())?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(chunk.bytes.as_bytes())
        .map_err(|_| "chunk bytes are not base64".to_string())?;
    let mut event: serde_json::Map<String, Value> = serde_json::from_slice(&data)
        .map_err(|e| format!("chunk is not an Anthropic event: {e}"))?;
    let name = match event.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err("chunk event without a type".into()),
    };
    let removed = event.remove("amazon-bedrock-invocationMetrics").is_some();
    let data = if removed || memchr::memchr(b'\n', &data).is_some() {
        serde_json::to_vec(&event).expect("a map serializes")
    } else {
        data
    };
    Ok(Frame {
        kind: EventKind::from_name(name.as_bytes()),
        name: Bytes::from(name),
        data: Bytes::from(data),
    })
}

/// Builders of the frames Bedrock sends.
#[cfg(test)]
mod encode {
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    use base64::Engine;

    fn frame(headers: Vec<(&str, &str)>, payload: Vec<u8>) -> Vec<u8> {
        let headers = headers
            .into_iter()
            .map(|(k, v)| Header::new(k.to_string(), HeaderValue::String(v.to_string().into())))
            .collect();
        let mut out = Vec::new();
        write_message_to(&Message::new_from_parts(headers, payload), &mut out)
            .expect("a frame encodes");
        out
    }

    /// A `chunk` event carrying one Anthropic event's JSON.
    pub fn chunk(event_json: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(event_json);
        frame(
            vec![
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            serde_json::json!({"bytes": b64, "p": "abcdefghij"})
                .to_string()
                .into_bytes(),
        )
    }

    /// A `:message-type exception` frame.
    pub fn exception(name: &str, message: &str) -> Vec<u8> {
        frame(
            vec![
                (":exception-type", name),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            serde_json::json!({ "message": message })
                .to_string()
                .into_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_at(bytes: &[u8], split: usize) -> (Vec<StreamItem>, bool) {
        let mut d = EventStreamDecoder::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(split) {
            d.push(piece, &mut out).unwrap();
        }
        (out, d.has_partial())
    }

    #[test]
    fn frames_decode_at_any_split() {
        let mut bytes = encode::chunk(r#"{"type":"message_start","message":{"id":"m"}}"#);
        bytes.extend(encode::chunk(
            "{\"type\":\"content_block_delta\",\n\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"h\u{e9}\"}}",
        ));
        bytes.extend(encode::chunk(
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3}}"#,
        ));
        for split in [1, 2, 3, 11, 12, 13, 50, bytes.len()] {
            let (items, partial) = decode_at(&bytes, split);
            assert!(!partial);
            let frames: Vec<&Frame> = items
                .iter()
                .map(|i| match i {
                    StreamItem::Frame(f) => f,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(frames.len(), 3, "split {split}");
            assert_eq!(frames[0].kind, EventKind::MessageStart);
            assert_eq!(frames[1].kind, EventKind::ContentBlockDelta);
            assert!(!frames[1].data.contains(&b'\n'));
            assert_eq!(&frames[2].data[..], br#"{"type":"message_stop"}"#);
        }
        let (_, partial) = decode_at(&bytes[..bytes.len() - 3], 7);
        assert!(partial, "a cut frame is noticed");
    }

    #[test]
    fn exceptions_in_band() {
        let mut bytes = encode::chunk(r#"{"type":"ping"}"#);
        bytes.extend(encode::exception("ModelStreamErrorException", "boom"));
        let (items, _) = decode_at(&bytes, 5);
        assert_eq!(
            items[1],
            StreamItem::Exception(BedrockError {
                exception: Some(Exception::ModelStream),
                name: "ModelStreamErrorException".into(),
                message: "boom".into(),
            })
        );
    }

    #[test]
    fn corrupt_frames_are_refused() {
        let mut bytes = encode::chunk(r#"{"type":"ping"}"#);
        let n = bytes.len();
        bytes[n - 6] ^= 0xff; // the payload, under the message CRC
        let mut out = Vec::new();
        assert!(EventStreamDecoder::new().push(&bytes, &mut out).is_err());
        let mut huge = vec![0xff, 0xff, 0xff, 0xff];
        huge.extend([0u8; 12]);
        assert!(EventStreamDecoder::new().push(&huge, &mut out).is_err());
    }

    #[test]
    fn exception_classes() {
        let table = [
            ("ThrottlingException", 429),
            ("ServiceUnavailableException", 503),
            ("InternalServerException", 500),
            ("ModelNotReadyException", 503),
            ("AccessDeniedException", 403),
            ("ResourceNotFoundException", 404),
            ("UnrecognizedClientException", 401),
            ("ValidationException", 400),
            ("ModelTimeoutException", 408),
            ("ModelStreamErrorException", 500),
        ];
        for (name, status) in table {
            assert_eq!(
                Exception::from_name(name).unwrap().status(),
                status,
                "{name}"
            );
        }
        let e = http_error(
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(e.exception, Some(Exception::Throttling));
        assert_eq!(
            e.message,
            "Too many requests, please wait before trying again."
        );
        let e = http_error(
            None,
            br#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","Message":"The security token included in the request is invalid."}"#,
        );
        assert_eq!(e.exception, Some(Exception::UnrecognizedClient));
        let e = http_error(None, b"<html>");
        assert_eq!(e.exception, None);
        assert!(!e.message.contains("html"));
    }
}
