//! `web_fetch` (gateway.md §5.6): a direct `GET` behind the SSRF guard. Every hop is checked
//! (scheme, length, domain policy), resolved once, vetted, and connected to at the vetted address
//! only (awc's `address()`, which keeps the URL's Host and SNI); redirects are followed by hand.
//!
//! HTML becomes Markdown with `htmd` (maintained, html5ever-based, Markdown output as the spec
//! asks, and small: it reuses the html5ever parser instead of bringing a layout engine).

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt;
use serde_json::{json, Value};
use url::Url;

use super::declare::WebFetchOptions;
use super::domains::DomainFilter;
use super::ssrf::{vet_host, FetchNet, Refusal};
use super::{cut_chars, ToolErrorCode, ToolKind, ToolOutcome};
use crate::config::WebFetchConfig;

const KIND: ToolKind = ToolKind::WebFetch;
pub const MAX_URL_CHARS: usize = 2048;
const TRUNCATED: &str = "\n\n[truncated]";

/// A refusal or failure: the code and what the model is told.
type Failure = (ToolErrorCode, String);

fn failure(code: ToolErrorCode, msg: impl Into<String>) -> Failure {
    (code, msg.into())
}

/// Step 1 of the guard for one hop: scheme, length, domain policy. `first` is the model's own
/// URL (a bad scheme there is `invalid_tool_input`; on a redirect it is `url_not_allowed`).
pub fn check_url(raw: &str, domains: &DomainFilter, first: bool) -> Result<Url, Failure> {
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(failure(
            ToolErrorCode::UrlTooLong,
            ToolErrorCode::UrlTooLong.default_message(),
        ));
    }
    let bad_input = if first {
        ToolErrorCode::InvalidToolInput
    } else {
        ToolErrorCode::UrlNotAllowed
    };
    let url = Url::parse(raw.trim()).map_err(|_| failure(bad_input, "not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(failure(
            bad_input,
            "only http and https URLs can be fetched",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(failure(bad_input, "the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(failure(
            bad_input,
            "URLs with credentials cannot be fetched",
        ));
    }
    if !domains.permits_url(url.as_str()) {
        return Err(failure(
            ToolErrorCode::UrlNotAllowed,
            "the URL's domain is not allowed for this tool",
        ));
    }
    Ok(url)
}

/// How a body is turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Html,
    Text,
    Unsupported,
}

/// Classifies by `Content-Type`; without one, by a look at the bytes.
pub fn body_kind(content_type: Option<&str>, head: &[u8]) -> BodyKind {
    let media = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty());
    match media.as_deref() {
        Some("text/html" | "application/xhtml+xml") => BodyKind::Html,
        Some(m) if m.starts_with("text/") => BodyKind::Text,
        Some("application/json") => BodyKind::Text,
        Some(m) if m.ends_with("+json") => BodyKind::Text,
        Some(_) => BodyKind::Unsupported,
        None => {
            let start = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
            let start = start.trim_start();
            if start.starts_with("<!doctype html") || start.starts_with("<html") {
                BodyKind::Html
            } else if std::str::from_utf8(&head[..head.len().min(4096)]).is_ok()
                && !head.starts_with(b"%PDF")
            {
                BodyKind::Text
            } else {
                BodyKind::Unsupported
            }
        }
    }
}

/// HTML to readable Markdown, with the `<title>` text.
pub fn html_to_text(html: &str) -> (Option<String>, String) {
    let title = Arc::new(Mutex::new(None::<String>));
    let seen = title.clone();
    let converter = htmd::HtmlToMarkdown::builder()
        .skip_tags(vec![
            "script", "style", "noscript", "template", "svg", "iframe", "form",
        ])
        .add_handler(
            vec!["title"],
            move |h: &dyn htmd::element_handler::Handlers, el: htmd::Element| {
                let text = h.walk_children(el.node).content;
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if let Ok(mut t) = seen.lock() {
                    if t.is_none() && !text.is_empty() {
                        *t = Some(text);
                    }
                }
                None
            },
        )
        .build();
    let text = converter.convert(html).unwrap_or_default();
    let title = title.lock().ok().and_then(|mut t| t.take());
    (title, text)
}

/// Cuts `text` to `max_chars`, marking the cut (also when the body itself was cut).
pub fn cut_text(text: &str, max_chars: usize, body_truncated: bool) -> String {
    let cut = cut_chars(text, max_chars);
    if cut.len() < text.len() || body_truncated {
        format!("{cut}{TRUNCATED}")
    } else {
        text.to_string()
    }
}

/// A fetched document.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub url: String,
    pub title: Option<String>,
    pub text: String,
    pub retrieved_at: String,
}

impl Fetched {
    fn model_content(&self) -> String {
        json!({"url": self.url, "title": self.title, "retrieved_at": self.retrieved_at, "content": self.text}).to_string()
    }

    /// The `web_fetch_result` (messages-api.md §7.2).
    pub fn content(&self) -> Value {
        json!({"type": "web_fetch_result", "url": self.url, "retrieved_at": self.retrieved_at,
               "content": {"type": "document",
                           "source": {"type": "text", "media_type": "text/plain", "data": self.text},
                           "title": self.title}})
    }
}

/// The model's view of a `web_fetch_result` found in history.
pub fn model_content_from_block(content: &Value) -> Option<String> {
    let doc = content.get("content")?;
    let source = doc.get("source")?;
    let text = match source.get("type").and_then(Value::as_str) {
        Some("text") => source.get("data")?.as_str()?.to_string(),
        _ => "[the document is not available as text]".to_string(),
    };
    Some(
        Fetched {
            url: content.get("url")?.as_str()?.to_string(),
            title: doc.get("title").and_then(Value::as_str).map(str::to_string),
            text,
            retrieved_at: content
                .get("retrieved_at")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }
        .model_content(),
    )
}

/// Whether `url` appears in the prior context (`require_url_in_context`).
pub fn url_in_context(url: &str, context: &str) -> bool {
    let url = url.trim();
    context.contains(url) || (url.ends_with('/') && context.contains(url.trim_end_matches('/')))
}

/// The web fetch executor of one worker.
pub struct WebFetch {
    config: WebFetchConfig,
    net: FetchNet,
    client: awc::Client,
}

impl WebFetch {
    pub fn new(config: &WebFetchConfig, net: FetchNet) -> Self {
        let connector = awc::Connector::new()
            .timeout(Duration::from_secs(10))
            .handshake_timeout(Duration::from_secs(10));
        let client = awc::Client::builder()
            .connector(connector)
            .disable_redirects()
            .disable_timeout()
            .no_default_headers()
            .finish();
        Self {
            config: config.clone(),
            net,
            client,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// Runs one call. `prior_context` is the conversation text, checked only with
    /// `require_url_in_context`.
    pub async fn execute(
        &self,
        tool_use_id: &str,
        options: &WebFetchOptions,
        input: &Value,
        prior_context: Option<&str>,
    ) -> ToolOutcome {
        let fail = |(code, msg): Failure| ToolOutcome::error(KIND, tool_use_id, code, &msg);
        let Some(raw) = input
            .get("url")
            .and_then(Value::as_str)
            .filter(|u| !u.trim().is_empty())
        else {
            return fail(failure(
                ToolErrorCode::InvalidToolInput,
                "url must be a non-empty string",
            ));
        };
        let url = match check_url(raw, &options.domains, true) {
            Ok(u) => u,
            Err(f) => return fail(f),
        };
        if self.config.require_url_in_context && !url_in_context(raw, prior_context.unwrap_or("")) {
            return fail(failure(
                ToolErrorCode::UrlNotInPriorContext,
                ToolErrorCode::UrlNotInPriorContext.default_message(),
            ));
        }
        let reached = Cell::new(false);
        let result = tokio::time::timeout(self.timeout(), self.fetch(url, options, &reached)).await;
        let outcome = match result {
            Ok(Ok(doc)) => {
                ToolOutcome::success(KIND, tool_use_id, doc.content(), doc.model_content())
            }
            Ok(Err(f)) => fail(f),
            Err(_) => fail(failure(
                ToolErrorCode::UrlNotAccessible,
                "the fetch timed out",
            )),
        };
        // The counter rises for fetches that reached the network, failed or not (§5.6).
        outcome.counted(reached.get())
    }

    async fn fetch(
        &self,
        mut url: Url,
        options: &WebFetchOptions,
        reached: &Cell<bool>,
    ) -> Result<Fetched, Failure> {
        let mut hops = 0;
        let mut res = loop {
            let host = url.host_str().unwrap_or_default().to_string();
            let port = url.port_or_known_default().unwrap_or(80);
            let addr = match vet_host(&self.net, &host, port).await {
                Ok(a) => a,
                Err(Refusal::Blocked(ip, range)) => {
                    tracing::info!(%host, %ip, %range, "web_fetch refused a blocked address");
                    return Err(failure(
                        ToolErrorCode::UrlNotAllowed,
                        "the URL resolves to an address that may not be fetched",
                    ));
                }
                Err(Refusal::Unresolvable(why)) => {
                    return Err(failure(
                        ToolErrorCode::UrlNotAccessible,
                        format!("could not resolve {host}: {why}"),
                    ));
                }
            };
            reached.set(true);
            let res = self
                .client
                .get(url.as_str())
                .address(addr)
                .force_close()
                .insert_header(("user-agent", self.config.user_agent.as_str()))
                .insert_header((
                    "accept",
                    "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.5",
                ))
                .send()
                .await
                .map_err(|e| failure(ToolErrorCode::UrlNotAccessible, format!("request failed: {e}")))?;
            let status = res.status();
            if status.is_redirection() {
                let location = res.headers().get("location").and_then(|v| v.to_str().ok());
                let Some(location) = location else {
                    return Err(failure(
                        ToolErrorCode::UrlNotAccessible,
                        format!("HTTP {}", status.as_u16()),
                    ));
                };
                if hops >= self.config.max_redirects {
                    return Err(failure(
                        ToolErrorCode::UrlNotAccessible,
                        "too many redirects",
                    ));
                }
                hops += 1;
                let next = url.join(location).map_err(|_| {
                    failure(ToolErrorCode::UrlNotAccessible, "bad redirect location")
                })?;
                url = check_url(next.as_str(), &options.domains, false)?;
                continue;
            }
            if status.as_u16() >= 400 || !status.is_success() {
                return Err(failure(
                    ToolErrorCode::UrlNotAccessible,
                    format!("HTTP {}", status.as_u16()),
                ));
            }
            break res;
        };

        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if content_type.is_some()
            && body_kind(content_type.as_deref(), b"") == BodyKind::Unsupported
        {
            return Err(unsupported(content_type.as_deref()));
        }
        let mut body: Vec<u8> = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = res.next().await {
            let chunk = chunk.map_err(|e| {
                failure(
                    ToolErrorCode::UrlNotAccessible,
                    format!("reading the body: {e}"),
                )
            })?;
            let room = self.config.max_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let kind = body_kind(content_type.as_deref(), &body);
        let max_chars = options.max_chars;
        let (title, text) = match kind {
            BodyKind::Unsupported => return Err(unsupported(content_type.as_deref())),
            BodyKind::Text => (None, String::from_utf8_lossy(&body).into_owned()),
            BodyKind::Html => {
                // Parsing a large page takes a while: keep it off the worker thread.
                let html = String::from_utf8_lossy(&body).into_owned();
                actix_rt::task::spawn_blocking(move || html_to_text(&html))
                    .await
                    .map_err(|_| {
                        failure(
                            ToolErrorCode::Unavailable,
                            "the page could not be converted",
                        )
                    })?
            }
        };
        Ok(Fetched {
            url: url.to_string(),
            title,
            text: cut_text(&text, max_chars, truncated),
            retrieved_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        })
    }
}

fn unsupported(content_type: Option<&str>) -> Failure {
    failure(
        ToolErrorCode::UnsupportedContentType,
        format!(
            "content type {} is not supported",
            content_type.unwrap_or("unknown")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::domains::DomainRule;

    #[test]
    fn url_checks() {
        let none = DomainFilter::default();
        let code = |raw: &str, first| check_url(raw, &none, first).err().map(|e| e.0);
        assert_eq!(code("https://example.com/a?b=c", true), None);
        assert_eq!(
            code("http://127.0.0.1:8080/", true),
            None,
            "addresses are vetted later"
        );
        assert_eq!(
            code("ftp://example.com/", true),
            Some(ToolErrorCode::InvalidToolInput)
        );
        assert_eq!(
            code("file:///etc/passwd", true),
            Some(ToolErrorCode::InvalidToolInput)
        );
        assert_eq!(
            code("example.com", true),
            Some(ToolErrorCode::InvalidToolInput)
        );
        assert_eq!(
            code("https://user:pw@example.com/", true),
            Some(ToolErrorCode::InvalidToolInput)
        );
        assert_eq!(
            code("gopher://example.com/", false),
            Some(ToolErrorCode::UrlNotAllowed)
        );
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert_eq!(code(&long, true), Some(ToolErrorCode::UrlTooLong));
        let allow = DomainFilter {
            allowed: vec![DomainRule::parse("example.com").unwrap()],
            blocked: vec![],
        };
        assert!(check_url("https://docs.example.com/", &allow, true).is_ok());
        assert_eq!(
            check_url("https://other.org/", &allow, true).unwrap_err().0,
            ToolErrorCode::UrlNotAllowed
        );
    }

    #[test]
    fn body_kinds() {
        let k = |ct: Option<&str>, head: &[u8]| body_kind(ct, head);
        assert_eq!(k(Some("text/html; charset=utf-8"), b""), BodyKind::Html);
        assert_eq!(k(Some("application/xhtml+xml"), b""), BodyKind::Html);
        assert_eq!(k(Some("TEXT/PLAIN"), b""), BodyKind::Text);
        assert_eq!(k(Some("text/markdown"), b""), BodyKind::Text);
        assert_eq!(k(Some("application/json"), b""), BodyKind::Text);
        assert_eq!(k(Some("application/ld+json"), b""), BodyKind::Text);
        assert_eq!(k(Some("application/pdf"), b""), BodyKind::Unsupported);
        assert_eq!(k(Some("image/png"), b""), BodyKind::Unsupported);
        assert_eq!(k(None, b"  <!DOCTYPE html><html>"), BodyKind::Html);
        assert_eq!(k(None, b"plain words"), BodyKind::Text);
        assert_eq!(k(None, b"%PDF-1.7"), BodyKind::Unsupported);
        assert_eq!(k(None, &[0xff, 0xfe, 0x00]), BodyKind::Unsupported);
    }

    #[test]
    fn html_becomes_markdown_with_a_title() {
        let (title, text) = html_to_text(
            "<html><head><title> Lyon\n forecast </title><style>p{}</style><script>alert(1)</script></head>\
             <body><h1>Lyon</h1><p>Sunny &amp; <b>warm</b>.</p><ul><li>one</li></ul></body></html>",
        );
        assert_eq!(title.as_deref(), Some("Lyon forecast"));
        assert!(text.starts_with("# Lyon"), "{text}");
        assert!(text.contains("Sunny & **warm**."), "{text}");
        assert!(text.contains("one"), "{text}");
        assert!(
            !text.contains("alert") && !text.contains("p{}") && !text.contains("forecast"),
            "{text}"
        );
        assert_eq!(html_to_text("<p>x</p>").0, None);
    }

    #[test]
    fn cutting() {
        assert_eq!(cut_text("abcdef", 10, false), "abcdef");
        assert_eq!(cut_text("abcdef", 3, false), "abc\n\n[truncated]");
        assert_eq!(cut_text("abc", 3, true), "abc\n\n[truncated]");
        assert_eq!(
            cut_text("\u{e9}\u{e9}\u{e9}", 2, false),
            "\u{e9}\u{e9}\n\n[truncated]"
        );
    }

    #[test]
    fn prior_context() {
        assert!(url_in_context("https://ex.org/a", "see https://ex.org/a."));
        assert!(url_in_context("https://ex.org/", "at https://ex.org today"));
        assert!(!url_in_context("https://ex.org/b", "see https://ex.org/a"));
    }

    #[test]
    fn history_view_matches_execution() {
        let f = Fetched {
            url: "https://ex.org".into(),
            title: Some("T".into()),
            text: "body".into(),
            retrieved_at: "2026-07-09T10:30:00Z".into(),
        };
        assert_eq!(
            model_content_from_block(&f.content()).unwrap(),
            f.model_content()
        );
        let c = f.content();
        assert_eq!(c["content"]["source"]["media_type"], "text/plain");
        assert_eq!(c["content"]["type"], "document");
    }
}
